//! Values crossing the query path: parameters bound to shard statements, and result cells read
//! from shard rows, compared as Postgres compares them and written out as JSON.

use crate::schema::{ColumnType, JsonScalar, encode_jsonb, encode_scalar};
use base64::Engine;
use bytes::BytesMut;
use chrono::{DateTime, NaiveDate, SecondsFormat, Utc};
use std::cmp::Ordering;
use tokio_postgres::Row;
use tokio_postgres::types::{IsNull, ToSql, Type, to_sql_checked};

/// A JSON parameter, sent in the binary form of whatever type Postgres infers for it.
#[derive(Debug)]
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

impl ToSql for JsonParam {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut BytesMut,
    ) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        let column_type =
            column_type_of(ty).ok_or_else(|| format!("parameters of type {ty} are not supported"))?;
        let mut bytes = Vec::new();
        let scalar = match &self.0 {
            serde_json::Value::Null => return Ok(IsNull::Yes),
            _ if column_type == ColumnType::Jsonb => {
                encode_jsonb(&self.0.to_string(), &mut bytes)?;
                out.extend_from_slice(&bytes);
                return Ok(IsNull::No);
            }
            serde_json::Value::String(s) => JsonScalar::Str(s),
            serde_json::Value::Bool(b) => JsonScalar::Bool(*b),
            serde_json::Value::Number(n) => match (n.as_i64(), n.as_u64(), n.as_f64()) {
                (Some(i), _, _) => JsonScalar::Int(i),
                (None, Some(u), _) => JsonScalar::UInt(u),
                (_, _, Some(f)) => JsonScalar::Float(f),
                _ => return Err("unrepresentable number".into()),
            },
            other => return Err(format!("a {column_type} parameter cannot be {other}").into()),
        };
        encode_scalar(column_type, scalar, &mut bytes)?;
        out.extend_from_slice(&bytes);
        Ok(IsNull::No)
    }

    fn accepts(ty: &Type) -> bool {
        column_type_of(ty).is_some()
    }

    to_sql_checked!();
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
    /// `timestamptz`.
    Timestamp(DateTime<Utc>),
    /// `date`.
    Date(NaiveDate),
    /// `jsonb`.
    Json(serde_json::Value),
    /// `bytea`.
    Bytes(Vec<u8>),
}

impl Cell {
    /// Reads column `index` of `row`, declared as `ty`.
    pub fn read(row: &Row, index: usize, ty: ColumnType) -> Result<Cell, tokio_postgres::Error> {
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
            Cell::Timestamp(t) => J::String(t.to_rfc3339_opts(SecondsFormat::AutoSi, true)),
            Cell::Date(d) => J::String(d.to_string()),
            Cell::Json(v) => v.clone(),
            Cell::Bytes(b) => J::String(base64::engine::general_purpose::STANDARD.encode(b)),
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
            (Cell::Timestamp(a), Cell::Timestamp(b)) => a.cmp(b),
            (Cell::Date(a), Cell::Date(b)) => a.cmp(b),
            (Cell::Bytes(a), Cell::Bytes(b)) => a.cmp(b),
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
    fn cells_render_as_json() {
        let ts = DateTime::parse_from_rfc3339("2024-05-01T12:00:00.5+02:00")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(Cell::Timestamp(ts).to_json(), "2024-05-01T10:00:00.500Z");
        assert_eq!(Cell::Bytes(vec![0, 1, 2]).to_json(), "AAEC");
        assert_eq!(Cell::Float(f64::INFINITY).to_json(), "Infinity");
        assert_eq!(Cell::Null.to_json(), serde_json::Value::Null);
    }
}
