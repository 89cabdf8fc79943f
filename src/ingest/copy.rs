//! One batch into one shard: a single transaction that checks the fence, streams the batch with
//! binary COPY and, for tables with an id, skips the ids stored already (invariant 6).
//!
//! A table with an id is first tried by plain COPY into the table ([`super::optimism`]); when
//! that meets a stored id, the transaction is rolled back and the batch is written again
//! through a per-connection staging table moved into the table with `INSERT ... ON CONFLICT
//! (id) DO NOTHING`. The conflict target is the id alone: a repeated id is a retry and is
//! skipped, while a row that breaks any other unique or exclusion constraint fails the batch as
//! a data error on either path, so it is refused and never counted as stored. Rows are inserted
//! from staging in id order, so two transactions that insert some of the same ids (a
//! migration's copy and a dual-written batch) wait for each other instead of deadlocking.
//! Stream tables always load through staging, where their versions are checked.
//!
//! The batch arrives already encoded; a connection is checked out only to send it. Statements
//! are prepared once per connection. Any failure other than a data error discards the
//! connection, so a half-finished COPY can never leave a session in an unknown state.

use super::optimism::{LoadPath, Optimism};
use crate::pg::describe_pool_error;
use crate::routing::Epoch;
use crate::schema::streams::{self, StreamConflict};
use crate::schema::{TableSchema, hidden_columns, quote_ident};
use crate::shards::fence::{self, FenceMismatch};
use crate::shards::{applied, idempotency};
use bytes::Bytes;
use deadpool_postgres::{Object, Pool};
use futures_util::SinkExt;
use thiserror::Error;
use tokio_postgres::types::ToSql;

/// Binary COPY signature, flags and header-extension length.
const COPY_HEADER: &[u8] = b"PGCOPY\n\xff\r\n\0\0\0\0\0\0\0\0\0";
/// Binary COPY trailer: a tuple with field count -1.
const COPY_TRAILER: &[u8] = &[0xff, 0xff];

