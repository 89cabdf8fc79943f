//! Reporting SQL → a [`QueryPlan`]: parsed with `sqlparser`, checked against the declared
//! tables, and reduced to the constructs shardgate can run on every shard and merge exactly.
//! Anything else is refused with the construct named (invariant 8: nothing from the user's text
//! reaches a shard except through the checked syntax tree).

use super::expr::{checked, column_expr, column_of, identifier, ungrouped_column};
use super::having::{Condition, plan_having};
use crate::schema::{ColumnType, TableId, TableSchema, Tables};
use sqlparser::ast::helpers::attached_token::AttachedToken;
use sqlparser::ast::{
    BinaryOperator, CaseWhen, Distinct, DuplicateTreatment, Expr, Function, FunctionArg, FunctionArgExpr,
    FunctionArgumentList, FunctionArguments, GroupByExpr, Ident, InTarget, LimitClause, ObjectNamePart,
    OrderByKind, OrderBySort, Query, Select, SelectItem, SetExpr, Statement, TableFactor, Value,
};
use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::parser::Parser;
use std::sync::Arc;

/// A query shardgate cannot run: the message names the construct.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Unsupported(pub String);

pub(super) fn unsupported<T>(message: impl Into<String>) -> Result<T, Unsupported> {
    Err(Unsupported(message.into()))
}

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

/// The aggregate functions shardgate merges.
const AGGREGATES: &[&str] = &["count", "sum", "avg", "min", "max", "bool_and", "bool_or"];

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

/// Parses and checks `sql`, which may use the placeholders `$1..$n` of `values` (LIMIT and
/// OFFSET take theirs from the values).
pub fn plan_query(
    sql: &str,
    values: &[serde_json::Value],
    tables: &Tables,
) -> Result<QueryPlan, Unsupported> {
    let params = values.len();
    let statements = Parser::parse_sql(&PostgreSqlDialect {}, sql)
        .map_err(|e| Unsupported(format!("cannot parse the query: {e}")))?;
    let statement = match statements.as_slice() {
        [one] => one,
        [] => return unsupported("the query is empty"),
        _ => return unsupported("send one statement at a time"),
    };
    let Statement::Query(query) = statement else {
        return unsupported("only SELECT is supported");
    };
    check_query_clauses(query)?;
    let SetExpr::Select(select) = query.body.as_ref() else {
        return unsupported("UNION, INTERSECT, EXCEPT, VALUES and nested queries are not supported");
    };
    check_select_clauses(select)?;
    let (table_id, table) = from_table(select, tables)?;
    let mut columns = projection(select, &table, params)?;
    let visible = columns.len();
    let having = select
        .having
        .as_ref()
        .map(|h| plan_having(h, &table, &mut columns, params))
        .transpose()?;
    let distinct = matches!(select.distinct, Some(Distinct::Distinct));
    let order_by = order_by(query, &mut columns, visible, distinct, &table, params)?;
    let group_by = match distinct {
        true => distinct_groups(select, &columns)?,
        false => group_by(select, &table, &columns[..visible], params)?,
    };
    let aggregated =
        !group_by.is_empty() || having.is_some() || columns.iter().any(|c| c.output.aggregate().is_some());
    if aggregated {
        check_grouped_outputs(&columns, &group_by)?;
    }
    let distinct_columns = distinct_columns(&columns);
    if distinct_columns.len() > MAX_COUNTED_VALUES {
        return unsupported(format!(
            "count(DISTINCT ...) of more than {MAX_COUNTED_VALUES} different values is not supported"
        ));
    }
    let filter = select
        .selection
        .as_ref()
        .map(|f| checked(f, &table, params))
        .transpose()?;
    let (limit, offset) = limit_offset(query, values)?;
    let key_values = filter.as_ref().map(|f| key_values(f, &table)).unwrap_or_default();
    Ok(QueryPlan {
        table_id,
        table,
        columns,
        filter,
        order_by,
        limit,
        offset,
        key_values,
        group_by,
        aggregated,
        distinct_columns,
        having,
        visible,
    })
}

/// Most different values one query's `count(DISTINCT ...)` may count: each is a grouping set
/// of the shard statement, told apart by one bit of `GROUPING(...)` (which takes at most 31).
const MAX_COUNTED_VALUES: usize = 16;

