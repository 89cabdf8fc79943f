//! One write request once its body is read: decoded and routed with one routing snapshot
//! (invariant 3), queued to every shard it touches, and acknowledged only when every shard's
//! batch committed (invariant 5); or, for a write acknowledged once spooled, decoded the same
//! way and appended to the spool, answered once the spool's disk holds it. It knows nothing of
//! HTTP; the `http` layer turns its answers into status codes.
//!
//! The two steps are apart on purpose: [`Writes::submit`] decodes and queues, so the caller can
//! free the request body before [`Submitted::committed`] waits for the commits.

use super::keys::{KeyRefused, KeysInFlight};
use crate::catalog::Catalog;
use crate::hotkeys::HotKeyWatch;
use crate::hotkeys::cap::KeyOverLimit;
use crate::metrics::Metrics;
use crate::routing::{KeyHash, KeySample, ShardId, ShardIndex};
use crate::schema::decode::ShardRows;
use crate::schema::decode::copy::{CopyFormat, decode_copy};
use crate::schema::decode::values::{Value, ValueColumns, decode_values};
use crate::schema::decode::{BodyFormat, DecodeError, EncodedRows, decode_rows};
use crate::schema::tuples::Tuples;
use crate::schema::{TableId, TableSchema};
use crate::shards::idempotency::KeyRecord;
use crate::shards::queue::{PendingWrite, QueueLimits, SubmitError, WriteError};
use crate::shards::set::{Published, ShardSet};
use crate::spool::{AppendError, ReplayedPart, SpoolAppender, SpooledKey, SpooledWrite, WriteStatuses};
use crate::units::unix_micros_now;
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use thiserror::Error;
use tokio::time::Instant;
use uuid::Uuid;

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
    /// The spool holds its `max_bytes`; nothing was spooled.
    #[error(transparent)]
    SpoolFull(AppendError),
    /// The spool could not make the rows durable; nothing is known to be spooled.
    #[error("the spool could not store the rows: {0}")]
    SpoolFailed(AppendError),
    /// A write with an idempotency key cannot be written as asked; nothing was queued.
    #[error(transparent)]
    Key(#[from] KeyRefused),
    /// Some shard did not commit its rows; others may have.
    #[error("{} shard(s) did not commit", .failures.len())]
    Failed {
        /// One entry per failed shard.
        failures: Vec<WriteError>,
        /// Rows per shard that did commit.
        committed: BTreeMap<String, usize>,
    },
}

/// The answer to a write whose rows are in the spool.
#[derive(Debug, Serialize)]
pub struct SpoolAck {
    /// Rows in the request.
    pub rows: usize,
    /// The write's id, by which its rows are found in the spool and on the shards' marks.
    pub write_id: Uuid,
}

/// Where writes go: the published shard set (routing snapshot and shard queues), the spool
/// when some table may use it, and the metrics that count them.
pub struct Writes {
    shards: Arc<Published>,
    metrics: Arc<Metrics>,
    hot_keys: Arc<HotKeyWatch>,
    request_timeout: Duration,
    spool: Option<Spool>,
    keys_in_flight: KeysInFlight,
    catalog: Arc<Catalog>,
}

/// The spool's side of the write path: where records are appended, and the queue bounds each
/// part must fit to be drained.
pub struct Spool {
    /// Appends records and answers once they are durable.
    pub appender: SpoolAppender,
    /// The shards' queue bounds.
    pub queue: QueueLimits,
    /// What is known of each spooled write.
    pub statuses: Arc<WriteStatuses>,
}

/// How full the spool is.
#[derive(Debug, Clone, Copy)]
pub struct SpoolUse {
    /// Bytes its segments hold.
    pub bytes: u64,
    /// Most it may hold.
    pub max_bytes: u64,
}

impl SpoolUse {
    /// Whether a request of `body_bytes` still fits (its record is no larger than its body
    /// in the common case; the spool refuses the one that does not).
    pub fn has_room(&self, body_bytes: usize) -> bool {
        self.bytes + body_bytes as u64 <= self.max_bytes
    }
}

