//! The pieces of `shardgate bench`: generated rows ([`workload`]), the three write targets
//! ([`targets`]) and the measurements ([`report`]). The command itself lives in the CLI.

pub mod report;
pub mod targets;
pub mod workload;
