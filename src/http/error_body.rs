//! Every answer that is not a success carries `{"error": ..., "details": [...]}`, whoever made it.
//!
//! The handlers build that body themselves. What they do not build is what the router and the
//! extractors answer on their own: `405 Method Not Allowed` (an empty body, with `Allow`), a path
//! segment that is not UTF-8, a body over an extractor's limit. [`with_json_error_bodies`] wraps
//! each listener's whole router (outside it, so the router's `Allow` header is already set) and
//! rewrites exactly those answers: a refusal whose body is not already JSON keeps
//! its status and headers and gets the JSON body, its text (or, when empty, a sentence naming the
//! method and the allowed ones) as the `error`.

use super::error::error_response;
use axum::Router;
use axum::extract::Request;
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::Response;
use serde_json::json;

/// Longest plain-text refusal carried over into the `error` field; the router's own texts are
/// one line, so anything longer is cut rather than echoed whole.
const MAX_MESSAGE_BYTES: usize = 1024;

/// Wraps `router`, whose state is set, so that its refusals that are not JSON get the API's JSON
/// error body.
pub fn with_json_error_bodies(router: Router) -> Router {
    Router::new()
        .fallback_service(router)
        .layer(axum::middleware::from_fn(json_error_bodies))
}

async fn json_error_bodies(request: Request, next: Next) -> Response {
    // Both are cheap to clone (a known method is a tag, a URI shares its bytes): no allocation
    // on the path of every answer that succeeds.
    let method = request.method().clone();
    let uri = request.uri().clone();
    let response = next.run(request).await;
    if response.status().is_success() || response.status().is_informational() || is_json(response.headers()) {
        return response;
    }
    let (parts, body) = response.into_parts();
    let text = match axum::body::to_bytes(body, MAX_MESSAGE_BYTES).await {
        Ok(bytes) => String::from_utf8_lossy(&bytes).trim().to_string(),
        Err(_) => String::new(),
    };
    let message = if text.is_empty() {
        describe(parts.status, &method, uri.path(), &parts.headers)
    } else {
        text
    };
    let mut answer = error_response(parts.status, message, json!([]), None);
    for (name, value) in parts.headers.iter() {
        if name != header::CONTENT_LENGTH && name != header::CONTENT_TYPE {
            answer.headers_mut().append(name.clone(), value.clone());
        }
    }
    answer
}

fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"))
}

/// The sentence for a refusal the router sent without any text.
fn describe(status: StatusCode, method: &Method, path: &str, headers: &HeaderMap) -> String {
    if status == StatusCode::METHOD_NOT_ALLOWED {
        let allowed = headers
            .get(header::ALLOW)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        return format!("method {method} is not allowed on {path}; allowed: {allowed}");
    }
    let reason = status.canonical_reason().unwrap_or("error").to_lowercase();
    format!("{reason}: {method} {path}")
}
