//! shardgate: a write router in front of several PostgreSQL shards.
//!
//! Rows arrive over HTTP ([`http`]) or the PostgreSQL protocol ([`postgres`]), are decoded against the declared table schema
//! ([`schema`]), routed by their partition key over a consistent-hash ring ([`routing`]), batched
//! per shard ([`ingest::batcher`]) and written with binary COPY ([`ingest::copy`]). Placement is
//! stored durably in a catalog ([`catalog`]); each shard guards its ownership with a fence table
//! ([`shards`]). [`server`] assembles the parts; [`devcluster`] runs local Postgres for
//! development and tests.
//!
//! `docs/architecture.md` draws the layers, the path of a write and of a query, and lists the
//! invariants that comments throughout the code cite as "invariant N".

#![warn(missing_docs)]

pub mod access;
pub mod bench;
pub mod catalog;
pub mod config;
pub mod devcluster;
pub mod gateway;
pub mod hotkeys;
pub mod http;
pub mod ingest;
pub mod metrics;
pub mod pg;
pub mod pgtype;
pub mod postgres;
pub mod query;
pub mod reshard;
pub mod routing;
pub mod schema;
pub mod server;
pub mod shards;
pub mod spool;
pub mod tls;
pub mod units;
