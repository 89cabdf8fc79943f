//! One epoch-stamped view of the shards: each routing snapshot published together with the
//! shards it names, and the lock-free holder of the current one.
//!
//! A request loads one [`ShardSet`] and finds in it every shard its rows route to: the routing
//! table's [`ShardIndex`] is an index into the same set's shards (invariant 3). A shard that joins
//! is opened (pools, queue, and writers through [`StartWriters`]) while [`Published::assemble`]
//! builds the next set, before [`Published::publish`] makes any request see it. A shard that
//! leaves is dropped with the last set that names it: its queue then closes and its writers
//! drain it and stop. Loading is an arc-swap load; only publishing, which is rare, serialises.

use super::applied::Mark;
use super::idempotency::{self, KeyRecord};
use super::queue::{ChunkExtras, PendingWrite, QueueReceiver, RequestChunks, Reservation, SubmitError};
use super::{Shard, ShardEndpoint, ShardError, ShardSettings};
use crate::routing::{Epoch, RoutingTable, ShardId, ShardIndex};
use crate::schema::decode::{EncodedRows, ShardRows};
use crate::schema::{TableId, Tables};
use arc_swap::ArcSwap;
use bytes::Bytes;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use thiserror::Error;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// First and longest wait between attempts to prepare a shard that was unreachable.
const PREPARE_RETRY_MIN: Duration = Duration::from_millis(500);
const PREPARE_RETRY_MAX: Duration = Duration::from_secs(10);

/// A routing table could not be published.
#[derive(Debug, Error)]
pub enum PublishError {
    /// A newer or equal epoch is already published.
    #[error("routing epoch {offered} is not newer than the current epoch {current}")]
    Stale {
        /// Epoch of the table being published.
        offered: Epoch,
        /// Epoch already published.
        current: Epoch,
    },
    /// The table names a shard without saying how to connect to it.
    #[error("the routing table names shard {0}, for which no connection settings were given")]
    NoEndpoint(ShardId),
    /// A joining shard could not be opened.
    #[error(transparent)]
    Shard(#[from] ShardError),
}

/// Starts the writer tasks that empty a shard's queue. They must run until the queue closes,
/// which it does once no published set names the shard any more (or at shutdown).
pub trait StartWriters: Send + Sync {
    /// Starts `shard`'s writers, taking from `receiver`.
    fn start(&self, shard: &Shard, receiver: QueueReceiver);
}

/// One routing snapshot and every shard it names, at the table's indexes.
pub struct ShardSet {
    /// The routing table.
    pub table: Arc<RoutingTable>,
    shards: Vec<Arc<Shard>>,
    weights: Vec<u32>,
    /// Per shard, the ranges whose rows this routing places on it, as an idempotency record
    /// stores them: worked out the first time a keyed write asks, then shared.
    placed: std::sync::OnceLock<Vec<Arc<[i64]>>>,
}

impl ShardSet {
    /// The routing table's epoch.
    pub fn epoch(&self) -> Epoch {
        self.table.epoch
    }

    /// The ranges whose rows this routing places on the shard at `index`, as an idempotency
    /// record's `covers` holds them.
    pub fn placed_intervals(&self, index: ShardIndex) -> Arc<[i64]> {
        let placed = self.placed.get_or_init(|| {
            (0..self.shards.len())
                .map(|i| idempotency::placed_intervals(&self.table, ShardIndex(i)).into())
                .collect()
        });
        placed[index.0].clone()
    }

    /// The shard at `index` of this snapshot.
    pub fn get(&self, index: ShardIndex) -> &Shard {
        &self.shards[index.0]
    }

    /// The weight the catalog gives the shard at `index`.
    pub fn weight(&self, index: ShardIndex) -> u32 {
        self.weights[index.0]
    }

