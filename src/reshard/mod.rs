//! Resharding: changing the shard set while writes flow (see `docs/architecture.md`). Today it
//! checks a database that is to join ([`candidate`]) and plans what adding it would move
//! ([`plan`]): the ranges that change owner and the rows they hold.

pub mod candidate;
pub mod plan;
