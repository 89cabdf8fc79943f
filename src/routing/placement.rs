//! Where a row goes, asked of one routing snapshot: for a write, the ring position to store in
//! the row's `_sg_hash` (invariant 2), the shard that owns it and any second shard that must
//! also receive it; for a read, every shard that may hold a key's rows. These two functions
//! are the only places placement is decided.
//!
//! A row's position is its key's hash, or for a split hot key the salted position its salt
//! gives (invariant 4). A row in a range being copied to a new owner (resharding's dual write)
//! goes to the owner and to the target.

use super::key::KeyHash;
use super::ring::{ShardIndex, TokenRange};
use super::salt::salted_position;
use super::splits::{KeySplits, RowOrigin};
use super::table::RoutingTable;

/// Salts tried for an even spread when a key is split.
const SALT_SEARCH: u32 = 4096;

/// Where one row is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WritePlacement {
    /// The ring position stored in the row's `_sg_hash`.
    pub position: KeyHash,
    /// The row's salt: 0 unless its key is split.
    pub salt: u32,
    /// The shard that owns the position.
    pub owner: ShardIndex,
    /// A shard that must receive the row as well: the target of a range being copied.
    pub also: Option<ShardIndex>,
}

impl RoutingTable {
    /// Where a row whose partition key hashes to `key` is written. `splits` are its table's
    /// split keys (from [`crate::routing::Splits::of`]); `origin` is asked of the row only when
    /// its key is split.
    pub fn place_write(
        &self,
        splits: Option<&KeySplits>,
        key: KeyHash,
        origin: impl FnOnce() -> RowOrigin,
    ) -> WritePlacement {
        let salt = match splits.and_then(|s| s.get(key)) {
            Some(history) => {
                let origin = origin();
                history.salt_for(origin.made_ms, origin.spread)
            }
            None => 0,
        };
        let position = salted_position(key, salt);
        let (owner, also) = self.place_position(position);
        WritePlacement {
            position,
            salt,
            owner,
            also,
        }
    }

    /// The shard owning ring position `position`, and the target of a range being copied that
    /// holds it: where a row already given its position (a spooled one, say) is written.
    pub fn place_position(&self, position: KeyHash) -> (ShardIndex, Option<ShardIndex>) {
        let owner = self.ring.shard_for(position);
        let also = self
            .moving
            .iter()
            .find(|m| m.range.contains(position))
            .map(|m| m.target)
            .filter(|target| *target != owner);
        (owner, also)
    }

    /// The shard owning the key's own (unsalted) position.
    pub fn owner_of_key(&self, key: KeyHash) -> ShardIndex {
        self.ring.shard_for(key)
    }

    /// The salts a read of `key` in `table` visits: every salt the key ever had, just 0 for a
    /// key never split (invariant 11).
    pub fn salts_for_read(&self, table: &str, key: KeyHash) -> &[u32] {
        self.splits
            .of(table)
            .and_then(|s| s.get(key))
            .map_or(&[0], |history| history.read_salts())
    }

    /// Every shard that may hold rows of `key` in `table`: the owners of each of its salted
    /// positions, in index order. (A range's copy on its target is not read before the cutover
    /// makes the target the owner.)
    pub fn shards_for_read(&self, table: &str, key: KeyHash) -> Vec<ShardIndex> {
        let mut shards: Vec<ShardIndex> = self
            .salts_for_read(table, key)
            .iter()
            .map(|&salt| self.ring.shard_for(salted_position(key, salt)))
            .collect();
        shards.sort_unstable();
        shards.dedup();
        shards
    }

