//! Subcommands that need more than a few lines.

pub mod admin;
pub mod bench;
pub mod dev;
pub mod https;
pub mod login;
pub mod query;
pub mod serve;

/// Resolves when the process receives SIGINT (Ctrl-C) or SIGTERM; each SIGHUP meanwhile makes
/// `server` read its listeners' certificates again.
pub async fn serve_until_signal(server: &shardgate::server::RunningServer) {
    use tokio::signal::unix::{SignalKind, signal};
    let mut terminate =
        signal(SignalKind::terminate()).expect("installing a SIGTERM handler succeeds in a tokio runtime");
    let mut hang_up =
        signal(SignalKind::hangup()).expect("installing a SIGHUP handler succeeds in a tokio runtime");
    let interrupt = tokio::signal::ctrl_c();
    tokio::pin!(interrupt);
    loop {
        tokio::select! {
            _ = &mut interrupt => return tracing::info!("SIGINT received; shutting down"),
            _ = terminate.recv() => return tracing::info!("SIGTERM received; shutting down"),
            _ = hang_up.recv() => {
                tracing::info!("SIGHUP received; reading the listeners' certificates again");
                server.reload_certificates();
            }
        }
    }
}
