//! Scatter-gather reporting queries: `POST /v1/query`.
//!
//! A query is parsed and checked ([`parse`]), re-rendered from the checked syntax tree for every
//! shard it needs (one shard when the WHERE fixes the whole partition key), run on each in a
//! read-only transaction with a statement timeout, and merged ([`value`] orders cells as
//! Postgres does): ORDER BY is a k-way merge of the shards' sorted rows, each shard returning at
//! most LIMIT + OFFSET rows. A shard that fails fails the whole query, naming the shard.
//!
//! Supported so far: plain columns (or `*`) of one table, WHERE over columns, literals, `$n`
//! parameters and an allow-list of operators, ORDER BY output columns, LIMIT and OFFSET.
//! Aggregates, GROUP BY, HAVING and DISTINCT are refused as "not supported yet".

pub mod api;
pub mod parse;
pub mod value;

use crate::config::QueryConfig;
use crate::routing::{Routing, RoutingTable, ShardIndex, hash_key};
use crate::schema::{ColumnType, JsonScalar, Tables, encode_scalar, quote_ident};
use crate::shards::{PoolSettings, Shards, build_pool};
use deadpool_postgres::Pool;
use parse::{QueryPlan, Unsupported, plan_query};
use sqlparser::ast::{Expr, Value};
use std::cmp::Ordering;
use std::collections::VecDeque;
use std::sync::Arc;
use tokio::sync::OnceCell;
use tokio_postgres::error::SqlState;
use value::{Cell, JsonParam};

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
    /// A query without LIMIT matched more rows than `query.max_rows`.
    #[error("the query returns more than {0} rows; add a LIMIT")]
    TooManyRows(usize),
}

/// A merged answer.
#[derive(Debug)]
pub struct QueryResult {
    /// Output columns with their types.
    pub columns: Vec<(String, ColumnType)>,
    /// Rows in output order.
    pub rows: Vec<Vec<Cell>>,
    /// Shards the query ran on.
    pub shards: usize,
}

/// Runs reporting queries over the shards; its pools are apart from the COPY writers'.
pub struct QueryEngine {
    tables: Arc<Tables>,
    routing: Arc<Routing>,
    names: Vec<String>,
    pools: Vec<Pool>,
    limits: QueryConfig,
    text_sorts_bytewise: OnceCell<bool>,
}

impl QueryEngine {
    /// Builds the query pools (connections open on first use).
    pub fn new(
        tables: Arc<Tables>,
        routing: Arc<Routing>,
        shards: &Shards,
        urls: &[String],
        limits: QueryConfig,
        connect_timeout: std::time::Duration,
    ) -> Result<QueryEngine, String> {
        let pools = urls
            .iter()
            .map(|url| {
                build_pool(&PoolSettings {
                    url,
                    max_size: limits.connections_per_shard,
                    connect_timeout,
                    application_name: "shardgate-query",
                    session_setup: "",
                })
            })
            .collect::<Result<_, _>>()?;
        Ok(QueryEngine {
            tables,
            routing,
            names: shards.iter().map(|(_, s)| s.id.0.clone()).collect(),
            pools,
            limits,
            text_sorts_bytewise: OnceCell::new(),
        })
    }

    /// Plans, runs and merges `sql` with `params` bound to `$1..$n`.
    pub async fn run(&self, sql: &str, params: Vec<serde_json::Value>) -> Result<QueryResult, QueryError> {
        let plan = plan_query(sql, params.len(), &self.tables)?;
        self.check_order_by(&plan).await?;
        let routing = self.routing.load();
        let targets = match pruned_shard(&plan, &params, &routing) {
            Some(shard) => vec![shard],
            None => (0..self.pools.len()).map(ShardIndex).collect(),
        };
        let per_shard_limit = match plan.limit {
            Some(limit) => limit + plan.offset,
            None => self.limits.max_rows as u64 + 1,
        };
        let sql = render(&plan, per_shard_limit);
        let params: Vec<JsonParam> = params.into_iter().map(JsonParam).collect();
        let fetches = targets
            .iter()
            .map(|&shard| self.fetch(shard, &sql, &params, &plan));
        let per_shard = futures_util::future::try_join_all(fetches).await?;
        let rows = merge(&plan, per_shard);
        if plan.limit.is_none() && rows.len() > self.limits.max_rows {
            return Err(QueryError::TooManyRows(self.limits.max_rows));
        }
        let columns = plan
            .columns
            .iter()
            .map(|c| (c.name.clone(), plan.table.columns[c.column].ty))
            .collect();
        Ok(QueryResult {
            columns,
            rows,
            shards: targets.len(),
        })
    }

