//! Who may log in: the `[postgres]` users, checked by SCRAM-SHA-256 (what psql, libpq,
//! psycopg, JDBC and pgx use by default), and what a session is told once logged in.

use crate::access::Access;
use async_trait::async_trait;
use pgwire::api::auth::sasl::scram::ScramSecret;
use pgwire::api::auth::{AuthSource, DefaultServerParameterProvider, LoginInfo, Password};
use pgwire::error::{PgWireError, PgWireResult};
use std::sync::Arc;

pub use crate::access::SCRAM_ITERATIONS;

/// The version drivers are told and parse (`server_version`): the Postgres release whose
/// protocol and behaviour the listener follows, then what it is.
pub const SERVER_VERSION: &str = concat!("15.0 (shardgate ", env!("CARGO_PKG_VERSION"), ")");

/// The `[[users]]` as the SCRAM exchange asks for them: each user's verifier (computed at
/// start-up from a plain-text password, or given as one).
#[derive(Debug)]
pub struct Users(pub Arc<Access>);

#[async_trait]
impl AuthSource for Users {
    async fn get_password(&self, login: &LoginInfo) -> PgWireResult<Password> {
        // Only SCRAM is offered, which asks get_scram_secret; no password is kept to give.
        Err(PgWireError::InvalidPassword(
            login.user().unwrap_or_default().to_string(),
        ))
    }

    async fn get_scram_secret(&self, login: &LoginInfo) -> PgWireResult<(ScramSecret, Option<()>)> {
        Ok((self.0.scram_secret(login.user()), None))
    }
}

/// The parameters a session is told at start-up: a version drivers parse, UTF-8, ISO dates in
/// UTC (the time zone timestamps without an offset are read in), integer datetimes and
/// standard-conforming strings.
pub fn server_parameters() -> DefaultServerParameterProvider {
    let mut parameters = DefaultServerParameterProvider::default();
    parameters.server_version = SERVER_VERSION.to_string();
    parameters.time_zone = "UTC".to_string();
    parameters.date_style = "ISO, MDY".to_string();
    parameters.is_superuser = false;
    parameters.scram_iterations = SCRAM_ITERATIONS as usize;
    parameters
}
