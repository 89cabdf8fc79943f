//! Users and grants on both front ends: who may write and read which table over HTTP (Basic
//! and Bearer) and over the Postgres listener (SCRAM), what a missing or wrong credential gets,
//! a password given as the verifier Postgres stores, and who may use the admin API.

use crate::common::{Reply, TestServer, base64_encode, count_on};
use serde_json::json;
use std::time::{Duration, Instant};
use tokio_postgres::NoTls;
use tokio_postgres::error::SqlState;

const WRITER: (&str, &str) = ("writer", "writer-password");
/// A user whose password is given as the verifier Postgres 15 stored for `CREATE ROLE ...
/// PASSWORD 'correct horse battery staple'`.
const READER: (&str, &str) = ("reader", "correct horse battery staple");
const READER_VERIFIER: &str = "SCRAM-SHA-256$4096:jJt/K7oEk9wcTo35AHpHbQ==$wOUiI6LFOTfNd2f1PJA96YTIiaMdZnIGKhUKiwKY9Iw=:Tw8h3+L+WDZYhfhru7tPJI9f+lM2v4ZfmXJ5m4KG1qc=";
const SERVICE_TOKEN: &str = "service-token-0123456789";
const OPERATOR: (&str, &str) = ("operator", "operator-password");
const ADMIN_TOKEN: &str = "admin-token-0123456789";

/// Four users: one writes `events` only, one reads it only (by verifier), a service with a
/// token writes and reads everything, and an operator may use the admin API.
fn users(extra: &str) -> String {
    format!(
        "[admin]\ntoken = \"{ADMIN_TOKEN}\"\n{extra}\n\
         [postgres]\nlisten = \"127.0.0.1:0\"\n\
         [[users]]\nname = \"{}\"\npassword = \"{}\"\nwrite = [\"events\"]\n\
         [[users]]\nname = \"{}\"\npassword = \"{READER_VERIFIER}\"\nread = [\"events\"]\n\
         [[users]]\nname = \"service\"\ntoken = \"{SERVICE_TOKEN}\"\nwrite = [\"*\"]\nread = [\"*\"]\n\
         [[users]]\nname = \"{}\"\npassword = \"{}\"\nadmin = true\n",
        WRITER.0, WRITER.1, READER.0, OPERATOR.0, OPERATOR.1
    )
}

fn basic((name, password): (&str, &str)) -> String {
    format!("Basic {}", base64_encode(format!("{name}:{password}").as_bytes()))
}

/// A POST of `body` to `path` with `authorization`, if any.
async fn post(gate: &TestServer, path: &str, authorization: Option<&str>, body: serde_json::Value) -> Reply {
    let mut request = crate::common::http().post(gate.url(path)).json(&body);
    if let Some(authorization) = authorization {
        request = request.header("authorization", authorization);
    }
    Reply::read(request.send().await.unwrap()).await
}

/// A GET of the admin listener's `path` with `authorization`, if any.
async fn admin_get(gate: &TestServer, path: &str, authorization: Option<&str>) -> u16 {
    let mut request = crate::common::http().get(gate.admin_url(path));
    if let Some(authorization) = authorization {
        request = request.header("authorization", authorization);
    }
    request.send().await.unwrap().status().as_u16()
}

fn events(n: usize) -> serde_json::Value {
    (0..n)
        .map(|i| json!({"event_id": uuid::Uuid::now_v7(), "tenant_id": format!("t{i}"), "event_type": "click"}))
        .collect()
}

async fn rows_on_shards(gate: &TestServer, table: &str) -> i64 {
    let mut total = 0;
    for url in &gate.shard_urls {
        total += count_on(url, table).await;
    }
    total
}

