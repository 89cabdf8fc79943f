//! A checked HAVING condition and its evaluation on merged groups, with SQL's three-valued
//! logic. Planning one from the query's text is [`super::having`]'s job.

use super::unsupported::Unsupported;
use super::value::{Cell, Decimal};
use sqlparser::ast::BinaryOperator;
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
