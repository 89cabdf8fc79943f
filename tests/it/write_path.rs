//! The write path against real PostgreSQL shards: placement, counts, deduplication, formats,
//! defaults, and every refusal with its status, message and nothing stored.

use crate::common::{TestServer, connect, events, sample};
use serde_json::json;
use shardgate::routing::{KeyHash, ShardIndex, hash_key};
use shardgate::schema::{ColumnType, JsonScalar, encode_scalar};
use std::io::Write;
use std::time::Duration;

/// The hash of a `(tenant_id, event_type)` key, computed independently of the server.
fn key_hash(tenant: &str, event_type: &str) -> KeyHash {
    let encode = |s: &str| {
        let mut out = Vec::new();
        encode_scalar(ColumnType::Text, JsonScalar::Str(s), &mut out).unwrap();
        out
    };
    let (t, e) = (encode(tenant), encode(event_type));
    hash_key(
        [(ColumnType::Text, t.as_slice()), (ColumnType::Text, e.as_slice())],
        &mut Vec::new(),
    )
}

#[tokio::test]
async fn each_row_lands_on_the_shard_its_key_hashes_to() {
    let gate = TestServer::start("placement", "").await;
    let reply = gate.post_events(&events(600, 37)).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.body["rows"], 600);

    let routing = crate::common::two_shard_routing();
    let mut total = 0;
    for (index, url) in gate.shard_urls.iter().enumerate() {
        let client = connect(url).await;
        let rows = client
            .query("SELECT tenant_id, event_type, _sg_hash FROM events", &[])
            .await
            .unwrap();
        for row in &rows {
            let hash = key_hash(row.get(0), row.get(1));
            assert_eq!(
                KeyHash::from_i64(row.get(2)),
                hash,
                "stored _sg_hash is the key's hash"
            );
            assert_eq!(
                routing.owner_of_key(hash),
                ShardIndex(index),
                "row sits on the shard owning its hash"
            );
        }
        assert_eq!(
            reply.body["shards"][format!("s{index}")],
            rows.len(),
            "ack counts match shard {index}"
        );
        assert!(!rows.is_empty(), "37 tenants spread over both shards");
        total += rows.len();
    }
    assert_eq!(total, 600);
    gate.stop().await;
}

#[tokio::test]
async fn a_repeated_request_stores_nothing_twice() {
    let gate = TestServer::start("dedup", "").await;
    let rows = events(250, 9);
    let first = gate.post_events(&rows).await;
    assert_eq!(first.status, 200, "{}", first.body);
    let batches = |page: &str, path: &str| {
        let series = format!("shardgate_batches_total{{path=\"{path}\",table=\"events\"}}");
        if page.contains(&series) {
            sample(page, &series)
        } else {
            0.0
        }
    };
    let page = gate.metrics_page().await;
    let copied = batches(&page, "copy");
    assert!(copied >= 1.0, "new ids go by plain COPY: {copied}");
    assert_eq!(batches(&page, "copy_then_staged"), 0.0);
    for _ in 0..2 {
        let reply = gate.post_events(&rows).await;
        assert_eq!(reply.status, 200, "{}", reply.body);
        assert_eq!(reply.body["rows"], 250);
    }
    assert_eq!(gate.total("events").await, 250);
    let page = gate.metrics_page().await;
    assert!(
        batches(&page, "copy_then_staged") >= 2.0,
        "a retry's plain COPY meets its stored ids and goes through staging"
    );
    assert_eq!(batches(&page, "copy"), copied);
    gate.stop().await;
}

#[tokio::test]
async fn ndjson_and_json_bodies_both_store_every_row() {
    let gate = TestServer::start("formats", "").await;
    let lines: Vec<String> = events(40, 5)
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.to_string())
        .collect();
    let reply = gate
        .post("events", "application/x-ndjson", lines.join("\n") + "\n")
        .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.body["rows"], 40);
    let reply = gate
        .post(
            "events",
            "application/json; charset=utf-8",
            events(60, 5).to_string(),
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(gate.total("events").await, 100);
    gate.stop().await;
}

