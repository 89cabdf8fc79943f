//! Ranges in motion, as a migration records them in the catalog: while a range is copied it is
//! dual-written to its target and read from its source alone; after the cutover it is read
//! from its target alone while the source still holds its old rows; after the cleanup every
//! row is on the one shard that owns its `_sg_hash`. Reporting queries are exact throughout.

use crate::common::{
    TestServer, clusters, connect, events, fresh_database, fresh_shards, query_rows, time_to_epoch,
};
use serde_json::{Value, json};
use shardgate::catalog::watch::ROUTING_CHANNEL;
use shardgate::routing::{Epoch, KeyHash, OwnerChange, Ring, RoutingTable, ShardId, ShardIndex, TokenRange};
use shardgate::shards::fence;
use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

/// A stored row: its id, key and ring position.
struct Stored {
    id: String,
    key: (String, String),
    position: u64,
}

async fn stored_rows(url: &str) -> Vec<Stored> {
    connect(url)
        .await
        .query(
            "SELECT event_id::text, tenant_id, event_type, _sg_hash FROM events",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| Stored {
            id: r.get(0),
            key: (r.get(1), r.get(2)),
            position: KeyHash::from_i64(r.get(3)).0,
        })
        .collect()
}

fn moved(changes: &[OwnerChange], position: u64) -> bool {
    changes.iter().any(|c| {
        let range = TokenRange {
            start: c.start,
            end: c.end,
            shard: ShardIndex(0),
        };
        range.contains(KeyHash(position))
    })
}

/// Checks the answers a user relies on against what was acknowledged: the total, the count
/// per tenant, and one key's count through a pruned query.
async fn queries_are_exact(gate: &TestServer, acknowledged: &[Value], moved_key: &(String, String)) {
    let total = query_rows(gate, json!([]), "SELECT count(*) FROM events").await;
    assert_eq!(total, json!([[acknowledged.len()]]));
    let mut per_tenant: BTreeMap<String, usize> = BTreeMap::new();
    for row in acknowledged {
        *per_tenant
            .entry(row["tenant_id"].as_str().unwrap().to_string())
            .or_default() += 1;
    }
    let expected: Vec<Value> = per_tenant.iter().map(|(t, n)| json!([t, n])).collect();
    let sql = "SELECT tenant_id, count(*) FROM events GROUP BY tenant_id ORDER BY tenant_id";
    assert_eq!(query_rows(gate, json!([]), sql).await, Value::Array(expected));
    let of_key = acknowledged
        .iter()
        .filter(|r| r["tenant_id"] == moved_key.0 && r["event_type"] == moved_key.1)
        .count();
    let sql = "SELECT count(*) FROM events WHERE tenant_id = $1 AND event_type = $2";
    let pinned = query_rows(gate, json!([moved_key.0, moved_key.1]), sql).await;
    assert_eq!(pinned, json!([[of_key]]), "a pruned query of a moved key");
}

async fn post(gate: &TestServer, rows: &Value, acknowledged: &mut Vec<Value>) {
    let reply = gate.post_events(rows).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    acknowledged.extend(rows.as_array().unwrap().iter().cloned());
}

/// Writes the next routing epoch to the catalog with `change` (SQL), announces it, waits for
/// the proxy to route with it, then moves every fence to it, as a migration step does.
async fn step(gate: &TestServer, shards: &[String], epoch: i64, change: &str) {
    connect(&shards[0])
        .await
        .batch_execute(&format!(
            "BEGIN; {change}; UPDATE shardgate.routing SET epoch = {epoch}; \
             NOTIFY {ROUTING_CHANNEL}, '{epoch}'; COMMIT;"
        ))
        .await
        .unwrap();
    time_to_epoch(gate, epoch, Duration::from_secs(5)).await;
    for url in shards {
        fence::bump(&mut connect(url).await, Epoch(epoch)).await.unwrap();
    }
}

