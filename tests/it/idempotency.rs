//! Writes sent with an `Idempotency-Key`: sent again they are answered as the first was and
//! store nothing more; after a partial failure the retry writes exactly the missing rows, also
//! once a shard was added or drained meanwhile, or the proxy was killed mid-run; the key with
//! another body is refused, as is a second attempt while the first is in flight; two proxies
//! racing with one key store it once.

use crate::admin::{TOKEN, add_shard, admin_request, phase_of, wait_done};
use crate::common::{
    Reply, TestServer, clusters, connect, fresh_database, fresh_shards, wait_for_lock_waiters,
};
use crate::proxy::Proxy;
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// `n` rows of `logs` (a table without an id), lines `{prefix}-{i}`, over 31 sources.
fn log_rows(prefix: &str, n: usize) -> Value {
    (0..n)
        .map(|i| json!({"source": format!("src-{}", i % 31), "line": format!("{prefix}-{i}")}))
        .collect()
}

/// POSTs `rows` to `table` with the idempotency key `key`.
async fn post_keyed(gate: &TestServer, table: &str, key: &str, rows: &Value) -> Reply {
    let request = gate
        .http
        .post(gate.url(&format!("/v1/tables/{table}/rows")))
        .header("idempotency-key", key)
        .json(rows);
    Reply::read(request.send().await.unwrap()).await
}

/// Rows of `logs` with lines starting `prefix`, and how many distinct lines, over `urls`.
async fn stored_lines(urls: &[String], prefix: &str) -> (i64, usize) {
    let mut lines = std::collections::HashSet::new();
    let mut rows = 0;
    for url in urls {
        let found = connect(url)
            .await
            .query(
                "SELECT line FROM logs WHERE line LIKE $1",
                &[&format!("{prefix}-%")],
            )
            .await
            .unwrap();
        rows += found.len() as i64;
        lines.extend(found.into_iter().map(|row| row.get::<_, String>(0)));
    }
    (rows, lines.len())
}

fn replayed(reply: &Reply) -> bool {
    reply
        .headers
        .get("idempotent-replayed")
        .is_some_and(|v| v == "true")
}

#[tokio::test]
async fn a_keyed_write_sent_again_is_answered_as_the_first_and_stores_nothing_more() {
    let gate = TestServer::start("idempotency_replay", "").await;
    let rows = log_rows("replay", 200);

    let first = post_keyed(&gate, "logs", "key-one", &rows).await;
    assert_eq!(first.status, 200, "{}", first.body);
    assert!(!replayed(&first));
    assert_eq!(first.body["rows"], 200);
    let on_shards = [gate.count(0, "logs").await, gate.count(1, "logs").await];
    assert_eq!(
        first.body["shards"],
        json!({"s0": on_shards[0], "s1": on_shards[1]})
    );
    assert!(on_shards.iter().all(|n| *n > 0), "{on_shards:?}");

    for _ in 0..2 {
        let again = post_keyed(&gate, "logs", "key-one", &rows).await;
        assert_eq!(again.status, 200, "{}", again.body);
        assert!(replayed(&again));
        assert_eq!(again.body, first.body);
    }
    assert_eq!(gate.count(0, "logs").await, on_shards[0]);
    assert_eq!(gate.count(1, "logs").await, on_shards[1]);

    let other_body = post_keyed(&gate, "logs", "key-one", &log_rows("other", 5)).await;
    assert_eq!(other_body.status, 422, "{}", other_body.body);
    assert_eq!(
        other_body.error(),
        "Idempotency-Key key-one was used for a different request (another table or body); a key names one request"
    );
    let other_table = post_keyed(&gate, "events", "key-one", &crate::common::events(5, 2)).await;
    assert_eq!(other_table.status, 422, "{}", other_table.body);
    assert_eq!(gate.total("logs").await, 200);

    let events = crate::common::events(50, 7);
    let first = post_keyed(&gate, "events", "key-two", &events).await;
    assert_eq!(first.status, 200, "{}", first.body);
    let again = post_keyed(&gate, "events", "key-two", &events).await;
    assert_eq!((again.status, &again.body), (200, &first.body));
    assert_eq!(gate.total("events").await, 50);

    for (key, reason) in [
        ("", "; it is empty"),
        ("two words", "; it holds a space or another character"),
        (&"k".repeat(256)[..], "; it is longer"),
    ] {
        let refused = post_keyed(&gate, "logs", key, &rows).await;
        assert_eq!(refused.status, 400, "{key:?}: {}", refused.body);
        assert_eq!(
            refused.error(),
            format!("Idempotency-Key must be 1 to 255 visible ASCII characters (a UUID, say){reason}")
        );
    }
    let twice = gate
        .http
        .post(gate.url("/v1/tables/logs/rows"))
        .header("idempotency-key", "key-a")
        .header("idempotency-key", "key-b")
        .json(&rows)
        .send()
        .await
        .unwrap();
    let twice = Reply::read(twice).await;
    assert_eq!(
        (twice.status, twice.error()),
        (400, "send one Idempotency-Key header, not several")
    );
    assert_eq!(gate.total("logs").await, 200);
    let metrics = gate.metrics_page().await;
    assert!(
        metrics.contains("shardgate_requests_rejected_total{reason=\"key_reused\",table=\"logs\"} 1"),
        "{metrics}"
    );
    gate.stop().await;
}