#[tokio::test]
async fn tables_without_id_use_plain_copy_and_may_duplicate_on_retry() {
    let gate = TestServer::start("no_id", "").await;
    let body = json!([{"source": "api", "line": "started"}, {"source": "db", "line": "ready"}]);
    for _ in 0..2 {
        let reply = gate.post("logs", "application/json", body.to_string()).await;
        assert_eq!(reply.status, 200, "{}", reply.body);
    }
    assert_eq!(
        gate.total("logs").await,
        4,
        "no id: a retry writes the rows again"
    );
    gate.stop().await;
}

#[tokio::test]
async fn absent_columns_take_their_defaults() {
    let gate = TestServer::start("defaults", "").await;
    let reply = gate
        .post_events(&json!([{"tenant_id": "a", "event_type": "x"}, {"tenant_id": "a", "event_type": "x"}]))
        .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let mut found = Vec::new();
    for url in &gate.shard_urls {
        let client = connect(url).await;
        let rows = client
            .query(
                "SELECT event_id::text, n, payload IS NULL, abs(extract(epoch FROM now() - ts)) < 60 FROM events",
                &[],
            )
            .await
            .unwrap();
        found.extend(rows.iter().map(|r| {
            (
                r.get::<_, String>(0),
                r.get::<_, i64>(1),
                r.get::<_, bool>(2),
                r.get::<_, bool>(3),
            )
        }));
    }
    assert_eq!(found.len(), 2);
    assert_ne!(found[0].0, found[1].0, "each row gets its own generated id");
    assert!(
        found
            .iter()
            .all(|(id, n, null, recent)| id.as_bytes()[14] == b'7' && *n == 0 && *null && *recent)
    );
    gate.stop().await;
}

#[tokio::test]
async fn bad_rows_are_refused_with_row_column_and_reason_and_nothing_is_stored() {
    let gate = TestServer::start("bad_rows", "").await;
    let body = json!([
        {"tenant_id": "a", "event_type": "x"},
        {"tenant_id": "a", "event_type": "x", "n": "seven"},
        {"event_type": "x"},
        {"tenant_id": "a", "event_type": "x", "colour": "red"},
    ]);
    let reply = gate.post_events(&body).await;
    assert_eq!(reply.status, 400);
    assert_eq!(reply.error(), "3 invalid value(s); nothing was stored");
    assert_eq!(
        reply.body["details"],
        json!([
            {"row": 1, "column": "n", "reason": "expected an integer, got \"seven\""},
            {"row": 2, "column": "tenant_id", "reason": "missing partition-key value"},
            {"row": 3, "column": "colour", "reason": "unknown column `colour`"},
        ])
    );
    assert_eq!(gate.total("events").await, 0);
    gate.stop().await;
}

#[tokio::test]
async fn malformed_bodies_unknown_tables_and_wrong_media_types_are_refused() {
    let gate = TestServer::start("refusals", "").await;
    let reply = gate.post("events", "application/json", "[{\"tenant_id\": ").await;
    assert_eq!(reply.status, 400);
    assert!(
        reply.error().starts_with("malformed body: EOF while parsing"),
        "{}",
        reply.error()
    );

    let reply = gate
        .post("events", "application/json", "{\"tenant_id\": \"a\"}")
        .await;
    assert_eq!(reply.status, 400);
    assert!(
        reply.error().contains("expected a JSON array of row objects"),
        "{}",
        reply.error()
    );

    let reply = gate.post("nope", "application/json", "[]").await;
    assert_eq!(reply.status, 404);
    assert_eq!(reply.error(), "unknown table `nope`");

    let reply = gate.post("events", "text/csv", "tenant_id\na").await;
    assert_eq!(reply.status, 415);
    assert!(
        reply.error().starts_with("unsupported content type text/csv"),
        "{}",
        reply.error()
    );

    let response = gate.http.get(gate.url("/v2/whatever")).send().await.unwrap();
    assert_eq!(response.status(), 404);
    assert_eq!(gate.total("events").await, 0);
    gate.stop().await;
}

/// One COPY connection per shard and batches that wait: concurrent requests share a batch.
const SHARED_BATCHES: &str = "[batch]\nmax_delay = \"400ms\"\n[pool]\nconnections_per_shard = 1\n";

