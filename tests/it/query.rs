//! Reporting queries checked against an oracle: the same rows loaded through shardgate onto two
//! shards and copied into one plain Postgres database; every query's answer through shardgate
//! must equal the oracle's.

use crate::common::{TestServer, connect, fresh_database, fresh_shards};
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

/// Writes `count` events through `gate`: row `i` has a fixed id, one of ten tenants, one of
/// three event types, `n = i % 37`, and the fields `more(i)` gives.
async fn load_events(gate: &TestServer, count: usize, more: impl Fn(usize) -> Value) {
    let rows: Vec<Value> = (0..count)
        .map(|i| {
            let event_type = ["click", "view", "buy"][i % 3];
            let mut row = json!({
                "event_id": format!("0190a1b2-c3d4-7e5f-8a9b-{:012x}", i),
                "tenant_id": format!("t{}", i % 10),
                "event_type": event_type,
                "n": i % 37,
            });
            if let (Some(row), Value::Object(more)) = (row.as_object_mut(), more(i)) {
                row.extend(more);
            }
            row
        })
        .collect();
    let reply = gate.post_events(&Value::Array(rows)).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
}

async fn load_rows(gate: &TestServer) {
    load_events(gate, 400, |i| {
        json!({
            "ts": format!("2024-05-01T{:02}:{:02}:00Z", (i / 60) % 24, i % 60),
            "payload": if i % 4 == 0 { Value::Null } else { json!({"i": i}) },
            "score": if i % 5 == 0 { Value::Null } else { json!((i * 7 % 100) as f64 / 4.0) },
        })
    })
    .await;
}

