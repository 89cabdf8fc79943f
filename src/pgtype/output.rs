//! Binary values of a column type in Postgres's text output form, as a session with
//! `DateStyle` ISO, `TimeZone` UTC and `bytea_output` hex reads them: what a result in text
//! format carries (an `INSERT ... RETURNING` read by psql or psycopg).

use super::{ColumnType, JSONB_VERSION, PG_EPOCH_UNIX_DAYS, PG_EPOCH_UNIX_MICROS};
use chrono::{DateTime, Datelike, NaiveDate, Timelike, Utc};
use std::fmt::Write;

/// The text form of `field`, the binary value of a `ty` column. A field that is not a valid
/// binary value of its type (never one shardgate stored) is shown as its bytes in hex.
pub fn output_text(ty: ColumnType, field: &[u8]) -> String {
    let text = match ty {
        ColumnType::Text => std::str::from_utf8(field).ok().map(str::to_string),
        ColumnType::BigInt => field
            .try_into()
            .ok()
            .map(i64::from_be_bytes)
            .map(|n| n.to_string()),
        ColumnType::Integer => field
            .try_into()
            .ok()
            .map(i32::from_be_bytes)
            .map(|n| n.to_string()),
        ColumnType::SmallInt => field
            .try_into()
            .ok()
            .map(i16::from_be_bytes)
            .map(|n| n.to_string()),
        ColumnType::Double => field.try_into().ok().map(f64::from_be_bytes).map(double),
        ColumnType::Boolean => match field {
            [0] => Some("f".into()),
            [_] => Some("t".into()),
            _ => None,
        },
        ColumnType::Uuid => uuid::Uuid::from_slice(field)
            .ok()
            .map(|u| u.hyphenated().to_string()),
        ColumnType::Timestamptz => field
            .try_into()
            .ok()
            .map(i64::from_be_bytes)
            .and_then(timestamptz),
        ColumnType::Date => field.try_into().ok().map(i32::from_be_bytes).and_then(date),
        ColumnType::Jsonb => match field.split_first() {
            Some((&JSONB_VERSION, json)) => std::str::from_utf8(json).ok().map(str::to_string),
            _ => None,
        },
        ColumnType::Bytea => None,
    };
    text.unwrap_or_else(|| hex(field))
}

/// A `bytea` value as Postgres's hex output writes it: `\x` and two digits a byte.
fn hex(bytes: &[u8]) -> String {
    let mut text = String::with_capacity(2 + bytes.len() * 2);
    text.push_str("\\x");
    for byte in bytes {
        let _ = write!(text, "{byte:02x}");
    }
    text
}

/// A `double precision` as Postgres writes it: the shortest text that reads back exactly,
/// with an exponent past 15 digits before the point or 4 zeros after it.
fn double(value: f64) -> String {
    if value.is_nan() {
        return "NaN".into();
    }
    if value.is_infinite() {
        return if value > 0.0 { "Infinity" } else { "-Infinity" }.into();
    }
    let magnitude = value.abs();
    if value == 0.0 || (1e-4..1e15).contains(&magnitude) {
        return value.to_string();
    }
    let scientific = format!("{value:e}");
    let (mantissa, exponent) = scientific.split_once('e').expect("{:e} writes an exponent");
    let (sign, digits) = match exponent.strip_prefix('-') {
        Some(digits) => ('-', digits),
        None => ('+', exponent),
    };
    format!("{mantissa}e{sign}{digits:0>2}")
}

/// A `timestamptz` of microseconds since 2000-01-01 UTC, in UTC.
fn timestamptz(micros: i64) -> Option<String> {
    match micros {
        i64::MAX => return Some("infinity".into()),
        i64::MIN => return Some("-infinity".into()),
        _ => {}
    }
    let time = DateTime::from_timestamp_micros(micros.checked_add(PG_EPOCH_UNIX_MICROS)?)?;
    Some(timestamptz_text(&time))
}

