//! `[postgres]`: the PostgreSQL-protocol listener, its users and its limits.

use super::{ENV_PREFIX, Environment, Problems};
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
    /// Who may log in, by SCRAM-SHA-256.
    pub users: Vec<PostgresUser>,
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
            users: Vec::new(),
        }
    }
}

/// One user of the Postgres listener.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PostgresUser {
    /// The name a client logs in with.
    pub name: String,
    /// The password, unless `SHARDGATE_POSTGRES_<NAME>_PASSWORD` gives it (name upper-cased).
    pub password: Option<String>,
}

impl std::fmt::Debug for PostgresUser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresUser")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// The environment variable that gives user `name` its password.
pub fn password_env(name: &str) -> String {
    format!("{ENV_PREFIX}POSTGRES_{}_PASSWORD", name.to_ascii_uppercase())
}

impl PostgresConfig {
    /// Takes each user's password from the environment where it is set there.
    pub(super) fn apply_env(&mut self, environment: &Environment) {
        for user in &mut self.users {
            if let Some(password) = environment.get(&password_env(&user.name)) {
                user.password = Some(password.clone());
            }
        }
    }

    /// The listener's address, when it is on and its address parses.
    pub fn address(&self) -> Option<SocketAddr> {
        self.listen.as_deref().and_then(|listen| listen.parse().ok())
    }

    pub(super) fn validate(&self, problems: &mut Problems) {
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
        if self.users.is_empty() {
            problems.add("postgres.users", "at least one user is needed to log in");
        }
        let mut seen = std::collections::HashSet::new();
        for (i, user) in self.users.iter().enumerate() {
            if user.name.is_empty() || !seen.insert(user.name.as_str()) {
                problems.add(
                    format!("postgres.users[{i}].name"),
                    "must be non-empty and unique",
                );
            }
            if user.password.as_deref().is_none_or(str::is_empty) {
                problems.add(
                    format!("postgres.users[{i}].password"),
                    format!("required, in the file or in {}", password_env(&user.name)),
                );
            }
        }
    }
}
