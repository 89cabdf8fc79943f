//! Reporting queries checked against an oracle: the same rows loaded through shardgate onto two
//! shards and copied into one plain Postgres database; every query's answer through shardgate
//! must equal the oracle's.

mod common;

use common::{TestServer, connect, fresh_database};
use futures_util::{SinkExt, TryStreamExt};
use serde_json::{Value, json};
use shardgate::query::value::{Cell, JsonParam, ResultType};
use shardgate::schema::{ColumnType, TableSchema, create_table_sql};

/// How two answers must agree.
enum Compare {
    /// Same rows in the same order (the ORDER BY is total).
    Exact,
    /// Same rows in any order (no ORDER BY).
    Unordered,
    /// Same values of the first `n` columns in order (ties under ORDER BY + LIMIT may pick
    /// different rows, as they may on one Postgres).
    Keys(usize),
}

fn column_type(name: &str) -> ResultType {
    if name == "numeric" {
        return ResultType::Numeric;
    }
    ResultType::Column(match name {
        "text" => ColumnType::Text,
        "bigint" => ColumnType::BigInt,
        "integer" => ColumnType::Integer,
        "smallint" => ColumnType::SmallInt,
        "double precision" => ColumnType::Double,
        "boolean" => ColumnType::Boolean,
        "uuid" => ColumnType::Uuid,
        "timestamp with time zone" => ColumnType::Timestamptz,
        "date" => ColumnType::Date,
        "jsonb" => ColumnType::Jsonb,
        "bytea" => ColumnType::Bytea,
        other => panic!("unexpected type {other}"),
    })
}

async fn load_rows(gate: &TestServer) {
    let rows: Vec<Value> = (0..400)
        .map(|i| {
            let event_type = ["click", "view", "buy"][i % 3];
            json!({
                "event_id": format!("0190a1b2-c3d4-7e5f-8a9b-{:012x}", i),
                "tenant_id": format!("t{}", i % 10),
                "event_type": event_type,
                "n": i % 37,
                "ts": format!("2024-05-01T{:02}:{:02}:00Z", (i / 60) % 24, i % 60),
                "payload": if i % 4 == 0 { Value::Null } else { json!({"i": i}) },
                "score": if i % 5 == 0 { Value::Null } else { json!((i * 7 % 100) as f64 / 4.0) },
            })
        })
        .collect();
    let reply = gate.post_events(&Value::Array(rows)).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
}

/// A database holding every row of every shard in one `events` table.
async fn oracle(gate: &TestServer) -> tokio_postgres::Client {
    let url = fresh_database(&common::clusters()[0], "oracle").await;
    let client = connect(&url).await;
    let config = common::config_for(&gate.shard_urls, "");
    let events = TableSchema::from_config(&config.tables[0]).unwrap();
    client.batch_execute(&create_table_sql(&events)).await.unwrap();
    for shard_url in &gate.shard_urls {
        let shard = connect(shard_url).await;
        let stream = shard
            .copy_out("COPY events TO STDOUT (FORMAT binary)")
            .await
            .unwrap();
        let data: Vec<bytes::Bytes> = stream.try_collect().await.unwrap();
        let sink = client
            .copy_in::<_, bytes::Bytes>("COPY events FROM STDIN (FORMAT binary)")
            .await
            .unwrap();
        futures_util::pin_mut!(sink);
        for chunk in data {
            sink.feed(chunk).await.unwrap();
        }
        sink.finish().await.unwrap();
    }
    client
}

async fn oracle_rows(
    oracle: &tokio_postgres::Client,
    sql: &str,
    params: &[Value],
    types: &[ResultType],
) -> Vec<Vec<Value>> {
    let params: Vec<JsonParam> = params.iter().cloned().map(JsonParam).collect();
    let refs: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = params.iter().map(|p| p as _).collect();
    let rows = oracle
        .query(sql, &refs)
        .await
        .unwrap_or_else(|e| panic!("oracle: {sql}: {e}"));
    rows.iter()
        .map(|row| {
            types
                .iter()
                .enumerate()
                .map(|(i, ty)| Cell::read(row, i, *ty).unwrap().to_json())
                .collect()
        })
        .collect()
}

async fn ask(gate: &TestServer, sql: &str, params: &[Value]) -> common::Reply {
    let response = gate
        .http
        .post(gate.url("/v1/query"))
        .json(&json!({"sql": sql, "params": params}))
        .send()
        .await
        .unwrap();
    common::Reply::read(response).await
}

fn sorted(mut rows: Vec<Vec<Value>>) -> Vec<Vec<Value>> {
    rows.sort_by_key(|r| serde_json::to_string(r).unwrap());
    rows
}

