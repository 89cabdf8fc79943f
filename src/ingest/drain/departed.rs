//! Shards that left the routing table while spooled parts still name them. A part routed to a
//! shard that was drained away (or whose adding was cancelled) before the drainer settled it,
//! by another proxy's migration or while this proxy was down, is still asked about on that
//! shard: only it can tell whether it applied the part, whose rows were then copied to their
//! new owners. The shard is reached as the catalog still records it, with the URL and password
//! rules of every other shard, through one connection opened when first needed.

use crate::catalog::Catalog;
use crate::config::Config;
use crate::shards::{ShardSettings, copy_pool};
use deadpool_postgres::Pool;
use std::collections::HashMap;
use std::sync::Arc;
use tokio::sync::Mutex;

/// Connections to shards the routing table no longer names, by name.
pub struct DepartedShards {
    catalog: Arc<Catalog>,
    config: Arc<Config>,
    settings: ShardSettings,
    pools: Mutex<HashMap<String, Pool>>,
}

impl DepartedShards {
    /// Reaches departed shards through `catalog`'s records, connecting as `config` says and
    /// with `settings`' TLS and timeouts.
    pub fn new(catalog: Arc<Catalog>, config: Arc<Config>, settings: &ShardSettings) -> DepartedShards {
        let settings = ShardSettings {
            copy_connections: 1,
            session_setup: String::new(),
            ..settings.clone()
        };
        DepartedShards {
            catalog,
            config,
            settings,
            pools: Mutex::new(HashMap::new()),
        }
    }

    /// A pool of one connection to shard `name`, opened lazily as the catalog records it.
    pub async fn pool(&self, name: &str) -> Result<Pool, String> {
        let mut pools = self.pools.lock().await;
        if let Some(pool) = pools.get(name) {
            return Ok(pool.clone());
        }
        let endpoint = self
            .catalog
            .recorded_shard(name, &self.config)
            .await
            .map_err(|e| e.to_string())?
            .ok_or_else(|| format!("the catalog has no record of shard {name}"))?;
        let pool = copy_pool(&endpoint, &self.settings).map_err(|e| e.to_string())?;
        pools.insert(name.to_string(), pool.clone());
        Ok(pool)
    }
}
