//! The drainer's upkeep: letting go of written records on disk, pruning the shards' marks of
//! records the spool no longer holds, reading a shard's marks after a restart, and the spool's
//! metrics.

use super::{Drainer, Event, PartState};
use crate::shards::applied;
use crate::shards::set::ShardSet;
use crate::spool::RecordSeq;
use std::collections::{BTreeSet, HashMap};

impl Drainer {
    /// Lets go of written records on disk and sets the spool's metrics.
    pub(super) fn housekeeping(&mut self) {
        let metrics = &self.settings.metrics;
        metrics.spool_bytes.set(self.settings.appender.bytes() as i64);
        metrics
            .spool_segments
            .set(self.settings.appender.segments() as i64);
        self.set_pending_metrics();
        let through = RecordSeq(
            self.records
                .keys()
                .next()
                .unwrap_or(&self.next)
                .0
                .saturating_sub(1),
        );
        if through > self.removed_through && !self.removing {
            self.removing = true;
            self.removed_through = through;
            let appender = self.settings.appender.clone();
            self.events.push(Box::pin(async move {
                let result = appender.remove_applied(through).await.map_err(|e| e.to_string());
                Event::Removed { result }
            }));
        }
    }

    pub(super) fn set_pending_metrics(&self) {
        let metrics = &self.settings.metrics;
        let now_ms = (crate::units::unix_micros_now() / 1000) as u64;
        let mut pending: HashMap<&str, (usize, u64)> = HashMap::new();
        for spooled in self.records.values() {
            for (part, state) in spooled.write.parts.iter().zip(&spooled.parts) {
                if *state != PartState::Done {
                    let entry = pending.entry(&part.shard).or_insert((0, spooled.accepted_ms));
                    entry.0 += part.rows;
                    entry.1 = entry.1.min(spooled.accepted_ms);
                }
            }
        }
        let set = self.settings.shards.load();
        let names: BTreeSet<&str> = set
            .iter()
            .map(|(_, shard)| shard.id.0.as_str())
            .chain(pending.keys().copied())
            .collect();
        for name in names {
            let (rows, oldest) = pending.get(name).copied().unwrap_or((0, now_ms));
            metrics
                .spool_pending_rows
                .with_label_values(&[name])
                .set(rows as i64);
            let lag = now_ms.saturating_sub(oldest) as f64 / 1000.0;
            metrics.spool_oldest_pending.with_label_values(&[name]).set(lag);
        }
    }

    /// Removes the shards' marks of records the spool no longer holds (best effort: a shard
    /// that is down keeps them until the next removal).
    pub(super) fn prune_marks(&mut self, first_kept: RecordSeq) {
        if first_kept <= self.pruned_before {
            return;
        }
        self.pruned_before = first_kept;
        let spool = self.settings.spool;
        let through = first_kept.0 as i64 - 1;
        for (_, shard) in self.settings.shards.load().iter() {
            let pool = shard.pools.copy.clone();
            let name = shard.id.0.clone();
            tokio::spawn(async move {
                let pruned = match pool.get().await {
                    Ok(client) => applied::prune_through(&**client, spool, through)
                        .await
                        .map_err(|e| e.to_string()),
                    Err(e) => Err(e.to_string()),
                };
                if let Err(error) = pruned {
                    tracing::debug!(shard = %name, %error, "spool marks not pruned this time");
                }
            });
        }
    }

    pub(super) fn read_marks(&mut self, set: &ShardSet, name: &str) {
        let spool = self.settings.spool;
        let from = self.records.keys().next().map_or(0, |seq| seq.0) as i64;
        let pool = self.reach(set, name);
        let shard = name.to_string();
        self.events.push(Box::pin(async move {
            let result = async {
                let client = pool.await?.get().await.map_err(|e| e.to_string())?;
                let marks = applied::applied_from(&**client, spool, from).await;
                marks
                    .map(|marks| marks.into_iter().collect())
                    .map_err(|e| e.to_string())
            }
            .await;
            Event::MarksRead { shard, result }
        }));
    }
}
