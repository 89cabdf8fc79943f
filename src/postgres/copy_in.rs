//! One `COPY ... FROM STDIN` in progress: the stream cut into chunks of whole records, each
//! chunk decoded and queued like a request of its own, and the answer (`COPY n`) sent once
//! every chunk committed.
//!
//! Memory stays bounded whatever the stream's size: a chunk is queued as soon as it holds
//! [`ChunkLimits`] worth of records, however the client cut its messages, and queueing waits
//! while a shard's queue is full, so the session stops reading its socket and TCP pushes back
//! on the client. Chunks commit independently, as
//! batches of the shards' group commit: a refusal ends the COPY with the count of rows that
//! committed before it.

use super::block::BlockStage;
use super::errors::{self, CopyPlace, user_error};
use super::keyed::{self, SessionKey};
use crate::config::AckMode;
use crate::ingest::idempotent::KeyedAck;
use crate::ingest::keys::IdempotencyKey;
use crate::ingest::write::{WriteAck, WriteRefused, Writes};
use crate::schema::decode::copy::{CopyFormat, CopyKind, RecordScan, binary_header_len};
use crate::schema::{TableId, Tables};
use futures_util::FutureExt;
use futures_util::future::BoxFuture;
use futures_util::stream::{FuturesUnordered, StreamExt};
use pgwire::error::{ErrorInfo, PgWireResult};
use std::sync::Arc;

/// Bytes of a stream decoded and queued at once, at most: about 2,500 rows of the example
/// table, half a batch, so one COPY fills batches while the next chunk is read.
const MAX_CHUNK_BYTES: usize = 1 << 20;

/// How much of a stream one chunk holds: little enough that any chunk fits every shard's
/// queue whatever its rows' placement (a chunk's tuples are larger than its text).
#[derive(Debug, Clone, Copy)]
pub struct ChunkLimits {
    /// Bytes of the stream.
    pub bytes: usize,
    /// Records.
    pub records: usize,
}

impl ChunkLimits {
    /// The chunk for queues of `max_rows` rows and `max_bytes` bytes: at most a quarter of
    /// their bytes and half their rows.
    pub fn for_queues(max_rows: usize, max_bytes: usize) -> ChunkLimits {
        ChunkLimits {
            bytes: (max_bytes / 4).clamp(1, MAX_CHUNK_BYTES),
            records: (max_rows / 2).max(1),
        }
    }
}

/// Where a COPY's rows go, and how its stream spells them.
pub struct CopyTarget {
    /// The table.
    pub table: TableId,
    /// How records are spelled.
    pub format: Arc<CopyFormat>,
    /// The table's columns the fields fill, in order.
    pub columns: Vec<usize>,
    /// Whether the first record is a header.
    pub header: bool,
}

/// A COPY whose stream is being read.
pub struct CopyIn {
    target: CopyTarget,
    tables: Arc<Tables>,
    writes: Arc<Writes>,
    limits: ChunkLimits,
    /// Bytes received and not yet queued; whole records end at `cut`, and there are
    /// `records` of them.
    buffer: Vec<u8>,
    cut: usize,
    records: usize,
    scan: RecordScan,
    /// Whether the header record is still to be skipped.
    header_pending: bool,
    /// Whether the binary format's signature is still to be read.
    binary_header_pending: bool,
    /// Lines of the stream before `buffer` (the header included).
    lines_before: usize,
    /// Chunks queued and not yet answered.
    in_flight: FuturesUnordered<BoxFuture<'static, Result<WriteAck, WriteRefused>>>,
    /// Rows whose chunks committed, or were staged in `block`.
    committed: usize,
    /// The transaction block the COPY runs in, which holds its rows until `COMMIT`.
    block: Option<BlockStage>,
    /// The session's idempotency key: outside a block, each chunk is a keyed write.
    key: Arc<SessionKey>,
}

