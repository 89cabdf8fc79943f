//! `GET /admin/dead-letters` (spooled rows a shard refused for their data, from the catalog)
//! and `DELETE /admin/dead-letters/{id}` (with the admin token, once an operator dealt with one).

use super::error::refused;
use super::state::AppState;
use crate::catalog::dead_letters::DeadLetterFilter;
use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde_json::json;
use std::collections::HashMap;
use std::sync::Arc;

/// Dead letters listed when the request names no `limit`.
const DEFAULT_LIMIT: i64 = 100;
/// Most dead letters one answer lists.
const MAX_LIMIT: i64 = 10_000;

/// `GET /admin/dead-letters?table=&shard=&since=&until=&limit=`: the recorded dead letters,
/// oldest first; `since` and `until` are RFC 3339 times.
pub async fn list(
    State(state): State<Arc<AppState>>,
    Query(params): Query<HashMap<String, String>>,
) -> Response {
    let (filter, limit) = match filter_of(params) {
        Ok(found) => found,
        Err(message) => return refused(StatusCode::BAD_REQUEST, message),
    };
    match state.splitter.catalog.dead_letters(&filter, limit).await {
        Ok(letters) => Json(json!({"dead_letters": letters})).into_response(),
        Err(e) => refused(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
    }
}

/// `DELETE /admin/dead-letters/{id}`: forgets one dead letter; `404` when there is none.
pub async fn delete(State(state): State<Arc<AppState>>, Path(id): Path<String>) -> Response {
    let Ok(id) = id.parse::<i64>() else {
        return refused(
            StatusCode::BAD_REQUEST,
            format!("`{id}` is not a dead letter's id"),
        );
    };
    match state.splitter.catalog.delete_dead_letter(id).await {
        Ok(true) => Json(json!({"deleted": id})).into_response(),
        Ok(false) => refused(StatusCode::NOT_FOUND, format!("there is no dead letter {id}")),
        Err(e) => refused(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
    }
}

fn filter_of(params: HashMap<String, String>) -> Result<(DeadLetterFilter, i64), String> {
    let mut filter = DeadLetterFilter::default();
    let mut limit = DEFAULT_LIMIT;
    for (name, value) in params {
        match name.as_str() {
            "table" => filter.table = Some(value),
            "shard" => filter.shard = Some(value),
            "since" => filter.since = Some(time_of(&name, &value)?),
            "until" => filter.until = Some(time_of(&name, &value)?),
            "limit" => {
                limit = value
                    .parse()
                    .ok()
                    .filter(|n| (1..=MAX_LIMIT).contains(n))
                    .ok_or_else(|| format!("limit must be a whole number from 1 to {MAX_LIMIT}"))?;
            }
            other => {
                return Err(format!(
                    "unknown parameter `{other}`; filter by table, shard, since, until, and set limit"
                ));
            }
        }
    }
    Ok((filter, limit))
}

fn time_of(name: &str, value: &str) -> Result<DateTime<Utc>, String> {
    DateTime::parse_from_rfc3339(value)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|_| format!("{name} must be an RFC 3339 time, such as 2026-05-01T12:00:00Z"))
}
