//! Who may write and read: the `[[users]]` of the config, how each proves who it is, and the
//! tables each may write and query. One model for both front ends: the HTTP API takes
//! `Authorization: Basic` (name and password) or `Bearer` (a user's token), the Postgres
//! listener SCRAM-SHA-256 against the same users, and both ask the [`Caller`] they got for
//! each table a request touches.

mod credentials;
mod failures;

pub use credentials::{SCRAM_ITERATIONS, verifier_of};

use crate::config::UserConfig;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use credentials::{PasswordCheck, TokenCheck};
use failures::FailedLogins;
use pgwire::api::auth::sasl::scram::ScramSecret;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

/// One configured user: its grants and what checks its credentials.
pub struct User {
    config: UserConfig,
    password: Option<PasswordCheck>,
    token: Option<TokenCheck>,
}

impl std::fmt::Debug for User {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("User").field(&self.config.name).finish()
    }
}

impl User {
    /// The name it logged in with.
    pub fn name(&self) -> &str {
        &self.config.name
    }
}

/// Who sent a request or opened a session.
#[derive(Debug, Clone)]
pub enum Caller {
    /// Anyone: no users are configured, so the HTTP API is open.
    Anyone,
    /// A user who proved who it is.
    User(Arc<User>),
}

impl Caller {
    /// Whether it may write rows into `table`.
    pub fn may_write(&self, table: &str) -> bool {
        match self {
            Caller::Anyone => true,
            Caller::User(user) => user.config.may_write(table),
        }
    }

    /// Whether it may query `table`.
    pub fn may_read(&self, table: &str) -> bool {
        match self {
            Caller::Anyone => true,
            Caller::User(user) => user.config.may_read(table),
        }
    }

    /// Whether it is a user granted the admin API.
    pub fn is_admin(&self) -> bool {
        matches!(self, Caller::User(user) if user.config.admin)
    }

    /// The user's name, `None` for anyone.
    pub fn name(&self) -> Option<&str> {
        match self {
            Caller::Anyone => None,
            Caller::User(user) => Some(user.name()),
        }
    }
}

/// Why a request's credentials were not accepted. The message never repeats what was sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unauthenticated {
    /// No `Authorization` header.
    #[error(
        "this API needs credentials: Authorization: Basic (user and password) or Bearer (a user's token)"
    )]
    Missing,
    /// A header of another scheme, or one that does not decode.
    #[error("the Authorization header is not Basic with user:password in base64, nor Bearer with a token")]
    Malformed,
    /// A wrong name, password or token.
    #[error("the user name and password, or the token, are not those of a configured user")]
    Wrong,
}

impl Unauthenticated {
    /// The `reason` label of `shardgate_auth_failures_total`.
    pub fn reason(&self) -> &'static str {
        match self {
            Unauthenticated::Missing => "missing",
            Unauthenticated::Malformed => "malformed",
            Unauthenticated::Wrong => "wrong",
        }
    }
}

/// The configured users and the failed logins of each client address.
pub struct Access {
    users: HashMap<String, Arc<User>>,
    /// What an unknown name is checked against, so it fails as slowly as a wrong password.
    nobody: PasswordCheck,
    failures: FailedLogins,
}

impl std::fmt::Debug for Access {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set().entries(self.users.keys()).finish()
    }
}

impl Access {
    /// The users of the config, whose credentials were validated. Passwords given in plain text
    /// are salted and hashed here, and not kept.
    pub fn new(users: &[UserConfig]) -> Access {
        let users = users
            .iter()
            .map(|config| {
                let user = User {
                    password: config.password().and_then(Result::ok).map(PasswordCheck::new),
                    token: config.token.as_deref().map(TokenCheck::new),
                    config: UserConfig {
                        password: None,
                        token: None,
                        ..config.clone()
                    },
                };
                (config.name.clone(), Arc::new(user))
            })
            .collect();
        Access {
            users,
            nobody: PasswordCheck::unguessable(),
            failures: FailedLogins::default(),
        }
    }

