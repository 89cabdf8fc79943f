//! The routing snapshot and its lock-free holder.
//!
//! A [`RoutingTable`] never changes once built. [`Routing`] publishes a new one through arc-swap;
//! a request loads one snapshot and routes all of its rows with it (invariant 3). Publishing
//! requires a strictly higher epoch, so a stale table can never replace a newer one.

use super::placement::MovingRange;
use super::ring::Ring;
use arc_swap::ArcSwap;
use std::fmt;
use std::sync::Arc;

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
}

impl RoutingTable {
    /// A snapshot of `ring` over `shards`, with no range in motion.
    pub fn new(epoch: Epoch, shards: Vec<ShardId>, ring: Ring) -> RoutingTable {
        RoutingTable {
            epoch,
            shards,
            ring,
            moving: Vec::new(),
        }
    }
}

/// A newer routing table was expected than the one offered.
#[derive(Debug, thiserror::Error)]
#[error("routing epoch {offered} is not newer than the current epoch {current}")]
pub struct StaleEpoch {
    /// Epoch of the table being published.
    pub offered: Epoch,
    /// Epoch already published.
    pub current: Epoch,
}

/// Holder of the current routing table, read without locks on the hot path.
pub struct Routing {
    current: ArcSwap<RoutingTable>,
}

impl Routing {
    /// Starts with `table` as the current snapshot.
    pub fn new(table: RoutingTable) -> Routing {
        Routing {
            current: ArcSwap::from_pointee(table),
        }
    }

    /// The current snapshot; hold it for the whole request.
    pub fn load(&self) -> Arc<RoutingTable> {
        self.current.load_full()
    }

    /// Replaces the snapshot with a newer one.
    pub fn publish(&self, table: RoutingTable) -> Result<(), StaleEpoch> {
        let current = self.current.load().epoch;
        if table.epoch <= current {
            return Err(StaleEpoch {
                offered: table.epoch,
                current,
            });
        }
        self.current.store(Arc::new(table));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(epoch: i64) -> RoutingTable {
        RoutingTable::new(
            Epoch(epoch),
            vec![ShardId("s0".into())],
            Ring::build([("s0", 1)], 4).unwrap(),
        )
    }

    #[test]
    fn publishing_needs_a_higher_epoch() {
        let routing = Routing::new(table(3));
        let held = routing.load();
        assert!(routing.publish(table(3)).is_err());
        assert!(routing.publish(table(2)).is_err());
        routing.publish(table(4)).unwrap();
        assert_eq!(routing.load().epoch, Epoch(4));
        assert_eq!(
            held.epoch,
            Epoch(3),
            "a loaded snapshot never changes under its holder"
        );
    }
}
