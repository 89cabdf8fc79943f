//! `shardgate bench` against real shards: every target stores exactly the rows it reports, and
//! straight COPY places rows where shardgate would.

use crate::common::{connect, fresh_shards};
use shardgate::routing::{KeyHash, ShardIndex};

/// Runs `shardgate bench` with `args` and returns its output, whatever its exit status.
fn run_bench(config: &std::path::Path, url: &str, args: &[&str]) -> std::process::Output {
    let config = config.to_str().expect("the test's config path is UTF-8");
    let fixed = [
        "bench",
        "--config",
        config,
        "--url",
        url,
        "--verify",
        "--json",
        "--concurrency",
        "4",
        "--rows-per-request",
        "250",
    ];
    crate::common::shardgate(fixed.iter().chain(args))
}

fn bench(config: &std::path::Path, url: &str, args: &[&str]) -> serde_json::Value {
    let output = run_bench(config, url, args);
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
    text.push_str(shardgate::devcluster::DEV_TABLES);
    let dir = std::env::temp_dir().join(format!("shardgate-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("shardgate.toml");
    std::fs::write(&path, &text).unwrap();
    let server = shardgate::server::start(shardgate::config::Config::parse(&text).unwrap())
        .await
        .unwrap();
    let url = format!("http://{}", server.write_addr());

    let cases = [
        ("shardgate", 5000, None),
        ("shardgate", 4100, Some("--prebuilt-bodies")),
        ("direct", 3000, None),
        ("insert", 200, None),
    ];
    for (target, rows, flag) in cases {
        let report = tokio::task::spawn_blocking({
            let (path, url) = (path.clone(), url.clone());
            move || {
                let rows = rows.to_string();
                let mut args = vec!["--target", target, "--rows", &rows, "--distribution", "zipf"];
                args.extend(flag);
                bench(&path, &url, &args)
            }
        })
        .await
        .unwrap();
        let shown = match flag {
            Some(_) => format!("{target} (prebuilt bodies)"),
            None => target.to_string(),
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
            .query("SELECT _sg_hash FROM events", &[])
            .await
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .filter(|h| routing.place_write(KeyHash::from_i64(*h)).owner != ShardIndex(index))
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
