//! The spool's applied marks on a real cluster: a drained part commits its rows and its mark
//! together or neither, a part whose mark is there already stores nothing again, and one
//! batch marks every part it carries.

use crate::common::{TestServer, connect, count_on};
use shardgate::config::TlsConfig;
use shardgate::ingest::copy::{
    AlsoRecord, CopyError, TableStatements, session_setup_sql, write_batch_recording,
};
use shardgate::pg::{PoolSettings, build_pool};
use shardgate::routing::{Epoch, Ring, RoutingTable, ShardId};
use shardgate::schema::TableSchema;
use shardgate::schema::decode::{BodyFormat, decode_rows};
use shardgate::shards::applied;
use std::time::Duration;

/// `lines` rows of `logs` from `source`, encoded for a table that has only this shard.
fn logs_part(logs: &TableSchema, source: &str, lines: usize) -> bytes::Bytes {
    let routing = RoutingTable::new(
        Epoch(1),
        vec![ShardId("s0".into())],
        Ring::build([("s0", 1)], 16).unwrap(),
    );
    let rows: Vec<_> = (0..lines)
        .map(|i| serde_json::json!({"source": source, "line": format!("line {i}")}))
        .collect();
    let body = serde_json::Value::Array(rows).to_string();
    let mut encoded = decode_rows(logs, &routing, BodyFormat::Json, body.as_bytes(), 0, &[]).unwrap();
    encoded.shards.remove(0).tuples.into()
}

#[tokio::test]
async fn a_part_commits_with_its_mark_or_not_at_all_and_never_twice() {
    let gate = TestServer::start("spool_marks", "").await;
    let url = gate.shard_urls[0].clone();
    gate.stop().await;
    let config = crate::common::config_for(std::slice::from_ref(&url), "");
    let logs = TableSchema::from_config(&config.tables[1]).unwrap();
    let statements = TableStatements::new(&logs);
    let tls = TlsConfig::default();
    let pool = build_pool(&PoolSettings {
        url: &url,
        database: None,
        max_size: 2,
        connect_timeout: Duration::from_secs(5),
        wait_timeout: None,
        application_name: "spool marks test",
        session_setup: &session_setup_sql(std::slice::from_ref(&statements)),
        password: None,
        tls: &tls,
    })
    .unwrap();
    let spool = uuid::Uuid::now_v7();
    let mark = |seq: i64| applied::Mark { spool, seq, part: 0 };
    let write = |part: bytes::Bytes, seq: i64| {
        let (pool, statements) = (&pool, &statements);
        async move {
            let (spool, seqs, parts) = applied::mark_columns(&[mark(seq)]).unwrap();
            let params: [&(dyn tokio_postgres::types::ToSql + Sync); 3] = [&spool, &seqs, &parts];
            let mark = AlsoRecord {
                sql: applied::MARK_SQL,
                params: &params,
            };
            write_batch_recording(pool, statements, Epoch(1), &[part], (&[mark], false)).await
        }
    };

    write(logs_part(&logs, "app", 40), 7).await.unwrap();
    assert_eq!(count_on(&url, "logs").await, 40);
    let shard = connect(&url).await;
    assert_eq!(
        applied::applied_from(&shard, spool, 0).await.unwrap(),
        vec![mark(7)]
    );

    let again = write(logs_part(&logs, "app", 40), 7).await;
    assert!(matches!(again, Err(CopyError::AlreadyApplied)), "{again:?}");
    assert_eq!(
        count_on(&url, "logs").await,
        40,
        "the second attempt stored nothing"
    );

    shard
        .batch_execute("ALTER TABLE logs ADD CONSTRAINT no_poison CHECK (source <> 'poison')")
        .await
        .unwrap();
    let refused = write(logs_part(&logs, "poison", 5), 8).await;
    assert!(
        matches!(&refused, Err(CopyError::Data { sqlstate, message }) if sqlstate == "23514" && message.contains("no_poison")),
        "{refused:?}"
    );
    assert_eq!(
        applied::applied_from(&shard, spool, 0).await.unwrap(),
        vec![mark(7)],
        "no mark without its rows"
    );
    write(logs_part(&logs, "app", 3), 9).await.unwrap();
    assert_eq!(
        applied::applied_from(&shard, spool, 8).await.unwrap(),
        vec![mark(9)]
    );
    assert_eq!(count_on(&url, "logs").await, 43);

    let other_spool = uuid::Uuid::now_v7();
    assert!(
        applied::applied_from(&shard, other_spool, 0)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(applied::prune_through(&shard, spool, 7).await.unwrap(), 1);
    assert_eq!(
        applied::applied_from(&shard, spool, 0).await.unwrap(),
        vec![mark(9)]
    );

    let both = [
        applied::Mark {
            spool,
            seq: 10,
            part: 0,
        },
        applied::Mark {
            spool,
            seq: 10,
            part: 1,
        },
    ];
    let (id, seqs, parts) = applied::mark_columns(&both).unwrap();
    let params: [&(dyn tokio_postgres::types::ToSql + Sync); 3] = [&id, &seqs, &parts];
    let record = AlsoRecord {
        sql: applied::MARK_SQL,
        params: &params,
    };
    let two_parts = [logs_part(&logs, "app", 2), logs_part(&logs, "app", 3)];
    write_batch_recording(&pool, &statements, Epoch(1), &two_parts, (&[record], false))
        .await
        .unwrap();
    assert_eq!(
        applied::applied_from(&shard, spool, 10).await.unwrap(),
        both.to_vec()
    );
    let mut client = pool.get().await.unwrap();
    assert!(applied::settled_applied(&mut client, both[1]).await.unwrap());
    assert!(!applied::settled_applied(&mut client, mark(11)).await.unwrap());
}
