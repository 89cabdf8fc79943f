//! Writes answered `202` once spooled, as a user lives them: the ack a request may choose, rows
//! that reach their shards once, a shard that is down holding back only its own rows, a full
//! spool answering 429, a proxy killed with `kill -9` while parts wait, whose successor cuts
//! the torn tail it left and writes every accepted row exactly once, writes spooled while a
//! shard is added (only the rows being copied wait for the cutover), parts spooled for a shard
//! drained away while their proxy was down, parts spooled before a restart whose rows are
//! partly in ranges being copied, commit-mode requests that go ahead of a backlog draining to
//! their shard, a body over the limit refused with 413 before anything is spooled, and
//! writes sent with an idempotency key spooled once, on one proxy or racing on two.

use crate::common::{
    Reply, TestServer, clusters, config_for, connect, count_on, events, fresh_database, fresh_shards, sample,
    shards_with_one_to_stop,
};
use crate::proxy::Proxy;
use serde_json::{Value, json};
use shardgate::config::{AckMode, Config};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// A directory of its own for one test's spool.
fn spool_dir(test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("shardgate-spool-{test}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// The test config with a spool in `dir` (plus `extra` keys under `[spool]`), `events`
/// acknowledged by commit unless a request asks for the spool, and `logs` always spooled.
fn spooling_config(urls: &[String], dir: &Path, extra: &str) -> Config {
    let spool = format!("[spool]\ndir = \"{}\"\n{extra}", dir.display());
    let mut config = config_for(urls, &spool);
    config.tables[0].ack_per_request = true;
    config.tables[1].ack = AckMode::Spool;
    config
}

/// `n` rows of `logs`, each `line` unique: `{prefix}-{i}`, over 29 sources.
fn log_rows(prefix: &str, n: usize) -> Value {
    let rows: Vec<Value> = (0..n)
        .map(|i| json!({"source": format!("src-{}", i % 29), "line": format!("{prefix}-{i}")}))
        .collect();
    Value::Array(rows)
}

/// Spools `requests` requests of `rows` rows of `logs` each, lines `{prefix}{request}-{i}`,
/// each answered `202`.
async fn spool_logs(gate: &TestServer, prefix: &str, requests: usize, rows: usize) {
    let url = gate.url("/v1/tables/logs/rows");
    for request in 0..requests {
        let reply = post(
            &gate.http,
            &url,
            &[],
            &log_rows(&format!("{prefix}{request}"), rows),
        )
        .await;
        assert_eq!(reply.status, 202, "{}", reply.body);
    }
}

/// A `shardgate serve` config for shards `urls` (named s0, s1, ...) spooling in `spool`, with
/// `extra` TOML after the spool's `dir`, and `logs` always spooled.
fn serve_config(urls: &[String], spool: &Path, extra: &str) -> String {
    let mut config = format!("[spool]\ndir = \"{}\"\n{extra}", spool.display());
    for (i, url) in urls.iter().enumerate() {
        config.push_str(&format!("[[shards]]\nname = \"s{i}\"\nurl = \"{url}\"\n"));
    }
    config.push_str(&crate::common::EVENTS_TABLE.replace(
        "partition_key = [\"source\"]",
        "partition_key = [\"source\"]\nack = \"spool\"",
    ));
    config
}

async fn post(http: &reqwest::Client, url: &str, headers: &[(&str, &str)], rows: &Value) -> Reply {
    let mut request = http.post(url).json(rows);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    Reply::read(request.send().await.unwrap()).await
}

/// Waits until `table` holds `rows` over `urls`; panics with what it found after `within`.
async fn wait_for_rows(urls: &[String], table: &str, rows: i64, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let mut found = 0;
        for url in urls {
            found += count_on(url, table).await;
        }
        if found == rows {
            return;
        }
        assert!(
            found < rows,
            "{table}: {found} rows, more than the {rows} accepted"
        );
        assert!(
            Instant::now() < deadline,
            "{table}: {found} of {rows} rows after {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Rows of `spool_logs(prefix, requests, rows)` whose position s2 owns once added to s0 and s1.
fn rows_taken_by_s2(prefix: &str, requests: usize, rows: usize) -> i64 {
    owners_of_rows(prefix, requests, rows)
        .filter(|&(_, after)| after == 2)
        .count() as i64
}

/// Rows of `spool_logs(prefix, requests, rows)` that s1 owns and s2 takes when it is added.
fn rows_moving_from_s1_to_s2(prefix: &str, requests: usize, rows: usize) -> i64 {
    owners_of_rows(prefix, requests, rows)
        .filter(|&owners| owners == (1, 2))
        .count() as i64
}

/// The owner of each row of `spool_logs(prefix, requests, rows)` on s0 and s1, and once s2 is
/// added.
fn owners_of_rows(prefix: &str, requests: usize, rows: usize) -> impl Iterator<Item = (usize, usize)> {
    use shardgate::routing::Ring;
    let before = Ring::build([("s0", 1), ("s1", 1)], 256).unwrap();
    let after = Ring::build([("s0", 1), ("s1", 1), ("s2", 1)], 256).unwrap();
    let mut scratch = Vec::new();
    let owners: Vec<(usize, usize)> = (0..requests)
        .flat_map(|request| {
            log_rows(&format!("{prefix}{request}"), rows)
                .as_array()
                .unwrap()
                .clone()
        })
        .map(|row| {
            let source = row["source"].as_str().unwrap().as_bytes();
            let key =
                shardgate::routing::hash_key([(shardgate::schema::ColumnType::Text, source)], &mut scratch);
            let owner = |ring: &Ring| ring.ranges().find(|r| r.contains(key)).unwrap().shard.0;
            (owner(&before), owner(&after))
        })
        .collect();
    owners.into_iter()
}

/// Checks a refusal's status and exact error text.
fn assert_refused(reply: &Reply, status: u16, message: impl AsRef<str>) {
    assert_eq!(reply.status, status, "{}", reply.body);
    assert_eq!(reply.error(), message.as_ref());
}

/// Distinct `line`s of `logs` over `urls`, which must equal its rows (no row stored twice).
async fn distinct_lines(urls: &[String]) -> i64 {
    let mut lines = std::collections::HashSet::new();
    for url in urls {
        for row in connect(url)
            .await
            .query("SELECT line FROM logs", &[])
            .await
            .unwrap()
        {
            let line: String = row.get(0);
            assert!(lines.insert(line.clone()), "line {line} is stored twice");
        }
    }
    lines.len() as i64
}

#[tokio::test]
async fn a_spooled_write_is_answered_202_and_its_rows_reach_their_shards_once() {
    let urls = fresh_shards("spool_ack").await;
    let dir = spool_dir("ack");
    let gate = TestServer::start_with(spooling_config(&urls, &dir, ""), urls.clone()).await;
    let (events_url, logs_url) = (
        gate.url("/v1/tables/events/rows"),
        gate.url("/v1/tables/logs/rows"),
    );

    let mut write_ids = std::collections::HashSet::new();
    for round in 0..10 {
        let reply = post(
            &gate.http,
            &events_url,
            &[("prefer", "respond-async")],
            &events(30, 7),
        )
        .await;
        assert_eq!(reply.status, 202, "{}", reply.body);
        assert_eq!(reply.headers["preference-applied"], "respond-async");
        assert_eq!(reply.body["rows"], 30);
        let write_id: uuid::Uuid = reply.body["write_id"].as_str().unwrap().parse().unwrap();
        assert_eq!(write_id.get_version_num(), 7, "write ids are UUIDv7");
        write_ids.insert(write_id);

        let reply = post(&gate.http, &logs_url, &[], &log_rows(&format!("r{round}"), 40)).await;
        assert_eq!(reply.status, 202, "logs spool without asking: {}", reply.body);
        assert!(!reply.headers.contains_key("preference-applied"));
        write_ids.insert(reply.body["write_id"].as_str().unwrap().parse().unwrap());
    }
    assert_eq!(write_ids.len(), 20, "every write has its own id");
    wait_for_rows(&urls, "events", 300, Duration::from_secs(20)).await;
    wait_for_rows(&urls, "logs", 400, Duration::from_secs(20)).await;
    assert_eq!(distinct_lines(&urls).await, 400);

    let get = |path: String| {
        let request = gate.http.get(gate.url(&path));
        async move { Reply::read(request.send().await.unwrap()).await }
    };
    let some_id = write_ids.iter().next().unwrap();
    let status = get(format!("/v1/writes/{some_id}")).await;
    assert_eq!(status.status, 200, "{}", status.body);
    assert_eq!(status.body["status"], "committed");
    assert_eq!(status.body["write_id"], some_id.to_string());
    let shards = status.body["shards"].as_object().unwrap();
    let written: i64 = shards.values().map(|s| s["written"].as_i64().unwrap()).sum();
    assert_eq!(written, status.body["rows"].as_i64().unwrap(), "{}", status.body);
    assert!(shards.values().all(|s| s["pending"] == 0), "{}", status.body);
    let unknown = uuid::Uuid::now_v7();
    let status = get(format!("/v1/writes/{unknown}")).await;
    assert_refused(
        &status,
        404,
        format!(
            "write {unknown} is not known here: it was not spooled by this proxy, or its last row was \
             written more than 10m ago (spool.remember_writes)"
        ),
    );
    let status = get("/v1/writes/nope".to_string()).await;
    assert_refused(
        &status,
        400,
        "`nope` is not a write id (a UUID from a 202 answer)",
    );

    let committed = post(
        &gate.http,
        &events_url,
        &[("shardgate-ack", "commit")],
        &events(5, 5),
    )
    .await;
    assert_eq!(
        committed.status, 200,
        "events commit by default: {}",
        committed.body
    );
    assert_eq!(gate.total("events").await, 305, "a 200 means committed");

    let refused = post(
        &gate.http,
        &logs_url,
        &[("shardgate-ack", "commit")],
        &log_rows("no", 3),
    )
    .await;
    assert_refused(
        &refused,
        400,
        "table `logs` acknowledges with `spool` only; set ack_per_request = true on it to let requests choose",
    );
    let bad = post(
        &gate.http,
        &events_url,
        &[("shardgate-ack", "later")],
        &events(1, 1),
    )
    .await;
    assert_refused(
        &bad,
        400,
        "shardgate-ack must be `commit` or `spool`, not \"later\"",
    );

    let invalid = post(&gate.http, &logs_url, &[], &json!([{"source": "a", "line": 5}])).await;
    assert_eq!(invalid.status, 400, "validation is unchanged: {}", invalid.body);
    assert_eq!(invalid.body["details"][0]["column"], "line");

    let page = gate.metrics_page().await;
    for (table, outcome, rows) in [
        ("events", "spooled", 300.0),
        ("events", "drained", 300.0),
        ("logs", "spooled", 400.0),
        ("logs", "drained", 400.0),
    ] {
        let series = format!("shardgate_spool_rows_total{{outcome=\"{outcome}\",table=\"{table}\"}}");
        assert_eq!(sample(&page, &series), rows, "{series}");
    }
    gate.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_keyed_spooled_write_is_spooled_once_and_every_retry_is_answered_with_its_202() {
    let urls = fresh_shards("spool_keyed").await;
    let dir = spool_dir("keyed");
    let gate = TestServer::start_with(spooling_config(&urls, &dir, ""), urls.clone()).await;
    let (events_url, logs_url) = (
        gate.url("/v1/tables/events/rows"),
        gate.url("/v1/tables/logs/rows"),
    );
    let rows = events(20, 3);
    let preferred = [("prefer", "respond-async"), ("idempotency-key", "spool-key-1")];
    let first = post(&gate.http, &events_url, &preferred, &rows).await;
    assert_eq!(
        first.status, 200,
        "a preference for the spool is answered on commit: {}",
        first.body
    );
    assert!(!first.headers.contains_key("preference-applied"));
    assert_eq!(first.body["rows"], 20);
    let again = post(&gate.http, &events_url, &preferred, &rows).await;
    assert_eq!((again.status, &again.body), (200, &first.body));
    assert_eq!(again.headers["idempotent-replayed"], "true");

    let rows = events(20, 3);
    let asked = [("shardgate-ack", "spool"), ("idempotency-key", "spool-key-2")];
    let spooled = post(&gate.http, &events_url, &asked, &rows).await;
    assert_eq!(spooled.status, 202, "{}", spooled.body);
    assert!(!spooled.headers.contains_key("idempotent-replayed"));
    for retry in [&asked[..], &[("idempotency-key", "spool-key-2")]] {
        let again = post(&gate.http, &events_url, retry, &rows).await;
        assert_eq!(
            (again.status, &again.body),
            (202, &spooled.body),
            "answered as the first was, on commit or spool"
        );
        assert_eq!(again.headers["idempotent-replayed"], "true");
    }
    wait_for_rows(&urls, "events", 40, Duration::from_secs(20)).await;

    let lines = log_rows("keyed", 5);
    let key = [("idempotency-key", "spool-key-3")];
    let first = post(&gate.http, &logs_url, &key, &lines).await;
    assert_eq!(first.status, 202, "{}", first.body);
    for _ in 0..3 {
        let again = post(&gate.http, &logs_url, &key, &lines).await;
        assert_eq!((again.status, &again.body), (202, &first.body));
    }
    let other = post(&gate.http, &logs_url, &key, &log_rows("other", 5)).await;
    assert_refused(
        &other,
        422,
        "Idempotency-Key spool-key-3 was used for a different request (another table or body); \
         a key names one request",
    );
    wait_for_rows(&urls, "logs", 5, Duration::from_secs(20)).await;
    assert_eq!(distinct_lines(&urls).await, 5);
    let status = gate
        .http
        .get(gate.url(&format!(
            "/v1/writes/{}",
            first.body["write_id"].as_str().unwrap()
        )))
        .send()
        .await
        .unwrap();
    let status: Value = status.json().await.unwrap();
    assert_eq!(
        (&status["status"], &status["rows"]),
        (&json!("committed"), &json!(5))
    );
    gate.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn the_same_keyed_write_spooled_on_two_proxies_at_once_is_written_once() {
    let urls = fresh_shards("spool_keyed_race").await;
    let dirs = [spool_dir("keyed-race-a"), spool_dir("keyed-race-b")];
    let mut gates = Vec::new();
    for dir in &dirs {
        gates.push(TestServer::start_with(spooling_config(&urls, dir, ""), urls.clone()).await);
    }
    let keys = 12;
    let mut answers = Vec::new();
    for k in 0..keys {
        let key = format!("race-{k}");
        let lines = log_rows(&format!("race{k}"), 30);
        let sends = gates.iter().map(|gate| {
            let (http, url, key, lines) = (
                gate.http.clone(),
                gate.url("/v1/tables/logs/rows"),
                key.clone(),
                lines.clone(),
            );
            async move { post(&http, &url, &[("idempotency-key", key.as_str())], &lines).await }
        });
        answers.push(futures_util::future::join_all(sends).await);
    }
    for (k, pair) in answers.iter().enumerate() {
        assert_eq!(
            (pair[0].status, pair[1].status),
            (202, 202),
            "key {k}: {} {}",
            pair[0].body,
            pair[1].body
        );
        assert_eq!(
            pair[0].body["write_id"], pair[1].body["write_id"],
            "key {k}: both proxies answer with the write that claimed the key"
        );
    }
    wait_for_rows(&urls, "logs", keys * 30, Duration::from_secs(30)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(distinct_lines(&urls).await, keys * 30, "every row once");
    for gate in gates {
        gate.stop().await;
    }
    for dir in &dirs {
        let _ = std::fs::remove_dir_all(dir);
    }
}

#[tokio::test]
async fn a_shard_that_is_down_holds_back_only_its_rows_and_a_full_spool_answers_429() {
    let (doomed, urls) = shards_with_one_to_stop("spool_outage").await;
    let dir = spool_dir("outage");
    let sizes = "segment_bytes = \"64KiB\"\nmax_bytes = \"256KiB\"\n";
    let mut config = spooling_config(&urls, &dir, sizes);
    config.server.max_body_size = shardgate::units::ByteSize(16 << 10);
    let gate = TestServer::start_with(config, urls.clone()).await;
    let logs_url = gate.url("/v1/tables/logs/rows");
    doomed.stop().unwrap();
    let ready = gate.admin("/readyz").await;
    assert_eq!(
        ready.status, 200,
        "spooled writes are still taken: {}",
        ready.body
    );
    assert_eq!(
        ready.body["shards_down"],
        json!([{"shard": "s1", "reason": "unreachable"}])
    );
    assert_eq!(ready.body["spool"]["max_bytes"], 262144);

    let mut accepted = 0;
    let mut last_id = String::new();
    let full = loop {
        let reply = post(&gate.http, &logs_url, &[], &log_rows(&format!("b{accepted}"), 50)).await;
        match reply.status {
            202 => {
                accepted += 1;
                last_id = reply.body["write_id"].as_str().unwrap().to_string();
            }
            429 => break reply,
            other => panic!("{other}: {}", reply.body),
        }
        assert!(accepted < 1000, "the spool never filled");
    };
    assert!(accepted > 10, "{accepted} requests before the spool filled");
    assert!(
        full.error().starts_with("the spool is full: it holds ")
            && full.error().ends_with(" bytes of its 262144; retry after 1s"),
        "{}",
        full.error()
    );
    assert_eq!(full.headers["retry-after"], "1");
    let full_ready = gate.admin("/readyz").await;
    assert_eq!(
        full_ready.status, 503,
        "no room in the spool: {}",
        full_ready.body
    );

    let accepted_rows = accepted * 50;
    let deadline = Instant::now() + Duration::from_secs(20);
    let (on_healthy, waiting) = loop {
        let on_healthy = gate.count(0, "logs").await;
        let page = gate.metrics_page().await;
        let waiting = sample(&page, "shardgate_spool_pending_rows{shard=\"s1\"}") as i64;
        if on_healthy + waiting == accepted_rows as i64 {
            break (on_healthy, waiting);
        }
        assert!(
            Instant::now() < deadline,
            "{on_healthy} rows on s0, {waiting} waiting for s1"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(
        on_healthy > 0 && waiting > 0,
        "{on_healthy} on s0, {waiting} for s1"
    );
    let page = gate.metrics_page().await;
    assert_eq!(sample(&page, "shardgate_spool_pending_rows{shard=\"s0\"}"), 0.0);
    assert!(sample(&page, "shardgate_spool_oldest_pending_seconds{shard=\"s1\"}") > 0.0);

    let status_url = gate.url(&format!("/v1/writes/{last_id}"));
    let status = Reply::read(gate.http.get(&status_url).send().await.unwrap()).await;
    assert_eq!(status.body["status"], "spooled", "{}", status.body);
    assert_eq!(status.body["rows"], 50);
    let s1 = &status.body["shards"]["s1"];
    assert!(
        s1["pending"].as_i64().unwrap() > 0 && s1["written"] == 0,
        "{}",
        status.body
    );
    assert_eq!(
        status.body["shards"]["s0"]["pending"], 0,
        "s0's rows are written: {}",
        status.body
    );

    doomed.restart().unwrap();
    wait_for_rows(&urls, "logs", accepted_rows as i64, Duration::from_secs(30)).await;
    assert_eq!(
        gate.count(0, "logs").await,
        on_healthy,
        "s0 had all its rows already"
    );
    let status = Reply::read(gate.http.get(&status_url).send().await.unwrap()).await;
    assert_eq!(status.body["status"], "committed", "{}", status.body);
    assert_eq!(distinct_lines(&urls).await, accepted_rows as i64);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let reply = post(&gate.http, &logs_url, &[], &log_rows("after", 50)).await;
        if reply.status == 202 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the drained spool takes writes again: {}",
            reply.body
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    gate.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_second_proxy_on_a_spool_in_use_refuses_to_start_and_names_the_holder() {
    let urls = fresh_shards("spool_held").await;
    let dir = spool_dir("held");
    let spool = dir.join("spool");
    let config = serve_config(&urls, &spool, "");
    let first = Proxy::start(&dir, &config).await;
    let http = crate::common::http();
    let logs_url = format!("{}/v1/tables/logs/rows", first.base);
    assert_eq!(
        post(&http, &logs_url, &[], &log_rows("before", 30)).await.status,
        202
    );

    let second_config = dir.join("second.toml");
    let text = format!("[server]\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\n{config}");
    std::fs::write(&second_config, text).unwrap();
    let second = crate::common::shardgate(["serve".as_ref(), "--config".as_ref(), second_config.as_os_str()]);
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert!(!second.status.success(), "{stderr}");
    let message = format!(
        "spool directory {} is in use by another shardgate process (pid {}); stop it, or give \
         this one a spool.dir of its own",
        spool.display(),
        first.pid()
    );
    assert!(stderr.contains(&message), "{stderr}");

    assert_eq!(
        post(&http, &logs_url, &[], &log_rows("after", 30)).await.status,
        202
    );
    wait_for_rows(&urls, "logs", 60, Duration::from_secs(20)).await;
    assert_eq!(
        distinct_lines(&urls).await,
        60,
        "the first proxy drains every row once"
    );
    first.kill().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_proxy_killed_while_parts_wait_is_followed_by_one_that_writes_every_accepted_row_once() {
    let urls = fresh_shards("spool_kill").await;
    let dir = spool_dir("kill");
    let config = serve_config(&urls, &dir.join("spool"), "").replace(
        "partition_key = [\"tenant_id\", \"event_type\"]",
        "partition_key = [\"tenant_id\", \"event_type\"]\nack = \"spool\"",
    );
    let first = Proxy::start(&dir, &config).await;
    let http = crate::common::http();
    let post_both = |round: usize| {
        let (http, base) = (http.clone(), first.base.clone());
        async move {
            let logs = post(
                &http,
                &format!("{base}/v1/tables/logs/rows"),
                &[],
                &log_rows(&format!("k{round}"), 40),
            )
            .await;
            let events = post(
                &http,
                &format!("{base}/v1/tables/events/rows"),
                &[],
                &events(40, 9),
            )
            .await;
            assert_eq!(
                (logs.status, events.status),
                (202, 202),
                "{} {}",
                logs.body,
                events.body
            );
        }
    };
    for round in 0..5 {
        post_both(round).await;
    }
    wait_for_rows(&urls, "logs", 200, Duration::from_secs(20)).await;

    // s1's tables are locked: its parts wait in the spool while s0's are written.
    let mut locker = connect(&urls[1]).await;
    let lock = locker.transaction().await.unwrap();
    lock.batch_execute("LOCK TABLE logs, events IN ACCESS EXCLUSIVE MODE")
        .await
        .unwrap();
    for round in 5..15 {
        post_both(round).await;
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let page = http.get(format!("{}/metrics", first.admin)).send().await.unwrap();
        let page = page.text().await.unwrap();
        let pending = |shard: &str| {
            sample(
                &page,
                &format!("shardgate_spool_pending_rows{{shard=\"{shard}\"}}"),
            )
        };
        if pending("s0") == 0.0 && pending("s1") > 0.0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "s0's parts are written while s1's wait"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    first.kill().await;
    lock.rollback().await.unwrap();
    let on_s0 = (
        count_on(&urls[0], "logs").await,
        count_on(&urls[0], "events").await,
    );
    assert!(
        count_on(&urls[1], "logs").await < 300,
        "s1's parts were still waiting"
    );

    // A torn record at the end, as a crash in the middle of a write leaves one.
    let newest = std::fs::read_dir(dir.join("spool"))
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|e| e == "seg"))
        .max()
        .unwrap();
    let whole = std::fs::metadata(&newest).unwrap().len();
    let mut segment = std::fs::OpenOptions::new().append(true).open(&newest).unwrap();
    std::io::Write::write_all(&mut segment, &[200, 0, 0, 0, 1, 2, 3]).unwrap();
    drop(segment);

    let second = Proxy::start(&dir, &config).await;
    wait_for_rows(&urls, "logs", 600, Duration::from_secs(30)).await;
    wait_for_rows(&urls, "events", 600, Duration::from_secs(30)).await;
    assert_eq!(distinct_lines(&urls).await, 600, "every accepted row once");
    assert_eq!(
        (
            count_on(&urls[0], "logs").await,
            count_on(&urls[0], "events").await
        ),
        on_s0,
        "s0's parts were marked applied and not written again"
    );
    let applied: i64 = connect(&urls[1])
        .await
        .query_one("SELECT count(*) FROM shardgate_spool_applied", &[])
        .await
        .unwrap()
        .get(0);
    assert!(applied > 0, "s1 marked the parts it took");
    let log = std::fs::read_to_string(dir.join("serve.log")).unwrap();
    let warning = log
        .lines()
        .find(|line| line.contains("torn record"))
        .unwrap_or_else(|| panic!("the cut is logged:\n{log}"));
    assert!(
        warning.contains(&format!("offset={whole}")) && warning.contains(&newest.display().to_string()),
        "{warning}"
    );
    second.kill().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn writes_spooled_while_a_shard_is_added_land_once_on_their_owner_only_rows_being_copied_waiting() {
    let urls = fresh_shards("spool_move").await;
    let third = fresh_database(&clusters()[1], "spool_move_s2").await;
    let dir = spool_dir("move");
    let extra = format!(
        "{}[reshard]\ngrace = \"100ms\"\ncleanup_delay = \"1s\"\nchunk_rows = 50\nrows_per_second = 300\n\
         [query]\nstatement_timeout = \"1s\"\n",
        crate::admin::with_token()
    );
    let gate = TestServer::start_with(spooling_config(&urls, &dir, &extra), urls.clone()).await;
    assert_eq!(gate.post_events(&events(1500, 97)).await.status, 200);
    spool_logs(&gate, "before", 3, 40).await;
    wait_for_rows(&urls, "logs", 120, Duration::from_secs(20)).await;

    let started = crate::admin::add_shard(&gate, "s2", &third).await;
    assert_eq!(started.status, 202, "{}", started.body);
    let id = started.body["migration"].as_i64().unwrap();
    // Rows are copied once every proxy routes with the ranges in motion and the fences follow.
    crate::admin::wait_for(&gate, id, "the copy starts", |m| {
        m["rows_copied"].as_i64().unwrap_or(0) > 0
    })
    .await;
    let paused = crate::admin::control(&gate, id, "pause").await;
    assert_eq!(paused.status, 200, "{}", paused.body);
    spool_logs(&gate, "during", 10, 40).await;
    // While the copy is held, the rows outside the ranges s2 takes are written and the others
    // wait for the cutover, so no row needs writing to two shards.
    let waiting = rows_taken_by_s2("during", 10, 40);
    assert!(
        0 < waiting && waiting < 400,
        "{waiting} of the rows are in moving ranges"
    );
    wait_for_rows(&urls, "logs", 520 - waiting, Duration::from_secs(10)).await;
    wait_for_pending(&gate.admin_url(""), waiting).await;
    assert_eq!(
        rows_over(&urls, "logs").await,
        520 - waiting,
        "rows in ranges being copied wait for the cutover"
    );
    let resumed = crate::admin::control(&gate, id, "resume").await;
    assert_eq!(resumed.status, 200, "{}", resumed.body);
    crate::admin::wait_done(&gate, id).await;

    let all_urls = [urls[0].clone(), urls[1].clone(), third];
    wait_for_rows(&all_urls, "logs", 520, Duration::from_secs(30)).await;
    let seen = crate::common::placement(
        &all_urls,
        &["s0", "s1", "s2"],
        &[("s0", 1), ("s1", 1), ("s2", 1)],
        "SELECT line, _sg_hash FROM logs",
    )
    .await;
    assert_eq!(
        seen.len(),
        520,
        "every accepted row once, on the owner of its position"
    );
    assert!(
        seen.values().any(|shard| *shard == 2),
        "some spooled rows went to s2"
    );
    gate.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn parts_spooled_for_a_shard_drained_away_while_their_proxy_was_down_land_once_on_its_heirs() {
    let mut urls = fresh_shards("spool_departed").await;
    urls.push(fresh_database(&clusters()[0], "spool_departed_s2").await);
    let dir = spool_dir("departed");
    let reshard = format!(
        "{}[reshard]\ngrace = \"100ms\"\ncleanup_delay = \"1s\"\nchunk_rows = 50\nrows_per_second = 100\n[query]\nstatement_timeout = \"1s\"\n",
        crate::admin::with_token()
    );
    let config = |proxy: &str| serve_config(&urls, &dir.join(proxy).join("spool"), &reshard);
    let first = Proxy::start(&dir.join("a"), &config("a")).await;
    let http = crate::common::http();
    let spool = |proxy: &Proxy, prefix: &'static str, requests: usize| {
        let (http, url) = (http.clone(), format!("{}/v1/tables/logs/rows", proxy.base));
        async move {
            for request in 0..requests {
                let rows = log_rows(&format!("{prefix}{request}"), 100);
                let reply = post(&http, &url, &[], &rows).await;
                assert_eq!(reply.status, 202, "{}", reply.body);
            }
        }
    };
    spool(&first, "before", 15).await;
    wait_for_rows(&urls, "logs", 1500, Duration::from_secs(20)).await;

    // s2 gives its ranges away slowly; parts spooled for it meanwhile wait for the cutover.
    let id = first.drain_shard("s2").await["migration"].as_i64().unwrap();
    first
        .wait_for(id, "the copy starts", |m| {
            m["rows_copied"].as_i64().unwrap_or(0) > 0
        })
        .await;
    spool(&first, "during", 4).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let page = http.get(format!("{}/metrics", first.admin)).send().await.unwrap();
        let page = page.text().await.unwrap();
        if sample(&page, "shardgate_spool_pending_rows{shard=\"s2\"}") > 0.0 {
            break;
        }
        assert!(Instant::now() < deadline, "s2's parts wait for the cutover");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(first.migration(id).await["migration"]["phase"], "copying");
    first.kill().await;

    // Another proxy takes the migration over and ends it: s2 leaves the routing table.
    let second = Proxy::start(&dir.join("b"), &config("b")).await;
    second
        .wait_for(id, "the drain ends", |m| m["phase"] == "done")
        .await;
    second.kill().await;

    let restarted = Proxy::start(&dir.join("a"), &config("a")).await;
    let heirs = &urls[..2];
    wait_for_rows(heirs, "logs", 1900, Duration::from_secs(30)).await;
    assert_eq!(distinct_lines(heirs).await, 1900, "every accepted row once");
    assert_eq!(count_on(&urls[2], "logs").await, 0, "s2 was emptied");
    restarted.kill().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn parts_spooled_before_a_restart_and_partly_in_ranges_being_copied_split_once_on_their_shard() {
    let (doomed, mut urls) = shards_with_one_to_stop("spool_recovered_split").await;
    urls.push(fresh_database(&clusters()[1], "spool_recovered_split_s2").await);
    let dir = spool_dir("recovered_split");
    let reshard = format!(
        "{}[reshard]\ngrace = \"100ms\"\ncleanup_delay = \"1s\"\nchunk_rows = 50\nrows_per_second = 300\n[query]\nstatement_timeout = \"1s\"\n",
        crate::admin::with_token()
    );
    let (ring, spare) = (&urls[..2], urls[2].clone());
    let config = |proxy: &str| serve_config(ring, &dir.join(proxy).join("spool"), &reshard);
    let http = crate::common::http();

    // s1 is down: proxy A keeps its parts, and is killed with them in its spool.
    let first = Proxy::start(&dir.join("a"), &config("a")).await;
    doomed.stop().unwrap();
    let url = format!("{}/v1/tables/logs/rows", first.base);
    for request in 0..5 {
        let reply = post(&http, &url, &[], &log_rows(&format!("kept{request}"), 100)).await;
        assert_eq!(reply.status, 202, "{}", reply.body);
    }
    let for_s1 = owners_of_rows("kept", 5, 100)
        .filter(|&(before, _)| before == 1)
        .count() as i64;
    assert!(for_s1 > 0, "some rows wait for s1");
    wait_for_rows(&urls[..1], "logs", 500 - for_s1, Duration::from_secs(10)).await;
    first.kill().await;
    doomed.restart().unwrap();

    // Proxy B adds s2 and holds the copy, so ranges of s1 are in motion.
    let second = Proxy::start(&dir.join("b"), &config("b")).await;
    let id = second.add_shard("s2", &spare).await["migration"]
        .as_i64()
        .unwrap();
    second
        .wait_for(id, "the copy starts", |m| {
            m["rows_copied"].as_i64().unwrap_or(0) > 0
        })
        .await;
    second.control(id, "pause").await;

    // A, restarted on its spool, asks s1 about each recovered part before splitting it: the
    // rows outside the moving ranges land now, each once, and those inside wait.
    let restarted = Proxy::start(&dir.join("a"), &config("a")).await;
    let moving = rows_moving_from_s1_to_s2("kept", 5, 100);
    assert!(
        0 < moving && moving < for_s1,
        "{moving} of s1's {for_s1} rows move"
    );
    wait_for_rows(ring, "logs", 500 - moving, Duration::from_secs(20)).await;
    wait_for_pending(&restarted.admin, moving).await;
    assert_eq!(
        rows_over(ring, "logs").await,
        500 - moving,
        "the rows in moving ranges wait for the cutover"
    );

    second.control(id, "resume").await;
    second
        .wait_for(id, "the copy ends", |m| m["phase"] == "done")
        .await;
    wait_for_rows(&urls, "logs", 500, Duration::from_secs(30)).await;
    assert_eq!(distinct_lines(&urls).await, 500, "every accepted row once");
    restarted.kill().await;
    second.kill().await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// Rows of `table` over `urls`.
async fn rows_over(urls: &[String], table: &str) -> i64 {
    let mut rows = 0;
    for url in urls {
        rows += count_on(url, table).await;
    }
    rows
}

/// Waits until the spool of the proxy whose admin listener is at `admin` holds exactly `rows`
/// rows not yet written, over every shard (`shardgate_spool_pending_rows`); panics with what
/// it saw after twenty seconds.
async fn wait_for_pending(admin: &str, rows: i64) {
    let http = crate::common::http();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let page = http.get(format!("{admin}/metrics")).send().await.unwrap();
        let pending = crate::common::total_of(&page.text().await.unwrap(), "shardgate_spool_pending_rows");
        if pending == rows as f64 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the spool holds {pending} rows not yet written, not {rows}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_row_its_shard_refuses_goes_to_the_dead_letter_table_and_its_neighbours_commit() {
    let urls = fresh_shards("spool_poison").await;
    let dir = spool_dir("poison");
    let gate = TestServer::start_with(
        spooling_config(&urls, &dir, &crate::admin::with_token()),
        urls.clone(),
    )
    .await;
    gate.on_every_shard("ALTER TABLE logs ADD CONSTRAINT no_poison CHECK (line <> 'poison')")
        .await;
    let mut rows = log_rows("ok", 40);
    rows[17]["line"] = json!("poison");
    let reply = post(&gate.http, &gate.url("/v1/tables/logs/rows"), &[], &rows).await;
    assert_eq!(reply.status, 202, "{}", reply.body);
    let write_id = reply.body["write_id"].as_str().unwrap().to_string();
    wait_for_rows(&urls, "logs", 39, Duration::from_secs(20)).await;

    let deadline = Instant::now() + Duration::from_secs(20);
    let letters = loop {
        let listed = gate.admin("/admin/dead-letters").await;
        assert_eq!(listed.status, 200, "{}", listed.body);
        let letters = listed.body["dead_letters"].as_array().unwrap().clone();
        if !letters.is_empty() {
            break letters;
        }
        assert!(Instant::now() < deadline, "the refused row is recorded");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(letters.len(), 1, "{letters:?}");
    let letter = &letters[0];
    assert_eq!(letter["table"], "logs");
    assert_eq!(letter["row"], json!({"source": "src-17", "line": "poison"}));
    assert_eq!(letter["write_id"], write_id.as_str());
    let message = letter["message"].as_str().unwrap();
    assert!(message.contains("no_poison"), "{message}");
    let shard = letter["shard"].as_str().unwrap();
    assert!(shard == "s0" || shard == "s1", "{shard}");
    assert_eq!(distinct_lines(&urls).await, 39, "every other row once");

    let status = Reply::read(
        gate.http
            .get(gate.url(&format!("/v1/writes/{write_id}")))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status.body["status"], "dead_letter", "{}", status.body);
    assert_eq!(status.body["shards"][shard]["dead_letter"], 1, "{}", status.body);
    let page = gate.metrics_page().await;
    assert_eq!(
        sample(&page, "shardgate_spool_dead_letters_total{table=\"logs\"}"),
        1.0
    );

    assert_eq!(
        gate.admin("/admin/dead-letters?table=events").await.body["dead_letters"],
        json!([])
    );
    assert_eq!(
        gate.admin(&format!(
            "/admin/dead-letters?table=logs&shard={shard}&since=2020-01-01T00:00:00Z"
        ))
        .await
        .body["dead_letters"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    let bad_time = gate.admin("/admin/dead-letters?since=yesterday").await;
    assert_refused(
        &bad_time,
        400,
        "since must be an RFC 3339 time, such as 2026-05-01T12:00:00Z",
    );
    let unknown = gate.admin("/admin/dead-letters?colour=red").await;
    assert_refused(
        &unknown,
        400,
        "unknown parameter `colour`; filter by table, shard, since, until, and set limit",
    );

    let id = letter["id"].as_i64().unwrap();
    let url = gate.admin_url(&format!("/admin/dead-letters/{id}"));
    let anonymous = Reply::read(gate.http.delete(&url).send().await.unwrap()).await;
    assert_eq!(anonymous.status, 401, "{}", anonymous.body);
    let (ok, listed, stderr) = crate::admin::admin_cli(&gate, &["dead-letters", "--table", "logs"]).await;
    assert!(ok, "{stderr}");
    assert!(
        listed.contains(r#"{"line":"poison","source":"src-17"}"#) && listed.contains("no_poison"),
        "{listed}"
    );

    // The operator fixes the cause and replays it: the row is written once.
    let catalog = connect(&urls[0]).await;
    let original = catalog
        .query_one(
            "SELECT table_name, shard, write_id, row_values, message, spool, seq, part \
             FROM shardgate.dead_letters WHERE id = $1",
            &[&id],
        )
        .await
        .unwrap();
    gate.on_every_shard("ALTER TABLE logs DROP CONSTRAINT no_poison")
        .await;
    let replay = gate
        .http
        .post(gate.admin_url("/admin/dead-letters/replay"))
        .bearer_auth(crate::admin::TOKEN)
        .json(&json!({"ids": [id]}))
        .send()
        .await
        .unwrap();
    let replay = Reply::read(replay).await;
    assert_eq!(replay.status, 200, "{}", replay.body);
    assert_eq!(replay.body["replayed"][0]["id"], id, "{}", replay.body);
    assert_eq!(replay.body["not_replayed"], json!([]));
    wait_for_rows(&urls, "logs", 40, Duration::from_secs(20)).await;
    assert_eq!(
        gate.admin("/admin/dead-letters").await.body["dead_letters"],
        json!([])
    );

    // The same dead letter again, as a crash between spooling its replay and deleting it
    // leaves it, replayed again from the command line: still written once.
    let insert = "INSERT INTO shardgate.dead_letters \
                  (table_name, shard, write_id, row_values, message, spool, seq, part) \
                  VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING id";
    let values: Vec<Box<dyn tokio_postgres::types::ToSql + Sync>> = vec![
        Box::new(original.get::<_, String>(0)),
        Box::new(original.get::<_, String>(1)),
        Box::new(original.get::<_, uuid::Uuid>(2)),
        Box::new(original.get::<_, Value>(3)),
        Box::new(original.get::<_, String>(4)),
        Box::new(original.get::<_, uuid::Uuid>(5)),
        Box::new(original.get::<_, i64>(6)),
        Box::new(original.get::<_, i16>(7)),
    ];
    let params: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = values.iter().map(|v| v.as_ref()).collect();
    let kept: i64 = catalog.query_one(insert, &params).await.unwrap().get(0);
    let args = ["--token", crate::admin::TOKEN, "dead-letters", "replay"];
    let (ok, replayed, stderr) = crate::admin::admin_cli(&gate, &args).await;
    assert!(ok, "{stderr}");
    let write_id = replayed
        .trim()
        .strip_prefix(&format!("dead letter {kept} replayed as write "))
        .unwrap_or_else(|| panic!("{replayed}"))
        .to_string();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let status = gate.http.get(gate.url(&format!("/v1/writes/{write_id}"))).send();
        let status = Reply::read(status.await.unwrap()).await;
        if status.body["status"] == "committed" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the second replay is settled: {}",
            status.body
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        distinct_lines(&urls).await,
        40,
        "the poison row once, and every other"
    );

    let (ok, nothing, _) = crate::admin::admin_cli(&gate, &args).await;
    assert!(ok && nothing.trim() == "no dead letters to replay", "{nothing}");
    let spare: i64 = catalog.query_one(insert, &params).await.unwrap().get(0);
    let spare_text = spare.to_string();
    let args = [
        "--token",
        crate::admin::TOKEN,
        "dead-letters",
        "delete",
        &spare_text,
    ];
    let (ok, deleted, stderr) = crate::admin::admin_cli(&gate, &args).await;
    assert!(ok, "{stderr}");
    assert_eq!(deleted.trim(), format!("dead letter {spare} deleted"));
    let url = gate.admin_url(&format!("/admin/dead-letters/{spare}"));
    let again = gate
        .http
        .delete(&url)
        .bearer_auth(crate::admin::TOKEN)
        .send()
        .await
        .unwrap();
    let again = Reply::read(again).await;
    assert_refused(&again, 404, format!("there is no dead letter {spare}"));
    assert_eq!(
        gate.admin("/admin/dead-letters").await.body["dead_letters"],
        json!([])
    );
    gate.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn commit_mode_requests_go_ahead_of_a_spooled_backlog_draining_to_their_shard() {
    let (doomed, urls) = shards_with_one_to_stop("spool_backlog").await;
    let dir = spool_dir("backlog");
    let mut config = spooling_config(&urls, &dir, "");
    // A drain window of 20,000 rows per shard (half the queue), written 500 rows a batch.
    config.queue.max_rows = 40_000;
    config.batch.max_rows = 500;
    config.pool.connections_per_shard = 2;
    let window = 20_000;
    let gate = TestServer::start_with(config, urls.clone()).await;
    doomed.stop().unwrap();
    let requests = 300;
    spool_logs(&gate, "r", requests, 1000).await;
    let accepted = requests as i64 * 1000;
    let deadline = Instant::now() + Duration::from_secs(30);
    let for_s1 = loop {
        let waiting = sample(
            &gate.metrics_page().await,
            "shardgate_spool_pending_rows{shard=\"s1\"}",
        ) as i64;
        if waiting + gate.count(0, "logs").await == accepted {
            break waiting;
        }
        assert!(Instant::now() < deadline, "s0's rows are written, s1's wait");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(for_s1 > 4 * window, "a backlog of {for_s1} rows for s1");

    doomed.restart().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while gate.count(1, "logs").await == 0 {
        assert!(Instant::now() < deadline, "s1's backlog starts draining");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut drained_meanwhile = Vec::new();
    let mut committed = 0;
    for round in 0..5 {
        let before = gate.count(1, "logs").await;
        let started = Instant::now();
        let reply = gate.post_events(&events(200, 31)).await;
        assert_eq!(
            reply.status, 200,
            "a commit-mode request during the backlog: {}",
            reply.body
        );
        committed += 200;
        let drained = gate.count(1, "logs").await - before;
        drained_meanwhile.push((drained, started.elapsed()));
        assert!(
            gate.count(1, "logs").await + window < for_s1,
            "round {round}: the backlog still fills s1's drain window"
        );
    }
    drained_meanwhile.sort();
    let (median, _) = drained_meanwhile[drained_meanwhile.len() / 2];
    assert!(
        median < window / 2,
        "while a commit-mode request waited for s1, s1 took fewer spooled rows than its drain \
         window holds (they did not queue ahead of it): {drained_meanwhile:?}"
    );

    wait_for_rows(&urls, "logs", accepted, Duration::from_secs(60)).await;
    assert_eq!(distinct_lines(&urls).await, accepted);
    assert_eq!(
        gate.count(0, "events").await + gate.count(1, "events").await,
        committed
    );
    gate.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_body_over_the_limit_is_refused_with_413_before_anything_is_spooled() {
    let urls = fresh_shards("spool_too_large").await;
    let dir = spool_dir("too_large");
    let mut config = spooling_config(&urls, &dir, "");
    config.server.max_body_size = shardgate::units::ByteSize(2 << 10);
    let gate = TestServer::start_with(config, urls.clone()).await;
    let logs_url = gate.url("/v1/tables/logs/rows");
    let spooled_bytes = |page: &str| sample(page, "shardgate_spool_bytes");
    let before = spooled_bytes(&gate.metrics_page().await);

    let reply = post(&gate.http, &logs_url, &[], &log_rows("big", 100)).await;
    assert_refused(&reply, 413, "request body exceeds the limit of 2048 bytes");
    let chunks: Vec<Result<String, std::io::Error>> = (0..10)
        .map(|i| Ok(log_rows(&format!("c{i}"), 20).to_string()))
        .collect();
    let streamed = reqwest::Body::wrap_stream(futures_util::stream::iter(chunks));
    let reply = gate.post("logs", "application/json", streamed).await;
    assert_eq!(
        reply.status, 413,
        "a chunked body without Content-Length is cut off too"
    );
    let events_url = gate.url("/v1/tables/events/rows");
    let reply = post(
        &gate.http,
        &events_url,
        &[("prefer", "respond-async")],
        &events(100, 3),
    )
    .await;
    assert_refused(&reply, 413, "request body exceeds the limit of 2048 bytes");

    let page = gate.metrics_page().await;
    assert_eq!(spooled_bytes(&page), before, "nothing was spooled");
    assert!(
        !page.contains("shardgate_spool_rows_total{outcome=\"spooled\""),
        "no row was counted as spooled"
    );
    let small = post(&gate.http, &logs_url, &[], &log_rows("small", 5)).await;
    assert_eq!(
        small.status, 202,
        "a body within the limit is spooled: {}",
        small.body
    );
    wait_for_rows(&urls, "logs", 5, Duration::from_secs(20)).await;
    assert_eq!(gate.total("events").await, 0);
    gate.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
}
