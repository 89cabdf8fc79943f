//! What adding a shard would move: the next ring (the current shards with their weights plus
//! the new one), every range that changes owner, and an estimate of the rows each carries,
//! read from the sources' table statistics. Planning reads the shards and writes nothing.

use super::candidate::CheckedShard;
use crate::catalog::journal::PlannedMove;
use crate::pg::redact_url;
use crate::pgtype::quote_ident;
use crate::routing::{Epoch, OwnerChange, Ring, RingError, RoutingTable, ShardId, ShardIndex};
use crate::schema::Tables;
use crate::shards::set::ShardSet;
use serde::Serialize;
use std::collections::BTreeMap;
use thiserror::Error;

/// A plan could not be made.
#[derive(Debug, Error)]
pub enum PlanError {
    /// The next ring cannot be built.
    #[error("cannot build the ring with the new shard: {0}")]
    Ring(#[from] RingError),
    /// A source shard could not tell how many rows it holds.
    #[error("shard {shard}: cannot estimate its rows: {reason}")]
    Source {
        /// The shard.
        shard: ShardId,
        /// Why.
        reason: String,
    },
}

/// A range that would move, with its estimated rows over every table.
#[derive(Debug, Clone, Serialize)]
pub struct PlannedRange {
    /// Exclusive lower bound on the ring.
    pub start: u64,
    /// Inclusive upper bound (the range wraps past the top when `start >= end`).
    pub end: u64,
    /// The shard that owns it now.
    pub source: String,
    /// The shard that would own it.
    pub target: String,
    /// Rows it holds, estimated from the source's statistics.
    pub estimated_rows: u64,
}

/// What one source shard would give up.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SourceSummary {
    /// Ranges it would hand over.
    pub ranges: usize,
    /// Share of the whole ring they cover.
    pub fraction: f64,
    /// Rows they hold, estimated.
    pub estimated_rows: u64,
}

/// What a change of the shard set moves.
#[derive(Debug, Clone, Serialize)]
pub struct MovePlan {
    /// The routing epoch the plan was made against.
    pub epoch: i64,
    /// Rows that would move, estimated, over every table.
    pub estimated_rows: u64,
    /// Per source shard, what it would give up.
    pub sources: BTreeMap<String, SourceSummary>,
    /// Every range that would move, in ring order.
    pub ranges: Vec<PlannedRange>,
}

/// The plan of adding one shard.
#[derive(Debug, Clone, Serialize)]
pub struct AddPlan {
    /// The new shard's name.
    pub shard: String,
    /// Its weight.
    pub weight: u32,
    /// Its URL, password redacted.
    pub url: String,
    /// Its Postgres version.
    pub server_version: String,
    /// Share of the ring the new shard would own.
    pub owned_fraction: f64,
    /// What moves.
    #[serde(flatten)]
    pub moves: MovePlan,
}

/// The routing table after a change: every shard of `weights` at its weight, `vnodes` tokens
/// per unit, at the epoch after `current`'s.
pub fn next_table(
    current: &ShardSet,
    weights: &[(String, u32)],
    vnodes: u32,
) -> Result<RoutingTable, RingError> {
    let ring = Ring::build(
        weights.iter().map(|(name, weight)| (name.as_str(), *weight)),
        vnodes,
    )?;
    let names = weights.iter().map(|(name, _)| ShardId(name.clone())).collect();
    Ok(RoutingTable::new(Epoch(current.epoch().0 + 1), names, ring))
}

/// Every shard of `current` with its weight, in the set's order.
pub fn current_weights(current: &ShardSet) -> Vec<(String, u32)> {
    current
        .iter()
        .map(|(index, shard)| (shard.id.0.clone(), current.weight(index)))
        .collect()
}

