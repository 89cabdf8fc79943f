//! Sub-shards of a hot key (invariants 4 and 11). A key split k ways has k ring positions:
//! salt 0 is the key's own position, so rows written before the split stay where they are, and
//! salt s > 0 is a position derived from the key's hash and s. Which salt a row takes is a pure
//! function of the row (its id, or the whole row for a table without one) and of the fan-out in
//! force when the row was made, so a retried row lands where its first attempt did, even when a
//! split happened between the two. This module must never change its output: the golden
//! vectors pin it.

use super::key::KeyHash;
use thiserror::Error;
use twox_hash::XxHash3_64;

/// Domain separator of salted positions; part of the placement contract, never change it.
const SALT_DOMAIN: &[u8] = b"shardgate-salt-v1";

/// The ring position of salt `salt` of the key whose hash is `key`.
pub fn salted_position(key: KeyHash, salt: u32) -> KeyHash {
    if salt == 0 {
        return key;
    }
    let mut input = [0u8; SALT_DOMAIN.len() + 12];
    input[..SALT_DOMAIN.len()].copy_from_slice(SALT_DOMAIN);
    input[SALT_DOMAIN.len()..SALT_DOMAIN.len() + 8].copy_from_slice(&key.0.to_be_bytes());
    input[SALT_DOMAIN.len() + 8..].copy_from_slice(&salt.to_be_bytes());
    KeyHash(XxHash3_64::oneshot(&input))
}

/// A fan-out history that cannot be.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum FanoutError {
    /// A split has no steps.
    #[error("a split needs at least one fan-out")]
    Empty,
    /// A fan-out below 2 spreads nothing.
    #[error("fan-out {0} spreads nothing; a split has at least 2")]
    TooSmall(u32),
    /// A later step does not grow the fan-out or does not start later (invariant 11).
    #[error("fan-out {later} from {later_since} ms does not grow {earlier} from {earlier_since} ms")]
    DoesNotGrow {
        /// The earlier fan-out.
        earlier: u32,
        /// When it began, ms since the Unix epoch.
        earlier_since: i64,
        /// The later fan-out.
        later: u32,
        /// When it began.
        later_since: i64,
    },
}

/// The fan-outs of one hot key, each with the time (milliseconds since the Unix epoch) from
/// which rows made take it; the fan-out only grows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FanoutHistory {
    steps: Vec<(i64, u32)>,
}

impl FanoutHistory {
    /// The history of `(since_ms, fanout)` steps, oldest first.
    pub fn new(steps: Vec<(i64, u32)>) -> Result<FanoutHistory, FanoutError> {
        let Some(&(_, first)) = steps.first() else {
            return Err(FanoutError::Empty);
        };
        if first < 2 {
            return Err(FanoutError::TooSmall(first));
        }
        for pair in steps.windows(2) {
            let ((earlier_since, earlier), (later_since, later)) = (pair[0], pair[1]);
            if later <= earlier || later_since <= earlier_since {
                return Err(FanoutError::DoesNotGrow {
                    earlier,
                    earlier_since,
                    later,
                    later_since,
                });
            }
        }
        Ok(FanoutHistory { steps })
    }

    /// The steps, oldest first.
    pub fn steps(&self) -> &[(i64, u32)] {
        &self.steps
    }

    /// The largest fan-out ever: a read of the key visits salts `0..largest`.
    pub fn largest(&self) -> u32 {
        self.steps.last().map_or(1, |&(_, k)| k)
    }

    /// The fan-out in force for a row made at `made_ms`: 1 before the first step. A row that
    /// says nothing of when it was made takes the largest.
    pub fn fanout_at(&self, made_ms: Option<i64>) -> u32 {
        let Some(made) = made_ms else {
            return self.largest();
        };
        self.steps
            .iter()
            .take_while(|&&(since, _)| since <= made)
            .last()
            .map_or(1, |&(_, k)| k)
    }

    /// The salt of a row made at `made_ms` whose id (or, without one, whole row) hashes to
    /// `spread`.
    pub fn salt_for(&self, made_ms: Option<i64>, spread: u64) -> u32 {
        let k = u64::from(self.fanout_at(made_ms));
        u32::try_from(spread % k).expect("a salt is below the fan-out, a u32")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn golden_salted_positions_never_change() {
        let key = KeyHash(0x549b_887e_921f_cf0d);
        assert_eq!(salted_position(key, 0), key, "salt 0 is the key's own position");
        let pinned = [
            (1, 0x3c68_65d1_7207_f7ec),
            (2, 0xf548_6f62_b912_b426),
            (7, 0x8313_8bd6_bbd6_2aab),
        ];
        let found: Vec<(u32, KeyHash)> = pinned
            .iter()
            .map(|&(salt, _)| (salt, salted_position(key, salt)))
            .collect();
        let expected: Vec<(u32, KeyHash)> = pinned.iter().map(|&(salt, p)| (salt, KeyHash(p))).collect();
        assert_eq!(found, expected, "{found:x?}");
    }

    #[test]
    fn salts_of_one_key_are_distinct_and_differ_between_keys() {
        let a: Vec<KeyHash> = (0..16).map(|s| salted_position(KeyHash(1), s)).collect();
        let b: Vec<KeyHash> = (0..16).map(|s| salted_position(KeyHash(2), s)).collect();
        let mut all: Vec<KeyHash> = a.iter().chain(&b).copied().collect();
        all.sort_unstable();
        all.dedup();
        assert_eq!(all.len(), 32);
    }

    #[test]
    fn a_row_takes_the_fanout_in_force_when_it_was_made() {
        let history = FanoutHistory::new(vec![(1_000, 2), (5_000, 4)]).unwrap();
        assert_eq!(history.fanout_at(Some(999)), 1, "made before the split");
        assert_eq!(history.fanout_at(Some(1_000)), 2);
        assert_eq!(history.fanout_at(Some(4_999)), 2);
        assert_eq!(history.fanout_at(Some(5_000)), 4);
        assert_eq!(history.fanout_at(None), 4, "no time: the largest");
        assert_eq!(history.largest(), 4);
    }

    #[test]
    fn a_retry_that_straddles_a_split_keeps_its_salt() {
        let before = FanoutHistory::new(vec![(1_000, 2)]).unwrap();
        let after = FanoutHistory::new(vec![(1_000, 2), (5_000, 4)]).unwrap();
        for spread in 0..64u64 {
            let made = Some(3_000);
            assert_eq!(
                before.salt_for(made, spread),
                after.salt_for(made, spread),
                "a row made at 3 s is placed by k = 2 whenever it arrives"
            );
            assert!(after.salt_for(Some(6_000), spread) < 4);
        }
        assert_eq!(after.salt_for(Some(500), 3), 0, "made before any split: salt 0");
    }

    #[test]
    fn a_history_that_shrinks_or_spreads_nothing_is_refused() {
        assert_eq!(FanoutHistory::new(vec![]), Err(FanoutError::Empty));
        assert_eq!(FanoutHistory::new(vec![(0, 1)]), Err(FanoutError::TooSmall(1)));
        assert!(matches!(
            FanoutHistory::new(vec![(0, 4), (10, 2)]),
            Err(FanoutError::DoesNotGrow {
                earlier: 4,
                later: 2,
                ..
            })
        ));
        assert!(matches!(
            FanoutHistory::new(vec![(10, 2), (10, 4)]),
            Err(FanoutError::DoesNotGrow { .. })
        ));
    }
}
