//! Keeping the idempotency keys within `idempotency.retention`: the records on every shard of
//! the current set, and the claims of spooled writes in the catalog.

use crate::catalog::Catalog;
use crate::shards::idempotency::prune_older_than;
use crate::shards::set::Published;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Prunes, every `retention / 12` (5 s to 1 h), the records older than `retention` on every
/// shard of the current set and the claims as old in the catalog, until `shutdown`. Several
/// proxies pruning at once delete the same rows; that is harmless.
pub async fn prune_periodically(
    shards: Arc<Published>,
    catalog: Arc<Catalog>,
    retention: Duration,
    shutdown: CancellationToken,
) {
    let period = (retention / 12).clamp(Duration::from_secs(5), Duration::from_secs(3600));
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(period) => {}
        }
        let set = shards.load();
        for (_, shard) in set.iter() {
            let pruned = match shard.pools.query.get().await {
                Ok(client) => prune_older_than(&**client, retention)
                    .await
                    .map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            };
            match pruned {
                Ok(0) => {}
                Ok(rows) => tracing::info!(shard = %shard.id, rows, "pruned expired idempotency records"),
                Err(error) => {
                    tracing::warn!(shard = %shard.id, %error, "cannot prune idempotency records; trying again later")
                }
            }
        }
        match catalog.prune_key_claims(retention).await {
            Ok(0) => {}
            Ok(claims) => tracing::info!(claims, "pruned expired idempotency key claims"),
            Err(error) => {
                tracing::warn!(%error, "cannot prune idempotency key claims; trying again later")
            }
        }
    }
}
