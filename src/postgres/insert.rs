//! `INSERT ... VALUES` carried out: the statement's literals and bound parameters become a
//! row source for the shared write path. Outside a block the rows are queued at once and the
//! statement is answered when they committed; inside one they are checked now and held in
//! the session until `COMMIT` writes them, so `ROLLBACK` discards them. What `RETURNING`
//! returns is what the rows are stored with.

use super::errors::{self, refused};
use super::keyed;
use super::returning::Returning;
use super::statement::{Insert, InsertValue};
use super::types::{binary_as_text, parameter_type};
use crate::ingest::keys::IdempotencyKey;
use crate::ingest::write::{Spooling, Submitted, Writes};
use crate::pgtype::ColumnType;
use crate::schema::decode::values::{Value, ValueColumns};
use crate::schema::{TableId, Tables};
use bytes::Bytes;
use pgwire::api::Type;
use pgwire::api::portal::Format;
use pgwire::error::PgWireResult;

/// An `INSERT`'s rows with its parameters bound, owned so that a block can hold them.
pub struct BoundInsert {
    table: TableId,
    columns: Vec<usize>,
    rows: Vec<Vec<OwnedValue>>,
    returning: Returning,
}

/// A value of a bound row.
enum OwnedValue {
    Default,
    Null,
    Text(String),
    Binary(Bytes),
}

impl OwnedValue {
    fn as_value(&self) -> Value<'_> {
        match self {
            OwnedValue::Default => Value::Default,
            OwnedValue::Null => Value::Null,
            OwnedValue::Text(text) => Value::Text(text),
            OwnedValue::Binary(bytes) => Value::Binary(bytes),
        }
    }
}

/// The parameters an `Execute` bound, and the formats they were sent in.
pub struct Parameters<'a> {
    /// Each parameter's bytes, `None` for null.
    pub values: &'a [Option<Bytes>],
    /// Text or binary, per parameter.
    pub format: &'a Format,
    /// The types the client's `Parse` declared, per parameter; `None` (or none at all) where
    /// it left the type to the server.
    pub types: &'a [Option<Type>],
}

impl BoundInsert {
    /// Resolves `insert`'s table and columns against `tables` and binds `parameters`.
    pub fn bind(insert: &Insert, tables: &Tables, parameters: &Parameters<'_>) -> PgWireResult<BoundInsert> {
        let (table, schema) = tables.lookup(&insert.table).ok_or_else(|| {
            refused(
                errors::UNDEFINED_TABLE,
                format!("relation \"{}\" does not exist", insert.table),
            )
        })?;
        let columns = super::statement::column_indexes(schema, &insert.columns)?;
        let returning = Returning::resolve(schema, &insert.returning)?;
        let wanted = insert.parameter_count();
        if parameters.values.len() < wanted {
            return Err(refused(
                "08P01",
                format!(
                    "bind message supplies {} parameters, but the statement requires {wanted}",
                    parameters.values.len()
                ),
            ));
        }
        let mut rows = Vec::with_capacity(insert.rows.len());
        for row in &insert.rows {
            if row.len() > columns.len() {
                return Err(refused(
                    errors::SYNTAX_ERROR,
                    "INSERT has more expressions than target columns",
                ));
            }
            let bound = row
                .iter()
                .zip(&columns)
                .map(|(value, &column)| bind_value(value, parameters, schema.columns[column].ty))
                .collect::<PgWireResult<Vec<_>>>()?;
            rows.push(bound);
        }
        Ok(BoundInsert {
            table,
            columns,
            rows,
            returning,
        })
    }

    /// The table written.
    pub fn table(&self) -> TableId {
        self.table
    }

    /// Rows of the statement.
    pub fn rows(&self) -> usize {
        self.rows.len()
    }

    /// What the statement returns.
    pub fn returning(&self) -> &Returning {
        &self.returning
    }

