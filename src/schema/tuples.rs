//! Walking a buffer of binary COPY tuples as the write path encodes them: each tuple's bytes
//! and its hidden fields, which come after the declared columns: the ring position
//! (`_sg_hash`), then, for a table without an id, the routing epoch.

use super::TableSchema;
use crate::routing::KeyHash;

/// A buffer that is not whole tuples of its table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct MalformedTuple(pub &'static str);

/// One tuple of a buffer, and where its hidden fields are.
pub struct Tuple<'a> {
    /// The tuple's bytes, field count included.
    pub bytes: &'a [u8],
    /// Its ring position (`_sg_hash`).
    pub position: KeyHash,
    /// Offset in `bytes` of the epoch's eight bytes, for a table that stores one.
    pub epoch_at: Option<usize>,
}

/// The tuples of a buffer, one by one.
pub struct Tuples<'a> {
    buffer: &'a [u8],
    at: usize,
    /// Declared columns: the position is the field after them.
    columns: usize,
    with_epoch: bool,
}

impl<'a> Tuples<'a> {
    /// The tuples `buffer` holds, rows of `table` encoded for its COPY.
    pub fn new(buffer: &'a [u8], table: &TableSchema) -> Tuples<'a> {
        Tuples {
            buffer,
            at: 0,
            columns: table.columns.len(),
            with_epoch: table.id.is_none(),
        }
    }

    fn tuple(&self) -> Result<(Tuple<'a>, usize), MalformedTuple> {
        let bytes = &self.buffer[self.at..];
        let read = |at: usize, n: usize| bytes.get(at..at + n).ok_or(MalformedTuple("tuple cut short"));
        let fields = i16::from_be_bytes(read(0, 2)?.try_into().expect("two bytes"));
        let expected = self.columns + 1 + usize::from(self.with_epoch);
        if usize::try_from(fields).ok() != Some(expected) {
            return Err(MalformedTuple("tuple has the wrong number of fields"));
        }
        let mut at = 2;
        let mut value_at = Vec::with_capacity(2);
        for field in 0..expected {
            let len = i32::from_be_bytes(read(at, 4)?.try_into().expect("four bytes"));
            at += 4;
            if field >= self.columns {
                if len != 8 {
                    return Err(MalformedTuple("hidden field is not eight bytes"));
                }
                value_at.push(at);
            }
            at += usize::try_from(len).unwrap_or(0);
            read(0, at)?;
        }
        let position = i64::from_be_bytes(read(value_at[0], 8)?.try_into().expect("eight bytes"));
        let tuple = Tuple {
            bytes: &bytes[..at],
            position: KeyHash::from_i64(position),
            epoch_at: value_at.get(1).copied(),
        };
        Ok((tuple, at))
    }
}

impl<'a> Iterator for Tuples<'a> {
    type Item = Result<Tuple<'a>, MalformedTuple>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.at >= self.buffer.len() {
            return None;
        }
        let result = self.tuple();
        match &result {
            Ok((_, len)) => self.at += len,
            Err(_) => self.at = self.buffer.len(),
        }
        Some(result.map(|(tuple, _)| tuple))
    }
}
