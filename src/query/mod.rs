//! Scatter-gather reporting queries: `POST /v1/query`.
//!
//! A query is parsed and checked ([`parse`], [`expr`]), re-rendered from the checked syntax
//! tree ([`render`]) for every shard it needs (one shard when the WHERE fixes the whole
//! partition key), run on each in a read-only transaction with a statement timeout ([`shard`]), and merged ([`merge`]):
//! ORDER BY is a streaming k-way merge of the shards' sorted rows, each shard returning at most
//! LIMIT + OFFSET rows; aggregates are computed per group on each shard and combined per group.
//! Result types are the ones the shards' statement describes, so expressions are typed exactly
//! as Postgres types them. A shard that fails fails the whole query, naming the shard.

pub mod condition;
pub mod expr;
pub mod having;
pub mod merge;
pub mod output;
pub mod parse;
pub mod plan;
pub mod prune;
pub mod render;
pub mod runs;
pub mod shard;
pub mod unsupported;
pub mod value;

use crate::access::Caller;
use crate::config::QueryConfig;
use crate::routing::{ShardIndex, TokenRange};
use crate::schema::{ColumnType, Tables};
use crate::shards::set::{Published, ShardSet};
use expr::NOW_PARAMETER;
use merge::{Combine, OrderedMerge, merge_groups};
use parse::plan_query;
use plan::{Aggregate, Output, QueryPlan};
use shard::{ShardRows, ShardStatement};
use std::collections::HashMap;
use std::sync::Arc;
use unsupported::Unsupported;
use value::{Cell, JsonParam, ResultType};

/// Why a query failed.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    /// The SQL uses something shardgate does not run (400).
    #[error(transparent)]
    Unsupported(#[from] Unsupported),
    /// A shard refused the query as invalid, e.g. a type mismatch (400).
    #[error("shard {shard} refused the query: {message}")]
    Invalid {
        /// The shard.
        shard: String,
        /// Postgres's message.
        message: String,
    },
    /// No connection to a shard could be opened (502).
    #[error("shard {shard} is unreachable: {reason}")]
    Unreachable {
        /// The shard.
        shard: String,
        /// Why, from the server or the network.
        reason: String,
    },
    /// A shard failed (502).
    #[error("shard {shard} failed: {message}")]
    ShardFailed {
        /// The shard.
        shard: String,
        /// What happened.
        message: String,
    },
    /// A shard hit the statement timeout (504).
    #[error("shard {shard} did not answer within the statement timeout")]
    Timeout {
        /// The shard.
        shard: String,
    },
    /// The answer was not read for longer than the statement timeout, so the shard's part
    /// of it was stopped (504; only seen at the end of a streamed answer).
    #[error("the answer was not read for longer than the statement timeout; shard {shard} stopped its part")]
    NotRead {
        /// The shard.
        shard: String,
    },
    /// A query without LIMIT matched more rows than `query.max_rows`.
    #[error("the query returns more than {0} rows; add a LIMIT")]
    TooManyRows(usize),
    /// An answer to be sent whole has more than `query.max_rows` rows (400).
    #[error(
        "the answer has more than {0} rows; ask for application/x-ndjson to stream it, or lower the LIMIT"
    )]
    AnswerTooLarge(usize),
    /// An aggregated query has more groups in all than `query.max_rows` (400).
    #[error("the query has more than {0} groups; narrow its WHERE or GROUP BY")]
    TooManyMergedGroups(usize),
    /// A shard has more (group, value) rows than `query.max_rows` for a `count(DISTINCT)` the
    /// merge holds (of a `jsonb` value: [`runs::countable`]) (400).
    #[error(
        "shard {shard} has more than {limit} groups and values to count; count(DISTINCT) of a jsonb \
         value holds every value, so count text or numbers taken from it (payload->>'key') to \
         count any number"
    )]
    TooManyHeldValues {
        /// The shard.
        shard: String,
        /// `query.max_rows`.
        limit: usize,
    },
    /// A shard has more groups to merge than `query.max_rows`.
    #[error("the query has more than {limit} groups on shard {shard}; narrow its WHERE or GROUP BY")]
    TooManyGroups {
        /// The shard.
        shard: String,
        /// `query.max_rows`.
        limit: usize,
    },
    /// A parameter's value does not fit the type the query gives it (400).
    #[error("parameter ${number}: {reason}")]
    BadParameter {
        /// Its number in the query.
        number: usize,
        /// Why it does not fit.
        reason: String,
    },
    /// Every query connection to a shard stayed busy for `query.wait_timeout` (503).
    #[error("all query connections to shard {shard} are busy; retry later")]
    Busy {
        /// The shard.
        shard: String,
    },
    /// The caller has no read grant for the query's table (403).
    #[error("user {user} may not read table {table}: it needs the table in its read grant")]
    NotGranted {
        /// The user.
        user: String,
        /// The table.
        table: String,
    },
}

