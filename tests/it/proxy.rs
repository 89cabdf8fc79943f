//! A `shardgate serve` process for tests that kill it or send it signals: started on its own
//! ports from a config written to a directory, with the admin calls those tests make.

use crate::admin::TOKEN;
use crate::common::Reply;
use serde_json::{Value, json};
use std::time::{Duration, Instant};

/// A `shardgate serve` process on its own ports, for killing.
pub struct Proxy {
    child: tokio::process::Child,
    /// The write listener's base URL.
    pub base: String,
    /// The admin listener's base URL.
    pub admin: String,
}

impl Proxy {
    /// Starts `shardgate serve` with `config` (shards and tables; the listeners are added),
    /// written into `dir`, and waits until it answers. Its log (warnings and errors) is
    /// appended to `serve.log` in `dir`.
    pub async fn start(dir: &std::path::Path, config: &str) -> Proxy {
        Self::start_with(dir, "", config).await
    }

    /// [`Proxy::start`] with more `[server]` keys.
    pub async fn start_with(dir: &std::path::Path, server: &str, config: &str) -> Proxy {
        std::fs::create_dir_all(dir).unwrap();
        let ports: Vec<u16> = (0..2)
            .map(|_| {
                let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
                listener.local_addr().unwrap().port()
            })
            .collect();
        let text = format!(
            "[server]\nlisten = \"127.0.0.1:{}\"\nadmin_listen = \"127.0.0.1:{}\"\n{server}{config}",
            ports[0], ports[1]
        );
        let path = dir.join("shardgate.toml");
        std::fs::write(&path, text).unwrap();
        let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_shardgate"))
            .arg("serve")
            .arg("--config")
            .arg(&path)
            .env("RUST_LOG", "warn")
            .stderr(log_file(dir))
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let proxy = Proxy {
            child,
            base: format!("http://127.0.0.1:{}", ports[0]),
            admin: format!("http://127.0.0.1:{}", ports[1]),
        };
        let http = crate::common::http();
        for _ in 0..100 {
            if http.get(format!("{}/healthz", proxy.base)).send().await.is_ok() {
                return proxy;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("shardgate serve came up");
    }

    /// The migration `id` as the admin API shows it.
    pub async fn migration(&self, id: i64) -> Value {
        let url = format!("{}/admin/migrations/{id}", self.admin);
        Reply::read(crate::common::http().get(url).send().await.unwrap())
            .await
            .body
    }

    /// Waits until migration `id` satisfies `reached`; panics after a minute.
    pub async fn wait_for(&self, id: i64, what: &str, reached: impl Fn(&Value) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let shown = self.migration(id).await;
            if reached(&shown["migration"]) {
                return;
            }
            assert!(Instant::now() < deadline, "{what}: {shown}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Adds shard `name` at `url` through the admin API; returns the `202` answer's body.
    pub async fn add_shard(&self, name: &str, url: &str) -> Value {
        let body = json!({"name": name, "url": url});
        self.start_migration(reqwest::Method::POST, "/admin/shards", Some(body))
            .await
    }

    /// Drains shard `name` through the admin API; returns the `202` answer's body.
    pub async fn drain_shard(&self, name: &str) -> Value {
        let path = format!("/admin/shards/{name}");
        self.start_migration(reqwest::Method::DELETE, &path, None).await
    }

    async fn start_migration(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let mut request = crate::common::http()
            .request(method, format!("{}{path}", self.admin))
            .bearer_auth(TOKEN);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let started = Reply::read(request.send().await.unwrap()).await;
        assert_eq!(started.status, 202, "{}", started.body);
        started.body
    }

    /// `POST /admin/migrations/{id}/{action}` (pause, resume or cancel); the answer's body.
    pub async fn control(&self, id: i64, action: &str) -> Value {
        let url = format!("{}/admin/migrations/{id}/{action}", self.admin);
        let request = crate::common::http().post(url).bearer_auth(TOKEN);
        let answer = Reply::read(request.send().await.unwrap()).await;
        assert_eq!(answer.status, 200, "{}", answer.body);
        answer.body
    }

    /// The process's id.
    pub fn pid(&self) -> u32 {
        self.child.id().expect("the proxy runs until killed")
    }

    /// Sends `signal` to the process.
    pub fn signal(&self, signal: i32) {
        // SAFETY: signals the child this test started.
        unsafe { libc::kill(self.child.id().unwrap() as i32, signal) };
    }

    /// The routing epoch the proxy serves with.
    pub async fn epoch(&self) -> i64 {
        let url = format!("{}/readyz", self.admin);
        Reply::read(crate::common::http().get(url).send().await.unwrap())
            .await
            .body["epoch"]
            .as_i64()
            .unwrap()
    }

    /// Posts `rows` to `events`, retrying a 503 (a fence refusal) like a client would; returns
    /// how many 503s it took.
    pub async fn post_events_retrying(&self, rows: &Value) -> usize {
        let http = crate::common::http();
        for refusals in 0..50 {
            let response = http
                .post(format!("{}/v1/tables/events/rows", self.base))
                .json(rows)
                .send()
                .await
                .unwrap();
            let reply = Reply::read(response).await;
            match reply.status {
                200 => return refusals,
                503 => tokio::time::sleep(Duration::from_millis(100)).await,
                other => panic!("{other}: {}", reply.body),
            }
        }
        panic!("refused fifty times");
    }

    /// `kill -9`: no drain, no goodbye to the catalog or the shards.
    pub async fn kill(mut self) {
        self.child.start_kill().unwrap();
        self.child.wait().await.unwrap();
    }
}

/// The log of the proxies started in `dir`, appended to by each.
pub fn log_file(dir: &std::path::Path) -> std::fs::File {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("serve.log"))
        .unwrap()
}