/// A database holding every row of every shard in one `events` table.
async fn oracle(gate: &TestServer) -> tokio_postgres::Client {
    let url = fresh_database(&crate::common::clusters()[0], "oracle").await;
    let client = connect(&url).await;
    // shardgate pins query.time_zone (UTC by default) on every shard.
    client.batch_execute("SET TimeZone = 'UTC'").await.unwrap();
    let config = crate::common::config_for(&gate.shard_urls, "");
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

/// An answer read by tokio-postgres (in binary), as JSON.
struct Answer {
    /// Column names; the oracle's `*` also has the hidden `_sg_hash`, which is left out, as
    /// shardgate's `*` leaves it out.
    names: Vec<String>,
    /// Column types as the server described them.
    types: Vec<tokio_postgres::types::Type>,
    rows: Vec<Vec<Value>>,
}

/// What `server` (the oracle, or shardgate's listener) answers to `sql` prepared and bound to
/// `params`, cells read as `types`.
async fn answer_of(
    server: &tokio_postgres::Client,
    sql: &str,
    params: &[Value],
    types: &[ResultType],
) -> Answer {
    let params: Vec<JsonParam> = params.iter().cloned().map(JsonParam).collect();
    let refs: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = params.iter().map(|p| p as _).collect();
    let fail = |e: tokio_postgres::Error| -> ! { panic!("{sql}: {e}") };
    let statement = server.prepare(sql).await.unwrap_or_else(|e| fail(e));
    let visible = statement.columns().iter().filter(|c| c.name() != "_sg_hash");
    let names = visible.clone().map(|c| c.name().to_string()).collect();
    let column_types = visible.map(|c| c.type_().clone()).collect();
    let rows = server.query(&statement, &refs).await.unwrap_or_else(|e| fail(e));
    let rows = rows
        .iter()
        .map(|row| {
            types
                .iter()
                .enumerate()
                .map(|(i, ty)| Cell::read(row, i, *ty).unwrap().to_json())
                .collect()
        })
        .collect();
    Answer {
        names,
        types: column_types,
        rows,
    }
}

async fn ask(gate: &TestServer, sql: &str, params: &[Value]) -> crate::common::Reply {
    let response = gate
        .http
        .post(gate.url("/v1/query"))
        .json(&json!({"sql": sql, "params": params}))
        .send()
        .await
        .unwrap();
    crate::common::Reply::read(response).await
}

fn sorted(mut rows: Vec<Vec<Value>>) -> Vec<Vec<Value>> {
    rows.sort_by_key(|r| serde_json::to_string(r).unwrap());
    rows
}

/// Runs every query of `corpus` through shardgate, over HTTP and over the Postgres listener,
/// and on the oracle, and compares the answers' column names (and over the listener their
/// type OIDs), and their rows as `Compare` says.
async fn check_corpus(
    gate: &TestServer,
    oracle: &tokio_postgres::Client,
    corpus: &[(&str, Vec<Value>, Compare)],
) {
    let wire = crate::postgres::connect(gate).await;
    for (sql, params, compare) in corpus {
        let reply = ask(gate, sql, params).await;
        assert_eq!(reply.status, 200, "{sql}: {}", reply.body);
        let columns = reply.body["columns"].as_array().unwrap();
        let types: Vec<ResultType> = columns
            .iter()
            .map(|c| column_type(c["type"].as_str().unwrap()))
            .collect();
        let names: Vec<&str> = columns.iter().map(|c| c["name"].as_str().unwrap()).collect();
        let got: Vec<Vec<Value>> = serde_json::from_value(reply.body["rows"].clone()).unwrap();
        let want = answer_of(oracle, sql, params, &types).await;
        assert_eq!(names, want.names, "{sql}");
        compare.check(sql, &got, &want.rows);

        let through_wire = answer_of(&wire, sql, params, &types).await;
        assert_eq!(through_wire.names, want.names, "{sql} over the listener");
        assert_eq!(through_wire.types, want.types, "{sql} over the listener");
        compare.check(sql, &through_wire.rows, &want.rows);
    }
}

impl Compare {
    /// Asserts that `got` agrees with `want` as this says.
    fn check(&self, sql: &str, got: &[Vec<Value>], want: &[Vec<Value>]) {
        match self {
            Compare::Exact => assert_eq!(got, want, "{sql}"),
            Compare::Unordered => assert_eq!(sorted(got.to_vec()), sorted(want.to_vec()), "{sql}"),
            Compare::Keys(n) => {
                let keys = |rows: &[Vec<Value>]| rows.iter().map(|r| r[..*n].to_vec()).collect::<Vec<_>>();
                assert_eq!(keys(got), keys(want), "{sql}");
            }
        }
    }
}

#[tokio::test]
async fn answers_equal_one_postgres_holding_all_rows() {
    let gate = TestServer::start("query", &crate::postgres::listener("")).await;
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
        (
            "SELECT date_trunc('hour', ts) AS hour, count(*), avg(n) FROM events GROUP BY 1 ORDER BY 1",
            vec![],
            Compare::Exact,
        ),
        (
            "SELECT date_trunc('hour', ts), count(*) FROM events GROUP BY date_trunc('hour', ts) \
             ORDER BY 2 DESC, 1 LIMIT 5",
            vec![],
            Compare::Exact,
        ),
        (
            "SELECT lower(tenant_id) || '/' || event_type, count(*), sum(n) FROM events GROUP BY 1 ORDER BY 1",
            vec![],
            Compare::Exact,
        ),
        (
            "SELECT n % 5 AS bucket, count(*), min(score) FROM events GROUP BY n % 5 ORDER BY bucket",
            vec![],
            Compare::Exact,
        ),
        (
            "SELECT upper(tenant_id) AS t, count(DISTINCT event_type) FROM events GROUP BY tenant_id ORDER BY t",
            vec![],
            Compare::Exact,
        ),
        (
            "SELECT count(*), max(n) FROM events GROUP BY date_trunc('day', ts), n / 10 ORDER BY 1, 2",
            vec![],
            Compare::Exact,
        ),
        (
            "SELECT event_id, n * 2 + 1 AS odd, length(tenant_id) FROM events ORDER BY odd DESC, event_id LIMIT 10",
            vec![],
            Compare::Exact,
        ),
        (
            "SELECT DISTINCT n / 10 AS tens FROM events ORDER BY 1",
            vec![],
            Compare::Exact,
        ),
        (
            "SELECT event_id FROM events WHERE n > $2 AND coalesce(score, $1) > 20 ORDER BY 1",
            vec![json!(21.5), json!(10)],
            Compare::Exact,
        ),
        (
            "SELECT coalesce(score, 0), count(*) FROM events GROUP BY 1 HAVING count(*) > 3 ORDER BY 1",
            vec![],
            Compare::Exact,
        ),
        (
            "SELECT date_trunc($1, ts) AS bucket, count(*) FROM events GROUP BY 1 ORDER BY 1",
            vec![json!("hour")],
            Compare::Exact,
        ),
        (
            "SELECT event_id, n / 4.0 AS quarter FROM events ORDER BY quarter DESC, event_id LIMIT 5",
            vec![],
            Compare::Exact,
        ),
        (
            "SELECT tenant_id, count(*) FROM events GROUP BY 1 HAVING upper(tenant_id) <> 'T3' ORDER BY 1",
            vec![],
            Compare::Exact,
        ),
        (
            "SELECT abs(n - 18) AS distance, count(*) FROM events WHERE n <> 18 GROUP BY 1 \
             ORDER BY 2 DESC, 1 LIMIT 4",
            vec![],
            Compare::Exact,
        ),
        (
            "SELECT ts::date AS day, count(*) FROM events GROUP BY 1 ORDER BY 1",
            vec![],
            Compare::Exact,
        ),
        (
            "SELECT CASE WHEN n < 10 THEN 'low' WHEN n < 30 THEN 'mid' ELSE 'high' END AS band, \
             count(*), sum(n) FROM events GROUP BY 1 ORDER BY 1",
            vec![],
            Compare::Exact,
        ),
        (
            "SELECT extract(hour FROM ts) AS h, count(*) FROM events GROUP BY 1 ORDER BY 1",
            vec![],
            Compare::Exact,
        ),
        (
            "SELECT count(*) FROM events WHERE ts < now() - interval '1 day' AND ts > current_timestamp - interval '100 years'",
            vec![],
            Compare::Exact,
        ),
        (
            "SELECT event_id, round(score) AS r, greatest(n, 20) AS g FROM events ORDER BY event_id LIMIT 10",
            vec![],
            Compare::Exact,
        ),
        (
            "SELECT split_part(tenant_id, 't', 2)::int AS k, count(*) FROM events GROUP BY 1 ORDER BY 1",
            vec![],
            Compare::Exact,
        ),
        (
            "SELECT date_part('minute', ts) AS m, count(*) FROM events \
             WHERE nullif(event_type, 'buy') IS NOT NULL GROUP BY 1 ORDER BY 2 DESC, 1 LIMIT 5",
            vec![],
            Compare::Exact,
        ),
        (
            "SELECT event_id, CAST(n AS numeric(10, 2)) / 3 AS third FROM events ORDER BY 2 DESC, 1 LIMIT 3",
            vec![],
            Compare::Exact,
        ),
        (
            "SELECT event_type, sum(n * 2), avg(n / 4.0), avg(length(tenant_id)), max(ts::date) \
             FROM events GROUP BY 1 ORDER BY 1",
            vec![],
            Compare::Exact,
        ),
        (
            "SELECT count(*) FILTER (WHERE n > 20) AS big, count(score) FILTER (WHERE event_type = 'buy'), \
             avg(n) FILTER (WHERE score IS NULL), sum(score) FILTER (WHERE n % 2 = 0) FROM events",
            vec![],
            Compare::Exact,
        ),
        (
            "SELECT tenant_id, count(DISTINCT n % 7) FILTER (WHERE event_type <> $1) FROM events GROUP BY 1 ORDER BY 1",
            vec![json!("view")],
            Compare::Exact,
        ),
        (
            "SELECT count(DISTINCT lower(event_type) || tenant_id), avg(score * 2) FROM events",
            vec![],
            Compare::Exact,
        ),
        (
            "SELECT avg(CAST(n AS numeric(10, 2))), avg(score * 2), sum(n / 3.0) FROM events WHERE tenant_id = 'nobody'",
            vec![],
            Compare::Exact,
        ),
        (
            "SELECT event_type FROM events GROUP BY 1 HAVING count(*) FILTER (WHERE n > 30) > 5 ORDER BY 1",
            vec![],
            Compare::Exact,
        ),
        (
            "SELECT event_id FROM events ORDER BY ts DESC, n, event_id LIMIT 12 OFFSET 3",
            vec![],
            Compare::Exact,
        ),
        (
            "SELECT event_id, n FROM events WHERE n > $1 ORDER BY n, event_id LIMIT $2 OFFSET $3",
            vec![json!(3), json!(7), json!(40)],
            Compare::Exact,
        ),
        (
            "SELECT tenant_id, count(*) FROM events WHERE tenant_id = ANY($1) AND n <> ALL($2) GROUP BY 1 ORDER BY 1",
            vec![json!(["t1", "t3", null]), json!([1, 2, 3])],
            Compare::Exact,
        ),
        (
            "SELECT count(*) FROM events WHERE event_type = ANY(ARRAY['buy', 'view']) AND score > ANY($1)",
            vec![json!([10.5, 20])],
            Compare::Exact,
        ),
        (
            "SELECT tenant_id FROM events GROUP BY 1 ORDER BY count(*) FILTER (WHERE n > 18) DESC, 1 LIMIT 4",
            vec![],
            Compare::Exact,
        ),
        (
            "SELECT event_type, count(*) FROM events GROUP BY 1 ORDER BY max(score) NULLS FIRST, avg(n) DESC",
            vec![],
            Compare::Exact,
        ),
        (
            "SELECT tenant_id, event_id FROM events WHERE n > 30 ORDER BY lower(event_type), score DESC NULLS LAST, event_id",
            vec![],
            Compare::Exact,
        ),
    ];
    check_corpus(&gate, &oracle, &corpus).await;
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

    let listed = ask(
        &gate,
        "SELECT event_id FROM events WHERE tenant_id IN ('t3') AND event_type = ANY($1)",
        &[json!(["click"])],
    )
    .await;
    assert_eq!(listed.body["shards"], 1);
    assert_eq!(sorted_rows(&listed), sorted_rows(&pinned));

    // Each key's owner, then the owners of several keys together.
    let mut owners = std::collections::BTreeSet::new();
    for tenant in ["t1", "t2", "t5"] {
        let sql = format!("SELECT count(*) FROM events WHERE tenant_id = '{tenant}' AND event_type = 'view'");
        let plan = explain(&gate, &sql, &[]).await;
        assert_eq!(plan["shards"].as_array().unwrap().len(), 1);
        owners.insert(plan["shards"][0].as_str().unwrap().to_string());
    }
    let several = "SELECT count(*) FROM events WHERE tenant_id = ANY($1) AND event_type IN ('view')";
    let plan = explain(&gate, several, &[json!(["t1", "t2", "t5"])]).await;
    let visited: std::collections::BTreeSet<String> = plan["shards"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap().to_string())
        .collect();
    assert_eq!(visited, owners);
    let counted = ask(&gate, several, &[json!(["t1", "t2", "t5"])]).await;
    let everywhere = ask(
        &gate,
        "SELECT count(*) FROM events WHERE lower(tenant_id) IN ('t1', 't2', 't5') AND event_type = 'view'",
        &[],
    )
    .await;
    assert_eq!(everywhere.body["shards"], 2);
    assert_eq!(counted.status, 200, "{}", counted.body);
    assert_eq!(counted.body["rows"], everywhere.body["rows"]);
    assert_eq!(
        counted.body["rows"],
        json!([[40]]),
        "t1, t2 and t5 each have 40 rows, a third of them views"
    );
    gate.stop().await;
}

