//! Idempotency keys as a request gives them: their form, the fingerprint that tells one
//! request from another, the keys whose writes this process is writing now, and why a keyed
//! write is refused before anything is written.

use crate::schema::decode::BodyFormat;
use std::collections::HashMap;
use std::sync::Mutex;
use thiserror::Error;
use twox_hash::XxHash3_128;

/// Longest idempotency key.
pub const MAX_KEY_LEN: usize = 255;

/// An idempotency key: 1 to [`MAX_KEY_LEN`] visible ASCII characters (a UUID, say).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct IdempotencyKey(String);

/// A key that is not 1 to 255 visible ASCII characters.
#[derive(Debug, Clone, Error)]
#[error("Idempotency-Key must be 1 to {MAX_KEY_LEN} visible ASCII characters (a UUID, say){0}")]
pub struct InvalidKey(&'static str);

impl IdempotencyKey {
    /// The key in `raw`, a header's bytes.
    pub fn parse(raw: &[u8]) -> Result<IdempotencyKey, InvalidKey> {
        if raw.is_empty() {
            return Err(InvalidKey("; it is empty"));
        }
        if raw.len() > MAX_KEY_LEN {
            return Err(InvalidKey("; it is longer"));
        }
        if !raw.iter().all(|b| b.is_ascii_graphic()) {
            return Err(InvalidKey("; it holds a space or another character"));
        }
        Ok(IdempotencyKey(String::from_utf8_lossy(raw).into_owned()))
    }

    /// The key as given.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The key of the `n`th of several writes this key names (`KEY#n`): a session of the
    /// Postgres listener numbers the writes that follow its key.
    pub fn numbered(&self, n: u64) -> IdempotencyKey {
        IdempotencyKey(format!("{}#{n}", self.0))
    }
}

/// What identifies one request among those sent with a key: its table, body format and body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fingerprint([u8; 16]);

impl Fingerprint {
    /// The fingerprint of a request writing `body` in `format` to `table`.
    pub fn of(table: &str, format: BodyFormat, body: &[u8]) -> Fingerprint {
        Fingerprint::of_spelled(table, &[0, format as u8], body)
    }

    /// The fingerprint of a write of `bytes` to `table`, which `spelling` says how to read
    /// (the Postgres listener's statements: the columns filled and the COPY format).
    pub fn of_spelled(table: &str, spelling: &[u8], bytes: &[u8]) -> Fingerprint {
        let mut hasher = XxHash3_128::new();
        hasher.write(table.as_bytes());
        hasher.write(spelling);
        hasher.write(bytes);
        Fingerprint(hasher.finish_128().to_be_bytes())
    }

    /// The fingerprint's sixteen bytes, as a record stores them.
    pub fn bytes(&self) -> [u8; 16] {
        self.0
    }
}

/// Why a keyed write was refused before anything was written.
#[derive(Debug, Error)]
pub enum KeyRefused {
    /// The key's first request is still being written by this process.
    #[error("a write with Idempotency-Key {0} is still in flight; send it again once that one is answered")]
    InFlight(String),
    /// The key was used by a request with another table or body.
    #[error(
        "Idempotency-Key {0} was used for a different request (another table or body); a key names one request"
    )]
    Reused(String),
    /// A shard's records of the key, or the catalog's claim on it, could not be read, so
    /// whether the write happened is unknown.
    #[error("cannot tell whether Idempotency-Key {key} was written: {asked}: {reason}")]
    Unknown {
        /// The key.
        key: String,
        /// What did not answer: `shard NAME` or `the catalog`.
        asked: String,
        /// Why.
        reason: String,
    },
}

/// Keys whose writes this process is writing now, with their fingerprints.
#[derive(Debug, Default)]
pub struct KeysInFlight(Mutex<HashMap<IdempotencyKey, Fingerprint>>);

impl KeysInFlight {
    /// Marks `key` as in flight until the returned guard is dropped; refuses a key already in
    /// flight (`Reused` when the request differs).
    pub fn enter(
        &self,
        key: &IdempotencyKey,
        fingerprint: Fingerprint,
    ) -> Result<InFlightKey<'_>, KeyRefused> {
        let mut keys = self.0.lock().expect("the in-flight keys are never poisoned");
        match keys.get(key) {
            Some(other) if *other != fingerprint => Err(KeyRefused::Reused(key.0.clone())),
            Some(_) => Err(KeyRefused::InFlight(key.0.clone())),
            None => {
                keys.insert(key.clone(), fingerprint);
                Ok(InFlightKey {
                    keys: self,
                    key: key.clone(),
                })
            }
        }
    }
}

/// A key marked in flight; dropping it ends the mark.
pub struct InFlightKey<'a> {
    keys: &'a KeysInFlight,
    key: IdempotencyKey,
}

impl Drop for InFlightKey<'_> {
    fn drop(&mut self) {
        let mut keys = self.keys.0.lock().expect("the in-flight keys are never poisoned");
        keys.remove(&self.key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_visible_ascii_of_bounded_length() {
        assert_eq!(
            IdempotencyKey::parse(b"0191d5a0-8c4e-7b3a-9f00-1c2d3e4f5a6b")
                .unwrap()
                .as_str(),
            "0191d5a0-8c4e-7b3a-9f00-1c2d3e4f5a6b"
        );
        assert!(IdempotencyKey::parse(&[b'k'; MAX_KEY_LEN]).is_ok());
        let refusal = |raw: &[u8]| IdempotencyKey::parse(raw).unwrap_err().to_string();
        assert!(refusal(b"").ends_with("; it is empty"));
        assert!(refusal(&[b'k'; MAX_KEY_LEN + 1]).ends_with("; it is longer"));
        assert!(refusal(b"two words").contains("a space"));
        assert!(refusal("clé".as_bytes()).contains("another character"));
    }

    #[test]
    fn fingerprints_tell_table_format_and_body_apart() {
        let base = Fingerprint::of("events", BodyFormat::Json, b"[{}]");
        assert_eq!(base, Fingerprint::of("events", BodyFormat::Json, b"[{}]"));
        assert_ne!(base, Fingerprint::of("event", BodyFormat::Json, b"s[{}]"));
        assert_ne!(base, Fingerprint::of("events", BodyFormat::Ndjson, b"[{}]"));
        assert_ne!(base, Fingerprint::of("events", BodyFormat::Json, b"[{} ]"));
    }

    #[test]
    fn a_key_in_flight_is_refused_until_its_write_ends() {
        let keys = KeysInFlight::default();
        let key = IdempotencyKey::parse(b"k1").unwrap();
        let (one, two) = (
            Fingerprint::of("t", BodyFormat::Json, b"1"),
            Fingerprint::of("t", BodyFormat::Json, b"2"),
        );
        let first = keys.enter(&key, one).unwrap();
        assert!(matches!(keys.enter(&key, one), Err(KeyRefused::InFlight(_))));
        assert!(matches!(keys.enter(&key, two), Err(KeyRefused::Reused(_))));
        drop(first);
        assert!(keys.enter(&key, two).is_ok());
    }
}