/// The values the query's `count(DISTINCT x)` count, each once.
fn distinct_columns(columns: &[OutputColumn]) -> Vec<Expr> {
    let mut found: Vec<Expr> = Vec::new();
    for counted in columns.iter().filter_map(|c| counted_value(&c.output)) {
        if !found.contains(&counted) {
            found.push(counted);
        }
    }
    found
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

fn check_query_clauses(query: &Query) -> Result<(), Unsupported> {
    if query.with.is_some() {
        return unsupported("WITH (common table expressions) is not supported");
    }
    if query.fetch.is_some() || !query.locks.is_empty() || query.for_clause.is_some() {
        return unsupported("FETCH, FOR UPDATE/SHARE and FOR clauses are not supported");
    }
    if query.settings.is_some() || query.format_clause.is_some() || !query.pipe_operators.is_empty() {
        return unsupported("SETTINGS, FORMAT and pipe operators are not supported");
    }
    Ok(())
}

fn check_select_clauses(select: &Select) -> Result<(), Unsupported> {
    if let Some(Distinct::On(_)) = &select.distinct {
        return unsupported("DISTINCT ON is not supported");
    }
    if select.top.is_some() || select.into.is_some() || select.prewhere.is_some() || select.qualify.is_some()
    {
        return unsupported("TOP, INTO, PREWHERE and QUALIFY are not supported");
    }
    if !select.named_window.is_empty() {
        return unsupported("window functions are not supported");
    }
    if !select.lateral_views.is_empty() || !select.connect_by.is_empty() || select.exclude.is_some() {
        return unsupported("LATERAL VIEW, CONNECT BY and EXCLUDE are not supported");
    }
    if !select.cluster_by.is_empty() || !select.distribute_by.is_empty() || !select.sort_by.is_empty() {
        return unsupported("CLUSTER BY, DISTRIBUTE BY and SORT BY are not supported");
    }
    if select.value_table_mode.is_some()
        || select.select_modifiers.is_some()
        || !select.optimizer_hints.is_empty()
    {
        return unsupported("this SELECT form is not supported");
    }
    Ok(())
}

fn from_table(select: &Select, tables: &Tables) -> Result<(TableId, Arc<TableSchema>), Unsupported> {
    let [from] = select.from.as_slice() else {
        return unsupported(
            "select from exactly one declared table (joins and lists of tables are not supported)",
        );
    };
    if !from.joins.is_empty() {
        return unsupported("joins are not supported");
    }
    let TableFactor::Table {
        name,
        alias: None,
        args: None,
        ..
    } = &from.relation
    else {
        return unsupported("FROM must name one declared table, without alias, function or subquery");
    };
    let [ObjectNamePart::Identifier(ident)] = name.0.as_slice() else {
        return unsupported(format!("unknown table {name}"));
    };
    let table_name = identifier(ident);
    match tables.lookup(&table_name) {
        Some((id, table)) => Ok((id, table.clone())),
        None => unsupported(format!("unknown table {table_name}")),
    }
}

fn projection(select: &Select, table: &TableSchema, params: usize) -> Result<Vec<OutputColumn>, Unsupported> {
    let mut columns = Vec::new();
    for item in &select.projection {
        match item {
            SelectItem::Wildcard(options) if options.to_string().is_empty() => {
                columns.extend(table.columns.iter().enumerate().map(|(i, c)| OutputColumn {
                    name: c.name.clone(),
                    written: c.name.clone(),
                    output: Output::Value(Box::new(column_expr(table, i))),
                }))
            }
            SelectItem::UnnamedExpr(expr) => columns.push(output_column(expr, None, table, params)?),
            SelectItem::ExprWithAlias { expr, alias } => {
                columns.push(output_column(expr, Some(alias), table, params)?)
            }
            _ => return unsupported(format!("unsupported select item {item}")),
        }
    }
    Ok(columns)
}

fn output_column(
    expr: &Expr,
    alias: Option<&Ident>,
    table: &TableSchema,
    params: usize,
) -> Result<OutputColumn, Unsupported> {
    let output = match expr {
        Expr::Function(function) if is_aggregate(function) => {
            Output::Aggregate(Box::new(aggregate(function, table, params)?))
        }
        _ => Output::Value(Box::new(checked(expr, table, params)?)),
    };
    Ok(OutputColumn {
        name: alias.map_or_else(|| default_name(expr), identifier),
        written: expr.to_string(),
        output,
    })
}

/// The name Postgres gives an unaliased output: the column's, the function's, else `?column?`.
fn default_name(expr: &Expr) -> String {
    match expr {
        Expr::Identifier(ident) => identifier(ident),
        Expr::CompoundIdentifier(parts) => parts.last().map_or_else(String::new, identifier),
        Expr::Function(function) => function_name(function),
        Expr::Nested(inner) => default_name(inner),
        _ => "?column?".to_string(),
    }
}

/// Whether `function` is one of the aggregates shardgate merges.
pub(super) fn is_aggregate(function: &Function) -> bool {
    AGGREGATES.contains(&function_name(function).as_str())
}

pub(super) fn function_name(function: &Function) -> String {
    function.name.to_string().to_lowercase()
}

/// The argument list of a call without OVER, WITHIN GROUP, null treatment or clauses (FILTER
/// is for the caller to check).
pub(super) fn plain_call<'f>(
    function: &'f Function,
    name: &str,
) -> Result<&'f FunctionArgumentList, Unsupported> {
    if function.over.is_some() {
        return unsupported("window functions are not supported");
    }
    if !function.within_group.is_empty() || function.null_treatment.is_some() {
        return unsupported(format!(
            "{name}: WITHIN GROUP and null treatment are not supported"
        ));
    }
    let FunctionArguments::List(list) = &function.args else {
        return unsupported(format!("function {name} is not supported"));
    };
    if !list.clauses.is_empty() || !matches!(function.parameters, FunctionArguments::None) {
        return unsupported(format!("{name}: clauses inside the call are not supported"));
    }
    Ok(list)
}

