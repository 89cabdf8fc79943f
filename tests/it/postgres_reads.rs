//! Reporting queries over the Postgres listener, read the ways clients read: psql's text
//! rows, tokio-postgres's prepared statements with binary results and portals fetched a few
//! rows at a time, psycopg's parameters and JDBC's fetch size and metadata. The oracle test
//! in `query.rs` also runs its whole corpus through the listener.

use crate::common::{TestServer, count_on, wait_for_lock_waiters};
use crate::postgres::{PASSWORD, connect, java, listener, one_value, psql, psycopg, url};
use tokio_postgres::SimpleQueryMessage;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::Type;

/// A table with a column of every type shardgate stores.
const READINGS: &str = r#"
[[tables]]
name = "readings"
partition_key = ["device"]
columns = [
  { name = "device", type = "text" },
  { name = "seq", type = "integer" },
  { name = "level", type = "smallint" },
  { name = "total", type = "bigint" },
  { name = "value", type = "double precision" },
  { name = "ok", type = "boolean" },
  { name = "id", type = "uuid" },
  { name = "at", type = "timestamptz" },
  { name = "day", type = "date" },
  { name = "doc", type = "jsonb", nullable = true },
  { name = "raw", type = "bytea", nullable = true },
]
"#;

/// Three readings of device d1 and one of d2.
const READINGS_ROWS: &str = "INSERT INTO readings VALUES \
    ('d1', 1, -3, 9000000000, 0.25, true, '0190a5c8-7e2b-7c3d-9f1a-2b3c4d5e6f70', '2026-05-01 12:00:00.5+02', '2026-05-01', '{\"k\": [1, \"x\"]}', '\\x00ff'), \
    ('d1', 2, 7, 1, -1.5e10, false, '0190a5c8-7e2b-7c3d-9f1a-2b3c4d5e6f71', '1999-12-31 23:59:59+00', '1999-12-31', NULL, NULL), \
    ('d1', 3, 0, 2, 3, true, '0190a5c8-7e2b-7c3d-9f1a-2b3c4d5e6f72', '2026-05-02 00:00:00+00', '2026-05-02', '[]', ''), \
    ('d2', 4, 1, 5, 0, false, '0190a5c8-7e2b-7c3d-9f1a-2b3c4d5e6f73', '2026-06-01 00:00:00+00', '2026-06-01', '{}', '\\x01')";

#[tokio::test]
async fn psql_reads_a_report_over_every_shard_in_postgres_text_form() {
    let gate = TestServer::start("pg_select", &listener("")).await;
    let client = connect(&gate).await;
    client
        .batch_execute(
            "INSERT INTO events (tenant_id, event_type, n, ts, payload, score) VALUES \
             ('acme', 'click', 3, '2026-05-01 12:00:00+02', '{\"b\": [1, 2], \"a\": null}', 0.5), \
             ('acme', 'view', 4, '2026-05-01 12:00:00.25+00', NULL, NULL), \
             ('zeta', 'click', 5, '2026-05-02 00:00:00+00', '{}', 1e20)",
        )
        .await
        .unwrap();
    assert!(
        count_on(&gate.shard_urls[0], "events").await + count_on(&gate.shard_urls[1], "events").await == 3
    );
    let report =
        "SELECT tenant_id, count(*) AS events, sum(n) AS n FROM events GROUP BY tenant_id ORDER BY tenant_id";
    assert_eq!(
        psql(&gate, &["-A", "-F", "|", "-c", report]).await,
        "tenant_id|events|n\nacme|2|7\nzeta|1|5\n(2 rows)\n"
    );

    let rows = client
        .simple_query(
            "SELECT event_type, ts, payload, score FROM events WHERE tenant_id = 'acme' ORDER BY ts",
        )
        .await
        .unwrap();
    let rows: Vec<Vec<Option<&str>>> = rows
        .iter()
        .filter_map(|message| match message {
            SimpleQueryMessage::Row(row) => Some((0..4).map(|i| row.get(i)).collect()),
            _ => None,
        })
        .collect();
    assert_eq!(
        rows,
        vec![
            vec![
                Some("click"),
                Some("2026-05-01 10:00:00+00"),
                Some("{\"a\": null, \"b\": [1, 2]}"),
                Some("0.5")
            ],
            vec![Some("view"), Some("2026-05-01 12:00:00.25+00"), None, None],
        ]
    );

    let unsupported = client
        .simple_query("SELECT * FROM events e JOIN logs l ON true")
        .await
        .unwrap_err();
    assert_eq!(unsupported.code(), Some(&SqlState::FEATURE_NOT_SUPPORTED));
    undeclared_nope(client.simple_query("SELECT * FROM nope").await.unwrap_err());
    assert_eq!(one_value(&client, "SELECT 1").await, "1");
    gate.stop().await;
}