fn sorted_rows(reply: &crate::common::Reply) -> Vec<Value> {
    let mut rows = reply.body["rows"].as_array().unwrap().clone();
    rows.sort_by_key(|r| r.to_string());
    rows
}

async fn explain(gate: &TestServer, sql: &str, params: &[Value]) -> Value {
    let response = gate
        .http
        .post(gate.url("/v1/query"))
        .json(&json!({"sql": sql, "params": params, "explain": true}))
        .send()
        .await
        .unwrap();
    let reply = crate::common::Reply::read(response).await;
    assert_eq!(reply.status, 200, "{sql}: {}", reply.body);
    reply.body
}

#[tokio::test]
async fn explain_shows_the_shards_the_statement_and_the_merge() {
    let gate = TestServer::start("explain", "").await;
    let sql =
        "SELECT event_id FROM events WHERE tenant_id = $1 AND event_type = 'click' ORDER BY ts DESC LIMIT 5";
    let plan = explain(&gate, sql, &[json!("t3")]).await;
    assert_eq!(plan["shards"].as_array().unwrap().len(), 1);
    assert_eq!(
        plan["statement"],
        "SELECT \"event_id\", \"ts\" FROM \"events\" WHERE \"tenant_id\" = $1 AND \"event_type\" = 'click' \
         ORDER BY 2 DESC NULLS FIRST LIMIT 5"
    );
    let output = query_command(
        &gate,
        &["SELECT event_type, avg(n) FROM events GROUP BY 1", "--explain"],
    )
    .await;
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        "shards     s0, s1\n\
         statement  SELECT \"event_type\", sum(\"n\"), count(\"n\"), \"event_type\" FROM \"events\" GROUP BY 4 LIMIT 100001\n\
         merge      groups combined per key, then HAVING, ORDER BY, OFFSET and LIMIT\n"
    );
    let plan = explain(
        &gate,
        "SELECT event_type, count(DISTINCT tenant_id), count(DISTINCT payload->>'plan'), count(*) FROM events GROUP BY 1",
        &[],
    )
    .await;
    assert_eq!(
        plan["statement"],
        "SELECT * FROM (SELECT \"event_type\", count(*), \"event_type\", \"tenant_id\", \"payload\" ->> 'plan', \
         GROUPING(\"tenant_id\", \"payload\" ->> 'plan') FROM \"events\" \
         GROUP BY GROUPING SETS ((3, 4), (3, 5))) AS parts(c1, c2, c3, c4, c5, c6) \
         ORDER BY c3 COLLATE \"C\" ASC NULLS LAST, c6 ASC NULLS LAST, c4 COLLATE \"C\" ASC NULLS LAST, \
         c5 COLLATE \"C\" ASC NULLS LAST",
        "one grouping set per counted value, rows sorted by group, set and value"
    );
    assert_eq!(
        plan["merge"],
        "sorted group rows merged, groups combined as they end and distinct values counted as runs, \
         then HAVING, ORDER BY, OFFSET and LIMIT"
    );
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
            "SELECT pg_sleep(1) FROM events",
            "function pg_sleep is not supported",
        ),
        (
            "SELECT ts - ts FROM events LIMIT 1",
            "ts - ts has type interval, which shardgate cannot return",
        ),
        (
            "SELECT now() - ts FROM events LIMIT 1",
            "now() - ts has type interval, which shardgate cannot return",
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
            "cannot ORDER BY a jsonb value (nor take its min or max); order by text or a number \
             taken from it, such as payload->>'key' or (payload->>'key')::numeric",
        ),
        (
            "SELECT * FROM events",
            "the query returns more than 50 rows; add a LIMIT",
        ),
        (
            "SELECT event_id FROM events GROUP BY 1 HAVING count(*) > 1",
            "the query has more than 50 groups on shard s",
        ),
        (
            "SELECT event_id, count(DISTINCT n) FROM events GROUP BY 1",
            "the query has more than 50 groups; narrow its WHERE or GROUP BY",
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
    let any = ask(
        &gate,
        "SELECT count(*) FROM events WHERE tenant_id = ANY($1)",
        &[json!(["t1", "t3"])],
    )
    .await;
    let listed = ask(
        &gate,
        "SELECT count(*) FROM events WHERE tenant_id IN ('t1', 't3')",
        &[],
    )
    .await;
    assert_eq!(any.status, 200, "{}", any.body);
    assert_eq!(any.body["rows"], listed.body["rows"], "{}", any.body);
    assert_eq!(any.body["rows"], json!([[80]]));
    let not_an_array = ask(
        &gate,
        "SELECT count(*) FROM events WHERE tenant_id = ANY($1)",
        &[json!("t1")],
    )
    .await;
    assert_eq!(not_an_array.status, 400, "{}", not_an_array.body);
    assert_eq!(
        not_an_array.error(),
        "parameter $1: a text[] parameter must be a JSON array"
    );
    let mistyped = ask(
        &gate,
        "SELECT event_id FROM events WHERE n > $1",
        &[json!("many")],
    )
    .await;
    assert_eq!(mistyped.status, 400, "{}", mistyped.body);
    assert!(
        mistyped.error().starts_with("parameter $1: "),
        "{}",
        mistyped.error()
    );
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

async fn ask_ndjson(gate: &TestServer, sql: &str) -> Vec<Value> {
    let response = gate
        .http
        .post(gate.url("/v1/query"))
        .header("accept", "application/x-ndjson")
        .json(&json!({"sql": sql}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "application/x-ndjson");
    let text = response.text().await.unwrap();
    text.lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

#[tokio::test]
async fn ndjson_answers_and_the_query_command_print_the_same_rows() {
    let gate = TestServer::start("query_cli", "").await;
    load_rows(&gate).await;
    let sql = "SELECT tenant_id, count(*) AS events FROM events WHERE tenant_id IN ('t1', 't2') GROUP BY 1 ORDER BY 1";
    let lines = ask_ndjson(&gate, sql).await;
    assert_eq!(
        lines[0]["columns"][1],
        json!({"name": "events", "type": "bigint"})
    );
    assert_eq!(lines[1..], [json!(["t1", 40]), json!(["t2", 40])]);

    let output = query_command(&gate, &[sql]).await;
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        "tenant_id | events\n----------+-------\nt1        | 40\nt2        | 40\n(2 rows)\n"
    );
    let output = query_command(&gate, &[sql, "--format", "csv"]).await;
    assert!(output.status.success());
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        "tenant_id,events\nt1,40\nt2,40\n"
    );
    gate.stop().await;
}

/// Runs `shardgate query ARGS --url <gate>`.
async fn query_command(gate: &TestServer, args: &[&str]) -> std::process::Output {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_shardgate"));
    command.arg("query").args(args).args(["--url", &gate.url("")]);
    tokio::task::spawn_blocking(move || command.output().unwrap())
        .await
        .unwrap()
}

#[tokio::test]
async fn a_query_over_a_stopped_shard_fails_with_502_naming_it() {
    let (doomed, urls) = crate::common::shards_with_one_to_stop("query_outage").await;
    let gate = TestServer::start_on(urls, "[pool]\nconnect_timeout = \"2s\"\n").await;
    load_rows(&gate).await;
    doomed.stop().unwrap();
    let reply = ask(&gate, "SELECT count(*) FROM events", &[]).await;
    assert_eq!(reply.status, 502, "{}", reply.body);
    assert!(
        reply
            .error()
            .starts_with("shard s1 is unreachable: error connecting to server: ")
            && reply.error().contains("Connection refused"),
        "{}",
        reply.error()
    );
    assert_eq!(reply.body["details"], json!([{"shard": "s1"}]));
    gate.stop().await;
}

#[tokio::test]
async fn a_shard_past_the_statement_timeout_fails_the_query_with_504_naming_it() {
    let gate = TestServer::start("query_timeout", "[query]\nstatement_timeout = \"300ms\"\n").await;
    load_rows(&gate).await;
    let locker = connect(&gate.shard_urls[1]).await;
    locker
        .batch_execute("BEGIN; LOCK TABLE events IN ACCESS EXCLUSIVE MODE")
        .await
        .unwrap();
    let reply = ask(&gate, "SELECT event_type, count(*) FROM events GROUP BY 1", &[]).await;
    assert_eq!(reply.status, 504, "{}", reply.body);
    assert_eq!(
        reply.error(),
        "shard s1 did not answer within the statement timeout"
    );
    assert_eq!(reply.body["details"], json!([{"shard": "s1"}]));
    locker.batch_execute("ROLLBACK").await.unwrap();
    let reply = ask(&gate, "SELECT count(*) FROM events", &[]).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.body["rows"], json!([[400]]));
    gate.stop().await;
}

