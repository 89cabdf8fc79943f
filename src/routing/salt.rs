//! Sub-shards of a hot key (invariants 4 and 11). A key split k ways has k ring positions:
//! salt 0 is the key's own position, so rows written before the split stay where they are, and
//! salt s > 0 is a position derived from the key's hash and s. Which salt a row takes is a pure
//! function of the row (its id, or the whole row for a table without one) and of the fan-out in
//! force when the row was made, so a retried row lands where its first attempt did, even when a
//! split happened between the two. This module must never change its output: the golden
//! vectors pin it.

use super::key::KeyHash;
use std::hash::Hasher;
use thiserror::Error;
use twox_hash::XxHash3_64;

/// Domain separator of salted positions; part of the placement contract, never change it.
const SALT_DOMAIN: &[u8] = b"shardgate-salt-v1";

/// Seed of the hash that spreads a split key's rows over its salts; part of the placement
/// contract, never change it.
const SPREAD_SEED: u64 = 0x7367_7370_7265_6164;

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

/// The spread of a row: the hash of its id's binary value, or for a table without an id of
/// every value of the row (see [`spread_of_values`]). Its remainder by the fan-out is the row's
/// salt.
pub fn spread_of_id(id: &[u8]) -> u64 {
    XxHash3_64::oneshot_with_seed(SPREAD_SEED, id)
}

/// The spread of a row of a table without an id: the hash of each value's length and bytes in
/// column order, a null as length -1. Each value is given as the pieces its bytes are in, one
/// after another (a `jsonb` field's version byte, then its text), so none is copied to be
/// hashed.
pub fn spread_of_values<'a, P>(values: impl IntoIterator<Item = Option<P>>) -> u64
where
    P: AsRef<[&'a [u8]]>,
{
    let mut hasher = XxHash3_64::with_seed(SPREAD_SEED);
    for value in values {
        match value {
            Some(pieces) => {
                let pieces = pieces.as_ref();
                let len: usize = pieces.iter().map(|piece| piece.len()).sum();
                let len = i32::try_from(len).expect("a value is smaller than the body limit");
                hasher.write(&len.to_be_bytes());
                pieces.iter().for_each(|piece| hasher.write(piece));
            }
            None => hasher.write(&(-1i32).to_be_bytes()),
        }
    }
    hasher.finish()
}

/// A fan-out history that cannot be.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum FanoutError {
    /// A split has no steps.
    #[error("a split needs at least one fan-out")]
    Empty,
    /// A fan-out below 2 spreads nothing.
    #[error("fan-out {0} spreads nothing; a split has at least 2")]
    TooSmall(usize),
    /// The first step leaves out the key's own position, where its older rows are.
    #[error("the first fan-out of a split must keep salt 0, the key's own position")]
    NoSaltZero,
    /// A salt is listed twice in one step.
    #[error("salt {0} is listed twice in one fan-out")]
    Duplicate(u32),
    /// A later step does not start later, or drops a salt of the step before (invariant 11).
    #[error("the fan-out from {later_since} ms does not grow the one from {earlier_since} ms")]
    DoesNotGrow {
        /// When the earlier step began, ms since the Unix epoch.
        earlier_since: i64,
        /// When the later one began.
        later_since: i64,
    },
}

/// One step of a split key: from `since_ms` on (ms since the Unix epoch), rows made take one of
/// `salts`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FanoutStep {
    /// From when rows made take this step.
    pub since_ms: i64,
    /// The salts a row may take, in the order a row's spread picks them.
    pub salts: Vec<u32>,
}

/// The fan-out steps of one hot key, oldest first. Each step's salts include all of the step
/// before, and the first includes salt 0, so the last step lists every position the key's rows
/// can be at (invariant 11).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FanoutHistory {
    steps: Vec<FanoutStep>,
}

impl FanoutHistory {
    /// The history of `steps`, oldest first.
    pub fn new(steps: Vec<FanoutStep>) -> Result<FanoutHistory, FanoutError> {
        let Some(first) = steps.first() else {
            return Err(FanoutError::Empty);
        };
        if !first.salts.contains(&0) {
            return Err(FanoutError::NoSaltZero);
        }
        for step in &steps {
            if step.salts.len() < 2 {
                return Err(FanoutError::TooSmall(step.salts.len()));
            }
            let mut sorted = step.salts.clone();
            sorted.sort_unstable();
            if let Some(pair) = sorted.windows(2).find(|pair| pair[0] == pair[1]) {
                return Err(FanoutError::Duplicate(pair[0]));
            }
        }
        for pair in steps.windows(2) {
            let (earlier, later) = (&pair[0], &pair[1]);
            let keeps_every_salt = earlier.salts.iter().all(|s| later.salts.contains(s));
            if later.since_ms <= earlier.since_ms
                || later.salts.len() <= earlier.salts.len()
                || !keeps_every_salt
            {
                return Err(FanoutError::DoesNotGrow {
                    earlier_since: earlier.since_ms,
                    later_since: later.since_ms,
                });
            }
        }
        Ok(FanoutHistory { steps })
    }