/// A session of `gate`'s listener, after it wrote [`READINGS_ROWS`].
async fn session_with_readings(gate: &TestServer) -> tokio_postgres::Client {
    let client = connect(gate).await;
    client.batch_execute(READINGS_ROWS).await.unwrap();
    client
}

/// Locks `readings` on shard s1 in a transaction the returned client holds, so a report over
/// it waits there until `ROLLBACK`.
async fn lock_readings_on_s1(gate: &TestServer) -> tokio_postgres::Client {
    let locker = crate::common::connect(&gate.shard_urls[1]).await;
    locker
        .batch_execute("BEGIN; LOCK TABLE readings IN ACCESS EXCLUSIVE MODE")
        .await
        .unwrap();
    locker
}

/// Checks that `error` refuses the undeclared table `nope` as Postgres would.
fn undeclared_nope(error: tokio_postgres::Error) {
    let missing = error.as_db_error().expect("an ErrorResponse");
    assert_eq!(
        (missing.code(), missing.message()),
        (&SqlState::UNDEFINED_TABLE, "relation \"nope\" does not exist")
    );
}

#[tokio::test]
async fn tokio_postgres_reads_every_type_in_binary_through_reused_statements_and_portals() {
    use chrono::{DateTime, NaiveDate, Utc};
    use shardgate::query::value::Decimal;
    let gate = TestServer::start("pg_read_types", &listener(READINGS)).await;
    let client = session_with_readings(&gate).await;

    let by_device = client
        .prepare("SELECT seq, level, total, value, ok, id, at, day, doc, raw FROM readings WHERE device = $1 ORDER BY seq")
        .await
        .unwrap();
    assert_eq!(by_device.params(), [Type::TEXT]);
    let types: Vec<Type> = by_device.columns().iter().map(|c| c.type_().clone()).collect();
    assert_eq!(
        types,
        [
            Type::INT4,
            Type::INT2,
            Type::INT8,
            Type::FLOAT8,
            Type::BOOL,
            Type::UUID,
            Type::TIMESTAMPTZ,
            Type::DATE,
            Type::JSONB,
            Type::BYTEA
        ]
    );
    let rows = client.query(&by_device, &[&"d1"]).await.unwrap();
    assert_eq!(rows.len(), 3);
    let first = &rows[0];
    assert_eq!(
        (
            first.get::<_, i32>(0),
            first.get::<_, i16>(1),
            first.get::<_, i64>(2)
        ),
        (1, -3, 9_000_000_000)
    );
    assert_eq!((first.get::<_, f64>(3), first.get::<_, bool>(4)), (0.25, true));
    assert_eq!(
        first.get::<_, uuid::Uuid>(5).to_string(),
        "0190a5c8-7e2b-7c3d-9f1a-2b3c4d5e6f70"
    );
    assert_eq!(
        first.get::<_, DateTime<Utc>>(6).to_rfc3339(),
        "2026-05-01T10:00:00.500+00:00"
    );
    assert_eq!(
        first.get::<_, NaiveDate>(7),
        NaiveDate::from_ymd_opt(2026, 5, 1).unwrap()
    );
    assert_eq!(
        first.get::<_, serde_json::Value>(8),
        serde_json::json!({"k": [1, "x"]})
    );
    assert_eq!(first.get::<_, Vec<u8>>(9), vec![0, 255]);
    assert_eq!(rows[1].get::<_, Option<serde_json::Value>>(8), None);
    assert_eq!(rows[1].get::<_, f64>(3), -1.5e10);
    assert_eq!(rows[2].get::<_, Vec<u8>>(9), Vec::<u8>::new());
    let reused = client.query(&by_device, &[&"d2"]).await.unwrap();
    assert_eq!(
        reused.iter().map(|r| r.get::<_, i32>(0)).collect::<Vec<_>>(),
        [4],
        "a prepared statement runs again with other parameters"
    );

    let report = client
        .prepare(
            "SELECT device, count(*), sum(total), avg(seq), min(at), max(day) FROM readings \
             WHERE seq >= $1 AND day >= $2 GROUP BY device ORDER BY device LIMIT $3",
        )
        .await
        .unwrap();
    assert_eq!(report.params(), [Type::INT4, Type::DATE, Type::INT8]);
    let since = NaiveDate::from_ymd_opt(1999, 1, 1).unwrap();
    let groups = client.query(&report, &[&1i32, &since, &10i64]).await.unwrap();
    let read: Vec<(String, i64, String, String, DateTime<Utc>, NaiveDate)> = groups
        .iter()
        .map(|r| {
            (
                r.get(0),
                r.get(1),
                r.get::<_, Decimal>(2).to_string(),
                r.get::<_, Decimal>(3).to_string(),
                r.get(4),
                r.get(5),
            )
        })
        .collect();
    assert_eq!(
        read,
        [
            (
                "d1".to_string(),
                3,
                "9000000003".to_string(),
                "2.0000000000000000".to_string(),
                "1999-12-31T23:59:59Z".parse().unwrap(),
                NaiveDate::from_ymd_opt(2026, 5, 2).unwrap()
            ),
            (
                "d2".to_string(),
                1,
                "5".to_string(),
                "4.0000000000000000".to_string(),
                "2026-06-01T00:00:00Z".parse().unwrap(),
                NaiveDate::from_ymd_opt(2026, 6, 1).unwrap()
            ),
        ]
    );

    let any = client
        .query(
            "SELECT seq FROM readings WHERE device = ANY($1) AND seq <> ALL($2) ORDER BY seq",
            &[&vec!["d1", "d2"], &vec![2i32]],
        )
        .await
        .unwrap();
    assert_eq!(
        any.iter().map(|r| r.get::<_, i32>(0)).collect::<Vec<_>>(),
        [1, 3, 4]
    );

    let mut client = client;
    let transaction = client.transaction().await.unwrap();
    let ordered = transaction
        .prepare("SELECT seq FROM readings ORDER BY seq")
        .await
        .unwrap();
    let portal = transaction.bind(&ordered, &[]).await.unwrap();
    let mut fetched = Vec::new();
    for _ in 0..3 {
        let rows = transaction.query_portal(&portal, 3).await.unwrap();
        fetched.push(rows.iter().map(|r| r.get::<_, i32>(0)).collect::<Vec<_>>());
    }
    assert_eq!(
        fetched,
        [vec![1, 2, 3], vec![4], vec![]],
        "an Execute with a row limit is suspended and resumed where it stopped"
    );
    transaction.commit().await.unwrap();

    undeclared_nope(client.prepare("SELECT * FROM nope").await.unwrap_err());
    assert_eq!(one_value(&client, "SELECT 1").await, "1");
    gate.stop().await;
}

