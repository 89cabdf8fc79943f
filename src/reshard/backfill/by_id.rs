//! Copying a range of a table with an id: chunks ordered by `(_sg_hash, id)`, each read in
//! Postgres's binary form and loaded through the table's staged insert, so a row already on the
//! target (dual-written, or copied by an earlier attempt) is skipped by its id. A resumed copy
//! starts again from the range's beginning; the ids make that harmless.

use super::{BackfillError, Side};
use crate::ingest::copy::{CopyError, TableStatements, write_batch};
use crate::pgtype::quote_ident;
use crate::routing::{Epoch, TokenRange};
use crate::schema::{HASH_COLUMN, TableSchema};
use bytes::{BufMut, Bytes, BytesMut};
use tokio_postgres::types::{FromSql, Type};

/// Attempts at loading one chunk before the step fails.
const LOAD_ATTEMPTS: u64 = 5;

/// One range of a table with an id on its way from a source to a target.
pub struct IdCopy<'a> {
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

impl<'a> IdCopy<'a> {
    /// A copy of the rows of `table` (which has an id) in `range` from `source` to `target`.
    pub fn new(
        table: &'a TableSchema,
        statements: &'a TableStatements,
        range: &TokenRange,
        source: Side<'a>,
        target: Side<'a>,
    ) -> IdCopy<'a> {
        IdCopy {
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
            self.load(epoch, tuples).await?;
            self.cursor.1 = last;
            return Ok(copied);
        }
        Ok(0)
    }

    /// Loads a chunk into the target, trying a transient failure (a lock timeout, a
    /// serialization failure, a dropped connection) again a few times before giving up the step.
    async fn load(&self, epoch: Epoch, tuples: Bytes) -> Result<(), BackfillError> {
        let mut attempt = 1;
        loop {
            match write_batch(
                self.target.pool,
                self.statements,
                epoch,
                std::slice::from_ref(&tuples),
            )
            .await
            {
                Err(CopyError::Transient(reason)) if attempt < LOAD_ATTEMPTS => {
                    tracing::debug!(%reason, attempt, "chunk load failed; trying again");
                    tokio::time::sleep(std::time::Duration::from_millis(100 * attempt)).await;
                    attempt += 1;
                }
                result => {
                    return result.map_err(|cause| BackfillError::Load {
                        shard: self.target.name.to_string(),
                        cause,
                    });
                }
            }
        }
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
        let client = self.source.client().await?;
        let found = match &self.cursor.1 {
            Some((hash, last_id)) => client.query(&sql, &[&lo, &hi, hash, last_id]).await,
            None => client.query(&sql, &[&lo, &hi]).await,
        }
        .map_err(|cause| self.source.failed(cause))?;
        let fields = columns.len();
        let mut tuples = BytesMut::new();
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
        }
        let last = found
            .last()
            .map(|row| (row.get::<_, i64>(fields - 1), row.get::<_, String>(fields)));
        Ok((tuples.freeze(), found.len(), last))
    }
}
