use super::*;
use crate::config::Config;
use crate::routing::salt::{salted_position, spread_of_id};
use crate::routing::{Epoch, KeyHash, MovingRange, ShardIndex, SplitStep, Splits, TokenRange};

pub(super) const TABLES: &str = r#"
[[tables]]
name = "events"
id = "event_id"
partition_key = ["tenant_id", "n"]
columns = [
  { name = "event_id", type = "uuid" },
  { name = "tenant_id", type = "text" },
  { name = "n", type = "bigint" },
  { name = "ts", type = "timestamptz", default = "now()" },
  { name = "payload", type = "jsonb", nullable = true },
  { name = "ok", type = "boolean", nullable = true },
  { name = "level", type = "smallint", default = 3 },
]
"#;

pub(super) const NOW: i64 = 946_684_800_000_000 + 1_000_000; // 2000-01-01T00:00:01Z

pub(super) fn events() -> TableSchema {
    TableSchema::from_config(&Config::parse(TABLES).unwrap().tables[0]).unwrap()
}

fn routing() -> RoutingTable {
    RoutingTable::two_shards_for_tests(1)
}

fn decode(format: BodyFormat, body: &str) -> Result<EncodedRows, DecodeError> {
    decode_rows(&events(), &routing(), format, body.as_bytes(), NOW, &[])
}

fn row_errors(body: &str) -> Vec<RowError> {
    match decode(BodyFormat::Json, body) {
        Err(DecodeError::InvalidRows { errors, .. }) => errors,
        other => panic!("expected row errors, got {other:?}"),
    }
}

/// Splits concatenated tuples back into their fields (None for NULL).
fn fields(tuples: &[u8]) -> Vec<Vec<Option<Vec<u8>>>> {
    let mut rows = Vec::new();
    let mut at = 0;
    while at < tuples.len() {
        let count = i16::from_be_bytes([tuples[at], tuples[at + 1]]) as usize;
        at += 2;
        let mut row = Vec::new();
        for _ in 0..count {
            let len = i32::from_be_bytes(tuples[at..at + 4].try_into().unwrap());
            at += 4;
            if len < 0 {
                row.push(None);
            } else {
                row.push(Some(tuples[at..at + len as usize].to_vec()));
                at += len as usize;
            }
        }
        rows.push(row);
    }
    rows
}

#[test]
fn a_row_becomes_a_tuple_with_defaults_and_its_hash() {
    let body = r#"[{"event_id": "0190A1B2-C3D4-7E5F-8A9B-0C1D2E3F4A5B", "tenant_id": "acme", "n": 5.0, "payload": {"k": [1, 2]}}]"#;
    let encoded = decode(BodyFormat::Json, body).unwrap();
    assert_eq!(encoded.rows, 1);
    let (shard, rows) = encoded
        .shards
        .iter()
        .enumerate()
        .find(|(_, s)| s.rows == 1)
        .unwrap();
    let row = &fields(&rows.tuples)[0];
    assert_eq!(row.len(), 8, "seven columns and _sg_hash");
    assert_eq!(row[1].as_deref(), Some(&b"acme"[..]));
    assert_eq!(row[2].as_deref(), Some(&5i64.to_be_bytes()[..]));
    assert_eq!(
        row[3].as_deref(),
        Some(&1_000_000i64.to_be_bytes()[..]),
        "now() is the request time"
    );
    assert_eq!(row[4].as_deref(), Some(&b"\x01{\"k\": [1, 2]}"[..]));
    assert_eq!(row[5], None, "absent nullable column is NULL");
    assert_eq!(
        row[6].as_deref(),
        Some(&3i16.to_be_bytes()[..]),
        "literal default"
    );
    let hash = KeyHash::from_i64(i64::from_be_bytes(row[7].clone().unwrap().try_into().unwrap()));
    assert_eq!(
        routing().owner_of_key(hash),
        ShardIndex(shard),
        "tuple sits in the buffer of its shard"
    );
}

