//! Scalar expressions of reporting queries (WHERE, select list, GROUP BY): checked against the
//! table and an allow-list, then normalised so that the copy shards run names only declared
//! columns, quoted, and two spellings of one expression compare equal.

use super::unsupported::{Unsupported, unsupported};
use crate::schema::TableSchema;
use sqlparser::ast::{
    BinaryOperator, CastKind, DataType, Expr, Function, FunctionArg, FunctionArgExpr, FunctionArgumentList,
    FunctionArguments, Ident, InTarget, ObjectName, TimezoneInfo, UnaryOperator, Value,
};

/// Scalar functions a query may call: deterministic, and the same on every shard (time
/// functions read the query's pinned time zone).
pub const SCALAR_FUNCTIONS: &[&str] = &[
    "lower",
    "upper",
    "length",
    "abs",
    "coalesce",
    "nullif",
    "greatest",
    "least",
    "round",
    "floor",
    "ceil",
    "trunc",
    "date_trunc",
    "date_part",
    "left",
    "right",
    "replace",
    "split_part",
    "btrim",
    "ltrim",
    "rtrim",
    "md5",
    "jsonb_typeof",
    "jsonb_array_length",
    "jsonb_extract_path",
    "jsonb_extract_path_text",
];

/// Types a cast may produce (as sqlparser prints them, lower-cased; `numeric(p, s)` too).
const CAST_TYPES: &[&str] = &[
    "text",
    "varchar",
    "date",
    "timestamp",
    "timestamptz",
    "timestamp with time zone",
    "bigint",
    "int8",
    "integer",
    "int",
    "int4",
    "smallint",
    "int2",
    "numeric",
    "decimal",
    "double precision",
    "float8",
    "boolean",
    "bool",
    "uuid",
    "jsonb",
];

/// The parameter number standing for the query's one instant: `now()` and
/// `current_timestamp` become this parameter, so every shard compares with the same time.
pub const NOW_PARAMETER: usize = 0;

/// An identifier as Postgres folds it: unquoted names are lower-cased.
pub fn identifier(ident: &Ident) -> String {
    match ident.quote_style {
        Some(_) => ident.value.clone(),
        None => ident.value.to_lowercase(),
    }
}

/// The declared column `expr` names (`column` or `table.column`).
pub fn column_of(expr: &Expr, table: &TableSchema) -> Result<usize, Unsupported> {
    let ident = match expr {
        Expr::Identifier(ident) => ident,
        Expr::CompoundIdentifier(parts) => match parts.as_slice() {
            [qualifier, ident] if identifier(qualifier) == table.name => ident,
            _ => return unsupported(format!("unknown column {expr}")),
        },
        _ => return unsupported(format!("{expr} is not a column")),
    };
    let name = identifier(ident);
    table
        .column_index(&name)
        .ok_or_else(|| Unsupported(format!("unknown column {name} in table {}", table.name)))
}

/// The normalised reference to declared column `index`: its name, quoted.
pub fn column_expr(table: &TableSchema, index: usize) -> Expr {
    Expr::Identifier(Ident::with_quote('"', table.columns[index].name.as_str()))
}

/// Checks `expr` (columns of the table, literals, `$1..$params`, allowed operators and
/// functions) and returns its normalised copy.
pub fn checked(expr: &Expr, table: &TableSchema, params: usize) -> Result<Expr, Unsupported> {
    let mut copy = expr.clone();
    normalise(&mut copy, table, params)?;
    Ok(copy)
}