    fn value_columns(&self) -> ValueColumns<'_> {
        ValueColumns {
            filled: &self.columns,
            returning: self.returning.columns(),
        }
    }

    /// Encodes, routes and queues the rows.
    pub fn submit(&self, tables: &Tables, writes: &Writes) -> PgWireResult<Submitted> {
        let schema = tables.get(self.table);
        let values = self.values();
        let rows = values.iter().map(Vec::as_slice);
        writes
            .submit_values(self.table, schema, self.value_columns(), rows)
            .map_err(|refusal| errors::user_error(errors::write_refused(&refusal, &schema.name)))
    }

    /// Writes the rows as one keyed write (committed or spooled, as the table acknowledges)
    /// and waits until they are: when `key` was written before, writes only what it did not.
    pub async fn write_keyed(
        &self,
        tables: &Tables,
        writes: &Writes,
        key: &IdempotencyKey,
    ) -> PgWireResult<()> {
        let schema = tables.get(self.table);
        let mut staged = Vec::new();
        self.stage(&mut staged);
        let fingerprint = keyed::fingerprint(&schema.name, "insert", &self.columns, "", &staged);
        let values = self.values();
        let rows = values.iter().map(Vec::as_slice);
        writes
            .write_keyed_values(
                (self.table, schema),
                self.value_columns(),
                rows,
                (key, fingerprint),
            )
            .await
            .map(|_| ())
            .map_err(|refusal| errors::user_error(errors::write_refused(&refusal, &schema.name)))
    }

    /// Encodes and routes the rows into a spool record, for a table acknowledged once its
    /// rows are on the spool's disk.
    pub fn spool<'a>(&self, tables: &'a Tables, writes: &'a Writes) -> PgWireResult<Spooling<'a>> {
        let schema = tables.get(self.table);
        let values = self.values();
        let rows = values.iter().map(Vec::as_slice);
        writes
            .spool_values(self.table, schema, self.value_columns(), rows)
            .map_err(|refusal| errors::user_error(errors::write_refused(&refusal, &schema.name)))
    }

    /// Checks the rows as [`BoundInsert::submit`] would, without queueing them, and
    /// returns the values of the returned columns, row after row.
    pub fn check(&self, tables: &Tables, writes: &Writes) -> PgWireResult<Vec<Option<Vec<u8>>>> {
        let schema = tables.get(self.table);
        let values = self.values();
        writes
            .check_values(schema, self.value_columns(), values.iter().map(Vec::as_slice))
            .map_err(|refusal| errors::user_error(errors::write_refused(&refusal, &schema.name)))
    }

    /// Gives each returned column that a row leaves to its default the value `returned`
    /// says it took, so that rows written later (at a block's `COMMIT`) are stored with the
    /// generated ids and times the statement returned.
    pub fn keep_returned(&mut self, returned: &[Option<Vec<u8>>]) {
        let width = self.columns.len();
        for row in &mut self.rows {
            row.resize_with(width, || OwnedValue::Default);
        }
        for &column in self.returning.columns() {
            if !self.columns.contains(&column) {
                self.columns.push(column);
                self.rows.iter_mut().for_each(|row| row.push(OwnedValue::Default));
            }
        }
        let returned_rows = returned.chunks(self.returning.columns().len().max(1));
        for (row, returned) in self.rows.iter_mut().zip(returned_rows) {
            for (&column, value) in self.returning.columns().iter().zip(returned) {
                let at = self
                    .columns
                    .iter()
                    .position(|&c| c == column)
                    .expect("added above");
                if matches!(row[at], OwnedValue::Default) {
                    row[at] = match value {
                        Some(bytes) => OwnedValue::Binary(Bytes::copy_from_slice(bytes)),
                        None => OwnedValue::Null,
                    };
                }
            }
        }
    }

    /// The columns the rows' values fill.
    pub fn columns(&self) -> &[usize] {
        &self.columns
    }

    /// Appends the rows to `out` in the form [`staged_rows`] reads back.
    pub fn stage(&self, out: &mut Vec<u8>) {
        for row in &self.rows {
            out.extend_from_slice(&(row.len() as u16).to_be_bytes());
            for value in row {
                let (tag, bytes) = match value {
                    OwnedValue::Default => (STAGED_DEFAULT, &[][..]),
                    OwnedValue::Null => (STAGED_NULL, &[][..]),
                    OwnedValue::Text(text) => (STAGED_TEXT, text.as_bytes()),
                    OwnedValue::Binary(bytes) => (STAGED_BINARY, &bytes[..]),
                };
                out.push(tag);
                if tag >= STAGED_TEXT {
                    out.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
                    out.extend_from_slice(bytes);
                }
            }
        }
    }

    /// The rows as the write path reads them, borrowing the values held.
    fn values(&self) -> Vec<Vec<Value<'_>>> {
        self.rows
            .iter()
            .map(|row| row.iter().map(OwnedValue::as_value).collect())
            .collect()
    }
}

