//! The SQL text that creates a declared table on a shard, and the column
//! list a shard's existing table is checked against. Only text here; `shards` runs it.

use super::{DefaultValue, TableSchema, quote_ident};

/// The hidden column holding the ring position that routed each row (invariant 2).
pub const HASH_COLUMN: &str = "_sg_hash";

/// The hidden column of a table without an id holding the routing epoch each row was written
/// with. A migration copies only rows older than the epoch that began dual-writing their range,
/// so a row is never both copied and dual-written: the exactness an id gives other tables.
/// Rows written to a shard directly hold 0.
pub const EPOCH_COLUMN: &str = "_sg_epoch";

/// Run first in a set-up transaction whose `IF NOT EXISTS` statements find what an earlier start
/// made: the `NOTICE: ... already exists, skipping` each of them sends is expected, not news.
pub const QUIET_SETUP_SQL: &str = "SET LOCAL client_min_messages = warning";

/// A column as a shard's catalog must show it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExpectedColumn {
    /// Column name.
    pub name: String,
    /// Type as `format_type` prints it.
    pub sql_type: String,
    /// Whether the column is `NOT NULL`.
    pub not_null: bool,
}

/// Every column a shard's copy of `table` has, the hidden ones last: the hash column, then,
/// for a table without an id, the epoch column.
pub fn expected_columns(table: &TableSchema) -> Vec<ExpectedColumn> {
    let declared = table.columns.iter().enumerate().map(|(i, c)| ExpectedColumn {
        name: c.name.clone(),
        sql_type: c.ty.sql_name().to_string(),
        not_null: !c.nullable || table.id == Some(i) || table.is_partition_key(i),
    });
    let hidden = hidden_columns(table).iter().map(|name| ExpectedColumn {
        name: name.to_string(),
        sql_type: "bigint".to_string(),
        not_null: true,
    });
    declared.chain(hidden).collect()
}

/// The hidden columns every row of `table` carries after its declared ones, in order.
pub fn hidden_columns(table: &TableSchema) -> &'static [&'static str] {
    if table.id.is_some() {
        &[HASH_COLUMN]
    } else {
        &[HASH_COLUMN, EPOCH_COLUMN]
    }
}

/// Adds the epoch column to a table without an id made before it existed: rows already stored
/// count as written before any migration. `None` for a table with an id.
pub fn add_epoch_column_sql(table: &TableSchema) -> Option<String> {
    table.id.is_none().then(|| {
        format!(
            "ALTER TABLE {} ADD COLUMN IF NOT EXISTS {EPOCH_COLUMN} bigint NOT NULL DEFAULT 0",
            quote_ident(&table.name)
        )
    })
}

/// `CREATE TABLE IF NOT EXISTS` for a declared table, with its id as primary key.
pub fn create_table_sql(table: &TableSchema) -> String {
    let mut parts: Vec<String> = expected_columns(table)
        .iter()
        .zip(table.columns.iter().map(Some).chain(std::iter::repeat(None)))
        .map(|(expected, column)| {
            let mut part = format!("{} {}", quote_ident(&expected.name), expected.sql_type);
            if expected.not_null {
                part.push_str(" NOT NULL");
            }
            // Server-side defaults for rows written to the shard directly; shardgate writes its own.
            if let Some(column) = column
                && column.default == Some(DefaultValue::Now)
            {
                part.push_str(" DEFAULT now()");
            }
            if expected.name == EPOCH_COLUMN {
                part.push_str(" DEFAULT 0");
            }
            part
        })
        .collect();
    if let Some(id) = table.id {
        parts.push(format!("PRIMARY KEY ({})", quote_ident(&table.columns[id].name)));
    }
    format!(
        "CREATE TABLE IF NOT EXISTS {} ({})",
        quote_ident(&table.name),
        parts.join(", ")
    )
}

