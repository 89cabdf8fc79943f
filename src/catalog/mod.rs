//! Durable routing state in Postgres (invariant 10): the shards, the ring's tokens and the epoch,
//! in a `shardgate` schema of the catalog database.
//!
//! On first start the catalog is written from the config's shards; afterwards it owns the shard
//! list, each shard's weight and URL (without its password) and the ring. A config may still
//! list shards: each must be in the catalog (or drained from it), and its URL is the one used
//! for it; its weight only seeded the catalog. A shard only the catalog names is used as the
//! catalog records it. A config naming a shard the catalog never had, or other vnodes, is a
//! start-up error, never a silent re-hash that would strand stored rows. Layouts and their
//! migrations are in `layout`, the resharding journal in [`journal`].

use crate::config::Config;
use crate::pg::{PoolSettings, build_pool, without_password};
use crate::routing::salt::FanoutError;
use crate::routing::{Epoch, KeyHash, Ring, RingError, RoutingTable, ShardId, ShardIndex, Splits, Token};
use crate::schema::{QUIET_SETUP_SQL, Tables};
use crate::shards::ShardEndpoint;
use crate::shards::set::{PublishError, Published};
use deadpool_postgres::Pool;
use std::collections::HashMap;
use std::sync::Arc;
use thiserror::Error;
use tokio_postgres::IsolationLevel;
use watch::ROUTING_CHANNEL;

pub mod dead_letters;
pub mod hot_keys;
pub mod journal;
pub mod key_claims;
mod layout;
mod ranges;
pub mod watch;

/// Key of the advisory lock that serialises catalog initialisation between proxies.
const CATALOG_LOCK_KEY: i64 = 0x5347_4341_5441_4c47;

/// The catalog could not be read, written or reconciled with the config.
#[derive(Debug, Error)]
pub enum CatalogError {
    /// The catalog URL is unusable.
    #[error("catalog: invalid connection settings: {0}")]
    Settings(String),
    /// The catalog database could not be reached.
    #[error("catalog: cannot connect: {0}")]
    Connect(String),
    /// A catalog statement failed.
    #[error("catalog: {context}: {}", crate::pg::describe_error(.cause))]
    Query {
        /// What was being done.
        context: &'static str,
        /// The driver's error.
        cause: tokio_postgres::Error,
    },
    /// The config and the stored routing state disagree.
    #[error(
        "the config disagrees with the catalog: {0}. Placement is stored in the catalog; \
         restore the config to match it (adding or removing a shard is a resharding operation)"
    )]
    Disagrees(String),
    /// The stored ring is unusable.
    #[error("catalog: stored ring is invalid: {0}")]
    Ring(#[from] RingError),
    /// A stored hot-key split is unusable.
    #[error("catalog: a stored hot-key split is invalid: {0}")]
    Split(#[from] FanoutError),
    /// The catalog was written by a newer shardgate.
    #[error(
        "catalog: its layout is version {0}, newer than this shardgate reads ({current}); \
         run a shardgate at least as new as the one that wrote it",
        current = layout::CURRENT
    )]
    NewerLayout(i32),
    /// A shard the catalog lists has no URL this proxy can use.
    #[error(
        "shard {0} is in the catalog without a URL; name it in the config's [[shards]] or set \
         {env}",
        env = crate::config::shard_url_env(.0)
    )]
    NoUrl(String),
    /// A migration is unfinished; another cannot start.
    #[error("migration {0} is still running; wait for it to end")]
    MigrationRunning(i64),
    /// No migration has that id.
    #[error("no migration {0}")]
    NoMigration(i64),
    /// The migration is past the point where it can be cancelled.
    #[error("migration {id} is in phase {phase}; only a migration still copying can be cancelled")]
    NotCancellable {
        /// The migration.
        id: i64,
        /// Its phase.
        phase: String,
    },
    /// A shard of that name is in the catalog already.
    #[error("shard {0} already exists")]
    ShardExists(String),
    /// The catalog's routing table could not be published with its shards.
    #[error("cannot route with the catalog's routing table: {0}")]
    Publish(#[from] PublishError),
    /// An idempotency key's claim was there when one was made, and gone when read, again and
    /// again (pruned between the two).
    #[error("catalog: the claim on idempotency key {0:?} keeps changing while it is read")]
    ClaimUnsettled(String),
}

