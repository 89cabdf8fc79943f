//! What a client's SQL asks for: the few statements the listener carries out, told apart by
//! their leading words (session commands) or parsed (`COPY`), and everything else named so it
//! can be refused as `0A000`.

use super::errors::refused;
use crate::schema::TableSchema;
use crate::schema::decode::copy::{CopyFormat, CopyKind};
use pgwire::error::PgWireResult;
use sqlparser::ast::{
    CopyLegacyCsvOption, CopyLegacyOption, CopyOption, CopySource, CopyTarget, ObjectNamePart, TableFactor,
    Visit, Visitor,
};
use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::parser::Parser;
use std::ops::ControlFlow;

/// One statement of a query string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Statement {
    /// `COPY table [(columns)] FROM STDIN [options]`.
    CopyFrom(CopyFrom),
    /// `COPY (query) TO STDOUT [options]` or `COPY table [(columns)] TO STDOUT [options]`.
    CopyTo(CopyTo),
    /// `INSERT INTO table [(columns)] VALUES (...), ... [ON CONFLICT DO NOTHING]`.
    Insert(Insert),
    /// `BEGIN` or `START TRANSACTION`.
    Begin,
    /// `COMMIT` or `END`.
    Commit,
    /// `ROLLBACK` or `ABORT`.
    Rollback,
    /// `SET [SESSION|LOCAL] name {TO|=} value`, `SET TIME ZONE value`.
    Set { name: String, value: String },
    /// `RESET name` or `RESET ALL` (name `all`).
    Reset { name: String },
    /// `SHOW name`.
    Show { name: String },
    /// `DISCARD ALL` and the like.
    Discard,
    /// `DEALLOCATE [PREPARE] name` or `DEALLOCATE ALL`, as psycopg's statement cache and
    /// poolers send them: `all` tells which, for the answer's tag.
    Deallocate {
        /// Whether every prepared statement is meant.
        all: bool,
    },
    /// `SELECT` of one integer literal, as pools and drivers send to check a connection.
    SelectInteger {
        /// The integer.
        value: i64,
        /// The result column's name: its `AS` label, else `?column?`.
        label: String,
    },
    /// `SELECT version()`.
    SelectVersion,
    /// Any other `SELECT`: a reporting query over the shards, as written.
    Select(String),
    /// A query that reads only the system catalogs and session functions (what psql's `\d`,
    /// JDBC's `DatabaseMetaData` and BI tools ask), as written: the catalog database answers it.
    Catalog(String),
    /// A statement shardgate does not carry out, named for the error.
    Unsupported(String),
    /// A statement shardgate does not carry out here, named, with where to go instead.
    Redirected {
        /// The construct.
        what: &'static str,
        /// What to use instead.
        hint: &'static str,
    },
}

/// A `COPY ... FROM STDIN`, with its target and how its data is spelled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopyFrom {
    /// The table, as written (unquoted, lower-cased unless quoted).
    pub table: String,
    /// The column list; empty for all columns in declared order.
    pub columns: Vec<String>,
    /// Text or CSV, with their options.
    pub format: CopyFormat,
    /// Whether the first record is a header to skip (`HEADER`).
    pub header: bool,
}

/// A `COPY ... TO STDOUT`: the rows of a reporting query, written in text or CSV form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopyTo {
    /// The query whose rows are written (a table's are `SELECT [columns | *] FROM table`).
    pub query: String,
    /// Text or CSV, with their options.
    pub format: CopyFormat,
    /// Whether a header line of column names comes first (`HEADER`, CSV only).
    pub header: bool,
}

/// An `INSERT ... VALUES`, its values as written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Insert {
    /// The table, as written (unquoted, lower-cased unless quoted).
    pub table: String,
    /// The column list; empty for all columns in declared order.
    pub columns: Vec<String>,
    /// The rows, each a value per column.
    pub rows: Vec<Vec<InsertValue>>,
    /// What `RETURNING` asks for; empty without it.
    pub returning: Vec<ReturnedColumn>,
}

/// One item of `RETURNING`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReturnedColumn {
    /// `*`: every declared column, in order.
    All,
    /// A column, under `label` when it has an `AS`.
    Column {
        /// The column's name.
        name: String,
        /// The name the result gives it, when not the column's.
        label: Option<String>,
    },
}

