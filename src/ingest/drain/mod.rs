//! Draining the spool into the shards: every part of every spooled write is written once to
//! the shard owning its rows, through the same queues and batcher as the writes that wait for
//! their commit, with its mark in the batch's transaction.
//!
//! The drainer is one task. It keeps the records not yet written (the writer thread hands it
//! each record once durable; at start-up it is handed what the spool held), as slices of the
//! spool's segment files mapped into memory, so a backlog lives in the page cache rather than
//! the heap; and it keeps each shard's parts apart, oldest first: a shard that is down or full
//! holds back only its own parts. Per part, with the routing in force:
//! - its shard owns every row: the part is queued, with a share of the shard's queue at most
//!   half, so spooled rows never take all the room from writes that wait for their commit,
//!   in the queue's lane for drained parts, which the writers take from only when no waiting
//!   request is queued;
//! - some row is in a range being copied: the part waits for the cutover, so no row needs
//!   writing to two shards; a part with rows outside those ranges too is first split in two
//!   (as a moved part is, below), so that those rows need not wait;
//! - some row moved to another shard: the part's own shard is asked, once no batch can still
//!   be writing there, whether it applied the part; if not, the rows are split by their new
//!   owners into a record that supersedes the part;
//! - the shard refuses the part for its data: it is cut in halves until the refused row is
//!   alone, which goes to the dead-letter table (module `refused`).
//!
//! A record sent with an idempotency key waits until it holds the key's claim in the catalog,
//! and is dropped when another write holds it (module `claims`).
//!
//! A record written in full frees its place in the spool; segments whose records are all
//! written are removed, and the shards' marks of their records pruned (module `upkeep`). Parts
//! whose rows moved are in module `moved`, and shards that left the routing table while parts
//! still named them in module `departed`.

mod claims;
mod departed;
mod moved;
mod refused;
mod upkeep;

use crate::catalog::Catalog;
use crate::metrics::Metrics;
use crate::routing::{Epoch, ShardIndex};
use crate::schema::{TableId, Tables};
use crate::shards::applied::Mark;
use crate::shards::queue::{QueueLimits, SubmitError, WriteError};
use crate::shards::set::{Published, ShardSet};
use crate::spool::{
    PartRef, Placement, Record, RecordSeq, RowsOutcome, SpoolAppender, SpooledWrite, WriteStatuses,
};
pub use departed::DepartedShards;
use futures_util::future::BoxFuture;
use futures_util::stream::{FuturesUnordered, StreamExt};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// How often the drainer looks again at parts that wait (a paused shard, a moving range).
const TICK: Duration = Duration::from_millis(100);
/// First pause of a shard that could not take a part; doubles up to [`MAX_PAUSE`].
const FIRST_PAUSE: Duration = Duration::from_millis(100);
/// Longest pause of a shard between attempts.
const MAX_PAUSE: Duration = Duration::from_secs(5);
/// Pause of a shard whose queue is full.
const FULL_PAUSE: Duration = Duration::from_millis(20);
/// How long a part larger than its shard's whole queue waits before it is tried again.
const REFUSED_PAUSE: Duration = Duration::from_secs(30);
/// How often written records are let go of on disk, and the metrics set.
const HOUSEKEEPING: Duration = Duration::from_secs(1);

/// What the drainer works with.
pub struct DrainSettings {
    /// The spool's id, which the shards' marks name.
    pub spool: Uuid,
    /// The shards and the routing in force.
    pub shards: Arc<Published>,
    /// Declared tables.
    pub tables: Arc<Tables>,
    /// The spool's writer, for superseding records and for removing written segments.
    pub appender: SpoolAppender,
    /// Longest wait for one part's batch.
    pub request_timeout: Duration,
    /// Each shard's queue bounds; the drainer takes at most half.
    pub queue: QueueLimits,
    /// Spool metrics.
    pub metrics: Arc<Metrics>,
    /// What is known of each write, for `GET /v1/writes/{write_id}`.
    pub statuses: Arc<WriteStatuses>,
    /// Where refused rows are recorded.
    pub catalog: Arc<Catalog>,
    /// Shards that left the routing table, for parts that still name them.
    pub departed: Arc<DepartedShards>,
}

