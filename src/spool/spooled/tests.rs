//! Spooled writes against the direct path: routed with the snapshot they were decoded with,
//! they give the same tuples; routed after a range moved, each row reaches the new owner once,
//! with the epoch it was drained with.

use super::{MalformedWrite, SpooledWrite};
use crate::config::Config;
use crate::routing::{Epoch, MovingRange, Ring, RoutingTable, ShardId, ShardIndex, Token};
use crate::schema::TableSchema;
use crate::schema::decode::{BodyFormat, EncodedRows, decode_rows};
use uuid::Uuid;

const TABLES: &str = r#"
[[tables]]
name = "events"
partition_key = ["tenant_id"]
id = "event_id"
columns = [
  { name = "event_id", type = "uuid" },
  { name = "tenant_id", type = "text" },
  { name = "n", type = "bigint", nullable = true },
]

[[tables]]
name = "events_no_id"
partition_key = ["tenant_id"]
columns = [
  { name = "tenant_id", type = "text" },
  { name = "n", type = "bigint", nullable = true },
]
"#;

const NOW: i64 = 1_700_000_000_000_000;

fn tables() -> Vec<TableSchema> {
    Config::parse(TABLES)
        .unwrap()
        .tables
        .iter()
        .map(|table| TableSchema::from_config(table).unwrap())
        .collect()
}

fn shard_ids(n: usize) -> Vec<ShardId> {
    (0..n).map(|i| ShardId(format!("s{i}"))).collect()
}

fn two_shards(epoch: i64) -> RoutingTable {
    RoutingTable::two_shards_for_tests(epoch)
}

/// Three shards, the third receiving every range s0 owns in `before`.
fn moving_to_third(before: &RoutingTable, epoch: i64) -> RoutingTable {
    let mut routing = RoutingTable::new(Epoch(epoch), shard_ids(3), before.ring.clone());
    routing.moving = before
        .ring
        .ranges()
        .filter(|range| range.shard == ShardIndex(0))
        .map(|range| MovingRange {
            range,
            target: ShardIndex(2),
        })
        .collect();
    routing
}

/// Three shards, the third owning what s0 owned in `before`.
fn moved_to_third(before: &RoutingTable, epoch: i64) -> RoutingTable {
    let tokens = before
        .ring
        .tokens()
        .iter()
        .map(|token| Token {
            position: token.position,
            shard: if token.shard == ShardIndex(0) {
                ShardIndex(2)
            } else {
                token.shard
            },
        })
        .collect();
    RoutingTable::new(Epoch(epoch), shard_ids(3), Ring::from_tokens(tokens).unwrap())
}

fn body(table: &TableSchema, rows: usize) -> String {
    let rows: Vec<String> = (0..rows)
        .map(|n| match table.id {
            Some(_) => format!(
                r#"{{"event_id":"{}","tenant_id":"t{}","n":{n}}}"#,
                Uuid::now_v7(),
                n % 37
            ),
            None => format!(r#"{{"tenant_id":"t{}","n":{n}}}"#, n % 37),
        })
        .collect();
    format!("[{}]", rows.join(","))
}

fn decode(table: &TableSchema, routing: &RoutingTable, body: &str) -> EncodedRows {
    decode_rows(table, routing, BodyFormat::Json, body.as_bytes(), NOW, &[]).unwrap()
}

fn per_shard(shards: &[crate::schema::decode::ShardRows]) -> Vec<(Vec<u8>, usize)> {
    shards.iter().map(|s| (s.tuples.clone(), s.rows)).collect()
}

#[test]
fn routed_with_the_snapshot_it_was_decoded_with_a_write_gives_the_direct_tuples() {
    for table in tables() {
        let routing = two_shards(1);
        let encoded = decode(&table, &routing, &body(&table, 200));
        let spooled = SpooledWrite::from_encoded(Uuid::now_v7(), &table, &routing, &encoded);
        assert_eq!(spooled.rows, 200, "{}", table.name);
        let stored = SpooledWrite::decode(&spooled.encode()).unwrap();
        assert_eq!(stored, spooled, "{}", table.name);
        let routed = stored.route(&table, &routing).unwrap();
        assert_eq!(per_shard(&routed), per_shard(&encoded.shards), "{}", table.name);
    }
}

#[test]
fn a_write_spooled_during_a_move_keeps_each_row_once_and_drains_to_the_new_owner() {
    for table in tables() {
        let before = two_shards(1);
        let during = moving_to_third(&before, 2);
        let text = body(&table, 300);
        let encoded = decode(&table, &during, &text);
        assert!(encoded.dual_written > 0, "some rows are in moving ranges");
        let spooled = SpooledWrite::from_encoded(Uuid::now_v7(), &table, &during, &encoded);
        assert_eq!(spooled.rows, 300, "{}: the copies are not spooled", table.name);

        let drained_during = spooled.route(&table, &during).unwrap();
        assert_eq!(
            per_shard(&drained_during),
            per_shard(&encoded.shards),
            "{}: drained during the move, a row reaches the target as well",
            table.name
        );

        let after = moved_to_third(&before, 3);
        let drained_after = spooled.route(&table, &after).unwrap();
        assert_eq!(
            drained_after[0].rows, 0,
            "{}: s0 owns nothing after the move",
            table.name
        );
        assert_eq!(drained_after[2].rows, encoded.shards[0].rows, "{}", table.name);
        let direct = decode(&table, &after, &text);
        assert_eq!(
            per_shard(&drained_after),
            per_shard(&direct.shards),
            "{}: drained after the move, as if written then",
            table.name
        );
    }
}

#[test]
fn a_table_without_an_id_takes_the_epoch_it_is_drained_with() {
    let table = tables().remove(1);
    let routing = two_shards(1);
    let encoded = decode(&table, &routing, &body(&table, 10));
    let spooled = SpooledWrite::from_encoded(Uuid::now_v7(), &table, &routing, &encoded);
    let later = two_shards(7);
    let routed = spooled.route(&table, &later).unwrap();
    let expected = decode(&table, &later, &body(&table, 10));
    assert_eq!(per_shard(&routed), per_shard(&expected.shards));
    assert_ne!(per_shard(&routed), per_shard(&encoded.shards), "epoch 1 became 7");
}

#[test]
fn a_damaged_spooled_write_is_refused_not_routed() {
    let table = tables().remove(0);
    let routing = two_shards(1);
    let encoded = decode(&table, &routing, &body(&table, 5));
    let bytes = SpooledWrite::from_encoded(Uuid::now_v7(), &table, &routing, &encoded).encode();

    assert_eq!(
        SpooledWrite::decode(&bytes[..10]),
        Err(MalformedWrite("cut short"))
    );
    assert_eq!(SpooledWrite::decode(&[9]), Err(MalformedWrite("unknown layout")));
    let cut = SpooledWrite::decode(&bytes[..bytes.len() - 3]).unwrap();
    assert_eq!(
        cut.route(&table, &routing).err(),
        Some(MalformedWrite("tuple cut short"))
    );
    let mut miscounted = SpooledWrite::decode(&bytes).unwrap();
    miscounted.rows += 1;
    assert_eq!(
        miscounted.route(&table, &routing).err(),
        Some(MalformedWrite("row count does not match its tuples"))
    );
}
