//! Group commit for the spool: one thread owns the log, appends the records requests hand it
//! and answers each request once a sync covered its record. Records that arrive while a sync
//! runs share the next one, as concurrent transactions share a commit on the shards.

use super::{Record, RecordAt, RecordSeq, SpoolLog};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::JoinHandle;
use tokio::sync::{mpsc, oneshot};

/// Appends queued for the writer thread before senders wait.
const QUEUED_APPENDS: usize = 4096;

/// Why a record was not made durable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AppendError {
    /// The spool holds `max_bytes` already (with this record it would hold more).
    #[error("the spool is full: it holds {bytes} bytes of its {max_bytes}")]
    Full {
        /// Bytes the spool holds.
        bytes: u64,
        /// Its bound.
        max_bytes: u64,
    },
    /// The record was refused, or a write or sync failed (after which the writer stops, as
    /// nothing since the last good sync is known to be on disk).
    #[error("{0}")]
    Failed(String),
    /// The writer stopped earlier, or was shut down.
    #[error("the spool's writer has stopped")]
    Stopped,
}

/// What the writer thread is asked to do.
enum Op {
    /// Append a record and answer once it is durable.
    Append {
        payload: Vec<u8>,
        durable: oneshot::Sender<Result<RecordSeq, AppendError>>,
    },
    /// Remove the segments whose records are all applied up to `through`, and answer with
    /// the first record the spool still holds.
    RemoveApplied {
        through: RecordSeq,
        done: oneshot::Sender<Result<RecordSeq, AppendError>>,
    },
}

/// Counters of the writer thread's work.
#[derive(Debug, Default)]
struct Counters {
    syncs: AtomicU64,
    records: AtomicU64,
    bytes: AtomicU64,
    segments: AtomicU64,
}

/// How the writer thread runs.
pub struct WriterOptions {
    /// Most bytes the spool's segments may hold; an append past it is refused as full.
    pub max_bytes: u64,
    /// Where every durable record goes, in order, once its sync returned: the drainer.
    pub durable: Option<mpsc::UnboundedSender<Record>>,
    /// Observes how long each sync took, in seconds.
    pub sync_seconds: Option<prometheus::Histogram>,
}

/// Hands records to the writer thread; cheap to clone, one per task that appends.
#[derive(Clone)]
pub struct SpoolAppender {
    ops: mpsc::Sender<Op>,
    counters: Arc<Counters>,
    max_bytes: u64,
}

impl SpoolAppender {
    /// Appends `payload` and returns its sequence number once the disk holds it.
    pub async fn append(&self, payload: Vec<u8>) -> Result<RecordSeq, AppendError> {
        let (durable, answer) = oneshot::channel();
        self.ops
            .send(Op::Append { payload, durable })
            .await
            .map_err(|_| AppendError::Stopped)?;
        answer.await.map_err(|_| AppendError::Stopped)?
    }

    /// Removes the segments whose records all come up to `through` (every one applied), and
    /// returns the first record the spool still holds.
    pub async fn remove_applied(&self, through: RecordSeq) -> Result<RecordSeq, AppendError> {
        let (done, answer) = oneshot::channel();
        self.ops
            .send(Op::RemoveApplied { through, done })
            .await
            .map_err(|_| AppendError::Stopped)?;
        answer.await.map_err(|_| AppendError::Stopped)?
    }

    /// Syncs the writer has made so far.
    pub fn syncs(&self) -> u64 {
        self.counters.syncs.load(Ordering::Relaxed)
    }

    /// Records the writer has made durable so far.
    pub fn records(&self) -> u64 {
        self.counters.records.load(Ordering::Relaxed)
    }

    /// Bytes the spool's segments hold.
    pub fn bytes(&self) -> u64 {
        self.counters.bytes.load(Ordering::Relaxed)
    }

    /// Most bytes the spool may hold.
    pub fn max_bytes(&self) -> u64 {
        self.max_bytes
    }

    /// Segment files the spool has.
    pub fn segments(&self) -> u64 {
        self.counters.segments.load(Ordering::Relaxed)
    }
}

/// The writer thread that owns the log.
pub struct SpoolWriter {
    thread: JoinHandle<SpoolLog>,
}

