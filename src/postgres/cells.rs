//! Result values in the form a client asked for, per column: Postgres's text output (in a
//! session with `DateStyle` ISO and `TimeZone` UTC) or its binary send form.

use super::types::data_row;
use crate::pgtype::{ColumnType, output_text, timestamptz_text};
use crate::query::value::{Cell, Decimal, ResultType};
use pgwire::api::results::FieldFormat;
use pgwire::messages::data::DataRow;
use std::borrow::Cow;
use tokio_postgres::types::Timestamp;
use tokio_postgres::types::{ToSql, Type};

/// A result row as a `DataRow`, each value in its column's format.
pub fn encode_row(row: &[Cell], columns: &[(ResultType, FieldFormat)]) -> DataRow {
    let fields: Vec<Option<Vec<u8>>> = row
        .iter()
        .zip(columns)
        .map(|(cell, (ty, format))| match format {
            FieldFormat::Text => cell_text(cell).map(|text| text.into_owned().into_bytes()),
            FieldFormat::Binary => cell_binary(cell, *ty),
        })
        .collect();
    data_row(fields.iter().map(Option::as_deref))
}

/// A value in Postgres's binary form for a column of type `ty`; `None` for NULL.
fn cell_binary(cell: &Cell, ty: ResultType) -> Option<Vec<u8>> {
    Some(match cell {
        Cell::Null => return None,
        Cell::Int(n) => match ty {
            ResultType::Column(ColumnType::SmallInt) => (*n as i16).to_be_bytes().to_vec(),
            ResultType::Column(ColumnType::Integer) => (*n as i32).to_be_bytes().to_vec(),
            ResultType::Numeric => Decimal::integer(i128::from(*n)).to_binary(),
            _ => n.to_be_bytes().to_vec(),
        },
        Cell::Float(x) => x.to_be_bytes().to_vec(),
        Cell::Bool(b) => vec![u8::from(*b)],
        Cell::Text(text) => text.as_bytes().to_vec(),
        Cell::Uuid(uuid) => uuid.as_bytes().to_vec(),
        Cell::Timestamp(time) => sent(time, &Type::TIMESTAMPTZ),
        Cell::Date(date) => sent(date, &Type::DATE),
        Cell::Json(value) => {
            let mut out = vec![crate::pgtype::JSONB_VERSION];
            out.extend_from_slice(jsonb_text(value).as_bytes());
            out
        }
        Cell::Bytes(bytes) => bytes.clone(),
        Cell::Numeric(number) => number.to_binary(),
    })
}

/// A timestamp or date in Postgres's binary form (`infinity` as Postgres stores it), as the
/// driver's own encoding writes it.
fn sent(value: &(dyn ToSql + Sync), ty: &Type) -> Vec<u8> {
    let mut out = bytes::BytesMut::new();
    value
        .to_sql_checked(ty, &mut out)
        .expect("a timestamp or date encodes as its own type");
    out.to_vec()
}

/// A value in Postgres's text output form, in a session with `DateStyle` ISO and `TimeZone`
/// UTC; `None` for NULL.
pub fn cell_text(cell: &Cell) -> Option<Cow<'_, str>> {
    Some(Cow::Owned(match cell {
        Cell::Null => return None,
        Cell::Text(text) => return Some(Cow::Borrowed(text)),
        Cell::Int(n) => n.to_string(),
        Cell::Float(x) => output_text(ColumnType::Double, &x.to_be_bytes()),
        Cell::Bool(b) => return Some(Cow::Borrowed(if *b { "t" } else { "f" })),
        Cell::Uuid(uuid) => uuid.hyphenated().to_string(),
        Cell::Timestamp(Timestamp::Value(time)) => timestamptz_text(time),
        Cell::Timestamp(time) => output_text(ColumnType::Timestamptz, &sent(time, &Type::TIMESTAMPTZ)),
        Cell::Date(date) => output_text(ColumnType::Date, &sent(date, &Type::DATE)),
        Cell::Json(value) => jsonb_text(value),
        Cell::Bytes(bytes) => output_text(ColumnType::Bytea, bytes),
        Cell::Numeric(number) => number.to_string(),
    }))
}

/// A `jsonb` value as Postgres writes it: a space after each `:` and `,`.
fn jsonb_text(value: &serde_json::Value) -> String {
    use serde::Serialize;
    let mut out = Vec::new();
    let mut serializer = serde_json::Serializer::with_formatter(&mut out, JsonbFormatter);
    value
        .serialize(&mut serializer)
        .expect("a JSON value serializes into memory");
    String::from_utf8(out).expect("serde_json writes UTF-8")
}

/// serde_json's compact output with Postgres's `jsonb` separators.
struct JsonbFormatter;

impl serde_json::ser::Formatter for JsonbFormatter {
    fn begin_array_value<W: ?Sized + std::io::Write>(
        &mut self,
        writer: &mut W,
        first: bool,
    ) -> std::io::Result<()> {
        if first { Ok(()) } else { writer.write_all(b", ") }
    }

    fn begin_object_key<W: ?Sized + std::io::Write>(
        &mut self,
        writer: &mut W,
        first: bool,
    ) -> std::io::Result<()> {
        if first { Ok(()) } else { writer.write_all(b", ") }
    }

    fn begin_object_value<W: ?Sized + std::io::Write>(&mut self, writer: &mut W) -> std::io::Result<()> {
        writer.write_all(b": ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio_postgres::types::{Date, Timestamp};

    #[test]
    fn cells_are_written_as_postgres_writes_them() {
        let time = chrono::DateTime::parse_from_rfc3339("2026-05-01T12:00:00.5+02:00").unwrap();
        let cases = [
            (Cell::Int(-7), "-7"),
            (Cell::Float(1e20), "1e+20"),
            (Cell::Bool(false), "f"),
            (
                Cell::Timestamp(Timestamp::Value(time.to_utc())),
                "2026-05-01 10:00:00.5+00",
            ),
            (Cell::Timestamp(Timestamp::PosInfinity), "infinity"),
            (Cell::Date(Date::NegInfinity), "-infinity"),
            (
                Cell::Json(serde_json::json!({"a": [1, "x"], "b": null})),
                "{\"a\": [1, \"x\"], \"b\": null}",
            ),
            (Cell::Bytes(vec![0, 255]), "\\x00ff"),
        ];
        for (cell, text) in cases {
            assert_eq!(cell_text(&cell).as_deref(), Some(text), "{cell:?}");
        }
        assert_eq!(cell_text(&Cell::Null), None);
    }
}