/// What the spool held at start-up.
pub struct Recovered {
    /// Its records, oldest first.
    pub records: Vec<Record>,
    /// The sequence number the next record appended gets.
    pub next: RecordSeq,
}

/// Drains the spool until `shutdown`: the `recovered` records first (skipping the parts the
/// shards marked as applied), then each record `durable` hands over. At shutdown it stops
/// queueing parts and waits for those queued; what is left stays in the spool.
pub async fn drain(
    settings: DrainSettings,
    recovered: Recovered,
    mut durable: mpsc::UnboundedReceiver<Record>,
    shutdown: CancellationToken,
) {
    let mut drainer = Drainer::new(settings, recovered.next);
    for record in recovered.records {
        drainer.add(record);
    }
    drainer.recovered_until = recovered.next;
    let mut housekeeping = tokio::time::interval(HOUSEKEEPING);
    loop {
        drainer.dispatch();
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => break,
            Some(event) = drainer.events.next(), if !drainer.events.is_empty() => drainer.handle(event),
            Some(record) = durable.recv() => drainer.add(record),
            _ = housekeeping.tick() => drainer.housekeeping(),
            _ = tokio::time::sleep(TICK) => {}
        }
    }
    while let Some(event) = drainer.events.next().await {
        drainer.handle(event);
    }
    drainer.housekeeping();
}

/// A record not yet written in full.
struct Spooled {
    write: SpooledWrite,
    table: TableId,
    parts: Vec<PartState>,
    /// Parts an attempt of this process left in doubt (the shard went away mid-batch, so it
    /// may have committed): they are asked about on their shard before they are split.
    in_doubt: Vec<bool>,
    left: usize,
    accepted_ms: u64,
}

/// How far one part is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PartState {
    /// Not written; looked at again once the routing has another epoch than `checked` (it
    /// waited for a range being copied) and after `not_before`.
    Waiting {
        checked: Option<Epoch>,
        not_before: Option<Instant>,
    },
    /// Queued, or being settled or split.
    Busy,
    /// Written, found applied, or superseded.
    Done,
}

const WAITING: PartState = PartState::Waiting {
    checked: None,
    not_before: None,
};

/// What the drainer knows of one shard.
#[derive(Default)]
struct ShardState {
    /// The parts of records spooled before start-up that the shard marked as applied, once read.
    marks: Option<HashSet<Mark>>,
    loading: bool,
    paused_until: Option<Instant>,
    pause: Option<Duration>,
    in_flight_rows: usize,
    in_flight_bytes: usize,
}

/// Something a background step of the drainer finished.
enum Event {
    Written {
        part: PartRef,
        shard: String,
        size: (usize, usize),
        result: Result<(), WriteError>,
    },
    MarksRead {
        shard: String,
        result: Result<HashSet<Mark>, String>,
    },
    Settled {
        part: PartRef,
        result: Result<bool, String>,
    },
    Superseded {
        part: PartRef,
        result: Result<(), String>,
    },
    DeadLettered {
        part: PartRef,
        table: String,
        result: Result<(), String>,
    },
    Removed {
        result: Result<RecordSeq, String>,
    },
    Claimed {
        seq: RecordSeq,
        result: Result<bool, String>,
    },
}

/// What to do with one waiting part.
enum Step {
    Skip,
    Done,
    Queue(ShardIndex, bytes::Bytes),
    Settle,
    Split,
    StopShard,
}

