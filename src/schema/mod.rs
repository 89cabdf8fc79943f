//! The declared tables as the write path uses them: columns, types, defaults, id and partition
//! key, and the DDL every shard must carry. Column types, defaults and identifier rules live in
//! the leaf [`crate::pgtype`], re-exported here.
//!
//! Built once from the validated config; immutable afterwards and shared by reference.

mod ddl;
pub mod decode;
pub mod streams;
pub mod tuples;

pub use crate::pgtype::{
    ColumnType, DefaultValue, JsonScalar, encode_jsonb, encode_scalar, is_valid_identifier, quote_ident,
};
pub use ddl::{
    EPOCH_COLUMN, ExpectedColumn, HASH_COLUMN, QUIET_SETUP_SQL, add_epoch_column_sql, create_table_sql,
    expected_columns, hidden_columns, user_facing_table_sql,
};

use crate::config::{AckMode, ColumnConfig, TableConfig};
use crate::routing::{KeyHash, hash_key};
use std::collections::HashMap;
use std::sync::Arc;

/// One column of a declared table.
#[derive(Debug, Clone)]
pub struct Column {
    /// Column name (a validated identifier).
    pub name: String,
    /// Declared type.
    pub ty: ColumnType,
    /// Whether NULL is allowed.
    pub nullable: bool,
    /// Value for rows that omit the column.
    pub default: Option<DefaultValue>,
}

/// A declared table, ready for decoding and routing rows.
#[derive(Debug, Clone)]
pub struct TableSchema {
    /// Table name on every shard.
    pub name: String,
    /// Columns in table order (the hidden `_sg_hash` and `_sg_epoch` are not among them).
    pub columns: Vec<Column>,
    /// Index of the id column, when the table has one.
    pub id: Option<usize>,
    /// Indexes of the partition-key columns, in key order.
    pub partition_key: Vec<usize>,
    /// Index of the `timestamptz` column saying when a row was made, when one is declared.
    pub made_at: Option<usize>,
    /// Most rows per second one key may send, when capped.
    pub max_key_rows_per_second: Option<u64>,
    /// What a write waits for by default.
    pub ack: AckMode,
    /// Whether a request may ask for the other ack.
    pub ack_per_request: bool,
    /// For a stream table, the index of its version column: the partition key names a
    /// stream, appended in version order (see `ingest::copy` for the check).
    pub stream_version: Option<usize>,
}

impl TableSchema {
    /// Builds a table from its validated config entry.
    pub fn from_config(table: &TableConfig) -> Result<TableSchema, String> {
        let position = |name: &str| {
            table
                .columns
                .iter()
                .position(|c| c.name == name)
                .ok_or_else(|| format!("table {}: column `{name}` is not declared", table.name))
        };
        let id = table.id.as_deref().map(position).transpose()?;
        let partition_key = table
            .partition_key
            .iter()
            .map(|n| position(n))
            .collect::<Result<_, _>>()?;
        let made_at = table.made_at.as_deref().map(position).transpose()?;
        let stream_version = table
            .stream
            .as_ref()
            .map(|stream| position(&stream.version))
            .transpose()?;
        let columns = table
            .columns
            .iter()
            .enumerate()
            .map(|(i, c)| column_from_config(c, id == Some(i)))
            .collect::<Result<_, _>>()?;
        Ok(TableSchema {
            name: table.name.clone(),
            columns,
            id,
            partition_key,
            made_at,
            max_key_rows_per_second: table.max_key_rows_per_second,
            ack: table.ack,
            ack_per_request: table.ack_per_request,
            stream_version,
        })
    }

    /// Index of the column called `name`.
    pub fn column_index(&self, name: &str) -> Option<usize> {
        self.columns.iter().position(|c| c.name == name)
    }

    /// Whether a retried row is deduplicated (the table has an id).
    pub fn is_idempotent(&self) -> bool {
        self.id.is_some()
    }

    /// Whether column `index` is part of the partition key.
    pub fn is_partition_key(&self, index: usize) -> bool {
        self.partition_key.contains(&index)
    }