#[tokio::test]
async fn psycopg_binds_parameters_in_text_and_binary_and_reads_rows_back() {
    let gate = TestServer::start("pg_read_psycopg", &listener(READINGS)).await;
    session_with_readings(&gate).await;
    let script = format!(
        "import datetime, psycopg\n\
         with psycopg.connect({url:?}, autocommit=True) as conn:\n\
         \x20   cur = conn.execute('SELECT device, count(*), sum(total) FROM readings WHERE day >= %s AND ok = %s GROUP BY 1 ORDER BY 1', (datetime.date(2000, 1, 1), True))\n\
         \x20   print(cur.fetchall())\n\
         \x20   print([c.name for c in cur.description], [c.type_code for c in cur.description])\n\
         \x20   cur = conn.cursor(binary=True)\n\
         \x20   cur.execute('SELECT seq, at, doc FROM readings WHERE device = ANY(%s) AND level < %s ORDER BY seq', (['d1', 'd2'], 5))\n\
         \x20   print(cur.fetchall())\n\
         \x20   try:\n\
         \x20       conn.execute('SELECT seq FROM readings WHERE day = %s', ('not a date',))\n\
         \x20   except psycopg.Error as e:\n\
         \x20       print(e.sqlstate, e.diag.message_primary)\n\
         \x20   print(conn.execute('SELECT count(*) FROM readings WHERE device = %s', ('d1',)).fetchone()[0])\n",
        url = url(&gate, PASSWORD)
    );
    let printed = psycopg(&script).await;
    let lines: Vec<&str> = printed.lines().collect();
    assert_eq!(
        lines,
        [
            "[('d1', 2, Decimal('9000000002'))]",
            "['device', 'count', 'sum'] [25, 20, 1700]",
            "[(1, datetime.datetime(2026, 5, 1, 10, 0, 0, 500000, tzinfo=datetime.timezone.utc), {'k': [1, 'x']}), \
             (3, datetime.datetime(2026, 5, 2, 0, 0, tzinfo=datetime.timezone.utc), []), \
             (4, datetime.datetime(2026, 6, 1, 0, 0, tzinfo=datetime.timezone.utc), {})]",
            "22007 invalid input syntax for type date: \"not a date\"",
            "3",
        ]
    );
    gate.stop().await;
}

