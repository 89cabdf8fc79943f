//! The write path after decoding: per-shard queues and group commit ([`batcher`]), the binary
//! COPY transaction on one shard ([`copy`]), and the HTTP handlers that feed them ([`api`],
//! with compressed bodies read by [`encoding`]).

pub mod api;
pub mod batcher;
pub mod copy;
pub mod encoding;
