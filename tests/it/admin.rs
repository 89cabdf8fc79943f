//! The admin endpoints that look at or change the shard set: the admin token guards the changes,
//! `GET /admin/ring` lists the ranges, and `POST /admin/shards/plan` checks a database that is
//! to join and answers what adding it would move, refusing a bad one with the reason.

use crate::common::{Reply, TestServer, clusters, connect, events, fresh_database, fresh_shards, query_rows};
use serde_json::{Value, json};
use std::collections::HashMap;

pub const TOKEN: &str = "test-admin-token-0123456789";

pub fn with_token() -> String {
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
        "the admin API is turned off: set admin.token in the config or SHARDGATE_ADMIN_TOKEN and \
         send it as Authorization: Bearer <token>, or grant a user admin = true"
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

    let tagged = |tag: &'static str| {
        gate.http
            .get(gate.admin_url("/admin/ring"))
            .header("if-none-match", tag)
            .send()
    };
    let fresh = tagged("\"epoch-0\"").await.unwrap();
    assert_eq!(fresh.status(), 200, "another epoch's tag gets the ring");
    assert_eq!(fresh.headers()["etag"], "\"epoch-1\"");
    assert_eq!(fresh.headers()["cache-control"], "no-cache");
    let same = tagged("\"epoch-1\"").await.unwrap();
    assert_eq!(
        same.status(),
        304,
        "the ring of the tag's epoch is not sent again"
    );
    assert_eq!(same.headers()["etag"], "\"epoch-1\"");
    assert!(same.bytes().await.unwrap().is_empty());
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
        assert_eq!(
            reply.error().matches("cannot connect to").count(),
            usize::from(message.starts_with("cannot connect to")),
            "the reason is said once: {}",
            reply.error()
        );
    }
    gate.stop().await;
}

pub async fn add_shard(gate: &TestServer, name: &str, url: &str) -> Reply {
    let response = gate
        .http
        .post(gate.admin_url("/admin/shards"))
        .bearer_auth(TOKEN)
        .json(&json!({"name": name, "url": url}))
        .send()
        .await
        .unwrap();
    Reply::read(response).await
}

/// Rows posted by the writer running during the migration: `n` from one million up, so the
/// queries checked meanwhile (`n < 1000000`) see only the rows written before.
fn live_rows(batch: usize) -> Value {
    let rows: Vec<Value> = (0..100)
        .map(|i| {
            json!({
                "event_id": uuid::Uuid::now_v7().to_string(),
                "tenant_id": format!("live-{}", i % 97),
                "event_type": if i % 2 == 0 { "click" } else { "view" },
                "n": 1_000_000 + batch * 100 + i,
            })
        })
        .collect();
    Value::Array(rows)
}