#[tokio::test]
async fn jdbc_reads_metadata_pages_with_a_fetch_size_and_lists_the_declared_tables() {
    let gate = TestServer::start("pg_read_jdbc", &listener(READINGS)).await;
    session_with_readings(&gate).await;
    let printed = java(&gate, "JdbcReads.java").await;
    assert_eq!(
        printed.lines().collect::<Vec<_>>(),
        [
            "columns device:text readings:int8 total:numeric latest:timestamptz",
            "group d1 3 9000000003 2026-05-02T00:00:00Z",
            "group d2 1 5 2026-06-01T00:00:00Z",
            "tables events logs readings",
            "readings device:text:NO seq:int4:NO level:int2:NO total:int8:NO value:float8:NO ok:bool:NO \
             id:uuid:NO at:timestamptz:NO day:date:NO doc:jsonb:YES raw:bytea:YES",
            "key event_id",
            "paged 2@1999-12-31 3@2026-05-02 4@2026-06-01",
            "counted 16",
            "refused 42P01",
        ]
    );
    gate.stop().await;
}

#[tokio::test]
async fn psql_describes_the_declared_tables_without_their_hidden_columns() {
    let gate = TestServer::start("pg_read_describe", &listener(READINGS)).await;
    let described = [
        "-A",
        "-F",
        "|",
        "-c",
        "\\dt",
        "-c",
        "\\d events",
        "-c",
        "\\d+ logs",
    ];
    assert_eq!(
        psql(&gate, &described).await,
        "List of relations\n\
         Schema|Name|Type|Owner\n\
         public|events|table|postgres\n\
         public|logs|table|postgres\n\
         public|readings|table|postgres\n\
         (3 rows)\n\
         Table \"public.events\"\n\
         Column|Type|Collation|Nullable|Default\n\
         event_id|uuid||not null|\n\
         tenant_id|text||not null|\n\
         event_type|text||not null|\n\
         n|bigint||not null|\n\
         ts|timestamp with time zone||not null|now()\n\
         payload|jsonb|||\n\
         score|double precision|||\n\
         Indexes:\n    \"events_pkey\" PRIMARY KEY, btree (event_id)\n\
         Table \"public.logs\"\n\
         Column|Type|Collation|Nullable|Default|Storage|Compression|Stats target|Description\n\
         source|text||not null||extended|||\n\
         line|text||not null||extended|||\n\
         Access method: heap\n",
        "the declared tables as declared: no _sg_hash, no _sg_epoch, no internal tables"
    );
    gate.stop().await;
}

