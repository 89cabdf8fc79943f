//! Ranges in motion as the resharding journal records them (`shardgate.migration_ranges`),
//! read into the routing table with the ring: a range in phase `copying` is still its
//! source's and is dual-written to its target; one in phase `leaving` is its target's, while
//! its source still holds rows of it that reads must skip there.

use super::{CatalogError, query};
use crate::routing::{KeyHash, LeavingRange, MovingRange, ShardIndex, TokenRange};
use std::collections::HashMap;

/// The journal's ranges in motion, by what routing makes of them.
#[derive(Debug, Default)]
pub struct RangesInMotion {
    /// Dual-written to their target.
    pub moving: Vec<MovingRange>,
    /// Skipped by reads of their former owner.
    pub leaving: Vec<LeavingRange>,
}

/// Reads the ranges in phase `copying` or `leaving`, naming shards by their index in `index`.
pub async fn read(
    tx: &tokio_postgres::Transaction<'_>,
    index: &HashMap<&str, ShardIndex>,
) -> Result<RangesInMotion, CatalogError> {
    let rows = tx
        .query(
            "SELECT start_position, end_position, source, target, phase \
             FROM shardgate.migration_ranges WHERE phase IN ('copying', 'leaving') \
             ORDER BY start_position",
            &[],
        )
        .await
        .map_err(query("read the ranges in motion"))?;
    let shard = |name: String| {
        index.get(name.as_str()).copied().ok_or_else(|| {
            CatalogError::Disagrees(format!(
                "a range in motion names shard {name}, which the catalog does not list"
            ))
        })
    };
    let mut ranges = RangesInMotion::default();
    for row in rows {
        let (start, end) = (KeyHash::from_i64(row.get(0)).0, KeyHash::from_i64(row.get(1)).0);
        let (source, target) = (shard(row.get(2))?, shard(row.get(3))?);
        let phase: String = row.get(4);
        if phase == "copying" {
            let range = TokenRange {
                start,
                end,
                shard: source,
            };
            ranges.moving.push(MovingRange { range, target });
        } else {
            let range = TokenRange {
                start,
                end,
                shard: target,
            };
            ranges.leaving.push(LeavingRange {
                range,
                holder: source,
            });
        }
    }
    Ok(ranges)
}
