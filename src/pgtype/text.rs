//! Values in Postgres's text form, as `COPY ... FROM` in text or CSV format and SQL literals
//! carry them, converted to the binary COPY bytes of a column type.
//!
//! What Postgres's own input functions accept is accepted here, for the forms clients send
//! (what `COPY ... TO` writes reads back), and what they refuse is refused with the SQLSTATE
//! and the message Postgres gives: `invalid input syntax for type bigint: "x"` is `22P02`, a
//! bad timestamp `22007`, a value out of range `22003`. A timestamp without an offset is read in
//! UTC, the session time zone shardgate announces.

use super::{ColumnType, JSONB_VERSION, PG_EPOCH_UNIX_DAYS};
use chrono::NaiveDate;

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
/// then an optional offset (`Z`, `+HH`, `+HHMM`, `+HH:MM`, `+HH:MM:SS`); without one, UTC. Read
/// digit by digit: this runs once per timestamp of every COPY row.
/// `infinity` and `-infinity` are Postgres's own, as for `date`.
fn timestamptz(text: &str) -> Result<i64, TextInputError> {
    if let Some(micros) = infinity_as(text, i64::MAX, i64::MIN) {
        return Ok(micros);
    }
    parse_timestamptz(text.trim().as_bytes()).ok_or_else(|| syntax(ColumnType::Timestamptz, text))
}

/// `up` for `infinity`, `down` for `-infinity` (in any case), `None` for anything else: how
/// Postgres stores infinite timestamps and dates.
pub(super) fn infinity_as<T>(text: &str, up: T, down: T) -> Option<T> {
    infinite(text).map(|is_up| if is_up { up } else { down })
}

/// Whether `text` is `infinity` (true) or `-infinity` (false), in any case; `None` otherwise.
fn infinite(text: &str) -> Option<bool> {
    let text = text.trim();
    if text.eq_ignore_ascii_case("infinity") || text.eq_ignore_ascii_case("+infinity") {
        Some(true)
    } else if text.eq_ignore_ascii_case("-infinity") {
        Some(false)
    } else {
        None
    }
}

fn parse_timestamptz(bytes: &[u8]) -> Option<i64> {
    let mut at = Cursor { bytes, at: 0 };
    let (year, month, day) = (
        at.digits(4)?,
        at.after(b'-')?.digits(2)?,
        at.after(b'-')?.digits(2)?,
    );
    let date = NaiveDate::from_ymd_opt(year as i32, month as u32, day as u32)?;
    let mut micros_of_day = 0;
    if at.peek().is_some_and(|b| matches!(b, b' ' | b'T' | b't')) {
        at.at += 1;
        let (hour, minute) = (at.digits(2)?, at.after(b':')?.digits(2)?);
        let mut second = 0;
        let mut fraction = 0;
        if at.peek() == Some(b':') {
            second = at.after(b':')?.digits(2)?;
            if at.peek() == Some(b'.') {
                at.at += 1;
                fraction = at.fraction_micros()?;
            }
        }
        if hour > 24 || minute > 59 || second > 60 || (hour == 24 && minute + second + fraction > 0) {
            return None;
        }
        micros_of_day = ((hour * 60 + minute) * 60 + second) * 1_000_000 + fraction;
    }
    while at.peek() == Some(b' ') {
        at.at += 1;
    }
    let offset_seconds = at.offset()?;
    if at.at != bytes.len() {
        return None;
    }
    let days = date.signed_duration_since(NaiveDate::default()).num_days() - PG_EPOCH_UNIX_DAYS;
    Some(days * 86_400_000_000 + micros_of_day - offset_seconds * 1_000_000)
}

/// A position in a timestamp's text.
struct Cursor<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Cursor<'_> {
    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.at).copied()
    }

    /// Exactly `count` digits, as a number.
    fn digits(&mut self, count: usize) -> Option<i64> {
        let digits = self.bytes.get(self.at..self.at + count)?;
        let mut value = 0;
        for &digit in digits {
            if !digit.is_ascii_digit() {
                return None;
            }
            value = value * 10 + i64::from(digit - b'0');
        }
        self.at += count;
        Some(value)
    }

    /// Steps over `separator`.
    fn after(&mut self, separator: u8) -> Option<&mut Self> {
        (self.peek()? == separator).then(|| {
            self.at += 1;
            self
        })
    }

    /// Up to six digits of a fraction of a second, in microseconds; further digits round, as
    /// Postgres rounds them.
    fn fraction_micros(&mut self) -> Option<i64> {
        let start = self.at;
        while self.peek().is_some_and(|b| b.is_ascii_digit()) {
            self.at += 1;
        }
        let digits = &self.bytes[start..self.at];
        if digits.is_empty() {
            return None;
        }
        let mut micros = 0;
        for i in 0..6 {
            micros = micros * 10 + digits.get(i).map_or(0, |d| i64::from(d - b'0'));
        }
        if digits.get(6).is_some_and(|d| *d >= b'5') {
            micros += 1;
        }
        Some(micros)
    }

    /// A UTC offset in seconds east: none (0), `Z`, or a sign and `HH[[:]MM[[:]SS]]`.
    fn offset(&mut self) -> Option<i64> {
        let sign = match self.peek() {
            None => return Some(0),
            Some(b'Z' | b'z') => {
                self.at += 1;
                return Some(0);
            }
            Some(b'+') => 1,
            Some(b'-') => -1,
            Some(_) => return None,
        };
        self.at += 1;
        let hours = self.digits(2)?;
        let mut rest = [0, 0];
        for part in &mut rest {
            if self.peek() == Some(b':') {
                self.at += 1;
            }
            match self.digits(2) {
                Some(value) => *part = value,
                None => break,
            }
        }
        let [minutes, seconds] = rest;
        if hours > 15 || minutes > 59 || seconds > 59 {
            return None;
        }
        Some(sign * (hours * 3600 + minutes * 60 + seconds))
    }
}

/// Days since 2000-01-01 of a `YYYY-MM-DD` date.
fn date(text: &str) -> Result<i32, TextInputError> {
    if let Some(days) = infinity_as(text, i32::MAX, i32::MIN) {
        return Ok(days);
    }
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
