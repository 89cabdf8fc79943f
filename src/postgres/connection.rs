//! One client connection: TLS negotiated, then pgwire's messages read and handled one at a
//! time until the client leaves, falls silent for the idle timeout, or the server shuts down.
//!
//! Replies are held until the session next waits for the client ([`HeldReplies`]): pgwire
//! flushes after every message it sends, so a pipelined `Bind`/`Execute`/`Sync` would cost
//! three writes and three packets; held, the replies to one round of the client's messages
//! go out in one. Postgres does the same (it flushes when it is about to read).
//!
//! A pipeline of `INSERT`s (JDBC's batches, psycopg's `executemany`) is answered statement by
//! statement as each is queued, while the client has sent more of it; its last statement, or
//! its `Sync`, waits until all of them committed, so their rows share group commits rather
//! than waiting for one each. Postgres runs such a pipeline as one implicit transaction,
//! acknowledged at its end, which is when this one is acknowledged too.

use super::errors;
use super::session::{Prepared, Session};
use crate::access::Access;
use crate::metrics::Metrics;
use futures_util::{SinkExt, StreamExt};
use pgwire::api::auth::StartupHandler;
use pgwire::api::cancel::DefaultCancelHandler;
use pgwire::api::{ClientInfo, PgWireConnectionState};
use pgwire::error::{ErrorInfo, PgWireError};
use pgwire::messages::{PgWireBackendMessage, PgWireFrontendMessage};
use pgwire::tokio::TlsAcceptor;
use pgwire::tokio::server::{
    MaybeTls, PgWireMessageServerCodec, negotiate_tls, process_error, process_message,
};
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_util::codec::{Framed, FramedParts};
use tokio_util::sync::CancellationToken;

/// How long a client has to finish logging in (Postgres's `authentication_timeout`).
const STARTUP_TIMEOUT: Duration = Duration::from_secs(60);

/// The first byte of a `Sync` message.
const SYNC: u8 = b'S';

/// Bytes of replies held at most; past them they are written at once.
const MAX_HELD_BYTES: usize = 64 << 10;

/// What a session's messages are handled by.
pub struct Handlers<A> {
    /// Logs the client in.
    pub startup: Arc<A>,
    /// The users, whose failed logins are slowed per client address.
    pub access: Arc<Access>,
    /// Where failed logins are counted.
    pub metrics: Arc<Metrics>,
    /// Carries out its statements and COPYs.
    pub session: Arc<Session>,
    /// Passes a `CancelRequest` to the session it names.
    pub cancels: Arc<DefaultCancelHandler>,
}

/// Why a session ended on the server's side, told to the client as Postgres tells it.
enum Ending {
    Idle,
    Shutdown,
}

/// Serves one client on `stream` until it leaves, is silent for `idle_timeout` while logged
/// in, or `shutdown` fires between two of its messages.
pub async fn serve<A>(
    stream: TcpStream,
    tls: Option<TlsAcceptor>,
    handlers: Handlers<A>,
    idle_timeout: Duration,
    shutdown: CancellationToken,
) -> io::Result<()>
where
    A: StartupHandler + 'static,
{
    let negotiated = tokio::select! {
        negotiated = negotiate_tls(stream, tls) => negotiated?,
        () = tokio::time::sleep(STARTUP_TIMEOUT) => return Ok(()),
        () = shutdown.cancelled() => return Ok(()),
    };
    let Some(socket) = negotiated else {
        return Ok(());
    };
    let mut socket = hold_replies(socket);
    // One timer and one shutdown waiter for the whole session, not one per message: the
    // timer fires at least every idle timeout and is pushed back when it fires early.
    let shutting_down = shutdown.cancelled();
    tokio::pin!(shutting_down);
    let started = tokio::time::Instant::now();
    let silence = tokio::time::sleep(idle_timeout.min(STARTUP_TIMEOUT));
    tokio::pin!(silence);
    let mut last_message = started;
    loop {
        let message = tokio::select! {
            message = socket.next() => message,
            () = &mut silence => {
                let logging_in = matches!(
                    socket.state(),
                    PgWireConnectionState::AwaitingStartup | PgWireConnectionState::AuthenticationInProgress
                );
                let deadline = match logging_in {
                    true => started + STARTUP_TIMEOUT,
                    false => last_message + idle_timeout,
                };
                let now = tokio::time::Instant::now();
                if now < deadline {
                    silence.as_mut().reset(deadline.min(now + idle_timeout));
                    continue;
                }
                if !logging_in {
                    tracing::info!(timeout = %crate::units::format_duration(idle_timeout), "closed an idle Postgres session");
                    end(&mut socket, Ending::Idle).await;
                }
                break;
            }
            () = &mut shutting_down => {
                end(&mut socket, Ending::Shutdown).await;
                break;
            }
        };
        last_message = tokio::time::Instant::now();
        let Some(Ok(message)) = message else {
            break;
        };
        if !handle(&mut socket, message, &handlers).await? {
            break;
        }
    }
    socket.close().await
}

