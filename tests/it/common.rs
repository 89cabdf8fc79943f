//! Test support: one set of local PostgreSQL clusters for the test binary (stopped when it
//! exits), a fresh database per test on each cluster, and a shardgate started against them.

use shardgate::config::Config;
use shardgate::devcluster::{ClusterOptions, LocalCluster, PgBinaries};
use shardgate::server::RunningServer;
use std::path::PathBuf;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tokio_postgres::NoTls;

/// Shared clusters of this test binary.
const SHARED_CLUSTERS: usize = 2;

static CLUSTERS: OnceLock<Vec<LocalCluster>> = OnceLock::new();
static PRIVATE_CLUSTERS: std::sync::Mutex<Vec<LocalCluster>> = std::sync::Mutex::new(Vec::new());
static DATABASE_COUNTER: AtomicUsize = AtomicUsize::new(0);

/// Root directory of this binary's clusters.
fn clusters_root() -> PathBuf {
    let binary = std::env::current_exe()
        .ok()
        .and_then(|p| p.file_stem().map(|s| s.to_string_lossy().into_owned()))
        .unwrap_or_else(|| "tests".into());
    std::env::temp_dir().join(format!("shardgate-{binary}-{}", std::process::id()))
}

extern "C" fn stop_clusters_at_exit() {
    let private = PRIVATE_CLUSTERS
        .lock()
        .map(|mut c| std::mem::take(&mut *c))
        .unwrap_or_default();
    for cluster in CLUSTERS.get().into_iter().flatten().chain(private.iter()) {
        let _ = cluster.stop();
    }
    let _ = std::fs::remove_dir_all(clusters_root());
}

fn test_options() -> ClusterOptions {
    ClusterOptions {
        fsync: false,
        max_connections: 300,
    }
}

/// The shared clusters, started on first use.
pub fn clusters() -> &'static [LocalCluster] {
    CLUSTERS.get_or_init(|| {
        let bins = PgBinaries::locate().expect("PostgreSQL server binaries are installed");
        // SAFETY: registers a plain function with no captured state.
        unsafe { libc::atexit(stop_clusters_at_exit) };
        (0..SHARED_CLUSTERS)
            .map(|i| {
                let dir = clusters_root().join(format!("c{i}"));
                LocalCluster::start(&bins, &dir, &test_options()).expect("local cluster starts")
            })
            .collect()
    })
}

/// Starts a cluster only this test uses, so it may stop it; stopped at exit if still running.
pub fn private_cluster(name: &str) -> LocalCluster {
    clusters();
    let bins = PgBinaries::locate().expect("PostgreSQL server binaries are installed");
    let cluster =
        LocalCluster::start(&bins, &clusters_root().join(name), &test_options()).expect("cluster starts");
    PRIVATE_CLUSTERS.lock().unwrap().push(cluster.clone());
    cluster
}

/// Creates a fresh database on `cluster` and returns its URL.
pub async fn fresh_database(cluster: &LocalCluster, test: &str) -> String {
    let n = DATABASE_COUNTER.fetch_add(1, Ordering::Relaxed);
    let name = format!("t_{test}_{n}");
    let admin = connect(&cluster.url("postgres")).await;
    admin
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .await
        .expect("create test database");
    cluster.url(&name)
}

/// Two fresh shard databases: the first on a shared cluster, the second on a cluster only this
/// test uses, returned so the test may stop and restart it.
pub async fn shards_with_one_to_stop(test: &str) -> (LocalCluster, Vec<String>) {
    let doomed = private_cluster(test);
    let urls = vec![
        fresh_database(&clusters()[0], test).await,
        fresh_database(&doomed, test).await,
    ];
    (doomed, urls)
}

/// One fresh database on each shared cluster.
pub async fn fresh_shards(test: &str) -> Vec<String> {
    let mut urls = Vec::new();
    for cluster in clusters() {
        urls.push(fresh_database(cluster, test).await);
    }
    urls
}

