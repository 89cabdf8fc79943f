//! The resharding journal: one row per migration (`shardgate.migrations`: its kind, shard and
//! phase) and one per range it moves (`shardgate.migration_ranges`). Every step that changes
//! placement is one catalog transaction that also advances the routing epoch and announces it
//! (invariants 3 and 10), so a proxy, or a restarted runner, always finds a whole step or none.
//!
//! Migration phases: `copying` (its ranges dual-written and backfilled) → `cleaning` (cut over:
//! the target owns the ranges, the sources still hold their rows) → `done`; or, before the
//! cutover, `cancelling` (on request: the old placement in force, the copies being deleted)
//! → `cancelled`; a migration given up (verification found the copy differs from its source)
//! goes the same way, through `cancelling`, and ends `failed` with the reason in `failure`.
//! A migration may be paused in any phase; its runner then waits.

use super::{Catalog, CatalogError, advance_epoch, query, read_epoch, take_catalog_lock};
use crate::pg::without_password;
use crate::routing::{Epoch, KeyHash, OwnerChange, Ring, ShardId};
use crate::shards::ShardEndpoint;
use serde::Serialize;

/// A migration as the journal records it.
#[derive(Debug, Clone, Serialize)]
pub struct MigrationRecord {
    /// Its id.
    pub id: i64,
    /// `add`, `drain` or `reweight`.
    pub kind: String,
    /// The shard it adds, drains or reweights.
    pub shard: String,
    /// `copying`, `cleaning`, `done`, `cancelling`, `cancelled` or `failed`.
    pub phase: String,
    /// Whether its runner waits until it is resumed.
    pub paused: bool,
    /// The last error a step met, if any; a step that failed is tried again.
    pub error: Option<String>,
    /// Why the migration was given up, if it was.
    pub failure: Option<String>,
    /// The epoch that began dual-writing its ranges; `None` for one started by a release that
    /// did not record it.
    pub dual_write_epoch: Option<i64>,
    /// Rows copied to the target so far.
    pub rows_copied: i64,
    /// Rows its plan expected to copy, over every range (an estimate from the sources'
    /// statistics); `None` for one started by a release that did not record it.
    pub estimated_rows: Option<i64>,
    /// Ranges it moves.
    pub ranges: i64,
    /// When it was started, RFC 3339.
    pub created_at: String,
    /// When it last changed, RFC 3339.
    pub updated_at: String,
}

/// One range of a migration.
#[derive(Debug, Clone, Serialize)]
pub struct RangeRecord {
    /// Exclusive lower bound on the ring.
    pub start: u64,
    /// Inclusive upper bound.
    pub end: u64,
    /// Its owner before the migration.
    pub source: String,
    /// Its owner after.
    pub target: String,
    /// `copying`, `leaving`, `cleaned` or `cancelled`.
    pub phase: String,
    /// Rows copied to the target.
    pub rows_copied: i64,
    /// Rows the plan expected it to carry; `None` when not recorded.
    pub estimated_rows: Option<i64>,
}

/// A range a migration is to move, as it is recorded: its change of owner and the rows the
/// plan expects it to carry.
#[derive(Debug, Clone)]
pub struct PlannedMove {
    /// The range and its owners before and after.
    pub change: OwnerChange,
    /// Rows it holds, estimated.
    pub estimated_rows: u64,
}

/// Phases of a migration that still has work to do.
const UNFINISHED: &str = "phase IN ('copying', 'cleaning', 'cancelling')";

const MIGRATION_COLUMNS: &str = "m.id, m.kind, m.shard, m.phase, m.paused, m.error, m.failure, m.dual_write_epoch, \
     (SELECT coalesce(sum(rows_copied), 0)::bigint FROM shardgate.migration_ranges r WHERE r.migration = m.id), \
     (SELECT sum(estimated_rows)::bigint FROM shardgate.migration_ranges r WHERE r.migration = m.id), \
     (SELECT count(*) FROM shardgate.migration_ranges r WHERE r.migration = m.id), \
     to_char(m.created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'), \
     to_char(m.updated_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"')";

