//! Rows of values, as `INSERT ... VALUES` gives them, as a source of rows: each value is a
//! literal or parameter in Postgres's text form, one in binary form, null, or `DEFAULT`, and
//! the rows go through the same row encoder as every other source.

use super::{DecodeError, EncodedRows, RowEncoder, Slot};
use crate::routing::{KeyHash, RoutingTable};
use crate::schema::TableSchema;

/// One value of a row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Value<'a> {
    /// `DEFAULT`: the column's default, as if it were left out.
    Default,
    /// `NULL`.
    Null,
    /// A value in Postgres's text form (a literal, or a parameter sent as text).
    Text(&'a str),
    /// A value in Postgres's binary form of the column's type (a parameter sent as binary).
    Binary(&'a [u8]),
}

/// Which columns rows of values fill, and which of their stored values are returned.
#[derive(Debug, Clone, Copy)]
pub struct ValueColumns<'c> {
    /// Indexes of the table's columns each row's values fill, in order; the others take
    /// their defaults.
    pub filled: &'c [usize],
    /// Indexes of the columns whose stored values come back in [`EncodedRows::returned`].
    pub returning: &'c [usize],
}

/// Decodes `rows` for `table`: the values of each row fill `columns`, and each row is routed
/// with `routing`. `now_micros` and `limited` are as for [`super::decode_rows`].
pub fn decode_values<'v>(
    table: &TableSchema,
    routing: &RoutingTable,
    columns: ValueColumns<'_>,
    rows: impl ExactSizeIterator<Item = &'v [Value<'v>]>,
    now_micros: i64,
    limited: &[KeyHash],
) -> Result<EncodedRows, DecodeError> {
    let mut encoder = RowEncoder::new(table, routing, now_micros, limited, rows.len() * 64);
    encoder.returning = columns.returning;
    for row in rows {
        encoder.begin_row();
        for (&column, value) in columns.filled.iter().zip(row) {
            match *value {
                Value::Default => {}
                Value::Null => encoder.slots[column] = Slot::Null,
                Value::Text(text) => encoder.put_text(column, text),
                Value::Binary(bytes) => encoder.put_binary(column, bytes),
            }
        }
        encoder.finish_row();
    }
    encoder.finish()
}
