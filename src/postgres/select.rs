//! Reporting `SELECT`s, by the simple protocol (psql) and the extended one (drivers): the
//! query runs through the same planner and merge as `POST /v1/query`. `Describe` learns its
//! parameter and column types from one shard without running it; its rows are sent in text or
//! binary per column as they are merged, so a large answer streams with bounded memory.

use super::cells::encode_row;
use super::copy_out;
use super::errors::{self, refused};
use super::statement::CopyTo;
use super::types::parameter_type;
use crate::access::Caller;
use crate::query::value::Cell;
use crate::query::value::ResultType;
use crate::query::{Description, QueryEngine, QueryError, QueryStream, RunOptions};
use futures_util::{Stream, StreamExt, stream};
use pgwire::api::portal::Format;
use pgwire::api::results::{CopyResponse, FieldFormat, FieldInfo, QueryResponse, Response};
use pgwire::api::{ConnectionHandle, Type};
use pgwire::error::{PgWireError, PgWireResult};
use pgwire::messages::copy::CopyData;
use std::sync::Arc;
use std::time::Duration;

/// Runs `sql` on the shards and answers its rows in text form: a simple-protocol query.
pub async fn run(queries: &QueryEngine, sql: &str, bounds: Bounds) -> PgWireResult<Response> {
    let answer = start(queries, sql, Vec::new(), &Format::UnifiedText, bounds).await?;
    Ok(Response::Query(answer))
}

/// Who runs a session's queries, and what bounds them.
#[derive(Clone)]
pub struct Bounds {
    /// The logged-in user, whose read grant the query's table must be in.
    pub caller: Caller,
    /// Its `statement_timeout`, if it set one.
    pub timeout: Option<Duration>,
    /// Its connection's handle, which a `CancelRequest` naming it fires.
    pub cancel: Option<Arc<ConnectionHandle>>,
}

/// Starts `sql` with `params` on the shards within `bounds`; its rows are encoded in
/// `formats` (per column) as they are merged, so a large answer streams with bounded memory.
/// A `CancelRequest` stops the rows between two of them with `57014`.
pub async fn start(
    queries: &QueryEngine,
    sql: &str,
    params: Vec<serde_json::Value>,
    formats: &Format,
    bounds: Bounds,
) -> PgWireResult<QueryResponse> {
    let options = RunOptions {
        timeout: bounds.timeout,
        ..RunOptions::by(bounds.caller)
    };
    let answer = queries
        .run_with(sql, params, options)
        .await
        .map_err(query_error)?;
    let fields = Arc::new(fields(&answer.columns, Some(formats)));
    let columns: Vec<(ResultType, FieldFormat)> = answer
        .columns
        .iter()
        .enumerate()
        .map(|(i, (_, ty))| (*ty, format_of(Some(formats), i)))
        .collect();
    let rows = streamed(answer, bounds.cancel, move |row| encode_row(row, &columns));
    Ok(QueryResponse::new(fields, rows))
}

/// Runs the query of a `COPY ... TO STDOUT` within `bounds`, every row of it however many,
/// and writes its rows as `COPY` lines as they are merged.
pub async fn copy_out(queries: &QueryEngine, copy: &CopyTo, bounds: Bounds) -> PgWireResult<CopyResponse> {
    let options = RunOptions {
        timeout: bounds.timeout,
        every_row: true,
        caller: bounds.caller,
    };
    let answer = queries
        .run_with(&copy.query, Vec::new(), options)
        .await
        .map_err(query_error)?;
    let columns = answer.columns.len();
    // The header goes out with the first row, as the count of rows is one per message; alone
    // only when there is no row.
    let header = copy.header.then(|| {
        let names: Vec<&str> = answer.columns.iter().map(|(name, _)| name.as_str()).collect();
        copy_out::header(&names, &copy.format)
    });
    let header = Arc::new(std::sync::Mutex::new(header));
    let unsent = header.clone();
    let format = copy.format.clone();
    let lines = streamed(answer, bounds.cancel, move |row| {
        let mut line = take(&header).unwrap_or_default();
        line.extend_from_slice(&copy_out::line(row, &format));
        CopyData::new(line.into())
    });
    let lone_header = stream::once(async move { take(&unsent) })
        .filter_map(|header| async move { header.map(|header| Ok(CopyData::new(header.into()))) });
    Ok(CopyResponse::new(0, columns, lines.chain(lone_header)))
}

/// What `slot` holds, taken out of it.
fn take(slot: &std::sync::Mutex<Option<Vec<u8>>>) -> Option<Vec<u8>> {
    slot.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .take()
}

/// The rows of `answer`, each encoded by `encode`, as they are merged; a `CancelRequest`
/// naming the connection of `cancel` ends them with `57014`.
fn streamed<T: Send + 'static>(
    answer: QueryStream,
    cancel: Option<Arc<ConnectionHandle>>,
    encode: impl Fn(&[Cell]) -> T + Send + 'static,
) -> impl Stream<Item = PgWireResult<T>> + Send + 'static {
    let streaming = Streaming {
        answer,
        encode,
        cancel,
        signal: None,
        done: false,
    };
    stream::unfold(streaming, Streaming::next)
}

/// An answer being sent.
struct Streaming<E> {
    answer: QueryStream,
    encode: E,
    /// The connection's handle, until the first row asks it for a cancel signal.
    cancel: Option<Arc<ConnectionHandle>>,
    /// Fires when a `CancelRequest` names the connection.
    signal: Option<futures_channel::oneshot::Receiver<()>>,
    done: bool,
}

