//! Moving rows between shards as an operator would live it: a table without an id moved while
//! it is written, and a proxy killed with `kill -9` in the middle of the copy and again while it
//! waits to clean up, then started again, with every acknowledged row stored once at the end.

use crate::admin::{add_shard, phase_of, wait_done, with_token};
use crate::common::{
    Reply, TestServer, clusters, connect, count_on, fresh_database, fresh_shards, query_rows,
};
use crate::proxy::Proxy;
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// `n` rows of `logs` (no id), each `line` unique: `{prefix}-{i}`, over 53 sources.
fn log_rows(prefix: &str, n: usize) -> Value {
    let rows: Vec<Value> = (0..n)
        .map(|i| json!({"source": format!("src-{}", i % 53), "line": format!("{prefix}-{i}")}))
        .collect();
    Value::Array(rows)
}

/// Rows per source of `rows`, as `[[source, count], ...]` in source order.
fn per_source(rows: &[Value]) -> Value {
    let mut counts: std::collections::BTreeMap<String, i64> = std::collections::BTreeMap::new();
    for row in rows {
        *counts
            .entry(row["source"].as_str().unwrap().to_string())
            .or_default() += 1;
    }
    Value::Array(counts.into_iter().map(|(s, n)| json!([s, n])).collect())
}

