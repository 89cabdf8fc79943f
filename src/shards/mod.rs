//! The shards: one connection pool each, health checks, and the start-up step that creates or
//! verifies every declared table and the fence table on every shard.
//!
//! Pools are ordered like the config's `[[shards]]`, which is also the order of the routing
//! table's shard list, so a [`ShardIndex`] names the same shard everywhere.

use crate::config::Config;
use crate::routing::{Epoch, Routing, ShardId, ShardIndex};

pub mod fence;

use crate::pg::{PoolSettings, build_pool, describe_pool_error, is_unreachable, redact_url};
use crate::schema::{
    ExpectedColumn, QUIET_SETUP_SQL, TableSchema, Tables, create_table_sql, expected_columns, quote_ident,
};
use deadpool_postgres::Pool;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use thiserror::Error;
use tokio_util::sync::CancellationToken;

/// A shard as this proxy connects to it: name, weight and connection settings (the URL, and a
/// password from the environment when one is set). Its `Debug` leaves the secrets out.
#[derive(Clone)]
pub struct ShardEndpoint {
    /// Stable name.
    pub id: ShardId,
    /// Share of the ring.
    pub weight: u32,
    /// Postgres URL, possibly with a password: never shown as it is (see [`redact_url`]).
    pub url: String,
    /// A password that replaces the URL's.
    pub password: Option<String>,
}

impl std::fmt::Debug for ShardEndpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShardEndpoint")
            .field("id", &self.id)
            .field("weight", &self.weight)
            .field("url", &redact_url(&self.url))
            .field("password", &self.password.as_ref().map(|_| "***"))
            .finish()
    }
}

/// Longest a health probe waits for `SELECT 1`.
const HEALTH_TIMEOUT: Duration = Duration::from_secs(2);
/// First and longest wait between attempts to prepare a shard that was unreachable.
const PREPARE_RETRY_MIN: Duration = Duration::from_millis(500);
const PREPARE_RETRY_MAX: Duration = Duration::from_secs(10);

/// Key of the advisory lock that serialises schema set-up between proxies starting together.
const SETUP_LOCK_KEY: i64 = 0x5347_5345_5455_5031;

/// A shard could not be reached or set up.
#[derive(Debug, Error)]
pub enum ShardError {
    /// A pool could not be built from the URL.
    #[error("shard {shard}: invalid connection settings: {reason}")]
    Settings {
        /// The shard.
        shard: ShardId,
        /// Why.
        reason: String,
    },
    /// The shard did not answer (refused, timed out, no route): it may come back.
    #[error("shard {shard}: unreachable: {reason}")]
    Unreachable {
        /// The shard.
        shard: ShardId,
        /// Why.
        reason: String,
    },
    /// The shard answered but the connection was refused (TLS, authentication, database).
    #[error("shard {shard}: cannot connect: {reason}")]
    Connect {
        /// The shard.
        shard: ShardId,
        /// Why.
        reason: String,
    },
    /// A set-up statement failed.
    #[error("shard {shard}: {context}: {cause}")]
    Query {
        /// The shard.
        shard: ShardId,
        /// What was being done.
        context: String,
        /// The driver's error.
        cause: tokio_postgres::Error,
    },
    /// An existing table does not match its declaration.
    #[error("shard {shard}: table {table} differs from the config: {}", .differences.join("; "))]
    SchemaMismatch {
        /// The shard.
        shard: ShardId,
        /// The table.
        table: String,
        /// Each difference, in words.
        differences: Vec<String>,
    },
    /// The shard's fence is at a newer epoch than the catalog: routing state is inconsistent.
    #[error("shard {shard}: fence epoch {fence} is ahead of the catalog epoch {catalog}")]
    FenceAhead {
        /// The shard.
        shard: ShardId,
        /// Epoch in the shard's fence table.
        fence: Epoch,
        /// Epoch in the catalog.
        catalog: Epoch,
    },
}

/// One shard: its name, redacted URL, weight and pool.
pub struct Shard {
    /// Stable name.
    pub id: ShardId,
    /// URL with any password replaced by `***`, safe to log and show.
    pub redacted_url: String,
    /// Share of the ring.
    pub weight: u32,
    /// Connections to the shard.
    pub pool: Pool,
    /// Whether its tables and fence have been created or verified; nothing is written to it
    /// before.
    prepared: AtomicBool,
}

/// Every shard, indexed by [`ShardIndex`].
pub struct Shards {
    shards: Vec<Shard>,
}

impl Shards {
    /// Builds a pool per shard; connections open lazily and run `session_setup` (SQL, may be
    /// empty) once when opened.
    pub fn new(
        endpoints: &[ShardEndpoint],
        config: &Config,
        session_setup: &str,
    ) -> Result<Shards, ShardError> {
        let shards = endpoints
            .iter()
            .map(|s| build_shard(s, config, session_setup))
            .collect::<Result<_, _>>()?;
        Ok(Shards { shards })
    }

