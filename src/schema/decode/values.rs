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

/// Decodes `rows` for `table`: the values of each row fill `columns` (indexes of the table's
/// columns), the other columns take their defaults, and each row is routed with `routing`.
/// `now_micros` and `limited` are as for [`super::decode_rows`].
pub fn decode_values<'v>(
    table: &TableSchema,
    routing: &RoutingTable,
    columns: &[usize],
    rows: impl ExactSizeIterator<Item = &'v [Value<'v>]>,
    now_micros: i64,
    limited: &[KeyHash],
) -> Result<EncodedRows, DecodeError> {
    let mut encoder = RowEncoder::new(table, routing, now_micros, limited, rows.len() * 64);
    for row in rows {
        encoder.begin_row();
        for (&column, value) in columns.iter().zip(row) {
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
