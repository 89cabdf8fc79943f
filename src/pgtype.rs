//! The shared vocabulary of Postgres values, a leaf that imports nothing of ours (so `config`,
//! `schema` and `routing` can all use it without importing each other): column types, the
//! conversion of one JSON value (or, in `text`, one value in Postgres's text form) into Postgres
//! binary COPY field bytes, column defaults, and the identifier rules (invariant 8).
//!
//! Every accepted spelling of a value converts to the same bytes (`5` and `5.0` for a bigint, any
//! case of a UUID, a timestamp in any offset), which is what makes the key hash canonical.

mod output;
pub mod sqlstate;
mod text;

pub use output::{output_text, timestamptz_text};
pub use text::{TextInputError, encode_text};

use base64::Engine;
use chrono::{DateTime, NaiveDate};
use serde::Deserialize;
use std::fmt;

/// Microseconds between the Unix epoch and Postgres's epoch (2000-01-01 UTC).
const PG_EPOCH_UNIX_MICROS: i64 = 946_684_800_000_000;
/// Days between 1970-01-01 and 2000-01-01.
const PG_EPOCH_UNIX_DAYS: i64 = 10_957;
/// Version byte that starts the binary form of jsonb.
pub const JSONB_VERSION: u8 = 1;
/// The most bytes Postgres takes in one field (a varlena's limit, 1 GiB less one byte): the
/// cap on a value, and so on a request body.
pub const MAX_FIELD_BYTES: usize = (1 << 30) - 1;

/// A column type shardgate can decode from JSON and send in binary COPY.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
pub enum ColumnType {
    /// `text`: a JSON string.
    #[serde(rename = "text")]
    Text,
    /// `bigint`: an integral JSON number or decimal string.
    #[serde(rename = "bigint", alias = "int8")]
    BigInt,
    /// `integer`: an integral JSON number or decimal string.
    #[serde(rename = "integer", alias = "int", alias = "int4")]
    Integer,
    /// `smallint`: an integral JSON number or decimal string.
    #[serde(rename = "smallint", alias = "int2")]
    SmallInt,
    /// `double precision`: a JSON number or numeric string.
    #[serde(rename = "double precision", alias = "float8")]
    Double,
    /// `boolean`: `true` or `false`.
    #[serde(rename = "boolean", alias = "bool")]
    Boolean,
    /// `uuid`: a UUID string in any case, with or without hyphens.
    #[serde(rename = "uuid")]
    Uuid,
    /// `timestamptz`: an RFC 3339 string with an offset.
    #[serde(rename = "timestamptz", alias = "timestamp with time zone")]
    Timestamptz,
    /// `date`: a `YYYY-MM-DD` string.
    #[serde(rename = "date")]
    Date,
    /// `jsonb`: any JSON value, stored as given.
    #[serde(rename = "jsonb")]
    Jsonb,
    /// `bytea`: a base64 string.
    #[serde(rename = "bytea")]
    Bytea,
}

impl ColumnType {
    /// The type as Postgres's `format_type` prints it; used in DDL and when verifying a table.
    pub fn sql_name(self) -> &'static str {
        match self {
            ColumnType::Text => "text",
            ColumnType::BigInt => "bigint",
            ColumnType::Integer => "integer",
            ColumnType::SmallInt => "smallint",
            ColumnType::Double => "double precision",
            ColumnType::Boolean => "boolean",
            ColumnType::Uuid => "uuid",
            ColumnType::Timestamptz => "timestamp with time zone",
            ColumnType::Date => "date",
            ColumnType::Jsonb => "jsonb",
            ColumnType::Bytea => "bytea",
        }
    }

    /// The tag that precedes a value of this type in the canonical key encoding.
    /// Fixed forever: changing one moves every key.
    pub fn key_tag(self) -> u8 {
        match self {
            ColumnType::Text => 1,
            ColumnType::BigInt => 2,
            ColumnType::Integer => 3,
            ColumnType::SmallInt => 4,
            ColumnType::Double => 5,
            ColumnType::Boolean => 6,
            ColumnType::Uuid => 7,
            ColumnType::Timestamptz => 8,
            ColumnType::Date => 9,
            ColumnType::Bytea => 10,
            ColumnType::Jsonb => 11,
        }
    }

    /// Whether values of this type have one canonical form and so can place rows.
    pub fn can_be_partition_key(self) -> bool {
        self != ColumnType::Jsonb
    }

    /// Whether this is `smallint`, `integer` or `bigint`.
    pub fn is_integer(self) -> bool {
        matches!(
            self,
            ColumnType::SmallInt | ColumnType::Integer | ColumnType::BigInt
        )
    }

    /// Whether this type may be a table's id (primary key).
    pub fn can_be_id(self) -> bool {
        matches!(
            self,
            ColumnType::Uuid | ColumnType::BigInt | ColumnType::Integer | ColumnType::Text
        )
    }

    fn expectation(self) -> &'static str {
        match self {
            ColumnType::Text => "a string",
            ColumnType::BigInt | ColumnType::Integer | ColumnType::SmallInt => "an integer",
            ColumnType::Double => "a number",
            ColumnType::Boolean => "true or false",
            ColumnType::Uuid => "a UUID string",
            ColumnType::Timestamptz => "an RFC 3339 timestamp with offset",
            ColumnType::Date => "a YYYY-MM-DD date",
            ColumnType::Jsonb => "a JSON value",
            ColumnType::Bytea => "a base64 string",
        }
    }
}

