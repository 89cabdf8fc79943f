//! Writes queued and not yet answered, counted as they commit: what a block's `COMMIT` and a
//! pipeline's `Sync` wait for before they answer.

use crate::ingest::write::{Submitted, WriteAck, WriteRefused};
use crate::schema::TableId;
use futures_util::FutureExt;
use futures_util::future::BoxFuture;
use futures_util::stream::{FuturesUnordered, StreamExt};

/// Writes in flight, the rows of those that committed, and the first refusal among them.
#[derive(Default)]
pub struct Pending {
    in_flight: FuturesUnordered<BoxFuture<'static, (TableId, Result<WriteAck, WriteRefused>)>>,
    committed: usize,
    rows: usize,
    writes: usize,
    refused: Option<(TableId, WriteRefused)>,
}

/// The first refusal among a set of writes, once all of them were answered.
pub struct Refused {
    /// The table of the refused write.
    pub table: TableId,
    /// Why it was refused.
    pub refusal: WriteRefused,
    /// Rows of the set that committed nonetheless.
    pub committed: usize,
    /// Rows of the set.
    pub rows: usize,
    /// Writes of the set, the refused one included.
    pub writes: usize,
}

impl Pending {
    /// Adds a queued write into `table`, and counts those answered meanwhile.
    pub fn push(&mut self, table: TableId, submitted: Submitted) {
        self.rows += submitted.rows();
        self.writes += 1;
        let committed = submitted.committed().map(move |outcome| (table, outcome));
        self.in_flight.push(committed.boxed());
        while let Some(Some(answer)) = self.in_flight.next().now_or_never() {
            self.count(answer);
        }
    }

    /// Counts rows of the set acknowledged already: on the spool's disk, or committed by a
    /// write that was waited for.
    pub fn acknowledged(&mut self, rows: usize) {
        self.rows += rows;
        self.writes += 1;
        self.committed += rows;
    }

    /// Counts a keyed write of `table` that was waited for: its rows acknowledged, or its
    /// refusal.
    pub fn keyed(&mut self, table: TableId, written: Result<usize, WriteRefused>) {
        match written {
            Ok(rows) => self.acknowledged(rows),
            Err(refusal) => self.refuse(table, refusal, 0),
        }
    }

    /// Counts rows of the set that were not queued: refused before they reached a queue.
    pub fn refuse(&mut self, table: TableId, refusal: WriteRefused, rows: usize) {
        self.rows += rows;
        self.writes += 1;
        self.refused.get_or_insert((table, refusal));
    }

    /// Whether a write of the set was refused so far.
    pub fn has_refusal(&self) -> bool {
        self.refused.is_some()
    }

    /// Waits for the oldest answers until at most `limit` writes are in flight.
    pub async fn wait_below(&mut self, limit: usize) {
        while self.in_flight.len() > limit {
            match self.in_flight.next().await {
                Some(answer) => self.count(answer),
                None => return,
            }
        }
    }

    /// Waits for every write: the rows of the set committed so far, or the first refusal not
    /// told yet (which is told once; the set and its counts go on).
    pub async fn settle(&mut self) -> Result<usize, Refused> {
        self.wait_below(0).await;
        match self.refused.take() {
            None => Ok(self.committed),
            Some((table, refusal)) => Err(Refused {
                table,
                refusal,
                committed: self.committed,
                rows: self.rows,
                writes: self.writes,
            }),
        }
    }

    /// Waits for every write, as [`Pending::settle`], and starts a new set.
    pub async fn end(&mut self) -> Result<usize, Refused> {
        let settled = self.settle().await;
        *self = Pending::default();
        settled
    }

    fn count(&mut self, (table, answer): (TableId, Result<WriteAck, WriteRefused>)) {
        match answer {
            Ok(ack) => self.committed += ack.rows,
            Err(refusal) => {
                self.refused.get_or_insert((table, refusal));
            }
        }
    }
}
