//! HAVING: a condition on merged groups, evaluated by shardgate after the merge with SQL's
//! three-valued logic. Aggregates and group-key expressions it uses that are not selected
//! become hidden outputs, computed and merged like the others and dropped from the answer.

use super::expr::{identifier, is_comparison};
use super::parse::{OutputColumn, Unsupported, hidden_output};
use super::value::{Cell, Decimal};
use crate::schema::TableSchema;
use sqlparser::ast::{BinaryOperator, Expr, UnaryOperator, Value};
use std::cmp::Ordering;

/// A checked HAVING condition.
#[derive(Debug, Clone)]
pub enum Condition {
    /// Both hold.
    And(Box<Condition>, Box<Condition>),
    /// Either holds.
    Or(Box<Condition>, Box<Condition>),
    /// The negation.
    Not(Box<Condition>),
    /// A comparison of two operands.
    Compare(Operand, BinaryOperator, Operand),
    /// `IS NULL` (or `IS NOT NULL` when the flag is set).
    IsNull(Operand, bool),
}

/// A value in a HAVING condition.
#[derive(Debug, Clone)]
pub enum Operand {
    /// An output column of the group (maybe hidden).
    Output(usize),
    /// A literal.
    Literal(Cell),
    /// Parameter `$n` (1-based).
    Param(usize),
}

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

impl Condition {
    /// The outputs the condition orders (`<`, `<=`, `>`, `>=`), whose values must compare as
    /// Postgres compares them.
    pub fn ordered_outputs(&self) -> Vec<usize> {
        match self {
            Condition::And(a, b) | Condition::Or(a, b) => {
                let mut outputs = a.ordered_outputs();
                outputs.extend(b.ordered_outputs());
                outputs
            }
            Condition::Not(inner) => inner.ordered_outputs(),
            Condition::IsNull(..) => Vec::new(),
            Condition::Compare(_, BinaryOperator::Eq | BinaryOperator::NotEq, _) => Vec::new(),
            Condition::Compare(left, _, right) => [left, right]
                .into_iter()
                .filter_map(|operand| match operand {
                    Operand::Output(index) => Some(*index),
                    _ => None,
                })
                .collect(),
        }
    }

    /// Whether the group `row` is kept: the condition is true (not false, not unknown).
    pub fn keeps(&self, row: &[Cell], params: &[serde_json::Value]) -> Result<bool, Unsupported> {
        Ok(self.evaluate(row, params)? == Some(true))
    }

    fn evaluate(&self, row: &[Cell], params: &[serde_json::Value]) -> Result<Option<bool>, Unsupported> {
        Ok(match self {
            Condition::And(a, b) => match (a.evaluate(row, params)?, b.evaluate(row, params)?) {
                (Some(false), _) | (_, Some(false)) => Some(false),
                (Some(true), Some(true)) => Some(true),
                _ => None,
            },
            Condition::Or(a, b) => match (a.evaluate(row, params)?, b.evaluate(row, params)?) {
                (Some(true), _) | (_, Some(true)) => Some(true),
                (Some(false), Some(false)) => Some(false),
                _ => None,
            },
            Condition::Not(inner) => inner.evaluate(row, params)?.map(|b| !b),
            Condition::IsNull(operand, negated) => {
                Some((value(operand, row, params) == Cell::Null) != *negated)
            }
            Condition::Compare(left, op, right) => {
                let (a, b) = (value(left, row, params), value(right, row, params));
                if a == Cell::Null || b == Cell::Null {
                    return Ok(None);
                }
                let ordering = compare(&a, &b).ok_or_else(|| {
                    Unsupported(format!(
                        "HAVING cannot compare {} with {}",
                        a.to_json(),
                        b.to_json()
                    ))
                })?;
                Some(match op {
                    BinaryOperator::Eq => ordering == Ordering::Equal,
                    BinaryOperator::NotEq => ordering != Ordering::Equal,
                    BinaryOperator::Lt => ordering == Ordering::Less,
                    BinaryOperator::LtEq => ordering != Ordering::Greater,
                    BinaryOperator::Gt => ordering == Ordering::Greater,
                    _ => ordering != Ordering::Less,
                })
            }
        })
    }
}

fn value(operand: &Operand, row: &[Cell], params: &[serde_json::Value]) -> Cell {
    match operand {
        Operand::Output(index) => row[*index].clone(),
        Operand::Literal(cell) => cell.clone(),
        Operand::Param(n) => match &params[n - 1] {
            serde_json::Value::Number(x) => x
                .as_i64()
                .map_or_else(|| Cell::Float(x.as_f64().unwrap_or(f64::NAN)), Cell::Int),
            serde_json::Value::String(s) => Cell::Text(s.clone()),
            serde_json::Value::Bool(b) => Cell::Bool(*b),
            _ => Cell::Null,
        },
    }
}

/// Orders two values as Postgres compares them, across numeric types; `None` for values that
/// do not compare.
fn compare(a: &Cell, b: &Cell) -> Option<Ordering> {
    if let (Some(x), Some(y)) = (exact_number(a), exact_number(b)) {
        return Some(x.compare(&y));
    }
    if let (Cell::Float(_), Cell::Float(_)) = (a, b) {
        return Some(a.compare(b, false, false));
    }
    if let (Some(x), Some(y)) = (float_number(a), float_number(b)) {
        return x.partial_cmp(&y);
    }
    (std::mem::discriminant(a) == std::mem::discriminant(b)).then(|| a.compare(b, false, false))
}

fn exact_number(cell: &Cell) -> Option<Decimal> {
    match cell {
        Cell::Int(n) => Some(Decimal::integer(i128::from(*n))),
        Cell::Numeric(d) => Some(*d),
        _ => None,
    }
}

fn float_number(cell: &Cell) -> Option<f64> {
    match cell {
        Cell::Float(x) => Some(*x),
        other => exact_number(other).map(Decimal::to_f64),
    }
}
