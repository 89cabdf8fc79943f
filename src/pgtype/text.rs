//! Values in Postgres's text form, as `COPY ... FROM` in text or CSV format and SQL literals
//! carry them, converted to the binary COPY bytes of a column type.
//!
//! What Postgres's own input functions accept is accepted here, for the forms clients send
//! (what `COPY ... TO` writes reads back), and what they refuse is refused with the SQLSTATE
//! and the message Postgres gives: `invalid input syntax for type bigint: "x"` is `22P02`, a
//! bad timestamp `22007`, a value out of range `22003`. A timestamp without an offset is read in
//! UTC, the session time zone shardgate announces.

use super::{ColumnType, JSONB_VERSION, PG_EPOCH_UNIX_DAYS, PG_EPOCH_UNIX_MICROS};
use chrono::{NaiveDate, NaiveDateTime, NaiveTime};

/// A value Postgres would refuse, with the SQLSTATE and message it would give.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct TextInputError {
    /// The SQLSTATE Postgres gives this refusal.
    pub sqlstate: &'static str,
    /// Postgres's wording.
    pub message: String,
}

use super::sqlstate::{
    CHARACTER_NOT_IN_REPERTOIRE as NUL_IN_TEXT, DATETIME_FIELD_OVERFLOW,
    INVALID_DATETIME_FORMAT as INVALID_DATETIME, INVALID_TEXT_REPRESENTATION as INVALID_TEXT,
    NUMERIC_VALUE_OUT_OF_RANGE as OUT_OF_RANGE, UNTRANSLATABLE_CHARACTER,
};

/// Appends the binary COPY bytes of `text`, read as Postgres reads a `ty` value in text form.
pub fn encode_text(ty: ColumnType, text: &str, out: &mut Vec<u8>) -> Result<(), TextInputError> {
    match ty {
        ColumnType::Text => {
            if text.contains('\0') {
                return Err(error(
                    NUL_IN_TEXT,
                    "invalid byte sequence for encoding \"UTF8\": 0x00".into(),
                ));
            }
            out.extend_from_slice(text.as_bytes());
        }
        ColumnType::BigInt => out.extend_from_slice(&integer::<i64>(ty, text)?.to_be_bytes()),
        ColumnType::Integer => out.extend_from_slice(&integer::<i32>(ty, text)?.to_be_bytes()),
        ColumnType::SmallInt => out.extend_from_slice(&integer::<i16>(ty, text)?.to_be_bytes()),
        ColumnType::Double => out.extend_from_slice(&double(text)?.to_be_bytes()),
        ColumnType::Boolean => out.push(u8::from(boolean(text)?)),
        ColumnType::Uuid => {
            let trimmed = text.trim();
            let bare = trimmed
                .strip_prefix('{')
                .and_then(|inner| inner.strip_suffix('}'))
                .unwrap_or(trimmed);
            let uuid = uuid::Uuid::try_parse(bare).map_err(|_| syntax(ty, text))?;
            out.extend_from_slice(uuid.as_bytes());
        }
        ColumnType::Timestamptz => out.extend_from_slice(&timestamptz(text)?.to_be_bytes()),
        ColumnType::Date => out.extend_from_slice(&date(text)?.to_be_bytes()),
        ColumnType::Jsonb => {
            if serde_json::from_str::<&serde_json::value::RawValue>(text).is_err() {
                return Err(error(INVALID_TEXT, "invalid input syntax for type json".into()));
            }
            if text.contains("\\u0000") {
                return Err(error(
                    UNTRANSLATABLE_CHARACTER,
                    "unsupported Unicode escape sequence".into(),
                ));
            }
            out.push(JSONB_VERSION);
            out.extend_from_slice(text.as_bytes());
        }
        ColumnType::Bytea => bytea(text, out)?,
    }
    Ok(())
}

fn error(sqlstate: &'static str, message: String) -> TextInputError {
    TextInputError { sqlstate, message }
}

/// `invalid input syntax for type T: "text"`, as Postgres words it.
fn syntax(ty: ColumnType, text: &str) -> TextInputError {
    let sqlstate = match ty {
        ColumnType::Timestamptz | ColumnType::Date => INVALID_DATETIME,
        _ => INVALID_TEXT,
    };
    error(
        sqlstate,
        format!("invalid input syntax for type {}: \"{text}\"", ty.sql_name()),
    )
}

fn integer<T: std::str::FromStr + TryFrom<i128>>(ty: ColumnType, text: &str) -> Result<T, TextInputError> {
    let trimmed = text.trim();
    let digits = trimmed.strip_prefix(['+', '-']).unwrap_or(trimmed);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(syntax(ty, text));
    }
    let out_of_range = || {
        error(
            OUT_OF_RANGE,
            format!("value \"{text}\" is out of range for type {}", ty.sql_name()),
        )
    };
    let wide: i128 = trimmed.parse().map_err(|_| out_of_range())?;
    T::try_from(wide).map_err(|_| out_of_range())
}

fn double(text: &str) -> Result<f64, TextInputError> {
    let trimmed = text.trim();
    let value: f64 = trimmed.parse().map_err(|_| syntax(ColumnType::Double, text))?;
    if value.is_infinite() && !trimmed.to_ascii_lowercase().contains("inf") {
        return Err(error(
            OUT_OF_RANGE,
            format!("\"{text}\" is out of range for type double precision"),
        ));
    }
    Ok(value)
}

