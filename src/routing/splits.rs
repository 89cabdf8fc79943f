//! The hot keys a routing snapshot knows as split, per table: each key's fan-out history
//! (invariant 11), looked up for every row of a table that has a split key.

use super::key::KeyHash;
use super::salt::{FanoutError, FanoutHistory, FanoutStep};
use std::collections::BTreeMap;

/// What places a row of a split key among its salts, taken from the row itself so that a
/// retried row is placed as its first attempt was (invariant 4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RowOrigin {
    /// The hash of the row's id, or of all its values for a table without one.
    pub spread: u64,
    /// When the row was made, in milliseconds since the Unix epoch: its `made_at` column, the
    /// time of a UUIDv7 id, or else when the proxy received it.
    pub made_ms: i64,
}

/// One table's split keys, sorted by key hash.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeySplits {
    keys: Vec<(KeyHash, FanoutHistory)>,
}

impl KeySplits {
    /// The fan-out history of `key`, when it is split.
    pub fn get(&self, key: KeyHash) -> Option<&FanoutHistory> {
        self.keys
            .binary_search_by_key(&key, |(k, _)| *k)
            .ok()
            .map(|i| &self.keys[i].1)
    }
}

/// One fan-out step of a split key as the catalog stores it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SplitStep {
    /// The table.
    pub table: String,
    /// The key's hash.
    pub key: KeyHash,
    /// From when rows made take this step, ms since the Unix epoch.
    pub since_ms: i64,
    /// The salts rows made from then take.
    pub salts: Vec<u32>,
}

/// Every table's split keys.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Splits {
    tables: BTreeMap<String, KeySplits>,
}

impl Splits {
    /// The splits of the stored `steps`, in any order; a key whose steps do not grow is refused.
    pub fn from_steps(steps: impl IntoIterator<Item = SplitStep>) -> Result<Splits, FanoutError> {
        let mut by_key: BTreeMap<(String, KeyHash), Vec<FanoutStep>> = BTreeMap::new();
        for step in steps {
            by_key
                .entry((step.table, step.key))
                .or_default()
                .push(FanoutStep {
                    since_ms: step.since_ms,
                    salts: step.salts,
                });
        }
        let mut tables: BTreeMap<String, KeySplits> = BTreeMap::new();
        for ((table, key), mut history) in by_key {
            history.sort_unstable_by_key(|step| step.since_ms);
            let history = FanoutHistory::new(history)?;
            tables.entry(table).or_default().keys.push((key, history));
        }
        Ok(Splits { tables })
    }

    /// The split keys of `table`, when it has any.
    pub fn of(&self, table: &str) -> Option<&KeySplits> {
        self.tables.get(table)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(table: &str, key: u64, since_ms: i64, salts: &[u32]) -> SplitStep {
        SplitStep {
            table: table.into(),
            key: KeyHash(key),
            since_ms,
            salts: salts.to_vec(),
        }
    }

    #[test]
    fn steps_in_any_order_make_each_key_its_history() {
        let splits = Splits::from_steps([
            step("events", 9, 2_000, &[0, 1, 2, 3]),
            step("logs", 9, 1_000, &[0, 1]),
            step("events", 3, 1_000, &[0, 5]),
            step("events", 9, 1_000, &[0, 1]),
        ])
        .unwrap();
        let events = splits.of("events").unwrap();
        let history = events.get(KeyHash(9)).unwrap();
        let fanouts: Vec<usize> = [999, 1_000, 2_000]
            .iter()
            .map(|&t| history.fanout_at(t))
            .collect();
        assert_eq!(fanouts, [1, 2, 4], "the steps in time order");
        assert_eq!(history.read_salts(), [0, 1, 2, 3]);
        assert_eq!(events.get(KeyHash(3)).unwrap().read_salts(), [0, 5]);
        assert_eq!(events.get(KeyHash(4)), None);
        assert_eq!(
            splits.of("logs").unwrap().get(KeyHash(9)).unwrap().read_salts(),
            [0, 1]
        );
        assert_eq!(splits.of("other"), None);
    }

    #[test]
    fn a_stored_history_that_shrinks_is_refused() {
        let shrinking =
            Splits::from_steps([step("t", 1, 1_000, &[0, 1, 2, 3]), step("t", 1, 2_000, &[0, 1])]);
        assert!(matches!(shrinking, Err(FanoutError::DoesNotGrow { .. })));
    }
}