#[tokio::test]
async fn ndjson_streams_merged_rows_and_ends_with_an_error_line_past_the_row_cap() {
    let gate = TestServer::start("query_stream", "[query]\nmax_rows = 300\n").await;
    load_rows(&gate).await;
    let sql = "SELECT event_id, n FROM events ORDER BY n DESC, event_id LIMIT 290 OFFSET 20";
    let lines = ask_ndjson(&gate, sql).await;
    let json = ask(&gate, sql, &[]).await;
    assert_eq!(json.status, 200, "{}", json.body);
    assert_eq!(lines[0]["columns"], json.body["columns"]);
    assert_eq!(lines[0]["shards"], 2);
    assert_eq!(lines.len(), 291);
    assert_eq!(Value::from(lines[1..].to_vec()), json.body["rows"]);
    let over = "SELECT event_id FROM events ORDER BY event_id LIMIT 301";
    assert_eq!(
        ask_ndjson(&gate, over).await.len(),
        302,
        "streamed, a LIMIT may pass the cap"
    );
    let whole = ask(&gate, over, &[]).await;
    assert_eq!(whole.status, 400);
    assert_eq!(
        whole.error(),
        "the answer has more than 300 rows; ask for application/x-ndjson to stream it, or lower the LIMIT"
    );

    let capped = ask_ndjson(&gate, "SELECT event_id FROM events ORDER BY event_id").await;
    assert_eq!(capped.len(), 1 + 300 + 1, "head, the cap's rows, the error");
    assert_eq!(
        capped[301],
        json!({"error": "the query returns more than 300 rows; add a LIMIT", "details": []})
    );
    let export = query_command(
        &gate,
        &["SELECT event_id FROM events ORDER BY event_id", "--format", "csv"],
    )
    .await;
    assert!(!export.status.success());
    assert_eq!(String::from_utf8_lossy(&export.stdout).lines().count(), 301);
    assert!(
        String::from_utf8_lossy(&export.stderr)
            .contains("the answer ended early: the query returns more than 300 rows"),
        "{}",
        String::from_utf8_lossy(&export.stderr)
    );

    let metrics = gate.metrics_page().await;
    for line in [
        "shardgate_query_rows_total 1481",
        "shardgate_query_duration_seconds_count{outcome=\"200\"} 3",
        "shardgate_query_duration_seconds_count{outcome=\"aborted\"} 2",
    ] {
        assert!(metrics.lines().any(|l| l == line), "{line} in\n{metrics}");
    }
    gate.stop().await;
}

