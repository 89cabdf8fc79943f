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
mod serve;
pub mod state;
pub mod status_page;
pub mod write;
pub mod write_status;

pub use serve::ReadTimeouts;
use state::AppState;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

/// The two bound listeners.
pub struct Listeners {
    /// The write API (rows, queries, health).
    pub write: TcpListener,
    /// The admin API (shards, metrics, health).
    pub admin: TcpListener,
    /// How long a client may take to send a request, on both.
    pub timeouts: ReadTimeouts,
    /// TLS on both, when `[server.tls]` is set.
    pub tls: Option<TlsAcceptor>,
}

impl Listeners {
    /// Serves both until `shutdown`, then lets in-flight requests finish. When this returns, the
    /// routers and the state they held are dropped.
    pub async fn serve(self, state: Arc<AppState>, shutdown: CancellationToken) {
        let write = serve::serve(
            self.write,
            routes::write_router(state.clone()),
            self.tls.clone(),
            self.timeouts,
            shutdown.clone(),
        );
        let admin = serve::serve(
            self.admin,
            routes::admin_router(state),
            self.tls,
            self.timeouts,
            shutdown,
        );
        tokio::join!(write, admin);
    }
}
