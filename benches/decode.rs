//! The write path's CPU per row without the network: decoding a request body of the example
//! rows (the rows `shardgate bench` sends) into per-shard COPY tuples, beside the floor of
//! parsing the same JSON into nothing. Run with `cargo bench --bench decode`.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use serde::de::IgnoredAny;
use shardgate::bench::workload::{KeyDistribution, RowGenerator, WorkloadSpec};
use shardgate::config::Config;
use shardgate::devcluster::DEV_TABLES;
use shardgate::routing::{Epoch, Ring, RoutingTable, ShardId};
use shardgate::schema::TableSchema;
use shardgate::schema::decode::{BodyFormat, decode_rows};
use std::hint::black_box;

/// Rows per request body, as `shardgate bench` sends by default.
const ROWS: usize = 1000;

fn body(with_ids: bool) -> Vec<u8> {
    let spec = WorkloadSpec {
        tenants: 1000,
        event_types: 20,
        distribution: KeyDistribution::Uniform,
        zipf_s: 1.1,
        hot_share: 0.0,
        payload_bytes: 100,
        with_ids,
    };
    RowGenerator::new(&spec, 0)
        .expect("the workload is valid")
        .json_body(ROWS)
}

fn decoding(c: &mut Criterion) {
    let config = Config::parse(DEV_TABLES).expect("the tables parse");
    let ring = Ring::build([("s0", 1), ("s1", 1)], 256).expect("the ring builds");
    let routing = RoutingTable::new(Epoch(1), vec![ShardId("s0".into()), ShardId("s1".into())], ring);
    let mut group = c.benchmark_group("decode");
    group.throughput(Throughput::Elements(ROWS as u64));
    for (table, with_ids) in [(&config.tables[0], true), (&config.tables[1], false)] {
        let schema = TableSchema::from_config(table).expect("the table is valid");
        let body = body(with_ids);
        group.bench_function(format!("{}/rows", table.name), |b| {
            b.iter(|| decode_rows(&schema, &routing, BodyFormat::Json, black_box(&body), 0, &[]).unwrap())
        });
        group.bench_function(format!("{}/json_only", table.name), |b| {
            b.iter(|| serde_json::from_slice::<IgnoredAny>(black_box(&body)).unwrap())
        });
    }
    group.finish();
}

criterion_group!(benches, decoding);
criterion_main!(benches);
