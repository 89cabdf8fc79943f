use super::*;
use crate::pgtype::{JsonScalar, encode_scalar};
use ColumnType::*;

fn text(ty: ColumnType, value: &str) -> Result<Vec<u8>, TextInputError> {
    let mut out = Vec::new();
    encode_text(ty, value, &mut out).map(|()| out)
}

fn json(ty: ColumnType, value: JsonScalar<'_>) -> Vec<u8> {
    let mut out = Vec::new();
    encode_scalar(ty, value, &mut out).expect("the JSON spelling is valid");
    out
}

#[test]
fn a_value_in_text_form_encodes_as_its_json_spelling_does() {
    let cases: &[(ColumnType, &str, JsonScalar)] = &[
        (BigInt, "5", JsonScalar::Int(5)),
        (BigInt, " -9223372036854775808 ", JsonScalar::Int(i64::MIN)),
        (Integer, "+42", JsonScalar::Int(42)),
        (SmallInt, "-7", JsonScalar::Int(-7)),
        (Double, "2.5", JsonScalar::Float(2.5)),
        (Double, "1e3", JsonScalar::Int(1000)),
        (Boolean, "t", JsonScalar::Bool(true)),
        (Boolean, "FALSE", JsonScalar::Bool(false)),
        (Boolean, "on", JsonScalar::Bool(true)),
        (
            Uuid,
            "0190A1B2-C3D4-7E5F-8A9B-0C1D2E3F4A5B",
            JsonScalar::Str("0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b"),
        ),
        (
            Uuid,
            "{0190a1b2c3d47e5f8a9b0c1d2e3f4a5b}",
            JsonScalar::Str("0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b"),
        ),
        (
            Timestamptz,
            "2026-05-01 12:00:00+02",
            JsonScalar::Str("2026-05-01T10:00:00Z"),
        ),
        (
            Timestamptz,
            "2026-05-01 10:00:00+00",
            JsonScalar::Str("2026-05-01T10:00:00Z"),
        ),
        (
            Timestamptz,
            "2026-05-01T05:30:00.25-04:30",
            JsonScalar::Str("2026-05-01T10:00:00.25Z"),
        ),
        (
            Timestamptz,
            "2026-05-01 10:00:00.123456",
            JsonScalar::Str("2026-05-01T10:00:00.123456Z"),
        ),
        (
            Timestamptz,
            "2026-05-01 10:00",
            JsonScalar::Str("2026-05-01T10:00:00Z"),
        ),
        (Timestamptz, "2026-05-01", JsonScalar::Str("2026-05-01T00:00:00Z")),
        (
            Timestamptz,
            "2026-05-01 15:30:00+0530",
            JsonScalar::Str("2026-05-01T10:00:00Z"),
        ),
        (Date, "2026-05-01", JsonScalar::Str("2026-05-01")),
        (Text, "héllo\tworld", JsonScalar::Str("héllo\tworld")),
        (Bytea, "\\x00ff10", JsonScalar::Str("AP8Q")),
        (Bytea, "a\\000\\\\", JsonScalar::Str("YQBc")),
    ];
    for (ty, spelled, as_json) in cases {
        assert_eq!(text(*ty, spelled), Ok(json(*ty, *as_json)), "{ty} {spelled:?}");
    }
    assert_eq!(
        text(Jsonb, r#"{"a": [1, "x"]}"#),
        Ok([&[JSONB_VERSION][..], br#"{"a": [1, "x"]}"#].concat())
    );
}

#[test]
fn refusals_carry_the_sqlstate_and_wording_postgres_gives() {
    let cases: &[(ColumnType, &str, &str, &str)] = &[
        (
            BigInt,
            "abc",
            "22P02",
            "invalid input syntax for type bigint: \"abc\"",
        ),
        (
            BigInt,
            "1.5",
            "22P02",
            "invalid input syntax for type bigint: \"1.5\"",
        ),
        (BigInt, "", "22P02", "invalid input syntax for type bigint: \"\""),
        (
            Integer,
            "3000000000",
            "22003",
            "value \"3000000000\" is out of range for type integer",
        ),
        (
            SmallInt,
            "40000",
            "22003",
            "value \"40000\" is out of range for type smallint",
        ),
        (
            Double,
            "x",
            "22P02",
            "invalid input syntax for type double precision: \"x\"",
        ),
        (
            Boolean,
            "maybe",
            "22P02",
            "invalid input syntax for type boolean: \"maybe\"",
        ),
        (
            Uuid,
            "not-a-uuid",
            "22P02",
            "invalid input syntax for type uuid: \"not-a-uuid\"",
        ),
        (
            Timestamptz,
            "yesterday",
            "22007",
            "invalid input syntax for type timestamp with time zone: \"yesterday\"",
        ),
        (
            Timestamptz,
            "2026-13-01 00:00:00",
            "22007",
            "invalid input syntax for type timestamp with time zone: \"2026-13-01 00:00:00\"",
        ),
        (
            Timestamptz,
            "2026-05-01 10:00:00+99",
            "22007",
            "invalid input syntax for type timestamp with time zone: \"2026-05-01 10:00:00+99\"",
        ),
        (
            Date,
            "05/01/2026",
            "22007",
            "invalid input syntax for type date: \"05/01/2026\"",
        ),
        (Jsonb, "{oops", "22P02", "invalid input syntax for type json"),
        (
            Text,
            "a\0b",
            "22021",
            "invalid byte sequence for encoding \"UTF8\": 0x00",
        ),
        (
            Bytea,
            "\\x0",
            "22P02",
            "invalid hexadecimal data: odd number of digits",
        ),
    ];
    for (ty, spelled, sqlstate, message) in cases {
        let refused = text(*ty, spelled).expect_err(spelled);
        assert_eq!(
            (refused.sqlstate, refused.message.as_str()),
            (*sqlstate, *message),
            "{ty} {spelled:?}"
        );
    }
}

#[test]
fn fractions_past_microseconds_round_and_offsets_take_every_spelling() {
    let at = |spelled: &str| text(Timestamptz, spelled).unwrap();
    assert_eq!(
        at("2026-05-01 10:00:00.1234565Z"),
        at("2026-05-01T10:00:00.123457Z")
    );
    assert_eq!(
        at("2026-05-01 10:00:00.1234564+00"),
        at("2026-05-01 10:00:00.123456")
    );
    for spelled in [
        "2026-05-01 12:30:15+02:30:15",
        "2026-05-01 12:30:15 +023015",
        "2026-05-01T12:30:15+02:30:15",
    ] {
        assert_eq!(at(spelled), at("2026-05-01 10:00:00Z"), "{spelled}");
    }
    for bad in [
        "2026-05-01 10:00:00+",
        "2026-05-01 25:00:00",
        "2026-05-01 10:00:00.",
        "2026-05-01x",
        "2026-5-1",
    ] {
        assert!(text(Timestamptz, bad).is_err(), "{bad}");
    }
}
