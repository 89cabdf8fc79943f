//! Thin handlers for changing the shard set: `POST /admin/shards/plan` checks a database that
//! is to join and answers what adding it would move; `POST /admin/shards` starts adding it,
//! `DELETE /admin/shards/{name}` draining one and `PATCH /admin/shards/{name}` reweighting one
//! (all behind the admin token); `GET /admin/migrations[/{id}]` shows the journal.

use super::error::refused;
use super::state::AppState;
use crate::catalog::CatalogError;
use crate::reshard::ChangeError;
use crate::reshard::candidate::{CandidateError, NewShard};
use crate::reshard::plan::{AddPlan, PlanError, plan_add};
use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;
use std::sync::Arc;

/// `POST /admin/shards/plan {"name", "url", "weight"}`: the ranges the shard would take, their
/// sources and estimated rows; changes nothing.
pub async fn plan_shard(State(state): State<Arc<AppState>>, body: Bytes) -> Response {
    match plan(&state, &body).await {
        Ok(plan) => Json(plan).into_response(),
        Err(refusal) => refusal,
    }
}

/// `POST /admin/shards {"name", "url", "weight"}`: starts adding the shard; `202` with the
/// migration's id, epoch and plan.
pub async fn add_shard(State(state): State<Arc<AppState>>, body: Bytes) -> Response {
    let request = match new_shard(&body) {
        Ok(request) => request,
        Err(message) => return refused(StatusCode::BAD_REQUEST, message),
    };
    let password = state.gateway.config().shard_password(&request.name);
    match state.gateway.resharder().add(&request, password).await {
        Ok(started) => (StatusCode::ACCEPTED, Json(started)).into_response(),
        Err(e) => refused(change_status(&e), e.to_string()),
    }
}

/// `DELETE /admin/shards/{name}`: starts draining the shard onto the others; `202` with the
/// migration's id, epoch and plan.
pub async fn drain_shard(State(state): State<Arc<AppState>>, Path(name): Path<String>) -> Response {
    match state.gateway.resharder().drain(&name).await {
        Ok(started) => (StatusCode::ACCEPTED, Json(started)).into_response(),
        Err(e) => refused(change_status(&e), e.to_string()),
    }
}

/// The body of `PATCH /admin/shards/{name}`.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct NewWeight {
    weight: u32,
}

/// `PATCH /admin/shards/{name} {"weight"}`: starts moving ranges to or from the shard for its
/// new weight; `202` with the migration's id, epoch and plan.
pub async fn reweight_shard(
    State(state): State<Arc<AppState>>,
    Path(name): Path<String>,
    body: Bytes,
) -> Response {
    let weight = match serde_json::from_slice::<NewWeight>(&body) {
        Ok(body) => body.weight,
        Err(e) => {
            return refused(
                StatusCode::BAD_REQUEST,
                format!("the body must be {{\"weight\"}}: {e}"),
            );
        }
    };
    match state.gateway.resharder().reweight(&name, weight).await {
        Ok(started) => (StatusCode::ACCEPTED, Json(started)).into_response(),
        Err(e) => refused(change_status(&e), e.to_string()),
    }
}

/// `POST /admin/migrations/{id}/{action}`: `pause`, `resume` or `cancel` (before the cutover:
/// the old placement stays in force and the copies are deleted); answers the migration.
pub async fn control_migration(
    State(state): State<Arc<AppState>>,
    Path((id, action)): Path<(String, String)>,
) -> Response {
    let Ok(number) = id.parse::<i64>() else {
        return refused(StatusCode::NOT_FOUND, format!("no migration {id}"));
    };
    let catalog = &state.gateway.resharder().catalog;
    let outcome = match action.as_str() {
        "pause" | "resume" => match catalog.set_paused(number, action == "pause").await {
            Ok(true) => Ok(()),
            Ok(false) => Err(refused(
                StatusCode::CONFLICT,
                format!("migration {id} does not exist or has ended"),
            )),
            Err(e) => Err(refused(StatusCode::BAD_GATEWAY, e.to_string())),
        },
        "cancel" => match catalog.cancel(number).await {
            Ok(_) => {
                state.gateway.resharder().started.notify_one();
                Ok(())
            }
            Err(e @ CatalogError::NoMigration(_)) => Err(refused(StatusCode::NOT_FOUND, e.to_string())),
            Err(e @ CatalogError::NotCancellable { .. }) => Err(refused(StatusCode::CONFLICT, e.to_string())),
            Err(e) => Err(refused(StatusCode::BAD_GATEWAY, e.to_string())),
        },
        other => Err(refused(
            StatusCode::NOT_FOUND,
            format!("no action {other}: use pause, resume or cancel"),
        )),
    };
    match outcome {
        Ok(()) => migration(State(state), Path(id)).await,
        Err(refusal) => refusal,
    }
}

