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
use super::write::{SpoolAck, Submitted, WriteAck, WriteRefused, Writes};
use crate::catalog::key_claims::KeyClaim;
use crate::config::AckMode;
use crate::routing::{Epoch, ShardIndex};
use crate::schema::decode::copy::CopyFormat;
use crate::schema::decode::values::{Value, ValueColumns};
use crate::schema::decode::{BodyFormat, EncodedRows, ShardRows, decode_rows};
use crate::schema::tuples::Tuples;
use crate::schema::{TableId, TableSchema};
use crate::shards::idempotency::{self, FoundRecord, KeyRecord};
use crate::shards::set::ShardSet;
use crate::spool::SpooledKey;
use crate::units::unix_micros_now;
use std::collections::BTreeMap;
use std::sync::Arc;

/// A keyed write on its way: the rows no record covered are queued (if any), or the key's
/// first attempt was spooled and carries them.
pub struct KeyedWrite {
    rows: usize,
    recorded: BTreeMap<String, usize>,
    submitted: Option<Submitted>,
    spooled_before: Option<SpoolAck>,
}

/// The answer to a keyed write, as its first attempt was answered.
pub enum KeyedAck {
    /// Every row committed, now or by an earlier attempt.
    Committed {
        /// The acknowledgement, with the rows recorded earlier counted on their shards.
        ack: WriteAck,
        /// Whether an earlier attempt had written some or all of the rows.
        replayed: bool,
    },
    /// The rows are in a spool: this attempt's, or the key's first attempt's.
    Spooled {
        /// The spooled write that carries the rows.
        ack: SpoolAck,
        /// Whether an earlier attempt had written or spooled some or all of the rows.
        replayed: bool,
    },
}

impl KeyedWrite {
    /// Waits for the queued rows; acknowledges once every shard's part is written, now or
    /// by an earlier attempt (or at once, as spooled, when the first attempt was spooled).
    pub async fn committed(self) -> Result<KeyedAck, WriteRefused> {
        if let Some(ack) = self.spooled_before {
            return Ok(KeyedAck::Spooled { ack, replayed: true });
        }
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
        Ok(KeyedAck::Committed {
            ack: WriteAck {
                rows: self.rows,
                shards,
            },
            replayed,
        })
    }
}

/// What earlier attempts of a key left: records on the shards, and a spooled write's claim.
struct Earlier {
    records: Vec<FoundRecord>,
    claim: Option<KeyClaim>,
}

impl Earlier {
    /// Rows the records hold, per shard.
    fn recorded(&self) -> BTreeMap<String, usize> {
        let mut recorded: BTreeMap<String, usize> = BTreeMap::new();
        for record in &self.records {
            *recorded.entry(record.shard.clone()).or_default() += usize::try_from(record.rows).unwrap_or(0);
        }
        recorded
    }
}

impl KeyClaim {
    /// The `202` the claiming write was answered with.
    fn ack(&self) -> SpoolAck {
        SpoolAck {
            rows: usize::try_from(self.rows).unwrap_or(0),
            write_id: self.write_id,
        }
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
        keyed: (&IdempotencyKey, Fingerprint),
    ) -> Result<KeyedWrite, WriteRefused> {
        let set = self.shards().load();
        let encoded = self.decode(table, schema, |limited| {
            decode_rows(schema, &set.table, format, body, unix_micros_now(), limited)
        })?;
        self.queue_keyed(&set, (table, schema), encoded, keyed).await
    }

    /// Decodes `body` like [`Writes::spool`] and spools the rows no earlier attempt of `key`
    /// wrote, with the key, which the write then claims in the catalog: only the claiming
    /// write of a key is drained, so a retry spooled again, here or on another proxy, is
    /// answered with the first's `202` and writes nothing more.
    pub async fn spool_keyed(
        &self,
        (table, schema): (TableId, &TableSchema),
        format: BodyFormat,
        body: &[u8],
        keyed: (&IdempotencyKey, Fingerprint),
    ) -> Result<KeyedAck, WriteRefused> {
        let set = self.shards().load();
        let encoded = self.decode(table, schema, |limited| {
            decode_rows(schema, &set.table, format, body, unix_micros_now(), limited)
        })?;
        self.spool_keyed_rows(&set, (table, schema), encoded, keyed).await
    }

    /// A keyed write of whole records of a COPY stream (the Postgres listener's), committed
    /// or spooled as the table acknowledges, and answered once it is.
    pub async fn write_keyed_copy(
        &self,
        (table, schema): (TableId, &TableSchema),
        (format, columns): (&CopyFormat, &[usize]),
        data: &[u8],
        keyed: (&IdempotencyKey, Fingerprint),
    ) -> Result<KeyedAck, WriteRefused> {
        let set = self.shards().load();
        let encoded = self.decode_copy(&set, table, schema, format, columns, data)?;
        self.write_keyed_rows(&set, (table, schema), encoded, keyed).await
    }

