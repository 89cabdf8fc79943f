//! Per-shard queues and group commit.
//!
//! A request's rows for one shard travel as one chunk of encoded tuples. Each shard has one
//! queue, bounded per (shard, table) in rows and bytes by semaphores whose permits a chunk holds
//! until it is answered (invariant 7): a full queue refuses the request before anything is
//! enqueued. Each shard has `connections_per_shard` writer tasks; the one holding the queue
//! collects chunks, releases the queue to the next writer and flushes. Batching is natural: a
//! batch leaves at once while another writer is idle, and grows (up to `max_rows`, `max_bytes`
//! or `max_delay`) only while every other connection is busy, so a lightly loaded shard answers
//! in one commit and a saturated one writes large COPYs. One slow shard never blocks another's
//! queue. A batch Postgres rejects for its data is split until the offending request is
//! isolated; the others still commit.

mod writer;

use super::copy::TableStatements;
use crate::catalog::RoutingSource;
use crate::config::BatchConfig;
use crate::metrics::Metrics;
use crate::routing::{Epoch, RoutingTable, ShardId, ShardIndex};
use crate::schema::TableId;
use crate::schema::decode::EncodedRows;
use crate::shards::Shards;
use bytes::Bytes;
use std::sync::Arc;
use thiserror::Error;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Why rows bound for one shard did not commit.
#[derive(Debug, Clone, Error)]
pub enum WriteError {
    /// The shard could not commit before the request's deadline.
    #[error("shard {shard} could not commit the rows: {reason}")]
    Unavailable {
        /// The shard.
        shard: ShardId,
        /// The last failure seen.
        reason: String,
    },
    /// Postgres refused this request's rows for their data.
    #[error("shard {shard} rejected the rows: {message}")]
    Rejected {
        /// The shard.
        shard: ShardId,
        /// Postgres's message.
        message: String,
    },
    /// The shard's ownership changed after the rows were routed; retrying routes them anew.
    #[error("shard {shard} refused the rows: {reason}; retry the request")]
    RoutingChanged {
        /// The shard.
        shard: ShardId,
        /// The fence mismatch.
        reason: String,
    },
}

impl WriteError {
    /// A stable name of the failure, for metric labels.
    pub fn reason(&self) -> &'static str {
        match self {
            WriteError::Unavailable { .. } => "unavailable",
            WriteError::Rejected { .. } => "rejected",
            WriteError::RoutingChanged { .. } => "routing_changed",
        }
    }
}

/// Rows could not be queued.
#[derive(Debug, Error)]
pub enum SubmitError {
    /// A queue is full; the client should retry later.
    #[error("the queue of shard {shard} for table {table} is full")]
    QueueFull {
        /// The shard.
        shard: ShardId,
        /// The table.
        table: String,
    },
    /// The request alone is larger than a whole queue.
    #[error(
        "the request holds {rows} rows ({bytes} bytes) for shard {shard}, more than its queue can ever hold"
    )]
    TooLarge {
        /// The shard.
        shard: ShardId,
        /// Rows for that shard.
        rows: usize,
        /// Encoded bytes for that shard.
        bytes: usize,
    },
}

/// One request's rows for one shard, waiting to be written.
struct Chunk {
    table: TableId,
    epoch: Epoch,
    tuples: Bytes,
    rows: usize,
    enqueued_at: Instant,
    deadline: Instant,
    reply: oneshot::Sender<Result<(), WriteError>>,
    /// Queue space held until the chunk is answered.
    _permits: (OwnedSemaphorePermit, OwnedSemaphorePermit),
}

/// A queued write to one shard; resolves when its rows have committed or failed.
pub struct PendingWrite {
    /// The shard.
    pub shard: ShardIndex,
    /// Rows sent to it.
    pub rows: usize,
    reply: oneshot::Receiver<Result<(), WriteError>>,
    shard_id: ShardId,
}

impl PendingWrite {
    /// Waits for the rows' batch to commit or fail.
    pub async fn outcome(self) -> Result<(), WriteError> {
        self.reply.await.unwrap_or_else(|_| {
            Err(WriteError::Unavailable {
                shard: self.shard_id,
                reason: "the write was abandoned while shutting down".into(),
            })
        })
    }

    /// The shard's name.
    pub fn shard_id(&self) -> &ShardId {
        &self.shard_id
    }
}

/// Space left in one (shard, table) queue.
struct QueueBudget {
    rows: Arc<Semaphore>,
    bytes: Arc<Semaphore>,
    max_rows: usize,
    max_bytes: usize,
}

struct ShardQueue {
    id: ShardId,
    sender: mpsc::UnboundedSender<Chunk>,
    budgets: Vec<QueueBudget>,
}

/// Queue limits of every (shard, table) queue.
#[derive(Debug, Clone, Copy)]
pub struct QueueLimits {
    /// Rows per queue.
    pub max_rows: usize,
    /// Encoded bytes per queue.
    pub max_bytes: usize,
}