/// A finite `timestamptz` as Postgres writes it in UTC: `2026-05-01 10:00:00.25+00`, a year
/// before 1 as `0044-03-15 01:00:00+00 BC`.
pub fn timestamptz_text(time: &DateTime<Utc>) -> String {
    let mut text = String::with_capacity(32);
    let year = time.year();
    let _ = write!(
        text,
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02}",
        if year > 0 { year } else { 1 - year },
        time.month(),
        time.day(),
        time.hour(),
        time.minute(),
        time.second()
    );
    let fraction = time.timestamp_subsec_micros();
    if fraction > 0 {
        let digits = format!("{fraction:06}");
        text.push('.');
        text.push_str(digits.trim_end_matches('0'));
    }
    text.push_str("+00");
    if year <= 0 {
        text.push_str(" BC");
    }
    text
}

/// A `date` of days since 2000-01-01.
fn date(days: i32) -> Option<String> {
    match days {
        i32::MAX => return Some("infinity".into()),
        i32::MIN => return Some("-infinity".into()),
        _ => {}
    }
    let epoch = NaiveDate::default().checked_add_signed(chrono::Duration::days(PG_EPOCH_UNIX_DAYS))?;
    let day = epoch.checked_add_signed(chrono::Duration::days(i64::from(days)))?;
    Some(day.format("%Y-%m-%d").to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pgtype::text::encode_text;

    /// The text form of what `text` reads as.
    fn round_trip(ty: ColumnType, text: &str) -> String {
        let mut field = Vec::new();
        encode_text(ty, text, &mut field).unwrap();
        output_text(ty, &field)
    }

    #[test]
    fn values_read_from_their_text_form_are_written_back_as_postgres_writes_them() {
        for (ty, input, output) in [
            (ColumnType::Text, "héllo", "héllo"),
            (ColumnType::BigInt, "-9223372036854775808", "-9223372036854775808"),
            (ColumnType::Integer, "42", "42"),
            (ColumnType::SmallInt, "-7", "-7"),
            (ColumnType::Double, "0.1", "0.1"),
            (ColumnType::Double, "1e20", "1e+20"),
            (ColumnType::Double, "0.00001234", "1.234e-05"),
            (ColumnType::Double, "-Infinity", "-Infinity"),
            (ColumnType::Double, "123456789012345", "123456789012345"),
            (ColumnType::Boolean, "yes", "t"),
            (ColumnType::Boolean, "0", "f"),
            (
                ColumnType::Uuid,
                "A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11",
                "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
            ),
            (
                ColumnType::Timestamptz,
                "2026-05-01 12:00:00+02",
                "2026-05-01 10:00:00+00",
            ),
            (
                ColumnType::Timestamptz,
                "2026-05-01 10:00:00.120",
                "2026-05-01 10:00:00.12+00",
            ),
            (ColumnType::Date, "1999-12-31", "1999-12-31"),
        ] {
            assert_eq!(round_trip(ty, input), output, "{ty:?} {input}");
        }
        for (micros_since_unix_epoch, text) in [
            (253_402_300_800_500_000, "10000-01-01 00:00:00.5+00"),
            (-62_004_268_800_000_000, "0005-03-01 00:00:00+00"),
            (-63_517_820_400_000_000, "0044-03-15 01:00:00+00 BC"),
        ] {
            let time = DateTime::from_timestamp_micros(micros_since_unix_epoch).unwrap();
            assert_eq!(timestamptz_text(&time), text);
        }
        for (ty, input, output) in [
            (ColumnType::Jsonb, "{\"a\": [1, 2]}", "{\"a\": [1, 2]}"),
            (ColumnType::Bytea, "\\x00ff10", "\\x00ff10"),
        ] {
            assert_eq!(round_trip(ty, input), output, "{ty:?} {input}");
        }
        for (ty, text) in [
            (ColumnType::Timestamptz, "infinity"),
            (ColumnType::Timestamptz, "-infinity"),
            (ColumnType::Date, "infinity"),
            (ColumnType::Date, "-infinity"),
        ] {
            assert_eq!(round_trip(ty, &text.to_uppercase()), text, "{ty:?}");
        }
        assert_eq!(
            output_text(ColumnType::BigInt, &[1, 2]),
            "\\x0102",
            "not a bigint"
        );
    }
}