    /// The hash of the partition key given as JSON values by column name, as a row with those
    /// values would hash; the error names the column missing, unknown or of the wrong type.
    pub fn hash_key_values(
        &self,
        values: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<KeyHash, String> {
        if let Some(unknown) = values
            .keys()
            .find(|name| self.column_index(name).is_none_or(|i| !self.is_partition_key(i)))
        {
            return Err(format!(
                "`{unknown}` is not a partition-key column of {}",
                self.name
            ));
        }
        let mut encoded = Vec::with_capacity(self.partition_key.len());
        for &index in &self.partition_key {
            let column = &self.columns[index];
            let value = values
                .get(&column.name)
                .ok_or_else(|| format!("the key lacks partition-key column `{}`", column.name))?;
            let scalar = JsonScalar::from_json(value)
                .ok_or_else(|| format!("`{}`: expected a {} value, got {value}", column.name, column.ty))?;
            let mut bytes = Vec::new();
            encode_scalar(column.ty, scalar, &mut bytes)
                .map_err(|reason| format!("`{}`: {reason}", column.name))?;
            encoded.push((column.ty, bytes));
        }
        let parts = encoded.iter().map(|(ty, bytes)| (*ty, bytes.as_slice()));
        Ok(hash_key(parts, &mut Vec::new()))
    }
}

fn column_from_config(column: &ColumnConfig, is_id: bool) -> Result<Column, String> {
    let default = match &column.default {
        Some(value) => Some(DefaultValue::from_config(column.ty, value)?),
        None if is_id && column.ty == ColumnType::Uuid => Some(DefaultValue::UuidV7),
        None => None,
    };
    Ok(Column {
        name: column.name.clone(),
        ty: column.ty,
        nullable: column.nullable,
        default,
    })
}

/// Every declared table, by name; shared by the API, batcher and shard setup.
#[derive(Debug, Default)]
pub struct Tables {
    tables: Vec<Arc<TableSchema>>,
    by_name: HashMap<String, usize>,
}

/// Position of a table in [`Tables`]; stable for the life of the process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TableId(pub usize);

impl Tables {
    /// Builds every table of a validated config.
    pub fn from_config(tables: &[TableConfig]) -> Result<Tables, String> {
        let tables: Vec<Arc<TableSchema>> = tables
            .iter()
            .map(|t| TableSchema::from_config(t).map(Arc::new))
            .collect::<Result<_, _>>()?;
        let by_name = tables
            .iter()
            .enumerate()
            .map(|(i, t)| (t.name.clone(), i))
            .collect();
        Ok(Tables { tables, by_name })
    }

    /// The table called `name`.
    pub fn lookup(&self, name: &str) -> Option<(TableId, &Arc<TableSchema>)> {
        let index = *self.by_name.get(name)?;
        Some((TableId(index), &self.tables[index]))
    }

    /// The table with id `id`.
    pub fn get(&self, id: TableId) -> &Arc<TableSchema> {
        &self.tables[id.0]
    }

    /// Every table with its id.
    pub fn iter(&self) -> impl Iterator<Item = (TableId, &Arc<TableSchema>)> {
        self.tables.iter().enumerate().map(|(i, t)| (TableId(i), t))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_follow_the_lowercase_rule() {
        for good in ["events", "_x", "a1_b2", &"a".repeat(63)] {
            assert!(is_valid_identifier(good), "{good}");
        }
        for bad in ["", "Events", "1a", "a-b", "a b", "ä", "a\"", &"a".repeat(64)] {
            assert!(!is_valid_identifier(bad), "{bad}");
        }
    }

    #[test]
    fn defaults_are_checked_against_the_column_type() {
        let now = toml::Value::String("now()".into());
        assert_eq!(
            DefaultValue::from_config(ColumnType::Timestamptz, &now),
            Ok(DefaultValue::Now)
        );
        assert_eq!(
            DefaultValue::from_config(ColumnType::Text, &now),
            Ok(DefaultValue::Literal(b"now()".to_vec()))
        );
        assert_eq!(
            DefaultValue::from_config(ColumnType::Integer, &toml::Value::Integer(7)),
            Ok(DefaultValue::Literal(7i32.to_be_bytes().to_vec()))
        );
        let err = DefaultValue::from_config(ColumnType::Integer, &now).unwrap_err();
        assert_eq!(err, "expected an integer, got \"now()\"");
    }
}
