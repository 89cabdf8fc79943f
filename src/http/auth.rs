//! The admin token: endpoints that change the shard set answer only requests carrying
//! `Authorization: Bearer <admin.token>`. Without a configured token they are turned off (403)
//! and say how to turn them on; a missing or wrong token is 401 with `WWW-Authenticate: Bearer`.

use super::error::error_response;
use super::state::AppState;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::Response;
use serde_json::json;
use std::sync::Arc;

/// Lets the request through only with the configured admin token.
pub async fn require_admin_token(
    State(state): State<Arc<AppState>>,
    request: Request,
    next: Next,
) -> Response {
    let Some(token) = &state.gateway.config().admin.token else {
        let message = "changing the shard set through the admin API is turned off: set admin.token \
                       in the config or SHARDGATE_ADMIN_TOKEN, then send it as \
                       Authorization: Bearer <token>";
        return error_response(StatusCode::FORBIDDEN, message.into(), json!([]), None);
    };
    let offered = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "));
    match offered {
        Some(offered) if token.matches(offered.trim()) => next.run(request).await,
        Some(_) => unauthorized("the admin token does not match"),
        None => unauthorized("this endpoint needs Authorization: Bearer <admin token>"),
    }
}

fn unauthorized(message: &str) -> Response {
    let mut response = error_response(StatusCode::UNAUTHORIZED, message.into(), json!([]), None);
    response
        .headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    response
}
