//! Values crossing the query path: parameters bound to shard statements, and result cells read
//! from shard rows, compared as Postgres compares them and written out as JSON.

use crate::schema::{ColumnType, JsonScalar, encode_jsonb, encode_scalar};
use base64::Engine;
use bytes::BytesMut;
use chrono::{DateTime, NaiveDate, SecondsFormat, Utc};
use std::cmp::Ordering;
use tokio_postgres::Row;
use tokio_postgres::types::{Date, IsNull, Kind, Timestamp, ToSql, Type, to_sql_checked};

/// A JSON parameter, sent in the binary form of whatever type Postgres infers for it.
#[derive(Debug, Clone)]
pub struct JsonParam(pub serde_json::Value);

fn column_type_of(ty: &Type) -> Option<ColumnType> {
    Some(match *ty {
        Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME => ColumnType::Text,
        Type::INT8 => ColumnType::BigInt,
        Type::INT4 => ColumnType::Integer,
        Type::INT2 => ColumnType::SmallInt,
        Type::FLOAT8 => ColumnType::Double,
        Type::BOOL => ColumnType::Boolean,
        Type::UUID => ColumnType::Uuid,
        Type::TIMESTAMPTZ => ColumnType::Timestamptz,
        Type::DATE => ColumnType::Date,
        Type::JSONB => ColumnType::Jsonb,
        Type::BYTEA => ColumnType::Bytea,
        _ => return None,
    })
}

type EncodeResult<T> = Result<T, Box<dyn std::error::Error + Sync + Send>>;

/// Appends the binary form of a non-null JSON `value` as a `column_type` value.
fn encode_json(column_type: ColumnType, value: &serde_json::Value, out: &mut Vec<u8>) -> EncodeResult<()> {
    if column_type == ColumnType::Jsonb {
        encode_jsonb(&value.to_string(), out)?;
        return Ok(());
    }
    let scalar =
        JsonScalar::from_json(value).ok_or_else(|| format!("a {column_type} parameter cannot be {value}"))?;
    encode_scalar(column_type, scalar, out)?;
    Ok(())
}

/// Appends a one-dimensional array of `element` values (Postgres's binary array form) from a
/// JSON array; JSON nulls are NULL elements.
fn encode_json_array(element: &Type, values: &[serde_json::Value], out: &mut Vec<u8>) -> EncodeResult<()> {
    let column_type =
        column_type_of(element).ok_or_else(|| format!("arrays of {element} are not supported"))?;
    let has_null = values.iter().any(serde_json::Value::is_null);
    out.extend_from_slice(&1i32.to_be_bytes());
    out.extend_from_slice(&i32::from(has_null).to_be_bytes());
    out.extend_from_slice(&element.oid().to_be_bytes());
    out.extend_from_slice(&i32::try_from(values.len())?.to_be_bytes());
    out.extend_from_slice(&1i32.to_be_bytes());
    let mut item = Vec::new();
    for value in values {
        if value.is_null() {
            out.extend_from_slice(&(-1i32).to_be_bytes());
            continue;
        }
        item.clear();
        encode_json(column_type, value, &mut item)?;
        out.extend_from_slice(&i32::try_from(item.len())?.to_be_bytes());
        out.extend_from_slice(&item);
    }
    Ok(())
}

impl ToSql for JsonParam {
    fn to_sql(&self, ty: &Type, out: &mut BytesMut) -> EncodeResult<IsNull> {
        let mut bytes = Vec::new();
        match (&self.0, ty.kind()) {
            (serde_json::Value::Null, _) => return Ok(IsNull::Yes),
            (serde_json::Value::Array(values), Kind::Array(element)) => {
                encode_json_array(element, values, &mut bytes)?
            }
            (_, Kind::Array(element)) => {
                return Err(format!("a {element}[] parameter must be a JSON array").into());
            }
            (value, _) => {
                let column_type =
                    column_type_of(ty).ok_or_else(|| format!("parameters of type {ty} are not supported"))?;
                encode_json(column_type, value, &mut bytes)?
            }
        }
        out.extend_from_slice(&bytes);
        Ok(IsNull::No)
    }

    fn accepts(ty: &Type) -> bool {
        match ty.kind() {
            Kind::Array(element) => column_type_of(element).is_some(),
            _ => column_type_of(ty).is_some(),
        }
    }

