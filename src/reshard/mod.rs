//! Resharding: changing the shard set while writes flow (see `docs/architecture.md`). A
//! database that is to join is checked ([`candidate`]), what adding it moves is planned
//! ([`plan`]), and [`Resharder::add`] records the migration in the catalog's journal, which a
//! runner ([`runner`]) carries out: dual-write, backfill ([`backfill`]), verify, cutover,
//! cleanup.

pub mod backfill;
pub mod candidate;
pub mod plan;
pub mod runner;

use crate::catalog::CatalogError;
use crate::pg::connect_once;
use crate::routing::OwnerChange;
use crate::shards::{ShardError, prepare_database};
use candidate::{CandidateError, NewShard};
use plan::{AddPlan, PlanError, plan_add};
pub use runner::Resharder;
use thiserror::Error;

/// A shard could not be added; nothing changed in the catalog.
#[derive(Debug, Error)]
pub enum AddError {
    /// The request or the database is not fit to join.
    #[error(transparent)]
    Candidate(#[from] CandidateError),
    /// A declared table has no id, so its rows cannot be moved exactly.
    #[error(
        "table {0} has no id: moving the rows of a table without an id is not supported yet, so \
         no shard can be added while it is declared"
    )]
    TableWithoutId(String),
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
pub struct Started {
    /// Its id in the journal.
    pub migration: i64,
    /// The routing epoch that starts its dual-write.
    pub epoch: i64,
    /// What it moves.
    pub plan: AddPlan,
}

impl Resharder {
    /// Starts adding the shard `request` names: checks it, plans the move, creates its tables
    /// and fence, and records the migration (the runner carries it out). The shard connects
    /// with `password` when set.
    pub async fn add(&self, request: &NewShard, password: Option<&str>) -> Result<Started, AddError> {
        if let Some((_, table)) = self.tables.iter().find(|(_, t)| t.id.is_none()) {
            return Err(AddError::TableWithoutId(table.name.clone()));
        }
        if let Some(running) = self.catalog.unfinished_migration().await? {
            return Err(CatalogError::MigrationRunning(running.id).into());
        }
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
        let changes: Vec<OwnerChange> = plan
            .ranges
            .iter()
            .map(|r| OwnerChange {
                start: r.start,
                end: r.end,
                from: crate::routing::ShardId(r.source.clone()),
                to: crate::routing::ShardId(r.target.clone()),
            })
            .collect();
        let (migration, epoch) = match self.catalog.start_add(endpoint, &changes).await {
            Ok(started) => started,
            Err(e) => {
                // Not a shard after all: let the database be offered again.
                let _ = client.batch_execute("DROP TABLE IF EXISTS shardgate_fence").await;
                return Err(e.into());
            }
        };
        self.started.notify_one();
        tracing::info!(migration, epoch = epoch.0, shard = %endpoint.id, ranges = changes.len(), "adding a shard");
        Ok(Started {
            migration,
            epoch: epoch.0,
            plan,
        })
    }
}
