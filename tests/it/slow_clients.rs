//! Clients that stop sending: a request whose headers or body stall past the read timeouts
//! loses its connection (with a `408` where one can still be written), gives back its share
//! of the in-flight body budget and stores nothing, on the write and the admin listener alike.

use crate::common::{TestServer, events};
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A budget one declared body fills, and read timeouts of a second.
const LIMITS: &str = "max_body_size = \"8KiB\"\nmax_inflight_body_bytes = \"8KiB\"\n\
                      header_read_timeout = \"1s\"\nbody_read_timeout = \"1s\"\n";

/// The answer a stalled body gets.
const STALLED: &str =
    r#"{"details":[],"error":"the request body stalled: no bytes arrived for 1s; nothing of it was stored"}"#;

/// A test server with these limits whose HTTP client opens a connection per request: with
/// a header timeout of a second, a pooled connection left idle that long is closed by the
/// server, and a request sent on it as it closes would fail.
async fn start(test: &str, extra: &str) -> TestServer {
    let mut gate = TestServer::start(test, &format!("{LIMITS}{extra}")).await;
    gate.http = crate::common::http_builder()
        .pool_max_idle_per_host(0)
        .build()
        .expect("an HTTP client");
    gate
}

/// Opens a connection to `addr` and sends `head`, then nothing more.
async fn stall_after(addr: SocketAddr, head: &str) -> TcpStream {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(head.as_bytes()).await.unwrap();
    stream
}

/// Everything the server sends on `stream` until it closes it, and how long that took;
/// panics if it is still open after ten seconds.
async fn read_until_closed(stream: &mut TcpStream) -> (String, Duration) {
    let started = Instant::now();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer))
        .await
        .expect("the server closes the connection")
        .expect("the connection reads until closed");
    (String::from_utf8_lossy(&answer).into_owned(), started.elapsed())
}

/// A request head declaring a `length`-byte JSON body, then its first row.
fn post_head(path: &str, length: usize, extra_headers: &str) -> String {
    format!(
        "POST {path} HTTP/1.1\r\nHost: shardgate\r\nContent-Type: application/json\r\n\
         Content-Length: {length}\r\n{extra_headers}\r\n[{{\"tenant_id\": \"t\", \"event_type\": \"e\"}},"
    )
}

#[tokio::test]
async fn a_body_that_stalls_is_answered_408_frees_its_budget_and_stores_nothing() {
    let gate = start("slow_body", "").await;
    let mut stalled = stall_after(
        gate.server.write_addr(),
        &post_head("/v1/tables/events/rows", 8192, ""),
    )
    .await;
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let reply = gate.post("events", "application/json", "[").await;
        if reply.status == 429 {
            assert_eq!(
                reply.error(),
                "too many request bodies are being read; retry after 1s"
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the stalled body holds the budget: {}",
            reply.body
        );
    }

    let (answer, waited) = read_until_closed(&mut stalled).await;
    assert!(answer.starts_with("HTTP/1.1 408 Request Timeout\r\n"), "{answer}");
    assert!(
        answer.to_ascii_lowercase().contains("\r\nconnection: close\r\n"),
        "{answer}"
    );
    assert!(answer.ends_with(STALLED), "{answer}");
    assert!(waited < Duration::from_secs(5), "answered after {waited:?}");

    let reply = gate.post_events(&events(5, 1)).await;
    assert_eq!(reply.status, 200, "the budget is back: {}", reply.body);
    assert_eq!(
        gate.total("events").await,
        5,
        "nothing of the stalled body is stored"
    );
    gate.stop().await;
}

#[tokio::test]
async fn headers_that_stall_lose_their_connection_on_both_listeners() {
    let gate = start("slow_headers", "").await;
    for addr in [gate.server.write_addr(), gate.server.admin_addr()] {
        let mut stalled = stall_after(addr, "POST /v1/tables/events/rows HTTP/1.1\r\nHost: x\r\n").await;
        let (answer, waited) = read_until_closed(&mut stalled).await;
        assert_eq!(answer, "", "no request to answer on {addr}");
        assert!(
            waited >= Duration::from_millis(900) && waited < Duration::from_secs(5),
            "closed after {waited:?} on {addr}"
        );
    }
    gate.stop().await;
}

#[tokio::test]
async fn an_admin_body_that_stalls_is_answered_408() {
    let gate = start("slow_admin", &crate::admin::with_token()).await;
    let auth = format!("Authorization: Bearer {}\r\n", crate::admin::TOKEN);
    let mut stalled = stall_after(gate.server.admin_addr(), &post_head("/admin/shards", 500, &auth)).await;
    let (answer, _) = read_until_closed(&mut stalled).await;
    assert!(answer.starts_with("HTTP/1.1 408 Request Timeout\r\n"), "{answer}");
    assert!(answer.ends_with(STALLED), "{answer}");
    let shards = gate.admin("/admin/shards").await;
    assert_eq!(
        shards.body.as_array().map(Vec::len),
        Some(2),
        "no shard was added"
    );
    gate.stop().await;
}
