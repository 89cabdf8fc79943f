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
//! the first is in flight is refused ([`KeysInFlight`]).

use super::write::{Submitted, WriteAck, WriteRefused, Writes};
use crate::routing::{Epoch, ShardIndex};
use crate::schema::decode::{BodyFormat, EncodedRows, ShardRows, decode_rows};
use crate::schema::tuples::Tuples;
use crate::schema::{TableId, TableSchema};
use crate::shards::idempotency::{self, FoundRecord, KeyRecord};
use crate::shards::set::ShardSet;
use crate::units::unix_micros_now;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use thiserror::Error;
use twox_hash::XxHash3_128;

/// Longest idempotency key.
pub const MAX_KEY_LEN: usize = 255;

/// An idempotency key: 1 to [`MAX_KEY_LEN`] visible ASCII characters (a UUID, say).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct IdempotencyKey(String);

/// A key that is not 1 to 255 visible ASCII characters.
#[derive(Debug, Clone, Error)]
#[error("Idempotency-Key must be 1 to {MAX_KEY_LEN} visible ASCII characters (a UUID, say){0}")]
pub struct InvalidKey(&'static str);

impl IdempotencyKey {
    /// The key in `raw`, a header's bytes.
    pub fn parse(raw: &[u8]) -> Result<IdempotencyKey, InvalidKey> {
        if raw.is_empty() {
            return Err(InvalidKey("; it is empty"));
        }
        if raw.len() > MAX_KEY_LEN {
            return Err(InvalidKey("; it is longer"));
        }
        if !raw.iter().all(|b| b.is_ascii_graphic()) {
            return Err(InvalidKey("; it holds a space or another character"));
        }
        Ok(IdempotencyKey(String::from_utf8_lossy(raw).into_owned()))
    }

    /// The key as given.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// What identifies one request among those sent with a key: its table, body format and body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fingerprint([u8; 16]);

impl Fingerprint {
    /// The fingerprint of a request writing `body` in `format` to `table`.
    pub fn of(table: &str, format: BodyFormat, body: &[u8]) -> Fingerprint {
        let mut hasher = XxHash3_128::new();
        hasher.write(table.as_bytes());
        hasher.write(&[0, format as u8]);
        hasher.write(body);
        Fingerprint(hasher.finish_128().to_be_bytes())
    }
}

/// Why a keyed write was refused before anything was written.
#[derive(Debug, Error)]
pub enum KeyRefused {
    /// The key's first request is still being written by this process.
    #[error("a write with Idempotency-Key {0} is still in flight; send it again once that one is answered")]
    InFlight(String),
    /// The key was used by a request with another table or body.
    #[error(
        "Idempotency-Key {0} was used for a different request (another table or body); a key names one request"
    )]
    Reused(String),
    /// A shard's records of the key could not be read, so whether the write happened is unknown.
    #[error("cannot tell whether Idempotency-Key {key} was written: shard {shard}: {reason}")]
    Unknown {
        /// The key.
        key: String,
        /// The shard that did not answer.
        shard: String,
        /// Why.
        reason: String,
    },
}

/// Keys whose writes this process is writing now, with their fingerprints.
#[derive(Debug, Default)]
pub struct KeysInFlight(Mutex<HashMap<IdempotencyKey, Fingerprint>>);

impl KeysInFlight {
    /// Marks `key` as in flight until the returned guard is dropped; refuses a key already in
    /// flight (`Reused` when the request differs).
    pub fn enter(
        &self,
        key: &IdempotencyKey,
        fingerprint: Fingerprint,
    ) -> Result<InFlightKey<'_>, KeyRefused> {
        let mut keys = self.0.lock().expect("the in-flight keys are never poisoned");
        match keys.get(key) {
            Some(other) if *other != fingerprint => Err(KeyRefused::Reused(key.0.clone())),
            Some(_) => Err(KeyRefused::InFlight(key.0.clone())),
            None => {
                keys.insert(key.clone(), fingerprint);
                Ok(InFlightKey {
                    keys: self,
                    key: key.clone(),
                })
            }
        }
    }
}

/// A key marked in flight; dropping it ends the mark.
pub struct InFlightKey<'a> {
    keys: &'a KeysInFlight,
    key: IdempotencyKey,
}

impl Drop for InFlightKey<'_> {
    fn drop(&mut self) {
        let mut keys = self.keys.0.lock().expect("the in-flight keys are never poisoned");
        keys.remove(&self.key);
    }
}

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
            .any(|r| r.fingerprint != fingerprint.0 || r.table != schema.name)
        {
            return Err(KeyRefused::Reused(key.0.clone()).into());
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
                key: key.0.clone(),
                table: schema.name.clone(),
                fingerprint: fingerprint.0,
                covers: idempotency::placed_intervals(&set.table, index),
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
            key: key.0.clone(),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_visible_ascii_of_bounded_length() {
        assert_eq!(
            IdempotencyKey::parse(b"0191d5a0-8c4e-7b3a-9f00-1c2d3e4f5a6b")
                .unwrap()
                .as_str(),
            "0191d5a0-8c4e-7b3a-9f00-1c2d3e4f5a6b"
        );
        assert!(IdempotencyKey::parse(&[b'k'; MAX_KEY_LEN]).is_ok());
        let refusal = |raw: &[u8]| IdempotencyKey::parse(raw).unwrap_err().to_string();
        assert!(refusal(b"").ends_with("; it is empty"));
        assert!(refusal(&[b'k'; MAX_KEY_LEN + 1]).ends_with("; it is longer"));
        assert!(refusal(b"two words").contains("a space"));
        assert!(refusal("clé".as_bytes()).contains("another character"));
    }

    #[test]
    fn fingerprints_tell_table_format_and_body_apart() {
        let base = Fingerprint::of("events", BodyFormat::Json, b"[{}]");
        assert_eq!(base, Fingerprint::of("events", BodyFormat::Json, b"[{}]"));
        assert_ne!(base, Fingerprint::of("event", BodyFormat::Json, b"s[{}]"));
        assert_ne!(base, Fingerprint::of("events", BodyFormat::Ndjson, b"[{}]"));
        assert_ne!(base, Fingerprint::of("events", BodyFormat::Json, b"[{} ]"));
    }

    #[test]
    fn a_key_in_flight_is_refused_until_its_write_ends() {
        let keys = KeysInFlight::default();
        let key = IdempotencyKey::parse(b"k1").unwrap();
        let (one, two) = (
            Fingerprint::of("t", BodyFormat::Json, b"1"),
            Fingerprint::of("t", BodyFormat::Json, b"2"),
        );
        let first = keys.enter(&key, one).unwrap();
        assert!(matches!(keys.enter(&key, one), Err(KeyRefused::InFlight(_))));
        assert!(matches!(keys.enter(&key, two), Err(KeyRefused::Reused(_))));
        drop(first);
        assert!(keys.enter(&key, two).is_ok());
    }
}
