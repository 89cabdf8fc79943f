//! What both front ends serve from: one handle over the declared tables, the write path,
//! reporting queries, the shard set and its administration. The HTTP API and the Postgres
//! listener each hold it and add only what is theirs (body limits, the COPY chunking), so
//! neither builds a part of the write or query path of its own.

use crate::access::Access;
use crate::config::Config;
use crate::hotkeys::{HotKeyWatch, Splitter};
use crate::ingest::write::Writes;
use crate::metrics::Metrics;
use crate::query::QueryEngine;
use crate::reshard::Resharder;
use crate::schema::{TableId, TableSchema, Tables};
use crate::shards::set::{Published, ShardSet};
use std::sync::Arc;

/// The administration of the shard set: migrations and hot-key splits.
pub struct Administration {
    /// Starts and runs migrations of the shard set.
    pub resharder: Arc<Resharder>,
    /// The keys found hot, or nearly.
    pub hot_keys: Arc<HotKeyWatch>,
    /// Records and publishes hot-key splits asked for by hand.
    pub splitter: Splitter,
}

/// The services of one running shardgate, built once at start-up.
pub struct Gateway {
    config: Arc<Config>,
    tables: Arc<Tables>,
    writes: Arc<Writes>,
    shards: Arc<Published>,
    metrics: Arc<Metrics>,
    queries: QueryEngine,
    administration: Administration,
    access: Arc<Access>,
}

impl Gateway {
    /// The handle over these services.
    pub fn new(
        config: Arc<Config>,
        tables: Arc<Tables>,
        writes: Arc<Writes>,
        shards: Arc<Published>,
        metrics: Arc<Metrics>,
        queries: QueryEngine,
        administration: Administration,
    ) -> Gateway {
        let access = Arc::new(Access::new(&config.users));
        Gateway {
            config,
            tables,
            writes,
            shards,
            metrics,
            queries,
            administration,
            access,
        }
    }

    /// The configured users, their credentials and grants.
    pub fn access(&self) -> &Arc<Access> {
        &self.access
    }

    /// The validated configuration.
    pub fn config(&self) -> &Arc<Config> {
        &self.config
    }

    /// The declared tables.
    pub fn tables(&self) -> &Arc<Tables> {
        &self.tables
    }

    /// A declared table by the name a client gave.
    pub fn table(&self, name: &str) -> Option<(TableId, &Arc<TableSchema>)> {
        self.tables.lookup(name)
    }

    /// The write path: decode, route, queue or spool, and wait for the acknowledgement.
    pub fn writes(&self) -> &Arc<Writes> {
        &self.writes
    }

    /// The shard set as published now: the routing snapshot and its shards' queues.
    pub fn shard_set(&self) -> Arc<ShardSet> {
        self.shards.load()
    }

    /// Prometheus metrics.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Runs reporting queries.
    pub fn queries(&self) -> &QueryEngine {
        &self.queries
    }

    /// Starts and runs migrations of the shard set.
    pub fn resharder(&self) -> &Arc<Resharder> {
        &self.administration.resharder
    }

    /// The keys found hot, or nearly.
    pub fn hot_keys(&self) -> &HotKeyWatch {
        &self.administration.hot_keys
    }

    /// Records and publishes hot-key splits asked for by hand.
    pub fn splitter(&self) -> &Splitter {
        &self.administration.splitter
    }
}