#[tokio::test]
async fn a_client_that_stops_reading_holds_a_connection_only_until_the_statement_timeout() {
    let gate = TestServer::start(
        "query_stall",
        "[query]\nstatement_timeout = \"3s\"\nwait_timeout = \"300ms\"\nconnections_per_shard = 1\nmax_rows = 1000000\n",
    )
    .await;
    // Far more rows than the buffers between a shard and the client hold.
    connect(&gate.shard_urls[0])
        .await
        .batch_execute(
            "INSERT INTO events (event_id, tenant_id, event_type, n, ts, _sg_hash) \
             SELECT gen_random_uuid(), 't', 'bulk', i, now(), 0 FROM generate_series(1, 600000) i",
        )
        .await
        .unwrap();
    let mut stalled = gate
        .http
        .post(gate.url("/v1/query"))
        .header("accept", "application/x-ndjson")
        .json(&json!({"sql": "SELECT event_id, n FROM events ORDER BY n"}))
        .send()
        .await
        .unwrap();
    assert_eq!(stalled.status(), 200);
    let first = stalled.chunk().await.unwrap().unwrap();
    assert!(first.starts_with(b"{\"columns\""));
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;

    let busy = ask(&gate, "SELECT count(*) FROM events", &[]).await;
    assert_eq!(busy.status, 503, "{}", busy.body);
    assert_eq!(
        busy.error(),
        "all query connections to shard s0 are busy; retry later"
    );
    assert_eq!(busy.headers["retry-after"], "1");

    // The shard's part stops once nothing was read for the statement timeout (3 s).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    let freed = loop {
        let reply = ask(&gate, "SELECT count(*) FROM events", &[]).await;
        if reply.status != 503 || std::time::Instant::now() > deadline {
            break reply;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    };
    assert_eq!(freed.status, 200, "{}", freed.body);
    assert_eq!(freed.body["rows"], json!([[600000]]));

    let mut rest = Vec::from(first);
    while let Some(chunk) = stalled.chunk().await.unwrap() {
        rest.extend_from_slice(&chunk);
    }
    let text = String::from_utf8(rest).unwrap();
    let last: Value = serde_json::from_str(text.lines().last().unwrap()).unwrap();
    assert!(
        last["error"]
            .as_str()
            .is_some_and(|e| e.contains("statement timeout")),
        "the stalled answer ends with an error: {last}"
    );
    assert!(text.lines().count() < 600_002, "the stalled answer is cut short");
    gate.stop().await;
}

#[tokio::test]
async fn ordering_text_is_refused_once_a_shard_that_does_not_collate_bytewise_joins() {
    let urls = fresh_shards("collation_join").await;
    let cluster = &crate::common::clusters()[0];
    connect(&cluster.url("postgres"))
        .await
        .batch_execute(
            "CREATE DATABASE t_collation_joiner TEMPLATE template0 LC_COLLATE 'C.UTF-8' LC_CTYPE 'C.UTF-8'",
        )
        .await
        .unwrap();
    let extra = format!(
        "{}[reshard]\ngrace = \"100ms\"\ncleanup_delay = \"1s\"\n[query]\nstatement_timeout = \"1s\"\n",
        crate::admin::with_token()
    );
    let gate = TestServer::start_on(urls, &extra).await;
    load_rows(&gate).await;
    let sql = "SELECT tenant_id FROM events ORDER BY tenant_id LIMIT 3";
    let before = ask(&gate, sql, &[]).await;
    assert_eq!(before.status, 200, "the C shards order text: {}", before.body);
    let added = crate::admin::add_shard(&gate, "s2", &cluster.url("t_collation_joiner")).await;
    assert_eq!(added.status, 202, "{}", added.body);
    crate::admin::wait_done(&gate, added.body["migration"].as_i64().unwrap()).await;
    let after = ask(&gate, sql, &[]).await;
    assert_eq!(after.status, 400, "the new shard is asked too: {}", after.body);
    assert!(
        after.error().contains("needs shards whose collation is C"),
        "{}",
        after.error()
    );
    gate.stop().await;
}

/// One shard database per test cluster, named after `test`, created from `template0` with
/// the locale `options` (as `CREATE DATABASE` words them).
async fn collated_shards(test: &str, options: &str) -> Vec<String> {
    let mut urls = Vec::new();
    for (i, cluster) in crate::common::clusters().iter().enumerate() {
        let admin = connect(&cluster.url("postgres")).await;
        let name = format!("t_{test}_{i}");
        admin
            .batch_execute(&format!("CREATE DATABASE {name} TEMPLATE template0 {options}"))
            .await
            .unwrap();
        urls.push(cluster.url(&name));
    }
    urls
}

#[tokio::test]
async fn ordering_text_is_refused_on_shards_that_do_not_collate_bytewise() {
    let urls = collated_shards("collated", "LC_COLLATE 'C.UTF-8' LC_CTYPE 'C.UTF-8'").await;
    let gate = TestServer::start_on(urls, "").await;
    load_rows(&gate).await;
    for sql in [
        "SELECT tenant_id FROM events ORDER BY tenant_id LIMIT 3",
        "SELECT max(tenant_id) FROM events",
        "SELECT tenant_id FROM events GROUP BY 1 HAVING tenant_id > 't5'",
    ] {
        let reply = ask(&gate, sql, &[]).await;
        assert_eq!(reply.status, 400, "{sql}: {}", reply.body);
        assert!(
            reply.error().contains("needs shards whose collation is C"),
            "{sql}: {}",
            reply.error()
        );
    }
    for sql in [
        "SELECT tenant_id FROM events GROUP BY 1 HAVING tenant_id = 't5'",
        "SELECT n FROM events ORDER BY n DESC LIMIT 1",
    ] {
        let reply = ask(&gate, sql, &[]).await;
        assert_eq!(reply.status, 200, "{sql}: {}", reply.body);
    }
    gate.stop().await;
}

