//! The write path's CPU per row without the network: decoding a request body of the example
//! rows (the rows `shardgate bench` sends) into per-shard COPY tuples, the same rows with their
//! keys in another order every other row, and the floor of parsing the same JSON into nothing.
//! Run with `cargo bench --bench decode`.

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
        retry_share: 0.0,
    };
    RowGenerator::new(&spec, 0)
        .expect("the workload is valid")
        .json_body(ROWS)
}

/// The rows of `body` with their keys in one order in even rows and in the reverse order in
/// odd ones: a body whose every row differs in shape from the one before it.
fn changing_shapes(body: &[u8]) -> Vec<u8> {
    let rows: Vec<serde_json::Map<String, serde_json::Value>> =
        serde_json::from_slice(body).expect("the body is an array of objects");
    let rows: Vec<String> = rows
        .iter()
        .enumerate()
        .map(|(i, row)| {
            let mut fields: Vec<String> = row
                .iter()
                .map(|(key, value)| format!("{}:{value}", serde_json::Value::from(key.as_str())))
                .collect();
            if i % 2 == 1 {
                fields.reverse();
            }
            format!("{{{}}}", fields.join(","))
        })
        .collect();
    format!("[{}]", rows.join(",")).into_bytes()
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
        let changing = changing_shapes(&body);
        group.bench_function(format!("{}/changing_shapes", table.name), |b| {
            b.iter(|| decode_rows(&schema, &routing, BodyFormat::Json, black_box(&changing), 0, &[]).unwrap())
        });
        group.bench_function(format!("{}/json_only", table.name), |b| {
            b.iter(|| serde_json::from_slice::<IgnoredAny>(black_box(&body)).unwrap())
        });
    }
    group.finish();
}

criterion_group!(benches, decoding);
criterion_main!(benches);