const STAGED_DEFAULT: u8 = 0;
const STAGED_NULL: u8 = 1;
const STAGED_TEXT: u8 = 2;
const STAGED_BINARY: u8 = 3;

/// The rows [`BoundInsert::stage`] wrote into `bytes`, borrowing their values.
pub fn staged_rows(mut bytes: &[u8]) -> Vec<Vec<Value<'_>>> {
    let mut rows = Vec::new();
    while !bytes.is_empty() {
        let width = usize::from(u16::from_be_bytes([bytes[0], bytes[1]]));
        bytes = &bytes[2..];
        let mut row = Vec::with_capacity(width);
        for _ in 0..width {
            let tag = bytes[0];
            bytes = &bytes[1..];
            if tag < STAGED_TEXT {
                row.push(if tag == STAGED_DEFAULT {
                    Value::Default
                } else {
                    Value::Null
                });
                continue;
            }
            let len = u32::from_be_bytes(bytes[..4].try_into().expect("four bytes")) as usize;
            let (value, rest) = bytes[4..].split_at(len);
            bytes = rest;
            row.push(match tag {
                STAGED_TEXT => Value::Text(std::str::from_utf8(value).expect("staged text was a String")),
                _ => Value::Binary(value),
            });
        }
        rows.push(row);
    }
    rows
}

/// One value of a row filling a column of type `column`.
fn bind_value(
    value: &InsertValue,
    parameters: &Parameters<'_>,
    column: ColumnType,
) -> PgWireResult<OwnedValue> {
    Ok(match value {
        InsertValue::Default => OwnedValue::Default,
        InsertValue::Null => OwnedValue::Null,
        InsertValue::Literal(text) => OwnedValue::Text(text.clone()),
        InsertValue::Parameter(i) => match &parameters.values[*i] {
            None => OwnedValue::Null,
            Some(bytes) if parameters.format.is_binary(*i) => {
                let declared = parameters.types.get(*i).cloned().flatten();
                bind_binary(bytes, declared.as_ref(), column, *i)?
            }
            Some(bytes) => OwnedValue::Text(String::from_utf8(bytes.to_vec()).map_err(|_| {
                refused(
                    crate::pgtype::sqlstate::CHARACTER_NOT_IN_REPERTOIRE,
                    "invalid byte sequence for encoding \"UTF8\"",
                )
            })?),
        },
    })
}

/// A binary parameter of the `declared` type filling a column of type `column`: kept as sent
/// when the two share a binary form, else read as its own type and handed on in text form,
/// which the column's type reads as Postgres's assignment cast would (an `int2` into a
/// `bigint`, a `json` into a `jsonb`).
fn bind_binary(
    bytes: &Bytes,
    declared: Option<&Type>,
    column: ColumnType,
    index: usize,
) -> PgWireResult<OwnedValue> {
    let same_form = match declared {
        None => true,
        Some(declared) => {
            *declared == Type::UNKNOWN
                || *declared == parameter_type(column)
                || (column == ColumnType::Text
                    && [Type::VARCHAR, Type::BPCHAR, Type::NAME].contains(declared))
                || (column == ColumnType::Timestamptz && *declared == Type::TIMESTAMP)
        }
    };
    if same_form {
        return Ok(OwnedValue::Binary(bytes.clone()));
    }
    let declared = declared.expect("a missing type has the column's form");
    binary_as_text(bytes, declared)
        .map(OwnedValue::Text)
        .ok_or_else(|| {
            refused(
                "42804",
                format!(
                    "parameter ${} of type {} in binary form cannot fill a column of type {}",
                    index + 1,
                    declared.name(),
                    column.sql_name()
                ),
            )
        })
}