/// Everything the writer tasks need.
pub struct BatcherSetup {
    /// The shards and their pools.
    pub shards: Arc<Shards>,
    /// Statements per table, indexed by [`TableId`].
    pub statements: Arc<Vec<TableStatements>>,
    /// Table names, indexed by [`TableId`], for logs and errors.
    pub table_names: Arc<Vec<String>>,
    /// Flush triggers.
    pub batch: BatchConfig,
    /// Queue bounds.
    pub queue: QueueLimits,
    /// Writer tasks per shard.
    pub connections_per_shard: usize,
    /// Where to reload routing when a fence disagrees.
    pub routing_source: Arc<RoutingSource>,
    /// Batch and commit metrics.
    pub metrics: Arc<Metrics>,
}

/// The sending side of every shard queue. Dropping it lets the writers drain and stop.
pub struct Batcher {
    queues: Vec<ShardQueue>,
    table_names: Arc<Vec<String>>,
}

impl Batcher {
    /// Starts the writer tasks. They flush at once, without waiting for `max_delay`, after
    /// `drain` is cancelled, and stop when the `Batcher` is dropped and their queue is empty.
    pub fn start(setup: BatcherSetup, drain: CancellationToken) -> (Batcher, JoinSet<()>) {
        let mut tasks = JoinSet::new();
        let mut queues = Vec::new();
        for (index, shard) in setup.shards.iter() {
            let (sender, receiver) = mpsc::unbounded_channel();
            writer::spawn_writers(&setup, index, receiver, &drain, &mut tasks);
            queues.push(ShardQueue {
                id: shard.id.clone(),
                sender,
                budgets: setup
                    .table_names
                    .iter()
                    .map(|_| QueueBudget::new(setup.queue))
                    .collect(),
            });
        }
        let batcher = Batcher {
            queues,
            table_names: setup.table_names,
        };
        (batcher, tasks)
    }

    /// Queues a decoded request's rows; all or nothing. Fails at once when any target queue
    /// lacks room, before anything is queued.
    pub fn submit(
        &self,
        routing: &RoutingTable,
        table: TableId,
        rows: EncodedRows,
        deadline: Instant,
    ) -> Result<Vec<PendingWrite>, SubmitError> {
        let mut reserved = Vec::new();
        for (index, shard_rows) in rows.shards.into_iter().enumerate().filter(|(_, r)| r.rows > 0) {
            let queue = &self.queues[index];
            let permits = queue.budgets[table.0].reserve(shard_rows.rows, shard_rows.tuples.len(), || {
                (queue.id.clone(), self.table_names[table.0].clone())
            })?;
            reserved.push((index, shard_rows, permits));
        }
        let now = Instant::now();
        let pending = reserved
            .into_iter()
            .map(|(index, shard_rows, permits)| {
                let (reply, receiver) = oneshot::channel();
                let chunk = Chunk {
                    table,
                    epoch: routing.epoch,
                    rows: shard_rows.rows,
                    tuples: Bytes::from(shard_rows.tuples),
                    enqueued_at: now,
                    deadline,
                    reply,
                    _permits: permits,
                };
                // A send fails only while shutting down; the dropped reply then reports it.
                let _ = self.queues[index].sender.send(chunk);
                PendingWrite {
                    shard: ShardIndex(index),
                    rows: shard_rows.rows,
                    reply: receiver,
                    shard_id: self.queues[index].id.clone(),
                }
            })
            .collect();
        Ok(pending)
    }

    /// Rows and bytes waiting or being written, per shard name.
    pub fn queue_depths(&self) -> Vec<(ShardId, usize, usize)> {
        self.queues
            .iter()
            .map(|q| {
                let (rows, bytes) = q.budgets.iter().fold((0, 0), |(r, b), budget| {
                    let (used_rows, used_bytes) = budget.used();
                    (r + used_rows, b + used_bytes)
                });
                (q.id.clone(), rows, bytes)
            })
            .collect()
    }
}

impl QueueBudget {
    fn new(limits: QueueLimits) -> QueueBudget {
        QueueBudget {
            rows: Arc::new(Semaphore::new(limits.max_rows)),
            bytes: Arc::new(Semaphore::new(limits.max_bytes)),
            max_rows: limits.max_rows,
            max_bytes: limits.max_bytes,
        }
    }

    fn reserve(
        &self,
        rows: usize,
        bytes: usize,
        names: impl Fn() -> (ShardId, String),
    ) -> Result<(OwnedSemaphorePermit, OwnedSemaphorePermit), SubmitError> {
        if rows > self.max_rows || bytes > self.max_bytes {
            return Err(SubmitError::TooLarge {
                shard: names().0,
                rows,
                bytes,
            });
        }
        let full = || {
            let (shard, table) = names();
            SubmitError::QueueFull { shard, table }
        };
        // Both counts fit u32: the config caps queue limits below 4Gi.
        let row_permit = self
            .rows
            .clone()
            .try_acquire_many_owned(rows as u32)
            .map_err(|_| full())?;
        let byte_permit = self
            .bytes
            .clone()
            .try_acquire_many_owned(bytes as u32)
            .map_err(|_| full())?;
        Ok((row_permit, byte_permit))
    }

    fn used(&self) -> (usize, usize) {
        (
            self.max_rows - self.rows.available_permits(),
            self.max_bytes - self.bytes.available_permits(),
        )
    }
}
