//! The writer tasks of one shard: collect queued chunks into a batch (natural batching), write
//! it with the marks of any spooled parts in it, split it when Postgres refuses some request's
//! data (or a part's mark was there already), retry transient failures until the
//! requests' deadlines, and answer every chunk.

use super::WriterSettings;
use crate::config::BatchConfig;
use crate::ingest::copy::{AlsoRecord, CopyError, TableStatements, write_batch_recording};
use crate::ingest::optimism::LoadPath;
use crate::routing::{Epoch, ShardId};
use crate::schema::TableId;
use crate::shards::applied::{self, Mark};
use crate::shards::idempotency::{self, KeyRecord};
use crate::shards::queue::{Chunk, QueueReceiver, WriteError};
use crate::shards::{Shard, ShardPools};
use bytes::Bytes;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio::sync::{Mutex, Notify};
use tokio::time::Instant;
use tokio_postgres::types::ToSql;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

/// First pause before retrying a transient failure; doubles up to [`MAX_BACKOFF`].
const INITIAL_BACKOFF: Duration = Duration::from_millis(50);
/// Longest pause between retries.
const MAX_BACKOFF: Duration = Duration::from_secs(1);

/// When writers hurry and when they stop taking new chunks.
#[derive(Clone)]
struct Signals {
    /// Flush at once, without waiting for `max_delay`.
    drain: CancellationToken,
    /// Close the queue: write what is in it, then stop.
    close: CancellationToken,
}

/// Starts the `connections_per_shard` writers of `shard`, all taking from `receiver`.
pub(super) fn spawn_writers(
    settings: &Arc<WriterSettings>,
    shard: &Shard,
    receiver: QueueReceiver,
    (drain, close): (&CancellationToken, &CancellationToken),
    tasks: &TaskTracker,
) {
    let queue = Arc::new(SharedQueue {
        receiver: Mutex::new(receiver),
        writers: settings.connections_per_shard,
        flushing: AtomicUsize::new(0),
        writer_freed: Notify::new(),
    });
    let writer = Arc::new(ShardWriter {
        id: shard.id.clone(),
        pools: shard.pools.clone(),
        settings: settings.clone(),
    });
    let signals = Signals {
        drain: drain.clone(),
        close: close.clone(),
    };
    for connection in 0..settings.connections_per_shard {
        let span = tracing::info_span!("writer", shard = %shard.id, connection);
        let task = run_writer(writer.clone(), queue.clone(), signals.clone());
        tasks.spawn(task.instrument(span));
    }
}

/// Flushes batches of one shard; shared by that shard's writer tasks. It holds the shard's
/// pools, not the shard: the queue closes when the last snapshot naming the shard is gone.
struct ShardWriter {
    id: ShardId,
    pools: Arc<ShardPools>,
    settings: Arc<WriterSettings>,
}

/// The receiving side of one shard's queue, shared by that shard's writers.
struct SharedQueue {
    receiver: Mutex<QueueReceiver>,
    writers: usize,
    flushing: AtomicUsize,
    writer_freed: Notify,
}

impl SharedQueue {
    /// Whether a writer other than the collecting one is free to take the next batch.
    fn another_writer_is_idle(&self) -> bool {
        self.flushing.load(Ordering::Acquire) + 1 < self.writers
    }
}

async fn run_writer(writer: Arc<ShardWriter>, queue: Arc<SharedQueue>, signals: Signals) {
    loop {
        let batch = {
            let mut receiver = queue.receiver.lock().await;
            collect_batch(&mut receiver, &queue, &writer.settings.batch, &signals).await
        };
        let Some(chunks) = batch else { return };
        queue.flushing.fetch_add(1, Ordering::AcqRel);
        writer.flush(chunks).await;
        queue.flushing.fetch_sub(1, Ordering::AcqRel);
        // Wakes a collector waiting for a free writer; stores nothing when none waits.
        queue.writer_freed.notify_waiters();
    }
}

/// Chunks collected for one flush.
struct PendingBatch {
    chunks: Vec<Chunk>,
    rows: usize,
    bytes: usize,
    flush_at: Instant,
}

impl PendingBatch {
    fn new(first: Chunk, max_delay: Duration) -> PendingBatch {
        PendingBatch {
            flush_at: first.enqueued_at + max_delay,
            rows: 0,
            bytes: 0,
            chunks: Vec::new(),
        }
        .with(first)
    }

