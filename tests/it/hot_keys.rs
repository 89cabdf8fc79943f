//! Hot-key detection on a running proxy: one tenant sending most rows is listed as hot within
//! a few windows, and the keys it drowns out are not.

use crate::common::{TestServer, fresh_shards};
use serde_json::{Value, json};
use shardgate::routing::hash_key;
use shardgate::schema::ColumnType;
use std::time::{Duration, Instant};

/// `n` events, `heavy` of every 10 of them for tenant `whale` (clicks), the rest spread over
/// 100 tenants.
fn skewed_events(n: usize, heavy: usize) -> Value {
    let rows: Vec<Value> = (0..n)
        .map(|i| {
            let tenant = if i % 10 < heavy {
                "whale".to_string()
            } else {
                format!("tenant-{}", i % 100)
            };
            json!({
                "event_id": uuid::Uuid::now_v7().to_string(),
                "tenant_id": tenant,
                "event_type": "click",
            })
        })
        .collect();
    Value::Array(rows)
}

/// The ring position of the `events` key `(tenant, event_type)`, as the admin API shows it.
fn key_hash(tenant: &str, event_type: &str) -> String {
    let parts = [
        (ColumnType::Text, tenant.as_bytes()),
        (ColumnType::Text, event_type.as_bytes()),
    ];
    format!("{:016x}", hash_key(parts, &mut Vec::new()).0)
}

#[tokio::test]
async fn a_tenant_sending_most_rows_is_found_hot_within_a_few_windows_and_no_other_is() {
    let urls = fresh_shards("hot_detect").await;
    let extra = "[hot_keys]\nwindow = \"200ms\"\nwindows = 3\nmin_share = 0.3\nmin_rows_per_second = 500\n";
    let gate = TestServer::start_on(urls, extra).await;
    let whale = key_hash("whale", "click");
    let started = Instant::now();
    let found = loop {
        let reply = gate
            .post("events", "application/json", skewed_events(500, 8).to_string())
            .await;
        assert_eq!(reply.status, 200, "{}", reply.body);
        let listed = gate.admin("/admin/hot-keys").await.body;
        let keys = listed["keys"].as_array().unwrap().clone();
        if keys.iter().any(|k| k["hot"] == true) {
            break keys;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "no hot key within 20 s: {listed}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let hot: Vec<&Value> = found.iter().filter(|k| k["hot"] == true).collect();
    assert_eq!(hot.len(), 1, "{found:?}");
    assert_eq!(hot[0]["table"], "events");
    assert_eq!(hot[0]["key_hash"], whale.as_str(), "{found:?}");
    assert!(hot[0]["windows"].as_u64().unwrap() >= 3);
    let share = hot[0]["share"].as_f64().unwrap();
    assert!(share > 0.5, "80% of the rows, all on one shard: {share}");
    assert!(
        found.iter().all(|k| k["key_hash"] == whale.as_str()),
        "a tenant with 0.2% of the rows is no candidate: {found:?}"
    );
    let metrics = gate.metrics_page().await;
    assert!(
        metrics.contains("shardgate_hot_keys{table=\"events\"} 1"),
        "{metrics}"
    );

    // Once the whale goes quiet its streak ends.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let reply = gate
            .post("events", "application/json", skewed_events(500, 0).to_string())
            .await;
        assert_eq!(reply.status, 200);
        let listed = gate.admin("/admin/hot-keys").await.body;
        if listed["keys"].as_array().unwrap().is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "the whale is still listed: {listed}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    gate.stop().await;
}