impl fmt::Display for ColumnType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.sql_name())
    }
}

/// One JSON scalar as the decoder sees it, before conversion to a column type.
#[derive(Debug, Clone, Copy)]
pub enum JsonScalar<'a> {
    /// A JSON string (unescaped).
    Str(&'a str),
    /// A JSON integer that fits i64.
    Int(i64),
    /// A JSON integer above i64::MAX.
    UInt(u64),
    /// A JSON number with a fraction or exponent.
    Float(f64),
    /// `true` / `false`.
    Bool(bool),
}

impl<'a> JsonScalar<'a> {
    /// A parsed JSON value as a scalar; `None` for null, arrays and objects.
    pub fn from_json(value: &'a serde_json::Value) -> Option<JsonScalar<'a>> {
        Some(match value {
            serde_json::Value::String(s) => JsonScalar::Str(s),
            serde_json::Value::Bool(b) => JsonScalar::Bool(*b),
            serde_json::Value::Number(n) => match (n.as_i64(), n.as_u64(), n.as_f64()) {
                (Some(i), _, _) => JsonScalar::Int(i),
                (None, Some(u), _) => JsonScalar::UInt(u),
                (_, _, Some(f)) => JsonScalar::Float(f),
                _ => return None,
            },
            _ => return None,
        })
    }
}

impl fmt::Display for JsonScalar<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            JsonScalar::Str(s) if s.chars().count() > 40 => {
                let head: String = s.chars().take(40).collect();
                write!(f, "\"{head}...\"")
            }
            JsonScalar::Str(s) => write!(f, "\"{s}\""),
            JsonScalar::Int(n) => write!(f, "{n}"),
            JsonScalar::UInt(n) => write!(f, "{n}"),
            JsonScalar::Float(x) => write!(f, "{x}"),
            JsonScalar::Bool(b) => write!(f, "{b}"),
        }
    }
}

