//! Learning of a newer routing table as soon as it is written, instead of waiting for a fence
//! to refuse a batch: a connection to the catalog `LISTEN`s on [`ROUTING_CHANNEL`], and every
//! notification makes the proxy re-read the catalog and publish what is newer. A re-read every
//! `catalog.refresh_interval` covers notifications lost while the connection was down; a lost
//! connection is opened again at that pace. A writer whose batch a fence refused asks for a
//! re-read through a [`RefreshHandle`] and waits for it, so the client's retry routes anew.

use super::RoutingSource;
use crate::config::TlsConfig;
use crate::pg::Listener;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

/// Re-reads asked for at once before the askers wait.
const PENDING_REQUESTS: usize = 64;

/// Asks the watcher to re-read the catalog now. Cloned into every shard's writers; once the
/// watcher has stopped, asking returns at once.
#[derive(Clone)]
pub struct RefreshHandle {
    requests: mpsc::Sender<oneshot::Sender<()>>,
}

/// The watcher's side of [`RefreshHandle`]: the re-reads asked for.
pub struct RefreshRequests {
    requests: mpsc::Receiver<oneshot::Sender<()>>,
}

impl RefreshHandle {
    /// A handle and the requests it sends, to give to [`watch`].
    pub fn new() -> (RefreshHandle, RefreshRequests) {
        let (sender, receiver) = mpsc::channel(PENDING_REQUESTS);
        (
            RefreshHandle { requests: sender },
            RefreshRequests { requests: receiver },
        )
    }

    /// Has the catalog re-read, and what is newer published, before returning.
    pub async fn refresh(&self) {
        let (done, finished) = oneshot::channel();
        if self.requests.send(done).await.is_ok() {
            let _ = finished.await;
        }
    }
}

impl RefreshRequests {
    /// Waits for a request, then takes every other one already waiting.
    async fn next(&mut self) -> Option<Vec<oneshot::Sender<()>>> {
        let mut askers = vec![self.requests.recv().await?];
        while let Ok(asker) = self.requests.try_recv() {
            askers.push(asker);
        }
        Some(askers)
    }
}

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

/// Keeps `source`'s routing current until `shutdown`, re-reading the catalog on every
/// notification, every refresh interval and whenever `requests` ask.
pub async fn watch(
    source: Arc<RoutingSource>,
    settings: WatchSettings,
    mut requests: RefreshRequests,
    shutdown: CancellationToken,
) {
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
            Some(askers) = requests.next() => {
                refresh(&source).await;
                for asker in askers {
                    let _ = asker.send(());
                }
            }
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
