//! A request's rows as the spool keeps them: binary COPY tuples that already carry their ring
//! position (`_sg_hash`, salt included), in one part per shard that owned them on arrival.
//! Each part is checked against the routing in force when it is drained: a part whose rows
//! are in a range being copied waits for the cutover (one with only some of them there is split
//! first, so the others need not wait), and one whose rows moved meanwhile is split by their
//! new owners into a record that supersedes it.
//!
//! A tuple's hidden fields come after its declared columns: the position, then for a table
//! without an id the routing epoch, which draining sets to the epoch it routes with (a
//! migration's copy and its dual write tell rows apart by it).

use super::RecordSeq;
use crate::routing::{Epoch, RoutingTable, ShardIndex};
use crate::schema::TableSchema;
use crate::schema::decode::EncodedRows;
use crate::schema::tuples::{MalformedTuple, Tuples};
use bytes::Bytes;
use uuid::Uuid;

/// The first byte of every spooled write: the layout below (5: with the idempotency key it
/// was sent with; 4, read too: without it; 3, read too: nor the epoch its parts were routed
/// with; 2, read too: nor the dead letter a write replays).
const LAYOUT: u8 = 5;

/// A request's rows in the spool, in parts: the rows each shard owned when the request was
/// accepted, each part drained (and marked as applied) in one transaction on its shard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpooledWrite {
    /// The write's id, by which its status is asked.
    pub write_id: Uuid,
    /// The table the rows are for.
    pub table: String,
    /// The rows, each in one part.
    pub parts: Vec<SpooledPart>,
    /// Parts of earlier records this one carries instead: their rows moved to other shards
    /// before they were applied, and are here split by their new owners.
    pub supersedes: Vec<PartRef>,
    /// For the replay of a dead letter (one row, one part): the spool part that first held
    /// the row, whose mark the replay's part takes, so a replay spooled twice is written once.
    pub replays: Option<ReplayedPart>,
    /// The epoch of the routing its parts were made with; `None` in records of layouts 2
    /// and 3. Drained with that same routing, and no range being copied, every part's shard
    /// owns its rows as they are, so they are written without being looked at again.
    pub routed_at: Option<Epoch>,
    /// The idempotency key the request was sent with: the write is drained only while it
    /// holds the key's claim (a retry spooled again is dropped). Records the drainer makes
    /// of a claimed write's parts carry none.
    pub key: Option<SpooledKey>,
}

/// The idempotency key of a spooled write, and the fingerprint of the request it came with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpooledKey {
    /// The key, as sent.
    pub key: String,
    /// The request's fingerprint (table, format and body).
    pub fingerprint: [u8; 16],
}

/// The spool part a dead letter came from: (spool, record, part), as the shards' marks name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplayedPart {
    /// The spool's id.
    pub spool: Uuid,
    /// The record.
    pub seq: u64,
    /// The part.
    pub part: u16,
}

/// The rows of a spooled write bound for one shard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpooledPart {
    /// The shard's name.
    pub shard: String,
    /// Rows in `tuples`.
    pub rows: usize,
    /// The rows' binary COPY tuples.
    pub tuples: Bytes,
}

/// One part of one spool record: what a shard's mark names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PartRef {
    /// The record.
    pub seq: RecordSeq,
    /// The part's index in its record.
    pub part: u16,
}

/// Where a part's rows belong under a routing snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Placement {
    /// Its shard, at this index, owns every row and none is in a range being copied: the
    /// tuples to write.
    Owned(ShardIndex, Bytes),
    /// Every row is in a range being copied: the part waits for the cutover, so no row needs
    /// writing twice.
    Moving,
    /// Its shard owns every row, and some but not all are in a range being copied: split in
    /// two, the rows outside those ranges can be written now while the others wait.
    PartlyMoving,
    /// Some row now belongs to another shard (or the shard left the snapshot).
    Moved,
}

