//! The PostgreSQL-protocol front end: psql, drivers and pgbench write through shardgate as if
//! it were a Postgres server (DESIGN.md section 10).
//!
//! The protocol itself (startup, SCRAM-SHA-256, TLS, simple and extended query, the COPY
//! sub-protocol) is the `pgwire` crate's; this module decides what each statement does and
//! hands rows to the same write path as the HTTP API (through the [`Gateway`] both hold), so validation, placement and
//! acknowledgement are written once. It never validates or places a row itself.
//!
//! The listener caps its sessions (`postgres.max_sessions`, `53300` past it) and closes a
//! session that has sent nothing for `postgres.idle_timeout`.

mod auth;
pub mod block;
mod cells;
mod connection;
pub mod copy_in;
mod copy_out;
mod errors;
mod insert;
mod keyed;
pub mod metadata;
mod params;
mod pending;
mod returning;
mod select;
mod session;
mod statement;
mod types;

use crate::config::PostgresConfig;
use crate::gateway::Gateway;
use crate::tls::serving::{ServedCertificate, ServingTlsError};
use auth::{Users, server_parameters};
use pgwire::api::ConnectionManager;
use pgwire::api::auth::DefaultServerParameterProvider;
use pgwire::api::auth::sasl::SASLAuthStartupHandler;
use pgwire::api::auth::sasl::scram::ScramAuth;
use pgwire::api::cancel::DefaultCancelHandler;
use pgwire::tokio::TlsAcceptor;
use session::Session;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Why the listener could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum ListenerError {
    /// The certificate or key could not be read or used.
    #[error("the Postgres listener's TLS: {0}")]
    Tls(#[from] ServingTlsError),
}

/// What sessions write through: the services shared with the HTTP API, and the listener's
/// own limits.
pub struct Services {
    /// The declared tables, the write path and the rest both front ends share.
    pub gateway: Arc<Gateway>,
    /// How much of a COPY stream is queued at once.
    pub chunks: copy_in::ChunkLimits,
    /// Where transaction blocks spill, and how much one may hold.
    pub blocks: Arc<block::BlockLimits>,
    /// The database that answers queries of the system catalogs.
    pub metadata: Arc<metadata::Metadata>,
}

/// The bound listener and what its sessions share.
pub struct PostgresListener {
    listener: TcpListener,
    services: Arc<Services>,
    users: Arc<Users>,
    /// The certificate offered to clients that ask for TLS, and the acceptor serving it.
    tls: Option<(TlsAcceptor, Arc<ServedCertificate>)>,
    sessions: Arc<Semaphore>,
    idle_timeout: Duration,
    /// Each logged-in session's process id and secret key, for `CancelRequest`s.
    connections: Arc<ConnectionManager>,
}

impl PostgresListener {
    /// The listener on `listener`, for the limits of `config`, offering TLS with
    /// `certificate` when there is one.
    pub fn new(
        listener: TcpListener,
        config: &PostgresConfig,
        services: Services,
        certificate: Option<Arc<ServedCertificate>>,
    ) -> Result<PostgresListener, ListenerError> {
        let tls = match certificate {
            Some(certificate) => Some((certificate.acceptor(&[])?, certificate)),
            None => None,
        };
        let users = Arc::new(Users(services.gateway.access().clone()));
        Ok(PostgresListener {
            listener,
            services: Arc::new(services),
            users,
            tls,
            sessions: Arc::new(Semaphore::new(config.max_sessions)),
            idle_timeout: config.idle_timeout,
            connections: Arc::new(ConnectionManager::new()),
        })
    }

    /// Accepts sessions until `shutdown`, then waits for the sessions open to end.
    pub async fn serve(self, shutdown: CancellationToken) {
        let sessions = TaskTracker::new();
        loop {
            let stream = tokio::select! {
                accepted = self.listener.accept() => match accepted {
                    Ok((stream, _)) => stream,
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot accept a Postgres connection");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
                () = shutdown.cancelled() => break,
            };
            let _ = stream.set_nodelay(true);
            let Ok(permit) = self.sessions.clone().try_acquire_owned() else {
                sessions.spawn(refuse_too_many(stream));
                continue;
            };
            let session = self.session(stream, shutdown.clone());
            sessions.spawn(async move {
                session.await;
                drop(permit);
            });
        }
        sessions.close();
        sessions.wait().await;
    }

    /// One session on `stream`, ended by the idle timeout or `shutdown`.
    fn session(&self, stream: TcpStream, shutdown: CancellationToken) -> impl Future<Output = ()> + use<> {
        let handlers = connection::Handlers {
            startup: Arc::new(self.startup_handler()),
            access: self.services.gateway.access().clone(),
            metrics: self.services.gateway.metrics().clone(),
            session: Arc::new(Session::new(self.services.clone())),
            cancels: Arc::new(DefaultCancelHandler::new(self.connections.clone())),
        };
        let tls = self.tls.as_ref().map(|(acceptor, _)| acceptor.clone());
        let idle_timeout = self.idle_timeout;
        async move {
            if let Err(e) = connection::serve(stream, tls, handlers, idle_timeout, shutdown).await {
                tracing::debug!(error = %e, "a Postgres session ended with an error");
            }
        }
    }

    fn startup_handler(&self) -> SASLAuthStartupHandler<DefaultServerParameterProvider> {
        let mut scram = ScramAuth::new(self.users.clone());
        scram.set_iterations(auth::SCRAM_ITERATIONS as usize);
        if let Some((_, certificate)) = &self.tls {
            // Offers SCRAM-SHA-256-PLUS (channel binding) over TLS, bound to the certificate
            // served now; it was read and used by rustls already, so it parses here too.
            let _ = scram.configure_certificate(&certificate.chain_pem());
        }
        SASLAuthStartupHandler::new(Arc::new(server_parameters()))
            .with_scram(scram)
            .with_connection_manager(self.connections.clone())
    }
}

/// Answers a connection past `postgres.max_sessions` with Postgres's own refusal,
/// `FATAL 53300 sorry, too many clients already`, before reading anything from it.
async fn refuse_too_many(mut stream: TcpStream) {
    let mut fields = Vec::new();
    for (tag, value) in [
        (b'S', "FATAL"),
        (b'V', "FATAL"),
        (b'C', errors::TOO_MANY_CONNECTIONS),
        (b'M', "sorry, too many clients already"),
    ] {
        fields.push(tag);
        fields.extend_from_slice(value.as_bytes());
        fields.push(0);
    }
    fields.push(0);
    let mut message = vec![b'E'];
    message.extend_from_slice(&(fields.len() as u32 + 4).to_be_bytes());
    message.extend_from_slice(&fields);
    let _ = stream.write_all(&message).await;
    let _ = stream.shutdown().await;
}