    to_sql_checked!();
}

/// The type of a result column: a declared column type, or `numeric` (a sum of bigint, an
/// average of integers).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResultType {
    /// A type columns can have.
    Column(ColumnType),
    /// Postgres `numeric`.
    Numeric,
}

impl ResultType {
    /// The result type of a column a statement describes, when shardgate can return it.
    pub fn of(ty: &Type) -> Option<ResultType> {
        match *ty {
            Type::NUMERIC => Some(ResultType::Numeric),
            _ => column_type_of(ty).map(ResultType::Column),
        }
    }

    /// Whether values of this type are integers.
    pub fn is_integer(self) -> bool {
        matches!(self, ResultType::Column(ty) if ty.is_integer())
    }

    /// The type's name as Postgres prints it.
    pub fn sql_name(self) -> &'static str {
        match self {
            ResultType::Column(ty) => ty.sql_name(),
            ResultType::Numeric => "numeric",
        }
    }
}

impl std::fmt::Display for ResultType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.sql_name())
    }
}

/// Postgres's minimum significant digits of a numeric quotient (`NUMERIC_MIN_SIG_DIGITS`).
const NUMERIC_MIN_SIG_DIGITS: i64 = 16;

/// An exact decimal `unscaled × 10^-scale`, for numeric results.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decimal {
    /// The digits as one integer.
    pub unscaled: i128,
    /// Digits after the decimal point.
    pub scale: u32,
}

impl Decimal {
    /// An integer.
    pub fn integer(value: i128) -> Decimal {
        Decimal {
            unscaled: value,
            scale: 0,
        }
    }

    /// `self + other` at the larger of the two scales, as Postgres adds numerics.
    pub fn checked_add(self, other: Decimal) -> Option<Decimal> {
        let scale = self.scale.max(other.scale);
        Some(Decimal {
            unscaled: self.at_scale(scale)?.checked_add(other.at_scale(scale)?)?,
            scale,
        })
    }

    /// The unscaled digits at `scale` (at least the decimal's own), when they fit.
    fn at_scale(self, scale: u32) -> Option<i128> {
        self.unscaled.checked_mul(10i128.checked_pow(scale - self.scale)?)
    }

    /// `sum / count` as Postgres's `numeric` division gives it (the scale of `select_div_scale`,
    /// rounded half away from zero), for a positive count.
    pub fn average(sum: Decimal, count: i128) -> Option<Decimal> {
        let (w1, d1) = base_10000_head(sum.unscaled.unsigned_abs(), sum.scale)?;
        let (w2, d2) = base_10000_head(count.unsigned_abs(), 0)?;
        let mut quotient_weight = w1 - w2;
        if d1 <= d2 {
            quotient_weight -= 1;
        }
        let scale = (NUMERIC_MIN_SIG_DIGITS - quotient_weight * 4)
            .max(i64::from(sum.scale))
            .clamp(0, 1000) as u32;
        let shift = 10u128.checked_pow(scale - sum.scale)?;
        let scaled = sum.unscaled.unsigned_abs().checked_mul(shift)?;
        let divisor = count.unsigned_abs();
        let rounded = scaled.checked_mul(2)?.checked_add(divisor)? / divisor.checked_mul(2)?;
        let unscaled = i128::try_from(rounded).ok()?;
        let negative = (sum.unscaled < 0) != (count < 0);
        Some(Decimal {
            unscaled: if negative { -unscaled } else { unscaled },
            scale,
        })
    }

    /// The same value with no trailing zeros after the point.
    pub fn normalized(mut self) -> Decimal {
        while self.scale > 0 && self.unscaled % 10 == 0 {
            self.unscaled /= 10;
            self.scale -= 1;
        }
        self
    }

    /// Orders two decimals by value.
    pub fn compare(&self, other: &Decimal) -> Ordering {
        let scale = self.scale.max(other.scale);
        match (self.at_scale(scale), other.at_scale(scale)) {
            (Some(a), Some(b)) => a.cmp(&b),
            _ => self.to_f64().total_cmp(&other.to_f64()),
        }
    }

