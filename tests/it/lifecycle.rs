//! Start-up checks, shard outages and shutdown of the real binary.

use crate::common::{
    TestServer, config_for, connect, events, fresh_database, fresh_shards, private_cluster, total_of,
};
use serde_json::json;
use std::time::Duration;
use tokio::io::AsyncBufReadExt;

#[tokio::test]
async fn a_stopped_shard_gets_503_for_its_rows_while_the_other_keeps_accepting() {
    let (doomed, urls) = crate::common::shards_with_one_to_stop("outage").await;
    let gate = TestServer::start_on(urls, "request_timeout = \"2s\"\n[batch]\nmax_delay = \"5ms\"\n").await;
    // Find one key per shard by writing and looking at the ack.
    let mut key_for = [None, None];
    for i in 0..50 {
        let reply = gate
            .post_events(&json!([{"tenant_id": format!("t{i}"), "event_type": "x"}]))
            .await;
        assert_eq!(reply.status, 200, "{}", reply.body);
        let shard = if reply.body["shards"]["s0"] == 1 { 0 } else { 1 };
        key_for[shard].get_or_insert(format!("t{i}"));
    }
    let [Some(healthy_key), Some(doomed_key)] = key_for else {
        panic!("50 keys reach both shards")
    };
    let before = gate.count(0, "events").await;

    doomed.stop().unwrap();
    let row = |tenant: &str| json!([{"tenant_id": tenant, "event_type": "x"}]);
    let refused = gate.post_events(&row(&doomed_key)).await;
    assert_eq!(refused.status, 503, "{}", refused.body);
    assert!(refused.headers.contains_key("retry-after"));
    assert_eq!(refused.body["details"][0]["shard"], "s1", "{}", refused.body);
    assert!(
        refused.error().contains("retrying is safe for tables with an id"),
        "{}",
        refused.error()
    );

    let accepted = gate.post_events(&row(&healthy_key)).await;
    assert_eq!(accepted.status, 200, "{}", accepted.body);
    assert_eq!(gate.count(0, "events").await, before + 1);

    let ready = gate.admin("/readyz").await;
    assert_eq!(ready.status, 503);
    assert_eq!(
        ready.body["details"],
        json!([{"shard": "s1", "reason": "unreachable"}])
    );
    gate.stop().await;
}

