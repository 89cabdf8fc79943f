//! Moving the rows of a set of ranges of one table: copy them from the source to the target
//! ([`sweep`]), check the copy on either side ([`summaries`]), and delete them from the source
//! after the cutover ([`delete_rows`]). Each is one sequential pass over a table's blocks
//! ([`blocks`]) that finds a row's range by binary search ([`moving`]), so no index is needed
//! and ingest pays nothing for one.

pub mod blocks;
pub mod range_set;
pub mod sweep;

use crate::ingest::copy::CopyError;
use crate::pgtype::quote_ident;
use crate::routing::Epoch;
use crate::schema::{EPOCH_COLUMN, TableSchema};
use blocks::BlockChunks;
use deadpool_postgres::Pool;
pub use range_set::RangeSet;
pub use sweep::{RangesCopy, drop_cursors};
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

fn unreachable(side: Side<'_>, error: &deadpool_postgres::PoolError) -> BackfillError {
    BackfillError::Unreachable {
        shard: side.name.to_string(),
        reason: crate::pg::describe_pool_error(error),
    }
}

/// Per range of `moving`, the rows of `table` on `side` and a checksum of them. With
/// `older_than`, only rows written before that epoch count, and the checksum sums a hash of
/// their text (written with fixed output settings, so two shards agree on equal rows whatever
/// their own defaults); without, it is 0. One pass over the table.
pub async fn summaries(
    side: Side<'_>,
    table: &TableSchema,
    moving: &RangeSet,
    older_than: Option<Epoch>,
) -> Result<Vec<(i64, i64)>, BackfillError> {
    let mut client = side.client().await?;
    let tx = client.transaction().await.map_err(|cause| side.failed(cause))?;
    tx.batch_execute(
        "SET LOCAL TimeZone = 'UTC'; SET LOCAL DateStyle = 'ISO, YMD'; SET LOCAL IntervalStyle = 'postgres'; \
         SET LOCAL extra_float_digits = 1; SET LOCAL bytea_output = 'hex'",
    )
    .await
    .map_err(|cause| side.failed(cause))?;
    let (checksum, older) = match older_than {
        Some(_) => (
            "coalesce(sum(hashtext(t::text)), 0)::bigint",
            format!(" AND {EPOCH_COLUMN} < $2"),
        ),
        None => ("0::bigint", String::new()),
    };
    let sql = format!(
        "SELECT {bucket}, count(*), {checksum} FROM {} t WHERE {}{older} GROUP BY 1",
        quote_ident(&table.name),
        RangeSet::filter_sql(1),
        bucket = RangeSet::bucket_sql(1),
    );
    let bounds = moving.bounds();
    let found = match older_than {
        Some(epoch) => tx.query(&sql, &[&bounds, &epoch.0]).await,
        None => tx.query(&sql, &[&bounds]).await,
    }
    .map_err(|cause| side.failed(cause))?;
    let mut per_range = vec![(0i64, 0i64); moving.len()];
    for row in &found {
        if let Some(range) = moving.range_of_bucket(row.get(0)) {
            let (rows, sum) = &mut per_range[range];
            *rows += row.get::<_, i64>(1);
            *sum = sum.wrapping_add(row.get::<_, i64>(2));
        }
    }
    Ok(per_range)
}

/// Deletes the rows of `table` in `moving` from `side`, in one pass over its blocks with
/// chunks of about `rows` rows, waiting `pause(time a chunk took)` after each; returns how many.
pub async fn delete_rows(
    side: Side<'_>,
    table: &TableSchema,
    moving: &RangeSet,
    rows: usize,
    pause: impl Fn(std::time::Duration) -> std::time::Duration,
) -> Result<u64, BackfillError> {
    if moving.is_empty() {
        return Ok(0);
    }
    let end = blocks::table_blocks(side, table).await?;
    let client = side.client().await?;
    let name = quote_ident(&table.name);
    let bounds = moving.bounds();
    let mut pass = BlockChunks::new(0, end);
    let mut deleted = 0;
    while let Some(chunk) = pass.next_chunk(rows) {
        let started = std::time::Instant::now();
        let sql = format!(
            "DELETE FROM {name} WHERE {} AND {}",
            blocks::in_blocks(chunk),
            RangeSet::filter_sql(1)
        );
        let gone = client
            .execute(&sql, &[&bounds])
            .await
            .map_err(|cause| side.failed(cause))?;
        deleted += gone;
        pass.passed(chunk, gone as usize);
        tokio::time::sleep(pause(started.elapsed())).await;
    }
    Ok(deleted)
}

/// The name of the index an earlier release's backfill read `table` by.
fn backfill_index(table: &TableSchema) -> String {
    match table.id {
        Some(_) => format!("{}_sg_hash_id", table.name),
        None => format!("{}_sg_hash", table.name),
    }
}

/// Drops, without blocking writes, the index an earlier release built for its backfill on
/// `table`, if a migration it began left one: it costs ingest a quarter to two fifths of its
/// rate.
pub async fn drop_index(side: Side<'_>, table: &TableSchema) -> Result<(), BackfillError> {
    let name = backfill_index(table);
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
