//! The HTTP layer, the only one that knows HTTP (and the only importer of axum): the shared
//! request state, the two listeners' routers, the one mapping from an error to its answer, and
//! thin handlers for writes, queries and admin. Below it, ingest, query, routing, catalog and
//! shards return domain errors; the handlers here give them their status codes.

pub mod admin;
pub mod auth;
pub mod dead_letters;
pub mod encoding;
pub mod error;
pub mod error_body;
pub mod hot_keys;
pub mod query;
pub mod reshard;
pub mod routes;
pub mod state;
pub mod status_page;
pub mod write;
pub mod write_status;

use state::AppState;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// The two bound listeners.
pub struct Listeners {
    /// The write API (rows, queries, health).
    pub write: TcpListener,
    /// The admin API (shards, metrics, health).
    pub admin: TcpListener,
}

impl Listeners {
    /// Serves both until `shutdown`, then lets in-flight requests finish. When this returns, the
    /// routers and the state they held are dropped.
    pub async fn serve(self, state: Arc<AppState>, shutdown: CancellationToken) {
        let write = axum::serve(self.write, routes::write_router(state.clone()))
            .with_graceful_shutdown(shutdown.clone().cancelled_owned());
        let admin = axum::serve(self.admin, routes::admin_router(state))
            .with_graceful_shutdown(shutdown.cancelled_owned());
        let (write, admin) = tokio::join!(write, admin);
        for result in [write, admin] {
            if let Err(e) = result {
                tracing::error!(error = %e, "listener failed");
            }
        }
    }
}