#[tokio::test]
async fn answers_equal_one_postgres_holding_all_rows() {
    let gate = TestServer::start("query", "").await;
    load_rows(&gate).await;
    let oracle = oracle(&gate).await;
    let corpus: Vec<(&str, Vec<Value>, Compare)> = vec![
        ("SELECT * FROM events", vec![], Compare::Unordered),
        (
            "SELECT event_id, n FROM events WHERE n > 30",
            vec![],
            Compare::Unordered,
        ),
        (
            "SELECT event_id, n FROM events ORDER BY n DESC, event_id LIMIT 10",
            vec![],
            Compare::Exact,
        ),
        (
            "SELECT event_id FROM events WHERE tenant_id = 't3' AND event_type = 'view' ORDER BY event_id",
            vec![],
            Compare::Exact,
        ),
        (
            "SELECT event_id, n FROM events WHERE n BETWEEN $1 AND $2 ORDER BY event_id LIMIT 5 OFFSET 3",
            vec![json!(5), json!(9)],
            Compare::Exact,
        ),
        (
            "SELECT event_id, score FROM events ORDER BY score NULLS FIRST, event_id LIMIT 20",
            vec![],
            Compare::Exact,
        ),
        (
            "SELECT event_id, score FROM events ORDER BY score DESC NULLS LAST, event_id LIMIT 20",
            vec![],
            Compare::Exact,
        ),
        (
            "SELECT event_id, score FROM events ORDER BY score DESC, event_id LIMIT 30",
            vec![],
            Compare::Exact,
        ),
        (
            "SELECT event_id, n FROM events ORDER BY 2 DESC, 1 LIMIT 7",
            vec![],
            Compare::Exact,
        ),
        (
            "SELECT n AS value, event_id FROM events ORDER BY value, event_id LIMIT 9",
            vec![],
            Compare::Exact,
        ),
        (
            "SELECT event_id FROM events WHERE tenant_id IN ('t1', 't2') AND score IS NOT NULL ORDER BY event_id",
            vec![],
            Compare::Exact,
        ),
        (
            "SELECT event_id, tenant_id FROM events WHERE tenant_id LIKE 't1%' ORDER BY event_id",
            vec![],
            Compare::Exact,
        ),
        (
            "SELECT tenant_id, n FROM events ORDER BY tenant_id, n LIMIT 15",
            vec![],
            Compare::Keys(2),
        ),
        (
            "SELECT tenant_id FROM events ORDER BY tenant_id DESC LIMIT 25 OFFSET 10",
            vec![],
            Compare::Keys(1),
        ),
        (
            "SELECT event_id FROM events ORDER BY event_id LIMIT 10 OFFSET 1000",
            vec![],
            Compare::Exact,
        ),
        (
            "SELECT event_id, payload FROM events WHERE NOT (n < 10) OR payload IS NULL ORDER BY event_id",
            vec![],
            Compare::Exact,
        ),
        (
            "SELECT event_id, ts FROM events ORDER BY ts DESC, event_id LIMIT 12",
            vec![],
            Compare::Exact,
        ),
        (
            "SELECT event_id, ts FROM events WHERE ts >= $1 ORDER BY ts, event_id",
            vec![json!("2024-05-01T05:00:00+02:00")],
            Compare::Exact,
        ),
        (
            "SELECT event_id, n FROM events WHERE tenant_id = $1 AND event_type = $2 AND n % 2 = 0",
            vec![json!("t4"), json!("buy")],
            Compare::Unordered,
        ),
        (
            "SELECT events.event_id FROM events WHERE events.n = 36 ORDER BY 1",
            vec![],
            Compare::Exact,
        ),
        (
            "SELECT event_id FROM events WHERE tenant_id = 'nobody'",
            vec![],
            Compare::Unordered,
        ),
        (
            "SELECT tenant_id, count(*) FROM events GROUP BY tenant_id",
            vec![],
            Compare::Unordered,
        ),
        (
            "SELECT count(*), count(score), min(n), max(ts), min(tenant_id) FROM events",
            vec![],
            Compare::Exact,
        ),
        (
            "SELECT count(*), count(score), min(n), max(n), sum(score) FROM events WHERE tenant_id = 'nobody'",
            vec![],
            Compare::Exact,
        ),
        (
            "SELECT tenant_id, event_type, count(*) AS c, max(score), min(ts) FROM events \
             GROUP BY 1, 2 ORDER BY c DESC, 1, 2 LIMIT 8",
            vec![],
            Compare::Exact,
        ),
        (
            "SELECT event_type, count(*) FROM events WHERE n > $1 GROUP BY event_type ORDER BY 2 DESC, 1",
            vec![json!(20)],
            Compare::Exact,
        ),
        (
            "SELECT count(payload), max(n) FROM events GROUP BY tenant_id ORDER BY 1, 2 LIMIT 3 OFFSET 2",
            vec![],
            Compare::Exact,
        ),
        (
            "SELECT score, count(*) FROM events GROUP BY score ORDER BY score NULLS FIRST LIMIT 5",
            vec![],
            Compare::Exact,
        ),
        (
            "SELECT DISTINCT tenant_id, event_type FROM events",
            vec![],
            Compare::Unordered,
        ),
        (
            "SELECT tenant_id, avg(n), sum(n) FROM events GROUP BY tenant_id ORDER BY 1",
            vec![],
            Compare::Exact,
        ),
        (
            "SELECT avg(n), avg(score), sum(n), count(*) FROM events",
            vec![],
            Compare::Exact,
        ),
        (
            "SELECT avg(n), sum(n) FROM events WHERE tenant_id = 'nobody'",
            vec![],
            Compare::Exact,
        ),
        (
            "SELECT count(DISTINCT tenant_id), count(*), min(score) FROM events",
            vec![],
            Compare::Exact,
        ),
        (
            "SELECT tenant_id, count(*) FROM events WHERE n > 30 GROUP BY 1 HAVING count(*) >= 7 ORDER BY 1",
            vec![],
            Compare::Exact,
        ),
        (
            "SELECT event_type FROM events GROUP BY event_type HAVING max(n) = 36 AND min(score) < $1 ORDER BY 1",
            vec![json!(1.0)],
            Compare::Exact,
        ),
        (
            "SELECT tenant_id, avg(n) FROM events GROUP BY 1 HAVING avg(n) > 18 ORDER BY 1",
            vec![],
            Compare::Exact,
        ),
        (
            "SELECT score FROM events GROUP BY score HAVING score IS NULL OR count(*) > 9 ORDER BY 1 NULLS FIRST",
            vec![],
            Compare::Exact,
        ),
        (
            "SELECT count(*) FROM events WHERE tenant_id = 'nobody' HAVING count(*) > 0",
            vec![],
            Compare::Exact,
        ),
        (
            "SELECT tenant_id FROM events GROUP BY 1 HAVING NOT (sum(n) < 700) ORDER BY 1 LIMIT 3",
            vec![],
            Compare::Exact,
        ),
        (
            "SELECT event_id FROM events WHERE upper(tenant_id) = 'T7' AND coalesce(score, -1) < 0 ORDER BY 1",
            vec![],
            Compare::Exact,
        ),
        (
            "SELECT event_type, count(*) FROM events WHERE date_trunc('hour', ts) = $1 GROUP BY 1 ORDER BY 1",
            vec![json!("2024-05-01T03:00:00Z")],
            Compare::Exact,
        ),
        (
            "SELECT event_type, count(DISTINCT n), count(*), avg(n), max(score) FROM events GROUP BY 1 ORDER BY 1",
            vec![],
            Compare::Exact,
        ),
        (
            "SELECT count(DISTINCT score), count(*), sum(n) FROM events WHERE tenant_id = 'nobody'",
            vec![],
            Compare::Exact,
        ),
        (
            "SELECT tenant_id, count(DISTINCT event_type) AS kinds FROM events WHERE n > 30 GROUP BY 1 ORDER BY kinds DESC, 1 LIMIT 4",
            vec![],
            Compare::Exact,
        ),
        (
            "SELECT event_type, avg(n) AS mean FROM events WHERE n < 5 GROUP BY 1 ORDER BY mean DESC, 1",
            vec![],
            Compare::Exact,
        ),
        (
            "SELECT DISTINCT score FROM events ORDER BY score DESC NULLS LAST LIMIT 6 OFFSET 1",
            vec![],
            Compare::Exact,
        ),
        (
            "SELECT tenant_id, sum(score) FROM events GROUP BY tenant_id ORDER BY tenant_id",
            vec![],
            Compare::Exact,
        ),
    ];
    for (sql, params, compare) in &corpus {
        let reply = ask(&gate, sql, params).await;
        assert_eq!(reply.status, 200, "{sql}: {}", reply.body);
        let types: Vec<ResultType> = reply.body["columns"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| column_type(c["type"].as_str().unwrap()))
            .collect();
        let got: Vec<Vec<Value>> = serde_json::from_value(reply.body["rows"].clone()).unwrap();
        let want = oracle_rows(&oracle, sql, params, &types).await;
        match compare {
            Compare::Exact => assert_eq!(got, want, "{sql}"),
            Compare::Unordered => assert_eq!(sorted(got), sorted(want), "{sql}"),
            Compare::Keys(n) => {
                let keys = |rows: &[Vec<Value>]| rows.iter().map(|r| r[..*n].to_vec()).collect::<Vec<_>>();
                assert_eq!(keys(&got), keys(&want), "{sql}");
            }
        }
    }
    gate.stop().await;
}

