//! The sending half of a shard's write queue: what a request hands to the shard's writers and
//! the space it may take.
//!
//! A request's rows for one shard travel as one [`Chunk`] of encoded tuples. Each shard has one
//! queue, bounded per (shard, table) in rows and bytes by semaphores whose permits a chunk holds
//! until it is answered (invariant 7): a full queue refuses the request before anything is
//! enqueued. The queue belongs to its [`Shard`](super::Shard), so it lives exactly as long as
//! some routing snapshot names the shard; the writers that empty it are in
//! `crate::ingest::batcher`.
//!
//! It has two lanes. Requests waiting for their commit take the first; the drained parts of
//! spooled writes (chunks with a mark) the second, which writers take from only while the
//! first is empty, so a spool's backlog never queues ahead of a request that waits.

use super::applied::Mark;
use super::idempotency::KeyRecord;
use crate::routing::{Epoch, ShardId, ShardIndex};
use crate::schema::TableId;
use crate::schema::streams::StreamConflict;
use bytes::Bytes;
use std::sync::Arc;
use thiserror::Error;
use tokio::sync::mpsc::error::TryRecvError;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot};
use tokio::time::Instant;

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
        /// The SQLSTATE Postgres gave (class 22, data exception, or 23, integrity
        /// constraint violation).
        sqlstate: String,
        /// Postgres's message.
        message: String,
    },
    /// A stream table's rows do not append to their stream as its next versions; nothing of
    /// the request's rows on that shard was stored.
    #[error("shard {shard} refused the append: {conflict}")]
    StreamConflict {
        /// The stream's shard.
        shard: ShardId,
        /// The stream, the version given and the stream's last one.
        conflict: StreamConflict,
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
            WriteError::StreamConflict { .. } => "stream_conflict",
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

/// Queue limits of every (shard, table) queue.
#[derive(Debug, Clone, Copy)]
pub struct QueueLimits {
    /// Rows per queue.
    pub max_rows: usize,
    /// Encoded bytes per queue.
    pub max_bytes: usize,
}

impl QueueLimits {
    /// Refuses `rows` rows of `bytes` bytes for `shard` that no queue could ever hold.
    pub fn fit(&self, shard: impl FnOnce() -> ShardId, rows: usize, bytes: usize) -> Result<(), SubmitError> {
        if rows > self.max_rows || bytes > self.max_bytes {
            return Err(SubmitError::TooLarge {
                shard: shard(),
                rows,
                bytes,
            });
        }
        Ok(())
    }
}

/// One request's rows for one shard, waiting to be written.
pub struct Chunk {
    /// The rows' table.
    pub table: TableId,
    /// Epoch of the snapshot that routed them, checked against the shard's fence.
    pub epoch: Epoch,
    /// The rows as binary COPY tuples.
    pub tuples: Bytes,
    /// How many rows `tuples` holds.
    pub rows: usize,
    /// When the chunk was queued.
    pub enqueued_at: Instant,
    /// When its request stops waiting.
    pub deadline: Instant,
    /// For a drained part of a spooled write, the mark its batch inserts with the rows.
    pub mark: Option<Mark>,
    /// For a write sent with an idempotency key, the record its batch inserts with the rows.
    pub record: Option<Arc<KeyRecord>>,
    /// For a stream table, whether these are copies of rows in ranges being copied to this
    /// shard, whose versions their owner checks (this shard may not hold the stream yet).
    pub stream_copy: bool,
    reply: oneshot::Sender<Result<(), WriteError>>,
    /// Queue space held until the chunk is answered.
    _permits: (OwnedSemaphorePermit, OwnedSemaphorePermit),
}

impl Chunk {
    /// Whether the request stopped waiting for the answer (its deadline passed).
    pub fn is_abandoned(&self) -> bool {
        self.reply.is_closed()
    }

    /// Tells the request how its rows fared and frees their queue space.
    pub fn answer(self, outcome: Result<(), WriteError>) {
        // The requester may have stopped waiting; its rows' fate is then reported by the deadline.
        let _ = self.reply.send(outcome);
    }
}

/// A queued write to one shard; resolves when its rows have committed or failed.
pub struct PendingWrite {
    /// The shard's index in the snapshot that routed the rows.
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

/// The receiving half of a shard's queue, handed to its writers: both lanes, the waiting
/// requests' first.
pub struct QueueReceiver {
    waiting: mpsc::UnboundedReceiver<Chunk>,
    drained: mpsc::UnboundedReceiver<Chunk>,
}

impl QueueReceiver {
    /// The next chunk, a waiting request's before any drained part; `None` once the queue is
    /// closed and empty.
    pub async fn recv(&mut self) -> Option<Chunk> {
        tokio::select! {
            biased;
            Some(chunk) = self.waiting.recv() => Some(chunk),
            Some(chunk) = self.drained.recv() => Some(chunk),
            else => None,
        }
    }

    /// The next chunk if one is queued, a waiting request's first; `Disconnected` once the
    /// queue is closed and empty.
    pub fn try_recv(&mut self) -> Result<Chunk, TryRecvError> {
        match self.waiting.try_recv() {
            Ok(chunk) => Ok(chunk),
            Err(waiting) => match (waiting, self.drained.try_recv()) {
                (_, Ok(chunk)) => Ok(chunk),
                (TryRecvError::Disconnected, Err(TryRecvError::Disconnected)) => {
                    Err(TryRecvError::Disconnected)
                }
                _ => Err(TryRecvError::Empty),
            },
        }
    }

    /// Refuses new chunks; those queued are still received.
    pub fn close(&mut self) {
        self.waiting.close();
        self.drained.close();
    }
}

/// The sending half of one shard's queue with the space left per table.
pub struct WriteQueue {
    waiting: mpsc::UnboundedSender<Chunk>,
    drained: mpsc::UnboundedSender<Chunk>,
    budgets: Vec<QueueBudget>,
}

/// What every chunk of one request shares.
#[derive(Debug, Clone, Copy)]
pub struct RequestChunks {
    /// The rows' table.
    pub table: TableId,
    /// Epoch of the snapshot that routed them.
    pub epoch: Epoch,
    /// When the request's rows were queued.
    pub enqueued_at: Instant,
    /// When the request stops waiting.
    pub deadline: Instant,
    /// For a drained part of a spooled write, its mark.
    pub mark: Option<Mark>,
}

/// What one chunk carries besides its rows, apart from what every chunk of its request shares.
#[derive(Debug, Clone, Default)]
pub struct ChunkExtras {
    /// For a write sent with an idempotency key, the record its batch inserts.
    pub record: Option<Arc<KeyRecord>>,
    /// For a stream table, whether the rows are copies for a range being copied.
    pub stream_copy: bool,
}

/// Queue space reserved for one request's rows on one shard, not yet sent.
pub struct Reservation {
    permits: (OwnedSemaphorePermit, OwnedSemaphorePermit),
}

impl WriteQueue {
    /// A queue for `tables` tables, each bounded by `limits`, and its receiving half.
    pub fn new(tables: usize, limits: QueueLimits) -> (WriteQueue, QueueReceiver) {
        let (waiting, waiting_receiver) = mpsc::unbounded_channel();
        let (drained, drained_receiver) = mpsc::unbounded_channel();
        let budgets = (0..tables).map(|_| QueueBudget::new(limits)).collect();
        let receiver = QueueReceiver {
            waiting: waiting_receiver,
            drained: drained_receiver,
        };
        (
            WriteQueue {
                waiting,
                drained,
                budgets,
            },
            receiver,
        )
    }

    /// Takes room for `rows` rows of `bytes` bytes of `table`, or says why there is none.
    /// `names` gives the shard's and the table's names for the error.
    pub fn reserve(
        &self,
        table: TableId,
        rows: usize,
        bytes: usize,
        names: impl Fn() -> (ShardId, String),
    ) -> Result<Reservation, SubmitError> {
        let permits = self.budgets[table.0].reserve(rows, bytes, names)?;
        Ok(Reservation { permits })
    }

    /// Takes room for `rows` rows of `bytes` bytes of `table`, waiting for it as long as it
    /// takes (a stream that outruns its shard waits here); refuses only what no queue could
    /// ever hold.
    pub async fn reserve_waiting(
        &self,
        table: TableId,
        rows: usize,
        bytes: usize,
        names: impl Fn() -> (ShardId, String),
    ) -> Result<Reservation, SubmitError> {
        let permits = self.budgets[table.0].reserve_waiting(rows, bytes, names).await?;
        Ok(Reservation { permits })
    }

    /// Queues a chunk in reserved space; the returned write resolves when it is answered.
    pub fn send(
        &self,
        shard: (ShardIndex, &ShardId),
        request: RequestChunks,
        (tuples, rows): (Bytes, usize),
        extras: ChunkExtras,
        reservation: Reservation,
    ) -> PendingWrite {
        let (reply, receiver) = oneshot::channel();
        let chunk = Chunk {
            table: request.table,
            epoch: request.epoch,
            tuples,
            rows,
            enqueued_at: request.enqueued_at,
            deadline: request.deadline,
            mark: request.mark,
            record: extras.record,
            stream_copy: extras.stream_copy,
            reply,
            _permits: reservation.permits,
        };
        let lane = if chunk.mark.is_some() {
            &self.drained
        } else {
            &self.waiting
        };
        // A send fails only once the writers closed the queue at shutdown; the dropped reply
        // then reports it.
        let _ = lane.send(chunk);
        PendingWrite {
            shard: shard.0,
            rows,
            reply: receiver,
            shard_id: shard.1.clone(),
        }
    }

    /// Rows and bytes waiting or being written, over all tables.
    pub fn depth(&self) -> (usize, usize) {
        self.budgets.iter().fold((0, 0), |(rows, bytes), budget| {
            let (used_rows, used_bytes) = budget.used();
            (rows + used_rows, bytes + used_bytes)
        })
    }

    /// Whether writers still take from the queue.
    pub fn is_open(&self) -> bool {
        !self.waiting.is_closed()
    }
}

/// Space left in one (shard, table) queue.
struct QueueBudget {
    rows: Arc<Semaphore>,
    bytes: Arc<Semaphore>,
    limits: QueueLimits,
}

impl QueueBudget {
    fn new(limits: QueueLimits) -> QueueBudget {
        QueueBudget {
            rows: Arc::new(Semaphore::new(limits.max_rows)),
            bytes: Arc::new(Semaphore::new(limits.max_bytes)),
            limits,
        }
    }

    fn reserve(
        &self,
        rows: usize,
        bytes: usize,
        names: impl Fn() -> (ShardId, String),
    ) -> Result<(OwnedSemaphorePermit, OwnedSemaphorePermit), SubmitError> {
        self.limits.fit(|| names().0, rows, bytes)?;
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

    async fn reserve_waiting(
        &self,
        rows: usize,
        bytes: usize,
        names: impl Fn() -> (ShardId, String),
    ) -> Result<(OwnedSemaphorePermit, OwnedSemaphorePermit), SubmitError> {
        self.limits.fit(|| names().0, rows, bytes)?;
        // Both counts fit u32 (the config caps queue limits below 4Gi), and the semaphores are
        // never closed.
        let never_closed = "a queue's semaphores are never closed";
        let row_permit = self
            .rows
            .clone()
            .acquire_many_owned(rows as u32)
            .await
            .expect(never_closed);
        let byte_permit = self
            .bytes
            .clone()
            .acquire_many_owned(bytes as u32)
            .await
            .expect(never_closed);
        Ok((row_permit, byte_permit))
    }

    fn used(&self) -> (usize, usize) {
        (
            self.limits.max_rows - self.rows.available_permits(),
            self.limits.max_bytes - self.bytes.available_permits(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn limits() -> QueueLimits {
        QueueLimits {
            max_rows: 100,
            max_bytes: 1 << 20,
        }
    }

    /// Queues one row of table 0, drained from the spool when `mark` is set.
    fn queue_one(queue: &WriteQueue, mark: Option<Mark>) -> PendingWrite {
        let shard = ShardId("s0".into());
        let reservation = queue
            .reserve(TableId(0), 1, 8, || (shard.clone(), "events".into()))
            .unwrap();
        let now = Instant::now();
        let request = RequestChunks {
            table: TableId(0),
            epoch: Epoch(1),
            enqueued_at: now,
            deadline: now + Duration::from_secs(60),
            mark,
        };
        queue.send(
            (ShardIndex(0), &shard),
            request,
            (Bytes::from_static(b"tuple..."), 1),
            ChunkExtras::default(),
            reservation,
        )
    }

    fn drained_mark(seq: i64) -> Option<Mark> {
        Some(Mark {
            spool: uuid::Uuid::nil(),
            seq,
            part: 0,
        })
    }

    #[tokio::test]
    async fn a_waiting_request_is_taken_before_drained_parts_queued_earlier() {
        let (queue, mut receiver) = WriteQueue::new(1, limits());
        let _drained: Vec<_> = (0..3).map(|seq| queue_one(&queue, drained_mark(seq))).collect();
        let _waiting = queue_one(&queue, None);
        let taken = [
            receiver.recv().await.unwrap(),
            receiver.try_recv().unwrap(),
            receiver.recv().await.unwrap(),
            receiver.try_recv().unwrap(),
        ];
        let order: Vec<Option<i64>> = taken
            .iter()
            .map(|chunk| chunk.mark.map(|mark| mark.seq))
            .collect();
        assert_eq!(order, [None, Some(0), Some(1), Some(2)]);
        assert!(matches!(receiver.try_recv(), Err(TryRecvError::Empty)));
        assert_eq!(
            queue.depth().0,
            4,
            "every chunk holds its queue space until answered"
        );
    }

    #[tokio::test]
    async fn the_queue_ends_once_both_lanes_are_closed_and_empty() {
        let (queue, mut receiver) = WriteQueue::new(1, limits());
        let _drained = queue_one(&queue, drained_mark(7));
        receiver.close();
        assert!(!queue.is_open());
        assert_eq!(receiver.recv().await.unwrap().mark, drained_mark(7));
        assert!(receiver.recv().await.is_none());
        assert!(matches!(receiver.try_recv(), Err(TryRecvError::Disconnected)));
    }
}
