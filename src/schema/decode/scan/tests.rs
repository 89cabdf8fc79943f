//! The fast path against the serde path, on the same bodies: wherever the scanner accepts a
//! body it gives the serde path's tuples, and `decode_rows` answers every body, good or bad, as
//! the serde path alone does.

use super::super::{
    BodyFormat, DecodeError, EncodedRows, RowEncoder, decode_rows, decode_with_serde, scan_body,
};
use super::{is_special, special_byte};
use crate::config::Config;
use crate::routing::RoutingTable;
use crate::schema::TableSchema;
use rand::rngs::SmallRng;
use rand::{RngExt, SeedableRng};

/// Every kind of column but uuid, whose default would differ between two decodes.
const TABLE: &str = r#"
[[tables]]
name = "readings"
partition_key = ["device", "n"]
columns = [
  { name = "device", type = "text" },
  { name = "n", type = "bigint" },
  { name = "small", type = "smallint", nullable = true },
  { name = "medium", type = "integer", nullable = true },
  { name = "x", type = "double precision", nullable = true },
  { name = "ok", type = "boolean", nullable = true },
  { name = "day", type = "date", nullable = true },
  { name = "at", type = "timestamptz", default = "now()" },
  { name = "blob", type = "bytea", nullable = true },
  { name = "doc", type = "jsonb", nullable = true },
]
"#;

const NOW: i64 = 946_684_800_000_000;

/// Rows in the shapes clients send, with the values that need care.
const ROWS: &[&str] = &[
    r#"{"device":"d-1","n":1,"x":1.5,"doc":{"a":[1,2,{"b":null}],"c":"x"}}"#,
    r#"{ "device" : "caf\u00e9 \"quoted\" \\ \/ \n" , "n" : -42 , "ok" : true , "doc" : [ ] }"#,
    r#"{"n":12345678901234567,"device":"é😀","x":-0,"small":-32768,"medium":2147483647}"#,
    r#"{"device":"d","n":9223372036854775807,"x":1e308,"day":"2024-02-29","at":"2024-01-01T00:00:00Z"}"#,
    r#"{"device":"d","n":"17","x":"2.5","ok":false,"blob":"AAEC","doc":"text"}"#,
    r#"{"device":"d","n":3,"x":0.1e-5,"doc":{"deep":{"er":{"est":[[[1.0E+2]]]}}},"ok":null}"#,
    r#"{"device":"d","n":4,"x":18446744073709551616,"doc":"\ud83d\ude00 \u0041"}"#,
    r#"{"device":"d","n":5.0,"medium":null,"doc":null}"#,
    r#"{"doc":{"k":"v"},"n":6,"device":"reordered"}"#,
];

fn table() -> TableSchema {
    TableSchema::from_config(&Config::parse(TABLE).unwrap().tables[0]).unwrap()
}

fn routing() -> RoutingTable {
    RoutingTable::two_shards_for_tests(1)
}

/// The per-shard tuples and row counts of a decode.
fn tuples(encoded: &EncodedRows) -> Vec<(Vec<u8>, usize)> {
    encoded
        .shards
        .iter()
        .map(|s| (s.tuples.clone(), s.rows))
        .collect()
}

fn answer(result: &Result<EncodedRows, DecodeError>) -> String {
    match result {
        Ok(encoded) => format!("{} rows: {:?}", encoded.rows, tuples(encoded)),
        Err(DecodeError::InvalidRows { errors, total, rows }) => {
            format!("{total} invalid in {rows} rows: {errors:?}")
        }
        Err(e) => e.to_string(),
    }
}

/// Whether the fast path took `body`; panics when its answer differs from the serde path's.
fn compare(table: &TableSchema, routing: &RoutingTable, format: BodyFormat, body: &[u8]) -> bool {
    let mut fast = RowEncoder::new(table, routing, NOW, &[], body.len());
    let scanned = scan_body(table, format, body, &mut fast).is_ok();
    let reference = decode_with_serde(
        format,
        body,
        RowEncoder::new(table, routing, NOW, &[], body.len()),
    );
    let shown = || String::from_utf8_lossy(body).into_owned();
    if scanned {
        let fast = fast.finish().expect("a scanned body has no row errors");
        let reference = reference
            .as_ref()
            .unwrap_or_else(|e| panic!("the scanner took a body serde refuses ({e}): {}", shown()));
        assert_eq!(tuples(&fast), tuples(reference), "tuples differ for {}", shown());
        assert_eq!(fast.rows, reference.rows);
    }
    let decoded = decode_rows(table, routing, format, body, NOW, &[]);
    assert_eq!(
        answer(&decoded),
        answer(&reference),
        "answers differ for {}",
        shown()
    );
    scanned
}

fn json_body(rows: &[&str]) -> String {
    format!("[{}]", rows.join(","))
}

