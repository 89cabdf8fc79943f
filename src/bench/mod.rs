//! The pieces of `shardgate bench`: generated rows ([`workload`]), the three write targets
//! ([`targets`]), the measurements ([`report`], and second by second [`timeline`]) and the
//! watch of the process under test ([`process`]). The command itself lives in the CLI.

pub mod listener;
pub mod process;
pub mod report;
pub mod targets;
pub mod timeline;
pub mod workload;
