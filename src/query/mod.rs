//! Scatter-gather reporting queries: `POST /v1/query`.
//!
//! A query is parsed and checked ([`parse`]), re-rendered from the checked syntax tree for every
//! shard it needs (one shard when the WHERE fixes the whole partition key), run on each in a
//! read-only transaction with a statement timeout, and merged ([`value`] orders cells as
//! Postgres does): ORDER BY is a k-way merge of the shards' sorted rows, each shard returning at
//! most LIMIT + OFFSET rows. A shard that fails fails the whole query, naming the shard.
//!
//! Supported so far: columns (or `*`) of one table; `count`, `sum`, `avg` (pushed down as a sum
//! and a count), `min`, `max`, `bool_and`, `bool_or` with GROUP BY, combined per group from the
//! shards' partial results; WHERE over columns, literals, `$n` parameters and an allow-list of
//! operators; ORDER BY output columns; LIMIT and OFFSET; `count(DISTINCT x)` of one column;
//! HAVING, evaluated on the merged groups ([`having`]). `SELECT DISTINCT` is a
//! GROUP BY of the selected columns.

pub mod api;
pub mod having;
pub mod parse;
pub mod value;

use crate::config::QueryConfig;
use crate::routing::{Routing, RoutingTable, ShardIndex, hash_key};
use crate::schema::{ColumnType, JsonScalar, Tables, encode_scalar, quote_ident};
use crate::shards::{PoolSettings, Shards, build_pool};
use deadpool_postgres::Pool;
use parse::OutputColumn;
use parse::{Aggregate, Output, QueryPlan, Unsupported, plan_query};
use sqlparser::ast::{Expr, InTarget, Value};
use std::cmp::Ordering;
use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use tokio::sync::OnceCell;
use tokio_postgres::error::SqlState;
use value::{Cell, Decimal, JsonParam, ResultType};

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
    pub columns: Vec<(String, ResultType)>,
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
        self.check_ordering(&plan).await?;
        let routing = self.routing.load();
        let targets = match pruned_shard(&plan, &params, &routing) {
            Some(shard) => vec![shard],
            None => (0..self.pools.len()).map(ShardIndex).collect(),
        };
        let per_shard_limit = match plan.limit {
            Some(limit) if !plan.aggregated => Some(limit + plan.offset),
            Some(_) => None,
            None => Some(self.limits.max_rows as u64 + 1),
        };
        let (filter, used) = shard_filter(&plan);
        let sql = render(&plan, filter.as_ref(), per_shard_limit);
        let bound: Vec<JsonParam> = used.iter().map(|n| JsonParam(params[n - 1].clone())).collect();
        let fetches = targets
            .iter()
            .map(|&shard| self.fetch(shard, &sql, &bound, &plan));
        let per_shard = futures_util::future::try_join_all(fetches).await?;
        let rows = if plan.aggregated {
            merge_groups(&plan, per_shard, &params)?
        } else {
            merge(&plan, per_shard)
        };
        if plan.limit.is_none() && rows.len() > self.limits.max_rows {
            return Err(QueryError::TooManyRows(self.limits.max_rows));
        }
        let columns = plan.columns[..plan.visible]
            .iter()
            .map(|c| (c.name.clone(), c.ty))
            .collect();
        Ok(QueryResult {
            columns,
            rows,
            shards: targets.len(),
        })
    }

    /// ORDER BY keys and min/max must compare exactly as Postgres: no jsonb, and text only when
    /// every shard compares text bytewise (collation C), as the merge does.
    async fn check_ordering(&self, plan: &QueryPlan) -> Result<(), QueryError> {
        let sort_types = plan.order_by.iter().map(|key| plan.columns[key.output].ty);
        let min_max_types = plan
            .columns
            .iter()
            .filter(|c| matches!(c.output, Output::Aggregate(Aggregate::Min | Aggregate::Max, _)))
            .map(|c| c.ty);
        for ty in sort_types.chain(min_max_types).collect::<Vec<_>>() {
            if !parse::sorts_exactly(ty) {
                return Err(Unsupported(format!("cannot ORDER BY a {ty} column")).into());
            }
            if ty == ResultType::Column(ColumnType::Text) && !self.text_sorts_bytewise().await? {
                return Err(Unsupported(
                    "ordering text (ORDER BY, min, max) needs shards whose collation is C".into(),
                )
                .into());
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
        let types: Vec<ResultType> = plan
            .columns
            .iter()
            .flat_map(|c| partials(plan, c))
            .map(|p| p.ty)
            .chain(hidden_group_columns(plan).map(|g| ResultType::Column(plan.table.columns[g].ty)))
            .collect();
        rows.iter()
            .map(|row| {
                types
                    .iter()
                    .enumerate()
                    .map(|(i, ty)| Cell::read(row, i, *ty))
                    .collect::<Result<Vec<_>, _>>()
            })
            .collect::<Result<_, _>>()
            .map_err(|e| self.failed(shard, e.to_string()))
    }
}

/// Group columns a shard returns after the output columns, to key the merge: all of them.
/// With `count(DISTINCT x)`, `x` follows them: shards group by it too, and the merge counts its
/// distinct values per group.
fn hidden_group_columns(plan: &QueryPlan) -> impl Iterator<Item = usize> + '_ {
    plan.group_by.iter().copied().chain(plan.distinct_column)
}

