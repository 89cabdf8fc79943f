//! Keeping the idempotency records within `idempotency.retention` on every shard of the
//! current set.

use super::idempotency::prune_older_than;
use super::set::Published;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Prunes, every `retention / 12` (5 s to 1 h), the records older than `retention` on every
/// shard of the current set, until `shutdown`. Several proxies pruning at once delete the
/// same rows; that is harmless.
pub async fn prune_periodically(shards: Arc<Published>, retention: Duration, shutdown: CancellationToken) {
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
    }
}