/// Appends the binary COPY bytes of `value` as a `ty` to `out`, or says why it does not fit.
/// `jsonb` values do not come through here (see [`encode_jsonb`]).
pub fn encode_scalar(ty: ColumnType, value: JsonScalar<'_>, out: &mut Vec<u8>) -> Result<(), String> {
    let mismatch = || format!("expected {}, got {value}", ty.expectation());
    match (ty, value) {
        (ColumnType::Text, JsonScalar::Str(s)) => {
            if s.contains('\0') {
                return Err("text cannot contain the NUL character".into());
            }
            out.extend_from_slice(s.as_bytes());
        }
        (ColumnType::BigInt, v) => out.extend_from_slice(&integer(v).ok_or_else(mismatch)?.to_be_bytes()),
        (ColumnType::Integer, v) => {
            let n = i32::try_from(integer(v).ok_or_else(mismatch)?).map_err(|_| out_of_range(ty, value))?;
            out.extend_from_slice(&n.to_be_bytes());
        }
        (ColumnType::SmallInt, v) => {
            let n = i16::try_from(integer(v).ok_or_else(mismatch)?).map_err(|_| out_of_range(ty, value))?;
            out.extend_from_slice(&n.to_be_bytes());
        }
        (ColumnType::Double, v) => out.extend_from_slice(&float(v).ok_or_else(mismatch)?.to_be_bytes()),
        (ColumnType::Boolean, JsonScalar::Bool(b)) => out.push(u8::from(b)),
        (ColumnType::Uuid, JsonScalar::Str(s)) => {
            let uuid = uuid::Uuid::try_parse(s).map_err(|_| mismatch())?;
            out.extend_from_slice(uuid.as_bytes());
        }
        // A timestamp is read as RFC 3339 first, so the spelling of (almost) every row costs no
        // more; `infinity` is looked for only when that fails.
        (ColumnType::Timestamptz, JsonScalar::Str(s)) => {
            let micros = match DateTime::parse_from_rfc3339(s) {
                Ok(ts) => ts.timestamp_micros() - PG_EPOCH_UNIX_MICROS,
                Err(_) => text::infinity_as(s, i64::MAX, i64::MIN).ok_or_else(mismatch)?,
            };
            out.extend_from_slice(&micros.to_be_bytes());
        }
        (ColumnType::Date, JsonScalar::Str(s)) => {
            let days = match NaiveDate::parse_from_str(s, "%Y-%m-%d") {
                Ok(date) => {
                    let days =
                        date.signed_duration_since(NaiveDate::default()).num_days() - PG_EPOCH_UNIX_DAYS;
                    i32::try_from(days).map_err(|_| out_of_range(ty, value))?
                }
                Err(_) => text::infinity_as(s, i32::MAX, i32::MIN).ok_or_else(mismatch)?,
            };
            out.extend_from_slice(&days.to_be_bytes());
        }
        (ColumnType::Bytea, JsonScalar::Str(s)) => {
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(s)
                .map_err(|_| mismatch())?;
            out.extend_from_slice(&bytes);
        }
        _ => return Err(mismatch()),
    }
    Ok(())
}

/// The JSON value that [`encode_scalar`] (or [`encode_jsonb`] for `jsonb`) turns back into the
/// binary `ty` value `value`, which [`check_binary`] accepted: how a value a client sent in
/// Postgres's own form joins a query's JSON parameters (an infinite timestamp or date is the
/// string `infinity` or `-infinity`).
pub fn json_of_binary(ty: ColumnType, value: &[u8]) -> Result<serde_json::Value, String> {
    use serde_json::Value;
    let fixed = |n: usize| -> Result<&[u8], String> {
        value
            .get(..n)
            .filter(|_| value.len() == n)
            .ok_or_else(|| format!("a binary {ty} has {n} bytes, not {}", value.len()))
    };
    let be_i64 = || fixed(8).map(|b| i64::from_be_bytes(b.try_into().expect("8 bytes")));
    let be_i32 = || fixed(4).map(|b| i32::from_be_bytes(b.try_into().expect("4 bytes")));
    let infinite = |up: bool| Value::from(if up { "infinity" } else { "-infinity" });
    Ok(match ty {
        ColumnType::Text => Value::from(std::str::from_utf8(value).map_err(|e| e.to_string())?),
        ColumnType::BigInt => Value::from(be_i64()?),
        ColumnType::Integer => Value::from(be_i32()?),
        ColumnType::SmallInt => Value::from(i16::from_be_bytes(fixed(2)?.try_into().expect("2 bytes"))),
        ColumnType::Double => {
            let x = f64::from_bits(be_i64()? as u64);
            serde_json::Number::from_f64(x).map_or_else(|| Value::from(x.to_string()), Value::Number)
        }
        ColumnType::Boolean => Value::from(fixed(1)?[0] != 0),
        ColumnType::Uuid => {
            let bytes: [u8; 16] = fixed(16)?.try_into().expect("16 bytes");
            Value::from(uuid::Uuid::from_bytes(bytes).hyphenated().to_string())
        }
        ColumnType::Timestamptz => {
            let micros = be_i64()?;
            if micros == i64::MAX || micros == i64::MIN {
                return Ok(infinite(micros == i64::MAX));
            }
            let time = DateTime::from_timestamp_micros(micros + PG_EPOCH_UNIX_MICROS)
                .ok_or_else(|| format!("timestamp out of range: {micros}"))?;
            Value::from(time.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true))
        }
        ColumnType::Date => {
            let days = be_i32()?;
            if days == i32::MAX || days == i32::MIN {
                return Ok(infinite(days == i32::MAX));
            }
            let date = NaiveDate::default()
                .checked_add_signed(chrono::TimeDelta::days(i64::from(days) + PG_EPOCH_UNIX_DAYS))
                .ok_or_else(|| format!("date out of range: {days}"))?;
            Value::from(date.format("%Y-%m-%d").to_string())
        }
        ColumnType::Jsonb => match value.split_first() {
            Some((&JSONB_VERSION, json)) => serde_json::from_slice(json).map_err(|e| e.to_string())?,
            _ => return Err("unsupported jsonb version number".into()),
        },
        ColumnType::Bytea => Value::from(base64::engine::general_purpose::STANDARD.encode(value)),
    })
}