impl Writes {
    /// Writes routed and queued by the current set of `shards`, counted for `hot_keys`; each
    /// waits at most `request_timeout`. The `catalog` holds the idempotency keys spooled
    /// writes claimed.
    pub fn new(
        shards: Arc<Published>,
        metrics: Arc<Metrics>,
        hot_keys: Arc<HotKeyWatch>,
        request_timeout: Duration,
        spool: Option<Spool>,
        catalog: Arc<Catalog>,
    ) -> Writes {
        Writes {
            shards,
            metrics,
            hot_keys,
            request_timeout,
            spool,
            keys_in_flight: KeysInFlight::default(),
            catalog,
        }
    }

    /// The idempotency keys whose writes this process is writing now.
    pub fn keys_in_flight(&self) -> &KeysInFlight {
        &self.keys_in_flight
    }

    /// The published shard set writes are routed with.
    pub(super) fn shards(&self) -> &Published {
        &self.shards
    }

    /// The catalog, which holds the idempotency keys spooled writes claimed.
    pub(super) fn catalog(&self) -> &Catalog {
        &self.catalog
    }

    /// Decodes `body` as rows of `schema`, routes them with one snapshot and queues them: all
    /// or nothing.
    pub fn submit(
        &self,
        table: TableId,
        schema: &TableSchema,
        format: BodyFormat,
        body: &[u8],
    ) -> Result<Submitted, WriteRefused> {
        let set = self.shards.load();
        let encoded = self.decode(table, schema, |limited| {
            decode_rows(schema, &set.table, format, body, unix_micros_now(), limited)
        })?;
        self.queue_now(&set, table, schema, encoded)
    }

    /// Decodes `data`, whole records of a COPY stream in `format` filling `columns`, routes
    /// them with one snapshot and queues them, waiting for room in full queues rather than
    /// refusing: the caller stops reading its stream meanwhile, which is the back-pressure.
    pub async fn submit_copy(
        &self,
        table: TableId,
        schema: &TableSchema,
        format: &CopyFormat,
        columns: &[usize],
        data: &[u8],
    ) -> Result<Submitted, WriteRefused> {
        let set = self.shards.load();
        let encoded = self.decode_copy(&set, table, schema, format, columns, data)?;
        self.queue_waiting(&set, table, schema, encoded).await
    }

    /// Checks whole records of a COPY stream as [`Writes::submit_copy`] would, without
    /// queueing them, and returns how many rows they are: what a transaction block stages
    /// until its `COMMIT`.
    pub fn check_copy(
        &self,
        schema: &TableSchema,
        format: &CopyFormat,
        columns: &[usize],
        data: &[u8],
    ) -> Result<usize, WriteRefused> {
        let set = self.shards.load();
        let encoded = decode_copy(schema, &set.table, format, columns, data, unix_micros_now(), &[])?;
        Ok(encoded.rows)
    }