/// What the catalog holds: the routing table, and the shards it names with the connection
/// settings this proxy uses for them, in the routing table's shard order.
#[derive(Debug, Clone)]
pub struct CatalogState {
    /// The routing table.
    pub routing: RoutingTable,
    /// Every shard of `routing.shards`, at the same index.
    pub shards: Vec<ShardEndpoint>,
}

/// A shard as the catalog records it.
#[derive(Debug, Clone)]
struct StoredShard {
    name: String,
    weight: u32,
    /// Without its password.
    url: Option<String>,
}

/// Handle on the catalog database.
pub struct Catalog {
    pool: Pool,
}

impl Catalog {
    /// Connects lazily to the config's catalog database.
    pub fn connect(config: &Config) -> Result<Catalog, CatalogError> {
        let url = config
            .catalog_url()
            .ok_or_else(|| CatalogError::Settings("no catalog URL and no shard".into()))?;
        let pool = build_pool(&PoolSettings {
            url,
            database: None,
            max_size: 2,
            connect_timeout: config.pool.connect_timeout,
            wait_timeout: None,
            application_name: "shardgate-catalog",
            session_setup: "",
            password: None,
            tls: &config.tls,
        })
        .map_err(CatalogError::Settings)?;
        Ok(Catalog { pool })
    }

    /// Loads the catalog, first migrating an older layout forward and, when it is empty,
    /// writing it from the config's shards. The config's shards must all be in the catalog,
    /// with the weights the catalog records; shards only the catalog names are used as it
    /// records them.
    pub async fn load_or_init(&self, config: &Config) -> Result<CatalogState, CatalogError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(query("begin"))?;
        take_catalog_lock(&tx).await?;
        tx.batch_execute(QUIET_SETUP_SQL)
            .await
            .map_err(query("quiet the set-up notices"))?;
        layout::migrate(&tx).await?;
        if !has_routing(&tx).await? {
            write_initial(&tx, config).await?;
        }
        record_config_shards(&tx, config).await?;
        let state = read_state(&tx, config).await?;
        check_config_shards(&tx, config, &state).await?;
        tx.commit().await.map_err(query("commit"))?;
        Ok(state)
    }

    /// Reads the catalog (after a fence reported a newer epoch, say). The epoch, shards and
    /// tokens are read from one snapshot, so a concurrent change is seen whole or not at all.
    pub async fn load(&self, config: &Config) -> Result<CatalogState, CatalogError> {
        let mut client = self.client().await?;
        let tx = client
            .build_transaction()
            .isolation_level(IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()
            .await
            .map_err(query("begin"))?;
        if !has_routing(&tx).await? {
            return Err(CatalogError::Disagrees(
                "the catalog holds no routing table".into(),
            ));
        }
        let state = read_state(&tx, config).await?;
        tx.commit().await.map_err(query("commit"))?;
        Ok(state)
    }

    /// How this proxy connects to shard `name` as the catalog records it, whether or not it is
    /// still in the routing table: for a shard drained away (or whose adding was cancelled)
    /// that spooled parts still name. `None` when the catalog never had such a shard.
    pub async fn recorded_shard(
        &self,
        name: &str,
        config: &Config,
    ) -> Result<Option<ShardEndpoint>, CatalogError> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                "SELECT name, weight, url FROM shardgate.shards WHERE name = $1",
                &[&name],
            )
            .await
            .map_err(query("read the shard's record"))?;
        row.map(|r| endpoint(&stored_shard(&r), config)).transpose()
    }

    async fn client(&self) -> Result<deadpool_postgres::Object, CatalogError> {
        self.pool
            .get()
            .await
            .map_err(|e| CatalogError::Connect(crate::pg::describe_error(&e)))
    }
}

/// Serialises catalog writers (proxies initialising it, migration steps) until `tx` ends.
async fn take_catalog_lock(tx: &tokio_postgres::Transaction<'_>) -> Result<(), CatalogError> {
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&CATALOG_LOCK_KEY])
        .await
        .map_err(query("take the catalog lock"))?;
    Ok(())
}

/// The routing epoch, as `client` sees it.
async fn read_epoch(client: &impl tokio_postgres::GenericClient) -> Result<Epoch, CatalogError> {
    let epoch: i64 = client
        .query_one("SELECT epoch FROM shardgate.routing", &[])
        .await
        .map_err(query("read the routing epoch"))?
        .get(0);
    Ok(Epoch(epoch))
}