/// A merged answer, collected.
#[derive(Debug)]
pub struct QueryResult {
    /// Output columns with their types.
    pub columns: Vec<(String, ResultType)>,
    /// Rows in output order.
    pub rows: Vec<Vec<Cell>>,
    /// Shards the query ran on.
    pub shards: usize,
}

/// How a query would run: `POST /v1/query` with `"explain": true`.
#[derive(Debug, serde::Serialize)]
pub struct Explanation {
    /// The shards it visits.
    pub shards: Vec<String>,
    /// The statement each of them runs.
    pub statement: String,
    /// How their answers are merged.
    pub merge: &'static str,
    /// The keys the filter pins that are split hot keys, with the salts read for each.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub split_keys: Vec<prune::SplitKeyRead>,
}

/// What a query takes and answers, learned without running it: what drivers ask before
/// they bind parameters (the Postgres protocol's `Describe`).
#[derive(Debug, Clone)]
pub struct Description {
    /// Per `$n`, the type the shards infer for it; `None` for one they never see (LIMIT's
    /// and OFFSET's are read by the planner).
    pub parameters: Vec<Option<tokio_postgres::types::Type>>,
    /// Output columns with their types.
    pub columns: Vec<(String, ResultType)>,
}

/// How a query runs beyond its SQL: who asks, and what a Postgres session asks for.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Who asks: the query's table must be in its read grant.
    pub caller: Caller,
    /// The caller's statement timeout; the shorter of it and `query.statement_timeout`
    /// applies.
    pub timeout: Option<std::time::Duration>,
    /// Every row, however many (`COPY ... TO`): rows without a LIMIT are not capped at
    /// `query.max_rows` (groups still are, as they are held to be merged).
    pub every_row: bool,
}

impl RunOptions {
    /// A query by `caller` within the configured limits.
    pub fn by(caller: Caller) -> RunOptions {
        RunOptions {
            caller,
            timeout: None,
            every_row: false,
        }
    }
}

/// A merged answer whose rows are produced as they are merged.
pub struct QueryStream {
    /// Output columns with their types.
    pub columns: Vec<(String, ResultType)>,
    /// Shards the query runs on.
    pub shards: usize,
    rows: Rows,
    /// Most rows [`QueryStream::collect`] holds (`query.max_rows`).
    max_collected: usize,
}

enum Rows {
    /// Merged groups of an aggregated query, ready.
    Grouped(std::vec::IntoIter<Vec<Cell>>),
    /// A non-aggregated query, merged as it is read.
    Merging(OrderedMerge),
}

impl QueryStream {
    /// The next row, `None` after the last.
    pub async fn next_row(&mut self) -> Result<Option<Vec<Cell>>, QueryError> {
        match &mut self.rows {
            Rows::Grouped(rows) => Ok(rows.next()),
            Rows::Merging(merge) => merge.next().await,
        }
    }

    /// Every row, or the first error. An answer held whole may have at most `query.max_rows`
    /// rows, even with a larger LIMIT; larger answers are streamed.
    pub async fn collect(mut self) -> Result<QueryResult, QueryError> {
        let mut rows = Vec::new();
        while let Some(row) = self.next_row().await? {
            if rows.len() == self.max_collected {
                return Err(QueryError::AnswerTooLarge(self.max_collected));
            }
            rows.push(row);
        }
        Ok(QueryResult {
            columns: self.columns,
            rows,
            shards: self.shards,
        })
    }
}