impl<T, E: Fn(&[Cell]) -> T> Streaming<E> {
    /// The next row, encoded, or the error that ends the answer.
    async fn next(mut self) -> Option<(PgWireResult<T>, Self)> {
        if self.done {
            return None;
        }
        if let Some(handle) = self.cancel.take() {
            // Asked once the query has started: the query handler's own signal is gone.
            self.signal = Some(handle.start_query().await);
        }
        if let Some(signal) = &mut self.signal {
            match signal.try_recv() {
                Ok(Some(())) => {
                    self.done = true;
                    return Some((Err(PgWireError::QueryCanceled), self));
                }
                Ok(None) => {}
                Err(_) => self.signal = None,
            }
        }
        match self.answer.next_row().await {
            Ok(Some(row)) => {
                let encoded = (self.encode)(&row);
                Some((Ok(encoded), self))
            }
            Ok(None) => None,
            Err(e) => {
                self.done = true;
                Some((Err(query_error(e)), self))
            }
        }
    }
}

/// The parameters and result columns of `sql`, learned from one shard without running it.
pub async fn describe(queries: &QueryEngine, sql: &str) -> PgWireResult<Description> {
    queries.describe(sql).await.map_err(query_error)
}

/// The result columns as a `RowDescription` lists them, in `formats` (text when `None`).
pub fn fields(columns: &[(String, ResultType)], formats: Option<&Format>) -> Vec<FieldInfo> {
    columns
        .iter()
        .enumerate()
        .map(|(i, (name, ty))| {
            FieldInfo::new(name.clone(), None, None, wire_type(*ty), format_of(formats, i))
        })
        .collect()
}

/// The parameter types a `ParameterDescription` lists: those the client declared, else those
/// the shards infer, else `bigint` (LIMIT's and OFFSET's, which the shards never see).
pub fn parameter_types(description: &Description, declared: &[Option<Type>]) -> Vec<Type> {
    let count = description.parameters.len().max(declared.len());
    (0..count)
        .map(|i| {
            let declared = declared.get(i).cloned().flatten();
            let inferred = description.parameters.get(i).cloned().flatten();
            declared.or(inferred).unwrap_or(Type::INT8)
        })
        .collect()
}

/// The format of result column `index`: text unless the client asked for binary. A `Bind`
/// listing fewer formats than columns is read as text for the rest, rather than failing.
pub fn format_of(formats: Option<&Format>, index: usize) -> FieldFormat {
    match formats {
        None | Some(Format::UnifiedText) => FieldFormat::Text,
        Some(Format::UnifiedBinary) => FieldFormat::Binary,
        Some(Format::Individual(codes)) => codes
            .get(index)
            .map_or(FieldFormat::Text, |&c| FieldFormat::from(c)),
    }
}

/// The type a result column is described as.
fn wire_type(ty: ResultType) -> Type {
    match ty {
        ResultType::Column(ty) => parameter_type(ty),
        ResultType::Numeric => Type::NUMERIC,
    }
}

/// The `ErrorResponse` of a query refused or failed, with the SQLSTATE Postgres would give.
fn query_error(error: QueryError) -> PgWireError {
    let code = match &error {
        QueryError::Unsupported(refusal) => match refusal.table_not_declared() {
            Some(table) => {
                return refused(
                    errors::UNDEFINED_TABLE,
                    format!("relation \"{table}\" does not exist"),
                );
            }
            None => errors::FEATURE_NOT_SUPPORTED,
        },
        QueryError::Invalid { .. } | QueryError::BadParameter { .. } => "42804",
        QueryError::Unreachable { .. } | QueryError::ShardFailed { .. } => errors::CONNECTION_FAILURE,
        QueryError::Timeout { .. } | QueryError::NotRead { .. } => "57014",
        QueryError::TooManyRows(_)
        | QueryError::AnswerTooLarge(_)
        | QueryError::TooManyGroups { .. }
        | QueryError::TooManyHeldValues { .. }
        | QueryError::TooManyMergedGroups(_) => errors::PROGRAM_LIMIT_EXCEEDED,
        QueryError::Busy { .. } => errors::INSUFFICIENT_RESOURCES,
        QueryError::NotGranted { user, table } => {
            return errors::permission_denied(user, table, "read");
        }
    };
    refused(code, error.to_string())
}

/// A `statement_timeout` as Postgres reads it: a number of milliseconds, or a number with a
/// unit (`us`, `ms`, `s`, `min`, `h`, `d`); `None` for 0, which turns it off.
pub fn statement_timeout(value: &str) -> Result<Option<Duration>, String> {
    let value = value.trim();
    let invalid = || format!("invalid value for parameter \"statement_timeout\": \"{value}\"");
    let split = value
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(value.len());
    let (number, unit) = value.split_at(split);
    let number: f64 = number.parse().map_err(|_| invalid())?;
    let millis = match unit.trim() {
        "" | "ms" => 1.0,
        "us" => 0.001,
        "s" => 1_000.0,
        "min" => 60_000.0,
        "h" => 3_600_000.0,
        "d" => 86_400_000.0,
        _ => return Err(invalid()),
    };
    let duration = Duration::try_from_secs_f64(number * millis / 1000.0).map_err(|_| invalid())?;
    Ok((!duration.is_zero()).then_some(duration))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statement_timeouts_are_read_as_postgres_reads_them() {
        let read = |value: &str| statement_timeout(value).map(|t| t.map(|t| t.as_millis()));
        assert_eq!(read("2500"), Ok(Some(2500)));
        assert_eq!(read("1.5s"), Ok(Some(1500)));
        assert_eq!(read("2 min"), Ok(Some(120_000)));
        assert_eq!(read("0"), Ok(None));
        assert!(read("soon").unwrap_err().contains("\"soon\""));
        assert!(read("5 weeks").is_err());
    }
}
