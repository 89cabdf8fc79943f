//! Spooled rows a shard refused for their data (`shardgate.dead_letters`): recorded by the
//! drainer once per spool part (a part refused again after a crash is not recorded twice),
//! then listed and deleted by an operator through the admin API.

use super::{Catalog, CatalogError, query};
use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;
use uuid::Uuid;

/// A row to record as refused.
#[derive(Debug, Clone)]
pub struct NewDeadLetter<'a> {
    /// Its table.
    pub table: &'a str,
    /// The shard that refused it.
    pub shard: &'a str,
    /// The spooled write it came with.
    pub write_id: Uuid,
    /// The row, column by column.
    pub row: &'a serde_json::Value,
    /// Postgres's message.
    pub message: &'a str,
    /// The spool part that held it alone: (spool, record, part).
    pub part: (Uuid, i64, i16),
}

/// A recorded dead letter, as the admin API lists it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DeadLetter {
    /// Its id, to delete it by.
    pub id: i64,
    /// Its table.
    pub table: String,
    /// The shard that refused it.
    pub shard: String,
    /// The spooled write it came with.
    pub write_id: Uuid,
    /// The row, column by column.
    pub row: serde_json::Value,
    /// Postgres's message.
    pub message: String,
    /// When it was recorded (RFC 3339).
    pub created_at: String,
}

/// Which dead letters to list; every field narrows.
#[derive(Debug, Clone, Default)]
pub struct DeadLetterFilter {
    /// Of this table.
    pub table: Option<String>,
    /// Refused by this shard.
    pub shard: Option<String>,
    /// Recorded at or after.
    pub since: Option<DateTime<Utc>>,
    /// Recorded before.
    pub until: Option<DateTime<Utc>>,
}

impl Catalog {
    /// Records a refused row, unless its part was recorded before.
    pub async fn record_dead_letter(&self, letter: NewDeadLetter<'_>) -> Result<(), CatalogError> {
        let (spool, seq, part) = letter.part;
        self.client()
            .await?
            .execute(
                "INSERT INTO shardgate.dead_letters \
                 (table_name, shard, write_id, row_values, message, spool, seq, part) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (spool, seq, part) DO NOTHING",
                &[
                    &letter.table,
                    &letter.shard,
                    &letter.write_id,
                    letter.row,
                    &letter.message,
                    &spool,
                    &seq,
                    &part,
                ],
            )
            .await
            .map_err(query("record a dead letter"))?;
        Ok(())
    }

    /// The dead letters `filter` selects, oldest first, at most `limit`.
    pub async fn dead_letters(
        &self,
        filter: &DeadLetterFilter,
        limit: i64,
    ) -> Result<Vec<DeadLetter>, CatalogError> {
        let rows = self
            .client()
            .await?
            .query(
                "SELECT id, table_name, shard, write_id, row_values, message, created_at \
                 FROM shardgate.dead_letters \
                 WHERE ($1::text IS NULL OR table_name = $1) AND ($2::text IS NULL OR shard = $2) \
                 AND ($3::timestamptz IS NULL OR created_at >= $3) \
                 AND ($4::timestamptz IS NULL OR created_at < $4) \
                 ORDER BY id LIMIT $5",
                &[&filter.table, &filter.shard, &filter.since, &filter.until, &limit],
            )
            .await
            .map_err(query("list the dead letters"))?;
        Ok(rows.iter().map(dead_letter).collect())
    }

    /// The dead letters to replay, oldest first, at most `limit`: those of `ids`, or all, each
    /// with the spool part it came from: (spool, record, part).
    pub async fn dead_letters_to_replay(
        &self,
        ids: Option<&[i64]>,
        limit: i64,
    ) -> Result<Vec<(DeadLetter, (Uuid, i64, i16))>, CatalogError> {
        let rows = self
            .client()
            .await?
            .query(
                "SELECT id, table_name, shard, write_id, row_values, message, created_at, spool, seq, part \
                 FROM shardgate.dead_letters WHERE ($1::bigint[] IS NULL OR id = ANY($1)) \
                 ORDER BY id LIMIT $2",
                &[&ids, &limit],
            )
            .await
            .map_err(query("read the dead letters to replay"))?;
        Ok(rows
            .iter()
            .map(|row| (dead_letter(row), (row.get(7), row.get(8), row.get(9))))
            .collect())
    }

    /// Deletes dead letter `id`; false when there is none.
    pub async fn delete_dead_letter(&self, id: i64) -> Result<bool, CatalogError> {
        Ok(self.delete_dead_letters(&[id]).await? > 0)
    }

    /// Deletes the dead letters `ids` in one statement; how many there were.
    pub async fn delete_dead_letters(&self, ids: &[i64]) -> Result<u64, CatalogError> {
        self.client()
            .await?
            .execute("DELETE FROM shardgate.dead_letters WHERE id = ANY($1)", &[&ids])
            .await
            .map_err(query("delete dead letters"))
    }
}

/// A dead letter from the first seven columns of a row of `shardgate.dead_letters`.
fn dead_letter(row: &tokio_postgres::Row) -> DeadLetter {
    DeadLetter {
        id: row.get(0),
        table: row.get(1),
        shard: row.get(2),
        write_id: row.get(3),
        row: row.get(4),
        message: row.get(5),
        created_at: row
            .get::<_, DateTime<Utc>>(6)
            .to_rfc3339_opts(SecondsFormat::Millis, true),
    }
}