/// Sends `method` to `url` and reads the answer, which must be a JSON error body.
async fn json_refusal(
    http: &reqwest::Client,
    method: reqwest::Method,
    url: String,
    body: &str,
) -> crate::common::Reply {
    let response = http
        .request(method.clone(), &url)
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    let content_type = response.headers()[reqwest::header::CONTENT_TYPE].clone();
    let reply = crate::common::Reply::read(response).await;
    assert_eq!(content_type, "application/json", "{method} {url}");
    assert!(reply.body["details"].is_array(), "{method} {url}: {}", reply.body);
    assert!(!reply.error().is_empty(), "{method} {url}: {}", reply.body);
    reply
}

#[tokio::test]
async fn every_refusal_of_either_listener_carries_the_json_error_body() {
    use reqwest::Method;
    let gate = TestServer::start("json_refusals", "max_body_size = \"2KiB\"\n").await;
    let rows = gate.url("/v1/tables/events/rows");
    for method in [Method::GET, Method::PUT, Method::PATCH, Method::DELETE] {
        let reply = json_refusal(&gate.http, method.clone(), rows.clone(), "").await;
        assert_eq!(reply.status, 405);
        assert_eq!(reply.headers["allow"], "POST");
        assert_eq!(
            reply.error(),
            format!("method {method} is not allowed on /v1/tables/events/rows; allowed: POST")
        );
    }
    let reply = json_refusal(&gate.http, Method::GET, gate.url("/v1/query"), "").await;
    assert_eq!(
        (reply.status, &reply.headers["allow"]),
        (405, &"POST".parse().unwrap())
    );
    let reply = json_refusal(&gate.http, Method::POST, gate.admin_url("/metrics"), "").await;
    assert_eq!(reply.status, 405);
    assert_eq!(reply.headers["allow"], "GET,HEAD");
    let reply = json_refusal(&gate.http, Method::DELETE, gate.admin_url("/readyz"), "").await;
    assert_eq!(reply.status, 405);

    for url in [gate.url("/v2/whatever"), gate.admin_url("/admin/nothing")] {
        let reply = json_refusal(&gate.http, Method::GET, url, "").await;
        assert_eq!(reply.status, 404);
        assert_eq!(reply.error(), "no such endpoint");
    }

    let large = format!("{{\"sql\": \"SELECT 1 -- {}\"}}", "x".repeat(4096));
    let reply = json_refusal(&gate.http, Method::POST, gate.url("/v1/query"), &large).await;
    assert_eq!(reply.status, 413);
    assert_eq!(reply.error(), "request body exceeds the limit of 2048 bytes");

    let response = gate
        .http
        .post(gate.url("/v1/tables/events/rows"))
        .header("content-type", "application/json")
        .header("content-encoding", "br")
        .body("[]")
        .send()
        .await
        .unwrap();
    let reply = crate::common::Reply::read(response).await;
    assert_eq!(reply.status, 415, "a refused header: {}", reply.body);
    assert!(
        reply.error().starts_with("unsupported content encoding br"),
        "{}",
        reply.error()
    );

    let reply = json_refusal(&gate.http, Method::POST, gate.url("/v1/tables/%FF/rows"), "[]").await;
    assert_eq!(reply.status, 400);
    assert!(reply.error().contains("Invalid URL"), "{}", reply.error());
    gate.stop().await;
}

#[tokio::test]
async fn a_body_over_the_limit_is_refused_with_413() {
    let gate = TestServer::start("too_large", "max_body_size = \"2KiB\"\n").await;
    let reply = gate.post_events(&events(100, 3)).await;
    assert_eq!(reply.status, 413);
    assert_eq!(reply.error(), "request body exceeds the limit of 2048 bytes");

    let chunks: Vec<Result<String, std::io::Error>> = (0..10).map(|_| Ok(events(5, 1).to_string())).collect();
    let streamed = reqwest::Body::wrap_stream(futures_util::stream::iter(chunks));
    let reply = gate.post("events", "application/json", streamed).await;
    assert_eq!(
        reply.status, 413,
        "a chunked body without Content-Length is cut off too"
    );
    assert_eq!(gate.total("events").await, 0);
    gate.stop().await;
}

/// Sends `body` compressed as `encoding` says.
async fn post_compressed(
    gate: &TestServer,
    content_type: &str,
    encoding: &str,
    body: Vec<u8>,
) -> crate::common::Reply {
    let response = gate
        .http
        .post(gate.url("/v1/tables/events/rows"))
        .header("content-type", content_type)
        .header("content-encoding", encoding)
        .body(body)
        .send()
        .await
        .unwrap();
    crate::common::Reply::read(response).await
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(data).unwrap();
    encoder.finish().unwrap()
}