    /// Encodes `rows` of values filling `columns` (an `INSERT`'s), routes them with one
    /// snapshot and queues them: all or nothing, refused at once when a queue is full.
    pub fn submit_values<'v>(
        &self,
        table: TableId,
        schema: &TableSchema,
        columns: ValueColumns<'_>,
        rows: impl ExactSizeIterator<Item = &'v [Value<'v>]>,
    ) -> Result<Submitted, WriteRefused> {
        let set = self.shards.load();
        let encoded = self.decode_values(&set, table, schema, columns, rows)?;
        self.queue_now(&set, table, schema, encoded)
    }

    /// Like [`Writes::submit_values`], but waits for room in full queues rather than
    /// refusing: how a transaction block's rows are written at its `COMMIT`.
    pub async fn submit_values_waiting<'v>(
        &self,
        table: TableId,
        schema: &TableSchema,
        columns: ValueColumns<'_>,
        rows: impl ExactSizeIterator<Item = &'v [Value<'v>]>,
    ) -> Result<Submitted, WriteRefused> {
        let set = self.shards.load();
        let encoded = self.decode_values(&set, table, schema, columns, rows)?;
        self.queue_waiting(&set, table, schema, encoded).await
    }

    /// Checks `rows` of values as [`Writes::submit_values`] would, without queueing them,
    /// and returns the values of `columns.returning`: what a transaction block stages until
    /// its `COMMIT`.
    pub fn check_values<'v>(
        &self,
        schema: &TableSchema,
        columns: ValueColumns<'_>,
        rows: impl ExactSizeIterator<Item = &'v [Value<'v>]>,
    ) -> Result<Vec<Option<Vec<u8>>>, WriteRefused> {
        let set = self.shards.load();
        let encoded = decode_values(schema, &set.table, columns, rows, unix_micros_now(), &[])?;
        Ok(encoded.returned)
    }

    /// Queues decoded rows routed with `set`, refusing at once when a queue is full.
    fn queue_now(
        &self,
        set: &Arc<ShardSet>,
        table: TableId,
        schema: &TableSchema,
        encoded: EncodedRows,
    ) -> Result<Submitted, WriteRefused> {
        self.queue_recorded(set, table, schema, encoded, |_| None)
    }

    /// [`Writes::queue_now`], each shard's rows carrying the record `record` gives for it.
    pub(super) fn queue_recorded(
        &self,
        set: &Arc<ShardSet>,
        table: TableId,
        schema: &TableSchema,
        mut encoded: EncodedRows,
        record: impl Fn(ShardIndex) -> Option<Arc<KeyRecord>>,
    ) -> Result<Submitted, WriteRefused> {
        let counts = Counts::of(&mut encoded);
        let returned = std::mem::take(&mut encoded.returned);
        let copies = StreamCopies::take((set, &self.shards), (table, schema), &mut encoded);
        let deadline = Instant::now() + self.request_timeout;
        let pending = set
            .submit_recorded(table, &schema.name, encoded, deadline, record)
            .map_err(|e| self.refused_by_queue(&schema.name, counts.rows, e))?;
        let mut submitted = self.submitted(table, schema, counts, pending, deadline);
        submitted.returned = returned;
        submitted.copies = copies;
        Ok(submitted)
    }

    /// Queues decoded rows routed with `set`, waiting for room in full queues up to the
    /// request timeout.
    async fn queue_waiting(
        &self,
        set: &Arc<ShardSet>,
        table: TableId,
        schema: &TableSchema,
        mut encoded: EncodedRows,
    ) -> Result<Submitted, WriteRefused> {
        let counts = Counts::of(&mut encoded);
        let returned = std::mem::take(&mut encoded.returned);
        let copies = StreamCopies::take((set, &self.shards), (table, schema), &mut encoded);
        let pending = set
            .submit_waiting(table, &schema.name, encoded, self.request_timeout)
            .await
            .map_err(|e| self.refused_by_queue(&schema.name, counts.rows, e))?;
        let deadline = Instant::now() + self.request_timeout;
        let mut submitted = self.submitted(table, schema, counts, pending, deadline);
        submitted.returned = returned;
        submitted.copies = copies;
        Ok(submitted)
    }

    fn refused_by_queue(&self, table: &str, rows: usize, refusal: SubmitError) -> WriteRefused {
        match refusal {
            SubmitError::QueueFull { .. } => {
                self.count_rejected(table, "queue_full", rows);
                WriteRefused::QueueFull(refusal)
            }
            SubmitError::TooLarge { .. } => WriteRefused::TooLarge(refusal),
        }
    }

    /// Counts a queued request's rows and keys, and waits for them with [`Submitted`].
    fn submitted(
        &self,
        table: TableId,
        schema: &TableSchema,
        mut counts: Counts,
        pending: Vec<PendingWrite>,
        deadline: Instant,
    ) -> Submitted {
        let shard_rows = pending.iter().map(|write| (write.shard, write.rows as u64));
        self.hot_keys.record(table, &mut counts.keys, shard_rows);
        let name = [schema.name.as_str()];
        self.metrics
            .rows_accepted
            .with_label_values(&name)
            .inc_by(counts.rows as u64);
        if counts.dual_written > 0 {
            self.metrics
                .rows_dual_written
                .with_label_values(&name)
                .inc_by(counts.dual_written as u64);
        }
        if counts.salted > 0 {
            self.metrics
                .rows_salted
                .with_label_values(&name)
                .inc_by(counts.salted as u64);
        }
        Submitted {
            metrics: self.metrics.clone(),
            request_timeout: self.request_timeout,
            table: schema.name.clone(),
            rows: counts.rows,
            pending,
            deadline,
            returned: Vec::new(),
            copies: None,
        }
    }

    /// Decodes `body` as rows of `schema` like [`Writes::submit`], and makes the record that
    /// keeps them in the spool: nothing is spooled until [`Spooling::durable`].
    pub fn spool<'a>(
        &'a self,
        table: TableId,
        schema: &'a TableSchema,
        format: BodyFormat,
        body: &[u8],
    ) -> Result<Spooling<'a>, WriteRefused> {
        self.spool_replaying(table, schema, format, body, None)
    }

    /// [`Writes::spool`] for the replay of a dead letter (a body of its one row): the record
    /// names the part that first held the row, whose mark its part takes.
    pub fn spool_replaying<'a>(
        &'a self,
        table: TableId,
        schema: &'a TableSchema,
        format: BodyFormat,
        body: &[u8],
        replays: Option<ReplayedPart>,
    ) -> Result<Spooling<'a>, WriteRefused> {
        let set = self.shards.load();
        let encoded = self.decode(table, schema, |limited| {
            decode_rows(schema, &set.table, format, body, unix_micros_now(), limited)
        })?;
        self.spool_encoded(&set, table, schema, encoded, replays, None)
    }

    /// Decodes whole records of a COPY stream like [`Writes::submit_copy`], and makes the
    /// record that keeps them in the spool.
    pub fn spool_copy<'a>(
        &'a self,
        table: TableId,
        schema: &'a TableSchema,
        format: &CopyFormat,
        columns: &[usize],
        data: &[u8],
    ) -> Result<Spooling<'a>, WriteRefused> {
        let set = self.shards.load();
        let encoded = self.decode_copy(&set, table, schema, format, columns, data)?;
        self.spool_encoded(&set, table, schema, encoded, None, None)
    }

    /// Encodes rows of values like [`Writes::submit_values`], and makes the record that keeps
    /// them in the spool.
    pub fn spool_values<'a, 'v>(
        &'a self,
        table: TableId,
        schema: &'a TableSchema,
        columns: ValueColumns<'_>,
        rows: impl ExactSizeIterator<Item = &'v [Value<'v>]>,
    ) -> Result<Spooling<'a>, WriteRefused> {
        let set = self.shards.load();
        let encoded = self.decode_values(&set, table, schema, columns, rows)?;
        self.spool_encoded(&set, table, schema, encoded, None, None)
    }

    /// The spool record of rows decoded and routed with `set`, checked to fit the queues it
    /// will be drained into, its keys counted for the hot-key watch; it names the dead letter
    /// it `replays` and the idempotency `key` it was sent with, if any.
    pub(super) fn spool_encoded<'a>(
        &'a self,
        set: &ShardSet,
        table: TableId,
        schema: &'a TableSchema,
        mut encoded: EncodedRows,
        replays: Option<ReplayedPart>,
        key: Option<SpooledKey>,
    ) -> Result<Spooling<'a>, WriteRefused> {
        let spool = self.spool.as_ref().expect("a table that may spool has a spool");
        let returned = std::mem::take(&mut encoded.returned);
        let mut write = SpooledWrite::from_encoded(Uuid::now_v7(), schema, &set.table, &mut encoded);
        write.replays = replays;
        write.key = key;
        for part in &write.parts {
            let shard = || ShardId(part.shard.clone());
            spool
                .queue
                .fit(shard, part.rows, part.tuples.len())
                .map_err(WriteRefused::TooLarge)?;
        }
        let mut keys = std::mem::take(&mut encoded.keys);
        let shard_rows = encoded
            .shards
            .iter()
            .enumerate()
            .map(|(i, s)| (ShardIndex(i), s.rows as u64));
        self.hot_keys.record(table, &mut keys, shard_rows);
        Ok(Spooling {
            writes: self,
            appender: spool.appender.clone(),
            table: &schema.name,
            rows: encoded.rows,
            write_id: write.write_id,
            payload: write.encode(),
            returned,
        })
    }

    /// How full the spool is; `None` without a spool.
    pub fn spool_use(&self) -> Option<SpoolUse> {
        self.spool.as_ref().map(|spool| SpoolUse {
            bytes: spool.appender.bytes(),
            max_bytes: spool.appender.max_bytes(),
        })
    }

    /// What the spool knows of the writes it holds or wrote lately; `None` without a spool.
    pub fn statuses(&self) -> Option<&WriteStatuses> {
        self.spool.as_ref().map(|spool| spool.statuses.as_ref())
    }

    /// Decodes whole records of a COPY stream, routed with `set`.
    pub(super) fn decode_copy(
        &self,
        set: &ShardSet,
        table: TableId,
        schema: &TableSchema,
        format: &CopyFormat,
        columns: &[usize],
        data: &[u8],
    ) -> Result<EncodedRows, WriteRefused> {
        self.decode(table, schema, |limited| {
            decode_copy(
                schema,
                &set.table,
                format,
                columns,
                data,
                unix_micros_now(),
                limited,
            )
        })
    }

    /// Encodes rows of values, routed with `set`.
    pub(super) fn decode_values<'v>(
        &self,
        set: &ShardSet,
        table: TableId,
        schema: &TableSchema,
        columns: ValueColumns<'_>,
        rows: impl ExactSizeIterator<Item = &'v [Value<'v>]>,
    ) -> Result<EncodedRows, WriteRefused> {
        self.decode(table, schema, |limited| {
            decode_values(schema, &set.table, columns, rows, unix_micros_now(), limited)
        })
    }

    /// Decodes rows with `decode`, given the keys of `table` whose rows are counted for their
    /// rate cap, and refuses them when a key is over it.
    pub(super) fn decode(
        &self,
        table: TableId,
        schema: &TableSchema,
        decode: impl FnOnce(&[KeyHash]) -> Result<EncodedRows, DecodeError>,
    ) -> Result<EncodedRows, WriteRefused> {
        let limited = self.hot_keys.limited(table);
        let limited_keys = limited.as_deref().map(|l| l.hashes()).unwrap_or_default();
        let encoded = decode(limited_keys)?;
        if let Some(limited) = &limited
            && let Err(over) = self.hot_keys.admit(table, limited, &encoded.limited_rows)
        {
            self.count_rejected(&schema.name, "key_over_limit", encoded.rows);
            return Err(WriteRefused::KeyOverLimit(over));
        }
        Ok(encoded)
    }

    fn count_rejected(&self, table: &str, reason: &str, rows: usize) {
        self.metrics
            .rows_rejected
            .with_label_values(&[table, reason])
            .inc_by(rows as u64);
    }
}

