//! The consistent-hash ring: a sorted table of tokens, each owned by one shard.
//!
//! A shard of weight `w` owns `vnodes × w` tokens whose positions are xxh3-64 of the shard name
//! and token number, so a ring is a pure function of `(shards, weights, vnodes)` and stays the
//! same across builds and machines. Token `t` owns the range `(previous token, t]`, the first
//! token also owning the wrap-around. Ranges are enumerable, which resharding needs to move them.

use super::key::KeyHash;
use std::fmt;
use twox_hash::XxHash3_64;

/// Domain separator for token positions; part of the placement contract, never change it.
const TOKEN_DOMAIN: &[u8] = b"shardgate-ring-token-v1";

/// Position of a shard in a routing table's shard list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ShardIndex(pub usize);

/// One point on the ring and the shard that owns the range ending at it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Token {
    /// Position on the ring.
    pub position: u64,
    /// Owner of `(previous position, position]`.
    pub shard: ShardIndex,
}

/// An arc of hash space `(start, end]`, wrapping past `u64::MAX` when `start >= end`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenRange {
    /// Exclusive lower bound.
    pub start: u64,
    /// Inclusive upper bound.
    pub end: u64,
    /// Owner.
    pub shard: ShardIndex,
}

impl TokenRange {
    /// Number of hash values in the range (2^64 for a one-token ring).
    pub fn size(&self) -> u128 {
        match self.end.wrapping_sub(self.start) {
            0 => 1u128 << 64,
            n => u128::from(n),
        }
    }

    /// Whether `hash` falls in the range.
    pub fn contains(&self, hash: KeyHash) -> bool {
        let offset = hash.0.wrapping_sub(self.start);
        self.start == self.end || (offset != 0 && offset <= self.end.wrapping_sub(self.start))
    }

    /// The range as inclusive intervals of stored `_sg_hash` values (signed, see
    /// [`KeyHash::as_i64`]), each for `_sg_hash BETWEEN lo AND hi`: at most three, as the range
    /// may wrap past the top of the ring and cross the sign change of the stored value.
    pub fn stored_intervals(&self) -> Vec<(i64, i64)> {
        let unsigned: Vec<(u64, u64)> = if self.start == self.end {
            vec![(0, u64::MAX)]
        } else if self.start < self.end {
            vec![(self.start + 1, self.end)]
        } else if self.start == u64::MAX {
            vec![(0, self.end)]
        } else {
            vec![(self.start + 1, u64::MAX), (0, self.end)]
        };
        let half = 1u64 << 63;
        let mut stored = Vec::new();
        for (lo, hi) in unsigned {
            if lo < half && hi >= half {
                stored.push((KeyHash(lo).as_i64(), i64::MAX));
                stored.push((i64::MIN, KeyHash(hi).as_i64()));
            } else {
                stored.push((KeyHash(lo).as_i64(), KeyHash(hi).as_i64()));
            }
        }
        stored
    }
}

/// A ring that cannot be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RingError {
    /// No tokens at all.
    #[error("the ring has no tokens")]
    Empty,
    /// Two tokens at the same position (two shards would claim one point).
    #[error("two tokens share position {0:#018x}")]
    DuplicatePosition(u64),
}

/// The sorted token table.
#[derive(Clone, PartialEq, Eq)]
pub struct Ring {
    tokens: Vec<Token>,
    /// An index into the tokens, so a lookup searches a couple of tokens instead of them all.
    buckets: Buckets,
}

/// The hash space cut into 2^`bits` equal slices, and for each slice the index of its first
/// token.
#[derive(Clone, PartialEq, Eq)]
struct Buckets {
    bits: u32,
    /// `starts[b]` is the first token at or after slice `b`; one more entry ends the last slice.
    starts: Vec<u32>,
}