#[tokio::test]
async fn each_user_writes_and_reads_over_http_only_what_it_is_granted() {
    let gate = TestServer::start("access_http", &users("")).await;
    let rows = "/v1/tables/events/rows";
    let count = json!({"sql": "SELECT count(*) FROM events"});

    let missing = post(&gate, rows, None, events(3)).await;
    assert_eq!(missing.status, 401, "{}", missing.body);
    let challenges: Vec<_> = missing.headers.get_all("www-authenticate").iter().collect();
    assert!(
        challenges
            .iter()
            .any(|c| c.to_str().unwrap().starts_with("Basic "))
            && challenges
                .iter()
                .any(|c| c.to_str().unwrap().starts_with("Bearer ")),
        "{challenges:?}"
    );
    assert!(
        missing.body["error"]
            .as_str()
            .unwrap()
            .contains("needs credentials"),
        "{}",
        missing.body
    );

    let wrong = post(&gate, rows, Some(&basic((WRITER.0, "guess"))), events(3)).await;
    assert_eq!(wrong.status, 401, "{}", wrong.body);
    assert!(
        !wrong.body.to_string().contains("guess"),
        "the answer does not repeat the password"
    );
    let started = Instant::now();
    let again = post(&gate, rows, Some(&basic((WRITER.0, "guess2"))), events(3)).await;
    assert_eq!(again.status, 401);
    assert!(
        started.elapsed() >= Duration::from_millis(100),
        "a second failure from one address waits: {:?}",
        started.elapsed()
    );
    assert_eq!(
        rows_on_shards(&gate, "events").await,
        0,
        "nothing refused was stored"
    );

    let written = post(&gate, rows, Some(&basic(WRITER)), events(5)).await;
    assert_eq!(written.status, 200, "{}", written.body);
    let logs = post(
        &gate,
        "/v1/tables/logs/rows",
        Some(&basic(WRITER)),
        json!([{"source": "a", "line": "x"}]),
    )
    .await;
    assert_eq!(logs.status, 403, "{}", logs.body);
    assert_eq!(
        logs.body["error"],
        "user writer may not write table logs: it needs the table in its write grant"
    );
    assert_eq!(logs.body["details"], json!([{"table": "logs", "grant": "write"}]));
    let read = post(&gate, "/v1/query", Some(&basic(WRITER)), count.clone()).await;
    assert_eq!(read.status, 403, "{}", read.body);
    assert_eq!(
        read.body["error"],
        "user writer may not read table events: it needs the table in its read grant"
    );

    let counted = post(&gate, "/v1/query", Some(&basic(READER)), count.clone()).await;
    assert_eq!(
        counted.status, 200,
        "the verifier checks the password: {}",
        counted.body
    );
    assert_eq!(counted.body["rows"], json!([[5]]));
    let refused = post(&gate, rows, Some(&basic(READER)), events(2)).await;
    assert_eq!(refused.status, 403, "{}", refused.body);

    let bearer = format!("Bearer {SERVICE_TOKEN}");
    let by_token = post(
        &gate,
        "/v1/tables/logs/rows",
        Some(&bearer),
        json!([{"source": "a", "line": "x"}]),
    )
    .await;
    assert_eq!(by_token.status, 200, "{}", by_token.body);
    let wrong_token = post(&gate, rows, Some("Bearer service-token-012345678"), events(1)).await;
    assert_eq!(wrong_token.status, 401);
    let challenges: Vec<_> = wrong_token.headers.get_all("www-authenticate").iter().collect();
    assert_eq!(
        challenges,
        ["Bearer realm=\"shardgate\""],
        "a wrong token is not asked for a password (no browser login dialog)"
    );
    assert_eq!(rows_on_shards(&gate, "events").await, 5);
    assert_eq!(rows_on_shards(&gate, "logs").await, 1);

    let health = crate::common::http()
        .get(gate.url("/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200, "health answers without credentials");
    let metrics = metrics_page(&gate).await;
    assert!(
        metrics.contains("shardgate_auth_failures_total{listener=\"http\",reason=\"wrong\"} 3"),
        "two wrong passwords and a wrong token are counted, the request without any is not: {metrics}"
    );
    assert!(!metrics.contains("guess") && !metrics.contains(SERVICE_TOKEN));
}

/// The Prometheus page, read as the operator.
async fn metrics_page(gate: &TestServer) -> String {
    let request = crate::common::http()
        .get(gate.admin_url("/metrics"))
        .header("authorization", basic(OPERATOR));
    request.send().await.unwrap().text().await.unwrap()
}

#[tokio::test]
async fn the_admin_api_answers_the_admin_token_and_admin_users_and_the_status_page_may_be_public() {
    let gate = TestServer::start("access_admin", &users("")).await;
    for path in ["/", "/admin/shards", "/metrics", "/admin/dead-letters"] {
        assert_eq!(
            admin_get(&gate, path, None).await,
            401,
            "{path} without credentials"
        );
        assert_eq!(
            admin_get(&gate, path, Some(&basic(WRITER))).await,
            403,
            "{path} by a user"
        );
        assert_eq!(
            admin_get(&gate, path, Some(&basic(OPERATOR))).await,
            200,
            "{path} by the operator"
        );
        let token = format!("Bearer {ADMIN_TOKEN}");
        assert_eq!(
            admin_get(&gate, path, Some(&token)).await,
            200,
            "{path} by the admin token"
        );
    }
    assert_eq!(admin_get(&gate, "/healthz", None).await, 200);

    let public = TestServer::start("access_public", &users("public_status = true")).await;
    for path in ["/", "/admin/shards", "/admin/ring", "/admin/hot-keys", "/metrics"] {
        assert_eq!(admin_get(&public, path, None).await, 200, "{path} is public");
    }
    assert_eq!(
        admin_get(&public, "/admin/dead-letters", None).await,
        401,
        "rows stay behind credentials"
    );
}

/// The listener's URL for `name` and `password`.
fn postgres_url(gate: &TestServer, (name, password): (&str, &str)) -> String {
    let addr = gate.server.postgres_addr().expect("the listener is on");
    format!("postgres://{name}:{password}@{addr}/shardgate")
}

async fn log_in(
    gate: &TestServer,
    user: (&str, &str),
) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let (client, connection) = tokio_postgres::connect(&postgres_url(gate, user), NoTls).await?;
    tokio::spawn(connection);
    Ok(client)
}

#[tokio::test]
async fn the_postgres_listener_logs_in_the_same_users_and_refuses_what_they_are_not_granted() {
    let gate = TestServer::start("access_postgres", &users("")).await;
    let wrong = log_in(&gate, (READER.0, "correct horse")).await.err().unwrap();
    assert_eq!(wrong.code(), Some(&SqlState::INVALID_PASSWORD), "{wrong:?}");
    let started = Instant::now();
    let token_only = log_in(&gate, ("service", SERVICE_TOKEN)).await.err().unwrap();
    assert_eq!(
        token_only.code(),
        Some(&SqlState::INVALID_PASSWORD),
        "{token_only:?}"
    );
    assert!(
        started.elapsed() >= Duration::from_millis(100),
        "a second failed login from one address waits: {:?}",
        started.elapsed()
    );

    let metrics = metrics_page(&gate).await;
    assert!(
        metrics.contains("shardgate_auth_failures_total{listener=\"postgres\",reason=\"wrong\"} 2"),
        "{metrics}"
    );
    let writer = log_in(&gate, WRITER).await.expect("the writer logs in");
    writer
        .simple_query("INSERT INTO events (tenant_id, event_type) VALUES ('a', 'click'), ('b', 'view')")
        .await
        .expect("the writer inserts into events");
    let denied = writer
        .simple_query("SELECT count(*) FROM events")
        .await
        .unwrap_err();
    let denied = denied.as_db_error().expect("an ErrorResponse");
    assert_eq!(denied.code(), &SqlState::INSUFFICIENT_PRIVILEGE);
    assert_eq!(denied.message(), "permission denied for table events");
    assert!(
        denied.detail().unwrap().contains("user writer has no read grant"),
        "{denied:?}"
    );
    let into_logs = writer
        .simple_query("INSERT INTO logs (source, line) VALUES ('a', 'x')")
        .await
        .unwrap_err();
    assert_eq!(into_logs.code(), Some(&SqlState::INSUFFICIENT_PRIVILEGE));
    let tables = writer
        .query("SELECT relname::text FROM pg_class WHERE relname = 'events'", &[])
        .await
        .expect("catalogs answer every user");
    assert_eq!(tables.len(), 1);

    let reader = log_in(&gate, READER)
        .await
        .expect("the verifier's password logs in");
    let counted = reader
        .query_one("SELECT count(*) FROM events", &[])
        .await
        .unwrap();
    assert_eq!(counted.get::<_, i64>(0), 2);
    let insert = reader
        .execute(
            "INSERT INTO events (tenant_id, event_type) VALUES ($1, $2)",
            &[&"c", &"click"],
        )
        .await
        .unwrap_err();
    assert_eq!(
        insert.code(),
        Some(&SqlState::INSUFFICIENT_PRIVILEGE),
        "{insert:?}"
    );
    assert_eq!(rows_on_shards(&gate, "events").await, 2, "only the writer's rows");
    assert_eq!(rows_on_shards(&gate, "logs").await, 0);

    let psql = |sql: &'static str| {
        tokio::process::Command::new("psql")
            .arg(postgres_url(&gate, READER))
            .args(["-X", "-A", "-t", "-c", sql])
            .stdin(std::process::Stdio::null())
            .output()
    };
    let counted = psql("SELECT count(*) FROM events").await.expect("psql runs");
    assert_eq!(
        String::from_utf8_lossy(&counted.stdout).trim(),
        "2",
        "{counted:?}"
    );
    // A COPY is refused when it starts, as Postgres refuses it (over the simple protocol:
    // tokio-postgres's copy_in loses its session when a COPY is refused at Execute, with
    // Postgres as with shardgate).
    let copy = psql("COPY events (tenant_id, event_type) FROM STDIN")
        .await
        .expect("psql runs");
    assert!(
        String::from_utf8_lossy(&copy.stderr).contains("ERROR:  permission denied for table events"),
        "{copy:?}"
    );
    assert_eq!(rows_on_shards(&gate, "events").await, 2, "only the writer's rows");
}