    /// Every salt the key's rows may have: those of the last step. A read of the key visits
    /// each.
    pub fn read_salts(&self) -> &[u32] {
        self.steps.last().map_or(&[0], |step| &step.salts)
    }

    /// The step in force for a row made at `made_ms`: none before the first.
    fn step_at(&self, made_ms: i64) -> Option<&FanoutStep> {
        self.steps
            .iter()
            .take_while(|step| step.since_ms <= made_ms)
            .last()
    }

    /// The fan-out in force for a row made at `made_ms`: 1 before the first step.
    pub fn fanout_at(&self, made_ms: i64) -> usize {
        self.step_at(made_ms).map_or(1, |step| step.salts.len())
    }

    /// The salt of a row made at `made_ms` whose id (or, without one, whole row) hashes to
    /// `spread`: salt 0 before the first step.
    pub fn salt_for(&self, made_ms: i64, spread: u64) -> u32 {
        self.step_at(made_ms).map_or(0, |step| {
            let index = spread % step.salts.len() as u64;
            step.salts[usize::try_from(index).expect("an index below the fan-out fits")]
        })
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
    fn golden_spreads_never_change() {
        let uuid = [
            0x01, 0x93, 0x2f, 0x5e, 0x11, 0x22, 0x73, 0x44, 0x85, 0x66, 0x77, 0x88, 0x99, 0xaa, 0xbb, 0xcc,
        ];
        let found = (
            spread_of_id(&uuid),
            spread_of_values([Some([&b"click"[..]]), None, Some([&7i64.to_be_bytes()[..]])]),
        );
        assert_eq!(
            found,
            (0x767b_eb4f_673f_d35d, 0x8b78_162c_d5e0_15e0),
            "{found:x?}"
        );
    }

    #[test]
    fn a_null_and_an_empty_value_spread_apart() {
        assert_ne!(
            spread_of_values([None::<[&[u8]; 1]>]),
            spread_of_values([Some([&b""[..]])])
        );
        assert_ne!(
            spread_of_values([Some([&b"ab"[..]]), Some([&b"c"[..]])]),
            spread_of_values([Some([&b"a"[..]]), Some([&b"bc"[..]])])
        );
    }

    #[test]
    fn a_value_spreads_alike_whole_or_in_pieces() {
        assert_eq!(
            spread_of_values([Some([&b"\x01"[..], &b"{}"[..]]), None]),
            spread_of_values([Some([&b""[..], &b"\x01{}"[..]]), None])
        );
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

    fn step(since_ms: i64, salts: &[u32]) -> FanoutStep {
        FanoutStep {
            since_ms,
            salts: salts.to_vec(),
        }
    }

    #[test]
    fn a_row_takes_the_fanout_in_force_when_it_was_made() {
        let history = FanoutHistory::new(vec![step(1_000, &[0, 3]), step(5_000, &[0, 3, 1, 6])]).unwrap();
        assert_eq!(history.fanout_at(999), 1, "made before the split");
        assert_eq!(history.fanout_at(1_000), 2);
        assert_eq!(history.fanout_at(4_999), 2);
        assert_eq!(history.fanout_at(5_000), 4);
        assert_eq!(history.read_salts(), [0, 3, 1, 6]);
        assert_eq!(history.salt_for(1_000, 5), 3, "spread 5 picks the second of two");
        assert_eq!(history.salt_for(5_000, 6), 1, "spread 6 picks the third of four");
    }

    #[test]
    fn a_retry_that_straddles_a_split_keeps_its_salt() {
        let before = FanoutHistory::new(vec![step(1_000, &[0, 2])]).unwrap();
        let after = FanoutHistory::new(vec![step(1_000, &[0, 2]), step(5_000, &[0, 2, 1, 5])]).unwrap();
        for spread in 0..64u64 {
            let made = 3_000;
            assert_eq!(
                before.salt_for(made, spread),
                after.salt_for(made, spread),
                "a row made at 3 s is placed by the first step whenever it arrives"
            );
            assert!(after.read_salts().contains(&after.salt_for(6_000, spread)));
        }
        assert_eq!(after.salt_for(500, 3), 0, "made before any split: salt 0");
    }

    #[test]
    fn a_history_that_shrinks_or_spreads_nothing_is_refused() {
        assert_eq!(FanoutHistory::new(vec![]), Err(FanoutError::Empty));
        assert_eq!(
            FanoutHistory::new(vec![step(0, &[0])]),
            Err(FanoutError::TooSmall(1))
        );
        assert_eq!(
            FanoutHistory::new(vec![step(0, &[1, 2])]),
            Err(FanoutError::NoSaltZero)
        );
        assert_eq!(
            FanoutHistory::new(vec![step(0, &[0, 2, 2])]),
            Err(FanoutError::Duplicate(2))
        );
        let drops_a_salt = FanoutHistory::new(vec![step(0, &[0, 4]), step(10, &[0, 1, 2])]);
        assert!(matches!(drops_a_salt, Err(FanoutError::DoesNotGrow { .. })));
        let same_time = FanoutHistory::new(vec![step(10, &[0, 4]), step(10, &[0, 4, 1])]);
        assert!(matches!(same_time, Err(FanoutError::DoesNotGrow { .. })));
    }
}