/// A checked aggregate call. Arguments that are plain columns are checked against their
/// declared type here; for other expressions the shards refuse what Postgres refuses.
pub(super) fn aggregate(
    function: &Function,
    table: &TableSchema,
    params: usize,
) -> Result<AggregateCall, Unsupported> {
    let name = function_name(function);
    let list = plain_call(function, &name)?;
    let filter = function
        .filter
        .as_ref()
        .map(|f| checked(f, table, params))
        .transpose()?;
    let distinct = match list.duplicate_treatment {
        None | Some(DuplicateTreatment::All) => false,
        Some(DuplicateTreatment::Distinct) if name == "count" => true,
        Some(DuplicateTreatment::Distinct) => {
            return unsupported(format!("{name}(DISTINCT ...) is not supported"));
        }
    };
    let call = |kind: Aggregate, argument: Option<Expr>| AggregateCall {
        kind,
        argument,
        filter: filter.clone(),
    };
    let argument = match list.args.as_slice() {
        [FunctionArg::Unnamed(FunctionArgExpr::Wildcard)] if name == "count" => {
            return Ok(call(Aggregate::CountRows, None));
        }
        [FunctionArg::Unnamed(FunctionArgExpr::Expr(expr))] => checked(expr, table, params)?,
        _ => return unsupported(format!("{name} takes one argument")),
    };
    if distinct {
        return Ok(call(Aggregate::CountDistinct, Some(argument)));
    }
    let kind = match name.as_str() {
        "count" => Aggregate::Count,
        "sum" => Aggregate::Sum,
        "avg" => Aggregate::Avg,
        "min" => Aggregate::Min,
        "max" => Aggregate::Max,
        "bool_and" => Aggregate::BoolAnd,
        _ => Aggregate::BoolOr,
    };
    if let Ok(column) = column_of(&argument, table) {
        check_column_argument(&name, kind, table.columns[column].ty)?;
    }
    Ok(call(kind, Some(argument)))
}

/// Refuses an aggregate of a column whose type it does not take (or shardgate cannot merge).
fn check_column_argument(name: &str, kind: Aggregate, ty: ColumnType) -> Result<(), Unsupported> {
    use ColumnType::{Boolean, Double, Jsonb};
    let fits = match kind {
        Aggregate::Sum | Aggregate::Avg => ty.is_integer() || ty == Double,
        Aggregate::Min | Aggregate::Max => !matches!(ty, Jsonb | Boolean),
        Aggregate::BoolAnd | Aggregate::BoolOr => ty == Boolean,
        _ => true,
    };
    if fits {
        Ok(())
    } else {
        unsupported(format!("{name} of a {ty} column is not supported"))
    }
}

/// GROUP BY keys, resolved as Postgres does: a number is an output position, a name is a
/// table column before an output alias, anything else an expression.
fn group_by(
    select: &Select,
    table: &TableSchema,
    columns: &[OutputColumn],
    params: usize,
) -> Result<Vec<Expr>, Unsupported> {
    let expressions = match &select.group_by {
        GroupByExpr::Expressions(expressions, modifiers) if modifiers.is_empty() => expressions,
        _ => return unsupported("GROUP BY ALL, ROLLUP, CUBE and GROUPING SETS are not supported"),
    };
    let mut keys: Vec<Expr> = Vec::new();
    for expr in expressions {
        let output = match expr {
            Expr::Value(_) => Some(output_position(expr, columns)?),
            Expr::Identifier(ident) if column_of(expr, table).is_err() => {
                columns.iter().position(|c| c.name == identifier(ident))
            }
            _ => None,
        };
        let key = match output.map(|position| &columns[position].output) {
            Some(Output::Value(value)) => value.as_ref().clone(),
            Some(Output::Aggregate(..)) => {
                return unsupported("aggregate functions are not allowed in GROUP BY");
            }
            None => checked(expr, table, params)?,
        };
        if !keys.contains(&key) {
            keys.push(key);
        }
    }
    Ok(keys)
}

