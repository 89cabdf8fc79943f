//! Learning of a newer routing table as soon as it is written, instead of waiting for a fence
//! to refuse a batch: a connection to the catalog `LISTEN`s on [`ROUTING_CHANNEL`], and every
//! notification makes the proxy re-read the catalog and publish what is newer. A re-read every
//! `catalog.refresh_interval` covers notifications lost while the connection was down; a lost
//! connection is opened again at that pace.

use super::RoutingSource;
use crate::config::TlsConfig;
use crate::pg::Listener;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

/// The channel every transaction that changes the routing table notifies, with the new epoch
/// as the payload: `NOTIFY shardgate_routing, '<epoch>'`.
pub const ROUTING_CHANNEL: &str = "shardgate_routing";

/// Where to listen, and how often to re-read regardless.
pub struct WatchSettings {
    /// The catalog database's URL.
    pub url: String,
    /// TLS for it.
    pub tls: TlsConfig,
    /// The fallback re-read interval.
    pub refresh_interval: Duration,
}

/// Keeps `source`'s routing current until `shutdown`.
pub async fn watch(source: Arc<RoutingSource>, settings: WatchSettings, shutdown: CancellationToken) {
    let mut listener: Option<Listener> = None;
    let mut reconnect_at = Instant::now();
    let mut ticker = tokio::time::interval(settings.refresh_interval);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        if listener.is_none() && Instant::now() >= reconnect_at {
            match Listener::start(&settings.url, &settings.tls, ROUTING_CHANNEL).await {
                Ok(started) => {
                    listener = Some(started);
                    // A change may have been written while nobody listened.
                    refresh(&source).await;
                }
                Err(reason) => {
                    tracing::warn!(%reason, "cannot listen for routing changes; re-reading on a timer");
                    reconnect_at = Instant::now() + settings.refresh_interval;
                }
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = ticker.tick() => refresh(&source).await,
            notified = next_notification(&mut listener) => match notified {
                Some(_) => refresh(&source).await,
                None => {
                    tracing::warn!("the connection listening for routing changes ended");
                    listener = None;
                    reconnect_at = Instant::now() + settings.refresh_interval;
                }
            },
        }
    }
}

/// The next notification; never resolves without a listener.
async fn next_notification(listener: &mut Option<Listener>) -> Option<String> {
    match listener {
        Some(listener) => listener.next().await,
        None => std::future::pending().await,
    }
}

async fn refresh(source: &RoutingSource) {
    if let Err(e) = source.refresh().await {
        tracing::warn!(error = %e, "cannot re-read the routing table");
    }
}
