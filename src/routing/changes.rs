//! What changes hands between two routing tables: every range whose owner differs, the input of
//! a resharding plan. Computed here because only routing may ask the ring who owns a position.

use super::key::KeyHash;
use super::ring::TokenRange;
use super::table::{RoutingTable, ShardId};

/// A range `(start, end]` (wrapping when `start >= end`) owned by `from` in one routing table and
/// by `to` in the next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnerChange {
    /// Exclusive lower bound.
    pub start: u64,
    /// Inclusive upper bound.
    pub end: u64,
    /// Owner in the current table.
    pub from: ShardId,
    /// Owner in the next table.
    pub to: ShardId,
}

impl OwnerChange {
    /// Number of hash values in the range.
    pub fn size(&self) -> u128 {
        TokenRange {
            start: self.start,
            end: self.end,
            shard: super::ShardIndex(0),
        }
        .size()
    }
}

impl RoutingTable {
    /// Every range whose owner in `next` is another shard than here, in position order, with
    /// neighbours that change between the same two shards merged into one.
    pub fn owner_changes(&self, next: &RoutingTable) -> Vec<OwnerChange> {
        let mut bounds: Vec<u64> = self
            .ring
            .tokens()
            .iter()
            .chain(next.ring.tokens())
            .map(|t| t.position)
            .collect();
        bounds.sort_unstable();
        bounds.dedup();
        let starts = std::iter::once(bounds[bounds.len() - 1]).chain(bounds.iter().copied());
        let mut changes: Vec<OwnerChange> = Vec::new();
        for (start, &end) in starts.zip(&bounds) {
            // No bound lies inside (start, end], so one token of each ring owns all of it.
            let from = &self.shards[self.ring.shard_for(KeyHash(end)).0];
            let to = &next.shards[next.ring.shard_for(KeyHash(end)).0];
            if from == to {
                continue;
            }
            match changes.last_mut() {
                Some(last) if last.end == start && &last.from == from && &last.to == to => last.end = end,
                _ => changes.push(OwnerChange {
                    start,
                    end,
                    from: from.clone(),
                    to: to.clone(),
                }),
            }
        }
        merge_across_the_wrap(&mut changes);
        changes
    }
}

/// Joins the last change to the first when the two meet at the ring's wrap-around point.
fn merge_across_the_wrap(changes: &mut Vec<OwnerChange>) {
    if changes.len() < 2 {
        return;
    }
    let last = &changes[changes.len() - 1];
    let first = &changes[0];
    if last.end == first.start && last.from == first.from && last.to == first.to {
        let start = last.start;
        changes.pop();
        changes[0].start = start;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routing::{Epoch, Ring, ShardIndex};

    fn table(shards: &[(&str, u32)]) -> RoutingTable {
        let ring = Ring::build(shards.iter().copied(), 64).unwrap();
        let names = shards.iter().map(|(n, _)| ShardId(n.to_string())).collect();
        RoutingTable::new(Epoch(1), names, ring)
    }

    fn owned(table: &RoutingTable, index: usize) -> u128 {
        table
            .ring
            .ranges()
            .filter(|r| r.shard == ShardIndex(index))
            .map(|r| r.size())
            .sum()
    }

    #[test]
    fn adding_a_shard_moves_exactly_what_it_takes_and_only_to_it() {
        let before = table(&[("s0", 1), ("s1", 1)]);
        let after = table(&[("s0", 1), ("s1", 1), ("s2", 1)]);
        let changes = before.owner_changes(&after);
        assert!(changes.iter().all(|c| c.to.0 == "s2"), "{changes:?}");
        assert!(changes.iter().any(|c| c.from.0 == "s0") && changes.iter().any(|c| c.from.0 == "s1"));
        let moved: u128 = changes.iter().map(OwnerChange::size).sum();
        assert_eq!(
            moved,
            owned(&after, 2),
            "the moved ranges are exactly what s2 owns afterwards"
        );
        for change in &changes {
            let probe = KeyHash(change.end);
            assert_eq!(before.shards[before.ring.shard_for(probe).0], change.from);
            assert_eq!(after.shards[after.ring.shard_for(probe).0], change.to);
        }
    }

    #[test]
    fn draining_a_shard_moves_everything_it_owned_and_nothing_else() {
        let before = table(&[("s0", 1), ("s1", 2), ("s2", 1)]);
        let after = table(&[("s0", 1), ("s2", 1)]);
        let changes = before.owner_changes(&after);
        assert!(changes.iter().all(|c| c.from.0 == "s1"), "{changes:?}");
        let moved: u128 = changes.iter().map(OwnerChange::size).sum();
        assert_eq!(moved, owned(&before, 1));
    }

    #[test]
    fn the_same_ring_changes_nothing_and_neighbours_merge() {
        let ring = table(&[("s0", 1), ("s1", 1)]);
        assert!(ring.owner_changes(&ring).is_empty());
        let lone = table(&[("s0", 1)]);
        let changes = lone.owner_changes(&table(&[("s9", 1)]));
        assert_eq!(
            changes.len(),
            1,
            "the whole ring as one range across the wrap: {changes:?}"
        );
        assert_eq!(changes[0].size(), 1u128 << 64);
    }
}