/// Why a batch did not commit.
#[derive(Debug, Error)]
pub enum CopyError {
    /// Postgres refused the rows themselves (a constraint, a value); splitting may isolate them.
    #[error("{message}")]
    Data {
        /// The SQLSTATE Postgres gave.
        sqlstate: String,
        /// Postgres's message, with its detail.
        message: String,
    },
    /// The shard is unreachable or failed in a way worth retrying.
    #[error("{0}")]
    Transient(String),
    /// The shard failed in a way a retry will not mend.
    #[error("{0}")]
    Fatal(String),
    /// The shard's fence holds another epoch than the batch was routed with.
    #[error(transparent)]
    Fence(#[from] FenceMismatch),
    /// A stream table's rows do not append to their stream as its next versions.
    #[error("{0}")]
    Stream(StreamConflict),
    /// Another batch appended to one of the batch's streams after this one's version check
    /// passed: the unique index on (stream, version) refused it once that batch committed.
    /// Nothing was stored; written again, the check sees the other batch's rows. The
    /// connection is fine (the transaction just rolled back).
    #[error("another batch appended to the same stream at once")]
    StreamRace,
    /// The batch's spool record is marked as applied on the shard already, or its idempotency
    /// key recorded there: an earlier attempt committed it (its answer lost), so nothing of
    /// this one was stored.
    #[error("the spool record or idempotency key was applied on this shard before")]
    AlreadyApplied,
    /// A plain COPY met a unique or exclusion constraint (an id stored already, most often) or
    /// a deadlock over ids: the batch is written again through the staging table, which skips
    /// stored ids, refuses the rest and inserts in id order, so this never reaches a request.
    #[error("a row's id or another unique key is stored already")]
    IdStored,
}

impl CopyError {
    /// Classifies a driver error of a load: the rows, the connection, or anything else.
    pub fn from_pg(error: tokio_postgres::Error) -> CopyError {
        let Some(db) = error.as_db_error() else {
            return CopyError::Transient(error.to_string());
        };
        if matches!(
            db.constraint(),
            Some(applied::APPLIED_KEY | idempotency::RECORD_KEY)
        ) {
            return CopyError::AlreadyApplied;
        }
        if db.constraint().is_some_and(streams::is_stream_index) {
            return CopyError::StreamRace;
        }
        let message = match db.detail() {
            Some(detail) => format!("{} ({detail})", db.message()),
            None => db.message().to_string(),
        };
        match &db.code().code()[..2] {
            // data exception, integrity constraint violation
            "22" | "23" => CopyError::Data {
                sqlstate: db.code().code().to_string(),
                message,
            },
            // connection exception, transaction rollback, insufficient resources,
            // object not in prerequisite state (lock timeouts), operator intervention
            "08" | "40" | "53" | "55" | "57" => CopyError::Transient(message),
            _ => CopyError::Fatal(message),
        }
    }
}

/// The statements every new shard connection runs: the staging tables of all tables with an
/// id and all stream tables.
/// Staging tables live as long as their connection, so each is created once, at connect time.
pub fn session_setup_sql(statements: &[TableStatements]) -> String {
    statements
        .iter()
        .filter_map(|s| s.create_staging.as_deref())
        .collect::<Vec<_>>()
        .join(";\n")
}

/// The SQL text a table's batches use, built once at start.
#[derive(Debug)]
pub struct TableStatements {
    copy: String,
    create_staging: Option<String>,
    insert_from_staging: Option<String>,
    /// For a table with an id (not a stream table), the plain COPY tried first and how those
    /// tries went.
    plain: Option<PlainCopy>,
    /// For a stream table, the query finding an append its stream does not allow.
    stream_check: Option<String>,
    /// For a stream table, its partition-key columns, which name a stream.
    stream_keys: Vec<String>,
}

/// A table with an id's plain COPY into the table, tried before its staging table.
#[derive(Debug)]
struct PlainCopy {
    copy: String,
    optimism: Optimism,
}

/// Whether `error` is one the staging path settles: a unique or exclusion violation (a stored
/// id, or a row another constraint refuses, which the staging table's insert tells apart,
/// skipping the one and refusing the other as it always did), or a deadlock with another
/// transaction inserting some of the same ids in another order (the staging path inserts in
/// id order, so two such transactions wait for each other instead).
fn staging_decides(error: &tokio_postgres::Error) -> bool {
    use tokio_postgres::error::SqlState;
    let settled_by_staging = [
        SqlState::UNIQUE_VIOLATION,
        SqlState::EXCLUSION_VIOLATION,
        SqlState::T_R_DEADLOCK_DETECTED,
    ];
    error
        .as_db_error()
        .is_some_and(|db| settled_by_staging.contains(db.code()))
}

impl TableStatements {
    /// Builds the COPY statements of `table`: straight into the table, or, for tables with an
    /// id and stream tables, into a staging table moved into it by an insert.
    pub fn new(table: &TableSchema) -> TableStatements {
        let columns = copied_columns(table);
        let target = quote_ident(&table.name);
        if table.id.is_none() && table.stream_version.is_none() {
            return TableStatements::without_deduplication(table);
        }
        let staging = quote_ident(&format!("shardgate_stage_{}", table.name));
        let typed_columns: Vec<String> = table
            .columns
            .iter()
            .map(|c| format!("{} {}", quote_ident(&c.name), c.ty.sql_name()))
            .chain(
                hidden_columns(table)
                    .iter()
                    .map(|c| format!("{} bigint", quote_ident(c))),
            )
            .collect();
        let insert = match table.id.map(|i| quote_ident(&table.columns[i].name)) {
            Some(id) => format!(
                "INSERT INTO {target} ({columns}) SELECT {columns} FROM pg_temp.{staging} \
                 ORDER BY {id} ON CONFLICT ({id}) DO NOTHING"
            ),
            None => format!("INSERT INTO {target} ({columns}) SELECT {columns} FROM pg_temp.{staging}"),
        };
        let plain = table
            .id
            .filter(|_| table.stream_version.is_none())
            .map(|_| PlainCopy {
                copy: format!("COPY {target} ({columns}) FROM STDIN (FORMAT binary)"),
                optimism: Optimism::default(),
            });
        TableStatements {
            copy: format!("COPY pg_temp.{staging} ({columns}) FROM STDIN (FORMAT binary)"),
            plain,
            create_staging: Some(format!(
                "CREATE TEMPORARY TABLE IF NOT EXISTS {staging} ({}) ON COMMIT DELETE ROWS",
                typed_columns.join(", ")
            )),
            insert_from_staging: Some(insert),
            stream_check: streams::check_sql(table, &format!("pg_temp.{staging}")),
            stream_keys: table
                .partition_key
                .iter()
                .map(|&i| table.columns[i].name.clone())
                .collect(),
        }
    }
}

impl TableStatements {
    /// Plain binary COPY into `table` and nothing else: how a table without an id loads, and
    /// for any table the shards' physical limit a benchmark compares with (a retried id would
    /// be stored twice, or refused by the primary key).
    pub fn without_deduplication(table: &TableSchema) -> TableStatements {
        TableStatements {
            copy: format!(
                "COPY {} ({}) FROM STDIN (FORMAT binary)",
                quote_ident(&table.name),
                copied_columns(table)
            ),
            create_staging: None,
            insert_from_staging: None,
            plain: None,
            stream_check: None,
            stream_keys: Vec::new(),
        }
    }
}

/// The columns a batch's tuples fill, declared and hidden, quoted and comma-separated.
fn copied_columns(table: &TableSchema) -> String {
    let columns: Vec<String> = table
        .columns
        .iter()
        .map(|c| quote_ident(&c.name))
        .chain(hidden_columns(table).iter().map(|c| quote_ident(c)))
        .collect();
    columns.join(", ")
}

/// A statement a batch runs in its own transaction after its rows, so what it records (how far
/// a copy got, a spool part's mark, an idempotency key's record) commits with them or not at
/// all.
pub struct AlsoRecord<'a> {
    /// The statement.
    pub sql: &'a str,
    /// Its parameters.
    pub params: &'a [&'a (dyn ToSql + Sync)],
}

