//! What a benchmark run measured: throughput, an HDR histogram of ack latency, errors by kind,
//! and optionally the router's peak memory and a row count on the shards.

use super::process::ProcessUsage;
use super::timeline::{HotKeyEffect, MigrationEffect, Timeline};
use hdrhistogram::Histogram;
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

/// Highest latency the histogram tracks, in microseconds (one minute).
const MAX_LATENCY_MICROS: u64 = 60_000_000;

/// One worker's measurements; merged at the end.
pub struct Recorder {
    latency: Histogram<u64>,
    rows: u64,
    requests: u64,
    errors: BTreeMap<String, u64>,
    timeline: Option<Arc<Timeline>>,
}

impl Recorder {
    /// An empty recorder.
    pub fn new() -> Recorder {
        Recorder {
            latency: Histogram::new_with_bounds(1, MAX_LATENCY_MICROS, 3)
                .expect("histogram bounds are valid"),
            rows: 0,
            requests: 0,
            errors: BTreeMap::new(),
            timeline: None,
        }
    }

    /// An empty recorder that also notes every answer in `timeline`, if given.
    pub fn with_timeline(timeline: Option<Arc<Timeline>>) -> Recorder {
        Recorder {
            timeline,
            ..Recorder::new()
        }
    }

    /// A request (or batch, or row) of `rows` rows acknowledged after `latency`.
    pub fn acknowledged(&mut self, rows: u64, latency: Duration) {
        self.rows += rows;
        self.requests += 1;
        self.latency
            .saturating_record(latency.as_micros().clamp(1, u128::from(MAX_LATENCY_MICROS)) as u64);
        if let Some(timeline) = &self.timeline {
            timeline.acknowledged(rows, latency);
        }
    }

    /// A request that failed with `kind` (an HTTP status or an error class).
    pub fn failed(&mut self, kind: &str) {
        self.requests += 1;
        *self.errors.entry(kind.to_string()).or_default() += 1;
        if let Some(timeline) = &self.timeline {
            timeline.failed();
        }
    }

    /// Adds another worker's measurements.
    pub fn merge(&mut self, other: &Recorder) {
        self.latency.add(&other.latency).expect("histograms share bounds");
        self.rows += other.rows;
        self.requests += other.requests;
        for (kind, count) in &other.errors {
            *self.errors.entry(kind.clone()).or_default() += count;
        }
    }

    /// Rows acknowledged so far.
    pub fn rows(&self) -> u64 {
        self.rows
    }
}

impl Default for Recorder {
    fn default() -> Self {
        Self::new()
    }
}

/// Latency percentiles in milliseconds.
#[derive(Debug, Serialize)]
pub struct LatencySummary {
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    pub p999: f64,
    /// Largest.
    pub max: f64,
}

/// Rows counted on the shards before and after the run.
#[derive(Debug, Serialize)]
pub struct Verification {
    /// Rows the run added to the shards.
    pub rows_added: i64,
    /// Rows the run had acknowledged.
    pub rows_acknowledged: u64,
}

/// How long the spool took to write every spooled row of the run to the shards.
#[derive(Debug, Serialize)]
pub struct SpoolDrain {
    /// Seconds from the start of the run until the last spooled row was written.
    pub drained_after_seconds: f64,
    /// Seconds after the last `202` until then.
    pub backlog_seconds: f64,
    /// Rows written to the shards per second, over the run and its backlog.
    pub drained_rows_per_second: f64,
}

/// The outcome of a run.
#[derive(Debug, Serialize)]
pub struct Report {
    /// `shardgate`, `direct` or `insert`.
    pub target: String,
    /// What one latency sample covers.
    pub latency_of: String,
    /// Rows acknowledged.
    pub rows: u64,
    /// Requests (batches for `direct`, statements for `insert`) sent.
    pub requests: u64,
    /// Wall time of the run.
    pub elapsed_seconds: f64,
    /// Acknowledged rows per second.
    pub rows_per_second: f64,
    /// Requests per second.
    pub requests_per_second: f64,
    /// Ack latency.
    pub latency_ms: LatencySummary,
    /// Failed requests by kind.
    pub errors: BTreeMap<String, u64>,
    /// Peak resident memory of the watched process, in MiB.
    pub peak_rss_mib: Option<f64>,
    /// User + system CPU seconds the watched process spent during the run.
    pub cpu_seconds: Option<f64>,
    /// The watched process's CPU time per acknowledged row, in microseconds.
    pub cpu_us_per_row: Option<f64>,
    /// Row count check on the shards.
    pub verification: Option<Verification>,
    /// How a migration that ran meanwhile showed, when the run kept a timeline.
    pub migration: Option<MigrationEffect>,
    /// How a hot key's split showed, when the run sent one (`--hot-share`).
    pub hot_key: Option<HotKeyEffect>,
    /// For a run that asked for the spool, how long the spool took to write its rows.
    pub spool: Option<SpoolDrain>,
}

