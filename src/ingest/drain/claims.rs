//! Spooled writes sent with an idempotency key: drained only once they hold the key's claim
//! in the catalog (see [`crate::catalog::key_claims`]). The proxy that spooled a write claims
//! its key before answering; the drainer claims it again (the same claim is found) or, when
//! that failed, for the first time. A write whose key another write claimed is dropped: that
//! write carries the key's rows.

use super::{Drainer, Event, MAX_PAUSE, WAITING};
use crate::catalog::key_claims::KeyClaim;
use crate::spool::{PartRef, RecordSeq, RowsOutcome};
use std::sync::Arc;
use tokio::time::Instant;

/// A keyed record whose claim is not settled yet.
pub(super) struct Unclaimed {
    /// When to ask (again).
    due: Instant,
    /// Whether the catalog is being asked now.
    asking: bool,
}

impl Drainer {
    /// Holds back the parts of `seq`, a record sent with an idempotency key, until its claim
    /// is settled.
    pub(super) fn hold_for_claim(&mut self, seq: RecordSeq) {
        let due = Instant::now();
        self.unclaimed.insert(seq, Unclaimed { due, asking: false });
    }

    /// Asks the catalog for each claim that is due.
    pub(super) fn ask_claims(&mut self) {
        let now = Instant::now();
        for (seq, unclaimed) in self.unclaimed.iter_mut() {
            if unclaimed.asking || unclaimed.due > now {
                continue;
            }
            let Some(write) = self.records.get(seq).map(|spooled| &spooled.write) else {
                continue;
            };
            let Some(key) = &write.key else { continue };
            unclaimed.asking = true;
            let claim = KeyClaim {
                key: key.key.clone(),
                table: write.table.clone(),
                fingerprint: key.fingerprint,
                write_id: write.write_id,
                rows: i64::try_from(write.rows()).unwrap_or(i64::MAX),
            };
            let catalog = Arc::clone(&self.settings.catalog);
            let seq = *seq;
            self.events.push(Box::pin(async move {
                let result = catalog
                    .claim_key(&claim)
                    .await
                    .map(|held| held.write_id == claim.write_id)
                    .map_err(|e| e.to_string());
                Event::Claimed { seq, result }
            }));
        }
    }

    /// Settles the claim of record `seq`: its parts wait for their shards when it holds the
    /// claim, and are dropped when another write does.
    pub(super) fn claimed(&mut self, seq: RecordSeq, result: Result<bool, String>) {
        let parts = self.records.get(&seq).map_or(0, |spooled| spooled.parts.len());
        let part = |index: usize| PartRef {
            seq,
            part: index as u16,
        };
        match result {
            Ok(true) => {
                self.unclaimed.remove(&seq);
                for index in 0..parts {
                    self.set_state(part(index), WAITING);
                }
            }
            Ok(false) => {
                self.unclaimed.remove(&seq);
                if let Some(spooled) = self.records.get(&seq) {
                    let key = spooled
                        .write
                        .key
                        .as_ref()
                        .map(|k| k.key.as_str())
                        .unwrap_or_default();
                    tracing::info!(
                        seq = seq.0,
                        write_id = %spooled.write.write_id,
                        key,
                        "a spooled write repeats an idempotency key another write claimed; it is dropped"
                    );
                }
                for index in 0..parts {
                    self.finish(part(index), RowsOutcome::Duplicate);
                }
            }
            Err(error) => {
                tracing::warn!(seq = seq.0, %error, "cannot claim a spooled write's idempotency key; retrying");
                if let Some(unclaimed) = self.unclaimed.get_mut(&seq) {
                    unclaimed.asking = false;
                    unclaimed.due = Instant::now() + MAX_PAUSE;
                }
            }
        }
    }
}