/// Plans adding `shard` to the shards of `current`, whose ring was built with `vnodes` tokens
/// per unit of weight.
pub async fn plan_add(
    current: &ShardSet,
    shard: &CheckedShard,
    tables: &Tables,
    vnodes: u32,
) -> Result<AddPlan, PlanError> {
    let mut weights = current_weights(current);
    weights.push((shard.endpoint.id.0.clone(), shard.endpoint.weight));
    let next = next_table(current, &weights, vnodes)?;
    let moves = plan_moves(current, &current.table.owner_changes(&next), tables).await?;
    Ok(AddPlan {
        shard: shard.endpoint.id.0.clone(),
        weight: shard.endpoint.weight,
        url: redact_url(&shard.endpoint.url),
        server_version: shard.server_version.clone(),
        owned_fraction: next.ring.owned_fraction(ShardIndex(next.shards.len() - 1)),
        moves,
    })
}

/// The ranges `changes` moves off the shards of `current`, with their estimated rows.
pub async fn plan_moves(
    current: &ShardSet,
    changes: &[OwnerChange],
    tables: &Tables,
) -> Result<MovePlan, PlanError> {
    let mut ranges = Vec::with_capacity(changes.len());
    let mut sources: BTreeMap<String, SourceSummary> = BTreeMap::new();
    let mut rows_per_hash = BTreeMap::new();
    for change in changes {
        let density = match rows_per_hash.get(&change.from) {
            Some(density) => *density,
            None => {
                let density = rows_per_hash_value(current, &change.from, tables).await?;
                rows_per_hash.insert(change.from.clone(), density);
                density
            }
        };
        let estimated_rows = (density * change.size() as f64).round() as u64;
        let summary = sources.entry(change.from.0.clone()).or_default();
        summary.ranges += 1;
        summary.fraction += fraction(change);
        summary.estimated_rows += estimated_rows;
        ranges.push(PlannedRange {
            start: change.start,
            end: change.end,
            source: change.from.0.clone(),
            target: change.to.0.clone(),
            estimated_rows,
        });
    }
    Ok(MovePlan {
        epoch: current.epoch().0,
        estimated_rows: ranges.iter().map(|r| r.estimated_rows).sum(),
        sources,
        ranges,
    })
}

/// The ranges a plan lists with their estimated rows, to record in the journal.
pub fn planned_moves(plan: &MovePlan) -> Vec<PlannedMove> {
    plan.ranges
        .iter()
        .map(|r| PlannedMove {
            change: OwnerChange {
                start: r.start,
                end: r.end,
                from: ShardId(r.source.clone()),
                to: ShardId(r.target.clone()),
            },
            estimated_rows: r.estimated_rows,
        })
        .collect()
}

/// Share of the ring `change` covers.
fn fraction(change: &OwnerChange) -> f64 {
    change.size() as f64 / 2f64.powi(64)
}

/// Rows of every table on shard `id` per hash value it owns: its rows spread evenly over its
/// ranges. Rows come from the planner's statistics when the table was analysed, else from a
/// count.
async fn rows_per_hash_value(current: &ShardSet, id: &ShardId, tables: &Tables) -> Result<f64, PlanError> {
    let failed = |reason: String| PlanError::Source {
        shard: id.clone(),
        reason,
    };
    let (index, shard) = current
        .iter()
        .find(|(_, s)| &s.id == id)
        .ok_or_else(|| failed("it is not in the current shard set".into()))?;
    let client = shard
        .pools
        .query
        .get()
        .await
        .map_err(|e| failed(crate::pg::describe_pool_error(&e)))?;
    let mut rows = 0u64;
    for (_, table) in tables.iter() {
        rows += table_rows(&client, &table.name)
            .await
            .map_err(|e| failed(e.to_string()))?;
    }
    let owned = current.table.ring.owned_fraction(index) * 2f64.powi(64);
    Ok(if owned > 0.0 { rows as f64 / owned } else { 0.0 })
}

async fn table_rows(client: &tokio_postgres::Client, table: &str) -> Result<u64, tokio_postgres::Error> {
    let name = quote_ident(table);
    let estimated: Option<f32> = client
        .query_opt(
            "SELECT reltuples FROM pg_class WHERE oid = to_regclass($1) AND reltuples >= 0",
            &[&name],
        )
        .await?
        .map(|row| row.get(0));
    if let Some(estimated) = estimated {
        return Ok(estimated.max(0.0) as u64);
    }
    let counted: i64 = client
        .query_one(&format!("SELECT count(*) FROM {name}"), &[])
        .await?
        .get(0);
    Ok(counted.max(0) as u64)
}
