//! A run second by second: rows acknowledged, errors and ack latency in each second, the phase
//! of a migration running meanwhile, and the rows each shard had committed and when a hot key
//! was split. From it come the figures a migration is judged by (ingest during it against the
//! steady rate before it, and the write pause at its cutover), those of a hot-key split (the
//! shards' skew and ingest before and after it), a CSV file, and a chart ([`chart`]).

pub mod chart;

use hdrhistogram::Histogram;
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::time::Duration;
use tokio::time::Instant;

/// Highest latency a second's histogram tracks, in microseconds (one minute).
const MAX_LATENCY_MICROS: u64 = 60_000_000;

/// Migration phases the timeline marks; any other phase counts as no migration.
pub const MIGRATION_PHASES: [&str; 3] = ["copying", "cleaning", "cancelling"];

/// One second's measurements while the run goes on.
struct Second {
    rows: u64,
    errors: u64,
    latency: Histogram<u64>,
    phase: Option<String>,
    /// Rows each shard had committed since it started, as last read in this second.
    shard_totals: Option<BTreeMap<String, u64>>,
}

impl Second {
    fn new() -> Second {
        Second {
            rows: 0,
            errors: 0,
            latency: Histogram::new_with_bounds(1, MAX_LATENCY_MICROS, 2)
                .expect("histogram bounds are valid"),
            phase: None,
            shard_totals: None,
        }
    }
}

/// The per-second record of a run, shared by its workers (one short lock per request).
pub struct Timeline {
    start: Instant,
    seconds: Mutex<Vec<Second>>,
    split_at: Mutex<Option<Duration>>,
}

/// One second of a finished timeline.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SecondRow {
    /// Seconds since the run started.
    pub second: u64,
    /// Rows acknowledged in it.
    pub rows: u64,
    /// Requests that failed in it.
    pub errors: u64,
    /// Median ack latency of the requests answered in it, in milliseconds.
    pub p50_ms: f64,
    /// Their 99th percentile.
    pub p99_ms: f64,
    /// The longest.
    pub max_ms: f64,
    /// The migration phase seen in it, if one ran.
    pub phase: Option<String>,
}

/// How a migration that ran during the run showed in it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MigrationEffect {
    /// Rows per second in the seconds before the migration began.
    pub steady_rows_per_second: f64,
    /// Rows per second in the seconds it was copying.
    pub copying_rows_per_second: f64,
    /// `copying_rows_per_second / steady_rows_per_second`.
    pub ratio: f64,
    /// The 99th percentile of ack latency before the migration began, in milliseconds.
    pub steady_p99_ms: f64,
    /// The second the cutover was seen in.
    pub cutover_second: Option<u64>,
    /// The longest ack in that second and the next, in milliseconds.
    pub cutover_max_ms: Option<f64>,
    /// `cutover_max_ms - steady_p99_ms`: the longest write pause the cutover caused.
    pub cutover_pause_ms: Option<f64>,
}

impl Timeline {
    /// An empty timeline whose second 0 begins at `start`.
    pub fn new(start: Instant) -> Timeline {
        Timeline {
            start,
            seconds: Mutex::new(Vec::new()),
            split_at: Mutex::new(None),
        }
    }

    /// A request of `rows` rows acknowledged now after `latency`.
    pub fn acknowledged(&self, rows: u64, latency: Duration) {
        let micros = latency.as_micros().clamp(1, u128::from(MAX_LATENCY_MICROS)) as u64;
        self.with_now(|second| {
            second.rows += rows;
            second.latency.saturating_record(micros);
        });
    }

    /// A request that failed now.
    pub fn failed(&self) {
        self.with_now(|second| second.errors += 1);
    }

    /// The migration phase seen now (`None`: no migration runs).
    pub fn phase(&self, phase: Option<&str>) {
        self.with_now(|second| {
            if let Some(phase) = phase {
                second.phase = Some(phase.to_string());
            }
        });
    }

    /// The rows each shard has committed since it started, read now.
    pub fn shard_totals(&self, totals: BTreeMap<String, u64>) {
        self.with_now(|second| second.shard_totals = Some(totals));
    }