/// A spooled write that cannot be read back as one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("spooled write is malformed: {0}")]
pub struct MalformedWrite(&'static str);

impl From<MalformedTuple> for MalformedWrite {
    fn from(malformed: MalformedTuple) -> MalformedWrite {
        MalformedWrite(malformed.0)
    }
}

impl SpooledWrite {
    /// The rows of a request `encoded` with `routing`, each once, in one part per shard owning
    /// some of them: a row that went to a range's copy target as well is kept only from the
    /// shard owning its position. The tuples are taken out of `encoded` (its counts stay).
    pub fn from_encoded(
        write_id: Uuid,
        table: &TableSchema,
        routing: &RoutingTable,
        encoded: &mut EncodedRows,
    ) -> SpooledWrite {
        let mut parts = Vec::new();
        let dual_written = encoded.dual_written;
        for (index, shard) in encoded.shards.iter_mut().enumerate().filter(|(_, s)| s.rows > 0) {
            if dual_written == 0 {
                // No copy went to a range's new shard: each shard's tuples are its own rows.
                parts.push(SpooledPart {
                    shard: routing.shards[index].0.clone(),
                    rows: shard.rows,
                    tuples: Bytes::from(std::mem::take(&mut shard.tuples)),
                });
                continue;
            }
            let mut tuples = Vec::with_capacity(shard.tuples.len());
            let mut rows = 0;
            for tuple in Tuples::new(&shard.tuples, table) {
                let tuple = tuple.expect("the encoder's tuples are well formed");
                if routing.place_position(tuple.position).0.0 == index {
                    tuples.extend_from_slice(tuple.bytes);
                    rows += 1;
                }
            }
            if rows > 0 {
                parts.push(SpooledPart {
                    shard: routing.shards[index].0.clone(),
                    rows,
                    tuples: tuples.into(),
                });
            }
        }
        SpooledWrite {
            write_id,
            table: table.name.clone(),
            parts,
            supersedes: Vec::new(),
            replays: None,
            routed_at: Some(routing.epoch),
            key: None,
        }
    }

    /// Rows over all parts.
    pub fn rows(&self) -> usize {
        self.parts.iter().map(|part| part.rows).sum()
    }

    /// The bytes a spool record holds.
    pub fn encode(&self) -> Vec<u8> {
        let bytes: usize = self
            .parts
            .iter()
            .map(|p| p.tuples.len() + p.shard.len() + 10)
            .sum();
        let mut out = Vec::with_capacity(32 + self.table.len() + bytes + 10 * self.supersedes.len());
        out.push(LAYOUT);
        out.extend_from_slice(self.write_id.as_bytes());
        put_name(&mut out, &self.table);
        put_u32(&mut out, self.supersedes.len());
        for superseded in &self.supersedes {
            out.extend_from_slice(&superseded.seq.0.to_le_bytes());
            out.extend_from_slice(&superseded.part.to_le_bytes());
        }
        match &self.replays {
            None => out.push(0),
            Some(replayed) => {
                out.push(1);
                out.extend_from_slice(replayed.spool.as_bytes());
                out.extend_from_slice(&replayed.seq.to_le_bytes());
                out.extend_from_slice(&replayed.part.to_le_bytes());
            }
        }
        out.extend_from_slice(&self.routed_at.map_or(0, |epoch| epoch.0).to_le_bytes());
        match &self.key {
            None => out.push(0),
            Some(key) => {
                out.push(1);
                put_name(&mut out, &key.key);
                out.extend_from_slice(&key.fingerprint);
            }
        }
        put_u32(&mut out, self.parts.len());
        for part in &self.parts {
            put_name(&mut out, &part.shard);
            put_u32(&mut out, part.rows);
            put_u32(&mut out, part.tuples.len());
            out.extend_from_slice(&part.tuples);
        }
        out
    }

    /// Reads a spooled write back from a spool record's bytes.
    pub fn decode(bytes: Bytes) -> Result<SpooledWrite, MalformedWrite> {
        let mut reader = Reader { bytes, at: 0 };
        let layout = reader.take(1)?[0];
        if !(2..=LAYOUT).contains(&layout) {
            return Err(MalformedWrite("unknown layout"));
        }
        let write_id = Uuid::from_slice(&reader.take(16)?).expect("sixteen bytes");
        let table = reader.name()?;
        let supersedes = (0..reader.u32()?)
            .map(|_| {
                Ok(PartRef {
                    seq: RecordSeq(u64::from_le_bytes(reader.array()?)),
                    part: u16::from_le_bytes(reader.array()?),
                })
            })
            .collect::<Result<_, MalformedWrite>>()?;
        let replays = match layout {
            2 => None,
            _ => match reader.take(1)?[0] {
                0 => None,
                1 => Some(ReplayedPart {
                    spool: Uuid::from_slice(&reader.take(16)?).expect("sixteen bytes"),
                    seq: u64::from_le_bytes(reader.array()?),
                    part: u16::from_le_bytes(reader.array()?),
                }),
                _ => return Err(MalformedWrite("unknown replay flag")),
            },
        };
        let routed_at = match layout {
            2 | 3 => None,
            _ => Some(Epoch(i64::from_le_bytes(reader.array()?))).filter(|epoch| epoch.0 > 0),
        };
        let key = match layout {
            2..=4 => None,
            _ => match reader.take(1)?[0] {
                0 => None,
                1 => Some(SpooledKey {
                    key: reader.name()?,
                    fingerprint: reader.array()?,
                }),
                _ => return Err(MalformedWrite("unknown key flag")),
            },
        };
        let parts = (0..reader.u32()?)
            .map(|_| {
                let shard = reader.name()?;
                let rows = reader.u32()?;
                let len = reader.u32()?;
                let tuples = reader.take(len)?;
                Ok(SpooledPart { shard, rows, tuples })
            })
            .collect::<Result<_, MalformedWrite>>()?;
        if reader.at != reader.bytes.len() {
            return Err(MalformedWrite("bytes after the last part"));
        }
        Ok(SpooledWrite {
            write_id,
            table,
            parts,
            supersedes,
            replays,
            routed_at,
            key,
        })
    }
}

impl SpooledPart {
    /// Where the part's rows belong under `routing`, the snapshot in force when it is drained,
    /// in one walk over its tuples: when its shard owns them, the tuples to write with that
    /// snapshot (for a table that stores the routing epoch, a copy carrying this one;
    /// otherwise the part's own bytes). A part made with `routing` itself (its record's
    /// `routed_at`), which has no range being copied, is its shard's as it is, without a walk.
    pub fn placement(
        &self,
        table: &TableSchema,
        routing: &RoutingTable,
        routed_at: Option<Epoch>,
    ) -> Result<Placement, MalformedWrite> {
        let Some(index) = routing.shards.iter().position(|s| s.0 == self.shard) else {
            return Ok(Placement::Moved);
        };
        if routed_at == Some(routing.epoch) && routing.moving.is_empty() {
            return Ok(Placement::Owned(ShardIndex(index), self.tuples.clone()));
        }
        let mut patched = table.id.is_none().then(|| self.tuples.to_vec());
        let (mut moving, mut rows, mut start) = (0, 0, 0);
        for tuple in self.tuples(table) {
            let tuple = tuple?;
            let (owner, also) = routing.place_position(tuple.position);
            if owner.0 != index {
                return Ok(Placement::Moved);
            }
            moving += usize::from(also.is_some());
            if let (Some(out), Some(at)) = (&mut patched, tuple.epoch_at) {
                out[start + at..start + at + 8].copy_from_slice(&routing.epoch.0.to_be_bytes());
            }
            start += tuple.bytes.len();
            rows += 1;
        }
        if rows != self.rows {
            return Err(MalformedWrite("row count does not match its tuples"));
        }
        Ok(match moving {
            0 => {
                let tuples = patched.map_or_else(|| self.tuples.clone(), Bytes::from);
                Placement::Owned(ShardIndex(index), tuples)
            }
            all if all == rows => Placement::Moving,
            _ => Placement::PartlyMoving,
        })
    }

    /// The part's rows split by the shards owning them under `routing`, each row once (a
    /// range's copy target is not given a copy), and each shard's rows in a range being copied
    /// apart from its others, so those can be written before the cutover.
    pub fn split(
        &self,
        table: &TableSchema,
        routing: &RoutingTable,
    ) -> Result<Vec<SpooledPart>, MalformedWrite> {
        // Per shard: its rows outside ranges being copied, then those inside.
        let mut by_shard: Vec<[(Vec<u8>, usize); 2]> =
            routing.shards.iter().map(|_| Default::default()).collect();
        for tuple in self.tuples(table) {
            let tuple = tuple?;
            let (owner, also) = routing.place_position(tuple.position);
            let (tuples, rows) = &mut by_shard[owner.0][usize::from(also.is_some())];
            tuples.extend_from_slice(tuple.bytes);
            *rows += 1;
        }
        self.check(table)?;
        Ok(by_shard
            .into_iter()
            .zip(&routing.shards)
            .flat_map(|(groups, shard)| groups.into_iter().map(move |group| (group, shard)))
            .filter(|((_, rows), _)| *rows > 0)
            .map(|((tuples, rows), shard)| SpooledPart {
                shard: shard.0.clone(),
                rows,
                tuples: tuples.into(),
            })
            .collect())
    }

    /// The part cut in two, each half with about half of its rows (to isolate a row the shard
    /// refuses); a part of one row cannot be cut.
    pub fn halves(&self, table: &TableSchema) -> Result<Option<(SpooledPart, SpooledPart)>, MalformedWrite> {
        if self.rows < 2 {
            return Ok(None);
        }
        let mut cut = 0;
        for tuple in self.tuples(table).take(self.rows / 2) {
            cut += tuple?.bytes.len();
        }
        let half = |tuples: Bytes, rows| SpooledPart {
            shard: self.shard.clone(),
            rows,
            tuples,
        };
        Ok(Some((
            half(self.tuples.slice(..cut), self.rows / 2),
            half(self.tuples.slice(cut..), self.rows - self.rows / 2),
        )))
    }

    /// The declared columns' values of the part's first row, as binary COPY fields (`None`
    /// for NULL).
    pub fn first_row_fields(&self, table: &TableSchema) -> Result<Vec<Option<&[u8]>>, MalformedWrite> {
        let tuple = self
            .tuples(table)
            .next()
            .ok_or(MalformedWrite("part has no row"))??;
        let mut fields = Vec::with_capacity(table.columns.len());
        let mut at = 2;
        for _ in 0..table.columns.len() {
            let len = i32::from_be_bytes(tuple.bytes[at..at + 4].try_into().expect("four bytes"));
            at += 4;
            match usize::try_from(len) {
                Ok(len) => {
                    fields.push(Some(&tuple.bytes[at..at + len]));
                    at += len;
                }
                Err(_) => fields.push(None),
            }
        }
        Ok(fields)
    }

    fn tuples<'a>(&'a self, table: &TableSchema) -> Tuples<'a> {
        Tuples::new(&self.tuples, table)
    }

    /// Checks every tuple is whole and their count is the part's.
    fn check(&self, table: &TableSchema) -> Result<(), MalformedWrite> {
        let mut rows = 0;
        for tuple in self.tuples(table) {
            tuple?;
            rows += 1;
        }
        if rows != self.rows {
            return Err(MalformedWrite("row count does not match its tuples"));
        }
        Ok(())
    }
}