/// Checks that `value` is a `ty` value in Postgres's binary form, as a binary COPY or a binary
/// parameter carries it: the right length for fixed-size types, UTF-8 without NUL for text,
/// the version byte and valid JSON for jsonb. Such a value is its binary COPY field as it is.
pub fn check_binary(ty: ColumnType, value: &[u8]) -> Result<(), TextInputError> {
    let refused = |sqlstate, message: &str| {
        Err(TextInputError {
            sqlstate,
            message: message.to_string(),
        })
    };
    let fixed_len = match ty {
        ColumnType::BigInt | ColumnType::Double | ColumnType::Timestamptz => Some(8),
        ColumnType::Integer | ColumnType::Date => Some(4),
        ColumnType::SmallInt => Some(2),
        ColumnType::Boolean => Some(1),
        ColumnType::Uuid => Some(16),
        ColumnType::Text | ColumnType::Jsonb | ColumnType::Bytea => None,
    };
    if fixed_len.is_some_and(|len| len != value.len()) {
        return refused(
            sqlstate::INVALID_BINARY_REPRESENTATION,
            "incorrect binary data format",
        );
    }
    match ty {
        ColumnType::Boolean if value[0] > 1 => refused(
            sqlstate::INVALID_BINARY_REPRESENTATION,
            "incorrect binary data format",
        ),
        ColumnType::Text => match std::str::from_utf8(value) {
            Ok(text) if !text.contains('\0') => Ok(()),
            _ => refused(
                sqlstate::CHARACTER_NOT_IN_REPERTOIRE,
                "invalid byte sequence for encoding \"UTF8\"",
            ),
        },
        ColumnType::Jsonb => match value.split_first() {
            Some((&JSONB_VERSION, json)) => {
                let valid = std::str::from_utf8(json)
                    .ok()
                    .is_some_and(|text| serde_json::from_str::<&serde_json::value::RawValue>(text).is_ok());
                if valid {
                    Ok(())
                } else {
                    refused(
                        sqlstate::INVALID_TEXT_REPRESENTATION,
                        "invalid input syntax for type json",
                    )
                }
            }
            _ => refused(
                sqlstate::INVALID_BINARY_REPRESENTATION,
                "unsupported jsonb version number",
            ),
        },
        _ => Ok(()),
    }
}

/// Appends the binary jsonb form of a raw JSON text.
pub fn encode_jsonb(raw_json: &str, out: &mut Vec<u8>) -> Result<(), String> {
    // Postgres refuses \u0000 inside jsonb strings; refuse it here, with the row's index.
    if raw_json.as_bytes().contains(&b'\\') && raw_json.contains("\\u0000") {
        return Err("jsonb cannot contain \\u0000".into());
    }
    encode_jsonb_without_escapes(raw_json, out);
    Ok(())
}

/// Appends the binary jsonb form of a raw JSON text known to hold no backslash, and so no
/// `\u0000` to refuse.
pub fn encode_jsonb_without_escapes(raw_json: &str, out: &mut Vec<u8>) {
    out.push(JSONB_VERSION);
    out.extend_from_slice(raw_json.as_bytes());
}

/// The binary timestamptz value of a Unix time in microseconds.
pub fn timestamptz_from_unix_micros(micros: i64) -> [u8; 8] {
    (micros - PG_EPOCH_UNIX_MICROS).to_be_bytes()
}