/// The SQL each shard runs: the checked plan re-rendered. Aggregates are computed per group
/// on each shard (their partial results have the final types) with the GROUP BY columns
/// appended; ordering and limits of aggregated queries are applied after the merge.
fn render(plan: &QueryPlan, filter: Option<&Expr>, limit: Option<u64>) -> String {
    let column = |index: usize| quote_ident(&plan.table.columns[index].name);
    let mut select: Vec<String> = plan
        .columns
        .iter()
        .flat_map(|c| partials(plan, c))
        .map(|p| p.sql)
        .collect();
    select.extend(hidden_group_columns(plan).map(column));
    let mut sql = format!(
        "SELECT {} FROM {}",
        select.join(", "),
        quote_ident(&plan.table.name)
    );
    if let Some(filter) = filter {
        sql.push_str(&format!(" WHERE {filter}"));
    }
    let group_keys: Vec<String> = hidden_group_columns(plan).map(column).collect();
    if !group_keys.is_empty() {
        sql.push_str(&format!(" GROUP BY {}", group_keys.join(", ")));
    }
    if !plan.order_by.is_empty() && !plan.aggregated {
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
    if let Some(limit) = limit {
        sql.push_str(&format!(" LIMIT {limit}"));
    }
    sql
}

/// How a partial result combines with another shard's for the same group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Combine {
    /// A GROUP BY value: equal on every shard.
    Keep,
    /// Added (counts, sums).
    Add,
    /// The smaller.
    Min,
    /// The larger.
    Max,
    /// Logical AND.
    And,
    /// Logical OR.
    Or,
}

/// One column a shard returns for an output.
struct Partial {
    sql: String,
    ty: ResultType,
    combine: Combine,
}

/// The columns each shard returns for output `c`: the column, or the aggregate's partial
/// results (an average needs a sum and a count).
fn partials(plan: &QueryPlan, c: &OutputColumn) -> Vec<Partial> {
    let column = |index: usize| quote_ident(&plan.table.columns[index].name);
    let partial = |sql: String, ty: ResultType, combine: Combine| Partial { sql, ty, combine };
    let bigint = ResultType::Column(ColumnType::BigInt);
    match c.output {
        Output::Column(index) => vec![partial(column(index), c.ty, Combine::Keep)],
        Output::Aggregate(Aggregate::CountRows, _) => vec![partial("count(*)".into(), bigint, Combine::Add)],
        Output::Aggregate(aggregate, Some(index)) => {
            let x = column(index);
            match aggregate {
                Aggregate::CountRows | Aggregate::Count => {
                    vec![partial(format!("count({x})"), bigint, Combine::Add)]
                }
                Aggregate::Sum => vec![partial(format!("sum({x})"), c.ty, Combine::Add)],
                Aggregate::Min => vec![partial(format!("min({x})"), c.ty, Combine::Min)],
                Aggregate::Max => vec![partial(format!("max({x})"), c.ty, Combine::Max)],
                Aggregate::BoolAnd => vec![partial(format!("bool_and({x})"), c.ty, Combine::And)],
                Aggregate::BoolOr => vec![partial(format!("bool_or({x})"), c.ty, Combine::Or)],
                Aggregate::Avg if c.ty == ResultType::Numeric => vec![
                    partial(format!("sum({x})::numeric"), ResultType::Numeric, Combine::Add),
                    partial(format!("count({x})"), bigint, Combine::Add),
                ],
                Aggregate::Avg => vec![
                    partial(format!("sum({x})"), c.ty, Combine::Add),
                    partial(format!("count({x})"), bigint, Combine::Add),
                ],
                // Counted from the distinct values the shards group by.
                Aggregate::CountDistinct => Vec::new(),
            }
        }
        Output::Aggregate(_, None) => unreachable!("only count(*) has no argument"),
    }
}

