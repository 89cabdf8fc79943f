//! The Postgres listener with the clients users have: psql's `\copy`, tokio-postgres (simple
//! and extended protocol) and psycopg. Rows land on the owners of their positions, refusals
//! carry Postgres's SQLSTATEs, and a session stays usable after any of them.

use crate::common::{TestServer, count_on, placement};
use tokio::process::Command;
use tokio_postgres::error::SqlState;
use tokio_postgres::{Client, NoTls, SimpleQueryMessage};

pub const USER: &str = "app";
pub const PASSWORD: &str = "app-secret-1";

/// Queues of 2,000 rows and 1 MiB and batches of half that, which a COPY of 100,000 rows
/// fills many times over.
const SMALL_QUEUES: &str =
    "[queue]\nmax_rows = 2000\nmax_bytes = \"1MiB\"\n[batch]\nmax_rows = 1000\nmax_bytes = \"512KiB\"\n";

/// The listener on an ephemeral port with one user, who may write, read and administer
/// everything, plus `extra` TOML.
pub fn listener(extra: &str) -> String {
    format!(
        "[postgres]\nlisten = \"127.0.0.1:0\"\n{extra}\n[[users]]\nname = \"{USER}\"\npassword = \"{PASSWORD}\"\nwrite = [\"*\"]\nread = [\"*\"]\nadmin = true\n"
    )
}

/// The listener's URL with `password`.
pub fn url(gate: &TestServer, password: &str) -> String {
    let addr = gate.server.postgres_addr().expect("the listener is on");
    format!("postgres://{USER}:{password}@{addr}/shardgate")
}

/// A tokio-postgres session with the listener as its user.
pub async fn connect(gate: &TestServer) -> Client {
    let (client, connection) = tokio_postgres::connect(&url(gate, PASSWORD), NoTls)
        .await
        .expect("log in with the configured password");
    tokio::spawn(connection);
    client
}

/// The one value the simple query `sql` answers.
pub async fn one_value(client: &Client, sql: &str) -> String {
    let messages = client.simple_query(sql).await.unwrap();
    messages
        .iter()
        .find_map(|message| match message {
            SimpleQueryMessage::Row(row) => row.get(0).map(str::to_string),
            _ => None,
        })
        .unwrap_or_else(|| panic!("{sql} answered no row"))
}

/// Runs `script` with the system's Python and its psycopg 3 (`.ci/run` installs
/// `python3-psycopg`), checks it succeeded and returns what it printed.
pub async fn psycopg(script: &str) -> String {
    let output = Command::new("/usr/bin/python3")
        .args(["-c", script])
        .output()
        .await
        .expect("python3 with psycopg runs");
    printed(output)
}

/// Runs psql against the listener of `gate` as its user, with `-X -v ON_ERROR_STOP=1` and
/// then `args`; checks it succeeded and returns what it printed.
pub async fn psql(gate: &TestServer, args: &[&str]) -> String {
    let output = Command::new("psql")
        .arg(url(gate, PASSWORD))
        .args(["-X", "-v", "ON_ERROR_STOP=1"])
        .args(args)
        .output()
        .await
        .expect("psql runs");
    printed(output)
}

/// Runs `program`, one of `tests/clients`' Java files, with Debian's pgjdbc against the
/// listener of `gate` as its user; checks it succeeded and returns what it printed. `.ci/run`
/// installs a JDK and pgjdbc (`default-jdk-headless`, `libpostgresql-jdbc-java`).
pub async fn java(gate: &TestServer, program: &str) -> String {
    let addr = gate.server.postgres_addr().expect("the listener is on");
    let program = format!("{}/tests/clients/{program}", env!("CARGO_MANIFEST_DIR"));
    let output = Command::new("java")
        .args(["-cp", "/usr/share/java/postgresql.jar", &program])
        .arg(format!("jdbc:postgresql://{addr}/shardgate"))
        .args([USER, PASSWORD])
        .output()
        .await
        .expect("java runs");
    printed(output)
}

