//! What every handler shares: built once at start-up, then only read.

use crate::gateway::Gateway;
use std::sync::Arc;
use std::time::Duration;

/// Per-request limits from `[server]` and `[queue]`.
#[derive(Debug, Clone)]
pub struct RequestLimits {
    /// Largest body accepted.
    pub max_body_size: usize,
    /// `Retry-After` of 429 and 503 answers.
    pub retry_after: Duration,
}

/// State shared by every handler; built once in [`crate::server::start`].
pub struct AppState {
    /// The services both front ends serve from.
    pub gateway: Arc<Gateway>,
    /// Request limits.
    pub limits: RequestLimits,
    /// Bytes of request bodies that may be read and decoded at once.
    pub body_budget: tokio::sync::Semaphore,
}
