//! The three ways a benchmark writes the same rows: through shardgate over HTTP, straight to
//! the shards with binary COPY (same batch size, connections and staged load as shardgate), and
//! one autocommit INSERT per row. Each runs concurrent workers that draw tickets from a
//! [`Plan`]; with a target rate the tickets are scheduled (open loop) and latency is measured
//! from each ticket's scheduled time, so a stalled target shows up as latency, not as fewer
//! samples.

use super::report::Recorder;
use super::timeline::Timeline;
use super::workload::{BenchRow, RowGenerator, RowText, WorkloadSpec, encode_tuple, place};
use crate::ingest::copy::{TableStatements, write_batch};
use crate::routing::{Epoch, RoutingTable};
use bytes::Bytes;
use deadpool_postgres::Pool;
use indicatif::ProgressBar;
use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};
use tokio::time::Instant;

/// When the run stops and how fast tickets are issued, and the timeline its answers go to.
pub struct Plan {
    start: Instant,
    rows_per_ticket: u64,
    total_rows: Option<u64>,
    duration: Option<Duration>,
    rate: Option<f64>,
    issued: AtomicU64,
    timeline: Option<Arc<Timeline>>,
}

impl Plan {
    /// A plan of tickets of `rows_per_ticket` rows, until `total_rows` or `duration`, at `rate`
    /// rows per second (as fast as possible when `None`).
    pub fn new(
        rows_per_ticket: u64,
        total_rows: Option<u64>,
        duration: Option<Duration>,
        rate: Option<f64>,
    ) -> Plan {
        Plan {
            start: Instant::now(),
            rows_per_ticket,
            total_rows,
            duration,
            rate,
            issued: AtomicU64::new(0),
            timeline: None,
        }
    }

    /// The same plan, noting every answer in `timeline` too.
    pub fn with_timeline(self, timeline: Arc<Timeline>) -> Plan {
        Plan {
            timeline: Some(timeline),
            ..self
        }
    }

    /// A worker's recorder, writing to the plan's timeline when it has one.
    pub fn recorder(&self) -> Recorder {
        Recorder::with_timeline(self.timeline.clone())
    }

    /// Waits for the next ticket: its scheduled time and row count, or `None` when the run is over.
    pub async fn next(&self) -> Option<(Instant, usize)> {
        let n = self.issued.fetch_add(1, Ordering::Relaxed);
        let first_row = n * self.rows_per_ticket;
        let rows = match self.total_rows {
            Some(total) if first_row >= total => return None,
            Some(total) => (total - first_row).min(self.rows_per_ticket),
            None => self.rows_per_ticket,
        };
        let scheduled = match self.rate {
            Some(rate) => self.start + Duration::from_secs_f64(first_row as f64 / rate),
            None => Instant::now(),
        };
        if self.duration.is_some_and(|d| scheduled > self.start + d) {
            return None;
        }
        tokio::time::sleep_until(scheduled).await;
        Some((scheduled, rows as usize))
    }
}

/// Request bodies built before the clock starts, one per ticket of the plan, so that a timed
/// run measures the target and not the client's JSON encoding. Workers take them in turn.
pub struct BodyPool {
    bodies: Vec<(Bytes, usize)>,
    next: AtomicU64,
}

impl BodyPool {
    /// The bodies of `total_rows` rows in requests of `rows_per_request` (gzip-compressed with
    /// `gzip`), every row with its own id.
    pub fn build(
        generator: &mut RowGenerator,
        rows_per_request: u64,
        total_rows: u64,
        gzip: bool,
    ) -> BodyPool {
        let mut bodies = Vec::new();
        let mut left = total_rows;
        while left > 0 {
            let rows = left.min(rows_per_request) as usize;
            bodies.push((encoded(generator.json_body(rows), gzip), rows));
            left -= rows as u64;
        }
        BodyPool {
            bodies,
            next: AtomicU64::new(0),
        }
    }

    /// The next body and its row count; `None` when all were taken.
    fn take(&self) -> Option<(Bytes, usize)> {
        let index = self.next.fetch_add(1, Ordering::Relaxed) as usize;
        self.bodies.get(index).cloned()
    }
}

/// Where an HTTP worker's bodies come from.
pub enum Bodies {
    /// Generated while timed, one per ticket (the client's encoding is part of the run).
    Generated(RowGenerator),
    /// Taken from a pool built before the run.
    Prebuilt(Arc<BodyPool>),
    /// Appends to a stream table's streams, generated while timed.
    Streams(StreamAppends),
}