    /// A hot key's split seen now; only the first counts.
    pub fn split_seen(&self) {
        let mut split_at = self.split_at.lock().unwrap_or_else(|e| e.into_inner());
        split_at.get_or_insert(self.start.elapsed());
    }

    /// How the hot-key split seen during the run showed: `None` when none was seen, or when
    /// there are not a second before and one settled second after it to compare.
    pub fn hot_key_effect(&self) -> Option<HotKeyEffect> {
        let split_at = (*self.split_at.lock().unwrap_or_else(|e| e.into_inner()))?;
        let seconds = self.seconds.lock().unwrap_or_else(|e| e.into_inner());
        let split = split_at.as_secs() as usize;
        // The first second is ramp-up and the last partial; the split's second and the next
        // are mixed while the new placement takes over.
        let before = 1..split;
        let after = (split + 2)..seconds.len().saturating_sub(1);
        if before.is_empty() || after.is_empty() {
            return None;
        }
        let rate = |part: &[Second]| part.iter().map(|s| s.rows).sum::<u64>() as f64 / part.len() as f64;
        let (rows_before, rows_after) = (rate(&seconds[before.clone()]), rate(&seconds[after.clone()]));
        Some(HotKeyEffect {
            split_after_seconds: split_at.as_secs_f64(),
            rows_per_second_before: rows_before,
            rows_per_second_after: rows_after,
            ratio: if rows_before > 0.0 {
                rows_after / rows_before
            } else {
                0.0
            },
            // The shards' totals are read from the start, before the first row.
            skew_before: skew(&seconds[..split]),
            skew_after: skew(&seconds[after]),
        })
    }

    fn with_now(&self, update: impl FnOnce(&mut Second)) {
        let index = self.start.elapsed().as_secs() as usize;
        let mut seconds = self.seconds.lock().unwrap_or_else(|e| e.into_inner());
        while seconds.len() <= index {
            seconds.push(Second::new());
        }
        update(&mut seconds[index]);
    }

    /// Every second so far, in order.
    pub fn rows(&self) -> Vec<SecondRow> {
        let seconds = self.seconds.lock().unwrap_or_else(|e| e.into_inner());
        let ms = |micros: u64| micros as f64 / 1000.0;
        seconds
            .iter()
            .enumerate()
            .map(|(i, s)| SecondRow {
                second: i as u64,
                rows: s.rows,
                errors: s.errors,
                p50_ms: ms(s.latency.value_at_quantile(0.5)),
                p99_ms: ms(s.latency.value_at_quantile(0.99)),
                max_ms: ms(s.latency.max()),
                phase: s.phase.clone(),
            })
            .collect()
    }

    /// How the migration seen during the run showed: `None` when none was seen, or when it
    /// was running from the first second (no steady part to compare with).
    pub fn migration_effect(&self) -> Option<MigrationEffect> {
        let seconds = self.seconds.lock().unwrap_or_else(|e| e.into_inner());
        let began = seconds.iter().position(|s| s.phase.is_some())?;
        // The first second is ramp-up, and the second the migration began in is mixed.
        let steady = seconds.get(1..began).filter(|s| !s.is_empty())?;
        let mut steady_latency = Second::new().latency;
        for second in steady {
            steady_latency
                .add(&second.latency)
                .expect("histograms share bounds");
        }
        let rate =
            |part: &[&Second]| part.iter().map(|s| s.rows).sum::<u64>() as f64 / part.len().max(1) as f64;
        let steady_rate = rate(&steady.iter().collect::<Vec<_>>());
        let copying: Vec<&Second> = seconds
            .iter()
            .skip(began + 1)
            .filter(|s| s.phase.as_deref() == Some("copying"))
            .collect();
        let copying_rate = rate(&copying);
        let steady_p99_ms = steady_latency.value_at_quantile(0.99) as f64 / 1000.0;
        let cutover = seconds
            .iter()
            .position(|s| s.phase.as_deref() == Some("cleaning"))
            .filter(|&i| i > began);
        let cutover_max_ms = cutover.map(|i| {
            let window = &seconds[i..(i + 2).min(seconds.len())];
            window.iter().map(|s| s.latency.max()).max().unwrap_or(0) as f64 / 1000.0
        });
        Some(MigrationEffect {
            steady_rows_per_second: steady_rate,
            copying_rows_per_second: copying_rate,
            ratio: if steady_rate > 0.0 {
                copying_rate / steady_rate
            } else {
                0.0
            },
            steady_p99_ms,
            cutover_second: cutover.map(|i| i as u64),
            cutover_max_ms,
            cutover_pause_ms: cutover_max_ms.map(|max| (max - steady_p99_ms).max(0.0)),
        })
    }
}