/// `SELECT DISTINCT` is a GROUP BY of every output.
fn distinct_groups(select: &Select, columns: &[OutputColumn]) -> Result<Vec<Expr>, Unsupported> {
    if !matches!(&select.group_by, GroupByExpr::Expressions(e, m) if e.is_empty() && m.is_empty()) {
        return unsupported("DISTINCT with GROUP BY is not supported yet");
    }
    let mut keys: Vec<Expr> = Vec::new();
    for column in columns {
        match &column.output {
            Output::Value(value) if !keys.contains(value) => keys.push(value.as_ref().clone()),
            Output::Value(_) => {}
            Output::Aggregate(..) => return unsupported("DISTINCT over aggregates is not supported yet"),
        }
    }
    Ok(keys)
}

/// Outside aggregates, outputs may use only GROUP BY keys (as Postgres requires).
fn check_grouped_outputs(columns: &[OutputColumn], group_by: &[Expr]) -> Result<(), Unsupported> {
    for column in columns {
        if let Output::Value(value) = &column.output
            && let Some(name) = ungrouped_column(value, group_by)
        {
            return unsupported(format!(
                "column {name} must appear in the GROUP BY clause or be used in an aggregate function"
            ));
        }
    }
    Ok(())
}

/// LIMIT and OFFSET: non-negative integer literals, or parameters whose values are.
fn limit_offset(query: &Query, values: &[serde_json::Value]) -> Result<(Option<u64>, u64), Unsupported> {
    let count = |expr: &Expr, what: &str| {
        match expr {
            Expr::Value(v) => match &v.value {
                Value::Number(n, _) => n.parse::<u64>().ok(),
                Value::Placeholder(p) => p
                    .strip_prefix('$')
                    .and_then(|n| n.parse::<usize>().ok())
                    .and_then(|n| values.get(n.checked_sub(1)?))
                    .and_then(serde_json::Value::as_u64),
                _ => None,
            },
            _ => None,
        }
        .ok_or_else(|| {
            Unsupported(format!(
                "{what} must be a non-negative integer, as a literal or a parameter"
            ))
        })
    };
    match &query.limit_clause {
        None => Ok((None, 0)),
        Some(LimitClause::LimitOffset {
            limit,
            offset,
            limit_by,
        }) if limit_by.is_empty() => {
            let limit = limit.as_ref().map(|l| count(l, "LIMIT")).transpose()?;
            let offset = offset.as_ref().map(|o| count(&o.value, "OFFSET")).transpose()?;
            Ok((limit, offset.unwrap_or(0)))
        }
        Some(_) => unsupported("only LIMIT n OFFSET m is supported"),
    }
}

/// ORDER BY keys. A key that is not an output (`ORDER BY ts`, `ORDER BY count(*)`) becomes a
/// hidden output, computed like the others and dropped from the answer.
fn order_by(
    query: &Query,
    columns: &mut Vec<OutputColumn>,
    visible: usize,
    distinct: bool,
    table: &TableSchema,
    params: usize,
) -> Result<Vec<SortKey>, Unsupported> {
    let Some(order_by) = &query.order_by else {
        return Ok(Vec::new());
    };
    let OrderByKind::Expressions(keys) = &order_by.kind else {
        return unsupported("ORDER BY ALL is not supported");
    };
    keys.iter()
        .map(|key| {
            let descending = match key.options.sort {
                None | Some(OrderBySort::Asc) => false,
                Some(OrderBySort::Desc) => true,
                Some(OrderBySort::Using(_)) => return unsupported("ORDER BY ... USING is not supported"),
            };
            let output = match output_position(&key.expr, &columns[..visible]) {
                Ok(position) => position,
                Err(refused) => match same_expression(&key.expr, &columns[..visible], table, params) {
                    Some(position) => position,
                    None if matches!(key.expr, Expr::Value(_)) => return Err(refused),
                    None if distinct => {
                        return unsupported(format!(
                            "ORDER BY {}: with SELECT DISTINCT, order by an output column",
                            key.expr
                        ));
                    }
                    None => hidden_output(&key.expr, table, columns, params)?,
                },
            };
            Ok(SortKey {
                output,
                descending,
                nulls_first: key.options.nulls_first.unwrap_or(descending),
            })
        })
        .collect()
}