impl Buckets {
    /// Slices for `tokens` (sorted): about two tokens per slice.
    fn new(tokens: &[Token]) -> Buckets {
        let bits = (tokens.len().next_power_of_two().trailing_zeros() + 1).min(20);
        let mut starts = Vec::with_capacity((1 << bits) + 1);
        let mut at = 0;
        for bucket in 0..1u64 << bits {
            while at < tokens.len() && Buckets::slice_of(bits, tokens[at].position) < bucket {
                at += 1;
            }
            starts.push(u32::try_from(at).expect("a ring has fewer than 2^32 tokens"));
        }
        starts.push(u32::try_from(tokens.len()).expect("a ring has fewer than 2^32 tokens"));
        Buckets { bits, starts }
    }

    fn slice_of(bits: u32, position: u64) -> u64 {
        position >> (64 - bits)
    }

    /// The tokens that may be the first at or after `position`, as an index range; when none
    /// of them is, the answer is the range's end.
    fn candidates(&self, position: u64) -> std::ops::Range<usize> {
        let slice = Buckets::slice_of(self.bits, position) as usize;
        self.starts[slice] as usize..self.starts[slice + 1] as usize
    }
}

impl fmt::Debug for Ring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Ring({} tokens)", self.tokens.len())
    }
}

impl Ring {
    /// Builds the ring for shards given as `(name, weight)` in index order.
    pub fn build<'a>(
        shards: impl IntoIterator<Item = (&'a str, u32)>,
        vnodes: u32,
    ) -> Result<Ring, RingError> {
        let mut tokens = Vec::new();
        for (index, (name, weight)) in shards.into_iter().enumerate() {
            for number in 0..vnodes * weight {
                tokens.push(Token {
                    position: token_position(name, number),
                    shard: ShardIndex(index),
                });
            }
        }
        Ring::from_tokens(tokens)
    }

    /// Builds a ring from stored tokens, in any order.
    pub fn from_tokens(mut tokens: Vec<Token>) -> Result<Ring, RingError> {
        if tokens.is_empty() {
            return Err(RingError::Empty);
        }
        tokens.sort_unstable_by_key(|t| t.position);
        if let Some(pair) = tokens.windows(2).find(|w| w[0].position == w[1].position) {
            return Err(RingError::DuplicatePosition(pair[0].position));
        }
        let buckets = Buckets::new(&tokens);
        Ok(Ring { tokens, buckets })
    }

    /// The shard owning `hash`: the owner of the first token at or after it, wrapping around.
    /// Outside routing, placement is asked of a [`super::RoutingTable`].
    pub(super) fn shard_for(&self, hash: KeyHash) -> ShardIndex {
        let candidates = self.buckets.candidates(hash.0);
        let start = candidates.start;
        let at = start + self.tokens[candidates].partition_point(|t| t.position < hash.0);
        self.tokens.get(at).unwrap_or(&self.tokens[0]).shard
    }

    /// The tokens, sorted by position.
    pub fn tokens(&self) -> &[Token] {
        &self.tokens
    }

    /// Every range of the ring in position order; the first one wraps around.
    pub fn ranges(&self) -> impl Iterator<Item = TokenRange> + '_ {
        let last = self.tokens[self.tokens.len() - 1].position;
        let starts = std::iter::once(last).chain(self.tokens.iter().map(|t| t.position));
        starts.zip(&self.tokens).map(|(start, token)| TokenRange {
            start,
            end: token.position,
            shard: token.shard,
        })
    }

    /// Share of the hash space owned by `shard`, between 0 and 1.
    pub fn owned_fraction(&self, shard: ShardIndex) -> f64 {
        let owned: u128 = self.ranges().filter(|r| r.shard == shard).map(|r| r.size()).sum();
        owned as f64 / 2f64.powi(64)
    }
}

/// Position of token `number` of shard `name`.
fn token_position(name: &str, number: u32) -> u64 {
    let mut input = Vec::with_capacity(TOKEN_DOMAIN.len() + name.len() + 5);
    input.extend_from_slice(TOKEN_DOMAIN);
    input.extend_from_slice(name.as_bytes());
    input.push(0);
    input.extend_from_slice(&number.to_be_bytes());
    XxHash3_64::oneshot(&input)
}

#[cfg(test)]
mod tests;
