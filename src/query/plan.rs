//! The checked plan of a reporting query, the core types every planner file and the engine
//! share: what is selected, grouped, filtered, ordered and limited, and the refusal of what
//! shardgate cannot run. Only types here; building a plan is [`super::parse`]'s job.

use super::condition::Condition;
use super::expr::column_expr;
use crate::pgtype::ColumnType;
use crate::schema::{TableId, TableSchema};
use sqlparser::ast::helpers::attached_token::AttachedToken;
use sqlparser::ast::{CaseWhen, Expr};
use std::sync::Arc;

/// An aggregate shardgate merges exactly from per-shard partial results.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Aggregate {
    /// `count(*)`.
    CountRows,
    /// `count(x)`.
    Count,
    /// `sum(x)` of an integer or double precision column.
    Sum,
    /// `min(x)`.
    Min,
    /// `max(x)`.
    Max,
    /// `bool_and(x)`.
    BoolAnd,
    /// `bool_or(x)`.
    BoolOr,
    /// `avg(x)` of an integer or double precision column.
    Avg,
    /// `count(DISTINCT x)`.
    CountDistinct,
    /// `count(DISTINCT k)` of a partition key each of whose values lives on one shard:
    /// counted on each shard and added.
    CountDistinctKeys,
}

/// An aggregate call, merged exactly from per-shard partial results.
#[derive(Debug, Clone, PartialEq)]
pub struct AggregateCall {
    /// Which aggregate.
    pub kind: Aggregate,
    /// Its argument, a checked expression (none for `count(*)`).
    pub argument: Option<Expr>,
    /// Its `FILTER (WHERE ...)` condition, checked.
    pub filter: Option<Expr>,
}

/// What an output column holds. Its type is the one the shards' statement describes.
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    /// A checked scalar expression computed per row (a column is the simplest).
    Value(Box<Expr>),
    /// An aggregate.
    Aggregate(Box<AggregateCall>),
}

impl Output {
    /// The aggregate's kind, for an aggregate output.
    pub fn aggregate(&self) -> Option<Aggregate> {
        match self {
            Output::Aggregate(call) => Some(call.kind),
            Output::Value(_) => None,
        }
    }
}

/// One output column.
#[derive(Debug, Clone)]
pub struct OutputColumn {
    /// Name in the answer (the alias, else the column or function name, else `?column?`).
    pub name: String,
    /// The expression as the query wrote it, for messages (the output holds the normalised one).
    pub written: String,
    /// What it holds.
    pub output: Output,
}

/// One ORDER BY key, as a position in the output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SortKey {
    /// Output column index.
    pub output: usize,
    /// `DESC`.
    pub descending: bool,
    /// Where NULLs sort (Postgres default: last for ASC, first for DESC).
    pub nulls_first: bool,
}

/// A checked query over one declared table.
#[derive(Debug, Clone)]
pub struct QueryPlan {
    /// The table read.
    pub table_id: TableId,
    /// Its declaration.
    pub table: Arc<TableSchema>,
    /// Output columns, in order.
    pub columns: Vec<OutputColumn>,
    /// The WHERE condition, checked.
    pub filter: Option<Expr>,
    /// ORDER BY keys.
    pub order_by: Vec<SortKey>,
    /// LIMIT.
    pub limit: Option<u64>,
    /// OFFSET.
    pub offset: u64,
    /// Values the filter pins partition-key columns to, per column (for pruning).
    pub key_values: Vec<(usize, KeyValues)>,
    /// GROUP BY keys, checked expressions (a column is the simplest).
    pub group_by: Vec<Expr>,
    /// Whether the query aggregates (has aggregates or GROUP BY).
    pub aggregated: bool,
    /// What the query's `count(DISTINCT x)` count, each once, in order of appearance (`x`, or
    /// `CASE WHEN filter THEN x END`).
    pub distinct_columns: Vec<Expr>,
    /// The HAVING condition, applied to merged groups.
    pub having: Option<Condition>,
    /// Outputs the answer shows; those after it serve ORDER BY and HAVING only.
    pub visible: usize,
}

/// The values a term of the filter pins a partition-key column to.
#[derive(Debug, Clone)]
pub enum KeyValues {
    /// `col = v`, `col IN (v, ...)` or `col = ANY(ARRAY[v, ...])`: literals or parameters.
    Listed(Vec<Expr>),
    /// `col = ANY($n)`: the elements of an array parameter.
    AnyOf(Box<Expr>),
}

/// What a `count(DISTINCT x)` output counts: `x`, or with a filter `CASE WHEN filter THEN x
/// END` (NULLs are not counted); `None` for other outputs.
pub fn counted_value(output: &Output) -> Option<Expr> {
    let Output::Aggregate(call) = output else {
        return None;
    };
    let (Aggregate::CountDistinct, Some(argument)) = (call.kind, &call.argument) else {
        return None;
    };
    Some(match &call.filter {
        None => argument.clone(),
        Some(filter) => Expr::Case {
            case_token: AttachedToken::empty(),
            end_token: AttachedToken::empty(),
            operand: None,
            conditions: vec![CaseWhen {
                condition: filter.clone(),
                result: argument.clone(),
            }],
            else_result: None,
        },
    })
}

/// The values `columns`' `count(DISTINCT x)` count, each once, in order of appearance.
pub fn counted_values(columns: &[OutputColumn]) -> Vec<Expr> {
    let mut found: Vec<Expr> = Vec::new();
    for counted in columns.iter().filter_map(|c| counted_value(&c.output)) {
        if !found.contains(&counted) {
            found.push(counted);
        }
    }
    found
}

/// `plan` with its `count(DISTINCT k)` counted on the shards and added
/// ([`Aggregate::CountDistinctKeys`]) when `k`, the table's one-column partition key, is all
/// it counts and each value of `k` lives on one shard: no key of the table is split
/// (`has_split_keys`), and values of `k`'s type that Postgres finds equal are equal bytes, so
/// they hash alike (not so for `double precision`, whose 0 and -0 are equal, nor `jsonb`). A
/// query reads each row from one shard even while its range moves (invariant 12), so no value
/// is counted on two. (With another value counted too, the shards group by that value, and
/// counts per subgroup could not be added.)
pub fn count_keys_on_shards(mut plan: QueryPlan, has_split_keys: bool) -> QueryPlan {
    let table = &plan.table;
    let key = match table.partition_key.as_slice() {
        [key] if !has_split_keys => *key,
        _ => return plan,
    };
    let key_column = column_expr(table, key);
    let only_the_key = plan.columns.iter().all(|column| match &column.output {
        Output::Aggregate(call) if call.kind == Aggregate::CountDistinct => {
            call.argument.as_ref() == Some(&key_column)
        }
        _ => true,
    });
    if !only_the_key || matches!(table.columns[key].ty, ColumnType::Double | ColumnType::Jsonb) {
        return plan;
    }
    for column in &mut plan.columns {
        if let Output::Aggregate(call) = &mut column.output
            && call.kind == Aggregate::CountDistinct
        {
            call.kind = Aggregate::CountDistinctKeys;
        }
    }
    plan.distinct_columns.clear();
    plan
}