#[tokio::test]
async fn days_are_cut_in_the_configured_time_zone_on_every_shard() {
    let gate = TestServer::start("time_zone", "[query]\ntime_zone = \"Asia/Tokyo\"\n").await;
    load_rows(&gate).await;
    // Every row is on 2024-05-01 between 00:00 and 06:59 UTC: 09:00-15:59 in Tokyo.
    let sql =
        "SELECT date_trunc('day', ts) AS day, ts::date AS local_date, count(*) FROM events GROUP BY 1, 2";
    let reply = ask(&gate, sql, &[]).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(
        reply.body["rows"],
        json!([["2024-04-30T15:00:00Z", "2024-05-01", 400]])
    );
    gate.stop().await;
}

/// The detail an event table carries in `payload`, generated so that every key is sometimes
/// missing and sometimes JSON null, numbers come as numbers and as strings (and at other
/// scales: `2` and `2.0`), and objects nest and hold arrays.
fn payload(i: usize) -> Value {
    if i.is_multiple_of(13) {
        return Value::Null;
    }
    let mut p = serde_json::Map::new();
    let mut put = |key: &str, value: Option<Value>| {
        if let Some(value) = value {
            p.insert(key.to_string(), value);
        }
    };
    put(
        "plan",
        [
            Some(json!("free")),
            Some(json!("pro")),
            Some(json!("team")),
            Some(Value::Null),
            None,
        ][i % 5]
            .clone(),
    );
    put(
        "country",
        [Some(json!("DE")), Some(json!("FR")), Some(json!("US")), None][i % 4].clone(),
    );
    put(
        "beta",
        [Some(json!(true)), Some(json!(false)), None, Some(json!("true"))][i % 4].clone(),
    );
    let n = (i % 11) as i64;
    put(
        "n",
        [
            Some(json!(n)),
            Some(json!(n.to_string())),
            Some(Value::Null),
            None,
            Some(json!(n)),
        ][i % 5]
            .clone(),
    );
    let amount = (i % 9) as f64 * 1.25;
    put(
        "amount",
        [Some(json!(amount)), Some(json!(format!("{amount:.2}"))), None][i % 3].clone(),
    );
    let w: Value = if i.is_multiple_of(2) {
        json!(i % 3)
    } else {
        serde_json::from_str(&format!("{}.0", i % 3)).unwrap()
    };
    put("w", Some(w));
    put(
        "nested",
        [
            Some(json!({"a": {"b": i % 4}})),
            Some(json!({"a": null})),
            Some(json!({"a": [1, i % 3]})),
            None,
        ][i % 4]
            .clone(),
    );
    let tags: Vec<&str> = ["x", "y", "z"].into_iter().take(i % 4).collect();
    put("tags", (i % 6 != 5).then(|| json!(tags)));
    put(
        "ts",
        i.is_multiple_of(3)
            .then(|| json!(format!("2024-05-{:02}T{:02}:30:00+02:00", 1 + i % 5, i % 24))),
    );
    Value::Object(p)
}