#[tokio::test]
async fn a_range_in_motion_is_dual_written_then_read_from_one_owner_only() {
    let mut urls = fresh_shards("reshard_motion").await;
    let target = fresh_database(&clusters()[0], "reshard_motion_s2").await;
    let gate = TestServer::start_on(urls.clone(), "[catalog]\nrefresh_interval = \"60s\"\n").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut acknowledged = Vec::new();
    post(&gate, &events(600, 97), &mut acknowledged).await;

    let current = crate::common::two_shard_routing();
    let names = ["s0", "s1", "s2"].map(|n| ShardId(n.into())).to_vec();
    let ring = Ring::build([("s0", 1), ("s1", 1), ("s2", 1)], 256).unwrap();
    let next = RoutingTable::new(Epoch(3), names, ring.clone());
    let changes = current.owner_changes(&next);
    let starts: Vec<i64> = changes.iter().map(|c| KeyHash(c.start).as_i64()).collect();
    let ends: Vec<i64> = changes.iter().map(|c| KeyHash(c.end).as_i64()).collect();
    let sources: Vec<String> = changes.iter().map(|c| c.from.0.clone()).collect();
    let copying = format!(
        "INSERT INTO shardgate.shards (name, weight, added_epoch, url, ordinal) VALUES ('s2', 1, 2, '{target}', 2);
         INSERT INTO shardgate.migrations (kind, shard, phase, weights)
             VALUES ('add', 's2', 'copying', '{{\"s0\": 1, \"s1\": 1, \"s2\": 1}}');
         INSERT INTO shardgate.migration_ranges (migration, start_position, end_position, source, target, phase)
             SELECT (SELECT max(id) FROM shardgate.migrations), s, e, src, 's2', 'copying'
             FROM unnest('{{{}}}'::bigint[], '{{{}}}'::bigint[], '{{{}}}'::text[]) AS r(s, e, src)",
        join(&starts),
        join(&ends),
        sources.join(",")
    );
    step(&gate, &urls, 2, &copying).await;
    urls.push(target.clone());
    let dual = events(600, 97);
    post(&gate, &dual, &mut acknowledged).await;
    let on_target = stored_rows(&target).await;
    let dual_ids: Vec<&str> = dual
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["event_id"].as_str().unwrap())
        .collect();
    let mut dual_moved = 0;
    for source in &urls[..2] {
        for row in stored_rows(source).await {
            if dual_ids.contains(&row.id.as_str()) && moved(&changes, row.position) {
                dual_moved += 1;
                assert!(
                    on_target.iter().any(|t| t.id == row.id),
                    "a new row of a moving range is on s2 too"
                );
            }
        }
    }
    assert!(dual_moved > 0);
    let metrics = gate.metrics_page().await;
    assert!(
        metrics.contains(&format!(
            "shardgate_rows_dual_written_total{{table=\"events\"}} {dual_moved}"
        )),
        "{metrics}"
    );
    assert_eq!(
        on_target.len(),
        dual_moved,
        "s2 got the new rows of its ranges and nothing else"
    );
    assert!(on_target.iter().all(|r| moved(&changes, r.position)));
    let moved_key = on_target[0].key.clone();
    queries_are_exact(&gate, &acknowledged, &moved_key).await;

    // The backfill: every older row of the moving ranges, copied to s2.
    let target_client = connect(&target).await;
    for source in &urls[..2] {
        let rows = connect(source)
            .await
            .query("SELECT row_to_json(e)::text, _sg_hash FROM events e", &[])
            .await
            .unwrap();
        for row in rows
            .iter()
            .filter(|r| moved(&changes, KeyHash::from_i64(r.get(1)).0))
        {
            let json: String = row.get(0);
            target_client
                .execute(
                    "INSERT INTO events SELECT * FROM json_populate_record(NULL::events, $1::text::json) \
                     ON CONFLICT DO NOTHING",
                    &[&json],
                )
                .await
                .unwrap();
        }
    }
    let positions: Vec<i64> = ring
        .tokens()
        .iter()
        .map(|t| KeyHash(t.position).as_i64())
        .collect();
    let owners: Vec<&str> = ring
        .tokens()
        .iter()
        .map(|t| ["s0", "s1", "s2"][t.shard.0])
        .collect();
    let cutover = format!(
        "DELETE FROM shardgate.ring_tokens;
         INSERT INTO shardgate.ring_tokens (position, shard)
             SELECT * FROM unnest('{{{}}}'::bigint[], '{{{}}}'::text[]);
         UPDATE shardgate.migration_ranges SET phase = 'leaving'",
        join(&positions),
        owners.join(",")
    );
    step(&gate, &urls, 3, &cutover).await;
    queries_are_exact(&gate, &acknowledged, &moved_key).await;
    let after = events(300, 97);
    post(&gate, &after, &mut acknowledged).await;
    queries_are_exact(&gate, &acknowledged, &moved_key).await;

    // The cleanup: the sources forget the rows of the ranges they gave away.
    for source in &urls[..2] {
        connect(source)
            .await
            .batch_execute(&format!("DELETE FROM events WHERE {}", moved_condition(&changes)))
            .await
            .unwrap();
    }
    step(
        &gate,
        &urls,
        4,
        "UPDATE shardgate.migration_ranges SET phase = 'cleaned'",
    )
    .await;
    queries_are_exact(&gate, &acknowledged, &moved_key).await;
    let mut holder: HashMap<String, usize> = HashMap::new();
    for (index, url) in urls.iter().enumerate() {
        for row in stored_rows(url).await {
            let owner = ring
                .ranges()
                .find(|r| r.contains(KeyHash(row.position)))
                .unwrap()
                .shard;
            assert_eq!(
                owner,
                ShardIndex(index),
                "row {} is on the shard that owns it",
                row.id
            );
            assert!(
                holder.insert(row.id.clone(), index).is_none(),
                "row {} is stored once",
                row.id
            );
        }
    }
    assert_eq!(holder.len(), acknowledged.len(), "every acknowledged row exists");
    gate.stop().await;
}

fn join(values: &[i64]) -> String {
    values.iter().map(i64::to_string).collect::<Vec<_>>().join(",")
}

/// SQL matching the rows of every moved range, from the ranges' stored intervals.
fn moved_condition(changes: &[OwnerChange]) -> String {
    let intervals: Vec<String> = changes
        .iter()
        .flat_map(|c| {
            TokenRange {
                start: c.start,
                end: c.end,
                shard: ShardIndex(0),
            }
            .stored_intervals()
        })
        .map(|(lo, hi)| format!("_sg_hash BETWEEN {lo} AND {hi}"))
        .collect();
    intervals.join(" OR ")
}