    fn with(mut self, chunk: Chunk) -> PendingBatch {
        self.push(chunk);
        self
    }

    fn push(&mut self, chunk: Chunk) {
        self.rows += chunk.rows;
        self.bytes += chunk.tuples.len();
        self.chunks.push(chunk);
    }

    fn is_full(&self, limits: &BatchConfig) -> bool {
        self.rows >= limits.max_rows || self.bytes >= limits.max_bytes.as_usize()
    }
}

/// The next chunk; `None` once the queue is closed and empty. After `close` is cancelled the
/// queue is closed here, so what was queued before is still returned.
async fn next_chunk(receiver: &mut QueueReceiver, close: &CancellationToken) -> Option<Chunk> {
    tokio::select! {
        biased;
        chunk = receiver.recv() => chunk,
        _ = close.cancelled() => {
            receiver.close();
            receiver.recv().await
        }
    }
}

/// Takes chunks for one flush; `None` once the queue is closed and empty.
///
/// Natural batching: a batch leaves as soon as another writer is free to collect the next one,
/// so a lightly loaded shard answers without waiting. Only while every other writer is busy does
/// the batch keep growing, until `max_rows`, `max_bytes`, `max_delay`, or a writer frees up.
async fn collect_batch(
    receiver: &mut QueueReceiver,
    queue: &SharedQueue,
    limits: &BatchConfig,
    signals: &Signals,
) -> Option<Vec<Chunk>> {
    let drain = &signals.drain;
    let mut batch = PendingBatch::new(next_chunk(receiver, &signals.close).await?, limits.max_delay);
    loop {
        while !batch.is_full(limits) {
            match receiver.try_recv() {
                Ok(chunk) => batch.push(chunk),
                Err(_) => break,
            }
        }
        // Registered before the check, so a writer freed in between still wakes us.
        let writer_freed = queue.writer_freed.notified();
        if batch.is_full(limits) || drain.is_cancelled() || queue.another_writer_is_idle() {
            return Some(batch.chunks);
        }
        tokio::select! {
            biased;
            chunk = next_chunk(receiver, &signals.close) => match chunk {
                Some(chunk) => batch.push(chunk),
                None => return Some(batch.chunks),
            },
            _ = writer_freed => return Some(batch.chunks),
            _ = tokio::time::sleep_until(batch.flush_at) => return Some(batch.chunks),
            _ = drain.cancelled() => {}
        }
    }
}

impl ShardWriter {
    async fn flush(&self, chunks: Vec<Chunk>) {
        let mut groups: Vec<((TableId, Epoch, bool), Vec<Chunk>)> = Vec::new();
        for chunk in chunks {
            let key = (chunk.table, chunk.epoch, chunk.stream_copy);
            match groups.iter_mut().find(|(k, _)| *k == key) {
                Some((_, group)) => group.push(chunk),
                None => groups.push((key, vec![chunk])),
            }
        }
        for ((table, epoch, stream_copy), group) in groups {
            let rows: usize = group.iter().map(|c| c.rows).sum();
            let span = tracing::debug_span!("flush", table = %self.settings.table_names[table.0], rows, requests = group.len());
            let batch = BatchKind {
                table,
                epoch,
                check_streams: !stream_copy,
            };
            self.flush_group(batch, group).instrument(span).await;
        }
    }

