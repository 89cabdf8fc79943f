//! `POST /v1/query` with `{"sql": "...", "params": [...]}`; answers
//! `{"columns": [{"name", "type"}], "rows": [[...]], "shards": N}`.

use super::QueryError;
use crate::server::AppState;
use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
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

/// `POST /v1/query`.
pub async fn query(State(state): State<Arc<AppState>>, body: Bytes) -> Response {
    let request: QueryRequest = match serde_json::from_slice(&body) {
        Ok(request) => request,
        Err(e) => {
            let body = json!({"error": format!("malformed body: {e}; send {{\"sql\": \"...\", \"params\": [...]}}"), "details": []});
            return (StatusCode::BAD_REQUEST, Json(body)).into_response();
        }
    };
    match state.queries.run(&request.sql, request.params).await {
        Ok(result) => {
            let columns: Vec<serde_json::Value> = result
                .columns
                .iter()
                .map(|(name, ty)| json!({"name": name, "type": ty.sql_name()}))
                .collect();
            let rows: Vec<Vec<serde_json::Value>> = result
                .rows
                .iter()
                .map(|row| row.iter().map(|c| c.to_json()).collect())
                .collect();
            Json(json!({"columns": columns, "rows": rows, "shards": result.shards})).into_response()
        }
        Err(e) => e.into_response(),
    }
}
