//! The fence on a real cluster: a bump waits for the batches in flight, then turns away every
//! batch routed with the epoch before it, while one routed with the new epoch commits.

use crate::common::{TestServer, connect, wait_for_lock_waiters};
use shardgate::config::TlsConfig;
use shardgate::ingest::copy::{CopyError, TableStatements, session_setup_sql, write_batch};
use shardgate::pg::{PoolSettings, build_pool};
use shardgate::routing::{Epoch, Ring, RoutingTable, ShardId};
use shardgate::schema::TableSchema;
use shardgate::schema::decode::{BodyFormat, decode_rows};
use shardgate::shards::fence::{self, FenceMismatch};
use std::time::Duration;

/// `rows` events encoded as one batch for a table that has only this shard.
fn one_shard_batch(events: &TableSchema, rows: usize) -> bytes::Bytes {
    let routing = RoutingTable::new(
        Epoch(1),
        vec![ShardId("s1".into())],
        Ring::build([("s1", 1)], 16).unwrap(),
    );
    let body = crate::common::events(rows, 3).to_string();
    let mut encoded = decode_rows(events, &routing, BodyFormat::Json, body.as_bytes(), 0, &[]).unwrap();
    encoded.shards.remove(0).tuples.into()
}

#[tokio::test]
async fn a_bump_waits_for_batches_in_flight_then_refuses_the_old_epoch_and_takes_the_new() {
    let gate = TestServer::start("fence_bump", "").await;
    let urls = gate.shard_urls.clone();
    gate.stop().await;
    let config = crate::common::config_for(&urls, "");
    let events = TableSchema::from_config(&config.tables[0]).unwrap();
    let statements = TableStatements::new(&events);
    let tls = TlsConfig::default();
    let pool = build_pool(&PoolSettings {
        url: &urls[1],
        database: None,
        max_size: 2,
        connect_timeout: Duration::from_secs(5),
        wait_timeout: None,
        application_name: "fence test",
        session_setup: &session_setup_sql(std::slice::from_ref(&statements)),
        password: None,
        tls: &tls,
    })
    .unwrap();

    let in_flight = connect(&urls[1]).await;
    in_flight.batch_execute("BEGIN").await.unwrap();
    in_flight.query(fence::READ_FOR_BATCH_SQL, &[]).await.unwrap();
    let url = urls[1].clone();
    let bump = tokio::spawn(async move { fence::bump(&mut connect(&url).await, Epoch(2)).await });
    wait_for_lock_waiters(&urls[1], 1).await;
    assert!(
        !bump.is_finished(),
        "the bump waits for the batch holding the fence"
    );
    let late = connect(&urls[1]).await;
    late.batch_execute("BEGIN").await.unwrap();
    let late = tokio::spawn(async move {
        let epoch: i64 = late
            .query_one(fence::READ_FOR_BATCH_SQL, &[])
            .await
            .unwrap()
            .get(0);
        late.batch_execute("COMMIT").await.unwrap();
        epoch
    });
    wait_for_lock_waiters(&urls[1], 2).await;
    assert!(
        !late.is_finished(),
        "a batch that starts while the bump waits queues behind it, so batches that overlap \
         without end cannot starve the bump"
    );
    in_flight.batch_execute("COMMIT").await.unwrap();
    let before = tokio::time::timeout(Duration::from_secs(10), bump)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(before, Epoch(1));
    assert_eq!(late.await.unwrap(), 2, "the late batch reads the new epoch");

    let batch = [one_shard_batch(&events, 40)];
    let stale = write_batch(&pool, &statements, Epoch(1), &batch).await;
    assert!(
        matches!(
            stale,
            Err(CopyError::Fence(FenceMismatch {
                expected: Epoch(1),
                found: Epoch(2)
            }))
        ),
        "{stale:?}"
    );
    assert_eq!(crate::common::count_on(&urls[1], "events").await, 0);
    write_batch(&pool, &statements, Epoch(2), &batch).await.unwrap();
    assert_eq!(crate::common::count_on(&urls[1], "events").await, 40);
    let again = fence::bump(&mut connect(&urls[1]).await, Epoch(2)).await.unwrap();
    assert_eq!(again, Epoch(2), "a bump to the epoch it holds changes nothing");
}
