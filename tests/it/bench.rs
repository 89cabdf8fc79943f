//! `shardgate bench` against real shards: every target stores exactly the rows it reports, and
//! straight COPY places rows where shardgate would.

use crate::common::{connect, fresh_shards};
use shardgate::routing::{KeyHash, ShardIndex};

/// Runs `shardgate bench --verify` with `args` and returns its output, whatever its exit status.
fn run_bench(config: &std::path::Path, url: &str, args: &[&str]) -> std::process::Output {
    let config = config.to_str().expect("the test's config path is UTF-8");
    let fixed = [
        "bench",
        "--config",
        config,
        "--url",
        url,
        "--json",
        "--concurrency",
        "4",
        "--rows-per-request",
        "250",
        "--verify",
    ];
    crate::common::shardgate(fixed.iter().chain(args))
}

fn bench(config: &std::path::Path, url: &str, args: &[&str]) -> serde_json::Value {
    report(run_bench(config, url, args))
}

/// The JSON report of a run that succeeded.
fn report(output: std::process::Output) -> serde_json::Value {
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

#[tokio::test]
async fn every_target_stores_exactly_the_rows_it_reports() {
    let urls = fresh_shards("bench").await;
    let mut text = String::from(
        "[server]\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\n[batch]\nmax_rows = 1000\n",
    );
    for (i, url) in urls.iter().enumerate() {
        text.push_str(&format!("[[shards]]\nname = \"s{i}\"\nurl = \"{url}\"\n"));
    }
    let dir = std::env::temp_dir().join(format!("shardgate-bench-{}", std::process::id()));
    text.push_str(&format!("[spool]\ndir = \"{}\"\n", dir.join("spool").display()));
    let listener = "[postgres]\nlisten = \"127.0.0.1:0\"\n";
    text.push_str(listener);
    text.push_str(
        "[[users]]\nname = \"bench\"\npassword = \"bench-secret\"\nwrite = [\"*\"]\nread = [\"*\"]\n",
    );
    text.push_str(shardgate::devcluster::DEV_TABLES);
    std::fs::create_dir_all(&dir).unwrap();
    let server = shardgate::server::start(shardgate::config::Config::parse(&text).unwrap())
        .await
        .unwrap();
    let url = format!("http://{}", server.write_addr());
    let bound = server.postgres_addr().expect("the listener is on");
    let text = text.replace(listener, &format!("[postgres]\nlisten = \"{bound}\"\n"));
    let path = dir.join("shardgate.toml");
    std::fs::write(&path, &text).unwrap();

    let cases: [(&str, usize, &[&str]); 9] = [
        ("shardgate", 5000, &[]),
        ("shardgate", 4100, &["--prebuilt-bodies"]),
        ("shardgate", 1500, &["--no-ids"]),
        ("direct", 3000, &[]),
        ("direct", 2000, &["--no-ids"]),
        ("insert", 200, &[]),
        ("pg-insert", 300, &[]),
        ("pg-copy", 3000, &[]),
        ("pg-copy", 2600, &["--no-ids"]),
    ];
    for (target, rows, flags) in cases {
        let report = tokio::task::spawn_blocking({
            let (path, url) = (path.clone(), url.clone());
            move || {
                let rows = rows.to_string();
                let mut args = vec!["--target", target, "--rows", &rows, "--distribution", "zipf"];
                args.extend(flags);
                bench(&path, &url, &args)
            }
        })
        .await
        .unwrap();
        let shown = if flags.contains(&"--prebuilt-bodies") {
            format!("{target} (prebuilt bodies)")
        } else {
            target.to_string()
        };
        assert_eq!(report["target"], shown.as_str());
        assert_eq!(report["rows"], rows, "{report}");
        assert_eq!(report["errors"], serde_json::json!({}), "{report}");
        assert_eq!(report["verification"]["rows_added"], rows, "{report}");
    }

    let routing = crate::common::two_shard_routing();
    for (index, url) in urls.iter().enumerate() {
        let client = connect(url).await;
        let misplaced: Vec<i64> = client
            .query(
                "SELECT _sg_hash FROM events UNION ALL SELECT _sg_hash FROM events_no_id",
                &[],
            )
            .await
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .filter(|h| routing.owner_of_key(KeyHash::from_i64(*h)) != ShardIndex(index))
            .collect();
        assert!(misplaced.is_empty(), "shard s{index} holds rows of other shards");
    }
    let refusals = [
        (
            "http://127.0.0.1:1",
            vec!["--rows", "100"],
            "Error: every request failed (1: connect: 1); is the target running and reachable?",
        ),
        (
            url.as_str(),
            vec!["--prebuilt-bodies", "--duration", "1s"],
            "Error: --prebuilt-bodies needs --rows (and no --duration): the bodies are built before the run",
        ),
    ];
    for (target, args, expected) in refusals {
        let output = run_bench(&path, target, &args);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{stderr}");
        assert!(stderr.lines().any(|line| line == expected), "{stderr}");
    }
    server.shutdown();
    server.wait().await;
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn a_timeline_of_a_run_during_a_migration_marks_its_phases_and_counts_every_row() {
    let urls = fresh_shards("bench_timeline").await;
    let third = crate::common::fresh_database(&crate::common::clusters()[1], "bench_timeline_s2").await;
    let mut text = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\n{}\
         [reshard]\ngrace = \"100ms\"\ncleanup_delay = \"5s\"\nchunk_rows = 200\nrows_per_second = 1000\n\
         [query]\nstatement_timeout = \"1s\"\n",
        crate::admin::with_token()
    );
    // About 2000 rows to copy at 1000 rows/s: a copy long enough for the timeline to see.
    for (i, url) in urls.iter().enumerate() {
        text.push_str(&format!("[[shards]]\nname = \"s{i}\"\nurl = \"{url}\"\n"));
    }
    let dir = std::env::temp_dir().join(format!("shardgate-bench-timeline-{}", std::process::id()));
    text.push_str(&format!("[spool]\ndir = \"{}\"\n", dir.join("spool").display()));
    text.push_str(shardgate::devcluster::DEV_TABLES);
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("shardgate.toml");
    std::fs::write(&path, &text).unwrap();
    let config = shardgate::config::Config::parse(&text).unwrap();
    let gate = crate::common::TestServer::start_with(config, urls.clone()).await;
    let (csv, svg) = (dir.join("timeline.csv"), dir.join("timeline.svg"));
    let run = tokio::task::spawn_blocking({
        let (path, url, admin) = (path.clone(), gate.url(""), gate.admin_url(""));
        let (csv, svg) = (csv.clone(), svg.clone());
        move || {
            let args = [
                "--rows",
                "16000",
                "--rate",
                "2000",
                "--admin-url",
                &admin,
                "--timeline",
                csv.to_str().unwrap(),
                "--chart",
                svg.to_str().unwrap(),
            ];
            report(run_bench(&path, &url, &args))
        }
    });
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    let started = crate::admin::add_shard(&gate, "s2", &third).await;
    assert_eq!(started.status, 202, "{}", started.body);
    let id = started.body["migration"].as_i64().unwrap();
    let report = run.await.unwrap();
    assert_eq!(report["rows"], 16000, "{report}");
    assert_ne!(
        crate::admin::phase_of(&gate, id).await,
        "done",
        "the run ends while the moved rows are on both shards"
    );
    assert_eq!(
        report["verification"]["rows_added"], 16000,
        "--verify counts only the rows each shard owns: {report}"
    );
    crate::admin::wait_done(&gate, id).await;
    let stored = crate::common::query_rows(&gate, serde_json::json!([]), "SELECT count(*) FROM events").await;
    assert_eq!(stored, serde_json::json!([[16000]]), "{report}");

    let csv = std::fs::read_to_string(&csv).unwrap();
    let lines: Vec<Vec<&str>> = csv.lines().skip(1).map(|l| l.split(',').collect()).collect();
    assert!(lines.len() >= 8, "about a line per second of an 8 s run: {csv}");
    let rows: u64 = lines.iter().map(|l| l[1].parse::<u64>().unwrap()).sum();
    assert_eq!(rows, 16000, "each acknowledged row is in one second: {csv}");
    assert!(lines[1][6].is_empty(), "no migration at first: {csv}");
    assert!(lines.iter().any(|l| l[6] == "copying"), "{csv}");
    let migration = &report["migration"];
    let steady = migration["steady_rows_per_second"].as_f64().unwrap();
    // A stall of the shared machine moves acknowledgements from one second to the next, so a
    // short window before the migration can read above or below the offered rate.
    assert!(
        (1000.0..3500.0).contains(&steady),
        "about the offered 2000 rows/s: {report}"
    );
    let svg = std::fs::read_to_string(&svg).unwrap();
    assert!(
        svg.starts_with("<svg ") && svg.contains(">copying</text>"),
        "{svg}"
    );
    gate.stop().await;
    let _ = std::fs::remove_dir_all(dir);
}
