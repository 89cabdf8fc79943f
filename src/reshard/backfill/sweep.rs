//! Copying the rows of the ranges moving from one source to one target, for one table, in one
//! sequential pass over the source's blocks: no index is needed, and each block is read once
//! whatever the number of ranges.
//!
//! The pass covers the blocks the table had once the fences moved to the dual-write epoch
//! (measured when the copy step starts, and kept in the cursor); every row written after that
//! is dual-written, so nothing a later block holds needs the copy.
//! A table with an id copies every row of its ranges through the staged insert, so one already
//! on the target (dual-written) is skipped by its id. A table without an id copies exactly the
//! rows written before the dual-write epoch (`_sg_epoch`): the younger ones reach the target by
//! the dual write alone, so no row arrives twice.
//!
//! Each chunk is a run of blocks, written on the target in one transaction with the target's
//! fence check and the pass's cursor (`shardgate_backfill_cursor`): a pass resumed after a crash
//! goes on after the last chunk that committed, and copies no row twice.

use super::blocks::{BlockChunks, in_blocks, table_blocks};
use super::range_set::RangeSet;
use super::{BackfillError, Side};
use crate::ingest::copy::{AlsoRecord, CopyError, TableStatements, write_batch_recording};
use crate::pgtype::quote_ident;
use crate::routing::Epoch;
use crate::schema::{EPOCH_COLUMN, TableSchema, hidden_columns};
use bytes::{BufMut, Bytes, BytesMut};
use std::time::Duration;
use tokio_postgres::types::{FromSql, Type};

/// Attempts at loading one chunk before the step fails.
const LOAD_ATTEMPTS: u64 = 5;

/// The table on a target that records how far each pass into it got.
const CURSOR_TABLE: &str = "shardgate_backfill_cursor";

/// What one chunk copied.
#[derive(Debug, Default)]
pub struct Copied {
    /// Rows written to the target.
    pub rows: usize,
    /// Of those, per range (its index in the pass's [`RangeSet`]) with any.
    pub per_range: Vec<(usize, i64)>,
}

/// One table's pass from a source to a target, for one migration.
pub struct RangesCopy<'a> {
    table: &'a TableSchema,
    statements: &'a TableStatements,
    source: Side<'a>,
    target: Side<'a>,
    moving: &'a RangeSet,
    /// For a table without an id, the dual-write epoch: older rows are copied.
    older_than: Option<Epoch>,
    migration: i64,
    /// The source's blocks when the copy step started: where the pass ends unless the cursor
    /// names an end of its own.
    end_block: i64,
    /// Read from the target on the first chunk.
    pass: Option<BlockChunks>,
}