impl SpoolWriter {
    /// Starts the writer thread on `log` and returns it with the first appender.
    pub fn start(log: SpoolLog, options: WriterOptions) -> (SpoolWriter, SpoolAppender) {
        let (ops, queued) = mpsc::channel(QUEUED_APPENDS);
        let counters = Arc::new(Counters::default());
        let thread_counters = Arc::clone(&counters);
        let max_bytes = options.max_bytes;
        let thread = std::thread::Builder::new()
            .name("spool-writer".into())
            .spawn(move || {
                let mut thread = WriterThread {
                    log,
                    options,
                    counters: thread_counters,
                };
                thread.count_files();
                thread.run(queued);
                thread.log
            })
            .expect("the spool's writer thread starts");
        let appender = SpoolAppender {
            ops,
            counters,
            max_bytes,
        };
        (SpoolWriter { thread }, appender)
    }

    /// Waits until every appender is dropped and every queued record answered, and gives the
    /// log back. Blocks: call it from a blocking context.
    pub fn finish(self) -> SpoolLog {
        self.thread
            .join()
            .expect("the spool's writer thread does not panic")
    }
}

/// The log and what the thread reports to.
struct WriterThread {
    log: SpoolLog,
    options: WriterOptions,
    counters: Arc<Counters>,
}

/// An append waiting for its group's sync.
struct Appended {
    payload: Vec<u8>,
    durable: oneshot::Sender<Result<RecordSeq, AppendError>>,
    result: Result<RecordAt, AppendError>,
}

impl WriterThread {
    /// The loop: take every queued op, append the records, sync once, answer them all.
    fn run(&mut self, mut queued: mpsc::Receiver<Op>) {
        let mut group = Vec::new();
        while let Some(first) = queued.blocking_recv() {
            let mut next = Some(first);
            while let Some(op) = next.take().or_else(|| queued.try_recv().ok()) {
                match op {
                    Op::Append { payload, durable } => {
                        let result = self.append(&payload);
                        group.push(Appended {
                            payload,
                            durable,
                            result,
                        });
                    }
                    Op::RemoveApplied { through, done } => {
                        let result = self.remove_applied(through);
                        let _ = done.send(result);
                    }
                }
            }
            if !self.sync_and_answer(&mut group) {
                tracing::error!("the spool's sync failed; the spool stops taking records");
                break;
            }
        }
    }

    fn append(&mut self, payload: &[u8]) -> Result<RecordAt, AppendError> {
        let bytes = self.log.bytes();
        if bytes + payload.len() as u64 > self.options.max_bytes {
            return Err(AppendError::Full {
                bytes,
                max_bytes: self.options.max_bytes,
            });
        }
        self.log
            .append(payload)
            .map_err(|e| AppendError::Failed(e.to_string()))
    }

    fn remove_applied(&mut self, through: RecordSeq) -> Result<RecordSeq, AppendError> {
        self.log
            .remove_applied(through)
            .map_err(|e| AppendError::Failed(e.to_string()))?;
        self.count_files();
        Ok(self
            .log
            .segments()
            .next()
            .expect("the log always has a segment")
            .first)
    }

    /// Syncs what the group appended and answers each append; false once a sync failed.
    fn sync_and_answer(&mut self, group: &mut Vec<Appended>) -> bool {
        if group.is_empty() {
            return true;
        }
        let started = std::time::Instant::now();
        let synced = self.log.sync().map_err(|e| AppendError::Failed(e.to_string()));
        if let Some(histogram) = &self.options.sync_seconds {
            histogram.observe(started.elapsed().as_secs_f64());
        }
        self.counters.syncs.fetch_add(1, Ordering::Relaxed);
        self.count_files();
        for appended in group.drain(..) {
            let answer = synced.clone().and(appended.result);
            if let Ok(at) = &answer {
                self.counters.records.fetch_add(1, Ordering::Relaxed);
                self.hand_over(at, appended.payload);
            }
            let _ = appended.durable.send(answer.map(|at| at.seq));
        }
        synced.is_ok()
    }

    /// Hands a durable record to whoever drains the spool, as its segment file holds it (the
    /// heap copy it was appended from is let go); when the file cannot be mapped, from `payload`.
    fn hand_over(&mut self, at: &RecordAt, payload: Vec<u8>) {
        let Some(durable) = &self.options.durable else {
            return;
        };
        let payload = self.log.synced_payload(at).unwrap_or_else(|error| {
            tracing::warn!(%error, "a spool segment could not be mapped; its record is kept in memory");
            payload.into()
        });
        let _ = durable.send(Record { seq: at.seq, payload });
    }

    fn count_files(&self) {
        self.counters.bytes.store(self.log.bytes(), Ordering::Relaxed);
        self.counters
            .segments
            .store(self.log.segments().len() as u64, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests;