/// Advances the routing epoch and announces it when the transaction commits.
async fn advance_epoch(tx: &tokio_postgres::Transaction<'_>) -> Result<Epoch, CatalogError> {
    let epoch: i64 = tx
        .query_one(
            "UPDATE shardgate.routing SET epoch = epoch + 1, updated_at = now() RETURNING epoch",
            &[],
        )
        .await
        .map_err(query("advance the routing epoch"))?
        .get(0);
    tx.execute(
        "SELECT pg_notify($1, $2)",
        &[&ROUTING_CHANNEL, &epoch.to_string()],
    )
    .await
    .map_err(query("announce the new epoch"))?;
    Ok(Epoch(epoch))
}

fn query(context: &'static str) -> impl Fn(tokio_postgres::Error) -> CatalogError {
    move |cause| CatalogError::Query { context, cause }
}

async fn has_routing(tx: &tokio_postgres::Transaction<'_>) -> Result<bool, CatalogError> {
    let found = tx
        .query_opt(
            "SELECT 1 FROM pg_tables WHERE schemaname = 'shardgate' AND tablename = 'routing'",
            &[],
        )
        .await
        .map_err(query("look for the routing table"))?
        .is_some();
    if !found {
        return Ok(false);
    }
    Ok(tx
        .query_opt("SELECT 1 FROM shardgate.routing", &[])
        .await
        .map_err(query("read the routing epoch"))?
        .is_some())
}

/// Writes the first routing table: the config's shards, at epoch 1.
async fn write_initial(tx: &tokio_postgres::Transaction<'_>, config: &Config) -> Result<(), CatalogError> {
    let epoch = Epoch(1);
    let vnodes = config.routing.vnodes;
    let ring = Ring::build(config.shards.iter().map(|s| (s.name.as_str(), s.weight)), vnodes)?;
    let names: Vec<String> = config.shards.iter().map(|s| s.name.clone()).collect();
    let weights: Vec<i32> = config.shards.iter().map(|s| s.weight as i32).collect();
    let urls: Vec<String> = config.shards.iter().map(|s| without_password(&s.url)).collect();
    let ordinals: Vec<i32> = (0..names.len() as i32).collect();
    tx.execute(
        "INSERT INTO shardgate.shards (name, weight, added_epoch, url, ordinal) \
         SELECT n, w, $3, u, o FROM unnest($1::text[], $2::int[], $4::text[], $5::int[]) AS t(n, w, u, o)",
        &[&names, &weights, &epoch.0, &urls, &ordinals],
    )
    .await
    .map_err(query("store the shards"))?;
    let positions: Vec<i64> = ring
        .tokens()
        .iter()
        .map(|t| KeyHash(t.position).as_i64())
        .collect();
    let owners: Vec<&str> = ring.tokens().iter().map(|t| names[t.shard.0].as_str()).collect();
    tx.execute(
        "INSERT INTO shardgate.ring_tokens (position, shard) SELECT * FROM unnest($1::bigint[], $2::text[])",
        &[&positions, &owners],
    )
    .await
    .map_err(query("store the ring"))?;
    tx.execute(
        "INSERT INTO shardgate.routing (epoch, vnodes) VALUES ($1, $2)",
        &[&epoch.0, &(vnodes as i32)],
    )
    .await
    .map_err(query("store the routing epoch"))?;
    tracing::info!(
        epoch = epoch.0,
        shards = names.len(),
        tokens = positions.len(),
        "catalog initialised"
    );
    Ok(())
}

/// Fills in what a catalog of an older layout lacks for the shards the config names (the URL
/// without its password, the position in the config), and gives every other shard without a
/// position one after the last.
async fn record_config_shards(
    tx: &tokio_postgres::Transaction<'_>,
    config: &Config,
) -> Result<(), CatalogError> {
    for (ordinal, shard) in config.shards.iter().enumerate() {
        tx.execute(
            "UPDATE shardgate.shards SET url = coalesce(url, $2), ordinal = coalesce(ordinal, $3) \
             WHERE name = $1",
            &[&shard.name, &without_password(&shard.url), &(ordinal as i32)],
        )
        .await
        .map_err(query("record the shards' URLs"))?;
    }
    tx.execute(
        "UPDATE shardgate.shards s SET ordinal = n.ordinal FROM ( \
             SELECT name, (SELECT coalesce(max(ordinal), -1) FROM shardgate.shards) \
                          + row_number() OVER (ORDER BY name) AS ordinal \
             FROM shardgate.shards WHERE ordinal IS NULL) n \
         WHERE s.name = n.name",
        &[],
    )
    .await
    .map_err(query("order the shards"))?;
    Ok(())
}

