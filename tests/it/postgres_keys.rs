//! `SET shardgate.idempotency_key` on the Postgres listener, as a client retrying after a
//! lost connection lives it: the same statements sent again under the same key write nothing
//! twice (INSERTs, a COPY of many chunks, psycopg's `executemany` in its implicit block),
//! another statement under a used key is refused, and a key that is not one is refused.

use crate::common::TestServer;
use crate::postgres::{PASSWORD, connect, listener, psycopg, url};
use tokio_postgres::error::SqlState;

/// Queues small enough that a COPY of 5,000 rows is cut into several chunks.
const SMALL_QUEUES: &str =
    "[queue]\nmax_rows = 2000\nmax_bytes = \"1MiB\"\n[batch]\nmax_rows = 1000\nmax_bytes = \"512KiB\"\n";

/// A tokio-postgres session that sets `key` and sends an INSERT of three rows and a COPY of
/// 5,000 rows of `logs`: the INSERT's and the COPY's row counts.
async fn keyed_session(gate: &TestServer, key: &str) -> (u64, u64) {
    use futures_util::SinkExt;
    let client = connect(gate).await;
    client
        .batch_execute(&format!("SET shardgate.idempotency_key = '{key}'"))
        .await
        .unwrap();
    let inserted = client
        .execute(
            "INSERT INTO logs (source, line) VALUES ($1, 'k-a'), ($1, 'k-b'), ('other', 'k-c')",
            &[&"src-1"],
        )
        .await
        .unwrap();
    let text: String = (0..5000)
        .map(|i| format!("src-{}\tcopied-{i}\n", i % 7))
        .collect();
    let sink = client
        .copy_in("COPY logs (source, line) FROM STDIN")
        .await
        .unwrap();
    futures_util::pin_mut!(sink);
    sink.send(bytes::Bytes::from(text)).await.unwrap();
    (inserted, sink.finish().await.unwrap())
}

#[tokio::test]
async fn statements_sent_again_under_the_same_key_are_answered_as_before_and_written_once() {
    let gate = TestServer::start("pg_keys", &format!("{SMALL_QUEUES}{}", listener(""))).await;
    assert_eq!(keyed_session(&gate, "batch-7").await, (3, 5000));
    assert_eq!(gate.total("logs").await, 5003);
    assert_eq!(
        keyed_session(&gate, "batch-7").await,
        (3, 5000),
        "the retry is answered as the first attempt was"
    );
    assert_eq!(gate.total("logs").await, 5003, "and writes nothing twice");

    let client = connect(&gate).await;
    client
        .batch_execute("SET shardgate.idempotency_key = 'batch-7'")
        .await
        .unwrap();
    let other = client
        .execute("INSERT INTO logs (source, line) VALUES ('src-1', 'another')", &[])
        .await
        .unwrap_err();
    assert_eq!(other.code(), Some(&SqlState::UNIQUE_VIOLATION));
    assert_eq!(
        other.as_db_error().unwrap().message(),
        "Idempotency-Key batch-7#0 was used for a different request (another table or body); a key names one request"
    );
    let copy = client
        .copy_in::<_, bytes::Bytes>("COPY logs (source, line) FROM STDIN")
        .await
        .unwrap();
    futures_util::pin_mut!(copy);
    futures_util::SinkExt::send(&mut copy, bytes::Bytes::from_static(b"src-9\tother\n"))
        .await
        .unwrap();
    let refused = copy.finish().await.unwrap_err();
    assert_eq!(refused.code(), Some(&SqlState::UNIQUE_VIOLATION));
    assert_eq!(
        refused.as_db_error().unwrap().detail(),
        Some(
            "0 rows before it were committed; sending the same statements again under the same \
             shardgate.idempotency_key is safe: what was written is skipped."
        ),
        "a keyed COPY is safe to send again, though the table has no id"
    );
    let returning = client
        .query(
            "INSERT INTO logs (source, line) VALUES ('src-2', 'r') RETURNING line",
            &[],
        )
        .await
        .unwrap_err();
    assert_eq!(returning.code(), Some(&SqlState::FEATURE_NOT_SUPPORTED));
    let bad = client
        .batch_execute("SET shardgate.idempotency_key = 'has space'")
        .await
        .unwrap_err();
    assert_eq!(bad.code(), Some(&SqlState::INVALID_PARAMETER_VALUE));
    assert!(
        bad.as_db_error().unwrap().message().starts_with(
            "invalid value for parameter \"shardgate.idempotency_key\": Idempotency-Key must be 1 to 255 visible ASCII characters"
        ),
        "{bad}"
    );
    client
        .batch_execute("RESET shardgate.idempotency_key")
        .await
        .unwrap();
    for _ in 0..2 {
        client
            .execute("INSERT INTO logs (source, line) VALUES ('src-3', 'unkeyed')", &[])
            .await
            .unwrap();
    }
    assert_eq!(
        gate.total("logs").await,
        5005,
        "without a key a table without an id takes a row twice"
    );
    gate.stop().await;
}

#[tokio::test]
async fn psycopg_executemany_in_its_implicit_block_under_a_key_is_written_once_when_run_twice() {
    let gate = TestServer::start("pg_keys_psycopg", &listener("")).await;
    let script = format!(
        "import psycopg\n\
         with psycopg.connect({url:?}) as conn:\n\
         \x20   conn.execute(\"SET shardgate.idempotency_key = 'nightly-2026-12-08'\")\n\
         \x20   with conn.cursor() as cur:\n\
         \x20       cur.executemany('INSERT INTO logs (source, line) VALUES (%s, %s)',\n\
         \x20                       [(f'src-{{i % 5}}', f'py-{{i}}') for i in range(300)])\n\
         \x20   conn.commit()\n\
         print('done')\n",
        url = url(&gate, PASSWORD)
    );
    assert_eq!(psycopg(&script).await.trim(), "done");
    assert_eq!(gate.total("logs").await, 300);
    assert_eq!(psycopg(&script).await.trim(), "done");
    assert_eq!(gate.total("logs").await, 300, "the second run wrote nothing");
    gate.stop().await;
}