/// How a hot key's split showed in a run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HotKeyEffect {
    /// Seconds from the start of the run to the split being published.
    pub split_after_seconds: f64,
    /// Rows per second acknowledged before the split.
    pub rows_per_second_before: f64,
    /// Rows per second acknowledged once it settled.
    pub rows_per_second_after: f64,
    /// `rows_per_second_after / rows_per_second_before`.
    pub ratio: f64,
    /// The busiest shard's committed rows over the mean of the shards', before the split.
    pub skew_before: Option<f64>,
    /// The same after it.
    pub skew_after: Option<f64>,
}

/// The busiest shard's rows over the mean, between the first and the last reading of the
/// shards' totals in `seconds`; `None` without two readings.
fn skew(seconds: &[Second]) -> Option<f64> {
    let mut readings = seconds.iter().filter_map(|s| s.shard_totals.as_ref());
    let first = readings.next()?;
    let last = readings.next_back()?;
    let rows: Vec<u64> = last
        .iter()
        .map(|(shard, &total)| total.saturating_sub(first.get(shard).copied().unwrap_or(0)))
        .collect();
    crate::hotkeys::skew(&rows, rows.len())
}

/// The rows each shard has committed to `table`, read from shardgate's `/metrics` page.
pub fn committed_per_shard(metrics: &str, table: &str) -> BTreeMap<String, u64> {
    let table_label = format!("table=\"{table}\"");
    metrics
        .lines()
        .filter(|line| line.starts_with("shardgate_rows_committed_total{") && line.contains(&table_label))
        .filter_map(|line| {
            let shard = line.split("shard=\"").nth(1)?.split('"').next()?;
            let value = line.rsplit(' ').next()?.parse::<f64>().ok()?;
            Some((shard.to_string(), value as u64))
        })
        .collect()
}

