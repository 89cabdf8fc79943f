//! Stream tables: each append gives the versions it expects to write; one that is not the
//! stream's next versions is `409` with the stream and its current version, and stores nothing
//! of that stream, also when writers on two proxies race for the same versions.

use crate::admin::{TOKEN, add_shard, control, phase_of, wait_for, with_token};
use crate::common::{
    Reply, TestServer, clusters, config_for, connect, fresh_database, fresh_shards, query_rows,
};
use serde_json::{Value, json};
use shardgate::config::Config;
use std::collections::BTreeMap;
use std::sync::Arc;

/// The test config with `shardgate dev`'s stream table `account_events` besides the usual
/// ones.
fn stream_config(urls: &[String], extra: &str) -> Config {
    let mut config = config_for(urls, extra);
    let dev = Config::parse(shardgate::devcluster::DEV_TABLES).unwrap();
    config
        .tables
        .extend(dev.tables.into_iter().filter(|t| t.name == "account_events"));
    config
}

fn append(account: &str, versions: std::ops::RangeInclusive<i64>, kind: &str) -> Vec<Value> {
    versions
        .map(|v| json!({"account_id": account, "version": v, "type": kind}))
        .collect()
}

async fn post(gate: &TestServer, rows: &[Value]) -> Reply {
    gate.post(
        "account_events",
        "application/json",
        Value::from(rows.to_vec()).to_string(),
    )
    .await
}

/// The versions of `account` stored over all shards, in order.
async fn versions_of(urls: &[String], account: &str) -> Vec<i64> {
    let mut versions = Vec::new();
    for url in urls {
        let rows = connect(url)
            .await
            .query(
                "SELECT version FROM account_events WHERE account_id = $1",
                &[&account],
            )
            .await
            .unwrap();
        versions.extend(rows.iter().map(|r| r.get::<_, i64>(0)));
    }
    versions.sort_unstable();
    versions
}

#[tokio::test]
async fn appends_must_be_their_streams_next_versions_and_anything_else_is_409() {
    let urls = fresh_shards("streams_versions").await;
    let gate = TestServer::start_with(stream_config(&urls, &with_token()), urls.clone()).await;

    let created = post(&gate, &append("acct-1", 1..=2, "deposited")).await;
    assert_eq!(created.status, 200, "{}", created.body);

    let refusals = [
        (append("acct-1", 2..=2, "again"), "acct-1", 2, 2),
        (append("acct-1", 4..=4, "gap"), "acct-1", 4, 2),
        (append("acct-2", 2..=3, "no start"), "acct-2", 2, 0),
        (append("acct-1", 0..=0, "zero"), "acct-1", 0, 2),
        (
            vec![
                json!({"account_id": "acct-1", "version": 3, "type": "a"}),
                json!({"account_id": "acct-1", "version": 5, "type": "b"}),
            ],
            "acct-1",
            5,
            2,
        ),
    ];
    for (rows, account, version, current) in refusals {
        let refused = post(&gate, &rows).await;
        assert_eq!(refused.status, 409, "{rows:?}: {}", refused.body);
        let stream = format!("stream (account_id = {account})");
        assert_eq!(
            refused.error(),
            format!(
                "{stream} is at version {current}: an append must start at version {}, not {version}; \
                 nothing of that stream was stored",
                current + 1
            ),
            "{rows:?}"
        );
        let detail = &refused.body["details"][0];
        assert_eq!(detail["stream"], json!({"account_id": account}));
        assert_eq!(detail["current_version"], current);
        assert_eq!(detail["version"], version);
    }
    assert_eq!(versions_of(&urls, "acct-1").await, vec![1, 2]);
    assert_eq!(versions_of(&urls, "acct-2").await, Vec::<i64>::new());

    let both = [append("acct-1", 3..=4, "more"), append("acct-2", 1..=1, "opened")].concat();
    let appended = post(&gate, &both).await;
    assert_eq!(appended.status, 200, "{}", appended.body);
    assert_eq!(versions_of(&urls, "acct-1").await, vec![1, 2, 3, 4]);

    let read = gate
        .http
        .post(gate.url("/v1/query"))
        .json(&json!({
            "sql": "SELECT version, type FROM account_events WHERE account_id = $1 ORDER BY version",
            "params": ["acct-1"],
        }))
        .send()
        .await
        .unwrap();
    let read = Reply::read(read).await;
    assert_eq!(read.status, 200, "{}", read.body);
    assert_eq!(
        read.body["rows"],
        json!([[1, "deposited"], [2, "deposited"], [3, "more"], [4, "more"]])
    );
    assert_eq!(read.body["shards"], 1, "a stream is read from its one shard");

    let split = gate
        .http
        .post(gate.admin_url("/admin/hot-keys"))
        .bearer_auth(TOKEN)
        .json(&json!({"table": "account_events", "key": {"account_id": "acct-1"}, "fanout": 2}))
        .send()
        .await
        .unwrap();
    let split = Reply::read(split).await;
    assert_eq!(split.status, 409, "{}", split.body);
    assert!(
        split
            .error()
            .starts_with("table `account_events` is a stream table"),
        "{}",
        split.error()
    );
    let metrics = gate.metrics_page().await;
    assert!(
        metrics.contains(
            "shardgate_requests_rejected_total{reason=\"stream_conflict\",table=\"account_events\"} 5"
        ),
        "{metrics}"
    );
    gate.stop().await;
}