#[tokio::test]
async fn a_retry_after_a_shard_refused_its_part_writes_exactly_that_part() {
    let gate = TestServer::start("idempotency_partial", "").await;
    let refuse_on_s1 = "ALTER TABLE logs ADD CONSTRAINT no_rows CHECK (false) NOT VALID";
    connect(&gate.shard_urls[1])
        .await
        .batch_execute(refuse_on_s1)
        .await
        .unwrap();
    let rows = log_rows("partial", 300);

    let first = post_keyed(&gate, "logs", "partial-key", &rows).await;
    assert_eq!(first.status, 422, "{}", first.body);
    let committed = gate.count(0, "logs").await;
    assert!(committed > 0);
    assert_eq!(gate.count(1, "logs").await, 0);
    assert!(
        first.body["details"]
            .as_array()
            .unwrap()
            .contains(&json!({"shard": "s0", "committed": committed})),
        "{}",
        first.body
    );

    connect(&gate.shard_urls[1])
        .await
        .batch_execute("ALTER TABLE logs DROP CONSTRAINT no_rows")
        .await
        .unwrap();
    let retry = post_keyed(&gate, "logs", "partial-key", &rows).await;
    assert_eq!(retry.status, 200, "{}", retry.body);
    assert!(replayed(&retry));
    let on_s1 = gate.count(1, "logs").await;
    assert_eq!(
        retry.body,
        json!({"rows": 300, "shards": {"s0": committed, "s1": on_s1}})
    );
    assert_eq!(
        gate.count(0, "logs").await,
        committed,
        "s0's part is not written twice"
    );
    assert_eq!(stored_lines(&gate.shard_urls, "partial").await, (300, 300));
    gate.stop().await;
}

