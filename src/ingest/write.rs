//! One write request once its body is read: decoded and routed with one routing snapshot
//! (invariant 3), queued to every shard it touches, and acknowledged only when every shard's
//! batch committed (invariant 5). It knows nothing of HTTP; the `http` layer turns its answers
//! into status codes.
//!
//! The two steps are apart on purpose: [`Writes::submit`] decodes and queues, so the caller can
//! free the request body before [`Submitted::committed`] waits for the commits.

use crate::hotkeys::HotKeyWatch;
use crate::hotkeys::cap::KeyOverLimit;
use crate::metrics::Metrics;
use crate::schema::decode::{BodyFormat, DecodeError, decode_rows};
use crate::schema::{TableId, TableSchema};
use crate::shards::queue::{PendingWrite, SubmitError, WriteError};
use crate::shards::set::Published;
use crate::units::unix_micros_now;
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use thiserror::Error;
use tokio::time::Instant;

/// The answer to a write whose rows all committed.
#[derive(Debug, Serialize)]
pub struct WriteAck {
    /// Rows in the request, retried ids included.
    pub rows: usize,
    /// Rows per shard name.
    pub shards: BTreeMap<String, usize>,
}

/// Why a write was not acknowledged.
#[derive(Debug, Error)]
pub enum WriteRefused {
    /// The body is not rows of the table; nothing was queued.
    #[error(transparent)]
    Invalid(#[from] DecodeError),
    /// A target queue is full; nothing was queued.
    #[error(transparent)]
    QueueFull(SubmitError),
    /// The rows for one shard exceed its whole queue; nothing was queued.
    #[error(transparent)]
    TooLarge(SubmitError),
    /// A key of the request is over its table's per-key rate limit; nothing was queued.
    #[error(transparent)]
    KeyOverLimit(KeyOverLimit),
    /// Some shard did not commit its rows; others may have.
    #[error("{} shard(s) did not commit", .failures.len())]
    Failed {
        /// One entry per failed shard.
        failures: Vec<WriteError>,
        /// Rows per shard that did commit.
        committed: BTreeMap<String, usize>,
    },
}

/// Where writes go: the published shard set (routing snapshot and shard queues) and the
/// metrics that count them.
pub struct Writes {
    shards: Arc<Published>,
    metrics: Arc<Metrics>,
    hot_keys: Arc<HotKeyWatch>,
    request_timeout: Duration,
}

impl Writes {
    /// Writes routed and queued by the current set of `shards`, counted for `hot_keys`; each
    /// waits at most `request_timeout`.
    pub fn new(
        shards: Arc<Published>,
        metrics: Arc<Metrics>,
        hot_keys: Arc<HotKeyWatch>,
        request_timeout: Duration,
    ) -> Writes {
        Writes {
            shards,
            metrics,
            hot_keys,
            request_timeout,
        }
    }

    /// Decodes `body` as rows of `schema`, routes them with one snapshot and queues them: all
    /// or nothing.
    pub fn submit<'a>(
        &'a self,
        table: TableId,
        schema: &'a TableSchema,
        format: BodyFormat,
        body: &[u8],
    ) -> Result<Submitted<'a>, WriteRefused> {
        let set = self.shards.load();
        let limited = self.hot_keys.limited(table);
        let limited_keys = limited.as_deref().map(|l| l.hashes()).unwrap_or_default();
        let mut encoded = decode_rows(schema, &set.table, format, body, unix_micros_now(), limited_keys)?;
        if let Some(limited) = &limited
            && let Err(over) = self.hot_keys.admit(table, limited, &encoded.limited_rows)
        {
            self.count_rejected(&schema.name, "key_over_limit", encoded.rows);
            return Err(WriteRefused::KeyOverLimit(over));
        }
        let (rows, dual_written, salted) = (encoded.rows, encoded.dual_written, encoded.salted);
        let mut keys = std::mem::take(&mut encoded.keys);
        let deadline = Instant::now() + self.request_timeout;
        let pending = set
            .submit(table, &schema.name, encoded, deadline)
            .map_err(|e| match e {
                SubmitError::QueueFull { .. } => {
                    self.count_rejected(&schema.name, "queue_full", rows);
                    WriteRefused::QueueFull(e)
                }
                SubmitError::TooLarge { .. } => WriteRefused::TooLarge(e),
            })?;
        let shard_rows = pending.iter().map(|write| (write.shard, write.rows as u64));
        self.hot_keys.record(table, &mut keys, shard_rows);
        self.metrics
            .rows_accepted
            .with_label_values(&[&schema.name])
            .inc_by(rows as u64);
        if dual_written > 0 {
            self.metrics
                .rows_dual_written
                .with_label_values(&[&schema.name])
                .inc_by(dual_written as u64);
        }
        if salted > 0 {
            self.metrics
                .rows_salted
                .with_label_values(&[&schema.name])
                .inc_by(salted as u64);
        }
        Ok(Submitted {
            writes: self,
            table: &schema.name,
            rows,
            pending,
            deadline,
        })
    }

    fn count_rejected(&self, table: &str, reason: &str, rows: usize) {
        self.metrics
            .rows_rejected
            .with_label_values(&[table, reason])
            .inc_by(rows as u64);
    }
}

/// A write whose rows are queued.
pub struct Submitted<'a> {
    writes: &'a Writes,
    table: &'a str,
    rows: usize,
    pending: Vec<PendingWrite>,
    deadline: Instant,
}

impl Submitted<'_> {
    /// Waits for every shard's rows; acknowledges only when all committed.
    pub async fn committed(self) -> Result<WriteAck, WriteRefused> {
        let timeout = self.writes.request_timeout;
        let deadline = self.deadline;
        let outcomes = futures_util::future::join_all(self.pending.into_iter().map(|write| async move {
            let (shard, rows) = (write.shard_id().clone(), write.rows);
            let outcome = tokio::time::timeout_at(deadline, write.outcome())
                .await
                .unwrap_or_else(|_| {
                    Err(WriteError::Unavailable {
                        shard: shard.clone(),
                        reason: format!(
                            "no commit within the request timeout of {}",
                            crate::units::format_duration(timeout)
                        ),
                    })
                });
            (shard, rows, outcome)
        }))
        .await;
        let mut committed = BTreeMap::new();
        let mut failures = Vec::new();
        for (shard, rows, outcome) in outcomes {
            match outcome {
                Ok(()) => {
                    committed.insert(shard.0, rows);
                }
                Err(failure) => {
                    self.writes.count_rejected(self.table, failure.reason(), rows);
                    failures.push(failure);
                }
            }
        }
        if failures.is_empty() {
            Ok(WriteAck {
                rows: self.rows,
                shards: committed,
            })
        } else {
            Err(WriteRefused::Failed { failures, committed })
        }
    }
}
