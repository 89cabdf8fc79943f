//! `POST /v1/query` with `{"sql": "...", "params": [...]}`; answers
//! `{"columns": [{"name", "type"}], "rows": [[...]], "shards": N}`.

use super::error::error_response;
use super::state::AppState;
use super::write::read_body;
use crate::access::Caller;
use crate::metrics::Metrics;
use crate::query::value::{Cell, ResultType};
use crate::query::{QueryError, QueryStream};
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use futures_util::StreamExt;
use serde::Deserialize;
use serde_json::json;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The request body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueryRequest {
    /// One SELECT statement.
    pub sql: String,
    /// Values of `$1..$n`.
    #[serde(default)]
    pub params: Vec<serde_json::Value>,
    /// Answer how the query would run (shards, statement, merge) instead of running it.
    #[serde(default)]
    pub explain: bool,
}

fn status(error: &QueryError) -> StatusCode {
    match error {
        QueryError::Unsupported(_)
        | QueryError::Invalid { .. }
        | QueryError::TooManyRows(_)
        | QueryError::TooManyGroups { .. }
        | QueryError::TooManyHeldValues { .. }
        | QueryError::TooManyMergedGroups(_)
        | QueryError::AnswerTooLarge(_)
        | QueryError::BadParameter { .. } => StatusCode::BAD_REQUEST,
        QueryError::Busy { .. } => StatusCode::SERVICE_UNAVAILABLE,
        QueryError::NotGranted { .. } => StatusCode::FORBIDDEN,
        QueryError::ShardFailed { .. } | QueryError::Unreachable { .. } => StatusCode::BAD_GATEWAY,
        QueryError::Timeout { .. } | QueryError::NotRead { .. } => StatusCode::GATEWAY_TIMEOUT,
    }
}

/// `[{"shard": name}]` for an error of one shard, else `[]`.
fn details(error: &QueryError) -> serde_json::Value {
    match error {
        QueryError::Invalid { shard, .. }
        | QueryError::ShardFailed { shard, .. }
        | QueryError::Unreachable { shard, .. }
        | QueryError::Timeout { shard }
        | QueryError::TooManyGroups { shard, .. }
        | QueryError::TooManyHeldValues { shard, .. }
        | QueryError::NotRead { shard }
        | QueryError::Busy { shard } => json!([{"shard": shard}]),
        QueryError::NotGranted { table, .. } => json!([{"table": table, "grant": "read"}]),
        _ => json!([]),
    }
}

/// The answer to a failed query; a busy shard asks to retry after `retry_after`.
fn error_answer(error: QueryError, retry_after: Duration) -> Response {
    let status = status(&error);
    if status.is_server_error() {
        tracing::warn!(error = %error, "query failed");
    }
    let retry_after = matches!(error, QueryError::Busy { .. }).then_some(retry_after);
    error_response(status, error.to_string(), details(&error), retry_after)
}

/// NDJSON lines written to the connection at once, at most (lines that are ready together).
const LINES_PER_WRITE: usize = 512;

/// `POST /v1/query`. With `Accept: application/x-ndjson` the answer is one JSON object
/// `{"columns": [...], "shards": N}` on the first line, then one JSON array per row as rows are
/// merged; an error after the first line ends the answer with an `{"error": ...}` line.
pub async fn query(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let body = match read_body(body, &headers, state.limits.max_body_size).await {
        Ok(body) => body,
        Err(e) => return e.into_response(),
    };
    let request: QueryRequest = match serde_json::from_slice(&body) {
        Ok(request) => request,
        Err(e) => {
            let message = format!("malformed body: {e}; send {{\"sql\": \"...\", \"params\": [...]}}");
            return error_response(StatusCode::BAD_REQUEST, message, json!([]), None);
        }
    };
    let retry_after = state.limits.retry_after;
    if request.explain {
        return match state
            .gateway
            .queries()
            .explain(&request.sql, &request.params, &caller)
            .await
        {
            Ok(explanation) => Json(explanation).into_response(),
            Err(e) => error_answer(e, retry_after),
        };
    }
    let record = Record {
        metrics: state.gateway.metrics().clone(),
        started: Instant::now(),
    };
    let response = match state
        .gateway
        .queries()
        .run(&request.sql, request.params, caller)
        .await
    {
        Ok(stream) if wants_ndjson(&headers) => return ndjson_response(stream, record),
        Ok(stream) => match stream.collect().await {
            Ok(result) => {
                record.rows(result.rows.len());
                let rows: Vec<Vec<serde_json::Value>> = result.rows.iter().map(|row| row_json(row)).collect();
                let columns = columns_json(&result.columns);
                Json(json!({"columns": columns, "rows": rows, "shards": result.shards})).into_response()
            }
            Err(e) => error_answer(e, retry_after),
        },
        Err(e) => error_answer(e, retry_after),
    };
    record.finished(response.status().as_str());
    response
}

/// Records a query's duration and rows in the metrics.
struct Record {
    metrics: Arc<Metrics>,
    started: Instant,
}

impl Record {
    fn rows(&self, rows: usize) {
        self.metrics.query_rows.inc_by(rows as u64);
    }

    fn finished(&self, outcome: &str) {
        self.metrics
            .query_duration
            .with_label_values(&[outcome])
            .observe(self.started.elapsed().as_secs_f64());
    }
}

fn wants_ndjson(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|accept| accept.contains("application/x-ndjson"))
}

fn columns_json(columns: &[(String, ResultType)]) -> Vec<serde_json::Value> {
    columns
        .iter()
        .map(|(name, ty)| json!({"name": name, "type": ty.sql_name()}))
        .collect()
}

fn row_json(row: &[Cell]) -> Vec<serde_json::Value> {
    row.iter().map(Cell::to_json).collect()
}

/// Streams the rows one line each as they are merged; lines ready together go out in one write.
fn ndjson_response(stream: QueryStream, record: Record) -> Response {
    let head = json!({"columns": columns_json(&stream.columns), "shards": stream.shards}).to_string() + "\n";
    let rows = futures_util::stream::unfold(Some((stream, record)), |state| async move {
        let (mut stream, record) = state?;
        match stream.next_row().await {
            Ok(Some(row)) => {
                record.rows(1);
                let line = serde_json::Value::from(row_json(&row)).to_string() + "\n";
                Some((line, Some((stream, record))))
            }
            Ok(None) => {
                record.finished("200");
                None
            }
            Err(e) => {
                tracing::warn!(error = %e, "streamed query ended early");
                record.finished("aborted");
                let line = json!({"error": e.to_string(), "details": details(&e)});
                Some((line.to_string() + "\n", None))
            }
        }
    });
    let lines = futures_util::stream::once(std::future::ready(head))
        .chain(rows)
        .ready_chunks(LINES_PER_WRITE)
        .map(|lines| Ok::<_, std::convert::Infallible>(lines.concat()));
    (
        [(header::CONTENT_TYPE, "application/x-ndjson")],
        axum::body::Body::from_stream(lines),
    )
        .into_response()
}
