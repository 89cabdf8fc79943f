//! What the spool knows of each write it holds, or wrote lately: rows per shard written and
//! still waiting, asked for with `GET /v1/writes/{write_id}`. A write is remembered while any
//! of its rows waits and for `spool.remember_writes` after its last row was written; after a
//! restart, the writes whose records the spool still holds.

use serde::Serialize;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Mutex;
use std::time::Duration;
use tokio::time::Instant;
use uuid::Uuid;

/// The writes the spool knows, shared by the drainer (which updates them) and the HTTP layer.
pub struct WriteStatuses {
    inner: Mutex<Known>,
    remember: Duration,
}

#[derive(Default)]
struct Known {
    writes: HashMap<Uuid, Tracked>,
    /// Written writes in the order they finished, to forget them after `remember`.
    finished: VecDeque<(Instant, Uuid)>,
}

struct Tracked {
    table: String,
    rows: usize,
    shards: BTreeMap<String, ShardRows>,
}

/// One shard's rows of a write.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct ShardRows {
    /// Rows committed on the shard.
    pub written: usize,
    /// Rows waiting in the spool for it.
    pub pending: usize,
    /// Rows the shard refused for their data, now in the dead-letter table.
    pub dead_letter: usize,
}

/// What became of some of a write's rows that waited for a shard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RowsOutcome {
    /// Committed on the shard.
    Written,
    /// Carried on by a record that supersedes their part.
    Moved,
    /// Refused by the shard for their data and recorded as dead letters.
    DeadLetter,
    /// Not written: the write repeated an idempotency key whose first write carries the rows.
    /// The write is forgotten (its status is asked by the first write's id).
    Duplicate,
}

/// A write as `GET /v1/writes/{write_id}` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WriteStatus {
    /// The write's id.
    pub write_id: Uuid,
    /// Its table.
    pub table: String,
    /// `spooled` while some row waits, `committed` once every row is written, `dead_letter`
    /// once none waits and some went to the dead-letter table.
    pub status: &'static str,
    /// Rows in the write.
    pub rows: usize,
    /// Rows per shard.
    pub shards: BTreeMap<String, ShardRows>,
}

impl WriteStatuses {
    /// Statuses kept for `remember` after a write's last row was written.
    pub fn new(remember: Duration) -> WriteStatuses {
        WriteStatuses {
            inner: Mutex::new(Known::default()),
            remember,
        }
    }

    /// How long a written write is remembered.
    pub fn remember(&self) -> Duration {
        self.remember
    }

    /// A record of `write_id` holds `parts` (shard, rows), waiting; a record that supersedes
    /// earlier parts carries rows the write already counts (unless the write is not known,
    /// its first record gone before a restart).
    pub fn spooled<'a>(
        &self,
        write_id: Uuid,
        table: &str,
        parts: impl Iterator<Item = (&'a str, usize)>,
        supersedes: bool,
    ) {
        let mut known = self.lock();
        // After a restart the record a superseding one replaces may be gone: its rows count.
        let counts_rows = !supersedes || !known.writes.contains_key(&write_id);
        let tracked = known.writes.entry(write_id).or_insert_with(|| Tracked {
            table: table.to_string(),
            rows: 0,
            shards: BTreeMap::new(),
        });
        for (shard, rows) in parts {
            tracked.shards.entry(shard.to_string()).or_default().pending += rows;
            if counts_rows {
                tracked.rows += rows;
            }
        }
    }

    /// `rows` of `write_id` that waited for `shard` are done with, as `outcome` says.
    pub fn done(&self, write_id: Uuid, shard: &str, rows: usize, outcome: RowsOutcome) {
        let mut known = self.lock();
        if outcome == RowsOutcome::Duplicate {
            known.writes.remove(&write_id);
            return;
        }
        let Some(tracked) = known.writes.get_mut(&write_id) else {
            return;
        };
        let counts = tracked.shards.entry(shard.to_string()).or_default();
        counts.pending = counts.pending.saturating_sub(rows);
        match outcome {
            RowsOutcome::Written => counts.written += rows,
            RowsOutcome::DeadLetter => counts.dead_letter += rows,
            RowsOutcome::Moved | RowsOutcome::Duplicate => {}
        }
        if tracked.settled() >= tracked.rows {
            known.finished.push_back((Instant::now(), write_id));
        }
    }

    /// What is known of `write_id`, forgetting writes written longer ago than `remember`.
    pub fn get(&self, write_id: Uuid) -> Option<WriteStatus> {
        let mut known = self.lock();
        let now = Instant::now();
        while let Some((at, id)) = known.finished.front().copied() {
            if now.duration_since(at) < self.remember {
                break;
            }
            known.finished.pop_front();
            known.writes.remove(&id);
        }
        let tracked = known.writes.get(&write_id)?;
        let dead: usize = tracked.shards.values().map(|s| s.dead_letter).sum();
        let status = match (tracked.settled() >= tracked.rows, dead) {
            (false, _) => "spooled",
            (true, 0) => "committed",
            (true, _) => "dead_letter",
        };
        Some(WriteStatus {
            write_id,
            table: tracked.table.clone(),
            status,
            rows: tracked.rows,
            shards: tracked.shards.clone(),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Known> {
        self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Tracked {
    /// Rows no longer waiting: written or dead letters.
    fn settled(&self) -> usize {
        self.shards.values().map(|s| s.written + s.dead_letter).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_write_is_spooled_until_every_row_is_done_then_committed_then_forgotten() {
        let statuses = WriteStatuses::new(Duration::from_millis(300));
        let id = Uuid::now_v7();
        statuses.spooled(id, "logs", [("s0", 3), ("s1", 2)].into_iter(), false);
        let shown = statuses.get(id).unwrap();
        assert_eq!((shown.status, shown.rows), ("spooled", 5));
        statuses.done(id, "s0", 3, RowsOutcome::Written);
        statuses.done(id, "s1", 2, RowsOutcome::Moved);
        statuses.spooled(id, "logs", [("s2", 2)].into_iter(), true);
        let shown = statuses.get(id).unwrap();
        assert_eq!(
            (shown.status, shown.rows),
            ("spooled", 5),
            "moved rows still wait"
        );
        assert_eq!(shown.shards["s1"], ShardRows::default());
        let waiting = ShardRows {
            pending: 2,
            ..ShardRows::default()
        };
        assert_eq!(shown.shards["s2"], waiting);
        statuses.done(id, "s2", 2, RowsOutcome::Written);
        let shown = statuses.get(id).unwrap();
        assert_eq!(shown.status, "committed");
        let written = ShardRows {
            written: 3,
            ..ShardRows::default()
        };
        assert_eq!(shown.shards["s0"], written);

        let refused = Uuid::now_v7();
        statuses.spooled(refused, "logs", [("s0", 2)].into_iter(), false);
        statuses.done(refused, "s0", 1, RowsOutcome::Written);
        assert_eq!(statuses.get(refused).unwrap().status, "spooled");
        statuses.done(refused, "s0", 1, RowsOutcome::DeadLetter);
        assert_eq!(statuses.get(refused).unwrap().status, "dead_letter");

        tokio::time::sleep(Duration::from_millis(350)).await;
        assert_eq!(statuses.get(id), None, "forgotten after spool.remember_writes");
        assert_eq!(statuses.get(Uuid::now_v7()), None);
    }
}
