//! A transaction block's rows, held from the statement that wrote them to the block's `COMMIT`.
//!
//! Each statement's rows are checked when it runs, so a bad row fails that statement as in
//! Postgres, then staged as bytes: in memory while the block is small, in an unlinked file
//! of `postgres.block_dir` once it passes [`MEMORY_BYTES`], so a block of any size (a 10 GB
//! COPY that psycopg wraps in a block) holds bounded memory. `COMMIT` reads the rows back in
//! order and writes them through the group commit with the routing of that moment, waiting
//! for room in full queues, and is answered once every row committed (or, for a table with
//! `ack = "spool"`, is on the spool's disk). `ROLLBACK` drops them.

use super::errors::{self, refused, user_error};
use super::insert::{BoundInsert, staged_rows};
use super::keyed::{self, SessionKey};
use super::pending::{Pending, Refused};
use crate::config::AckMode;
use crate::ingest::idempotent::KeyedAck;
use crate::ingest::keys::IdempotencyKey;
use crate::ingest::write::{WriteRefused, Writes};
use crate::schema::decode::copy::CopyFormat;
use crate::schema::decode::values::ValueColumns;
use crate::schema::{TableId, Tables};
use futures_util::stream::{FuturesUnordered, StreamExt};
use pgwire::error::{PgWireError, PgWireResult};
use std::io::SeekFrom;
use std::path::PathBuf;
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};

/// Bytes a block stages in memory; past them its rows move to a file.
pub const MEMORY_BYTES: usize = 4 << 20;

/// Keyed statements of a block written at once at its `COMMIT`, at most.
const KEYED_IN_FLIGHT: usize = 64;

/// Where blocks spill, and how much one may hold.
#[derive(Debug, Clone)]
pub struct BlockLimits {
    /// The directory of the files of large blocks.
    pub dir: PathBuf,
    /// Most bytes one block may stage.
    pub max_bytes: u64,
}

/// The rows of one open block.
pub struct BlockStage {
    limits: Arc<BlockLimits>,
    statements: Vec<Staged>,
    /// The staged bytes, while they fit in memory.
    memory: Vec<u8>,
    /// The file holding every staged byte, once the block outgrew memory.
    file: Option<tokio::fs::File>,
    /// Bytes staged.
    len: u64,
    /// Rows staged.
    rows: usize,
}

/// One statement's rows and where their bytes are.
struct Staged {
    source: Source,
    offset: u64,
    len: usize,
}

/// How a statement's staged bytes spell its rows.
enum Source {
    /// An `INSERT`'s values, as [`BoundInsert::stage`] writes them.
    Insert { table: TableId, columns: Vec<usize> },
    /// Whole records of a COPY stream.
    Copy {
        table: TableId,
        format: Arc<CopyFormat>,
        columns: Vec<usize>,
    },
}

impl BlockStage {
    /// An empty block that spills and stops as `limits` say.
    pub fn new(limits: Arc<BlockLimits>) -> BlockStage {
        BlockStage {
            limits,
            statements: Vec::new(),
            memory: Vec::new(),
            file: None,
            len: 0,
            rows: 0,
        }
    }

    /// Stages an `INSERT`'s rows, checked already.
    pub async fn insert(&mut self, insert: &BoundInsert) -> PgWireResult<()> {
        let mut bytes = Vec::new();
        insert.stage(&mut bytes);
        let source = Source::Insert {
            table: insert.table(),
            columns: insert.columns().to_vec(),
        };
        self.stage(source, &bytes, insert.rows()).await
    }

    /// Stages `rows` whole records of a COPY into `table`, checked already.
    pub async fn copy(
        &mut self,
        table: TableId,
        format: &Arc<CopyFormat>,
        columns: &[usize],
        records: &[u8],
        rows: usize,
    ) -> PgWireResult<()> {
        let source = Source::Copy {
            table,
            format: Arc::clone(format),
            columns: columns.to_vec(),
        };
        self.stage(source, records, rows).await
    }