/// What a decoded request counts for the metrics and the hot-key watch.
struct Counts {
    rows: usize,
    dual_written: usize,
    salted: usize,
    keys: KeySample,
}

impl Counts {
    /// The counts of `encoded`, whose key sample is taken.
    fn of(encoded: &mut EncodedRows) -> Counts {
        Counts {
            rows: encoded.rows,
            dual_written: encoded.dual_written,
            salted: encoded.salted,
            keys: std::mem::take(&mut encoded.keys),
        }
    }
}

/// A write whose rows are decoded into a spool record, not yet appended.
pub struct Spooling<'a> {
    writes: &'a Writes,
    appender: SpoolAppender,
    table: &'a str,
    rows: usize,
    write_id: Uuid,
    payload: Vec<u8>,
    returned: Vec<Option<Vec<u8>>>,
}

impl Spooling<'_> {
    /// Takes the values of the columns its source asked to have returned, row after row.
    pub fn take_returned(&mut self) -> Vec<Option<Vec<u8>>> {
        std::mem::take(&mut self.returned)
    }

    /// Appends the record and answers once the spool's disk holds it.
    pub async fn durable(self) -> Result<SpoolAck, WriteRefused> {
        let rows = self.rows;
        match self.appender.append(self.payload).await {
            Ok(_) => {
                let metrics = &self.writes.metrics;
                metrics
                    .rows_accepted
                    .with_label_values(&[self.table])
                    .inc_by(rows as u64);
                metrics
                    .spool_rows
                    .with_label_values(&[self.table, "spooled"])
                    .inc_by(rows as u64);
                Ok(SpoolAck {
                    rows,
                    write_id: self.write_id,
                })
            }
            Err(full @ AppendError::Full { .. }) => {
                self.writes.count_rejected(self.table, "spool_full", rows);
                Err(WriteRefused::SpoolFull(full))
            }
            Err(error) => {
                self.writes.count_rejected(self.table, "spool_failed", rows);
                Err(WriteRefused::SpoolFailed(error))
            }
        }
    }
}