/// Runs reporting queries over the shards, on each shard's query pool (apart from the COPY
/// writers'). A query runs on the shards of one published set.
pub struct QueryEngine {
    tables: Arc<Tables>,
    shards: Arc<Published>,
    limits: QueryConfig,
    /// Per shard name, whether its database collates text bytewise: asked once per shard, so
    /// a shard added later is asked too.
    sorts_bytewise: std::sync::Mutex<HashMap<String, bool>>,
}

/// Refuses a query of a table `caller` may not read.
fn granted(caller: &Caller, plan: &QueryPlan) -> Result<(), QueryError> {
    if caller.may_read(&plan.table.name) {
        return Ok(());
    }
    Err(QueryError::NotGranted {
        user: caller.name().unwrap_or_default().to_string(),
        table: plan.table.name.clone(),
    })
}

/// A checked query and where it runs.
struct Planned {
    plan: Arc<QueryPlan>,
    set: Arc<ShardSet>,
    targets: Vec<ShardIndex>,
    split_keys: Vec<prune::SplitKeyRead>,
    rendered: render::RenderedQuery,
    per_shard_limit: Option<u64>,
    /// The shard statement's column types when its distinct values are counted from sorted
    /// rows ([`runs`]).
    counted_by_runs: Option<Vec<tokio_postgres::types::Type>>,
}

impl Planned {
    /// The statement a shard runs, leaving out the rows of `skipped` ranges.
    fn shard_sql(&self, skipped: &[TokenRange]) -> String {
        match &self.counted_by_runs {
            None if skipped.is_empty() => self.rendered.sql.clone(),
            None => render::render(&self.plan, self.per_shard_limit, skipped).sql,
            Some(types) => {
                let keys = runs::sort_keys(&self.plan, &self.rendered.layout);
                runs::ordered(&render::render(&self.plan, None, skipped).sql, types, &keys)
            }
        }
    }
}

impl QueryEngine {
    /// Runs queries over the current set of `shards` within `limits`.
    pub fn new(tables: Arc<Tables>, shards: Arc<Published>, limits: QueryConfig) -> QueryEngine {
        QueryEngine {
            tables,
            shards,
            limits,
            sorts_bytewise: std::sync::Mutex::default(),
        }
    }

    /// Plans `sql` with `params` bound to `$1..$n`, starts it on the shards and returns the
    /// answer's columns and its rows as they are merged. Errors found before the first row (a
    /// refused query, a shard down or timing out on an aggregate) come back here.
    pub async fn run(
        &self,
        sql: &str,
        params: Vec<serde_json::Value>,
        caller: Caller,
    ) -> Result<QueryStream, QueryError> {
        self.run_with(sql, params, RunOptions::by(caller)).await
    }