/// Posts 100 log rows every 10 ms to `url` until `stop`; yields the rows acknowledged and the
/// refusals.
fn spawn_log_writer(
    http: reqwest::Client,
    url: String,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<(Vec<Value>, Vec<Value>)> {
    tokio::spawn(async move {
        let (mut acknowledged, mut refusals) = (Vec::new(), Vec::new());
        let mut batch = 0;
        while !stop.load(Ordering::Relaxed) {
            let rows = log_rows(&format!("live-{batch}"), 100);
            batch += 1;
            match http.post(&url).json(&rows).send().await {
                Ok(response) => {
                    let reply = Reply::read(response).await;
                    if reply.status == 200 {
                        acknowledged.extend(rows.as_array().unwrap().iter().cloned());
                    } else {
                        refusals.push(reply.body);
                    }
                }
                Err(error) => refusals.push(json!(error.to_string())),
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        (acknowledged, refusals)
    })
}

#[tokio::test]
async fn a_table_without_an_id_moves_to_a_new_shard_with_every_row_once_while_it_is_written() {
    let urls = fresh_shards("move_no_id").await;
    let third = fresh_database(&clusters()[1], "move_no_id_s2").await;
    let extra = format!(
        "{}[reshard]\ngrace = \"200ms\"\ncleanup_delay = \"2s\"\nchunk_rows = 150\n\
         [query]\nstatement_timeout = \"2s\"\n",
        with_token()
    );
    let gate = TestServer::start_on(urls.clone(), &extra).await;
    let before = log_rows("before", 2000);
    let written = gate.post("logs", "application/json", before.to_string()).await;
    assert_eq!(written.status, 200, "{}", written.body);
    let expected = per_source(before.as_array().unwrap());

    let stop = Arc::new(AtomicBool::new(false));
    let writer = spawn_log_writer(gate.http.clone(), gate.url("/v1/tables/logs/rows"), stop.clone());
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = add_shard(&gate, "s2", &third).await;
    assert_eq!(started.status, 202, "{}", started.body);
    let id = started.body["migration"].as_i64().unwrap();
    let dual_write = started.body["epoch"].as_i64().unwrap();

    let deadline = Instant::now() + Duration::from_secs(90);
    let mut phases = std::collections::BTreeSet::new();
    loop {
        let phase = phase_of(&gate, id).await;
        phases.insert(phase.clone());
        assert_ne!(phase, "failed", "{}", gate.admin("/admin/migrations").await.body);
        let answer = query_rows(
            &gate,
            json!([]),
            "SELECT source, count(*) FROM logs WHERE line LIKE 'before-%' GROUP BY source ORDER BY source",
        )
        .await;
        assert_eq!(answer, expected, "a reporting query during phase {phase}");
        if phase == "done" {
            break;
        }
        assert!(Instant::now() < deadline, "the migration ends");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop.store(true, Ordering::Relaxed);
    let (live, refusals) = writer.await.unwrap();
    assert!(refusals.is_empty(), "no write was refused: {refusals:?}");
    assert!(live.len() >= 500, "writes kept flowing: {}", live.len());
    assert!(
        phases.contains("copying") || phases.contains("cleaning"),
        "{phases:?}"
    );

    let mut all = urls.clone();
    all.push(third.clone());
    let ring = [("s0", 1), ("s1", 1), ("s2", 1)];
    let seen = crate::common::placement(
        &all,
        &["s0", "s1", "s2"],
        &ring,
        "SELECT line, _sg_hash FROM logs",
    )
    .await;
    let acknowledged: Vec<&Value> = before.as_array().unwrap().iter().chain(&live).collect();
    assert_eq!(
        seen.len(),
        acknowledged.len(),
        "exactly the acknowledged rows exist, once each"
    );
    for row in &acknowledged {
        assert!(seen.contains_key(row["line"].as_str().unwrap()), "{row}");
    }
    let on_new = seen.values().filter(|&&shard| shard == 2).count();
    assert!(
        on_new * 5 > seen.len(),
        "s2 took about a third: {on_new} of {}",
        seen.len()
    );

    let copied: i64 = connect(&third)
        .await
        .query_one("SELECT count(*) FROM logs WHERE _sg_epoch < $1", &[&dual_write])
        .await
        .unwrap()
        .get(0);
    let migration = gate.admin(&format!("/admin/migrations/{id}")).await.body;
    assert_eq!(
        migration["migration"]["rows_copied"].as_i64().unwrap(),
        copied,
        "every copied row was copied once; the younger ones came by the dual write"
    );
    let total = query_rows(&gate, json!([]), "SELECT count(*) FROM logs").await;
    assert_eq!(total, json!([[acknowledged.len()]]));
    for url in &all {
        let (indexes, cursors): (i64, bool) = connect(url)
            .await
            .query_one(
                "SELECT (SELECT count(*) FROM pg_indexes WHERE tablename = 'logs'), \
                 to_regclass('shardgate_backfill_cursor') IS NOT NULL",
                &[],
            )
            .await
            .map(|row| (row.get(0), row.get(1)))
            .unwrap();
        assert_eq!(
            indexes, 0,
            "no index slows ingest into logs, during the move or after"
        );
        assert!(!cursors, "the copy's cursors are dropped once done");
    }
    gate.stop().await;
}

#[tokio::test]
async fn a_proxy_killed_while_copying_and_while_cleaning_up_leaves_a_migration_its_successor_finishes() {
    let urls = fresh_shards("move_kill").await;
    let third = fresh_database(&clusters()[0], "move_kill_s2").await;
    let dir = std::env::temp_dir().join(format!("shardgate-move-kill-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = |cleanup: &str| {
        let mut text = format!(
            "{}[reshard]\ngrace = \"100ms\"\ncleanup_delay = \"{cleanup}\"\nchunk_rows = 100\nrows_per_second = 1000\n\
             [query]\nstatement_timeout = \"1s\"\n",
            with_token()
        );
        for (i, url) in urls.iter().enumerate() {
            text.push_str(&format!("[[shards]]\nname = \"s{i}\"\nurl = \"{url}\"\n"));
        }
        text.push_str(crate::common::EVENTS_TABLE);
        text
    };
    let first = Proxy::start(&dir, &config("1h")).await;
    let http = crate::common::http();
    let logs = log_rows("before", 3000);
    let events = crate::common::events(3000, 97);
    for (table, rows) in [("logs", &logs), ("events", &events)] {
        let reply = http
            .post(format!("{}/v1/tables/{table}/rows", first.base))
            .json(rows)
            .send()
            .await
            .unwrap();
        assert_eq!(reply.status(), 200);
    }
    let id = first.add_shard("s2", &third).await["migration"].as_i64().unwrap();

    // About 2000 rows to copy at 1000 rows/s, events first: killed once a chunk of logs, which
    // a second copy would store twice, is on the new shard.
    let deadline = Instant::now() + Duration::from_secs(30);
    while count_on(&third, "logs").await == 0 {
        assert!(Instant::now() < deadline, "a chunk of logs is copied");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    first.kill().await;
    let phase = connect(&urls[0])
        .await
        .query_one("SELECT phase FROM shardgate.migrations WHERE id = $1", &[&id])
        .await
        .unwrap()
        .get::<_, String>(0);
    assert_eq!(phase, "copying", "killed before the copy was done");

    let second = Proxy::start(&dir, &config("1h")).await;
    second
        .wait_for(id, "the successor cuts over", |m| m["phase"] == "cleaning")
        .await;
    let mut held = 0;
    for url in &urls {
        held += count_on(url, "logs").await;
    }
    assert_eq!(held, 3000, "until the cleanup the old owners keep every row");
    let moved_logs = count_on(&third, "logs").await;
    assert!(moved_logs > 500, "s2 holds its share of logs: {moved_logs}");
    second.kill().await;

    let third_proxy = Proxy::start(&dir, &config("1s")).await;
    third_proxy
        .wait_for(id, "the migration ends", |m| m["phase"] == "done")
        .await;
    let mut all = urls.clone();
    all.push(third.clone());
    let ring = [("s0", 1), ("s1", 1), ("s2", 1)];
    let names = ["s0", "s1", "s2"];
    let lines = crate::common::placement(&all, &names, &ring, "SELECT line, _sg_hash FROM logs").await;
    assert_eq!(
        lines.len(),
        3000,
        "every log row once, though its copy was cut off"
    );
    let ids =
        crate::common::placement(&all, &names, &ring, "SELECT event_id::text, _sg_hash FROM events").await;
    assert_eq!(ids.len(), 3000, "every event once");
    third_proxy.kill().await;
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn a_copy_that_does_not_match_its_source_is_given_up_and_undone() {
    let urls = fresh_shards("move_mismatch").await;
    let third = fresh_database(&clusters()[0], "move_mismatch_s2").await;
    let extra = format!(
        "{}[reshard]\ngrace = \"100ms\"\ncleanup_delay = \"1s\"\nchunk_rows = 100\nrows_per_second = 500\n\
         [query]\nstatement_timeout = \"1s\"\n",
        with_token()
    );
    let gate = TestServer::start_on(urls.clone(), &extra).await;
    let rows = log_rows("before", 1500);
    assert_eq!(
        gate.post("logs", "application/json", rows.to_string())
            .await
            .status,
        200
    );
    let started = add_shard(&gate, "s2", &third).await;
    assert_eq!(started.status, 202, "{}", started.body);
    let id = started.body["migration"].as_i64().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while count_on(&third, "logs").await == 0 {
        assert!(Instant::now() < deadline, "a first chunk is copied");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // A copied row altered behind shardgate's back: the same count, another checksum.
    let altered = connect(&third)
        .await
        .execute(
            "UPDATE logs SET line = line || '-altered' WHERE ctid = (SELECT min(ctid) FROM logs)",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(altered, 1);

    let deadline = Instant::now() + Duration::from_secs(60);
    let shown = loop {
        let shown = gate.admin(&format!("/admin/migrations/{id}")).await.body;
        if shown["migration"]["phase"] == "failed" {
            break shown;
        }
        assert_ne!(shown["migration"]["phase"], "done", "{shown}");
        assert!(Instant::now() < deadline, "the migration is given up: {shown}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let failure = shown["migration"]["failure"].as_str().unwrap();
    assert!(
        failure.contains("of table logs: ") && failure.contains(" rows (checksum "),
        "{failure}"
    );
    assert!(
        shown["ranges"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["phase"] == "cancelled")
    );
    assert_eq!(count_on(&third, "logs").await, 0, "the copies are deleted");
    let listed = gate.admin("/admin/shards").await.body;
    assert_eq!(listed.as_array().unwrap().len(), 2, "s2 is not a shard: {listed}");
    let total = query_rows(&gate, json!([]), "SELECT count(*) FROM logs").await;
    assert_eq!(total, json!([[1500]]), "the old placement holds every row");
    let again = add_shard(&gate, "s2", &third).await;
    assert_eq!(
        again.status, 202,
        "the same database may be offered again: {}",
        again.body
    );
    wait_done(&gate, again.body["migration"].as_i64().unwrap()).await;
    let total = query_rows(&gate, json!([]), "SELECT count(*) FROM logs").await;
    assert_eq!(total, json!([[1500]]));
    gate.stop().await;
}

#[tokio::test]
async fn a_table_without_an_id_made_by_an_earlier_release_gains_the_epoch_column_at_start() {
    let urls = fresh_shards("move_epoch_column").await;
    for url in &urls {
        connect(url)
            .await
            .batch_execute(
                "CREATE TABLE logs (source text NOT NULL, line text NOT NULL, _sg_hash bigint NOT NULL);
                 INSERT INTO logs VALUES ('old', 'written before', 0);",
            )
            .await
            .unwrap();
    }
    let gate = TestServer::start_on(urls.clone(), "").await;
    let reply = gate
        .post("logs", "application/json", log_rows("new", 40).to_string())
        .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let epoch = gate.admin("/readyz").await.body["epoch"].as_i64().unwrap();
    let mut stamps = std::collections::BTreeMap::new();
    for url in &urls {
        let rows = connect(url)
            .await
            .query("SELECT _sg_epoch, count(*) FROM logs GROUP BY 1", &[])
            .await
            .unwrap();
        for row in rows {
            *stamps.entry(row.get::<_, i64>(0)).or_insert(0) += row.get::<_, i64>(1);
        }
    }
    assert_eq!(
        stamps,
        std::collections::BTreeMap::from([(0, 2), (epoch, 40)]),
        "old rows hold 0, new ones the epoch they were routed with"
    );
    gate.stop().await;
}

#[tokio::test]
async fn a_second_proxy_stopped_across_the_cutover_writes_nothing_where_the_range_no_longer_lives() {
    let urls = fresh_shards("move_sigstop").await;
    let third = fresh_database(&clusters()[1], "move_sigstop_s2").await;
    let dir = std::env::temp_dir().join(format!("shardgate-move-sigstop-{}", std::process::id()));
    let mut config = format!(
        "{}[reshard]\ngrace = \"200ms\"\ncleanup_delay = \"1s\"\nchunk_rows = 200\nrows_per_second = 1000\n\
         [query]\nstatement_timeout = \"1s\"\n",
        with_token()
    );
    for (i, url) in urls.iter().enumerate() {
        config.push_str(&format!("[[shards]]\nname = \"s{i}\"\nurl = \"{url}\"\n"));
    }
    config.push_str(crate::common::EVENTS_TABLE);
    let runner = Proxy::start(&dir.join("a"), &config).await;
    // The second proxy holds a request in its queue for 3 s, so one is waiting when it stops.
    let holding = format!("[batch]\nmax_delay = \"3s\"\n[pool]\nconnections_per_shard = 1\n{config}");
    let other = Proxy::start_with(&dir.join("b"), "request_timeout = \"60s\"\n", &holding).await;
    let other = Arc::new(other);
    let before = crate::common::events(1500, 97);
    assert_eq!(runner.post_events_retrying(&before).await, 0);

    let started = runner.add_shard("s2", &third).await;
    let (id, dual_write) = (
        started["migration"].as_i64().unwrap(),
        started["epoch"].as_i64().unwrap(),
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while other.epoch().await < dual_write {
        assert!(
            Instant::now() < deadline,
            "the second proxy follows the migration"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let during = crate::common::events(300, 89);
    let waiting = {
        let (other, rows) = (other.clone(), during.clone());
        tokio::spawn(async move { other.post_events_retrying(&rows).await })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    other.signal(libc::SIGSTOP);
    runner
        .wait_for(id, "the migration ends while the second proxy sleeps", |m| {
            m["phase"] == "done"
        })
        .await;
    other.signal(libc::SIGCONT);
    let refusals = waiting.await.unwrap();
    assert!(
        refusals >= 1,
        "the batch routed before the cutover was refused by the fence, and the retry went through"
    );
    let after = crate::common::events(300, 83);
    other.post_events_retrying(&after).await;

    let mut all = urls.clone();
    all.push(third.clone());
    let ring = [("s0", 1), ("s1", 1), ("s2", 1)];
    let sql = "SELECT event_id::text, _sg_hash FROM events";
    let seen = crate::common::placement(&all, &["s0", "s1", "s2"], &ring, sql).await;
    let written: Vec<&Value> = [&before, &during, &after]
        .into_iter()
        .flat_map(|rows| rows.as_array().unwrap())
        .collect();
    assert_eq!(
        seen.len(),
        written.len(),
        "every row once, on its owner ({refusals} stale batches were refused and retried)"
    );
    for row in written {
        assert!(seen.contains_key(row["event_id"].as_str().unwrap()), "{row}");
    }
    runner.kill().await;
    Arc::into_inner(other).unwrap().kill().await;
    let _ = std::fs::remove_dir_all(dir);
}