/// `GET /admin/migrations`: every migration, newest first.
pub async fn migrations(State(state): State<Arc<AppState>>) -> Response {
    match state.gateway.resharder().catalog.migrations().await {
        Ok(list) => Json(list).into_response(),
        Err(e) => refused(StatusCode::BAD_GATEWAY, e.to_string()),
    }
}

/// `GET /admin/migrations/{id}`: one migration with its ranges.
pub async fn migration(State(state): State<Arc<AppState>>, Path(id): Path<String>) -> Response {
    let Ok(number) = id.parse::<i64>() else {
        return refused(StatusCode::NOT_FOUND, format!("no migration {id}"));
    };
    match state.gateway.resharder().catalog.migration(number).await {
        Ok(Some((migration, ranges))) => {
            Json(json!({"migration": migration, "ranges": ranges})).into_response()
        }
        Ok(None) => refused(StatusCode::NOT_FOUND, format!("no migration {id}")),
        Err(e) => refused(StatusCode::BAD_GATEWAY, e.to_string()),
    }
}

/// The request body, or why it is not one.
fn new_shard(body: &[u8]) -> Result<NewShard, String> {
    serde_json::from_slice(body)
        .map_err(|e| format!("the body must be {{\"name\", \"url\", \"weight\"}}: {e}"))
}

fn change_status(error: &ChangeError) -> StatusCode {
    match error {
        ChangeError::NoShard(_) => StatusCode::NOT_FOUND,
        ChangeError::Refused(_) => StatusCode::CONFLICT,
        ChangeError::Candidate(e) => candidate_status(e),
        ChangeError::Plan(PlanError::Ring(_)) => StatusCode::CONFLICT,
        ChangeError::Catalog(CatalogError::MigrationRunning(_) | CatalogError::ShardExists(_)) => {
            StatusCode::CONFLICT
        }
        ChangeError::Plan(PlanError::Source { .. }) | ChangeError::Prepare(_) | ChangeError::Catalog(_) => {
            StatusCode::BAD_GATEWAY
        }
    }
}

async fn plan(state: &AppState, body: &[u8]) -> Result<AddPlan, Response> {
    let request = new_shard(body).map_err(|message| refused(StatusCode::BAD_REQUEST, message))?;
    let current = state.gateway.shard_set();
    let config = state.gateway.config();
    let checked = request
        .check(
            &current,
            state.gateway.tables(),
            config.shard_password(&request.name),
            &config.tls,
        )
        .await
        .map_err(|e| refused(candidate_status(&e), e.to_string()))?;
    plan_add(&current, &checked, state.gateway.tables(), config.routing.vnodes)
        .await
        .map_err(|e| match e {
            PlanError::Ring(_) => refused(StatusCode::CONFLICT, e.to_string()),
            PlanError::Source { .. } => refused(StatusCode::BAD_GATEWAY, e.to_string()),
        })
}

fn candidate_status(error: &CandidateError) -> StatusCode {
    match error {
        CandidateError::Invalid(_) | CandidateError::Unreachable { .. } | CandidateError::TooOld { .. } => {
            StatusCode::BAD_REQUEST
        }
        CandidateError::Duplicate(_) | CandidateError::InUse { .. } => StatusCode::CONFLICT,
        CandidateError::Query { .. } => StatusCode::BAD_GATEWAY,
    }
}