#[tokio::test]
async fn reports_over_json_payloads_equal_one_postgres_holding_all_rows() {
    let gate = TestServer::start("query_json", &crate::postgres::listener("")).await;
    load_events(&gate, 600, |i| json!({"payload": payload(i)})).await;
    let oracle = oracle(&gate).await;
    let corpus: Vec<(&str, Vec<Value>, Compare)> = vec![
        (
            "SELECT sum((payload->>'n')::int), count(payload->'n'), count(payload->>'n'), count(*) FROM events",
            vec![],
            Compare::Exact,
        ),
        (
            "SELECT payload->>'plan' AS plan, count(*), sum((payload->>'amount')::numeric) FROM events \
             GROUP BY payload->>'plan' ORDER BY 1 NULLS FIRST",
            vec![],
            Compare::Exact,
        ),
        (
            "SELECT count(*) FROM events WHERE payload->>'country' = 'DE'",
            vec![],
            Compare::Exact,
        ),
        (
            "SELECT count(*) FROM events WHERE payload @> '{\"beta\": true}'",
            vec![],
            Compare::Exact,
        ),
        (
            "SELECT event_type, count(*) FROM events WHERE '{\"country\": \"FR\"}' <@ payload GROUP BY 1 ORDER BY 1",
            vec![],
            Compare::Exact,
        ),
        (
            "SELECT count(*) FILTER (WHERE payload ? 'tags'), count(*) FILTER (WHERE payload ?| array['nested', 'beta']), \
             count(*) FILTER (WHERE payload ?& array['plan', 'country']) FROM events",
            vec![],
            Compare::Exact,
        ),
        (
            "SELECT payload->'nested' AS nested, count(*) FROM events GROUP BY 1",
            vec![],
            Compare::Unordered,
        ),
        (
            "SELECT payload->'n' AS n, count(*) FROM events GROUP BY 1",
            vec![],
            Compare::Unordered,
        ),
        (
            "SELECT payload#>>'{nested,a,b}' AS b, count(*) FROM events GROUP BY 1 ORDER BY 1 NULLS LAST",
            vec![],
            Compare::Exact,
        ),
        (
            "SELECT payload#>'{nested,a}' AS a, payload#>'{nested,a}' IS NULL AS gone FROM events \
             WHERE event_type = 'view' ORDER BY event_id LIMIT 12",
            vec![],
            Compare::Exact,
        ),
        (
            "SELECT jsonb_typeof(payload->'n') AS t, count(*) FROM events GROUP BY 1 ORDER BY 1",
            vec![],
            Compare::Exact,
        ),
        (
            "SELECT tenant_id, sum(jsonb_array_length(payload->'tags')) FROM events GROUP BY 1 \
             HAVING sum(jsonb_array_length(payload->'tags')) > 25 ORDER BY 1",
            vec![],
            Compare::Exact,
        ),
        (
            "SELECT jsonb_extract_path_text(payload, 'nested', 'a', 'b') AS b, \
             jsonb_extract_path(payload, 'nested') IS NULL AS missing, count(*) FROM events GROUP BY 1, 2 ORDER BY 1, 2",
            vec![],
            Compare::Exact,
        ),
        (
            "SELECT event_id, payload->'tags'->0 AS first_tag, payload->'tags'->>1 AS second FROM events \
             WHERE payload->'tags' @> '[\"x\"]' ORDER BY event_id LIMIT 15",
            vec![],
            Compare::Exact,
        ),
        (
            "SELECT ((payload->>'ts')::timestamptz)::date AS day, count(*) FROM events WHERE payload ? 'ts' \
             GROUP BY 1 ORDER BY 1",
            vec![],
            Compare::Exact,
        ),
        (
            "SELECT max((payload->>'amount')::double precision), min((payload->>'ts')::timestamptz), \
             bool_or((payload->>'beta')::boolean), bool_and((payload->>'beta')::boolean) FROM events",
            vec![],
            Compare::Exact,
        ),
        (
            "SELECT payload->>'plan' AS plan, count(*) FROM events GROUP BY 1 \
             HAVING payload->>'plan' IS NOT NULL AND payload->>'plan' <> 'team' ORDER BY 1 DESC",
            vec![],
            Compare::Exact,
        ),
        (
            "SELECT event_id FROM events WHERE payload ? 'n' \
             ORDER BY (payload->>'n')::int DESC NULLS LAST, event_id LIMIT 9",
            vec![],
            Compare::Exact,
        ),
        (
            "SELECT payload->>'plan' AS plan FROM events GROUP BY 1 ORDER BY count(*) DESC, 1 LIMIT 2",
            vec![],
            Compare::Exact,
        ),
        (
            "SELECT count(*), avg((payload->>'n')::bigint) FROM events WHERE payload->>'plan' = $1 AND (payload->>'n')::int > $2",
            vec![json!("pro"), json!(3)],
            Compare::Exact,
        ),
        (
            "SELECT upper(payload->>'country') AS c, count(*) FROM events WHERE NOT (payload ? 'plan') GROUP BY 1 ORDER BY 1",
            vec![],
            Compare::Exact,
        ),
        (
            "SELECT count(DISTINCT tenant_id), count(DISTINCT event_type), count(DISTINCT payload->>'plan'), \
             count(DISTINCT payload->'nested'), count(DISTINCT payload->'w'), count(*) FROM events",
            vec![],
            Compare::Exact,
        ),
        (
            "SELECT event_type, count(DISTINCT tenant_id), \
             count(DISTINCT (payload->>'n')::int) FILTER (WHERE payload->>'country' <> 'US'), \
             avg((payload->>'amount')::numeric), count(DISTINCT tenant_id) FILTER (WHERE n > 10), sum(n) \
             FROM events GROUP BY 1 ORDER BY 1",
            vec![],
            Compare::Exact,
        ),
        (
            "SELECT tenant_id, count(DISTINCT payload->>'plan') AS plans, count(DISTINCT n % 4) AS kinds FROM events \
             GROUP BY 1 HAVING count(DISTINCT payload->>'plan') > 2 ORDER BY kinds DESC, 1",
            vec![],
            Compare::Exact,
        ),
        (
            "SELECT count(DISTINCT n), count(DISTINCT payload->>'n'), count(*) FROM events WHERE tenant_id = 'nobody'",
            vec![],
            Compare::Exact,
        ),
    ];
    check_corpus(&gate, &oracle, &corpus).await;

    let refused = "SELECT (payload->>'plan')::int FROM events";
    let reply = ask(&gate, refused, &[]).await;
    assert_eq!(reply.status, 400, "{}", reply.body);
    let oracle_error = oracle.query(refused, &[]).await.unwrap_err();
    let message = oracle_error.as_db_error().unwrap().message();
    assert!(
        message.starts_with("invalid input syntax for type integer"),
        "{message}"
    );
    assert!(
        reply.error().ends_with(&format!("refused the query: {message}"))
            || reply
                .error()
                .contains("refused the query: invalid input syntax for type integer: "),
        "{}",
        reply.error()
    );
    assert!(
        reply.body.get("rows").is_none(),
        "no partial answer: {}",
        reply.body
    );
    gate.stop().await;
}

/// Writes 700 events holding values Postgres finds equal while a merge could find them
/// different: tenants that differ only in case or accent (ordered differently by a linguistic
/// collation than bytewise), scores of 0.0 and -0.0, and amounts of one number at several
/// scales.
async fn load_values_counted(gate: &TestServer) {
    load_events(gate, 700, |i| {
        json!({
            "tenant_id": format!("{}{}", ["a", "B", "b", "A", "é", "E", "e"][i % 7], i % 30),
            "ts": format!("2024-05-0{}T{:02}:00:00Z", 1 + i % 3, i % 24),
            "score": match i % 6 {
                0 => json!(0.0),
                1 => json!(-0.0),
                2 => Value::Null,
                _ => json!((i % 40) as f64 / 2.0),
            },
            "payload": {"amount": (["1.5", "1.50", "1.500", "2", "2.0"][i % 5]), "w": i % 9},
        })
    })
    .await;
}