impl Report {
    /// Summarises a merged recorder.
    pub fn new(target: &str, latency_of: &str, recorder: &Recorder, elapsed: Duration) -> Report {
        let ms = |micros: u64| micros as f64 / 1000.0;
        let quantile = |q: f64| ms(recorder.latency.value_at_quantile(q));
        let seconds = elapsed.as_secs_f64().max(1e-9);
        Report {
            target: target.to_string(),
            latency_of: latency_of.to_string(),
            rows: recorder.rows,
            requests: recorder.requests,
            elapsed_seconds: seconds,
            rows_per_second: recorder.rows as f64 / seconds,
            requests_per_second: recorder.requests as f64 / seconds,
            latency_ms: LatencySummary {
                p50: quantile(0.5),
                p90: quantile(0.9),
                p99: quantile(0.99),
                p999: quantile(0.999),
                max: ms(recorder.latency.max()),
            },
            errors: recorder.errors.clone(),
            peak_rss_mib: None,
            cpu_seconds: None,
            cpu_us_per_row: None,
            verification: None,
            migration: None,
            hot_key: None,
            spool: None,
        }
    }

    /// Records what the watched process used: its peak memory, and its CPU time in all and per
    /// acknowledged row.
    pub fn watched(&mut self, usage: ProcessUsage) {
        self.peak_rss_mib = Some(usage.peak_rss_mib);
        self.cpu_seconds = usage.cpu_seconds;
        self.cpu_us_per_row = usage
            .cpu_seconds
            .filter(|_| self.rows > 0)
            .map(|seconds| seconds * 1e6 / self.rows as f64);
    }

    /// Why the run did not measure what it was asked to, if it did not: every request failed
    /// (nothing was acknowledged), or the shards gained another number of rows than was
    /// acknowledged.
    pub fn failure(&self) -> Option<String> {
        if self.rows == 0 && !self.errors.is_empty() {
            let failed: u64 = self.errors.values().sum();
            return Some(format!(
                "every request failed ({failed}: {}); is the target running and reachable?",
                self.error_summary()
            ));
        }
        let v = self.verification.as_ref()?;
        (v.rows_added != v.rows_acknowledged as i64).then(|| {
            format!(
                "the shards gained {} rows but {} were acknowledged",
                v.rows_added, v.rows_acknowledged
            )
        })
    }

