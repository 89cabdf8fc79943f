use super::*;
use crate::schema::decode::tests::{NOW, events};
use crate::schema::decode::{BodyFormat, RowError, decode_rows};

fn all_columns() -> Vec<usize> {
    (0..7).collect()
}

fn copy(format: &CopyFormat, columns: &[usize], data: &str) -> Result<EncodedRows, DecodeError> {
    let routing = RoutingTable::two_shards_for_tests(1);
    decode_copy(&events(), &routing, format, columns, data.as_bytes(), NOW, &[])
}

fn json(body: &str) -> EncodedRows {
    let routing = RoutingTable::two_shards_for_tests(1);
    decode_rows(&events(), &routing, BodyFormat::Json, body.as_bytes(), NOW, &[]).unwrap()
}

fn tuples(rows: &EncodedRows) -> Vec<&[u8]> {
    rows.shards.iter().map(|shard| shard.tuples.as_slice()).collect()
}

fn first_error(result: Result<EncodedRows, DecodeError>) -> RowError {
    match result {
        Err(DecodeError::InvalidRows { mut errors, .. }) => errors.remove(0),
        other => panic!("expected a row error, got {other:?}"),
    }
}

const AS_JSON: &str = r#"[
  {"event_id": "0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b", "tenant_id": "acme\tco\nline", "n": 5,
   "ts": "2026-05-01T10:00:00Z", "payload": {"k": "v, w"}, "ok": true, "level": 2},
  {"event_id": "0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5c", "tenant_id": "b\\\"q", "n": -1,
   "ts": "2026-05-01T10:00:00.5Z", "payload": null, "ok": null, "level": 3}
]"#;

#[test]
fn text_rows_encode_and_place_as_the_same_rows_in_json_do() {
    let data = "0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b\tacme\\tco\\nline\t5\t2026-05-01 12:00:00+02\t{\"k\": \"v, w\"}\tt\t2\n\
                0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5c\tb\\\\\"q\t-1\t2026-05-01 10:00:00.5+00\t\\N\t\\N\t3\n\\.\n";
    let copied = copy(&CopyFormat::new(CopyKind::Text), &all_columns(), data).unwrap();
    assert_eq!(copied.rows, 2);
    assert_eq!(tuples(&copied), tuples(&json(AS_JSON)));
}

#[test]
fn csv_rows_with_quotes_delimiters_and_newlines_encode_as_json_does() {
    let data = "0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b,\"acme\tco\nline\",5,2026-05-01 10:00:00Z,\"{\"\"k\"\": \"\"v, w\"\"}\",true,2\r\n\
                0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5c,\"b\\\"\"q\",-1,2026-05-01T10:00:00.5Z,,,3";
    let copied = copy(&CopyFormat::new(CopyKind::Csv), &all_columns(), data).unwrap();
    assert_eq!(tuples(&copied), tuples(&json(AS_JSON)));

    let mut semicolons = CopyFormat::new(CopyKind::Csv);
    (
        semicolons.delimiter,
        semicolons.quote,
        semicolons.escape,
        semicolons.null,
    ) = (b';', b'\'', b'\\', "NULL".into());
    let data = "0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b;'acme\tco\nline';5;2026-05-01 10:00:00Z;'{\"k\": \"v, w\"}';true;2\n\
                0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5c;'b\\\\\"q';-1;2026-05-01T10:00:00.5Z;NULL;NULL;3\n";
    let copied = copy(&semicolons, &all_columns(), data).unwrap();
    assert_eq!(tuples(&copied), tuples(&json(AS_JSON)));
}

#[test]
fn columns_left_out_of_the_list_take_their_defaults() {
    let copied = copy(
        &CopyFormat::new(CopyKind::Text),
        &[2, 1, 0],
        "5\tacme\t0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b\n",
    )
    .unwrap();
    let body = r#"[{"event_id": "0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b", "tenant_id": "acme", "n": 5}]"#;
    assert_eq!(tuples(&copied), tuples(&json(body)));
}