#[tokio::test]
async fn gzip_and_zstd_bodies_are_decompressed_within_the_body_limit() {
    let gate = TestServer::start("compressed", "max_body_size = \"64KiB\"\n").await;
    let ndjson: String = (0..50)
        .map(|i| format!("{{\"tenant_id\": \"t{i}\", \"event_type\": \"view\"}}\n"))
        .collect();
    let reply = post_compressed(&gate, "application/x-ndjson", "gzip", gzip(ndjson.as_bytes())).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.body["rows"], 50);
    let json = events(30, 3).to_string();
    let zstd = zstd::encode_all(json.as_bytes(), 3).unwrap();
    let reply = post_compressed(&gate, "application/json", "zstd", zstd).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(gate.total("events").await, 80);

    let reply = post_compressed(&gate, "application/json", "gzip", b"not gzip".to_vec()).await;
    assert_eq!(reply.status, 400);
    assert!(
        reply.error().starts_with("cannot decompress the gzip body"),
        "{}",
        reply.error()
    );
    let reply = post_compressed(&gate, "application/json", "br", json.clone().into_bytes()).await;
    assert_eq!(reply.status, 415);
    assert_eq!(
        reply.error(),
        "unsupported content encoding br; send gzip, zstd or an uncompressed body"
    );
    // 80 KB of rows compress to well under the limit but expand past it.
    let bomb = format!(
        "[{}]",
        vec!["{\"tenant_id\": \"a\", \"event_type\": \"b\"}"; 2000].join(",")
    );
    let compressed = gzip(bomb.as_bytes());
    assert!(compressed.len() < 64 * 1024 && bomb.len() > 64 * 1024);
    let reply = post_compressed(&gate, "application/json", "gzip", compressed).await;
    assert_eq!(reply.status, 413);
    assert_eq!(
        reply.error(),
        "request body decompresses to more than the limit of 65536 bytes"
    );
    assert_eq!(gate.total("events").await, 80);
    gate.stop().await;
}

#[tokio::test]
async fn a_full_queue_answers_429_with_retry_after_and_keeps_earlier_rows() {
    // One connection per shard: a lone batch waits for max_delay instead of leaving at once.
    let extra = "[batch]\nmax_rows = 10\nmax_delay = \"1500ms\"\n[queue]\nmax_rows = 10\nretry_after = \"2s\"\n\
                 [pool]\nconnections_per_shard = 1\n";
    let gate = TestServer::start("queue_full", extra).await;
    let one_key = |n: usize| {
        let rows: Vec<_> = (0..n)
            .map(|i| json!({"tenant_id": "hot", "event_type": "x", "n": i}))
            .collect();
        json!(rows)
    };
    let first = gate.spawn_post_events(one_key(8).to_string());
    tokio::time::sleep(Duration::from_millis(300)).await;
    let refused = gate.post_events(&one_key(8)).await;
    assert_eq!(refused.status, 429, "{}", refused.body);
    assert_eq!(refused.headers["retry-after"], "2");
    assert!(refused.error().contains("queue of shard"), "{}", refused.error());
    let first = first.await.unwrap();
    assert_eq!(first.status, 200, "{}", first.body);
    let page = gate.metrics_page().await;
    assert_eq!(
        sample(
            &page,
            "shardgate_rows_rejected_total{reason=\"queue_full\",table=\"events\"}"
        ),
        8.0
    );
    assert_eq!(
        gate.total("events").await,
        8,
        "only the accepted request's rows are stored"
    );
    gate.stop().await;
}

