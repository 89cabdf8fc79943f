//! The shards' writer tasks and group commit.
//!
//! Requests queue their rows on each shard's [`WriteQueue`](crate::shards::queue::WriteQueue);
//! the writers here empty it. Each shard has `connections_per_shard` writer tasks; the one
//! holding the queue collects chunks, releases the queue to the next writer and flushes.
//! Batching is natural: a batch leaves at once while another writer is idle, and grows (up to
//! `max_rows`, `max_bytes` or `max_delay`) only while every other connection is busy, so a
//! lightly loaded shard answers in one commit and a saturated one writes large COPYs. One slow
//! shard never blocks another's queue. A batch Postgres rejects for its data is split until the
//! offending request is isolated; the others still commit.
//!
//! A shard's writers start when the shard joins a routing snapshot ([`Writers`] is the
//! [`StartWriters`] of [`Published`](crate::shards::set::Published)) and stop once its queue is
//! closed and empty: when no snapshot names the shard any more, or at shutdown.

mod writer;

use super::copy::TableStatements;
use crate::catalog::watch::RefreshHandle;
use crate::config::BatchConfig;
use crate::metrics::Metrics;
use crate::shards::Shard;
use crate::shards::queue::QueueReceiver;
use crate::shards::set::StartWriters;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Everything the writer tasks need.
pub struct WriterSettings {
    /// Statements per table, indexed by [`crate::schema::TableId`].
    pub statements: Arc<Vec<TableStatements>>,
    /// Table names, indexed by [`crate::schema::TableId`], for logs and metrics.
    pub table_names: Arc<Vec<String>>,
    /// Flush triggers.
    pub batch: BatchConfig,
    /// Writer tasks per shard.
    pub connections_per_shard: usize,
    /// Asks for routing to be re-read when a fence disagrees.
    pub refresh: RefreshHandle,
    /// Batch and commit metrics.
    pub metrics: Arc<Metrics>,
}

/// Starts and tracks every shard's writers.
pub struct Writers {
    settings: Arc<WriterSettings>,
    drain: CancellationToken,
    close: CancellationToken,
    tasks: TaskTracker,
}

impl Writers {
    /// Writers that flush at once, without waiting for `max_delay`, after `drain` is
    /// cancelled, and that close their queues, write what is in them and stop after `close` is
    /// (no request may queue rows after that).
    pub fn new(settings: WriterSettings, drain: CancellationToken, close: CancellationToken) -> Writers {
        Writers {
            settings: Arc::new(settings),
            drain,
            close,
            tasks: TaskTracker::new(),
        }
    }

    /// Every writer task started so far and later, to wait for at shutdown.
    pub fn tasks(&self) -> TaskTracker {
        self.tasks.clone()
    }
}

impl StartWriters for Writers {
    fn start(&self, shard: &Shard, receiver: QueueReceiver) {
        writer::spawn_writers(
            &self.settings,
            shard,
            receiver,
            (&self.drain, &self.close),
            &self.tasks,
        );
    }
}
