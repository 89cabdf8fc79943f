//! Parts a shard refused for their data: cut in halves until the refused row is alone, which
//! then goes to the catalog's dead-letter table while every other row is written.

use super::{Drainer, Event};
use crate::catalog::dead_letters::NewDeadLetter;
use crate::query::value::Cell;
use crate::schema::TableSchema;
use crate::spool::PartRef;
use std::sync::Arc;

impl Drainer {
    /// A part the shard refused for its data: cut in two, each half tried on its own, until
    /// the refused row is alone; then it goes to the dead-letter table.
    pub(super) fn refused(&mut self, part: PartRef, message: String) {
        let spooled = &self.records[&part.seq];
        let schema = Arc::clone(self.settings.tables.get(spooled.table));
        let refused = &spooled.write.parts[usize::from(part.part)];
        match refused.halves(&schema) {
            Ok(Some((first, second))) => {
                // The halves are the part's own tuples, as routed when it was made.
                let routed_at = self.records[&part.seq].write.routed_at;
                self.supersede(part, vec![first, second], routed_at)
            }
            Ok(None) => self.dead_letter(part, &schema, message),
            Err(error) => {
                tracing::error!(seq = part.seq.0, part = part.part, %error, "a spooled part cannot be read; it stays in the spool");
            }
        }
    }

    /// Records a refused part of one row in the catalog's dead-letter table.
    pub(super) fn dead_letter(&mut self, part: PartRef, schema: &TableSchema, message: String) {
        let spooled = &self.records[&part.seq];
        let refused = &spooled.write.parts[usize::from(part.part)];
        let fields = refused.first_row_fields(schema).map_err(|e| e.to_string());
        let row = match fields.and_then(|fields| row_json(schema, &fields)) {
            Ok(row) => row,
            Err(error) => {
                tracing::error!(seq = part.seq.0, part = part.part, %error, "a refused row cannot be read; it stays in the spool");
                return;
            }
        };
        tracing::warn!(table = %schema.name, shard = %refused.shard, %message, "a spooled row was refused for its data; it goes to the dead-letter table");
        let catalog = self.settings.catalog.clone();
        let (table, shard, write_id) = (schema.name.clone(), refused.shard.clone(), spooled.write.write_id);
        let mark = self.mark(part);
        self.events.push(Box::pin(async move {
            let letter = NewDeadLetter {
                table: &table,
                shard: &shard,
                write_id,
                row: &row,
                message: &message,
                part: (mark.spool, mark.seq, mark.part),
            };
            let result = catalog
                .record_dead_letter(letter)
                .await
                .map_err(|e| e.to_string());
            Event::DeadLettered { part, table, result }
        }));
    }
}

/// A row's declared columns as a JSON object, from their binary COPY fields.
fn row_json(schema: &TableSchema, fields: &[Option<&[u8]>]) -> Result<serde_json::Value, String> {
    let mut row = serde_json::Map::new();
    for (column, field) in schema.columns.iter().zip(fields) {
        let cell =
            Cell::from_binary(column.ty, *field).map_err(|e| format!("column {}: {e}", column.name))?;
        row.insert(column.name.clone(), cell.to_json());
    }
    Ok(serde_json::Value::Object(row))
}