#[tokio::test]
async fn rows_postgres_rejects_fail_only_their_own_request() {
    let gate = TestServer::start("reject", SHARED_BATCHES).await;
    gate.on_every_shard("ALTER TABLE events ADD CONSTRAINT n_not_negative CHECK (n >= 0)")
        .await;
    let good_rows = |tag: &str| {
        let rows: Vec<_> = (0..20)
            .map(|i| json!({"tenant_id": "t", "event_type": tag, "n": i}))
            .collect();
        json!(rows)
    };
    let bad = json!([{"tenant_id": "t", "event_type": "a", "n": 1}, {"tenant_id": "t", "event_type": "a", "n": -5}]);
    let (first, second) = (good_rows("a"), good_rows("a"));
    let (a, b, c) = tokio::join!(
        gate.post_events(&first),
        gate.post_events(&bad),
        gate.post_events(&second)
    );
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(c.status, 200, "{}", c.body);
    assert_eq!(b.status, 422, "{}", b.body);
    let reason = b.body["details"][0]["reason"].as_str().unwrap();
    assert!(
        reason.contains("violates check constraint \"n_not_negative\""),
        "{reason}"
    );
    assert_eq!(
        b.body["details"][0]["sqlstate"], "23514",
        "the shard's SQLSTATE is kept"
    );
    assert_eq!(
        gate.total("events").await,
        40,
        "both good requests committed, none of the bad one"
    );
    gate.stop().await;
}

#[tokio::test]
async fn only_a_repeated_id_is_skipped_and_other_unique_violations_get_422() {
    let gate = TestServer::start("unique", SHARED_BATCHES).await;
    gate.on_every_shard("CREATE UNIQUE INDEX one_per_type ON events (tenant_id, event_type)")
        .await;
    let stored = json!([{"event_id": uuid::Uuid::now_v7(), "tenant_id": "t", "event_type": "kept"}]);
    let reply = gate.post_events(&stored).await;
    assert_eq!(reply.status, 200, "{}", reply.body);

    let twins = json!([
        {"event_id": uuid::Uuid::now_v7(), "tenant_id": "t", "event_type": "twin"},
        {"event_id": uuid::Uuid::now_v7(), "tenant_id": "t", "event_type": "twin"},
    ]);
    let clash = json!([{"event_id": uuid::Uuid::now_v7(), "tenant_id": "t", "event_type": "kept"}]);
    let neighbours: Vec<_> = (0..20)
        .map(|i| json!({"event_id": uuid::Uuid::now_v7(), "tenant_id": "t", "event_type": format!("n{i}")}))
        .collect();
    let neighbours = json!(neighbours);
    let (twins, clash, neighbours, retry) = tokio::join!(
        gate.post_events(&twins),
        gate.post_events(&clash),
        gate.post_events(&neighbours),
        gate.post_events(&stored)
    );
    for refused in [&twins, &clash] {
        assert_eq!(refused.status, 422, "{}", refused.body);
        let reason = refused.body["details"][0]["reason"].as_str().unwrap();
        assert!(
            reason.contains("duplicate key value violates unique constraint \"one_per_type\""),
            "{reason}"
        );
        assert_eq!(refused.body["details"][0]["sqlstate"], "23505");
    }
    assert_eq!(neighbours.status, 200, "{}", neighbours.body);
    assert_eq!(neighbours.body["rows"], 20);
    assert_eq!(retry.status, 200, "a retried id is accepted: {}", retry.body);
    assert_eq!(retry.body["rows"], 1, "rows counts the retried row as accepted");
    let mut types = Vec::new();
    for url in &gate.shard_urls {
        let client = connect(url).await;
        let rows = client.query("SELECT event_type FROM events", &[]).await.unwrap();
        types.extend(rows.iter().map(|r| r.get::<_, String>(0)));
    }
    types.sort();
    let mut expected: Vec<String> = (0..20).map(|i| format!("n{i}")).collect();
    expected.push("kept".into());
    expected.sort();
    assert_eq!(
        types, expected,
        "the stored row once, the neighbours, nothing of the refused"
    );
    gate.stop().await;
}

#[tokio::test]
async fn admin_lists_shards_with_redacted_urls_and_ring_shares() {
    let gate = TestServer::start("admin", "").await;
    let shards = gate.admin("/admin/shards").await.body;
    let shards = shards.as_array().unwrap();
    assert_eq!(shards.len(), 2);
    assert_eq!(shards[0]["name"], "s0");
    assert_eq!(shards[0]["url"], gate.shard_urls[0].as_str());
    assert!(shards.iter().all(|s| s["up"] == true && s["weight"] == 1));
    let share: f64 = shards.iter().map(|s| s["owned_fraction"].as_f64().unwrap()).sum();
    assert!((share - 1.0).abs() < 1e-9, "ring shares sum to 1, got {share}");

    for url in [gate.url("/readyz"), gate.admin_url("/readyz")] {
        let ready = gate.http.get(url).send().await.unwrap();
        assert_eq!(ready.status(), 200);
    }
    let alive = gate.http.get(gate.url("/healthz")).send().await.unwrap();
    assert_eq!(alive.status(), 200);
    let not_on_write_port = gate.http.get(gate.url("/admin/shards")).send().await.unwrap();
    assert_eq!(not_on_write_port.status(), 404);
    gate.stop().await;
}