/// One value of an `INSERT`'s row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InsertValue {
    /// `DEFAULT`.
    Default,
    /// `NULL`.
    Null,
    /// A literal, in Postgres's text form (a cast of it is read as its column's type, as
    /// Postgres's assignment rules read it).
    Literal(String),
    /// `$n`, zero-based.
    Parameter(usize),
}

impl Insert {
    /// How many parameters the statement takes: its highest `$n`.
    pub fn parameter_count(&self) -> usize {
        self.rows
            .iter()
            .flatten()
            .filter_map(|value| match value {
                InsertValue::Parameter(i) => Some(i + 1),
                _ => None,
            })
            .max()
            .unwrap_or(0)
    }
}

/// Splits a simple query string into its statements: at semicolons outside quotes, dollar
/// quotes and comments; empty statements are left out.
pub fn split(query: &str) -> Vec<&str> {
    let bytes = query.as_bytes();
    let (mut statements, mut start, mut i) = (Vec::new(), 0, 0);
    while i < bytes.len() {
        match bytes[i] {
            quote @ (b'\'' | b'"') => {
                i += 1;
                while i < bytes.len() && bytes[i] != quote {
                    i += 1;
                }
            }
            b'-' if bytes.get(i + 1) == Some(&b'-') => {
                while i < bytes.len() && bytes[i] != b'\n' {
                    i += 1;
                }
            }
            b'/' if bytes.get(i + 1) == Some(&b'*') => {
                i += 2;
                while i + 1 < bytes.len() && !(bytes[i] == b'*' && bytes[i + 1] == b'/') {
                    i += 1;
                }
                i += 1;
            }
            b'$' => {
                let tag_end = bytes[i + 1..].iter().position(|b| *b == b'$');
                if let Some(len) = tag_end.filter(|&len| {
                    bytes[i + 1..i + 1 + len]
                        .iter()
                        .all(|b| b.is_ascii_alphanumeric() || *b == b'_')
                }) {
                    let tag = &query[i..i + len + 2];
                    i += len + 2;
                    match query[i..].find(tag) {
                        Some(at) => i += at + tag.len() - 1,
                        None => i = bytes.len(),
                    }
                }
            }
            b';' => {
                statements.push(&query[start..i]);
                start = i + 1;
            }
            _ => {}
        }
        i += 1;
    }
    statements.push(&query[start.min(query.len())..]);
    statements.into_iter().filter(|s| !is_blank(s)).collect()
}

/// Whether `sql` holds nothing but whitespace and comments.
fn is_blank(sql: &str) -> bool {
    let mut rest = sql.trim_start();
    loop {
        if let Some(after) = rest.strip_prefix("--") {
            rest = after.split_once('\n').map_or("", |(_, tail)| tail).trim_start();
        } else if let Some(after) = rest.strip_prefix("/*") {
            rest = after.split_once("*/").map_or("", |(_, tail)| tail).trim_start();
        } else {
            return rest.is_empty();
        }
    }
}

/// What one statement asks for.
pub fn classify(sql: &str) -> Result<Statement, String> {
    let words: Vec<String> = sql
        .split(|c: char| c.is_whitespace() || c == '(' || c == ';')
        .filter(|w| !w.is_empty())
        .take(4)
        .map(str::to_ascii_lowercase)
        .collect();
    let word = |i: usize| words.get(i).map(String::as_str).unwrap_or("");
    Ok(match word(0) {
        "begin" | "start" => Statement::Begin,
        "commit" | "end" => Statement::Commit,
        "rollback" | "abort" => Statement::Rollback,
        "set" => set(sql)?,
        "reset" => Statement::Reset {
            name: word(1).to_string(),
        },
        "show" => Statement::Show {
            name: sql.trim().trim_end_matches(';')[4..]
                .trim()
                .trim_matches('"')
                .to_ascii_lowercase(),
        },
        "discard" => Statement::Discard,
        "deallocate" => Statement::Deallocate {
            all: word(1) == "all" || (word(1) == "prepare" && word(2) == "all"),
        },
        "select" => select(sql),
        "with" | "table" | "values" if reads_only_catalogs(sql) => Statement::Catalog(sql.to_string()),
        "copy" => copy(sql)?,
        "insert" => insert(sql)?,
        "" => Statement::Unsupported("an empty statement".into()),
        other => Statement::Unsupported(other.to_ascii_uppercase()),
    })
}