#[tokio::test]
async fn a_filter_fixing_the_partition_key_visits_one_shard() {
    let gate = TestServer::start("pruning", "").await;
    load_rows(&gate).await;
    let pinned = ask(
        &gate,
        "SELECT event_id FROM events WHERE tenant_id = $1 AND event_type = 'click'",
        &[json!("t3")],
    )
    .await;
    assert_eq!(pinned.status, 200, "{}", pinned.body);
    assert_eq!(pinned.body["shards"], 1);
    assert!(!pinned.body["rows"].as_array().unwrap().is_empty());
    let partial = ask(&gate, "SELECT event_id FROM events WHERE tenant_id = 't3'", &[]).await;
    assert_eq!(partial.body["shards"], 2);
    gate.stop().await;
}

#[tokio::test]
async fn bad_queries_get_400_naming_the_problem() {
    let gate = TestServer::start("query_errors", "[query]\nmax_rows = 50\n").await;
    load_rows(&gate).await;
    let cases = [
        (
            "SELECT * FROM events e JOIN logs l ON true",
            "joins are not supported",
        ),
        (
            "SELECT tenant_id FROM events GROUP BY 1 HAVING lower(tenant_id) = 't1'",
            "function lower is not supported",
        ),
        (
            "SELECT tenant_id, n FROM events GROUP BY tenant_id",
            "column n must appear in the GROUP BY clause",
        ),
        (
            "SELECT * FROM events WHERE tenant_id = 5",
            "refused the query: operator does not exist: text = integer",
        ),
        (
            "SELECT payload FROM events ORDER BY payload",
            "cannot ORDER BY a jsonb column",
        ),
        (
            "SELECT * FROM events",
            "the query returns more than 50 rows; add a LIMIT",
        ),
        (
            "INSERT INTO events (tenant_id) VALUES ('x')",
            "only SELECT is supported",
        ),
    ];
    for (sql, needle) in cases {
        let reply = ask(&gate, sql, &[]).await;
        assert_eq!(reply.status, 400, "{sql}: {}", reply.body);
        assert!(reply.error().contains(needle), "{sql}: {}", reply.error());
    }
    let malformed = gate
        .http
        .post(gate.url("/v1/query"))
        .body("{\"sequel\": 1}")
        .send()
        .await
        .unwrap();
    assert_eq!(malformed.status(), 400);
    gate.stop().await;
}