#[tokio::test]
async fn shutdown_flushes_rows_still_waiting_for_their_batch() {
    let extra = "[batch]\nmax_delay = \"30s\"\n[pool]\nconnections_per_shard = 1\n";
    let gate = TestServer::start("drain", extra).await;
    let request = gate.spawn_post_events(events(30, 4).to_string());
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!request.is_finished(), "rows wait for max_delay before shutdown");
    let started = std::time::Instant::now();
    gate.server.shutdown();
    let reply = request.await.unwrap();
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "shutdown flushed without waiting for max_delay"
    );
    let total = gate.total("events").await;
    assert_eq!(total, 30);
    gate.server.wait().await;
}

#[tokio::test]
async fn metrics_count_committed_rows_per_shard_and_requests_per_status() {
    let gate = TestServer::start("metrics", "").await;
    assert_eq!(gate.post_events(&events(300, 11)).await.status, 200);
    assert_eq!(
        gate.post("events", "application/json", "[{\"n\": 1}]")
            .await
            .status,
        400
    );
    let three_invalid = "[{\"n\": 1}, {\"tenant_id\": \"a\", \"event_type\": \"b\"}, {\"n\": \"x\"}]";
    assert_eq!(
        gate.post("events", "application/json", three_invalid)
            .await
            .status,
        400
    );
    assert_eq!(gate.post("events", "application/json", "[{").await.status, 400);
    assert_eq!(gate.post("events", "text/csv", "a,b").await.status, 415);
    assert_eq!(gate.post("nope", "application/json", "[]").await.status, 404);
    let page = gate.metrics_page().await;
    for (table, reason, requests) in [
        ("events", "invalid", 2.0),
        ("events", "malformed", 1.0),
        ("events", "unsupported_media_type", 1.0),
        ("unknown", "unknown_table", 1.0),
    ] {
        let series = format!("shardgate_requests_rejected_total{{reason=\"{reason}\",table=\"{table}\"}}");
        assert_eq!(sample(&page, &series), requests, "{series}");
    }
    assert_eq!(
        sample(
            &page,
            "shardgate_rows_rejected_total{reason=\"invalid\",table=\"events\"}"
        ),
        4.0,
        "every row of a refused body, good ones included"
    );
    for shard in 0..2 {
        let committed = sample(
            &page,
            &format!("shardgate_rows_committed_total{{shard=\"s{shard}\",table=\"events\"}}"),
        );
        assert_eq!(
            committed as i64,
            gate.count(shard, "events").await,
            "shard s{shard}"
        );
        assert_eq!(
            sample(&page, &format!("shardgate_shard_up{{shard=\"s{shard}\"}}")),
            1.0
        );
    }
    assert_eq!(
        sample(&page, "shardgate_rows_accepted_total{table=\"events\"}"),
        300.0
    );
    assert_eq!(
        sample(
            &page,
            "shardgate_request_duration_seconds_count{status=\"200\",table=\"events\"}"
        ),
        1.0
    );
    assert_eq!(
        sample(
            &page,
            "shardgate_request_duration_seconds_count{status=\"400\",table=\"events\"}"
        ),
        3.0
    );
    assert_eq!(sample(&page, "shardgate_routing_epoch"), 1.0);
    assert_eq!(sample(&page, "shardgate_requests_in_flight"), 0.0);
    gate.stop().await;
}

#[tokio::test]
async fn a_lone_request_does_not_wait_for_max_delay_while_a_connection_is_idle() {
    let gate = TestServer::start("natural", "[batch]\nmax_delay = \"60s\"\n").await;
    let started = std::time::Instant::now();
    let reply = gate.post_events(&events(10, 2)).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "answered without waiting for the 60 s max_delay"
    );
    assert_eq!(gate.total("events").await, 10);
    gate.stop().await;
}

