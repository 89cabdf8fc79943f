//! shardgate: a write router in front of several PostgreSQL shards.
//!
//! Rows are decoded against the declared table schema ([`schema`]) and routed by their partition
//! key over a consistent-hash ring ([`routing`]); the configuration lives in [`config`].

pub mod config;
pub mod routing;
pub mod schema;
pub mod units;
