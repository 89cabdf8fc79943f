//! Idempotency keys of spooled writes (`shardgate.key_claims`): the first spooled write of a
//! key claims it here, in the one place every proxy shares, and only the claiming write is
//! drained. Another write spooled with the same key (a retry on another proxy, or one whose
//! `202` was lost) finds the claim and is answered as the first was; if it reached a spool
//! anyway, the drainer finds the claim names another write and drops it, so the key's rows
//! are written once.

use super::{Catalog, CatalogError, query};
use std::time::Duration;
use uuid::Uuid;

/// A spooled write's claim on an idempotency key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyClaim {
    /// The key.
    pub key: String,
    /// The table written.
    pub table: String,
    /// The request's fingerprint (table, format and body).
    pub fingerprint: [u8; 16],
    /// The spooled write that carries the key's rows.
    pub write_id: Uuid,
    /// Rows the request held, as its `202` said.
    pub rows: i64,
}

impl Catalog {
    /// Claims `claim.key` for `claim.write_id` unless a write holds it already: the claim in
    /// force afterwards, this one or the earlier one.
    pub async fn claim_key(&self, claim: &KeyClaim) -> Result<KeyClaim, CatalogError> {
        for _ in 0..3 {
            let inserted = self
                .client()
                .await?
                .execute(
                    "INSERT INTO shardgate.key_claims (key, table_name, fingerprint, write_id, rows) \
                     VALUES ($1, $2, $3, $4, $5) ON CONFLICT (key) DO NOTHING",
                    &[
                        &claim.key,
                        &claim.table,
                        &claim.fingerprint.as_slice(),
                        &claim.write_id,
                        &claim.rows,
                    ],
                )
                .await
                .map_err(query("claim an idempotency key"))?;
            if inserted == 1 {
                return Ok(claim.clone());
            }
            if let Some(held) = self.key_claim(&claim.key).await? {
                return Ok(held);
            }
        }
        Err(CatalogError::ClaimUnsettled(claim.key.clone()))
    }

    /// The claim on `key`, if a spooled write holds one.
    pub async fn key_claim(&self, key: &str) -> Result<Option<KeyClaim>, CatalogError> {
        let row = self
            .client()
            .await?
            .query_opt(
                "SELECT key, table_name, fingerprint, write_id, rows FROM shardgate.key_claims \
                 WHERE key = $1",
                &[&key],
            )
            .await
            .map_err(query("read an idempotency key's claim"))?;
        Ok(row.map(|row| KeyClaim {
            key: row.get(0),
            table: row.get(1),
            fingerprint: row.get::<_, &[u8]>(2).try_into().unwrap_or([0; 16]),
            write_id: row.get(3),
            rows: row.get(4),
        }))
    }

    /// Deletes the claims made more than `retention` ago; how many there were.
    pub async fn prune_key_claims(&self, retention: Duration) -> Result<u64, CatalogError> {
        let seconds = retention.as_secs_f64();
        self.client()
            .await?
            .execute(
                "DELETE FROM shardgate.key_claims \
                 WHERE claimed_at < now() - make_interval(secs => $1)",
                &[&seconds],
            )
            .await
            .map_err(query("prune idempotency key claims"))
    }
}