#[tokio::test]
async fn ndjson_answers_and_the_query_command_print_the_same_rows() {
    let gate = TestServer::start("query_cli", "").await;
    load_rows(&gate).await;
    let sql = "SELECT tenant_id, count(*) AS events FROM events WHERE tenant_id IN ('t1', 't2') GROUP BY 1 ORDER BY 1";
    let response = gate
        .http
        .post(gate.url("/v1/query"))
        .header("accept", "application/x-ndjson")
        .json(&json!({"sql": sql}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["content-type"], "application/x-ndjson");
    let text = response.text().await.unwrap();
    let lines: Vec<Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(
        lines[0]["columns"][1],
        json!({"name": "events", "type": "bigint"})
    );
    assert_eq!(lines[1..], [json!(["t1", 40]), json!(["t2", 40])]);

    let url = gate.url("");
    let output = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_shardgate"))
            .args(["query", sql, "--url", &url])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        "tenant_id | events\n----------+-------\nt1        | 40\nt2        | 40\n(2 rows)\n"
    );
    gate.stop().await;
}

#[tokio::test]
async fn a_query_over_a_stopped_shard_fails_with_502_naming_it() {
    let doomed = common::private_cluster("query_outage");
    let urls = vec![
        fresh_database(&common::clusters()[0], "query_outage").await,
        fresh_database(&doomed, "query_outage").await,
    ];
    let gate = TestServer::start_on(urls, "[pool]\nconnect_timeout = \"2s\"\n").await;
    load_rows(&gate).await;
    doomed.stop().unwrap();
    let reply = ask(&gate, "SELECT count(*) FROM events", &[]).await;
    assert_eq!(reply.status, 502, "{}", reply.body);
    assert!(reply.error().starts_with("shard s1 failed"), "{}", reply.error());
    assert_eq!(reply.body["details"], json!([{"shard": "s1"}]));
    gate.stop().await;
}