#[test]
fn a_row_without_an_id_carries_the_epoch_it_was_routed_with() {
    let mut table = events();
    table.id = None;
    let mut routing = routing();
    routing.epoch = Epoch(42);
    let body = br#"[{"event_id": "0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b", "tenant_id": "acme", "n": 5}]"#;
    let encoded = decode_rows(&table, &routing, BodyFormat::Json, body, NOW, &[]).unwrap();
    let rows: Vec<_> = encoded.shards.iter().flat_map(|s| fields(&s.tuples)).collect();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].len(), 9, "seven columns, _sg_hash and _sg_epoch");
    assert_eq!(rows[0][8].as_deref(), Some(&42i64.to_be_bytes()[..]));
}

#[test]
fn spellings_of_one_key_route_alike() {
    let body = r#"[{"tenant_id": "t", "n": 7}, {"tenant_id": "t", "n": "7"}, {"tenant_id": "t", "n": 7.0}]"#;
    let encoded = decode(BodyFormat::Json, body).unwrap();
    assert!(
        encoded.shards.iter().any(|s| s.rows == 3),
        "all three on one shard"
    );
    let hashes: Vec<_> = encoded
        .shards
        .iter()
        .flat_map(|s| fields(&s.tuples))
        .map(|row| row[7].clone())
        .collect();
    assert!(hashes.windows(2).all(|w| w[0] == w[1]));
}

#[test]
fn missing_id_gets_a_fresh_uuid_v7() {
    let encoded = decode(
        BodyFormat::Json,
        r#"[{"tenant_id": "a", "n": 1}, {"tenant_id": "a", "n": 1}]"#,
    )
    .unwrap();
    let rows: Vec<_> = encoded.shards.iter().flat_map(|s| fields(&s.tuples)).collect();
    let ids: Vec<uuid::Uuid> = rows
        .iter()
        .map(|r| uuid::Uuid::from_slice(r[0].as_ref().unwrap()).unwrap())
        .collect();
    assert_eq!(ids[0].get_version_num(), 7);
    assert_ne!(ids[0], ids[1]);
}

#[test]
fn ndjson_and_json_give_the_same_tuples_apart_from_ids() {
    let rows = [
        r#"{"event_id": "0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b", "tenant_id": "a", "n": 1}"#,
        r#"{"event_id": "0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5c", "tenant_id": "b", "n": 2, "ok": true}"#,
    ];
    let json = decode(BodyFormat::Json, &format!("[{}]", rows.join(","))).unwrap();
    let ndjson = decode(BodyFormat::Ndjson, &format!("{}\r\n\n{}\n", rows[0], rows[1])).unwrap();
    assert_eq!(json.rows, 2);
    assert_eq!(ndjson.rows, 2);
    for (a, b) in json.shards.iter().zip(&ndjson.shards) {
        assert_eq!(a.tuples, b.tuples);
    }
}

#[test]
fn row_problems_name_row_column_and_reason() {
    let body = r#"[
        {"tenant_id": "a", "n": 1},
        {"tenant_id": "a", "n": "x"},
        {"tenant_id": "a"},
        {"n": 1, "colour": "red"},
        {"tenant_id": null, "n": 1, "ok": "yes"},
        {"tenant_id": "a", "n": 1, "n": 2, "ts": null},
        [1, 2]
    ]"#;
    let errors = row_errors(body);
    let got: Vec<(usize, Option<&str>, &str)> = errors
        .iter()
        .map(|e| (e.row, e.column.as_deref(), e.reason.as_str()))
        .collect();
    assert_eq!(
        got,
        [
            (1, Some("n"), "expected an integer, got \"x\""),
            (2, Some("n"), "missing partition-key value"),
            (3, Some("colour"), "unknown column `colour`"),
            (3, Some("tenant_id"), "missing partition-key value"),
            (4, Some("ok"), "expected true or false, got \"yes\""),
            (4, Some("tenant_id"), "partition-key value cannot be null"),
            (5, Some("n"), "column given twice"),
            (5, Some("ts"), "null for a non-null column"),
            (6, None, "expected a JSON object, got an array"),
        ]
    );
}