fn boolean(text: &str) -> Result<bool, TextInputError> {
    match text.trim().to_ascii_lowercase().as_str() {
        "t" | "tr" | "tru" | "true" | "y" | "ye" | "yes" | "on" | "1" => Ok(true),
        "f" | "fa" | "fal" | "fals" | "false" | "n" | "no" | "of" | "off" | "0" => Ok(false),
        _ => Err(syntax(ColumnType::Boolean, text)),
    }
}

/// Microseconds since 2000-01-01 UTC of an ISO 8601 timestamp: `YYYY-MM-DD[( |T)HH:MM[:SS[.f]]]`
/// then an optional offset (`Z`, `+HH`, `+HHMM`, `+HH:MM`); without one, UTC.
fn timestamptz(text: &str) -> Result<i64, TextInputError> {
    let bad = || syntax(ColumnType::Timestamptz, text);
    let trimmed = text.trim();
    let (local, offset_seconds) = split_offset(trimmed).ok_or_else(bad)?;
    let local = local.trim_end();
    let naive = if local.len() == 10 {
        NaiveDate::parse_from_str(local, "%Y-%m-%d")
            .map(|date| date.and_time(NaiveTime::MIN))
            .map_err(|_| bad())?
    } else {
        let (date, time) = local.split_at_checked(10).ok_or_else(bad)?;
        let time = time.strip_prefix([' ', 'T', 't']).ok_or_else(bad)?;
        let date = NaiveDate::parse_from_str(date, "%Y-%m-%d").map_err(|_| bad())?;
        let time = NaiveTime::parse_from_str(time, "%H:%M:%S%.f")
            .or_else(|_| NaiveTime::parse_from_str(time, "%H:%M"))
            .map_err(|_| bad())?;
        NaiveDateTime::new(date, time)
    };
    let unix_micros = naive.and_utc().timestamp_micros() - offset_seconds * 1_000_000;
    Ok(unix_micros - PG_EPOCH_UNIX_MICROS)
}

/// The text before a trailing UTC offset and the offset in seconds east (0 without one).
fn split_offset(text: &str) -> Option<(&str, i64)> {
    if let Some(local) = text.strip_suffix(['Z', 'z']) {
        return Some((local, 0));
    }
    // An offset starts after the time of day: past the date's own dashes.
    let Some(sign_at) = text.get(10..)?.rfind(['+', '-']).map(|i| i + 10) else {
        return Some((text, 0));
    };
    let (local, offset) = text.split_at(sign_at);
    let sign = if offset.starts_with('-') { -1 } else { 1 };
    let digits: String = offset[1..].chars().filter(|c| *c != ':').collect();
    if digits.is_empty() || digits.len() > 6 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let padded = format!("{digits:0<6}");
    let part = |range: std::ops::Range<usize>| padded[range].parse::<i64>().ok();
    let (hours, minutes, seconds) = (part(0..2)?, part(2..4)?, part(4..6)?);
    if digits.len() % 2 == 1 || hours > 15 || minutes > 59 || seconds > 59 {
        return None;
    }
    Some((local, sign * (hours * 3600 + minutes * 60 + seconds)))
}

/// Days since 2000-01-01 of a `YYYY-MM-DD` date.
fn date(text: &str) -> Result<i32, TextInputError> {
    let date =
        NaiveDate::parse_from_str(text.trim(), "%Y-%m-%d").map_err(|_| syntax(ColumnType::Date, text))?;
    let days = date.signed_duration_since(NaiveDate::default()).num_days() - PG_EPOCH_UNIX_DAYS;
    i32::try_from(days).map_err(|_| error(DATETIME_FIELD_OVERFLOW, format!("date out of range: \"{text}\"")))
}

/// A `bytea` in the hex format (`\x0102`) or the escape format (`a\000b`, `\\`).
fn bytea(text: &str, out: &mut Vec<u8>) -> Result<(), TextInputError> {
    let bad = || error(INVALID_TEXT, "invalid input syntax for type bytea".into());
    if let Some(hex) = text.strip_prefix("\\x") {
        let digits: Vec<u8> = hex.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
        if digits.len() % 2 == 1 {
            return Err(error(
                INVALID_TEXT,
                "invalid hexadecimal data: odd number of digits".into(),
            ));
        }
        for pair in digits.chunks(2) {
            let pair = std::str::from_utf8(pair).map_err(|_| bad())?;
            let byte = u8::from_str_radix(pair, 16)
                .map_err(|_| error(INVALID_TEXT, format!("invalid hexadecimal digit: \"{pair}\"")))?;
            out.push(byte);
        }
        return Ok(());
    }
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' if bytes.get(i + 1) == Some(&b'\\') => {
                out.push(b'\\');
                i += 2;
            }
            b'\\' => {
                let octal = bytes.get(i + 1..i + 4).ok_or_else(bad)?;
                let octal = std::str::from_utf8(octal).map_err(|_| bad())?;
                out.push(u8::from_str_radix(octal, 8).map_err(|_| bad())?);
                i += 4;
            }
            byte => {
                out.push(byte);
                i += 1;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