/// Handles one message; false when the session ends with it. An `Execute` is told whether
/// the client sent more of its pipeline after it (so an `INSERT` may be answered once queued);
/// a `Sync` first waits for the commits of the pipeline it ends, and answers a refusal among
/// them not told yet before `ReadyForQuery`.
async fn handle<A>(
    socket: &mut Socket,
    message: PgWireFrontendMessage,
    handlers: &Handlers<A>,
) -> io::Result<bool>
where
    A: StartupHandler + 'static,
{
    if matches!(message, PgWireFrontendMessage::Terminate(_)) {
        return Ok(false);
    }
    if matches!(
        message,
        PgWireFrontendMessage::Sync(_) | PgWireFrontendMessage::Query(_)
    ) && let Err(refused) = handlers.session.end_pipeline().await
        && matches!(message, PgWireFrontendMessage::Sync(_))
        && !matches!(socket.state(), PgWireConnectionState::AwaitingSync)
    {
        process_error(socket, refused, false).await?;
        return Ok(true);
    }
    let more_follows = matches!(message, PgWireFrontendMessage::Execute(_))
        && socket.read_buffer().first().is_some_and(|&kind| kind != SYNC);
    handlers.session.set_more_follows(more_follows);
    let is_cancel_request = matches!(message, PgWireFrontendMessage::CancelRequest(_));
    let is_extended_query = match socket.state() {
        PgWireConnectionState::CopyInProgress(is_extended_query) => is_extended_query,
        _ => message.is_extended_query(),
    };
    let state_before = socket.state();
    let handled = process_message(
        message,
        socket,
        handlers.startup.clone(),
        handlers.session.clone(),
        handlers.session.clone(),
        handlers.session.clone(),
        handlers.cancels.clone(),
    )
    .await;
    let logging_in = matches!(
        state_before,
        PgWireConnectionState::AwaitingStartup | PgWireConnectionState::AuthenticationInProgress
    );
    if logging_in {
        note_login(socket, handlers, handled.as_ref().err()).await;
    }
    if let Err(error) = handled {
        let is_fatal = error.is_fatal();
        process_error(socket, error, is_extended_query).await?;
        if is_fatal {
            return Ok(false);
        }
    }
    Ok(!is_cancel_request)
}

/// Records how a login step from the client went: a failed password (or SCRAM proof) waits
/// longer the more that address failed lately, a login that succeeded forgets its failures.
async fn note_login<A>(socket: &Socket, handlers: &Handlers<A>, failure: Option<&PgWireError>) {
    let (access, address) = (&handlers.access, socket.socket_addr().ip());
    match failure {
        Some(failed @ (PgWireError::InvalidPassword(_) | PgWireError::InvalidScramMessage(_))) => {
            let reason = match failed {
                PgWireError::InvalidPassword(_) => "wrong",
                _ => "malformed",
            };
            handlers
                .metrics
                .auth_failures
                .with_label_values(&["postgres", reason])
                .inc();
            let delay = access.failed_from(address);
            tracing::info!(peer = %address, delay_ms = delay.as_millis() as u64, "Postgres login failed");
            tokio::time::sleep(delay).await;
        }
        None if matches!(socket.state(), PgWireConnectionState::ReadyForQuery) => {
            access.succeeded_from(address);
        }
        _ => {}
    }
}

/// Tells the client why the server ends its session, as Postgres words it.
async fn end<T, C>(socket: &mut Framed<T, C>, ending: Ending)
where
    Framed<T, C>: SinkExt<PgWireBackendMessage> + Unpin,
{
    let (code, message) = match ending {
        Ending::Idle => ("57P05", "terminating connection due to idle-session timeout"),
        Ending::Shutdown => (
            errors::ADMIN_SHUTDOWN,
            "terminating connection due to administrator command",
        ),
    };
    let info = ErrorInfo::new("FATAL".into(), code.into(), message.into());
    let _ = socket
        .send(PgWireBackendMessage::ErrorResponse(info.into()))
        .await;
}

/// A session's connection, as pgwire's handlers write to it.
type Socket = Framed<HeldReplies<MaybeTls>, PgWireMessageServerCodec<Arc<Prepared>>>;

/// The negotiated connection, its replies held until the session reads.
fn hold_replies<S>(
    socket: Framed<MaybeTls, PgWireMessageServerCodec<S>>,
) -> Framed<HeldReplies<MaybeTls>, PgWireMessageServerCodec<S>> {
    let parts = socket.into_parts();
    let mut held = FramedParts::new(HeldReplies::new(parts.io), parts.codec);
    held.read_buf = parts.read_buf;
    held.write_buf = parts.write_buf;
    Framed::from_parts(held)
}

/// A connection whose writes are held, and sent when it is next read from, shut down, or
/// holds [`MAX_HELD_BYTES`]: a flush alone sends nothing.
pub struct HeldReplies<T> {
    inner: T,
    held: Vec<u8>,
    /// Bytes of `held` already sent.
    sent: usize,
}

impl<T: AsyncWrite + Unpin> HeldReplies<T> {
    fn new(inner: T) -> HeldReplies<T> {
        HeldReplies {
            inner,
            held: Vec::new(),
            sent: 0,
        }
    }

    /// Sends every held byte, then flushes the connection under it.
    fn poll_send_held(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.sent < self.held.len() {
            let written = ready!(Pin::new(&mut self.inner).poll_write(cx, &self.held[self.sent..]))?;
            if written == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.sent += written;
        }
        self.held.clear();
        self.sent = 0;
        Pin::new(&mut self.inner).poll_flush(cx)
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin> AsyncRead for HeldReplies<T> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.held.is_empty() {
            ready!(this.poll_send_held(cx))?;
        }
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for HeldReplies<T> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.held.len() >= MAX_HELD_BYTES {
            ready!(this.poll_send_held(cx))?;
        }
        this.held.extend_from_slice(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_send_held(cx))?;
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}