    /// The shard at `index`.
    pub fn get(&self, index: ShardIndex) -> &Shard {
        &self.shards[index.0]
    }

    /// Every shard with its index.
    pub fn iter(&self) -> impl Iterator<Item = (ShardIndex, &Shard)> {
        self.shards.iter().enumerate().map(|(i, s)| (ShardIndex(i), s))
    }

    /// Number of shards.
    pub fn len(&self) -> usize {
        self.shards.len()
    }

    /// Whether there are no shards (never, for a validated config).
    pub fn is_empty(&self) -> bool {
        self.shards.is_empty()
    }

    /// Creates or verifies every table and the fence on every shard not yet prepared, setting
    /// the fence to `epoch`. A shard that cannot be reached is left for a later call (writes to
    /// it wait, then get 503); any other problem, such as a table that differs, is an error.
    /// Returns whether every shard is prepared.
    pub async fn prepare(&self, tables: &Tables, epoch: Epoch) -> Result<bool, ShardError> {
        let mut all = true;
        for shard in self.shards.iter().filter(|s| !s.is_prepared()) {
            match shard.prepare(tables, epoch).await {
                Ok(()) => {
                    shard.prepared.store(true, Ordering::Release);
                    tracing::info!(shard = %shard.id, "shard prepared");
                }
                Err(ShardError::Unreachable { reason, .. }) => {
                    tracing::warn!(shard = %shard.id, %reason, "shard unreachable; its writes wait until it is prepared");
                    all = false;
                }
                Err(e) => return Err(e),
            }
        }
        Ok(all)
    }

    /// Prepares the shards left unprepared at start-up as they become reachable, retrying with
    /// backoff until all are or `shutdown` fires. A shard that turns out to differ from the
    /// config stays unprepared (its writes get 503) and is reported at every attempt.
    pub async fn prepare_in_background(
        self: Arc<Self>,
        tables: Arc<Tables>,
        routing: Arc<Routing>,
        shutdown: CancellationToken,
    ) {
        let mut delay = PREPARE_RETRY_MIN;
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(delay) => {}
            }
            match self.prepare(&tables, routing.load().epoch).await {
                Ok(true) => return,
                Ok(false) => {}
                Err(e) => tracing::error!(error = %e, "a shard cannot be prepared"),
            }
            delay = (delay * 2).min(PREPARE_RETRY_MAX);
        }
    }
}

impl Shard {
    /// Whether its tables and fence are known to match the config, so batches may be written.
    pub fn is_prepared(&self) -> bool {
        self.prepared.load(Ordering::Acquire)
    }

    /// Whether the shard answers `SELECT 1` within a short timeout.
    pub async fn is_up(&self) -> bool {
        let probe = async {
            let client = self.pool.get().await.ok()?;
            client.simple_query("SELECT 1").await.ok()
        };
        matches!(tokio::time::timeout(HEALTH_TIMEOUT, probe).await, Ok(Some(_)))
    }

    async fn prepare(&self, tables: &Tables, epoch: Epoch) -> Result<(), ShardError> {
        let mut client = self.pool.get().await.map_err(|e| {
            let (shard, reason) = (self.id.clone(), describe_pool_error(&e));
            if is_unreachable(&e) {
                ShardError::Unreachable { shard, reason }
            } else {
                ShardError::Connect { shard, reason }
            }
        })?;
        let tx = client
            .transaction()
            .await
            .map_err(|e| self.query_error("begin", e))?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&SETUP_LOCK_KEY])
            .await
            .map_err(|e| self.query_error("take the set-up lock", e))?;
        tx.batch_execute(QUIET_SETUP_SQL)
            .await
            .map_err(|e| self.query_error("quiet the set-up notices", e))?;
        for (_, table) in tables.iter() {
            self.prepare_table(&tx, table).await?;
        }
        self.prepare_fence(&tx, epoch).await?;
        tx.commit()
            .await
            .map_err(|e| self.query_error("commit set-up", e))
    }

    async fn prepare_table(
        &self,
        tx: &tokio_postgres::Transaction<'_>,
        table: &TableSchema,
    ) -> Result<(), ShardError> {
        let name = quote_ident(&table.name);
        let found = tx
            .query(
                "SELECT a.attname::text, format_type(a.atttypid, a.atttypmod), a.attnotnull
                 FROM pg_attribute a
                 WHERE a.attrelid = to_regclass($1) AND a.attnum > 0 AND NOT a.attisdropped
                 ORDER BY a.attnum",
                &[&name],
            )
            .await
            .map_err(|e| self.query_error(&format!("read columns of {}", table.name), e))?;
        if found.is_empty() {
            let create = create_table_sql(table);
            return tx
                .batch_execute(&create)
                .await
                .map_err(|e| self.query_error(&format!("create table {}", table.name), e));
        }
        let columns: Vec<ExpectedColumn> = found
            .iter()
            .map(|row| ExpectedColumn {
                name: row.get(0),
                sql_type: row.get(1),
                not_null: row.get(2),
            })
            .collect();
        let primary_key: Vec<String> = tx
            .query(
                "SELECT a.attname::text FROM pg_index i
                 JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey)
                 WHERE i.indrelid = to_regclass($1) AND i.indisprimary",
                &[&name],
            )
            .await
            .map_err(|e| self.query_error(&format!("read primary key of {}", table.name), e))?
            .iter()
            .map(|row| row.get(0))
            .collect();
        let differences = table_differences(table, &columns, &primary_key);
        if differences.is_empty() {
            Ok(())
        } else {
            Err(ShardError::SchemaMismatch {
                shard: self.id.clone(),
                table: table.name.clone(),
                differences,
            })
        }
    }

    async fn prepare_fence(
        &self,
        tx: &tokio_postgres::Transaction<'_>,
        epoch: Epoch,
    ) -> Result<(), ShardError> {
        let found = fence::initialise(tx, epoch)
            .await
            .map_err(|e| self.query_error("set up the fence", e))?;
        if found > epoch {
            return Err(ShardError::FenceAhead {
                shard: self.id.clone(),
                fence: found,
                catalog: epoch,
            });
        }
        Ok(())
    }

    fn query_error(&self, context: &str, cause: tokio_postgres::Error) -> ShardError {
        ShardError::Query {
            shard: self.id.clone(),
            context: context.to_string(),
            cause,
        }
    }
}

