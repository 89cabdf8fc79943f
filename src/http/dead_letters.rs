//! `GET /admin/dead-letters` (spooled rows a shard refused for their data, from the catalog),
//! and with the admin token `POST /admin/dead-letters/replay` (spool them again once their
//! cause is fixed) and `DELETE /admin/dead-letters/{id}` (forget one).

use super::error::refused;
use super::state::AppState;
use crate::catalog::dead_letters::DeadLetterFilter;
use crate::schema::decode::BodyFormat;
use crate::spool::ReplayedPart;
use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde_json::json;
use std::collections::HashMap;
use std::sync::Arc;
use uuid::Uuid;

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
    match state
        .gateway
        .splitter()
        .catalog
        .dead_letters(&filter, limit)
        .await
    {
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
    match state.gateway.splitter().catalog.delete_dead_letter(id).await {
        Ok(true) => Json(json!({"deleted": id})).into_response(),
        Ok(false) => refused(StatusCode::NOT_FOUND, format!("there is no dead letter {id}")),
        Err(e) => refused(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
    }
}

/// The body of `POST /admin/dead-letters/replay`: the ids to replay, or none for all.
#[derive(serde::Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct ReplayBody {
    ids: Option<Vec<i64>>,
}

/// `POST /admin/dead-letters/replay` (`{}` for all, or `{"ids": [...]}`): spools each dead
/// letter's row again, as a write of its own answered once durable, then deletes the dead
/// letter. The replay's part takes the mark of the part that first held the row, so a dead
/// letter replayed twice (say, after a crash between spooling it and deleting it) is written
/// once on its shard. Answers which were replayed, with their write ids, and which were not.
pub async fn replay(State(state): State<Arc<AppState>>, body: axum::body::Bytes) -> Response {
    let body: ReplayBody = if body.is_empty() {
        ReplayBody::default()
    } else {
        match serde_json::from_slice(&body) {
            Ok(body) => body,
            Err(e) => return refused(StatusCode::BAD_REQUEST, format!("malformed body: {e}")),
        }
    };
    if state.gateway.writes().statuses().is_none() {
        let message = "this proxy has no spool to replay dead letters through; set spool.dir".to_string();
        return refused(StatusCode::CONFLICT, message);
    }
    let catalog = &state.gateway.splitter().catalog;
    let letters = match catalog
        .dead_letters_to_replay(body.ids.as_deref(), MAX_LIMIT)
        .await
    {
        Ok(letters) => letters,
        Err(e) => return refused(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
    };
    // Spooled together, so the appends share their syncs; then deleted in one statement.
    let attempts = letters.iter().map(|(letter, (spool, seq, part))| {
        let replays = ReplayedPart {
            spool: *spool,
            seq: *seq as u64,
            part: *part as u16,
        };
        replay_one(&state, &letter.table, &letter.row, replays)
    });
    let outcomes = futures_util::future::join_all(attempts).await;
    let (mut replayed, mut not_replayed) = (Vec::new(), Vec::new());
    for ((letter, _), outcome) in letters.iter().zip(outcomes) {
        match outcome {
            Ok(write_id) => replayed.push((letter.id, write_id)),
            Err(reason) => not_replayed.push(json!({"id": letter.id, "reason": reason})),
        }
    }
    let ids: Vec<i64> = replayed.iter().map(|(id, _)| *id).collect();
    if let Err(e) = catalog.delete_dead_letters(&ids).await {
        // Spooled but kept: a later replay of them is written once, under the same marks.
        let reason = format!("spooled, but the dead letters were not deleted: {e}");
        return refused(StatusCode::SERVICE_UNAVAILABLE, reason);
    }
    let replayed: Vec<_> = replayed
        .into_iter()
        .map(|(id, write_id)| json!({"id": id, "write_id": write_id}))
        .collect();
    Json(json!({"replayed": replayed, "not_replayed": not_replayed})).into_response()
}

/// Spools `row` of `table` again for a dead letter; its write id once durable.
async fn replay_one(
    state: &AppState,
    table: &str,
    row: &serde_json::Value,
    replays: ReplayedPart,
) -> Result<Uuid, String> {
    let (id, schema) = state
        .gateway
        .table(table)
        .ok_or_else(|| format!("table `{table}` is not declared any more"))?;
    let body = serde_json::Value::Array(vec![row.clone()]).to_string();
    let spooling = state
        .gateway
        .writes()
        .spool_replaying(id, schema, BodyFormat::Json, body.as_bytes(), Some(replays))
        .map_err(|e| e.to_string())?;
    Ok(spooling.durable().await.map_err(|e| e.to_string())?.write_id)
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
