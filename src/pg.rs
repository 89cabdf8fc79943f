//! Connecting to Postgres: pools with the configured TLS, one-off connections, and errors and
//! URLs put in words fit for a log or an answer (causes kept, passwords redacted). Knows no
//! shard or table.

use crate::config::TlsConfig;
use deadpool_postgres::{Hook, HookError, Manager, ManagerConfig, Pool, PoolError, RecyclingMethod, Runtime};
use std::sync::Arc;
use std::time::Duration;
use tokio_postgres::NoTls;
use tokio_postgres::config::SslMode;
use tokio_postgres_rustls::MakeRustlsConnect;

/// How to open connections to one Postgres database.
pub struct PoolSettings<'a> {
    /// Postgres URL.
    pub url: &'a str,
    /// A database to connect to instead of the URL's.
    pub database: Option<&'a str>,
    /// Most connections open at once.
    pub max_size: usize,
    /// Longest wait to open one.
    pub connect_timeout: Duration,
    /// Longest wait for a free one when all are in use (`None`: no limit).
    pub wait_timeout: Option<Duration>,
    /// `application_name` the server shows for them.
    pub application_name: &'a str,
    /// SQL each new connection runs once (may be empty).
    pub session_setup: &'a str,
    /// A password to use instead of the URL's (from the environment).
    pub password: Option<&'a str>,
    /// How connections whose URL requires TLS check the server.
    pub tls: &'a TlsConfig,
}

/// The TLS connector for a connection to `pg_config`: rustls when its URL says
/// `sslmode=require`, none otherwise.
fn tls_connector(
    pg_config: &tokio_postgres::Config,
    tls: &TlsConfig,
) -> Result<Option<MakeRustlsConnect>, String> {
    match pg_config.get_ssl_mode() {
        SslMode::Require => crate::tls::connector(tls).map(Some).map_err(|e| e.to_string()),
        _ => Ok(None),
    }
}

/// Opens one connection outside any pool (for tools such as `shardgate bench`), with
/// `password` instead of the URL's when given; the connection's task runs in the background.
pub async fn connect_once(
    url: &str,
    password: Option<&str>,
    tls: &TlsConfig,
) -> Result<tokio_postgres::Client, String> {
    connect_driven(url, password, tls, None).await
}

/// A connection that `LISTEN`s on a channel; dropping it closes the connection.
pub struct Listener {
    _client: tokio_postgres::Client,
    notifications: tokio::sync::mpsc::UnboundedReceiver<String>,
}

impl Listener {
    /// Opens a connection and `LISTEN`s on `channel`.
    pub async fn start(url: &str, tls: &TlsConfig, channel: &str) -> Result<Listener, String> {
        let (sender, notifications) = tokio::sync::mpsc::unbounded_channel();
        let client = connect_driven(url, None, tls, Some(sender)).await?;
        client
            .batch_execute(&format!("LISTEN {channel}"))
            .await
            .map_err(|e| format!("cannot LISTEN on {channel}: {}", describe_error(&e)))?;
        Ok(Listener {
            _client: client,
            notifications,
        })
    }

    /// The payload of the next notification; `None` once the connection has ended.
    pub async fn next(&mut self) -> Option<String> {
        self.notifications.recv().await
    }
}

/// Opens one connection, over TLS when its URL asks for it, and drives it in the background,
/// sending the payload of each notification to `notifications` when given.
async fn connect_driven(
    url: &str,
    password: Option<&str>,
    tls: &TlsConfig,
    notifications: Option<Notifications>,
) -> Result<tokio_postgres::Client, String> {
    let mut pg_config: tokio_postgres::Config =
        url.parse().map_err(|e: tokio_postgres::Error| e.to_string())?;
    if let Some(password) = password {
        pg_config.password(password);
    }
    let failed =
        |e: tokio_postgres::Error| format!("cannot connect to {}: {}", redact_url(url), describe_error(&e));
    Ok(match tls_connector(&pg_config, tls)? {
        Some(connector) => {
            let (client, connection) = pg_config.connect(connector).await.map_err(failed)?;
            tokio::spawn(drive(connection, notifications));
            client
        }
        None => {
            let (client, connection) = pg_config.connect(NoTls).await.map_err(failed)?;
            tokio::spawn(drive(connection, notifications));
            client
        }
    })
}

