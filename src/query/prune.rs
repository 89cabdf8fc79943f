//! Shard pruning: when the WHERE pins every partition-key column to listed values (`=`,
//! `IN (...)`, `= ANY(...)`), only the shards owning those keys can hold matching rows: for a
//! split hot key, the owners of every salt it ever had (invariant 11).

use super::plan::{KeyValues, QueryPlan};
use crate::routing::{RoutingTable, ShardIndex, hash_key};
use crate::schema::{ColumnType, JsonScalar, encode_scalar};
use sqlparser::ast::{Expr, Value};

/// Most key combinations hashed to prune; a filter listing more visits every shard.
const MAX_PRUNED_KEYS: usize = 1024;

/// A pinned key that is split over salts, as `"explain": true` shows it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SplitKeyRead {
    /// The key's hash, as 16 hex digits.
    pub key_hash: String,
    /// The salts whose positions are read.
    pub salts: Vec<u32>,
}

/// The shards a pruned query visits, and the split keys among those it pins.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pruned {
    /// The shards, in index order.
    pub shards: Vec<ShardIndex>,
    /// The pinned keys that are split.
    pub split_keys: Vec<SplitKeyRead>,
}

/// The shards to visit when the filter pins every partition-key column to listed values;
/// `None` when it does not (or lists more than [`MAX_PRUNED_KEYS`] combinations).
pub fn pruned_shards(
    plan: &QueryPlan,
    params: &[serde_json::Value],
    routing: &RoutingTable,
) -> Option<Pruned> {
    let mut columns: Vec<Vec<(ColumnType, Vec<u8>)>> = Vec::new();
    for &key_column in &plan.table.partition_key {
        let (_, pinned) = plan.key_values.iter().find(|(c, _)| *c == key_column)?;
        let ty = plan.table.columns[key_column].ty;
        let encoded = values(pinned, params)?
            .iter()
            .map(|value| {
                let mut bytes = Vec::new();
                // NULL (or any non-scalar) pins nothing: no pruning.
                encode_scalar(ty, JsonScalar::from_json(value)?, &mut bytes).ok()?;
                Some((ty, bytes))
            })
            .collect::<Option<Vec<_>>>()?;
        columns.push(encoded);
    }
    let combinations = columns
        .iter()
        .try_fold(1usize, |n, values| n.checked_mul(values.len()))?;
    if combinations > MAX_PRUNED_KEYS {
        return None;
    }
    let table = plan.table.name.as_str();
    let mut shards: Vec<ShardIndex> = Vec::new();
    let mut split_keys = Vec::new();
    for mut index in 0..combinations {
        let key = columns.iter().map(|values| {
            let (ty, bytes) = &values[index % values.len()];
            index /= values.len();
            (*ty, bytes.as_slice())
        });
        let key = hash_key(key, &mut Vec::new());
        shards.extend(routing.shards_for_read(table, key));
        let salts = routing.salts_for_read(table, key);
        if salts.len() > 1 {
            split_keys.push(SplitKeyRead {
                key_hash: format!("{:016x}", key.0),
                salts: salts.to_vec(),
            });
        }
    }
    shards.sort();
    shards.dedup();
    Some(Pruned { shards, split_keys })
}

/// The listed values as JSON: literals, parameters, or an array parameter's elements.
fn values(pinned: &KeyValues, params: &[serde_json::Value]) -> Option<Vec<serde_json::Value>> {
    match pinned {
        KeyValues::Listed(exprs) => exprs.iter().map(|e| json_of(e, params)).collect(),
        KeyValues::AnyOf(expr) => match json_of(expr, params)? {
            serde_json::Value::Array(elements) => Some(elements),
            _ => None,
        },
    }
}

fn json_of(expr: &Expr, params: &[serde_json::Value]) -> Option<serde_json::Value> {
    let Expr::Value(value) = expr else { return None };
    Some(match &value.value {
        Value::SingleQuotedString(s) => serde_json::Value::from(s.as_str()),
        Value::Boolean(b) => serde_json::Value::from(*b),
        Value::Number(n, _) => serde_json::from_str(n).ok()?,
        Value::Placeholder(p) => {
            let n = p.strip_prefix('$')?.parse::<usize>().ok()?;
            params.get(n.checked_sub(1)?)?.clone()
        }
        _ => return None,
    })
}