#[tokio::test]
async fn count_distinct_counts_more_values_than_max_rows_exactly() {
    // Shards that order text linguistically: the merge must still see equal values side by
    // side, whatever the shards' collation.
    let urls = collated_shards("icu", "LOCALE_PROVIDER icu ICU_LOCALE 'en-US' LOCALE 'C'").await;
    let gate = TestServer::start_on(urls, &crate::postgres::listener("[query]\nmax_rows = 20\n")).await;
    load_values_counted(&gate).await;
    let oracle = oracle(&gate).await;
    let corpus: Vec<(&str, Vec<Value>, Compare)> = vec![
        (
            "SELECT count(DISTINCT event_id), count(*) FROM events",
            vec![],
            Compare::Exact,
        ),
        (
            "SELECT count(DISTINCT tenant_id), count(DISTINCT score), \
             count(DISTINCT (payload->>'amount')::numeric), count(DISTINCT ts), count(*) FROM events",
            vec![],
            Compare::Exact,
        ),
        (
            "SELECT event_type, count(DISTINCT event_id), count(DISTINCT tenant_id) FILTER (WHERE n > 3), \
             avg(n), min(ts) FROM events GROUP BY 1 ORDER BY 1",
            vec![],
            Compare::Exact,
        ),
        (
            "SELECT date_trunc('day', ts) AS day, count(DISTINCT tenant_id) AS tenants FROM events \
             GROUP BY 1 HAVING count(DISTINCT tenant_id) > 10 ORDER BY 1",
            vec![],
            Compare::Exact,
        ),
        (
            "SELECT score = 0 AS zero, count(DISTINCT score), count(DISTINCT lower(tenant_id)), \
             count(DISTINCT event_id) FILTER (WHERE (payload->>'amount')::numeric = 1.5) \
             FROM events GROUP BY 1 ORDER BY 1 NULLS FIRST",
            vec![],
            Compare::Exact,
        ),
        (
            "SELECT n % 4 AS k, count(DISTINCT tenant_id) FROM events WHERE n > $1 GROUP BY 1 ORDER BY 2 DESC, 1 LIMIT 3",
            vec![json!(3)],
            Compare::Exact,
        ),
        (
            "SELECT count(DISTINCT tenant_id), count(DISTINCT n) FROM events WHERE tenant_id = 'nobody'",
            vec![],
            Compare::Exact,
        ),
        (
            "SELECT event_type, count(DISTINCT event_id) FROM events WHERE n > 100 GROUP BY 1",
            vec![],
            Compare::Unordered,
        ),
    ];
    check_corpus(&gate, &oracle, &corpus).await;

    let plan = explain(
        &gate,
        "SELECT event_type, count(DISTINCT tenant_id) FROM events GROUP BY 1",
        &[],
    )
    .await;
    assert_eq!(
        plan["statement"],
        "SELECT * FROM (SELECT \"event_type\", \"event_type\", \"tenant_id\" FROM \"events\" GROUP BY 2, 3) \
         AS parts(c1, c2, c3) ORDER BY c2 COLLATE \"C\" ASC NULLS LAST, c3 COLLATE \"C\" ASC NULLS LAST",
        "{plan}"
    );
    let too_many = [
        (
            "SELECT event_id, count(DISTINCT n) FROM events GROUP BY 1",
            "the query has more than 20 groups; narrow its WHERE or GROUP BY",
        ),
        (
            // jsonb values have no order shardgate can merge: they are held, as many as max_rows.
            "SELECT count(DISTINCT payload) FROM events",
            "more than 20 groups and values to count; count(DISTINCT) of a jsonb value holds every \
             value, so count text or numbers taken from it (payload->>'key') to count any number",
        ),
    ];
    for (sql, needle) in too_many {
        let reply = ask(&gate, sql, &[]).await;
        assert_eq!(reply.status, 400, "{sql}: {}", reply.body);
        assert!(reply.error().contains(needle), "{sql}: {}", reply.error());
    }
    gate.stop().await;
}

/// `count` lines for each of `sources` (`src-<n>`) as `logs` rows, the lines numbered from
/// `first`.
fn log_lines(sources: std::ops::Range<usize>, count: usize, first: usize) -> String {
    let rows: Vec<Value> = sources
        .flat_map(|s| {
            (first..first + count).map(move |j| json!({"source": format!("src-{s}"), "line": format!("{j}")}))
        })
        .collect();
    Value::Array(rows).to_string()
}

#[tokio::test]
async fn count_distinct_of_the_partition_key_adds_the_shards_counts_until_a_key_is_split() {
    let config = format!(
        "{}[hot_keys]\nsplit_delay = \"100ms\"\nmax_fanout = 4\n",
        crate::admin::with_token()
    );
    let gate = TestServer::start("query_key_count", &format!("{config}[query]\nmax_rows = 100\n")).await;
    let written = gate
        .post("logs", "application/json", log_lines(0..50, 6, 0))
        .await;
    assert_eq!(written.status, 200, "{}", written.body);
    let sql = "SELECT count(DISTINCT source), count(DISTINCT source) FILTER (WHERE line <> '0'), count(*) FROM logs";
    let plan = explain(&gate, sql, &[]).await;
    assert_eq!(
        plan["statement"],
        "SELECT count(DISTINCT \"source\"), count(DISTINCT \"source\") FILTER (WHERE \"line\" <> '0'), \
         count(*) FROM \"logs\" LIMIT 101",
        "each source lives on one shard: its count there is added"
    );
    let reply = ask(&gate, sql, &[]).await;
    assert_eq!(reply.body["rows"], json!([[50, 50, 300]]), "{}", reply.body);
    let with_lines = "SELECT count(DISTINCT source), count(DISTINCT line) FROM logs";
    let reply = ask(&gate, with_lines, &[]).await;
    assert_eq!(reply.body["rows"], json!([[50, 6]]), "{}", reply.body);
    let grouped = ask(
        &gate,
        "SELECT line, count(DISTINCT source) FROM logs WHERE source <> 'src-3' GROUP BY 1 ORDER BY 1",
        &[],
    )
    .await;
    let want: Vec<Value> = (0..6).map(|j| json!([j.to_string(), 49])).collect();
    assert_eq!(grouped.body["rows"], json!(want), "{}", grouped.body);

    // Split src-7 four ways: its new rows land on both shards, so its count there is no longer
    // its own.
    let split = gate
        .http
        .post(gate.admin_url("/admin/hot-keys"))
        .bearer_auth(crate::admin::TOKEN)
        .json(&json!({"table": "logs", "key": {"source": "src-7"}, "fanout": 4}))
        .send()
        .await
        .unwrap();
    assert_eq!(split.status(), 200, "{}", split.text().await.unwrap());
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let more = gate
        .post("logs", "application/json", log_lines(7..8, 200, 6))
        .await;
    assert_eq!(more.status, 200, "{}", more.body);
    for url in &gate.shard_urls {
        let on_shard: i64 = connect(url)
            .await
            .query_one("SELECT count(*) FROM logs WHERE source = 'src-7'", &[])
            .await
            .unwrap()
            .get(0);
        assert!(on_shard > 0, "src-7 has rows on every shard");
    }
    let plan = explain(&gate, sql, &[]).await;
    assert!(
        plan["statement"]
            .as_str()
            .unwrap()
            .contains("GROUPING(\"source\""),
        "a split key's values are counted from sorted rows: {plan}"
    );
    let reply = ask(&gate, sql, &[]).await;
    assert_eq!(reply.body["rows"], json!([[50, 50, 500]]), "{}", reply.body);
    let reply = ask(&gate, with_lines, &[]).await;
    assert_eq!(reply.body["rows"], json!([[50, 206]]), "{}", reply.body);
    gate.stop().await;
}
