//! Where a row goes, asked of one routing snapshot: for a write, the ring position to store in
//! the row's `_sg_hash` (invariant 2), the shard that owns it and any second shard that must
//! also receive it; for a read, every shard that may hold a key's rows. These two functions
//! are the only places placement is decided.
//!
//! Today a position is the key's hash and a row goes to its owner alone. Ranges being copied
//! to a new owner (resharding's dual write) are already honoured: a row in one goes to the
//! owner and to the target. Hot-key salts will change the position here, and nowhere else.

use super::key::KeyHash;
use super::ring::{ShardIndex, TokenRange};
use super::table::RoutingTable;

/// Where one row is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WritePlacement {
    /// The ring position stored in the row's `_sg_hash`.
    pub position: KeyHash,
    /// The shard that owns the position.
    pub owner: ShardIndex,
    /// A shard that must receive the row as well: the target of a range being copied.
    pub also: Option<ShardIndex>,
}

impl RoutingTable {
    /// Where a row whose partition key hashes to `hash` is written.
    pub fn place_write(&self, hash: KeyHash) -> WritePlacement {
        let owner = self.ring.shard_for(hash);
        let also = self
            .moving
            .iter()
            .find(|m| m.range.contains(hash))
            .map(|m| m.target)
            .filter(|target| *target != owner);
        WritePlacement {
            position: hash,
            owner,
            also,
        }
    }

    /// Every shard that may hold rows of a key hashing to `hash`: its owner. (A range's copy on
    /// its target is not read before the cutover makes the target the owner.)
    pub fn shards_for_read(&self, hash: KeyHash) -> impl Iterator<Item = ShardIndex> {
        std::iter::once(self.ring.shard_for(hash))
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
    use crate::routing::{Epoch, LeavingRange, MovingRange, Ring, ShardId, TokenRange};

    fn two_shards() -> RoutingTable {
        let shards = vec![ShardId("s0".into()), ShardId("s1".into())];
        RoutingTable::new(Epoch(1), shards, Ring::build([("s0", 1)], 8).unwrap())
    }

    #[test]
    fn a_write_goes_to_the_owner_of_its_hash_at_that_position() {
        let table = two_shards();
        for hash in [0, 1, u64::MAX / 3, u64::MAX] {
            let placement = table.place_write(KeyHash(hash));
            assert_eq!(placement.position, KeyHash(hash));
            assert_eq!(placement.owner, ShardIndex(0));
            assert_eq!(placement.also, None);
            assert_eq!(
                table.shards_for_read(KeyHash(hash)).collect::<Vec<_>>(),
                [ShardIndex(0)]
            );
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
        let also = |hash| table.place_write(KeyHash(hash)).also;
        for inside in [u64::MAX, 0, 5, 101, 200] {
            assert_eq!(also(inside), Some(ShardIndex(1)), "{inside}");
        }
        for outside in [u64::MAX - 10, 6, 100, 201] {
            assert_eq!(also(outside), None, "{outside}");
        }
        assert_eq!(
            table.shards_for_read(KeyHash(150)).collect::<Vec<_>>(),
            [ShardIndex(0)],
            "reads stay with the owner until the cutover"
        );
    }
}
