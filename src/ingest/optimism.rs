//! Whether a batch of a table with an id is first tried by plain binary COPY into the table.
//!
//! Deduplicating every batch through a staging table costs the shard about 40% more CPU and
//! three WAL records per row instead of one, for retries that are rare. So a batch is first
//! copied straight into the table; only when that meets an id stored already (a retry) is it
//! written again, in a new transaction, through the staging table's `ON CONFLICT (id) DO
//! NOTHING`. A table whose batches keep meeting stored ids (a client that retries a lot, a
//! migration's copy over dual-written rows) would pay for both, so after
//! [`FALLBACKS_BEFORE_PAUSE`] fallbacks in a row its batches go straight to staging for the
//! next [`PAUSED_BATCHES`], then one is tried again.

use std::sync::atomic::{AtomicU32, Ordering};

/// Fallbacks in a row after which a table's batches stop trying the plain COPY for a while.
pub const FALLBACKS_BEFORE_PAUSE: u32 = 3;
/// Batches written through staging at once after that, before a plain COPY is tried again.
pub const PAUSED_BATCHES: u32 = 64;

/// How a batch reached its table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoadPath {
    /// Plain binary COPY into the table (a table without an id, or an id table's batch that
    /// met no stored id).
    Copy,
    /// Through the staging table, at once (a stream table, or a table whose plain copies
    /// were paused).
    Staged,
    /// A plain COPY that met a stored id, then through the staging table.
    CopyThenStaged,
}

impl LoadPath {
    /// The path's label in `shardgate_batches_total`.
    pub fn label(self) -> &'static str {
        match self {
            LoadPath::Copy => "copy",
            LoadPath::Staged => "staged",
            LoadPath::CopyThenStaged => "copy_then_staged",
        }
    }
}

/// One table's record of how its plain copies went, shared by the batches of every
/// connection that write it.
#[derive(Debug, Default)]
pub struct Optimism {
    fallbacks_in_a_row: AtomicU32,
    paused_for: AtomicU32,
}

impl Optimism {
    /// Whether the next batch tries a plain COPY first; counts down a pause.
    pub fn try_plain(&self) -> bool {
        let paused = self
            .paused_for
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |left| left.checked_sub(1));
        paused.is_err()
    }

    /// A plain COPY went through.
    pub fn went_through(&self) {
        self.fallbacks_in_a_row.store(0, Ordering::Relaxed);
    }

    /// A plain COPY met a stored id; after enough in a row, the next batches skip it.
    pub fn fell_back(&self) {
        let in_a_row = self.fallbacks_in_a_row.fetch_add(1, Ordering::Relaxed) + 1;
        if in_a_row >= FALLBACKS_BEFORE_PAUSE {
            self.fallbacks_in_a_row.store(0, Ordering::Relaxed);
            self.paused_for.store(PAUSED_BATCHES, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_copies_pause_after_fallbacks_in_a_row_and_are_tried_again_after_the_pause() {
        let optimism = Optimism::default();
        assert!(optimism.try_plain());
        optimism.fell_back();
        optimism.fell_back();
        optimism.went_through();
        optimism.fell_back();
        optimism.fell_back();
        assert!(optimism.try_plain(), "two fallbacks in a row do not pause");
        optimism.fell_back();
        let staged = (0..PAUSED_BATCHES).filter(|_| !optimism.try_plain()).count();
        assert_eq!(
            staged, PAUSED_BATCHES as usize,
            "the third pauses the next batches"
        );
        assert!(optimism.try_plain(), "then a plain COPY is tried again");
    }
}