/// Rows of `table` in the database at `url`.
pub async fn count_on(url: &str, table: &str) -> i64 {
    connect(url)
        .await
        .query_one(&format!("SELECT count(*) FROM {table}"), &[])
        .await
        .expect("count rows")
        .get(0)
}

/// Runs the `shardgate` binary with `args` (no backtraces, so a failure is its one-line
/// message) and returns its output, whatever its exit status.
pub fn shardgate<I, S>(args: I) -> std::process::Output
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    std::process::Command::new(env!("CARGO_BIN_EXE_shardgate"))
        .args(args)
        .env("RUST_BACKTRACE", "0")
        .output()
        .expect("the shardgate binary runs")
}

/// Waits until `waiters` backends of the database at `url` wait for a lock, as
/// `pg_stat_activity` shows them; panics with what it saw after ten seconds.
pub async fn wait_for_lock_waiters(url: &str, waiters: i64) {
    let client = connect(url).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let waiting: i64 = client
            .query_one(
                "SELECT count(*) FROM pg_stat_activity \
                 WHERE datname = current_database() AND wait_event_type = 'Lock'",
                &[],
            )
            .await
            .expect("read pg_stat_activity")
            .get(0);
        if waiting == waiters {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{waiting} backends wait for a lock, not {waiters}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A client whose connection is driven in the background.
pub async fn connect(url: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(url, NoTls)
        .await
        .expect("connect to test cluster");
    tokio::spawn(connection);
    client
}

/// The routing of two shards `s0` and `s1` with the default 256 vnodes, as shardgate builds it
/// on first start: the independent placement tests check rows against.
pub fn two_shard_routing() -> shardgate::routing::RoutingTable {
    use shardgate::routing::{Epoch, Ring, RoutingTable, ShardId};
    let ring = Ring::build([("s0", 1), ("s1", 1)], 256).expect("the ring builds");
    RoutingTable::new(Epoch(1), vec![ShardId("s0".into()), ShardId("s1".into())], ring)
}

/// The table most tests write to.
pub const EVENTS_TABLE: &str = r#"
[[tables]]
name = "events"
id = "event_id"
partition_key = ["tenant_id", "event_type"]
columns = [
  { name = "event_id", type = "uuid" },
  { name = "tenant_id", type = "text" },
  { name = "event_type", type = "text" },
  { name = "n", type = "bigint", default = 0 },
  { name = "ts", type = "timestamptz", default = "now()" },
  { name = "payload", type = "jsonb", nullable = true },
  { name = "score", type = "double precision", nullable = true },
]

[[tables]]
name = "logs"
partition_key = ["source"]
columns = [
  { name = "source", type = "text" },
  { name = "line", type = "text" },
]
"#;

/// A config for `shard_urls` (named s0, s1, ...) on ephemeral ports, plus `extra` TOML.
pub fn config_for(shard_urls: &[String], extra: &str) -> Config {
    let mut text = String::from("[server]\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\n");
    text.push_str(extra);
    for (i, url) in shard_urls.iter().enumerate() {
        text.push_str(&format!("\n[[shards]]\nname = \"s{i}\"\nurl = \"{url}\"\n"));
    }
    text.push_str(EVENTS_TABLE);
    Config::parse(&text).expect("test config parses")
}

/// A running shardgate and the shards it writes to.
pub struct TestServer {
    pub server: RunningServer,
    pub shard_urls: Vec<String>,
    pub http: reqwest::Client,
}

impl TestServer {
    /// Starts shardgate on fresh databases of the shared clusters.
    pub async fn start(test: &str, extra: &str) -> TestServer {
        let shard_urls = fresh_shards(test).await;
        Self::start_on(shard_urls, extra).await
    }

    /// Starts shardgate on the given shard databases.
    pub async fn start_on(shard_urls: Vec<String>, extra: &str) -> TestServer {
        let config = config_for(&shard_urls, extra);
        Self::start_with(config, shard_urls).await
    }

    /// Starts shardgate with `config`, whose shards are the databases at `shard_urls`.
    /// Its HTTP client logs in as the config's first user, when it has users, as an
    /// application configured with credentials does.
    pub async fn start_with(config: Config, shard_urls: Vec<String>) -> TestServer {
        let mut headers = reqwest::header::HeaderMap::new();
        if let Some(user) = config.users.first() {
            let credentials = format!("{}:{}", user.name, user.password.as_deref().unwrap_or_default());
            let value = format!("Basic {}", base64_encode(credentials.as_bytes()));
            headers.insert(reqwest::header::AUTHORIZATION, value.parse().unwrap());
        }
        let http = http_builder().default_headers(headers).build().unwrap();
        let server = shardgate::server::start(config).await.expect("shardgate starts");
        TestServer {
            server,
            shard_urls,
            http,
        }
    }

    /// Starts a POST of `body` to the rows endpoint of `events` in the background.
    pub fn spawn_post_events(
        &self,
        body: impl Into<reqwest::Body> + Send + 'static,
    ) -> tokio::task::JoinHandle<Reply> {
        spawn_post(&self.http, self.url("/v1/tables/events/rows"), body)
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.server.write_addr())
    }

    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.server.admin_addr())
    }

    /// `GET` of a JSON endpoint of the admin listener.
    pub async fn admin(&self, path: &str) -> Reply {
        Reply::read(self.http.get(self.admin_url(path)).send().await.unwrap()).await
    }

    /// The Prometheus page of the admin listener.
    pub async fn metrics_page(&self) -> String {
        let response = self.http.get(self.admin_url("/metrics")).send().await.unwrap();
        response.text().await.unwrap()
    }

    /// POSTs `body` with `content_type` to the rows endpoint of `table`.
    pub async fn post(&self, table: &str, content_type: &str, body: impl Into<reqwest::Body>) -> Reply {
        let response = self
            .http
            .post(self.url(&format!("/v1/tables/{table}/rows")))
            .header("content-type", content_type)
            .body(body)
            .send()
            .await
            .expect("request is sent");
        Reply::read(response).await
    }

    /// POSTs a JSON array of rows to `events`.
    pub async fn post_events(&self, rows: &serde_json::Value) -> Reply {
        self.post("events", "application/json", rows.to_string()).await
    }

    /// Runs `sql` on every shard's database, as an operator adding a constraint would.
    pub async fn on_every_shard(&self, sql: &str) {
        for url in &self.shard_urls {
            connect(url)
                .await
                .batch_execute(sql)
                .await
                .expect("statement runs on the shard");
        }
    }

    /// Rows of `table` on shard `index`.
    pub async fn count(&self, index: usize, table: &str) -> i64 {
        count_on(&self.shard_urls[index], table).await
    }

    /// Rows of `table` over all shards.
    pub async fn total(&self, table: &str) -> i64 {
        let mut total = 0;
        for index in 0..self.shard_urls.len() {
            total += self.count(index, table).await;
        }
        total
    }

    pub async fn stop(self) {
        self.server.shutdown();
        self.server.wait().await;
    }
}