#[test]
fn details_stop_at_one_hundred_but_all_are_counted() {
    let body = format!("[{}]", vec![r#"{"tenant_id": 1, "n": 1}"#; 150].join(","));
    match decode(BodyFormat::Json, &body) {
        Err(DecodeError::InvalidRows { errors, total, .. }) => {
            assert_eq!(errors.len(), MAX_ERROR_DETAILS);
            assert_eq!(total, 150);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn malformed_bodies_say_where() {
    let cases = [
        (BodyFormat::Json, r#"[{"tenant_id": "a""#, "EOF while parsing"),
        (
            BodyFormat::Json,
            r#"{"tenant_id": "a"}"#,
            "expected a JSON array of row objects",
        ),
        (BodyFormat::Json, r#"[] []"#, "trailing characters"),
        (
            BodyFormat::Ndjson,
            "{\"tenant_id\": \"a\", \"n\": 1}\n{oops}\n",
            "line 2:",
        ),
    ];
    for (format, body, needle) in cases {
        match decode(format, body) {
            Err(DecodeError::Malformed(message)) => assert!(message.contains(needle), "{message}"),
            other => panic!("{body}: {other:?}"),
        }
    }
}

#[test]
fn jsonb_null_is_sql_null_and_nested_values_are_kept_verbatim() {
    let encoded = decode(
        BodyFormat::Json,
        r#"[{"tenant_id": "a", "n": 1, "payload": null}]"#,
    )
    .unwrap();
    let row = encoded
        .shards
        .iter()
        .flat_map(|s| fields(&s.tuples))
        .next()
        .unwrap();
    assert_eq!(row[4], None);
}

#[test]
fn rows_in_a_moving_range_are_encoded_for_its_owner_and_its_target() {
    let body: Vec<String> = (0..40)
        .map(|i| format!(r#"{{"tenant_id": "t{i}", "n": {i}}}"#))
        .collect();
    let body = format!("[{}]", body.join(","));
    let plain = decode_rows(&events(), &routing(), BodyFormat::Json, body.as_bytes(), NOW, &[]).unwrap();
    let mut moving = routing();
    moving.moving = vec![MovingRange {
        range: TokenRange {
            start: u64::MAX,
            end: u64::MAX - 1,
            shard: ShardIndex(0),
        },
        target: ShardIndex(1),
    }];
    let dual = decode_rows(&events(), &moving, BodyFormat::Json, body.as_bytes(), NOW, &[]).unwrap();
    assert!(plain.shards[0].rows > 0 && plain.shards[1].rows > 0);
    assert_eq!(
        dual.shards[0].rows, plain.shards[0].rows,
        "the owner gets its rows once"
    );
    assert_eq!(dual.shards[0].tuples.len(), plain.shards[0].tuples.len());
    assert_eq!(
        dual.shards[1].rows, 40,
        "the target gets its own rows and a copy of s0's"
    );
    assert_eq!(
        dual.shards[1].tuples.len(),
        plain.shards[0].tuples.len() + plain.shards[1].tuples.len()
    );
}

/// The position stored in each decoded row's `_sg_hash`, by row, over every shard.
fn positions(encoded: &EncodedRows) -> Vec<(Vec<u8>, KeyHash)> {
    let mut found = Vec::new();
    for shard in &encoded.shards {
        for row in fields(&shard.tuples) {
            let hash = row[7].clone().unwrap();
            found.push((
                row[0].clone().unwrap(),
                KeyHash::from_i64(i64::from_be_bytes(hash.try_into().unwrap())),
            ));
        }
    }
    found
}

#[test]
fn rows_of_a_split_key_take_the_salt_of_their_id_in_the_fanout_of_when_they_were_made() {
    let key = hash_key(
        [
            (ColumnType::Text, &b"whale"[..]),
            (ColumnType::BigInt, &1i64.to_be_bytes()[..]),
        ],
        &mut Vec::new(),
    );
    let salts = vec![0, 3, 5, 6];
    let since_ms = 1_700_000_000_000;
    let mut routing = routing();
    routing.splits = Splits::from_steps([SplitStep {
        table: "events".into(),
        key,
        since_ms,
        salts: salts.clone(),
    }])
    .unwrap();
    let v7 = |ms: u64, tail: u64| {
        let mut random = [0u8; 10];
        random[2..].copy_from_slice(&tail.wrapping_mul(0x9e37_79b9_7f4a_7c15).to_be_bytes());
        uuid::Builder::from_unix_timestamp_millis(ms, &random).into_uuid()
    };
    let before = v7(since_ms as u64 - 1, 7);
    let after: Vec<uuid::Uuid> = (0..32).map(|i| v7(since_ms as u64 + 10, i)).collect();
    let row = |id: &uuid::Uuid| format!(r#"{{"event_id": "{id}", "tenant_id": "whale", "n": 1}}"#);
    let body = format!(
        "[{}]",
        std::iter::once(&before)
            .chain(&after)
            .map(row)
            .collect::<Vec<_>>()
            .join(",")
    );
    let encoded = decode_rows(&events(), &routing, BodyFormat::Json, body.as_bytes(), NOW, &[]).unwrap();
    let placed = positions(&encoded);
    for (id, position) in &placed {
        let expected = if id.as_slice() == before.as_bytes() {
            key
        } else {
            salted_position(key, salts[(spread_of_id(id) % 4) as usize])
        };
        assert_eq!(*position, expected);
    }
    let used: std::collections::BTreeSet<KeyHash> = placed.iter().map(|(_, p)| *p).collect();
    assert_eq!(used.len(), 4, "32 ids over 4 salts use each");
    assert_eq!(encoded.salted, placed.iter().filter(|(_, p)| *p != key).count());
    let again = decode_rows(&events(), &routing, BodyFormat::Json, body.as_bytes(), NOW, &[]).unwrap();
    assert_eq!(positions(&again), placed, "a retried row lands where it did");
    let v4 = r#"[{"event_id": "9f1a2b3c-4d5e-4f70-8a1b-2c3d4e5f6a7b", "tenant_id": "whale", "n": 1}]"#;
    let v4_id = uuid::Uuid::parse_str("9f1a2b3c-4d5e-4f70-8a1b-2c3d4e5f6a7b").unwrap();
    let arrived_after = since_ms * 1000 + 1_000;
    let late = decode_rows(
        &events(),
        &routing,
        BodyFormat::Json,
        v4.as_bytes(),
        arrived_after,
        &[],
    )
    .unwrap();
    let salt = salts[(spread_of_id(v4_id.as_bytes()) % 4) as usize];
    assert_eq!(
        positions(&late)[0].1,
        salted_position(key, salt),
        "an id without time takes the fan-out in force when it arrives"
    );
    let early = decode_rows(&events(), &routing, BodyFormat::Json, v4.as_bytes(), NOW, &[]).unwrap();
    assert_eq!(positions(&early)[0].1, key, "it arrived before the split");
}

#[test]
fn a_body_that_is_not_utf8_is_refused_with_the_position_of_the_bad_byte() {
    let mut body = br#"[{"event_id": "018f2d6e-9a1b-7c3d-8e4f-5a6b7c8d9e0f", "tenant_id": "a"#.to_vec();
    body.extend_from_slice(&[0xff, b'"', b',', b' ']);
    body.extend_from_slice(br#""n": 1}]"#);
    let message = |format, body: &[u8]| match decode_rows(&events(), &routing(), format, body, NOW, &[]) {
        Err(DecodeError::Malformed(message)) => message,
        other => panic!("expected a malformed body, got {other:?}"),
    };
    assert_eq!(
        message(BodyFormat::Json, &body),
        "invalid unicode code point at line 1 column 70"
    );
    let line = &body[1..body.len() - 1];
    let lines = [
        &br#"{"event_id": "018f2d6e-9a1b-7c3d-8e4f-5a6b7c8d9e0f", "tenant_id": "b", "n": 2}"#[..],
        line,
    ]
    .join(&b'\n');
    assert_eq!(
        message(BodyFormat::Ndjson, &lines),
        "line 2: invalid unicode code point at line 1 column 69"
    );
}
