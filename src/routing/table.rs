//! The routing snapshot.
//!
//! A [`RoutingTable`] never changes once built. It is published together with the shards it
//! names (`crate::shards::set`); a request loads one snapshot and routes all of its rows with it
//! (invariant 3). Publishing requires a strictly higher epoch, so a stale table can never replace
//! a newer one.

use super::ring::{Ring, ShardIndex, TokenRange};
use super::splits::Splits;
use std::fmt;

/// Version of the routing table; increases with every change of placement.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Epoch(pub i64);

impl fmt::Display for Epoch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A shard's stable name (`s0`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ShardId(pub String);

impl fmt::Display for ShardId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A range being copied from its owner to a new shard: rows written into it go to both until
/// the cutover.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MovingRange {
    /// The range, `(start, end]` on the ring.
    pub range: TokenRange,
    /// The shard receiving it.
    pub target: ShardIndex,
}

/// A range the ring gives to a new owner while its former owner still holds its rows, until
/// the migration's cleanup deletes them there: reads of the former owner skip it (invariant 12).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeavingRange {
    /// The range, `(start, end]` on the ring.
    pub range: TokenRange,
    /// The former owner, which still holds rows of it.
    pub holder: ShardIndex,
}

/// An immutable routing snapshot. Where a row goes is asked of it through
/// [`RoutingTable::place_write`] and [`RoutingTable::shards_for_read`].
#[derive(Debug, Clone)]
pub struct RoutingTable {
    /// Version of this snapshot.
    pub epoch: Epoch,
    /// Shards by [`ShardIndex`].
    pub shards: Vec<ShardId>,
    /// The ring, whose tokens refer to `shards` by index.
    pub ring: Ring,
    /// Ranges being copied to a new owner (none until resharding runs).
    pub moving: Vec<MovingRange>,
    /// Ranges whose rows their former owner still holds after a cutover.
    pub leaving: Vec<LeavingRange>,
    /// Hot keys spread over salted positions, per table.
    pub splits: Splits,
}

impl RoutingTable {
    /// Two shards, `s0` and `s1`, of 64 vnodes each, at `epoch`: the snapshot unit tests
    /// decode and route with.
    #[cfg(test)]
    pub(crate) fn two_shards_for_tests(epoch: i64) -> RoutingTable {
        let ring = Ring::build([("s0", 1), ("s1", 1)], 64).expect("two shards make a ring");
        RoutingTable::new(
            Epoch(epoch),
            vec![ShardId("s0".into()), ShardId("s1".into())],
            ring,
        )
    }

    /// A snapshot of `ring` over `shards`, with no range in motion or leaving and no key split.
    pub fn new(epoch: Epoch, shards: Vec<ShardId>, ring: Ring) -> RoutingTable {
        RoutingTable {
            epoch,
            shards,
            ring,
            moving: Vec::new(),
            leaving: Vec::new(),
            splits: Splits::default(),
        }
    }
}