impl CopyIn {
    /// A COPY into `target`, through `writes`, or staged in `block` when it runs in one;
    /// outside a block, each chunk is written under the session's `key` when it has one.
    pub fn new(
        target: CopyTarget,
        tables: Arc<Tables>,
        writes: Arc<Writes>,
        limits: ChunkLimits,
        (block, key): (Option<BlockStage>, Arc<SessionKey>),
    ) -> CopyIn {
        CopyIn {
            header_pending: target.header,
            binary_header_pending: target.format.kind == CopyKind::Binary,
            target,
            tables,
            writes,
            limits,
            buffer: Vec::new(),
            cut: 0,
            records: 0,
            scan: RecordScan::default(),
            lines_before: 0,
            in_flight: FuturesUnordered::new(),
            committed: 0,
            block,
            key,
        }
    }

    /// Takes one `CopyData` message; queues a chunk each time whole records fill one.
    pub async fn data(&mut self, bytes: &[u8]) -> PgWireResult<()> {
        self.buffer.extend_from_slice(bytes);
        if self.binary_header_pending && !self.take_binary_header()? {
            return Ok(());
        }
        let format = Arc::clone(&self.target.format);
        while let Some(end) = format.record_end(&self.buffer[self.cut..], &mut self.scan) {
            self.cut += end;
            self.records += 1;
            if self.header_pending {
                self.buffer.drain(..self.cut);
                (self.cut, self.records) = (0, 0);
                self.header_pending = false;
                self.lines_before += 1;
            }
            if self.cut >= self.limits.bytes || self.records >= self.limits.records {
                self.queue_whole_records().await?;
            }
        }
        self.reap()
    }

    /// Checks and drops the binary format's header once it has arrived; false while it has
    /// not all arrived.
    fn take_binary_header(&mut self) -> PgWireResult<bool> {
        match binary_header_len(&self.buffer) {
            Ok(Some(len)) => {
                self.buffer.drain(..len);
                self.binary_header_pending = false;
                Ok(true)
            }
            Ok(None) => Ok(false),
            Err(reason) => {
                let table = &self.tables.get(self.target.table).name;
                let mut info = errors::error(crate::pgtype::sqlstate::BAD_COPY_FILE_FORMAT, reason);
                info.where_context = Some(format!("COPY {table}, line 0"));
                Err(user_error(info))
            }
        }
    }

    /// The end of the stream: queues what is left (a last record may lack its newline),
    /// waits for every chunk and returns the rows copied, and the block they are staged in.
    pub async fn done(mut self) -> PgWireResult<(usize, Option<BlockStage>)> {
        if self.binary_header_pending && !self.buffer.is_empty() && !self.take_binary_header()? {
            let mut info = errors::error(
                crate::pgtype::sqlstate::BAD_COPY_FILE_FORMAT,
                "invalid COPY file header (missing length)",
            );
            info.detail = Some("the stream ended inside the binary format's header".into());
            return Err(user_error(info));
        }
        if self.header_pending && !self.buffer.is_empty() {
            self.buffer.clear();
            self.lines_before += 1;
        }
        self.queue_whole_records().await?;
        self.cut = self.buffer.len();
        self.queue_whole_records().await?;
        while let Some(outcome) = self.in_flight.next().await {
            self.count(outcome)?;
        }
        Ok((self.committed, self.block))
    }

    /// Decodes and queues the whole records received, waiting for room in full queues.
    async fn queue_whole_records(&mut self) -> PgWireResult<()> {
        if self.cut == 0 {
            return Ok(());
        }
        if self.block.is_some() {
            return self.stage_whole_records().await;
        }
        if let Some(key) = self.key.next() {
            return self.write_keyed_records(&key).await;
        }
        if self.tables.get(self.target.table).ack == AckMode::Spool {
            return self.spool_whole_records().await;
        }
        let (table, schema) = (self.target.table, self.tables.get(self.target.table));
        let chunk = &self.buffer[..self.cut];
        let submitted = self
            .writes
            .submit_copy(table, schema, &self.target.format, &self.target.columns, chunk)
            .await;
        let submitted = match submitted {
            Ok(submitted) => submitted,
            Err(refusal) => return Err(user_error(self.refused(&refusal).await)),
        };
        self.lines_before += submitted.rows();
        self.in_flight.push(submitted.committed().boxed());
        self.buffer.drain(..self.cut);
        (self.cut, self.records) = (0, 0);
        Ok(())
    }

