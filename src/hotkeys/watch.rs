//! The proxy's hot-key watch: one collector and detector per table, a task that closes a window
//! every `hot_keys.window`, and the list of the keys found, for the admin API and the metrics.

use super::detector::{Candidate, Detector, WindowCollector};
use crate::config::HotKeysConfig;
use crate::metrics::Metrics;
use crate::routing::{KeySample, ShardIndex};
use crate::schema::{TableId, Tables};
use crate::shards::set::Published;
use arc_swap::ArcSwap;
use serde::Serialize;
use std::sync::{Arc, Mutex};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// A key of a table above the thresholds in the last window.
#[derive(Debug, Clone, Serialize)]
pub struct WatchedKey {
    /// The table.
    pub table: String,
    /// The key's hash, its ring position, as 16 hex digits.
    pub key_hash: String,
    /// Rows per second in the last window (at least).
    pub rows_per_second: f64,
    /// Its share of the rows of the shard owning its position.
    pub share: f64,
    /// Consecutive windows above both thresholds.
    pub windows: u32,
    /// Whether it stayed above them for `hot_keys.windows` windows: hot.
    pub hot: bool,
}

/// Every table's detection, shared by the write path and the window task.
pub struct HotKeyWatch {
    settings: HotKeysConfig,
    tables: Arc<Tables>,
    collectors: Vec<WindowCollector>,
    detectors: Vec<Mutex<Detector>>,
    found: ArcSwap<Vec<WatchedKey>>,
}

impl HotKeyWatch {
    /// A watch over every table of `tables`.
    pub fn new(settings: HotKeysConfig, tables: Arc<Tables>) -> HotKeyWatch {
        let collectors = tables
            .iter()
            .map(|_| WindowCollector::new(settings.sketch_counters))
            .collect();
        let detectors = tables
            .iter()
            .map(|_| Mutex::new(Detector::new(settings.clone())))
            .collect();
        HotKeyWatch {
            settings,
            tables,
            collectors,
            detectors,
            found: ArcSwap::from_pointee(Vec::new()),
        }
    }

    /// Counts one accepted request of `table`: its sampled keys and its rows per shard.
    pub fn record(
        &self,
        table: TableId,
        keys: &mut KeySample,
        shard_rows: impl IntoIterator<Item = (ShardIndex, u64)>,
    ) {
        self.collectors[table.0].record(&keys.offered(), shard_rows);
    }

    /// The keys above the thresholds in the last window, hot ones first.
    pub fn found(&self) -> Arc<Vec<WatchedKey>> {
        self.found.load_full()
    }

    /// Closes a window every `hot_keys.window` until `shutdown`, placing keys with the shards
    /// published then.
    pub async fn run(
        self: Arc<Self>,
        shards: Arc<Published>,
        metrics: Arc<Metrics>,
        shutdown: CancellationToken,
    ) {
        let mut ticks = tokio::time::interval(self.settings.window);
        ticks.tick().await;
        let mut opened = Instant::now();
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = ticks.tick() => {}
            }
            let length = opened.elapsed();
            opened = Instant::now();
            let set = shards.load();
            let mut found = Vec::new();
            for (table, schema) in self.tables.iter() {
                let window = self.collectors[table.0].take();
                let candidates = self.detectors[table.0]
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner())
                    .close(&window, length, |key| set.table.place_write(key).owner.0);
                let hot = candidates.iter().filter(|c| c.is_hot(&self.settings)).count();
                metrics
                    .hot_keys
                    .with_label_values(&[&schema.name])
                    .set(hot as i64);
                found.extend(candidates.iter().map(|c| self.describe(&schema.name, c)));
            }
            found.sort_by(|a, b| {
                b.hot
                    .cmp(&a.hot)
                    .then(b.rows_per_second.total_cmp(&a.rows_per_second))
            });
            for key in found
                .iter()
                .filter(|k| k.hot && k.windows == self.settings.windows)
            {
                tracing::info!(
                    table = %key.table,
                    key = %key.key_hash,
                    rows_per_second = key.rows_per_second.round(),
                    share = key.share,
                    "hot key"
                );
            }
            self.found.store(Arc::new(found));
        }
    }

    fn describe(&self, table: &str, candidate: &Candidate) -> WatchedKey {
        WatchedKey {
            table: table.to_string(),
            key_hash: format!("{:016x}", candidate.key.0),
            rows_per_second: candidate.rows_per_second,
            share: candidate.share,
            windows: candidate.streak,
            hot: candidate.is_hot(&self.settings),
        }
    }
}