    /// Every shard with its index.
    pub fn iter(&self) -> impl Iterator<Item = (ShardIndex, &Shard)> {
        self.shards
            .iter()
            .enumerate()
            .map(|(i, shard)| (ShardIndex(i), shard.as_ref()))
    }

    /// Number of shards.
    pub fn len(&self) -> usize {
        self.shards.len()
    }

    /// Whether the set has no shard (never, for a valid routing table).
    pub fn is_empty(&self) -> bool {
        self.shards.is_empty()
    }

    /// Queues a decoded request's rows, routed with this set's table, on every shard they go to:
    /// all or nothing. Fails at once, before anything is queued, when a queue lacks room.
    pub fn submit(
        &self,
        table: TableId,
        table_name: &str,
        rows: EncodedRows,
        deadline: Instant,
    ) -> Result<Vec<PendingWrite>, SubmitError> {
        self.submit_recorded(table, table_name, rows, deadline, |_| None)
    }

    /// [`ShardSet::submit`], each shard's rows carrying the record `record` gives for its
    /// index, which their batch inserts with them.
    pub fn submit_recorded(
        &self,
        table: TableId,
        table_name: &str,
        rows: EncodedRows,
        deadline: Instant,
        record: impl Fn(ShardIndex) -> Option<Arc<KeyRecord>>,
    ) -> Result<Vec<PendingWrite>, SubmitError> {
        let mut reserved = Vec::new();
        for (index, shard_rows) in parts_of(rows) {
            let shard = &self.shards[index];
            let names = || (shard.id.clone(), table_name.to_string());
            let reservation = shard
                .queue
                .reserve(table, shard_rows.rows, shard_rows.tuples.len(), names)?;
            reserved.push((index, shard_rows, reservation));
        }
        let request = RequestChunks {
            table,
            epoch: self.epoch(),
            enqueued_at: Instant::now(),
            deadline,
            mark: None,
        };
        Ok(self.send_reserved(request, reserved, record))
    }

    /// Sends each shard's rows of one request into the room reserved for them.
    fn send_reserved(
        &self,
        request: RequestChunks,
        reserved: Vec<(usize, ShardRows, Reservation)>,
        record: impl Fn(ShardIndex) -> Option<Arc<KeyRecord>>,
    ) -> Vec<PendingWrite> {
        reserved
            .into_iter()
            .map(|(index, shard_rows, reservation)| {
                let shard = &self.shards[index];
                let extras = ChunkExtras {
                    record: record(ShardIndex(index)),
                    stream_copy: false,
                };
                shard.queue.send(
                    (ShardIndex(index), &shard.id),
                    request,
                    (Bytes::from(shard_rows.tuples), shard_rows.rows),
                    extras,
                    reservation,
                )
            })
            .collect()
    }

    /// Queues a decoded chunk of a stream's rows, routed with this set's table, on every
    /// shard they go to, waiting for room in each queue in turn (in shard order, so streams
    /// waiting on each other's shards cannot deadlock). The chunk's deadline starts once it
    /// is queued.
    pub async fn submit_waiting(
        &self,
        table: TableId,
        table_name: &str,
        rows: EncodedRows,
        timeout: std::time::Duration,
    ) -> Result<Vec<PendingWrite>, SubmitError> {
        let mut reserved = Vec::new();
        for (index, shard_rows) in parts_of(rows) {
            let shard = &self.shards[index];
            let names = || (shard.id.clone(), table_name.to_string());
            let reservation = shard
                .queue
                .reserve_waiting(table, shard_rows.rows, shard_rows.tuples.len(), names)
                .await?;
            reserved.push((index, shard_rows, reservation));
        }
        Ok(self.send_reserved(self.queued_now(table, timeout), reserved, |_| None))
    }

    /// What the chunks of a request of `table` queued now share, waited for `timeout` from now.
    fn queued_now(&self, table: TableId, timeout: std::time::Duration) -> RequestChunks {
        let enqueued_at = Instant::now();
        RequestChunks {
            table,
            epoch: self.epoch(),
            enqueued_at,
            deadline: enqueued_at + timeout,
            mark: None,
        }
    }