    /// The nearest float.
    pub fn to_f64(self) -> f64 {
        self.unscaled as f64 / 10f64.powi(self.scale as i32)
    }
}

/// Weight (position of the leading base-10000 digit, 0 for units, negative after the point)
/// and leading digit of `value × 10^-scale`, as Postgres stores numerics; `(0, 0)` for 0.
fn base_10000_head(value: u128, scale: u32) -> Option<(i64, u128)> {
    if value == 0 {
        return Some((0, 0));
    }
    // Pad the fraction to whole base-10000 digits, as Postgres aligns them to the point.
    let padding = (4 - scale % 4) % 4;
    let fraction_digits = i64::from((scale + padding) / 4);
    let mut value = value.checked_mul(10u128.pow(padding))?;
    let mut weight = 0;
    while value >= 10_000 {
        value /= 10_000;
        weight += 1;
    }
    Some((weight - fraction_digits, value))
}

impl std::fmt::Display for Decimal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let digits = self.unscaled.unsigned_abs().to_string();
        let scale = self.scale as usize;
        let sign = if self.unscaled < 0 { "-" } else { "" };
        if scale == 0 {
            return write!(f, "{sign}{digits}");
        }
        let padded = format!("{digits:0>width$}", width = scale + 1);
        let (whole, fraction) = padded.split_at(padded.len() - scale);
        write!(f, "{sign}{whole}.{fraction}")
    }
}

impl Decimal {
    /// The value in Postgres's binary `numeric` form, as `numeric_send` writes it: the count of
    /// base-10000 digits (zero digits at either end left out), the weight of the first, the
    /// sign, the display scale, then the digits.
    pub fn to_binary(self) -> Vec<u8> {
        let scale = self.scale as usize;
        let digits = self.unscaled.unsigned_abs().to_string();
        let padded = format!("{digits:0>width$}", width = scale + 1);
        let (whole, fraction) = padded.split_at(padded.len() - scale);
        let lead = (4 - whole.len() % 4) % 4;
        let trail = (4 - fraction.len() % 4) % 4;
        let aligned = format!("{}{whole}{fraction}{}", "0".repeat(lead), "0".repeat(trail));
        let groups: Vec<u16> = aligned
            .as_bytes()
            .chunks(4)
            .map(|chunk| chunk.iter().fold(0u16, |n, d| n * 10 + u16::from(d - b'0')))
            .collect();
        let mut weight = ((lead + whole.len()) / 4) as i16 - 1;
        let first = groups.iter().position(|&g| g != 0);
        let last = groups.iter().rposition(|&g| g != 0);
        let kept = match (first, last) {
            (Some(first), Some(last)) => {
                weight -= first as i16;
                &groups[first..=last]
            }
            _ => {
                weight = 0;
                &[][..]
            }
        };
        let sign: u16 = if self.unscaled < 0 { 0x4000 } else { 0 };
        let mut out = Vec::with_capacity(8 + 2 * kept.len());
        out.extend_from_slice(&(kept.len() as u16).to_be_bytes());
        out.extend_from_slice(&weight.to_be_bytes());
        out.extend_from_slice(&sign.to_be_bytes());
        out.extend_from_slice(&(self.scale as u16).to_be_bytes());
        for digit in kept {
            out.extend_from_slice(&digit.to_be_bytes());
        }
        out
    }
}

impl<'a> tokio_postgres::types::FromSql<'a> for Decimal {
    fn from_sql(_: &Type, raw: &'a [u8]) -> Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        let word = |i: usize| -> Result<u16, String> {
            raw.get(i * 2..i * 2 + 2)
                .map(|b| u16::from_be_bytes([b[0], b[1]]))
                .ok_or_else(|| "truncated numeric".to_string())
        };
        let (ndigits, weight, sign, dscale) = (word(0)?, word(1)? as i16, word(2)?, word(3)?);
        if sign == 0xC000 {
            return Err("NaN numerics are not supported".into());
        }
        let mut unscaled: i128 = 0;
        for i in 0..ndigits as usize {
            let digit = i128::from(word(4 + i)?);
            let exponent = 4 * (i64::from(weight) - i as i64) + i64::from(dscale);
            let term = if exponent >= 0 {
                10i128
                    .checked_pow(exponent as u32)
                    .and_then(|p| digit.checked_mul(p))
            } else {
                Some(digit / 10i128.pow((-exponent) as u32))
            };
            unscaled = term
                .and_then(|t| unscaled.checked_add(t))
                .ok_or("numeric out of range")?;
        }
        let unscaled = if sign == 0x4000 { -unscaled } else { unscaled };
        Ok(Decimal {
            unscaled,
            scale: u32::from(dscale),
        })
    }

    fn accepts(ty: &Type) -> bool {
        *ty == Type::NUMERIC
    }
}