    /// Writes one (table, epoch) group, splitting it when Postgres refuses some request's data.
    async fn flush_group(&self, batch: BatchKind, group: Vec<Chunk>) {
        let table = batch.table;
        let mut pending = vec![group];
        while let Some(mut group) = pending.pop() {
            match self.write_until_deadline(batch, &mut group).await {
                Ok(()) => {
                    let rows: usize = group.iter().map(|c| c.rows).sum();
                    let labels = [self.settings.table_names[table.0].as_str(), self.id.0.as_str()];
                    self.settings
                        .metrics
                        .rows_committed
                        .with_label_values(&labels)
                        .inc_by(rows as u64);
                    answer(group, || Ok(()));
                }
                Err(CopyError::Data { sqlstate, message }) if group.len() == 1 => {
                    tracing::info!(%sqlstate, %message, "rows rejected by the shard");
                    let shard = self.id.clone();
                    answer(group, || {
                        Err(WriteError::Rejected {
                            shard: shard.clone(),
                            sqlstate: sqlstate.clone(),
                            message: message.clone(),
                        })
                    });
                }
                Err(CopyError::Stream(conflict)) if group.len() == 1 => {
                    tracing::debug!(%conflict, "append refused by its stream's version");
                    let shard = self.id.clone();
                    answer(group, || {
                        Err(WriteError::StreamConflict {
                            shard: shard.clone(),
                            conflict: conflict.clone(),
                        })
                    });
                }
                Err(CopyError::AlreadyApplied) if group.len() == 1 => {
                    tracing::debug!("spooled part or keyed write applied before; nothing written again");
                    answer(group, || Ok(()));
                }
                Err(CopyError::Data { .. } | CopyError::AlreadyApplied | CopyError::Stream(_)) => {
                    let second_half = group.split_off(group.len() / 2);
                    pending.push(second_half);
                    pending.push(group);
                }
                Err(error @ CopyError::Fence { .. }) => {
                    tracing::warn!(%error, "fence refused the batch; reloading routing");
                    self.settings.refresh.refresh().await;
                    let shard = self.id.clone();
                    let reason = error.to_string();
                    answer(group, || {
                        Err(WriteError::RoutingChanged {
                            shard: shard.clone(),
                            reason: reason.clone(),
                        })
                    });
                }
                Err(error) => {
                    tracing::warn!(%error, "batch failed");
                    let shard = self.id.clone();
                    let reason = error.to_string();
                    answer(group, || {
                        Err(WriteError::Unavailable {
                            shard: shard.clone(),
                            reason: reason.clone(),
                        })
                    });
                }
            }
        }
    }

