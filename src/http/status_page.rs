//! `GET /` on the admin listener: the status page, one HTML file with its CSS and script, built
//! into the binary so it works offline and needs no build step. It draws the ring, the shards,
//! hot keys and migrations from the read-only admin endpoints it polls, and holds no secret:
//! shard URLs come redacted from `/admin/shards`, and the page itself needs no token.

use axum::http::header;
use axum::response::IntoResponse;

/// The page.
const PAGE: &str = include_str!("status_page.html");

/// `GET /`: the status page.
pub async fn page() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        PAGE,
    )
}
