//! The accept loop both listeners run: HTTP/1.1 connections served by hyper with a bound on
//! how long a client may take to send its headers and how long it may pause inside a body.
//!
//! Without them a client that stalls after its first bytes keeps its connection, and its share
//! of the in-flight body budget, for as long as it likes. A stalled header read closes the
//! connection (no request exists to answer); a stalled body read fails the handler's read, and
//! the request is answered `408` with `Connection: close` whatever the handler made of the
//! failure, so nothing of it is stored and its budget goes back when the handler returns.

use super::error::body_read_timed_out;
use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::Request;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;
use tower_http::timeout::{TimeoutBody, TimeoutError};

/// How long an accept that failed (out of file descriptors, say) waits before the next.
const ACCEPT_RETRY: Duration = Duration::from_millis(100);

/// How long clients may take to send a request, on each listener.
#[derive(Debug, Clone, Copy)]
pub struct ReadTimeouts {
    /// From the start of a request to the end of its headers.
    pub header: Duration,
    /// Between two reads of a body.
    pub body: Duration,
}

/// Serves `router` on `listener` until `shutdown`, then waits for the requests in flight. With
/// `tls`, every connection is a TLS one; a client speaking plain HTTP to it is answered `400`
/// in plain text and closed.
pub(super) async fn serve(
    listener: TcpListener,
    router: Router,
    tls: Option<TlsAcceptor>,
    timeouts: ReadTimeouts,
    shutdown: CancellationToken,
) {
    let graceful = GracefulShutdown::new();
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(timeouts.header);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot accept a connection");
                    tokio::time::sleep(ACCEPT_RETRY).await;
                    continue;
                }
            },
            () = shutdown.cancelled() => break,
        };
        let router = router.clone();
        let service =
            hyper::service::service_fn(move |request| answer(router.clone(), request, peer, timeouts.body));
        let (builder, watcher, tls) = (builder.clone(), graceful.watcher(), tls.clone());
        tokio::spawn(async move {
            let served = match tls {
                None => {
                    watcher
                        .watch(builder.serve_connection(TokioIo::new(stream), service))
                        .await
                }
                Some(acceptor) => match handshake(stream, &acceptor, timeouts.header).await {
                    Some(stream) => {
                        watcher
                            .watch(builder.serve_connection(TokioIo::new(stream), service))
                            .await
                    }
                    None => return,
                },
            };
            if let Err(e) = served {
                tracing::debug!(error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    graceful.shutdown().await;
}

/// The first byte of a TLS connection: a handshake record.
const TLS_HANDSHAKE: u8 = 0x16;

/// The TLS session of `stream`, within `timeout`; `None` when the client spoke plain HTTP (it
/// is told to use https), failed the handshake or was too slow.
async fn handshake(
    mut stream: TcpStream,
    acceptor: &TlsAcceptor,
    timeout: Duration,
) -> Option<tokio_rustls::server::TlsStream<TcpStream>> {
    let mut first = [0u8; 1];
    match tokio::time::timeout(timeout, stream.peek(&mut first)).await {
        Ok(Ok(1)) if first[0] == TLS_HANDSHAKE => {}
        Ok(Ok(1)) => {
            let _ = stream.write_all(plain_http_refused().as_bytes()).await;
            let _ = stream.shutdown().await;
            return None;
        }
        _ => return None,
    }
    match tokio::time::timeout(timeout, acceptor.accept(stream)).await {
        Ok(Ok(stream)) => Some(stream),
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "a TLS handshake failed");
            None
        }
        Err(_) => None,
    }
}

/// The answer to plain HTTP on a TLS port, with a JSON body like every other refusal.
fn plain_http_refused() -> String {
    let body = r#"{"error":"this port speaks HTTPS: send the request with https://","details":[]}"#;
    format!(
        "HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\nconnection: close\r\n\
         content-length: {}\r\n\r\n{body}",
        body.len()
    )
}

/// Answers one request from `peer` with `router` (handlers read the address as
/// `ConnectInfo`), its body bounded by `body_timeout` between reads.
async fn answer(
    router: Router,
    mut request: Request<Incoming>,
    peer: SocketAddr,
    body_timeout: Duration,
) -> Result<axum::response::Response, std::convert::Infallible> {
    request.extensions_mut().insert(ConnectInfo(peer));
    let stalled = Arc::new(AtomicBool::new(false));
    let seen = stalled.clone();
    let request = request.map(|body| {
        Body::new(TimeoutBody::new(body_timeout, body).map_err(move |e| {
            if e.is::<TimeoutError>() {
                seen.store(true, Ordering::Relaxed);
            }
            e
        }))
    });
    let response = router.oneshot(request).await?;
    if stalled.load(Ordering::Relaxed) {
        return Ok(body_read_timed_out(body_timeout));
    }
    Ok(response)
}
