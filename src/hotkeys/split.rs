//! Acting on a hot key: recording its split in the catalog, then having this proxy publish the
//! new routing table at once (invariant 3). Every other proxy learns of it from the catalog's
//! notification. The new fan-out applies to rows made `hot_keys.split_delay` after the decision,
//! so every proxy knows it before any row takes it: a row is placed the same way whichever
//! proxy takes it, and whenever it is retried.

use crate::catalog::hot_keys::{SplitOutcome, SplitRequest};
use crate::catalog::watch::RefreshHandle;
use crate::catalog::{Catalog, CatalogError};
use crate::routing::KeyHash;
use crate::schema::Tables;
use crate::shards::set::Published;
use std::sync::Arc;
use std::time::Duration;

/// Records splits and publishes them.
#[derive(Clone)]
pub struct Splitter {
    /// Where splits are recorded.
    pub catalog: Arc<Catalog>,
    /// Has this proxy re-read the catalog and publish what is newer.
    pub refresh: RefreshHandle,
    /// The ring a split's salts are chosen on, and the shards a key's values are read from.
    pub shards: Arc<Published>,
    /// The declared tables, whose partition keys name a key's values.
    pub tables: Arc<Tables>,
    /// How far ahead of the decision the new fan-out begins.
    pub delay: Duration,
}

impl Splitter {
    /// Records `split` and, when it grew the key's fan-out, publishes it before returning; a
    /// key found by its hash alone then has its values read from a shard and recorded.
    pub async fn split(&self, split: SplitRequest) -> Result<SplitOutcome, CatalogError> {
        let values_known = split.key_values.is_some();
        let since_ms = crate::units::unix_micros_now() / 1000 + self.delay.as_millis() as i64;
        let routing = self.shards.load();
        let (key, fanout) = (split.key, split.fanout as usize);
        let choose = |previous: &[u32]| routing.table.choose_salts(key, fanout, previous);
        let outcome = self.catalog.split_key(&split, since_ms, choose).await?;
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
            if !values_known {
                self.record_values(&split.table, split.key).await;
            }
        }
        Ok(outcome)
    }

    /// Reads the values of `key` from a recent row of it on the shard owning its own position,
    /// and records them with its split; a key not found there is left without.
    async fn record_values(&self, table: &str, key: KeyHash) {
        let Some((_, schema)) = self.tables.lookup(table) else {
            return;
        };
        let set = self.shards.load();
        let shard = set.get(set.table.owner_of_key(key));
        match super::values::recent_key_values(&shard.pools.query, schema, key).await {
            Ok(Some(values)) => {
                if let Err(e) = self.catalog.record_key_values(table, key, &values).await {
                    tracing::warn!(error = %e, "cannot record a hot key's values");
                }
            }
            Ok(None) => {
                tracing::info!(%table, key = %format!("{:016x}", key.0), "no recent row of a hot key to read its values from")
            }
            Err(reason) => tracing::warn!(%reason, shard = %shard.id, "cannot read a hot key's values"),
        }
    }
}
