//! The two listeners' routers. Every refusal either sends carries the JSON error body
//! ([`with_json_error_bodies`]).

use super::auth::{guard_rows, guard_status, require_admin, require_user};
use super::error_body::with_json_error_bodies;
use super::state::AppState;
use super::write::ApiError;
use super::{admin, dead_letters, hot_keys, query, reshard, status_page, write, write_status};
use axum::Router;
use axum::middleware::from_fn_with_state;
use axum::routing::{delete, get, post};
use std::sync::Arc;

/// The write listener: rows, queries, health.
pub fn write_router(state: Arc<AppState>) -> Router {
    let api = Router::new()
        .route("/v1/tables/{table}/rows", post(write::write_rows))
        .route("/v1/query", post(query::query))
        .route("/v1/writes/{write_id}", get(write_status::write_status))
        .route_layer(from_fn_with_state(state.clone(), require_user));
    let router = Router::new()
        .merge(api)
        .route("/healthz", get(admin::healthz))
        .route("/readyz", get(admin::readyz))
        .fallback(|| async { ApiError::NoRoute })
        .with_state(state);
    with_json_error_bodies(router)
}

/// The admin listener: the status page, shards, the ring, metrics, health; changes to the shard
/// set behind the admin token or an admin user, and with users configured the reads too
/// (the status page's unless `admin.public_status`).
pub fn admin_router(state: Arc<AppState>) -> Router {
    let changes = Router::new()
        .route("/admin/shards/plan", post(reshard::plan_shard))
        .route("/admin/shards", post(reshard::add_shard))
        .route("/admin/hot-keys", post(hot_keys::split))
        .route("/admin/dead-letters/{id}", delete(dead_letters::delete))
        .route("/admin/dead-letters/replay", post(dead_letters::replay))
        .route(
            "/admin/shards/{name}",
            delete(reshard::drain_shard).patch(reshard::reweight_shard),
        )
        .route(
            "/admin/migrations/{id}/{action}",
            post(reshard::control_migration),
        )
        .route_layer(from_fn_with_state(state.clone(), require_admin));
    let status = Router::new()
        .route("/", get(status_page::page))
        .route("/admin/shards", get(admin::list_shards))
        .route("/admin/migrations", get(reshard::migrations))
        .route("/admin/migrations/{id}", get(reshard::migration))
        .route("/admin/ring", get(admin::ring))
        .route("/admin/hot-keys", get(hot_keys::list))
        .route("/metrics", get(admin::metrics))
        .route_layer(from_fn_with_state(state.clone(), guard_status));
    let rows = Router::new()
        .route("/admin/dead-letters", get(dead_letters::list))
        .route_layer(from_fn_with_state(state.clone(), guard_rows));
    let router = Router::new()
        .merge(changes)
        .merge(status)
        .merge(rows)
        .route("/healthz", get(admin::healthz))
        .route("/readyz", get(admin::readyz))
        .fallback(|| async { ApiError::NoRoute })
        .with_state(state);
    with_json_error_bodies(router)
}
