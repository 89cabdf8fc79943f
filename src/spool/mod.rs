//! The durable spool: a local, append-only log in front of the shards for writes answered
//! `202` once their rows are on this machine's disk (DESIGN.md section 9).
//!
//! This module holds the log itself ([`SpoolLog`]): checksummed records with increasing
//! sequence numbers in segment files, a sync that makes every record appended before it
//! durable, recovery that finds and cuts a torn tail after a crash, and removal of segments
//! whose records have all been applied; and its group commit ([`SpoolWriter`]), a thread that
//! makes many requests' records durable with one sync. Draining records to the shards and the dead-letter
//! table build on it.

mod lock;
mod log;
mod record;
mod spooled;
mod status;
#[cfg(test)]
mod test_dir;
mod writer;

pub use log::{RecordAt, Recovery, SegmentInfo, SpoolLog, TornTail};
pub use record::{Record, RecordSeq};
pub use spooled::{MalformedWrite, PartRef, Placement, ReplayedPart, SpooledKey, SpooledPart, SpooledWrite};
pub use status::{RowsOutcome, ShardRows, WriteStatus, WriteStatuses};
pub use writer::{AppendError, SpoolAppender, SpoolWriter, WriterOptions};

use std::path::PathBuf;

/// What went wrong with the spool's files.
#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    /// A read, write, sync or directory operation failed.
    #[error("spool file {path}: {source}")]
    Io {
        /// The file or directory the operation was on.
        path: PathBuf,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// A segment other than the newest one holds a damaged record: that is not the tail a
    /// crash leaves, so the spool refuses to guess which rows it held.
    #[error(
        "spool segment {path} is damaged at byte {offset} ({reason}); only the newest segment \
         can have a torn tail, so this one needs an operator: move it aside to start without it"
    )]
    Corrupt {
        /// The damaged segment.
        path: PathBuf,
        /// Where its first bad record starts.
        offset: u64,
        /// What is wrong there.
        reason: &'static str,
    },
    /// Another process holds the spool directory: two processes on one spool would cut each
    /// other's segments and replay the same records.
    #[error(
        "spool directory {dir} is in use by another shardgate process{}; stop it, or give this \
         one a spool.dir of its own",
        holder.map(|pid| format!(" (pid {pid})")).unwrap_or_default()
    )]
    InUse {
        /// The spool directory.
        dir: PathBuf,
        /// The PID the holder wrote into the lock file, when it could be read.
        holder: Option<u32>,
    },
    /// The spool's id file holds no id.
    #[error(
        "spool id file {path} does not hold a UUID; restore it, or remove the spool directory to start a new spool"
    )]
    BadId {
        /// The id file.
        path: PathBuf,
    },
    /// A record larger than a segment may hold was appended.
    #[error("a spool record of {len} bytes is larger than the {max} bytes a record may hold")]
    RecordTooLarge {
        /// The payload's length.
        len: usize,
        /// The largest payload a record holds.
        max: usize,
    },
}
