//! The spool's segment files and the log over them.
//!
//! A segment is named by the sequence number of its first record (`00000000000000000001.seg`)
//! and starts with a 16-byte header: the magic `SGSPOOL1` and that number again. Records are
//! appended to the newest segment, which is the only one a crash can leave with a torn tail;
//! when it would grow past the segment size, it is synced and a new one is started.
//!
//! Records are read back from the segment files mapped into memory, not copied to the heap:
//! a spool holding gigabytes for a shard that is down keeps them in the page cache, which the
//! kernel may reclaim, and reads them again when they are drained. Segments are only ever
//! appended to (a torn tail is cut at open, before anything is mapped), and no byte of a
//! record is written again once synced, so what a mapping shows of a synced record never
//! changes.

use super::SpoolError;
use super::lock::DirLock;
use super::record::{self, HEADER_LEN, MAX_PAYLOAD, Record, RecordSeq};
use bytes::Bytes;
use memmap2::MmapOptions;
use std::collections::{BTreeMap, VecDeque};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use uuid::Uuid;

const MAGIC: &[u8; 8] = b"SGSPOOL1";
/// The file holding the spool's id, which names its records on the shards.
const ID_FILE: &str = "spool.id";
const SEGMENT_HEADER_LEN: u64 = 16;
const EXTENSION: &str = "seg";

/// One segment file of the spool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentInfo {
    /// Its file.
    pub path: PathBuf,
    /// The sequence number of its first record.
    pub first: RecordSeq,
    /// One past the sequence number of its last record (`first` when it holds none).
    pub next: RecordSeq,
    /// Its size, header included, counting records appended but not yet synced.
    pub bytes: u64,
}

/// The end a crash left on the newest segment, and what was cut from it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TornTail {
    /// The segment that was cut.
    pub path: PathBuf,
    /// Where its first bad record started: the segment's length now.
    pub offset: u64,
    /// Bytes removed from there to the end of the file.
    pub bytes_cut: u64,
    /// What was wrong with the first bad record.
    pub reason: &'static str,
}

/// Where an appended record's payload lies: its segment (by first record) and the payload's
/// offset and length in the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordAt {
    /// The record's sequence number.
    pub seq: RecordSeq,
    segment: RecordSeq,
    offset: u64,
    len: usize,
}

/// What opening the spool found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recovery {
    /// Records the segments hold, all checked.
    pub records: u64,
    /// The torn tail cut from the newest segment, if there was one.
    pub torn_tail: Option<TornTail>,
}

/// The spool's log: appends records, makes them durable, reads them back and removes segments
/// whose records were all applied.
#[derive(Debug)]
pub struct SpoolLog {
    id: Uuid,
    dir: PathBuf,
    segment_bytes: u64,
    /// Oldest first; the last one is the segment records are appended to.
    segments: VecDeque<SegmentInfo>,
    active: File,
    /// Records encoded since the last sync, not yet written to `active`.
    pending: Vec<u8>,
    /// Whether a segment was created or removed since the directory was last synced.
    dir_changed: bool,
    /// Segments mapped into memory, by their first record; each mapping covers at least the
    /// records synced when it was made.
    maps: BTreeMap<RecordSeq, Bytes>,
    /// This process's hold on the directory, for as long as the log lives.
    _lock: DirLock,
}

impl SpoolLog {
    /// Opens the spool in `dir` (creating it when missing), checks every record of every
    /// segment and cuts a torn tail from the newest one. New segments start once the newest
    /// would grow past `segment_bytes`. Fails with [`SpoolError::InUse`], before reading
    /// anything, when another process (or another log in this one) holds the directory.
    pub fn open(dir: &Path, segment_bytes: u64) -> Result<(SpoolLog, Recovery), SpoolError> {
        std::fs::create_dir_all(dir).map_err(io_error(dir))?;
        let lock = DirLock::acquire(dir)?;
        let id = read_or_create_id(dir)?;
        let mut segments = VecDeque::new();
        let mut records = 0;
        let mut torn_tail = None;
        let names = segment_names(dir)?;
        for (i, (first, path)) in names.iter().enumerate() {
            let newest = i + 1 == names.len();
            let expected = segments.back().map(|s: &SegmentInfo| s.next).unwrap_or(*first);
            if *first != expected {
                return Err(corrupt(
                    path,
                    0,
                    "sequence numbers do not follow the segment before",
                ));
            }
            let scan = scan_segment(path, *first)?;
            if let Some((offset, reason)) = scan.bad {
                if !newest {
                    return Err(corrupt(path, offset, reason));
                }
                torn_tail = Some(cut_tail(path, *first, offset, reason)?);
            }
            records += scan.next.0 - first.0;
            segments.push_back(SegmentInfo {
                path: path.clone(),
                first: *first,
                next: scan.next,
                bytes: scan.valid_len.max(SEGMENT_HEADER_LEN),
            });
        }
        let active = match segments.back() {
            Some(segment) => open_for_append(&segment.path)?,
            None => {
                let segment = create_segment(dir, RecordSeq(1))?;
                let file = open_for_append(&segment.path)?;
                segments.push_back(segment);
                file
            }
        };
        let log = SpoolLog {
            id,
            dir: dir.to_path_buf(),
            segment_bytes,
            segments,
            active,
            pending: Vec::new(),
            dir_changed: true,
            maps: BTreeMap::new(),
            _lock: lock,
        };
        Ok((log, Recovery { records, torn_tail }))
    }

