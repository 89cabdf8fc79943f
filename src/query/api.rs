//! `POST /v1/query` with `{"sql": "...", "params": [...]}`; answers
//! `{"columns": [{"name", "type"}], "rows": [[...]], "shards": N}`.

use super::value::Cell;
use super::{QueryError, QueryResult};
use crate::server::AppState;
use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;
use std::sync::Arc;

/// The request body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueryRequest {
    /// One SELECT statement.
    pub sql: String,
    /// Values of `$1..$n`.
    #[serde(default)]
    pub params: Vec<serde_json::Value>,
}

impl QueryError {
    fn status(&self) -> StatusCode {
        match self {
            QueryError::Unsupported(_) | QueryError::Invalid { .. } | QueryError::TooManyRows(_) => {
                StatusCode::BAD_REQUEST
            }
            QueryError::ShardFailed { .. } => StatusCode::BAD_GATEWAY,
            QueryError::Timeout { .. } => StatusCode::GATEWAY_TIMEOUT,
        }
    }
}

impl IntoResponse for QueryError {
    fn into_response(self) -> Response {
        let details = match &self {
            QueryError::Invalid { shard, .. }
            | QueryError::ShardFailed { shard, .. }
            | QueryError::Timeout { shard } => {
                json!([{"shard": shard}])
            }
            _ => json!([]),
        };
        let body = json!({"error": self.to_string(), "details": details});
        (self.status(), Json(body)).into_response()
    }
}

/// `POST /v1/query`. With `Accept: application/x-ndjson` the answer is one JSON object
/// `{"columns": [...], "shards": N}` per line, then one JSON array per row.
pub async fn query(State(state): State<Arc<AppState>>, headers: HeaderMap, body: Bytes) -> Response {
    let request: QueryRequest = match serde_json::from_slice(&body) {
        Ok(request) => request,
        Err(e) => {
            let body = json!({"error": format!("malformed body: {e}; send {{\"sql\": \"...\", \"params\": [...]}}"), "details": []});
            return (StatusCode::BAD_REQUEST, Json(body)).into_response();
        }
    };
    match state.queries.run(&request.sql, request.params).await {
        Ok(result) if wants_ndjson(&headers) => ndjson_response(result),
        Ok(result) => {
            let rows: Vec<Vec<serde_json::Value>> = result.rows.iter().map(|row| row_json(row)).collect();
            Json(json!({"columns": columns_json(&result), "rows": rows, "shards": result.shards}))
                .into_response()
        }
        Err(e) => e.into_response(),
    }
}

fn wants_ndjson(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|accept| accept.contains("application/x-ndjson"))
}

fn columns_json(result: &QueryResult) -> Vec<serde_json::Value> {
    result
        .columns
        .iter()
        .map(|(name, ty)| json!({"name": name, "type": ty.sql_name()}))
        .collect()
}

fn row_json(row: &[Cell]) -> Vec<serde_json::Value> {
    row.iter().map(Cell::to_json).collect()
}

/// Streams the merged rows one line each, so a client can start reading before the last one.
fn ndjson_response(result: QueryResult) -> Response {
    let head = json!({"columns": columns_json(&result), "shards": result.shards}).to_string();
    let lines = std::iter::once(head).chain(
        result
            .rows
            .into_iter()
            .map(|row| serde_json::Value::from(row_json(&row)).to_string()),
    );
    let stream = futures_util::stream::iter(lines.map(|line| Ok::<_, std::convert::Infallible>(line + "\n")));
    (
        [(header::CONTENT_TYPE, "application/x-ndjson")],
        axum::body::Body::from_stream(stream),
    )
        .into_response()
}