/// ORDER BY refers to an output column by name, alias or 1-based position.
fn output_position(expr: &Expr, columns: &[OutputColumn]) -> Result<usize, Unsupported> {
    match expr {
        Expr::Value(v) => match &v.value {
            Value::Number(n, _) => match n.parse::<usize>() {
                Ok(p) if (1..=columns.len()).contains(&p) => Ok(p - 1),
                _ => unsupported(format!("ORDER BY position {n} is not in the select list")),
            },
            _ => unsupported(format!("cannot order by {expr}")),
        },
        Expr::Identifier(ident) => {
            let name = identifier(ident);
            columns.iter().position(|c| c.name == name).ok_or_else(|| {
                Unsupported(format!(
                    "ORDER BY {name}: order by an output column, alias or position"
                ))
            })
        }
        _ => unsupported(format!(
            "ORDER BY {expr}: order by an output column, alias or position"
        )),
    }
}

/// The position of the output computing `expr` (an aggregate or a scalar expression), added
/// as a hidden output when there is none.
pub(super) fn hidden_output(
    expr: &Expr,
    table: &TableSchema,
    columns: &mut Vec<OutputColumn>,
    params: usize,
) -> Result<usize, Unsupported> {
    let output = match expr {
        Expr::Function(function) if is_aggregate(function) => {
            Output::Aggregate(Box::new(aggregate(function, table, params)?))
        }
        _ => Output::Value(Box::new(checked(expr, table, params)?)),
    };
    Ok(match columns.iter().position(|c| c.output == output) {
        Some(existing) => existing,
        None => {
            columns.push(OutputColumn {
                name: default_name(expr),
                written: expr.to_string(),
                output,
            });
            columns.len() - 1
        }
    })
}

/// The output computing the same expression as `expr`, for `ORDER BY date_trunc('day', ts)`.
fn same_expression(
    expr: &Expr,
    columns: &[OutputColumn],
    table: &TableSchema,
    params: usize,
) -> Option<usize> {
    let wanted = Output::Value(Box::new(checked(expr, table, params).ok()?));
    columns.iter().position(|c| c.output == wanted)
}

/// The `key_column = value` terms of the top-level AND of the filter.
/// The values a term of the filter pins a partition-key column to.
#[derive(Debug, Clone)]
pub enum KeyValues {
    /// `col = v`, `col IN (v, ...)` or `col = ANY(ARRAY[v, ...])`: literals or parameters.
    Listed(Vec<Expr>),
    /// `col = ANY($n)`: the elements of an array parameter.
    AnyOf(Box<Expr>),
}

/// The terms of the filter's top-level AND that pin a partition-key column to listed values.
fn key_values(filter: &Expr, table: &TableSchema) -> Vec<(usize, KeyValues)> {
    let key_column = |expr: &Expr| column_of(expr, table).ok().filter(|c| table.is_partition_key(*c));
    let literal = |expr: &Expr| matches!(expr, Expr::Value(_));
    match filter {
        Expr::BinaryOp {
            left,
            op: BinaryOperator::And,
            right,
        } => {
            let mut terms = key_values(left, table);
            terms.extend(key_values(right, table));
            terms
        }
        Expr::Nested(inner) => key_values(inner, table),
        Expr::BinaryOp {
            left,
            op: BinaryOperator::Eq,
            right,
        } => match (key_column(left), key_column(right)) {
            (Some(column), None) if literal(right) => vec![(column, KeyValues::Listed(vec![*right.clone()]))],
            (None, Some(column)) if literal(left) => vec![(column, KeyValues::Listed(vec![*left.clone()]))],
            _ => Vec::new(),
        },
        Expr::In {
            expr,
            target: InTarget::List(list),
            negated: false,
            ..
        } if list.iter().all(literal) => key_column(expr)
            .map(|column| (column, KeyValues::Listed(list.clone())))
            .into_iter()
            .collect(),
        Expr::AnyOp {
            left,
            compare_op: BinaryOperator::Eq,
            right,
            ..
        } => {
            let values = match right.as_ref() {
                Expr::Array(array) if array.elem.iter().all(literal) => KeyValues::Listed(array.elem.clone()),
                Expr::Value(_) => KeyValues::AnyOf(right.clone()),
                _ => return Vec::new(),
            };
            key_column(left)
                .map(|column| (column, values))
                .into_iter()
                .collect()
        }
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests;