/// Where a driven connection sends the payloads of its notifications.
type Notifications = tokio::sync::mpsc::UnboundedSender<String>;

/// Drives `connection` until it ends: logs the server's notices, as tokio-postgres does, and
/// sends each notification's payload to `notifications` while someone listens.
async fn drive<S, T>(mut connection: tokio_postgres::Connection<S, T>, notifications: Option<Notifications>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let mut messages = std::pin::pin!(futures_util::stream::poll_fn(
        move |cx| connection.poll_message(cx)
    ));
    while let Some(message) = futures_util::StreamExt::next(&mut messages).await {
        match message {
            Ok(tokio_postgres::AsyncMessage::Notification(n)) => {
                if let Some(sender) = &notifications {
                    let _ = sender.send(n.payload().to_string());
                }
            }
            Ok(tokio_postgres::AsyncMessage::Notice(notice)) => {
                tracing::info!("{}: {}", notice.severity(), notice.message());
            }
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(error = %describe_error(&e), "connection failed");
                return;
            }
        }
    }
}

/// Builds a pool that connects lazily; the error says why the settings are unusable.
pub fn build_pool(settings: &PoolSettings<'_>) -> Result<Pool, String> {
    let mut pg_config: tokio_postgres::Config = settings
        .url
        .parse()
        .map_err(|e: tokio_postgres::Error| e.to_string())?;
    pg_config
        .connect_timeout(settings.connect_timeout)
        .application_name(settings.application_name)
        .keepalives_idle(Duration::from_secs(30));
    if let Some(password) = settings.password {
        pg_config.password(password);
    }
    if let Some(database) = settings.database {
        pg_config.dbname(database);
    }
    let manager_config = ManagerConfig {
        recycling_method: RecyclingMethod::Fast,
    };
    let manager = match tls_connector(&pg_config, settings.tls)? {
        Some(connector) => Manager::from_config(pg_config, connector, manager_config),
        None => Manager::from_config(pg_config, NoTls, manager_config),
    };
    let mut builder = Pool::builder(manager)
        .max_size(settings.max_size)
        .runtime(Runtime::Tokio1)
        .create_timeout(Some(settings.connect_timeout))
        .wait_timeout(settings.wait_timeout);
    if !settings.session_setup.is_empty() {
        let setup: Arc<str> = settings.session_setup.into();
        builder = builder.post_create(Hook::async_fn(move |client, _| {
            let setup = setup.clone();
            Box::pin(async move { client.batch_execute(&setup).await.map_err(HookError::Backend) })
        }));
    }
    builder.build().map_err(|e| e.to_string())
}

/// Whether a failure to get a connection means the server did not answer (it may come back),
/// rather than that it refused us: a timeout or a network error, but not a TLS failure or an
/// error the server sent.
pub fn is_unreachable(error: &PoolError) -> bool {
    let backend = match error {
        PoolError::Timeout(_) => return true,
        PoolError::Backend(backend) => backend,
        _ => return false,
    };
    if backend.as_db_error().is_some() {
        return false;
    }
    let mut source = std::error::Error::source(backend);
    while let Some(cause) = source {
        if let Some(io) = cause.downcast_ref::<std::io::Error>() {
            return !io.get_ref().is_some_and(|inner| inner.is::<rustls::Error>());
        }
        source = cause.source();
    }
    false
}

/// Why a pool gave no connection, in our words: the server's or the network's reason, without
/// the pool's own wrapping ("Error occurred while creating a new object").
pub fn describe_pool_error(error: &PoolError) -> String {
    match error {
        PoolError::Backend(e) => describe_error(e),
        PoolError::PostCreateHook(deadpool_postgres::HookError::Backend(e)) => {
            format!("setting up a new connection failed: {}", describe_error(e))
        }
        PoolError::Timeout(_) => "no connection could be opened before the pool's timeout".to_string(),
        other => describe_error(other),
    }
}