    fn error_summary(&self) -> String {
        if self.errors.is_empty() {
            return "none".to_string();
        }
        self.errors
            .iter()
            .map(|(k, v)| format!("{k}: {v}"))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// The human-readable summary.
    pub fn render(&self) -> String {
        let l = &self.latency_ms;
        let mut out = format!(
            "target        {}\nrows          {} in {:.1} s\nrows/s        {:.0}\nrequests/s    {:.1}\n\
             latency (ms)  p50 {:.2}  p90 {:.2}  p99 {:.2}  p99.9 {:.2}  max {:.2}   (per {})\n",
            self.target,
            self.rows,
            self.elapsed_seconds,
            self.rows_per_second,
            self.requests_per_second,
            l.p50,
            l.p90,
            l.p99,
            l.p999,
            l.max,
            self.latency_of,
        );
        out.push_str(&format!("errors        {}\n", self.error_summary()));
        if let Some(rss) = self.peak_rss_mib {
            out.push_str(&format!("peak RSS      {rss:.1} MiB\n"));
        }
        if let (Some(seconds), Some(per_row)) = (self.cpu_seconds, self.cpu_us_per_row) {
            out.push_str(&format!(
                "watched CPU   {seconds:.2} s, {per_row:.2} µs per row\n"
            ));
        }
        if let Some(v) = &self.verification {
            out.push_str(&format!(
                "on shards     +{} rows ({} acknowledged)\n",
                v.rows_added, v.rows_acknowledged
            ));
        }
        if let Some(m) = &self.migration {
            out.push_str(&format!(
                "migration     {:.0} rows/s while copying, {:.2}x the {:.0} rows/s before it (p99 {:.1} ms)\n",
                m.copying_rows_per_second, m.ratio, m.steady_rows_per_second, m.steady_p99_ms
            ));
            match (m.cutover_second, m.cutover_max_ms, m.cutover_pause_ms) {
                (Some(second), Some(max), Some(pause)) => out.push_str(&format!(
                    "cutover       in second {second}: longest ack {max:.1} ms, {pause:.1} ms over the steady p99\n"
                )),
                _ => out.push_str("cutover       not seen during the run\n"),
            }
        }
        if let Some(h) = &self.hot_key {
            let skew = |s: Option<f64>| s.map_or("unknown".to_string(), |s| format!("{s:.2}"));
            out.push_str(&format!(
                "hot key       split {:.1} s after the start; {:.0} rows/s after, {:.2}x the {:.0} before; \
                 shard skew {} before, {} after\n",
                h.split_after_seconds,
                h.rows_per_second_after,
                h.ratio,
                h.rows_per_second_before,
                skew(h.skew_before),
                skew(h.skew_after)
            ));
        }
        if let Some(d) = &self.spool {
            out.push_str(&format!(
                "spool drain   every row written {:.1} s after the start ({:.1} s after the last 202), {:.0} rows/s\n",
                d.drained_after_seconds, d.backlog_seconds, d.drained_rows_per_second
            ));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merged_recorders_give_exact_counts_and_ordered_percentiles() {
        let mut a = Recorder::new();
        let mut b = Recorder::new();
        for i in 1..=100u64 {
            a.acknowledged(10, Duration::from_millis(i));
        }
        b.acknowledged(5, Duration::from_secs(2));
        b.failed("429");
        b.failed("429");
        a.merge(&b);
        let report = Report::new("shardgate", "request", &a, Duration::from_secs(2));
        assert_eq!(report.rows, 1005);
        assert_eq!(report.requests, 103);
        assert_eq!(report.errors["429"], 2);
        assert!((report.rows_per_second - 502.5).abs() < 1e-9);
        let l = &report.latency_ms;
        assert!((50.0..=51.1).contains(&l.p50), "51st of 101 samples: {l:?}");
        assert!(l.p50 <= l.p90 && l.p90 <= l.p99 && l.p99 <= l.max);
        assert!((l.max - 2000.0).abs() < 2.0, "{l:?}");
        assert!(report.render().contains("errors        429: 2"));
        assert_eq!(report.failure(), None, "some requests were acknowledged");
        let mut watched = report;
        watched.watched(ProcessUsage {
            peak_rss_mib: 40.0,
            cpu_seconds: Some(0.5),
        });
        assert!((watched.cpu_us_per_row.unwrap() - 500_000.0 / 1005.0).abs() < 1e-9);
        assert!(
            watched
                .render()
                .contains("watched CPU   0.50 s, 497.51 µs per row")
        );
    }

    #[test]
    fn a_run_without_any_acknowledged_row_or_with_rows_missing_is_a_failure() {
        let mut recorder = Recorder::new();
        recorder.failed("connect");
        recorder.failed("connect");
        let report = Report::new("shardgate", "request", &recorder, Duration::from_secs(1));
        assert_eq!(
            report.failure().as_deref(),
            Some("every request failed (2: connect: 2); is the target running and reachable?")
        );
        let mut recorder = Recorder::new();
        recorder.acknowledged(10, Duration::from_millis(1));
        let mut report = Report::new("shardgate", "request", &recorder, Duration::from_secs(1));
        report.verification = Some(Verification {
            rows_added: 9,
            rows_acknowledged: 10,
        });
        assert_eq!(
            report.failure().as_deref(),
            Some("the shards gained 9 rows but 10 were acknowledged")
        );
    }
}
