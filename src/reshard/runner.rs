//! Carrying out a migration, step by step, from what the catalog's journal says: every step
//! can be run again after a crash and leaves the same result, so any proxy can take over an
//! unfinished migration. One proxy at a time runs it: the one holding the runner lock (a
//! session advisory lock on the catalog database).
//!
//! Adding a shard (DESIGN section 6):
//! 1. `copying` (written by [`Resharder::add`]): the target is in the catalog without tokens,
//!    and its ranges are dual-written. Once this proxy routes with that epoch and the grace has
//!    passed, every fence moves to it, so no proxy still writes a range without its copy.
//!    Then each range's rows are copied (throttled), counted on both sides, and the cutover
//!    makes the target own them (a new ring, ranges `leaving`, migration `cleaning`).
//! 2. `cleaning`: once the fences follow the cutover epoch and `cleanup_delay` has passed, the
//!    sources delete the moved rows; the migration is `done`.
//!
//! A migration cancelled while copying is `cancelling`: once the fences follow that epoch (no
//! proxy dual-writes any more) the targets' copies are deleted and it is `cancelled`. A paused
//! migration's runner waits between chunks and before each step.

use super::backfill::{self, BackfillError, RangeCopy, Side};
use crate::catalog::journal::{MigrationRecord, RangeRecord};
use crate::catalog::{Catalog, CatalogError};
use crate::config::{ReshardConfig, TlsConfig};
use crate::ingest::copy::TableStatements;
use crate::metrics::Metrics;
use crate::pg::connect_once;
use crate::routing::{Epoch, Ring, ShardId, TokenRange};
use crate::schema::{TableSchema, Tables};
use crate::shards::fence;
use crate::shards::set::{Published, ShardSet};
use std::sync::Arc;
use std::time::Duration;
use thiserror::Error;
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

/// Key of the session advisory lock the proxy running migrations holds on the catalog.
const RUNNER_LOCK_KEY: i64 = 0x5347_5245_5348_5244;
/// How often a proxy looks for an unfinished migration nobody runs.
const LOOK_EVERY: Duration = Duration::from_secs(10);
/// Longest wait for this proxy to route with an epoch the catalog holds.
const PUBLISH_TIMEOUT: Duration = Duration::from_secs(10);
/// How often a paused migration looks whether it was resumed.
const PAUSE_POLL: Duration = Duration::from_millis(200);
/// Pause before a failed step is tried again.
const RETRY_AFTER: Duration = Duration::from_secs(2);

/// A step of a migration could not be made; it is tried again.
#[derive(Debug, Error)]
pub enum StepError {
    /// The catalog failed.
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    /// Moving rows failed.
    #[error(transparent)]
    Backfill(#[from] BackfillError),
    /// A shard's fence could not be moved.
    #[error("shard {shard}: cannot move the fence: {reason}")]
    Fence {
        /// The shard.
        shard: String,
        /// Why.
        reason: String,
    },
    /// This proxy did not take the catalog's routing in time.
    #[error("this proxy does not route with epoch {0} yet")]
    NotPublished(Epoch),
    /// The journal lacks the epoch the copy of tables without an id needs.
    #[error(
        "migration {0} was started by an earlier release that did not record its dual-write epoch, \
         which tables without an id need: cancel it and start it again"
    )]
    NoDualWriteEpoch(i64),
    /// A shard the migration names is not in the routing table.
    #[error("shard {0} is not in the routing table")]
    UnknownShard(String),
}

/// What a runner needs: the catalog, the published shards, the tables and the settings.
pub struct Resharder {
    /// The catalog holding the journal.
    pub catalog: Arc<Catalog>,
    /// The shards this proxy routes to.
    pub shards: Arc<Published>,
    /// The declared tables.
    pub tables: Arc<Tables>,
    /// How ranges are moved.
    pub settings: ReshardConfig,
    /// Tokens per unit of weight.
    pub vnodes: u32,
    /// The catalog database, for the runner lock.
    pub catalog_url: String,
    /// TLS for that connection.
    pub tls: TlsConfig,
    /// Wakes the runner when a migration was started here.
    pub started: Notify,
    /// Rows copied and the phase of the migration this proxy runs.
    pub metrics: Arc<Metrics>,
}

