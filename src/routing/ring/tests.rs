use super::*;
use crate::routing::key::hash_key;
use crate::schema::ColumnType;

const KEYS: usize = 200_000;

fn names(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("s{i}")).collect()
}

fn ring_of(names: &[String], vnodes: u32) -> Ring {
    Ring::build(names.iter().map(|n| (n.as_str(), 1)), vnodes).unwrap()
}

fn key_hashes() -> impl Iterator<Item = KeyHash> {
    let mut scratch = Vec::new();
    (0..KEYS).map(move |i| {
        let tenant = format!("tenant-{i}");
        hash_key(
            [
                (ColumnType::Text, tenant.as_bytes()),
                (ColumnType::Text, &b"click"[..]),
            ],
            &mut scratch,
        )
    })
}

/// Largest shard's key count over the mean, for `n` equal shards.
fn worst_over_mean(n: usize, vnodes: u32) -> f64 {
    let ring = ring_of(&names(n), vnodes);
    let mut counts = vec![0usize; n];
    for hash in key_hashes() {
        counts[ring.shard_for(hash).0] += 1;
    }
    *counts.iter().max().unwrap() as f64 / (KEYS as f64 / n as f64)
}

#[test]
fn keys_spread_within_ten_percent_of_the_mean_for_two_to_eight_shards() {
    for n in 2..=8 {
        let ratio = worst_over_mean(n, 256);
        println!("{n} shards: worst/mean = {ratio:.3}");
        assert!(
            ratio <= 1.10,
            "{n} shards: worst shard holds {ratio:.3}× the mean"
        );
    }
}

#[test]
fn weight_scales_the_owned_share() {
    let ring = Ring::build([("s0", 1), ("s1", 3)], 256).unwrap();
    let heavy = ring.owned_fraction(ShardIndex(1));
    assert!((0.70..0.80).contains(&heavy), "weight 3 of 4 owns {heavy:.3}");
    let total = heavy + ring.owned_fraction(ShardIndex(0));
    assert!((total - 1.0).abs() < 1e-9, "fractions sum to {total}");
}

#[test]
fn ranges_partition_the_hash_space_as_lookup_does() {
    let ring = ring_of(&names(3), 64);
    let ranges: Vec<TokenRange> = ring.ranges().collect();
    assert_eq!(ranges.len(), 3 * 64);
    assert_eq!(ranges.iter().map(TokenRange::size).sum::<u128>(), 1u128 << 64);
    let probes =
        key_hashes()
            .take(5_000)
            .chain([KeyHash(0), KeyHash(u64::MAX), KeyHash(ring.tokens()[0].position)]);
    for hash in probes {
        let owners: Vec<&TokenRange> = ranges.iter().filter(|r| r.contains(hash)).collect();
        assert_eq!(owners.len(), 1, "{hash} is in exactly one range");
        assert_eq!(owners[0].shard, ring.shard_for(hash), "{hash}");
    }
}

#[test]
fn adding_a_shard_moves_only_keys_to_it_about_one_in_n_plus_one() {
    for n in 2..=7 {
        let before = ring_of(&names(n), 256);
        let after = ring_of(&names(n + 1), 256);
        let mut moved = 0usize;
        for hash in key_hashes() {
            let (old, new) = (before.shard_for(hash), after.shard_for(hash));
            if old != new {
                assert_eq!(new, ShardIndex(n), "a moved key goes to the new shard only");
                moved += 1;
            }
        }
        let share = moved as f64 / KEYS as f64;
        let expected = 1.0 / (n + 1) as f64;
        println!(
            "{n} -> {} shards: moved {share:.3} of keys (ideal {expected:.3})",
            n + 1
        );
        assert!(
            (share / expected - 1.0).abs() < 0.15,
            "moved {share:.3}, ideal {expected:.3}"
        );
    }
}

#[test]
fn single_token_ring_owns_everything() {
    let ring = Ring::build([("s0", 1)], 1).unwrap();
    let range = ring.ranges().next().unwrap();
    assert_eq!(range.size(), 1u128 << 64);
    assert!(range.contains(KeyHash(0)) && range.contains(KeyHash(u64::MAX)));
}

#[test]
fn stored_tokens_must_be_distinct_and_present() {
    assert_eq!(Ring::from_tokens(vec![]), Err(RingError::Empty));
    let token = Token {
        position: 9,
        shard: ShardIndex(0),
    };
    assert_eq!(
        Ring::from_tokens(vec![token, token]),
        Err(RingError::DuplicatePosition(9))
    );
}

#[test]
fn stored_intervals_hold_exactly_the_range_s_hashes() {
    let probes: Vec<u64> = (0..4000u64)
        .map(|i| i.wrapping_mul(0x9E37_79B9_7F4A_7C15))
        .chain([
            0,
            1,
            u64::MAX,
            u64::MAX - 1,
            1 << 63,
            (1 << 63) - 1,
            (1 << 63) + 1,
        ])
        .collect();
    let bounds = [
        0,
        1,
        5,
        (1 << 63) - 1,
        1 << 63,
        u64::MAX / 3,
        u64::MAX - 1,
        u64::MAX,
    ];
    for &start in &bounds {
        for &end in &bounds {
            let range = TokenRange {
                start,
                end,
                shard: ShardIndex(0),
            };
            let intervals = range.stored_intervals();
            assert!(intervals.len() <= 3 && intervals.iter().all(|(lo, hi)| lo <= hi));
            for &probe in probes.iter().chain(&bounds) {
                let stored = KeyHash(probe).as_i64();
                let inside = intervals.iter().any(|(lo, hi)| (*lo..=*hi).contains(&stored));
                assert_eq!(
                    inside,
                    range.contains(KeyHash(probe)),
                    "({start}, {end}] and {probe}"
                );
            }
        }
    }
}

#[test]
fn the_bucket_index_finds_the_owner_a_search_of_every_token_finds() {
    let search_all = |ring: &Ring, hash: KeyHash| {
        let at = ring.tokens.partition_point(|t| t.position < hash.0);
        ring.tokens.get(at).unwrap_or(&ring.tokens[0]).shard
    };
    for (shards, vnodes) in [(1, 1), (2, 256), (3, 7), (64, 256)] {
        let ring = ring_of(&names(shards), vnodes);
        let edges = ring
            .tokens()
            .iter()
            .flat_map(|t| [t.position.wrapping_sub(1), t.position, t.position.wrapping_add(1)].map(KeyHash));
        let extremes = [0, 1, u64::MAX / 2, u64::MAX - 1, u64::MAX].map(KeyHash);
        for hash in key_hashes().take(20_000).chain(edges).chain(extremes) {
            assert_eq!(
                ring.shard_for(hash),
                search_all(&ring, hash),
                "{hash:?} on {shards}x{vnodes}"
            );
        }
    }
}