fn put_name(out: &mut Vec<u8>, name: &str) {
    let len = u16::try_from(name.len()).expect("table and shard names are short");
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(name.as_bytes());
}

fn put_u32(out: &mut Vec<u8>, n: usize) {
    out.extend_from_slice(&u32::try_from(n).expect("a request's sizes fit u32").to_le_bytes());
}

/// Reads a spooled write's fields in order.
struct Reader {
    bytes: Bytes,
    at: usize,
}

impl Reader {
    fn take(&mut self, n: usize) -> Result<Bytes, MalformedWrite> {
        let end = self.at.checked_add(n).filter(|end| *end <= self.bytes.len());
        let end = end.ok_or(MalformedWrite("cut short"))?;
        let taken = self.bytes.slice(self.at..end);
        self.at = end;
        Ok(taken)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], MalformedWrite> {
        Ok(self.take(N)?[..].try_into().expect("N bytes"))
    }

    fn u32(&mut self) -> Result<usize, MalformedWrite> {
        Ok(u32::from_le_bytes(self.array()?) as usize)
    }

    fn name(&mut self) -> Result<String, MalformedWrite> {
        let len = u16::from_le_bytes(self.array()?);
        let bytes = self.take(len.into())?;
        String::from_utf8(bytes.to_vec()).map_err(|_| MalformedWrite("a name is not UTF-8"))
    }
}

#[cfg(test)]
mod tests;