/// An error with the causes behind it (`a: b: c`), each cause once: connection errors keep
/// their reason (a refused certificate, say) in a source, not in their own text.
pub fn describe_error(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text = format!("{text}: {cause_text}");
        }
        source = cause.source();
    }
    text
}

/// Replaces the password of a Postgres URL or key-value connection string with `***`.
pub fn redact_url(url: &str) -> String {
    rewrite_password(url, Some("***"))
}

/// The URL without its password, for storing where the password must not go (the catalog):
/// the password stays in the config or the environment.
pub fn without_password(url: &str) -> String {
    rewrite_password(url, None)
}

/// The URL with its password (in the authority, a `password=` query parameter or a
/// `password=` pair) replaced by `replacement`, or removed.
fn rewrite_password(url: &str, replacement: Option<&str>) -> String {
    let is_password = |key: &str| key.eq_ignore_ascii_case("password");
    let Some(scheme_end) = url.find("://").map(|i| i + 3) else {
        return url
            .split_whitespace()
            .filter_map(|part| match part.split_once('=') {
                Some((key, _)) if is_password(key) => replacement.map(|r| format!("{key}={r}")),
                _ => Some(part.to_string()),
            })
            .collect::<Vec<_>>()
            .join(" ");
    };
    let (base, query) = url.split_once('?').map_or((url, None), |(b, q)| (b, Some(q)));
    let rest = &base[scheme_end..];
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let mut out = match rest[..authority_end].rfind('@') {
        Some(at) => match rest[..at].find(':') {
            Some(colon) => {
                let user = &base[..scheme_end + colon];
                let host = &base[scheme_end + at..];
                match replacement {
                    Some(r) => format!("{user}:{r}{host}"),
                    None => format!("{user}{host}"),
                }
            }
            None => base.to_string(),
        },
        None => base.to_string(),
    };
    if let Some(query) = query {
        let params: Vec<String> = query
            .split('&')
            .filter_map(|param| match param.split_once('=') {
                Some((key, _)) if is_password(key) => replacement.map(|r| format!("{key}={r}")),
                _ => Some(param.to_string()),
            })
            .collect();
        if !params.is_empty() {
            out.push('?');
            out.push_str(&params.join("&"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_redacted_in_both_url_forms() {
        let cases = [
            (
                "postgres://app:s3cret@db:5432/ev",
                "postgres://app:***@db:5432/ev",
            ),
            ("postgresql://app@db/ev", "postgresql://app@db/ev"),
            ("postgres://db/ev?user=a", "postgres://db/ev?user=a"),
            (
                "host=db user=app password=s3cret dbname=ev",
                "host=db user=app password=*** dbname=ev",
            ),
        ];
        for (url, want) in cases {
            assert_eq!(redact_url(url), want);
        }
    }

    #[test]
    fn stored_urls_keep_everything_but_the_password() {
        let cases = [
            ("postgres://app:s3cret@db:5432/ev", "postgres://app@db:5432/ev"),
            (
                "postgres://app@db/ev?sslmode=require",
                "postgres://app@db/ev?sslmode=require",
            ),
            (
                "postgres://db/ev?user=a&password=x&sslmode=require",
                "postgres://db/ev?user=a&sslmode=require",
            ),
            ("postgres://db/ev?password=x", "postgres://db/ev"),
            (
                "host=db user=app password=s3cret dbname=ev",
                "host=db user=app dbname=ev",
            ),
        ];
        for (url, want) in cases {
            assert_eq!(without_password(url), want, "{url}");
        }
        assert_eq!(
            redact_url("postgres://db/ev?password=x&user=a"),
            "postgres://db/ev?password=***&user=a"
        );
    }
}
