//! Stream tables on the shards: the version check run on a stream's shard in each batch's
//! transaction, and the unique index it relies on.
//!
//! A stream table's partition key names a stream, and each row carries its version. A batch is
//! copied into the staging table, then one query looks for an append the stream does not
//! allow: a stream's first row in the batch must follow the stream's stored last version (1 for
//! a new stream), and each further row the one before it. A row whose id is
//! stored already is a retry and is left out (it is skipped by the insert). Two transactions
//! that pass the check at once for the same stream meet on the unique index of (stream,
//! version): the second waits for the first and fails, and its batch is written again, when
//! the check sees the first's rows. So an append commits only as the stream's next versions,
//! under any concurrency and across proxies.

use super::{TableSchema, quote_ident};

/// The suffix of the unique index on (stream, version) of a stream table.
pub const STREAM_INDEX_SUFFIX: &str = "_sg_stream";

/// An append its stream does not allow, as the check found it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamConflict {
    /// The stream: its partition-key columns and values, as text.
    pub stream: Vec<(String, String)>,
    /// The version the append gave.
    pub version: i64,
    /// The stream's last stored version (0 for a stream with none).
    pub current: i64,
}

impl std::fmt::Display for StreamConflict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let key: Vec<String> = self.stream.iter().map(|(c, v)| format!("{c} = {v}")).collect();
        write!(
            f,
            "stream ({}) is at version {}: an append must start at version {}, not {}",
            key.join(", "),
            self.current,
            self.current + 1,
            self.version
        )
    }
}

/// The query finding an append that breaks its stream among the rows in `staging`; `None`
/// for a table that is not a stream. It returns the stream's key values as text, the row's
/// version and the stream's last stored version, for the first such row.
pub fn check_sql(table: &TableSchema, staging: &str) -> Option<String> {
    let version = quote_ident(&table.columns[table.stream_version?].name);
    let target = quote_ident(&table.name);
    let keys: Vec<String> = table
        .partition_key
        .iter()
        .map(|&i| quote_ident(&table.columns[i].name))
        .collect();
    let key_list = keys.join(", ");
    let same_stream = keys
        .iter()
        .map(|k| format!("t.{k} = s.{k}"))
        .collect::<Vec<_>>()
        .join(" AND ");
    let key_text = keys
        .iter()
        .map(|k| format!("s.{k}::text"))
        .collect::<Vec<_>>()
        .join(", ");
    let not_retried = match table.id.map(|i| quote_ident(&table.columns[i].name)) {
        Some(id) => format!(" WHERE (SELECT 1 FROM {target} t WHERE t.{id} = st.{id}) IS NULL"),
        None => String::new(),
    };
    // The stream's stored last version, by a backward scan of the unique index. Written as a
    // scalar subquery, never as EXISTS, which the planner may turn into a hashed subplan that
    // reads the whole table on every batch.
    let current = format!("coalesce((SELECT max(t.{version}) FROM {target} t WHERE {same_stream}), 0)");
    Some(format!(
        "SELECT {key_text}, s.{version}::bigint, {current}::bigint \
         FROM (SELECT {key_list}, {version}, \
         lag({version}) OVER (PARTITION BY {key_list} ORDER BY {version}) AS _sg_prev \
         FROM {staging} st{not_retried}) s \
         WHERE CASE WHEN s._sg_prev IS NULL THEN s.{version} <> {current} + 1 \
         ELSE s._sg_prev <> s.{version} - 1 END \
         LIMIT 1"
    ))
}

/// The unique index on (stream, version) every shard carries for a stream table; `None` for
/// other tables.
pub fn index_sql(table: &TableSchema) -> Option<String> {
    let version = &table.columns[table.stream_version?].name;
    let columns: Vec<String> = table
        .partition_key
        .iter()
        .map(|&i| quote_ident(&table.columns[i].name))
        .chain(std::iter::once(quote_ident(version)))
        .collect();
    Some(format!(
        "CREATE UNIQUE INDEX IF NOT EXISTS {} ON {} ({})",
        quote_ident(&format!("{}{STREAM_INDEX_SUFFIX}", table.name)),
        quote_ident(&table.name),
        columns.join(", ")
    ))
}

/// Whether a unique violation on `constraint` is two appends to one stream meeting.
pub fn is_stream_index(constraint: &str) -> bool {
    constraint.ends_with(STREAM_INDEX_SUFFIX)
}
