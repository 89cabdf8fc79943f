//! Finding hot keys, one table at a time, window by window. Requests count their own rows per
//! key and per shard and hand the counts to a [`WindowCollector`]; at the end of each window the
//! collector's [`WindowCounts`] go to the table's [`Detector`], which keeps every candidate's
//! streak of windows above both thresholds (a share of its shard's rows and an absolute rate)
//! and says which keys became hot.

use super::sketch::{Counter, SpaceSaving};
use crate::config::HotKeysConfig;
use crate::routing::{KeyHash, ShardIndex};
use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

/// Independent parts of a collector: a request locks one, so no lock is shared by all.
const STRIPES: usize = 8;

/// The rows of one window of one table: the heaviest keys and the rows per shard.
#[derive(Debug, Clone)]
pub struct WindowCounts {
    /// The heaviest keys by rows.
    pub keys: SpaceSaving,
    /// Rows per shard index.
    pub shard_rows: Vec<u64>,
}

impl WindowCounts {
    fn new(counters: usize) -> WindowCounts {
        WindowCounts {
            keys: SpaceSaving::new(counters),
            shard_rows: Vec::new(),
        }
    }

    /// Counts one request's rows: `(key hash, rows)`, and `(shard, rows)`.
    pub fn add(&mut self, keys: &[(u64, u64)], shard_rows: impl IntoIterator<Item = (ShardIndex, u64)>) {
        for &(key, rows) in keys {
            self.keys.offer(key, rows);
        }
        for (ShardIndex(shard), rows) in shard_rows {
            if self.shard_rows.len() <= shard {
                self.shard_rows.resize(shard + 1, 0);
            }
            self.shard_rows[shard] += rows;
        }
    }

    fn merge(&mut self, other: &WindowCounts) {
        let shard_rows = other.shard_rows.iter().enumerate();
        self.add(&[], shard_rows.map(|(shard, &rows)| (ShardIndex(shard), rows)));
        self.keys.merge(&other.keys);
    }
}

/// Where the requests of one table leave their counts during a window.
pub struct WindowCollector {
    counters: usize,
    stripes: Vec<Mutex<WindowCounts>>,
    next: AtomicUsize,
}

impl WindowCollector {
    /// A collector whose sketches have `counters` counters each.
    pub fn new(counters: usize) -> WindowCollector {
        WindowCollector {
            counters,
            stripes: (0..STRIPES)
                .map(|_| Mutex::new(WindowCounts::new(counters)))
                .collect(),
            next: AtomicUsize::new(0),
        }
    }

    /// Adds one request's counts, `(key hash, rows)` and `(shard, rows)`, to one stripe.
    pub fn record(&self, keys: &[(u64, u64)], shard_rows: impl IntoIterator<Item = (ShardIndex, u64)>) {
        let stripe = self.next.fetch_add(1, Ordering::Relaxed) % STRIPES;
        lock(&self.stripes[stripe]).add(keys, shard_rows);
    }

    /// Ends the window: every stripe's counts, merged, and the stripes empty again.
    pub fn take(&self) -> WindowCounts {
        let mut window = WindowCounts::new(self.counters);
        for stripe in &self.stripes {
            let taken = std::mem::replace(&mut *lock(stripe), WindowCounts::new(self.counters));
            window.merge(&taken);
        }
        window
    }
}

fn lock(stripe: &Mutex<WindowCounts>) -> std::sync::MutexGuard<'_, WindowCounts> {
    stripe.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A key above both thresholds in the window just closed.
#[derive(Debug, Clone, PartialEq)]
pub struct Candidate {
    /// The key's hash (its unsalted ring position).
    pub key: KeyHash,
    /// Rows it certainly had in the window.
    pub rows: u64,
    /// Those rows per second.
    pub rows_per_second: f64,
    /// Its share of the rows of the shard owning its position.
    pub share: f64,
    /// Consecutive windows it has been above both thresholds, this one included.
    pub streak: u32,
}

impl Candidate {
    /// Whether the streak is long enough for the key to be hot.
    pub fn is_hot(&self, settings: &HotKeysConfig) -> bool {
        self.streak >= settings.windows
    }
}

/// The streaks of one table's candidates across windows.
pub struct Detector {
    settings: HotKeysConfig,
    streaks: HashMap<u64, u32>,
}

impl Detector {
    /// A detector with `settings`' thresholds.
    pub fn new(settings: HotKeysConfig) -> Detector {
        Detector {
            settings,
            streaks: HashMap::new(),
        }
    }

