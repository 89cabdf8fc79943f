//! Moving the rows of one range of one table: copy them from the source to the target in
//! chunks, check the copy on either side, and delete them from the source after the cutover.
//! A table with an id is copied by id ([`by_id`]); one without, by the epoch its rows were
//! written with ([`older`]).

mod by_id;
mod older;

use crate::ingest::copy::{CopyError, TableStatements};
use crate::pgtype::quote_ident;
use crate::routing::{Epoch, TokenRange};
use crate::schema::{EPOCH_COLUMN, HASH_COLUMN, TableSchema};
use by_id::IdCopy;
use deadpool_postgres::Pool;
use older::OlderRowsCopy;
use thiserror::Error;

/// A step on a range failed.
#[derive(Debug, Error)]
pub enum BackfillError {
    /// A shard could not be reached.
    #[error("shard {shard}: {reason}")]
    Unreachable {
        /// The shard.
        shard: String,
        /// Why.
        reason: String,
    },
    /// A statement on a shard failed.
    #[error("shard {shard}: {}", crate::pg::describe_error(.cause))]
    Query {
        /// The shard.
        shard: String,
        /// The driver's error.
        cause: tokio_postgres::Error,
    },
    /// The target refused a chunk.
    #[error("shard {shard}: {cause}")]
    Load {
        /// The shard.
        shard: String,
        /// Why.
        cause: CopyError,
    },
}

/// A shard's name and pool.
#[derive(Clone, Copy)]
pub struct Side<'a> {
    /// The shard's name, for errors.
    pub name: &'a str,
    /// Its connections.
    pub pool: &'a Pool,
}

impl Side<'_> {
    /// A connection to the shard, or why there is none.
    async fn client(&self) -> Result<deadpool_postgres::Object, BackfillError> {
        self.pool.get().await.map_err(|e| unreachable(*self, &e))
    }

    /// A statement on the shard failed with `cause`.
    fn failed(&self, cause: tokio_postgres::Error) -> BackfillError {
        BackfillError::Query {
            shard: self.name.to_string(),
            cause,
        }
    }
}

/// One range of one table on its way from a source to a target.
pub enum RangeCopy<'a> {
    /// A table with an id: every row, deduplicated by id on the target.
    ById(IdCopy<'a>),
    /// A table without an id: the rows older than the dual-write epoch.
    Older(OlderRowsCopy<'a>),
}

impl<'a> RangeCopy<'a> {
    /// A copy of the rows of `table` in `range` from `source` to `target`, for a migration
    /// that began dual-writing with epoch `dual_write`.
    pub fn new(
        table: &'a TableSchema,
        statements: &'a TableStatements,
        range: &TokenRange,
        (source, target): (Side<'a>, Side<'a>),
        dual_write: Epoch,
    ) -> RangeCopy<'a> {
        if table.id.is_some() {
            RangeCopy::ById(IdCopy::new(table, statements, range, source, target))
        } else {
            RangeCopy::Older(OlderRowsCopy::new(table, range, (source, target), dual_write))
        }
    }

    /// Copies the next chunk of about `rows` rows, written on the target under `epoch`'s
    /// fence; returns how many it copied, 0 once the range is done.
    pub async fn next_chunk(&mut self, rows: usize, epoch: Epoch) -> Result<usize, BackfillError> {
        match self {
            RangeCopy::ById(copy) => copy.next_chunk(rows, epoch).await,
            RangeCopy::Older(copy) => copy.next_chunk(rows, epoch).await,
        }
    }
}

fn unreachable(side: Side<'_>, error: &deadpool_postgres::PoolError) -> BackfillError {
    BackfillError::Unreachable {
        shard: side.name.to_string(),
        reason: crate::pg::describe_pool_error(error),
    }
}

/// `_sg_hash BETWEEN lo AND hi OR ...` over the stored intervals of `range`.
fn in_range(range: &TokenRange) -> String {
    let intervals: Vec<String> = range
        .stored_intervals()
        .iter()
        .map(|(lo, hi)| format!("{HASH_COLUMN} BETWEEN {lo} AND {hi}"))
        .collect();
    format!("({})", intervals.join(" OR "))
}

/// Rows of `table` in `range` on `side`.
pub async fn count_in_range(
    side: Side<'_>,
    table: &TableSchema,
    range: &TokenRange,
) -> Result<i64, BackfillError> {
    let client = side.client().await?;
    let sql = format!(
        "SELECT count(*) FROM {} WHERE {}",
        quote_ident(&table.name),
        in_range(range)
    );
    let row = client
        .query_one(&sql, &[])
        .await
        .map_err(|cause| side.failed(cause))?;
    Ok(row.get(0))
}

