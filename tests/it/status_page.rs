//! The status page: served offline from the admin listener, and, in a real headless Chromium,
//! drawing one arc per range of the ring in its owner's colour and a row per shard, without a
//! script error, and the rows the spool holds for a shard that is down; and, driven through
//! WebDriver, pausing, resuming and cancelling a migration with the admin token, a shard being
//! added (its ranges drawn moving, the copy's progress and time left, then the ranges its
//! own) and a hot key found and split under load; and a ring of 64 shards of 256 vnodes drawn
//! whole.

use crate::admin::{migration_status, wait_for};
use crate::common::TestServer;
use crate::webdriver::Browser;
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
    // A profile of its own per run: tests of one process run at once, and Chromium refuses a
    // profile another instance holds.
    static RUNS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let run = RUNS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let profile = std::env::temp_dir().join(format!("shardgate-chromium-{}-{run}", std::process::id()));
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

/// The page at `url` as headless Chromium leaves it after its script ran, failing on a script
/// error.
async fn dump_dom(url: &str) -> String {
    let dom = run_chromium(url, &["--dump-dom"]).await;
    let stderr = String::from_utf8_lossy(&dom.stderr);
    assert!(dom.status.success(), "chromium failed: {stderr}");
    assert!(
        script_errors(&stderr).is_empty(),
        "script errors: {:?}",
        script_errors(&stderr)
    );
    String::from_utf8_lossy(&dom.stdout).into_owned()
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
    let stored = stored_rows_once_counted(&gate).await;

    let html = dump_dom(&url).await;
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
        assert_eq!(
            committed_cell(&html, shard),
            stored[index],
            "{shard}'s rows committed, as the shard holds them"
        );
        assert_eq!(
            count_cell(&html, shard, "stored"),
            stored[index],
            "{shard}'s rows stored"
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

/// Each shard's `events` rows, once `/admin/shards` (from Postgres's statistics, which lag
/// the commits by up to a second or so) says the same.
async fn stored_rows_once_counted(gate: &TestServer) -> Vec<i64> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let mut counted = Vec::new();
        for index in 0..gate.shard_urls.len() {
            counted.push(gate.count(index, "events").await);
        }
        let listed = gate.admin("/admin/shards").await.body;
        let said: Vec<i64> = listed
            .as_array()
            .unwrap()
            .iter()
            .map(|shard| shard["stored_rows"].as_i64().unwrap_or(-1))
            .collect();
        if said == counted {
            return counted;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "stored rows {said:?}, counted {counted:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

/// The number in the "rows committed" cell of `shard`'s row.
fn committed_cell(html: &str, shard: &str) -> i64 {
    count_cell(html, shard, "committed")
}

/// The count in the cell of class `number {class}` of `shard`'s row.
fn count_cell(html: &str, shard: &str, class: &str) -> i64 {
    let row = html
        .split(&format!("<tr data-shard=\"{shard}\">"))
        .nth(1)
        .expect("the shard's row");
    let cell = row
        .split(&format!("class=\"number {class}\">"))
        .nth(1)
        .and_then(|rest| rest.split('<').next())
        .unwrap_or_else(|| panic!("the {class} cell"));
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

#[tokio::test]
async fn from_the_page_an_operator_with_the_token_pauses_resumes_and_cancels_a_migration() {
    let urls = crate::common::fresh_shards("status_page_actions").await;
    let third = crate::common::fresh_database(&crate::common::clusters()[1], "status_page_actions_s2").await;
    // Slow enough that the copy still runs when the page's cancel arrives, on a loaded machine.
    let extra = format!(
        "{}[reshard]\ngrace = \"100ms\"\ncleanup_delay = \"1s\"\nchunk_rows = 50\nrows_per_second = 30\n[query]\nstatement_timeout = \"1s\"\n",
        crate::admin::with_token()
    );
    let gate = TestServer::start_on(urls, &extra).await;
    assert_eq!(
        gate.post_events(&crate::common::events(3000, 97)).await.status,
        200
    );
    let started = crate::admin::add_shard(&gate, "s2", &third).await;
    assert_eq!(started.status, 202, "{}", started.body);
    let id = started.body["migration"].as_i64().unwrap();

    let browser = Browser::start().await;
    browser.open(&gate.admin_url("/")).await;
    let button = |action: &str| format!("[data-migration=\"{id}\"] button[data-action=\"{action}\"]");
    let pause = button("pause");
    browser.wait_for_element(&pause, "a pause button").await;
    assert_eq!(
        browser
            .eval(&format!("return document.querySelector('{pause}').disabled"))
            .await,
        serde_json::json!(true),
        "without the token the page is read-only"
    );

    browser.type_into("#token", "not-the-token").await;
    browser.click(&pause).await;
    browser
        .wait_until(
            "return document.getElementById('action-result').textContent.includes('refused (401)')",
            "a wrong token is refused, with the API's status",
        )
        .await;
    assert_eq!(
        migration_status(&gate, id).await["paused"],
        serde_json::json!(false),
        "a refused pause leaves the migration running"
    );

    browser.clear("#token").await;
    browser.type_into("#token", crate::admin::TOKEN).await;
    browser.click(&pause).await;
    wait_for(&gate, id, "paused from the page", |m| m["paused"] == true).await;
    browser
        .wait_until(
            "return document.getElementById('action-result').textContent.includes('pause done')",
            "the page says the pause was done",
        )
        .await;
    let resume = button("resume");
    browser.wait_for_element(&resume, "a resume button").await;
    browser.click(&resume).await;
    wait_for(&gate, id, "resumed from the page", |m| m["paused"] == false).await;
    browser
        .wait_until(
            &format!(
                "return Number(document.querySelector('[data-migration=\"{id}\"]').cells[6]\
                 .textContent.replace(/,/g, '')) > 0"
            ),
            "the copy's rows/s is shown while it runs",
        )
        .await;

    let cancel = button("cancel");
    browser.wait_for_element(&cancel, "a cancel button").await;
    browser.click(&cancel).await;
    wait_for(&gate, id, "cancelled from the page", |m| {
        m["phase"] == "cancelled"
    })
    .await;
    let refused_on_purpose = format!(
        "/admin/migrations/{id}/pause - Failed to load resource: the server responded with a status of 401"
    );
    let errors: Vec<_> = browser
        .console_errors()
        .await
        .into_iter()
        .filter(|message| !message.contains(&refused_on_purpose))
        .collect();
    assert!(errors.is_empty(), "console errors: {errors:?}");
    browser.close().await;
    gate.stop().await;
}

#[tokio::test]
async fn in_a_browser_the_page_shows_the_rows_the_spool_holds_for_a_shard_that_is_down() {
    use crate::common::{config_for, sample, shards_with_one_to_stop};
    let (doomed, urls) = shards_with_one_to_stop("status_page_spool").await;
    let dir = std::env::temp_dir().join(format!("shardgate-page-spool-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let mut config = config_for(&urls, &format!("[spool]\ndir = \"{}\"\n", dir.display()));
    config.tables[1].ack = shardgate::config::AckMode::Spool;
    let gate = TestServer::start_with(config, urls).await;
    doomed.stop().unwrap();
    for round in 0..3 {
        let rows: Vec<_> = (0..100)
            .map(|i| serde_json::json!({"source": format!("src-{i}"), "line": format!("{round}-{i}")}))
            .collect();
        let reply = gate
            .post(
                "logs",
                "application/json",
                serde_json::Value::Array(rows).to_string(),
            )
            .await;
        assert_eq!(reply.status, 202, "{}", reply.body);
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let waiting = loop {
        let page = gate.metrics_page().await;
        let waiting = sample(&page, "shardgate_spool_pending_rows{shard=\"s1\"}") as i64;
        if waiting > 0 && gate.count(0, "logs").await + waiting == 300 {
            break waiting;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "s0's rows are written, s1's wait"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };

    let html = dump_dom(&gate.admin_url("/")).await;
    assert_eq!(
        count_cell(&html, "s1", "spool-waiting"),
        waiting,
        "s1's rows in the spool"
    );
    assert_eq!(count_cell(&html, "s0", "spool-waiting"), 0);
    let listed = gate.admin("/admin/shards").await.body;
    assert_eq!(
        (
            listed[1]["name"].as_str(),
            listed[1]["up"].as_bool(),
            &listed[1]["stored_rows"]
        ),
        (Some("s1"), Some(false), &serde_json::Value::Null),
        "a shard that is down tells no row count: {listed}"
    );
    assert!(listed[0]["stored_rows"].is_i64(), "{listed}");
    assert!(
        html.split("<tr data-shard=\"s1\">")
            .nth(1)
            .is_some_and(|row| row.contains("class=\"number stored\">–<")),
        "the page shows no count for it"
    );
    assert!(
        html.contains(&format!("data-waiting=\"{waiting}\"")) && html.contains("data-dead-letters=\"0\""),
        "the spool's line: {}",
        html.split("id=\"spool\"")
            .nth(1)
            .unwrap_or_default()
            .split("</p>")
            .next()
            .unwrap_or_default()
    );
    gate.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn in_a_browser_a_shard_being_added_shows_its_moving_ranges_and_progress_and_a_hot_key_its_split() {
    use crate::hot_keys::{SPLIT_QUICKLY, key_hash, skewed_events};
    let urls = crate::common::fresh_shards("status_page_live").await;
    let third = crate::common::fresh_database(&crate::common::clusters()[1], "status_page_live_s2").await;
    let extra = format!(
        "{}[reshard]\ngrace = \"100ms\"\ncleanup_delay = \"1s\"\nchunk_rows = 50\nrows_per_second = 150\n\
         [query]\nstatement_timeout = \"1s\"\n{}",
        crate::admin::with_token(),
        SPLIT_QUICKLY.replace("max_fanout = 4", "max_fanout = 2"),
    );
    let gate = TestServer::start_on(urls, &extra).await;
    assert_eq!(
        gate.post_events(&crate::common::events(3000, 97)).await.status,
        200
    );
    let browser = Browser::start().await;
    browser.open(&gate.admin_url("/")).await;
    browser
        .wait_for_element("#shards tr[data-shard=\"s1\"]", "the shard table")
        .await;

    let started = crate::admin::add_shard(&gate, "s2", &third).await;
    assert_eq!(started.status, 202, "{}", started.body);
    let id = started.body["migration"].as_i64().unwrap();
    let journal = gate.admin(&format!("/admin/migrations/{id}")).await.body;
    assert_eq!(
        journal["migration"]["estimated_rows"], started.body["plan"]["estimated_rows"],
        "the journal keeps the plan's estimate: {journal}"
    );
    let estimates = |ranges: &serde_json::Value| -> std::collections::BTreeMap<u64, u64> {
        ranges
            .as_array()
            .unwrap()
            .iter()
            .map(|range| {
                (
                    range["start"].as_u64().unwrap(),
                    range["estimated_rows"].as_u64().unwrap(),
                )
            })
            .collect()
    };
    let recorded = estimates(&journal["ranges"]);
    assert_eq!(
        recorded,
        estimates(&started.body["plan"]["ranges"]),
        "and each range's"
    );
    let moving = recorded.len();
    browser
        .wait_until(
            &format!(
                "return document.querySelectorAll('#ring path.moving[data-target=\"s2\"]').length === {moving}"
            ),
            "every moving range is drawn in the new shard's colour",
        )
        .await;
    let row = format!("#migrations tr[data-migration=\"{id}\"]");
    browser
        .wait_until(
            &format!(
                "const row = document.querySelector('{row}'); if (!row) return false; \
                 const fraction = Number(row.querySelector('.progress').dataset.fraction); \
                 return fraction > 0 && fraction < 1 && row.cells[4].textContent.includes('% of ~') \
                 && /\\d+(\\.\\d)? s|min/.test(row.cells[7].textContent)"
            ),
            "the copy's progress against the plan's estimate, and its time left",
        )
        .await;
    wait_for(&gate, id, "the migration ends", |m| m["phase"] == "done").await;
    let ring = gate.admin("/admin/ring").await.body;
    let owned_by_new = ring["ranges"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|range| range["shard"] == "s2")
        .count();
    assert!(owned_by_new > 0, "{ring}");
    browser
        .wait_until(
            &format!(
                "return document.querySelectorAll('#ring path.moving').length === 0 \
                 && document.querySelectorAll('#ring path.arc[data-shard=\"s2\"]').length === {owned_by_new} \
                 && document.querySelector('{row}').cells[3].textContent === 'done' \
                 && document.querySelector('{row} .progress').dataset.fraction === '1.000' \
                 && document.querySelector('#shards tr[data-shard=\"s2\"]') !== null"
            ),
            "once done, the new shard's ranges are drawn as its own and nothing moves",
        )
        .await;
    let opacities = browser
        .eval(
            "document.querySelector('#shards tr[data-shard=\"s2\"] td').dispatchEvent(\
             new MouseEvent('mouseover', { bubbles: true })); \
             const of = shard => getComputedStyle(document.querySelector(\
             `#ring path.arc[data-shard=\"${shard}\"]`)).opacity; \
             return [of('s2'), of('s0'), of('s1')]",
        )
        .await;
    assert_eq!(
        opacities,
        serde_json::json!(["1", "0.12", "0.12"]),
        "hovering s2's row leaves only its ranges bright"
    );
    let hovered = browser
        .eval(
            "const arc = document.querySelector('#ring path.arc[data-shard=\"s2\"]'); \
             arc.dispatchEvent(new MouseEvent('mouseover', { bubbles: true })); \
             return arc.querySelector('title').textContent",
        )
        .await;
    let hovered = hovered.as_str().unwrap();
    assert!(
        hovered.starts_with('(')
            && hovered.contains("] owned by s2: ")
            && hovered.contains("% of the ring, about "),
        "a range's hover text names its bounds, owner, share and rows: {hovered}"
    );
    let spread = browser
        .eval(
            "const sums = new Map(); \
             for (const arc of document.querySelectorAll('#ring path.arc')) { \
               const rows = Number((/about ([\\d,]+) rows/.exec(arcTitle(arc)) ?? [, '0'])[1].replace(/,/g, '')); \
               sums.set(arc.dataset.shard, (sums.get(arc.dataset.shard) ?? 0) + rows); } \
             return [...holdings].map(([shard, held]) => [held.rows, sums.get(shard), \
               document.querySelectorAll(`#ring path.arc[data-shard=\"${shard}\"]`).length])",
        )
        .await;
    for shard in spread.as_array().unwrap() {
        let (rows, summed, arcs) = (
            shard[0].as_i64().unwrap(),
            shard[1].as_i64().unwrap(),
            shard[2].as_i64().unwrap(),
        );
        assert!(
            (rows - summed).abs() <= arcs,
            "a shard's ranges' rows add up to its rows, within rounding: {spread}"
        );
    }

    let whale = key_hash("whale", "click");
    let listed = format!(
        "return [...document.querySelectorAll('#hot-keys tbody tr')].some(row => \
         row.cells[1]?.textContent === '{whale}' && row.cells[5].textContent.startsWith('split') \
         && row.cells[4].textContent === '2') \
         && document.querySelectorAll('#ring line.salt').length >= 2"
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while browser.eval(&listed).await != serde_json::json!(true) {
        let reply = gate
            .post("events", "application/json", skewed_events(500, 8).to_string())
            .await;
        assert_eq!(reply.status, 200, "{}", reply.body);
        assert!(
            std::time::Instant::now() < deadline,
            "the hot key is listed as split, with its salted positions on the ring: {}",
            gate.admin("/admin/hot-keys").await.body
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let errors = browser.console_errors().await;
    assert!(errors.is_empty(), "console errors: {errors:?}");
    browser.close().await;
    gate.stop().await;
}

#[tokio::test]
async fn in_a_browser_the_page_draws_a_ring_of_64_shards_of_256_vnodes_whole() {
    use crate::common::{fresh_database, private_cluster};
    let cluster = private_cluster("status_page_64");
    let mut urls = Vec::new();
    for i in 0..64 {
        urls.push(fresh_database(&cluster, &format!("status_page_64_s{i}")).await);
    }
    let one_connection = "[pool]\nconnections_per_shard = 1\n[query]\nconnections_per_shard = 1\n";
    let gate = TestServer::start_on(urls, one_connection).await;
    let ring = gate.admin("/admin/ring").await;
    let ranges = ring.body["ranges"].as_array().unwrap();
    assert_eq!(ranges.len(), 64 * 256);

    let html = dump_dom(&gate.admin_url("/")).await;
    assert_eq!(
        html.matches("class=\"arc\"").count(),
        64 * 256,
        "one arc per range"
    );
    for i in 0..64 {
        let shard = format!("s{i}");
        let owned = ranges
            .iter()
            .filter(|range| range["shard"] == shard.as_str())
            .count();
        assert_eq!(
            html.matches(&format!("data-shard=\"{shard}\" d=")).count(),
            owned,
            "{shard}'s arcs"
        );
        assert!(
            html.contains(&format!("<tr data-shard=\"{shard}\">")),
            "a row for {shard}"
        );
    }
    gate.stop().await;
    cluster.stop().unwrap();
}