fn normalise(expr: &mut Expr, table: &TableSchema, params: usize) -> Result<(), Unsupported> {
    match expr {
        Expr::Identifier(_) | Expr::CompoundIdentifier(_) => {
            *expr = column_expr(table, column_of(expr, table)?);
            return Ok(());
        }
        Expr::Value(value) => return check_value(&value.value, params),
        Expr::Nested(_) | Expr::IsNull(_) | Expr::IsNotNull(_) | Expr::Between { .. } => {}
        Expr::IsTrue(_) | Expr::IsFalse(_) | Expr::IsNotTrue(_) | Expr::IsNotFalse(_) => {}
        Expr::UnaryOp { op, .. } => {
            if !matches!(
                op,
                UnaryOperator::Not | UnaryOperator::Minus | UnaryOperator::Plus
            ) {
                return unsupported(format!("operator {op} is not supported"));
            }
        }
        Expr::BinaryOp { op, .. } => {
            if !is_allowed_operator(op) {
                return unsupported(format!("operator {op} is not supported"));
            }
        }
        Expr::AnyOp { compare_op, .. } | Expr::AllOp { compare_op, .. } => {
            if !is_comparison(compare_op) {
                return unsupported(format!("operator {compare_op} ANY/ALL is not supported"));
            }
        }
        Expr::Array(_) => {}
        Expr::In {
            target: InTarget::List(_),
            ..
        } => {}
        Expr::In { .. } => return unsupported("IN with a subquery is not supported"),
        Expr::Like {
            escape_char: None,
            any: false,
            ..
        }
        | Expr::ILike {
            escape_char: None,
            any: false,
            ..
        } => {}
        Expr::Function(function) if is_now(function) => {
            *expr = now_parameter();
            return Ok(());
        }
        Expr::Cast {
            kind: CastKind::Cast | CastKind::DoubleColon,
            data_type,
            format: None,
            ..
        } => {
            let target = data_type.to_string().to_lowercase();
            if !CAST_TYPES.contains(&target.as_str()) && !target.starts_with("numeric(") {
                return unsupported(format!(
                    "cast to {target} is not supported (allowed: {})",
                    CAST_TYPES.join(", ")
                ));
            }
        }
        Expr::Case { .. } | Expr::Extract { .. } => {}
        Expr::Interval(interval) => {
            let literal = matches!(interval.value.as_ref(), Expr::Value(v) if matches!(v.value, Value::SingleQuotedString(_)));
            if !literal {
                return unsupported(format!("{expr}: an interval must be a quoted literal"));
            }
            return Ok(());
        }
        Expr::Function(function) => {
            let name = function_name(function);
            if is_aggregate(function) {
                return unsupported(format!(
                    "aggregate {name}(...) is allowed only as a whole output or HAVING operand"
                ));
            }
            if !SCALAR_FUNCTIONS.contains(&name.as_str()) {
                return unsupported(format!(
                    "function {name} is not supported (allowed: {})",
                    SCALAR_FUNCTIONS.join(", ")
                ));
            }
            let list = plain_call(function, &name)?;
            if function.filter.is_some() {
                return unsupported(format!("{name}: FILTER applies to aggregates only"));
            }
            if list.duplicate_treatment.is_some() {
                return unsupported(format!("{name}: DISTINCT is not supported"));
            }
            if let Some(other) = list
                .args
                .iter()
                .find(|arg| !matches!(arg, FunctionArg::Unnamed(FunctionArgExpr::Expr(_))))
            {
                return unsupported(format!("{name}: argument {other} is not supported"));
            }
            function.name = ObjectName::from(vec![Ident::new(name)]);
        }
        Expr::Subquery(_) | Expr::Exists { .. } => return unsupported("subqueries are not supported"),
        other => return unsupported(format!("expression {other} is not supported")),
    }
    children(expr)
        .into_iter()
        .try_for_each(|child| normalise(child, table, params))
}

/// The aggregate functions shardgate merges.
const AGGREGATES: &[&str] = &["count", "sum", "avg", "min", "max", "bool_and", "bool_or"];

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

/// `now()` or `current_timestamp`: the query's instant.
fn is_now(function: &Function) -> bool {
    let name = function_name(function);
    match &function.args {
        FunctionArguments::None => name == "current_timestamp",
        FunctionArguments::List(list) => name == "now" && list.args.is_empty(),
        FunctionArguments::Subquery(_) => false,
    }
}

/// `$0::timestamptz`, renumbered like any parameter and bound to the query's instant.
fn now_parameter() -> Expr {
    Expr::Cast {
        kind: CastKind::DoubleColon,
        expr: Box::new(Expr::Value(
            Value::Placeholder(format!("${NOW_PARAMETER}")).into(),
        )),
        data_type: DataType::Timestamp(None, TimezoneInfo::Tz),
        format: None,
    }
}