    /// Queues a stream table's copy of rows whose owner committed them, for `target`, the
    /// shard a range holding them is being copied to: written there without the version check,
    /// which their owner made. Waits for room in the queue as long as it takes (the caller
    /// bounds the wait); the copy's deadline is `timeout` after it is queued.
    pub async fn submit_stream_copy(
        &self,
        target: ShardIndex,
        (table, table_name): (TableId, &str),
        rows: ShardRows,
        timeout: std::time::Duration,
    ) -> Result<PendingWrite, SubmitError> {
        let shard = &self.shards[target.0];
        let names = || (shard.id.clone(), table_name.to_string());
        let reservation = shard
            .queue
            .reserve_waiting(table, rows.rows, rows.tuples.len(), names)
            .await?;
        let request = self.queued_now(table, timeout);
        let extras = ChunkExtras {
            record: None,
            stream_copy: true,
        };
        Ok(shard.queue.send(
            (target, &shard.id),
            request,
            (Bytes::from(rows.tuples), rows.rows),
            extras,
            reservation,
        ))
    }

    /// Queues one drained part of a spooled write for the shard at `index`, with its `mark`,
    /// routed with this snapshot: or says why the shard's queue has no room for it now.
    pub fn submit_part(
        &self,
        index: ShardIndex,
        table: (TableId, &str),
        tuples: Bytes,
        rows: usize,
        mark: Mark,
        deadline: Instant,
    ) -> Result<PendingWrite, SubmitError> {
        let shard = &self.shards[index.0];
        let names = || (shard.id.clone(), table.1.to_string());
        let reservation = shard.queue.reserve(table.0, rows, tuples.len(), names)?;
        let request = RequestChunks {
            table: table.0,
            epoch: self.epoch(),
            enqueued_at: Instant::now(),
            deadline,
            mark: Some(mark),
        };
        Ok(shard.queue.send(
            (index, &shard.id),
            request,
            (tuples, rows),
            ChunkExtras::default(),
            reservation,
        ))
    }

    /// Creates or verifies the tables and the fence (at this set's epoch) on every shard not yet
    /// prepared. A shard that cannot be reached is left for a later call (writes to it wait,
    /// then get 503); any other problem, such as a table that differs, is an error. Returns
    /// whether every shard is prepared.
    pub async fn prepare(&self, tables: &Tables) -> Result<bool, ShardError> {
        let mut all = true;
        for shard in self.shards.iter().filter(|s| !s.is_prepared()) {
            match shard.pools.prepare_once(tables, self.epoch()).await {
                Ok(()) => {}
                Err(ShardError::Unreachable { reason, .. }) => {
                    tracing::warn!(shard = %shard.id, %reason, "shard unreachable; its writes wait until it is prepared");
                    all = false;
                }
                Err(e) => return Err(e),
            }
        }
        Ok(all)
    }
}

/// Holder of the current [`ShardSet`], read without locks on the hot path.
pub struct Published {
    current: ArcSwap<ShardSet>,
    settings: ShardSettings,
    writers: Arc<dyn StartWriters>,
    /// Held while a set is published, so two publishers cannot interleave their checks.
    publishing: Mutex<()>,
}

impl Published {
    /// Opens every shard `table` names (starting their writers) and makes it the current set.
    pub fn open(
        table: RoutingTable,
        endpoints: &[ShardEndpoint],
        settings: ShardSettings,
        writers: Arc<dyn StartWriters>,
    ) -> Result<Published, PublishError> {
        let first = assemble(None, table, endpoints, &settings, writers.as_ref())?;
        Ok(Published {
            current: ArcSwap::from_pointee(first),
            settings,
            writers,
            publishing: Mutex::new(()),
        })
    }

    /// The settings every shard of every set is opened with.
    pub fn settings(&self) -> &ShardSettings {
        &self.settings
    }

