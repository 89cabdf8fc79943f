//! The per-key rate cap of a table (`max_key_rows_per_second`): a key the watch measured above
//! it in a window is limited from then on by a token bucket of its own, so its requests beyond
//! the limit are refused (429) while every other key's go through. Requests find their table's
//! limited keys in a list published with arc-swap, and only requests carrying a limited key
//! take that key's lock.

use crate::routing::KeyHash;
use arc_swap::ArcSwap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use thiserror::Error;
use tokio::time::Instant;

/// A request carries more rows of a limited key than its limit allows now.
#[derive(Debug, Clone, PartialEq, Error)]
#[error(
    "key {key} of table {table} is over its limit of {limit} rows per second \
     ([[tables]] max_key_rows_per_second); other keys are not limited"
)]
pub struct KeyOverLimit {
    /// The table.
    pub table: String,
    /// The key's hash, 16 hex digits.
    pub key: String,
    /// Its limit.
    pub limit: u64,
    /// When its request would fit, in whole seconds (at least one), as `Retry-After` says.
    pub retry_after: Duration,
}

/// A token bucket holding at most a second of a key's limit.
#[derive(Debug)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Bucket {
    /// Takes `rows` tokens, or says how long until there are enough. A request larger than a
    /// second's allowance passes once the bucket is full, leaving it in debt.
    fn take(&mut self, rows: u64, limit: u64, now: Instant) -> Result<(), Duration> {
        let limit = limit as f64;
        let refilled = self.tokens + now.saturating_duration_since(self.at).as_secs_f64() * limit;
        self.tokens = refilled.min(limit);
        self.at = now;
        let needed = (rows as f64).min(limit);
        if self.tokens >= needed {
            self.tokens -= rows as f64;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((needed - self.tokens) / limit))
        }
    }
}

/// The keys of one table that are limited, sorted by hash, each with its bucket.
#[derive(Debug, Default)]
pub struct LimitedKeys {
    keys: Vec<(KeyHash, Arc<Mutex<Bucket>>)>,
    hashes: Vec<KeyHash>,
}

impl LimitedKeys {
    /// The limited keys' hashes, sorted: the decoder counts each request's rows of them.
    pub fn hashes(&self) -> &[KeyHash] {
        &self.hashes
    }

    fn bucket(&self, key: KeyHash) -> Option<&Arc<Mutex<Bucket>>> {
        self.keys
            .binary_search_by_key(&key, |(k, _)| *k)
            .ok()
            .map(|i| &self.keys[i].1)
    }
}

/// One table's cap and the keys it limits.
pub struct KeyCap {
    table: String,
    limit: u64,
    limited: ArcSwap<LimitedKeys>,
}

impl KeyCap {
    /// A cap of `limit` rows per second per key of `table`.
    pub fn new(table: &str, limit: u64) -> KeyCap {
        KeyCap {
            table: table.to_string(),
            limit,
            limited: ArcSwap::from_pointee(LimitedKeys::default()),
        }
    }

    /// The keys limited now.
    pub fn limited(&self) -> Arc<LimitedKeys> {
        self.limited.load_full()
    }

    /// Admits a request with `rows` rows per limited key (of `limited`), or refuses it naming
    /// the first key over its limit. Nothing is taken from any bucket when it is refused.
    pub fn admit(&self, limited: &LimitedKeys, rows: &[(KeyHash, u64)]) -> Result<(), KeyOverLimit> {
        let now = Instant::now();
        let mut taken: Vec<(&Arc<Mutex<Bucket>>, u64)> = Vec::new();
        for &(key, n) in rows {
            let Some(bucket) = limited.bucket(key) else {
                continue;
            };
            let result = lock(bucket).take(n, self.limit, now);
            if let Err(retry_after) = result {
                for (bucket, n) in taken {
                    lock(bucket).tokens += n as f64;
                }
                return Err(KeyOverLimit {
                    table: self.table.clone(),
                    key: format!("{:016x}", key.0),
                    limit: self.limit,
                    retry_after: Duration::from_secs(retry_after.as_secs_f64().ceil().max(1.0) as u64),
                });
            }
            taken.push((bucket, n));
        }
        Ok(())
    }

    /// After a window in which each key of `rates` had about that many rows per second
    /// accepted: limits every key at or above the limit, keeps those still above a quarter of
    /// it (a limited key's accepted rate is the limit at most, and the rates are estimates),
    /// and frees the others.
    pub fn update(&self, rates: &[(KeyHash, f64)]) {
        let current = self.limited.load();
        let limit = self.limit as f64;
        let mut next: Vec<(KeyHash, Arc<Mutex<Bucket>>)> = Vec::new();
        for &(key, rate) in rates {
            match current.bucket(key) {
                Some(bucket) if rate >= limit / 4.0 => next.push((key, bucket.clone())),
                None if rate >= limit => {
                    let bucket = Bucket {
                        tokens: 0.0,
                        at: Instant::now(),
                    };
                    next.push((key, Arc::new(Mutex::new(bucket))));
                }
                _ => {}
            }
        }
        next.sort_by_key(|(k, _)| *k);
        let hashes: Vec<KeyHash> = next.iter().map(|(k, _)| *k).collect();
        if hashes != current.hashes {
            self.limited.store(Arc::new(LimitedKeys { keys: next, hashes }));
        }
    }
}

fn lock(bucket: &Mutex<Bucket>) -> std::sync::MutexGuard<'_, Bucket> {
    bucket.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_lets_a_key_through_at_its_limit_and_says_when_the_rest_fits() {
        let start = Instant::now();
        let mut bucket = Bucket {
            tokens: 0.0,
            at: start,
        };
        assert_eq!(bucket.take(100, 1_000, start), Err(Duration::from_millis(100)));
        let later = start + Duration::from_millis(500);
        assert_eq!(
            bucket.take(400, 1_000, later),
            Ok(()),
            "half a second holds 500 rows"
        );
        assert!(bucket.take(200, 1_000, later).is_err());
        let full = later + Duration::from_secs(5);
        assert_eq!(
            bucket.take(3_000, 1_000, full),
            Ok(()),
            "larger than a second, once full"
        );
        assert!(bucket.tokens < 0.0, "and in debt after");
    }

    #[test]
    fn keys_above_the_limit_are_limited_until_they_calm_down_and_others_never() {
        let cap = KeyCap::new("events", 1_000);
        cap.update(&[(KeyHash(7), 1_500.0), (KeyHash(3), 900.0)]);
        assert_eq!(cap.limited().hashes(), [KeyHash(7)]);
        let limited = cap.limited();
        let refused = cap
            .admit(&limited, &[(KeyHash(3), 10_000), (KeyHash(7), 10)])
            .unwrap_err();
        assert_eq!(refused.key, "0000000000000007");
        assert_eq!(refused.retry_after, Duration::from_secs(1), "in whole seconds");
        assert_eq!(
            refused.to_string(),
            "key 0000000000000007 of table events is over its limit of 1000 rows per second \
             ([[tables]] max_key_rows_per_second); other keys are not limited"
        );
        assert_eq!(
            cap.admit(&limited, &[(KeyHash(3), 10_000)]),
            Ok(()),
            "key 3 is not limited"
        );
        cap.update(&[(KeyHash(7), 300.0)]);
        assert_eq!(
            cap.limited().hashes(),
            [KeyHash(7)],
            "still above a quarter of its limit"
        );
        cap.update(&[(KeyHash(7), 200.0)]);
        assert!(cap.limited().hashes().is_empty());
    }
}