/// The WHERE condition as shards run it, its parameters renumbered `$1..` in order of use (a
/// parameter used only by HAVING is not sent), with the original numbers of those it uses.
fn shard_filter(plan: &QueryPlan) -> (Option<Expr>, Vec<usize>) {
    let mut filter = plan.filter.clone();
    let mut used = Vec::new();
    if let Some(filter) = &mut filter {
        renumber_parameters(filter, &mut used);
    }
    (filter, used)
}

/// Renumbers the `$n` of a checked WHERE expression (only the forms `parse` accepts occur).
fn renumber_parameters(expr: &mut Expr, used: &mut Vec<usize>) {
    match expr {
        Expr::Value(value) => {
            if let Value::Placeholder(name) = &mut value.value
                && let Some(n) = name.strip_prefix('$').and_then(|n| n.parse::<usize>().ok())
            {
                let position = used.iter().position(|u| *u == n).unwrap_or_else(|| {
                    used.push(n);
                    used.len() - 1
                });
                *name = format!("${}", position + 1);
            }
        }
        Expr::Nested(inner)
        | Expr::IsNull(inner)
        | Expr::IsNotNull(inner)
        | Expr::IsTrue(inner)
        | Expr::IsFalse(inner)
        | Expr::IsNotTrue(inner)
        | Expr::IsNotFalse(inner)
        | Expr::UnaryOp { expr: inner, .. } => renumber_parameters(inner, used),
        Expr::BinaryOp { left, right, .. } => {
            renumber_parameters(left, used);
            renumber_parameters(right, used);
        }
        Expr::Between { expr, low, high, .. } => {
            for part in [expr, low, high] {
                renumber_parameters(part, used);
            }
        }
        Expr::In {
            expr,
            target: InTarget::List(list),
            ..
        } => {
            renumber_parameters(expr, used);
            list.iter_mut().for_each(|item| renumber_parameters(item, used));
        }
        Expr::Like { expr, pattern, .. } | Expr::ILike { expr, pattern, .. } => {
            renumber_parameters(expr, used);
            renumber_parameters(pattern, used);
        }
        _ => {}
    }
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

/// Combines the shards' per-group partial results, finishes each group's outputs, then orders
/// and limits the groups. Holds one row per group.
fn merge_groups(
    plan: &QueryPlan,
    per_shard: Vec<Vec<Vec<Cell>>>,
    params: &[serde_json::Value],
) -> Result<Vec<Vec<Cell>>, QueryError> {
    let layout: Vec<Vec<Combine>> = plan
        .columns
        .iter()
        .map(|c| partials(plan, c).into_iter().map(|p| p.combine).collect())
        .collect();
    let combines: Vec<Combine> = layout.iter().flatten().copied().collect();
    let width = combines.len();
    let keys_end = width + plan.group_by.len();
    let mut groups: HashMap<Vec<u8>, GroupState> = HashMap::new();
    for row in per_shard.into_iter().flatten() {
        let (_, distinct) = match groups.entry(group_key(&row[width..keys_end])) {
            Entry::Vacant(slot) => slot.insert((row[..width].to_vec(), HashSet::new())),
            Entry::Occupied(slot) => {
                let group = slot.into_mut();
                for (i, combine) in combines.iter().enumerate() {
                    group.0[i] = combine_partials(*combine, &group.0[i], &row[i])?;
                }
                group
            }
        };
        if let Some(value) = row.get(keys_end).filter(|v| **v != Cell::Null) {
            distinct.insert(group_key(std::slice::from_ref(value)));
        }
    }
    let mut rows: Vec<Vec<Cell>> = groups
        .into_values()
        .map(|(partials, distinct)| finish_group(plan, &layout, partials, distinct.len()))
        .collect::<Result<_, _>>()?;
    if rows.is_empty() && plan.group_by.is_empty() {
        // Aggregates without GROUP BY answer one row even for no input, as in Postgres.
        rows.push(empty_input_row(plan));
    }
    if let Some(having) = &plan.having {
        let mut kept = Vec::with_capacity(rows.len());
        for row in rows {
            if having.keeps(&row, params)? {
                kept.push(row);
            }
        }
        rows = kept;
    }
    rows.sort_by(|a, b| compare_rows(plan, a, b));
    let limit = plan.limit.map_or(usize::MAX, |l| l as usize);
    let visible = |mut row: Vec<Cell>| {
        row.truncate(plan.visible);
        row
    };
    Ok(rows
        .into_iter()
        .skip(plan.offset as usize)
        .take(limit)
        .map(visible)
        .collect())
}

/// The aggregates of no rows: counts are 0, everything else NULL.
fn empty_input_row(plan: &QueryPlan) -> Vec<Cell> {
    plan.columns
        .iter()
        .map(|c| match c.output {
            Output::Aggregate(Aggregate::CountRows | Aggregate::Count | Aggregate::CountDistinct, _) => {
                Cell::Int(0)
            }
            _ => Cell::Null,
        })
        .collect()
}

/// A group being merged: its combined partial results, and the keys of the distinct values of
/// the `count(DISTINCT x)` column seen so far.
type GroupState = (Vec<Cell>, HashSet<Vec<u8>>);

/// A group's outputs from its combined partial results.
fn finish_group(
    plan: &QueryPlan,
    layout: &[Vec<Combine>],
    partials: Vec<Cell>,
    distinct_values: usize,
) -> Result<Vec<Cell>, QueryError> {
    let mut cells = partials.into_iter();
    let mut row = Vec::with_capacity(plan.columns.len());
    for (column, parts) in plan.columns.iter().zip(layout) {
        let mut parts: Vec<Cell> = cells.by_ref().take(parts.len()).collect();
        let cell = match (column.output, parts.as_slice()) {
            (Output::Aggregate(Aggregate::Avg, _), [sum, Cell::Int(count)]) => average(sum, *count)?,
            (Output::Aggregate(Aggregate::CountDistinct, _), []) => Cell::Int(distinct_values as i64),
            _ => parts.swap_remove(0),
        };
        row.push(cell);
    }
    Ok(row)
}

/// `sum / count` as Postgres's `avg` gives it; NULL for no input.
fn average(sum: &Cell, count: i64) -> Result<Cell, QueryError> {
    let too_large = || QueryError::Unsupported(Unsupported("an average too large to compute exactly".into()));
    Ok(match sum {
        _ if count == 0 => Cell::Null,
        Cell::Numeric(d) if d.scale == 0 => {
            Cell::Numeric(Decimal::average(d.unscaled, i128::from(count)).ok_or_else(too_large)?)
        }
        Cell::Float(x) => Cell::Float(x / count as f64),
        _ => return Err(too_large()),
    })
}

/// Two partial results for one group, combined as the aggregate over both inputs would be.
fn combine_partials(combine: Combine, a: &Cell, b: &Cell) -> Result<Cell, QueryError> {
    let overflow = || QueryError::Unsupported(Unsupported("a sum out of range while merging".into()));
    Ok(match (combine, a, b) {
        (Combine::Keep, x, _) => x.clone(),
        (_, Cell::Null, other) | (_, other, Cell::Null) => other.clone(),
        (Combine::Add, Cell::Int(x), Cell::Int(y)) => Cell::Int(x.checked_add(*y).ok_or_else(overflow)?),
        (Combine::Add, Cell::Float(x), Cell::Float(y)) => Cell::Float(x + y),
        (Combine::Add, Cell::Numeric(x), Cell::Numeric(y)) => {
            Cell::Numeric(x.checked_add(*y).ok_or_else(overflow)?)
        }
        (Combine::Min, x, y) => {
            if y.compare(x, false, false) == Ordering::Less {
                y.clone()
            } else {
                x.clone()
            }
        }
        (Combine::Max, x, y) => {
            if y.compare(x, false, false) == Ordering::Greater {
                y.clone()
            } else {
                x.clone()
            }
        }
        (Combine::And, Cell::Bool(x), Cell::Bool(y)) => Cell::Bool(*x && *y),
        (Combine::Or, Cell::Bool(x), Cell::Bool(y)) => Cell::Bool(*x || *y),
        (_, x, _) => x.clone(),
    })
}

/// A byte key for a group's values; equal values (including 0.0 and -0.0, and all NaNs, as
/// Postgres groups them) give equal keys.
fn group_key(cells: &[Cell]) -> Vec<u8> {
    let mut key = Vec::new();
    for cell in cells {
        let text = match cell {
            Cell::Float(x) if *x == 0.0 => "f:0".to_string(),
            Cell::Float(x) if x.is_nan() => "f:nan".to_string(),
            other => format!("{other:?}"),
        };
        key.extend_from_slice(&(text.len() as u32).to_be_bytes());
        key.extend_from_slice(text.as_bytes());
    }
    key
}

fn compare_rows(plan: &QueryPlan, a: &[Cell], b: &[Cell]) -> Ordering {
    plan.order_by
        .iter()
        .map(|k| a[k.output].compare(&b[k.output], k.descending, k.nulls_first))
        .find(|o| *o != Ordering::Equal)
        .unwrap_or(Ordering::Equal)
}
