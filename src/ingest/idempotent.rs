//! Writes sent with an idempotency key: the first is written as any other, each shard's rows
//! with a record of the key in their transaction; the same request sent again finds those
//! records on the shards, writes exactly the rows no record covers, and is answered as the
//! first was.
//!
//! What is known before writing: the key's records on every shard of the current routing
//! (read in parallel), compared with this request's fingerprint (table, format and body). A
//! record of the current epoch covers its shard's whole part; one of an earlier epoch covers
//! the rows whose ring positions its shard was given then ([`FoundRecord::covers`]), so a retry
//! after a shard was added or a hot key split keeps exactly the others. Two attempts racing
//! on two proxies meet at the shard: the second record of one part breaks the table's key, and
//! that part is answered as written, never stored twice. On one proxy a second attempt while
//! the first is in flight is refused ([`super::keys::KeysInFlight`]).

use super::keys::{Fingerprint, IdempotencyKey, KeyRefused};
use super::write::{Submitted, WriteAck, WriteRefused, Writes};
use crate::routing::{Epoch, ShardIndex};
use crate::schema::decode::{BodyFormat, EncodedRows, ShardRows, decode_rows};
use crate::schema::tuples::Tuples;
use crate::schema::{TableId, TableSchema};
use crate::shards::idempotency::{self, FoundRecord, KeyRecord};
use crate::shards::set::ShardSet;
use crate::units::unix_micros_now;
use std::collections::BTreeMap;
use std::sync::Arc;

/// A keyed write on its way: the rows no record covered are queued (if any).
pub struct KeyedWrite {
    rows: usize,
    recorded: BTreeMap<String, usize>,
    submitted: Option<Submitted>,
}

/// The answer to a keyed write.
pub struct KeyedAck {
    /// The acknowledgement, with the rows recorded earlier counted on their shards.
    pub ack: WriteAck,
    /// Whether an earlier attempt had written some or all of the rows.
    pub replayed: bool,
}

impl KeyedWrite {
    /// Waits for the queued rows; acknowledges once every shard's part is written, now or
    /// by an earlier attempt.
    pub async fn committed(self) -> Result<KeyedAck, WriteRefused> {
        let replayed = !self.recorded.is_empty();
        let mut shards = self.recorded;
        let merge = |shards: &mut BTreeMap<String, usize>, more: BTreeMap<String, usize>| {
            for (shard, rows) in more {
                *shards.entry(shard).or_default() += rows;
            }
        };
        match self.submitted {
            None => {}
            Some(submitted) => match submitted.committed().await {
                Ok(ack) => merge(&mut shards, ack.shards),
                Err(WriteRefused::Failed { failures, committed }) => {
                    merge(&mut shards, committed);
                    return Err(WriteRefused::Failed {
                        failures,
                        committed: shards,
                    });
                }
                Err(other) => return Err(other),
            },
        }
        Ok(KeyedAck {
            ack: WriteAck {
                rows: self.rows,
                shards,
            },
            replayed,
        })
    }
}

impl Writes {
    /// Decodes `body` like [`Writes::submit`], reads what the shards recorded of `key`, and
    /// queues the rows no record covers, each shard's with a record of its own.
    pub async fn submit_keyed(
        &self,
        (table, schema): (TableId, &TableSchema),
        format: BodyFormat,
        body: &[u8],
        (key, fingerprint): (&IdempotencyKey, Fingerprint),
    ) -> Result<KeyedWrite, WriteRefused> {
        let set = self.shards().load();
        let mut encoded = self.decode(table, schema, |limited| {
            decode_rows(schema, &set.table, format, body, unix_micros_now(), limited)
        })?;
        let rows = encoded.rows;
        let found = records_on(&set, key).await?;
        if found
            .iter()
            .any(|r| r.fingerprint != fingerprint.bytes() || r.table != schema.name)
        {
            return Err(KeyRefused::Reused(key.as_str().to_string()).into());
        }
        let mut recorded: BTreeMap<String, usize> = BTreeMap::new();
        for record in &found {
            *recorded.entry(record.shard.clone()).or_default() += usize::try_from(record.rows).unwrap_or(0);
        }
        keep_uncovered(&mut encoded, &set, schema, &found);
        if encoded.rows == 0 {
            return Ok(KeyedWrite {
                rows,
                recorded,
                submitted: None,
            });
        }
        let record = |index: ShardIndex| {
            Some(Arc::new(KeyRecord {
                key: key.as_str().to_string(),
                table: schema.name.clone(),
                fingerprint: fingerprint.bytes(),
                covers: set.placed_intervals(index),
            }))
        };
        let submitted = self.queue_recorded(&set, table, schema, encoded, record)?;
        Ok(KeyedWrite {
            rows,
            recorded,
            submitted: Some(submitted),
        })
    }
}

/// The records of `key` on every shard of `set`, read in parallel.
async fn records_on(set: &ShardSet, key: &IdempotencyKey) -> Result<Vec<FoundRecord>, KeyRefused> {
    let reads = set.iter().map(|(_, shard)| async move {
        let unknown = |reason: String| KeyRefused::Unknown {
            key: key.as_str().to_string(),
            shard: shard.id.0.clone(),
            reason,
        };
        let client = shard
            .pools
            .query
            .get()
            .await
            .map_err(|e| unknown(e.to_string()))?;
        idempotency::records_of(&client, key.as_str())
            .await
            .map_err(|e| unknown(e.to_string()))
    });
    let mut found = Vec::new();
    for records in futures_util::future::join_all(reads).await {
        found.extend(records?);
    }
    found.sort_by(|a, b| (&a.shard, a.epoch).cmp(&(&b.shard, b.epoch)));
    found.dedup_by(|a, b| a.shard == b.shard && a.epoch == b.epoch);
    Ok(found)
}

/// Removes from `encoded` the rows an earlier attempt wrote: a shard's whole part when it has
/// a record of this epoch, and the rows whose positions a record of another epoch covers.
fn keep_uncovered(encoded: &mut EncodedRows, set: &ShardSet, schema: &TableSchema, found: &[FoundRecord]) {
    if found.is_empty() {
        return;
    }
    let epoch = set.epoch();
    let earlier: Vec<&FoundRecord> = found.iter().filter(|r| Epoch(r.epoch) != epoch).collect();
    for (index, shard) in set.table.shards.iter().enumerate() {
        let part = &mut encoded.shards[index];
        if found
            .iter()
            .any(|r| Epoch(r.epoch) == epoch && r.shard == shard.0)
        {
            *part = ShardRows::default();
        } else if !earlier.is_empty() && part.rows > 0 {
            *part = uncovered(part, schema, &earlier);
        }
    }
    encoded.rows = encoded.shards.iter().map(|part| part.rows).sum();
}

/// The rows of `part` whose positions no record in `earlier` covers.
fn uncovered(part: &ShardRows, schema: &TableSchema, earlier: &[&FoundRecord]) -> ShardRows {
    let mut kept = ShardRows::default();
    for tuple in Tuples::new(&part.tuples, schema) {
        let tuple = tuple.expect("tuples the decoder just encoded are whole");
        if !earlier.iter().any(|record| record.covers(tuple.position)) {
            kept.tuples.extend_from_slice(tuple.bytes);
            kept.rows += 1;
        }
    }
    kept
}
