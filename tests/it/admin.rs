//! The admin endpoints that look at or change the shard set: the admin token guards the changes,
//! `GET /admin/ring` lists the ranges, and `POST /admin/shards/plan` checks a database that is
//! to join and answers what adding it would move, refusing a bad one with the reason.

use crate::common::{Reply, TestServer, clusters, connect, events, fresh_database, fresh_shards};
use serde_json::{Value, json};

const TOKEN: &str = "test-admin-token-0123456789";

fn with_token() -> String {
    format!("[admin]\ntoken = \"{TOKEN}\"\n")
}

async fn plan(gate: &TestServer, token: Option<&str>, body: &str) -> Reply {
    let mut request = gate
        .http
        .post(gate.admin_url("/admin/shards/plan"))
        .header("content-type", "application/json")
        .body(body.to_string());
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    Reply::read(request.send().await.unwrap()).await
}

fn add(name: &str, url: &str) -> String {
    json!({"name": name, "url": url}).to_string()
}

#[tokio::test]
async fn changing_the_shard_set_needs_the_configured_admin_token() {
    let urls = fresh_shards("admin_token_off").await;
    let third = fresh_database(&clusters()[0], "admin_token_off_s2").await;
    let open = TestServer::start_on(urls, "").await;
    let refused = plan(&open, Some(TOKEN), &add("s2", &third)).await;
    assert_eq!(refused.status, 403);
    assert_eq!(
        refused.error(),
        "changing the shard set through the admin API is turned off: set admin.token in the \
         config or SHARDGATE_ADMIN_TOKEN, then send it as Authorization: Bearer <token>"
    );
    open.stop().await;

    let gate = TestServer::start("admin_token_on", &with_token()).await;
    let missing = plan(&gate, None, &add("s2", &third)).await;
    assert_eq!(missing.status, 401);
    assert_eq!(
        missing.error(),
        "this endpoint needs Authorization: Bearer <admin token>"
    );
    assert_eq!(missing.headers["www-authenticate"], "Bearer");
    let wrong = plan(&gate, Some("test-admin-token-0123456780"), &add("s2", &third)).await;
    assert_eq!(
        (wrong.status, wrong.error()),
        (401, "the admin token does not match")
    );
    let allowed = plan(&gate, Some(TOKEN), &add("s2", &third)).await;
    assert_eq!(allowed.status, 200, "{}", allowed.body);
    gate.stop().await;
}

#[tokio::test]
async fn the_ring_lists_every_range_with_its_owner_in_order() {
    let gate = TestServer::start("admin_ring", "").await;
    let ring = gate.admin("/admin/ring").await;
    assert_eq!(ring.status, 200);
    assert_eq!(ring.body["epoch"], 1);
    let ranges = ring.body["ranges"].as_array().unwrap();
    assert_eq!(ranges.len(), 2 * 256, "two shards of 256 vnodes");
    let last_end = &ranges[ranges.len() - 1]["end"];
    assert_eq!(
        &ranges[0]["start"], last_end,
        "the first range wraps from the last token"
    );
    for pair in ranges.windows(2) {
        assert_eq!(pair[0]["end"], pair[1]["start"], "ranges are contiguous");
        assert!(pair[0]["end"].as_u64() < pair[1]["end"].as_u64(), "in ring order");
    }
    for shard in ["s0", "s1"] {
        let owned = ranges.iter().filter(|r| r["shard"] == shard).count();
        assert_eq!(owned, 256, "{shard}");
    }
    gate.stop().await;
}

