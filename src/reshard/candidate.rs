//! Whether a database may join as a new shard: a valid name not yet in use, a weight, a URL
//! shardgate can connect to with the configured TLS, a supported Postgres, and no data in the
//! way (no shardgate fence, every declared table absent, or present, empty and matching).
//! Checking changes nothing on the database.

use crate::config::TlsConfig;
use crate::pg::{connect_once, redact_url};
use crate::pgtype::{is_valid_identifier, quote_ident};
use crate::routing::ShardId;
use crate::schema::Tables;
use crate::shards::set::ShardSet;
use crate::shards::{ShardEndpoint, table_differences_on};
use thiserror::Error;

/// Oldest Postgres a shard may run (`server_version_num`): moving ranges reads tables by
/// block ranges, which 14 brought (TID range scans).
const MIN_SERVER_VERSION: i32 = 140_000;

/// Largest weight a shard may have.
pub const MAX_WEIGHT: u32 = 256;

/// A shard an operator asks to add.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewShard {
    /// Its permanent name.
    pub name: String,
    /// Postgres URL of its database.
    pub url: String,
    /// Its share of the ring; 1 when absent.
    #[serde(default = "one")]
    pub weight: u32,
}

fn one() -> u32 {
    1
}

/// Why a database cannot join; nothing was changed.
#[derive(Debug, Error)]
pub enum CandidateError {
    /// The request itself is wrong (400).
    #[error("{0}")]
    Invalid(String),
    /// A shard of that name exists already (409).
    #[error("shard {0} already exists")]
    Duplicate(String),
    /// The database could not be reached or refused the connection (400); `reason` names the
    /// URL already.
    #[error("{reason}")]
    Unreachable {
        /// The URL, password redacted.
        url: String,
        /// Why.
        reason: String,
    },
    /// The server is too old (400).
    #[error("{url} runs PostgreSQL {version}; shardgate needs 14 or newer")]
    TooOld {
        /// The URL, password redacted.
        url: String,
        /// `server_version`.
        version: String,
    },
    /// The database is in use: a shard already, or a table holds rows or differs (409).
    #[error("{url}: {reason}")]
    InUse {
        /// The URL, password redacted.
        url: String,
        /// What is in the way.
        reason: String,
    },
    /// A statement failed while checking (502).
    #[error("{url}: cannot check the database: {}", crate::pg::describe_error(.cause))]
    Query {
        /// The URL, password redacted.
        url: String,
        /// The driver's error.
        cause: tokio_postgres::Error,
    },
}

/// What the check learned of an accepted database.
#[derive(Debug, Clone)]
pub struct CheckedShard {
    /// How to connect to it.
    pub endpoint: ShardEndpoint,
    /// Its `server_version`.
    pub server_version: String,
}

impl NewShard {
    /// Checks the request against the shards of `current`, then the database itself, connecting
    /// with `password` (when set) and `tls`.
    pub async fn check(
        &self,
        current: &ShardSet,
        tables: &Tables,
        password: Option<&str>,
        tls: &TlsConfig,
    ) -> Result<CheckedShard, CandidateError> {
        self.check_request(current)?;
        let url = redact_url(&self.url);
        let client =
            connect_once(&self.url, password, tls)
                .await
                .map_err(|reason| CandidateError::Unreachable {
                    url: url.clone(),
                    reason,
                })?;
        let query = |cause| CandidateError::Query {
            url: url.clone(),
            cause,
        };
        let version = client
            .query_one(
                "SELECT current_setting('server_version_num')::int, current_setting('server_version')",
                &[],
            )
            .await
            .map_err(query)?;
        let (number, server_version): (i32, String) = (version.get(0), version.get(1));
        if number < MIN_SERVER_VERSION {
            return Err(CandidateError::TooOld {
                url,
                version: server_version,
            });
        }
        if let Some(reason) = in_the_way(&client, tables).await.map_err(query)? {
            return Err(CandidateError::InUse { url, reason });
        }
        Ok(CheckedShard {
            endpoint: ShardEndpoint {
                id: ShardId(self.name.clone()),
                weight: self.weight,
                url: self.url.clone(),
                password: password.map(str::to_string),
            },
            server_version,
        })
    }

    fn check_request(&self, current: &ShardSet) -> Result<(), CandidateError> {
        if !is_valid_identifier(&self.name) {
            return Err(CandidateError::Invalid(format!(
                "name `{}` must match [a-z_][a-z0-9_]* (at most 63 characters)",
                self.name
            )));
        }
        if !(1..=MAX_WEIGHT).contains(&self.weight) {
            return Err(CandidateError::Invalid(format!(
                "weight must be between 1 and {MAX_WEIGHT}"
            )));
        }
        if let Err(e) = self.url.parse::<tokio_postgres::Config>() {
            return Err(CandidateError::Invalid(format!("url is not a Postgres URL: {e}")));
        }
        if current.iter().any(|(_, shard)| shard.id.0 == self.name) {
            return Err(CandidateError::Duplicate(self.name.clone()));
        }
        Ok(())
    }
}

/// What keeps the database from joining, if anything.
async fn in_the_way(
    client: &tokio_postgres::Client,
    tables: &Tables,
) -> Result<Option<String>, tokio_postgres::Error> {
    let fenced = client
        .query_one("SELECT to_regclass('shardgate_fence') IS NOT NULL", &[])
        .await?
        .get::<_, bool>(0);
    if fenced {
        return Ok(Some(
            "it is a shardgate shard already (it has a shardgate_fence table)".into(),
        ));
    }
    for (_, table) in tables.iter() {
        match table_differences_on(client, table).await? {
            None => {}
            Some(differences) if !differences.is_empty() => {
                return Ok(Some(format!(
                    "table {} differs from the config: {}",
                    table.name,
                    differences.join("; ")
                )));
            }
            Some(_) => {
                let sql = format!("SELECT EXISTS (SELECT 1 FROM {})", quote_ident(&table.name));
                if client.query_one(&sql, &[]).await?.get::<_, bool>(0) {
                    return Ok(Some(format!(
                        "table {} already holds rows; a new shard must start empty",
                        table.name
                    )));
                }
            }
        }
    }
    Ok(None)
}