impl<'a> RangesCopy<'a> {
    /// A pass copying the rows of `table` in `moving` from `source` to `target` for migration
    /// `migration`, which began dual-writing with epoch `dual_write`, up to block `end_block`
    /// (the source's [`table_blocks`] once the fences moved to that epoch).
    pub fn new(
        table: &'a TableSchema,
        statements: &'a TableStatements,
        moving: &'a RangeSet,
        (source, target): (Side<'a>, Side<'a>),
        (migration, dual_write, end_block): (i64, Epoch, i64),
    ) -> RangesCopy<'a> {
        RangesCopy {
            table,
            statements,
            source,
            target,
            moving,
            older_than: table.id.is_none().then_some(dual_write),
            migration,
            end_block,
            pass: None,
        }
    }

    /// Makes the pass start from the first block again, whatever the target recorded, and go
    /// up to the source's blocks now.
    pub async fn restart(&mut self) -> Result<(), BackfillError> {
        let end = table_blocks(self.source, self.table).await?;
        self.pass = Some(BlockChunks::new(0, end));
        Ok(())
    }

    /// Blocks of the source passed and in all.
    pub fn progress(&self) -> (i64, i64) {
        self.pass.as_ref().map_or((0, 0), BlockChunks::progress)
    }

    /// Copies the next chunk, aiming at about `rows` rows, written on the target under
    /// `epoch`'s fence; `None` once the pass is over.
    pub async fn next_chunk(&mut self, rows: usize, epoch: Epoch) -> Result<Option<Copied>, BackfillError> {
        if self.pass.is_none() {
            self.pass = Some(self.resume().await?);
        }
        let Some(chunk) = self.pass.as_ref().and_then(|pass| pass.next_chunk(rows)) else {
            return Ok(None);
        };
        let (tuples, copied) = self.read(chunk).await?;
        if copied.rows > 0 {
            self.load(epoch, tuples, chunk.1).await?;
        }
        if let Some(pass) = self.pass.as_mut() {
            pass.passed(chunk, copied.rows);
        }
        Ok(Some(copied))
    }

    /// Where the pass goes on and ends: as the target's cursor says, or from the first block to
    /// `end_block` when it has none.
    async fn resume(&self) -> Result<BlockChunks, BackfillError> {
        let client = self.target.client().await?;
        client
            .batch_execute(&format!(
                "SET client_min_messages = warning; \
                 CREATE TABLE IF NOT EXISTS {CURSOR_TABLE} (migration bigint, source text, table_name text, \
                 next_block bigint NOT NULL, end_block bigint NOT NULL, PRIMARY KEY (migration, source, table_name)); \
                 RESET client_min_messages"
            ))
            .await
            .map_err(|cause| self.target.failed(cause))?;
        let cursor: Option<(i64, i64)> = client
            .query_opt(
                &format!(
                    "SELECT next_block, end_block FROM {CURSOR_TABLE} WHERE migration = $1 AND source = $2 AND table_name = $3"
                ),
                &[&self.migration, &self.source.name, &self.table.name],
            )
            .await
            .map_err(|cause| self.target.failed(cause))?
            .map(|row| (row.get(0), row.get(1)));
        let (next, end) = cursor.unwrap_or((0, self.end_block));
        Ok(BlockChunks::new(next, end))
    }

    /// The rows of the chunk's blocks to copy, as COPY tuples, and their count per range.
    async fn read(&self, chunk: (i64, i64)) -> Result<(Bytes, Copied), BackfillError> {
        let columns: Vec<String> = self
            .table
            .columns
            .iter()
            .map(|c| quote_ident(&c.name))
            .chain(hidden_columns(self.table).iter().map(|c| quote_ident(c)))
            .collect();
        let older = match self.older_than {
            Some(_) => format!(" AND {EPOCH_COLUMN} < $2"),
            None => String::new(),
        };
        let sql = format!(
            "SELECT {}, {} FROM {} WHERE {} AND {}{older}",
            columns.join(", "),
            RangeSet::bucket_sql(1),
            quote_ident(&self.table.name),
            in_blocks(chunk),
            RangeSet::filter_sql(1),
        );
        let bounds = self.moving.bounds();
        let client = self.source.client().await?;
        let found = match &self.older_than {
            Some(epoch) => client.query(&sql, &[&bounds, &epoch.0]).await,
            None => client.query(&sql, &[&bounds]).await,
        }
        .map_err(|cause| self.source.failed(cause))?;
        let fields = columns.len();
        let mut tuples = BytesMut::new();
        let mut per_range = vec![0i64; self.moving.len()];
        for row in &found {
            tuples.put_i16(fields as i16);
            for index in 0..fields {
                let RawValue(value) = row.try_get(index).map_err(|cause| self.source.failed(cause))?;
                match value {
                    Some(bytes) => {
                        tuples.put_i32(bytes.len() as i32);
                        tuples.put_slice(bytes);
                    }
                    None => tuples.put_i32(-1),
                }
            }
            if let Some(range) = self.moving.range_of_bucket(row.get(fields)) {
                per_range[range] += 1;
            }
        }
        let copied = Copied {
            rows: found.len(),
            per_range: per_range
                .into_iter()
                .enumerate()
                .filter(|(_, rows)| *rows > 0)
                .collect(),
        };
        Ok((tuples.freeze(), copied))
    }

    /// Loads a chunk into the target with the cursor past it, trying a transient failure (a
    /// lock timeout, a serialization failure, a dropped connection) again a few times before
    /// giving up the step.
    async fn load(&self, epoch: Epoch, tuples: Bytes, next_block: i64) -> Result<(), BackfillError> {
        let end_block = self.progress().1;
        let sql = format!(
            "INSERT INTO {CURSOR_TABLE} (migration, source, table_name, next_block, end_block) \
             VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (migration, source, table_name) DO UPDATE SET next_block = excluded.next_block"
        );
        let params: [&(dyn tokio_postgres::types::ToSql + Sync); 5] = [
            &self.migration,
            &self.source.name,
            &self.table.name,
            &next_block,
            &end_block,
        ];
        let mut attempt = 1;
        loop {
            let record = AlsoRecord {
                sql: &sql,
                params: &params,
            };
            match write_batch_recording(
                self.target.pool,
                self.statements,
                epoch,
                std::slice::from_ref(&tuples),
                (&[record], false),
            )
            .await
            {
                Err(CopyError::Transient(reason)) if attempt < LOAD_ATTEMPTS => {
                    tracing::debug!(%reason, attempt, "chunk load failed; trying again");
                    tokio::time::sleep(Duration::from_millis(100 * attempt)).await;
                    attempt += 1;
                }
                result => {
                    return result.map(|_| ()).map_err(|cause| BackfillError::Load {
                        shard: self.target.name.to_string(),
                        cause,
                    });
                }
            }
        }
    }
}

/// Drops the cursors of the passes into `side` once no range moves any more.
pub async fn drop_cursors(side: Side<'_>) -> Result<(), BackfillError> {
    let client = side.client().await?;
    client
        .batch_execute(&format!(
            "SET client_min_messages = warning; DROP TABLE IF EXISTS {CURSOR_TABLE}; RESET client_min_messages"
        ))
        .await
        .map_err(|cause| side.failed(cause))
}

/// A column value exactly as Postgres sent it in binary, to go back out in a COPY tuple.
struct RawValue<'a>(Option<&'a [u8]>);

impl<'a> FromSql<'a> for RawValue<'a> {
    fn from_sql(_: &Type, raw: &'a [u8]) -> Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        Ok(RawValue(Some(raw)))
    }

    fn from_sql_null(_: &Type) -> Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        Ok(RawValue(None))
    }

    fn accepts(_: &Type) -> bool {
        true
    }
}