/// Writes the tuples of `parts` (each a run of encoded tuples) as one transaction on `pool`'s
/// shard, after checking its fence holds `epoch`.
pub async fn write_batch(
    pool: &Pool,
    statements: &TableStatements,
    epoch: Epoch,
    parts: &[Bytes],
) -> Result<LoadPath, CopyError> {
    write_batch_recording(pool, statements, epoch, parts, (&[], false)).await
}

/// [`write_batch`], running `records` in the same transaction after the rows, and, when
/// `check_streams` is set, the version check of a stream table's rows (not for copies of rows
/// whose owner checked them). Answers how the rows reached the table.
pub async fn write_batch_recording(
    pool: &Pool,
    statements: &TableStatements,
    epoch: Epoch,
    parts: &[Bytes],
    (records, check_streams): (&[AlsoRecord<'_>], bool),
) -> Result<LoadPath, CopyError> {
    let mut client = pool
        .get()
        .await
        .map_err(|e| CopyError::Transient(describe_pool_error(&e)))?;
    let check = statements.stream_check.as_deref().filter(|_| check_streams);
    let result = write_by_the_path(&mut client, (statements, check), epoch, parts, records).await;
    if matches!(result, Err(CopyError::Transient(_) | CopyError::Fatal(_))) {
        // Unknown session state: never hand this connection to another batch.
        drop(Object::take(client));
    }
    result
}

/// Writes the batch by plain COPY when its table may try that now, and through staging when
/// it may not or the plain COPY met a stored id.
async fn write_by_the_path(
    client: &mut Object,
    (statements, check): (&TableStatements, Option<&str>),
    epoch: Epoch,
    parts: &[Bytes],
    records: &[AlsoRecord<'_>],
) -> Result<LoadPath, CopyError> {
    let batch = (epoch, parts, records);
    let Some(plain) = &statements.plain else {
        write_on(client, (statements, check), batch, None).await?;
        return Ok(if statements.insert_from_staging.is_some() {
            LoadPath::Staged
        } else {
            LoadPath::Copy
        });
    };
    if !plain.optimism.try_plain() {
        write_on(client, (statements, check), batch, None).await?;
        return Ok(LoadPath::Staged);
    }
    match write_on(client, (statements, check), batch, Some(plain)).await {
        Ok(()) => {
            plain.optimism.went_through();
            Ok(LoadPath::Copy)
        }
        Err(CopyError::IdStored) => {
            plain.optimism.fell_back();
            write_on(client, (statements, check), batch, None).await?;
            Ok(LoadPath::CopyThenStaged)
        }
        Err(other) => Err(other),
    }
}

/// One transaction of a batch: its rows by `plain` COPY into the table when given (a stored
/// id, or another unique key, is [`CopyError::IdStored`]), else by the table's own statements.
async fn write_on(
    client: &mut Object,
    (statements, check): (&TableStatements, Option<&str>),
    (epoch, parts, records): (Epoch, &[Bytes], &[AlsoRecord<'_>]),
    plain: Option<&PlainCopy>,
) -> Result<(), CopyError> {
    let insert = match (&statements.insert_from_staging, plain) {
        (Some(sql), None) => Some(client.prepare_cached(sql).await.map_err(CopyError::from_pg)?),
        _ => None,
    };
    let fence = client
        .prepare_cached(fence::READ_FOR_BATCH_SQL)
        .await
        .map_err(CopyError::from_pg)?;
    let copy = client
        .prepare_cached(plain.map_or(&statements.copy, |p| &p.copy))
        .await
        .map_err(CopyError::from_pg)?;
    let classify = |error: tokio_postgres::Error| match plain {
        Some(_) if staging_decides(&error) => CopyError::IdStored,
        _ => CopyError::from_pg(error),
    };
    let tx = client.transaction().await.map_err(CopyError::from_pg)?;
    let found = Epoch(
        tx.query_one(&fence, &[])
            .await
            .map_err(CopyError::from_pg)?
            .get(0),
    );
    fence::check(epoch, found)?;
    let sink = tx.copy_in::<_, Bytes>(&copy).await.map_err(classify)?;
    futures_util::pin_mut!(sink);
    sink.feed(Bytes::from_static(COPY_HEADER))
        .await
        .map_err(classify)?;
    for part in parts {
        sink.feed(part.clone()).await.map_err(classify)?;
    }
    sink.feed(Bytes::from_static(COPY_TRAILER))
        .await
        .map_err(classify)?;
    sink.finish().await.map_err(classify)?;
    if let Some(check) = check {
        let check = client_check(&tx, check).await?;
        if let Some(row) = check {
            return Err(CopyError::Stream(conflict_of(&statements.stream_keys, &row)));
        }
    }
    if let Some(insert) = insert {
        tx.execute(&insert, &[]).await.map_err(CopyError::from_pg)?;
    }
    for record in records {
        tx.execute(record.sql, record.params)
            .await
            .map_err(CopyError::from_pg)?;
    }
    tx.commit().await.map_err(CopyError::from_pg)
}

/// The conflict a row of the stream check's answer names.
fn conflict_of(table_keys: &[String], row: &tokio_postgres::Row) -> StreamConflict {
    let keys = table_keys.len();
    StreamConflict {
        stream: table_keys
            .iter()
            .enumerate()
            .map(|(i, name)| (name.clone(), row.get::<_, String>(i)))
            .collect(),
        version: row.get(keys),
        current: row.get(keys + 1),
    }
}

/// Runs a stream table's version check, prepared once per connection.
async fn client_check(
    tx: &deadpool_postgres::Transaction<'_>,
    check: &str,
) -> Result<Option<tokio_postgres::Row>, CopyError> {
    let statement = tx.prepare_cached(check).await.map_err(CopyError::from_pg)?;
    tx.query_opt(&statement, &[]).await.map_err(CopyError::from_pg)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    #[test]
    fn idempotent_tables_load_through_staging() {
        let config = Config::parse(
            r#"[[tables]]
            name = "events"
            id = "id"
            partition_key = ["k"]
            columns = [{ name = "id", type = "uuid" }, { name = "k", type = "text" }]
            [[tables]]
            name = "logs"
            partition_key = ["k"]
            columns = [{ name = "k", type = "text" }]"#,
        )
        .unwrap();
        let events = TableStatements::new(&TableSchema::from_config(&config.tables[0]).unwrap());
        let logs = TableStatements::new(&TableSchema::from_config(&config.tables[1]).unwrap());
        assert_eq!(
            session_setup_sql(&[events, logs]),
            "CREATE TEMPORARY TABLE IF NOT EXISTS \"shardgate_stage_events\" \
             (\"id\" uuid, \"k\" text, \"_sg_hash\" bigint) ON COMMIT DELETE ROWS"
        );
        let events = TableStatements::new(&TableSchema::from_config(&config.tables[0]).unwrap());
        assert_eq!(
            events.copy,
            "COPY pg_temp.\"shardgate_stage_events\" (\"id\", \"k\", \"_sg_hash\") FROM STDIN (FORMAT binary)"
        );
        assert_eq!(
            events.insert_from_staging.as_deref(),
            Some(
                "INSERT INTO \"events\" (\"id\", \"k\", \"_sg_hash\") SELECT \"id\", \"k\", \"_sg_hash\" \
                 FROM pg_temp.\"shardgate_stage_events\" ORDER BY \"id\" ON CONFLICT (\"id\") DO NOTHING"
            )
        );
        let logs = TableStatements::new(&TableSchema::from_config(&config.tables[1]).unwrap());
        assert_eq!(
            logs.copy,
            "COPY \"logs\" (\"k\", \"_sg_hash\", \"_sg_epoch\") FROM STDIN (FORMAT binary)"
        );
        assert!(logs.insert_from_staging.is_none());
    }

    #[test]
    fn header_is_the_binary_copy_signature() {
        assert_eq!(COPY_HEADER.len(), 19);
        assert_eq!(&COPY_HEADER[..11], b"PGCOPY\n\xff\r\n\0");
    }
}
