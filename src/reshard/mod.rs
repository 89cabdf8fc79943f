//! Resharding: changing the shard set while writes flow (see `docs/architecture.md`). A
//! database that is to join is checked ([`candidate`]), what adding it moves is planned
//! ([`plan`]), and [`Resharder::add`] records the migration in the catalog's journal, which a
//! runner ([`runner`]) carries out: dual-write, backfill ([`backfill`]), verify, cutover,
//! cleanup.

pub mod backfill;
pub mod candidate;
pub mod pass;
pub mod plan;
pub mod runner;

use crate::catalog::CatalogError;
use crate::pg::connect_once;
use crate::routing::ShardIndex;
use crate::shards::set::ShardSet;
use crate::shards::{ShardError, prepare_database};
use candidate::{CandidateError, NewShard};
use plan::{AddPlan, MovePlan, PlanError, current_weights, next_table, plan_add, plan_moves, planned_moves};
pub use runner::Resharder;
use thiserror::Error;

/// A migration could not be started; nothing changed in the catalog.
#[derive(Debug, Error)]
pub enum ChangeError {
    /// No shard of that name is in the routing table.
    #[error("no shard {0}")]
    NoShard(String),
    /// The change makes no sense for the shard set as it is.
    #[error("{0}")]
    Refused(String),
    /// The request or the database is not fit to join.
    #[error(transparent)]
    Candidate(#[from] CandidateError),
    /// The move could not be planned.
    #[error(transparent)]
    Plan(#[from] PlanError),
    /// The new shard's tables or fence could not be created.
    #[error(transparent)]
    Prepare(#[from] ShardError),
    /// The catalog refused the migration (another one runs, the name is taken) or failed.
    #[error(transparent)]
    Catalog(#[from] CatalogError),
}

/// A migration that was started.
#[derive(Debug, serde::Serialize)]
pub struct Started<P> {
    /// Its id in the journal.
    pub migration: i64,
    /// The routing epoch that starts its dual-write.
    pub epoch: i64,
    /// What it moves.
    pub plan: P,
}

impl Resharder {
    /// Starts adding the shard `request` names: checks it, plans the move, creates its tables
    /// and fence, and records the migration (the runner carries it out). The shard connects
    /// with `password` when set.
    pub async fn add(
        &self,
        request: &NewShard,
        password: Option<&str>,
    ) -> Result<Started<AddPlan>, ChangeError> {
        self.check_can_move().await?;
        let current = self.shards.load();
        let checked = request.check(&current, &self.tables, password, &self.tls).await?;
        let plan = plan_add(&current, &checked, &self.tables, self.vnodes).await?;
        let endpoint = &checked.endpoint;
        let mut client = connect_once(&endpoint.url, password, &self.tls)
            .await
            .map_err(|reason| ShardError::Unreachable {
                shard: endpoint.id.clone(),
                reason,
            })?;
        prepare_database(&mut client, &endpoint.id, &self.tables, current.epoch()).await?;
        let mut weights = current_weights(&current);
        weights.push((endpoint.id.0.clone(), endpoint.weight));
        let moves = planned_moves(&plan.moves);
        let kind = ("add", endpoint.id.0.as_str());
        let (migration, epoch) = match self
            .catalog
            .start_migration(kind, Some(endpoint), &moves, &weights)
            .await
        {
            Ok(started) => started,
            Err(e) => {
                // Not a shard after all: let the database be offered again.
                let _ = client.batch_execute("DROP TABLE IF EXISTS shardgate_fence").await;
                return Err(e.into());
            }
        };
        self.begun(migration, epoch, "adding", &endpoint.id.0, moves.len());
        Ok(Started {
            migration,
            epoch: epoch.0,
            plan,
        })
    }

    /// Starts draining shard `name`: every range it owns moves to the others, then it leaves
    /// the shard set.
    pub async fn drain(&self, name: &str) -> Result<Started<MovePlan>, ChangeError> {
        let current = self.shards.load();
        self.find(&current, name)?;
        if current.len() == 1 {
            return Err(ChangeError::Refused(format!(
                "{name} is the only shard; add another before draining it"
            )));
        }
        let weights: Vec<(String, u32)> = current_weights(&current)
            .into_iter()
            .filter(|(shard, _)| shard != name)
            .collect();
        self.change("drain", name, &current, weights).await
    }

    /// Starts giving shard `name` the weight `weight`: ranges move to or from it.
    pub async fn reweight(&self, name: &str, weight: u32) -> Result<Started<MovePlan>, ChangeError> {
        if !(1..=candidate::MAX_WEIGHT).contains(&weight) {
            return Err(CandidateError::Invalid(format!(
                "weight must be between 1 and {}",
                candidate::MAX_WEIGHT
            ))
            .into());
        }
        let current = self.shards.load();
        let index = self.find(&current, name)?;
        if current.weight(index) == weight {
            return Err(ChangeError::Refused(format!(
                "shard {name} has weight {weight} already; nothing would move"
            )));
        }
        let weights: Vec<(String, u32)> = current_weights(&current)
            .into_iter()
            .map(|(shard, old)| {
                if shard == name {
                    (shard, weight)
                } else {
                    (shard, old)
                }
            })
            .collect();
        self.change("reweight", name, &current, weights).await
    }

    /// Plans and records a migration to the shards and `weights` given.
    async fn change(
        &self,
        kind: &str,
        name: &str,
        current: &ShardSet,
        weights: Vec<(String, u32)>,
    ) -> Result<Started<MovePlan>, ChangeError> {
        self.check_can_move().await?;
        let next = next_table(current, &weights, self.vnodes).map_err(PlanError::from)?;
        let changes = current.table.owner_changes(&next);
        let plan = plan_moves(current, &changes, &self.tables).await?;
        let moves = planned_moves(&plan);
        let (migration, epoch) = self
            .catalog
            .start_migration((kind, name), None, &moves, &weights)
            .await?;
        self.begun(migration, epoch, kind, name, moves.len());
        Ok(Started {
            migration,
            epoch: epoch.0,
            plan,
        })
    }

    /// Refuses a migration while another one runs.
    async fn check_can_move(&self) -> Result<(), ChangeError> {
        if let Some(running) = self.catalog.unfinished_migration().await? {
            return Err(CatalogError::MigrationRunning(running.id).into());
        }
        Ok(())
    }

    fn find(&self, current: &ShardSet, name: &str) -> Result<ShardIndex, ChangeError> {
        current
            .iter()
            .find(|(_, shard)| shard.id.0 == name)
            .map(|(index, _)| index)
            .ok_or_else(|| ChangeError::NoShard(name.to_string()))
    }

    fn begun(&self, migration: i64, epoch: crate::routing::Epoch, what: &str, shard: &str, ranges: usize) {
        self.started.notify_one();
        tracing::info!(migration, epoch = epoch.0, %shard, ranges, "{what} a shard");
    }
}
