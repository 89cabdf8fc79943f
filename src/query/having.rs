//! HAVING: planning the condition on merged groups that [`super::condition`] evaluates after
//! the merge. Aggregates and group-key expressions it uses that are not selected become hidden
//! outputs, computed and merged like the others and dropped from the answer.

use super::condition::{Condition, Operand};
use super::expr::{identifier, is_comparison};
use super::output::hidden_output;
use super::plan::OutputColumn;
use super::unsupported::Unsupported;
use super::value::Cell;
use crate::schema::TableSchema;
use sqlparser::ast::{BinaryOperator, Expr, UnaryOperator, Value};

/// Checks `expr`, appending the aggregates and columns it needs to `columns` when not there.
pub fn plan_having(
    expr: &Expr,
    table: &TableSchema,
    columns: &mut Vec<OutputColumn>,
    params: usize,
) -> Result<Condition, Unsupported> {
    let recurse = |e: &Expr, columns: &mut Vec<OutputColumn>| plan_having(e, table, columns, params);
    Ok(match expr {
        Expr::Nested(inner) => recurse(inner, columns)?,
        Expr::BinaryOp {
            left,
            op: BinaryOperator::And,
            right,
        } => Condition::And(
            Box::new(recurse(left, columns)?),
            Box::new(recurse(right, columns)?),
        ),
        Expr::BinaryOp {
            left,
            op: BinaryOperator::Or,
            right,
        } => Condition::Or(
            Box::new(recurse(left, columns)?),
            Box::new(recurse(right, columns)?),
        ),
        Expr::UnaryOp {
            op: UnaryOperator::Not,
            expr,
        } => Condition::Not(Box::new(recurse(expr, columns)?)),
        Expr::IsNull(inner) => Condition::IsNull(operand(inner, table, columns, params)?, false),
        Expr::IsNotNull(inner) => Condition::IsNull(operand(inner, table, columns, params)?, true),
        Expr::BinaryOp { left, op, right } if is_comparison(op) => Condition::Compare(
            operand(left, table, columns, params)?,
            op.clone(),
            operand(right, table, columns, params)?,
        ),
        other => return Err(Unsupported(format!("HAVING {other} is not supported"))),
    })
}

fn operand(
    expr: &Expr,
    table: &TableSchema,
    columns: &mut Vec<OutputColumn>,
    params: usize,
) -> Result<Operand, Unsupported> {
    match expr {
        Expr::Nested(inner) => operand(inner, table, columns, params),
        Expr::Identifier(ident)
            if let Some(index) = columns.iter().position(|c| c.name == identifier(ident)) =>
        {
            Ok(Operand::Output(index))
        }
        Expr::UnaryOp {
            op: UnaryOperator::Minus,
            expr: inner,
        } if matches!(inner.as_ref(), Expr::Value(_)) => match operand(inner, table, columns, params)? {
            Operand::Literal(Cell::Int(n)) => Ok(Operand::Literal(Cell::Int(-n))),
            Operand::Literal(Cell::Float(x)) => Ok(Operand::Literal(Cell::Float(-x))),
            _ => Err(Unsupported(format!("HAVING {expr}: only numbers can be negated"))),
        },
        Expr::Value(value) => literal(&value.value, params),
        other => Ok(Operand::Output(hidden_output(other, table, columns, params)?)),
    }
}

fn literal(value: &Value, params: usize) -> Result<Operand, Unsupported> {
    Ok(Operand::Literal(match value {
        Value::Number(n, _) => match n.parse::<i64>() {
            Ok(i) => Cell::Int(i),
            Err(_) => Cell::Float(
                n.parse()
                    .map_err(|_| Unsupported(format!("number {n} is not supported")))?,
            ),
        },
        Value::SingleQuotedString(s) => Cell::Text(s.clone()),
        Value::Boolean(b) => Cell::Bool(*b),
        Value::Null => Cell::Null,
        Value::Placeholder(p) => {
            return match p.strip_prefix('$').and_then(|n| n.parse::<usize>().ok()) {
                Some(n) if (1..=params).contains(&n) => Ok(Operand::Param(n)),
                _ => Err(Unsupported(format!(
                    "parameter {p} has no value ({params} given)"
                ))),
            };
        }
        other => return Err(Unsupported(format!("literal {other} is not supported in HAVING"))),
    }))
}