struct Drainer {
    settings: DrainSettings,
    records: BTreeMap<RecordSeq, Spooled>,
    waiting: BTreeMap<String, BTreeSet<PartRef>>,
    shards: HashMap<String, ShardState>,
    /// Records before this one were spooled before start-up, so may be marked on a shard.
    recovered_until: RecordSeq,
    /// The sequence number after the newest record seen.
    next: RecordSeq,
    /// Records up to this one were let go of on disk.
    removed_through: RecordSeq,
    removing: bool,
    /// Marks before this record were pruned on the shards.
    pruned_before: RecordSeq,
    events: FuturesUnordered<BoxFuture<'static, Event>>,
    /// Records sent with an idempotency key whose claim is not settled: their parts wait.
    unclaimed: BTreeMap<RecordSeq, claims::Unclaimed>,
}

impl Drainer {
    fn new(settings: DrainSettings, next: RecordSeq) -> Drainer {
        Drainer {
            settings,
            records: BTreeMap::new(),
            waiting: BTreeMap::new(),
            shards: HashMap::new(),
            recovered_until: RecordSeq(0),
            next,
            removed_through: RecordSeq(0),
            removing: false,
            pruned_before: RecordSeq(0),
            events: FuturesUnordered::new(),
            unclaimed: BTreeMap::new(),
        }
    }

    /// Takes a durable record: its parts wait for their shards, and the parts it supersedes
    /// are done.
    fn add(&mut self, record: Record) {
        self.next = self.next.max(record.seq.next());
        let write = match SpooledWrite::decode(record.payload) {
            Ok(write) => write,
            Err(error) => {
                tracing::error!(seq = record.seq.0, %error, "a spool record cannot be read; it stays in the spool");
                return;
            }
        };
        let Some((table, _)) = self.settings.tables.lookup(&write.table) else {
            tracing::error!(seq = record.seq.0, table = %write.table, "a spool record names a table not declared any more; it stays in the spool");
            return;
        };
        let parts = write.parts.iter().map(|p| (p.shard.as_str(), p.rows));
        let supersedes = !write.supersedes.is_empty();
        self.settings
            .statuses
            .spooled(write.write_id, &write.table, parts, supersedes);
        for superseded in &write.supersedes {
            self.finish(*superseded, RowsOutcome::Moved);
        }
        let keyed = write.key.is_some();
        for (index, part) in write.parts.iter().enumerate().filter(|_| !keyed) {
            let part_ref = PartRef {
                seq: record.seq,
                part: index as u16,
            };
            self.waiting
                .entry(part.shard.clone())
                .or_default()
                .insert(part_ref);
        }
        let accepted_ms = write
            .write_id
            .get_timestamp()
            .map_or(0, |t| t.to_unix().0 * 1000 + u64::from(t.to_unix().1 / 1_000_000));
        let held = if keyed { PartState::Busy } else { WAITING };
        let parts = vec![held; write.parts.len()];
        let left = parts.len();
        self.records.insert(
            record.seq,
            Spooled {
                write,
                table,
                parts,
                in_doubt: vec![false; left],
                left,
                accepted_ms,
            },
        );
        if left == 0 {
            self.records.remove(&record.seq);
        } else if keyed {
            self.hold_for_claim(record.seq);
        }
    }

    /// Queues, settles or leaves waiting every part whose shard can take work now.
    fn dispatch(&mut self) {
        self.ask_claims();
        let set = self.settings.shards.load();
        let now = Instant::now();
        let names: Vec<String> = self.waiting.keys().cloned().collect();
        for name in names {
            self.dispatch_shard(&set, &name, now);
        }
    }

    fn dispatch_shard(&mut self, set: &ShardSet, name: &str, now: Instant) {
        let state = self.shards.entry(name.to_string()).or_default();
        if state.paused_until.is_some_and(|until| until > now) {
            return;
        }
        let parts: Vec<PartRef> = self
            .waiting
            .get(name)
            .map(|w| w.iter().copied().collect())
            .unwrap_or_default();
        for part in parts {
            match self.step(set, name, part, now) {
                Step::Skip => {}
                Step::Done => self.finish(part, RowsOutcome::Written),
                Step::Queue(index, tuples) => {
                    if !self.queue(set, name, part, index, tuples) {
                        return;
                    }
                }
                Step::Settle => self.settle(set, name, part),
                Step::Split => self.split_part(part),
                Step::StopShard => return,
            }
        }
    }