#[tokio::test]
async fn a_session_statement_timeout_stops_a_report_with_57014() {
    let gate = TestServer::start("pg_read_timeout", &listener(READINGS)).await;
    let client = session_with_readings(&gate).await;
    let bad = client
        .batch_execute("SET statement_timeout = 'soon'")
        .await
        .unwrap_err();
    assert_eq!(bad.code(), Some(&SqlState::INVALID_PARAMETER_VALUE));
    client
        .batch_execute("SET statement_timeout = '300ms'")
        .await
        .unwrap();
    let locker = lock_readings_on_s1(&gate).await;
    let started = std::time::Instant::now();
    let stopped = client
        .simple_query("SELECT device, count(*) FROM readings GROUP BY 1")
        .await
        .unwrap_err();
    let stopped = stopped.as_db_error().expect("an ErrorResponse");
    assert_eq!(
        (stopped.code(), stopped.message()),
        (
            &SqlState::QUERY_CANCELED,
            "shard s1 did not answer within the statement timeout"
        )
    );
    assert!(
        started.elapsed() < std::time::Duration::from_secs(10),
        "the session's 300 ms, not query.statement_timeout's 30 s: {:?}",
        started.elapsed()
    );
    locker.batch_execute("ROLLBACK").await.unwrap();
    assert_eq!(one_value(&client, "SELECT count(*) FROM readings").await, "4");
    gate.stop().await;
}

#[tokio::test]
async fn a_cancel_request_stops_a_waiting_report_on_every_shard_with_57014_by_either_protocol() {
    let gate = TestServer::start("pg_read_cancel", &listener(READINGS)).await;
    let client = session_with_readings(&gate).await;
    let locker = lock_readings_on_s1(&gate).await;
    let prepared = client
        .prepare("SELECT device, count(*) FROM readings WHERE seq > $1 GROUP BY 1")
        .await
        .unwrap();
    for extended in [false, true] {
        let started = std::time::Instant::now();
        let canceller = client.cancel_token();
        let locked_shard = gate.shard_urls[1].clone();
        let cancel = tokio::spawn(async move {
            wait_for_lock_waiters(&locked_shard, 1).await;
            canceller.cancel_query(tokio_postgres::NoTls).await.unwrap();
        });
        let stopped = if extended {
            client.query(&prepared, &[&0i32]).await.map(|_| ()).unwrap_err()
        } else {
            client
                .simple_query("SELECT device, count(*) FROM readings GROUP BY 1")
                .await
                .map(|_| ())
                .unwrap_err()
        };
        cancel.await.unwrap();
        let stopped = stopped.as_db_error().expect("an ErrorResponse");
        assert_eq!(
            (stopped.code(), stopped.message()),
            (
                &SqlState::QUERY_CANCELED,
                "canceling statement due to user request"
            ),
            "extended protocol: {extended}"
        );
        assert!(
            started.elapsed() < std::time::Duration::from_secs(10),
            "stopped by the cancel, not by query.statement_timeout's 30 s: {:?}",
            started.elapsed()
        );
        // The shard's part is cancelled too: nothing waits for the lock any more.
        wait_for_lock_waiters(&gate.shard_urls[1], 0).await;
    }
    locker.batch_execute("ROLLBACK").await.unwrap();
    assert_eq!(
        one_value(&client, "SELECT count(*) FROM readings").await,
        "4",
        "the session goes on after a cancel"
    );
    gate.stop().await;
}