/// The binary date value of a Unix time in microseconds (UTC day).
pub fn date_from_unix_micros(micros: i64) -> [u8; 4] {
    let days = micros.div_euclid(86_400_000_000) - PG_EPOCH_UNIX_DAYS;
    i32::try_from(days).unwrap_or(i32::MAX).to_be_bytes()
}

/// The Unix time in milliseconds of a binary timestamptz value (`None` for infinity or a value
/// that is not 8 bytes).
pub fn unix_millis_of_timestamptz(value: &[u8]) -> Option<i64> {
    let micros = i64::from_be_bytes(value.try_into().ok()?);
    if micros == i64::MAX || micros == i64::MIN {
        return None;
    }
    Some((micros.checked_add(PG_EPOCH_UNIX_MICROS)?).div_euclid(1000))
}

/// The Unix time in milliseconds a UUIDv7 carries in its first 48 bits; `None` for a UUID of
/// another version.
pub fn unix_millis_of_uuid_v7(value: &[u8]) -> Option<i64> {
    let bytes: [u8; 16] = value.try_into().ok()?;
    if bytes[6] >> 4 != 7 {
        return None;
    }
    let mut millis = [0u8; 8];
    millis[2..].copy_from_slice(&bytes[..6]);
    Some(i64::from_be_bytes(millis))
}

fn out_of_range(ty: ColumnType, value: JsonScalar<'_>) -> String {
    format!("{value} is out of range for {ty}")
}

fn integer(value: JsonScalar<'_>) -> Option<i64> {
    match value {
        JsonScalar::Int(n) => Some(n),
        JsonScalar::UInt(_) => None,
        // 2^63 is exactly representable; anything at or above it does not fit.
        JsonScalar::Float(x) if x.fract() == 0.0 && x >= -(2f64.powi(63)) && x < 2f64.powi(63) => {
            Some(x as i64)
        }
        JsonScalar::Str(s) => s.parse().ok(),
        _ => None,
    }
}

fn float(value: JsonScalar<'_>) -> Option<f64> {
    match value {
        JsonScalar::Int(n) => Some(n as f64),
        JsonScalar::UInt(n) => Some(n as f64),
        JsonScalar::Float(x) => Some(x),
        JsonScalar::Str(s) => s.parse().ok(),
        JsonScalar::Bool(_) => None,
    }
}

/// Longest identifier Postgres keeps without truncating (NAMEDATALEN - 1).
const MAX_IDENTIFIER_LEN: usize = 63;

/// Whether `name` is an identifier shardgate accepts: `[a-z_][a-z0-9_]*`, at most 63 bytes.
/// Such names never need escaping, but are still quoted in SQL (invariant 8).
pub fn is_valid_identifier(name: &str) -> bool {
    let mut bytes = name.bytes();
    matches!(bytes.next(), Some(b'a'..=b'z' | b'_'))
        && bytes.all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'_'))
        && name.len() <= MAX_IDENTIFIER_LEN
}

/// Double-quotes a validated identifier for SQL text.
pub fn quote_ident(name: &str) -> String {
    debug_assert!(
        is_valid_identifier(name),
        "identifiers are validated at config load"
    );
    format!("\"{name}\"")
}

/// What fills a column a row leaves out.
#[derive(Debug, Clone, PartialEq)]
pub enum DefaultValue {
    /// The request's arrival time (`now()` for timestamptz, today for date).
    Now,
    /// A fresh time-ordered UUIDv7 per row.
    UuidV7,
    /// A constant, already in binary COPY form.
    Literal(Vec<u8>),
}