    /// Decides about one waiting part of shard `name`.
    fn step(&mut self, set: &ShardSet, name: &str, part: PartRef, now: Instant) -> Step {
        let Some(spooled) = self.records.get(&part.seq) else {
            return Step::Skip;
        };
        let PartState::Waiting { checked, not_before } = spooled.parts[usize::from(part.part)] else {
            return Step::Skip;
        };
        if not_before.is_some_and(|at| at > now) || checked == Some(set.epoch()) {
            return Step::Skip;
        }
        if part.seq < self.recovered_until {
            let mark = self.mark(part);
            let state = self
                .shards
                .get_mut(name)
                .expect("dispatch made the shard's state");
            match &state.marks {
                Some(marks) if marks.contains(&mark) => return Step::Done,
                Some(_) => {}
                None => {
                    if !state.loading {
                        state.loading = true;
                        self.read_marks(set, name);
                    }
                    return Step::StopShard;
                }
            }
        }
        let placement = {
            let spooled = &self.records[&part.seq];
            let spooled_part = &spooled.write.parts[usize::from(part.part)];
            let state = &self.shards[name];
            let half = (
                self.settings.queue.max_rows / 2,
                self.settings.queue.max_bytes / 2,
            );
            if state.in_flight_rows > 0
                && (state.in_flight_rows + spooled_part.rows > half.0
                    || state.in_flight_bytes + spooled_part.tuples.len() > half.1)
            {
                return Step::StopShard;
            }
            spooled_part.placement(
                self.settings.tables.get(spooled.table),
                &set.table,
                spooled.write.routed_at,
            )
        };
        match placement {
            Ok(Placement::Owned(index, tuples)) => Step::Queue(index, tuples),
            Ok(Placement::Moving) => {
                let checked = Some(set.epoch());
                self.set_state(
                    part,
                    PartState::Waiting {
                        checked,
                        not_before: None,
                    },
                );
                Step::Skip
            }
            Ok(Placement::PartlyMoving) if self.may_be_applied(part) => Step::Settle,
            Ok(Placement::PartlyMoving) => Step::Split,
            Ok(Placement::Moved) => Step::Settle,
            Err(error) => {
                tracing::error!(seq = part.seq.0, part = part.part, %error, "a spooled part cannot be read; it stays in the spool");
                self.set_state(part, PartState::Busy);
                Step::Skip
            }
        }
    }

    /// Whether a batch may have applied `part`: one of this process's attempts left it in
    /// doubt, or it was spooled before start-up. Every other attempt ended in a rollback (a
    /// fence that moved, a refused row), so only such a part is asked about before a split.
    fn may_be_applied(&self, part: PartRef) -> bool {
        part.seq < self.recovered_until || self.records[&part.seq].in_doubt[usize::from(part.part)]
    }