/// The timeline as CSV, one line per second under a header.
pub fn to_csv(rows: &[SecondRow]) -> String {
    let mut out = String::from("second,rows,errors,p50_ms,p99_ms,max_ms,phase\n");
    for row in rows {
        let _ = writeln!(
            out,
            "{},{},{},{:.2},{:.2},{:.2},{}",
            row.second,
            row.rows,
            row.errors,
            row.p50_ms,
            row.p99_ms,
            row.max_ms,
            row.phase.as_deref().unwrap_or("")
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A timeline built from `(rows, latency ms, phase)` per second, as if recorded live.
    fn timeline(seconds: &[(u64, u64, Option<&str>)]) -> Timeline {
        let timeline = Timeline::new(Instant::now());
        {
            let mut stored = timeline.seconds.lock().unwrap();
            for &(rows, latency_ms, phase) in seconds {
                let mut second = Second::new();
                second.rows = rows;
                second.latency.record(latency_ms * 1000).unwrap();
                second.phase = phase.map(String::from);
                stored.push(second);
            }
        }
        timeline
    }

    #[test]
    fn a_migration_is_judged_against_the_seconds_before_it() {
        let timeline = timeline(&[
            (50, 900, None),
            (100, 10, None),
            (100, 12, None),
            (90, 15, Some("copying")),
            (70, 20, Some("copying")),
            (80, 30, Some("copying")),
            (100, 160, Some("cleaning")),
            (100, 40, Some("cleaning")),
            (100, 10, None),
        ]);
        let effect = timeline.migration_effect().unwrap();
        assert_eq!(
            effect.steady_rows_per_second, 100.0,
            "the ramp-up second is left out"
        );
        assert_eq!(
            effect.copying_rows_per_second, 75.0,
            "the mixed first second is left out"
        );
        assert_eq!(effect.ratio, 0.75);
        assert_eq!(effect.cutover_second, Some(6));
        assert!((effect.steady_p99_ms - 12.0).abs() < 0.1, "{effect:?}");
        assert!((effect.cutover_max_ms.unwrap() - 160.0).abs() < 1.0, "{effect:?}");
        assert!(
            (effect.cutover_pause_ms.unwrap() - 148.0).abs() < 1.0,
            "{effect:?}"
        );
    }

    #[test]
    fn a_split_is_judged_by_the_shards_skew_and_the_rows_before_and_after_it() {
        let timeline = timeline(&[
            (50, 1, None),
            (100, 1, None),
            (100, 1, None),
            (100, 1, None),
            (120, 1, None),
            (200, 1, None),
            (200, 1, None),
            (200, 1, None),
            (10, 1, None),
        ]);
        let totals = |a: u64, b: u64| BTreeMap::from([("s0".to_string(), a), ("s1".to_string(), b)]);
        {
            let mut seconds = timeline.seconds.lock().unwrap();
            seconds[0].shard_totals = Some(totals(100, 100));
            seconds[2].shard_totals = Some(totals(250, 150));
            seconds[5].shard_totals = Some(totals(1_000, 1_000));
            seconds[7].shard_totals = Some(totals(1_220, 1_180));
        }
        *timeline.split_at.lock().unwrap() = Some(Duration::from_millis(3_400));
        let effect = timeline.hot_key_effect().unwrap();
        assert_eq!(effect.split_after_seconds, 3.4);
        assert_eq!(effect.rows_per_second_before, 100.0, "seconds 1 and 2");
        assert_eq!(effect.rows_per_second_after, 200.0, "seconds 5 to 7");
        assert_eq!(effect.ratio, 2.0);
        assert_eq!(effect.skew_before, Some(1.5), "150 and 50 rows");
        assert_eq!(effect.skew_after, Some(1.1), "220 and 180 rows");
        *timeline.split_at.lock().unwrap() = Some(Duration::from_millis(7_100));
        assert_eq!(timeline.hot_key_effect(), None, "no settled second after it");
    }

    #[test]
    fn committed_rows_are_read_per_shard_for_one_table() {
        let page = "# HELP shardgate_rows_committed_total Rows whose batch committed on a shard.\n\
                    shardgate_rows_committed_total{shard=\"s0\",table=\"events\"} 1200\n\
                    shardgate_rows_committed_total{shard=\"s1\",table=\"events\"} 800\n\
                    shardgate_rows_committed_total{shard=\"s1\",table=\"logs\"} 5\n\
                    shardgate_rows_accepted_total{table=\"events\"} 2000\n";
        let found = committed_per_shard(page, "events");
        assert_eq!(
            found,
            BTreeMap::from([("s0".to_string(), 1200), ("s1".to_string(), 800)])
        );
    }

    #[test]
    fn without_a_steady_part_there_is_nothing_to_compare() {
        assert_eq!(timeline(&[(10, 1, None), (10, 1, None)]).migration_effect(), None);
        assert_eq!(
            timeline(&[(10, 1, Some("copying")), (10, 1, Some("cleaning"))]).migration_effect(),
            None
        );
    }

    #[test]
    fn the_csv_has_a_line_per_second() {
        let rows = timeline(&[(5, 2, None), (7, 3, Some("copying"))]).rows();
        let csv = to_csv(&rows);
        let lines: Vec<&str> = csv.lines().collect();
        assert_eq!(lines[0], "second,rows,errors,p50_ms,p99_ms,max_ms,phase");
        let fields: Vec<Vec<&str>> = lines[1..].iter().map(|l| l.split(',').collect()).collect();
        assert_eq!(fields[0][..3], ["0", "5", "0"]);
        assert_eq!(fields[1][..3], ["1", "7", "0"]);
        let p99: f64 = fields[1][4].parse().unwrap();
        assert!(
            (p99 - 3.0).abs() < 0.05,
            "milliseconds, to two significant digits: {p99}"
        );
        assert_eq!((fields[0][6], fields[1][6]), ("", "copying"));
    }
}