    /// The current set; hold it for the whole request.
    pub fn load(&self) -> Arc<ShardSet> {
        self.current.load_full()
    }

    /// The set for `table`, not yet published: shards the current set has with the same
    /// connection settings are shared with it, the others are opened now, their writers
    /// started. Refused when `table` is not newer than the current set.
    pub fn assemble(
        &self,
        table: RoutingTable,
        endpoints: &[ShardEndpoint],
    ) -> Result<ShardSet, PublishError> {
        let current = self.load();
        check_newer(&current, table.epoch)?;
        assemble(
            Some(&current),
            table,
            endpoints,
            &self.settings,
            self.writers.as_ref(),
        )
    }

    /// Prepares the shards of the current set left unprepared (at start-up, say) as they become
    /// reachable, retrying with backoff until all are or `shutdown` fires. A shard that turns
    /// out to differ from the config stays unprepared (its writes get 503) and is reported at
    /// every attempt.
    pub async fn prepare_in_background(self: Arc<Self>, tables: Arc<Tables>, shutdown: CancellationToken) {
        let mut delay = PREPARE_RETRY_MIN;
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(delay) => {}
            }
            match self.load().prepare(&tables).await {
                Ok(true) => return,
                Ok(false) => {}
                Err(e) => tracing::error!(error = %e, "a shard cannot be prepared"),
            }
            delay = (delay * 2).min(PREPARE_RETRY_MAX);
        }
    }

    /// Makes `next` the current set, unless a set at least as new was published meanwhile.
    pub fn publish(&self, next: ShardSet) -> Result<(), PublishError> {
        let _publishing = self.publishing.lock().unwrap_or_else(|e| e.into_inner());
        check_newer(&self.current.load(), next.epoch())?;
        self.current.store(Arc::new(next));
        Ok(())
    }
}

fn check_newer(current: &ShardSet, offered: Epoch) -> Result<(), PublishError> {
    if offered <= current.epoch() {
        return Err(PublishError::Stale {
            offered,
            current: current.epoch(),
        });
    }
    Ok(())
}

/// The set for `table`: each shard taken from `current` when it connects the same way there,
/// else opened with its writers started.
fn assemble(
    current: Option<&ShardSet>,
    table: RoutingTable,
    endpoints: &[ShardEndpoint],
    settings: &ShardSettings,
    writers: &dyn StartWriters,
) -> Result<ShardSet, PublishError> {
    let mut shards = Vec::with_capacity(table.shards.len());
    let mut weights = Vec::with_capacity(table.shards.len());
    for id in &table.shards {
        let endpoint = endpoints
            .iter()
            .find(|e| &e.id == id)
            .ok_or_else(|| PublishError::NoEndpoint(id.clone()))?;
        let kept = current
            .and_then(|set| set.shards.iter().find(|s| &s.id == id && s.connects_as(endpoint)))
            .cloned();
        let shard = match kept {
            Some(shard) => shard,
            None => {
                let (shard, receiver) = Shard::open(endpoint, settings)?;
                writers.start(&shard, receiver);
                Arc::new(shard)
            }
        };
        shards.push(shard);
        weights.push(endpoint.weight);
    }
    Ok(ShardSet {
        table: Arc::new(table),
        shards,
        weights,
        placed: std::sync::OnceLock::new(),
    })
}

