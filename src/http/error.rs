//! The one place an error becomes an HTTP answer: a status, the JSON body
//! `{"error": message, "details": [...]}` and, for answers that ask the client to come back,
//! `Retry-After` in whole seconds (at least one).

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use std::time::Duration;

/// The answer refusing an admin request: `status` and `message`, no details.
pub fn refused(status: StatusCode, message: String) -> Response {
    error_response(status, message, json!([]), None)
}

/// The answer to a request whose body paused longer than `timeout` between two reads: `408`,
/// and `Connection: close`, as the rest of the body may still be on its way.
pub fn body_read_timed_out(timeout: Duration) -> Response {
    let message = format!(
        "the request body stalled: no bytes arrived for {}; nothing of it was stored",
        humantime::format_duration(timeout)
    );
    let mut response = refused(StatusCode::REQUEST_TIMEOUT, message);
    response
        .headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}

/// The API's error answer.
pub fn error_response(
    status: StatusCode,
    message: String,
    details: serde_json::Value,
    retry_after: Option<Duration>,
) -> Response {
    let mut response = (status, Json(json!({"error": message, "details": details}))).into_response();
    if let Some(wait) = retry_after {
        let seconds = wait.as_secs_f64().ceil().max(1.0) as u64;
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
    }
    response
}