#[tokio::test]
async fn a_retry_after_a_shard_was_added_writes_each_row_once() {
    let urls = fresh_shards("idempotency_added").await;
    let third = fresh_database(&clusters()[1], "idempotency_added_s2").await;
    let extra = format!(
        "[admin]\ntoken = \"{TOKEN}\"\n[reshard]\ngrace = \"200ms\"\ncleanup_delay = \"2s\"\n\
         [query]\nstatement_timeout = \"2s\"\n[catalog]\nrefresh_interval = \"1s\"\n"
    );
    let gate = TestServer::start_on(urls.clone(), &extra).await;
    let refuse_on_s1 = "ALTER TABLE logs ADD CONSTRAINT no_rows CHECK (false) NOT VALID";
    connect(&urls[1]).await.batch_execute(refuse_on_s1).await.unwrap();
    let rows = log_rows("added", 400);
    let first = post_keyed(&gate, "logs", "added-key", &rows).await;
    assert_eq!(first.status, 422, "{}", first.body);
    let committed = connect(&urls[0]).await;
    let on_s0: i64 = committed
        .query_one("SELECT count(*) FROM logs", &[])
        .await
        .unwrap()
        .get(0);
    assert!(on_s0 > 0);
    connect(&urls[1])
        .await
        .batch_execute("ALTER TABLE logs DROP CONSTRAINT no_rows")
        .await
        .unwrap();

    let started = add_shard(&gate, "s2", &third).await;
    assert_eq!(started.status, 202, "{}", started.body);
    let id = started.body["migration"].as_i64().unwrap();
    let deadline = Instant::now() + Duration::from_secs(90);
    while phase_of(&gate, id).await != "done" {
        assert!(Instant::now() < deadline, "the migration ends");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let all = [urls.clone(), vec![third.clone()]].concat();
    let moved: i64 = connect(&third)
        .await
        .query_one("SELECT count(*) FROM logs", &[])
        .await
        .unwrap()
        .get(0);
    assert!(moved > 0, "s2 took some of s0's rows");

    let retry = post_keyed(&gate, "logs", "added-key", &rows).await;
    assert_eq!(retry.status, 200, "{}", retry.body);
    assert!(replayed(&retry));
    assert_eq!(retry.body["rows"], 400);
    assert_eq!(
        retry.body["shards"]["s0"], on_s0,
        "s0's part is counted once: {}",
        retry.body
    );
    assert_eq!(
        stored_lines(&all, "added").await,
        (400, 400),
        "every row once, wherever it lives now"
    );
    let again = post_keyed(&gate, "logs", "added-key", &rows).await;
    assert_eq!((again.status, &again.body), (200, &retry.body));
    assert_eq!(stored_lines(&all, "added").await, (400, 400));
    gate.stop().await;
}

/// Holds every shard's `logs` locked until the returned clients' transactions end.
async fn lock_logs(urls: &[String]) -> Vec<tokio_postgres::Client> {
    let mut holders = Vec::new();
    for url in urls {
        let client = connect(url).await;
        client
            .batch_execute("BEGIN; LOCK TABLE logs IN ACCESS EXCLUSIVE MODE")
            .await
            .unwrap();
        holders.push(client);
    }
    holders
}

#[tokio::test]
async fn a_second_attempt_in_flight_is_refused_and_two_proxies_racing_store_the_rows_once() {
    let urls = fresh_shards("idempotency_race").await;
    let one = TestServer::start_on(urls.clone(), "").await;
    let two = TestServer::start_on(urls.clone(), "").await;
    let rows = log_rows("race", 100);
    let holders = lock_logs(&urls).await;

    let post = |gate: &TestServer| {
        let request = gate
            .http
            .post(gate.url("/v1/tables/logs/rows"))
            .header("idempotency-key", "race-key")
            .json(&rows);
        tokio::spawn(async move { Reply::read(request.send().await.unwrap()).await })
    };
    let first = post(&one);
    for url in &urls {
        wait_for_lock_waiters(url, 1).await;
    }
    let in_flight = post_keyed(&one, "logs", "race-key", &rows).await;
    assert_eq!(in_flight.status, 409, "{}", in_flight.body);
    assert_eq!(
        in_flight.error(),
        "a write with Idempotency-Key race-key is still in flight; send it again once that one is answered"
    );
    assert_eq!(in_flight.headers["retry-after"], "1");

    let racing = post(&two);
    for url in &urls {
        wait_for_lock_waiters(url, 2).await;
    }
    for holder in &holders {
        holder.batch_execute("COMMIT").await.unwrap();
    }
    let (first, racing) = (first.await.unwrap(), racing.await.unwrap());
    assert_eq!(first.status, 200, "{}", first.body);
    assert_eq!(racing.status, 200, "{}", racing.body);
    assert_eq!(first.body, racing.body);
    assert_eq!(stored_lines(&urls, "race").await, (100, 100), "stored once");
    one.stop().await;
    two.stop().await;
}

#[tokio::test]
async fn records_past_the_retention_are_pruned_and_their_key_writes_anew() {
    let gate = TestServer::start("idempotency_prune", "[idempotency]\nretention = \"1m\"\n").await;
    let rows = log_rows("prune", 40);
    assert_eq!(post_keyed(&gate, "logs", "old-key", &rows).await.status, 200);
    assert_eq!(
        post_keyed(&gate, "logs", "new-key", &log_rows("kept", 10))
            .await
            .status,
        200
    );
    gate.on_every_shard(
        "UPDATE shardgate_idempotency SET recorded_at = now() - interval '61 seconds' WHERE key = 'old-key'",
    )
    .await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut left = 0;
        for url in &gate.shard_urls {
            let count: i64 = connect(url)
                .await
                .query_one(
                    "SELECT count(*) FROM shardgate_idempotency WHERE key = 'old-key'",
                    &[],
                )
                .await
                .unwrap()
                .get(0);
            left += count;
        }
        if left == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "the expired records are pruned");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let anew = post_keyed(&gate, "logs", "old-key", &rows).await;
    assert_eq!(anew.status, 200, "{}", anew.body);
    assert!(!replayed(&anew));
    assert_eq!(stored_lines(&gate.shard_urls, "prune").await, (80, 40));
    let kept = post_keyed(&gate, "logs", "new-key", &log_rows("kept", 10)).await;
    assert!(replayed(&kept), "a record within the retention stays");
    assert_eq!(stored_lines(&gate.shard_urls, "kept").await, (10, 10));
    gate.stop().await;
}