/// What one writer did: the rows acknowledged, by (account, version), and how many of its
/// appends were refused for their versions.
struct WriterLog {
    acknowledged: BTreeMap<(String, i64), String>,
    conflicts: usize,
    /// Rows of appends answered 503 (a copy fenced out by a cutover and not written again
    /// within the request's deadline): not acknowledged, so each may or may not be stored.
    unanswered: BTreeMap<(String, i64), String>,
}

/// Appends `appends` times (or until `stop`) to streams of `accounts`, one to three rows at a
/// time, each at the version it believes is next, learning the current one from each 409.
async fn write_streams(gate: Arc<TestServer>, writer: usize, accounts: usize, appends: usize) -> WriterLog {
    write_streams_until(gate, (writer, 0), accounts, appends, Arc::default()).await
}

/// `floor` is the version every stream had reached, acknowledged, before the writers began:
/// a stream's current version, as a 409 gives it, is never below a version acknowledged.
async fn write_streams_until(
    gate: Arc<TestServer>,
    (writer, floor): (usize, i64),
    accounts: usize,
    appends: usize,
    stop: Arc<std::sync::atomic::AtomicBool>,
) -> WriterLog {
    let mut known: BTreeMap<String, i64> = BTreeMap::new();
    let mut acknowledged_up_to: BTreeMap<String, i64> = BTreeMap::new();
    let mut log = WriterLog {
        acknowledged: BTreeMap::new(),
        conflicts: 0,
        unanswered: BTreeMap::new(),
    };
    let mut done = 0;
    let mut turn = writer;
    while done < appends && !stop.load(std::sync::atomic::Ordering::Relaxed) {
        turn += 1;
        let account = format!("acct-{}", turn % accounts);
        let next = known.get(&account).copied().unwrap_or(0) + 1;
        let rows = 1 + (turn % 3) as i64;
        let kind = format!("w{writer}-{turn}");
        let reply = post(&gate, &append(&account, next..=next + rows - 1, &kind)).await;
        match reply.status {
            200 => {
                for version in next..next + rows {
                    log.acknowledged.insert((account.clone(), version), kind.clone());
                }
                known.insert(account.clone(), next + rows - 1);
                acknowledged_up_to.insert(account, next + rows - 1);
                done += 1;
            }
            409 => {
                let current = reply.body["details"][0]["current_version"].as_i64().unwrap();
                let acknowledged = acknowledged_up_to.get(&account).copied().unwrap_or(floor);
                assert!(
                    current >= acknowledged,
                    "writer {writer}: {account} acknowledged up to {acknowledged}, then said to be at {current}: {}",
                    reply.body
                );
                known.insert(account, current);
                log.conflicts += 1;
            }
            503 => {
                for version in next..next + rows {
                    log.unanswered.insert((account.clone(), version), kind.clone());
                }
            }
            status => panic!("writer {writer}: {status} {}", reply.body),
        }
    }
    log
}

/// Every row of `account_events` over `urls`, by (account, version), each checked to be
/// stored once.
async fn stored_appends(urls: &[String]) -> BTreeMap<(String, i64), String> {
    let mut stored = BTreeMap::new();
    for url in urls {
        let rows = connect(url)
            .await
            .query("SELECT account_id, version, type FROM account_events", &[])
            .await
            .unwrap();
        for row in rows {
            let key = (row.get::<_, String>(0), row.get::<_, i64>(1));
            assert!(
                stored.insert(key.clone(), row.get::<_, String>(2)).is_none(),
                "{key:?} stored twice"
            );
        }
    }
    stored
}

/// Checks every stream of `accounts` holds versions 1..n over `urls`.
async fn streams_are_whole(urls: &[String], accounts: usize) {
    for account in 0..accounts {
        let account = format!("acct-{account}");
        let versions = versions_of(urls, &account).await;
        let expected: Vec<i64> = (1..=versions.len() as i64).collect();
        assert_eq!(versions, expected, "{account} has versions 1..n");
    }
}

