//! Durable routing state in Postgres (invariant 10): the shards, the ring's tokens and the epoch,
//! in a `shardgate` schema of the catalog database.
//!
//! On first start the catalog is written from the config; afterwards it is the truth and the
//! config must agree with it. A config naming other shards, weights or vnodes than the catalog is
//! a start-up error, never a silent re-hash that would strand stored rows.

use crate::config::Config;
use crate::pg::{PoolSettings, build_pool};
use crate::routing::{Epoch, KeyHash, Ring, RingError, RoutingTable, ShardId, ShardIndex, Token};
use crate::schema::QUIET_SETUP_SQL;
use deadpool_postgres::Pool;
use std::collections::HashMap;
use thiserror::Error;
use tokio_postgres::IsolationLevel;

/// Key of the advisory lock that serialises catalog initialisation between proxies.
const CATALOG_LOCK_KEY: i64 = 0x5347_4341_5441_4c47;

const CREATE_CATALOG: &str = "
    CREATE SCHEMA IF NOT EXISTS shardgate;
    CREATE TABLE IF NOT EXISTS shardgate.routing (
        singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
        epoch bigint NOT NULL,
        vnodes integer NOT NULL,
        updated_at timestamptz NOT NULL DEFAULT now()
    );
    CREATE TABLE IF NOT EXISTS shardgate.shards (
        name text PRIMARY KEY,
        weight integer NOT NULL,
        added_epoch bigint NOT NULL
    );
    CREATE TABLE IF NOT EXISTS shardgate.ring_tokens (
        position bigint PRIMARY KEY,
        shard text NOT NULL REFERENCES shardgate.shards (name)
    );";

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
    #[error("catalog: {context}: {cause}")]
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
            max_size: 2,
            connect_timeout: config.pool.connect_timeout,
            wait_timeout: None,
            application_name: "shardgate-catalog",
            session_setup: "",
            tls: &config.tls,
        })
        .map_err(CatalogError::Settings)?;
        Ok(Catalog { pool })
    }

    /// Loads the routing table, first writing it from the config when the catalog is empty.
    pub async fn load_or_init(&self, config: &Config) -> Result<RoutingTable, CatalogError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(query("begin"))?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&CATALOG_LOCK_KEY])
            .await
            .map_err(query("take the catalog lock"))?;
        tx.batch_execute(QUIET_SETUP_SQL)
            .await
            .map_err(query("quiet the set-up notices"))?;
        tx.batch_execute(CREATE_CATALOG)
            .await
            .map_err(query("create the catalog schema"))?;
        let table = match read_routing(&tx, config).await? {
            Some(table) => table,
            None => write_initial(&tx, config).await?,
        };
        tx.commit().await.map_err(query("commit"))?;
        Ok(table)
    }

    /// Reads the stored routing table (after a fence reported a newer epoch). The epoch, shards
    /// and tokens are read from one snapshot, so a concurrent change is seen whole or not at all.
    pub async fn load(&self, config: &Config) -> Result<RoutingTable, CatalogError> {
        let mut client = self.client().await?;
        let tx = client
            .build_transaction()
            .isolation_level(IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()
            .await
            .map_err(query("begin"))?;
        let table = read_routing(&tx, config)
            .await?
            .ok_or_else(|| CatalogError::Disagrees("the catalog holds no routing table".into()))?;
        tx.commit().await.map_err(query("commit"))?;
        Ok(table)
    }

    async fn client(&self) -> Result<deadpool_postgres::Object, CatalogError> {
        self.pool
            .get()
            .await
            .map_err(|e| CatalogError::Connect(crate::pg::describe_error(&e)))
    }
}

fn query(context: &'static str) -> impl Fn(tokio_postgres::Error) -> CatalogError {
    move |cause| CatalogError::Query { context, cause }
}