impl DefaultValue {
    /// Reads a column's `default` from the config, checking it against the column type.
    pub fn from_config(ty: ColumnType, value: &toml::Value) -> Result<DefaultValue, String> {
        match (ty, value.as_str()) {
            (ColumnType::Timestamptz | ColumnType::Date, Some("now()")) => return Ok(DefaultValue::Now),
            (ColumnType::Uuid, Some("uuidv7()")) => return Ok(DefaultValue::UuidV7),
            _ => {}
        }
        let mut bytes = Vec::new();
        if ty == ColumnType::Jsonb {
            let text = serde_json::to_string(value).map_err(|e| e.to_string())?;
            encode_jsonb(&text, &mut bytes)?;
        } else {
            let datetime_text;
            let scalar = match value {
                toml::Value::String(s) => JsonScalar::Str(s),
                toml::Value::Integer(n) => JsonScalar::Int(*n),
                toml::Value::Float(x) => JsonScalar::Float(*x),
                toml::Value::Boolean(b) => JsonScalar::Bool(*b),
                toml::Value::Datetime(d) => {
                    datetime_text = d.to_string();
                    JsonScalar::Str(&datetime_text)
                }
                _ => return Err(format!("expected a {ty} literal, \"now()\" or \"uuidv7()\"")),
            };
            encode_scalar(ty, scalar, &mut bytes)?;
        }
        Ok(DefaultValue::Literal(bytes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ColumnType::*;
    use JsonScalar::*;

    #[test]
    fn a_row_says_when_it_was_made_by_its_timestamp_or_its_uuid_v7() {
        let micros = 1_764_620_000_123_456;
        assert_eq!(
            unix_millis_of_timestamptz(&timestamptz_from_unix_micros(micros)),
            Some(1_764_620_000_123)
        );
        assert_eq!(
            unix_millis_of_timestamptz(&i64::MAX.to_be_bytes()),
            None,
            "infinity"
        );
        let v7 = uuid::Uuid::parse_str("019ad5a0-5c7b-7cc3-9f1a-2b3c4d5e6f70").unwrap();
        assert_eq!(unix_millis_of_uuid_v7(v7.as_bytes()), Some(0x019a_d5a0_5c7b));
        let v4 = uuid::Uuid::parse_str("9f1a2b3c-4d5e-4f70-8a1b-2c3d4e5f6a7b").unwrap();
        assert_eq!(
            unix_millis_of_uuid_v7(v4.as_bytes()),
            None,
            "a v4 carries no time"
        );
    }

    #[test]
    fn binary_values_read_back_as_the_json_that_encodes_them() {
        let cases: [(ColumnType, &str); 11] = [
            (Text, "héllo"),
            (BigInt, "-9007199254740993"),
            (Integer, "2147483647"),
            (SmallInt, "-32768"),
            (Double, "1.5e-7"),
            (Boolean, "t"),
            (Uuid, "0190A5C8-7E2B-7C3D-9F1A-2B3C4D5E6F70"),
            (Timestamptz, "2026-05-01 12:00:00.123456+02"),
            (Date, "1999-12-31"),
            (Jsonb, r#"{"a": [1, "x"]}"#),
            (Bytea, "\\x00ff10"),
        ];
        for (ty, text) in cases {
            let mut binary = Vec::new();
            encode_text(ty, text, &mut binary).unwrap();
            let json = json_of_binary(ty, &binary).unwrap();
            let mut again = Vec::new();
            if ty == Jsonb {
                // jsonb's binary form keeps the text as written: compare the values.
                encode_jsonb(&json.to_string(), &mut again).unwrap();
                assert_eq!(
                    json_of_binary(ty, &again).unwrap(),
                    json_of_binary(ty, &binary).unwrap()
                );
                assert_eq!(json, serde_json::json!({"a": [1, "x"]}));
                continue;
            }
            encode_scalar(ty, JsonScalar::from_json(&json).unwrap(), &mut again).unwrap();
            assert_eq!(again, binary, "{ty} {text} read back as {json}");
        }
        for (ty, text) in [(Timestamptz, "infinity"), (Date, "-infinity")] {
            let mut binary = Vec::new();
            encode_scalar(ty, Str(text), &mut binary).unwrap();
            assert_eq!(json_of_binary(ty, &binary).unwrap(), text, "{ty}");
            let mut from_text = Vec::new();
            encode_text(ty, text, &mut from_text).unwrap();
            assert_eq!(binary, from_text, "{ty}: JSON and Postgres's text form agree");
        }
        let mut upper = Vec::new();
        encode_scalar(Timestamptz, Str("-Infinity"), &mut upper).unwrap();
        assert_eq!(upper, i64::MIN.to_be_bytes());
        assert!(json_of_binary(Integer, &[0, 1]).unwrap_err().contains("4 bytes"));
    }

    fn encode(ty: ColumnType, value: JsonScalar<'_>) -> Result<Vec<u8>, String> {
        let mut out = Vec::new();
        encode_scalar(ty, value, &mut out).map(|()| out)
    }

    #[test]
    fn spellings_of_one_value_encode_identically() {
        let groups: &[(ColumnType, &[JsonScalar])] = &[
            (BigInt, &[Int(5), Float(5.0), Str("5")]),
            (Integer, &[Int(-7), Float(-7.0), Str("-7")]),
            (Double, &[Int(2), Float(2.0), Str("2")]),
            (
                Uuid,
                &[
                    Str("0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b"),
                    Str("0190A1B2-C3D4-7E5F-8A9B-0C1D2E3F4A5B"),
                    Str("0190a1b2c3d47e5f8a9b0c1d2e3f4a5b"),
                ],
            ),
            (
                Timestamptz,
                &[
                    Str("2024-05-01T12:00:00Z"),
                    Str("2024-05-01T14:00:00+02:00"),
                    Str("2024-05-01T07:30:00.000-04:30"),
                ],
            ),
        ];
        for (ty, spellings) in groups {
            let first = encode(*ty, spellings[0]).unwrap();
            for spelling in &spellings[1..] {
                assert_eq!(encode(*ty, *spelling).unwrap(), first, "{ty} {spelling}");
            }
        }
    }

    #[test]
    fn values_encode_to_postgres_binary_form() {
        let cases: &[(ColumnType, JsonScalar, &[u8])] = &[
            (Text, Str("héllo"), "héllo".as_bytes()),
            (BigInt, Int(1), &[0, 0, 0, 0, 0, 0, 0, 1]),
            (Integer, Int(-1), &[0xff, 0xff, 0xff, 0xff]),
            (SmallInt, Int(258), &[1, 2]),
            (Boolean, Bool(true), &[1]),
            (
                Timestamptz,
                Str("2000-01-01T00:00:01Z"),
                &[0, 0, 0, 0, 0, 0x0f, 0x42, 0x40],
            ),
            (Date, Str("2000-01-02"), &[0, 0, 0, 1]),
            (Date, Str("1999-12-31"), &[0xff, 0xff, 0xff, 0xff]),
            (Bytea, Str("AAEC"), &[0, 1, 2]),
        ];
        for (ty, value, bytes) in cases {
            assert_eq!(encode(*ty, *value).unwrap(), *bytes, "{ty} {value}");
        }
    }

    #[test]
    fn wrong_values_are_refused_with_a_reason() {
        let cases: &[(ColumnType, JsonScalar, &str)] = &[
            (Text, Int(3), "expected a string, got 3"),
            (Text, Str("a\0b"), "text cannot contain the NUL character"),
            (BigInt, Float(5.5), "expected an integer, got 5.5"),
            (
                BigInt,
                UInt(u64::MAX),
                "expected an integer, got 18446744073709551615",
            ),
            (Integer, Int(1 << 40), "1099511627776 is out of range for integer"),
            (SmallInt, Str("40000"), "\"40000\" is out of range for smallint"),
            (Boolean, Str("yes"), "expected true or false, got \"yes\""),
            (
                Uuid,
                Str("not-a-uuid"),
                "expected a UUID string, got \"not-a-uuid\"",
            ),
            (
                Timestamptz,
                Str("yesterday"),
                "expected an RFC 3339 timestamp with offset, got \"yesterday\"",
            ),
            (
                Timestamptz,
                Str("2024-05-01T12:00:00"),
                "expected an RFC 3339 timestamp with offset",
            ),
            (Date, Str("2024-13-01"), "expected a YYYY-MM-DD date"),
            (Bytea, Str("***"), "expected a base64 string"),
        ];
        for (ty, value, reason) in cases {
            let err = encode(*ty, *value).unwrap_err();
            assert!(err.starts_with(reason), "{ty} {value}: {err}");
        }
    }

    #[test]
    fn jsonb_keeps_the_text_behind_a_version_byte() {
        let mut out = Vec::new();
        encode_jsonb("{\"a\": 1}", &mut out).unwrap();
        assert_eq!(out, b"\x01{\"a\": 1}");
        assert!(encode_jsonb("\"a\\u0000\"", &mut Vec::new()).is_err());
    }

    #[test]
    fn server_time_encodes_as_timestamp_and_day() {
        let micros = 946_684_800_000_000 + 86_400_000_000 + 5;
        assert_eq!(
            timestamptz_from_unix_micros(micros),
            (86_400_000_005i64).to_be_bytes()
        );
        assert_eq!(date_from_unix_micros(micros), 1i32.to_be_bytes());
    }
}
