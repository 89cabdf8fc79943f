//! Where a row goes: canonical key hashing ([`key`]), the token ring ([`ring`]) and the
//! immutable, epoch-stamped routing snapshot every request routes with ([`table`]).
//!
//! Routing knows nothing of HTTP or storage; a row's shard is decided in
//! [`RoutingTable::shard_for`] and nowhere else.

pub mod key;
pub mod ring;
pub mod table;

pub use key::{KeyHash, hash_key};
pub use ring::{Ring, RingError, ShardIndex, Token, TokenRange};
pub use table::{Epoch, Routing, RoutingTable, ShardId};

#[cfg(test)]
mod golden;
