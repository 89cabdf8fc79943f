//! Group commit for the spool: one thread owns the log, appends the records requests hand it
//! and answers each request once a sync covered its record. Records that arrive while a sync
//! runs share the next one, as concurrent transactions share a commit on the shards.

use super::{RecordSeq, SpoolLog};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::JoinHandle;
use tokio::sync::{mpsc, oneshot};

/// Appends queued for the writer thread before senders wait.
const QUEUED_APPENDS: usize = 4096;

/// Why a record was not made durable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AppendError {
    /// The record was refused, or a write or sync failed (after which the writer stops, as
    /// nothing since the last good sync is known to be on disk).
    #[error("{0}")]
    Failed(String),
    /// The writer stopped earlier, or was shut down.
    #[error("the spool's writer has stopped")]
    Stopped,
}

struct Append {
    payload: Vec<u8>,
    durable: oneshot::Sender<Result<RecordSeq, AppendError>>,
}

/// Counters of the writer thread's work.
#[derive(Debug, Default)]
struct Counters {
    syncs: AtomicU64,
    records: AtomicU64,
}

/// Hands records to the writer thread; cheap to clone, one per task that appends.
#[derive(Clone)]
pub struct SpoolAppender {
    appends: mpsc::Sender<Append>,
    counters: Arc<Counters>,
}

impl SpoolAppender {
    /// Appends `payload` and returns its sequence number once the disk holds it.
    pub async fn append(&self, payload: Vec<u8>) -> Result<RecordSeq, AppendError> {
        let (durable, answer) = oneshot::channel();
        self.appends
            .send(Append { payload, durable })
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
}

/// The writer thread that owns the log.
pub struct SpoolWriter {
    thread: JoinHandle<SpoolLog>,
}

impl SpoolWriter {
    /// Starts the writer thread on `log` and returns it with the first appender.
    pub fn start(log: SpoolLog) -> (SpoolWriter, SpoolAppender) {
        let (appends, queued) = mpsc::channel(QUEUED_APPENDS);
        let counters = Arc::new(Counters::default());
        let thread_counters = Arc::clone(&counters);
        let thread = std::thread::Builder::new()
            .name("spool-writer".into())
            .spawn(move || write_until_closed(log, queued, &thread_counters))
            .expect("the spool's writer thread starts");
        (SpoolWriter { thread }, SpoolAppender { appends, counters })
    }

    /// Waits until every appender is dropped and every queued record answered, and gives the
    /// log back. Blocks: call it from a blocking context.
    pub fn finish(self) -> SpoolLog {
        self.thread
            .join()
            .expect("the spool's writer thread does not panic")
    }
}

/// The writer's loop: take every queued append, write them, sync once, answer them all.
fn write_until_closed(
    mut log: SpoolLog,
    mut queued: mpsc::Receiver<Append>,
    counters: &Counters,
) -> SpoolLog {
    let mut group = Vec::new();
    while let Some(first) = queued.blocking_recv() {
        group.push(first);
        while let Ok(next) = queued.try_recv() {
            group.push(next);
        }
        let appended: Vec<_> = group
            .iter()
            .map(|append| {
                log.append(&append.payload)
                    .map_err(|e| AppendError::Failed(e.to_string()))
            })
            .collect();
        let synced = log.sync().map_err(|e| AppendError::Failed(e.to_string()));
        counters.syncs.fetch_add(1, Ordering::Relaxed);
        let failed = synced.is_err();
        for (append, result) in group.drain(..).zip(appended) {
            let answer = synced.clone().and(result);
            if answer.is_ok() {
                counters.records.fetch_add(1, Ordering::Relaxed);
            }
            let _ = append.durable.send(answer);
        }
        if failed {
            tracing::error!("the spool's sync failed; the spool stops taking records");
            break;
        }
    }
    log
}

#[cfg(test)]
mod tests;
