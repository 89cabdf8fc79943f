//! `[postgres]`: the PostgreSQL-protocol listener, its users and its limits.

use super::Problems;
use super::users::UserConfig;
use crate::units::{ByteSize, duration};
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// `[postgres]`: where drivers, psql and pgbench connect, and who may.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PostgresConfig {
    /// Address of the listener; none (the default) leaves it off.
    pub listen: Option<String>,
    /// Sessions open at once; the next one is refused with `53300`.
    pub max_sessions: usize,
    /// A session that sends nothing for this long is closed.
    #[serde(with = "duration")]
    pub idle_timeout: Duration,
    /// PEM certificate chain offered to clients that ask for TLS (`sslmode=require`).
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of `tls_cert`.
    pub tls_key: Option<PathBuf>,
    /// Where a transaction block's rows go once they outgrow memory, until its `COMMIT`;
    /// none (the default) is the system's temporary directory.
    pub block_dir: Option<PathBuf>,
    /// Most bytes of rows one transaction block may hold until its `COMMIT`.
    pub max_block_size: ByteSize,
    /// The database, on the catalog's server, that answers queries of the system catalogs
    /// (psql's `\d`, JDBC's metadata): it holds the declared tables as users see them and no
    /// rows. Created when missing; none (the default) is the catalog database's name with
    /// `_metadata` appended.
    pub metadata_database: Option<String>,
    /// Where users were declared before `[[users]]` served both front ends: refused with a
    /// pointer to the new place.
    #[serde(rename = "users")]
    pub moved_users: Option<serde::de::IgnoredAny>,
}

impl Default for PostgresConfig {
    fn default() -> Self {
        PostgresConfig {
            listen: None,
            // Postgres's own max_connections.
            max_sessions: 100,
            idle_timeout: Duration::from_secs(600),
            tls_cert: None,
            tls_key: None,
            block_dir: None,
            max_block_size: ByteSize(64 << 30),
            metadata_database: None,
            moved_users: None,
        }
    }
}

impl PostgresConfig {
    /// The listener's address, when it is on and its address parses.
    pub fn address(&self) -> Option<SocketAddr> {
        self.listen.as_deref().and_then(|listen| listen.parse().ok())
    }

    pub(super) fn validate(&self, users: &[UserConfig], problems: &mut Problems) {
        if self.moved_users.is_some() {
            problems.add(
                "postgres.users",
                "users are declared at the top level now, as [[users]] with name, password and \
                 the tables each may write and read",
            );
        }
        let Some(listen) = &self.listen else {
            return;
        };
        if let Err(e) = listen.parse::<SocketAddr>() {
            problems.add("postgres.listen", format!("not a socket address: {e}"));
        }
        if self.max_sessions == 0 {
            problems.add("postgres.max_sessions", "must be positive");
        }
        if self.idle_timeout.is_zero() {
            problems.add("postgres.idle_timeout", "must be positive");
        }
        if self.max_block_size.0 == 0 {
            problems.add("postgres.max_block_size", "must be positive");
        }
        if let Some(dir) = &self.block_dir
            && !dir.is_dir()
        {
            problems.add(
                "postgres.block_dir",
                format!("{} is not a directory", dir.display()),
            );
        }
        if self
            .metadata_database
            .as_deref()
            .is_some_and(|name| name.is_empty() || name.len() > 63)
        {
            problems.add("postgres.metadata_database", "must be 1 to 63 bytes long");
        }
        if self.tls_cert.is_some() != self.tls_key.is_some() {
            problems.add("postgres.tls_key", "tls_cert and tls_key go together");
        }
        if !users.iter().any(|user| user.password().is_some()) {
            problems.add(
                "users",
                "the Postgres listener needs at least one [[users]] entry with a password to log in",
            );
        }
    }
}
