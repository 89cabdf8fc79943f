//! One request's rows per partition key, for the hot-key detector: one row in [`SAMPLE_EVERY`],
//! picked by a cheap pseudo-random stride and counted for that many, so a request pays a
//! couple of nanoseconds per row for it and no hashing. Each request's stride starts from its
//! own random seed: with one seed for all, every request would sample the same positions, so
//! keys a client always puts at the same places in its requests would be over- or never counted.

use crate::routing::KeyHash;

/// One row in this many is counted.
const SAMPLE_EVERY: u64 = 8;
/// A key is handed to the detector when it has at least this share of the request's rows: at
/// most this many keys per request, whatever its size.
const OFFERED_KEYS: u64 = 64;

/// The rows of one request per key hash, estimated from a sample.
#[derive(Debug)]
pub struct KeySample {
    sampled: Vec<u64>,
    rows: u64,
    state: u64,
}

impl Default for KeySample {
    fn default() -> Self {
        KeySample {
            sampled: Vec::new(),
            rows: 0,
            // Any seed but zero, which xorshift never leaves.
            state: rand::random::<u64>() | 1,
        }
    }
}

impl KeySample {
    /// Counts a row whose partition key hashes to `key`.
    pub fn count(&mut self, key: KeyHash) {
        self.rows += 1;
        // xorshift64: a stride no pattern in the client's rows can follow.
        self.state ^= self.state << 13;
        self.state ^= self.state >> 7;
        self.state ^= self.state << 17;
        if self.state.is_multiple_of(SAMPLE_EVERY) {
            self.sampled.push(key.0);
        }
    }

    /// The keys worth the detector's attention, with their estimated rows: those sampled often
    /// enough to hold at least `1 / OFFERED_KEYS` of the request. Sorts the sample.
    pub fn offered(&mut self) -> Vec<(u64, u64)> {
        self.sampled.sort_unstable();
        let floor = (self.rows / OFFERED_KEYS).max(1);
        let mut offered = Vec::new();
        for run in self.sampled.chunk_by(|a, b| a == b) {
            let rows = run.len() as u64 * SAMPLE_EVERY;
            if rows >= floor {
                offered.push((run[0], rows));
            }
        }
        offered
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_large_request_is_sampled_close_to_its_counts_and_offers_only_heavy_keys() {
        let mut sample = KeySample::default();
        for row in 0..100_000u64 {
            let key = if row % 2 == 0 { 7 } else { 1_000 + row };
            sample.count(KeyHash(key));
        }
        let offered = sample.offered();
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

    #[test]
    fn a_key_at_the_same_places_in_every_request_is_counted_across_requests() {
        let mut estimated = 0;
        for _ in 0..400 {
            let mut sample = KeySample::default();
            for row in 0..100u64 {
                sample.count(KeyHash(if row < 10 { 7 } else { 1_000 + row }));
            }
            estimated += sample
                .offered()
                .iter()
                .filter(|(key, _)| *key == 7)
                .map(|(_, rows)| rows)
                .sum::<u64>();
        }
        assert!(
            (3_300..4_700).contains(&estimated),
            "rows 0-9 of 400 requests are 4 000 rows: {estimated}"
        );
    }

    #[test]
    fn one_row_in_about_eight_is_sampled_whatever_the_pattern_of_keys() {
        let mut sample = KeySample::default();
        for row in 0..80_000u64 {
            sample.count(KeyHash(row % 8));
        }
        let offered = sample.offered();
        assert_eq!(offered.len(), 8, "{offered:?}");
        for (key, rows) in offered {
            assert!((8_500..11_500).contains(&rows), "key {key}: {rows} of 10 000");
        }
    }
}