    /// The salts of `key` split `fanout` ways: the salts it has already (`previous`; at first
    /// just 0, its own position), then, in salt order, each salt whose owner holds fewer of the
    /// key's salts than an even share of `fanout` over the shards owning ranges. The key's rows
    /// are so spread over as many shards as it has salts, evenly, as long as the ring allows.
    pub fn choose_salts(&self, key: KeyHash, fanout: usize, previous: &[u32]) -> Vec<u32> {
        let even_share = fanout.div_ceil(self.shards_for_scatter().len().max(1));
        let mut salts: Vec<u32> = if previous.is_empty() {
            vec![0]
        } else {
            previous.to_vec()
        };
        let owner = |salt: u32| self.ring.shard_for(salted_position(key, salt));
        let mut held: Vec<usize> = vec![0; self.shards.len()];
        for &salt in &salts {
            held[owner(salt).0] += 1;
        }
        for salt in 1..SALT_SEARCH {
            if salts.len() >= fanout {
                break;
            }
            if !salts.contains(&salt) && held[owner(salt).0] < even_share {
                held[owner(salt).0] += 1;
                salts.push(salt);
            }
        }
        // A ring too uneven for even shares: the next salts in order.
        let mut next = 1;
        while salts.len() < fanout {
            if !salts.contains(&next) {
                salts.push(next);
            }
            next += 1;
        }
        salts
    }

    /// Every shard a read of the whole table visits: those owning some range of the ring. A
    /// shard receiving ranges it does not own yet is not read.
    pub fn shards_for_scatter(&self) -> Vec<ShardIndex> {
        let mut owners: Vec<ShardIndex> = self.ring.tokens().iter().map(|t| t.shard).collect();
        owners.sort_unstable();
        owners.dedup();
        owners
    }

