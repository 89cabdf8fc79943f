//! Split hot keys as the catalog records them (`shardgate.hot_keys`): one row per fan-out step
//! of a key, with its salts, the epoch that published it and the time from which rows made
//! take it (invariant 11). A split is one catalog transaction that also advances the routing epoch and
//! announces it (invariants 3 and 10), so every proxy, and a restarted one, places the key's
//! rows the same way.

use super::{Catalog, CatalogError, advance_epoch, query, take_catalog_lock};
use crate::routing::salt::salted_position;
use crate::routing::{Epoch, KeyHash, SplitStep};
use serde::Serialize;

/// Who decided a split.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SplitSource {
    /// The proxy's hot-key watch.
    Detected,
    /// An operator, through the admin API.
    Manual,
}

impl SplitSource {
    fn as_str(self) -> &'static str {
        match self {
            SplitSource::Detected => "detected",
            SplitSource::Manual => "manual",
        }
    }
}

/// A split to make: grow `key`'s fan-out in `table` to `fanout`; a key already at it or above
/// is left alone.
#[derive(Debug, Clone)]
pub struct SplitRequest {
    /// The table.
    pub table: String,
    /// The key's hash.
    pub key: KeyHash,
    /// The fan-out wanted.
    pub fanout: u32,
    /// The key's values, by column, when known.
    pub key_values: Option<serde_json::Value>,
    /// Who decided it.
    pub source: SplitSource,
    /// The key's rate when it was decided, when measured.
    pub rows_per_second: Option<f64>,
}

/// What recording a split did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SplitOutcome {
    /// The fan-out grew; the step was published with this epoch.
    Grown {
        /// The epoch that publishes it.
        epoch: Epoch,
        /// From when rows made take it.
        since_ms: i64,
    },
    /// The key already has this fan-out or a larger one; nothing changed.
    AlreadyAtLeast {
        /// Its largest fan-out.
        fanout: u32,
    },
}

/// One fan-out step of a split key, as `GET /admin/hot-keys` lists it.
#[derive(Debug, Clone, Serialize)]
pub struct StoredSplit {
    /// The table.
    pub table: String,
    /// The key's hash, as 16 hex digits.
    pub key_hash: String,
    /// The fan-out of this step.
    pub fanout: u32,
    /// Its salts.
    pub salts: Vec<u32>,
    /// From when rows made take it, ms since the Unix epoch.
    pub since_ms: i64,
    /// The epoch that published it.
    pub epoch: i64,
    /// The key's values, when known.
    pub key_values: Option<serde_json::Value>,
    /// Who decided it.
    pub source: String,
    /// The key's rate when it was decided, when measured.
    pub rows_per_second: Option<f64>,
    /// The ring position of each of its salts, in the order of `salts`, as 16 hex digits.
    pub positions: Vec<String>,
}

impl Catalog {
    /// Records `split` for rows made from `since_ms` on (ms since the Unix epoch; moved past the
    /// key's last step when it is not), with the salts `choose` picks given the key's salts so
    /// far (none when it is not split), and publishes it with a new epoch, unless the key
    /// already has that fan-out or more: fan-out only grows.
    pub async fn split_key(
        &self,
        split: &SplitRequest,
        since_ms: i64,
        choose: impl FnOnce(&[u32]) -> Vec<u32>,
    ) -> Result<SplitOutcome, CatalogError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(query("begin"))?;
        take_catalog_lock(&tx).await?;
        let last = tx
            .query_opt(
                "SELECT salts, since_ms FROM shardgate.hot_keys \
                 WHERE table_name = $1 AND key_hash = $2 ORDER BY fanout DESC LIMIT 1",
                &[&split.table, &split.key.as_i64()],
            )
            .await
            .map_err(query("read the key's fan-out"))?;
        let (previous, last_since): (Vec<u32>, Option<i64>) = match last {
            Some(row) => (salts_of(row.get(0)), Some(row.get(1))),
            None => (Vec::new(), None),
        };
        let largest = previous.len().max(1) as u32;
        if split.fanout <= largest {
            return Ok(SplitOutcome::AlreadyAtLeast { fanout: largest });
        }
        let salts: Vec<i32> = choose(&previous).iter().map(|&s| s as i32).collect();
        let since_ms = last_since.map_or(since_ms, |last| since_ms.max(last + 1));
        let epoch = advance_epoch(&tx).await?;
        tx.execute(
            "INSERT INTO shardgate.hot_keys \
                 (table_name, key_hash, fanout, salts, since_ms, epoch, key_values, source, rows_per_second) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
            &[
                &split.table,
                &split.key.as_i64(),
                &(salts.len() as i32),
                &salts,
                &since_ms,
                &epoch.0,
                &split.key_values,
                &split.source.as_str(),
                &split.rows_per_second,
            ],
        )
        .await
        .map_err(query("record the split"))?;
        tx.commit().await.map_err(query("commit"))?;
        Ok(SplitOutcome::Grown { epoch, since_ms })
    }

    /// Records the values of a split key whose steps lack them (one found hot by its hash).
    pub async fn record_key_values(
        &self,
        table: &str,
        key: KeyHash,
        values: &serde_json::Value,
    ) -> Result<(), CatalogError> {
        self.client()
            .await?
            .execute(
                "UPDATE shardgate.hot_keys SET key_values = $3 \
                 WHERE table_name = $1 AND key_hash = $2 AND key_values IS NULL",
                &[&table, &key.as_i64(), values],
            )
            .await
            .map_err(query("record the key's values"))?;
        Ok(())
    }

    /// Every recorded fan-out step, by table, key and fan-out.
    pub async fn splits(&self) -> Result<Vec<StoredSplit>, CatalogError> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT table_name, key_hash, fanout, salts, since_ms, epoch, key_values, source, rows_per_second \
                 FROM shardgate.hot_keys ORDER BY table_name, key_hash, fanout",
                &[],
            )
            .await
            .map_err(query("read the hot keys"))?;
        Ok(rows
            .iter()
            .map(|r| {
                let key = KeyHash::from_i64(r.get(1));
                let salts = salts_of(r.get(3));
                let positions = salts
                    .iter()
                    .map(|&salt| format!("{:016x}", salted_position(key, salt).0))
                    .collect();
                StoredSplit {
                    table: r.get(0),
                    key_hash: format!("{:016x}", key.0),
                    fanout: r.get::<_, i32>(2) as u32,
                    salts,
                    since_ms: r.get(4),
                    epoch: r.get(5),
                    key_values: r.get(6),
                    source: r.get(7),
                    rows_per_second: r.get(8),
                    positions,
                }
            })
            .collect())
    }
}

/// Reads every fan-out step, for the routing table.
pub(super) async fn read_steps(tx: &tokio_postgres::Transaction<'_>) -> Result<Vec<SplitStep>, CatalogError> {
    let rows = tx
        .query(
            "SELECT table_name, key_hash, since_ms, salts FROM shardgate.hot_keys",
            &[],
        )
        .await
        .map_err(query("read the hot keys"))?;
    Ok(rows
        .iter()
        .map(|r| SplitStep {
            table: r.get(0),
            key: KeyHash::from_i64(r.get(1)),
            since_ms: r.get(2),
            salts: salts_of(r.get(3)),
        })
        .collect())
}

fn salts_of(stored: Vec<i32>) -> Vec<u32> {
    stored.into_iter().map(|s| s.max(0) as u32).collect()
}
