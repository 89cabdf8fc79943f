//! Reporting SQL → a [`QueryPlan`]: parsed with `sqlparser`, checked against the declared
//! tables, and reduced to the constructs shardgate can run on every shard and merge exactly.
//! Anything else is refused with the construct named (invariant 8: nothing from the user's text
//! reaches a shard except through the checked syntax tree).

use super::expr::{checked, column_of, identifier, ungrouped_column};
use super::having::plan_having;
use super::output::{hidden_output, projection, same_expression};
use super::plan::{KeyValues, Output, OutputColumn, QueryPlan, SortKey, counted_values};
use super::unsupported::{Unsupported, unsupported};
use crate::schema::{TableId, TableSchema, Tables};
use sqlparser::ast::{
    BinaryOperator, Distinct, Expr, GroupByExpr, InTarget, LimitClause, ObjectNamePart, OrderByKind,
    OrderBySort, Query, Select, SetExpr, Statement, TableFactor, Value,
};
use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::parser::Parser;
use sqlparser::tokenizer::{Token, Tokenizer};
use std::sync::Arc;

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
    let distinct_columns = counted_values(&columns);
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

/// How many parameters `sql` takes: its highest `$n` outside strings and comments (0 when it
/// does not tokenize; planning it then says why).
pub fn parameter_count(sql: &str) -> usize {
    Tokenizer::new(&PostgreSqlDialect {}, sql)
        .tokenize()
        .unwrap_or_default()
        .iter()
        .filter_map(|token| match token {
            Token::Placeholder(p) => p.strip_prefix('$')?.parse::<usize>().ok(),
            _ => None,
        })
        .max()
        .unwrap_or(0)
}

/// Most different values one query's `count(DISTINCT ...)` may count: each is a grouping set
/// of the shard statement, told apart by one bit of `GROUPING(...)` (which takes at most 31).
const MAX_COUNTED_VALUES: usize = 16;

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
        return Err(Unsupported::unknown_table(name));
    };
    let table_name = identifier(ident);
    match tables.lookup(&table_name) {
        Some((id, table)) => Ok((id, table.clone())),
        None => Err(Unsupported::unknown_table(table_name)),
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
