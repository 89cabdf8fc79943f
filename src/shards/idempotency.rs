//! The records of writes sent with an idempotency key: the table `shardgate_idempotency` on
//! every shard, one row per (key, shard, epoch). A keyed write's rows for one shard insert
//! their record in the transaction that writes them, so the record says, with the rows
//! themselves, whether that shard's part committed. All of its SQL is here: creating it,
//! recording, reading a key's records and pruning old ones (`idempotency.retention`).
//!
//! A record also says which rows it covers: the ring ranges whose rows the routing they were
//! placed with put on its shard (`covers`, inclusive `_sg_hash` intervals). A retry placed with
//! another routing (a shard added, a hot key split) keeps exactly the rows no record covers.

use crate::routing::{KeyHash, RoutingTable, ShardIndex};
use std::sync::Arc;
use std::time::Duration;
use tokio_postgres::GenericClient;

/// The table's name.
pub const RECORDS_TABLE: &str = "shardgate_idempotency";

/// The constraint a second record of one key's part breaks.
pub const RECORD_KEY: &str = "shardgate_idempotency_key";

/// The records a batch inserts in its transaction; parameters: the shard's name (`text`), the
/// epoch (`bigint`), the ranges covered (`bigint[]`), and per record its key (`text[]`),
/// table (`text[]`), body fingerprint (`bytea[]`) and rows (`int[]`). A second record of one
/// part breaks [`RECORD_KEY`] and aborts its transaction, so a part never commits twice.
pub const RECORD_SQL: &str = "INSERT INTO shardgate_idempotency \
     (key, shard, epoch, covers, table_name, fingerprint, rows) \
     SELECT r.key, $1, $2, $3, r.table_name, r.fingerprint, r.rows \
     FROM unnest($4::text[], $5::text[], $6::bytea[], $7::int[]) AS r (key, table_name, fingerprint, rows)";

/// What one shard's part of a keyed write records with its rows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRecord {
    /// The idempotency key.
    pub key: String,
    /// The table written.
    pub table: String,
    /// The fingerprint of the request: its table, format and body.
    pub fingerprint: [u8; 16],
    /// The ranges whose rows the routing the rows were placed with put on the shard, as inclusive
    /// intervals of stored `_sg_hash` values, flattened `lo, hi, lo, hi, ...`.
    pub covers: Arc<[i64]>,
}

/// A record read back from a shard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FoundRecord {
    /// The shard the part was written to.
    pub shard: String,
    /// The epoch of the routing it was placed with.
    pub epoch: i64,
    /// The table written.
    pub table: String,
    /// The fingerprint of the request that wrote it.
    pub fingerprint: Vec<u8>,
    /// Rows the part wrote.
    pub rows: i32,
    /// The ranges it covers, flattened inclusive intervals.
    pub covers: Vec<i64>,
}

impl FoundRecord {
    /// Whether a row at ring `position` was written by this part.
    pub fn covers(&self, position: KeyHash) -> bool {
        let stored = position.as_i64();
        self.covers
            .chunks_exact(2)
            .any(|interval| interval[0] <= stored && stored <= interval[1])
    }
}

/// The ranges whose rows `routing` places on `shard` (those it owns, and those being copied to
/// it), as [`KeyRecord::covers`] holds them: adjacent ranges merged, so a shard's hundreds of
/// virtual nodes take fewer intervals.
pub fn placed_intervals(routing: &RoutingTable, shard: ShardIndex) -> Vec<i64> {
    let owned = routing.ring.ranges().filter(|range| range.shard == shard);
    let copied = routing
        .moving
        .iter()
        .filter(|moving| moving.target == shard)
        .map(|moving| moving.range);
    let mut intervals: Vec<(i64, i64)> = owned
        .chain(copied)
        .flat_map(|range| range.stored_intervals())
        .collect();
    intervals.sort_unstable();
    let mut merged: Vec<(i64, i64)> = Vec::with_capacity(intervals.len());
    for (lo, hi) in intervals {
        match merged.last_mut() {
            Some(last) if last.1 != i64::MAX && last.1 + 1 >= lo => last.1 = last.1.max(hi),
            _ => merged.push((lo, hi)),
        }
    }
    merged.into_iter().flat_map(|(lo, hi)| [lo, hi]).collect()
}

/// Creates the table if needed (inside the shard's set-up transaction).
pub fn create_sql() -> String {
    format!(
        "CREATE TABLE IF NOT EXISTS {RECORDS_TABLE} (key text NOT NULL, shard text NOT NULL, \
         epoch bigint NOT NULL, covers bigint[] NOT NULL, table_name text NOT NULL, \
         fingerprint bytea NOT NULL, rows integer NOT NULL, \
         recorded_at timestamptz NOT NULL DEFAULT now(), \
         CONSTRAINT {RECORD_KEY} PRIMARY KEY (key, shard, epoch));
         CREATE INDEX IF NOT EXISTS {RECORDS_TABLE}_recorded_at ON {RECORDS_TABLE} (recorded_at)"
    )
}