/// What a client program that must have succeeded printed; its stderr when it failed.
fn printed(output: std::process::Output) -> String {
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Runs `sql`, a `COPY ... FROM STDIN`, sending `data` in one message: the rows copied, or
/// the error the COPY ended with.
async fn copy_all(
    client: &Client,
    sql: &str,
    data: impl Into<bytes::Bytes>,
) -> Result<u64, tokio_postgres::Error> {
    use futures_util::SinkExt;
    let sink = client.copy_in(sql).await?;
    futures_util::pin_mut!(sink);
    sink.send(data.into()).await?;
    sink.finish().await
}

/// `n` rows of `logs` as COPY text, each line unique.
fn logs_text(prefix: &str, n: usize) -> String {
    (0..n)
        .map(|i| format!("src-{}\t{prefix}-{i}\n", i % 13))
        .collect()
}

#[tokio::test]
async fn a_driver_logs_in_by_scram_and_is_answered_what_pools_ask_first() {
    let gate = TestServer::start("pg_session", &listener("")).await;
    let client = connect(&gate).await;
    assert_eq!(one_value(&client, "SELECT 1").await, "1");
    assert!(
        one_value(&client, "SELECT version()")
            .await
            .starts_with("PostgreSQL 15.0 (shardgate ")
    );
    assert_eq!(
        one_value(&client, "SHOW server_version").await,
        format!("15.0 (shardgate {})", env!("CARGO_PKG_VERSION"))
    );
    client
        .batch_execute("SET application_name = 'loader'; BEGIN; COMMIT")
        .await
        .unwrap();
    assert_eq!(one_value(&client, "SHOW application_name").await, "loader");
    client.batch_execute("RESET ALL; DISCARD ALL").await.unwrap();
    let reset = client.simple_query("SHOW application_name").await.unwrap_err();
    assert_eq!(reset.code(), Some(&SqlState::UNDEFINED_OBJECT));

    let update = client.simple_query("UPDATE events SET n = 1").await.unwrap_err();
    assert_eq!(update.code(), Some(&SqlState::FEATURE_NOT_SUPPORTED));
    assert_eq!(
        update.as_db_error().unwrap().message(),
        "UPDATE is not supported by shardgate"
    );
    let join = client
        .query("SELECT * FROM events e JOIN logs l ON true", &[])
        .await
        .unwrap_err();
    assert_eq!(join.code(), Some(&SqlState::FEATURE_NOT_SUPPORTED));
    let prepared = client.prepare("SELECT 1").await.unwrap();
    let row = client.query_one(&prepared, &[]).await.unwrap();
    assert_eq!(
        row.get::<_, i32>(0),
        1,
        "the session is usable after an error, and over the extended protocol"
    );

    let wrong = tokio_postgres::connect(&url(&gate, "not-the-password"), NoTls)
        .await
        .err()
        .expect("refused");
    assert_eq!(wrong.code(), Some(&SqlState::INVALID_PASSWORD));
    gate.stop().await;
}

#[tokio::test]
async fn a_block_that_fails_refuses_statements_until_rollback() {
    let gate = TestServer::start("pg_block", &listener("")).await;
    let client = connect(&gate).await;
    client.batch_execute("BEGIN").await.unwrap();
    assert!(client.batch_execute("DELETE FROM events").await.is_err());
    let ignored = client.simple_query("SELECT 1").await.unwrap_err();
    assert_eq!(ignored.code(), Some(&SqlState::IN_FAILED_SQL_TRANSACTION));
    client.batch_execute("ROLLBACK").await.unwrap();
    assert_eq!(one_value(&client, "SELECT 1").await, "1");
    gate.stop().await;
}

#[tokio::test]
async fn copy_text_through_tokio_postgres_lands_every_row_on_its_owner_once() {
    let gate = TestServer::start("pg_copy", &listener("")).await;
    let client = connect(&gate).await;
    let sink = client
        .copy_in("COPY logs (source, line) FROM STDIN")
        .await
        .unwrap();
    futures_util::pin_mut!(sink);
    use futures_util::SinkExt;
    let text = logs_text("l", 5000);
    for piece in text.as_bytes().chunks(7919) {
        sink.send(bytes::Bytes::copy_from_slice(piece)).await.unwrap();
    }
    assert_eq!(sink.finish().await.unwrap(), 5000);
    let placed = placement(
        &gate.shard_urls,
        &["s0", "s1"],
        &[("s0", 1), ("s1", 1)],
        "SELECT line, _sg_hash FROM logs",
    )
    .await;
    assert_eq!(placed.len(), 5000, "every row once, on the owner of its position");
    assert!(
        count_on(&gate.shard_urls[0], "logs").await > 0 && count_on(&gate.shard_urls[1], "logs").await > 0
    );
    gate.stop().await;
}

#[tokio::test]
async fn a_bad_row_ends_the_copy_with_postgres_sqlstate_line_and_column() {
    let gate = TestServer::start("pg_copy_bad", &listener("")).await;
    let client = connect(&gate).await;
    let data = "t1\tclick\t2026-05-01 12:00:00+02\nt2\tview\tyesterday\n";
    let copied = copy_all(
        &client,
        "COPY events (tenant_id, event_type, ts) FROM STDIN",
        data,
    )
    .await;
    let error = copied.unwrap_err();
    let db = error.as_db_error().expect("an ErrorResponse");
    assert_eq!(db.code(), &SqlState::INVALID_DATETIME_FORMAT);
    assert_eq!(
        db.message(),
        "invalid input syntax for type timestamp with time zone: \"yesterday\""
    );
    assert_eq!(db.where_(), Some("COPY events, line 2, column ts"));
    assert_eq!(
        db.detail(),
        Some(
            "0 rows before it were committed; sending the same data again is safe: rows whose id is stored already are skipped."
        )
    );
    assert_eq!(
        gate.total("events").await,
        0,
        "nothing of the refused chunk is stored"
    );

    let missing = client.simple_query("COPY nope FROM STDIN").await.unwrap_err();
    assert_eq!(missing.code(), Some(&SqlState::UNDEFINED_TABLE));
    let column = client
        .simple_query("COPY events (bogus) FROM STDIN")
        .await
        .unwrap_err();
    assert_eq!(column.code(), Some(&SqlState::UNDEFINED_COLUMN));
    assert_eq!(one_value(&client, "SELECT 1").await, "1");
    gate.stop().await;
}

#[tokio::test]
async fn psql_copies_a_csv_file_with_a_header_and_reports_the_count() {
    let gate = TestServer::start("pg_psql", &listener("")).await;
    let dir = std::env::temp_dir().join(format!("shardgate-psql-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("events.csv");
    let mut csv = String::from("tenant_id,event_type,payload\n");
    for i in 0..3000 {
        csv.push_str(&format!(
            "t{},\"click, \"\"double\"\"\",\"{{\"\"i\"\": {i}}}\"\n",
            i % 17
        ));
    }
    std::fs::write(&file, csv).unwrap();
    let copy = format!(
        "\\copy events (tenant_id, event_type, payload) from '{}' with (format csv, header)",
        file.display()
    );
    assert_eq!(psql(&gate, &["-c", &copy]).await.trim(), "COPY 3000");
    let placed = placement(
        &gate.shard_urls,
        &["s0", "s1"],
        &[("s0", 1), ("s1", 1)],
        "SELECT event_id::text, _sg_hash FROM events",
    )
    .await;
    assert_eq!(placed.len(), 3000);
    let kept: String = crate::common::connect(&gate.shard_urls[0])
        .await
        .query_one("SELECT event_type FROM events LIMIT 1", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(kept, "click, \"double\"");
    let _ = std::fs::remove_dir_all(dir);
    gate.stop().await;
}

#[tokio::test]
async fn a_copy_larger_than_the_queues_waits_for_room_instead_of_failing() {
    let extra = SMALL_QUEUES;
    let gate = TestServer::start("pg_copy_big", &format!("{extra}{}", listener(""))).await;
    let client = connect(&gate).await;
    let sink = client.copy_in("COPY logs FROM STDIN").await.unwrap();
    futures_util::pin_mut!(sink);
    use futures_util::SinkExt;
    for part in 0..20 {
        sink.send(bytes::Bytes::from(logs_text(&format!("p{part}"), 5000)))
            .await
            .unwrap();
    }
    assert_eq!(sink.finish().await.unwrap(), 100_000);
    assert_eq!(gate.total("logs").await, 100_000);
    let page = gate.metrics_page().await;
    assert_eq!(
        crate::common::total_of(&page, "shardgate_requests_rejected_total"),
        0.0,
        "no chunk was refused as full"
    );
    gate.stop().await;
}

#[tokio::test]
async fn sessions_past_the_cap_are_refused_with_53300() {
    let gate = TestServer::start("pg_cap", &listener("max_sessions = 1\n")).await;
    let first = connect(&gate).await;
    let second = tokio_postgres::connect(&url(&gate, PASSWORD), NoTls)
        .await
        .err()
        .expect("refused");
    assert_eq!(second.code(), Some(&SqlState::TOO_MANY_CONNECTIONS));
    assert_eq!(one_value(&first, "SELECT 1").await, "1");
    gate.stop().await;
}

#[tokio::test]
async fn psycopg_copies_rows_in_autocommit() {
    let gate = TestServer::start("pg_psycopg", &listener("")).await;
    let script = format!(
        "import psycopg\n\
         with psycopg.connect({url:?}, autocommit=True) as conn:\n\
         \x20   with conn.cursor() as cur:\n\
         \x20       with cur.copy('COPY logs (source, line) FROM STDIN') as copy:\n\
         \x20           for i in range(1200):\n\
         \x20               copy.write_row((f'src-{{i % 5}}', f'py-{{i}}'))\n\
         \x20       print(cur.rowcount)\n",
        url = url(&gate, PASSWORD)
    );
    let printed = psycopg(&script).await;
    assert_eq!(printed.trim(), "1200");
    assert_eq!(gate.total("logs").await, 1200);
    gate.stop().await;
}

#[tokio::test]
async fn psql_connects_over_verified_tls_when_a_certificate_is_configured() {
    let certificates = shardgate::devcluster::DevCertificates::generate().unwrap();
    let dir = std::env::temp_dir().join(format!("shardgate-pg-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for (name, pem) in [
        ("ca.pem", &certificates.ca_pem),
        ("server.pem", &certificates.server_pem),
        ("server.key", &certificates.server_key_pem),
    ] {
        std::fs::write(dir.join(name), pem).unwrap();
    }
    let tls = format!(
        "tls_cert = \"{}\"\ntls_key = \"{}\"\n",
        dir.join("server.pem").display(),
        dir.join("server.key").display()
    );
    let gate = TestServer::start("pg_tls", &listener(&tls)).await;
    let verified = format!(
        "{}?sslmode=verify-full&sslrootcert={}",
        url(&gate, PASSWORD),
        dir.join("ca.pem").display()
    );
    let output = Command::new("psql")
        .args([verified.as_str(), "-X", "-c", "\\conninfo", "-c", "SELECT 1"])
        .output()
        .await
        .expect("psql runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("SSL connection (protocol: TLSv1.3"), "{stdout}");
    gate.stop().await;

    let plain = TestServer::start("pg_no_tls", &listener("")).await;
    let required = format!("{}?sslmode=require", url(&plain, PASSWORD));
    let output = Command::new("psql")
        .args([required.as_str(), "-X", "-c", "SELECT 1"])
        .output()
        .await
        .expect("psql runs");
    assert!(!output.status.success());
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("server does not support SSL, but SSL was required"),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    plain.stop().await;
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn a_silent_session_is_closed_after_the_idle_timeout_and_a_busy_one_is_not() {
    let gate = TestServer::start("pg_idle", &listener("idle_timeout = \"1s\"\n")).await;
    let busy = connect(&gate).await;
    let (silent, ended) = connect_watching(&gate).await;
    let started = std::time::Instant::now();
    while !silent.is_closed() {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(10),
            "the silent session is closed"
        );
        assert_eq!(
            one_value(&busy, "SELECT 1").await,
            "1",
            "a session that sends stays open"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    assert!(
        started.elapsed() >= std::time::Duration::from_millis(900),
        "closed after {:?}",
        started.elapsed()
    );
    let told = ended.await.unwrap().unwrap_err();
    let told = told.as_db_error().expect("a FATAL ErrorResponse");
    assert_eq!(
        (told.code().code(), told.message()),
        ("57P05", "terminating connection due to idle-session timeout")
    );
    assert_eq!(one_value(&busy, "SELECT 1").await, "1");

    gate.stop().await;
}

/// A session and the task driving its connection, which answers how the connection ended.
async fn connect_watching(
    gate: &TestServer,
) -> (Client, tokio::task::JoinHandle<Result<(), tokio_postgres::Error>>) {
    let (client, connection) = tokio_postgres::connect(&url(gate, PASSWORD), NoTls)
        .await
        .expect("log in with the configured password");
    (client, tokio::spawn(connection))
}

#[tokio::test]
async fn shutdown_ends_an_idle_session_with_57p01() {
    let gate = TestServer::start("pg_shutdown", &listener("")).await;
    let (client, ended) = connect_watching(&gate).await;
    assert_eq!(one_value(&client, "SELECT 1").await, "1");
    gate.stop().await;
    let told = ended.await.unwrap().unwrap_err();
    let told = told.as_db_error().expect("a FATAL ErrorResponse");
    assert_eq!(
        (told.code(), told.message()),
        (
            &SqlState::ADMIN_SHUTDOWN,
            "terminating connection due to administrator command"
        )
    );
}

#[tokio::test]
async fn binary_copy_from_tokio_postgres_stores_the_values_as_sent_and_refuses_a_wrong_type() {
    use futures_util::pin_mut;
    use tokio_postgres::binary_copy::BinaryCopyInWriter;
    use tokio_postgres::types::{ToSql, Type};
    let gate = TestServer::start("pg_binary", &listener("")).await;
    let client = connect(&gate).await;
    let sink = client
        .copy_in(
            "COPY events (event_id, tenant_id, event_type, n, ts, payload, score) FROM STDIN (FORMAT binary)",
        )
        .await
        .unwrap();
    let types = [
        Type::UUID,
        Type::TEXT,
        Type::TEXT,
        Type::INT8,
        Type::TIMESTAMPTZ,
        Type::JSONB,
        Type::FLOAT8,
    ];
    let writer = BinaryCopyInWriter::new(sink, &types);
    pin_mut!(writer);
    let at = chrono::DateTime::parse_from_rfc3339("2026-05-01T10:00:00Z")
        .unwrap()
        .with_timezone(&chrono::Utc);
    for i in 0..2000i64 {
        let id = uuid::Uuid::now_v7();
        let (tenant, payload) = (format!("t{}", i % 9), serde_json::json!({"i": i}));
        let score = (i % 2 == 0).then_some(i as f64 / 2.0);
        let row: [&(dyn ToSql + Sync); 7] = [&id, &tenant, &"click", &i, &at, &payload, &score];
        writer.as_mut().write(&row).await.unwrap();
    }
    assert_eq!(writer.finish().await.unwrap(), 2000);
    let placed = placement(
        &gate.shard_urls,
        &["s0", "s1"],
        &[("s0", 1), ("s1", 1)],
        "SELECT event_id::text, _sg_hash FROM events",
    )
    .await;
    assert_eq!(placed.len(), 2000);
    let mut found = Vec::new();
    for url in &gate.shard_urls {
        let shard = crate::common::connect(url).await;
        let rows = shard
            .query("SELECT n, ts, payload, score FROM events WHERE n IN (6, 7)", &[])
            .await
            .unwrap();
        for row in rows {
            let n: i64 = row.get(0);
            let ts: chrono::DateTime<chrono::Utc> = row.get(1);
            let payload: serde_json::Value = row.get(2);
            let score: Option<f64> = row.get(3);
            found.push((n, ts, payload, score));
        }
    }
    found.sort_by_key(|row| row.0);
    assert_eq!(
        found,
        vec![
            (6, at, serde_json::json!({"i": 6}), Some(3.0)),
            (7, at, serde_json::json!({"i": 7}), None)
        ]
    );

    let sink = client
        .copy_in("COPY events (tenant_id, event_type, n) FROM STDIN (FORMAT binary)")
        .await
        .unwrap();
    let writer = BinaryCopyInWriter::new(sink, &[Type::TEXT, Type::TEXT, Type::INT4]);
    pin_mut!(writer);
    writer.as_mut().write(&[&"t", &"click", &5i32]).await.unwrap();
    let error = writer.finish().await.unwrap_err();
    let db = error.as_db_error().expect("an ErrorResponse");
    assert_eq!(
        (db.code(), db.message(), db.where_()),
        (
            &SqlState::INVALID_BINARY_REPRESENTATION,
            "incorrect binary data format",
            Some("COPY events, line 1, column n")
        )
    );
    assert_eq!(gate.total("events").await, 2000);
    gate.stop().await;
}

#[tokio::test]
async fn inserts_of_literals_and_prepared_parameters_land_on_their_owners_once() {
    let gate = TestServer::start("pg_insert", &listener("")).await;
    let client = connect(&gate).await;
    let literal = "INSERT INTO events (tenant_id, event_type, n, ts, payload) VALUES \
                   ('t1', 'click', 5, '2026-05-01 12:00:00+02'::timestamptz, '{\"a\": 1}'), ('t2', 'view', -3, DEFAULT, NULL)";
    assert_eq!(client.execute(literal, &[]).await.unwrap(), 2);
    client
        .batch_execute("INSERT INTO logs VALUES ('src', 'simple protocol')")
        .await
        .unwrap();

    let statement = client
        .prepare("INSERT INTO events (event_id, tenant_id, event_type, n, score) VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING")
        .await
        .unwrap();
    use tokio_postgres::types::Type;
    assert_eq!(
        statement.params(),
        &[Type::UUID, Type::TEXT, Type::TEXT, Type::INT8, Type::FLOAT8]
    );
    let ids: Vec<uuid::Uuid> = (0..100).map(|_| uuid::Uuid::now_v7()).collect();
    for (i, id) in ids.iter().enumerate() {
        let n = i as i64;
        let score = (i % 2 == 0).then_some(0.5);
        let inserted = client
            .execute(&statement, &[id, &format!("t{}", i % 7), &"buy", &n, &score])
            .await
            .unwrap();
        assert_eq!(inserted, 1);
    }
    client
        .execute(&statement, &[&ids[0], &"t0", &"buy", &0i64, &None::<f64>])
        .await
        .unwrap();
    let placed = placement(
        &gate.shard_urls,
        &["s0", "s1"],
        &[("s0", 1), ("s1", 1)],
        "SELECT event_id::text, _sg_hash FROM events",
    )
    .await;
    assert_eq!(placed.len(), 102, "every row once, a retried id stored once");
    let mut stored = Vec::new();
    for url in &gate.shard_urls {
        let shard = crate::common::connect(url).await;
        for row in shard
            .query(
                "SELECT ts, payload FROM events WHERE n = 5 AND tenant_id = 't1'",
                &[],
            )
            .await
            .unwrap()
        {
            stored.push((
                row.get::<_, chrono::DateTime<chrono::Utc>>(0).to_rfc3339(),
                row.get::<_, serde_json::Value>(1),
            ));
        }
    }
    assert_eq!(
        stored,
        vec![(
            "2026-05-01T10:00:00+00:00".to_string(),
            serde_json::json!({"a": 1})
        )]
    );
    assert_eq!(gate.total("logs").await, 1);

    let refusals = [
        (
            "INSERT INTO events (tenant_id, event_type, nope) VALUES ('a', 'b', 1)",
            SqlState::UNDEFINED_COLUMN,
            "column \"nope\" of relation \"events\" does not exist",
        ),
        (
            "INSERT INTO events (tenant_id, event_type, n) VALUES ('a', 'b', 'x')",
            SqlState::INVALID_TEXT_REPRESENTATION,
            "invalid input syntax for type bigint: \"x\"",
        ),
        (
            "INSERT INTO events (tenant_id, event_type) VALUES (NULL, 'b')",
            SqlState::NOT_NULL_VIOLATION,
            "null value in column \"tenant_id\" of relation \"events\" violates not-null constraint",
        ),
        (
            "INSERT INTO events (tenant_id, event_type) VALUES ('a', 'b') ON CONFLICT (event_id) DO UPDATE SET n = 1",
            SqlState::FEATURE_NOT_SUPPORTED,
            "INSERT ... ON CONFLICT DO UPDATE is not supported by shardgate",
        ),
        (
            "INSERT INTO nope VALUES (1)",
            SqlState::UNDEFINED_TABLE,
            "relation \"nope\" does not exist",
        ),
    ];
    for (sql, code, message) in refusals {
        let error = client.simple_query(sql).await.unwrap_err();
        let db = error.as_db_error().unwrap_or_else(|| panic!("{sql}: {error}"));
        assert_eq!((db.code(), db.message()), (&code, message), "{sql}");
    }
    assert_eq!(gate.total("events").await, 102, "no refused row is stored");
    gate.stop().await;
}

#[tokio::test]
async fn a_block_holds_its_inserts_until_commit_and_rollback_discards_them() {
    let gate = TestServer::start("pg_insert_block", &listener("")).await;
    let client = connect(&gate).await;
    client.batch_execute("BEGIN; INSERT INTO logs VALUES ('a', 'one'), ('b', 'two'); INSERT INTO logs VALUES ('c', 'three')").await.unwrap();
    assert_eq!(gate.total("logs").await, 0, "held in the session until COMMIT");
    client.batch_execute("COMMIT").await.unwrap();
    assert_eq!(gate.total("logs").await, 3);
    client
        .batch_execute("BEGIN; INSERT INTO logs VALUES ('d', 'four'); ROLLBACK")
        .await
        .unwrap();
    client
        .batch_execute("BEGIN; INSERT INTO logs VALUES ('e', 'five')")
        .await
        .unwrap();
    assert!(
        client
            .batch_execute("INSERT INTO logs (nope) VALUES (1)")
            .await
            .is_err()
    );
    let commit = client.simple_query("COMMIT").await.unwrap();
    assert!(matches!(
        commit.last(),
        Some(SimpleQueryMessage::CommandComplete(0))
    ));
    assert_eq!(
        gate.total("logs").await,
        3,
        "a rolled-back or failed block stores nothing"
    );

    let script = format!(
        "import psycopg\n\
         with psycopg.connect({url:?}) as conn:\n\
         \x20   with conn.cursor() as cur:\n\
         \x20       cur.executemany('INSERT INTO logs (source, line) VALUES (%s, %s)', [(f'py-{{i % 3}}', f'row {{i}}') for i in range(50)])\n\
         \x20   conn.commit()\n",
        url = url(&gate, PASSWORD)
    );
    psycopg(&script).await;
    assert_eq!(
        gate.total("logs").await,
        53,
        "psycopg's executemany in its implicit block, committed"
    );
    gate.stop().await;
}

#[tokio::test]
async fn a_copy_in_a_block_larger_than_memory_and_the_queues_is_written_at_commit() {
    let extra = SMALL_QUEUES;
    let gate = TestServer::start("pg_copy_block", &format!("{extra}{}", listener(""))).await;
    let client = connect(&gate).await;
    client.batch_execute("BEGIN").await.unwrap();
    let sink = client.copy_in("COPY logs FROM STDIN").await.unwrap();
    futures_util::pin_mut!(sink);
    use futures_util::SinkExt;
    let padding = "x".repeat(40);
    for part in 0..20 {
        let text = logs_text(&format!("{padding}-p{part}"), 5000);
        sink.send(bytes::Bytes::from(text)).await.unwrap();
    }
    assert_eq!(sink.finish().await.unwrap(), 100_000);
    let inserted = client
        .execute("INSERT INTO logs VALUES ($1, $2)", &[&"after", &"the copy"])
        .await
        .unwrap();
    assert_eq!(inserted, 1, "binary parameters staged beside the COPY");
    assert_eq!(gate.total("logs").await, 0, "staged until COMMIT");
    client.batch_execute("COMMIT").await.unwrap();
    let placed = placement(
        &gate.shard_urls,
        &["s0", "s1"],
        &[("s0", 1), ("s1", 1)],
        "SELECT line, _sg_hash FROM logs",
    )
    .await;
    assert_eq!(
        placed.len(),
        100_001,
        "every row of a block past its memory once, on its owner"
    );

    client.batch_execute("BEGIN").await.unwrap();
    let copied = copy_all(
        &client,
        "COPY logs FROM STDIN",
        logs_text(&format!("{padding}-gone"), 60_000),
    )
    .await;
    assert_eq!(copied.unwrap(), 60_000);
    client.batch_execute("ROLLBACK").await.unwrap();
    assert_eq!(
        gate.total("logs").await,
        100_001,
        "ROLLBACK drops the staged rows"
    );
    gate.stop().await;
}

#[tokio::test]
async fn a_bad_row_in_a_block_copy_aborts_the_block_and_a_block_over_its_cap_is_refused() {
    let gate = TestServer::start("pg_copy_block_bad", &listener("max_block_size = \"64KiB\"\n")).await;
    let client = connect(&gate).await;
    client.batch_execute("BEGIN").await.unwrap();
    client
        .batch_execute("INSERT INTO events (tenant_id, event_type) VALUES ('t0', 'kept?')")
        .await
        .unwrap();
    let copied = copy_all(
        &client,
        "COPY events (tenant_id, event_type, ts) FROM STDIN",
        "t1\tclick\t2026-05-01 12:00:00+02\nt2\tview\tnever\n",
    )
    .await;
    let error = copied.unwrap_err();
    let db = error.as_db_error().expect("an ErrorResponse");
    assert_eq!(
        (db.code(), db.where_(), db.detail()),
        (
            &SqlState::INVALID_DATETIME_FORMAT,
            Some("COPY events, line 2, column ts"),
            Some("the transaction block is aborted: none of its rows were written.")
        )
    );
    let ignored = client.simple_query("SELECT 1").await.unwrap_err();
    assert_eq!(ignored.code(), Some(&SqlState::IN_FAILED_SQL_TRANSACTION));
    client.batch_execute("COMMIT").await.unwrap();
    assert_eq!(gate.total("events").await, 0, "a failed block stores nothing");

    client.batch_execute("BEGIN").await.unwrap();
    let copied = copy_all(&client, "COPY logs FROM STDIN", logs_text("cap", 5000)).await;
    let error = copied.unwrap_err();
    let db = error.as_db_error().expect("an ErrorResponse");
    assert_eq!(
        (db.code(), db.message()),
        (
            &SqlState::PROGRAM_LIMIT_EXCEEDED,
            "the transaction block holds more than postgres.max_block_size (64.0 KiB) of rows until its COMMIT; commit more often"
        )
    );
    client.batch_execute("ROLLBACK").await.unwrap();
    assert_eq!(one_value(&client, "SELECT 1").await, "1");
    assert_eq!(gate.total("logs").await, 0);
    gate.stop().await;
}

#[tokio::test]
async fn psycopg_copies_rows_in_its_implicit_block() {
    let gate = TestServer::start("pg_psycopg_block", &listener("")).await;
    let script = format!(
        "import psycopg\n\
         with psycopg.connect({url:?}) as conn:\n\
         \x20   with conn.cursor() as cur:\n\
         \x20       with cur.copy('COPY logs (source, line) FROM STDIN') as copy:\n\
         \x20           for i in range(30000):\n\
         \x20               copy.write_row((f'src-{{i % 5}}', f'py-{{i}}'))\n\
         \x20       print(cur.rowcount)\n\
         \x20       cur.execute('INSERT INTO logs (source, line) VALUES (%s, %s)', ('src-x', 'last'))\n",
        url = url(&gate, PASSWORD)
    );
    let printed = psycopg(&script).await;
    assert_eq!(printed.trim(), "30000");
    assert_eq!(
        gate.total("logs").await,
        30_001,
        "written when the connection's block committed"
    );
    gate.stop().await;
}

/// The stored `ts` and `n` of the event `id`, from whichever shard holds it, in text form.
async fn stored_event(gate: &TestServer, id: uuid::Uuid) -> (String, i64) {
    for url in &gate.shard_urls {
        let shard = crate::common::connect(url).await;
        let row = shard
            .query_opt(
                "SELECT to_char(ts AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US'), n FROM events WHERE event_id = $1",
                &[&id],
            )
            .await
            .unwrap();
        if let Some(row) = row {
            return (row.get(0), row.get(1));
        }
    }
    panic!("event {id} is stored on no shard");
}

#[tokio::test]
async fn insert_returning_answers_the_values_stored_in_and_out_of_a_block() {
    let gate = TestServer::start("pg_returning", &listener("")).await;
    let client = connect(&gate).await;
    let row = client
        .query_one(
            "INSERT INTO events (tenant_id, event_type, n) VALUES ($1, $2, $3) RETURNING event_id, n AS count, ts",
            &[&"t1", &"click", &7i64],
        )
        .await
        .unwrap();
    let columns: Vec<_> = row.columns().iter().map(|c| c.name().to_string()).collect();
    assert_eq!(columns, ["event_id", "count", "ts"]);
    let (id, n, ts): (uuid::Uuid, i64, chrono::DateTime<chrono::Utc>) = (row.get(0), row.get(1), row.get(2));
    assert_eq!(n, 7);
    assert_eq!(
        stored_event(&gate, id).await,
        (ts.format("%Y-%m-%d %H:%M:%S%.6f").to_string(), 7),
        "the generated id and time returned in binary are the stored ones"
    );

    client.batch_execute("BEGIN").await.unwrap();
    let messages = client
        .simple_query(
            "INSERT INTO events (tenant_id, event_type) VALUES ('t2', 'view'), ('t3', 'buy') RETURNING *",
        )
        .await
        .unwrap();
    let rows: Vec<_> = messages
        .iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::Row(row) => Some(row),
            _ => None,
        })
        .collect();
    assert_eq!(rows.len(), 2);
    assert!(matches!(
        messages.last(),
        Some(SimpleQueryMessage::CommandComplete(2))
    ));
    assert_eq!(
        (rows[0].get("tenant_id"), rows[0].get("n"), rows[0].get("payload")),
        (Some("t2"), Some("0"), None)
    );
    let id: uuid::Uuid = rows[1].get("event_id").unwrap().parse().unwrap();
    let ts = rows[1].get("ts").unwrap().to_string();
    assert_eq!(gate.total("events").await, 1, "the block's rows wait for COMMIT");
    client.batch_execute("COMMIT").await.unwrap();
    let (stored_ts, _) = stored_event(&gate, id).await;
    assert_eq!(
        format!("{}+00", stored_ts.trim_end_matches('0').trim_end_matches('.')),
        ts,
        "a block's rows are stored with the id and time its RETURNING answered"
    );

    let script = format!(
        "import psycopg\n\
         with psycopg.connect({url:?}) as conn:\n\
         \x20   cur = conn.execute('INSERT INTO events (tenant_id, event_type, score) VALUES (%s, %s, %s) RETURNING event_id, score', ('t4', 'orm', 0.25))\n\
         \x20   event_id, score = cur.fetchone()\n\
         \x20   print(event_id, score)\n",
        url = url(&gate, PASSWORD)
    );
    let printed = psycopg(&script).await;
    let (id, score) = printed.trim().split_once(' ').unwrap();
    assert_eq!(score, "0.25");
    stored_event(&gate, id.parse().unwrap()).await;
    assert_eq!(gate.total("events").await, 4);

    let expression = client
        .simple_query("INSERT INTO events (tenant_id, event_type) VALUES ('t', 'x') RETURNING n * 2")
        .await
        .unwrap_err();
    assert_eq!(
        expression.as_db_error().map(|e| e.message()),
        Some("RETURNING of an expression other than a column is not supported by shardgate")
    );
    let unknown = client
        .simple_query("INSERT INTO events (tenant_id, event_type) VALUES ('t', 'x') RETURNING nope")
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), Some(&SqlState::UNDEFINED_COLUMN));
    assert_eq!(
        gate.total("events").await,
        4,
        "a refused RETURNING stores nothing"
    );
    gate.stop().await;
}

#[tokio::test]
async fn jdbc_batches_generated_keys_and_copy_manager_write_through_the_listener() {
    let gate = TestServer::start("pg_jdbc", &listener("")).await;
    let printed = java(&gate, "JdbcWrites.java").await;
    let lines: Vec<&str> = printed.lines().collect();
    assert_eq!(
        lines[0],
        format!("version 15.0 (shardgate {})", env!("CARGO_PKG_VERSION"))
    );
    assert_eq!(
        lines[1..4],
        ["autocommit 1", "batch 1000 1", "batch 1000 1"],
        "a batch's update counts are its rows, in autocommit and in a block"
    );
    let key: uuid::Uuid = lines[4]
        .strip_prefix("key ")
        .and_then(|key| key.parse().ok())
        .unwrap_or_else(|| panic!("a generated key: {}", lines[4]));
    stored_event(&gate, key).await;
    assert_eq!(
        lines[5..],
        [
            "copy 5000",
            "copy 5000",
            "refused 22007",
            "timestamp 1",
            "valid true"
        ]
    );
    assert_eq!(
        gate.total("events").await,
        1 + 1000 + 1000 + 1 + 5000 + 1,
        "the rolled-back COPY stores nothing"
    );
    gate.stop().await;
}

#[tokio::test]
async fn a_row_a_shard_refuses_keeps_the_shards_sqlstate() {
    let gate = TestServer::start("pg_shard_refusal", &listener("")).await;
    gate.on_every_shard("ALTER TABLE events ADD CONSTRAINT n_not_negative CHECK (n >= 0)")
        .await;
    let client = connect(&gate).await;
    let refused = client
        .execute(
            "INSERT INTO events (tenant_id, event_type, n) VALUES ($1, $2, $3)",
            &[&"t", &"a", &-1i64],
        )
        .await
        .unwrap_err();
    let db = refused.as_db_error().expect("an ErrorResponse");
    assert_eq!(db.code(), &SqlState::CHECK_VIOLATION);
    assert!(
        db.message()
            .contains("violates check constraint \"n_not_negative\""),
        "{}",
        db.message()
    );
    assert_eq!(one_value(&client, "SELECT 1").await, "1");
    assert_eq!(gate.total("events").await, 0);
    gate.stop().await;
}

#[tokio::test]
async fn a_pipeline_is_answered_at_its_sync_once_its_rows_committed_and_a_refusal_counts_them() {
    let gate = TestServer::start("pg_pipeline", &listener("")).await;
    let script = |rows: &str| {
        format!(
            "import psycopg\n\
             with psycopg.connect({url:?}, autocommit=True) as conn:\n\
             \x20   cur = conn.cursor()\n\
             \x20   try:\n\
             \x20       with conn.pipeline():\n\
             \x20           cur.executemany('INSERT INTO events (tenant_id, event_type, n) VALUES (%s, %s, %s)', {rows})\n\
             \x20       print('ok')\n\
             \x20   except psycopg.Error as e:\n\
             \x20       print(e.sqlstate, e.diag.message_detail)\n",
            url = url(&gate, PASSWORD)
        )
    };
    let printed = psycopg(&script("[(f't{i % 9}', 'pipelined', i) for i in range(2000)]")).await;
    assert_eq!(printed.trim(), "ok");
    assert_eq!(gate.total("events").await, 2000);

    gate.on_every_shard("ALTER TABLE events ADD CONSTRAINT n_not_negative CHECK (n >= 0)")
        .await;
    let printed = psycopg(&script(
        "[(f't{i % 9}', 'refused', 1500 - i) for i in range(2000)]",
    ))
    .await;
    let (code, detail) = printed.trim().split_once(' ').unwrap();
    assert_eq!(code, "23514", "{printed}");
    let committed: i64 = detail
        .split_once(" of the ")
        .and_then(|(n, _)| n.parse().ok())
        .unwrap_or_else(|| panic!("a count of committed rows: {detail}"));
    assert!(
        detail.contains("rows written since the last Sync were committed before the error"),
        "{detail}"
    );
    assert_eq!(
        gate.total("events").await,
        2000 + committed,
        "the detail counts exactly the rows that were stored"
    );
    gate.stop().await;
}

#[tokio::test]
async fn a_spooled_table_is_acknowledged_once_on_the_spool_while_a_shard_is_down() {
    let (doomed, urls) = crate::common::shards_with_one_to_stop("pg_spool").await;
    let dir = std::env::temp_dir().join(format!("shardgate-pg-spool-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let extra = format!("[spool]\ndir = \"{}\"\n{}", dir.display(), listener(""));
    let mut config = crate::common::config_for(&urls, &extra);
    config.tables[1].ack = shardgate::config::AckMode::Spool;
    let gate = TestServer::start_with(config, urls.clone()).await;
    doomed.stop().unwrap();

    let client = connect(&gate).await;
    let copied = copy_all(&client, "COPY logs FROM STDIN", logs_text("spooled", 3000)).await;
    assert_eq!(
        copied.unwrap(),
        3000,
        "answered once on the spool's disk, with a shard down"
    );
    let inserted = client
        .execute("INSERT INTO logs VALUES ($1, $2)", &[&"src-1", &"one more"])
        .await
        .unwrap();
    assert_eq!(inserted, 1);
    client
        .batch_execute("BEGIN; INSERT INTO logs VALUES ('src-2', 'in a block'); COMMIT")
        .await
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let mut on_healthy = 0;
    while on_healthy == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the healthy shard's rows drain to it"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        on_healthy = count_on(&urls[0], "logs").await;
    }
    assert!(
        on_healthy < 3002,
        "the healthy shard has its own rows only: {on_healthy}"
    );

    doomed.restart().unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while gate.total("logs").await < 3002 {
        assert!(
            std::time::Instant::now() < deadline,
            "the spool drains to the shard once it is back"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    let placed = placement(
        &urls,
        &["s0", "s1"],
        &[("s0", 1), ("s1", 1)],
        "SELECT line, _sg_hash FROM logs",
    )
    .await;
    assert_eq!(placed.len(), 3002, "every spooled row once, on its owner");
    gate.stop().await;
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn psycopgs_statement_cache_prepares_and_deallocates_statements() {
    let gate = TestServer::start("pg_deallocate", &listener("")).await;
    let script = format!(
        "import psycopg\n\
         with psycopg.connect({url:?}, autocommit=True, prepare_threshold=0) as conn:\n\
         \x20   conn.prepared_max = 2\n\
         \x20   for i in range(6):\n\
         \x20       conn.execute(f'INSERT INTO logs (source, line) VALUES (%s, %s) -- statement {{i % 3}}', (f'src-{{i}}', 'cached'))\n\
         \x20   conn.execute('DEALLOCATE ALL')\n\
         \x20   print(conn.execute('SELECT 1').fetchone()[0])\n",
        url = url(&gate, PASSWORD)
    );
    assert_eq!(psycopg(&script).await.trim(), "1");
    assert_eq!(
        gate.total("logs").await,
        6,
        "every execution stored once, through statements prepared and evicted"
    );
    gate.stop().await;
}
