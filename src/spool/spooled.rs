//! A request's rows as the spool keeps them: binary COPY tuples that already carry their ring
//! position (`_sg_hash`, salt included), routed only when they are drained, so a range that
//! moved meanwhile is written to its new owner (and to a range's copy target during a move).
//!
//! A tuple's hidden fields come after its declared columns: the position, then for a table
//! without an id the routing epoch, which draining sets to the epoch it routes with (a
//! migration's copy and its dual write tell rows apart by it).

use crate::routing::{KeyHash, RoutingTable};
use crate::schema::TableSchema;
use crate::schema::decode::{EncodedRows, ShardRows};
use uuid::Uuid;

/// The first byte of every spooled write: the layout below.
const LAYOUT: u8 = 1;

/// A request's rows in the spool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpooledWrite {
    /// The write's id, by which its status is asked.
    pub write_id: Uuid,
    /// The table the rows are for.
    pub table: String,
    /// Rows in `tuples`.
    pub rows: usize,
    /// The rows' binary COPY tuples, each once.
    pub tuples: Vec<u8>,
}

/// A spooled write that cannot be read back as one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("spooled write is malformed: {0}")]
pub struct MalformedWrite(&'static str);

impl SpooledWrite {
    /// The rows of a request `encoded` with `routing`, each once: a row that went to a range's
    /// copy target as well is kept only from the shard owning its position.
    pub fn from_encoded(
        write_id: Uuid,
        table: &TableSchema,
        routing: &RoutingTable,
        encoded: &EncodedRows,
    ) -> SpooledWrite {
        let mut tuples = Vec::with_capacity(encoded.shards.iter().map(|s| s.tuples.len()).sum());
        let mut rows = 0;
        for (index, shard) in encoded.shards.iter().enumerate() {
            for tuple in Tuples::new(&shard.tuples, table) {
                let tuple = tuple.expect("the encoder's tuples are well formed");
                if routing.place_position(tuple.position).0.0 == index {
                    tuples.extend_from_slice(tuple.bytes);
                    rows += 1;
                }
            }
        }
        SpooledWrite {
            write_id,
            table: table.name.clone(),
            rows,
            tuples,
        }
    }

    /// The bytes a spool record holds.
    pub fn encode(&self) -> Vec<u8> {
        let name = self.table.as_bytes();
        let mut out = Vec::with_capacity(1 + 16 + 2 + name.len() + 4 + self.tuples.len());
        out.push(LAYOUT);
        out.extend_from_slice(self.write_id.as_bytes());
        out.extend_from_slice(
            &u16::try_from(name.len())
                .expect("table names are short")
                .to_le_bytes(),
        );
        out.extend_from_slice(name);
        out.extend_from_slice(
            &u32::try_from(self.rows)
                .expect("a request's rows fit")
                .to_le_bytes(),
        );
        out.extend_from_slice(&self.tuples);
        out
    }

    /// Reads a spooled write back from a spool record's bytes.
    pub fn decode(bytes: &[u8]) -> Result<SpooledWrite, MalformedWrite> {
        let mut rest = bytes;
        let mut take = |n: usize| -> Result<&[u8], MalformedWrite> {
            let (head, tail) = rest.split_at_checked(n).ok_or(MalformedWrite("cut short"))?;
            rest = tail;
            Ok(head)
        };
        if take(1)? != [LAYOUT] {
            return Err(MalformedWrite("unknown layout"));
        }
        let write_id = Uuid::from_slice(take(16)?).expect("sixteen bytes");
        let name_len = u16::from_le_bytes(take(2)?.try_into().expect("two bytes"));
        let table = std::str::from_utf8(take(name_len.into())?)
            .map_err(|_| MalformedWrite("table name is not UTF-8"))?
            .to_string();
        let rows = u32::from_le_bytes(take(4)?.try_into().expect("four bytes")) as usize;
        Ok(SpooledWrite {
            write_id,
            table,
            rows,
            tuples: rest.to_vec(),
        })
    }

    /// The rows routed with `routing`, the snapshot in force when they are drained: per shard
    /// index, the tuples of the rows it owns and of those it receives as a range's copy target,
    /// with the snapshot's epoch for a table that stores one.
    pub fn route(
        &self,
        table: &TableSchema,
        routing: &RoutingTable,
    ) -> Result<Vec<ShardRows>, MalformedWrite> {
        let mut shards: Vec<ShardRows> = routing.shards.iter().map(|_| ShardRows::default()).collect();
        let mut rows = 0;
        for tuple in Tuples::new(&self.tuples, table) {
            let tuple = tuple?;
            let (owner, also) = routing.place_position(tuple.position);
            for index in std::iter::once(owner).chain(also) {
                let out = &mut shards[index.0];
                let start = out.tuples.len();
                out.tuples.extend_from_slice(tuple.bytes);
                if let Some(at) = tuple.epoch_at {
                    out.tuples[start + at..start + at + 8].copy_from_slice(&routing.epoch.0.to_be_bytes());
                }
                out.rows += 1;
            }
            rows += 1;
        }
        if rows != self.rows {
            return Err(MalformedWrite("row count does not match its tuples"));
        }
        Ok(shards)
    }
}

/// One tuple of a buffer, and where its hidden fields are.
struct Tuple<'a> {
    bytes: &'a [u8],
    position: KeyHash,
    /// Offset in `bytes` of the epoch's eight bytes, for a table that stores one.
    epoch_at: Option<usize>,
}

/// The tuples of a buffer, one by one.
struct Tuples<'a> {
    buffer: &'a [u8],
    at: usize,
    /// Declared columns: the position is the field after them.
    columns: usize,
    with_epoch: bool,
}

impl<'a> Tuples<'a> {
    fn new(buffer: &'a [u8], table: &TableSchema) -> Tuples<'a> {
        Tuples {
            buffer,
            at: 0,
            columns: table.columns.len(),
            with_epoch: table.id.is_none(),
        }
    }

    fn tuple(&self) -> Result<(Tuple<'a>, usize), MalformedWrite> {
        let bytes = &self.buffer[self.at..];
        let read = |at: usize, n: usize| bytes.get(at..at + n).ok_or(MalformedWrite("tuple cut short"));
        let fields = i16::from_be_bytes(read(0, 2)?.try_into().expect("two bytes"));
        let expected = self.columns + 1 + usize::from(self.with_epoch);
        if usize::try_from(fields).ok() != Some(expected) {
            return Err(MalformedWrite("tuple has the wrong number of fields"));
        }
        let mut at = 2;
        let mut value_at = Vec::with_capacity(2);
        for field in 0..expected {
            let len = i32::from_be_bytes(read(at, 4)?.try_into().expect("four bytes"));
            at += 4;
            if field >= self.columns {
                if len != 8 {
                    return Err(MalformedWrite("hidden field is not eight bytes"));
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
    type Item = Result<Tuple<'a>, MalformedWrite>;

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

#[cfg(test)]
mod tests;