/// A timestamp's place in Postgres's order: `-infinity` before every value, `infinity` after.
fn timestamp_rank(t: &Timestamp<DateTime<Utc>>) -> (u8, Option<&DateTime<Utc>>) {
    match t {
        Timestamp::NegInfinity => (0, None),
        Timestamp::Value(t) => (1, Some(t)),
        Timestamp::PosInfinity => (2, None),
    }
}

/// A date's place in Postgres's order, as [`timestamp_rank`].
fn date_rank(d: &Date<NaiveDate>) -> (u8, Option<&NaiveDate>) {
    match d {
        Date::NegInfinity => (0, None),
        Date::Value(d) => (1, Some(d)),
        Date::PosInfinity => (2, None),
    }
}

/// One result value.
#[derive(Debug, Clone, PartialEq)]
pub enum Cell {
    /// SQL NULL.
    Null,
    /// Any integer type.
    Int(i64),
    /// `double precision`.
    Float(f64),
    /// `boolean`.
    Bool(bool),
    /// `text`.
    Text(String),
    /// `uuid`.
    Uuid(uuid::Uuid),
    /// `timestamptz`, `infinity` and `-infinity` included.
    Timestamp(Timestamp<DateTime<Utc>>),
    /// `date`, `infinity` and `-infinity` included.
    Date(Date<NaiveDate>),
    /// `jsonb`.
    Json(serde_json::Value),
    /// `bytea`.
    Bytes(Vec<u8>),
    /// `numeric`.
    Numeric(Decimal),
}

impl Cell {
    /// Reads column `index` of `row`, of type `ty`.
    pub fn read(row: &Row, index: usize, ty: ResultType) -> Result<Cell, tokio_postgres::Error> {
        match ty {
            ResultType::Column(ty) => Cell::read_column(row, index, ty),
            ResultType::Numeric => Ok(row
                .try_get::<_, Option<Decimal>>(index)?
                .map_or(Cell::Null, Cell::Numeric)),
        }
    }

    fn read_column(row: &Row, index: usize, ty: ColumnType) -> Result<Cell, tokio_postgres::Error> {
        fn get<'a, T: tokio_postgres::types::FromSql<'a>>(
            row: &'a Row,
            index: usize,
            wrap: impl Fn(T) -> Cell,
        ) -> Result<Cell, tokio_postgres::Error> {
            Ok(row.try_get::<_, Option<T>>(index)?.map_or(Cell::Null, wrap))
        }
        match ty {
            ColumnType::Text => get(row, index, Cell::Text),
            ColumnType::BigInt => get(row, index, Cell::Int),
            ColumnType::Integer => get(row, index, |v: i32| Cell::Int(v.into())),
            ColumnType::SmallInt => get(row, index, |v: i16| Cell::Int(v.into())),
            ColumnType::Double => get(row, index, Cell::Float),
            ColumnType::Boolean => get(row, index, Cell::Bool),
            ColumnType::Uuid => get(row, index, Cell::Uuid),
            ColumnType::Timestamptz => get(row, index, Cell::Timestamp),
            ColumnType::Date => get(row, index, Cell::Date),
            ColumnType::Jsonb => get(row, index, Cell::Json),
            ColumnType::Bytea => get(row, index, Cell::Bytes),
        }
    }