#[tokio::test]
async fn a_shard_down_at_start_up_is_prepared_and_written_once_it_answers() {
    let late = private_cluster("late_shard");
    let urls = vec![
        fresh_database(&crate::common::clusters()[0], "late_shard").await,
        fresh_database(&late, "late_shard").await,
    ];
    late.stop().unwrap();
    let gate = TestServer::start_on(
        urls,
        "request_timeout = \"1s\"\n[pool]\nconnect_timeout = \"1s\"\n",
    )
    .await;
    let ready = gate.admin("/readyz").await.body;
    assert_eq!(
        ready["details"],
        json!([{"shard": "s1", "reason": "unreachable"}])
    );
    let page = gate.metrics_page().await;
    assert!(
        page.contains("shardgate_shard_prepared{shard=\"s1\"} 0"),
        "{page}"
    );

    let row = |i: usize| json!([{"tenant_id": format!("t{i}"), "event_type": "x"}]);
    let bodies: Vec<_> = (0..20).map(row).collect();
    let first = futures_util::future::join_all(bodies.iter().map(|body| gate.post_events(body))).await;
    let mut waiting = Vec::new();
    for (i, reply) in first.iter().enumerate() {
        match reply.status {
            200 => assert_eq!(reply.body["shards"]["s0"], 1),
            503 => {
                assert_eq!(reply.body["details"][0]["shard"], "s1", "{}", reply.body);
                waiting.push(i);
            }
            other => panic!("unexpected {other}: {}", reply.body),
        }
    }
    assert!(
        !waiting.is_empty() && waiting.len() < 20,
        "keys reach both shards"
    );

    late.restart().unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    for &i in &waiting {
        loop {
            let reply = gate.post_events(&row(i)).await;
            if reply.status == 200 {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "{}", reply.body);
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    assert_eq!(gate.count(1, "events").await, waiting.len() as i64);
    assert_eq!(gate.count(0, "events").await, 20 - waiting.len() as i64);
    assert_eq!(gate.admin("/readyz").await.status, 200);
    let page = gate.metrics_page().await;
    assert!(
        page.contains("shardgate_shard_prepared{shard=\"s1\"} 1"),
        "{page}"
    );
    gate.stop().await;
}

#[tokio::test]
async fn a_shard_whose_fence_moved_to_another_epoch_refuses_stale_batches() {
    let gate = TestServer::start("fence", "").await;
    let fence = connect(&gate.shard_urls[1]).await;
    fence
        .batch_execute("UPDATE shardgate_fence SET epoch = epoch + 1")
        .await
        .unwrap();
    let rows = events(40, 40);
    let reply = gate.post_events(&rows).await;
    assert_eq!(reply.status, 503, "{}", reply.body);
    let detail = &reply.body["details"][0];
    assert_eq!(detail["shard"], "s1");
    assert_eq!(
        detail["reason"],
        "shard fence is at epoch 2, the batch was routed with epoch 1"
    );
    assert_eq!(gate.count(1, "events").await, 0, "the fenced shard took no rows");
    let committed = reply.body["details"][1]["committed"].as_i64().unwrap();
    assert_eq!(
        gate.count(0, "events").await,
        committed,
        "the other shard's rows committed and are reported"
    );
    gate.stop().await;
}

#[tokio::test]
async fn a_shard_table_that_differs_from_the_config_stops_start_up() {
    let urls = fresh_shards("differs").await;
    let shard = connect(&urls[1]).await;
    shard
        .batch_execute("CREATE TABLE logs (source text NOT NULL, line integer, _sg_hash bigint NOT NULL)")
        .await
        .unwrap();
    let error = shardgate::server::start(config_for(&urls, ""))
        .await
        .err()
        .expect("start-up fails");
    assert_eq!(
        error.to_string(),
        "shard s1: table logs differs from the config: column line has type integer, the config says text"
    );
}

#[tokio::test]
async fn sigterm_flushes_pending_rows_before_the_process_exits() {
    let urls = fresh_shards("sigterm").await;
    let ports: Vec<u16> = (0..2)
        .map(|_| {
            std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port()
        })
        .collect();
    let mut text = format!(
        "[server]\nlisten = \"127.0.0.1:{}\"\nadmin_listen = \"127.0.0.1:{}\"\n[batch]\nmax_delay = \"60s\"\n\
         [pool]\nconnections_per_shard = 1\n",
        ports[0], ports[1]
    );
    for (i, url) in urls.iter().enumerate() {
        text.push_str(&format!("[[shards]]\nname = \"s{i}\"\nurl = \"{url}\"\n"));
    }
    text.push_str(crate::common::EVENTS_TABLE);
    let dir = std::env::temp_dir().join(format!("shardgate-sigterm-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config_path = dir.join("shardgate.toml");
    std::fs::write(&config_path, text).unwrap();

    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_shardgate"))
        .arg("serve")
        .arg("--config")
        .arg(&config_path)
        .env("RUST_LOG", "warn")
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let http = crate::common::http();
    let base = format!("http://127.0.0.1:{}", ports[0]);
    let mut up = false;
    for _ in 0..100 {
        if http.get(format!("{base}/healthz")).send().await.is_ok() {
            up = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(up, "shardgate serve came up");

    let body = events(25, 3).to_string();
    let request = crate::common::spawn_post(&http, format!("{base}/v1/tables/events/rows"), body);
    let metrics = format!("http://127.0.0.1:{}/metrics", ports[1]);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let page = http.get(&metrics).send().await.unwrap().text().await.unwrap();
        let queued = total_of(&page, "shardgate_queue_rows");
        let committed = total_of(&page, "shardgate_rows_committed_total");
        if (queued, committed) == (25.0, 0.0) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "rows wait for their batch: {queued} queued, {committed} committed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(!request.is_finished(), "rows wait for their batch");
    // SAFETY: sends a signal to our own child process.
    unsafe { libc::kill(child.id().unwrap() as i32, libc::SIGTERM) };
    let reply = request.await.unwrap();
    assert_eq!(reply.status, 200, "{}", reply.body);
    let status = tokio::time::timeout(Duration::from_secs(20), child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "exit status {status}");

    let mut total = 0;
    for url in &urls {
        let count: i64 = connect(url)
            .await
            .query_one("SELECT count(*) FROM events", &[])
            .await
            .unwrap()
            .get(0);
        total += count;
    }
    assert_eq!(total, 25);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn check_config_names_every_bad_key_and_fails() {
    let dir = std::env::temp_dir().join(format!("shardgate-check-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("bad.toml");
    let text =
        crate::common::EVENTS_TABLE.replace("partition_key = [\"source\"]", "partition_key = [\"sauce\"]");
    std::fs::write(
        &path,
        format!("[routing]\nvnodes = 0\n[[shards]]\nname = \"S0\"\nurl = \"postgres://h/db\"\n{text}"),
    )
    .unwrap();
    let output = crate::common::shardgate(["check-config".as_ref(), "--config".as_ref(), path.as_os_str()]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("routing.vnodes: must be between 1 and 4096"),
        "{stderr}"
    );
    assert!(
        stderr.contains("shards[0].name: must match [a-z_][a-z0-9_]*"),
        "{stderr}"
    );
    assert!(
        stderr.contains("tables[1].partition_key[0]: column `sauce` is not declared"),
        "{stderr}"
    );
    let _ = std::fs::remove_dir_all(dir);
}

/// A `shardgate dev` child in a session of its own, and what it printed.
struct DevProcess {
    child: tokio::process::Child,
    stdout: tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStdout>>,
    stderr: tokio::task::JoinHandle<String>,
    /// The banner's lines, once read.
    printed: Vec<String>,
}

/// The password of the dev user `name`, from the banner's `user NAME:` line.
fn dev_password(printed: &[String], name: &str) -> String {
    printed
        .iter()
        .find_map(|line| line.trim().strip_prefix(&format!("user {name}:")))
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("the banner shows the password of {name}: {printed:?}"))
        .to_string()
}

/// An HTTP client that logs in as the dev user `app`, whose password the banner shows.
fn app_client(printed: &[String]) -> reqwest::Client {
    let password = dev_password(printed, "app");
    let credentials = crate::common::base64_encode(format!("app:{password}").as_bytes());
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(
        reqwest::header::AUTHORIZATION,
        format!("Basic {credentials}").parse().unwrap(),
    );
    crate::common::http_builder()
        .default_headers(headers)
        .build()
        .unwrap()
}

impl DevProcess {
    fn spawn(dir: &std::path::Path) -> DevProcess {
        Self::spawn_with(dir, &[])
    }

    fn spawn_with(dir: &std::path::Path, args: &[&str]) -> DevProcess {
        let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_shardgate"));
        command
            .arg("dev")
            .arg("--dir")
            .arg(dir)
            .args(["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"])
            .args(["--postgres-listen", "127.0.0.1:0"])
            .args(args)
            .env("RUST_LOG", "warn")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true);
        // SAFETY: setsid only makes the child the leader of a new session; it touches no memory.
        unsafe {
            command.pre_exec(|| {
                if libc::setsid() < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut child = command.spawn().unwrap();
        let stdout = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
        let mut stderr = child.stderr.take().unwrap();
        let stderr = tokio::spawn(async move {
            let mut text = String::new();
            let _ = tokio::io::AsyncReadExt::read_to_string(&mut stderr, &mut text).await;
            text
        });
        DevProcess {
            child,
            stdout,
            stderr,
            printed: Vec::new(),
        }
    }

    /// Reads the welcome banner up to its last line: the write URL, each shard's URL and the
    /// admin token.
    async fn banner(&mut self) -> (String, Vec<String>, String) {
        let (mut write, mut shards, mut token) = (None, Vec::new(), None);
        let printed = &mut self.printed;
        let read = async {
            while let Some(line) = self.stdout.next_line().await.unwrap() {
                printed.push(line.clone());
                let line = line.trim();
                if let Some(url) = line.strip_prefix("write API:") {
                    write = Some(url.trim().trim_end_matches("/v1/tables/events/rows").to_string());
                } else if let Some(shown) = line.strip_prefix("admin token:") {
                    token = Some(shown.trim().to_string());
                } else if let Some((_, url)) = line.strip_prefix("shard ").and_then(|l| l.split_once("psql "))
                {
                    shards.push(url.to_string());
                } else if line.starts_with("Press Ctrl-C") {
                    return;
                }
            }
        };
        tokio::time::timeout(Duration::from_secs(120), read)
            .await
            .expect("dev prints its banner");
        let token = token.expect("banner shows the admin token");
        (write.expect("banner names the write API"), shards, token)
    }

    /// `kill -9` of the whole process group, as a closed terminal or the OOM killer would.
    async fn kill_group(mut self) -> String {
        let pid = self.child.id().unwrap() as i32;
        // SAFETY: signals the process group this test started.
        unsafe { libc::kill(-pid, libc::SIGKILL) };
        self.child.wait().await.unwrap();
        self.stderr.await.unwrap()
    }

    async fn terminate(mut self) -> String {
        // SAFETY: signals the child this test started.
        unsafe { libc::kill(self.child.id().unwrap() as i32, libc::SIGTERM) };
        let status = tokio::time::timeout(Duration::from_secs(60), self.child.wait())
            .await
            .unwrap()
            .unwrap();
        assert!(status.success(), "dev exits cleanly on SIGTERM: {status}");
        self.stderr.await.unwrap()
    }
}

/// Stops any server the test left running on its dev data, also when an assertion failed.
struct DevData(std::path::PathBuf);

impl Drop for DevData {
    fn drop(&mut self) {
        let bins = shardgate::devcluster::PgBinaries::locate().unwrap();
        for cluster in ["s0", "s1", "spare0"] {
            let _ = shardgate::devcluster::LocalCluster::stop_leftover(&bins, &self.0.join(cluster));
        }
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Writes `n` rows of the example table `shardgate dev` declares, each with its own id, and
/// checks they were acknowledged.
async fn post_dev_events(http: &reqwest::Client, write: &str, n: usize) {
    let rows: Vec<_> = (0..n)
        .map(|i| json!({"event_id": uuid::Uuid::now_v7(), "tenant_id": format!("t{}", i % 97), "event_type": "click", "payload": {"i": i}}))
        .collect();
    let reply = crate::common::Reply::read(
        http.post(format!("{write}/v1/tables/events/rows"))
            .json(&rows)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
}

async fn count_events(http: &reqwest::Client, write: &str) -> serde_json::Value {
    let reply = crate::common::Reply::read(
        http.post(format!("{write}/v1/query"))
            .json(&json!({"sql": "SELECT count(*) FROM events"}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    reply.body["rows"][0][0].clone()
}

#[tokio::test]
async fn dev_after_kill_9_of_its_group_restarts_on_the_same_data_with_every_row() {
    let data = DevData(std::env::temp_dir().join(format!("shardgate-dev-crash-{}", std::process::id())));
    let http = crate::common::http();
    let mut first = DevProcess::spawn(&data.0);
    let (write, shards_before, token_before) = first.banner().await;
    assert_eq!(token_before.len(), 32, "{token_before}");
    let status_page = first
        .printed
        .iter()
        .find_map(|line| line.trim().strip_prefix("status page:"))
        .map(|url| url.trim().to_string())
        .expect("the banner names the status page");
    let page = http.get(&status_page).send().await.unwrap();
    assert_eq!(
        page.headers()["content-type"],
        "text/html; charset=utf-8",
        "the status page is public in dev: {status_page}"
    );
    let anonymous = http
        .post(format!("{write}/v1/query"))
        .json(&json!({"sql": "SELECT count(*) FROM events"}))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), 401, "dev's API asks for credentials");
    let app = app_client(&first.printed);
    let curl = first
        .printed
        .iter()
        .find(|line| line.contains("curl -s -u app:"))
        .expect("the banner's curl example carries app's credentials");
    assert!(curl.contains(&dev_password(&first.printed, "app")), "{curl}");
    post_dev_events(&app, &write, 300).await;
    let first_printed = first.printed.clone();
    first.kill_group().await;
    let pid_file = std::fs::read_to_string(data.0.join("s0/data/postmaster.pid")).unwrap();
    let postmaster: i32 = pid_file.lines().next().unwrap().parse().unwrap();
    // SAFETY: signal 0 only checks that the process exists.
    assert_eq!(
        unsafe { libc::kill(postmaster, 0) },
        0,
        "the postmaster outlived dev"
    );
    let config_before = std::fs::read_to_string(data.0.join("shardgate.toml")).unwrap();
    assert!(
        config_before.contains(&format!("[admin]\ntoken = \"{token_before}\"")),
        "the config dev writes holds the token it prints: {config_before}"
    );
    let dir = data.0.to_str().expect("the test's data path is UTF-8");
    let other_count = crate::common::shardgate([
        "dev",
        "--dir",
        dir,
        "--shards",
        "3",
        "--listen",
        "127.0.0.1:0",
        "--admin-listen",
        "127.0.0.1:0",
    ]);
    assert!(!other_count.status.success());
    let stderr = String::from_utf8_lossy(&other_count.stderr);
    assert!(
        stderr.contains("has 2 shard(s) (s0, s1), not 3; run with --shards 2, or with --fresh"),
        "{stderr}"
    );
    assert!(!data.0.join("s2").exists(), "nothing was created for s2");
    assert_eq!(
        std::fs::read_to_string(data.0.join("shardgate.toml")).unwrap(),
        config_before,
        "the config was not rewritten"
    );

    let mut second = DevProcess::spawn(&data.0);
    let (write, shards_after, token_after) = second.banner().await;
    assert_eq!(shards_after, shards_before, "each shard keeps its port");
    assert_eq!(token_after, token_before, "the admin token stays across restarts");
    assert_eq!(
        dev_password(&second.printed, "app"),
        dev_password(&first_printed, "app"),
        "the users' passwords stay across restarts"
    );
    assert_eq!(
        count_events(&app, &write).await,
        json!(300),
        "every acknowledged row is there"
    );
    post_dev_events(&app, &write, 50).await;
    assert_eq!(count_events(&app, &write).await, json!(350));
    let stderr = second.terminate().await;
    for shard in ["s0", "s1"] {
        assert!(
            stderr.contains(&format!(
                "shard {shard}: its server (pid "
            )) && stderr.contains("was still running from an earlier start that did not stop it; stopped it cleanly, starting it again"),
            "{stderr}"
        );
    }
    assert!(
        !stderr.contains("NOTICE"),
        "restarts log no NOTICE lines: {stderr}"
    );
    assert!(
        !data.0.join("s0/data/postmaster.pid").exists(),
        "dev stopped its shards"
    );
}

#[tokio::test]
async fn dev_with_a_spare_prints_the_command_that_adds_it_and_brings_it_back_in_the_ring() {
    let data = DevData(std::env::temp_dir().join(format!("shardgate-dev-spare-{}", std::process::id())));
    let mut first = DevProcess::spawn_with(&data.0, &["--spare", "1"]);
    let (write, shards, _) = first.banner().await;
    assert_eq!(shards.len(), 2, "{:?}", first.printed);
    let postgres = first
        .printed
        .iter()
        .find_map(|l| l.trim().strip_prefix("postgres:  psql "))
        .expect("the banner shows the Postgres listener");
    let (client, connection) = tokio_postgres::connect(postgres, tokio_postgres::NoTls)
        .await
        .expect("the banner's psql line logs in");
    tokio::spawn(connection);
    assert_eq!(
        client.simple_query("SELECT 1").await.unwrap().len(),
        3,
        "a row description, a row, a completion"
    );
    let analyst = postgres.replacen(
        &format!("app:{}", dev_password(&first.printed, "app")),
        &format!("analyst:{}", dev_password(&first.printed, "analyst")),
        1,
    );
    let (reader, connection) = tokio_postgres::connect(&analyst, tokio_postgres::NoTls)
        .await
        .expect("the analyst logs in with the password the banner shows");
    tokio::spawn(connection);
    let refused = reader
        .simple_query("INSERT INTO events (tenant_id, event_type) VALUES ('t', 'click')")
        .await
        .unwrap_err();
    assert_eq!(
        refused.code(),
        Some(&tokio_postgres::error::SqlState::INSUFFICIENT_PRIVILEGE),
        "the analyst only reads: {refused:?}"
    );
    let http = app_client(&first.printed);
    let spare_line = first
        .printed
        .iter()
        .find(|l| l.trim().starts_with("spare0:"))
        .expect("the banner lists the spare");
    assert!(spare_line.ends_with("(spare, not in the ring)"), "{spare_line}");
    let command = first
        .printed
        .iter()
        .filter_map(|l| l.trim().strip_prefix("shardgate "))
        .find(|c| c.contains(" shards add s2 "))
        .unwrap_or_else(|| panic!("the banner says how to add the spare: {:?}", first.printed));
    let args: Vec<String> = command.split_whitespace().map(String::from).collect();
    let spare_url = args.last().unwrap().clone();
    assert!(spare_line.contains(&spare_url), "{spare_line} / {command}");
    post_dev_events(&http, &write, 400).await;

    let output = tokio::task::spawn_blocking(move || crate::common::shardgate(&args))
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("migration 1 done: "), "{stdout}");
    let admin_api = first
        .printed
        .iter()
        .find_map(|line| line.trim().strip_prefix("admin API:"))
        .map(|url| url.trim().trim_end_matches("/admin/shards").to_string())
        .expect("the banner names the admin API");
    let config = data.0.join("shardgate.toml");
    let config = config.to_str().unwrap().to_string();
    let args = ["admin", "--config", &config, "--url", &admin_api, "dead-letters"].map(String::from);
    let listed = tokio::task::spawn_blocking(move || crate::common::shardgate(&args))
        .await
        .unwrap();
    assert!(
        listed.status.success(),
        "dead letters need the admin token, which `admin` takes from the config: {}",
        String::from_utf8_lossy(&listed.stderr)
    );
    assert!(
        crate::common::count_on(&spare_url, "events").await > 0,
        "the spare took its share"
    );
    first.terminate().await;

    let mut second = DevProcess::spawn(&data.0);
    let (write, shards, _) = second.banner().await;
    assert_eq!(shards.len(), 3, "{:?}", second.printed);
    assert_eq!(
        shards[2], spare_url,
        "s2 is back at the address the catalog recorded"
    );
    assert!(
        second
            .printed
            .iter()
            .any(|l| l.trim() == format!("spare0:  {spare_url}  (in the ring as s2)")),
        "{:?}",
        second.printed
    );
    assert_eq!(count_events(&http, &write).await, json!(400));
    post_dev_events(&http, &write, 60).await;
    assert_eq!(count_events(&http, &write).await, json!(460));
    second.terminate().await;
}

#[tokio::test]
async fn dev_with_tls_serves_its_listeners_with_its_authority_and_reloads_them_on_sighup() {
    let data = DevData(std::env::temp_dir().join(format!("shardgate-dev-tls-{}", std::process::id())));
    let mut dev = DevProcess::spawn_with(&data.0, &["--tls"]);
    let (write, _, _) = dev.banner().await;
    assert!(write.starts_with("https://127.0.0.1:"), "{write}");
    let ca = data.0.join("ca.pem");
    let ca = std::path::absolute(&ca).unwrap();
    let curl_line = dev
        .printed
        .iter()
        .find(|line| line.contains("/v1/tables/events/rows \\"))
        .expect("the banner shows a curl write");
    assert!(
        curl_line.contains(&format!("--cacert {}", ca.display())),
        "{curl_line}"
    );
    let check = |url: &str| {
        std::process::Command::new("curl")
            .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "--cacert"])
            .arg(&ca)
            .arg(url)
            .output()
            .map(|output| String::from_utf8_lossy(&output.stdout).into_owned())
            .unwrap()
    };
    assert_eq!(
        check(&format!("{write}/healthz")),
        "200",
        "curl trusts the local authority"
    );

    let query = dev
        .printed
        .iter()
        .filter_map(|line| line.trim().strip_prefix("shardgate query "))
        .next()
        .expect("the banner shows a shardgate query")
        .to_string();
    let mut args = vec!["query".to_string()];
    args.extend(split_quoted(&query));
    let output = tokio::task::spawn_blocking(move || crate::common::shardgate(&args))
        .await
        .unwrap();
    assert!(
        output.status.success(),
        "the printed query finds the https URL, the authority and a reader in the config: {}",
        String::from_utf8_lossy(&output.stderr)
    );

    let postgres = dev
        .printed
        .iter()
        .find_map(|l| l.trim().strip_prefix("postgres:  psql "))
        .expect("the banner shows the Postgres listener")
        .to_string();
    assert!(postgres.contains("sslmode=verify-full"), "{postgres}");
    let psql = tokio::process::Command::new("psql")
        .args([postgres.as_str(), "-X", "-A", "-t", "-c", "SELECT 1"])
        .output()
        .await
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&psql.stdout).trim(), "1", "{psql:?}");

    // SAFETY: signals the child this test started.
    unsafe { libc::kill(dev.child.id().unwrap() as i32, libc::SIGHUP) };
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        check(&format!("{write}/healthz")),
        "200",
        "SIGHUP reloads, it does not stop"
    );
    let stderr = dev.terminate().await;
    assert!(!stderr.contains("not reloaded"), "{stderr}");
}

/// `text` split at spaces, a double-quoted part kept whole without its quotes.
fn split_quoted(text: &str) -> Vec<String> {
    let mut parts = Vec::new();
    let mut rest = text.trim();
    while !rest.is_empty() {
        let (part, after) = match rest.strip_prefix('"') {
            Some(quoted) => quoted.split_once('"').unwrap_or((quoted, "")),
            None => rest.split_once(' ').unwrap_or((rest, "")),
        };
        parts.push(part.to_string());
        rest = after.trim_start();
    }
    parts
}