    /// Writes `group`, retrying transient failures with backoff until the latest deadline among
    /// its requests. Requests that stopped waiting are dropped before each attempt.
    async fn write_until_deadline(&self, batch: BatchKind, group: &mut Vec<Chunk>) -> Result<(), CopyError> {
        let statements = &self.settings.statements[batch.table.0];
        let mut backoff = INITIAL_BACKOFF;
        loop {
            group.retain(|chunk| !chunk.is_abandoned());
            let Some(deadline) = group.iter().map(|c| c.deadline).max() else {
                return Ok(());
            };
            let parts: Vec<Bytes> = group.iter().map(|c| c.tuples.clone()).collect();
            let marks: Vec<Mark> = group.iter().filter_map(|c| c.mark).collect();
            let keyed: Vec<(Arc<KeyRecord>, usize)> = group
                .iter()
                .filter_map(|c| Some((c.record.clone()?, c.rows)))
                .collect();
            let rows = group.iter().map(|c| c.rows).sum();
            let records = BatchRecords {
                marks: &marks,
                keyed: &keyed,
            };
            let attempt = self.timed_write((statements, batch), (&parts, records), rows);
            let reason = match tokio::time::timeout_at(deadline, attempt).await {
                Ok(Err(CopyError::Transient(reason))) => reason,
                Ok(Err(CopyError::StreamRace)) => {
                    tracing::debug!("another batch appended to one of the batch's streams; writing it again");
                    continue;
                }
                Ok(result) => return result,
                Err(_) => {
                    return Err(CopyError::Transient(
                        "no commit before the request deadline".into(),
                    ));
                }
            };
            if Instant::now() + backoff >= deadline {
                return Err(CopyError::Transient(reason));
            }
            tracing::warn!(%reason, retry_in = ?backoff, "transient failure; retrying");
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    /// One attempt at writing a batch, recorded in the batch and flush metrics.
    async fn timed_write(
        &self,
        (statements, batch): (&TableStatements, BatchKind),
        (parts, records): (&[Bytes], BatchRecords<'_>),
        rows: usize,
    ) -> Result<(), CopyError> {
        let shard = self.id.0.as_str();
        let table = &self.settings.table_names[batch.table.0];
        let started = Instant::now();
        let result = if self.pools.is_prepared() {
            write_marked(&self.pools.copy, (statements, &self.id, batch), parts, records).await
        } else {
            Err(CopyError::Transient(
                "its tables are not verified yet (unreachable since start-up)".into(),
            ))
        };
        if let Ok(path) = result {
            let labels = [table.as_str(), path.label()];
            self.settings.metrics.batches.with_label_values(&labels).inc();
        }
        let result = result.map(|_| ());
        let outcome = match &result {
            Ok(()) => "committed",
            Err(CopyError::Data { .. }) => "data_error",
            Err(CopyError::Fence { .. }) => "fenced",
            Err(CopyError::AlreadyApplied) => "already_applied",
            Err(CopyError::Stream(_)) => "stream_conflict",
            Err(CopyError::StreamRace) => "stream_race",
            Err(CopyError::Transient(_) | CopyError::Fatal(_) | CopyError::IdStored) => "failed",
        };
        let seconds = started.elapsed().as_secs_f64();
        self.settings
            .metrics
            .flush_duration
            .with_label_values(&[shard, outcome])
            .observe(seconds);
        if result.is_ok() {
            let bytes: usize = parts.iter().map(Bytes::len).sum();
            self.settings
                .metrics
                .batch_rows
                .with_label_values(&[shard])
                .observe(rows as f64);
            self.settings
                .metrics
                .batch_bytes
                .with_label_values(&[shard])
                .observe(bytes as f64);
        }
        result
    }
}

/// What the chunks of one batch share: their table, the epoch that routed them, and whether
/// the batch checks a stream table's versions (not for copies of rows in ranges being copied,
/// whose owner checks them).
#[derive(Debug, Clone, Copy)]
struct BatchKind {
    table: TableId,
    epoch: Epoch,
    check_streams: bool,
}

/// What a batch records in its transaction besides its rows.
struct BatchRecords<'a> {
    /// The marks of the drained spool parts in it.
    marks: &'a [Mark],
    /// The records of the keyed writes in it, with the rows each wrote.
    keyed: &'a [(Arc<KeyRecord>, usize)],
}

/// Writes a batch with the marks of the spooled parts and the records of the keyed writes in
/// it, in its transaction.
async fn write_marked(
    pool: &deadpool_postgres::Pool,
    (statements, shard, batch): (&TableStatements, &ShardId, BatchKind),
    parts: &[Bytes],
    records: BatchRecords<'_>,
) -> Result<LoadPath, CopyError> {
    let epoch = batch.epoch;
    let marks = applied::mark_columns(records.marks);
    let mark_params = marks
        .as_ref()
        .map(|(spool, seqs, indexes)| -> [&(dyn ToSql + Sync); 3] { [spool, seqs, indexes] });
    let keyed = KeyedColumns::of(records.keyed);
    let keyed_params = keyed.as_ref().map(|columns| columns.params(&shard.0, &epoch.0));
    let mut also = Vec::with_capacity(2);
    if let Some(params) = &mark_params {
        also.push(AlsoRecord {
            sql: applied::MARK_SQL,
            params,
        });
    }
    if let Some(params) = &keyed_params {
        also.push(AlsoRecord {
            sql: idempotency::RECORD_SQL,
            params,
        });
    }
    write_batch_recording(pool, statements, epoch, parts, (&also, batch.check_streams)).await
}

/// The records of a batch's keyed writes as [`idempotency::RECORD_SQL`]'s parameters take
/// them; every part of one batch has one shard and epoch, so they cover the same ranges.
struct KeyedColumns<'a> {
    covers: &'a [i64],
    keys: Vec<&'a str>,
    tables: Vec<&'a str>,
    fingerprints: Vec<&'a [u8]>,
    rows: Vec<i32>,
}

impl<'a> KeyedColumns<'a> {
    fn of(keyed: &'a [(Arc<KeyRecord>, usize)]) -> Option<KeyedColumns<'a>> {
        let (first, _) = keyed.first()?;
        Some(KeyedColumns {
            covers: &first.covers,
            keys: keyed.iter().map(|(r, _)| r.key.as_str()).collect(),
            tables: keyed.iter().map(|(r, _)| r.table.as_str()).collect(),
            fingerprints: keyed.iter().map(|(r, _)| &r.fingerprint[..]).collect(),
            rows: keyed
                .iter()
                .map(|(_, rows)| i32::try_from(*rows).unwrap_or(i32::MAX))
                .collect(),
        })
    }

    fn params<'p>(&'p self, shard: &'p String, epoch: &'p i64) -> [&'p (dyn ToSql + Sync); 7] {
        [
            shard,
            epoch,
            &self.covers,
            &self.keys,
            &self.tables,
            &self.fingerprints,
            &self.rows,
        ]
    }
}

fn answer(group: Vec<Chunk>, outcome: impl Fn() -> Result<(), WriteError>) {
    for chunk in group {
        chunk.answer(outcome());
    }
}
