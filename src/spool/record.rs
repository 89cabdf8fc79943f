//! One spool record on disk: `len: u32`, `crc: u32`, `seq: u64` (little-endian), then `len`
//! bytes of payload. The CRC-32 covers the sequence number and the payload, so a record that
//! was half written, whose bytes changed, or that was copied from elsewhere does not check.

/// Bytes of a record before its payload.
pub(super) const HEADER_LEN: usize = 16;

/// The largest payload one record holds.
pub(super) const MAX_PAYLOAD: usize = 1 << 30;

/// A record's sequence number: one more than the record before it, across segments, and never
/// used twice in a spool. A shard records the numbers it applied under this name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RecordSeq(pub u64);

impl RecordSeq {
    /// The number after this one.
    pub fn next(self) -> RecordSeq {
        RecordSeq(self.0 + 1)
    }
}

/// A record read back from the spool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Its sequence number.
    pub seq: RecordSeq,
    /// The bytes it was appended with: a slice of its segment file mapped into memory, so the
    /// kernel may page it out and in again while it waits.
    pub payload: bytes::Bytes,
}

/// Appends the encoded record to `out`.
pub(super) fn encode(seq: RecordSeq, payload: &[u8], out: &mut Vec<u8>) {
    let len = u32::try_from(payload.len()).expect("the caller checked the payload against MAX_PAYLOAD");
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&checksum(seq, payload).to_le_bytes());
    out.extend_from_slice(&seq.0.to_le_bytes());
    out.extend_from_slice(payload);
}

/// The record at the start of `bytes` and the bytes it takes, or why there is none.
pub(super) fn decode(bytes: &[u8]) -> Result<(RecordSeq, &[u8], usize), &'static str> {
    let header = bytes.get(..HEADER_LEN).ok_or("record header cut short")?;
    let word = |at: usize| u32::from_le_bytes(header[at..at + 4].try_into().expect("four bytes"));
    let len = word(0) as usize;
    if len > MAX_PAYLOAD {
        return Err("record length out of range");
    }
    let seq = RecordSeq(u64::from_le_bytes(header[8..16].try_into().expect("eight bytes")));
    let payload = bytes
        .get(HEADER_LEN..HEADER_LEN + len)
        .ok_or("record payload cut short")?;
    if checksum(seq, payload) != word(4) {
        return Err("record checksum mismatch");
    }
    Ok((seq, payload, HEADER_LEN + len))
}

fn checksum(seq: RecordSeq, payload: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&seq.0.to_le_bytes());
    hasher.update(payload);
    hasher.finalize()
}