/// What `COPY ... TO STDOUT` writes on `client`, whole.
async fn copied_out(client: &tokio_postgres::Client, sql: &str) -> String {
    use futures_util::TryStreamExt;
    let chunks: Vec<bytes::Bytes> = client
        .copy_out(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .try_collect()
        .await
        .unwrap();
    String::from_utf8(chunks.concat()).unwrap()
}

#[tokio::test]
async fn copy_to_stdout_writes_what_postgres_writes_for_the_same_rows() {
    let gate = TestServer::start("pg_copy_out", &listener(READINGS)).await;
    let client = session_with_readings(&gate).await;
    let oracle_url = crate::common::fresh_database(&crate::common::clusters()[0], "pg_copy_out_oracle").await;
    let oracle = crate::common::connect(&oracle_url).await;
    oracle
        .batch_execute(
            "SET TimeZone = 'UTC'; CREATE TABLE readings (device text, seq integer, level smallint, \
             total bigint, value double precision, ok boolean, id uuid, at timestamptz, day date, \
             doc jsonb, raw bytea)",
        )
        .await
        .unwrap();
    oracle.batch_execute(READINGS_ROWS).await.unwrap();
    for sql in [
        "COPY (SELECT * FROM readings ORDER BY seq) TO STDOUT",
        "COPY (SELECT device, seq, doc, raw, at FROM readings ORDER BY seq) TO STDOUT WITH (FORMAT csv, HEADER)",
        "COPY (SELECT device, count(*), sum(total), avg(seq), max(value) FROM readings GROUP BY device \
         ORDER BY device) TO STDOUT (FORMAT csv, DELIMITER '|', NULL 'none', HEADER)",
    ] {
        let ours = copied_out(&client, sql).await;
        assert_eq!(ours, copied_out(&oracle, sql).await, "{sql}");
        assert!(ours.lines().count() >= 2, "{sql}: {ours}");
    }
    let sorted = |text: String| {
        let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
        lines.sort();
        lines
    };
    let table = "COPY readings (device, seq, day) TO STDOUT";
    assert_eq!(
        sorted(copied_out(&client, table).await),
        sorted(copied_out(&oracle, table).await),
        "a table's rows, from every shard"
    );

    let file = tempfile::NamedTempFile::new().unwrap();
    let export = format!(
        "\\copy (SELECT device, seq FROM readings ORDER BY seq) TO '{}' WITH (FORMAT csv, HEADER)",
        file.path().display()
    );
    assert_eq!(psql(&gate, &["-c", &export]).await, "COPY 4\n");
    assert_eq!(
        std::fs::read_to_string(file.path()).unwrap(),
        "device,seq\nd1,1\nd1,2\nd1,3\nd2,4\n",
        "psql counts the rows, not the header"
    );
    gate.stop().await;
}

#[tokio::test]
async fn infinite_timestamps_written_as_json_read_back_in_order_by_either_front_end() {
    use tokio_postgres::types::Timestamp;
    let gate = TestServer::start("pg_read_infinity", &listener("")).await;
    let rows = serde_json::json!([
        {"tenant_id": "acme", "event_type": "a", "ts": "infinity"},
        {"tenant_id": "acme", "event_type": "b", "ts": "2026-05-01T12:00:00Z"},
        {"tenant_id": "zeta", "event_type": "c", "ts": "-Infinity"},
    ]);
    let reply = gate.post_events(&rows).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let sql = "SELECT event_type, ts FROM events ORDER BY ts";
    let http = gate
        .http
        .post(gate.url("/v1/query"))
        .json(&serde_json::json!({ "sql": sql }))
        .send()
        .await
        .unwrap();
    let http = crate::common::Reply::read(http).await;
    assert_eq!(http.status, 200, "{}", http.body);
    assert_eq!(
        http.body["rows"],
        serde_json::json!([
            ["c", "-infinity"],
            ["b", "2026-05-01T12:00:00Z"],
            ["a", "infinity"]
        ])
    );
    let client = connect(&gate).await;
    let text: Vec<String> = client
        .simple_query(sql)
        .await
        .unwrap()
        .iter()
        .filter_map(|message| match message {
            SimpleQueryMessage::Row(row) => row.get(1).map(str::to_string),
            _ => None,
        })
        .collect();
    assert_eq!(text, ["-infinity", "2026-05-01 12:00:00+00", "infinity"]);
    let binary: Vec<Timestamp<chrono::DateTime<chrono::Utc>>> = client
        .query(sql, &[])
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(1))
        .collect();
    assert_eq!(
        binary,
        [
            Timestamp::NegInfinity,
            Timestamp::Value("2026-05-01T12:00:00Z".parse().unwrap()),
            Timestamp::PosInfinity
        ]
    );
    gate.stop().await;
}
