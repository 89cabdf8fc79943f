//! The proxy's hot-key watch: one collector and detector per table, a task that closes a window
//! every `hot_keys.window` and splits each key that became hot (or hotter than its fan-out
//! serves), and the list of the keys found, for the admin API and the metrics.

use super::cap::{KeyCap, KeyOverLimit, LimitedKeys};
use super::detector::{Candidate, Detector, WindowCollector};
use super::split::Splitter;
use crate::catalog::hot_keys::{SplitRequest, SplitSource};
use crate::config::HotKeysConfig;
use crate::metrics::Metrics;
use crate::routing::{KeyHash, KeySample, ShardIndex};
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
    /// The largest fan-out it has been split to; 1 when it is not split.
    pub fanout: u32,
}

/// Every table's detection, shared by the write path and the window task.
pub struct HotKeyWatch {
    settings: HotKeysConfig,
    tables: Arc<Tables>,
    collectors: Vec<WindowCollector>,
    detectors: Vec<Mutex<Detector>>,
    caps: Vec<Option<KeyCap>>,
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
        let caps = tables
            .iter()
            .map(|(_, t)| t.max_key_rows_per_second.map(|limit| KeyCap::new(&t.name, limit)))
            .collect();
        HotKeyWatch {
            settings,
            tables,
            collectors,
            detectors,
            caps,
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

    /// The keys of `table` whose rate is limited now; `None` for a table without a cap.
    pub fn limited(&self, table: TableId) -> Option<Arc<LimitedKeys>> {
        self.caps[table.0].as_ref().map(KeyCap::limited)
    }

    /// Admits a request of `table` with `rows` rows per limited key (of `limited`), or refuses
    /// it naming the key over its limit.
    pub fn admit(
        &self,
        table: TableId,
        limited: &LimitedKeys,
        rows: &[(KeyHash, u64)],
    ) -> Result<(), KeyOverLimit> {
        match &self.caps[table.0] {
            Some(cap) => cap.admit(limited, rows),
            None => Ok(()),
        }
    }

    /// The keys above the thresholds in the last window, hot ones first.
    pub fn found(&self) -> Arc<Vec<WatchedKey>> {
        self.found.load_full()
    }

    /// Closes a window every `hot_keys.window` until `shutdown`, placing keys with the shards
    /// published then, and has `splitter` split every hot key whose rate needs more positions
    /// than it has.
    pub async fn run(
        self: Arc<Self>,
        shards: Arc<Published>,
        metrics: Arc<Metrics>,
        splitter: Splitter,
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
            let mut splits = Vec::new();
            for (table, schema) in self.tables.iter() {
                let window = self.collectors[table.0].take();
                let mut detector = self.detectors[table.0]
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner());
                let candidates = detector.close(&window, length, |key| set.table.owner_of_key(key).0);
                if let Some(cap) = &self.caps[table.0] {
                    let seconds = length.as_secs_f64().max(f64::EPSILON);
                    let rates: Vec<(KeyHash, f64)> = window
                        .keys
                        .heaviest()
                        .iter()
                        .map(|c| (KeyHash(c.key), c.count as f64 / seconds))
                        .collect();
                    cap.update(&rates);
                }
                if let Some(skew) = skew(&window.shard_rows, set.table.shards_for_scatter().len()) {
                    metrics.shard_skew.with_label_values(&[&schema.name]).set(skew);
                }
                let hot: Vec<&Candidate> = candidates.iter().filter(|c| c.is_hot(&self.settings)).collect();
                metrics
                    .hot_keys
                    .with_label_values(&[&schema.name])
                    .set(hot.len() as i64);
                // A stream lives on one shard (its versions are checked there): a hot stream is
                // reported, and capped by max_key_rows_per_second, never split.
                let splittable = schema.stream_version.is_none();
                for candidate in hot.into_iter().filter(|_| splittable) {
                    let fanout = detector.fanout_for(candidate.rows_per_second);
                    if fanout as usize > set.table.salts_for_read(&schema.name, candidate.key).len() {
                        splits.push(SplitRequest {
                            table: schema.name.clone(),
                            key: candidate.key,
                            fanout,
                            key_values: None,
                            source: SplitSource::Detected,
                            rows_per_second: Some(candidate.rows_per_second),
                        });
                    }
                }
                found.extend(candidates.iter().map(|c| {
                    let fanout = set.table.salts_for_read(&schema.name, c.key).len() as u32;
                    self.describe(&schema.name, c, fanout)
                }));
            }
            drop(set);
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
            for split in splits {
                if let Err(e) = splitter.split(split).await {
                    tracing::warn!(error = %e, "cannot split a hot key; trying again after the next window");
                }
            }
        }
    }

    fn describe(&self, table: &str, candidate: &Candidate, fanout: u32) -> WatchedKey {
        WatchedKey {
            table: table.to_string(),
            key_hash: format!("{:016x}", candidate.key.0),
            rows_per_second: candidate.rows_per_second,
            share: candidate.share,
            windows: candidate.streak,
            hot: candidate.is_hot(&self.settings),
            fanout,
        }
    }
}

/// The busiest shard's rows over the mean of `shards` shards (those a shard without rows counts
/// among); `None` without rows.
pub fn skew(shard_rows: &[u64], shards: usize) -> Option<f64> {
    let total: u64 = shard_rows.iter().sum();
    let busiest = shard_rows.iter().copied().max()?;
    if total == 0 {
        return None;
    }
    let mean = total as f64 / shards.max(shard_rows.len()) as f64;
    Some(busiest as f64 / mean)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn skew_is_the_busiest_shard_over_the_mean_counting_idle_shards() {
        assert_eq!(skew(&[100, 100, 100, 100], 4), Some(1.0));
        assert_eq!(
            skew(&[300, 100], 4),
            Some(3.0),
            "two idle shards count in the mean"
        );
        assert_eq!(skew(&[], 4), None);
        assert_eq!(skew(&[0, 0], 2), None);
    }
}