#[test]
fn the_scanner_takes_every_well_formed_row_and_gives_the_serde_tuples() {
    let (table, routing) = (table(), routing());
    for row in ROWS {
        assert!(
            compare(&table, &routing, BodyFormat::Json, json_body(&[row]).as_bytes()),
            "{row}"
        );
        assert!(
            compare(&table, &routing, BodyFormat::Ndjson, row.as_bytes()),
            "{row}"
        );
    }
    let all = json_body(ROWS);
    assert!(compare(
        &table,
        &routing,
        BodyFormat::Json,
        format!(" \n{all}\r\n").as_bytes()
    ));
    assert!(compare(&table, &routing, BodyFormat::Json, b"[]"));
    assert!(compare(
        &table,
        &routing,
        BodyFormat::Ndjson,
        ROWS.join("\n \n").as_bytes()
    ));
}

#[test]
fn bodies_the_scanner_leaves_get_the_serde_answer() {
    let (table, routing) = (table(), routing());
    let left = [
        r#"[{"device":"d","n":1,"device":"twice"}]"#,
        r#"[{"device":"d","n":1,"nope":2}]"#,
        r#"[{"dev\u0069ce":"escaped key","n":1}]"#,
        r#"[{"device":"d","n":1,"small":40000}]"#,
        r#"[{"device":"d","n":1,"doc":"\u0000"}]"#,
        r#"[{"device":"d","n":01}]"#,
        r#"[{"device":"d","n":1,"x":1e400}]"#,
        r#"[{"device":"d\ud800","n":1}]"#,
        "[{\"device\":\"tab\there\",\"n\":1}]",
        r#"[{"device":"d","n":1},]"#,
        r#"[{"device":"d","n":1}] x"#,
        r#"[{"device":"d"}]"#,
        r#"[{"device":"d","n":1,"doc":"\x"}]"#,
        r#"[{"device":"d","n":1,"doc":"\u12g4"}]"#,
        "[{\"device\":\"d\",\"n\":1,\"doc\":\"new\nline\"}]",
        r#"[{"device":"d","n":1,"doc":[1.]}]"#,
        r#"[{"device":"d","n":1,"doc":{"a":1e}}]"#,
        r#"[{"device":"d","n":1,"doc":[-]}]"#,
        r#"[{"device":"d","n":1,"doc":[01]}]"#,
        r#"[{"device":"d","n":1,"doc":[1,]}]"#,
        r#"[{"device":"d","n":1,"doc":{"a":1,}}]"#,
        r#"[{"device":"d","n":1,"doc":{"a" 1}}]"#,
        r#"[{"device":"d","n":1,"doc":tru}]"#,
        r#"[{"device":"d","n":1,"x":[1]}]"#,
        r#"[{"device":"d","n":1,"ok":"yes"}]"#,
        r#"[[1]]"#,
        r#"{"device":"d","n":1}"#,
    ];
    for body in left {
        assert!(
            !compare(&table, &routing, BodyFormat::Json, body.as_bytes()),
            "{body}"
        );
    }
}

#[test]
fn mutated_bodies_get_the_same_answer_on_both_paths() {
    let (table, routing) = (table(), routing());
    let mut rng = SmallRng::seed_from_u64(7);
    let significant = b"\"\\{}[],:0123456789-+.eEuntfxbr \n\x01\x7f";
    let (mut scanned, mut tried) = (0, 0);
    for round in 0..6000 {
        let rows: Vec<&str> = (0..3).map(|_| ROWS[rng.random_range(0..ROWS.len())]).collect();
        let format = if round % 2 == 0 {
            BodyFormat::Json
        } else {
            BodyFormat::Ndjson
        };
        let mut body = match format {
            BodyFormat::Json => json_body(&rows).into_bytes(),
            BodyFormat::Ndjson => rows.join("\n").into_bytes(),
        };
        for _ in 0..rng.random_range(1..=3) {
            let at = rng.random_range(0..body.len());
            match rng.random_range(0..3) {
                0 => {
                    body.remove(at);
                }
                1 => body.insert(at, significant[rng.random_range(0..significant.len())]),
                _ => body[at] = significant[rng.random_range(0..significant.len())],
            }
        }
        tried += 1;
        scanned += usize::from(compare(&table, &routing, format, &body));
    }
    assert!(
        scanned * 20 > tried,
        "only {scanned} of {tried} mutated bodies were scanned"
    );
}

#[test]
fn the_word_at_a_time_finder_stops_where_a_byte_by_byte_search_stops() {
    for special in 0..=u8::MAX {
        for len in 0..40 {
            for at in 0..len {
                let mut bytes = vec![b'a'; len];
                bytes[at] = special;
                let expected = if is_special(special) { at } else { len };
                for from in 0..=at {
                    assert_eq!(
                        special_byte(&bytes, from),
                        expected,
                        "byte {special:#04x} at {at} of {len}, searched from {from}"
                    );
                }
            }
        }
    }
}
