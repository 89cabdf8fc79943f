//! What every handler shares: built once at start-up, then only read.

use crate::config::Config;
use crate::ingest::write::Writes;
use crate::metrics::Metrics;
use crate::query::QueryEngine;
use crate::reshard::Resharder;
use crate::schema::Tables;
use crate::shards::set::Published;
use std::sync::Arc;
use std::time::Duration;

/// Per-request limits from `[server]` and `[queue]`.
#[derive(Debug, Clone)]
pub struct RequestLimits {
    /// Largest body accepted.
    pub max_body_size: usize,
    /// `Retry-After` of 429 and 503 answers.
    pub retry_after: Duration,
}

/// State shared by every handler; built once in [`crate::server::start`].
pub struct AppState {
    /// The validated configuration.
    pub config: Arc<Config>,
    /// Declared tables.
    pub tables: Arc<Tables>,
    /// The write path: decode, route, queue, wait for the commits.
    pub writes: Arc<Writes>,
    /// The current routing snapshot with its shards.
    pub shards: Arc<Published>,
    /// Request limits.
    pub limits: RequestLimits,
    /// Prometheus metrics.
    pub metrics: Arc<Metrics>,
    /// Bytes of request bodies that may be read and decoded at once.
    pub body_budget: tokio::sync::Semaphore,
    /// Runs reporting queries.
    pub queries: QueryEngine,
    /// Starts and runs migrations of the shard set.
    pub resharder: Arc<Resharder>,
    /// The keys found hot, or nearly.
    pub hot_keys: Arc<crate::hotkeys::HotKeyWatch>,
    /// Records and publishes hot-key splits asked for by hand.
    pub splitter: crate::hotkeys::Splitter,
}