    /// Closes a window of `length` whose counts are `window`, the shard of a position given by
    /// `owner`: the keys above both thresholds, heaviest first, each with its streak. A key
    /// below them loses its streak.
    pub fn close(
        &mut self,
        window: &WindowCounts,
        length: Duration,
        owner: impl Fn(KeyHash) -> usize,
    ) -> Vec<Candidate> {
        let seconds = length.as_secs_f64().max(f64::EPSILON);
        let above: Vec<(Counter, f64, f64)> = window
            .keys
            .heaviest()
            .into_iter()
            .filter_map(|counter| {
                let shard_rows = window.shard_rows.get(owner(KeyHash(counter.key))).copied()?;
                let rows = counter.guaranteed();
                let share = rows as f64 / shard_rows.max(1) as f64;
                let rate = rows as f64 / seconds;
                (share >= self.settings.min_share && rate >= self.settings.min_rows_per_second as f64)
                    .then_some((counter, rate, share))
            })
            .collect();
        let previous = std::mem::take(&mut self.streaks);
        above
            .into_iter()
            .map(|(counter, rows_per_second, share)| {
                let streak = previous.get(&counter.key).copied().unwrap_or(0) + 1;
                self.streaks.insert(counter.key, streak);
                Candidate {
                    key: KeyHash(counter.key),
                    rows: counter.guaranteed(),
                    rows_per_second,
                    share,
                    streak,
                }
            })
            .collect()
    }

    /// The fan-out a key at `rows_per_second` needs: enough positions for each to take at most
    /// `rows_per_position` rows per second, at least 2 and at most `max_fanout`.
    pub fn fanout_for(&self, rows_per_second: f64) -> u32 {
        let needed = (rows_per_second / self.settings.rows_per_position as f64).ceil();
        (needed as u32).clamp(2, self.settings.max_fanout)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> HotKeysConfig {
        HotKeysConfig {
            min_share: 0.2,
            min_rows_per_second: 1_000,
            windows: 3,
            max_fanout: 8,
            rows_per_position: 10_000,
            ..HotKeysConfig::default()
        }
    }

    /// A window of one second: key 42 with `heavy` rows, 200 other keys with 10 each, the
    /// rows split over two shards by key parity.
    fn window(collector: &WindowCollector, heavy: u64) {
        let mut keys: Vec<(u64, u64)> = (1..=200).map(|k| (k * 2 + 1, 10)).collect();
        keys.push((42, heavy));
        collector.record(&keys, [(ShardIndex(0), heavy), (ShardIndex(1), 2_000)]);
    }

    fn owner(key: KeyHash) -> usize {
        (key.0 % 2) as usize
    }

    #[test]
    fn a_key_above_both_thresholds_for_enough_windows_is_hot() {
        let collector = WindowCollector::new(32);
        let mut detector = Detector::new(settings());
        for expected in 1..=3 {
            window(&collector, 5_000);
            let found = detector.close(&collector.take(), Duration::from_secs(1), owner);
            assert_eq!(found.len(), 1, "{found:?}");
            let hot = &found[0];
            assert_eq!((hot.key, hot.rows, hot.streak), (KeyHash(42), 5_000, expected));
            assert_eq!(hot.share, 1.0, "all of shard 0's rows");
            assert_eq!(hot.is_hot(&settings()), expected == 3);
        }
    }

    #[test]
    fn a_window_below_a_threshold_breaks_the_streak() {
        let collector = WindowCollector::new(32);
        let mut detector = Detector::new(settings());
        window(&collector, 5_000);
        detector.close(&collector.take(), Duration::from_secs(1), owner);
        window(&collector, 500);
        let quiet = detector.close(&collector.take(), Duration::from_secs(1), owner);
        assert!(quiet.is_empty(), "500 rows/s is below the rate: {quiet:?}");
        window(&collector, 5_000);
        let again = detector.close(&collector.take(), Duration::from_secs(1), owner);
        assert_eq!(again[0].streak, 1);
    }

    #[test]
    fn a_heavy_key_of_a_busy_shard_is_not_hot_by_rate_alone() {
        let collector = WindowCollector::new(32);
        let mut detector = Detector::new(settings());
        let keys = [(42u64, 5_000u64)];
        collector.record(&keys, [(ShardIndex(0), 100_000)]);
        let found = detector.close(&collector.take(), Duration::from_secs(1), owner);
        assert!(found.is_empty(), "5% of its shard: {found:?}");
    }

    #[test]
    fn requests_in_any_stripe_count_in_the_window() {
        let collector = WindowCollector::new(32);
        for _ in 0..(STRIPES * 3) {
            collector.record(&[(42, 100)], [(ShardIndex(0), 100), (ShardIndex(1), 0)]);
        }
        let counts = collector.take();
        assert_eq!(counts.keys.heaviest()[0].count, 100 * STRIPES as u64 * 3);
        assert_eq!(counts.shard_rows, [100 * STRIPES as u64 * 3, 0]);
        assert_eq!(collector.take().keys.total(), 0, "the next window starts empty");
    }

    #[test]
    fn fanout_grows_with_the_rate_within_its_bounds() {
        let detector = Detector::new(settings());
        assert_eq!(detector.fanout_for(5_000.0), 2, "at least 2");
        assert_eq!(detector.fanout_for(35_000.0), 4);
        assert_eq!(detector.fanout_for(1e9), 8, "at most max_fanout");
    }
}
