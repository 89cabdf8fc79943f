//! Golden vectors: fixed keys must keep their hashes and shards in every build. A failure here
//! means stored rows would no longer be found where they were written.

use super::*;
use crate::pgtype::{ColumnType, JsonScalar, encode_scalar};

fn encoded(ty: ColumnType, value: JsonScalar<'_>) -> Vec<u8> {
    let mut out = Vec::new();
    encode_scalar(ty, value, &mut out).unwrap();
    out
}

/// A partition key as `(declared type, binary value)` pairs.
type KeyParts = Vec<(ColumnType, Vec<u8>)>;

fn golden_ring() -> Ring {
    Ring::build([("s0", 1), ("s1", 1), ("s2", 2), ("s3", 1)], 256).unwrap()
}

#[test]
fn golden_key_hashes_and_shards_never_change() {
    use ColumnType::*;
    use JsonScalar::*;
    let cases: Vec<(KeyParts, u64, usize)> = vec![
        (
            vec![
                (Text, encoded(Text, Str("acme"))),
                (Text, encoded(Text, Str("click"))),
            ],
            0x549b_887e_921f_cf0d,
            3,
        ),
        (
            vec![(Text, encoded(Text, Str("ab"))), (Text, encoded(Text, Str("c")))],
            0xf621_5c56_1880_3ab2,
            3,
        ),
        (
            vec![(Text, encoded(Text, Str("a"))), (Text, encoded(Text, Str("bc")))],
            0xb6d8_315b_5379_4634,
            2,
        ),
        (vec![(BigInt, encoded(BigInt, Int(42)))], 0x9417_d94b_c840_abdf, 3),
        (
            vec![(Integer, encoded(Integer, Int(42)))],
            0xf6d5_fc24_5a9a_e123,
            2,
        ),
        (
            vec![(Uuid, encoded(Uuid, Str("0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b")))],
            0x4284_ef9c_0435_cf71,
            3,
        ),
        (
            vec![(Timestamptz, encoded(Timestamptz, Str("2024-05-01T12:00:00Z")))],
            0x95f7_d039_7c55_7123,
            3,
        ),
        (
            vec![
                (Date, encoded(Date, Str("2024-05-01"))),
                (Boolean, encoded(Boolean, Bool(true))),
            ],
            0x5ce0_73a5_56c8_023b,
            3,
        ),
        (
            vec![(Double, encoded(Double, Float(-0.0)))],
            0xbc69_8614_9e9d_0690,
            3,
        ),
        (
            vec![
                (Text, encoded(Text, Str(""))),
                (Bytea, encoded(Bytea, Str("AAEC"))),
            ],
            0x2531_9f55_6535_713c,
            2,
        ),
    ];
    let ring = golden_ring();
    let mut scratch = Vec::new();
    for (parts, expected_hash, expected_shard) in &cases {
        let hash = hash_key(parts.iter().map(|(t, v)| (*t, v.as_slice())), &mut scratch);
        assert_eq!(hash, KeyHash(*expected_hash), "hash of {parts:?}");
        assert_eq!(
            ring.shard_for(hash),
            ShardIndex(*expected_shard),
            "shard of {parts:?}"
        );
    }
}