impl Catalog {
    /// Starts a migration of `kind` (`add`, `drain`, `reweight`) about shard `shard`, which
    /// `joining` records first when it is new (its URL without the password): the migration,
    /// the weight of every shard once it is done, and the ranges `moves` lists in phase
    /// `copying` with their estimated rows, with a new
    /// epoch, in one transaction. Refused while another migration is unfinished or when a
    /// joining shard's name is taken.
    pub async fn start_migration(
        &self,
        (kind, shard): (&str, &str),
        joining: Option<&ShardEndpoint>,
        moves: &[PlannedMove],
        weights: &[(String, u32)],
    ) -> Result<(i64, Epoch), CatalogError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(query("begin"))?;
        take_catalog_lock(&tx).await?;
        let running = tx
            .query_opt(
                &format!("SELECT id FROM shardgate.migrations WHERE {UNFINISHED}"),
                &[],
            )
            .await
            .map_err(query("look for a running migration"))?;
        if let Some(row) = running {
            return Err(CatalogError::MigrationRunning(row.get(0)));
        }
        if let Some(joining) = joining {
            record_joining(&tx, joining).await?;
        }
        let weights: serde_json::Map<String, serde_json::Value> = weights
            .iter()
            .map(|(name, weight)| (name.clone(), serde_json::Value::from(*weight)))
            .collect();
        let id: i64 = tx
            .query_one(
                "INSERT INTO shardgate.migrations (kind, shard, phase, weights) \
                 VALUES ($1, $2, 'copying', $3) RETURNING id",
                &[&kind, &shard, &serde_json::Value::Object(weights)],
            )
            .await
            .map_err(query("record the migration"))?
            .get(0);
        let starts: Vec<i64> = moves.iter().map(|m| KeyHash(m.change.start).as_i64()).collect();
        let ends: Vec<i64> = moves.iter().map(|m| KeyHash(m.change.end).as_i64()).collect();
        let sources: Vec<&str> = moves.iter().map(|m| m.change.from.0.as_str()).collect();
        let targets: Vec<&str> = moves.iter().map(|m| m.change.to.0.as_str()).collect();
        let estimated: Vec<i64> = moves
            .iter()
            .map(|m| i64::try_from(m.estimated_rows).unwrap_or(i64::MAX))
            .collect();
        tx.execute(
            "INSERT INTO shardgate.migration_ranges \
                 (migration, start_position, end_position, source, target, phase, estimated_rows) \
             SELECT $1, s, e, src, dst, 'copying', n \
             FROM unnest($2::bigint[], $3::bigint[], $4::text[], $5::text[], $6::bigint[]) AS r(s, e, src, dst, n)",
            &[&id, &starts, &ends, &sources, &targets, &estimated],
        )
        .await
        .map_err(query("record the ranges"))?;
        let epoch = advance_epoch(&tx).await?;
        tx.execute(
            "UPDATE shardgate.migrations SET dual_write_epoch = $2 WHERE id = $1",
            &[&id, &epoch.0],
        )
        .await
        .map_err(query("record the dual-write epoch"))?;
        tx.commit().await.map_err(query("commit"))?;
        Ok((id, epoch))
    }

    /// The weight of every shard once migration `id` is done.
    pub async fn next_weights(&self, id: i64) -> Result<Vec<(String, u32)>, CatalogError> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT key, value::int FROM shardgate.migrations, jsonb_each_text(weights) WHERE id = $1 ORDER BY key",
                &[&id],
            )
            .await
            .map_err(query("read the migration's weights"))?;
        Ok(rows
            .iter()
            .map(|r| (r.get(0), r.get::<_, i32>(1).max(0) as u32))
            .collect())
    }

    /// The migration that still has work to do, if any.
    pub async fn unfinished_migration(&self) -> Result<Option<MigrationRecord>, CatalogError> {
        let client = self.client().await?;
        let sql = format!("SELECT {MIGRATION_COLUMNS} FROM shardgate.migrations m WHERE {UNFINISHED}");
        let row = client
            .query_opt(&sql, &[])
            .await
            .map_err(query("read the running migration"))?;
        Ok(row.map(|r| migration(&r)))
    }

    /// Every migration, newest first.
    pub async fn migrations(&self) -> Result<Vec<MigrationRecord>, CatalogError> {
        let client = self.client().await?;
        let sql = format!("SELECT {MIGRATION_COLUMNS} FROM shardgate.migrations m ORDER BY m.id DESC");
        let rows = client
            .query(&sql, &[])
            .await
            .map_err(query("read the migrations"))?;
        Ok(rows.iter().map(migration).collect())
    }

    /// One migration with its ranges; `None` when there is no such migration.
    pub async fn migration(
        &self,
        id: i64,
    ) -> Result<Option<(MigrationRecord, Vec<RangeRecord>)>, CatalogError> {
        let client = self.client().await?;
        let sql = format!("SELECT {MIGRATION_COLUMNS} FROM shardgate.migrations m WHERE m.id = $1");
        let Some(row) = client
            .query_opt(&sql, &[&id])
            .await
            .map_err(query("read the migration"))?
        else {
            return Ok(None);
        };
        let ranges = client
            .query(
                "SELECT start_position, end_position, source, target, phase, rows_copied, estimated_rows \
                 FROM shardgate.migration_ranges WHERE migration = $1 ORDER BY start_position",
                &[&id],
            )
            .await
            .map_err(query("read the migration's ranges"))?
            .iter()
            .map(|r| RangeRecord {
                start: KeyHash::from_i64(r.get(0)).0,
                end: KeyHash::from_i64(r.get(1)).0,
                source: r.get(2),
                target: r.get(3),
                phase: r.get(4),
                rows_copied: r.get(5),
                estimated_rows: r.get(6),
            })
            .collect();
        Ok(Some((migration(&row), ranges)))
    }

    /// Records more copied rows: `(start, rows)` for each range starting at `start`.
    pub async fn record_copied(&self, id: i64, copied: &[(u64, i64)]) -> Result<(), CatalogError> {
        if copied.is_empty() {
            return Ok(());
        }
        let starts: Vec<i64> = copied.iter().map(|(start, _)| KeyHash(*start).as_i64()).collect();
        let rows: Vec<i64> = copied.iter().map(|(_, rows)| *rows).collect();
        let client = self.client().await?;
        client
            .execute(
                "UPDATE shardgate.migration_ranges r SET rows_copied = r.rows_copied + c.rows \
                 FROM unnest($2::bigint[], $3::bigint[]) AS c(start_position, rows) \
                 WHERE r.migration = $1 AND r.start_position = c.start_position",
                &[&id, &starts, &rows],
            )
            .await
            .map_err(query("record backfill progress"))?;
        Ok(())
    }

    /// Records the error a step met (`None` once it went through).
    pub async fn record_error(&self, id: i64, error: Option<&str>) -> Result<(), CatalogError> {
        let client = self.client().await?;
        client
            .execute(
                "UPDATE shardgate.migrations SET error = $2, updated_at = now() WHERE id = $1",
                &[&id, &error],
            )
            .await
            .map_err(query("record the migration's error"))?;
        Ok(())
    }

    /// The cutover: `ring` (over `names`) becomes the stored ring and the migration's weights
    /// the shards', the ranges become `leaving` and the migration `cleaning`, with a new epoch.
    pub async fn cut_over(&self, id: i64, ring: &Ring, names: &[ShardId]) -> Result<Epoch, CatalogError> {
        let positions: Vec<i64> = ring
            .tokens()
            .iter()
            .map(|t| KeyHash(t.position).as_i64())
            .collect();
        let owners: Vec<&str> = ring
            .tokens()
            .iter()
            .map(|t| names[t.shard.0].0.as_str())
            .collect();
        self.step(
            id,
            ("copying", "cleaning", "leaving"),
            Step {
                ring: Some((&positions, &owners)),
                failure: None,
            },
        )
        .await
    }

    /// Ends a cleaned-up migration: its ranges are `cleaned`, it is `done`, and a drained shard
    /// is retired (it leaves the routing table).
    pub async fn finish(&self, id: i64) -> Result<Epoch, CatalogError> {
        self.step(id, ("cleaning", "done", "cleaned"), Step::default())
            .await
    }

    /// Pauses (`true`) or resumes migration `id`; `false` when there is no such unfinished
    /// migration.
    pub async fn set_paused(&self, id: i64, paused: bool) -> Result<bool, CatalogError> {
        let client = self.client().await?;
        let changed = client
            .execute(
                &format!(
                    "UPDATE shardgate.migrations SET paused = $2, updated_at = now() WHERE id = $1 AND {UNFINISHED}"
                ),
                &[&id, &paused],
            )
            .await
            .map_err(query("pause or resume the migration"))?;
        Ok(changed == 1)
    }

    /// The phase of migration `id` and whether it is paused, if it exists.
    pub async fn state(&self, id: i64) -> Result<Option<(String, bool)>, CatalogError> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                "SELECT phase, paused FROM shardgate.migrations WHERE id = $1",
                &[&id],
            )
            .await
            .map_err(query("read the migration's phase"))?;
        Ok(row.map(|r| (r.get(0), r.get(1))))
    }

    /// Cancels migration `id` before its cutover: its ranges are `cancelled` (no longer
    /// dual-written) and it is `cancelling` (its copies are deleted next), with a new epoch.
    /// Refused with the phase it is in when it is not copying any more.
    pub async fn cancel(&self, id: i64) -> Result<Epoch, CatalogError> {
        match self.state(id).await? {
            None => Err(CatalogError::NoMigration(id)),
            Some((phase, _)) if phase != "copying" => Err(CatalogError::NotCancellable { id, phase }),
            Some(_) => {
                self.step(id, ("copying", "cancelling", "cancelled"), Step::default())
                    .await
            }
        }
    }

    /// Ends a cancelled migration once its copies are deleted: it is `cancelled`, or `failed`
    /// when it was given up, and a shard it was adding is retired.
    pub async fn finish_cancel(&self, id: i64) -> Result<Epoch, CatalogError> {
        self.step(id, ("cancelling", "cancelled", "cancelled"), Step::default())
            .await
    }

    /// Gives up a migration before its cutover, for `failure`: its ranges are `cancelled` (no
    /// longer dual-written) and it is `cancelling`, so its copies are deleted next, as for a
    /// cancel; the old placement stays in force.
    pub async fn fail(&self, id: i64, failure: &str) -> Result<Epoch, CatalogError> {
        let step = Step {
            ring: None,
            failure: Some(failure),
        };
        self.step(id, ("copying", "cancelling", "cancelled"), step).await
    }

    /// Moves migration `id` from phase `from` to `to` and its ranges to `ranges`, storing what
    /// `step` carries in the same transaction, with a new epoch. A migration not in `from` is
    /// left as it is (the step was made already), and the current epoch is returned.
    async fn step(
        &self,
        id: i64,
        (from, to, ranges): (&str, &str, &str),
        step: Step<'_>,
    ) -> Result<Epoch, CatalogError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(query("begin"))?;
        take_catalog_lock(&tx).await?;
        let moved = tx
            .execute(
                // A migration given up ends `failed` where a cancelled one ends `cancelled`.
                "UPDATE shardgate.migrations SET \
                     phase = CASE WHEN $3 = 'cancelled' AND failure IS NOT NULL THEN 'failed' ELSE $3 END, \
                     error = NULL, failure = coalesce($4, failure), updated_at = now() \
                 WHERE id = $1 AND phase = $2",
                &[&id, &from, &to, &step.failure],
            )
            .await
            .map_err(query("advance the migration"))?;
        if moved == 0 {
            return read_epoch(&*tx).await;
        }
        tx.execute(
            "UPDATE shardgate.migration_ranges SET phase = $2 WHERE migration = $1",
            &[&id, &ranges],
        )
        .await
        .map_err(query("advance the ranges"))?;
        if let Some((positions, owners)) = step.ring {
            tx.execute("DELETE FROM shardgate.ring_tokens", &[])
                .await
                .map_err(query("replace the ring"))?;
            tx.execute(
                "INSERT INTO shardgate.ring_tokens (position, shard) SELECT * FROM unnest($1::bigint[], $2::text[])",
                &[&positions, &owners],
            )
            .await
            .map_err(query("store the new ring"))?;
            tx.execute(
                "UPDATE shardgate.shards s SET weight = (m.weights ->> s.name)::int \
                 FROM shardgate.migrations m WHERE m.id = $1 AND m.weights ? s.name",
                &[&id],
            )
            .await
            .map_err(query("store the new weights"))?;
        }
        let retire = match to {
            "done" => Some("drain"),
            "cancelled" => Some("add"),
            _ => None,
        };
        if let Some(kind) = retire {
            tx.execute(
                "UPDATE shardgate.shards s SET retired = true FROM shardgate.migrations m \
                 WHERE m.id = $1 AND m.kind = $2 AND s.name = m.shard",
                &[&id, &kind],
            )
            .await
            .map_err(query("retire the shard"))?;
        }
        let epoch = advance_epoch(&tx).await?;
        tx.commit().await.map_err(query("commit"))?;
        Ok(epoch)
    }

    /// The routing epoch the catalog holds.
    pub async fn epoch(&self) -> Result<Epoch, CatalogError> {
        read_epoch(&**self.client().await?).await
    }
}