/// Reads the records of a key: its one parameter is the key.
const RECORDS_OF_SQL: &str = "SELECT shard, epoch, table_name, fingerprint, rows, covers \
     FROM shardgate_idempotency WHERE key = $1";

/// The records of `key` this shard holds, read with a statement prepared once per connection.
pub async fn records_of(
    client: &deadpool_postgres::Client,
    key: &str,
) -> Result<Vec<FoundRecord>, tokio_postgres::Error> {
    let statement = client.prepare_cached(RECORDS_OF_SQL).await?;
    let rows = client.query(&statement, &[&key]).await?;
    Ok(rows
        .iter()
        .map(|row| FoundRecord {
            shard: row.get(0),
            epoch: row.get(1),
            table: row.get(2),
            fingerprint: row.get(3),
            rows: row.get(4),
            covers: row.get(5),
        })
        .collect())
}

/// Copies every record `from` holds to `to` (those `to` has already are kept): how a drained
/// shard hands its records to its heirs, so a retry still finds them once the shard is gone.
/// Returns how many `to` gained.
pub async fn hand_down(
    from: &tokio_postgres::Client,
    to: &mut tokio_postgres::Client,
) -> Result<u64, tokio_postgres::Error> {
    use futures_util::{SinkExt, StreamExt};
    let tx = to.transaction().await?;
    tx.batch_execute(&format!(
        "CREATE TEMPORARY TABLE shardgate_idempotency_handed (LIKE {RECORDS_TABLE}) ON COMMIT DROP"
    ))
    .await?;
    let sink = tx
        .copy_in::<_, bytes::Bytes>("COPY shardgate_idempotency_handed FROM STDIN (FORMAT binary)")
        .await?;
    let source = from
        .copy_out(&format!("COPY {RECORDS_TABLE} TO STDOUT (FORMAT binary)"))
        .await?;
    futures_util::pin_mut!(sink, source);
    while let Some(data) = source.next().await {
        sink.feed(data?).await?;
    }
    sink.finish().await?;
    let gained = tx
        .execute(
            &format!(
                "INSERT INTO {RECORDS_TABLE} SELECT * FROM shardgate_idempotency_handed                  ON CONFLICT ON CONSTRAINT {RECORD_KEY} DO NOTHING"
            ),
            &[],
        )
        .await?;
    tx.commit().await?;
    Ok(gained)
}

/// Removes the records older than `retention`, and returns how many it removed.
pub async fn prune_older_than(
    client: &impl GenericClient,
    retention: Duration,
) -> Result<u64, tokio_postgres::Error> {
    let seconds = retention.as_secs_f64();
    client
        .execute(
            &format!("DELETE FROM {RECORDS_TABLE} WHERE recorded_at < now() - make_interval(secs => $1)"),
            &[&seconds],
        )
        .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routing::{Epoch, Ring, ShardId};

    fn routing(shards: &[&str], vnodes: u32) -> RoutingTable {
        let ids: Vec<ShardId> = shards.iter().map(|s| ShardId(s.to_string())).collect();
        let ring = Ring::build(shards.iter().map(|s| (*s, 1)), vnodes).unwrap();
        RoutingTable::new(Epoch(1), ids, ring)
    }

    #[test]
    fn placed_intervals_cover_exactly_the_positions_a_shard_owns() {
        let routing = routing(&["s0", "s1", "s2"], 16);
        let records: Vec<FoundRecord> = (0..3)
            .map(|i| FoundRecord {
                shard: format!("s{i}"),
                epoch: 1,
                table: "t".into(),
                fingerprint: vec![],
                rows: 1,
                covers: placed_intervals(&routing, ShardIndex(i)),
            })
            .collect();
        let mut position = 0x9e37_79b9_7f4a_7c15_u64;
        for _ in 0..10_000 {
            position = position.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            let owner = routing.place_position(KeyHash(position)).0;
            let covering: Vec<usize> = (0..3).filter(|i| records[*i].covers(KeyHash(position))).collect();
            assert_eq!(covering, vec![owner.0], "position {position:#x}");
        }
        for edge in [0, u64::MAX, 1 << 63, (1 << 63) - 1] {
            let owner = routing.place_position(KeyHash(edge)).0;
            assert!(records[owner.0].covers(KeyHash(edge)));
        }
    }

    #[test]
    fn adjacent_ranges_of_one_shard_merge() {
        let routing = routing(&["s0"], 64);
        assert_eq!(
            placed_intervals(&routing, ShardIndex(0)),
            vec![i64::MIN, i64::MAX]
        );
    }
}
