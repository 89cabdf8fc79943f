//! Prometheus metrics, served at `/metrics` on the admin listener.
//!
//! One [`Metrics`] value per server, owning its own registry (so servers in one process, as in
//! the tests, never mix their numbers). Counters are updated per request and per batch, never
//! per row. Gauges of queue depth, shard health and routing epoch are read at scrape time.

use prometheus::{
    Encoder, GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

/// Latency buckets in seconds, from a lone group commit (~ms) to the request timeout.
const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
/// Disk sync buckets in seconds, from a write cache's answer to a stalled disk.
const SYNC_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
];
/// Query duration buckets in seconds, from a pruned lookup to the statement timeout.
const QUERY_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
];
/// Batch size buckets in rows, around the 5,000-row default.
const ROW_BUCKETS: &[f64] = &[1.0, 10.0, 100.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0, 50000.0];
/// Batch size buckets in bytes.
const BYTE_BUCKETS: &[f64] = &[1e3, 1e4, 1e5, 5e5, 1e6, 2e6, 4e6, 8e6, 16e6, 64e6];

/// Every metric shardgate exports.
pub struct Metrics {
    registry: Registry,
    /// Rows decoded and queued, by table.
    pub rows_accepted: IntCounterVec,
    /// Rows whose batch committed, by table and shard.
    pub rows_committed: IntCounterVec,
    /// Rows refused, by table and reason: `invalid` (the body broke the schema) and the reasons
    /// of rows refused after decoding.
    pub rows_rejected: IntCounterVec,
    /// Write requests refused, whatever the stage, by table and reason.
    pub requests_rejected: IntCounterVec,
    /// Failed logins, by listener (`http`, `admin`, `postgres`) and reason (`wrong`,
    /// `malformed`).
    pub auth_failures: IntCounterVec,
    /// Write request latency, by table and status code.
    pub request_duration: HistogramVec,
    /// Write requests being handled.
    pub requests_in_flight: IntGauge,
    /// Rows per flushed batch, by shard.
    pub batch_rows: HistogramVec,
    /// Encoded bytes per flushed batch, by shard.
    pub batch_bytes: HistogramVec,
    /// Batches committed, by table and the way they reached it (`copy`, `staged`,
    /// `copy_then_staged`).
    pub batches: IntCounterVec,
    /// Time to write one batch (checkout, COPY, commit), by shard and outcome.
    pub flush_duration: HistogramVec,
    /// Rows queued or being written, by shard.
    pub queue_rows: IntGaugeVec,
    /// Encoded bytes queued or being written, by shard.
    pub queue_bytes: IntGaugeVec,
    /// 1 when the shard answered a probe at the last scrape, by shard.
    pub shard_up: IntGaugeVec,
    /// 1 once the shard's tables and fence are verified (batches are written to it), by shard.
    pub shard_prepared: IntGaugeVec,
    /// Epoch of the routing table in use.
    pub routing_epoch: IntGauge,
    /// Reporting query duration to the last row, by outcome (status code, or `aborted` for a
    /// streamed answer ended by an error line).
    pub query_duration: HistogramVec,
    /// Rows returned by reporting queries.
    pub query_rows: IntCounter,
    /// Rows written to a range's new shard as well as to its owner while the range is copied,
    /// by table.
    pub rows_dual_written: IntCounterVec,
    /// Rows a migration run by this proxy copied to a new owner.
    pub migration_rows_copied: IntCounter,
    /// Keys of a table hot in the last detection window, by table.
    pub hot_keys: IntGaugeVec,
    /// Rows of split hot keys placed at a salted position (salt above 0), by table.
    pub rows_salted: IntCounterVec,
    /// A table's rows in the last detection window on its busiest shard over the mean of its
    /// shards, by table: 1 is even.
    pub shard_skew: GaugeVec,
    /// Time a migration run by this proxy took to move one shard's fence, by shard: its batches
    /// wait that long (the write pause of a step such as the cutover).
    pub fence_move_duration: HistogramVec,
    /// 1 for the phase of the migration this proxy runs (`copying`, `cleaning`), by phase; 0
    /// otherwise.
    pub migration_phase: IntGaugeVec,
    /// `shardgate_migration_paused`: 1 while the migration this proxy runs waits because it
    /// is paused (no chunk is being copied or deleted), 0 otherwise.
    pub migration_paused: IntGauge,
    /// `shardgate_spool_rows_total{table, outcome}`: rows spooled (answered 202) and drained.
    pub spool_rows: IntCounterVec,
    /// `shardgate_spool_bytes`: bytes the spool's segment files hold.
    pub spool_bytes: IntGauge,
    /// `shardgate_spool_segments`: the spool's segment files.
    pub spool_segments: IntGauge,
    /// `shardgate_spool_pending_rows{shard}`: spooled rows not yet written, by their shard.
    pub spool_pending_rows: IntGaugeVec,
    /// `shardgate_spool_oldest_pending_seconds{shard}`: age of the oldest spooled row not yet
    /// written to the shard (the drain's lag); 0 when none waits.
    pub spool_oldest_pending: GaugeVec,
    /// `shardgate_spool_sync_duration_seconds`: how long each of the spool's syncs took (one
    /// per group of requests spooled together).
    pub spool_sync_duration: Histogram,
    /// `shardgate_spool_dead_letters_total{table}`: spooled rows a shard refused for their
    /// data, recorded in the dead-letter table.
    pub spool_dead_letters: IntCounterVec,
}

