//! Who may log in: the `[postgres]` users, checked by SCRAM-SHA-256 (what psql, libpq,
//! psycopg, JDBC and pgx use by default), and what a session is told once logged in.

use crate::config::PostgresUser;
use async_trait::async_trait;
use pgwire::api::auth::sasl::scram::gen_salted_password;
use pgwire::api::auth::{AuthSource, DefaultServerParameterProvider, LoginInfo, Password};
use pgwire::error::PgWireResult;
use std::collections::HashMap;

/// SCRAM's iteration count: RFC 7677's minimum, and Postgres's default.
pub const SCRAM_ITERATIONS: usize = 4096;

/// The version drivers are told and parse (`server_version`): the Postgres release whose
/// protocol and behaviour the listener follows, then what it is.
pub const SERVER_VERSION: &str = concat!("15.0 (shardgate ", env!("CARGO_PKG_VERSION"), ")");

/// Each user's salted password, computed once at start-up.
pub struct Users {
    salted: HashMap<String, (Vec<u8>, Vec<u8>)>,
    /// What an unknown user is checked against, so a wrong name fails like a wrong password.
    nobody: (Vec<u8>, Vec<u8>),
}

impl std::fmt::Debug for Users {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set().entries(self.salted.keys()).finish()
    }
}

impl Users {
    /// The users of `[postgres]`, whose passwords were checked to be set.
    pub fn new(users: &[PostgresUser]) -> Users {
        let salt_and_hash = |password: &str| {
            let salt: [u8; 16] = rand::random();
            (
                salt.to_vec(),
                gen_salted_password(password, &salt, SCRAM_ITERATIONS),
            )
        };
        let salted = users
            .iter()
            .map(|user| {
                let password = user.password.as_deref().unwrap_or_default();
                (user.name.clone(), salt_and_hash(password))
            })
            .collect();
        let unguessable: [u8; 32] = rand::random();
        let nobody = salt_and_hash(&format!("{unguessable:x?}"));
        Users { salted, nobody }
    }
}

#[async_trait]
impl AuthSource for Users {
    async fn get_password(&self, login: &LoginInfo) -> PgWireResult<Password> {
        let (salt, hash) = login
            .user()
            .and_then(|user| self.salted.get(user))
            .unwrap_or(&self.nobody);
        Ok(Password::new(Some(salt.clone()), hash.clone()))
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
    parameters.scram_iterations = SCRAM_ITERATIONS;
    parameters
}