    /// A value of column type `ty` in Postgres's binary format (as a COPY field holds it);
    /// `None` is NULL.
    pub fn from_binary(ty: ColumnType, raw: Option<&[u8]>) -> Result<Cell, String> {
        use tokio_postgres::types::{FromSql, Type};
        fn decode<'a, T: FromSql<'a>>(
            ty: &Type,
            raw: &'a [u8],
            wrap: impl Fn(T) -> Cell,
        ) -> Result<Cell, String> {
            T::from_sql(ty, raw).map(wrap).map_err(|e| e.to_string())
        }
        let Some(raw) = raw else {
            return Ok(Cell::Null);
        };
        match ty {
            ColumnType::Text => decode(&Type::TEXT, raw, Cell::Text),
            ColumnType::BigInt => decode(&Type::INT8, raw, Cell::Int),
            ColumnType::Integer => decode(&Type::INT4, raw, |v: i32| Cell::Int(v.into())),
            ColumnType::SmallInt => decode(&Type::INT2, raw, |v: i16| Cell::Int(v.into())),
            ColumnType::Double => decode(&Type::FLOAT8, raw, Cell::Float),
            ColumnType::Boolean => decode(&Type::BOOL, raw, Cell::Bool),
            ColumnType::Uuid => decode(&Type::UUID, raw, Cell::Uuid),
            ColumnType::Timestamptz => decode(&Type::TIMESTAMPTZ, raw, Cell::Timestamp),
            ColumnType::Date => decode(&Type::DATE, raw, Cell::Date),
            ColumnType::Jsonb => decode(&Type::JSONB, raw, Cell::Json),
            ColumnType::Bytea => decode(&Type::BYTEA, raw, Cell::Bytes),
        }
    }

