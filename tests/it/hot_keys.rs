//! Hot keys on a running proxy: one tenant sending most rows is listed as hot within a few
//! windows (and the keys it drowns out are not), is split over salted positions on four shards,
//! and every read of it stays exact, through retries, a restart and a split made by hand.

use crate::admin::{TOKEN, add_shard, admin_cli, phase_of, with_token};
use crate::common::{
    Reply, TestServer, clusters, config_for, connect, fresh_database, fresh_shards, query_rows, time_to_epoch,
};
use serde_json::{Value, json};
use shardgate::routing::salt::salted_position;
use shardgate::routing::{KeyHash, hash_key};
use shardgate::schema::ColumnType;
use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

/// Four fresh shard databases, two on each shared cluster.
async fn four_shards(test: &str) -> Vec<String> {
    let mut urls = Vec::new();
    for i in 0..4 {
        urls.push(fresh_database(&clusters()[i % 2], &format!("{test}_s{i}")).await);
    }
    urls
}

/// Detection fast enough for a test, and a fan-out of 4 for any key above 400 rows/s.
pub const SPLIT_QUICKLY: &str = "[hot_keys]\nwindow = \"200ms\"\nwindows = 3\nmin_share = 0.3\n\
                             min_rows_per_second = 500\nrows_per_position = 100\nmax_fanout = 4\n\
                             split_delay = \"100ms\"\n";

/// `whale`'s rows on each shard, with the distinct positions they are stored at.
async fn whale_rows_per_shard(urls: &[String], tenant: &str) -> Vec<(i64, BTreeSet<i64>)> {
    let mut found = Vec::new();
    for url in urls {
        let rows = connect(url)
            .await
            .query("SELECT _sg_hash FROM events WHERE tenant_id = $1", &[&tenant])
            .await
            .unwrap();
        let positions: BTreeSet<i64> = rows.iter().map(|r| r.get(0)).collect();
        found.push((rows.len() as i64, positions));
    }
    found
}

/// Rows of `tenant` in `bodies`, counted once per event id.
fn oracle(bodies: &[Value], tenant: &str) -> (usize, usize) {
    let mut ids = HashMap::new();
    for body in bodies {
        for row in body.as_array().unwrap() {
            ids.insert(
                row["event_id"].as_str().unwrap().to_string(),
                row["tenant_id"] == tenant,
            );
        }
    }
    (ids.len(), ids.values().filter(|&&t| t).count())
}

async fn count_of(gate: &TestServer, tenant: &str) -> i64 {
    let rows = query_rows(
        gate,
        json!([tenant]),
        "SELECT count(*) AS n FROM events WHERE tenant_id = $1 AND event_type = 'click'",
    )
    .await;
    rows[0][0].as_i64().unwrap()
}

/// `shardgate admin hot-keys split events --fanout <fanout> --key <key>...` with the token.
async fn split_from_the_command_line(
    gate: &TestServer,
    fanout: &str,
    keys: &[&str],
) -> (bool, String, String) {
    let mut args = vec![
        "--token", TOKEN, "hot-keys", "split", "events", "--fanout", fanout,
    ];
    for key in keys {
        args.extend(["--key", key]);
    }
    admin_cli(gate, &args).await
}

async fn split_by_hand(gate: &TestServer, token: Option<&str>, body: Value) -> Reply {
    let mut request = gate.http.post(gate.admin_url("/admin/hot-keys")).json(&body);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    Reply::read(request.send().await.unwrap()).await
}