    /// Queues a part on its shard; false when the shard cannot take more now.
    fn queue(
        &mut self,
        set: &ShardSet,
        name: &str,
        part: PartRef,
        index: ShardIndex,
        tuples: bytes::Bytes,
    ) -> bool {
        let spooled = &self.records[&part.seq];
        let table = spooled.table;
        let rows = spooled.write.parts[usize::from(part.part)].rows;
        let size = (rows, tuples.len());
        let deadline = Instant::now() + self.settings.request_timeout;
        let mark = self.mark(part);
        let schema = Arc::clone(self.settings.tables.get(table));
        match set.submit_part(index, (table, &schema.name), tuples, rows, mark, deadline) {
            Ok(pending) => {
                let state = self
                    .shards
                    .get_mut(name)
                    .expect("dispatch made the shard's state");
                state.in_flight_rows += size.0;
                state.in_flight_bytes += size.1;
                self.set_state(part, PartState::Busy);
                let shard = name.to_string();
                self.events.push(Box::pin(async move {
                    let result = pending.outcome().await;
                    Event::Written {
                        part,
                        shard,
                        size,
                        result,
                    }
                }));
                true
            }
            Err(SubmitError::QueueFull { .. }) => {
                self.pause(name, Some(FULL_PAUSE));
                false
            }
            Err(error @ SubmitError::TooLarge { .. }) => {
                tracing::error!(%error, "a spooled part is larger than its shard's whole queue; raise queue.max_rows or queue.max_bytes");
                self.set_state(
                    part,
                    PartState::Waiting {
                        checked: None,
                        not_before: Some(Instant::now() + REFUSED_PAUSE),
                    },
                );
                true
            }
        }
    }

    fn handle(&mut self, event: Event) {
        match event {
            Event::Written {
                part,
                shard,
                size,
                result,
            } => self.written(part, &shard, size, result),
            Event::MarksRead { shard, result } => {
                let state = self.shards.entry(shard.clone()).or_default();
                state.loading = false;
                match result {
                    Ok(marks) => state.marks = Some(marks),
                    Err(error) => {
                        tracing::warn!(%shard, %error, "cannot read the shard's applied marks; retrying");
                        self.pause(&shard, None);
                    }
                }
            }
            Event::Settled { part, result } => match result {
                Ok(true) => self.finish(part, RowsOutcome::Written),
                Ok(false) => self.split_part(part),
                Err(error) => {
                    tracing::warn!(seq = part.seq.0, part = part.part, %error, "cannot ask the shard whether it applied a moved part; retrying");
                    self.retry_later(part, MAX_PAUSE);
                }
            },
            Event::Superseded { part, result } => match result {
                Ok(()) => self.finish(part, RowsOutcome::Moved),
                Err(error) => {
                    tracing::warn!(seq = part.seq.0, part = part.part, %error, "cannot spool the split of a moved part; retrying");
                    self.retry_later(part, MAX_PAUSE);
                }
            },
            Event::DeadLettered { part, table, result } => match result {
                Ok(()) => {
                    self.settings
                        .metrics
                        .spool_dead_letters
                        .with_label_values(&[&table])
                        .inc();
                    self.finish(part, RowsOutcome::DeadLetter);
                }
                Err(error) => {
                    tracing::warn!(%error, "cannot record a dead letter in the catalog; retrying");
                    self.retry_later(part, MAX_PAUSE);
                }
            },
            Event::Claimed { seq, result } => self.claimed(seq, result),
            Event::Removed { result } => {
                self.removing = false;
                match result {
                    Ok(first_kept) => self.prune_marks(first_kept),
                    Err(error) => tracing::error!(%error, "cannot remove written spool segments"),
                }
            }
        }
    }

    fn written(&mut self, part: PartRef, shard: &str, size: (usize, usize), result: Result<(), WriteError>) {
        let state = self.shards.entry(shard.to_string()).or_default();
        state.in_flight_rows -= size.0;
        state.in_flight_bytes -= size.1;
        match result {
            Ok(()) => {
                state.pause = None;
                if let Some(spooled) = self.records.get(&part.seq) {
                    let table = &self.settings.tables.get(spooled.table).name;
                    self.settings
                        .metrics
                        .spool_rows
                        .with_label_values(&[table, "drained"])
                        .inc_by(size.0 as u64);
                }
                self.finish(part, RowsOutcome::Written);
            }
            Err(WriteError::RoutingChanged { .. }) => self.set_state(part, WAITING),
            Err(WriteError::Unavailable { reason, .. }) => {
                tracing::warn!(%shard, %reason, "a spooled part was not written; its shard is paused");
                if let Some(spooled) = self.records.get_mut(&part.seq) {
                    spooled.in_doubt[usize::from(part.part)] = true;
                }
                self.set_state(part, WAITING);
                self.pause(shard, None);
            }
            Err(WriteError::Rejected { message, .. }) => self.refused(part, message),
            Err(WriteError::StreamConflict { conflict, .. }) => self.refused(part, conflict.to_string()),
        }
    }