#[tokio::test]
async fn a_shard_added_while_writes_flow_takes_its_share_with_every_row_once_and_queries_exact() {
    let urls = fresh_shards("admin_add").await;
    let third = fresh_database(&clusters()[1], "admin_add_s2").await;
    let extra = format!(
        "{}[reshard]\ngrace = \"200ms\"\ncleanup_delay = \"2s\"\nchunk_rows = 150\n\
         [query]\nstatement_timeout = \"2s\"\n[catalog]\nrefresh_interval = \"1s\"\n",
        with_token()
    );
    let gate = start_events_only(&urls, &extra).await;
    let before = events(2000, 97);
    assert_eq!(gate.post_events(&before).await.status, 200);
    let expected = per_tenant(before.as_array().unwrap());

    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let (http, url, stop) = (
            gate.http.clone(),
            gate.url("/v1/tables/events/rows"),
            stop.clone(),
        );
        tokio::spawn(async move {
            let (mut acknowledged, mut refusals) = (Vec::new(), Vec::new());
            let mut batch = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let rows = live_rows(batch);
                batch += 1;
                let reply = Reply::read(http.post(&url).json(&rows).send().await.unwrap()).await;
                if reply.status == 200 {
                    acknowledged.extend(rows.as_array().unwrap().iter().cloned());
                } else {
                    refusals.push(reply.body);
                }
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
            (acknowledged, refusals)
        })
    };

    let started = add_shard(&gate, "s2", &third).await;
    assert_eq!(started.status, 202, "{}", started.body);
    let id = started.body["migration"].as_i64().unwrap();
    let planned = started.body["plan"]["ranges"].as_array().unwrap().len();
    let other = fresh_database(&clusters()[0], "admin_add_s3").await;
    let second = add_shard(&gate, "s3", &other).await;
    assert_eq!(second.status, 409, "{}", second.body);
    assert_eq!(
        second.error(),
        format!("migration {id} is still running; wait for it to end")
    );

    let mut phases_seen = std::collections::BTreeSet::new();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(90);
    let finished =
        loop {
            let status = gate.admin(&format!("/admin/migrations/{id}")).await;
            assert_eq!(status.status, 200, "{}", status.body);
            let phase = status.body["migration"]["phase"].as_str().unwrap().to_string();
            phases_seen.insert(phase.clone());
            assert_ne!(phase, "failed", "{}", status.body["migration"]);
            let answer = query_rows(&gate, json!([]),
            "SELECT tenant_id, count(*) FROM events WHERE n < 1000000 GROUP BY tenant_id ORDER BY tenant_id",
        )
        .await;
            assert_eq!(answer, expected, "a reporting query during phase {phase}");
            if phase == "done" {
                break status.body;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the migration ends: {}",
                status.body["migration"]
            );
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        };
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (live, refusals) = writer.await.unwrap();
    assert!(
        refusals.is_empty(),
        "no write was refused during the migration: {refusals:?}"
    );
    assert!(live.len() >= 500, "writes kept flowing: {}", live.len());
    assert!(
        phases_seen.contains("cleaning") || phases_seen.contains("copying"),
        "{phases_seen:?}"
    );
    assert_eq!(finished["ranges"].as_array().unwrap().len(), planned);
    assert!(
        finished["ranges"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["phase"] == "cleaned")
    );
    assert!(
        finished["migration"]["rows_copied"].as_i64().unwrap() > 0,
        "{finished}"
    );

    let mut all_urls = urls.clone();
    all_urls.push(third.clone());
    let seen = placement(&all_urls, &["s0", "s1", "s2"], &[("s0", 1), ("s1", 1), ("s2", 1)]).await;
    let acknowledged: Vec<&Value> = before.as_array().unwrap().iter().chain(&live).collect();
    assert_eq!(
        seen.len(),
        acknowledged.len(),
        "exactly the acknowledged rows exist"
    );
    for row in &acknowledged {
        assert!(seen.contains_key(row["event_id"].as_str().unwrap()));
    }
    let on_new = seen.values().filter(|&&i| i == 2).count();
    assert!(
        on_new * 5 > seen.len(),
        "s2 took about a third: {on_new} of {}",
        seen.len()
    );
    let listed = gate.admin("/admin/shards").await.body;
    assert_eq!(listed[2]["name"], "s2", "{listed}");
    let metrics = gate.metrics_page().await;
    let copied = finished["migration"]["rows_copied"].as_i64().unwrap();
    assert!(
        metrics.contains(&format!("shardgate_migration_rows_copied_total {copied}")),
        "{metrics}"
    );
    assert!(
        metrics.contains("shardgate_migration_phase{phase=\"copying\"} 0"),
        "{metrics}"
    );
    for shard in ["s0", "s1", "s2"] {
        let prefix = format!("shardgate_fence_move_duration_seconds_count{{shard=\"{shard}\"}} ");
        let moves: u64 = metrics
            .lines()
            .find_map(|line| line.strip_prefix(&prefix))
            .and_then(|count| count.parse().ok())
            .unwrap_or_else(|| panic!("{prefix}: {metrics}"));
        assert!(
            moves >= 2,
            "{shard}'s fence moved for the dual-write and the cutover: {moves}"
        );
    }
    assert_eq!(gate.admin("/admin/migrations").await.body[0]["phase"], "done");
    gate.stop().await;
}