#[tokio::test]
async fn a_drained_shard_hands_its_records_down_so_a_retry_still_writes_each_row_once() {
    let mut urls = fresh_shards("idempotency_drain").await;
    urls.push(fresh_database(&clusters()[0], "idempotency_drain_s2").await);
    let extra = format!(
        "[admin]\ntoken = \"{TOKEN}\"\n[reshard]\ngrace = \"100ms\"\ncleanup_delay = \"1s\"\n\
         [query]\nstatement_timeout = \"1s\"\n"
    );
    let gate = TestServer::start_on(urls.clone(), &extra).await;
    let refuse_on_s0 = "ALTER TABLE logs ADD CONSTRAINT no_rows CHECK (false) NOT VALID";
    connect(&urls[0]).await.batch_execute(refuse_on_s0).await.unwrap();
    let rows = log_rows("drain", 400);
    let first = post_keyed(&gate, "logs", "drain-key", &rows).await;
    assert_eq!(first.status, 422, "{}", first.body);
    assert!(gate.count(1, "logs").await > 0, "s1 committed its part");
    connect(&urls[0])
        .await
        .batch_execute("ALTER TABLE logs DROP CONSTRAINT no_rows")
        .await
        .unwrap();

    let drained = admin_request(&gate, reqwest::Method::DELETE, "/admin/shards/s1", None).await;
    assert_eq!(drained.status, 202, "{}", drained.body);
    wait_done(&gate, drained.body["migration"].as_i64().unwrap()).await;
    let remaining = [urls[0].clone(), urls[2].clone()];
    let retry = post_keyed(&gate, "logs", "drain-key", &rows).await;
    assert_eq!(retry.status, 200, "{}", retry.body);
    assert!(replayed(&retry));
    assert_eq!(retry.body["rows"], 400);
    assert_eq!(
        stored_lines(&remaining, "drain").await,
        (400, 400),
        "s1's part, now on its heirs, is not written again"
    );
    gate.stop().await;
}

#[tokio::test]
async fn keyed_writes_sent_again_after_the_proxy_was_killed_mid_run_are_each_stored_once() {
    let urls = fresh_shards("idempotency_kill").await;
    let dir = std::env::temp_dir().join(format!("shardgate-idempotency-kill-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let mut config = String::new();
    for (i, url) in urls.iter().enumerate() {
        config.push_str(&format!("[[shards]]\nname = \"s{i}\"\nurl = \"{url}\"\n"));
    }
    config.push_str(crate::common::EVENTS_TABLE);
    let requests = 60;
    let request = |i: usize| (format!("kill-key-{i}"), log_rows(&format!("kill-{i}"), 50));

    let proxy = Proxy::start(&dir, &config).await;
    let answered = Arc::new(AtomicUsize::new(0));
    let clients: Vec<_> = (0..4)
        .map(|client| {
            let (base, answered) = (proxy.base.clone(), answered.clone());
            tokio::spawn(async move {
                let http = crate::common::http();
                for i in (client..requests).step_by(4) {
                    let (key, rows) = request(i);
                    let sent = http
                        .post(format!("{base}/v1/tables/logs/rows"))
                        .header("idempotency-key", key)
                        .json(&rows)
                        .send()
                        .await;
                    if sent.is_ok_and(|r| r.status() == 200) {
                        answered.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    while answered.load(Ordering::Relaxed) < requests / 3 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    proxy.kill().await;
    for client in clients {
        client.await.unwrap();
    }
    let before = answered.load(Ordering::Relaxed);
    assert!(
        before < requests,
        "the proxy died mid-run: {before} of {requests} answered"
    );

    let successor = Proxy::start(&dir, &config).await;
    let http = crate::common::http();
    let mut replayed_answers = 0;
    for i in 0..requests {
        let (key, rows) = request(i);
        let reply = http
            .post(format!("{}/v1/tables/logs/rows", successor.base))
            .header("idempotency-key", key)
            .json(&rows)
            .send()
            .await
            .unwrap();
        let reply = Reply::read(reply).await;
        assert_eq!(reply.status, 200, "request {i}: {}", reply.body);
        assert_eq!(reply.body["rows"], 50);
        replayed_answers += usize::from(replayed(&reply));
    }
    assert!(
        replayed_answers >= before,
        "{replayed_answers} replayed, {before} answered before"
    );
    assert_eq!(
        stored_lines(&urls, "kill").await,
        (50 * requests as i64, 50 * requests),
        "every row once"
    );
    successor.kill().await;
}