    /// A keyed write of rows of values (an `INSERT` of the Postgres listener), committed or
    /// spooled as the table acknowledges, and answered once it is.
    pub async fn write_keyed_values<'v>(
        &self,
        (table, schema): (TableId, &TableSchema),
        columns: ValueColumns<'_>,
        rows: impl ExactSizeIterator<Item = &'v [Value<'v>]>,
        keyed: (&IdempotencyKey, Fingerprint),
    ) -> Result<KeyedAck, WriteRefused> {
        let set = self.shards().load();
        let encoded = self.decode_values(&set, table, schema, columns, rows)?;
        self.write_keyed_rows(&set, (table, schema), encoded, keyed).await
    }

    /// Writes `encoded` with its key as the table acknowledges: on commit, or in the spool.
    async fn write_keyed_rows(
        &self,
        set: &Arc<ShardSet>,
        (table, schema): (TableId, &TableSchema),
        encoded: EncodedRows,
        keyed: (&IdempotencyKey, Fingerprint),
    ) -> Result<KeyedAck, WriteRefused> {
        if schema.ack == AckMode::Spool {
            return self.spool_keyed_rows(set, (table, schema), encoded, keyed).await;
        }
        let write = self.queue_keyed(set, (table, schema), encoded, keyed).await?;
        write.committed().await
    }

    /// Reads what the shards recorded of `key` and queues the rows of `encoded` (routed with
    /// `set`) no record covers, each shard's with a record of its own.
    async fn queue_keyed(
        &self,
        set: &Arc<ShardSet>,
        (table, schema): (TableId, &TableSchema),
        mut encoded: EncodedRows,
        (key, fingerprint): (&IdempotencyKey, Fingerprint),
    ) -> Result<KeyedWrite, WriteRefused> {
        let rows = encoded.rows;
        let earlier = self.earlier(set, schema, key, fingerprint).await?;
        let recorded = earlier.recorded();
        if let Some(claim) = &earlier.claim {
            return Ok(KeyedWrite {
                rows,
                recorded,
                submitted: None,
                spooled_before: Some(claim.ack()),
            });
        }
        keep_uncovered(&mut encoded, set, schema, &earlier.records);
        if encoded.rows == 0 {
            return Ok(KeyedWrite {
                rows,
                recorded,
                submitted: None,
                spooled_before: None,
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
        let submitted = self.queue_recorded(set, table, schema, encoded, record)?;
        Ok(KeyedWrite {
            rows,
            recorded,
            submitted: Some(submitted),
            spooled_before: None,
        })
    }

    /// Spools the rows of `encoded` (routed with `set`) no earlier attempt of `key` wrote,
    /// with the key, and claims the key for the spooled write (see [`Writes::spool_keyed`]).
    async fn spool_keyed_rows(
        &self,
        set: &Arc<ShardSet>,
        (table, schema): (TableId, &TableSchema),
        mut encoded: EncodedRows,
        (key, fingerprint): (&IdempotencyKey, Fingerprint),
    ) -> Result<KeyedAck, WriteRefused> {
        let rows = encoded.rows;
        let earlier = self.earlier(set, schema, key, fingerprint).await?;
        if let Some(claim) = &earlier.claim {
            let ack = claim.ack();
            return Ok(KeyedAck::Spooled { ack, replayed: true });
        }
        keep_uncovered(&mut encoded, set, schema, &earlier.records);
        let replayed = !earlier.records.is_empty();
        if encoded.rows == 0 {
            let ack = WriteAck {
                rows,
                shards: earlier.recorded(),
            };
            return Ok(KeyedAck::Committed { ack, replayed });
        }
        let spooled_key = SpooledKey {
            key: key.as_str().to_string(),
            fingerprint: fingerprint.bytes(),
        };
        let spooling = self.spool_encoded(set, table, schema, encoded, None, Some(spooled_key))?;
        let write_id = spooling.durable().await?.write_id;
        let ack = SpoolAck { rows, write_id };
        let claim = KeyClaim {
            key: key.as_str().to_string(),
            table: schema.name.clone(),
            fingerprint: fingerprint.bytes(),
            write_id,
            rows: i64::try_from(rows).unwrap_or(i64::MAX),
        };
        match self.catalog().claim_key(&claim).await {
            Ok(held) if held.write_id == write_id => Ok(KeyedAck::Spooled { ack, replayed }),
            Ok(held) if held.fingerprint != claim.fingerprint || held.table != claim.table => {
                Err(KeyRefused::Reused(key.as_str().to_string()).into())
            }
            Ok(held) => Ok(KeyedAck::Spooled {
                ack: held.ack(),
                replayed: true,
            }),
            Err(error) => {
                // The drainer claims the key before it drains the write.
                tracing::warn!(key = key.as_str(), %write_id, %error, "a spooled write's idempotency key is claimed when drained");
                Ok(KeyedAck::Spooled { ack, replayed })
            }
        }
    }

    /// What earlier attempts of `key` left, read from every shard of `set` and the catalog
    /// at once; refused when an attempt wrote another table or body.
    async fn earlier(
        &self,
        set: &ShardSet,
        schema: &TableSchema,
        key: &IdempotencyKey,
        fingerprint: Fingerprint,
    ) -> Result<Earlier, KeyRefused> {
        let (records, claim) = tokio::join!(records_on(set, key), self.catalog().key_claim(key.as_str()));
        let records = records?;
        let claim = claim.map_err(|e| KeyRefused::Unknown {
            key: key.as_str().to_string(),
            asked: "the catalog".to_string(),
            reason: e.to_string(),
        })?;
        let other_request = records
            .iter()
            .map(|r| (&r.table, r.fingerprint.as_slice()))
            .chain(claim.iter().map(|c| (&c.table, c.fingerprint.as_slice())))
            .any(|(table, bytes)| bytes != fingerprint.bytes() || *table != schema.name);
        if other_request {
            return Err(KeyRefused::Reused(key.as_str().to_string()));
        }
        Ok(Earlier { records, claim })
    }
}

/// The records of `key` on every shard of `set`, read in parallel.
async fn records_on(set: &ShardSet, key: &IdempotencyKey) -> Result<Vec<FoundRecord>, KeyRefused> {
    let reads = set.iter().map(|(_, shard)| async move {
        let unknown = |reason: String| KeyRefused::Unknown {
            key: key.as_str().to_string(),
            asked: format!("shard {}", shard.id),
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
