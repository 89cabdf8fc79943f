//! Canonical partition-key encoding and its xxh3-64 hash (invariant 1).
//!
//! Each key value is written as `tag (1 byte) | length (u32 BE) | value bytes`, where the value
//! bytes are the column's Postgres binary form. The tag and length keep `("ab","c")` apart from
//! `("a","bc")`; the binary form makes every spelling of one value identical. This module must
//! never change its output: placement of stored rows depends on it (see the golden vectors).

use crate::pgtype::ColumnType;
use std::fmt;
use twox_hash::XxHash3_64;

/// The 64-bit hash of a partition key: a position on the ring.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct KeyHash(pub u64);

impl KeyHash {
    /// The same 64 bits as a signed integer, the form stored in `_sg_hash bigint`.
    pub fn as_i64(self) -> i64 {
        self.0 as i64
    }

    /// The position stored in a `_sg_hash` column.
    pub fn from_i64(stored: i64) -> KeyHash {
        KeyHash(stored as u64)
    }
}

impl fmt::Display for KeyHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#018x}", self.0)
    }
}

/// Hashes a partition key given as `(declared type, binary value)` pairs in key order.
/// `scratch` is reused between calls to avoid an allocation per row.
pub fn hash_key<'a>(
    parts: impl IntoIterator<Item = (ColumnType, &'a [u8])>,
    scratch: &mut Vec<u8>,
) -> KeyHash {
    scratch.clear();
    for (ty, value) in parts {
        scratch.push(ty.key_tag());
        let canonical = canonical_value(ty, value);
        let len = u32::try_from(canonical.len()).expect("a key value is smaller than the request body limit");
        scratch.extend_from_slice(&len.to_be_bytes());
        scratch.extend_from_slice(&canonical);
    }
    KeyHash(XxHash3_64::oneshot(scratch))
}

/// Folds the values Postgres treats as equal but whose bits differ: `-0.0` and NaNs.
fn canonical_value(ty: ColumnType, value: &[u8]) -> std::borrow::Cow<'_, [u8]> {
    if ty == ColumnType::Double
        && let Ok(bits) = <[u8; 8]>::try_from(value)
    {
        let x = f64::from_be_bytes(bits);
        if x == 0.0 {
            return std::borrow::Cow::Owned(0f64.to_be_bytes().to_vec());
        }
        if x.is_nan() {
            return std::borrow::Cow::Owned(f64::NAN.to_be_bytes().to_vec());
        }
    }
    std::borrow::Cow::Borrowed(value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ColumnType::*;

    fn hash(parts: &[(ColumnType, &[u8])]) -> KeyHash {
        hash_key(parts.iter().copied(), &mut Vec::new())
    }

    #[test]
    fn length_prefix_separates_shifted_boundaries() {
        assert_ne!(
            hash(&[(Text, b"ab"), (Text, b"c")]),
            hash(&[(Text, b"a"), (Text, b"bc")])
        );
    }

    #[test]
    fn type_tag_separates_equal_bytes_of_different_types() {
        let eight = 5i64.to_be_bytes();
        assert_ne!(hash(&[(BigInt, &eight)]), hash(&[(Text, &eight)]));
    }

    #[test]
    fn negative_zero_and_nan_fold_to_one_key() {
        assert_eq!(
            hash(&[(Double, &(-0.0f64).to_be_bytes())]),
            hash(&[(Double, &0.0f64.to_be_bytes())])
        );
        let other_nan = f64::from_bits(0x7ff8_0000_0000_0001);
        assert_eq!(
            hash(&[(Double, &other_nan.to_be_bytes())]),
            hash(&[(Double, &f64::NAN.to_be_bytes())])
        );
    }

    #[test]
    fn stored_form_round_trips() {
        let h = KeyHash(u64::MAX - 3);
        assert_eq!(h.as_i64(), -4);
        assert_eq!(KeyHash::from_i64(h.as_i64()), h);
    }
}
