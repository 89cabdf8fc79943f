//! `INSERT ... RETURNING`: the columns a statement asks back, described before it runs and
//! answered with the values its rows are stored with, whether given, filled by a default
//! shardgate applies or generated (an ORM's `RETURNING id`).

use super::statement::ReturnedColumn;
use super::types::{data_row, parameter_type};
use crate::pgtype::output_text;
use crate::schema::TableSchema;
use futures_util::stream;
use pgwire::api::portal::Format;
use pgwire::api::results::{FieldFormat, FieldInfo, QueryResponse, Response};
use pgwire::error::PgWireResult;
use pgwire::messages::data::DataRow;
use std::sync::Arc;

/// The columns an `INSERT` returns, resolved against its table.
#[derive(Debug, Clone, Default)]
pub struct Returning {
    columns: Vec<usize>,
    labels: Vec<String>,
}

impl Returning {
    /// The columns `items` name in `schema`; `*` is every declared column.
    pub fn resolve(schema: &TableSchema, items: &[ReturnedColumn]) -> PgWireResult<Returning> {
        let mut returning = Returning::default();
        for item in items {
            match item {
                ReturnedColumn::All => {
                    for (index, column) in schema.columns.iter().enumerate() {
                        returning.columns.push(index);
                        returning.labels.push(column.name.clone());
                    }
                }
                ReturnedColumn::Column { name, label } => {
                    let index = super::statement::column_indexes(schema, std::slice::from_ref(name))?[0];
                    returning.columns.push(index);
                    returning
                        .labels
                        .push(label.clone().unwrap_or_else(|| name.clone()));
                }
            }
        }
        Ok(returning)
    }

    /// Whether the statement returns nothing.
    pub fn is_empty(&self) -> bool {
        self.columns.is_empty()
    }

    /// Indexes of the returned columns, in the result's order.
    pub fn columns(&self) -> &[usize] {
        &self.columns
    }

    /// The result's columns, each in the format `formats` gives it (text when none).
    pub fn fields(&self, schema: &TableSchema, formats: Option<&Format>) -> Vec<FieldInfo> {
        self.columns
            .iter()
            .zip(&self.labels)
            .enumerate()
            .map(|(i, (&column, label))| {
                let format = formats.map_or(FieldFormat::Text, |formats| formats.format_for(i));
                let ty = parameter_type(schema.columns[column].ty);
                FieldInfo::new(label.clone(), None, None, ty, format)
            })
            .collect()
    }

    /// The answer of an `INSERT` of `rows` rows whose returned values are `values`, row
    /// after row, in `formats`: the rows, then `INSERT 0 n`.
    pub fn response(&self, schema: &TableSchema, formats: &Format, values: &[Option<Vec<u8>>]) -> Response {
        let fields = Arc::new(self.fields(schema, Some(formats)));
        let width = self.columns.len();
        let rows: Vec<_> = values
            .chunks(width)
            .map(|row| Ok(self.data_row(schema, &fields, row)))
            .collect();
        let mut response = QueryResponse::new(fields, stream::iter(rows));
        // The row count follows: `INSERT 0 n`, 0 being the oid Postgres no longer gives.
        response.set_command_tag("INSERT 0");
        Response::Query(response)
    }

    fn data_row(&self, schema: &TableSchema, fields: &[FieldInfo], row: &[Option<Vec<u8>>]) -> DataRow {
        let texts: Vec<Option<String>> = row
            .iter()
            .zip(fields)
            .zip(&self.columns)
            .map(|((value, field), &column)| match (value, field.format()) {
                (Some(value), FieldFormat::Text) => Some(output_text(schema.columns[column].ty, value)),
                _ => None,
            })
            .collect();
        let values = row.iter().zip(&texts).map(|(value, text)| match text {
            Some(text) => Some(text.as_bytes()),
            None => value.as_deref(),
        });
        data_row(values)
    }
}