#[tokio::test]
async fn a_plan_lists_the_ranges_a_new_shard_takes_and_changes_nothing() {
    let gate = TestServer::start("admin_plan", &with_token()).await;
    let written = gate.post_events(&events(3000, 97)).await;
    assert_eq!(written.status, 200, "{}", written.body);
    let third = fresh_database(&clusters()[1], "admin_plan_s2").await;
    let reply = plan(
        &gate,
        Some(TOKEN),
        &json!({"name": "s2", "url": third, "weight": 1}).to_string(),
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let plan = &reply.body;
    assert_eq!(
        (&plan["shard"], &plan["weight"], &plan["epoch"]),
        (&json!("s2"), &json!(1), &json!(1))
    );
    assert!(
        plan["server_version"].as_str().unwrap().starts_with("15"),
        "{plan}"
    );
    let owned = plan["owned_fraction"].as_f64().unwrap();
    assert!((0.25..0.42).contains(&owned), "about a third: {owned}");
    let ranges = plan["ranges"].as_array().unwrap();
    assert!(
        (100..=256).contains(&ranges.len()),
        "s2's 256 tokens, neighbours taken from one source merged: {}",
        ranges.len()
    );
    assert!(
        ranges.iter().all(|r| r["target"] == "s2"),
        "every range goes to the new shard"
    );
    let estimated: u64 = ranges.iter().map(|r| r["estimated_rows"].as_u64().unwrap()).sum();
    assert_eq!(plan["estimated_rows"].as_u64().unwrap(), estimated);
    assert!(
        (300..2000).contains(&estimated),
        "roughly a third of 3000 rows: {estimated}"
    );
    let mut covered = 0.0;
    for source in ["s0", "s1"] {
        let summary = &plan["sources"][source];
        let ranges_of_source = ranges.iter().filter(|r| r["source"] == source).count();
        assert_eq!(
            summary["ranges"].as_u64().unwrap() as usize,
            ranges_of_source,
            "{plan}"
        );
        covered += summary["fraction"].as_f64().unwrap();
    }
    assert!(
        (covered - owned).abs() < 1e-9,
        "the sources give up exactly what s2 takes"
    );
    let listed = gate.admin("/admin/shards").await.body;
    assert_eq!(
        listed.as_array().unwrap().len(),
        2,
        "planning adds no shard: {listed}"
    );
    let untouched: bool = connect(&third)
        .await
        .query_one(
            "SELECT to_regclass('events') IS NULL AND to_regclass('shardgate_fence') IS NULL",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(untouched, "planning creates nothing on the new database");
    gate.stop().await;
}

#[tokio::test]
async fn a_bad_plan_request_names_the_problem() {
    let gate = TestServer::start("admin_plan_refusals", &with_token()).await;
    let cluster = &clusters()[0];
    let with_rows = fresh_database(cluster, "admin_plan_rows").await;
    let tables = shardgate::schema::Tables::from_config(&crate::common::config_for(&[], "").tables).unwrap();
    let (_, events_table) = tables.lookup("events").unwrap();
    let client = connect(&with_rows).await;
    client
        .batch_execute(&shardgate::schema::create_table_sql(events_table))
        .await
        .unwrap();
    client
        .batch_execute(
            "INSERT INTO events (event_id, tenant_id, event_type, n, ts, _sg_hash) \
             VALUES (gen_random_uuid(), 'a', 'b', 0, now(), 0)",
        )
        .await
        .unwrap();
    let differing = fresh_database(cluster, "admin_plan_differs").await;
    connect(&differing)
        .await
        .batch_execute("CREATE TABLE events (event_id bigint PRIMARY KEY)")
        .await
        .unwrap();
    let fresh = fresh_database(cluster, "admin_plan_fresh").await;
    let cases: Vec<(String, u16, String)> = vec![
        (
            "{\"name\": \"s2\"".into(),
            400,
            "the body must be {\"name\", \"url\", \"weight\"}: EOF".into(),
        ),
        (
            json!({"name": "s2", "url": fresh, "colour": "red"}).to_string(),
            400,
            "unknown field `colour`, expected one of `name`, `url`, `weight`".into(),
        ),
        (
            add("S-2", &fresh),
            400,
            "name `S-2` must match [a-z_][a-z0-9_]* (at most 63 characters)".into(),
        ),
        (
            json!({"name": "s2", "url": fresh, "weight": 0}).to_string(),
            400,
            "weight must be between 1 and 256".into(),
        ),
        (add("s2", "mysql://x"), 400, "url is not a Postgres URL".into()),
        (add("s1", &fresh), 409, "shard s1 already exists".into()),
        (
            add("s2", "postgres://postgres@127.0.0.1:1/nowhere"),
            400,
            "cannot connect to postgres://postgres@127.0.0.1:1/nowhere".into(),
        ),
        (
            add("s2", &gate.shard_urls[0]),
            409,
            "it is a shardgate shard already (it has a shardgate_fence table)".into(),
        ),
        (
            add("s2", &with_rows),
            409,
            "table events already holds rows; a new shard must start empty".into(),
        ),
        (
            add("s2", &differing),
            409,
            "table events differs from the config: column event_id has type bigint, the config says uuid"
                .into(),
        ),
    ];
    for (body, status, message) in cases {
        let reply = plan(&gate, Some(TOKEN), &body).await;
        assert_eq!(reply.status, status, "{body}: {}", reply.body);
        assert!(reply.error().contains(&message), "{body}: {}", reply.error());
        assert_eq!(reply.body["details"], Value::Array(vec![]));
    }
    gate.stop().await;
}