impl Bodies {
    /// The body for a ticket of `rows` rows (compressed with `gzip`), and how many rows it holds.
    fn next(&mut self, rows: usize, gzip: bool) -> Option<(Bytes, usize)> {
        match self {
            Bodies::Generated(generator) => Some((encoded(generator.json_body(rows), gzip), rows)),
            Bodies::Prebuilt(pool) => pool.take(),
            Bodies::Streams(appends) => Some((encoded(appends.json_body(rows), gzip), rows)),
        }
    }
}

/// Appends to the streams of a stream table with columns `account_id`, `version`, `type` and
/// `data`: each worker owns every `workers`-th stream and appends to its streams in turn, each
/// at its next version, so appends never conflict. Stream names start with a prefix of the
/// run's own, so a run never appends to an earlier run's streams.
pub struct StreamAppends {
    prefix: String,
    /// The worker's streams and the next version of each.
    streams: Vec<(u64, i64)>,
    turn: usize,
}

impl StreamAppends {
    /// The appends of `worker` of `workers` over `streams` streams named `{prefix}-{n}`.
    pub fn new(prefix: &str, (worker, workers): (usize, usize), streams: u64) -> StreamAppends {
        StreamAppends {
            prefix: prefix.to_string(),
            streams: (worker as u64..streams)
                .step_by(workers.max(1))
                .map(|n| (n, 1))
                .collect(),
            turn: 0,
        }
    }

    /// A JSON array of `rows` consecutive events of the worker's next stream.
    pub fn json_body(&mut self, rows: usize) -> Vec<u8> {
        let count = self.streams.len().max(1);
        let Some((stream, next)) = self.streams.get_mut(self.turn) else {
            return b"[]".to_vec();
        };
        self.turn = (self.turn + 1) % count;
        let events: Vec<serde_json::Value> = (0..rows as i64)
            .map(|i| {
                serde_json::json!({
                    "account_id": format!("{}-{stream}", self.prefix),
                    "version": *next + i,
                    "type": "deposited",
                    "data": {"amount": 1},
                })
            })
            .collect();
        *next += rows as i64;
        serde_json::to_vec(&events).expect("JSON values serialise")
    }
}

/// Posts JSON bodies (gzip-compressed with `gzip`, each with an idempotency key of its own
/// with `keyed`) to a shardgate write URL until the plan ends.
pub async fn http_worker(
    plan: Arc<Plan>,
    client: reqwest::Client,
    url: String,
    mut bodies: Bodies,
    (gzip, keyed): (bool, bool),
    progress: ProgressBar,
) -> Recorder {
    let mut recorder = plan.recorder();
    while let Some((scheduled, planned)) = plan.next().await {
        let Some((body, rows)) = bodies.next(planned, gzip) else {
            break;
        };
        let mut request = client
            .post(&url)
            .header(reqwest::header::CONTENT_TYPE, "application/json");
        if gzip {
            request = request.header(reqwest::header::CONTENT_ENCODING, "gzip");
        }
        if keyed {
            request = request.header("idempotency-key", uuid::Uuid::now_v7().to_string());
        }
        let request = request.body(body);
        let sent = request.send().await;
        match sent {
            Ok(response) => {
                let status = response.status();
                // Read the whole answer so the connection is reused.
                let _ = response.bytes().await;
                if status.is_success() {
                    recorder.acknowledged(rows as u64, scheduled.elapsed());
                    progress.inc(rows as u64);
                } else {
                    recorder.failed(status.as_str());
                }
            }
            Err(e) if e.is_connect() => recorder.failed("connect"),
            Err(_) => recorder.failed("transport"),
        }
    }
    recorder
}

/// A JSON body as sent: as it is, or compressed with `gzip`.
fn encoded(body: Vec<u8>, gzip: bool) -> Bytes {
    Bytes::from(if gzip { gzipped(&body) } else { body })
}

/// `data` compressed with gzip at the fast level, as shippers that favour throughput send it.
fn gzipped(data: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    encoder
        .write_all(data)
        .and_then(|()| encoder.finish())
        .expect("compressing into memory cannot fail")
}

/// What the straight-COPY workers share.
pub struct DirectTarget {
    /// A COPY pool per shard, at the routing table's indexes, sized like shardgate's.
    pub pools: Vec<Pool>,
    /// Routing, to send each row where shardgate would.
    pub routing: Arc<RoutingTable>,
    /// The table's COPY statements.
    pub statements: Arc<TableStatements>,
    /// Fence epoch the batches check.
    pub epoch: Epoch,
    /// Rows per COPY batch (shardgate's `batch.max_rows`).
    pub batch_rows: usize,
}

