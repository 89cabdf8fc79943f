//! The spool directory's lock: one process at a time may own a spool.
//!
//! A second process opening the same directory would cut the tail of the segment the first
//! one has mapped (the first then reads past the end of the file and dies of SIGBUS), and both
//! would replay the same records. So the log takes an exclusive `flock` on `spool.lock` before
//! it reads or cuts anything, and holds it for as long as it lives; the kernel releases it when
//! the process ends, however it ends. The holder writes its PID into the file, so a process
//! turned away can name it.

use super::SpoolError;
use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, Write};
use std::path::Path;

/// The lock file's name in the spool directory.
const LOCK_FILE: &str = "spool.lock";

/// An exclusive hold on a spool directory, released when dropped.
#[derive(Debug)]
pub(super) struct DirLock {
    /// Kept open: closing it releases the lock.
    _file: File,
}

impl DirLock {
    /// Takes the lock on `dir`, or fails at once with [`SpoolError::InUse`] naming the process
    /// that holds it.
    pub(super) fn acquire(dir: &Path) -> Result<DirLock, SpoolError> {
        let path = dir.join(LOCK_FILE);
        let io_error = |source| SpoolError::Io {
            path: path.clone(),
            source,
        };
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io_error)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                return Err(SpoolError::InUse {
                    dir: dir.to_path_buf(),
                    holder: holder_pid(&mut file),
                });
            }
            Err(TryLockError::Error(source)) => return Err(io_error(source)),
        }
        file.set_len(0).map_err(io_error)?;
        file.rewind().map_err(io_error)?;
        write!(file, "{}", std::process::id()).map_err(io_error)?;
        Ok(DirLock { _file: file })
    }
}

/// The PID the holder wrote into the lock file, when it holds one.
fn holder_pid(file: &mut File) -> Option<u32> {
    let mut text = String::new();
    file.read_to_string(&mut text).ok()?;
    text.trim().parse().ok()
}