/// A write whose rows are queued.
pub struct Submitted {
    metrics: Arc<Metrics>,
    request_timeout: Duration,
    table: String,
    rows: usize,
    pending: Vec<PendingWrite>,
    deadline: Instant,
    returned: Vec<Option<Vec<u8>>>,
    copies: Option<StreamCopies>,
}

/// A stream table's copies of rows in ranges being copied, held back until their owners
/// committed them (see [`EncodedRows::copies`]).
struct StreamCopies {
    set: Arc<ShardSet>,
    /// The routing as it changes, for copies a cutover fenced out.
    published: Arc<Published>,
    table: TableId,
    /// The table's schema, to read the copies' tuples again.
    schema: TableSchema,
    /// At index `owner * shards + target`.
    copies: Vec<ShardRows>,
}

impl StreamCopies {
    /// Takes the copies out of `encoded`, if it has any.
    fn take(
        (set, published): (&Arc<ShardSet>, &Arc<Published>),
        (table, schema): (TableId, &TableSchema),
        encoded: &mut EncodedRows,
    ) -> Option<StreamCopies> {
        let copies = std::mem::take(&mut encoded.copies);
        copies.iter().any(|c| c.rows > 0).then(|| StreamCopies {
            set: set.clone(),
            published: published.clone(),
            table,
            schema: schema.clone(),
            copies,
        })
    }

