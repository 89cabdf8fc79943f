//! Spooled writes against the direct path: drained with the snapshot they were decoded with,
//! their parts give the same tuples; a part in a moving range waits (one partly in one is split
//! so the rest need not), and after the move it splits to the new owner, each row once, with
//! the epoch it was drained with.

use super::{MalformedWrite, PartRef, Placement, ReplayedPart, SpooledKey, SpooledPart, SpooledWrite};
use crate::config::Config;
use crate::routing::{Epoch, MovingRange, Ring, RoutingTable, ShardId, ShardIndex, Token};
use crate::schema::TableSchema;
use crate::schema::decode::{BodyFormat, EncodedRows, decode_rows};
use crate::spool::RecordSeq;
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

/// Three shards, the third receiving every other range s0 owns in `before`.
fn half_moving_to_third(before: &RoutingTable, epoch: i64) -> RoutingTable {
    let mut routing = moving_to_third(before, epoch);
    routing.moving = routing.moving.into_iter().step_by(2).collect();
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

/// The parts' tuples as drained with `routing`, per shard index, as the direct path gives them,
/// for parts routed with the epoch `routed_at`. Checks that looking at every row again places
/// them the same.
fn drained(
    spooled: &[SpooledPart],
    routed_at: Option<Epoch>,
    table: &TableSchema,
    routing: &RoutingTable,
) -> Vec<(Vec<u8>, usize)> {
    let mut shards = vec![(Vec::new(), 0); routing.shards.len()];
    for part in spooled {
        let placement = part.placement(table, routing, routed_at).unwrap();
        assert_eq!(
            placement,
            part.placement(table, routing, None).unwrap(),
            "placed as a walk over its rows places it"
        );
        let Placement::Owned(index, tuples) = placement else {
            panic!("the part's shard owns its rows")
        };
        assert_eq!(routing.shards[index.0].0, part.shard);
        shards[index.0].0.extend_from_slice(&tuples);
        shards[index.0].1 += part.rows;
    }
    shards
}

#[test]
fn a_write_keeps_one_part_per_owner_and_drains_to_the_direct_tuples() {
    for table in tables() {
        let routing = two_shards(1);
        let mut encoded = decode(&table, &routing, &body(&table, 200));
        let direct = per_shard(&encoded.shards);
        let spooled = SpooledWrite::from_encoded(Uuid::now_v7(), &table, &routing, &mut encoded);
        assert_eq!(spooled.rows(), 200, "{}", table.name);
        assert_eq!(spooled.parts.len(), 2, "{}", table.name);
        let stored = SpooledWrite::decode(spooled.encode().into()).unwrap();
        assert_eq!(stored, spooled, "{}", table.name);
        for (index, part) in stored.parts.iter().enumerate() {
            let placement = part.placement(&table, &routing, stored.routed_at).unwrap();
            assert!(
                matches!(placement, Placement::Owned(at, _) if at == ShardIndex(index)),
                "{}",
                table.name
            );
        }
        assert_eq!(
            drained(&stored.parts, stored.routed_at, &table, &routing),
            direct,
            "{}",
            table.name
        );
    }
}

#[test]
fn a_superseding_write_and_a_replay_round_trip() {
    let table = tables().remove(0);
    let routing = two_shards(1);
    let mut encoded = decode(&table, &routing, &body(&table, 20));
    let mut spooled = SpooledWrite::from_encoded(Uuid::now_v7(), &table, &routing, &mut encoded);
    spooled.supersedes = vec![
        PartRef {
            seq: RecordSeq(7),
            part: 1,
        },
        PartRef {
            seq: RecordSeq(u64::MAX),
            part: 0,
        },
    ];
    assert_eq!(SpooledWrite::decode(spooled.encode().into()).unwrap(), spooled);
    spooled.replays = Some(ReplayedPart {
        spool: Uuid::now_v7(),
        seq: 12,
        part: 3,
    });
    assert_eq!(SpooledWrite::decode(spooled.encode().into()).unwrap(), spooled);
}

#[test]
fn a_part_in_a_moving_range_waits_and_after_the_move_splits_to_the_new_owner() {
    for table in tables() {
        let before = two_shards(1);
        let during = moving_to_third(&before, 2);
        let text = body(&table, 300);
        let mut encoded = decode(&table, &during, &text);
        assert!(encoded.dual_written > 0, "some rows are in moving ranges");
        let spooled = SpooledWrite::from_encoded(Uuid::now_v7(), &table, &during, &mut encoded);
        assert_eq!(spooled.rows(), 300, "{}: the copies are not spooled", table.name);
        let [on_s0, on_s1] = &spooled.parts[..] else {
            panic!("{}: one part per owner", table.name)
        };
        let routed_at = spooled.routed_at;
        assert_eq!(routed_at, Some(during.epoch));
        assert_eq!(
            on_s0.placement(&table, &during, routed_at).unwrap(),
            Placement::Moving,
            "routed with this very snapshot, but a range is being copied"
        );
        assert!(matches!(
            on_s1.placement(&table, &during, routed_at).unwrap(),
            Placement::Owned(ShardIndex(1), _)
        ));

        let after = moved_to_third(&before, 3);
        assert_eq!(
            on_s0.placement(&table, &after, routed_at).unwrap(),
            Placement::Moved
        );
        assert!(matches!(
            on_s1.placement(&table, &after, routed_at).unwrap(),
            Placement::Owned(ShardIndex(1), _)
        ));
        let split = on_s0.split(&table, &after).unwrap();
        assert_eq!(split.len(), 1, "{}: every row of s0 went to s2", table.name);
        assert_eq!(split[0].shard, "s2");
        let direct = decode(&table, &after, &text);
        let mut expected = per_shard(&direct.shards);
        expected[1] = (Vec::new(), 0);
        assert_eq!(
            drained(&split, None, &table, &after),
            expected,
            "{}: drained after the move, as if written then",
            table.name
        );
    }
}

#[test]
fn a_part_with_some_rows_in_a_moving_range_splits_so_that_the_others_drain_now() {
    for table in tables() {
        let before = two_shards(1);
        let text = body(&table, 300);
        let mut encoded = decode(&table, &before, &text);
        let spooled = SpooledWrite::from_encoded(Uuid::now_v7(), &table, &before, &mut encoded);
        let on_s0 = &spooled.parts[0];
        assert_eq!(on_s0.shard, "s0");
        let during = half_moving_to_third(&before, 2);
        assert_eq!(
            on_s0.placement(&table, &during, spooled.routed_at).unwrap(),
            Placement::PartlyMoving,
            "{}: s0 still owns every row, some of them in ranges being copied",
            table.name
        );

        let split = on_s0.split(&table, &during).unwrap();
        let [staying, moving] = &split[..] else {
            panic!("{}: s0's rows in two parts, not {}", table.name, split.len())
        };
        assert_eq!((&staying.shard[..], &moving.shard[..]), ("s0", "s0"));
        assert_eq!(
            staying.rows + moving.rows,
            on_s0.rows,
            "{}: each row once",
            table.name
        );
        assert!(staying.rows > 0 && moving.rows > 0, "{}", table.name);
        assert!(
            matches!(
                staying.placement(&table, &during, None).unwrap(),
                Placement::Owned(ShardIndex(0), _)
            ),
            "{}: the rows outside the moving ranges are written now",
            table.name
        );
        assert_eq!(
            moving.placement(&table, &during, None).unwrap(),
            Placement::Moving,
            "{}: the others wait for the cutover",
            table.name
        );
        let direct = decode(&table, &during, &text);
        let moving_positions = |part: &SpooledPart| -> Vec<_> {
            part.tuples(&table)
                .map(|tuple| during.place_position(tuple.unwrap().position).1.is_some())
                .collect()
        };
        assert!(moving_positions(staying).iter().all(|moving| !moving));
        assert!(moving_positions(moving).iter().all(|moving| *moving));
        assert_eq!(
            direct.dual_written, moving.rows,
            "{}: the rows a write made now would also copy to s2 are the ones that wait",
            table.name
        );
    }
}

#[test]
fn a_table_without_an_id_takes_the_epoch_it_is_drained_with() {
    let table = tables().remove(1);
    let routing = two_shards(1);
    let mut encoded = decode(&table, &routing, &body(&table, 10));
    let direct = per_shard(&encoded.shards);
    let spooled = SpooledWrite::from_encoded(Uuid::now_v7(), &table, &routing, &mut encoded);
    let later = two_shards(7);
    let expected = decode(&table, &later, &body(&table, 10));
    assert_eq!(
        drained(&spooled.parts, spooled.routed_at, &table, &later),
        per_shard(&expected.shards)
    );
    assert_ne!(
        drained(&spooled.parts, spooled.routed_at, &table, &later),
        direct,
        "epoch 1 became 7"
    );
}

#[test]
fn a_damaged_spooled_write_is_refused_not_routed() {
    let table = tables().remove(0);
    let routing = two_shards(1);
    let mut encoded = decode(&table, &routing, &body(&table, 5));
    let mut spooled = SpooledWrite::from_encoded(Uuid::now_v7(), &table, &routing, &mut encoded);
    let bytes = spooled.encode();

    assert_eq!(
        SpooledWrite::decode(bytes[..10].to_vec().into()),
        Err(MalformedWrite("cut short"))
    );
    assert_eq!(
        SpooledWrite::decode(vec![9].into()),
        Err(MalformedWrite("unknown layout"))
    );
    let mut longer = bytes.clone();
    longer.push(0);
    assert_eq!(
        SpooledWrite::decode(longer.into()),
        Err(MalformedWrite("bytes after the last part"))
    );
    let part = &mut spooled.parts[0];
    let whole = part.tuples.clone();
    part.tuples = whole.slice(..whole.len() - 3);
    assert_eq!(
        part.placement(&table, &routing, None).err(),
        Some(MalformedWrite("tuple cut short"))
    );
    part.tuples = whole;
    part.rows += 1;
    assert_eq!(
        part.placement(&table, &routing, None).err(),
        Some(MalformedWrite("row count does not match its tuples"))
    );
}

#[test]
fn a_record_of_layout_3_is_read_without_the_epoch_it_was_routed_with() {
    let table = tables().remove(0);
    let routing = two_shards(1);
    let mut encoded = decode(&table, &routing, &body(&table, 20));
    let direct = per_shard(&encoded.shards);
    let mut spooled = SpooledWrite::from_encoded(Uuid::now_v7(), &table, &routing, &mut encoded);
    spooled.routed_at = Some(Epoch(0x0102_0304_0506_0708));
    let mut bytes = spooled.encode();
    let epoch = 0x0102_0304_0506_0708_i64.to_le_bytes();
    let at = bytes
        .windows(8)
        .position(|window| window == epoch)
        .expect("layout 5 holds the epoch");
    assert_eq!(bytes[at + 8], 0, "and no key after it");
    bytes.drain(at..at + 9);
    bytes[0] = 3;
    let read = SpooledWrite::decode(bytes.into()).unwrap();
    assert_eq!(read.routed_at, None);
    assert_eq!(read.parts, spooled.parts);
    assert_eq!(
        drained(&read.parts, read.routed_at, &table, &routing),
        direct,
        "its parts are looked at row by row"
    );
}

#[test]
fn a_write_s_idempotency_key_is_kept_and_a_record_of_layout_4_is_read_without_one() {
    let table = tables().remove(0);
    let routing = two_shards(1);
    let mut encoded = decode(&table, &routing, &body(&table, 20));
    let mut spooled = SpooledWrite::from_encoded(Uuid::now_v7(), &table, &routing, &mut encoded);
    spooled.key = Some(SpooledKey {
        key: "order-1042".into(),
        fingerprint: [7; 16],
    });
    let read = SpooledWrite::decode(spooled.encode().into()).unwrap();
    assert_eq!(read, spooled);

    spooled.key = None;
    spooled.routed_at = Some(Epoch(0x0102_0304_0506_0708));
    let mut bytes = spooled.encode();
    let epoch = 0x0102_0304_0506_0708_i64.to_le_bytes();
    let at = bytes
        .windows(8)
        .position(|window| window == epoch)
        .expect("the record holds its epoch");
    bytes.remove(at + 8);
    bytes[0] = 4;
    let read = SpooledWrite::decode(bytes.into()).unwrap();
    assert_eq!(read, spooled, "layout 4 has no key");
}
