//! The write path below HTTP: one request decoded, routed, queued and acknowledged once
//! committed ([`write`]), writes sent with an idempotency key ([`idempotent`]), the per-shard queues and group commit ([`batcher`]), and the binary
//! COPY transaction on one shard ([`copy`]).

pub mod batcher;
pub mod copy;
pub mod drain;
pub mod idempotent;
pub mod keys;
pub mod write;