    /// Queues the copies of rows whose owner is in `committed`, then waits for them all until
    /// the request's `deadline`; returns each copy's target, rows and outcome. A copy the
    /// cutover fenced out on its target (its owner committed just before) is written again
    /// with the routing that followed ([`StreamCopies::rerouted`]).
    async fn write(
        self,
        committed: &[ShardIndex],
        deadline: Instant,
    ) -> Vec<(ShardId, usize, Result<(), WriteError>)> {
        let (shards, schema) = (self.set.len(), &self.schema);
        let mut queued = Vec::new();
        let mut outcomes = Vec::new();
        for (index, rows) in self.copies.iter().enumerate() {
            let (owner, target) = (ShardIndex(index / shards), ShardIndex(index % shards));
            if rows.rows == 0 || !committed.contains(&owner) {
                continue;
            }
            let (shard, count) = (self.set.get(target).id.clone(), rows.rows);
            let left = deadline.saturating_duration_since(Instant::now());
            let submit = self
                .set
                .submit_stream_copy(target, (self.table, &schema.name), copy_of(rows), left);
            let reason = match tokio::time::timeout_at(deadline, submit).await {
                Ok(Ok(pending)) => {
                    queued.push((shard, rows, pending));
                    continue;
                }
                Ok(Err(refused)) => refused.to_string(),
                Err(_) => "no room for the copy in its queue within the request timeout".into(),
            };
            outcomes.push((
                shard.clone(),
                count,
                Err(WriteError::Unavailable { shard, reason }),
            ));
        }
        let this = &self;
        let waits = queued.into_iter().map(|(shard, rows, pending)| async move {
            let outcome = match copy_outcome(&shard, pending, deadline).await {
                Err(WriteError::RoutingChanged { .. }) => this.rerouted(&shard, rows, deadline).await,
                outcome => outcome,
            };
            (shard, rows.rows, outcome)
        });
        outcomes.extend(futures_util::future::join_all(waits).await);
        outcomes
    }

