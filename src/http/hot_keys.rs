//! `GET /admin/hot-keys` (what the watch found in the last window and every split the catalog
//! records) and `POST /admin/hot-keys` (split a key by hand, with the admin token).

use super::error::refused;
use super::state::AppState;
use crate::catalog::hot_keys::{SplitOutcome, SplitRequest, SplitSource};
use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;
use std::sync::Arc;

/// `GET /admin/hot-keys`: the keys above the hot-key thresholds in the last window, hot ones
/// (above them for `hot_keys.windows` windows in a row) first, and every recorded split step.
pub async fn list(State(state): State<Arc<AppState>>) -> Response {
    let found = state.gateway.hot_keys().found();
    let window_ms = state.gateway.config().hot_keys.window.as_millis() as u64;
    match state.gateway.splitter().catalog.splits().await {
        Ok(splits) => Json(json!({"window_ms": window_ms, "keys": *found, "splits": splits})).into_response(),
        Err(e) => refused(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
    }
}

/// The body of `POST /admin/hot-keys`.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct SplitBody {
    table: String,
    key: serde_json::Map<String, serde_json::Value>,
    fanout: u32,
}

/// `POST /admin/hot-keys {"table", "key": {column: value, ...}, "fanout"}`: splits the key over
/// `fanout` positions from `hot_keys.split_delay` on; `200` with the key's hash, the fan-out, and
/// whether it grew (a key already split that far is left alone).
pub async fn split(State(state): State<Arc<AppState>>, body: Bytes) -> Response {
    let body: SplitBody = match serde_json::from_slice(&body) {
        Ok(body) => body,
        Err(e) => {
            let message =
                format!("the body must be {{\"table\", \"key\": {{column: value}}, \"fanout\"}}: {e}");
            return refused(StatusCode::BAD_REQUEST, message);
        }
    };
    let Some((_, schema)) = state.gateway.table(&body.table) else {
        return refused(StatusCode::NOT_FOUND, format!("unknown table `{}`", body.table));
    };
    if schema.stream_version.is_some() {
        let message = format!(
            "table `{}` is a stream table: a stream lives on one shard, where its versions are \
             checked, so its keys are never split; cap a hot stream with max_key_rows_per_second",
            body.table
        );
        return refused(StatusCode::CONFLICT, message);
    }
    let max = state.gateway.config().hot_keys.max_fanout;
    if !(2..=max).contains(&body.fanout) {
        let message = format!(
            "fanout must be between 2 and hot_keys.max_fanout ({max}), not {}",
            body.fanout
        );
        return refused(StatusCode::BAD_REQUEST, message);
    }
    let key = match schema.hash_key_values(&body.key) {
        Ok(key) => key,
        Err(message) => return refused(StatusCode::BAD_REQUEST, message),
    };
    let split = SplitRequest {
        table: body.table.clone(),
        key,
        fanout: body.fanout,
        key_values: Some(serde_json::Value::Object(body.key)),
        source: SplitSource::Manual,
        rows_per_second: None,
    };
    let key_hash = format!("{:016x}", key.0);
    match state.gateway.splitter().split(split).await {
        Ok(SplitOutcome::Grown { epoch, since_ms }) => Json(json!({
            "table": body.table, "key_hash": key_hash, "fanout": body.fanout, "grown": true,
            "epoch": epoch.0, "since_ms": since_ms,
        }))
        .into_response(),
        Ok(SplitOutcome::AlreadyAtLeast { fanout }) => Json(json!({
            "table": body.table, "key_hash": key_hash, "fanout": fanout, "grown": false,
        }))
        .into_response(),
        Err(e) => refused(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
    }
}
