//! Copying a range of a table without an id. Such rows cannot be told apart, so the copy takes
//! exactly the rows written before dual-writing began (`_sg_epoch` older than the migration's
//! dual-write epoch): the fences stop any such row from being written once the copy starts, and
//! every younger row of the range reaches the target by the dual write, never by the copy.
//!
//! Chunks cover whole ring positions, in order: each is the rows of positions `[from, to]`,
//! streamed with binary `COPY ... TO STDOUT` from the source into `COPY ... FROM STDIN` on the
//! target in one transaction that also checks the target's fence. The target's copied rows are
//! therefore the journal of the copy: a resumed copy goes on after the last position the
//! target holds older rows of, and no row is copied twice.

use super::{BackfillError, Side};
use crate::ingest::copy::CopyError;
use crate::pgtype::quote_ident;
use crate::routing::{Epoch, TokenRange};
use crate::schema::{EPOCH_COLUMN, HASH_COLUMN, TableSchema, hidden_columns};
use crate::shards::fence;
use futures_util::{SinkExt, StreamExt};

/// One range of a table without an id on its way from a source to a target.
pub struct OlderRowsCopy<'a> {
    table: &'a TableSchema,
    source: Side<'a>,
    target: Side<'a>,
    /// The epoch that began dual-writing the range: older rows are copied.
    before: Epoch,
    intervals: Vec<(i64, i64)>,
    /// Per interval, the first position not copied yet (`None` once it is done); read from the
    /// target on the first chunk.
    next: Option<Vec<Option<i64>>>,
}

