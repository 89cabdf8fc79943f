//! The Postgres types of shardgate's column types: what a column is described as to clients,
//! and which column type a type a client declared shares its binary form with.

use crate::pgtype::ColumnType;
use bytes::{BufMut, BytesMut};
use pgwire::api::Type;
use pgwire::messages::data::DataRow;

/// The type a parameter filling a column of `ty` is described as, so drivers send it as such.
pub fn parameter_type(ty: ColumnType) -> Type {
    match ty {
        ColumnType::Text => Type::TEXT,
        ColumnType::BigInt => Type::INT8,
        ColumnType::Integer => Type::INT4,
        ColumnType::SmallInt => Type::INT2,
        ColumnType::Double => Type::FLOAT8,
        ColumnType::Boolean => Type::BOOL,
        ColumnType::Uuid => Type::UUID,
        ColumnType::Timestamptz => Type::TIMESTAMPTZ,
        ColumnType::Date => Type::DATE,
        ColumnType::Jsonb => Type::JSONB,
        ColumnType::Bytea => Type::BYTEA,
    }
}

/// The column type whose binary form a parameter of the `declared` type has.
pub fn declared_column_type(declared: &Type) -> Option<ColumnType> {
    [
        ColumnType::Text,
        ColumnType::BigInt,
        ColumnType::Integer,
        ColumnType::SmallInt,
        ColumnType::Double,
        ColumnType::Boolean,
        ColumnType::Uuid,
        ColumnType::Timestamptz,
        ColumnType::Date,
        ColumnType::Jsonb,
        ColumnType::Bytea,
    ]
    .into_iter()
    .find(|&ty| parameter_type(ty) == *declared)
}

/// The text form of `bytes`, a binary value of the `declared` type, for a column or parameter
/// of another type to read as Postgres's assignment cast would (an `int2` into a `bigint`, a
/// `json` into a `jsonb`); `None` for a type shardgate does not read in binary.
pub fn binary_as_text(bytes: &[u8], declared: &Type) -> Option<String> {
    if [Type::VARCHAR, Type::BPCHAR, Type::NAME, Type::JSON, Type::UNKNOWN].contains(declared) {
        return String::from_utf8(bytes.to_vec()).ok();
    }
    if [
        Type::OID,
        Type::REGCLASS,
        Type::REGTYPE,
        Type::REGPROC,
        Type::XID,
        Type::CID,
    ]
    .contains(declared)
    {
        return <[u8; 4]>::try_from(bytes)
            .ok()
            .map(|b| u32::from_be_bytes(b).to_string());
    }
    if *declared == Type::CHAR {
        return bytes.first().map(|&b| char::from(b).to_string());
    }
    if *declared == Type::TIMESTAMP {
        return Some(crate::pgtype::output_text(ColumnType::Timestamptz, bytes));
    }
    match declared_column_type(declared) {
        Some(ty) => Some(crate::pgtype::output_text(ty, bytes)),
        None if *declared == Type::FLOAT4 => <[u8; 4]>::try_from(bytes)
            .ok()
            .map(|b| f64::from(f32::from_be_bytes(b)).to_string()),
        None => None,
    }
}

/// A `DataRow` of fields already in their wire form, text or binary; `None` is NULL.
pub fn data_row<'a>(fields: impl ExactSizeIterator<Item = Option<&'a [u8]>>) -> DataRow {
    let count = i16::try_from(fields.len()).expect("Postgres rows have at most 1664 columns");
    let mut data = BytesMut::new();
    for field in fields {
        match field {
            None => data.put_i32(-1),
            Some(bytes) => {
                data.put_i32(i32::try_from(bytes.len()).expect("a field is under 1 GiB"));
                data.put_slice(bytes);
            }
        }
    }
    DataRow::new(data, count)
}