#[tokio::test]
async fn streams_appended_while_a_shard_is_added_stay_whole_and_move_exactly() {
    let urls = fresh_shards("streams_reshard").await;
    let third = fresh_database(&clusters()[1], "streams_reshard_s2").await;
    let extra = format!(
        "{}[reshard]\ngrace = \"200ms\"\ncleanup_delay = \"2s\"\nchunk_rows = 10\nrows_per_second = 100\n\
         [query]\nstatement_timeout = \"2s\"\n[catalog]\nrefresh_interval = \"1s\"\n",
        with_token()
    );
    let gate = Arc::new(TestServer::start_with(stream_config(&urls, &extra), urls.clone()).await);
    let accounts = 40;
    for account in 0..accounts {
        let rows = append(&format!("acct-{account}"), 1..=5, "opened");
        assert_eq!(post(&gate, &rows).await.status, 200);
    }
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writers: Vec<_> = (0..4)
        .map(|writer| {
            tokio::spawn(write_streams_until(
                gate.clone(),
                (writer, 5),
                accounts,
                usize::MAX,
                stop.clone(),
            ))
        })
        .collect();
    let started = add_shard(&gate, "s2", &third).await;
    assert_eq!(started.status, 202, "{}", started.body);
    let id = started.body["migration"].as_i64().unwrap();
    // Held with most ranges not yet copied, so appends reach the new shard before the rows
    // they follow: copies the new shard could not check.
    wait_for(&gate, id, "copying starts", |m| {
        m["rows_copied"].as_i64() > Some(0)
    })
    .await;
    assert_eq!(control(&gate, id, "pause").await.status, 200);
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    assert_eq!(control(&gate, id, "resume").await.status, 200);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(90);
    while phase_of(&gate, id).await != "done" {
        assert!(std::time::Instant::now() < deadline, "the migration ends");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut acknowledged = BTreeMap::new();
    for account in 0..accounts {
        for version in 1..=5 {
            acknowledged.insert((format!("acct-{account}"), version), "opened".to_string());
        }
    }
    let (mut appends, mut unanswered) = (0, BTreeMap::new());
    for writer in writers {
        let log = writer.await.unwrap();
        appends += log.acknowledged.len();
        acknowledged.extend(log.acknowledged);
        unanswered.extend(log.unanswered);
    }
    assert!(
        appends > 100,
        "appends kept flowing during the migration: {appends}"
    );
    let all = [urls.clone(), vec![third.clone()]].concat();
    let stored = stored_appends(&all).await;
    for (key, kind) in &acknowledged {
        assert_eq!(
            stored.get(key),
            Some(kind),
            "acknowledged {key:?} is stored as written"
        );
    }
    for (key, kind) in &stored {
        if acknowledged.get(key) != Some(kind) {
            assert_eq!(
                unanswered.get(key),
                Some(kind),
                "{key:?} stored, never sent or refused"
            );
        }
    }
    streams_are_whole(&all, accounts).await;
    let on_new: i64 = connect(&third)
        .await
        .query_one("SELECT count(*) FROM account_events", &[])
        .await
        .unwrap()
        .get(0);
    assert!(on_new > 0, "s2 took some streams");
    let after = post(&gate, &append("acct-0", 1..=1, "late")).await;
    assert_eq!(
        after.status, 409,
        "the check holds on the new owner too: {}",
        after.body
    );
    Arc::into_inner(gate).unwrap().stop().await;
}

#[tokio::test]
async fn writers_on_two_proxies_racing_for_versions_leave_every_stream_whole() {
    let urls = fresh_shards("streams_race").await;
    let one = Arc::new(TestServer::start_with(stream_config(&urls, ""), urls.clone()).await);
    let two = Arc::new(TestServer::start_with(stream_config(&urls, ""), urls.clone()).await);
    let accounts = 5;
    let writers: Vec<_> = (0..8)
        .map(|writer| {
            let gate = if writer % 2 == 0 { one.clone() } else { two.clone() };
            tokio::spawn(write_streams(gate, writer, accounts, 25))
        })
        .collect();
    let mut acknowledged = BTreeMap::new();
    let mut conflicts = 0;
    for writer in writers {
        let log = writer.await.unwrap();
        conflicts += log.conflicts;
        assert!(
            log.unanswered.is_empty(),
            "no migration, no 503: {:?}",
            log.unanswered
        );
        for (key, kind) in log.acknowledged {
            assert!(
                acknowledged.insert(key.clone(), kind).is_none(),
                "{key:?} acknowledged twice"
            );
        }
    }
    assert!(conflicts > 0, "writers raced for the same versions");

    let stored = stored_appends(&urls).await;
    assert_eq!(stored, acknowledged, "the rows stored are the rows acknowledged");
    streams_are_whole(&urls, accounts).await;
    let query = query_rows(&one, json!([]), "SELECT count(*) FROM account_events").await;
    assert_eq!(query, json!([[stored.len()]]));
    for gate in [one, two] {
        Arc::into_inner(gate).unwrap().stop().await;
    }
}
