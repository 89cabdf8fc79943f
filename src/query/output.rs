//! The outputs of a query: select-list items and the hidden outputs ORDER BY and HAVING add,
//! each a checked scalar expression or a checked aggregate call, named as Postgres names them.

use super::expr::{checked, column_expr, column_of, function_name, identifier, is_aggregate, plain_call};
use super::plan::{Aggregate, AggregateCall, Output, OutputColumn};
use super::unsupported::{Unsupported, unsupported};
use crate::schema::{ColumnType, TableSchema};
use sqlparser::ast::{
    DuplicateTreatment, Expr, Function, FunctionArg, FunctionArgExpr, Ident, Select, SelectItem,
};

pub(super) fn projection(
    select: &Select,
    table: &TableSchema,
    params: usize,
) -> Result<Vec<OutputColumn>, Unsupported> {
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

/// `expr` as an output: a checked aggregate call, or a checked scalar expression.
fn checked_output(expr: &Expr, table: &TableSchema, params: usize) -> Result<Output, Unsupported> {
    Ok(match expr {
        Expr::Function(function) if is_aggregate(function) => {
            Output::Aggregate(Box::new(aggregate(function, table, params)?))
        }
        _ => Output::Value(Box::new(checked(expr, table, params)?)),
    })
}

fn output_column(
    expr: &Expr,
    alias: Option<&Ident>,
    table: &TableSchema,
    params: usize,
) -> Result<OutputColumn, Unsupported> {
    let output = checked_output(expr, table, params)?;
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

/// The position of the output computing `expr` (an aggregate or a scalar expression), added
/// as a hidden output when there is none.
pub(super) fn hidden_output(
    expr: &Expr,
    table: &TableSchema,
    columns: &mut Vec<OutputColumn>,
    params: usize,
) -> Result<usize, Unsupported> {
    let output = checked_output(expr, table, params)?;
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
pub(super) fn same_expression(
    expr: &Expr,
    columns: &[OutputColumn],
    table: &TableSchema,
    params: usize,
) -> Option<usize> {
    let wanted = Output::Value(Box::new(checked(expr, table, params).ok()?));
    columns.iter().position(|c| c.output == wanted)
}