    /// The cell as JSON: numbers, strings (RFC 3339 timestamps, base64 bytes), JSON as is.
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::Value as J;
        match self {
            Cell::Null => J::Null,
            Cell::Int(n) => J::from(*n),
            Cell::Float(x) if x.is_finite() => J::from(*x),
            Cell::Float(x) => J::String(if x.is_nan() {
                "NaN".into()
            } else if *x > 0.0 {
                "Infinity".into()
            } else {
                "-Infinity".into()
            }),
            Cell::Bool(b) => J::Bool(*b),
            Cell::Text(s) => J::String(s.clone()),
            Cell::Uuid(u) => J::String(u.to_string()),
            Cell::Timestamp(Timestamp::Value(t)) => J::String(t.to_rfc3339_opts(SecondsFormat::AutoSi, true)),
            Cell::Date(Date::Value(d)) => J::String(d.to_string()),
            Cell::Timestamp(Timestamp::PosInfinity) | Cell::Date(Date::PosInfinity) => J::from("infinity"),
            Cell::Timestamp(Timestamp::NegInfinity) | Cell::Date(Date::NegInfinity) => J::from("-infinity"),
            Cell::Json(v) => v.clone(),
            Cell::Bytes(b) => J::String(base64::engine::general_purpose::STANDARD.encode(b)),
            Cell::Numeric(d) => J::String(d.to_string()),
        }
    }

    /// Postgres's order for two non-NULL values of one column type (text in byte order, as
    /// under the C collation; NaN above every other float).
    fn compare_values(&self, other: &Cell) -> Ordering {
        match (self, other) {
            (Cell::Int(a), Cell::Int(b)) => a.cmp(b),
            (Cell::Float(a), Cell::Float(b)) => {
                a.partial_cmp(b).unwrap_or_else(|| a.is_nan().cmp(&b.is_nan()))
            }
            (Cell::Bool(a), Cell::Bool(b)) => a.cmp(b),
            (Cell::Text(a), Cell::Text(b)) => a.as_bytes().cmp(b.as_bytes()),
            (Cell::Uuid(a), Cell::Uuid(b)) => a.cmp(b),
            (Cell::Timestamp(a), Cell::Timestamp(b)) => timestamp_rank(a).cmp(&timestamp_rank(b)),
            (Cell::Date(a), Cell::Date(b)) => date_rank(a).cmp(&date_rank(b)),
            (Cell::Bytes(a), Cell::Bytes(b)) => a.cmp(b),
            (Cell::Numeric(a), Cell::Numeric(b)) => a.compare(b),
            _ => Ordering::Equal,
        }
    }

    /// Order under one ORDER BY key: direction and NULL placement applied.
    pub fn compare(&self, other: &Cell, descending: bool, nulls_first: bool) -> Ordering {
        match (self, other) {
            (Cell::Null, Cell::Null) => Ordering::Equal,
            (Cell::Null, _) => {
                if nulls_first {
                    Ordering::Less
                } else {
                    Ordering::Greater
                }
            }
            (_, Cell::Null) => {
                if nulls_first {
                    Ordering::Greater
                } else {
                    Ordering::Less
                }
            }
            _ if descending => other.compare_values(self),
            _ => self.compare_values(other),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numerics_are_written_in_postgres_binary_form() {
        use tokio_postgres::types::FromSql;
        let cases = [
            (
                Decimal {
                    unscaled: 5,
                    scale: 1,
                },
                vec![1u16, 0xFFFF, 0, 1, 5000],
            ),
            (
                Decimal {
                    unscaled: 0,
                    scale: 2,
                },
                vec![0, 0, 0, 2],
            ),
            (
                Decimal {
                    unscaled: -123_456_789,
                    scale: 0,
                },
                vec![3, 2, 0x4000, 0, 1, 2345, 6789],
            ),
            (
                Decimal {
                    unscaled: 100_000_000,
                    scale: 4,
                },
                vec![1, 1, 0, 4, 1],
            ),
            (
                Decimal {
                    unscaled: 12,
                    scale: 6,
                },
                vec![1, 0xFFFE, 0, 6, 1200],
            ),
        ];
        for (decimal, words) in cases {
            let binary = decimal.to_binary();
            let expected: Vec<u8> = words.iter().flat_map(|w| w.to_be_bytes()).collect();
            assert_eq!(binary, expected, "{decimal}");
            assert_eq!(Decimal::from_sql(&Type::NUMERIC, &binary).unwrap(), decimal);
        }
    }

    #[test]
    fn ordering_follows_postgres_for_nulls_nan_and_bytes() {
        let nan = Cell::Float(f64::NAN);
        let one = Cell::Float(1.0);
        assert_eq!(
            nan.compare(&one, false, false),
            Ordering::Greater,
            "NaN sorts above numbers"
        );
        assert_eq!(
            Cell::Null.compare(&one, false, false),
            Ordering::Greater,
            "ASC: NULLS LAST"
        );
        assert_eq!(
            Cell::Null.compare(&one, true, true),
            Ordering::Less,
            "DESC: NULLS FIRST"
        );
        assert_eq!(Cell::Int(2).compare(&Cell::Int(3), true, true), Ordering::Greater);
        let (upper, lower) = (Cell::Text("Z".into()), Cell::Text("a".into()));
        assert_eq!(
            upper.compare(&lower, false, false),
            Ordering::Less,
            "C collation: bytes"
        );
    }

    #[test]
    fn averages_take_postgres_numeric_scale_and_rounding() {
        // Expected strings are what PostgreSQL 15 prints for avg() over the same inputs.
        // Sums are (unscaled, scale): 15 and 2 is 0.15.
        let cases = [
            ((3, 0), 2, "1.5000000000000000"),
            ((2, 0), 3, "0.66666666666666666667"),
            ((0, 0), 5, "0.00000000000000000000"),
            ((-7, 0), 2, "-3.5000000000000000"),
            ((123_456_789_012, 0), 3, "41152263004.00000000"),
            ((10_000, 0), 1, "10000.0000000000000000"),
            ((15, 2), 2, "0.07500000000000000000"),
            ((6875, 3), 3, "2.2916666666666667"),
            ((123_456_788, 4), 2, "6172.8394000000000000"),
            ((7, 6), 3, "0.000002333333333333333333"),
            ((700, 2), 3, "2.3333333333333333"),
        ];
        for ((unscaled, scale), count, want) in cases {
            let sum = Decimal { unscaled, scale };
            assert_eq!(
                Decimal::average(sum, count).unwrap().to_string(),
                want,
                "{sum}/{count}"
            );
        }
    }

    #[test]
    fn cells_render_as_json() {
        let ts = DateTime::parse_from_rfc3339("2024-05-01T12:00:00.5+02:00")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(
            Cell::Timestamp(Timestamp::Value(ts)).to_json(),
            "2024-05-01T10:00:00.500Z"
        );
        assert_eq!(Cell::Bytes(vec![0, 1, 2]).to_json(), "AAEC");
        assert_eq!(Cell::Float(f64::INFINITY).to_json(), "Infinity");
        assert_eq!(Cell::Null.to_json(), serde_json::Value::Null);
    }
}
