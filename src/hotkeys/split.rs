//! Acting on a hot key: recording its split in the catalog, then having this proxy publish the
//! new routing table at once (invariant 3). Every other proxy learns of it from the catalog's
//! notification. The new fan-out applies to rows made `hot_keys.split_delay` after the decision,
//! so every proxy knows it before any row takes it: a row is placed the same way whichever
//! proxy takes it, and whenever it is retried.

use crate::catalog::hot_keys::{SplitOutcome, SplitRequest, SplitSource};
use crate::catalog::watch::RefreshHandle;
use crate::catalog::{Catalog, CatalogError};
use crate::routing::KeyHash;
use crate::shards::set::Published;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Records splits and publishes them.
#[derive(Clone)]
pub struct Splitter {
    /// Where splits are recorded.
    pub catalog: Arc<Catalog>,
    /// Has this proxy re-read the catalog and publish what is newer.
    pub refresh: RefreshHandle,
    /// The ring a split's salts are chosen on.
    pub shards: Arc<Published>,
    /// How far ahead of the decision the new fan-out begins.
    pub delay: Duration,
}

/// A split to make.
#[derive(Debug, Clone)]
pub struct Split {
    /// The table.
    pub table: String,
    /// The key's hash.
    pub key: KeyHash,
    /// The fan-out wanted; a key already at it or above is left alone.
    pub fanout: u32,
    /// The key's values by column, when known.
    pub key_values: Option<serde_json::Value>,
    /// Who decided it.
    pub source: SplitSource,
    /// The key's rate when decided, when measured.
    pub rows_per_second: Option<f64>,
}

impl Splitter {
    /// Records `split` and, when it grew the key's fan-out, publishes it before returning.
    pub async fn split(&self, split: Split) -> Result<SplitOutcome, CatalogError> {
        let since_ms = unix_millis_now() + self.delay.as_millis() as i64;
        let routing = self.shards.load();
        let (key, fanout) = (split.key, split.fanout as usize);
        let choose = |previous: &[u32]| routing.table.choose_salts(key, fanout, previous);
        let outcome = self
            .catalog
            .split_key(
                &SplitRequest {
                    table: split.table.clone(),
                    key: split.key,
                    fanout: split.fanout,
                    since_ms,
                    key_values: split.key_values,
                    source: split.source,
                    rows_per_second: split.rows_per_second,
                },
                choose,
            )
            .await?;
        if let SplitOutcome::Grown { epoch, since_ms } = outcome {
            tracing::info!(
                table = %split.table,
                key = %format!("{:016x}", split.key.0),
                fanout = split.fanout,
                epoch = epoch.0,
                since_ms,
                "hot key split"
            );
            self.refresh.refresh().await;
        }
        Ok(outcome)
    }
}

/// Milliseconds since the Unix epoch, by this machine's clock.
pub fn unix_millis_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}
