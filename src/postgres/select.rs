//! Reporting `SELECT`s by the simple protocol (psql): the query runs through the same planner
//! and merge as `POST /v1/query`, and its rows are sent in Postgres's text form as they are
//! merged, so a large answer streams with bounded memory.

use super::errors::{self, refused};
use super::types::{data_row, parameter_type};
use crate::pgtype::{ColumnType, output_text, timestamptz_from_unix_micros};
use crate::query::value::{Cell, ResultType};
use crate::query::{QueryEngine, QueryError, QueryStream};
use futures_util::stream;
use pgwire::api::Type;
use pgwire::api::results::{FieldFormat, FieldInfo, QueryResponse, Response};
use pgwire::error::{PgWireError, PgWireResult};
use std::sync::Arc;

/// Runs `sql` on the shards and answers its rows in text form.
pub async fn run(queries: &QueryEngine, sql: &str) -> PgWireResult<Response> {
    let answer = queries.run(sql, Vec::new()).await.map_err(query_error)?;
    let fields: Vec<FieldInfo> = answer
        .columns
        .iter()
        .map(|(name, ty)| FieldInfo::new(name.clone(), None, None, wire_type(*ty), FieldFormat::Text))
        .collect();
    let rows = stream::unfold(answer, |mut answer: QueryStream| async move {
        match answer.next_row().await {
            Ok(Some(row)) => Some((Ok(text_row(&row)), answer)),
            Ok(None) => None,
            Err(e) => Some((Err(query_error(e)), answer)),
        }
    });
    Ok(Response::Query(QueryResponse::new(Arc::new(fields), rows)))
}

/// The type a result column is described as.
fn wire_type(ty: ResultType) -> Type {
    match ty {
        ResultType::Column(ty) => parameter_type(ty),
        ResultType::Numeric => Type::NUMERIC,
    }
}

fn text_row(row: &[Cell]) -> pgwire::messages::data::DataRow {
    let texts: Vec<Option<String>> = row.iter().map(cell_text).collect();
    data_row(texts.iter().map(|text| text.as_deref().map(str::as_bytes)))
}

/// A value in Postgres's text output form, in a session with `DateStyle` ISO and `TimeZone`
/// UTC; `None` for NULL.
fn cell_text(cell: &Cell) -> Option<String> {
    Some(match cell {
        Cell::Null => return None,
        Cell::Int(n) => n.to_string(),
        Cell::Float(x) => output_text(ColumnType::Double, &x.to_be_bytes()),
        Cell::Bool(b) => if *b { "t" } else { "f" }.to_string(),
        Cell::Text(text) => text.clone(),
        Cell::Uuid(uuid) => uuid.hyphenated().to_string(),
        Cell::Timestamp(time) => output_text(
            ColumnType::Timestamptz,
            &timestamptz_from_unix_micros(time.timestamp_micros()),
        ),
        Cell::Date(date) => date.format("%Y-%m-%d").to_string(),
        Cell::Json(value) => jsonb_text(value),
        Cell::Bytes(bytes) => output_text(ColumnType::Bytea, bytes),
        Cell::Numeric(number) => number.to_string(),
    })
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

/// The `ErrorResponse` of a query refused or failed, with the SQLSTATE Postgres would give.
fn query_error(error: QueryError) -> PgWireError {
    let code = match &error {
        QueryError::Unsupported(_) => errors::FEATURE_NOT_SUPPORTED,
        QueryError::Invalid { .. } | QueryError::BadParameter { .. } => "42804",
        QueryError::Unreachable { .. } | QueryError::ShardFailed { .. } => errors::CONNECTION_FAILURE,
        QueryError::Timeout { .. } | QueryError::NotRead { .. } => "57014",
        QueryError::TooManyRows(_) | QueryError::AnswerTooLarge(_) | QueryError::TooManyGroups { .. } => {
            errors::PROGRAM_LIMIT_EXCEEDED
        }
        QueryError::Busy { .. } => errors::INSUFFICIENT_RESOURCES,
    };
    refused(code, error.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cells_are_written_as_postgres_writes_them() {
        let time = chrono::DateTime::parse_from_rfc3339("2026-05-01T12:00:00.5+02:00").unwrap();
        let cases = [
            (Cell::Int(-7), "-7"),
            (Cell::Float(1e20), "1e+20"),
            (Cell::Bool(false), "f"),
            (Cell::Timestamp(time.to_utc()), "2026-05-01 10:00:00.5+00"),
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
