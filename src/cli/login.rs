//! The credentials `shardgate bench` and `shardgate query` send: given on the command line or
//! in the environment, or else those of a `[[users]]` entry of the config that may do what the
//! command needs and whose password or token the config holds in plain text.

use anyhow::{Context, Result, bail};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use reqwest::header::{AUTHORIZATION, HeaderMap, HeaderValue};
use shardgate::config::{Config, Password, UserConfig};

/// Who a command logs in as.
#[derive(clap::Args, Clone, Default)]
pub struct LoginArgs {
    /// The user to log in as (a `[[users]]` name); by default one of the config's users that
    /// may do what the command needs.
    #[arg(long, env = "SHARDGATE_USER")]
    pub user: Option<String>,
    /// Its password.
    #[arg(long, env = "SHARDGATE_PASSWORD", hide_env_values = true)]
    pub password: Option<String>,
    /// A user's token, sent as `Authorization: Bearer` instead of a name and password.
    #[arg(
        long,
        env = "SHARDGATE_TOKEN",
        hide_env_values = true,
        conflicts_with = "password"
    )]
    pub token: Option<String>,
}

/// A name and password, or a token.
#[derive(Clone)]
pub enum Credentials {
    /// `Authorization: Basic`; also what the Postgres listener takes.
    Password {
        /// The user.
        user: String,
        /// Its password.
        password: String,
    },
    /// `Authorization: Bearer`.
    Token(String),
}

impl Credentials {
    /// The `Authorization` header that carries them.
    pub fn header(&self) -> Result<HeaderValue> {
        let value = match self {
            Credentials::Password { user, password } => {
                format!("Basic {}", STANDARD.encode(format!("{user}:{password}")))
            }
            Credentials::Token(token) => format!("Bearer {token}"),
        };
        let mut header = HeaderValue::from_str(&value)
            .context("the user, password or token holds characters an HTTP header cannot carry")?;
        header.set_sensitive(true);
        Ok(header)
    }

    /// Default headers for an HTTP client that sends them with every request.
    pub fn headers(credentials: Option<&Credentials>) -> Result<HeaderMap> {
        let mut headers = HeaderMap::new();
        if let Some(credentials) = credentials {
            headers.insert(AUTHORIZATION, credentials.header()?);
        }
        Ok(headers)
    }
}

impl LoginArgs {
    /// The credentials to send: those given, else a user of `config` for which `needs` holds;
    /// none when neither gives any and the config has no users (an open API). `what` says
    /// what the command needs, for the error when no user fits.
    pub fn credentials(
        &self,
        config: Option<&Config>,
        needs: impl Fn(&UserConfig) -> bool,
        what: &str,
    ) -> Result<Option<Credentials>> {
        if let Some(token) = &self.token {
            return Ok(Some(Credentials::Token(token.clone())));
        }
        let users = config.map(|config| config.users.as_slice()).unwrap_or_default();
        match (&self.user, &self.password) {
            (Some(user), Some(password)) => Ok(Some(Credentials::Password {
                user: user.clone(),
                password: password.clone(),
            })),
            (Some(name), None) => {
                let user = users
                    .iter()
                    .find(|user| &user.name == name)
                    .with_context(|| format!("user {name} is not in the config; give --password"))?;
                known_credentials(user)
                    .with_context(|| format!("the config holds no password of {name}; give --password"))
                    .map(Some)
            }
            (None, _) if users.is_empty() => Ok(None),
            (None, _) => match users
                .iter()
                .filter(|user| needs(user))
                .find_map(known_credentials)
            {
                Some(credentials) => Ok(Some(credentials)),
                None => bail!(
                    "no [[users]] entry of the config {what} with a password or token in plain \
                     text; give --user and --password (or SHARDGATE_USER and SHARDGATE_PASSWORD)"
                ),
            },
        }
    }
}

/// The user's password, when the config holds it in plain text, else its token.
fn known_credentials(user: &UserConfig) -> Option<Credentials> {
    match user.password() {
        Some(Ok(Password::Plain(password))) => Some(Credentials::Password {
            user: user.name.clone(),
            password: password.to_string(),
        }),
        _ => user.token.clone().map(Credentials::Token),
    }
}