/// Routes rows into per-shard buffers and COPYs each buffer when it holds a batch.
pub async fn direct_worker(
    plan: Arc<Plan>,
    target: Arc<DirectTarget>,
    mut generator: RowGenerator,
    progress: ProgressBar,
) -> Recorder {
    let mut recorder = plan.recorder();
    let mut buffers: Vec<(Vec<u8>, usize)> = (0..target.pools.len()).map(|_| (Vec::new(), 0)).collect();
    let (mut scratch, mut text) = (Vec::new(), RowText::default());
    while let Some((_, rows)) = plan.next().await {
        // One timestamp per ticket, as shardgate stamps one per request.
        let now = crate::units::unix_micros_now();
        for _ in 0..rows {
            let row = generator.next_row();
            generator.fill_text(&row, &mut text);
            let (hash, shard) = place(&text, &target.routing, &mut scratch);
            let (tuples, count) = &mut buffers[shard.0];
            encode_tuple(&row, &text, hash, now, target.epoch, tuples);
            *count += 1;
            if *count >= target.batch_rows {
                let batch = std::mem::take(tuples);
                let rows = std::mem::take(count);
                copy_batch(&target, shard.0, batch, rows, &mut recorder, &progress).await;
            }
        }
    }
    for (shard, (tuples, rows)) in buffers.into_iter().enumerate() {
        if rows > 0 {
            copy_batch(&target, shard, tuples, rows, &mut recorder, &progress).await;
        }
    }
    recorder
}

async fn copy_batch(
    target: &DirectTarget,
    shard: usize,
    tuples: Vec<u8>,
    rows: usize,
    recorder: &mut Recorder,
    progress: &ProgressBar,
) {
    let pool = &target.pools[shard];
    let started = Instant::now();
    match write_batch(pool, &target.statements, target.epoch, &[Bytes::from(tuples)]).await {
        Ok(_) => {
            recorder.acknowledged(rows as u64, started.elapsed());
            progress.inc(rows as u64);
        }
        Err(e) => recorder.failed(&format!("copy: {e}")),
    }
}

/// Sends one autocommit INSERT per row, over one connection per shard; latency is per row.
pub async fn insert_worker(
    plan: Arc<Plan>,
    clients: Vec<tokio_postgres::Client>,
    table: String,
    routing: Arc<RoutingTable>,
    spec: WorkloadSpec,
    mut generator: RowGenerator,
    progress: ProgressBar,
) -> Recorder {
    let mut recorder = plan.recorder();
    let sql = insert_sql(&table, spec.with_ids);
    let mut statements = Vec::new();
    for client in &clients {
        match client.prepare(&sql).await {
            Ok(statement) => statements.push(statement),
            Err(e) => {
                recorder.failed(&format!("prepare: {e}"));
                return recorder;
            }
        }
    }
    let (mut scratch, mut text) = (Vec::new(), RowText::default());
    while let Some((_, rows)) = plan.next().await {
        for _ in 0..rows {
            let row = generator.next_row();
            generator.fill_text(&row, &mut text);
            let (hash, shard) = place(&text, &routing, &mut scratch);
            let started = Instant::now();
            let result = insert_row(
                &clients[shard.0],
                &statements[shard.0],
                &row,
                &text,
                hash.as_i64(),
            )
            .await;
            match result {
                Ok(_) => {
                    recorder.acknowledged(1, started.elapsed());
                    progress.inc(1);
                }
                Err(e) => recorder.failed(&format!("insert: {e}")),
            }
        }
    }
    recorder
}

fn insert_sql(table: &str, with_ids: bool) -> String {
    let table = crate::schema::quote_ident(table);
    if with_ids {
        format!(
            "INSERT INTO {table} (event_id, tenant_id, event_type, ts, payload, _sg_hash) \
             VALUES ($1, $2, $3, $4, $5::text::jsonb, $6)"
        )
    } else {
        format!(
            "INSERT INTO {table} (tenant_id, event_type, ts, payload, _sg_hash) \
             VALUES ($1, $2, $3, $4::text::jsonb, $5)"
        )
    }
}

async fn insert_row(
    client: &tokio_postgres::Client,
    statement: &tokio_postgres::Statement,
    row: &BenchRow,
    text: &RowText,
    hash: i64,
) -> Result<u64, tokio_postgres::Error> {
    let (tenant, event_type, payload) = (&text.tenant, &text.event_type, &text.payload);
    let now = SystemTime::now();
    match row.id {
        Some(id) => {
            client
                .execute(statement, &[&id, &tenant, &event_type, &now, &payload, &hash])
                .await
        }
        None => {
            client
                .execute(statement, &[&tenant, &event_type, &now, &payload, &hash])
                .await
        }
    }
}