/// Starts a JSON POST of `body` to `url` in the background; the handle yields its reply.
pub fn spawn_post(
    http: &reqwest::Client,
    url: String,
    body: impl Into<reqwest::Body> + Send + 'static,
) -> tokio::task::JoinHandle<Reply> {
    let request = http
        .post(url)
        .header("content-type", "application/json")
        .body(body);
    tokio::spawn(async move { Reply::read(request.send().await.expect("request is sent")).await })
}

/// A response read whole: status, headers and JSON body.
pub struct Reply {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: serde_json::Value,
}

impl Reply {
    pub async fn read(response: reqwest::Response) -> Reply {
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let text = response.text().await.expect("response body");
        let body =
            serde_json::from_str(&text).unwrap_or_else(|_| panic!("JSON response, got {status}: {text}"));
        Reply {
            status,
            headers,
            body,
        }
    }

    /// The `error` message of an error reply.
    pub fn error(&self) -> &str {
        self.body["error"].as_str().unwrap_or_default()
    }
}

/// `n` events for `tenants` tenants and two event types, each with a fixed id.
pub fn events(n: usize, tenants: usize) -> serde_json::Value {
    let rows: Vec<serde_json::Value> = (0..n)
        .map(|i| {
            serde_json::json!({
                "event_id": uuid::Uuid::now_v7().to_string(),
                "tenant_id": format!("tenant-{}", i % tenants),
                "event_type": if i % 2 == 0 { "click" } else { "view" },
                "n": i,
                "payload": {"i": i},
            })
        })
        .collect();
    serde_json::Value::Array(rows)
}

