//! Walking a table in runs of heap blocks: `ctid` bounds that Postgres (14 and newer) answers
//! with a TID range scan, reading only those blocks, in order. A pass over a table this way
//! needs no index and reads it sequentially, once, whatever the ranges it looks for.

use super::{BackfillError, Side};
use crate::pgtype::quote_ident;
use crate::schema::TableSchema;

/// Fewest and most blocks one chunk reads.
const BLOCKS_PER_CHUNK: (i64, i64) = (1, 8_192);
/// Blocks the first chunk reads, before the rows per block are known.
const FIRST_CHUNK_BLOCKS: i64 = 16;

/// A pass over the blocks `[next, end)` of a table, in chunks sized so each holds about the
/// number of rows asked for, judged from the chunks before.
#[derive(Debug, Clone)]
pub struct BlockChunks {
    next: i64,
    end: i64,
    blocks_seen: i64,
    rows_seen: i64,
    last_blocks: i64,
}

impl BlockChunks {
    /// A pass from block `next` up to, not including, block `end`.
    pub fn new(next: i64, end: i64) -> BlockChunks {
        BlockChunks {
            next,
            end,
            blocks_seen: 0,
            rows_seen: 0,
            last_blocks: 0,
        }
    }

    /// The first block not passed yet.
    pub fn next_block(&self) -> i64 {
        self.next
    }

    /// Blocks of the pass: passed and in all.
    pub fn progress(&self) -> (i64, i64) {
        (self.next.min(self.end), self.end)
    }

    /// The blocks `[from, to)` of the next chunk, aiming at `rows` matching rows, or `None`
    /// once the pass is over.
    pub fn next_chunk(&self, rows: usize) -> Option<(i64, i64)> {
        if self.next >= self.end {
            return None;
        }
        let blocks = if self.rows_seen == 0 {
            (self.last_blocks * 2).max(FIRST_CHUNK_BLOCKS)
        } else {
            (rows as i64).saturating_mul(self.blocks_seen) / self.rows_seen
        };
        let blocks = blocks.clamp(BLOCKS_PER_CHUNK.0, BLOCKS_PER_CHUNK.1);
        Some((self.next, self.next.saturating_add(blocks).min(self.end)))
    }

    /// Marks the chunk `[from, to)` passed, with the `rows` it matched.
    pub fn passed(&mut self, (from, to): (i64, i64), rows: usize) {
        self.next = to;
        self.last_blocks = to - from;
        self.blocks_seen += to - from;
        self.rows_seen += rows as i64;
    }
}

/// The condition that keeps the rows stored in blocks `[from, to)`.
pub fn in_blocks((from, to): (i64, i64)) -> String {
    format!("ctid >= '({from},0)'::tid AND ctid < '({to},0)'::tid")
}

/// How many blocks `table` has on `side` now.
pub async fn table_blocks(side: Side<'_>, table: &TableSchema) -> Result<i64, BackfillError> {
    let client = side.client().await?;
    let row = client
        .query_one(
            "SELECT pg_relation_size($1::text::regclass) / current_setting('block_size')::bigint",
            &[&quote_ident(&table.name)],
        )
        .await
        .map_err(|cause| side.failed(cause))?;
    Ok(row.get(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_grow_until_rows_are_seen_then_aim_at_the_rows_asked_for() {
        let mut pass = BlockChunks::new(0, 100_000);
        let first = pass.next_chunk(1_000).unwrap();
        assert_eq!(first, (0, FIRST_CHUNK_BLOCKS));
        pass.passed(first, 0);
        let second = pass.next_chunk(1_000).unwrap();
        assert_eq!(second, (16, 48), "nothing matched: twice as many blocks");
        pass.passed(second, 480);
        // 480 rows in 48 blocks: 10 a block, so 100 blocks for 1 000 rows.
        assert_eq!(pass.next_chunk(1_000), Some((48, 148)));
    }

    #[test]
    fn the_last_chunk_stops_at_the_end_and_then_there_is_none() {
        let mut pass = BlockChunks::new(90, 100);
        let chunk = pass.next_chunk(1_000_000).unwrap();
        assert_eq!(chunk, (90, 100));
        pass.passed(chunk, 5);
        assert_eq!(pass.next_chunk(10), None);
        assert_eq!(pass.progress(), (100, 100));
    }

    #[test]
    fn a_chunk_reads_at_least_one_block_and_at_most_the_cap() {
        let mut pass = BlockChunks::new(0, 1_000_000);
        pass.passed((0, 10), 1_000_000);
        assert_eq!(pass.next_chunk(1), Some((10, 11)));
        let mut sparse = BlockChunks::new(0, 1_000_000);
        sparse.passed((0, 10), 1);
        assert_eq!(sparse.next_chunk(1_000_000), Some((10, 10 + BLOCKS_PER_CHUNK.1)));
    }

    #[test]
    fn bounds_are_tid_literals() {
        assert_eq!(in_blocks((3, 9)), "ctid >= '(3,0)'::tid AND ctid < '(9,0)'::tid");
    }
}
