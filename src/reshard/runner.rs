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

use super::backfill::{self, BackfillError, RangesCopy, Side};
use super::pass::{Pass, passes};
use crate::catalog::journal::{MigrationRecord, RangeRecord};
use crate::catalog::{Catalog, CatalogError};
use crate::config::{ReshardConfig, TlsConfig};
use crate::ingest::copy::TableStatements;
use crate::metrics::Metrics;
use crate::pg::connect_once;
use crate::routing::{Epoch, Ring, ShardId};
use crate::schema::{TableSchema, Tables};
use crate::shards::set::{Published, ShardSet};
use crate::shards::{fence, idempotency};
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
    /// A drained shard's idempotency records could not be copied to an heir.
    #[error("cannot hand the idempotency records of {drained} down to {target}: {reason}")]
    Records {
        /// The drained shard.
        drained: String,
        /// The heir.
        target: String,
        /// Why.
        reason: String,
    },
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
        let copying = passes(ranges.iter().filter(|r| r.phase == "copying"), |r| {
            (r.source.clone(), r.target.clone())
        });
        let ends = self.blocks_now(&set, &copying).await?;
        let started = Instant::now();
        let mut copied_total = 0u64;
        for (pass, ends) in copying.iter().zip(&ends) {
            let sides = (
                side(self.shard(&set, &pass.key.0)?),
                side(self.shard(&set, &pass.key.1)?),
            );
            for (table_id, table) in self.tables.iter() {
                let end = ends[table_id.0];
                let mut copy = RangesCopy::new(
                    table,
                    &statements[table_id.0],
                    &pass.moving,
                    sides,
                    (id, dual_write, end),
                );
                loop {
                    if !self.still_in(id, "copying").await? {
                        return Ok(());
                    }
                    let chunk_started = Instant::now();
                    let Some(copied) = copy.next_chunk(self.settings.chunk_rows, set.epoch()).await? else {
                        break;
                    };
                    copied_total += copied.rows as u64;
                    self.metrics.migration_rows_copied.inc_by(copied.rows as u64);
                    self.catalog
                        .record_copied(id, &pass.by_start(&copied.per_range))
                        .await?;
                    self.throttle(started, copied_total, chunk_started.elapsed())
                        .await;
                }
                let (_, blocks) = copy.progress();
                tracing::info!(source = %pass.key.0, target = %pass.key.1, table = %table.name, blocks, "pass copied");
            }
        }
        if !self.still_in(id, "copying").await? {
            return Ok(());
        }
        if let Some(mismatch) = self.verify(&set, id, &copying, &statements, dual_write).await? {
            tracing::error!(%mismatch, "verification failed; the migration is given up and its copies deleted");
            self.catalog.fail(id, &mismatch).await?;
            return Ok(());
        }
        let (ring, names) = self.next_ring(id).await?;
        let epoch = self.catalog.cut_over(id, &ring, &names).await?;
        tracing::info!(epoch = epoch.0, copied = copied_total, took = ?started.elapsed(), "cut over");
        Ok(())
    }

    /// Per pass of `copying` and table, the blocks its source has now, just after the fences
    /// moved to the dual-write epoch: every row a later block may hold was dual-written.
    async fn blocks_now(
        &self,
        set: &ShardSet,
        copying: &[Pass<'_, (String, String)>],
    ) -> Result<Vec<Vec<i64>>, StepError> {
        let mut ends = Vec::with_capacity(copying.len());
        for pass in copying {
            let source = side(self.shard(set, &pass.key.0)?);
            let mut per_table = Vec::new();
            for (_, table) in self.tables.iter() {
                per_table.push(backfill::blocks::table_blocks(source, table).await?);
            }
            ends.push(per_table);
        }
        Ok(ends)
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
        let leaving = passes(ranges.iter().filter(|r| r.phase == "leaving"), |r| {
            r.source.clone()
        });
        let migration = self.catalog.migration(id).await?.map(|(m, _)| m);
        if migration.is_some_and(|m| m.kind == "drain") {
            self.hand_down_records(&set, &ranges).await?;
        }
        self.delete_passes(&set, &leaving).await?;
        self.drop_leftovers(&set).await?;
        let epoch = self.catalog.finish(id).await?;
        tracing::info!(epoch = epoch.0, "migration done");
        Ok(())
    }

    /// Phase `cancelling`: once no proxy dual-writes any more, the targets' copies of the
    /// ranges are deleted; a shard being added is then no shard at all.
    async fn undo_copies(&self, id: i64) -> Result<(), StepError> {
        let set = self.follow_the_catalog().await?;
        let ranges = self.ranges(id).await?;
        self.delete_passes(&set, &passes(&ranges, |r| r.target.clone()))
            .await?;
        self.drop_leftovers(&set).await?;
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

    /// Copies the idempotency records of a drained shard to every shard that took some of its
    /// ranges, before the drained shard leaves the set with them.
    async fn hand_down_records(&self, set: &ShardSet, ranges: &[RangeRecord]) -> Result<(), StepError> {
        let mut pairs: Vec<(&str, &str)> = ranges
            .iter()
            .filter(|r| r.phase == "leaving")
            .map(|r| (r.source.as_str(), r.target.as_str()))
            .collect();
        pairs.sort_unstable();
        pairs.dedup();
        for (source, target) in pairs {
            let from = self.shard(set, source)?;
            let to = self.shard(set, target)?;
            let failed = |reason: String| StepError::Records {
                drained: source.to_string(),
                target: target.to_string(),
                reason,
            };
            let reader = from.pools.copy.get().await.map_err(|e| failed(e.to_string()))?;
            let mut writer = to.pools.copy.get().await.map_err(|e| failed(e.to_string()))?;
            let handed = idempotency::hand_down(&reader, &mut writer)
                .await
                .map_err(|e| failed(e.to_string()))?;
            tracing::info!(%source, %target, handed, "idempotency records handed down");
        }
        Ok(())
    }

    /// Deletes, on the shard each pass names, the rows of its ranges from every table.
    async fn delete_passes(&self, set: &ShardSet, passes: &[Pass<'_, String>]) -> Result<(), StepError> {
        for pass in passes {
            let shard = side(self.shard(set, &pass.key)?);
            for (_, table) in self.tables.iter() {
                let deleted =
                    backfill::delete_rows(shard, table, &pass.moving, self.settings.chunk_rows, |took| {
                        self.share_pause(took)
                    })
                    .await?;
                tracing::info!(shard = %pass.key, table = %table.name, deleted, "moved rows deleted");
            }
        }
        Ok(())
    }

    /// Drops what moving ranges left on every shard of `set` once none moves any more: the
    /// passes' cursors, and an index an earlier release built for its backfill.
    async fn drop_leftovers(&self, set: &ShardSet) -> Result<(), StepError> {
        for (_, shard) in set.iter() {
            backfill::drop_cursors(side(shard)).await?;
            for (_, table) in self.tables.iter() {
                backfill::drop_index(side(shard), table).await?;
            }
        }
        Ok(())
    }

    /// Whether migration `id` is still in `phase`, waiting while it is paused (and showing
    /// so in `shardgate_migration_paused`).
    async fn still_in(&self, id: i64, phase: &str) -> Result<bool, StepError> {
        let waited = self.wait_while_paused(id, phase).await;
        self.metrics.migration_paused.set(0);
        waited
    }

    async fn wait_while_paused(&self, id: i64, phase: &str) -> Result<bool, StepError> {
        loop {
            match self.catalog.state(id).await? {
                Some((now, true)) if now == phase => {
                    self.metrics.migration_paused.set(1);
                    tokio::time::sleep(PAUSE_POLL).await
                }
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
            let moving = Instant::now();
            fence::bump(&mut client, epoch)
                .await
                .map_err(|e| fence_error(e.to_string()))?;
            self.metrics
                .fence_move_duration
                .with_label_values(&[&shard.id.0])
                .observe(moving.elapsed().as_secs_f64());
        }
        tracing::info!(epoch = epoch.0, took = ?bumping.elapsed(), "every fence moved");
        Ok(set)
    }

    /// The shard of `set` named `name`.
    fn shard<'s>(&self, set: &'s ShardSet, name: &str) -> Result<&'s crate::shards::Shard, StepError> {
        set.iter()
            .map(|(_, shard)| shard)
            .find(|shard| shard.id.0 == name)
            .ok_or_else(|| StepError::UnknownShard(name.to_string()))
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

    /// Every range checked on source and target, one pass per pair of shards and table. For a
    /// table with an id the target must hold at least the source's rows (it may hold more:
    /// rows dual-written there whose write to the source failed), and a pass with a range found
    /// short is copied once more before it counts as a mismatch. For a table without an id the
    /// rows older than the dual-write epoch must be the same on both sides, by count and
    /// checksum.
    async fn verify(
        &self,
        set: &ShardSet,
        id: i64,
        copying: &[Pass<'_, (String, String)>],
        statements: &[TableStatements],
        dual_write: Epoch,
    ) -> Result<Option<String>, StepError> {
        for pass in copying {
            let (source, target) = (
                side(self.shard(set, &pass.key.0)?),
                side(self.shard(set, &pass.key.1)?),
            );
            for (table_id, table) in self.tables.iter() {
                let older = table.id.is_none().then_some(dual_write);
                let on_source = backfill::summaries(source, table, &pass.moving, older).await?;
                let mut on_target = backfill::summaries(target, table, &pass.moving, older).await?;
                if table.id.is_some() && first_mismatch(table, &on_source, &on_target).is_some() {
                    let mut copy = RangesCopy::new(
                        table,
                        &statements[table_id.0],
                        &pass.moving,
                        (source, target),
                        (id, dual_write, 0),
                    );
                    copy.restart().await?;
                    while copy
                        .next_chunk(self.settings.chunk_rows, set.epoch())
                        .await?
                        .is_some()
                    {}
                    on_target = backfill::summaries(target, table, &pass.moving, older).await?;
                }
                if let Some(range) = first_mismatch(table, &on_source, &on_target) {
                    let record = pass.records[range];
                    let describe = |(rows, sum): (i64, i64)| match older {
                        Some(_) => format!("{rows} rows (checksum {sum})"),
                        None => format!("{rows} rows"),
                    };
                    return Ok(Some(format!(
                        "range ({}, {}] of table {}: {} on {}, {} on {}",
                        record.start,
                        record.end,
                        table.name,
                        describe(on_source[range]),
                        record.source,
                        describe(on_target[range]),
                        record.target
                    )));
                }
            }
        }
        Ok(None)
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

    /// Sleeps as long as needed to keep the copy at `rows_per_second` and, after a chunk
    /// that took `chunk_took`, its work at `busy_share` of the time.
    async fn throttle(&self, started: Instant, copied: u64, chunk_took: Duration) {
        let due = Duration::from_secs_f64(copied as f64 / self.settings.rows_per_second as f64);
        let behind_rate = due.saturating_sub(started.elapsed());
        tokio::time::sleep(behind_rate.max(self.share_pause(chunk_took))).await;
    }

    /// The rest after a chunk that took `took`, so the work keeps to `busy_share` of the time.
    fn share_pause(&self, took: Duration) -> Duration {
        took.mul_f64(1.0 / self.settings.busy_share - 1.0)
    }
}

/// The first range (by index) whose target does not match its source: for a table with an
/// id, one with fewer rows on the target; for one without, any difference.
fn first_mismatch(table: &TableSchema, on_source: &[(i64, i64)], on_target: &[(i64, i64)]) -> Option<usize> {
    on_source
        .iter()
        .zip(on_target)
        .position(|(source, target)| match table.id {
            Some(_) => target.0 < source.0,
            None => target != source,
        })
}

fn side(shard: &crate::shards::Shard) -> Side<'_> {
    Side {
        name: &shard.id.0,
        pool: &shard.pools.copy,
    }
}
