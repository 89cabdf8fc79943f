//! The shards: each one's pools (COPY and query) and write queue, health checks, and the step
//! that creates or verifies every declared table and the fence table on a shard before anything
//! is written to it.
//!
//! Which shards exist is decided per routing snapshot: [`set::ShardSet`] pairs one epoch's
//! routing table with the shards it names, so a [`crate::routing::ShardIndex`] always means a
//! shard of the same snapshot. See `docs/architecture.md`.

use crate::config::{Config, TlsConfig};
use crate::routing::{Epoch, ShardId};

pub mod applied;
pub mod fence;
pub mod idempotency;
pub mod queue;
pub mod set;

use crate::pg::{PoolSettings, build_pool, describe_pool_error, is_unreachable, redact_url};
use crate::schema::streams;
use crate::schema::{
    EPOCH_COLUMN, ExpectedColumn, QUIET_SETUP_SQL, TableSchema, Tables, add_epoch_column_sql,
    create_table_sql, expected_columns, quote_ident,
};
use deadpool_postgres::Pool;
use queue::{QueueLimits, QueueReceiver, WriteQueue};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use thiserror::Error;
use tokio_postgres::GenericClient;

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
    #[error("shard {shard}: {context}: {}", crate::pg::describe_error(.cause))]
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

/// One shard as this proxy uses it: its name, its pools and its write queue. It lives as long
/// as some routing snapshot names it (see [`set`]).
pub struct Shard {
    /// Stable name.
    pub id: ShardId,
    /// URL with any password replaced by `***`, safe to log and show.
    pub redacted_url: String,
    /// The shard's connections, shared with its writers.
    pub pools: Arc<ShardPools>,
    /// Where requests queue rows for the shard's writers.
    pub queue: WriteQueue,
    /// The URL and password it was opened with, to tell whether a re-read catalog moved it.
    endpoint: ShardEndpoint,
}

/// A shard's connections: COPY for the writers, and apart from them the reporting queries'.
pub struct ShardPools {
    /// The shard's name, for errors and logs.
    pub id: ShardId,
    /// Connections the writers COPY through.
    pub copy: Pool,
    /// Connections reporting queries run on.
    pub query: Pool,
    /// Whether its tables and fence have been created or verified; nothing is written to it
    /// before.
    prepared: AtomicBool,
}

/// What opening a shard takes besides its endpoint: pool sizes, timeouts, TLS, the writers'
/// session set-up and the queue's bounds.
#[derive(Debug, Clone)]
pub struct ShardSettings {
    /// COPY connections (and writer tasks) per shard.
    pub copy_connections: usize,
    /// Query connections per shard.
    pub query_connections: usize,
    /// Longest a connection attempt may take.
    pub connect_timeout: Duration,
    /// Longest a query waits for a free query connection.
    pub query_wait_timeout: Duration,
    /// SQL every COPY connection runs once when opened (may be empty).
    pub session_setup: String,
    /// TLS for every connection.
    pub tls: TlsConfig,
    /// Number of declared tables, each with its own queue budget.
    pub tables: usize,
    /// Bounds of each (shard, table) queue.
    pub queue: QueueLimits,
}

impl ShardSettings {
    /// The settings `config` gives, with the writers' `session_setup` for `tables` tables.
    pub fn from_config(config: &Config, session_setup: String, tables: usize) -> ShardSettings {
        ShardSettings {
            copy_connections: config.pool.connections_per_shard,
            query_connections: config.query.connections_per_shard,
            connect_timeout: config.pool.connect_timeout,
            query_wait_timeout: config.query.wait_timeout,
            session_setup,
            tls: config.tls.clone(),
            tables,
            queue: QueueLimits {
                max_rows: config.queue.max_rows,
                max_bytes: config.queue.max_bytes.as_usize(),
            },
        }
    }
}

impl Shard {
    /// Builds the shard's pools (connections open lazily) and its queue, whose receiving half
    /// the caller hands to the shard's writers.
    pub fn open(
        endpoint: &ShardEndpoint,
        settings: &ShardSettings,
    ) -> Result<(Shard, QueueReceiver), ShardError> {
        let copy = copy_pool(endpoint, settings)?;
        let query = pool(
            endpoint,
            settings,
            settings.query_connections,
            Some(settings.query_wait_timeout),
            "shardgate-query",
            "",
        )?;
        let (queue, receiver) = WriteQueue::new(settings.tables, settings.queue);
        let shard = Shard {
            id: endpoint.id.clone(),
            redacted_url: redact_url(&endpoint.url),
            pools: Arc::new(ShardPools {
                id: endpoint.id.clone(),
                copy,
                query,
                prepared: AtomicBool::new(false),
            }),
            queue,
            endpoint: endpoint.clone(),
        };
        Ok((shard, receiver))
    }

