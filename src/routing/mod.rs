//! Where a row goes: canonical key hashing ([`key`]), the token ring ([`ring`]) and the
//! immutable, epoch-stamped routing snapshot every request routes with ([`table`]).
//!
//! Routing knows nothing of HTTP or storage; a row's placement is decided in
//! [`RoutingTable::place_write`] (and a key's shards for reading in
//! [`RoutingTable::shards_for_read`]) and nowhere else ([`placement`]).

pub mod changes;
pub mod key;
pub mod placement;
pub mod ring;
pub mod salt;
pub mod sample;
pub mod splits;
pub mod table;

pub use changes::OwnerChange;
pub use key::{KeyHash, hash_key};
pub use placement::WritePlacement;
pub use ring::{Ring, RingError, ShardIndex, Token, TokenRange};
pub use sample::KeySample;
pub use splits::{KeySplits, RowOrigin, SplitStep, Splits};
pub use table::{Epoch, LeavingRange, MovingRange, RoutingTable, ShardId};

#[cfg(test)]
mod golden;
