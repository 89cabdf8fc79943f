//! The status page: served offline from the admin listener, and, in a real headless Chromium,
//! drawing one arc per range of the ring in its owner's colour and a row per shard, without a
//! script error.

use crate::common::TestServer;
use std::path::{Path, PathBuf};
use std::process::Output;

const TOKEN: &str = "page-test-secret-token";

/// Chromium's path: installed by `.ci/run` on a machine without it.
fn chromium() -> PathBuf {
    let path = PathBuf::from("/usr/bin/chromium");
    assert!(
        path.exists(),
        "the browser test needs Debian's chromium package (.ci/run installs it)"
    );
    path
}

/// Runs headless Chromium on `url` with `args`, letting the page's script run for a few
/// seconds of virtual time, with the console logged to stderr.
async fn run_chromium(url: &str, args: &[&str]) -> Output {
    let profile = std::env::temp_dir().join(format!("shardgate-chromium-{}", std::process::id()));
    let output = tokio::process::Command::new(chromium())
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(["--enable-logging=stderr", "--v=0", "--virtual-time-budget=5000"])
        .args(args)
        .arg(url)
        .output()
        .await
        .expect("chromium runs");
    let _ = std::fs::remove_dir_all(&profile);
    output
}

fn script_errors(stderr: &str) -> Vec<&str> {
    stderr
        .lines()
        .filter(|line| line.contains("CONSOLE") && (line.contains("Uncaught") || line.contains("Error")))
        .collect()
}

#[tokio::test]
async fn the_status_page_is_one_offline_page_on_the_admin_listener_without_secrets() {
    let gate = TestServer::start("status_page_served", &format!("[admin]\ntoken = \"{TOKEN}\"\n")).await;
    let response = gate.http.get(gate.admin_url("/")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "text/html; charset=utf-8");
    let page = response.text().await.unwrap();
    assert!(page.starts_with("<!doctype html>"), "{page}");
    assert!(!page.contains(TOKEN), "the page holds no token");
    assert!(!page.contains("https://"), "nothing is loaded from elsewhere");
    let elsewhere: Vec<_> = page
        .match_indices("http://")
        .map(|(at, _)| &page[at..at + 30])
        .collect();
    assert!(
        elsewhere
            .iter()
            .all(|url| url.starts_with("http://www.w3.org/2000/svg")),
        "only the SVG namespace is named: {elsewhere:?}"
    );
    let on_write_listener = gate.http.get(gate.url("/")).send().await.unwrap();
    assert_eq!(
        on_write_listener.status(),
        404,
        "the page is on the admin listener only"
    );
    gate.stop().await;
}

#[tokio::test]
async fn in_a_browser_the_page_draws_every_range_in_its_owners_colour_and_lists_every_shard() {
    let gate = TestServer::start("status_page_browser", "").await;
    let written = gate.post_events(&crate::common::events(1000, 40)).await;
    assert_eq!(written.status, 200, "{}", written.body);
    let ring = gate.admin("/admin/ring").await;
    let ranges = ring.body["ranges"].as_array().unwrap().len();
    let url = gate.admin_url("/");

    let dom = run_chromium(&url, &["--dump-dom"]).await;
    let stderr = String::from_utf8_lossy(&dom.stderr);
    assert!(dom.status.success(), "chromium failed: {stderr}");
    assert!(
        script_errors(&stderr).is_empty(),
        "script errors: {:?}",
        script_errors(&stderr)
    );
    let html = String::from_utf8_lossy(&dom.stdout);
    assert_eq!(html.matches("class=\"arc\"").count(), ranges, "one arc per range");
    for shard in ["s0", "s1"] {
        let arcs = html.matches(&format!("data-shard=\"{shard}\" d=")).count();
        let owned = ring.body["ranges"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|range| range["shard"] == shard)
            .count();
        assert_eq!(arcs, owned, "{shard}'s arcs");
        assert!(
            html.contains(&format!("<tr data-shard=\"{shard}\">")),
            "a row for {shard}"
        );
    }
    for (index, shard) in ["s0", "s1"].iter().enumerate() {
        let stored = gate.count(index, "events").await;
        assert_eq!(
            committed_cell(&html, shard),
            stored,
            "{shard}'s rows committed, as the shard holds them"
        );
    }
    let colours: std::collections::BTreeSet<_> = html
        .split("class=\"arc\"")
        .skip(1)
        .filter_map(|arc| arc.split("fill=\"").nth(1)?.split('"').next())
        .collect();
    assert_eq!(colours.len(), 2, "two owners, two colours: {colours:?}");
    assert!(
        html.contains("<strong id=\"epoch\">1</strong>"),
        "the epoch is shown"
    );
    assert!(html.contains("no migration yet"), "an empty list says so");

    let screenshot = screenshot_path();
    let shot = run_chromium(
        &url,
        &[
            &format!("--screenshot={}", screenshot.display()),
            "--window-size=1200,800",
        ],
    )
    .await;
    assert!(shot.status.success(), "{}", String::from_utf8_lossy(&shot.stderr));
    assert_png(&screenshot);
    let _ = std::fs::remove_file(&screenshot);
    gate.stop().await;
}

/// The number in the "rows committed" cell of `shard`'s row.
fn committed_cell(html: &str, shard: &str) -> i64 {
    let row = html
        .split(&format!("<tr data-shard=\"{shard}\">"))
        .nth(1)
        .expect("the shard's row");
    let cell = row
        .split("class=\"number committed\">")
        .nth(1)
        .and_then(|rest| rest.split('<').next())
        .expect("the rows committed cell");
    cell.replace(',', "")
        .parse()
        .unwrap_or_else(|_| panic!("a count: {cell}"))
}

fn screenshot_path() -> PathBuf {
    std::env::temp_dir().join(format!("shardgate-status-page-{}.png", std::process::id()))
}

fn assert_png(path: &Path) {
    let bytes = std::fs::read(path).expect("the screenshot was written");
    assert!(
        bytes.starts_with(b"\x89PNG\r\n\x1a\n") && bytes.len() > 10_000,
        "{} bytes",
        bytes.len()
    );
}
