//! The integration tests: one binary, so one link step and one set of shared local PostgreSQL
//! clusters for every area (a test that stops a cluster starts a private one).

mod access;
mod admin;
mod bench;
mod catalog;
mod common;
mod fence;
mod hot_keys;
mod idempotency;
mod lifecycle;
mod listener_tls;
mod moves;
mod postgres;
mod postgres_keys;
mod postgres_reads;
mod proxy;
mod query;
mod reshard;
mod slow_clients;
mod spool;
mod spooled_writes;
mod status_page;
mod streams;
mod tls;
mod webdriver;
mod write_path;