    /// [`QueryEngine::run`] as `options` ask (a Postgres session's statement timeout, a COPY
    /// that wants every row).
    pub async fn run_with(
        &self,
        sql: &str,
        params: Vec<serde_json::Value>,
        options: RunOptions,
    ) -> Result<QueryStream, QueryError> {
        let timeout = options.timeout.map_or(self.limits.statement_timeout, |t| {
            t.min(self.limits.statement_timeout)
        });
        let row_cap = (!options.every_row).then_some(self.limits.max_rows);
        let planned = self.plan(sql, &params, row_cap)?;
        granted(&options.caller, &planned.plan)?;
        let planned = self.order_for_counting(planned).await?;
        let Planned {
            plan,
            set,
            targets,
            rendered,
            counted_by_runs,
            ..
        } = &planned;
        let now = serde_json::Value::from(chrono::Utc::now().to_rfc3339());
        let statement = Arc::new(ShardStatement {
            sql: planned.shard_sql(&[]),
            params: rendered
                .parameters
                .iter()
                .map(|&n| match n {
                    NOW_PARAMETER => JsonParam(now.clone()),
                    n => JsonParam(params[n - 1].clone()),
                })
                .collect(),
            numbers: rendered.parameters.clone(),
            timeout,
            time_zone: self.limits.time_zone.clone(),
        });
        tracing::debug!(shard_sql = %statement.sql, shards = targets.len(), "running a query");
        if let Some(&unprepared) = targets.iter().find(|&&t| !set.get(t).is_prepared()) {
            let message = "its tables are not verified yet (unreachable since start-up)".to_string();
            return Err(failed(set, unprepared, message));
        }
        let opened = targets.iter().map(|&index| {
            let skipped: Vec<_> = set.table.ranges_to_skip(index).copied().collect();
            let statement = if skipped.is_empty() {
                statement.clone()
            } else {
                Arc::new(statement.with_sql(planned.shard_sql(&skipped)))
            };
            let shard = set.get(index);
            ShardRows::open(&shard.id.0, shard.pools.query.clone(), statement)
        });
        let inputs = futures_util::future::try_join_all(opened).await?;
        let types = result_types(plan, &rendered.layout, agreed_types(&inputs)?)?;
        self.check_ordering(set, plan, &types).await?;
        let columns = visible_columns(plan, types);
        let max_groups = self.limits.max_rows;
        let rows = if plan.aggregated {
            let groups = match counted_by_runs {
                Some(_) => {
                    runs::merge_sorted_groups(plan, &rendered.layout, inputs, &params, max_groups).await?
                }
                None => merge_groups(plan, &rendered.layout, inputs, &params, max_groups).await?,
            };
            if plan.limit.is_none() && groups.len() > self.limits.max_rows {
                return Err(QueryError::TooManyRows(self.limits.max_rows));
            }
            Rows::Grouped(groups.into_iter())
        } else {
            Rows::Merging(OrderedMerge::new(plan.clone(), inputs, row_cap))
        };
        Ok(QueryStream {
            columns,
            rows,
            shards: targets.len(),
            max_collected: self.limits.max_rows,
        })
    }

    /// The parameters and columns of `sql`: the statement one shard would run is prepared
    /// there (not run), so every type is the one Postgres gives it.
    pub async fn describe(&self, sql: &str) -> Result<Description, QueryError> {
        let count = parse::parameter_count(sql);
        // Placeholder values: LIMIT and OFFSET parameters must be integers to plan.
        let placeholders = vec![serde_json::Value::from(0); count];
        let planned = self.plan(sql, &placeholders, Some(self.limits.max_rows))?;
        let prepared = self.prepare_on_one_shard(&planned).await?;
        let Planned {
            plan, set, rendered, ..
        } = &planned;
        let described: Vec<_> = prepared.columns().iter().map(|c| c.type_().clone()).collect();
        let types = result_types(plan, &rendered.layout, &described)?;
        self.check_ordering(set, plan, &types).await?;
        let mut parameters = vec![None; count];
        for (ty, &number) in prepared.params().iter().zip(&rendered.parameters) {
            if number != NOW_PARAMETER {
                parameters[number - 1] = Some(ty.clone());
            }
        }
        Ok(Description {
            parameters,
            columns: visible_columns(plan, types),
        })
    }

    /// The planned shard statement prepared (not run) on the first shard it visits, which
    /// tells its parameter and column types.
    async fn prepare_on_one_shard(&self, planned: &Planned) -> Result<tokio_postgres::Statement, QueryError> {
        let index = *planned
            .targets
            .first()
            .ok_or_else(|| Unsupported("the query has no shard to run on".into()))?;
        let shard = planned.set.get(index);
        if !shard.is_prepared() {
            let message = "its tables are not verified yet (unreachable since start-up)".to_string();
            return Err(failed(&planned.set, index, message));
        }
        let client = shard::checkout(&shard.id.0, &shard.pools.query).await?;
        client
            .prepare(&planned.rendered.sql)
            .await
            .map_err(|e| shard::classify(&shard.id.0, e))
    }

    /// `planned` with its distinct values counted from sorted rows when the merge can order
    /// its group keys and counted values ([`runs::countable`]); the statement's column types,
    /// which decide it, are learned by preparing it on one shard.
    async fn order_for_counting(&self, mut planned: Planned) -> Result<Planned, QueryError> {
        if planned.plan.distinct_columns.is_empty() {
            return Ok(planned);
        }
        let prepared = self.prepare_on_one_shard(&planned).await?;
        let types: Vec<_> = prepared.columns().iter().map(|c| c.type_().clone()).collect();
        if runs::countable(&planned.plan, &planned.rendered.layout, &types) {
            planned.counted_by_runs = Some(types);
        }
        Ok(planned)
    }