async fn write_initial(
    tx: &tokio_postgres::Transaction<'_>,
    config: &Config,
) -> Result<RoutingTable, CatalogError> {
    let epoch = Epoch(1);
    let vnodes = config.routing.vnodes;
    let ring = Ring::build(config.shards.iter().map(|s| (s.name.as_str(), s.weight)), vnodes)?;
    let names: Vec<String> = config.shards.iter().map(|s| s.name.clone()).collect();
    let weights: Vec<i32> = config.shards.iter().map(|s| s.weight as i32).collect();
    tx.execute(
        "INSERT INTO shardgate.shards (name, weight, added_epoch) SELECT n, w, $3 FROM unnest($1::text[], $2::int[]) AS t(n, w)",
        &[&names, &weights, &epoch.0],
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
    Ok(RoutingTable {
        epoch,
        shards: names.into_iter().map(ShardId).collect(),
        ring,
    })
}

/// Reads the stored routing table, checking it against the config; `None` when never written.
async fn read_routing(
    tx: &tokio_postgres::Transaction<'_>,
    config: &Config,
) -> Result<Option<RoutingTable>, CatalogError> {
    let Some(row) = tx
        .query_opt("SELECT epoch, vnodes FROM shardgate.routing", &[])
        .await
        .map_err(query("read the routing epoch"))?
    else {
        return Ok(None);
    };
    let (epoch, vnodes): (i64, i32) = (row.get(0), row.get(1));
    if i64::from(vnodes) != i64::from(config.routing.vnodes) {
        return Err(CatalogError::Disagrees(format!(
            "routing.vnodes is {} but the catalog's ring was built with {vnodes}",
            config.routing.vnodes
        )));
    }
    let stored: HashMap<String, i32> = tx
        .query("SELECT name, weight FROM shardgate.shards", &[])
        .await
        .map_err(query("read the shards"))?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    check_shards(config, &stored)?;
    let index: HashMap<&str, ShardIndex> = config
        .shards
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
            Token {
                position: KeyHash::from_i64(r.get(0)).0,
                shard: index[shard.as_str()],
            }
        })
        .collect();
    Ok(Some(RoutingTable {
        epoch: Epoch(epoch),
        shards: config.shards.iter().map(|s| ShardId(s.name.clone())).collect(),
        ring: Ring::from_tokens(tokens)?,
    }))
}

/// The config must name exactly the stored shards, with the stored weights.
fn check_shards(config: &Config, stored: &HashMap<String, i32>) -> Result<(), CatalogError> {
    let mut problems = Vec::new();
    for shard in &config.shards {
        match stored.get(&shard.name) {
            None => problems.push(format!(
                "shard {} is in the config but not in the catalog",
                shard.name
            )),
            Some(&weight) if i64::from(weight) != i64::from(shard.weight) => problems.push(format!(
                "shard {} has weight {} in the config but {weight} in the catalog",
                shard.name, shard.weight
            )),
            Some(_) => {}
        }
    }
    let mut missing: Vec<&String> = stored
        .keys()
        .filter(|n| !config.shards.iter().any(|s| &s.name == *n))
        .collect();
    missing.sort();
    for name in missing {
        problems.push(format!("shard {name} is in the catalog but not in the config"));
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(CatalogError::Disagrees(problems.join("; ")))
    }
}

/// What a shard writer needs to re-read routing when a fence reports a newer epoch.
pub struct RoutingSource {
    /// The catalog to read from.
    pub catalog: Catalog,
    /// The config the stored state must agree with.
    pub config: std::sync::Arc<Config>,
    /// Where the new snapshot is published.
    pub routing: std::sync::Arc<crate::routing::Routing>,
}

impl RoutingSource {
    /// Reloads the routing table and publishes it when it is newer than the current one.
    pub async fn refresh(&self) -> Result<Epoch, CatalogError> {
        let table = self.catalog.load(&self.config).await?;
        let epoch = table.epoch;
        if self.routing.publish(table).is_ok() {
            tracing::info!(
                epoch = epoch.0,
                "published a newer routing table from the catalog"
            );
        }
        Ok(epoch)
    }
}
