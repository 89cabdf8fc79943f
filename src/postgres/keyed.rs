//! `SET shardgate.idempotency_key = '...'`: the listener's `Idempotency-Key`. The key names
//! the writes the session sends after it, numbered in order: each `INSERT` outside a block,
//! each chunk of a `COPY` outside a block, and at a block's `COMMIT` each of its statements
//! (a `COPY`'s chunks each). The `n`th is written as a keyed write of its own under
//! `KEY#n`, so a client that sets the same key again and sends the same statements in the
//! same order (after a dropped connection, say) writes nothing twice: each statement finds
//! its records and is answered as it was. Setting the key again starts the count anew;
//! `RESET` and `DISCARD ALL` end it.

use super::errors::refused;
use crate::ingest::keys::{Fingerprint, IdempotencyKey};
use pgwire::error::PgWireResult;
use std::sync::Mutex;

/// The session parameter that names the key.
pub const KEY_PARAMETER: &str = "shardgate.idempotency_key";

/// A session's idempotency key, and how many writes it named so far.
#[derive(Debug, Default)]
pub struct SessionKey(Mutex<Option<(IdempotencyKey, u64)>>);

impl SessionKey {
    /// Names the writes that follow with `value`: `22023` when it is not a key.
    pub fn set(&self, value: &str) -> PgWireResult<()> {
        let key = IdempotencyKey::parse(value.as_bytes()).map_err(|e| {
            refused(
                "22023",
                format!("invalid value for parameter \"{KEY_PARAMETER}\": {e}"),
            )
        })?;
        *self.lock() = Some((key, 0));
        Ok(())
    }

    /// Ends the key: the writes that follow are not keyed.
    pub fn clear(&self) {
        *self.lock() = None;
    }

    /// Whether a key is set.
    pub fn is_set(&self) -> bool {
        self.lock().is_some()
    }

    /// The key of the next write, counted; `None` without a key.
    pub fn next(&self) -> Option<IdempotencyKey> {
        let mut key = self.lock();
        let (base, count) = key.as_mut()?;
        let numbered = base.numbered(*count);
        *count += 1;
        Some(numbered)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<(IdempotencyKey, u64)>> {
        self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// The fingerprint of a statement's rows: `bytes` of `table` as `statement` (`insert` or
/// `copy`) spells them, into `columns`, and for a COPY in `format`.
pub fn fingerprint(
    table: &str,
    statement: &str,
    columns: &[usize],
    format: &str,
    bytes: &[u8],
) -> Fingerprint {
    let mut spelling = Vec::with_capacity(16 + format.len() + 4 * columns.len());
    spelling.push(1);
    spelling.extend_from_slice(statement.as_bytes());
    spelling.push(0);
    for column in columns {
        spelling.extend_from_slice(&(*column as u32).to_be_bytes());
    }
    spelling.push(0);
    spelling.extend_from_slice(format.as_bytes());
    Fingerprint::of_spelled(table, &spelling, bytes)
}