#[test]
fn a_bad_record_is_refused_with_its_row_column_and_sqlstate() {
    let text = CopyFormat::new(CopyKind::Text);
    let columns = [1, 2];
    let cases = [
        (
            "a\t1\nb\tzwei\n",
            1,
            Some("n"),
            "22P02",
            "invalid input syntax for type bigint: \"zwei\"",
        ),
        (
            "a\t1\nb\n",
            1,
            Some("n"),
            "22P04",
            "missing data for column \"n\"",
        ),
        (
            "a\t1\t2\n",
            0,
            None,
            "22P04",
            "extra data after last expected column",
        ),
        (
            "\\N\t1\n",
            0,
            Some("tenant_id"),
            "23502",
            "partition-key value cannot be null",
        ),
        (
            "a\t99999999999999999999\n",
            0,
            Some("n"),
            "22003",
            "value \"99999999999999999999\" is out of range for type bigint",
        ),
    ];
    for (data, row, column, sqlstate, reason) in cases {
        let error = first_error(copy(&text, &columns, data));
        assert_eq!(
            (
                error.row,
                error.column.as_deref(),
                error.sqlstate,
                error.reason.as_str()
            ),
            (row, column, sqlstate, reason),
            "{data:?}"
        );
    }
    let error = first_error(copy(&CopyFormat::new(CopyKind::Csv), &columns, "\"open,1\n"));
    assert_eq!(
        (error.sqlstate, error.reason.as_str()),
        ("22P04", "unterminated CSV quoted field")
    );
}

#[test]
fn a_stream_is_cut_only_after_whole_records_wherever_its_pieces_end() {
    let cases = [
        (CopyFormat::new(CopyKind::Text), "a\\\nb\tc\nd\te\n", vec![7, 11]),
        (
            CopyFormat::new(CopyKind::Csv),
            "\"a\nb\",c\n\"\"\"\n\",d\n",
            vec![8, 16],
        ),
    ];
    for (format, data, ends) in cases {
        let bytes = data.as_bytes();
        let mut scan = RecordScan::default();
        let (mut found, mut start, mut seen) = (Vec::new(), 0, 0);
        while seen < bytes.len() {
            seen += 1;
            if let Some(end) = format.record_end(&bytes[start..seen], &mut scan) {
                start += end;
                found.push(start);
            }
        }
        assert_eq!(found, ends, "{data:?}");
    }
}

#[test]
fn binary_tuples_encode_as_the_same_rows_in_json_do_and_a_wrong_length_is_refused() {
    let binary = CopyFormat::new(CopyKind::Binary);
    let id = uuid::Uuid::parse_str("0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b").unwrap();
    let tuple = |n: &[u8]| {
        let mut out = 3i16.to_be_bytes().to_vec();
        for field in [id.as_bytes().as_slice(), b"acme", n] {
            out.extend_from_slice(&(field.len() as i32).to_be_bytes());
            out.extend_from_slice(field);
        }
        out
    };
    let mut data = tuple(&5i64.to_be_bytes());
    data.extend_from_slice(&(-1i16).to_be_bytes());
    let routing = RoutingTable::two_shards_for_tests(1);
    let copied = decode_copy(&events(), &routing, &binary, &[0, 1, 2], &data, NOW, &[]).unwrap();
    let body = r#"[{"event_id": "0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b", "tenant_id": "acme", "n": 5}]"#;
    assert_eq!(tuples(&copied), tuples(&json(body)));

    let short = tuple(&5i32.to_be_bytes());
    let error = first_error(decode_copy(
        &events(),
        &routing,
        &binary,
        &[0, 1, 2],
        &short,
        NOW,
        &[],
    ));
    assert_eq!(
        (error.column.as_deref(), error.sqlstate, error.reason.as_str()),
        (Some("n"), "22P03", "incorrect binary data format")
    );
    assert_eq!(
        binary_header_len(b"PGCOPY\n\xff\r\n\0\0\0\0\0\0\0\0\0rest"),
        Ok(Some(19))
    );
    assert_eq!(binary_header_len(b"PGCOPY\n\xff"), Ok(None));
    assert_eq!(
        binary_header_len(b"id,name\n"),
        Err("COPY file signature not recognized".into())
    );
}