    async fn stage(&mut self, source: Source, bytes: &[u8], rows: usize) -> PgWireResult<()> {
        if self.len + bytes.len() as u64 > self.limits.max_bytes {
            return Err(refused(
                errors::PROGRAM_LIMIT_EXCEEDED,
                format!(
                    "the transaction block holds more than postgres.max_block_size ({}) of rows until its COMMIT; commit more often",
                    bytesize::ByteSize(self.limits.max_bytes)
                ),
            ));
        }
        if self.file.is_none() && self.memory.len() + bytes.len() > MEMORY_BYTES {
            self.spill().await?;
        }
        match &mut self.file {
            Some(file) => file.write_all(bytes).await.map_err(stage_failed)?,
            None => self.memory.extend_from_slice(bytes),
        }
        self.statements.push(Staged {
            source,
            offset: self.len,
            len: bytes.len(),
        });
        self.len += bytes.len() as u64;
        self.rows += rows;
        Ok(())
    }

    /// Moves the bytes staged so far into a new unlinked file, where the rest will go.
    async fn spill(&mut self) -> PgWireResult<()> {
        let dir = self.limits.dir.clone();
        let file = tokio::task::spawn_blocking(move || tempfile::tempfile_in(dir))
            .await
            .expect("creating a file does not panic")
            .map_err(stage_failed)?;
        let mut file = tokio::fs::File::from_std(file);
        file.write_all(&self.memory).await.map_err(stage_failed)?;
        self.memory = Vec::new();
        self.file = Some(file);
        Ok(())
    }

    /// Writes every staged row, statement by statement, and returns how many committed.
    /// A refusal stops the queueing of the statements after it. While the session has an
    /// idempotency `key`, each statement is a keyed write of its own ([`BlockStage::commit_keyed`]).
    pub async fn commit(mut self, tables: &Tables, writes: &Writes, key: &SessionKey) -> PgWireResult<usize> {
        if key.is_set() {
            return self.commit_keyed(tables, writes, key).await;
        }
        let mut pending = Pending::default();
        let mut bytes = Vec::new();
        let statements = std::mem::take(&mut self.statements);
        for staged in &statements {
            self.read(staged, &mut bytes).await?;
            let table = staged.source.table();
            if tables.get(table).ack == AckMode::Spool {
                match spool(&staged.source, tables, writes, &bytes).await {
                    Ok(rows) => pending.acknowledged(rows),
                    Err(refusal) => pending.refuse(table, refusal, 0),
                }
                if pending.has_refusal() {
                    break;
                }
                continue;
            }
            let submitted = match &staged.source {
                Source::Insert { columns, .. } => {
                    let rows = staged_rows(&bytes);
                    let rows = rows.iter().map(Vec::as_slice);
                    let columns = ValueColumns {
                        filled: columns,
                        returning: &[],
                    };
                    writes
                        .submit_values_waiting(table, tables.get(table), columns, rows)
                        .await
                }
                Source::Copy { format, columns, .. } => {
                    writes
                        .submit_copy(table, tables.get(table), format, columns, &bytes)
                        .await
                }
            };
            match submitted {
                Ok(submitted) => pending.push(table, submitted),
                Err(refusal) => pending.refuse(table, refusal, 0),
            }
            if pending.has_refusal() {
                break;
            }
        }
        let rows = self.rows;
        pending
            .settle()
            .await
            .map_err(|refused| commit_error(refused, tables, (rows, false)))
    }

    /// `COMMIT` while the session has an idempotency `key`: each statement is a keyed write
    /// of its own under the key's next number, in order, and up to [`KEYED_IN_FLIGHT`] of
    /// them are written at once, so they share the shards' group commits.
    async fn commit_keyed(
        mut self,
        tables: &Tables,
        writes: &Writes,
        key: &SessionKey,
    ) -> PgWireResult<usize> {
        let statements = std::mem::take(&mut self.statements);
        let mut pending = Pending::default();
        let mut in_flight = FuturesUnordered::new();
        for staged in &statements {
            let mut bytes = Vec::new();
            self.read(staged, &mut bytes).await?;
            let Some(numbered) = key.next() else { break };
            let table = staged.source.table();
            in_flight.push(async move {
                let written = write_keyed(&staged.source, tables, writes, &bytes, &numbered).await;
                (table, written)
            });
            if in_flight.len() >= KEYED_IN_FLIGHT
                && let Some((table, written)) = in_flight.next().await
            {
                pending.keyed(table, written);
            }
            if pending.has_refusal() {
                break;
            }
        }
        while let Some((table, written)) = in_flight.next().await {
            pending.keyed(table, written);
        }
        let rows = self.rows;
        pending
            .settle()
            .await
            .map_err(|refused| commit_error(refused, tables, (rows, true)))
    }