impl Metrics {
    /// Creates and registers every metric.
    pub fn new() -> Metrics {
        let registry = Registry::new();
        let counter = |name: &str, help: &str, labels: &[&str]| {
            let metric =
                IntCounterVec::new(Opts::new(name, help), labels).expect("metric definitions are valid");
            registry
                .register(Box::new(metric.clone()))
                .expect("metric names are unique");
            metric
        };
        let histogram = |name: &str, help: &str, labels: &[&str], buckets: &[f64]| {
            let opts = HistogramOpts::new(name, help).buckets(buckets.to_vec());
            let metric = HistogramVec::new(opts, labels).expect("metric definitions are valid");
            registry
                .register(Box::new(metric.clone()))
                .expect("metric names are unique");
            metric
        };
        let gauge_by = |name: &str, help: &str, label: &str| {
            let metric =
                IntGaugeVec::new(Opts::new(name, help), &[label]).expect("metric definitions are valid");
            registry
                .register(Box::new(metric.clone()))
                .expect("metric names are unique");
            metric
        };
        let gauge_vec = |name: &str, help: &str| gauge_by(name, help, "shard");
        let float_gauge_by = |name: &str, help: &str, label: &str| {
            let metric =
                GaugeVec::new(Opts::new(name, help), &[label]).expect("metric definitions are valid");
            registry
                .register(Box::new(metric.clone()))
                .expect("metric names are unique");
            metric
        };
        let plain_counter = |name: &str, help: &str| {
            let metric = IntCounter::new(name, help).expect("metric definitions are valid");
            registry
                .register(Box::new(metric.clone()))
                .expect("metric names are unique");
            metric
        };
        let gauge = |name: &str, help: &str| {
            let metric = IntGauge::new(name, help).expect("metric definitions are valid");
            registry
                .register(Box::new(metric.clone()))
                .expect("metric names are unique");
            metric
        };
        Metrics {
            rows_accepted: counter(
                "shardgate_rows_accepted_total",
                "Rows decoded and queued.",
                &["table"],
            ),
            rows_committed: counter(
                "shardgate_rows_committed_total",
                "Rows whose batch committed on a shard.",
                &["table", "shard"],
            ),
            rows_rejected: counter(
                "shardgate_rows_rejected_total",
                "Rows refused: invalid (in a body that broke the schema), queue_full, rejected, \
                 unavailable, routing_changed.",
                &["table", "reason"],
            ),
            requests_rejected: counter(
                "shardgate_requests_rejected_total",
                "Write requests refused, by reason (malformed, invalid, too_large, \
                 unsupported_media_type, unsupported_encoding, unknown_table, overloaded, rejected, \
                 unavailable, routing_changed).",
                &["table", "reason"],
            ),
            auth_failures: counter(
                "shardgate_auth_failures_total",
                "Failed logins, by listener (http, admin, postgres) and reason (wrong: a name, \
                 password or token not of a user; malformed: an Authorization header that does not \
                 decode). Requests without credentials are not counted.",
                &["listener", "reason"],
            ),
            request_duration: histogram(
                "shardgate_request_duration_seconds",
                "Write request latency from arrival to answer.",
                &["table", "status"],
                LATENCY_BUCKETS,
            ),
            requests_in_flight: gauge("shardgate_requests_in_flight", "Write requests being handled."),
            batch_rows: histogram(
                "shardgate_batch_rows",
                "Rows per flushed batch.",
                &["shard"],
                ROW_BUCKETS,
            ),
            batches: counter(
                "shardgate_batches_total",
                "Batches committed, by table and path: copy (plain COPY into the table), staged \
                 (through the staging table), copy_then_staged (a plain COPY met a stored id).",
                &["table", "path"],
            ),
            batch_bytes: histogram(
                "shardgate_batch_bytes",
                "Encoded bytes per flushed batch.",
                &["shard"],
                BYTE_BUCKETS,
            ),
            flush_duration: histogram(
                "shardgate_flush_duration_seconds",
                "Time to write one batch: connection checkout, COPY and commit.",
                &["shard", "outcome"],
                LATENCY_BUCKETS,
            ),
            queue_rows: gauge_vec("shardgate_queue_rows", "Rows queued or being written."),
            queue_bytes: gauge_vec("shardgate_queue_bytes", "Encoded bytes queued or being written."),
            shard_up: gauge_vec(
                "shardgate_shard_up",
                "1 when the shard answered a probe at the last scrape.",
            ),
            shard_prepared: gauge_vec(
                "shardgate_shard_prepared",
                "1 once the shard's tables and fence are verified and batches are written to it.",
            ),
            routing_epoch: gauge("shardgate_routing_epoch", "Epoch of the routing table in use."),
            query_duration: histogram(
                "shardgate_query_duration_seconds",
                "Reporting query duration from arrival to the last row sent.",
                &["outcome"],
                QUERY_BUCKETS,
            ),
            query_rows: plain_counter(
                "shardgate_query_rows_total",
                "Rows returned by reporting queries.",
            ),
            rows_dual_written: counter(
                "shardgate_rows_dual_written_total",
                "Rows also written to the new shard of a range being copied.",
                &["table"],
            ),
            migration_rows_copied: plain_counter(
                "shardgate_migration_rows_copied_total",
                "Rows a migration run by this proxy copied to their new shard.",
            ),
            hot_keys: gauge_by(
                "shardgate_hot_keys",
                "Keys of a table hot in the last detection window, by table.",
                "table",
            ),
            rows_salted: counter(
                "shardgate_rows_salted_total",
                "Rows of split hot keys placed at a salted position.",
                &["table"],
            ),
            shard_skew: float_gauge_by(
                "shardgate_shard_skew",
                "A table's rows in the last detection window on its busiest shard over the mean of its shards.",
                "table",
            ),
            fence_move_duration: histogram(
                "shardgate_fence_move_duration_seconds",
                "Time to move one shard's fence to a migration's new epoch, while its batches wait.",
                &["shard"],
                LATENCY_BUCKETS,
            ),
            migration_phase: gauge_by(
                "shardgate_migration_phase",
                "1 for the phase of the migration this proxy runs, by phase.",
                "phase",
            ),
            migration_paused: gauge(
                "shardgate_migration_paused",
                "1 while the migration this proxy runs waits because it is paused.",
            ),
            spool_rows: counter(
                "shardgate_spool_rows_total",
                "Rows of spooled writes: spooled (answered 202) and drained (written to their shard).",
                &["table", "outcome"],
            ),
            spool_bytes: gauge("shardgate_spool_bytes", "Bytes the spool's segment files hold."),
            spool_segments: gauge("shardgate_spool_segments", "Segment files of the spool."),
            spool_pending_rows: gauge_vec(
                "shardgate_spool_pending_rows",
                "Spooled rows not yet written, by the shard they wait for.",
            ),
            spool_oldest_pending: float_gauge_by(
                "shardgate_spool_oldest_pending_seconds",
                "Age of the oldest spooled row not yet written to the shard (the drain's lag).",
                "shard",
            ),
            spool_dead_letters: counter(
                "shardgate_spool_dead_letters_total",
                "Spooled rows a shard refused for their data, moved to the dead-letter table.",
                &["table"],
            ),
            spool_sync_duration: {
                let opts = HistogramOpts::new(
                    "shardgate_spool_sync_duration_seconds",
                    "Time of one sync of the spool's segment, shared by the requests spooled with it.",
                )
                .buckets(SYNC_BUCKETS.to_vec());
                let metric = Histogram::with_opts(opts).expect("metric definitions are valid");
                registry
                    .register(Box::new(metric.clone()))
                    .expect("metric names are unique");
                metric
            },
            registry,
        }
    }

    /// The registry in the Prometheus text format.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut out)
            .expect("encoding gathered metrics into a Vec cannot fail");
        String::from_utf8(out).expect("the text format is UTF-8")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rendered_metrics_follow_prometheus_naming() {
        let metrics = Metrics::new();
        metrics
            .rows_committed
            .with_label_values(&["events", "s0"])
            .inc_by(5);
        metrics.batch_rows.with_label_values(&["s0"]).observe(5.0);
        let text = metrics.render();
        assert!(
            text.contains("shardgate_rows_committed_total{shard=\"s0\",table=\"events\"} 5"),
            "{text}"
        );
        assert!(
            text.contains("shardgate_batch_rows_bucket{shard=\"s0\",le=\"10\"} 1"),
            "{text}"
        );
        assert!(text.contains("# TYPE shardgate_routing_epoch gauge"), "{text}");
    }
}