    /// Whether its tables and fence are known to match the config, so batches may be written.
    pub fn is_prepared(&self) -> bool {
        self.pools.is_prepared()
    }

    /// Whether the shard answers `SELECT 1` within a short timeout.
    pub async fn is_up(&self) -> bool {
        let probe = async {
            let client = self.pools.copy.get().await.ok()?;
            client.simple_query("SELECT 1").await.ok()
        };
        matches!(tokio::time::timeout(HEALTH_TIMEOUT, probe).await, Ok(Some(_)))
    }

    /// The rows its tables named `tables` hold, as Postgres's statistics count them
    /// (`n_live_tup`, updated as transactions end, without a scan); `None` when the shard did not
    /// answer within a short timeout.
    pub async fn stored_rows_estimate(&self, tables: &[String]) -> Option<i64> {
        let read = async {
            let client = self.pools.query.get().await.ok()?;
            let row = client
                .query_one(
                    "SELECT coalesce(sum(n_live_tup), 0)::bigint FROM pg_stat_user_tables \
                     WHERE relid = ANY (SELECT to_regclass(name) FROM unnest($1::text[]) AS name)",
                    &[&tables],
                )
                .await
                .ok()?;
            Some(row.get(0))
        };
        tokio::time::timeout(HEALTH_TIMEOUT, read).await.ok().flatten()
    }

    /// Whether it was opened with `endpoint`'s URL and password.
    fn connects_as(&self, endpoint: &ShardEndpoint) -> bool {
        self.endpoint.url == endpoint.url && self.endpoint.password == endpoint.password
    }
}

impl ShardPools {
    /// Whether its tables and fence are known to match the config, so batches may be written.
    pub fn is_prepared(&self) -> bool {
        self.prepared.load(Ordering::Acquire)
    }

    /// Creates or verifies every table and the fence, setting the fence to `epoch`, unless
    /// that was done before. An unreachable shard is [`ShardError::Unreachable`].
    pub async fn prepare_once(&self, tables: &Tables, epoch: Epoch) -> Result<(), ShardError> {
        if self.is_prepared() {
            return Ok(());
        }
        self.prepare(tables, epoch).await?;
        self.prepared.store(true, Ordering::Release);
        tracing::info!(shard = %self.id, "shard prepared");
        Ok(())
    }

    async fn prepare(&self, tables: &Tables, epoch: Epoch) -> Result<(), ShardError> {
        let mut client = self.copy.get().await.map_err(|e| {
            let (shard, reason) = (self.id.clone(), describe_pool_error(&e));
            if is_unreachable(&e) {
                ShardError::Unreachable { shard, reason }
            } else {
                ShardError::Connect { shard, reason }
            }
        })?;
        prepare_database(&mut client, &self.id, tables, epoch).await
    }
}

/// Creates or verifies every table of `tables` and the fence (moved forward to `epoch`) in the
/// database `client` is connected to, shard `id`, in one transaction.
pub async fn prepare_database(
    client: &mut tokio_postgres::Client,
    id: &ShardId,
    tables: &Tables,
    epoch: Epoch,
) -> Result<(), ShardError> {
    Setup { id }.run(client, tables, epoch).await
}

/// The set-up of one shard's database, named for its errors.
struct Setup<'a> {
    id: &'a ShardId,
}

