//! Which spool records a shard applied: the table `shardgate_spool_applied` on every shard,
//! one row per (spool, record). A drained part of a spooled write inserts its mark in the
//! transaction that writes its rows, so after a crash the mark says, with the rows themselves,
//! whether that part committed: a replay skips it, and a table without an id is written exactly
//! once. All of its SQL is here: creating it, the mark, reading and pruning marks.

use tokio_postgres::GenericClient;
use uuid::Uuid;

/// The table's name.
pub const APPLIED_TABLE: &str = "shardgate_spool_applied";

/// The constraint a second mark of one record breaks.
pub const APPLIED_KEY: &str = "shardgate_spool_applied_key";

/// The mark a drained part inserts in its batch's transaction; parameters: the spool's id
/// (`uuid`) and the record's sequence number (`bigint`). A second mark of one record breaks
/// [`APPLIED_KEY`] and aborts its transaction, so a part can never commit twice.
pub const MARK_SQL: &str = "INSERT INTO shardgate_spool_applied (spool, seq) VALUES ($1, $2)";

/// Creates the table if needed (inside the shard's set-up transaction).
pub fn create_sql() -> String {
    format!(
        "CREATE TABLE IF NOT EXISTS {APPLIED_TABLE} (spool uuid NOT NULL, seq bigint NOT NULL, \
         applied_at timestamptz NOT NULL DEFAULT now(), \
         CONSTRAINT {APPLIED_KEY} PRIMARY KEY (spool, seq))"
    )
}

/// The sequence numbers of `spool`'s records from `from` on that this shard applied, in order.
pub async fn applied_from(
    client: &impl GenericClient,
    spool: Uuid,
    from: i64,
) -> Result<Vec<i64>, tokio_postgres::Error> {
    let rows = client
        .query(
            &format!("SELECT seq FROM {APPLIED_TABLE} WHERE spool = $1 AND seq >= $2 ORDER BY seq"),
            &[&spool, &from],
        )
        .await?;
    Ok(rows.iter().map(|row| row.get(0)).collect())
}

/// Removes the marks of `spool`'s records up to `through`, once the spool itself no longer
/// holds them (its segment is gone, so no replay can ask), and returns how many it removed.
pub async fn prune_through(
    client: &impl GenericClient,
    spool: Uuid,
    through: i64,
) -> Result<u64, tokio_postgres::Error> {
    client
        .execute(
            &format!("DELETE FROM {APPLIED_TABLE} WHERE spool = $1 AND seq <= $2"),
            &[&spool, &through],
        )
        .await
}
