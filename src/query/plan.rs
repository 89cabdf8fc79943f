//! The checked plan of a reporting query, the core types every planner file and the engine
//! share: what is selected, grouped, filtered, ordered and limited, and the refusal of what
//! shardgate cannot run. Only types here; building a plan is [`super::parse`]'s job.

use super::condition::Condition;
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