    /// Decodes the whole records received into a spool record, and waits until the spool's
    /// disk holds it.
    async fn spool_whole_records(&mut self) -> PgWireResult<()> {
        let (table, schema) = (self.target.table, self.tables.get(self.target.table));
        let chunk = &self.buffer[..self.cut];
        let target = &self.target;
        let spooled = match self
            .writes
            .spool_copy(table, schema, &target.format, &target.columns, chunk)
        {
            Ok(spooling) => spooling.durable().await,
            Err(refusal) => Err(refusal),
        };
        let ack = spooled.map_err(|refusal| user_error(self.place_error(&refusal, self.lines_before + 1)))?;
        self.lines_before += ack.rows;
        self.committed += ack.rows;
        self.buffer.drain(..self.cut);
        (self.cut, self.records) = (0, 0);
        Ok(())
    }

    /// Writes the whole records received as one keyed write, once the chunks before them
    /// are answered, and waits until it is committed (or spooled).
    async fn write_keyed_records(&mut self, key: &IdempotencyKey) -> PgWireResult<()> {
        while let Some(outcome) = self.in_flight.next().await {
            self.count(outcome)?;
        }
        let (table, schema) = (self.target.table, self.tables.get(self.target.table));
        let target = &self.target;
        let chunk = &self.buffer[..self.cut];
        let spelled = format!("{:?}", target.format);
        let fingerprint = keyed::fingerprint(&schema.name, "copy", &target.columns, &spelled, chunk);
        let written = self
            .writes
            .write_keyed_copy(
                (table, schema),
                (&target.format, &target.columns),
                chunk,
                (key, fingerprint),
            )
            .await;
        let rows = match written {
            Ok(KeyedAck::Committed { ack, .. }) => ack.rows,
            Ok(KeyedAck::Spooled { ack, .. }) => ack.rows,
            Err(refusal) => return Err(user_error(self.place_error(&refusal, self.lines_before + 1))),
        };
        self.lines_before += rows;
        self.committed += rows;
        self.buffer.drain(..self.cut);
        (self.cut, self.records) = (0, 0);
        Ok(())
    }

    /// Checks the whole records received and stages them in the block.
    async fn stage_whole_records(&mut self) -> PgWireResult<()> {
        let target = &self.target;
        let chunk = &self.buffer[..self.cut];
        let schema = self.tables.get(target.table);
        let rows = match self
            .writes
            .check_copy(schema, &target.format, &target.columns, chunk)
        {
            Ok(rows) => rows,
            Err(refusal) => return Err(user_error(self.place_error(&refusal, self.lines_before + 1))),
        };
        let block = self.block.as_mut().expect("only a COPY in a block stages");
        block
            .copy(target.table, &target.format, &target.columns, chunk, rows)
            .await?;
        self.lines_before += rows;
        self.committed += rows;
        self.buffer.drain(..self.cut);
        (self.cut, self.records) = (0, 0);
        Ok(())
    }

    /// Counts the chunks answered so far without waiting for the others.
    fn reap(&mut self) -> PgWireResult<()> {
        while let Some(Some(outcome)) = self.in_flight.next().now_or_never() {
            self.count(outcome)?;
        }
        Ok(())
    }

    fn count(&mut self, outcome: Result<WriteAck, WriteRefused>) -> PgWireResult<()> {
        match outcome {
            Ok(ack) => {
                self.committed += ack.rows;
                Ok(())
            }
            Err(refusal) => Err(user_error(self.place_error(&refusal, self.lines_before + 1))),
        }
    }

    /// The error of a chunk refused before it was queued, once the chunks before it were
    /// answered (so the count of committed rows is final).
    async fn refused(&mut self, refusal: &WriteRefused) -> ErrorInfo {
        while let Some(outcome) = self.in_flight.next().await {
            if let Ok(ack) = outcome {
                self.committed += ack.rows;
            }
        }
        self.place_error(refusal, self.lines_before + 1)
    }

    fn place_error(&self, refusal: &WriteRefused, line: usize) -> ErrorInfo {
        let schema = self.tables.get(self.target.table);
        let place = CopyPlace {
            table: &schema.name,
            line,
            committed: self.block.is_none().then_some(self.committed),
            resend: errors::Resend::of(schema, self.key.is_set()),
        };
        errors::copy_refused(refusal, &place)
    }
}