    /// ORDER BY keys must be merged exactly: no jsonb, and text only when every shard compares
    /// text bytewise (collation C), as the merge does.
    async fn check_order_by(&self, plan: &QueryPlan) -> Result<(), QueryError> {
        for key in &plan.order_by {
            let ty = plan.table.columns[plan.columns[key.output].column].ty;
            if !parse::sorts_exactly(ty) {
                return Err(Unsupported(format!("cannot ORDER BY a {ty} column")).into());
            }
            if ty == ColumnType::Text && !self.text_sorts_bytewise().await? {
                return Err(
                    Unsupported("ORDER BY a text column needs shards whose collation is C".into()).into(),
                );
            }
        }
        Ok(())
    }

    async fn text_sorts_bytewise(&self) -> Result<bool, QueryError> {
        let check = || async {
            for (index, pool) in self.pools.iter().enumerate() {
                let client = pool
                    .get()
                    .await
                    .map_err(|e| self.failed(ShardIndex(index), e.to_string()))?;
                let row = client
                    .query_one(
                        "SELECT datcollate FROM pg_database WHERE datname = current_database()",
                        &[],
                    )
                    .await
                    .map_err(|e| self.failed(ShardIndex(index), e.to_string()))?;
                let collation: String = row.get(0);
                if collation != "C" && collation != "POSIX" {
                    return Ok(false);
                }
            }
            Ok(true)
        };
        self.text_sorts_bytewise.get_or_try_init(check).await.copied()
    }

    fn failed(&self, shard: ShardIndex, message: String) -> QueryError {
        QueryError::ShardFailed {
            shard: self.names[shard.0].clone(),
            message,
        }
    }

    async fn fetch(
        &self,
        shard: ShardIndex,
        sql: &str,
        params: &[JsonParam],
        plan: &QueryPlan,
    ) -> Result<Vec<Vec<Cell>>, QueryError> {
        let name = &self.names[shard.0];
        let classify = |e: tokio_postgres::Error| match e.code() {
            Some(code) if *code == SqlState::QUERY_CANCELED => QueryError::Timeout { shard: name.clone() },
            Some(code) if code.code().starts_with("42") || code.code().starts_with("22") => {
                QueryError::Invalid {
                    shard: name.clone(),
                    message: e
                        .as_db_error()
                        .map_or_else(|| e.to_string(), |db| db.message().to_string()),
                }
            }
            _ => self.failed(shard, e.to_string()),
        };
        let mut client = self.pools[shard.0]
            .get()
            .await
            .map_err(|e| self.failed(shard, e.to_string()))?;
        let tx = client
            .build_transaction()
            .read_only(true)
            .start()
            .await
            .map_err(classify)?;
        let timeout_ms = self.limits.statement_timeout.as_millis();
        tx.batch_execute(&format!("SET LOCAL statement_timeout = {timeout_ms}"))
            .await
            .map_err(classify)?;
        let refs: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = params.iter().map(|p| p as _).collect();
        let rows = tx.query(sql, &refs).await.map_err(classify)?;
        tx.commit().await.map_err(classify)?;
        rows.iter()
            .map(|row| {
                plan.columns
                    .iter()
                    .enumerate()
                    .map(|(i, c)| Cell::read(row, i, plan.table.columns[c.column].ty))
                    .collect::<Result<Vec<_>, _>>()
            })
            .collect::<Result<_, _>>()
            .map_err(|e| self.failed(shard, e.to_string()))
    }
}