/// The non-empty parts of a request, one per shard (a stream table's copies are sent apart,
/// with [`ShardSet::submit_stream_copy`]).
fn parts_of(rows: EncodedRows) -> impl Iterator<Item = (usize, ShardRows)> {
    rows.shards.into_iter().enumerate().filter(|(_, r)| r.rows > 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::TlsConfig;
    use crate::routing::Ring;
    use crate::schema::decode::ShardRows;
    use crate::shards::queue::{QueueLimits, WriteError};
    use std::sync::OnceLock;
    use std::time::Duration;
    use tokio::sync::mpsc::error::TryRecvError;

    /// Records each shard whose writers start, with the epoch published at that moment, and
    /// keeps its queue's receiving half as a writer would.
    #[derive(Default)]
    struct RecordingWriters {
        published: OnceLock<std::sync::Weak<Published>>,
        started: Mutex<Vec<(String, Option<Epoch>)>>,
        receivers: Mutex<Vec<(String, QueueReceiver)>>,
    }

    impl StartWriters for RecordingWriters {
        fn start(&self, shard: &Shard, receiver: QueueReceiver) {
            let published = self.published.get().and_then(|weak| weak.upgrade());
            let epoch = published.map(|p| p.load().epoch());
            self.started.lock().unwrap().push((shard.id.0.clone(), epoch));
            self.receivers
                .lock()
                .unwrap()
                .push((shard.id.0.clone(), receiver));
        }
    }

    impl RecordingWriters {
        fn receiver(&self, shard: &str) -> QueueReceiver {
            let mut receivers = self.receivers.lock().unwrap();
            let at = receivers.iter().position(|(id, _)| id == shard).unwrap();
            receivers.remove(at).1
        }
    }

    fn settings() -> ShardSettings {
        ShardSettings {
            copy_connections: 2,
            query_connections: 1,
            connect_timeout: Duration::from_secs(1),
            query_wait_timeout: Duration::from_secs(1),
            session_setup: String::new(),
            tls: TlsConfig::default(),
            tables: 1,
            queue: QueueLimits {
                max_rows: 100,
                max_bytes: 1 << 20,
            },
        }
    }

    fn endpoint(name: &str) -> ShardEndpoint {
        ShardEndpoint {
            id: ShardId(name.into()),
            weight: 1,
            url: format!("postgres://app@{name}.invalid/db"),
            password: None,
        }
    }

    fn table(epoch: i64, names: &[&str]) -> RoutingTable {
        let ring = Ring::build(names.iter().map(|n| (*n, 1)), 8).unwrap();
        RoutingTable::new(
            Epoch(epoch),
            names.iter().map(|n| ShardId(n.to_string())).collect(),
            ring,
        )
    }

    /// One row for the shard at `index` of a set of `shards`.
    fn one_row_for(index: usize, shards: usize) -> EncodedRows {
        let mut rows: Vec<ShardRows> = (0..shards).map(|_| ShardRows::default()).collect();
        rows[index] = ShardRows {
            tuples: vec![0, 1],
            rows: 1,
        };
        EncodedRows {
            shards: rows,
            copies: Vec::new(),
            rows: 1,
            dual_written: 0,
            salted: 0,
            keys: Default::default(),
            limited_rows: Vec::new(),
            returned: Vec::new(),
        }
    }

    fn open(names: &[&str]) -> (Arc<Published>, Arc<RecordingWriters>) {
        let writers = Arc::new(RecordingWriters::default());
        let endpoints: Vec<ShardEndpoint> = names.iter().map(|n| endpoint(n)).collect();
        let published = Published::open(table(1, names), &endpoints, settings(), writers.clone()).unwrap();
        let published = Arc::new(published);
        writers.published.set(Arc::downgrade(&published)).unwrap();
        (published, writers)
    }

    #[tokio::test]
    async fn a_joining_shard_gets_its_writers_before_a_set_naming_it_is_published() {
        let (published, writers) = open(&["s0", "s1"]);
        let before = published.load();
        let endpoints: Vec<ShardEndpoint> = ["s0", "s1", "s2"].iter().map(|n| endpoint(n)).collect();
        let next = published
            .assemble(table(2, &["s0", "s1", "s2"]), &endpoints)
            .unwrap();
        published.publish(next).unwrap();
        assert_eq!(
            *writers.started.lock().unwrap(),
            [
                ("s0".to_string(), None),
                ("s1".to_string(), None),
                ("s2".to_string(), Some(Epoch(1)))
            ],
            "s2's writers started while epoch 1, which does not name it, was still current; \
             s0 and s1 kept theirs"
        );
        let after = published.load();
        assert_eq!((after.epoch(), after.len()), (Epoch(2), 3));
        assert!(
            Arc::ptr_eq(&before.shards[0], &after.shards[0]),
            "s0 is shared, not reopened"
        );
        let mut s2 = writers.receiver("s2");
        let pending = after
            .submit(TableId(0), "events", one_row_for(2, 3), far_deadline())
            .unwrap();
        let chunk = s2
            .try_recv()
            .expect("s2's writers receive what the new set routes to it");
        assert_eq!((chunk.epoch, chunk.rows), (Epoch(2), 1));
        chunk.answer(Ok(()));
        for write in pending {
            write.outcome().await.unwrap();
        }
    }

    #[tokio::test]
    async fn an_old_set_keeps_working_while_a_new_one_is_published() {
        let (published, writers) = open(&["s0", "s1"]);
        let held = published.load();
        let endpoints = [endpoint("s0")];
        let next = published.assemble(table(2, &["s0"]), &endpoints).unwrap();
        published.publish(next).unwrap();
        assert_eq!(published.load().len(), 1);
        let mut s1 = writers.receiver("s1");
        let pending = held
            .submit(TableId(0), "events", one_row_for(1, 2), far_deadline())
            .unwrap();
        let chunk = s1
            .try_recv()
            .expect("the held set still routes to s1, which the new one dropped");
        assert_eq!(chunk.epoch, Epoch(1), "with the held set's epoch");
        chunk.answer(Err(WriteError::RoutingChanged {
            shard: ShardId("s1".into()),
            reason: "fence".into(),
        }));
        let outcome = pending.into_iter().next().unwrap().outcome().await;
        assert!(
            matches!(outcome, Err(WriteError::RoutingChanged { .. })),
            "{outcome:?}"
        );
        drop(held);
        assert!(
            matches!(s1.try_recv(), Err(TryRecvError::Disconnected)),
            "once no set names s1 its queue closes, so its writers drain and stop"
        );
    }

    #[test]
    fn an_older_or_equal_epoch_is_not_published() {
        let (published, _writers) = open(&["s0"]);
        let endpoints = [endpoint("s0")];
        let stale = published.assemble(table(1, &["s0"]), &endpoints).err().unwrap();
        assert_eq!(
            stale.to_string(),
            "routing epoch 1 is not newer than the current epoch 1"
        );
        let first = published.assemble(table(3, &["s0"]), &endpoints).unwrap();
        let second = published.assemble(table(2, &["s0"]), &endpoints).unwrap();
        published.publish(first).unwrap();
        assert!(
            published.publish(second).is_err(),
            "a set assembled before a newer one was published never replaces it"
        );
        assert_eq!(published.load().epoch(), Epoch(3));
        let unknown = published
            .assemble(table(4, &["s0", "s9"]), &endpoints)
            .err()
            .unwrap();
        assert_eq!(
            unknown.to_string(),
            "the routing table names shard s9, for which no connection settings were given"
        );
    }

    #[test]
    fn a_shard_whose_url_changed_is_opened_again() {
        let (published, writers) = open(&["s0"]);
        let moved = ShardEndpoint {
            url: "postgres://app@elsewhere.invalid/db".into(),
            ..endpoint("s0")
        };
        let next = published.assemble(table(2, &["s0"]), &[moved]).unwrap();
        published.publish(next).unwrap();
        assert_eq!(writers.started.lock().unwrap().len(), 2);
        assert_eq!(
            published.load().get(ShardIndex(0)).redacted_url,
            "postgres://app@elsewhere.invalid/db"
        );
    }

    fn far_deadline() -> Instant {
        Instant::now() + Duration::from_secs(60)
    }
}