impl Resharder {
    /// Runs unfinished migrations whenever this proxy can take the runner lock: at once after
    /// one is started here, and every few seconds otherwise, until `shutdown`.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = self.run_unfinished() => {}
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = self.started.notified() => {}
                _ = tokio::time::sleep(LOOK_EVERY) => {}
            }
        }
    }

    /// Takes the runner lock, if free, and drives the unfinished migration to its end.
    async fn run_unfinished(&self) {
        let Ok(Some(_)) = self.catalog.unfinished_migration().await else {
            return;
        };
        let lock = match connect_once(&self.catalog_url, None, &self.tls).await {
            Ok(client) => client,
            Err(reason) => {
                tracing::warn!(%reason, "cannot connect to the catalog to run the migration");
                return;
            }
        };
        let taken = lock
            .query_one("SELECT pg_try_advisory_lock($1)", &[&RUNNER_LOCK_KEY])
            .await
            .map(|row| row.get::<_, bool>(0));
        if !matches!(taken, Ok(true)) {
            return;
        }
        while let Ok(Some(migration)) = self.catalog.unfinished_migration().await {
            self.show_phase(&migration.phase);
            let span = tracing::info_span!("migration", id = migration.id, shard = %migration.shard);
            let step = async {
                match migration.phase.as_str() {
                    "copying" => self.copy_and_cut_over(migration.id).await,
                    "cancelling" => self.undo_copies(migration.id).await,
                    _ => self.clean_up(migration.id).await,
                }
            };
            let outcome = step.instrument(span).await;
            match outcome {
                Ok(()) => {
                    let _ = self.catalog.record_error(migration.id, None).await;
                }
                Err(error) => {
                    tracing::warn!(%error, "migration step failed; retrying");
                    let _ = self
                        .catalog
                        .record_error(migration.id, Some(&error.to_string()))
                        .await;
                    tokio::time::sleep(RETRY_AFTER).await;
                }
            }
        }
        self.show_phase("");
        drop(lock);
    }

    /// Sets the phase gauge: 1 for `phase`, 0 for the others.
    fn show_phase(&self, phase: &str) {
        for known in ["copying", "cleaning"] {
            let value = i64::from(known == phase);
            self.metrics
                .migration_phase
                .with_label_values(&[known])
                .set(value);
        }
    }

    /// Phase `copying`: fences to the dual-write epoch, every range copied and counted, then
    /// the cutover.
    async fn copy_and_cut_over(&self, id: i64) -> Result<(), StepError> {
        let set = self.follow_the_catalog().await?;
        let Some((migration, ranges)) = self.catalog.migration(id).await? else {
            return Ok(());
        };
        let dual_write = self.dual_write_epoch(&migration)?;
        let statements: Vec<TableStatements> =
            self.tables.iter().map(|(_, t)| TableStatements::new(t)).collect();
        let indexing = Instant::now();
        for (_, source) in set.iter() {
            for (_, table) in self.tables.iter() {
                backfill::ensure_index(side(source), table).await?;
            }
        }
        tracing::info!(took = ?indexing.elapsed(), "backfill indexes ready");
        let started = Instant::now();
        let mut copied_total = 0u64;
        for record in ranges.iter().filter(|r| r.phase == "copying") {
            let (range, source, target) = self.range_of(&set, record)?;
            for (table_id, table) in self.tables.iter() {
                let statements = &statements[table_id.0];
                let sides = (side(source), side(target));
                let mut copy = RangeCopy::new(table, statements, &range, sides, dual_write);
                loop {
                    if !self.still_in(id, "copying").await? {
                        return Ok(());
                    }
                    let copied = copy.next_chunk(self.settings.chunk_rows, set.epoch()).await?;
                    if copied == 0 {
                        break;
                    }
                    copied_total += copied as u64;
                    self.metrics.migration_rows_copied.inc_by(copied as u64);
                    self.catalog
                        .record_copied(id, record.start, copied as i64)
                        .await?;
                    self.throttle(started, copied_total).await;
                }
            }
        }
        if !self.still_in(id, "copying").await? {
            return Ok(());
        }
        if let Some(mismatch) = self.verify(&set, &ranges, &statements, dual_write).await? {
            tracing::error!(%mismatch, "verification failed; the migration is given up and its copies deleted");
            self.catalog.fail(id, &mismatch).await?;
            return Ok(());
        }
        let (ring, names) = self.next_ring(id).await?;
        let epoch = self.catalog.cut_over(id, &ring, &names).await?;
        tracing::info!(epoch = epoch.0, copied = copied_total, "cut over");
        Ok(())
    }

    /// Phase `cleaning`: fences to the cutover epoch, then, after `cleanup_delay`, the moved
    /// rows deleted from the sources.
    async fn clean_up(&self, id: i64) -> Result<(), StepError> {
        let set = self.follow_the_catalog().await?;
        tokio::time::sleep(self.settings.cleanup_delay).await;
        if !self.still_in(id, "cleaning").await? {
            return Ok(());
        }
        let ranges = self.ranges(id).await?;
        for record in ranges.iter().filter(|r| r.phase == "leaving") {
            let (range, source, _) = self.range_of(&set, record)?;
            for (_, table) in self.tables.iter() {
                backfill::delete_range(side(source), table, &range, self.settings.chunk_rows).await?;
            }
        }
        self.drop_indexes(&set).await?;
        let epoch = self.catalog.finish(id).await?;
        tracing::info!(epoch = epoch.0, "migration done");
        Ok(())
    }

    /// Phase `cancelling`: once no proxy dual-writes any more, the targets' copies of the
    /// ranges are deleted; a shard being added is then no shard at all.
    async fn undo_copies(&self, id: i64) -> Result<(), StepError> {
        let set = self.follow_the_catalog().await?;
        let ranges = self.ranges(id).await?;
        for record in &ranges {
            let (range, _, target) = self.range_of(&set, record)?;
            for (_, table) in self.tables.iter() {
                backfill::delete_range(side(target), table, &range, self.settings.chunk_rows).await?;
            }
        }
        self.drop_indexes(&set).await?;
        let migration = self.catalog.migration(id).await?.map(|(m, _)| m);
        if let Some(migration) = migration.filter(|m| m.kind == "add")
            && let Some((_, joining)) = set.iter().find(|(_, s)| s.id.0 == migration.shard)
        {
            backfill::drop_fence(side(joining)).await?;
        }
        let epoch = self.catalog.finish_cancel(id).await?;
        tracing::info!(epoch = epoch.0, "migration cancelled");
        Ok(())
    }

    /// Drops the backfill indexes from every shard of `set` once no range moves any more.
    async fn drop_indexes(&self, set: &ShardSet) -> Result<(), StepError> {
        for (_, shard) in set.iter() {
            for (_, table) in self.tables.iter() {
                backfill::drop_index(side(shard), table).await?;
            }
        }
        Ok(())
    }

    /// Whether migration `id` is still in `phase`, waiting while it is paused.
    async fn still_in(&self, id: i64, phase: &str) -> Result<bool, StepError> {
        loop {
            match self.catalog.state(id).await? {
                Some((now, true)) if now == phase => tokio::time::sleep(PAUSE_POLL).await,
                Some((now, false)) => return Ok(now == phase),
                _ => return Ok(false),
            }
        }
    }

    async fn ranges(&self, id: i64) -> Result<Vec<RangeRecord>, StepError> {
        Ok(self
            .catalog
            .migration(id)
            .await?
            .map(|(_, ranges)| ranges)
            .unwrap_or_default())
    }

    /// Waits until this proxy routes with the catalog's epoch, lets the grace pass so other
    /// proxies do too, then moves every shard's fence to it. Returns the set routing with it.
    async fn follow_the_catalog(&self) -> Result<Arc<ShardSet>, StepError> {
        let epoch = self.catalog.epoch().await?;
        let deadline = Instant::now() + PUBLISH_TIMEOUT;
        let set = loop {
            let set = self.shards.load();
            if set.epoch() >= epoch {
                break set;
            }
            if Instant::now() >= deadline {
                return Err(StepError::NotPublished(epoch));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        tokio::time::sleep(self.settings.grace).await;
        let bumping = Instant::now();
        for (_, shard) in set.iter() {
            let fence_error = |reason: String| StepError::Fence {
                shard: shard.id.0.clone(),
                reason,
            };
            let mut client = shard
                .pools
                .copy
                .get()
                .await
                .map_err(|e| fence_error(crate::pg::describe_pool_error(&e)))?;
            fence::bump(&mut client, epoch)
                .await
                .map_err(|e| fence_error(e.to_string()))?;
        }
        tracing::info!(epoch = epoch.0, took = ?bumping.elapsed(), "every fence moved");
        Ok(set)
    }

    /// A range of the journal with its source and target in `set`.
    fn range_of<'s>(
        &self,
        set: &'s ShardSet,
        record: &RangeRecord,
    ) -> Result<(TokenRange, &'s crate::shards::Shard, &'s crate::shards::Shard), StepError> {
        let find = |name: &str| {
            set.iter()
                .find(|(_, s)| s.id.0 == name)
                .ok_or_else(|| StepError::UnknownShard(name.to_string()))
        };
        let (source_index, source) = find(&record.source)?;
        let (_, target) = find(&record.target)?;
        let range = TokenRange {
            start: record.start,
            end: record.end,
            shard: source_index,
        };
        Ok((range, source, target))
    }

    /// The epoch that began dual-writing `migration`'s ranges. A migration started by a
    /// release that did not record it can still copy tables with an id, which copy every row
    /// whatever its epoch.
    fn dual_write_epoch(&self, migration: &MigrationRecord) -> Result<Epoch, StepError> {
        match migration.dual_write_epoch {
            Some(epoch) => Ok(Epoch(epoch)),
            None if self.tables.iter().all(|(_, t)| t.id.is_some()) => Ok(Epoch(i64::MAX)),
            None => Err(StepError::NoDualWriteEpoch(migration.id)),
        }
    }

    /// Every range checked on source and target. For a table with an id the target must hold
    /// at least the source's rows (it may hold more: rows dual-written there whose write to
    /// the source failed), and a range found short is copied once more before it counts as a
    /// mismatch. For a table without an id the rows older than the dual-write epoch must be
    /// the same on both sides, by count and checksum.
    async fn verify(
        &self,
        set: &ShardSet,
        ranges: &[RangeRecord],
        statements: &[TableStatements],
        dual_write: Epoch,
    ) -> Result<Option<String>, StepError> {
        for record in ranges.iter().filter(|r| r.phase == "copying") {
            let (range, source, target) = self.range_of(set, record)?;
            let mismatch = |table: &TableSchema, on_source, on_target| {
                format!(
                    "range ({}, {}] of table {}: {on_source} on {}, {on_target} on {}",
                    record.start, record.end, table.name, record.source, record.target
                )
            };
            for (table_id, table) in self.tables.iter() {
                if table.id.is_none() {
                    let on_source =
                        backfill::older_rows_summary(side(source), table, &range, dual_write).await?;
                    let on_target =
                        backfill::older_rows_summary(side(target), table, &range, dual_write).await?;
                    if on_source != on_target {
                        let describe = |(rows, sum): (i64, i64)| format!("{rows} rows (checksum {sum})");
                        return Ok(Some(mismatch(table, describe(on_source), describe(on_target))));
                    }
                    continue;
                }
                if self
                    .target_is_short(table, &range, source, target)
                    .await?
                    .is_none()
                {
                    continue;
                }
                let sides = (side(source), side(target));
                let mut copy = RangeCopy::new(table, &statements[table_id.0], &range, sides, dual_write);
                while copy.next_chunk(self.settings.chunk_rows, set.epoch()).await? > 0 {}
                if let Some((on_source, on_target)) =
                    self.target_is_short(table, &range, source, target).await?
                {
                    let rows = |count: i64| format!("{count} rows");
                    return Ok(Some(mismatch(table, rows(on_source), rows(on_target))));
                }
            }
        }
        Ok(None)
    }

    async fn target_is_short(
        &self,
        table: &TableSchema,
        range: &TokenRange,
        source: &crate::shards::Shard,
        target: &crate::shards::Shard,
    ) -> Result<Option<(i64, i64)>, StepError> {
        let on_source = backfill::count_in_range(side(source), table, range).await?;
        let on_target = backfill::count_in_range(side(target), table, range).await?;
        Ok((on_target < on_source).then_some((on_source, on_target)))
    }

    /// The ring the migration leads to: every shard it keeps, at the weight it gives.
    async fn next_ring(&self, id: i64) -> Result<(Ring, Vec<ShardId>), StepError> {
        let weights = self.catalog.next_weights(id).await?;
        let ring = Ring::build(
            weights.iter().map(|(name, weight)| (name.as_str(), *weight)),
            self.vnodes,
        )
        .map_err(CatalogError::from)?;
        Ok((ring, weights.into_iter().map(|(name, _)| ShardId(name)).collect()))
    }

    /// Sleeps as long as needed to keep the copy at `rows_per_second`.
    async fn throttle(&self, started: Instant, copied: u64) {
        let due = Duration::from_secs_f64(copied as f64 / self.settings.rows_per_second as f64);
        let elapsed = started.elapsed();
        if due > elapsed {
            tokio::time::sleep(due - elapsed).await;
        }
    }
}

fn side(shard: &crate::shards::Shard) -> Side<'_> {
    Side {
        name: &shard.id.0,
        pool: &shard.pools.copy,
    }
}