/// The SQL each shard runs: the checked plan re-rendered, limited to `limit` rows.
fn render(plan: &QueryPlan, limit: u64) -> String {
    let columns: Vec<String> = plan
        .columns
        .iter()
        .map(|c| quote_ident(&plan.table.columns[c.column].name))
        .collect();
    let mut sql = format!(
        "SELECT {} FROM {}",
        columns.join(", "),
        quote_ident(&plan.table.name)
    );
    if let Some(filter) = &plan.filter {
        sql.push_str(&format!(" WHERE {filter}"));
    }
    if !plan.order_by.is_empty() {
        let keys: Vec<String> = plan
            .order_by
            .iter()
            .map(|k| {
                let direction = if k.descending { "DESC" } else { "ASC" };
                let nulls = if k.nulls_first { "FIRST" } else { "LAST" };
                format!("{} {direction} NULLS {nulls}", k.output + 1)
            })
            .collect();
        sql.push_str(&format!(" ORDER BY {}", keys.join(", ")));
    }
    sql.push_str(&format!(" LIMIT {limit}"));
    sql
}

/// The one shard to visit when the filter fixes every partition-key column by equality.
fn pruned_shard(
    plan: &QueryPlan,
    params: &[serde_json::Value],
    routing: &RoutingTable,
) -> Option<ShardIndex> {
    let mut encoded = Vec::new();
    for &key_column in &plan.table.partition_key {
        let (_, value) = plan.key_equalities.iter().find(|(c, _)| *c == key_column)?;
        let ty = plan.table.columns[key_column].ty;
        let mut bytes = Vec::new();
        let json;
        let scalar = match value {
            Expr::Value(v) => match &v.value {
                Value::SingleQuotedString(s) => JsonScalar::Str(s),
                Value::Boolean(b) => JsonScalar::Bool(*b),
                Value::Number(n, _) => n
                    .parse()
                    .map(JsonScalar::Int)
                    .or_else(|_| n.parse().map(JsonScalar::Float))
                    .ok()?,
                Value::Placeholder(p) => {
                    json = params.get(p.trim_start_matches('$').parse::<usize>().ok()?.checked_sub(1)?)?;
                    match json {
                        serde_json::Value::String(s) => JsonScalar::Str(s),
                        serde_json::Value::Bool(b) => JsonScalar::Bool(*b),
                        serde_json::Value::Number(n) => n
                            .as_i64()
                            .map(JsonScalar::Int)
                            .or(n.as_f64().map(JsonScalar::Float))?,
                        _ => return None,
                    }
                }
                _ => return None,
            },
            _ => return None,
        };
        encode_scalar(ty, scalar, &mut bytes).ok()?;
        encoded.push((ty, bytes));
    }
    let hash = hash_key(encoded.iter().map(|(ty, b)| (*ty, b.as_slice())), &mut Vec::new());
    Some(routing.shard_for(hash))
}

/// Merges the shards' rows: a k-way merge on the ORDER BY keys (each input already sorted),
/// else concatenation; then OFFSET and LIMIT.
fn merge(plan: &QueryPlan, per_shard: Vec<Vec<Vec<Cell>>>) -> Vec<Vec<Cell>> {
    let wanted = plan.limit.map_or(usize::MAX, |l| (l + plan.offset) as usize);
    let mut inputs: Vec<VecDeque<Vec<Cell>>> = per_shard.into_iter().map(VecDeque::from).collect();
    let mut merged = Vec::new();
    while merged.len() < wanted {
        let mut best: Option<usize> = None;
        for (shard, rows) in inputs.iter().enumerate() {
            let Some(row) = rows.front() else { continue };
            let better = best.is_none_or(|b| compare_rows(plan, row, &inputs[b][0]) == Ordering::Less);
            if better {
                best = Some(shard);
            }
        }
        let Some(row) = best.and_then(|shard| inputs[shard].pop_front()) else {
            break;
        };
        merged.push(row);
    }
    merged.into_iter().skip(plan.offset as usize).collect()
}

fn compare_rows(plan: &QueryPlan, a: &[Cell], b: &[Cell]) -> Ordering {
    plan.order_by
        .iter()
        .map(|k| a[k.output].compare(&b[k.output], k.descending, k.nulls_first))
        .find(|o| *o != Ordering::Equal)
        .unwrap_or(Ordering::Equal)
}