impl Setup<'_> {
    async fn run(
        &self,
        client: &mut tokio_postgres::Client,
        tables: &Tables,
        epoch: Epoch,
    ) -> Result<(), ShardError> {
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
        tx.batch_execute(&applied::create_sql())
            .await
            .map_err(|e| self.query_error("set up the spool's applied marks", e))?;
        tx.batch_execute(&idempotency::create_sql())
            .await
            .map_err(|e| self.query_error("set up the idempotency records", e))?;
        tx.commit()
            .await
            .map_err(|e| self.query_error("commit set-up", e))
    }

    async fn prepare_table(
        &self,
        tx: &tokio_postgres::Transaction<'_>,
        table: &TableSchema,
    ) -> Result<(), ShardError> {
        let found = table_differences_on(tx, table)
            .await
            .map_err(|e| self.query_error(&format!("read the columns of {}", table.name), e))?;
        match found {
            None => tx
                .batch_execute(&create_table_sql(table))
                .await
                .map_err(|e| self.query_error(&format!("create table {}", table.name), e))?,
            Some(differences) if differences.is_empty() => {
                self.add_epoch_column_if_missing(tx, table).await?
            }
            Some(differences) => {
                return Err(ShardError::SchemaMismatch {
                    shard: self.id.clone(),
                    table: table.name.clone(),
                    differences,
                });
            }
        }
        match streams::index_sql(table) {
            Some(sql) => tx
                .batch_execute(&sql)
                .await
                .map_err(|e| self.query_error(&format!("index the streams of {}", table.name), e)),
            None => Ok(()),
        }
    }

    /// Adds the epoch column to a table without an id made before it existed.
    async fn add_epoch_column_if_missing(
        &self,
        tx: &tokio_postgres::Transaction<'_>,
        table: &TableSchema,
    ) -> Result<(), ShardError> {
        let Some(sql) = add_epoch_column_sql(table) else {
            return Ok(());
        };
        let context = format!("add {EPOCH_COLUMN} to {}", table.name);
        let missing: bool = tx
            .query_one(
                "SELECT NOT EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = to_regclass($1) \
                 AND attname = $2 AND NOT attisdropped)",
                &[&quote_ident(&table.name), &EPOCH_COLUMN],
            )
            .await
            .map_err(|e| self.query_error(&context, e))?
            .get(0);
        if !missing {
            return Ok(());
        }
        tracing::info!(shard = %self.id, table = %table.name, "adding the hidden epoch column");
        tx.batch_execute(&sql)
            .await
            .map_err(|e| self.query_error(&context, e))
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

/// A pool of COPY connections to `endpoint` as the writers open them, without a queue or
/// writers: for loading a shard directly (the bench's `--target direct`).
pub fn copy_pool(endpoint: &ShardEndpoint, settings: &ShardSettings) -> Result<Pool, ShardError> {
    pool(
        endpoint,
        settings,
        settings.copy_connections,
        None,
        "shardgate",
        &settings.session_setup,
    )
}

fn pool(
    endpoint: &ShardEndpoint,
    settings: &ShardSettings,
    max_size: usize,
    wait_timeout: Option<Duration>,
    application_name: &str,
    session_setup: &str,
) -> Result<Pool, ShardError> {
    build_pool(&PoolSettings {
        url: &endpoint.url,
        database: None,
        max_size,
        connect_timeout: settings.connect_timeout,
        wait_timeout,
        application_name,
        session_setup,
        password: endpoint.password.as_deref(),
        tls: &settings.tls,
    })
    .map_err(|reason| ShardError::Settings {
        shard: endpoint.id.clone(),
        reason,
    })
}

/// How `table` as found in the database `client` is connected to differs from its declaration:
/// `None` when it does not exist, else every difference (none when it matches).
pub async fn table_differences_on(
    client: &impl GenericClient,
    table: &TableSchema,
) -> Result<Option<Vec<String>>, tokio_postgres::Error> {
    let name = quote_ident(&table.name);
    let found = client
        .query(
            "SELECT a.attname::text, format_type(a.atttypid, a.atttypmod), a.attnotnull
             FROM pg_attribute a
             WHERE a.attrelid = to_regclass($1) AND a.attnum > 0 AND NOT a.attisdropped
             ORDER BY a.attnum",
            &[&name],
        )
        .await?;
    if found.is_empty() {
        return Ok(None);
    }
    let columns: Vec<ExpectedColumn> = found
        .iter()
        .map(|row| ExpectedColumn {
            name: row.get(0),
            sql_type: row.get(1),
            not_null: row.get(2),
        })
        .collect();
    let primary_key: Vec<String> = client
        .query(
            "SELECT a.attname::text FROM pg_index i
             JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey)
             WHERE i.indrelid = to_regclass($1) AND i.indisprimary",
            &[&name],
        )
        .await?
        .iter()
        .map(|row| row.get(0))
        .collect();
    Ok(Some(table_differences(table, &columns, &primary_key)))
}

/// Every way the columns and primary key found on a shard differ from the declaration.
fn table_differences(table: &TableSchema, found: &[ExpectedColumn], primary_key: &[String]) -> Vec<String> {
    let expected = expected_columns(table);
    let mut differences = Vec::new();
    for want in &expected {
        match found.iter().find(|c| c.name == want.name) {
            // A table made before the epoch column existed gains it at set-up.
            None if want.name == EPOCH_COLUMN => {}
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
