//! Space-Saving (Metwally, Agrawal, El Abbadi, 2005): the heaviest keys of a stream in a fixed
//! number of counters. Every key whose true count exceeds `total / capacity` holds a counter,
//! and each counter overstates its key's count by at most its recorded error. Written here
//! rather than taken from a crate because the detector needs exactly this and its merge: a
//! few dozen lines, no dependency, and the error bound each candidate carries.
//!
//! Updates come once per distinct key of a request (the request counts its own rows first), so
//! the linear search for the smallest counter runs per key and request, not per row.

use std::collections::HashMap;

/// One tracked key: its estimated count and how much of it may belong to keys it replaced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Counter {
    /// The key's hash.
    pub key: u64,
    /// Estimated rows: never below the true count.
    pub count: u64,
    /// Largest overstatement of `count`.
    pub error: u64,
}

impl Counter {
    /// Rows the key certainly had: `count - error`.
    pub fn guaranteed(&self) -> u64 {
        self.count - self.error
    }
}

/// The heaviest keys of a stream, in at most `capacity` counters.
#[derive(Debug, Clone)]
pub struct SpaceSaving {
    capacity: usize,
    counters: Vec<Counter>,
    slots: HashMap<u64, usize>,
    total: u64,
}

impl SpaceSaving {
    /// An empty sketch of `capacity` counters (at least 1).
    pub fn new(capacity: usize) -> SpaceSaving {
        let capacity = capacity.max(1);
        SpaceSaving {
            capacity,
            counters: Vec::with_capacity(capacity),
            slots: HashMap::with_capacity(capacity),
            total: 0,
        }
    }

    /// Rows seen.
    pub fn total(&self) -> u64 {
        self.total
    }

    /// Counts `rows` more rows of `key`.
    pub fn offer(&mut self, key: u64, rows: u64) {
        self.total += rows;
        if let Some(&slot) = self.slots.get(&key) {
            self.counters[slot].count += rows;
            return;
        }
        if self.counters.len() < self.capacity {
            self.slots.insert(key, self.counters.len());
            self.counters.push(Counter {
                key,
                count: rows,
                error: 0,
            });
            return;
        }
        let (slot, smallest) = self
            .counters
            .iter()
            .enumerate()
            .min_by_key(|(_, c)| c.count)
            .map(|(slot, c)| (slot, *c))
            .expect("a full sketch has counters");
        self.slots.remove(&smallest.key);
        self.slots.insert(key, slot);
        self.counters[slot] = Counter {
            key,
            count: smallest.count + rows,
            error: smallest.count,
        };
    }

    /// Adds `other`'s counts (the mergeable-summaries rule): a key one sketch does not track
    /// is given that sketch's smallest count when it is full, as count and as error, since no
    /// untracked key can have had more; then the heaviest `capacity` keys are kept.
    pub fn merge(&mut self, other: &SpaceSaving) {
        let (mine, theirs) = (self.floor(), other.floor());
        let mut merged: HashMap<u64, Counter> = self
            .counters
            .iter()
            .map(|c| {
                let counter = Counter {
                    key: c.key,
                    count: c.count + theirs,
                    error: c.error + theirs,
                };
                (c.key, counter)
            })
            .collect();
        for c in &other.counters {
            merged
                .entry(c.key)
                .and_modify(|m| {
                    m.count = m.count - theirs + c.count;
                    m.error = m.error - theirs + c.error;
                })
                .or_insert(Counter {
                    key: c.key,
                    count: c.count + mine,
                    error: c.error + mine,
                });
        }
        let mut counters: Vec<Counter> = merged.into_values().collect();
        counters.sort_unstable_by(|a, b| b.count.cmp(&a.count).then(a.key.cmp(&b.key)));
        counters.truncate(self.capacity);
        self.slots = counters
            .iter()
            .enumerate()
            .map(|(slot, c)| (c.key, slot))
            .collect();
        self.counters = counters;
        self.total += other.total;
    }

    /// The most rows a key this sketch does not track can have had.
    fn floor(&self) -> u64 {
        if self.counters.len() < self.capacity {
            return 0;
        }
        self.counters.iter().map(|c| c.count).min().unwrap_or(0)
    }

    /// The counters, heaviest first.
    pub fn heaviest(&self) -> Vec<Counter> {
        let mut counters = self.counters.clone();
        counters.sort_unstable_by(|a, b| b.count.cmp(&a.count).then(a.key.cmp(&b.key)));
        counters
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A stream of `n` rows where key 0 has `share` of them and the rest spread over many keys.
    fn skewed(n: u64, share: f64) -> Vec<u64> {
        let heavy = (n as f64 * share) as u64;
        let mut stream: Vec<u64> = (0..n - heavy).map(|i| 1 + i % 5_000).collect();
        for i in 0..heavy {
            stream.insert(((i * 7_919) % (stream.len() as u64 + 1)) as usize, 0);
        }
        stream
    }

    #[test]
    fn a_heavy_key_is_found_with_its_count_bounded() {
        let stream = skewed(100_000, 0.3);
        let mut sketch = SpaceSaving::new(32);
        for &key in &stream {
            sketch.offer(key, 1);
        }
        let top = sketch.heaviest()[0];
        assert_eq!(top.key, 0);
        let truth = stream.iter().filter(|&&k| k == 0).count() as u64;
        assert!(
            top.count >= truth && top.guaranteed() <= truth,
            "{top:?} vs {truth}"
        );
        assert!(top.error <= sketch.total() / 32, "{top:?}");
        assert_eq!(sketch.total(), 100_000);
    }

    #[test]
    fn every_key_above_total_over_capacity_holds_a_counter() {
        let mut sketch = SpaceSaving::new(10);
        let mut truth: HashMap<u64, u64> = HashMap::new();
        for i in 0..20_000u64 {
            let key = if i % 4 == 0 {
                7
            } else if i % 9 == 0 {
                8
            } else {
                100 + i % 3_000
            };
            *truth.entry(key).or_default() += 1;
            sketch.offer(key, 1);
        }
        let tracked: Vec<u64> = sketch.heaviest().iter().map(|c| c.key).collect();
        for (key, count) in truth {
            if count > sketch.total() / 10 {
                assert!(tracked.contains(&key), "key {key} with {count} rows");
            }
        }
    }

    #[test]
    fn merged_sketches_count_what_both_saw() {
        let stream = skewed(60_000, 0.5);
        let (mut left, mut right) = (SpaceSaving::new(16), SpaceSaving::new(16));
        for (i, &key) in stream.iter().enumerate() {
            if i % 2 == 0 {
                left.offer(key, 1)
            } else {
                right.offer(key, 1)
            }
        }
        left.merge(&right);
        assert_eq!(left.total(), 60_000);
        let top = left.heaviest()[0];
        assert_eq!(top.key, 0);
        let truth = stream.iter().filter(|&&k| k == 0).count() as u64;
        assert!(
            top.count >= truth && top.guaranteed() <= truth,
            "{top:?} vs {truth}"
        );
    }

    #[test]
    fn weights_count_as_that_many_rows() {
        let mut sketch = SpaceSaving::new(2);
        sketch.offer(1, 500);
        sketch.offer(2, 10);
        sketch.offer(3, 20);
        let heaviest = sketch.heaviest();
        assert_eq!(
            heaviest[0],
            Counter {
                key: 1,
                count: 500,
                error: 0
            }
        );
        assert_eq!(
            heaviest[1],
            Counter {
                key: 3,
                count: 30,
                error: 10
            }
        );
        assert_eq!(sketch.total(), 530);
    }
}