    /// A copy to `target` that the cutover fenced out, written again once this proxy routes
    /// with the routing that followed: the rows `target` owns now (or is copied) go to it;
    /// those another shard owns (the migration was given up) are on that owner already.
    async fn rerouted(
        &self,
        target: &ShardId,
        rows: &ShardRows,
        deadline: Instant,
    ) -> Result<(), WriteError> {
        let fenced_out = || {
            WriteError::Unavailable {
            shard: target.clone(),
            reason: "the range's cutover fenced out the copy and the routing that followed did not arrive within the request timeout".into(),
        }
        };
        let set = loop {
            let set = self.published.load();
            if set.epoch() > self.set.epoch() {
                break set;
            }
            if Instant::now() >= deadline {
                return Err(fenced_out());
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        };
        let Some((index, _)) = set.iter().find(|(_, shard)| shard.id == *target) else {
            return Ok(());
        };
        let mut kept = ShardRows::default();
        for tuple in Tuples::new(&rows.tuples, &self.schema) {
            let tuple = tuple.expect("tuples the decoder encoded are whole");
            let (owner, also) = set.table.place_position(tuple.position);
            if owner == index || also == Some(index) {
                kept.tuples.extend_from_slice(tuple.bytes);
                kept.rows += 1;
            }
        }
        if kept.rows == 0 {
            return Ok(());
        }
        let left = deadline.saturating_duration_since(Instant::now());
        let submit = set.submit_stream_copy(index, (self.table, &self.schema.name), kept, left);
        match tokio::time::timeout_at(deadline, submit).await {
            Ok(Ok(pending)) => copy_outcome(target, pending, deadline).await,
            Ok(Err(refused)) => Err(WriteError::Unavailable {
                shard: target.clone(),
                reason: refused.to_string(),
            }),
            Err(_) => Err(fenced_out()),
        }
    }
}

/// Another copy of `rows`, kept to write them again when a cutover fences them out.
fn copy_of(rows: &ShardRows) -> ShardRows {
    ShardRows {
        tuples: rows.tuples.clone(),
        rows: rows.rows,
    }
}

/// What became of a copy queued on `shard`, waited for until `deadline`.
async fn copy_outcome(shard: &ShardId, pending: PendingWrite, deadline: Instant) -> Result<(), WriteError> {
    tokio::time::timeout_at(deadline, pending.outcome())
        .await
        .unwrap_or_else(|_| {
            Err(WriteError::Unavailable {
                shard: shard.clone(),
                reason: "no commit of the copy within the request timeout".into(),
            })
        })
}

impl Submitted {
    /// Rows of the write.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Takes the values of the columns its source asked to have returned, row after row.
    pub fn take_returned(&mut self) -> Vec<Option<Vec<u8>>> {
        std::mem::take(&mut self.returned)
    }

    /// Waits for every shard's rows; acknowledges only when all committed. A stream table's
    /// copies for ranges being copied are written once their owners committed.
    pub async fn committed(self) -> Result<WriteAck, WriteRefused> {
        let timeout = self.request_timeout;
        let deadline = self.deadline;
        let outcomes = futures_util::future::join_all(self.pending.into_iter().map(|write| async move {
            let (index, shard, rows) = (write.shard, write.shard_id().clone(), write.rows);
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
            (index, shard, rows, outcome)
        }))
        .await;
        let owners_committed: Vec<ShardIndex> = outcomes
            .iter()
            .filter(|(.., outcome)| outcome.is_ok())
            .map(|(index, ..)| *index)
            .collect();
        let mut committed = BTreeMap::new();
        let mut failures = Vec::new();
        let mut note =
            |shard: ShardId, rows: usize, outcome: Result<(), WriteError>, copy: bool| match outcome {
                Ok(()) if !copy => {
                    committed.insert(shard.0, rows);
                }
                Ok(()) => {}
                Err(failure) => {
                    self.metrics
                        .rows_rejected
                        .with_label_values(&[self.table.as_str(), failure.reason()])
                        .inc_by(rows as u64);
                    failures.push(failure);
                }
            };
        for (_, shard, rows, outcome) in outcomes {
            note(shard, rows, outcome, false);
        }
        if let Some(copies) = self.copies {
            for (shard, rows, outcome) in copies.write(&owners_committed, deadline).await {
                note(shard, rows, outcome, true);
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