/// What a step stores besides the phases.
#[derive(Default)]
struct Step<'a> {
    /// The new ring: positions and their owners.
    ring: Option<(&'a [i64], &'a [&'a str])>,
    /// Why the migration is given up.
    failure: Option<&'a str>,
}

/// Records a shard that joins: its URL without the password, after every other shard.
/// Refused when a shard in use has the name.
async fn record_joining(
    tx: &tokio_postgres::Transaction<'_>,
    shard: &ShardEndpoint,
) -> Result<(), CatalogError> {
    // A name whose shard was drained, or whose adding was cancelled, may be used again.
    let recorded = tx
        .execute(
            "INSERT INTO shardgate.shards (name, weight, added_epoch, url, ordinal) \
             SELECT $1, $2, epoch + 1, $3, (SELECT coalesce(max(ordinal), -1) + 1 FROM shardgate.shards) \
             FROM shardgate.routing \
             ON CONFLICT (name) DO UPDATE SET weight = EXCLUDED.weight, added_epoch = EXCLUDED.added_epoch, \
                 url = EXCLUDED.url, ordinal = EXCLUDED.ordinal, retired = false \
             WHERE shardgate.shards.retired",
            &[&shard.id.0, &(shard.weight as i32), &without_password(&shard.url)],
        )
        .await
        .map_err(query("record the new shard"))?;
    if recorded == 0 {
        return Err(CatalogError::ShardExists(shard.id.0.clone()));
    }
    Ok(())
}

fn migration(row: &tokio_postgres::Row) -> MigrationRecord {
    MigrationRecord {
        id: row.get(0),
        kind: row.get(1),
        shard: row.get(2),
        phase: row.get(3),
        paused: row.get(4),
        error: row.get(5),
        failure: row.get(6),
        dual_write_epoch: row.get(7),
        rows_copied: row.get(8),
        estimated_rows: row.get(9),
        ranges: row.get(10),
        created_at: row.get(11),
        updated_at: row.get(12),
    }
}