/// Every way the columns and primary key found on a shard differ from the declaration.
fn table_differences(table: &TableSchema, found: &[ExpectedColumn], primary_key: &[String]) -> Vec<String> {
    let expected = expected_columns(table);
    let mut differences = Vec::new();
    for want in &expected {
        match found.iter().find(|c| c.name == want.name) {
            None => differences.push(format!("column {} is missing", want.name)),
            Some(have) if have.sql_type != want.sql_type => differences.push(format!(
                "column {} has type {}, the config says {}",
                want.name, have.sql_type, want.sql_type
            )),
            Some(have) if have.not_null != want.not_null => differences.push(format!(
                "column {} is {}, the config says {}",
                want.name,
                null_word(have.not_null),
                null_word(want.not_null)
            )),
            Some(_) => {}
        }
    }
    for have in found
        .iter()
        .filter(|c| !expected.iter().any(|e| e.name == c.name))
    {
        differences.push(format!("column {} is not in the config", have.name));
    }
    let want_key: Vec<String> = table.id.iter().map(|&i| table.columns[i].name.clone()).collect();
    if primary_key != want_key.as_slice() {
        differences.push(format!(
            "primary key is ({}), the config says ({})",
            primary_key.join(", "),
            want_key.join(", ")
        ));
    }
    differences
}

fn null_word(not_null: bool) -> &'static str {
    if not_null { "NOT NULL" } else { "nullable" }
}

fn build_shard(shard: &ShardEndpoint, config: &Config, session_setup: &str) -> Result<Shard, ShardError> {
    let pool = build_pool(&PoolSettings {
        url: &shard.url,
        max_size: config.pool.connections_per_shard,
        connect_timeout: config.pool.connect_timeout,
        wait_timeout: None,
        application_name: "shardgate",
        session_setup,
        password: shard.password.as_deref(),
        tls: &config.tls,
    })
    .map_err(|reason| ShardError::Settings {
        shard: shard.id.clone(),
        reason,
    })?;
    Ok(Shard {
        id: shard.id.clone(),
        redacted_url: redact_url(&shard.url),
        weight: shard.weight,
        pool,
        prepared: AtomicBool::new(false),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn events() -> TableSchema {
        let config = Config::parse(
            r#"[[tables]]
            name = "events"
            id = "id"
            partition_key = ["k"]
            columns = [{ name = "id", type = "bigint" }, { name = "k", type = "text" }, { name = "note", type = "text", nullable = true }]"#,
        )
        .unwrap();
        TableSchema::from_config(&config.tables[0]).unwrap()
    }

    fn column(name: &str, sql_type: &str, not_null: bool) -> ExpectedColumn {
        ExpectedColumn {
            name: name.into(),
            sql_type: sql_type.into(),
            not_null,
        }
    }

    #[test]
    fn differences_name_each_column_and_the_key() {
        let found = [
            column("id", "integer", true),
            column("k", "text", false),
            column("extra", "text", false),
            column("_sg_hash", "bigint", true),
        ];
        assert_eq!(
            table_differences(&events(), &found, &[]),
            [
                "column id has type integer, the config says bigint",
                "column k is nullable, the config says NOT NULL",
                "column note is missing",
                "column extra is not in the config",
                "primary key is (), the config says (id)",
            ]
        );
        let matching: Vec<ExpectedColumn> = expected_columns(&events());
        assert!(table_differences(&events(), &matching, &["id".into()]).is_empty());
    }
}
