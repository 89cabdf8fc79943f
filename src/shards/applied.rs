//! Which parts of spool records a shard applied: the table `shardgate_spool_applied` on every
//! shard, one row per (spool, record, part). A drained part of a spooled write inserts its mark
//! in the transaction that writes its rows, so after a crash the mark says, with the rows themselves,
//! whether that part committed: a replay skips it, and a table without an id is written exactly
//! once. All of its SQL is here: creating it, the mark, reading and pruning marks.

use tokio_postgres::GenericClient;
use uuid::Uuid;

/// The table's name.
pub const APPLIED_TABLE: &str = "shardgate_spool_applied";

/// The constraint a second mark of one record breaks.
pub const APPLIED_KEY: &str = "shardgate_spool_applied_key";

/// The marks a batch of drained parts inserts in its transaction; parameters: the spool's id
/// (`uuid`), the records' sequence numbers (`bigint[]`) and the parts' indexes (`smallint[]`).
/// A second mark of one part breaks [`APPLIED_KEY`] and aborts its transaction, so a part can
/// never commit twice.
pub const MARK_SQL: &str = "INSERT INTO shardgate_spool_applied (spool, seq, part) \
     SELECT $1, seq, part FROM unnest($2::bigint[], $3::smallint[]) AS marks (seq, part)";

/// One drained part, as its mark names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Mark {
    /// The spool's id.
    pub spool: Uuid,
    /// The record's sequence number in its spool.
    pub seq: i64,
    /// The part's index in its record.
    pub part: i16,
}

/// The marks of one batch as [`MARK_SQL`]'s parameters take them: the spool's id (one process
/// drains one spool, so every mark of a batch has the same), sequence numbers and parts.
pub fn mark_columns(marks: &[Mark]) -> Option<(Uuid, Vec<i64>, Vec<i16>)> {
    let spool = marks.first()?.spool;
    debug_assert!(marks.iter().all(|mark| mark.spool == spool));
    let (seqs, parts) = marks.iter().map(|mark| (mark.seq, mark.part)).unzip();
    Some((spool, seqs, parts))
}

/// Creates the table if needed (inside the shard's set-up transaction).
pub fn create_sql() -> String {
    format!(
        "CREATE TABLE IF NOT EXISTS {APPLIED_TABLE} (spool uuid NOT NULL, seq bigint NOT NULL, \
         part smallint NOT NULL, applied_at timestamptz NOT NULL DEFAULT now(), \
         CONSTRAINT {APPLIED_KEY} PRIMARY KEY (spool, seq, part))"
    )
}

/// The parts of `spool`'s records from `from` on that this shard applied, in order.
pub async fn applied_from(
    client: &impl GenericClient,
    spool: Uuid,
    from: i64,
) -> Result<Vec<Mark>, tokio_postgres::Error> {
    let rows = client
        .query(
            &format!(
                "SELECT seq, part FROM {APPLIED_TABLE} WHERE spool = $1 AND seq >= $2 ORDER BY seq, part"
            ),
            &[&spool, &from],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|row| Mark {
            spool,
            seq: row.get(0),
            part: row.get(1),
        })
        .collect())
}

/// Whether this shard applied `mark`, asked once no batch can still be writing it: the fence
/// is locked against every batch (which hold it shared until they end) for the moment of the
/// read, so a batch an earlier process left running has committed or aborted by then.
pub async fn settled_applied(
    client: &mut deadpool_postgres::Object,
    mark: Mark,
) -> Result<bool, tokio_postgres::Error> {
    let tx = client.transaction().await?;
    tx.batch_execute(&format!(
        "LOCK TABLE {} IN EXCLUSIVE MODE",
        super::fence::FENCE_TABLE
    ))
    .await?;
    let found = tx
        .query_opt(
            &format!("SELECT 1 FROM {APPLIED_TABLE} WHERE spool = $1 AND seq = $2 AND part = $3"),
            &[&mark.spool, &mark.seq, &mark.part],
        )
        .await?;
    tx.commit().await?;
    Ok(found.is_some())
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
