//! Parts whose rows moved to other shards before they were written, or some of whose rows are
//! in a range being copied: the part's own shard is asked whether it applied the part, once no
//! batch can still be writing it there (unless no batch ever held it), and if not, the rows are
//! split by their owners, and by whether they wait for a cutover, into a record that supersedes
//! the part.

use super::{Drainer, Event, PartState};
use crate::routing::Epoch;
use crate::shards::applied::{self, Mark};
use crate::shards::set::ShardSet;
use crate::spool::{PartRef, SpooledPart, SpooledWrite};

impl Drainer {
    /// Asks the part's own shard whether it applied the part, now that its rows moved.
    pub(super) fn settle(&mut self, set: &ShardSet, name: &str, part: PartRef) {
        self.set_state(part, PartState::Busy);
        let mark = self.mark(part);
        let pool = self.reach(set, name);
        self.events.push(Box::pin(async move {
            let result = async { settled_on(&pool.await?, mark).await }.await;
            Event::Settled { part, result }
        }));
    }

    /// Splits a part by its rows' owners, the rows in ranges being copied apart, into a record
    /// that supersedes it.
    pub(super) fn split_part(&mut self, part: PartRef) {
        let set = self.settings.shards.load();
        let spooled = &self.records[&part.seq];
        let schema = self.settings.tables.get(spooled.table);
        match spooled.write.parts[usize::from(part.part)].split(schema, &set.table) {
            // Split by owner but not patched: the tuples of a table without an id still carry
            // the epoch the part was first routed with, so they are looked at again when drained.
            Ok(parts) => self.supersede(part, parts, None),
            Err(error) => {
                tracing::error!(seq = part.seq.0, part = part.part, %error, "a spooled part cannot be read; it stays in the spool");
            }
        }
    }

    /// Appends a record carrying `parts` in place of `part`; `routed_at` is the epoch of the
    /// routing they were made with, if they were made with one.
    pub(super) fn supersede(&mut self, part: PartRef, parts: Vec<SpooledPart>, routed_at: Option<Epoch>) {
        self.set_state(part, PartState::Busy);
        let spooled = &self.records[&part.seq];
        let record = SpooledWrite {
            write_id: spooled.write.write_id,
            table: spooled.write.table.clone(),
            replays: spooled.write.replays.filter(|_| parts.len() == 1),
            parts,
            supersedes: vec![part],
            routed_at,
            key: None,
        };
        let appender = self.settings.appender.clone();
        self.events.push(Box::pin(async move {
            let result = appender
                .append(record.encode())
                .await
                .map(|_| ())
                .map_err(|e| e.to_string());
            Event::Superseded { part, result }
        }));
    }
}

/// Whether the shard behind `pool` applied `mark`, asked once no batch can be writing it.
async fn settled_on(pool: &deadpool_postgres::Pool, mark: Mark) -> Result<bool, String> {
    let mut client = pool.get().await.map_err(|e| e.to_string())?;
    applied::settled_applied(&mut client, mark)
        .await
        .map_err(|e| e.to_string())
}
