//! The write path below HTTP: one request decoded, routed, queued and acknowledged once
//! committed ([`write`]), writes sent with an idempotency key ([`idempotent`], their records
//! kept within their retention by [`pruning`]), the per-shard queues and group commit
//! ([`batcher`]), and the binary COPY transaction on one shard ([`copy`]), tried plainly first
//! for a table with an id ([`optimism`]).

pub mod batcher;
pub mod copy;
pub mod drain;
pub mod idempotent;
pub mod keys;
pub mod optimism;
pub mod pruning;
pub mod write;
