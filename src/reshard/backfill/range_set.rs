//! A set of ranges a pass over a table works on, as one sorted array of bounds: Postgres's
//! `width_bucket` finds a row's range by binary search, so one sequential pass tests each row
//! against hundreds of ranges in a few comparisons, and groups counts by range.

use crate::routing::{ShardIndex, TokenRange};
use crate::schema::HASH_COLUMN;

/// The ranges of one pass (those moving from one source to one target, say), indexed as given.
#[derive(Debug, Clone)]
pub struct RangeSet {
    /// How many ranges there are.
    len: usize,
    /// Lower bound and one past the upper bound of every stored interval, smallest first; the
    /// top interval's end is left out when it reaches `i64::MAX`.
    bounds: Vec<i64>,
    /// For the interval whose lower bound is `bounds[2 * i]`, the index of its range.
    owners: Vec<usize>,
}

impl RangeSet {
    /// The bounds of the ranges `(start, end]`, which must not overlap.
    pub fn new(ranges: &[(u64, u64)]) -> RangeSet {
        let mut intervals: Vec<(i64, i64, usize)> = ranges
            .iter()
            .enumerate()
            .flat_map(|(index, &(start, end))| {
                // The owner plays no part in where the range lies.
                let range = TokenRange {
                    start,
                    end,
                    shard: ShardIndex(0),
                };
                range
                    .stored_intervals()
                    .into_iter()
                    .map(move |(lo, hi)| (lo, hi, index))
            })
            .collect();
        intervals.sort_unstable();
        let mut bounds = Vec::with_capacity(intervals.len() * 2);
        let mut owners = Vec::with_capacity(intervals.len());
        for (lo, hi, index) in intervals {
            bounds.push(lo);
            if let Some(past) = hi.checked_add(1) {
                bounds.push(past);
            }
            owners.push(index);
        }
        RangeSet {
            len: ranges.len(),
            bounds,
            owners,
        }
    }

    /// How many ranges there are.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The bounds, to bind as the `bigint[]` parameter of [`RangeSet::bucket_sql`].
    pub fn bounds(&self) -> &[i64] {
        &self.bounds
    }

    /// The bucket of a row's `_sg_hash` among the bounds bound as parameter `$param`: odd
    /// inside a range, even between them (`width_bucket` counts the bounds at or below it).
    pub fn bucket_sql(param: usize) -> String {
        format!("width_bucket({HASH_COLUMN}, ${param}::bigint[])")
    }

    /// The condition that keeps the rows of these ranges, bounds bound as `$param`.
    pub fn filter_sql(param: usize) -> String {
        format!("{} % 2 = 1", Self::bucket_sql(param))
    }

    /// The index of the range an odd bucket stands for.
    pub fn range_of_bucket(&self, bucket: i32) -> Option<usize> {
        let bucket = usize::try_from(bucket).ok().filter(|b| b % 2 == 1)?;
        self.owners.get(bucket / 2).copied()
    }

    /// The index of the range holding stored hash `hash`, as `width_bucket` finds it.
    #[cfg(test)]
    fn range_of(&self, hash: i64) -> Option<usize> {
        let bucket = self.bounds.partition_point(|bound| *bound <= hash);
        self.range_of_bucket(i32::try_from(bucket).ok()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routing::KeyHash;

    #[test]
    fn every_hash_finds_the_range_that_contains_it() {
        let half = 1u64 << 63;
        let ranges = [
            (10, 20),
            (u64::MAX - 5, 3),
            (half - 10, half + 10),
            (20, 40),
            (100, 200),
        ];
        let moving = RangeSet::new(&ranges);
        let probes = [
            0,
            3,
            4,
            10,
            11,
            20,
            21,
            22,
            40,
            41,
            99,
            100,
            101,
            200,
            201,
            half - 10,
            half - 9,
            half - 1,
            half,
            half + 10,
            half + 11,
            u64::MAX - 5,
            u64::MAX - 4,
            u64::MAX,
        ];
        for probe in probes {
            let hash = KeyHash(probe);
            let expected = ranges.iter().position(|&(start, end)| {
                TokenRange {
                    start,
                    end,
                    shard: ShardIndex(0),
                }
                .contains(hash)
            });
            assert_eq!(moving.range_of(hash.as_i64()), expected, "hash {probe}");
        }
    }

    #[test]
    fn a_range_over_the_whole_ring_holds_every_hash() {
        let moving = RangeSet::new(&[(7, 7)]);
        for hash in [i64::MIN, -1, 0, 1, i64::MAX] {
            assert_eq!(moving.range_of(hash), Some(0), "hash {hash}");
        }
    }

    #[test]
    fn even_buckets_are_no_range() {
        let moving = RangeSet::new(&[(10, 20)]);
        assert_eq!(moving.range_of_bucket(0), None);
        assert_eq!(moving.range_of_bucket(2), None);
        assert_eq!(moving.range_of_bucket(1), Some(0));
        assert_eq!(moving.range_of_bucket(-1), None);
    }
}