    /// Marks a part done: written to its shard (now or before), superseded by a record that
    /// carries its rows on, or recorded as a dead letter. A record done in full is let go of.
    fn finish(&mut self, part: PartRef, outcome: RowsOutcome) {
        let Some(spooled) = self.records.get_mut(&part.seq) else {
            return;
        };
        if spooled.parts[usize::from(part.part)] == PartState::Done {
            return;
        }
        spooled.left -= 1;
        let left = spooled.left;
        let done = &spooled.write.parts[usize::from(part.part)];
        self.settings
            .statuses
            .done(spooled.write.write_id, &done.shard, done.rows, outcome);
        self.set_state(part, PartState::Done);
        match self.records.get_mut(&part.seq) {
            Some(_) if left == 0 => {
                self.records.remove(&part.seq);
            }
            Some(spooled) => spooled.write.parts[usize::from(part.part)].tuples = bytes::Bytes::new(),
            None => {}
        }
    }

    /// Pauses a shard for `pause`, or for twice its last pause.
    fn pause(&mut self, name: &str, pause: Option<Duration>) {
        let state = self.shards.entry(name.to_string()).or_default();
        let pause = pause.unwrap_or_else(|| state.pause.map_or(FIRST_PAUSE, |p| (p * 2).min(MAX_PAUSE)));
        if pause > FULL_PAUSE {
            state.pause = Some(pause);
        }
        state.paused_until = Some(Instant::now() + pause);
    }

    fn retry_later(&mut self, part: PartRef, after: Duration) {
        self.set_state(
            part,
            PartState::Waiting {
                checked: None,
                not_before: Some(Instant::now() + after),
            },
        );
    }

    /// Sets a part's state; only waiting parts are listed under their shard.
    fn set_state(&mut self, part: PartRef, state: PartState) {
        let Some(spooled) = self.records.get_mut(&part.seq) else {
            return;
        };
        spooled.parts[usize::from(part.part)] = state;
        let shard = &spooled.write.parts[usize::from(part.part)].shard;
        if matches!(state, PartState::Waiting { .. }) {
            self.waiting.entry(shard.clone()).or_default().insert(part);
        } else if let Some(waiting) = self.waiting.get_mut(shard) {
            waiting.remove(&part);
            if waiting.is_empty() {
                self.waiting.remove(shard);
            }
        }
    }

    /// The COPY pool of shard `name`: its own when `set` names it, else one to the shard as the
    /// catalog still records it (it left the routing table while parts named it).
    fn reach(
        &self,
        set: &ShardSet,
        name: &str,
    ) -> BoxFuture<'static, Result<deadpool_postgres::Pool, String>> {
        let pool = set
            .iter()
            .find(|(_, shard)| shard.id.0 == name)
            .map(|(_, shard)| shard.pools.copy.clone());
        let departed = Arc::clone(&self.settings.departed);
        let name = name.to_string();
        Box::pin(async move {
            match pool {
                Some(pool) => Ok(pool),
                None => departed.pool(&name).await,
            }
        })
    }

    /// The mark a part is written with: its own place in the spool, or for the replay of a
    /// dead letter, the place of the part that first held the row.
    fn mark(&self, part: PartRef) -> Mark {
        let replayed = self.records.get(&part.seq).and_then(|r| r.write.replays);
        match replayed {
            Some(replayed) if part.part == 0 => Mark {
                spool: replayed.spool,
                seq: replayed.seq as i64,
                part: replayed.part as i16,
            },
            _ => Mark {
                spool: self.settings.spool,
                seq: part.seq.0 as i64,
                part: part.part as i16,
            },
        }
    }
}
