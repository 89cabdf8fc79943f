//! The fence: the one-row table `shardgate_fence(epoch bigint)` on every shard, holding the
//! oldest routing epoch the shard accepts writes for (invariant 9). All of its SQL is here: creating
//! it, setting it at start-up, the read every batch makes, and the bump a cutover makes.
//!
//! Locks: a batch reads the row `FOR KEY SHARE`, which many batches hold at once, and with it
//! the table's `ROW SHARE` lock until it commits. A bump takes the table `IN EXCLUSIVE MODE`,
//! which conflicts with `ROW SHARE`, so it waits for every batch in flight to end. Table locks
//! queue in order: a batch that starts while the bump waits queues behind it and then reads the
//! new epoch, so a bump is never starved by batches that overlap without end. (A row lock would
//! not do: `FOR UPDATE` waits for the `FOR KEY SHARE` holders, but new `FOR KEY SHARE` lockers
//! join the holders without queueing, and under steady load the bump would wait for a gap.)

use crate::routing::Epoch;
use thiserror::Error;
use tokio_postgres::GenericClient;

/// The fence table's name.
pub const FENCE_TABLE: &str = "shardgate_fence";

/// What every batch transaction runs first; its one row is the epoch.
pub const READ_FOR_BATCH_SQL: &str = "SELECT epoch FROM shardgate_fence FOR KEY SHARE";

/// The fence disagrees with the epoch a batch (or start-up) expected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[error("shard fence is at epoch {found}, the batch was routed with epoch {expected}")]
pub struct FenceMismatch {
    /// The epoch of the routing snapshot.
    pub expected: Epoch,
    /// The epoch in the shard's fence.
    pub found: Epoch,
}

/// Creates the fence table, constrained to one row.
pub fn create_sql() -> String {
    format!(
        "CREATE TABLE IF NOT EXISTS {FENCE_TABLE} (epoch bigint NOT NULL);
         CREATE UNIQUE INDEX IF NOT EXISTS {FENCE_TABLE}_one_row ON {FENCE_TABLE} ((true));"
    )
}

/// Whether a batch routed with `expected` may write, given the fence read `found`: unless its
/// routing is older than the fence. A batch routed with a newer epoch passes: every change of
/// placement is written to the catalog before any fence is bumped, so the proxy that routed it
/// already knows where every range now lives, and the fences catch up a moment later.
pub fn check(expected: Epoch, found: Epoch) -> Result<(), FenceMismatch> {
    if found <= expected {
        Ok(())
    } else {
        Err(FenceMismatch { expected, found })
    }
}

/// Creates the fence if needed, inside the caller's set-up transaction, and moves it forward to
/// `epoch`. Returns the epoch it held before (`epoch` for a new fence): a fence ahead of
/// `epoch` is left as it is, for the caller to refuse.
pub async fn initialise(client: &impl GenericClient, epoch: Epoch) -> Result<Epoch, tokio_postgres::Error> {
    client.batch_execute(&create_sql()).await?;
    client
        .execute(
            &format!(
                "INSERT INTO {FENCE_TABLE} (epoch) SELECT $1 WHERE NOT EXISTS (SELECT 1 FROM {FENCE_TABLE})"
            ),
            &[&epoch.0],
        )
        .await?;
    let found = Epoch(
        client
            .query_one(&format!("SELECT epoch FROM {FENCE_TABLE}"), &[])
            .await?
            .get(0),
    );
    client
        .execute(
            &format!("UPDATE {FENCE_TABLE} SET epoch = $1 WHERE epoch < $1"),
            &[&epoch.0],
        )
        .await?;
    Ok(found)
}

/// Moves the fence to `epoch` in a short transaction of its own, after every batch in flight on
/// the shard has ended (batches that start meanwhile wait for it); from its commit on, batches
/// routed with an older epoch are refused. Returns the epoch it held before. A fence already at
/// or past `epoch` is left as it is.
pub async fn bump(client: &mut tokio_postgres::Client, epoch: Epoch) -> Result<Epoch, tokio_postgres::Error> {
    let tx = client.transaction().await?;
    tx.batch_execute(&format!("LOCK TABLE {FENCE_TABLE} IN EXCLUSIVE MODE"))
        .await?;
    let before = Epoch(
        tx.query_one(&format!("SELECT epoch FROM {FENCE_TABLE}"), &[])
            .await?
            .get(0),
    );
    tx.execute(
        &format!("UPDATE {FENCE_TABLE} SET epoch = $1 WHERE epoch < $1"),
        &[&epoch.0],
    )
    .await?;
    tx.commit().await?;
    Ok(before)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_routing_older_than_the_fence_is_refused() {
        assert_eq!(check(Epoch(3), Epoch(3)), Ok(()));
        assert_eq!(
            check(Epoch(4), Epoch(3)),
            Ok(()),
            "the fence is bumped after the catalog"
        );
        assert_eq!(
            check(Epoch(3), Epoch(4)).unwrap_err().to_string(),
            "shard fence is at epoch 4, the batch was routed with epoch 3"
        );
        assert!(READ_FOR_BATCH_SQL.contains(FENCE_TABLE));
    }
}