    /// Appends a record and returns its sequence number and place. It is durable, and may be
    /// read with [`synced_payload`], once [`sync`] returns.
    ///
    /// [`sync`]: SpoolLog::sync
    /// [`synced_payload`]: SpoolLog::synced_payload
    pub fn append(&mut self, payload: &[u8]) -> Result<RecordAt, SpoolError> {
        if payload.len() > MAX_PAYLOAD {
            return Err(SpoolError::RecordTooLarge {
                len: payload.len(),
                max: MAX_PAYLOAD,
            });
        }
        let record_len = (HEADER_LEN + payload.len()) as u64;
        let active = self.segments.back().expect("the log always has a segment");
        if active.next != active.first && active.bytes + record_len > self.segment_bytes {
            self.rotate()?;
        }
        let active = self.segments.back_mut().expect("the log always has a segment");
        let seq = active.next;
        let at = RecordAt {
            seq,
            segment: active.first,
            offset: active.bytes + HEADER_LEN as u64,
            len: payload.len(),
        };
        record::encode(seq, payload, &mut self.pending);
        active.next = seq.next();
        active.bytes += record_len;
        Ok(at)
    }

    /// The payload of a record appended and synced since, as its segment file holds it.
    pub fn synced_payload(&mut self, at: &RecordAt) -> Result<Bytes, SpoolError> {
        let end = at.offset + at.len as u64;
        let map = self.map(at.segment, end)?;
        Ok(map.slice(at.offset as usize..end as usize))
    }

    /// A mapping of segment `first` covering at least its first `end` bytes, which must be
    /// synced records. The newest segment is mapped past its end, up to the segment size, so
    /// one mapping serves the records still to come.
    fn map(&mut self, first: RecordSeq, end: u64) -> Result<Bytes, SpoolError> {
        if let Some(map) = self.maps.get(&first).filter(|map| map.len() as u64 >= end) {
            return Ok(map.clone());
        }
        let segment = self
            .segments
            .iter()
            .find(|segment| segment.first == first)
            .expect("a record's segment stays until its records are applied");
        let newest = self.segments.back().is_some_and(|s| s.first == first);
        let len = if newest { end.max(self.segment_bytes) } else { end };
        let file = File::open(&segment.path).map_err(io_error(&segment.path))?;
        // SAFETY: the file is one of this spool's segments, which only this process writes, and
        // only by appending: the bytes of synced records, the only ones read through the
        // mapping, never change, and a tail is cut only at open, before anything is mapped.
        // Pages past the file's end are mapped but never read.
        let map =
            unsafe { MmapOptions::new().len(len as usize).map(&file) }.map_err(io_error(&segment.path))?;
        let map = Bytes::from_owner(map);
        self.maps.insert(first, map.clone());
        Ok(map)
    }

    /// Writes every record appended so far and waits until the disk holds them (and the
    /// directory any segment created or removed). Records reach the files only here, so
    /// readers see synced records alone. After an error nothing appended since the last
    /// sync is known to be durable, and a later sync cannot tell what the kernel dropped: the
    /// caller stops using the log.
    pub fn sync(&mut self) -> Result<(), SpoolError> {
        let path = &self.segments.back().expect("the log always has a segment").path;
        if !self.pending.is_empty() {
            self.active.write_all(&self.pending).map_err(io_error(path))?;
            self.pending.clear();
        }
        self.active.sync_data().map_err(io_error(path))?;
        if self.dir_changed {
            sync_dir(&self.dir)?;
            self.dir_changed = false;
        }
        Ok(())
    }

