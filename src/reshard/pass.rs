//! A migration's ranges grouped into passes: one pass over a table on one shard handles every
//! range it shares a key with (the same source and target for a copy, the same shard for a
//! cleanup), so each table is read once per pair of shards, not once per range.

use super::backfill::RangeSet;
use crate::catalog::journal::RangeRecord;
use std::collections::BTreeMap;

/// The ranges of a migration that one pass works on.
pub struct Pass<'r, K> {
    /// What the ranges share: a source and a target, or one shard.
    pub key: K,
    /// The ranges, as the journal records them.
    pub records: Vec<&'r RangeRecord>,
    /// The same ranges, for the pass's queries; index `i` is `records[i]`.
    pub moving: RangeSet,
}

impl<K> Pass<'_, K> {
    /// The journal's `(start, rows)` for per-range counts indexed as [`Pass::moving`].
    pub fn by_start(&self, per_range: &[(usize, i64)]) -> Vec<(u64, i64)> {
        per_range
            .iter()
            .map(|&(range, rows)| (self.records[range].start, rows))
            .collect()
    }
}

/// `records` grouped by `key`, in the key's order.
pub fn passes<'r, K: Ord>(
    records: impl IntoIterator<Item = &'r RangeRecord>,
    key: impl Fn(&RangeRecord) -> K,
) -> Vec<Pass<'r, K>> {
    let mut grouped: BTreeMap<K, Vec<&'r RangeRecord>> = BTreeMap::new();
    for record in records {
        grouped.entry(key(record)).or_default().push(record);
    }
    grouped
        .into_iter()
        .map(|(key, records)| {
            let bounds: Vec<(u64, u64)> = records.iter().map(|r| (r.start, r.end)).collect();
            Pass {
                key,
                moving: RangeSet::new(&bounds),
                records,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(start: u64, source: &str, target: &str) -> RangeRecord {
        RangeRecord {
            start,
            end: start + 10,
            source: source.to_string(),
            target: target.to_string(),
            phase: "copying".to_string(),
            rows_copied: 0,
            estimated_rows: None,
        }
    }

    #[test]
    fn ranges_sharing_a_key_make_one_pass_and_keep_their_journal_starts() {
        let records = [
            record(100, "s0", "s2"),
            record(0, "s1", "s2"),
            record(200, "s0", "s2"),
            record(300, "s0", "s1"),
        ];
        let by_pair = passes(&records, |r| (r.source.clone(), r.target.clone()));
        let keys: Vec<_> = by_pair
            .iter()
            .map(|p| (p.key.0.as_str(), p.key.1.as_str()))
            .collect();
        assert_eq!(keys, [("s0", "s1"), ("s0", "s2"), ("s1", "s2")]);
        let s0_to_s2 = &by_pair[1];
        assert_eq!(s0_to_s2.moving.len(), 2);
        assert_eq!(s0_to_s2.by_start(&[(1, 7), (0, 3)]), [(200, 7), (100, 3)]);
        let by_source = passes(&records, |r| r.source.clone());
        assert_eq!(by_source.len(), 2);
        assert_eq!(by_source[0].records.len(), 3);
    }
}