/// Reads the routing table and the shards, checks them against the config and resolves each
/// shard's connection settings.
async fn read_state(
    tx: &tokio_postgres::Transaction<'_>,
    config: &Config,
) -> Result<CatalogState, CatalogError> {
    let row = tx
        .query_one("SELECT epoch, vnodes FROM shardgate.routing", &[])
        .await
        .map_err(query("read the routing epoch"))?;
    let (epoch, vnodes): (i64, i32) = (row.get(0), row.get(1));
    if i64::from(vnodes) != i64::from(config.routing.vnodes) {
        return Err(CatalogError::Disagrees(format!(
            "routing.vnodes is {} but the catalog's ring was built with {vnodes}",
            config.routing.vnodes
        )));
    }
    let stored: Vec<StoredShard> = tx
        .query(
            "SELECT name, weight, url FROM shardgate.shards WHERE NOT retired ORDER BY ordinal NULLS LAST, name",
            &[],
        )
        .await
        .map_err(query("read the shards"))?
        .iter()
        .map(stored_shard)
        .collect();
    let index: HashMap<&str, ShardIndex> = stored
        .iter()
        .enumerate()
        .map(|(i, s)| (s.name.as_str(), ShardIndex(i)))
        .collect();
    let tokens = tx
        .query("SELECT position, shard FROM shardgate.ring_tokens", &[])
        .await
        .map_err(query("read the ring"))?
        .iter()
        .map(|r| {
            let shard: String = r.get(1);
            let shard = index.get(shard.as_str()).copied().ok_or_else(|| {
                CatalogError::Disagrees(format!(
                    "a ring token names shard {shard}, which the catalog does not list"
                ))
            })?;
            Ok(Token {
                position: KeyHash::from_i64(r.get(0)).0,
                shard,
            })
        })
        .collect::<Result<Vec<_>, CatalogError>>()?;
    let shards = stored
        .iter()
        .map(|s| endpoint(s, config))
        .collect::<Result<_, _>>()?;
    let in_motion = ranges::read(tx, &index).await?;
    let mut routing = RoutingTable::new(
        Epoch(epoch),
        stored.iter().map(|s| ShardId(s.name.clone())).collect(),
        Ring::from_tokens(tokens)?,
    );
    routing.moving = in_motion.moving;
    routing.leaving = in_motion.leaving;
    routing.splits = Splits::from_steps(hot_keys::read_steps(tx).await?)?;
    Ok(CatalogState { routing, shards })
}

/// A shard as a row of `name, weight, url` from `shardgate.shards` records it.
fn stored_shard(row: &tokio_postgres::Row) -> StoredShard {
    StoredShard {
        name: row.get(0),
        weight: row.get::<_, i32>(1).max(0) as u32,
        url: row.get(2),
    }
}

/// How this proxy connects to a stored shard: the config's URL when the config names it, else
/// `SHARDGATE_SHARD_<NAME>_URL`, else the URL the catalog records; the password from
/// `SHARDGATE_SHARD_<NAME>_PASSWORD` when set.
fn endpoint(stored: &StoredShard, config: &Config) -> Result<ShardEndpoint, CatalogError> {
    let url = config
        .shards
        .iter()
        .find(|s| s.name == stored.name)
        .map(|s| s.url.clone())
        .or_else(|| config.shard_url_override(&stored.name).map(str::to_string))
        .or_else(|| stored.url.clone())
        .ok_or_else(|| CatalogError::NoUrl(stored.name.clone()))?;
    Ok(ShardEndpoint {
        id: ShardId(stored.name.clone()),
        weight: stored.weight,
        url,
        password: config.shard_password(&stored.name).map(str::to_string),
    })
}