/// How long until `gate` routes with `epoch`, polling `/readyz`; panics after `limit`.
pub async fn time_to_epoch(gate: &TestServer, epoch: i64, limit: Duration) -> Duration {
    let started = Instant::now();
    while started.elapsed() < limit {
        if gate.admin("/readyz").await.body["epoch"] == epoch {
            return started.elapsed();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("no epoch {epoch} within {limit:?}");
}

/// The rows of a reporting query's answer, checked to be a 200.
pub async fn query_rows(gate: &TestServer, params: serde_json::Value, sql: &str) -> serde_json::Value {
    let response = gate
        .http
        .post(gate.url("/v1/query"))
        .json(&serde_json::json!({"sql": sql, "params": params}))
        .send()
        .await
        .unwrap();
    let reply = Reply::read(response).await;
    assert_eq!(reply.status, 200, "{sql}: {}", reply.body);
    reply.body["rows"].clone()
}

/// Where each row is, by the key `sql` selects first (with its `_sg_hash` second): the index in
/// `urls` (named by `names`) of the shard holding it, checked to be the owner of its position
/// in `ring` and to hold it alone.
pub async fn placement(
    urls: &[String],
    names: &[&str],
    ring: &[(&str, u32)],
    sql: &str,
) -> std::collections::HashMap<String, usize> {
    let built = shardgate::routing::Ring::build(ring.iter().copied(), 256).unwrap();
    let mut seen = std::collections::HashMap::new();
    for (index, (url, name)) in urls.iter().zip(names).enumerate() {
        for row in connect(url).await.query(sql, &[]).await.unwrap() {
            let key: String = row.get(0);
            let position = shardgate::routing::KeyHash::from_i64(row.get(1));
            let owner = built.ranges().find(|r| r.contains(position)).unwrap().shard.0;
            assert_eq!(ring[owner].0, *name, "row {key} is on the owner of its position");
            assert!(
                seen.insert(key.clone(), index).is_none(),
                "row {key} is stored once"
            );
        }
    }
    seen
}

/// The sum of every series of `metric` on a Prometheus `page` (0 when it has none yet).
pub fn total_of(page: &str, metric: &str) -> f64 {
    page.lines()
        .filter_map(|line| line.strip_prefix(metric))
        .filter(|rest| rest.starts_with(['{', ' ']))
        .filter_map(|rest| rest.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// The value of `series` (name and labels, as Prometheus prints them) on a metrics page.
pub fn sample(page: &str, series: &str) -> f64 {
    page.lines()
        .find_map(|line| {
            line.strip_prefix(series)
                .and_then(|rest| rest.trim().parse().ok())
        })
        .unwrap_or_else(|| panic!("no sample {series} in\n{page}"))
}

/// `bytes` in standard base64, as `Authorization: Basic` carries credentials.
pub fn base64_encode(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// An HTTP client. The TLS crypto provider reqwest builds its settings from is installed first.
pub fn http() -> reqwest::Client {
    http_builder().build().unwrap()
}

/// A builder of an HTTP client, with the TLS crypto provider installed.
pub fn http_builder() -> reqwest::ClientBuilder {
    shardgate::tls::install_default_provider();
    reqwest::Client::builder()
}