    /// What `run` would do with `sql`, without running it: the shards it visits, the statement
    /// each runs and how their answers are merged.
    pub async fn explain(
        &self,
        sql: &str,
        params: &[serde_json::Value],
        caller: &Caller,
    ) -> Result<Explanation, QueryError> {
        let planned = self.plan(sql, params, Some(self.limits.max_rows))?;
        granted(caller, &planned.plan)?;
        let planned = self.order_for_counting(planned).await?;
        let plan = &planned.plan;
        let merge = match (plan.aggregated, plan.order_by.is_empty()) {
            (true, _) if planned.counted_by_runs.is_some() => {
                "sorted group rows merged, groups combined as they end and distinct values counted \
                 as runs, then HAVING, ORDER BY, OFFSET and LIMIT"
            }
            (true, _) => "groups combined per key, then HAVING, ORDER BY, OFFSET and LIMIT",
            (false, false) => "k-way merge on the ORDER BY keys, then OFFSET and LIMIT",
            (false, true) => "rows concatenated, then OFFSET and LIMIT",
        };
        Ok(Explanation {
            shards: planned
                .targets
                .iter()
                .map(|&t| planned.set.get(t).id.0.clone())
                .collect(),
            statement: planned.shard_sql(&[]),
            merge,
            split_keys: planned.split_keys.clone(),
        })
    }

    /// The checked plan, the set of shards it runs on, those it visits and the statement they
    /// run; without a LIMIT each shard returns at most one row more than `row_cap` (any number
    /// without a cap).
    fn plan(
        &self,
        sql: &str,
        params: &[serde_json::Value],
        row_cap: Option<usize>,
    ) -> Result<Planned, QueryError> {
        let plan = plan_query(sql, params, &self.tables)?;
        let set = self.shards.load();
        let has_split_keys = set.table.splits.of(&plan.table.name).is_some();
        let plan = Arc::new(plan::count_keys_on_shards(plan, has_split_keys));
        let (targets, split_keys) = match prune::pruned_shards(&plan, params, &set.table) {
            Some(pruned) => (pruned.shards, pruned.split_keys),
            None => (set.table.shards_for_scatter(), Vec::new()),
        };
        let per_shard_limit = match (plan.limit, row_cap) {
            (Some(limit), _) if !plan.aggregated => Some(limit + plan.offset),
            (None, None) if !plan.aggregated => None,
            _ => Some(self.limits.max_rows as u64 + 1),
        };
        let rendered = render::render(&plan, per_shard_limit, &[]);
        Ok(Planned {
            plan,
            set,
            targets,
            split_keys,
            rendered,
            per_shard_limit,
            counted_by_runs: None,
        })
    }

    /// ORDER BY keys, min/max and HAVING's ordering comparisons must compare exactly as
    /// Postgres: no jsonb, and text only when every shard compares text bytewise (collation C),
    /// as the merge does.
    async fn check_ordering(
        &self,
        set: &ShardSet,
        plan: &QueryPlan,
        types: &[ResultType],
    ) -> Result<(), QueryError> {
        let having_types = plan
            .having
            .iter()
            .flat_map(|h| h.ordered_outputs())
            .map(|output| types[output]);
        let sort_types = plan
            .order_by
            .iter()
            .map(|key| types[key.output])
            .chain(having_types);
        let min_max_types = plan
            .columns
            .iter()
            .zip(types)
            .filter(|(c, _)| matches!(c.output.aggregate(), Some(Aggregate::Min | Aggregate::Max)))
            .map(|(_, ty)| *ty);
        for ty in sort_types.chain(min_max_types).collect::<Vec<_>>() {
            if ty == ResultType::Column(ColumnType::Jsonb) {
                return Err(Unsupported(format!(
                    "cannot ORDER BY a {ty} value (nor take its min or max); order by text or a \
                     number taken from it, such as payload->>'key' or (payload->>'key')::numeric"
                ))
                .into());
            }
            if ty == ResultType::Column(ColumnType::Text) && !self.text_sorts_bytewise(set).await? {
                return Err(Unsupported(
                    "ordering text (ORDER BY, min, max, HAVING <, >) needs shards whose collation is C"
                        .into(),
                )
                .into());
            }
        }
        Ok(())
    }

