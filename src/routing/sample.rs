//! One request's rows per partition key, for the detector: every row of a request's first
//! [`FULL_ROWS`], then one row in [`SAMPLE_EVERY`] counted for that many, so a large request pays
//! a few nanoseconds per row for it.

use crate::routing::KeyHash;
use std::collections::HashMap;

/// Rows of a request counted one by one before sampling starts.
const FULL_ROWS: u64 = 64;
/// One row in this many is counted after the first [`FULL_ROWS`].
const SAMPLE_EVERY: u64 = 8;
/// A key is handed to the detector when it has at least this share of the counted rows: at most
/// this many keys per request, whatever its size.
const OFFERED_KEYS: u64 = 64;

/// The rows of one request per key hash, estimated.
#[derive(Debug, Default)]
pub struct KeySample {
    counts: HashMap<u64, u64>,
    counted: u64,
    seen: u64,
    state: u64,
}

impl KeySample {
    /// Counts a row whose partition key hashes to `key`.
    pub fn count(&mut self, key: KeyHash) {
        self.seen += 1;
        let weight = if self.seen <= FULL_ROWS {
            1
        } else {
            // xorshift64: a cheap stride that no pattern in the client's rows can follow.
            self.state ^= self.state << 13;
            self.state ^= self.state >> 7;
            self.state ^= self.state << 17;
            if self.state == 0 {
                self.state = self.seen;
            }
            if !self.state.is_multiple_of(SAMPLE_EVERY) {
                return;
            }
            SAMPLE_EVERY
        };
        self.counted += weight;
        *self.counts.entry(key.0).or_default() += weight;
    }

    /// The keys worth the detector's attention, with their estimated rows: those holding at
    /// least `1 / OFFERED_KEYS` of the request.
    pub fn offered(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        let floor = self.counted / OFFERED_KEYS;
        self.counts
            .iter()
            .filter(move |&(_, &rows)| rows >= floor.max(1))
            .map(|(&key, &rows)| (key, rows))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_small_request_is_counted_row_by_row() {
        let mut sample = KeySample::default();
        for key in [1, 1, 2, 3, 1] {
            sample.count(KeyHash(key));
        }
        let mut offered: Vec<(u64, u64)> = sample.offered().collect();
        offered.sort_unstable();
        assert_eq!(offered, [(1, 3), (2, 1), (3, 1)]);
    }

    #[test]
    fn a_large_request_is_sampled_close_to_its_counts_and_offers_only_heavy_keys() {
        let mut sample = KeySample::default();
        for row in 0..100_000u64 {
            let key = if row % 2 == 0 { 7 } else { 1_000 + row };
            sample.count(KeyHash(key));
        }
        let offered: Vec<(u64, u64)> = sample.offered().collect();
        assert_eq!(
            offered.len(),
            1,
            "the light keys stay out: {} offered",
            offered.len()
        );
        let (key, rows) = offered[0];
        assert_eq!(key, 7);
        assert!((45_000..55_000).contains(&rows), "about half of 100 000: {rows}");
    }
}