/// Starts a chunked upload of `events` rows that has sent `[` and waits for more from the
/// returned sender.
async fn start_chunked_upload(
    gate: &TestServer,
) -> (
    tokio::sync::mpsc::Sender<Result<String, std::io::Error>>,
    tokio::task::JoinHandle<crate::common::Reply>,
) {
    let (sender, receiver) = tokio::sync::mpsc::channel::<Result<String, std::io::Error>>(1);
    let stream =
        futures_util::stream::unfold(
            receiver,
            |mut r| async move { r.recv().await.map(|item| (item, r)) },
        );
    let upload = gate.spawn_post_events(reqwest::Body::wrap_stream(stream));
    sender.send(Ok("[".into())).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    (sender, upload)
}

#[tokio::test]
async fn bodies_beyond_the_in_flight_budget_get_429_until_room_frees_up() {
    let extra = "max_body_size = \"64KiB\"\nmax_inflight_body_bytes = \"64KiB\"\n";
    let gate = TestServer::start("body_budget", extra).await;
    // A chunked body (no Content-Length) reserves the whole body limit while it is read.
    let (sender, slow) = start_chunked_upload(&gate).await;

    let refused = gate.post_events(&events(5, 1)).await;
    assert_eq!(refused.status, 429, "{}", refused.body);
    assert!(
        refused
            .error()
            .starts_with("too many request bodies are being read"),
        "{}",
        refused.error()
    );
    assert!(refused.headers.contains_key("retry-after"));

    sender
        .send(Ok(r#"{"tenant_id": "a", "event_type": "b"}]"#.into()))
        .await
        .unwrap();
    drop(sender);
    let finished = slow.await.unwrap();
    assert_eq!(finished.status, 200, "{}", finished.body);
    let admitted = gate.post_events(&events(5, 1)).await;
    assert_eq!(admitted.status, 200, "room is free again: {}", admitted.body);
    assert_eq!(gate.total("events").await, 6);
    gate.stop().await;
}

#[tokio::test]
async fn a_compressed_body_takes_budget_for_what_it_decompresses_to_not_the_whole_limit() {
    let extra = "max_body_size = \"64KiB\"\nmax_inflight_body_bytes = \"100KiB\"\n";
    let gate = TestServer::start("compressed_budget", extra).await;
    // A stalled chunked body holds the whole body limit (64 KiB): 36 KiB of budget remain.
    let (sender, slow) = start_chunked_upload(&gate).await;

    let rows = |n: usize| {
        format!(
            "[{}]",
            vec![r#"{"tenant_id": "a", "event_type": "b"}"#; n].join(",")
        )
    };
    let small = rows(500);
    assert!(small.len() < 30 * 1024);
    let reply = post_compressed(&gate, "application/json", "gzip", gzip(small.as_bytes())).await;
    assert_eq!(reply.status, 200, "fits the 36 KiB left: {}", reply.body);
    let large = rows(1250);
    assert!(large.len() > 40 * 1024 && large.len() < 64 * 1024);
    let reply = post_compressed(&gate, "application/json", "gzip", gzip(large.as_bytes())).await;
    assert_eq!(reply.status, 429, "{}", reply.body);
    assert!(
        reply
            .error()
            .starts_with("too many request bodies are being read"),
        "{}",
        reply.error()
    );

    drop(sender);
    let _ = slow.await.unwrap();
    assert_eq!(gate.total("events").await, 500);
    gate.stop().await;
}

#[tokio::test]
async fn a_request_larger_than_a_whole_queue_gets_413_and_stores_nothing() {
    let gate = TestServer::start(
        "queue_too_large",
        "[batch]\nmax_rows = 10\n[queue]\nmax_rows = 10\n",
    )
    .await;
    let rows: Vec<_> = (0..12)
        .map(|i| json!({"tenant_id": "one", "event_type": "key", "n": i}))
        .collect();
    let reply = gate.post_events(&json!(rows)).await;
    assert_eq!(reply.status, 413, "{}", reply.body);
    assert!(
        reply.error().contains("holds 12 rows")
            && reply.error().contains("more than its queue can ever hold"),
        "{}",
        reply.error()
    );
    assert_eq!(gate.total("events").await, 0);
    gate.stop().await;
}