/// `CREATE TABLE` for `table` as users see it, for the metadata database that answers
/// catalog queries: its declared columns with their types, `NOT NULL` and `now()` defaults,
/// its id as primary key, and a comment naming its partition key; no hidden columns.
pub fn user_facing_table_sql(table: &TableSchema) -> String {
    let mut parts: Vec<String> = expected_columns(table)
        .iter()
        .zip(&table.columns)
        .map(|(expected, column)| {
            let mut part = format!("{} {}", quote_ident(&expected.name), expected.sql_type);
            if expected.not_null {
                part.push_str(" NOT NULL");
            }
            if column.default == Some(DefaultValue::Now) {
                part.push_str(" DEFAULT now()");
            }
            part
        })
        .collect();
    if let Some(id) = table.id {
        parts.push(format!("PRIMARY KEY ({})", quote_ident(&table.columns[id].name)));
    }
    let key: Vec<&str> = table
        .partition_key
        .iter()
        .map(|&i| table.columns[i].name.as_str())
        .collect();
    format!(
        "CREATE TABLE {name} ({columns}); COMMENT ON TABLE {name} IS 'sharded by shardgate on ({key})'",
        name = quote_ident(&table.name),
        columns = parts.join(", "),
        key = key.join(", ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    const EVENTS: &str = r#"
        [[tables]]
        name = "events"
        id = "event_id"
        partition_key = ["tenant_id"]
        columns = [
          { name = "event_id", type = "uuid" },
          { name = "tenant_id", type = "text" },
          { name = "ts", type = "timestamptz", default = "now()" },
          { name = "payload", type = "jsonb", nullable = true },
        ]
    "#;

    fn events() -> TableSchema {
        let config = Config::parse(EVENTS).unwrap();
        TableSchema::from_config(&config.tables[0]).unwrap()
    }

    #[test]
    fn create_table_has_hidden_hash_and_primary_key() {
        assert_eq!(
            create_table_sql(&events()),
            "CREATE TABLE IF NOT EXISTS \"events\" (\"event_id\" uuid NOT NULL, \"tenant_id\" text NOT NULL, \
             \"ts\" timestamp with time zone NOT NULL DEFAULT now(), \"payload\" jsonb, \
             \"_sg_hash\" bigint NOT NULL, PRIMARY KEY (\"event_id\"))"
        );
    }

    #[test]
    fn the_user_facing_table_has_no_hidden_column_and_names_its_key() {
        assert_eq!(
            user_facing_table_sql(&events()),
            "CREATE TABLE \"events\" (\"event_id\" uuid NOT NULL, \"tenant_id\" text NOT NULL, \
             \"ts\" timestamp with time zone NOT NULL DEFAULT now(), \"payload\" jsonb, \
             PRIMARY KEY (\"event_id\")); COMMENT ON TABLE \"events\" IS 'sharded by shardgate on (tenant_id)'"
        );
    }

    #[test]
    fn a_table_without_an_id_carries_the_epoch_of_each_row() {
        let mut table = events();
        table.id = None;
        assert_eq!(
            create_table_sql(&table),
            "CREATE TABLE IF NOT EXISTS \"events\" (\"event_id\" uuid NOT NULL, \"tenant_id\" text NOT NULL, \
             \"ts\" timestamp with time zone NOT NULL DEFAULT now(), \"payload\" jsonb, \
             \"_sg_hash\" bigint NOT NULL, \"_sg_epoch\" bigint NOT NULL DEFAULT 0)"
        );
        assert_eq!(hidden_columns(&table), [HASH_COLUMN, EPOCH_COLUMN]);
        assert_eq!(
            add_epoch_column_sql(&table).unwrap(),
            "ALTER TABLE \"events\" ADD COLUMN IF NOT EXISTS _sg_epoch bigint NOT NULL DEFAULT 0"
        );
        assert_eq!(add_epoch_column_sql(&events()), None);
    }

    #[test]
    fn expected_columns_end_with_the_hash_column() {
        let columns = expected_columns(&events());
        let names: Vec<_> = columns.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["event_id", "tenant_id", "ts", "payload", "_sg_hash"]);
        assert!(!columns[3].not_null);
    }
}