    /// Up to `limit` records from `from` on, in order, as the files hold them (synced ones).
    pub fn read_from(&mut self, from: RecordSeq, limit: usize) -> Result<Vec<Record>, SpoolError> {
        let mut records = Vec::new();
        let wanted: Vec<(RecordSeq, PathBuf)> = self
            .segments
            .iter()
            .filter(|s| s.next > from && s.next > s.first)
            .map(|s| (s.first, s.path.clone()))
            .collect();
        for (first, path) in wanted {
            let synced = std::fs::metadata(&path).map_err(io_error(&path))?.len();
            let bytes = self.map(first, synced)?;
            for (at, record) in records_in(&bytes[..synced as usize]) {
                if records.len() == limit {
                    return Ok(records);
                }
                let (seq, payload) = record.map_err(|reason| corrupt(&path, at as u64, reason))?;
                if seq >= from {
                    let start = at + HEADER_LEN;
                    records.push(Record {
                        seq,
                        payload: bytes.slice(start..start + payload.len()),
                    });
                }
            }
        }
        Ok(records)
    }

    /// Removes every segment but the newest whose records all come before `applied_through`
    /// (all applied), syncing the directory, and returns how many it removed. The newest
    /// segment stays, so sequence numbers keep growing after a restart.
    pub fn remove_applied(&mut self, applied_through: RecordSeq) -> Result<usize, SpoolError> {
        let mut removed = 0;
        while self.segments.len() > 1 && self.segments[0].next <= applied_through.next() {
            let segment = self.segments.pop_front().expect("more than one segment");
            std::fs::remove_file(&segment.path).map_err(io_error(&segment.path))?;
            // Records still held elsewhere keep their pages until they are dropped.
            self.maps.remove(&segment.first);
            removed += 1;
        }
        if removed > 0 {
            self.dir_changed = true;
            self.sync()?;
        }
        Ok(removed)
    }

    /// The spool's id: made when its directory was first opened, so a spool started afresh
    /// (its directory lost or emptied) never takes another's applied marks on the shards for
    /// its own records.
    pub fn id(&self) -> Uuid {
        self.id
    }

    /// The segments, oldest first.
    pub fn segments(&self) -> impl ExactSizeIterator<Item = &SegmentInfo> {
        self.segments.iter()
    }

    /// Bytes of every segment, records appended but not yet synced included.
    pub fn bytes(&self) -> u64 {
        self.segments.iter().map(|s| s.bytes).sum()
    }

    /// The sequence number the next record appended gets.
    pub fn next_seq(&self) -> RecordSeq {
        self.segments.back().expect("the log always has a segment").next
    }

    /// Makes the newest segment durable and starts the next one.
    fn rotate(&mut self) -> Result<(), SpoolError> {
        self.sync()?;
        let first = self.next_seq();
        let segment = create_segment(&self.dir, first)?;
        self.active = open_for_append(&segment.path)?;
        self.segments.push_back(segment);
        self.dir_changed = true;
        Ok(())
    }
}

/// The id in the spool's id file, written (and synced with its directory) when missing.
fn read_or_create_id(dir: &Path) -> Result<Uuid, SpoolError> {
    let path = dir.join(ID_FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) => Uuid::parse_str(text.trim()).map_err(|_| SpoolError::BadId { path }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let id = Uuid::now_v7();
            let mut file = File::create(&path).map_err(io_error(&path))?;
            writeln!(file, "{id}").map_err(io_error(&path))?;
            file.sync_all().map_err(io_error(&path))?;
            sync_dir(dir)?;
            Ok(id)
        }
        Err(source) => Err(SpoolError::Io { path, source }),
    }
}

