//! Operator endpoints: liveness and readiness (on both listeners) and, on the admin listener
//! only, `GET /admin/shards`, `GET /admin/ring` and `GET /metrics`. Read-only: nothing here
//! changes routing or data.

use super::error::error_response;
use super::state::AppState;
use crate::pgtype::quote_ident;
use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::json;
use std::sync::Arc;

/// One shard as `/admin/shards` lists it.
#[derive(Debug, Serialize)]
pub struct ShardStatus {
    /// Stable name.
    pub name: String,
    /// Connection URL with the password redacted.
    pub url: String,
    /// Whether the shard answered a probe just now.
    pub up: bool,
    /// Whether its tables and fence have been verified, so batches are written to it.
    pub prepared: bool,
    /// Configured weight.
    pub weight: u32,
    /// Share of the hash space the current ring gives it.
    pub owned_fraction: f64,
    /// Rows queued or being written to it.
    pub queued_rows: usize,
    /// Encoded bytes queued or being written to it.
    pub queued_bytes: usize,
    /// Rows its tables hold, as Postgres's statistics count them; `None` when it did not say.
    pub stored_rows: Option<i64>,
}

/// One range of the ring as `/admin/ring` lists it.
#[derive(Debug, Serialize)]
pub struct RingRange {
    /// Exclusive lower bound.
    pub start: u64,
    /// Inclusive upper bound (the first range wraps past the top).
    pub end: u64,
    /// The shard that owns it.
    pub shard: String,
}

/// `GET /admin/ring`: the current snapshot's epoch and every range of its ring with its owner.
/// The answer carries the epoch as its `ETag`, since every change of placement takes a new
/// epoch: a poller that sends it back in `If-None-Match` gets `304` while the ring is the same
/// (with 64 shards of 256 vnodes the list is over 1 MiB).
pub async fn ring(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    let set = state.gateway.shard_set();
    let tag = format!("\"epoch-{}\"", set.epoch().0);
    let cached = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|sent| sent.split(',').any(|one| one.trim() == tag));
    let validators = [
        (header::ETAG, tag),
        (header::CACHE_CONTROL, "no-cache".to_string()),
    ];
    if cached {
        return (StatusCode::NOT_MODIFIED, validators).into_response();
    }
    let ranges: Vec<RingRange> = set
        .table
        .ring
        .ranges()
        .map(|range| RingRange {
            start: range.start,
            end: range.end,
            shard: set.get(range.shard).id.0.clone(),
        })
        .collect();
    (
        validators,
        Json(json!({"epoch": set.epoch().0, "ranges": ranges})),
    )
        .into_response()
}

/// `GET /healthz`: the process is alive and serving HTTP.
pub async fn healthz() -> Json<serde_json::Value> {
    Json(json!({"status": "ok"}))
}

/// `GET /readyz`: the catalog is loaded (always, once serving) and every shard answers; or,
/// with a spool that has room for a request's rows, even while some shard does not.
pub async fn readyz(State(state): State<Arc<AppState>>) -> Response {
    let set = state.gateway.shard_set();
    let probes = set
        .iter()
        .map(|(_, shard)| async move { (shard, shard.is_up().await) });
    let down: Vec<serde_json::Value> = futures_util::future::join_all(probes)
        .await
        .into_iter()
        .filter_map(|(shard, up)| match (up, shard.is_prepared()) {
            (false, _) => Some(json!({"shard": shard.id.0, "reason": "unreachable"})),
            (true, false) => Some(json!({"shard": shard.id.0, "reason": "tables not verified yet"})),
            (true, true) => None,
        })
        .collect();
    if down.is_empty() {
        Json(json!({"status": "ready", "epoch": set.epoch().0})).into_response()
    } else if let Some(spool) = state
        .gateway
        .writes()
        .spool_use()
        .filter(|s| s.has_room(state.limits.max_body_size))
    {
        // Spooled writes are still taken: a shard that is down only holds its rows back.
        let spool = json!({"bytes": spool.bytes, "max_bytes": spool.max_bytes});
        Json(json!({"status": "ready", "epoch": set.epoch().0, "shards_down": down, "spool": spool}))
            .into_response()
    } else {
        let message = "not ready: some shards are unreachable or not verified yet".to_string();
        error_response(StatusCode::SERVICE_UNAVAILABLE, message, json!(down), None)
    }
}

/// `GET /admin/shards`: every shard with its health, weight, ring share, queue depth and the rows
/// it holds.
pub async fn list_shards(State(state): State<Arc<AppState>>) -> Json<Vec<ShardStatus>> {
    let set = state.gateway.shard_set();
    let tables: Vec<String> = state
        .gateway
        .tables()
        .iter()
        .map(|(_, table)| quote_ident(&table.name))
        .collect();
    let tables = &tables;
    let statuses = set.iter().map(|(index, shard)| {
        let (queued_rows, queued_bytes) = shard.queue.depth();
        let owned_fraction = set.table.ring.owned_fraction(index);
        let weight = set.weight(index);
        async move {
            let (up, stored_rows) = tokio::join!(shard.is_up(), shard.stored_rows_estimate(tables));
            ShardStatus {
                name: shard.id.0.clone(),
                url: shard.redacted_url.clone(),
                up,
                prepared: shard.is_prepared(),
                weight,
                owned_fraction,
                queued_rows,
                queued_bytes,
                stored_rows,
            }
        }
    });
    Json(futures_util::future::join_all(statuses).await)
}

/// `GET /metrics`: Prometheus text format, with queue depth, shard health and epoch read now.
pub async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    let metrics = state.gateway.metrics();
    let set = state.gateway.shard_set();
    for (_, shard) in set.iter() {
        let (rows, bytes) = shard.queue.depth();
        let name = shard.id.0.as_str();
        metrics.queue_rows.with_label_values(&[name]).set(rows as i64);
        metrics.queue_bytes.with_label_values(&[name]).set(bytes as i64);
    }
    let probes = set
        .iter()
        .map(|(_, shard)| async move { (shard, shard.is_up().await) });
    for (shard, up) in futures_util::future::join_all(probes).await {
        let name = shard.id.0.as_str();
        metrics.shard_up.with_label_values(&[name]).set(i64::from(up));
        metrics
            .shard_prepared
            .with_label_values(&[name])
            .set(i64::from(shard.is_prepared()));
    }
    metrics.routing_epoch.set(set.epoch().0);
    let content_type = [(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")];
    (content_type, metrics.render()).into_response()
}
