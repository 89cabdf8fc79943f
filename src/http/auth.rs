//! Who may call each endpoint.
//!
//! - The write API (`/v1/...`) answers the configured users, by `Authorization: Basic` (name
//!   and password) or `Bearer` (a user's token); each handler then asks the [`Caller`] for the
//!   table it touches (403 outside its grants). Without users configured it is open to anyone.
//! - The admin endpoints that change the shard set answer the admin token or an admin user;
//!   with neither configured they are turned off (403) and say how to turn them on.
//! - With users configured, the admin API's reads need the same, except the status page and
//!   what it reads when `admin.public_status` is set. `/healthz` and `/readyz` never ask.
//!
//! Missing or wrong credentials are `401` with `WWW-Authenticate`; each failure from one
//! address is answered a little later than the one before. No answer repeats what was sent.

use super::error::error_response;
use super::state::AppState;
use crate::access::{Caller, Unauthenticated, bearer_token};
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::Response;
use serde_json::json;
use std::net::SocketAddr;
use std::sync::Arc;

/// Lets a request to the write API through with the caller its credentials prove, for the
/// handler to check against the table it touches.
pub async fn require_user(
    State(state): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    mut request: Request,
    next: Next,
) -> Response {
    let sent_token = bearer(&request).is_some();
    match authenticate(&state, peer, request.headers(), "http").await {
        Ok(caller) => {
            request.extensions_mut().insert(caller);
            next.run(request).await
        }
        Err(unauthenticated) => unauthorized(&unauthenticated.to_string(), sent_token),
    }
}

/// Lets a request through with the admin token or an admin user's credentials.
pub async fn require_admin(
    State(state): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    request: Request,
    next: Next,
) -> Response {
    let config = state.gateway.config();
    if config.admin.token.is_none() && !config.users.iter().any(|user| user.admin) {
        let message = "the admin API is turned off: set admin.token in the config or \
                       SHARDGATE_ADMIN_TOKEN and send it as Authorization: Bearer <token>, or \
                       grant a user admin = true";
        return error_response(StatusCode::FORBIDDEN, message.into(), json!([]), None);
    }
    let offered = bearer(&request).map(str::to_string);
    if let Some(token) = &config.admin.token
        && offered.as_deref().is_some_and(|offered| token.matches(offered))
    {
        return next.run(request).await;
    }
    if state.gateway.access().is_open() {
        if offered.is_none() {
            return token_unauthorized("this endpoint needs Authorization: Bearer <admin token>");
        }
        slow_down(&state, peer, &Unauthenticated::Wrong, "admin").await;
        return token_unauthorized("the admin token does not match");
    }
    let sent_token = offered.is_some();
    match authenticate(&state, peer, request.headers(), "admin").await {
        Ok(caller) if caller.is_admin() => next.run(request).await,
        Ok(caller) => {
            let user = caller.name().unwrap_or_default();
            let message = format!("user {user} may not use the admin API: it needs admin = true");
            error_response(StatusCode::FORBIDDEN, message, json!([]), None)
        }
        Err(Unauthenticated::Missing) => unauthorized(
            "this endpoint needs the admin token (Authorization: Bearer) or an admin user",
            sent_token,
        ),
        Err(unauthenticated) => unauthorized(&unauthenticated.to_string(), sent_token),
    }
}

/// The admin API's reads: open without users configured (as the status page has always
/// been), else open only with `admin.public_status`, else for the admin token or an admin user.
pub async fn guard_status(
    state: State<Arc<AppState>>,
    peer: ConnectInfo<SocketAddr>,
    request: Request,
    next: Next,
) -> Response {
    if state.gateway.access().is_open() || state.gateway.config().admin.public_status {
        return next.run(request).await;
    }
    require_admin(state, peer, request, next).await
}

/// The admin API's reads that show rows (dead letters): open without users configured, else
/// for the admin token or an admin user whatever `admin.public_status` says.
pub async fn guard_rows(
    state: State<Arc<AppState>>,
    peer: ConnectInfo<SocketAddr>,
    request: Request,
    next: Next,
) -> Response {
    if state.gateway.access().is_open() {
        return next.run(request).await;
    }
    require_admin(state, peer, request, next).await
}

/// The caller the request's credentials (`headers`) prove. A failure from `peer` on `listener`
/// is counted and waits longer the more it failed lately; a request without credentials is
/// not counted as one.
async fn authenticate(
    state: &AppState,
    peer: SocketAddr,
    headers: &HeaderMap,
    listener: &str,
) -> Result<Caller, Unauthenticated> {
    let access = state.gateway.access();
    let header = headers
        .get(header::AUTHORIZATION)
        .map(|value| value.to_str().unwrap_or_default());
    match access.authenticate(header).await {
        Ok(caller) => {
            access.succeeded_from(peer.ip());
            Ok(caller)
        }
        Err(Unauthenticated::Missing) => Err(Unauthenticated::Missing),
        Err(failure) => {
            slow_down(state, peer, &failure, listener).await;
            Err(failure)
        }
    }
}

/// Records a failed authentication from `peer` on `listener` (`http`, `admin`), counts it, and
/// waits as long as the address's failures lately ask.
async fn slow_down(state: &AppState, peer: SocketAddr, failure: &Unauthenticated, listener: &str) {
    state
        .gateway
        .metrics()
        .auth_failures
        .with_label_values(&[listener, failure.reason()])
        .inc();
    let delay = state.gateway.access().failed_from(peer.ip());
    tracing::info!(
        peer = %peer.ip(),
        reason = %failure,
        delay_ms = delay.as_millis() as u64,
        "authentication failed"
    );
    tokio::time::sleep(delay).await;
}

/// The token of the request's `Authorization: Bearer` header.
fn bearer(request: &Request) -> Option<&str> {
    bearer_token(request.headers().get(header::AUTHORIZATION)?.to_str().ok()?)
}

/// `401` asking for the admin token, when no users are configured.
fn token_unauthorized(message: &str) -> Response {
    challenge(message, &["Bearer"])
}

/// `401` with the schemes the API takes from users; only `Bearer` when a token was sent, so a
/// browser page that sent a wrong token gets its answer rather than a login dialog.
fn unauthorized(message: &str, sent_token: bool) -> Response {
    let basic = "Basic realm=\"shardgate\", charset=\"UTF-8\"";
    let bearer = "Bearer realm=\"shardgate\"";
    match sent_token {
        true => challenge(message, &[bearer]),
        false => challenge(message, &[basic, bearer]),
    }
}

/// `401` with `message` and one `WWW-Authenticate` header per scheme.
fn challenge(message: &str, schemes: &[&'static str]) -> Response {
    let mut response = error_response(StatusCode::UNAUTHORIZED, message.into(), json!([]), None);
    for scheme in schemes {
        response
            .headers_mut()
            .append(header::WWW_AUTHENTICATE, HeaderValue::from_static(scheme));
    }
    response
}