/// Every shard the config names must be in the catalog. The config's shards only seed a new
/// catalog: a weight changed since (by a reweight) and a shard drained since are the catalog's
/// to decide, and are only reported.
async fn check_config_shards(
    tx: &tokio_postgres::Transaction<'_>,
    config: &Config,
    state: &CatalogState,
) -> Result<(), CatalogError> {
    let retired: Vec<String> = tx
        .query("SELECT name FROM shardgate.shards WHERE retired", &[])
        .await
        .map_err(query("read the drained shards"))?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let mut missing = Vec::new();
    for shard in &config.shards {
        match state.shards.iter().find(|s| s.id.0 == shard.name) {
            None if retired.contains(&shard.name) => tracing::warn!(
                shard = %shard.name,
                "the config names a shard that was drained; it is not used: remove it from the config"
            ),
            None => missing.push(shard.name.as_str()),
            Some(stored) if stored.weight != shard.weight => tracing::warn!(
                shard = %shard.name,
                config = shard.weight,
                catalog = stored.weight,
                "the config gives the shard another weight than the catalog; the catalog's is used \
                 (change a weight with PATCH /admin/shards/{{name}})"
            ),
            Some(_) => {}
        }
    }
    if missing.is_empty() {
        return Ok(());
    }
    let listed: Vec<&str> = state.shards.iter().map(|s| s.id.0.as_str()).collect();
    Err(CatalogError::Disagrees(format!(
        "shard {} is in the config but not in the catalog (which lists {}); a shard joins an \
         existing catalog through POST /admin/shards (shardgate admin shards add), not through the \
         config: remove it from the config to start",
        missing.join(", "),
        listed.join(", ")
    )))
}

/// Where a re-read routing table comes from and goes: the catalog, the config it must agree
/// with, and the published shard set, which a newer table replaces together with the shards it
/// names.
pub struct RoutingSource {
    /// The catalog to read from.
    pub catalog: Arc<Catalog>,
    /// The config the stored state must agree with.
    pub config: Arc<Config>,
    /// The declared tables, created on a shard that joins.
    pub tables: Arc<Tables>,
    /// Where the new snapshot is published.
    pub shards: Arc<Published>,
}

impl RoutingSource {
    /// Reloads the routing table and, when it is newer than the current one, publishes it with
    /// its shards: a shard that joins is opened and its tables are created or verified first.
    pub async fn refresh(&self) -> Result<(), CatalogError> {
        let state = self.catalog.load(&self.config).await?;
        let epoch = state.routing.epoch;
        if epoch <= self.shards.load().epoch() {
            return Ok(());
        }
        let next = self.shards.assemble(state.routing, &state.shards)?;
        if let Err(e) = next.prepare(&self.tables).await {
            tracing::error!(error = %e, "a shard of the new routing table cannot be prepared; its writes wait");
        }
        match self.shards.publish(next) {
            Ok(()) => {
                tracing::info!(
                    epoch = epoch.0,
                    "published a newer routing table from the catalog"
                );
                Ok(())
            }
            Err(PublishError::Stale { .. }) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(env: &[(&str, &str)]) -> Config {
        let mut config = Config::parse(
            r#"[[shards]]
            name = "s0"
            url = "postgres://app:a@db0/ev"
            [[tables]]
            name = "t"
            partition_key = ["k"]
            columns = [{ name = "k", type = "text" }]"#,
        )
        .unwrap();
        config.apply_env(env.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        config
    }

    fn stored(name: &str, url: Option<&str>) -> StoredShard {
        StoredShard {
            name: name.into(),
            weight: 1,
            url: url.map(str::to_string),
        }
    }

    #[test]
    fn a_shard_connects_by_the_config_then_the_environment_then_the_catalog() {
        let env = [
            ("SHARDGATE_SHARD_S1_URL", "postgres://app@db1-new/ev"),
            ("SHARDGATE_SHARD_S2_PASSWORD", "from-env"),
        ];
        let config = config(&env);
        let named = endpoint(&stored("s0", Some("postgres://app@db0-old/ev")), &config).unwrap();
        assert_eq!(
            (named.url.as_str(), named.password),
            ("postgres://app:a@db0/ev", None)
        );
        let overridden = endpoint(&stored("s1", Some("postgres://app@db1/ev")), &config).unwrap();
        assert_eq!(overridden.url, "postgres://app@db1-new/ev");
        let recorded = endpoint(&stored("s2", Some("postgres://app@db2/ev")), &config).unwrap();
        assert_eq!(recorded.url, "postgres://app@db2/ev");
        assert_eq!(recorded.password.as_deref(), Some("from-env"));
        assert!(
            !format!("{recorded:?}").contains("from-env"),
            "Debug hides the password"
        );
        let error = endpoint(&stored("s3", None), &config).unwrap_err();
        assert_eq!(
            error.to_string(),
            "shard s3 is in the catalog without a URL; name it in the config's [[shards]] or set \
             SHARDGATE_SHARD_S3_URL"
        );
    }
}
