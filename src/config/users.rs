//! `[[users]]`: who may log in over either front end, how each proves it, and which tables each
//! may write and read.

use super::{ENV_PREFIX, Environment, Problems};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::Deserialize;
use std::collections::HashSet;

/// Shortest per-user token accepted.
const MIN_TOKEN_LEN: usize = 16;

/// The grant that names every table.
pub const ALL_TABLES: &str = "*";

/// One `[[users]]` entry.
#[derive(Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UserConfig {
    /// The name it logs in with (Postgres user name, HTTP Basic user).
    pub name: String,
    /// Its password, or the SCRAM-SHA-256 verifier Postgres prints for it
    /// (`SCRAM-SHA-256$4096:salt$StoredKey:ServerKey`); `SHARDGATE_USER_<NAME>_PASSWORD`
    /// replaces it.
    pub password: Option<String>,
    /// A bearer token for services (`Authorization: Bearer`); `SHARDGATE_USER_<NAME>_TOKEN`
    /// replaces it.
    pub token: Option<String>,
    /// Tables it may write; `"*"` for all.
    pub write: Vec<String>,
    /// Tables it may query; `"*"` for all.
    pub read: Vec<String>,
    /// Whether it may use the admin API as the admin token does.
    pub admin: bool,
}

impl std::fmt::Debug for UserConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UserConfig")
            .field("name", &self.name)
            .field("write", &self.write)
            .field("read", &self.read)
            .field("admin", &self.admin)
            .finish_non_exhaustive()
    }
}

/// What a user's `password` holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Password<'a> {
    /// The password itself.
    Plain(&'a str),
    /// A SCRAM-SHA-256 verifier: the password is not known, only what checks it.
    Verifier(ScramVerifier),
}

/// A SCRAM-SHA-256 verifier as Postgres stores it in `pg_authid.rolpassword`.
#[derive(Clone, PartialEq, Eq)]
pub struct ScramVerifier {
    /// PBKDF2 iterations.
    pub iterations: u32,
    /// The salt.
    pub salt: Vec<u8>,
    /// `SHA-256(HMAC(SaltedPassword, "Client Key"))`.
    pub stored_key: Vec<u8>,
    /// `HMAC(SaltedPassword, "Server Key")`.
    pub server_key: Vec<u8>,
}

impl std::fmt::Debug for ScramVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScramVerifier")
            .field("iterations", &self.iterations)
            .finish_non_exhaustive()
    }
}

/// The prefix of a SCRAM-SHA-256 verifier.
const VERIFIER_PREFIX: &str = "SCRAM-SHA-256$";

impl ScramVerifier {
    /// Reads `SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>` (base64 parts).
    pub fn parse(text: &str) -> Result<ScramVerifier, String> {
        let shape = "expected SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>";
        let rest = text.strip_prefix(VERIFIER_PREFIX).ok_or(shape)?;
        let (parameters, keys) = rest.split_once('$').ok_or(shape)?;
        let (iterations, salt) = parameters.split_once(':').ok_or(shape)?;
        let (stored_key, server_key) = keys.split_once(':').ok_or(shape)?;
        let iterations: u32 = iterations
            .parse()
            .ok()
            .filter(|&n| n > 0)
            .ok_or("the iteration count is not a positive number")?;
        let decode = |part: &str, what: &str| {
            STANDARD
                .decode(part)
                .map_err(|e| format!("the {what} is not base64: {e}"))
        };
        let verifier = ScramVerifier {
            iterations,
            salt: decode(salt, "salt")?,
            stored_key: decode(stored_key, "stored key")?,
            server_key: decode(server_key, "server key")?,
        };
        if verifier.stored_key.len() != 32 || verifier.server_key.len() != 32 {
            return Err("the stored and server keys must be 32 bytes (SHA-256)".into());
        }
        Ok(verifier)
    }
}

impl UserConfig {
    /// The password as given, or the verifier it spells; `None` without one.
    pub fn password(&self) -> Option<Result<Password<'_>, String>> {
        let text = self.password.as_deref().filter(|p| !p.is_empty())?;
        Some(if text.starts_with(VERIFIER_PREFIX) {
            ScramVerifier::parse(text).map(Password::Verifier)
        } else {
            Ok(Password::Plain(text))
        })
    }

    /// Whether it may write `table`.
    pub fn may_write(&self, table: &str) -> bool {
        grants(&self.write, table)
    }

    /// Whether it may query `table`.
    pub fn may_read(&self, table: &str) -> bool {
        grants(&self.read, table)
    }
}

fn grants(list: &[String], table: &str) -> bool {
    list.iter().any(|entry| entry == ALL_TABLES || entry == table)
}

/// The environment variable that gives user `name` its password.
pub fn password_env(name: &str) -> String {
    format!("{ENV_PREFIX}USER_{}_PASSWORD", env_name(name))
}

/// The environment variable that gives user `name` its token.
pub fn token_env(name: &str) -> String {
    format!("{ENV_PREFIX}USER_{}_TOKEN", env_name(name))
}

/// `name` upper-cased, with anything but letters and digits as `_`.
fn env_name(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect()
}

/// Takes each user's password and token from the environment where they are set there.
pub(super) fn apply_env(users: &mut [UserConfig], environment: &Environment) {
    for user in users {
        if let Some(password) = environment.get(&password_env(&user.name)) {
            user.password = Some(password.clone());
        }
        if let Some(token) = environment.get(&token_env(&user.name)) {
            user.token = Some(token.clone());
        }
    }
}

/// Checks names, credentials and that every grant names a declared table.
pub(super) fn validate(users: &[UserConfig], tables: &HashSet<&str>, problems: &mut Problems) {
    let mut seen = HashSet::new();
    let mut tokens = HashSet::new();
    for (i, user) in users.iter().enumerate() {
        let key = format!("users[{i}]");
        if user.name.is_empty() || user.name.contains(':') || !seen.insert(user.name.as_str()) {
            problems.add(format!("{key}.name"), "must be non-empty, unique and without ':'");
        }
        match user.password() {
            Some(Err(e)) => problems.add(format!("{key}.password"), e),
            None if user.token.is_none() => problems.add(
                format!("{key}.password"),
                format!(
                    "a user needs a password or a token, in the file or in {} / {}",
                    password_env(&user.name),
                    token_env(&user.name)
                ),
            ),
            _ => {}
        }
        if let Some(token) = &user.token
            && (token.len() < MIN_TOKEN_LEN || !token.chars().all(|c| c.is_ascii_graphic()))
        {
            problems.add(
                format!("{key}.token"),
                format!("must be at least {MIN_TOKEN_LEN} visible ASCII characters without spaces"),
            );
        }
        if let Some(token) = &user.token
            && !tokens.insert(token.as_str())
        {
            problems.add(format!("{key}.token"), "another user has the same token");
        }
        for (kind, list) in [("write", &user.write), ("read", &user.read)] {
            for (j, table) in list.iter().enumerate() {
                if table != ALL_TABLES && !tables.contains(table.as_str()) {
                    problems.add(
                        format!("{key}.{kind}[{j}]"),
                        format!("no table {table:?} is declared (\"*\" grants every table)"),
                    );
                }
            }
        }
    }
}
