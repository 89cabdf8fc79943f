//! Moving the rows of one range of one table: copy them from the source to the target in
//! chunks ordered by `(_sg_hash, id)`, count them on either side, and delete them from the
//! source after the cutover. Rows travel as Postgres sent them: each column's binary value
//! read back into a COPY tuple, loaded through the table's staged insert, so a row already on
//! the target (dual-written, or copied by an earlier attempt) is skipped by its id.

use crate::ingest::copy::{CopyError, TableStatements, write_batch};
use crate::pgtype::quote_ident;
use crate::routing::{Epoch, TokenRange};
use crate::schema::{HASH_COLUMN, TableSchema};
use bytes::{BufMut, Bytes, BytesMut};
use deadpool_postgres::Pool;
use thiserror::Error;
use tokio_postgres::types::{FromSql, Type};

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

/// One range of one table on its way from a source to a target.
pub struct RangeCopy<'a> {
    table: &'a TableSchema,
    statements: &'a TableStatements,
    source: Side<'a>,
    target: Side<'a>,
    intervals: Vec<(i64, i64)>,
    /// The interval being copied and the last `(_sg_hash, id)` copied in it.
    cursor: (usize, Option<(i64, String)>),
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

impl<'a> RangeCopy<'a> {
    /// A copy of the rows of `table` in `range` from `source` to `target`. The table must
    /// have an id.
    pub fn new(
        table: &'a TableSchema,
        statements: &'a TableStatements,
        range: &TokenRange,
        source: Side<'a>,
        target: Side<'a>,
    ) -> RangeCopy<'a> {
        RangeCopy {
            table,
            statements,
            source,
            target,
            intervals: range.stored_intervals(),
            cursor: (0, None),
        }
    }

    /// Copies the next chunk of at most `rows` rows, written on the target with `epoch`;
    /// returns how many it copied, 0 once the range is done.
    pub async fn next_chunk(&mut self, rows: usize, epoch: Epoch) -> Result<usize, BackfillError> {
        while self.cursor.0 < self.intervals.len() {
            let (tuples, copied, last) = self.read_chunk(rows).await?;
            if copied == 0 {
                self.cursor = (self.cursor.0 + 1, None);
                continue;
            }
            write_batch(self.target.pool, self.statements, epoch, &[tuples])
                .await
                .map_err(|cause| BackfillError::Load {
                    shard: self.target.name.to_string(),
                    cause,
                })?;
            self.cursor.1 = last;
            return Ok(copied);
        }
        Ok(0)
    }

    /// The next rows after the cursor as COPY tuples, their number and the last one's
    /// `(_sg_hash, id)`.
    async fn read_chunk(&self, rows: usize) -> Result<(Bytes, usize, Option<(i64, String)>), BackfillError> {
        let id = self
            .table
            .id
            .map(|i| quote_ident(&self.table.columns[i].name))
            .unwrap_or_default();
        let id_type = self
            .table
            .id
            .map(|i| self.table.columns[i].ty.sql_name())
            .unwrap_or_default();
        let columns: Vec<String> = self
            .table
            .columns
            .iter()
            .map(|c| quote_ident(&c.name))
            .chain([HASH_COLUMN.to_string()])
            .collect();
        let (lo, hi) = self.intervals[self.cursor.0];
        let after = match &self.cursor.1 {
            Some(_) => format!(" AND ({HASH_COLUMN}, {id}) > ($3, $4::text::{id_type})"),
            None => String::new(),
        };
        let sql = format!(
            "SELECT {}, {id}::text AS shardgate_cursor FROM {} WHERE {HASH_COLUMN} BETWEEN $1 AND $2{after} \
             ORDER BY {HASH_COLUMN}, {id} LIMIT {rows}",
            columns.join(", "),
            quote_ident(&self.table.name)
        );
        let client = self.source_client().await?;
        let found = match &self.cursor.1 {
            Some((hash, last_id)) => client.query(&sql, &[&lo, &hi, hash, last_id]).await,
            None => client.query(&sql, &[&lo, &hi]).await,
        }
        .map_err(|cause| self.source_error(cause))?;
        let fields = columns.len();
        let mut tuples = BytesMut::new();
        for row in &found {
            tuples.put_i16(fields as i16);
            for index in 0..fields {
                let RawValue(value) = row.try_get(index).map_err(|cause| self.source_error(cause))?;
                match value {
                    Some(bytes) => {
                        tuples.put_i32(bytes.len() as i32);
                        tuples.put_slice(bytes);
                    }
                    None => tuples.put_i32(-1),
                }
            }
        }
        let last = found
            .last()
            .map(|row| (row.get::<_, i64>(fields - 1), row.get::<_, String>(fields)));
        Ok((tuples.freeze(), found.len(), last))
    }

    async fn source_client(&self) -> Result<deadpool_postgres::Object, BackfillError> {
        self.source
            .pool
            .get()
            .await
            .map_err(|e| unreachable(self.source, &e))
    }

    fn source_error(&self, cause: tokio_postgres::Error) -> BackfillError {
        BackfillError::Query {
            shard: self.source.name.to_string(),
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
    let client = side.pool.get().await.map_err(|e| unreachable(side, &e))?;
    let sql = format!(
        "SELECT count(*) FROM {} WHERE {}",
        quote_ident(&table.name),
        in_range(range)
    );
    let row = client
        .query_one(&sql, &[])
        .await
        .map_err(|cause| BackfillError::Query {
            shard: side.name.to_string(),
            cause,
        })?;
    Ok(row.get(0))
}

/// Deletes the rows of `table` in `range` from `side`, `rows` at a time; returns how many.
pub async fn delete_range(
    side: Side<'_>,
    table: &TableSchema,
    range: &TokenRange,
    rows: usize,
) -> Result<u64, BackfillError> {
    let client = side.pool.get().await.map_err(|e| unreachable(side, &e))?;
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
            .map_err(|cause| BackfillError::Query {
                shard: side.name.to_string(),
                cause,
            })?;
        deleted += chunk;
        if chunk == 0 {
            return Ok(deleted);
        }
    }
}

/// Creates, without blocking writes, the index the backfill reads `table` by, if missing.
pub async fn ensure_index(side: Side<'_>, table: &TableSchema) -> Result<(), BackfillError> {
    let Some(id) = table.id.map(|i| quote_ident(&table.columns[i].name)) else {
        return Ok(());
    };
    let client = side.pool.get().await.map_err(|e| unreachable(side, &e))?;
    let sql = format!(
        "CREATE INDEX CONCURRENTLY IF NOT EXISTS {} ON {} ({HASH_COLUMN}, {id})",
        quote_ident(&format!("{}_sg_hash_id", table.name)),
        quote_ident(&table.name)
    );
    client
        .batch_execute(&sql)
        .await
        .map_err(|cause| BackfillError::Query {
            shard: side.name.to_string(),
            cause,
        })
}

/// Drops the fence of a database whose joining was cancelled, so it may be offered again.
pub async fn drop_fence(side: Side<'_>) -> Result<(), BackfillError> {
    let client = side.pool.get().await.map_err(|e| unreachable(side, &e))?;
    client
        .batch_execute("DROP TABLE IF EXISTS shardgate_fence")
        .await
        .map_err(|cause| BackfillError::Query {
            shard: side.name.to_string(),
            cause,
        })
}