    /// Whether no user is configured: the HTTP API is then open to anyone.
    pub fn is_open(&self) -> bool {
        self.users.is_empty()
    }

    /// The user called `name`.
    pub fn user(&self, name: &str) -> Option<&Arc<User>> {
        self.users.get(name)
    }

    /// What the Postgres listener checks a login of `name` against: the user's verifier, or
    /// one nothing passes for an unknown name or a user with a token only.
    pub fn scram_secret(&self, name: Option<&str>) -> ScramSecret {
        name.and_then(|name| self.users.get(name))
            .and_then(|user| user.password.as_ref())
            .unwrap_or(&self.nobody)
            .scram_secret()
    }

    /// The caller an HTTP request's `Authorization` header proves: [`Caller::Anyone`] without
    /// users configured. A password that passed before is recognised at once; any other is
    /// checked on a blocking thread (a PBKDF2 of thousands of rounds).
    pub async fn authenticate(
        self: &Arc<Self>,
        authorization: Option<&str>,
    ) -> Result<Caller, Unauthenticated> {
        if self.is_open() {
            return Ok(Caller::Anyone);
        }
        let authorization = authorization.ok_or(Unauthenticated::Missing)?;
        if let Some(token) = bearer_token(authorization) {
            return self.token_user(token).ok_or(Unauthenticated::Wrong);
        }
        let credentials = basic_credentials(authorization).ok_or(Unauthenticated::Malformed)?;
        let (name, password) = credentials.split_once(':').ok_or(Unauthenticated::Malformed)?;
        if let Some(user) = self.users.get(name)
            && user
                .password
                .as_ref()
                .is_some_and(|check| check.passed_last(password))
        {
            return Ok(Caller::User(user.clone()));
        }
        let access = self.clone();
        tokio::task::spawn_blocking(move || {
            let (name, password) = credentials.split_once(':')?;
            access.password_user(name, password)
        })
        .await
        .ok()
        .flatten()
        .ok_or(Unauthenticated::Wrong)
    }

    fn token_user(&self, offered: &str) -> Option<Caller> {
        // Every user's token is compared, so the time taken does not tell which one matched.
        let mut found = None;
        for user in self.users.values() {
            if user.token.as_ref().is_some_and(|token| token.passes(offered)) {
                found = Some(Caller::User(user.clone()));
            }
        }
        found
    }

    fn password_user(&self, name: &str, password: &str) -> Option<Caller> {
        let user = self.users.get(name);
        let check = user
            .and_then(|user| user.password.as_ref())
            .unwrap_or(&self.nobody);
        let passed = check.passes(password);
        user.filter(|_| passed).map(|user| Caller::User(user.clone()))
    }

    /// Records a failed login from `address`; the answer to it should wait the delay returned.
    pub fn failed_from(&self, address: IpAddr) -> Duration {
        self.failures.failed(address)
    }

    /// Records a login from `address` that succeeded.
    pub fn succeeded_from(&self, address: IpAddr) {
        self.failures.succeeded(address);
    }
}

/// The rest of `header` after `scheme` and a space, the scheme matched in any case.
fn strip_scheme<'a>(header: &'a str, scheme: &str) -> Option<&'a str> {
    let (given, rest) = header.split_once(' ')?;
    given.eq_ignore_ascii_case(scheme).then_some(rest)
}

/// The token of an `Authorization: Bearer` header.
pub fn bearer_token(header: &str) -> Option<&str> {
    strip_scheme(header, "Bearer").map(str::trim)
}

/// `name:password` of a `Basic` header, decoded.
fn basic_credentials(header: &str) -> Option<String> {
    let encoded = strip_scheme(header, "Basic")?.trim();
    String::from_utf8(STANDARD.decode(encoded).ok()?).ok()
}

#[cfg(test)]
mod tests;