    /// Reads one statement's staged bytes into `bytes`.
    async fn read(&mut self, staged: &Staged, bytes: &mut Vec<u8>) -> PgWireResult<()> {
        bytes.clear();
        let Some(file) = &mut self.file else {
            let at = staged.offset as usize;
            bytes.extend_from_slice(&self.memory[at..at + staged.len]);
            return Ok(());
        };
        bytes.resize(staged.len, 0);
        file.seek(SeekFrom::Start(staged.offset))
            .await
            .map_err(stage_failed)?;
        file.read_exact(bytes).await.map_err(stage_failed)?;
        Ok(())
    }
}

impl Source {
    fn table(&self) -> TableId {
        match self {
            Source::Insert { table, .. } | Source::Copy { table, .. } => *table,
        }
    }
}

/// The error of a `COMMIT` whose writes were `refused`, of a block of `rows` rows, written
/// under an idempotency key or not (`keyed`).
fn commit_error(refused: Refused, tables: &Tables, (rows, keyed): (usize, bool)) -> PgWireError {
    let schema = tables.get(refused.table);
    let mut info = errors::write_refused(&refused.refusal, &schema.name);
    let resend = errors::Resend::of(schema, keyed);
    info.detail = Some(errors::commit_detail(refused.committed, rows, resend));
    user_error(info)
}

/// Writes one staged statement's rows as a keyed write and waits until they are committed
/// (or spooled); the rows written, now or before.
async fn write_keyed(
    source: &Source,
    tables: &Tables,
    writes: &Writes,
    bytes: &[u8],
    key: &IdempotencyKey,
) -> Result<usize, WriteRefused> {
    let table = source.table();
    let schema = tables.get(table);
    let ack = match source {
        Source::Insert { columns, .. } => {
            let fingerprint = keyed::fingerprint(&schema.name, "insert", columns, "", bytes);
            let rows = staged_rows(bytes);
            let columns = ValueColumns {
                filled: columns,
                returning: &[],
            };
            let rows = rows.iter().map(Vec::as_slice);
            writes
                .write_keyed_values((table, schema), columns, rows, (key, fingerprint))
                .await?
        }
        Source::Copy { format, columns, .. } => {
            let spelled = format!("{format:?}");
            let fingerprint = keyed::fingerprint(&schema.name, "copy", columns, &spelled, bytes);
            writes
                .write_keyed_copy((table, schema), (format, columns), bytes, (key, fingerprint))
                .await?
        }
    };
    Ok(match ack {
        KeyedAck::Committed { ack, .. } => ack.rows,
        KeyedAck::Spooled { ack, .. } => ack.rows,
    })
}

/// Writes one staged statement's rows into the spool and waits until its disk holds them;
/// the rows spooled.
async fn spool(
    source: &Source,
    tables: &Tables,
    writes: &Writes,
    bytes: &[u8],
) -> Result<usize, WriteRefused> {
    let table = source.table();
    let spooling = match source {
        Source::Insert { columns, .. } => {
            let rows = staged_rows(bytes);
            let columns = ValueColumns {
                filled: columns,
                returning: &[],
            };
            writes.spool_values(table, tables.get(table), columns, rows.iter().map(Vec::as_slice))?
        }
        Source::Copy { format, columns, .. } => {
            writes.spool_copy(table, tables.get(table), format, columns, bytes)?
        }
    };
    Ok(spooling.durable().await?.rows)
}

fn stage_failed(error: std::io::Error) -> PgWireError {
    refused(
        "53100",
        format!("could not stage the transaction block's rows on disk: {error}"),
    )
}