    /// The ranges a read of `shard` must leave out: those it still holds rows of but no longer
    /// owns (invariant 12).
    pub fn ranges_to_skip(&self, shard: ShardIndex) -> impl Iterator<Item = &TokenRange> {
        self.leaving
            .iter()
            .filter(move |l| l.holder == shard)
            .map(|l| &l.range)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routing::splits::{SplitStep, Splits};
    use crate::routing::{Epoch, LeavingRange, MovingRange, Ring, ShardId, TokenRange};

    fn two_shards() -> RoutingTable {
        let shards = vec![ShardId("s0".into()), ShardId("s1".into())];
        RoutingTable::new(Epoch(1), shards, Ring::build([("s0", 1)], 8).unwrap())
    }

    fn unsplit() -> RowOrigin {
        panic!("the origin of a row whose key is not split is never asked")
    }

    fn four_shards() -> RoutingTable {
        let names = ["s0", "s1", "s2", "s3"];
        let ring = Ring::build(names.iter().map(|n| (*n, 1)), 64).unwrap();
        RoutingTable::new(
            Epoch(1),
            names.iter().map(|n| ShardId(n.to_string())).collect(),
            ring,
        )
    }

    fn four_shards_with_a_split(steps: &[(i64, Vec<u32>)]) -> RoutingTable {
        let mut table = four_shards();
        table.splits = Splits::from_steps(steps.iter().map(|(since_ms, salts)| SplitStep {
            table: "events".into(),
            key: KeyHash(42),
            since_ms: *since_ms,
            salts: salts.clone(),
        }))
        .unwrap();
        table
    }

    #[test]
    fn a_split_takes_salts_that_spread_the_key_evenly_over_the_shards() {
        let table = four_shards();
        for key in [1u64, 42, u64::MAX / 7] {
            let salts = table.choose_salts(KeyHash(key), 4, &[]);
            assert_eq!(salts[0], 0, "the key's own position stays");
            let mut owners: Vec<ShardIndex> = salts
                .iter()
                .map(|&s| table.ring.shard_for(salted_position(KeyHash(key), s)))
                .collect();
            owners.sort_unstable();
            assert_eq!(
                owners,
                [ShardIndex(0), ShardIndex(1), ShardIndex(2), ShardIndex(3)],
                "{salts:?}"
            );
            let grown = table.choose_salts(KeyHash(key), 8, &salts);
            assert_eq!(grown[..4], salts[..], "a larger fan-out keeps every salt");
            let mut counts = [0; 4];
            for &s in &grown {
                counts[table.ring.shard_for(salted_position(KeyHash(key), s)).0] += 1;
            }
            assert_eq!(counts, [2, 2, 2, 2], "{grown:?}");
        }
        let lone = two_shards();
        assert_eq!(
            lone.choose_salts(KeyHash(9), 3, &[]),
            [0, 1, 2],
            "one owner: salts in order"
        );
    }

    #[test]
    fn a_split_key_takes_the_salted_position_of_its_spread() {
        let salts = vec![0, 5, 2, 9];
        let table = four_shards_with_a_split(&[(1_000, salts.clone())]);
        let splits = table.splits.of("events");
        let mut owners = Vec::new();
        for spread in 0..4u64 {
            let placement = table.place_write(splits, KeyHash(42), || RowOrigin {
                spread,
                made_ms: 1_000,
            });
            assert_eq!(placement.salt, salts[spread as usize]);
            assert_eq!(placement.position, salted_position(KeyHash(42), placement.salt));
            assert_eq!(placement.owner, table.ring.shard_for(placement.position));
            owners.push(placement.owner);
        }
        let before = table.place_write(splits, KeyHash(42), || RowOrigin {
            spread: 3,
            made_ms: 999,
        });
        assert_eq!(
            (before.salt, before.position),
            (0, KeyHash(42)),
            "made before the split"
        );
        let other = table.place_write(splits, KeyHash(43), unsplit);
        assert_eq!((other.salt, other.position), (0, KeyHash(43)));
        owners.sort_unstable();
        owners.dedup();
        assert_eq!(table.shards_for_read("events", KeyHash(42)), owners);
        assert_eq!(table.salts_for_read("events", KeyHash(42)), salts);
        assert_eq!(
            table.shards_for_read("logs", KeyHash(42)),
            [table.owner_of_key(KeyHash(42))],
            "a split is a table's own"
        );
    }

    #[test]
    fn a_write_goes_to_the_owner_of_its_hash_at_that_position() {
        let table = two_shards();
        for hash in [0, 1, u64::MAX / 3, u64::MAX] {
            let placement = table.place_write(None, KeyHash(hash), unsplit);
            assert_eq!(placement.position, KeyHash(hash));
            assert_eq!(placement.owner, ShardIndex(0));
            assert_eq!(placement.also, None);
            assert_eq!(table.shards_for_read("events", KeyHash(hash)), [ShardIndex(0)]);
        }
    }

    #[test]
    fn scatter_reads_visit_owners_and_skip_what_a_former_owner_still_holds() {
        let mut table = two_shards();
        assert_eq!(
            table.shards_for_scatter(),
            [ShardIndex(0)],
            "s1 owns no token yet"
        );
        let leaving = TokenRange {
            start: 100,
            end: 200,
            shard: ShardIndex(0),
        };
        table.leaving = vec![LeavingRange {
            range: leaving,
            holder: ShardIndex(1),
        }];
        assert_eq!(
            table.ranges_to_skip(ShardIndex(1)).collect::<Vec<_>>(),
            [&leaving]
        );
        assert_eq!(table.ranges_to_skip(ShardIndex(0)).count(), 0);
    }

    #[test]
    fn a_write_into_a_moving_range_also_goes_to_its_target() {
        let mut table = two_shards();
        let wrapping = TokenRange {
            start: u64::MAX - 10,
            end: 5,
            shard: ShardIndex(0),
        };
        let middle = TokenRange {
            start: 100,
            end: 200,
            shard: ShardIndex(0),
        };
        table.moving = vec![
            MovingRange {
                range: wrapping,
                target: ShardIndex(1),
            },
            MovingRange {
                range: middle,
                target: ShardIndex(1),
            },
        ];
        let also = |hash| table.place_write(None, KeyHash(hash), unsplit).also;
        for inside in [u64::MAX, 0, 5, 101, 200] {
            assert_eq!(also(inside), Some(ShardIndex(1)), "{inside}");
        }
        for outside in [u64::MAX - 10, 6, 100, 201] {
            assert_eq!(also(outside), None, "{outside}");
        }
        assert_eq!(
            table.shards_for_read("events", KeyHash(150)),
            [ShardIndex(0)],
            "reads stay with the owner until the cutover"
        );
    }
}