impl<'a> OlderRowsCopy<'a> {
    /// A copy of the rows of `table` in `range` written before epoch `before`, from `source`
    /// to `target`.
    pub fn new(
        table: &'a TableSchema,
        range: &TokenRange,
        (source, target): (Side<'a>, Side<'a>),
        before: Epoch,
    ) -> OlderRowsCopy<'a> {
        OlderRowsCopy {
            table,
            source,
            target,
            before,
            intervals: range.stored_intervals(),
            next: None,
        }
    }

    /// Copies the next chunk: the rows of as few whole positions as hold at least `rows` rows
    /// (all that are left when fewer do), written on the target under `epoch`'s fence. Returns
    /// how many it copied, 0 once the range is done.
    pub async fn next_chunk(&mut self, rows: usize, epoch: Epoch) -> Result<usize, BackfillError> {
        if self.next.is_none() {
            self.next = Some(self.resume_points().await?);
        }
        for index in 0..self.intervals.len() {
            let Some(from) = self.next.as_ref().and_then(|next| next[index]) else {
                continue;
            };
            let hi = self.intervals[index].1;
            let to = self.chunk_end(from, hi, rows).await?;
            let copied = self.copy_positions(from, to, epoch).await?;
            if let Some(next) = self.next.as_mut() {
                next[index] = (to < hi).then(|| to + 1);
            }
            if copied > 0 {
                return Ok(copied);
            }
        }
        Ok(0)
    }

    /// Where each interval's copy goes on: after the last position of it the target holds
    /// older rows of.
    async fn resume_points(&self) -> Result<Vec<Option<i64>>, BackfillError> {
        let client = self.target.client().await?;
        let sql = format!(
            "SELECT max({HASH_COLUMN}) FROM {} WHERE {HASH_COLUMN} BETWEEN $1 AND $2 AND {EPOCH_COLUMN} < $3",
            quote_ident(&self.table.name)
        );
        let mut points = Vec::with_capacity(self.intervals.len());
        for &(lo, hi) in &self.intervals {
            let last: Option<i64> = client
                .query_one(&sql, &[&lo, &hi, &self.before.0])
                .await
                .map_err(|cause| self.target.failed(cause))?
                .get(0);
            points.push(match last {
                None => Some(lo),
                Some(last) if last < hi => Some(last + 1),
                Some(_) => None,
            });
        }
        Ok(points)
    }

    /// The last position of the chunk starting at `from`: that of its `rows`-th older row, or
    /// `hi` when fewer are left.
    async fn chunk_end(&self, from: i64, hi: i64, rows: usize) -> Result<i64, BackfillError> {
        let client = self.source.client().await?;
        let sql = format!(
            "SELECT {HASH_COLUMN} FROM {} WHERE {HASH_COLUMN} BETWEEN $1 AND $2 AND {EPOCH_COLUMN} < $3 \
             ORDER BY {HASH_COLUMN} OFFSET $4 LIMIT 1",
            quote_ident(&self.table.name)
        );
        let offset = rows.saturating_sub(1) as i64;
        let found = client
            .query_opt(&sql, &[&from, &hi, &self.before.0, &offset])
            .await
            .map_err(|cause| self.source.failed(cause))?;
        Ok(found.map_or(hi, |row| row.get(0)))
    }

    /// Streams the older rows of positions `[from, to]` from the source into the target, in
    /// one target transaction after its fence check; returns how many rows it wrote.
    async fn copy_positions(&self, from: i64, to: i64, epoch: Epoch) -> Result<usize, BackfillError> {
        let columns: Vec<String> = self
            .table
            .columns
            .iter()
            .map(|c| quote_ident(&c.name))
            .chain(hidden_columns(self.table).iter().map(|c| quote_ident(c)))
            .collect();
        let columns = columns.join(", ");
        let name = quote_ident(&self.table.name);
        // Integers only: COPY takes no parameters.
        let read = format!(
            "COPY (SELECT {columns} FROM {name} WHERE {HASH_COLUMN} BETWEEN {from} AND {to} \
             AND {EPOCH_COLUMN} < {}) TO STDOUT (FORMAT binary)",
            self.before.0
        );
        let write = format!("COPY {name} ({columns}) FROM STDIN (FORMAT binary)");
        let source = self.source.client().await?;
        let mut target = self.target.client().await?;
        let written = stream_into(&source, &mut target, (&read, &write), epoch).await;
        if written.is_err() {
            // A COPY cut off half-way leaves the session in an unknown state.
            drop(deadpool_postgres::Object::take(target));
        }
        written.map_err(|failure| match failure {
            Failure::Source(cause) => self.source.failed(cause),
            Failure::Target(cause) => BackfillError::Load {
                shard: self.target.name.to_string(),
                cause,
            },
        })
    }
}

/// Which side of a streamed copy failed.
enum Failure {
    Source(tokio_postgres::Error),
    Target(CopyError),
}

/// Runs `read` (a `COPY ... TO STDOUT`) on `source` into `write` (a `COPY ... FROM STDIN`) on
/// `target`, in a target transaction that first checks the fence holds `epoch`.
async fn stream_into(
    source: &tokio_postgres::Client,
    target: &mut tokio_postgres::Client,
    (read, write): (&str, &str),
    epoch: Epoch,
) -> Result<usize, Failure> {
    let target_error = |e: tokio_postgres::Error| Failure::Target(CopyError::from_pg(e));
    let tx = target.transaction().await.map_err(target_error)?;
    let found = Epoch(
        tx.query_one(fence::READ_FOR_BATCH_SQL, &[])
            .await
            .map_err(target_error)?
            .get(0),
    );
    fence::check(epoch, found).map_err(|e| Failure::Target(e.into()))?;
    let sink = tx.copy_in(write).await.map_err(target_error)?;
    futures_util::pin_mut!(sink);
    let rows = source.copy_out(read).await.map_err(Failure::Source)?;
    futures_util::pin_mut!(rows);
    while let Some(data) = rows.next().await {
        sink.feed(data.map_err(Failure::Source)?)
            .await
            .map_err(target_error)?;
    }
    let written = sink.finish().await.map_err(target_error)?;
    tx.commit().await.map_err(target_error)?;
    Ok(written as usize)
}