/// The rows of `table` in `range` on `side` written before epoch `before`: how many, and a
/// checksum of their text (written with fixed output settings, so two shards agree on equal
/// rows whatever their own defaults).
pub async fn older_rows_summary(
    side: Side<'_>,
    table: &TableSchema,
    range: &TokenRange,
    before: Epoch,
) -> Result<(i64, i64), BackfillError> {
    let mut client = side.client().await?;
    let tx = client.transaction().await.map_err(|cause| side.failed(cause))?;
    tx.batch_execute(
        "SET LOCAL TimeZone = 'UTC'; SET LOCAL DateStyle = 'ISO, YMD'; SET LOCAL IntervalStyle = 'postgres'; \
         SET LOCAL extra_float_digits = 1; SET LOCAL bytea_output = 'hex'",
    )
    .await
    .map_err(|cause| side.failed(cause))?;
    let sql = format!(
        "SELECT count(*), coalesce(sum(hashtext(t::text)), 0)::bigint FROM {} t WHERE {} AND {EPOCH_COLUMN} < $1",
        quote_ident(&table.name),
        in_range(range)
    );
    let row = tx
        .query_one(&sql, &[&before.0])
        .await
        .map_err(|cause| side.failed(cause))?;
    Ok((row.get(0), row.get(1)))
}

/// Deletes the rows of `table` in `range` from `side`, `rows` at a time; returns how many.
pub async fn delete_range(
    side: Side<'_>,
    table: &TableSchema,
    range: &TokenRange,
    rows: usize,
) -> Result<u64, BackfillError> {
    let client = side.client().await?;
    let name = quote_ident(&table.name);
    let sql = format!(
        "DELETE FROM {name} WHERE ctid = ANY(ARRAY(SELECT ctid FROM {name} WHERE {} LIMIT {rows}))",
        in_range(range)
    );
    let mut deleted = 0;
    loop {
        let chunk = client
            .execute(&sql, &[])
            .await
            .map_err(|cause| side.failed(cause))?;
        deleted += chunk;
        if chunk == 0 {
            return Ok(deleted);
        }
    }
}

/// The name and columns of the index the backfill reads `table` by: `(_sg_hash, id)`, or
/// `(_sg_hash)` for a table without an id.
fn backfill_index(table: &TableSchema) -> (String, String) {
    match table.id.map(|i| quote_ident(&table.columns[i].name)) {
        Some(id) => (
            format!("{}_sg_hash_id", table.name),
            format!("{HASH_COLUMN}, {id}"),
        ),
        None => (format!("{}_sg_hash", table.name), HASH_COLUMN.to_string()),
    }
}

/// Creates, without blocking writes, the index the backfill and the cleanup read `table` by,
/// if missing.
pub async fn ensure_index(side: Side<'_>, table: &TableSchema) -> Result<(), BackfillError> {
    let (name, columns) = backfill_index(table);
    let sql = format!(
        "CREATE INDEX CONCURRENTLY IF NOT EXISTS {} ON {} ({columns})",
        quote_ident(&name),
        quote_ident(&table.name)
    );
    run_concurrently(side, &sql).await
}

/// Drops, without blocking writes, the index [`ensure_index`] made: it costs ingest a quarter
/// to two fifths of its rate, which is worth paying only while ranges move.
pub async fn drop_index(side: Side<'_>, table: &TableSchema) -> Result<(), BackfillError> {
    let (name, _) = backfill_index(table);
    run_concurrently(
        side,
        &format!("DROP INDEX CONCURRENTLY IF EXISTS {}", quote_ident(&name)),
    )
    .await
}

/// Runs one `CONCURRENTLY` statement on `side`, quietly: the notice an index that exists (or
/// does not) gives is expected, not news.
async fn run_concurrently(side: Side<'_>, sql: &str) -> Result<(), BackfillError> {
    let client = side.client().await?;
    // One statement per call: CONCURRENTLY cannot run in the implicit transaction of several.
    for statement in [
        "SET client_min_messages = warning",
        sql,
        "RESET client_min_messages",
    ] {
        client
            .batch_execute(statement)
            .await
            .map_err(|cause| side.failed(cause))?;
    }
    Ok(())
}

/// Drops the fence of a database whose joining was cancelled, so it may be offered again.
pub async fn drop_fence(side: Side<'_>) -> Result<(), BackfillError> {
    let client = side.client().await?;
    client
        .batch_execute("DROP TABLE IF EXISTS shardgate_fence")
        .await
        .map_err(|cause| side.failed(cause))
}