/// `n` events, `heavy` of every 10 of them for tenant `whale` (clicks), the rest spread over
/// 100 tenants.
pub fn skewed_events(n: usize, heavy: usize) -> Value {
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
pub fn key_hash(tenant: &str, event_type: &str) -> String {
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

#[tokio::test]
async fn a_tenant_sending_half_the_rows_is_split_over_four_shards_and_reads_stay_exact() {
    let urls = four_shards("hot_split").await;
    let gate = TestServer::start_on(urls.clone(), SPLIT_QUICKLY).await;
    let whale = key_hash("whale", "click");
    let mut sent = Vec::new();
    let started = Instant::now();
    let split = loop {
        let body = skewed_events(500, 5);
        let reply = gate.post("events", "application/json", body.to_string()).await;
        assert_eq!(reply.status, 200, "{}", reply.body);
        sent.push(body);
        let listed = gate.admin("/admin/hot-keys").await.body;
        if let Some(split) = listed["splits"].as_array().unwrap().first() {
            break split.clone();
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "no split within 20 s: {listed}"
        );
    };
    let took = started.elapsed();
    assert_eq!(split["table"], "events");
    assert_eq!(split["key_hash"], whale.as_str());
    assert_eq!(split["fanout"], 4, "{split}");
    assert_eq!(split["source"], "detected");
    let values_read_by = Instant::now() + Duration::from_secs(5);
    loop {
        let listed = gate.admin("/admin/hot-keys").await.body;
        if listed["splits"][0]["key_values"] == json!({"tenant_id": "whale", "event_type": "click"}) {
            break;
        }
        assert!(
            Instant::now() < values_read_by,
            "a key found by its hash has its values read back: {listed}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(took < Duration::from_secs(10), "detected and split in {took:?}");
    let before_split = sent.len();
    assert_eq!(
        count_of(&gate, "whale").await as usize,
        oracle(&sent, "whale").1,
        "exact at the split"
    );

    tokio::time::sleep(Duration::from_millis(300)).await;
    for _ in 0..20 {
        let body = skewed_events(500, 5);
        let reply = gate.post("events", "application/json", body.to_string()).await;
        assert_eq!(reply.status, 200, "{}", reply.body);
        sent.push(body);
    }
    let spread = whale_rows_per_shard(&urls, "whale").await;
    assert!(
        spread.iter().all(|(rows, _)| *rows > 0),
        "the whale is on every shard: {spread:?}"
    );
    let key = KeyHash(u64::from_str_radix(&whale, 16).unwrap());
    let salts: Vec<u32> = split["salts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_u64().unwrap() as u32)
        .collect();
    let allowed: BTreeSet<i64> = salts.iter().map(|&s| salted_position(key, s).as_i64()).collect();
    let stored: BTreeSet<i64> = spread.iter().flat_map(|(_, p)| p.iter().copied()).collect();
    assert_eq!(stored, allowed, "every salt is used, and no other position");
    let listed = gate.admin("/admin/hot-keys").await.body;
    let watched = listed["keys"].as_array().unwrap();
    assert!(
        watched
            .iter()
            .any(|k| k["key_hash"] == whale.as_str() && k["fanout"] == 4),
        "{listed}"
    );

    // Retries of rows sent before and after the split store nothing twice.
    for body in [&sent[0], &sent[before_split - 1], &sent[before_split + 5]] {
        let reply = gate.post("events", "application/json", body.to_string()).await;
        assert_eq!(reply.status, 200, "{}", reply.body);
    }
    let (all, whales) = oracle(&sent, "whale");
    assert_eq!(gate.total("events").await as usize, all);
    assert_eq!(count_of(&gate, "whale").await as usize, whales);
    let grouped = query_rows(
        &gate,
        json!([]),
        "SELECT tenant_id, count(*) AS n FROM events GROUP BY tenant_id ORDER BY n DESC LIMIT 2",
    )
    .await;
    assert_eq!(grouped[0], json!(["whale", whales]));
    let explained = gate
        .http
        .post(gate.url("/v1/query"))
        .json(&json!({"sql": "SELECT count(*) FROM events WHERE tenant_id = 'whale' AND event_type = 'click'", "explain": true}))
        .send()
        .await
        .unwrap();
    let explained = Reply::read(explained).await.body;
    assert_eq!(explained["shards"].as_array().unwrap().len(), 4, "{explained}");
    assert_eq!(explained["split_keys"][0]["salts"], split["salts"], "{explained}");
    let metrics = gate.metrics_page().await;
    let metric = |name: &str| -> f64 {
        let line = metrics
            .lines()
            .find(|l| l.starts_with(name))
            .unwrap_or_else(|| panic!("{name}: {metrics}"));
        line.rsplit(' ').next().unwrap().parse().unwrap()
    };
    let salted = metric("shardgate_rows_salted_total{table=\"events\"}");
    let at_salts: i64 = spread.iter().map(|(rows, _)| rows).sum::<i64>();
    assert!(
        salted > 0.0 && salted < at_salts as f64,
        "rows placed at a salt above 0: {salted}"
    );
    let skew = metric("shardgate_shard_skew{table=\"events\"}");
    assert!(
        (1.0..=4.0).contains(&skew),
        "the busiest of four shards over the mean: {skew}"
    );
    gate.stop().await;

    // A restarted proxy routes with the split it finds in the catalog.
    let again = TestServer::start_on(urls.clone(), SPLIT_QUICKLY).await;
    let listed = again.admin("/admin/hot-keys").await.body;
    assert_eq!(listed["splits"][0]["salts"], split["salts"], "{listed}");
    let key = u64::from_str_radix(listed["splits"][0]["key_hash"].as_str().unwrap(), 16).unwrap();
    let positions: Vec<String> = split["salts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|salt| {
            let salt = u32::try_from(salt.as_u64().unwrap()).unwrap();
            format!("{:016x}", salted_position(KeyHash(key), salt).0)
        })
        .collect();
    assert_eq!(
        listed["splits"][0]["positions"],
        json!(positions),
        "each salt's ring position"
    );
    let retried = again
        .post("events", "application/json", sent[before_split + 10].to_string())
        .await;
    assert_eq!(retried.status, 200);
    assert_eq!(
        again.total("events").await as usize,
        all,
        "a retry after the restart lands where it did"
    );
    assert_eq!(count_of(&again, "whale").await as usize, whales);
    again.stop().await;
}

#[tokio::test]
async fn an_operator_splits_a_key_by_hand_before_its_launch() {
    let urls = four_shards("hot_manual").await;
    let gate = TestServer::start_on(urls.clone(), &format!("{}{SPLIT_QUICKLY}", with_token())).await;
    let second = TestServer::start_on(urls.clone(), SPLIT_QUICKLY).await;
    let launch =
        json!({"table": "events", "key": {"tenant_id": "launch", "event_type": "click"}, "fanout": 4});
    let unauthorised = split_by_hand(&gate, None, launch.clone()).await;
    assert_eq!(unauthorised.status, 401);
    let cases = [
        (
            json!({"table": "nope", "key": {}, "fanout": 2}),
            404,
            "unknown table `nope`",
        ),
        (
            json!({"table": "events", "key": {"tenant_id": "launch", "event_type": "click"}, "fanout": 9}),
            400,
            "fanout must be between 2 and hot_keys.max_fanout (4), not 9",
        ),
        (
            json!({"table": "events", "key": {"tenant_id": "launch"}, "fanout": 2}),
            400,
            "the key lacks partition-key column `event_type`",
        ),
        (
            json!({"table": "events", "key": {"tenant_id": "launch", "event_type": "click", "n": 1}, "fanout": 2}),
            400,
            "`n` is not a partition-key column of events",
        ),
        (
            json!({"table": "events", "key": {"tenant_id": 5, "event_type": "click"}, "fanout": 2}),
            400,
            "`tenant_id`: expected a string, got 5",
        ),
    ];
    for (body, status, error) in cases {
        let reply = split_by_hand(&gate, Some(TOKEN), body.clone()).await;
        assert_eq!((reply.status, reply.error()), (status, error), "{body}");
    }
    let in_two =
        json!({"table": "events", "key": {"tenant_id": "launch", "event_type": "click"}, "fanout": 2});
    let made = split_by_hand(&gate, Some(TOKEN), in_two.clone()).await;
    assert_eq!(made.status, 200, "{}", made.body);
    assert_eq!(made.body["grown"], true);
    assert_eq!(made.body["key_hash"], key_hash("launch", "click").as_str());
    tokio::time::sleep(Duration::from_millis(300)).await;
    let launch_rows = |n: usize| -> Value {
        let rows = (0..n)
            .map(|_| json!({"event_id": uuid::Uuid::now_v7().to_string(), "tenant_id": "launch", "event_type": "click"}));
        Value::Array(rows.collect())
    };
    let first = launch_rows(400);
    assert_eq!(gate.post_events(&first).await.status, 200);
    let in_two_ways = whale_rows_per_shard(&urls, "launch").await;
    let positions: BTreeSet<i64> = in_two_ways.iter().flat_map(|(_, p)| p.iter().copied()).collect();
    assert_eq!(positions.len(), 2, "{in_two_ways:?}");

    // The launch comes bigger than planned: four ways. Rows made while it was two ways, retried
    // now, land where they are.
    let grown = split_by_hand(&gate, Some(TOKEN), launch.clone()).await;
    assert_eq!(
        (grown.status, &grown.body["grown"]),
        (200, &json!(true)),
        "{}",
        grown.body
    );
    let smaller = split_by_hand(&gate, Some(TOKEN), in_two).await;
    assert_eq!(
        (smaller.status, &smaller.body["grown"], &smaller.body["fanout"]),
        (200, &json!(false), &json!(4))
    );
    let listed = gate.admin("/admin/hot-keys").await.body;
    let steps = listed["splits"].as_array().unwrap();
    assert_eq!(steps.len(), 2, "{listed}");
    assert_eq!(steps[1]["source"], "manual");
    assert_eq!(steps[1]["key_values"], launch["key"]);
    assert!(steps[1]["epoch"].as_i64() > steps[0]["epoch"].as_i64());
    let learned = time_to_epoch(
        &second,
        steps[1]["epoch"].as_i64().unwrap(),
        Duration::from_secs(5),
    )
    .await;
    assert!(
        learned < Duration::from_secs(1),
        "a second proxy publishes the split in {learned:?}"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(gate.post_events(&first).await.status, 200);
    assert_eq!(
        second.post_events(&first).await.status,
        200,
        "the same retry through the other proxy"
    );
    assert_eq!(
        count_of(&gate, "launch").await,
        400,
        "the retry stored nothing twice"
    );
    assert_eq!(gate.post_events(&launch_rows(400)).await.status, 200);
    let spread = whale_rows_per_shard(&urls, "launch").await;
    assert!(
        spread.iter().all(|(rows, _)| *rows > 40),
        "the new rows go four ways: {spread:?}"
    );
    let positions: BTreeSet<i64> = spread.iter().flat_map(|(_, p)| p.iter().copied()).collect();
    assert_eq!(positions.len(), 4);
    assert_eq!(count_of(&gate, "launch").await, 800);

    // The same from the command line.
    let (ok, stdout, stderr) =
        split_from_the_command_line(&gate, "3", &["tenant_id=cli", "event_type=click"]).await;
    assert!(ok, "{stderr}");
    let cli_key = key_hash("cli", "click");
    assert!(
        stdout.starts_with(&format!("events key {cli_key} now spreads over 3 positions")),
        "{stdout}"
    );
    let (ok, stdout, _) =
        split_from_the_command_line(&gate, "3", &["tenant_id=cli", "event_type=click"]).await;
    assert!(
        ok && stdout.contains("already spreads over 3 positions; fan-out only grows"),
        "{stdout}"
    );
    let (ok, _, stderr) = split_from_the_command_line(&gate, "2", &["tenant_id=x"]).await;
    assert!(
        !ok && stderr.contains("400 Bad Request: the key lacks partition-key column `event_type`"),
        "{stderr}"
    );
    let (ok, stdout, _) = admin_cli(&gate, &["hot-keys"]).await;
    assert!(ok, "{stdout}");
    let listed = stdout.lines().find(|l| l.contains(&cli_key)).unwrap_or_default();
    assert!(
        listed.contains("manual") && listed.contains(r#""tenant_id":"cli""#),
        "{stdout}"
    );
    gate.stop().await;
}

#[tokio::test]
async fn a_split_key_whose_salts_move_to_a_new_shard_stays_exact() {
    let urls = fresh_shards("hot_move").await;
    let third = fresh_database(&clusters()[1], "hot_move_s2").await;
    let extra = format!(
        "{}{SPLIT_QUICKLY}[reshard]\ngrace = \"200ms\"\ncleanup_delay = \"2s\"\nchunk_rows = 300\n\
         [query]\nstatement_timeout = \"2s\"\n",
        with_token()
    );
    let gate = TestServer::start_on(urls.clone(), &extra).await;
    let launch =
        json!({"table": "events", "key": {"tenant_id": "launch", "event_type": "click"}, "fanout": 4});
    let made = split_by_hand(&gate, Some(TOKEN), launch).await;
    assert_eq!(made.status, 200, "{}", made.body);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let launch_rows = |n: usize| -> Value {
        let rows = (0..n)
            .map(|_| json!({"event_id": uuid::Uuid::now_v7().to_string(), "tenant_id": "launch", "event_type": "click"}));
        Value::Array(rows.collect())
    };
    for _ in 0..4 {
        assert_eq!(gate.post_events(&launch_rows(500)).await.status, 200);
    }
    let started = add_shard(&gate, "s2", &third).await;
    assert_eq!(started.status, 202, "{}", started.body);
    let id = started.body["migration"].as_i64().unwrap();
    let mut written = 2000;
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let phase = phase_of(&gate, id).await;
        assert_ne!(phase, "failed", "{}", gate.admin("/admin/migrations").await.body);
        assert_eq!(
            count_of(&gate, "launch").await,
            written,
            "a read of the key in phase {phase}"
        );
        if phase == "done" {
            break;
        }
        assert_eq!(gate.post_events(&launch_rows(100)).await.status, 200);
        written += 100;
        assert!(Instant::now() < deadline, "the migration ends");
    }
    assert_eq!(gate.post_events(&launch_rows(400)).await.status, 200);
    written += 400;
    assert_eq!(count_of(&gate, "launch").await, written);
    let mut all = urls.clone();
    all.push(third.clone());
    let seen = crate::common::placement(
        &all,
        &["s0", "s1", "s2"],
        &[("s0", 1), ("s1", 1), ("s2", 1)],
        "SELECT event_id::text, _sg_hash FROM events WHERE tenant_id = 'launch'",
    )
    .await;
    assert_eq!(
        seen.len() as i64,
        written,
        "every row once, on the owner of its salted position"
    );
    let on_new = seen.values().filter(|&&shard| shard == 2).count();
    assert!(on_new > 0, "some of the key's salts moved to s2");
    gate.stop().await;
}

#[tokio::test]
async fn a_key_over_its_tables_rate_cap_gets_429_and_the_other_keys_do_not() {
    let urls = fresh_shards("hot_cap").await;
    let mut config = config_for(&urls, "[hot_keys]\nwindow = \"200ms\"\n");
    config.tables[0].max_key_rows_per_second = Some(2_000);
    let gate = TestServer::start_with(config, urls).await;
    let whale = key_hash("whale", "click");
    let (mut accepted, mut accepted_once_limited) = (0i64, 0i64);
    let mut limited_since: Option<Instant> = None;
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(4) {
        let reply = gate
            .post("events", "application/json", skewed_events(200, 10).to_string())
            .await;
        match reply.status {
            200 => {
                accepted += 200;
                if limited_since.is_some() {
                    accepted_once_limited += 200;
                }
            }
            429 => {
                limited_since.get_or_insert_with(Instant::now);
                assert_eq!(
                    reply.error(),
                    format!(
                        "key {whale} of table events is over its limit of 2000 rows per second \
                         ([[tables]] max_key_rows_per_second); other keys are not limited; retry after 1s"
                    )
                );
                assert_eq!(reply.headers["retry-after"], "1");
            }
            other => panic!("{other}: {}", reply.body),
        }
        let others = gate
            .post("events", "application/json", skewed_events(200, 0).to_string())
            .await;
        assert_eq!(others.status, 200, "other keys are not limited: {}", others.body);
    }
    let limited_since = limited_since.expect("the whale was limited");
    assert!(
        limited_since - started < Duration::from_secs(1),
        "limited within a second"
    );
    let seconds = limited_since.elapsed().as_secs_f64();
    assert_eq!(
        count_of(&gate, "whale").await,
        accepted,
        "refused rows are not stored"
    );
    assert!(
        (accepted_once_limited as f64) <= 2_000.0 * (seconds + 1.0),
        "at most the limit and one second's allowance: {accepted_once_limited} rows in {seconds:.1} s"
    );
    assert!(
        (accepted_once_limited as f64) >= 2_000.0 * seconds * 0.5,
        "and not far below it: {accepted_once_limited} rows in {seconds:.1} s"
    );
    let metrics = gate.metrics_page().await;
    let refused_requests = metrics
        .lines()
        .find(|l| {
            l.starts_with("shardgate_requests_rejected_total{") && l.contains("reason=\"key_over_limit\"")
        })
        .unwrap_or_else(|| panic!("refusals are counted as key_over_limit: {metrics}"));
    assert!(!refused_requests.ends_with(" 0"), "{refused_requests}");
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("shardgate_rows_rejected_total{")
                && l.contains("reason=\"key_over_limit\"")),
        "{metrics}"
    );
    gate.stop().await;
}