/// Whether `sql` is one query whose every table is a system catalog (`pg_catalog`,
/// `information_schema`, or an unqualified `pg_*` name) or a name its `WITH` binds, and which
/// otherwise reads only set-returning functions (`generate_series`, `unnest`), including no
/// table at all (`SELECT current_schema()`). A query the parser cannot read counts when it
/// names `pg_catalog.` or `information_schema.`.
fn reads_only_catalogs(sql: &str) -> bool {
    match Parser::parse_sql(&PostgreSqlDialect {}, sql) {
        Ok(statements) => {
            let [sqlparser::ast::Statement::Query(_)] = statements.as_slice() else {
                return false;
            };
            let mut tables = CatalogTables::default();
            statements.visit(&mut tables).is_continue()
        }
        Err(_) => {
            let lower = sql.to_ascii_lowercase();
            lower.contains("pg_catalog.") || lower.contains("information_schema.")
        }
    }
}

/// Walks a query's tables, stopping at the first that is not a system catalog.
#[derive(Default)]
struct CatalogTables {
    /// Names the query's `WITH` clauses bind.
    bound: Vec<String>,
}

impl Visitor for CatalogTables {
    type Break = ();

    fn pre_visit_query(&mut self, query: &sqlparser::ast::Query) -> ControlFlow<()> {
        if let Some(with) = &query.with {
            let names = with
                .cte_tables
                .iter()
                .map(|cte| cte.alias.name.value.to_ascii_lowercase());
            self.bound.extend(names);
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_table_factor(&mut self, table: &TableFactor) -> ControlFlow<()> {
        let TableFactor::Table { name, args: None, .. } = table else {
            return ControlFlow::Continue(());
        };
        let parts: Vec<String> = name
            .0
            .iter()
            .map(|part| match part {
                ObjectNamePart::Identifier(ident) => ident.value.to_ascii_lowercase(),
                other => other.to_string().to_ascii_lowercase(),
            })
            .collect();
        let catalog = match parts.as_slice() {
            [schema, _] => schema == "pg_catalog" || schema == "information_schema",
            [name] => name.starts_with("pg_") || self.bound.contains(name),
            _ => false,
        };
        if catalog {
            ControlFlow::Continue(())
        } else {
            ControlFlow::Break(())
        }
    }
}

/// `SET` of one parameter; `SET TIME ZONE x` is `SET timezone = x`.
fn set(sql: &str) -> Result<Statement, String> {
    let rest = sql.trim().trim_end_matches(';').trim();
    let rest = rest[3..].trim_start();
    let lower = rest.to_ascii_lowercase();
    let rest = ["session ", "local "]
        .iter()
        .find(|scope| lower.starts_with(*scope))
        .map_or(rest, |scope| rest[scope.len()..].trim_start());
    let lower = rest.to_ascii_lowercase();
    if let Some(value) = lower.strip_prefix("time zone") {
        return Ok(Statement::Set {
            name: "timezone".into(),
            value: unquote(rest[rest.len() - value.len()..].trim()),
        });
    }
    let split_at = rest
        .find(|c: char| c == '=' || c.is_whitespace())
        .ok_or_else(|| format!("syntax error in SET: {sql}"))?;
    let name = rest[..split_at].trim().trim_matches('"').to_ascii_lowercase();
    let value = rest[split_at..].trim_start();
    let value = value
        .strip_prefix('=')
        .or_else(|| value.strip_prefix("TO ").or_else(|| value.strip_prefix("to ")))
        .ok_or_else(|| format!("syntax error in SET: {sql}"))?;
    Ok(Statement::Set {
        name,
        value: unquote(value.trim()),
    })
}

fn unquote(value: &str) -> String {
    value
        .strip_prefix('\'')
        .and_then(|v| v.strip_suffix('\''))
        .map_or_else(|| value.to_string(), |v| v.replace("''", "'"))
}

/// A `SELECT`: a connection check or `version()`, answered here; a catalog query; else a report.
fn select(sql: &str) -> Statement {
    let body = sql.trim().trim_end_matches(';').trim()[6..].trim();
    let (value, label) = match body.split_once(|c: char| c.is_ascii_whitespace()) {
        Some((value, rest)) => match rest.trim_start().split_at_checked(2) {
            Some((as_, label))
                if as_.eq_ignore_ascii_case("as") && label.starts_with(char::is_whitespace) =>
            {
                (value, Some(unquote_identifier(label.trim())))
            }
            _ => (body, None),
        },
        None => (body, None),
    };
    if let Ok(value) = value.parse::<i64>() {
        let label = label.unwrap_or_else(|| "?column?".into());
        return Statement::SelectInteger { value, label };
    }
    if body.eq_ignore_ascii_case("version()") || body.eq_ignore_ascii_case("pg_catalog.version()") {
        return Statement::SelectVersion;
    }
    if reads_only_catalogs(sql) {
        return Statement::Catalog(sql.to_string());
    }
    Statement::Select(sql.to_string())
}

/// A `COPY`, parsed; only `FROM STDIN` into a table in text or CSV format is carried out.
fn copy(sql: &str) -> Result<Statement, String> {
    let parsed = Parser::parse_sql(&PostgreSqlDialect {}, sql).map_err(|e| e.to_string())?;
    let Some(sqlparser::ast::Statement::Copy {
        source,
        to,
        target,
        options,
        legacy_options,
        ..
    }) = parsed.into_iter().next()
    else {
        return Err(format!("not a COPY statement: {sql}"));
    };
    if to {
        return copy_to(source, target, options, legacy_options);
    }
    let CopySource::Table { table_name, columns } = source else {
        return Ok(Statement::Unsupported("COPY of a query FROM".into()));
    };
    if target != CopyTarget::Stdin {
        return Ok(Statement::Redirected {
            what: "COPY FROM a file or program",
            hint: "use COPY FROM STDIN, or psql's \\copy",
        });
    }
    let (format, header) = copy_format(options, legacy_options)?;
    let table = table_name
        .0
        .last()
        .map(|part| part.to_string())
        .unwrap_or_default();
    Ok(Statement::CopyFrom(CopyFrom {
        table: unquote_identifier(&table),
        columns: columns
            .iter()
            .map(|c| unquote_identifier(&c.to_string()))
            .collect(),
        format,
        header,
    }))
}

/// The format a `COPY`'s options ask for, and whether it has a header line.
fn copy_format(
    options: Vec<CopyOption>,
    legacy_options: Vec<CopyLegacyOption>,
) -> Result<(CopyFormat, bool), String> {
    let mut chosen = CopyOptions::default();
    for option in options_in(options, legacy_options)? {
        chosen.apply(option)?;
    }
    let mut format = CopyFormat::new(chosen.kind);
    format.delimiter = chosen.delimiter.unwrap_or(format.delimiter);
    format.null = chosen.null.unwrap_or(format.null);
    format.quote = chosen.quote.unwrap_or(format.quote);
    format.escape = chosen.escape.unwrap_or(format.quote);
    Ok((format, chosen.header))
}

/// A `COPY (query) TO STDOUT` or `COPY table [(columns)] TO STDOUT`, as the query whose rows
/// it writes.
fn copy_to(
    source: CopySource,
    target: CopyTarget,
    options: Vec<CopyOption>,
    legacy_options: Vec<CopyLegacyOption>,
) -> Result<Statement, String> {
    if target != CopyTarget::Stdout {
        return Ok(Statement::Redirected {
            what: "COPY TO a file or program",
            hint: "use COPY TO STDOUT, or psql's \\copy",
        });
    }
    let (format, header) = copy_format(options, legacy_options)?;
    if format.kind == CopyKind::Binary {
        return Ok(Statement::Unsupported("COPY TO in binary format".into()));
    }
    let query = match source {
        CopySource::Query(query) => query.to_string(),
        CopySource::Table { table_name, columns } if columns.is_empty() => {
            format!("SELECT * FROM {table_name}")
        }
        CopySource::Table { table_name, columns } => {
            let columns: Vec<String> = columns.iter().map(ToString::to_string).collect();
            format!("SELECT {} FROM {table_name}", columns.join(", "))
        }
    };
    Ok(Statement::CopyTo(CopyTo {
        query,
        format,
        header,
    }))
}

/// An `INSERT`, parsed; only `VALUES` of literals and parameters into a table is carried
/// out, with `ON CONFLICT DO NOTHING` (what storing an id does anyway) and a `RETURNING` of
/// columns.
fn insert(sql: &str) -> Result<Statement, String> {
    use sqlparser::ast::{OnConflict, OnConflictAction, OnInsert, SetExpr, TableObject};
    let parsed = Parser::parse_sql(&PostgreSqlDialect {}, sql).map_err(|e| e.to_string())?;
    let Some(sqlparser::ast::Statement::Insert(insert)) = parsed.into_iter().next() else {
        return Err(format!("not an INSERT statement: {sql}"));
    };
    let TableObject::TableName(table) = &insert.table else {
        return Ok(Statement::Unsupported("INSERT into a table function".into()));
    };
    match &insert.on {
        None
        | Some(OnInsert::OnConflict(OnConflict {
            action: OnConflictAction::DoNothing,
            ..
        })) => {}
        Some(_) => return Ok(Statement::Unsupported("INSERT ... ON CONFLICT DO UPDATE".into())),
    }
    let returning = match insert.returning.iter().flatten().map(returned_column).collect() {
        Ok(returning) => returning,
        Err(construct) => return Ok(Statement::Unsupported(construct)),
    };
    let Some(SetExpr::Values(values)) = insert.source.as_ref().map(|query| query.body.as_ref()) else {
        return Ok(Statement::Unsupported("INSERT ... SELECT".into()));
    };
    let rows = values
        .rows
        .iter()
        .map(|row| row.iter().map(insert_value).collect::<Result<Vec<_>, _>>())
        .collect::<Result<Vec<_>, _>>();
    let rows = match rows {
        Ok(rows) => rows,
        Err(construct) => return Ok(Statement::Unsupported(construct)),
    };
    let name = |object: &sqlparser::ast::ObjectName| {
        object
            .0
            .last()
            .map(|part| unquote_identifier(&part.to_string()))
            .unwrap_or_default()
    };
    Ok(Statement::Insert(Insert {
        table: name(table),
        columns: insert.columns.iter().map(name).collect(),
        rows,
        returning,
    }))
}

/// One item of `RETURNING`; the error names what is not carried out.
fn returned_column(item: &sqlparser::ast::SelectItem) -> Result<ReturnedColumn, String> {
    use sqlparser::ast::{Expr, SelectItem};
    let column = |expr: &Expr| match expr {
        Expr::Identifier(ident) => Some(unquote_identifier(&ident.to_string())),
        Expr::CompoundIdentifier(parts) => parts.last().map(|ident| unquote_identifier(&ident.to_string())),
        _ => None,
    };
    let unsupported = || "RETURNING of an expression other than a column".to_string();
    Ok(match item {
        SelectItem::Wildcard(_) | SelectItem::QualifiedWildcard(..) => ReturnedColumn::All,
        SelectItem::UnnamedExpr(expr) => ReturnedColumn::Column {
            name: column(expr).ok_or_else(unsupported)?,
            label: None,
        },
        SelectItem::ExprWithAlias { expr, alias } => ReturnedColumn::Column {
            name: column(expr).ok_or_else(unsupported)?,
            label: Some(unquote_identifier(&alias.to_string())),
        },
        _ => return Err(unsupported()),
    })
}

/// One value of `VALUES`; the error names an expression that is not carried out.
fn insert_value(expr: &sqlparser::ast::Expr) -> Result<InsertValue, String> {
    use sqlparser::ast::{Expr, UnaryOperator, Value};
    Ok(match expr {
        Expr::Value(value) => match &value.value {
            Value::Null => InsertValue::Null,
            Value::Number(number, _) => InsertValue::Literal(number.to_string()),
            Value::SingleQuotedString(text) | Value::EscapedStringLiteral(text) => {
                InsertValue::Literal(text.clone())
            }
            Value::DollarQuotedString(quoted) => InsertValue::Literal(quoted.value.clone()),
            Value::Boolean(b) => InsertValue::Literal(b.to_string()),
            Value::Placeholder(placeholder) => match placeholder
                .strip_prefix('$')
                .and_then(|n| n.parse::<usize>().ok())
            {
                Some(n) if n > 0 => InsertValue::Parameter(n - 1),
                _ => return Err(format!("the parameter {placeholder} (use $1, $2, ...)")),
            },
            other => return Err(format!("the value {other} in VALUES")),
        },
        Expr::Identifier(ident)
            if ident.quote_style.is_none() && ident.value.eq_ignore_ascii_case("default") =>
        {
            InsertValue::Default
        }
        Expr::UnaryOp {
            op: UnaryOperator::Minus,
            expr,
        } => match insert_value(expr)? {
            InsertValue::Literal(number) => InsertValue::Literal(format!("-{number}")),
            _ => return Err(format!("the expression {expr} in VALUES")),
        },
        Expr::Cast { expr, .. } | Expr::Nested(expr) => insert_value(expr)?,
        Expr::TypedString(typed) => match &typed.value.value {
            Value::SingleQuotedString(text) => InsertValue::Literal(text.clone()),
            other => return Err(format!("the value {other} in VALUES")),
        },
        other => return Err(format!("the expression {other} in VALUES")),
    })
}

/// The indexes of the columns `names` of `schema`, all its columns when none are named.
pub fn column_indexes(schema: &TableSchema, names: &[String]) -> PgWireResult<Vec<usize>> {
    if names.is_empty() {
        return Ok((0..schema.columns.len()).collect());
    }
    names
        .iter()
        .map(|name| {
            schema
                .columns
                .iter()
                .position(|c| c.name == *name)
                .ok_or_else(|| {
                    refused(
                        crate::pgtype::sqlstate::UNDEFINED_COLUMN,
                        format!("column \"{name}\" of relation \"{}\" does not exist", schema.name),
                    )
                })
        })
        .collect()
}

/// An identifier as Postgres folds it: quoted ones as written, others lower-cased.
fn unquote_identifier(identifier: &str) -> String {
    match identifier.strip_prefix('"').and_then(|i| i.strip_suffix('"')) {
        Some(quoted) => quoted.replace("\"\"", "\""),
        None => identifier.to_ascii_lowercase(),
    }
}

/// The COPY options of either syntax, as the modern ones.
fn options_in(options: Vec<CopyOption>, legacy: Vec<CopyLegacyOption>) -> Result<Vec<CopyOption>, String> {
    let mut all = options;
    for option in legacy {
        match option {
            CopyLegacyOption::Binary => all.push(CopyOption::Format("binary".into())),
            CopyLegacyOption::Delimiter(c) => all.push(CopyOption::Delimiter(c)),
            CopyLegacyOption::Null(null) => all.push(CopyOption::Null(null)),
            CopyLegacyOption::Csv(csv) => {
                all.push(CopyOption::Format("csv".into()));
                for option in csv {
                    all.push(match option {
                        CopyLegacyCsvOption::Header => CopyOption::Header(true),
                        CopyLegacyCsvOption::Quote(c) => CopyOption::Quote(c),
                        CopyLegacyCsvOption::Escape(c) => CopyOption::Escape(c),
                        other => return Err(format!("COPY option {other} is not supported")),
                    });
                }
            }
            CopyLegacyOption::Header => all.push(CopyOption::Header(true)),
            other => return Err(format!("COPY option {other} is not supported")),
        }
    }
    Ok(all)
}

/// The options a COPY statement sets.
struct CopyOptions {
    kind: CopyKind,
    delimiter: Option<u8>,
    null: Option<String>,
    quote: Option<u8>,
    escape: Option<u8>,
    header: bool,
}

impl Default for CopyOptions {
    fn default() -> Self {
        CopyOptions {
            kind: CopyKind::Text,
            delimiter: None,
            null: None,
            quote: None,
            escape: None,
            header: false,
        }
    }
}

impl CopyOptions {
    fn apply(&mut self, option: CopyOption) -> Result<(), String> {
        let one_byte = |c: char, what: &str| {
            u8::try_from(c)
                .ok()
                .filter(u8::is_ascii)
                .ok_or_else(|| format!("COPY {what} must be a single one-byte character"))
        };
        match option {
            CopyOption::Format(name) => {
                self.kind = match name.value.to_ascii_lowercase().as_str() {
                    "text" => CopyKind::Text,
                    "csv" => CopyKind::Csv,
                    "binary" => CopyKind::Binary,
                    other => return Err(format!("COPY format \"{other}\" not recognized")),
                }
            }
            CopyOption::Delimiter(c) => self.delimiter = Some(one_byte(c, "delimiter")?),
            CopyOption::Null(null) => self.null = Some(null),
            CopyOption::Header(header) => self.header = header,
            CopyOption::Quote(c) => self.quote = Some(one_byte(c, "quote")?),
            CopyOption::Escape(c) => self.escape = Some(one_byte(c, "escape")?),
            CopyOption::Encoding(encoding)
                if encoding.eq_ignore_ascii_case("utf8") || encoding.eq_ignore_ascii_case("utf-8") => {}
            CopyOption::Freeze(_) => {}
            other => return Err(format!("COPY option {other} is not supported")),
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