fn per_tenant(rows: &[Value]) -> Value {
    let mut counts: std::collections::BTreeMap<String, i64> = std::collections::BTreeMap::new();
    for row in rows {
        *counts
            .entry(row["tenant_id"].as_str().unwrap().to_string())
            .or_default() += 1;
    }
    Value::Array(counts.into_iter().map(|(t, n)| json!([t, n])).collect())
}

/// A server on `urls` declaring `events` alone (every table has an id), with `extra` TOML.
async fn start_events_only(urls: &[String], extra: &str) -> TestServer {
    let mut config = crate::common::config_for(urls, extra);
    config.tables.retain(|t| t.name == "events");
    TestServer::start_with(config, urls.to_vec()).await
}

pub async fn phase_of(gate: &TestServer, id: i64) -> String {
    let status = gate.admin(&format!("/admin/migrations/{id}")).await;
    status.body["migration"]["phase"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn a_migration_cut_short_by_a_restart_goes_on_from_its_phase() {
    let urls = fresh_shards("admin_resume").await;
    let third = fresh_database(&clusters()[0], "admin_resume_s2").await;
    let settings = |cleanup: &str| {
        format!(
            "{}[reshard]\ngrace = \"100ms\"\ncleanup_delay = \"{cleanup}\"\n[query]\nstatement_timeout = \"1s\"\n",
            with_token()
        )
    };
    let first = start_events_only(&urls, &settings("1h")).await;
    let rows = events(1500, 97);
    assert_eq!(first.post_events(&rows).await.status, 200);
    let started = add_shard(&first, "s2", &third).await;
    assert_eq!(started.status, 202, "{}", started.body);
    let id = started.body["migration"].as_i64().unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while phase_of(&first, id).await != "cleaning" {
        assert!(std::time::Instant::now() < deadline, "the cutover happens");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    // Stopped while it waits to clean up: the sources still hold the moved rows.
    first.stop().await;
    let held: i64 = {
        let mut total = 0;
        for url in &urls {
            total += crate::common::count_on(url, "events").await;
        }
        total
    };
    assert_eq!(
        held, 1500,
        "the old owners still hold every row, the moved ones included"
    );
    let copied = crate::common::count_on(&third, "events").await;
    assert!(copied > 0, "the new shard holds its copies");

    let second = start_events_only(&urls, &settings("1s")).await;
    while phase_of(&second, id).await != "done" {
        assert!(
            std::time::Instant::now() < deadline,
            "the restarted proxy finishes it"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let mut all = urls.clone();
    all.push(third);
    let mut stored = 0;
    for url in &all {
        stored += crate::common::count_on(url, "events").await;
    }
    assert_eq!(stored, 1500, "after the cleanup every row is stored once");
    let total = query_rows(&second, json!([]), "SELECT count(*) FROM events").await;
    assert_eq!(total, json!([[1500]]));
    second.stop().await;
}

/// Runs `shardgate admin --url <admin> args...` without blocking the server's runtime.
pub async fn admin_cli(gate: &TestServer, args: &[&str]) -> (bool, String, String) {
    let mut all = vec!["admin".to_string(), "--url".to_string(), gate.admin_url("")];
    all.extend(args.iter().map(|a| a.to_string()));
    let output = tokio::task::spawn_blocking(move || crate::common::shardgate(&all))
        .await
        .unwrap();
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[tokio::test]
async fn the_admin_command_plans_adds_and_follows_a_shard_to_the_end() {
    let urls = fresh_shards("admin_cli").await;
    let third = fresh_database(&clusters()[1], "admin_cli_s2").await;
    let extra = format!(
        "{}[reshard]\ngrace = \"100ms\"\ncleanup_delay = \"1s\"\n[query]\nstatement_timeout = \"1s\"\n",
        with_token()
    );
    let gate = start_events_only(&urls, &extra).await;
    assert_eq!(gate.post_events(&events(800, 97)).await.status, 200);

    let (ok, _, stderr) = admin_cli(&gate, &["shards", "plan", "s2", &third]).await;
    assert!(!ok);
    assert!(
        stderr.contains("401 Unauthorized: this endpoint needs Authorization: Bearer <admin token>"),
        "{stderr}"
    );
    let (ok, stdout, stderr) = admin_cli(&gate, &["--token", TOKEN, "shards", "plan", "s2", &third]).await;
    assert!(ok, "{stderr}");
    assert!(
        stdout.contains("would own") && stdout.contains("  from s0: ") && stdout.contains("  from s1: "),
        "{stdout}"
    );

    let (ok, stdout, stderr) = admin_cli(&gate, &["--token", TOKEN, "shards", "add", "s2", &third]).await;
    assert!(ok, "{stderr}");
    assert!(
        stdout.contains("migration 1 started at epoch 2: adding s2"),
        "{stdout}"
    );
    assert!(
        stdout.contains("migration 1 done: "),
        "it follows the migration to its end: {stdout}"
    );

    let (ok, stdout, _) = admin_cli(&gate, &["migrations"]).await;
    assert!(ok);
    let row = stdout.lines().nth(1).unwrap_or_default();
    assert!(
        row.contains(" add ") && row.contains(" s2 ") && row.contains(" done "),
        "{stdout}"
    );
    let (ok, stdout, _) = admin_cli(&gate, &["shards"]).await;
    assert!(ok && stdout.lines().any(|l| l.starts_with("s2 ")), "{stdout}");
    let (ok, _, stderr) = admin_cli(&gate, &["migrations", "99"]).await;
    assert!(
        !ok && stderr.contains("404 Not Found: no migration 99"),
        "{stderr}"
    );
    let (ok, stdout, stderr) = admin_cli(&gate, &["--token", TOKEN, "shards", "drain", "s2"]).await;
    assert!(ok, "{stderr}");
    assert!(
        stdout.contains("migration 2 started at epoch ") && stdout.contains(": draining s2"),
        "{stdout}"
    );
    assert!(stdout.contains("migration 2 done: "), "{stdout}");
    assert_eq!(
        crate::common::count_on(&third, "events").await,
        0,
        "s2 gave every row back"
    );
    let total = query_rows(&gate, json!([]), "SELECT count(*) FROM events").await;
    assert_eq!(total, json!([[800]]));
    gate.stop().await;
}

pub async fn admin_request(
    gate: &TestServer,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> Reply {
    let mut request = gate.http.request(method, gate.admin_url(path)).bearer_auth(TOKEN);
    if let Some(body) = body {
        request = request.json(&body);
    }
    Reply::read(request.send().await.unwrap()).await
}

pub async fn wait_done(gate: &TestServer, id: i64) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let phase = phase_of(gate, id).await;
        assert_ne!(phase, "failed");
        if phase == "done" {
            return;
        }
        let status = gate.admin(&format!("/admin/migrations/{id}")).await;
        assert!(
            std::time::Instant::now() < deadline,
            "migration {id} ends: {}",
            status.body["migration"]
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// Where each event is, by id (see [`crate::common::placement`]).
async fn placement(urls: &[String], names: &[&str], ring: &[(&str, u32)]) -> HashMap<String, usize> {
    crate::common::placement(urls, names, ring, "SELECT event_id::text, _sg_hash FROM events").await
}

#[tokio::test]
async fn a_shard_reweighted_then_drained_hands_its_ranges_over_exactly() {
    let mut urls = fresh_shards("admin_drain").await;
    urls.push(fresh_database(&clusters()[0], "admin_drain_s2").await);
    let extra = format!(
        "{}[reshard]\ngrace = \"100ms\"\ncleanup_delay = \"1s\"\n[query]\nstatement_timeout = \"1s\"\n",
        with_token()
    );
    let gate = start_events_only(&urls, &extra).await;
    assert_eq!(gate.post_events(&events(1500, 97)).await.status, 200);
    let names = ["s0", "s1", "s2"];

    let refusals = [
        (
            reqwest::Method::DELETE,
            "/admin/shards/s9",
            None,
            404,
            "no shard s9",
        ),
        (
            reqwest::Method::PATCH,
            "/admin/shards/s0",
            Some(json!({"weight": 1})),
            409,
            "shard s0 has weight 1 already; nothing would move",
        ),
        (
            reqwest::Method::PATCH,
            "/admin/shards/s0",
            Some(json!({"colour": 1})),
            400,
            "the body must be {\"weight\"}: unknown field `colour`",
        ),
        (
            reqwest::Method::PATCH,
            "/admin/shards/s0",
            Some(json!({"weight": 0})),
            400,
            "weight must be between 1 and 256",
        ),
    ];
    for (method, path, body, status, message) in refusals {
        let reply = admin_request(&gate, method, path, body).await;
        assert_eq!(reply.status, status, "{path}: {}", reply.body);
        assert!(reply.error().starts_with(message), "{path}: {}", reply.error());
    }

    let reweighted = admin_request(
        &gate,
        reqwest::Method::PATCH,
        "/admin/shards/s0",
        Some(json!({"weight": 2})),
    )
    .await;
    assert_eq!(reweighted.status, 202, "{}", reweighted.body);
    let ranges = reweighted.body["plan"]["ranges"].as_array().unwrap();
    assert!(
        ranges.iter().all(|r| r["target"] == "s0"),
        "a heavier s0 only takes ranges"
    );
    wait_done(&gate, reweighted.body["migration"].as_i64().unwrap()).await;
    let placed = placement(&urls, &names, &[("s0", 2), ("s1", 1), ("s2", 1)]).await;
    assert_eq!(placed.len(), 1500);
    let listed = gate.admin("/admin/shards").await.body;
    assert_eq!(listed[0]["weight"], 2, "{listed}");
    let owned = listed[0]["owned_fraction"].as_f64().unwrap();
    assert!((0.4..0.6).contains(&owned), "s0 owns about half now: {owned}");

    assert_eq!(gate.post_events(&events(300, 97)).await.status, 200);
    let drained = admin_request(&gate, reqwest::Method::DELETE, "/admin/shards/s1", None).await;
    assert_eq!(drained.status, 202, "{}", drained.body);
    let ranges = drained.body["plan"]["ranges"].as_array().unwrap();
    assert!(
        ranges.iter().all(|r| r["source"] == "s1"),
        "only s1's ranges move"
    );
    wait_done(&gate, drained.body["migration"].as_i64().unwrap()).await;
    let placed = placement(&urls, &names, &[("s0", 2), ("s2", 1)]).await;
    assert_eq!(placed.len(), 1800);
    assert_eq!(
        crate::common::count_on(&urls[1], "events").await,
        0,
        "s1 holds nothing"
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let listed = gate.admin("/admin/shards").await.body;
        let listed: Vec<&str> = listed
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["name"].as_str().unwrap())
            .collect();
        if listed == ["s0", "s2"] {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "s1 leaves the shard set: {listed:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(gate.post_events(&events(200, 97)).await.status, 200);
    let total = query_rows(&gate, json!([]), "SELECT count(*) FROM events").await;
    assert_eq!(total, json!([[2000]]));
    gate.stop().await;
}

/// `POST /admin/migrations/{id}/{action}` (pause, resume or cancel) with the admin token.
pub async fn control(gate: &TestServer, id: i64, action: &str) -> Reply {
    let path = format!("/admin/migrations/{id}/{action}");
    admin_request(gate, reqwest::Method::POST, &path, None).await
}

/// Migration `id` as `GET /admin/migrations/{id}` shows it.
pub async fn migration_status(gate: &TestServer, id: i64) -> Value {
    gate.admin(&format!("/admin/migrations/{id}")).await.body["migration"].clone()
}

/// Waits until migration `id`, as `GET /admin/migrations/{id}` shows it, is as `done` says;
/// panics naming `what` after a minute.
pub async fn wait_for(gate: &TestServer, id: i64, what: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let status = migration_status(gate, id).await;
        if done(&status) {
            return status;
        }
        assert!(std::time::Instant::now() < deadline, "{what}: {status}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// Waits until `shardgate_migration_paused` is `value` (1: the runner waits, copying
/// nothing, because its migration is paused); panics after ten seconds.
async fn wait_for_paused_runner(gate: &TestServer, value: f64) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let page = gate.metrics_page().await;
        if crate::common::sample(&page, "shardgate_migration_paused") == value {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "shardgate_migration_paused never became {value}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_paused_migration_waits_and_a_cancelled_one_leaves_the_old_placement_and_no_copy() {
    let urls = fresh_shards("admin_cancel").await;
    let third = fresh_database(&clusters()[1], "admin_cancel_s2").await;
    let extra = format!(
        "{}[reshard]\ngrace = \"100ms\"\ncleanup_delay = \"1s\"\nchunk_rows = 50\nrows_per_second = 300\n\
         [query]\nstatement_timeout = \"1s\"\n",
        with_token()
    );
    let gate = start_events_only(&urls, &extra).await;
    assert_eq!(gate.post_events(&events(3000, 97)).await.status, 200);
    let started = add_shard(&gate, "s2", &third).await;
    assert_eq!(started.status, 202, "{}", started.body);
    let id = started.body["migration"].as_i64().unwrap();
    wait_for(&gate, id, "copying starts", |m| {
        m["rows_copied"].as_i64() > Some(0)
    })
    .await;

    let paused = control(&gate, id, "pause").await;
    assert_eq!(
        (paused.status, &paused.body["migration"]["paused"]),
        (200, &json!(true)),
        "{}",
        paused.body
    );
    wait_for_paused_runner(&gate, 1.0).await;
    let before = migration_status(&gate, id).await["rows_copied"].as_i64().unwrap();
    let still = migration_status(&gate, id).await;
    assert_eq!(
        (still["rows_copied"].as_i64().unwrap(), still["phase"].as_str()),
        (before, Some("copying")),
        "paused: {still}"
    );
    let resumed = control(&gate, id, "resume").await;
    assert_eq!(
        (resumed.status, &resumed.body["migration"]["paused"]),
        (200, &json!(false))
    );
    wait_for(&gate, id, "copying goes on", |m| {
        m["rows_copied"].as_i64() > Some(before)
    })
    .await;
    wait_for_paused_runner(&gate, 0.0).await;

    let cancelled = control(&gate, id, "cancel").await;
    assert_eq!(cancelled.status, 200, "{}", cancelled.body);
    wait_for(&gate, id, "the cancel ends", |m| m["phase"] == "cancelled").await;
    assert_eq!(
        crate::common::count_on(&third, "events").await,
        0,
        "the copies are gone"
    );
    let fenced: bool = connect(&third)
        .await
        .query_one("SELECT to_regclass('shardgate_fence') IS NOT NULL", &[])
        .await
        .unwrap()
        .get(0);
    assert!(!fenced, "the database may be offered again");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while gate.admin("/admin/shards").await.body.as_array().unwrap().len() != 2 {
        assert!(std::time::Instant::now() < deadline, "s2 leaves the shard set");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(gate.post_events(&events(200, 97)).await.status, 200);
    let placed = placement(&urls, &["s0", "s1"], &[("s0", 1), ("s1", 1)]).await;
    assert_eq!(placed.len(), 3200, "the old placement holds every row, once");
    assert_eq!(
        query_rows(&gate, json!([]), "SELECT count(*) FROM events").await,
        json!([[3200]])
    );

    let refusals = [
        (
            format!("/admin/migrations/{id}/cancel"),
            409,
            format!("migration {id} is in phase cancelled; only a migration still copying can be cancelled"),
        ),
        (
            "/admin/migrations/99/cancel".to_string(),
            404,
            "no migration 99".to_string(),
        ),
        (
            "/admin/migrations/99/pause".to_string(),
            409,
            "migration 99 does not exist or has ended".to_string(),
        ),
        (
            format!("/admin/migrations/{id}/stop"),
            404,
            "no action stop: use pause, resume or cancel".to_string(),
        ),
    ];
    for (path, status, message) in refusals {
        let reply = admin_request(&gate, reqwest::Method::POST, &path, None).await;
        assert_eq!(
            (reply.status, reply.error()),
            (status, message.as_str()),
            "{path}"
        );
    }
    let again = add_shard(&gate, "s2", &third).await;
    assert_eq!(
        again.status, 202,
        "the name and the database may be used again: {}",
        again.body
    );
    gate.stop().await;
}