    /// Whether every shard of `set` has a database that collates text bytewise; each shard is
    /// asked the first time a query needs it.
    async fn text_sorts_bytewise(&self, set: &ShardSet) -> Result<bool, QueryError> {
        for (index, shard) in set.iter() {
            let known = self.collations().get(&shard.id.0).copied();
            let bytewise = match known {
                Some(bytewise) => bytewise,
                None => self.ask_sorts_bytewise(set, index).await?,
            };
            if !bytewise {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Asks shard `index` of `set` whether its database collates text bytewise, and keeps the
    /// answer.
    async fn ask_sorts_bytewise(&self, set: &ShardSet, index: ShardIndex) -> Result<bool, QueryError> {
        let shard = set.get(index);
        let client = shard::checkout(&shard.id.0, &shard.pools.query).await?;
        let row = client
            .query_one(
                "SELECT datcollate FROM pg_database WHERE datname = current_database()",
                &[],
            )
            .await
            .map_err(|e| failed(set, index, e.to_string()))?;
        let collation: String = row.get(0);
        let bytewise = collation == "C" || collation == "POSIX";
        self.collations().insert(shard.id.0.clone(), bytewise);
        Ok(bytewise)
    }

    fn collations(&self) -> std::sync::MutexGuard<'_, HashMap<String, bool>> {
        self.sorts_bytewise
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

fn failed(set: &ShardSet, shard: ShardIndex, message: String) -> QueryError {
    QueryError::ShardFailed {
        shard: set.get(shard).id.0.clone(),
        message,
    }
}

/// The shards' result description, which must agree.
fn agreed_types(inputs: &[ShardRows]) -> Result<&[tokio_postgres::types::Type], QueryError> {
    let first = &inputs[0];
    if let Some(other) = inputs.iter().find(|i| i.types() != first.types()) {
        return Err(QueryError::ShardFailed {
            shard: other.name().to_string(),
            message: format!(
                "its result columns have other types than shard {}'s; are the tables the same?",
                first.name()
            ),
        });
    }
    Ok(first.types())
}

/// The visible outputs' names with their types.
fn visible_columns(plan: &QueryPlan, types: Vec<ResultType>) -> Vec<(String, ResultType)> {
    plan.columns[..plan.visible]
        .iter()
        .zip(types)
        .map(|(c, ty)| (c.name.clone(), ty))
        .collect()
}

/// The answer's column types, from the result description a shard gave (`described`): each
/// output, hidden ones included, has the type of its first partial column, except that an
/// average of integers (whose sum is a bigint or numeric) is numeric and `count(DISTINCT x)` is
/// a bigint.
fn result_types(
    plan: &QueryPlan,
    layout: &[Vec<Combine>],
    described: &[tokio_postgres::types::Type],
) -> Result<Vec<ResultType>, QueryError> {
    let mut position = 0;
    let mut types = Vec::with_capacity(plan.columns.len());
    for (column, parts) in plan.columns.iter().zip(layout) {
        let ty = match &column.output {
            Output::Aggregate(call) if call.kind == Aggregate::CountDistinct => {
                ResultType::Column(ColumnType::BigInt)
            }
            Output::Aggregate(call)
                if call.kind == Aggregate::Avg
                    && ResultType::of(&described[position]).is_some_and(|t| t.is_integer()) =>
            {
                ResultType::Numeric
            }
            _ => {
                let described = &described[position];
                ResultType::of(described).ok_or_else(|| {
                    Unsupported(format!(
                        "{} has type {described}, which shardgate cannot return",
                        column.written
                    ))
                })?
            }
        };
        position += parts.len();
        types.push(ty);
    }
    Ok(types)
}