/// What reading one segment found.
struct SegmentScan {
    /// One past its last good record.
    next: RecordSeq,
    /// Where its good records end.
    valid_len: u64,
    /// Where the first bad part starts, and why it is bad.
    bad: Option<(u64, &'static str)>,
}

fn scan_segment(path: &Path, first: RecordSeq) -> Result<SegmentScan, SpoolError> {
    let bytes = std::fs::read(path).map_err(io_error(path))?;
    let header_ok = bytes.len() >= SEGMENT_HEADER_LEN as usize
        && &bytes[..8] == MAGIC
        && bytes[8..16] == first.0.to_le_bytes();
    if !header_ok {
        return Ok(SegmentScan {
            next: first,
            valid_len: 0,
            bad: Some((0, "segment header missing or wrong")),
        });
    }
    let mut next = first;
    for (at, record) in records_in(&bytes) {
        match record {
            Ok((seq, _)) if seq == next => next = next.next(),
            Ok(_) => return Ok(bad_at(next, at, "record out of sequence")),
            Err(reason) => return Ok(bad_at(next, at, reason)),
        }
    }
    Ok(SegmentScan {
        next,
        valid_len: bytes.len() as u64,
        bad: None,
    })
}

/// The records of a segment's bytes after its header, each with its offset, up to and
/// including the first that does not decode.
fn records_in(bytes: &[u8]) -> impl Iterator<Item = (usize, Result<(RecordSeq, &[u8]), &'static str>)> {
    let mut at = SEGMENT_HEADER_LEN as usize;
    let mut failed = false;
    std::iter::from_fn(move || {
        if failed || at >= bytes.len() {
            return None;
        }
        let start = at;
        match record::decode(&bytes[at..]) {
            Ok((seq, payload, len)) => {
                at += len;
                Some((start, Ok((seq, payload))))
            }
            Err(reason) => {
                failed = true;
                Some((start, Err(reason)))
            }
        }
    })
}

fn bad_at(next: RecordSeq, at: usize, reason: &'static str) -> SegmentScan {
    SegmentScan {
        next,
        valid_len: at as u64,
        bad: Some((at as u64, reason)),
    }
}

/// Cuts the newest segment at `offset`; a segment whose header is bad is written anew, empty.
fn cut_tail(
    path: &Path,
    first: RecordSeq,
    offset: u64,
    reason: &'static str,
) -> Result<TornTail, SpoolError> {
    let len = std::fs::metadata(path).map_err(io_error(path))?.len();
    let file = OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(io_error(path))?;
    if offset < SEGMENT_HEADER_LEN {
        file.set_len(0).map_err(io_error(path))?;
        (&file)
            .write_all(&segment_header(first))
            .map_err(io_error(path))?;
    } else {
        file.set_len(offset).map_err(io_error(path))?;
    }
    file.sync_all().map_err(io_error(path))?;
    let offset = offset.max(SEGMENT_HEADER_LEN);
    tracing::warn!(
        segment = %path.display(),
        offset,
        bytes_cut = len.saturating_sub(offset),
        reason,
        "cut a torn tail from the spool's newest segment"
    );
    Ok(TornTail {
        path: path.to_path_buf(),
        offset,
        bytes_cut: len.saturating_sub(offset),
        reason,
    })
}

/// The spool's segment files, by their first sequence number.
fn segment_names(dir: &Path) -> Result<Vec<(RecordSeq, PathBuf)>, SpoolError> {
    let mut names = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io_error(dir))? {
        let path = entry.map_err(io_error(dir))?.path();
        if let Some(first) = segment_first(&path) {
            names.push((first, path));
        }
    }
    names.sort();
    Ok(names)
}

fn segment_first(path: &Path) -> Option<RecordSeq> {
    if path.extension()? != EXTENSION {
        return None;
    }
    path.file_stem()?.to_str()?.parse().ok().map(RecordSeq)
}

fn segment_header(first: RecordSeq) -> [u8; SEGMENT_HEADER_LEN as usize] {
    let mut header = [0; SEGMENT_HEADER_LEN as usize];
    header[..8].copy_from_slice(MAGIC);
    header[8..].copy_from_slice(&first.0.to_le_bytes());
    header
}

fn create_segment(dir: &Path, first: RecordSeq) -> Result<SegmentInfo, SpoolError> {
    let path = dir.join(format!("{:020}.{EXTENSION}", first.0));
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&path)
        .map_err(io_error(&path))?;
    file.write_all(&segment_header(first)).map_err(io_error(&path))?;
    file.sync_data().map_err(io_error(&path))?;
    Ok(SegmentInfo {
        path,
        first,
        next: first,
        bytes: SEGMENT_HEADER_LEN,
    })
}

/// Makes the directory's entries (files created or removed) durable.
fn sync_dir(dir: &Path) -> Result<(), SpoolError> {
    File::open(dir)
        .and_then(|dir| dir.sync_all())
        .map_err(io_error(dir))
}

fn open_for_append(path: &Path) -> Result<File, SpoolError> {
    OpenOptions::new().append(true).open(path).map_err(io_error(path))
}

fn io_error(path: &Path) -> impl Fn(std::io::Error) -> SpoolError + '_ {
    move |source| SpoolError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn corrupt(path: &Path, offset: u64, reason: &'static str) -> SpoolError {
    SpoolError::Corrupt {
        path: path.to_path_buf(),
        offset,
        reason,
    }
}

#[cfg(test)]
mod tests;
