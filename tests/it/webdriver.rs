//! A small WebDriver client for the browser tests: Debian's chromedriver driving headless
//! Chromium, spoken to over HTTP with the W3C WebDriver protocol.

use serde_json::{Value, json};
use std::process::Stdio;
use std::time::{Duration, Instant};

/// The key under which WebDriver names an element.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// A running chromedriver and one browser session of it.
pub struct Browser {
    driver: tokio::process::Child,
    http: reqwest::Client,
    session: String,
    base: String,
    profile: std::path::PathBuf,
}

impl Browser {
    /// Starts chromedriver (installed by `.ci/run`) and a headless Chromium session.
    pub async fn start() -> Browser {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        // In a process group of its own, which the browsers it starts join, so that all of
        // them are stopped together when the test ends, even by a failed assertion.
        let driver = tokio::process::Command::new("/usr/bin/chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .expect("the browser test needs Debian's chromium-driver package (.ci/run installs it)");
        let http = crate::common::http();
        let base = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(20);
        while http.get(format!("{base}/status")).send().await.is_err() {
            assert!(Instant::now() < deadline, "chromedriver did not start");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let profile = std::env::temp_dir().join(format!("shardgate-webdriver-{}-{port}", std::process::id()));
        let capabilities = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:loggingPrefs": {"browser": "ALL"},
            "goog:chromeOptions": {
                "binary": "/usr/bin/chromium",
                "args": ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                         "--window-size=1200,800", format!("--user-data-dir={}", profile.display())],
            },
        }}});
        let created = call(
            &http,
            reqwest::Method::POST,
            &format!("{base}/session"),
            Some(capabilities),
        )
        .await;
        let session = created["sessionId"].as_str().expect("a session id").to_string();
        Browser {
            driver,
            http,
            session,
            base,
            profile,
        }
    }

    async fn command(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let url = format!("{}/session/{}{path}", self.base, self.session);
        call(&self.http, method, &url, body).await
    }

    /// Opens `url`.
    pub async fn open(&self, url: &str) {
        self.command(reqwest::Method::POST, "/url", Some(json!({"url": url})))
            .await;
    }

    /// Runs `script` in the page and returns what it returns.
    pub async fn eval(&self, script: &str) -> Value {
        let body = json!({"script": script, "args": []});
        self.command(reqwest::Method::POST, "/execute/sync", Some(body))
            .await
    }

    /// Waits until `script` returns true in the page; panics with `what` after 20 s.
    pub async fn wait_until(&self, script: &str, what: &str) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.eval(script).await != json!(true) {
            assert!(Instant::now() < deadline, "{what}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until the page has an element `selector` finds; panics with `what` after 20 s.
    pub async fn wait_for_element(&self, selector: &str, what: &str) {
        let script = format!("return document.querySelector({}) !== null", json!(selector));
        self.wait_until(&script, what).await;
    }

    /// Empties the input `selector` finds.
    pub async fn clear(&self, selector: &str) {
        let element = self.element(selector).await;
        self.command(
            reqwest::Method::POST,
            &format!("/element/{element}/clear"),
            Some(json!({})),
        )
        .await;
    }

    /// The element `selector` finds.
    async fn element(&self, selector: &str) -> String {
        let found = self
            .command(
                reqwest::Method::POST,
                "/element",
                Some(json!({"using": "css selector", "value": selector})),
            )
            .await;
        found[ELEMENT]
            .as_str()
            .unwrap_or_else(|| panic!("no element {selector}: {found}"))
            .to_string()
    }

    /// Clicks the element `selector` finds, finding it again when the page replaced it between
    /// the two calls.
    pub async fn click(&self, selector: &str) {
        for _ in 0..5 {
            let element = self.element(selector).await;
            let url = format!("{}/session/{}/element/{element}/click", self.base, self.session);
            let response = self
                .http
                .post(&url)
                .json(&json!({}))
                .send()
                .await
                .expect("chromedriver answers");
            if response.status().is_success() {
                return;
            }
            let answer: Value = response.json().await.expect("chromedriver answers JSON");
            assert_eq!(
                answer["value"]["error"], "stale element reference",
                "click {selector}: {answer}"
            );
        }
        panic!("{selector} was replaced five times before it could be clicked");
    }

    /// Types `text` into the element `selector` finds.
    pub async fn type_into(&self, selector: &str, text: &str) {
        let element = self.element(selector).await;
        let body = json!({"text": text});
        self.command(
            reqwest::Method::POST,
            &format!("/element/{element}/value"),
            Some(body),
        )
        .await;
    }

    /// The console messages logged at the level `SEVERE` (script errors among them).
    pub async fn console_errors(&self) -> Vec<String> {
        let log = self
            .command(reqwest::Method::POST, "/se/log", Some(json!({"type": "browser"})))
            .await;
        log.as_array()
            .into_iter()
            .flatten()
            .filter(|entry| entry["level"] == "SEVERE")
            .map(|entry| entry["message"].to_string())
            .collect()
    }

    /// Ends the session, then the driver (see [`Drop`]).
    pub async fn close(self) {
        self.command(reqwest::Method::DELETE, "", None).await;
    }
}

impl Drop for Browser {
    /// Stops chromedriver and every browser it started (its process group) and removes the
    /// browser's profile.
    fn drop(&mut self) {
        if let Some(pid) = self.driver.id() {
            // SAFETY: sends a signal to the process group this test started; no memory is shared.
            unsafe { libc::kill(-(pid as i32), libc::SIGKILL) };
        }
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}

/// One WebDriver call; its `value`, or a panic naming the error it answered.
async fn call(http: &reqwest::Client, method: reqwest::Method, url: &str, body: Option<Value>) -> Value {
    let mut request = http.request(method, url);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.expect("chromedriver answers");
    let status = response.status();
    let answer: Value = response.json().await.expect("chromedriver answers JSON");
    assert!(status.is_success(), "WebDriver {url}: {status} {answer}");
    answer["value"].clone()
}
