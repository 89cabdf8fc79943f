//! Thin handlers for changing the shard set: `POST /admin/shards/plan` checks a database that
//! is to join and answers what adding it would move. They sit behind the admin token.

use super::error::error_response;
use super::state::AppState;
use crate::reshard::candidate::{CandidateError, NewShard};
use crate::reshard::plan::{AddPlan, PlanError, plan_add};
use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
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

async fn plan(state: &AppState, body: &[u8]) -> Result<AddPlan, Response> {
    let request: NewShard = serde_json::from_slice(body).map_err(|e| {
        let message = format!("the body must be {{\"name\", \"url\", \"weight\"}}: {e}");
        error_response(StatusCode::BAD_REQUEST, message, json!([]), None)
    })?;
    let current = state.shards.load();
    let config = &state.config;
    let checked = request
        .check(
            &current,
            &state.tables,
            config.shard_password(&request.name),
            &config.tls,
        )
        .await
        .map_err(|e| refused(candidate_status(&e), e.to_string()))?;
    plan_add(&current, &checked, &state.tables, config.routing.vnodes)
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

fn refused(status: StatusCode, message: String) -> Response {
    error_response(status, message, json!([]), None)
}