/// The operands of a checked expression.
fn children(expr: &mut Expr) -> Vec<&mut Expr> {
    match expr {
        Expr::Nested(inner)
        | Expr::IsNull(inner)
        | Expr::IsNotNull(inner)
        | Expr::IsTrue(inner)
        | Expr::IsFalse(inner)
        | Expr::IsNotTrue(inner)
        | Expr::IsNotFalse(inner)
        | Expr::UnaryOp { expr: inner, .. } => vec![inner.as_mut()],
        Expr::BinaryOp { left, right, .. }
        | Expr::AnyOp { left, right, .. }
        | Expr::AllOp { left, right, .. } => vec![left.as_mut(), right.as_mut()],
        Expr::Array(array) => array.elem.iter_mut().collect(),
        Expr::Between { expr, low, high, .. } => vec![expr.as_mut(), low.as_mut(), high.as_mut()],
        Expr::In {
            expr,
            target: InTarget::List(list),
            ..
        } => std::iter::once(expr.as_mut()).chain(list.iter_mut()).collect(),
        Expr::Like { expr, pattern, .. } | Expr::ILike { expr, pattern, .. } => {
            vec![expr.as_mut(), pattern.as_mut()]
        }
        Expr::Cast { expr, .. } | Expr::Extract { expr, .. } => vec![expr.as_mut()],
        Expr::Case {
            operand,
            conditions,
            else_result,
            ..
        } => operand
            .iter_mut()
            .map(|e| e.as_mut())
            .chain(
                conditions
                    .iter_mut()
                    .flat_map(|c| [&mut c.condition, &mut c.result]),
            )
            .chain(else_result.iter_mut().map(|e| e.as_mut()))
            .collect(),
        Expr::Function(function) => match &mut function.args {
            FunctionArguments::List(list) => list
                .args
                .iter_mut()
                .filter_map(|arg| match arg {
                    FunctionArg::Unnamed(FunctionArgExpr::Expr(e)) => Some(e),
                    _ => None,
                })
                .collect(),
            _ => Vec::new(),
        },
        _ => Vec::new(),
    }
}

/// Calls `visit` on `expr` and each of its operands, depth first.
fn walk(expr: &mut Expr, visit: &mut dyn FnMut(&mut Expr)) {
    visit(expr);
    for child in children(expr) {
        walk(child, visit);
    }
}

/// Whether a checked expression holds only group keys, literals and parameters outside
/// aggregates, as Postgres requires of a grouped query's outputs; else the first column that
/// is neither grouped nor inside a grouped expression.
pub fn ungrouped_column(expr: &Expr, group_by: &[Expr]) -> Option<String> {
    if group_by.contains(expr) {
        return None;
    }
    if let Expr::Identifier(ident) = expr {
        return Some(ident.value.clone());
    }
    let mut copy = expr.clone();
    children(&mut copy)
        .into_iter()
        .find_map(|child| ungrouped_column(child, group_by))
}

/// Renumbers the `$n` of checked expressions to `$1..` in order of first use, so a shard
/// statement binds only the parameters it uses.
#[derive(Debug, Default)]
pub struct Parameters {
    /// The original numbers of the parameters used, in their new order.
    pub used: Vec<usize>,
}

impl Parameters {
    /// `expr` as SQL, its parameters renumbered.
    pub fn render(&mut self, expr: &Expr) -> String {
        let mut copy = expr.clone();
        walk(&mut copy, &mut |node| {
            if let Expr::Value(value) = node
                && let Value::Placeholder(name) = &mut value.value
                && let Some(n) = name.strip_prefix('$').and_then(|n| n.parse::<usize>().ok())
            {
                let position = self.used.iter().position(|u| *u == n).unwrap_or_else(|| {
                    self.used.push(n);
                    self.used.len() - 1
                });
                *name = format!("${}", position + 1);
            }
        });
        copy.to_string()
    }
}

/// Whether `op` compares two values (`= <> < <= > >=`).
pub fn is_comparison(op: &BinaryOperator) -> bool {
    use BinaryOperator::*;
    matches!(op, Eq | NotEq | Lt | LtEq | Gt | GtEq)
}

/// Arithmetic, comparison, logic, concatenation and the jsonb operators: `->`, `->>` (a key or
/// an index), `#>`, `#>>` (a path), `@>`, `<@` (containment), `?`, `?|`, `?&` (keys).
fn is_allowed_operator(op: &BinaryOperator) -> bool {
    use BinaryOperator::*;
    matches!(
        op,
        Eq | NotEq
            | Lt
            | LtEq
            | Gt
            | GtEq
            | And
            | Or
            | Plus
            | Minus
            | Multiply
            | Divide
            | Modulo
            | StringConcat
            | Arrow
            | LongArrow
            | HashArrow
            | HashLongArrow
            | AtArrow
            | ArrowAt
            | Question
            | QuestionAnd
            | QuestionPipe
    )
}

fn check_value(value: &Value, params: usize) -> Result<(), Unsupported> {
    match value {
        Value::Number(..) | Value::SingleQuotedString(_) | Value::Boolean(_) | Value::Null => Ok(()),
        Value::Placeholder(p) => match p.strip_prefix('$').and_then(|n| n.parse::<usize>().ok()) {
            Some(n) if (1..=params).contains(&n) => Ok(()),
            _ => unsupported(format!("parameter {p} has no value ({params} given)")),
        },
        other => unsupported(format!("literal {other} is not supported")),
    }
}
