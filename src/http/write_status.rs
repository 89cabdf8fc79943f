//! `GET /v1/writes/{write_id}`: how far a spooled write is, per shard, for as long as the
//! spool remembers it.

use super::error::refused;
use super::state::AppState;
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use std::sync::Arc;
use uuid::Uuid;

/// Answers the write's status: `spooled` while rows wait, `committed` once all are written.
pub async fn write_status(State(state): State<Arc<AppState>>, Path(write_id): Path<String>) -> Response {
    let Ok(id) = write_id.parse::<Uuid>() else {
        let message = format!("`{write_id}` is not a write id (a UUID from a 202 answer)");
        return refused(StatusCode::BAD_REQUEST, message);
    };
    let Some(statuses) = state.gateway.writes().statuses() else {
        let message = "this proxy has no spool: only spooled writes (202) have a status".to_string();
        return refused(StatusCode::NOT_FOUND, message);
    };
    match statuses.get(id) {
        Some(status) => Json(status).into_response(),
        None => {
            let message = format!(
                "write {id} is not known here: it was not spooled by this proxy, or its last row \
                 was written more than {} ago (spool.remember_writes)",
                crate::units::format_duration(statuses.remember())
            );
            refused(StatusCode::NOT_FOUND, message)
        }
    }
}
