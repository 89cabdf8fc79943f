//! The catalog owns the shard list: it is seeded from the config once, records each shard's URL
//! without its password, serves shards the config no longer names, refuses a config naming a
//! shard it lacks, migrates a catalog of the previous layout forward at start, and a running
//! proxy takes a newer routing table from it, opening the shards that joined.

use crate::common::{
    TestServer, clusters, config_for, connect, count_on, events, fresh_database, fresh_shards, time_to_epoch,
};
use serde_json::json;
use shardgate::catalog::watch::ROUTING_CHANNEL;
use shardgate::routing::{Epoch, KeyHash, Ring};
use shardgate::shards::fence;
use std::time::Duration;

/// `url` with `password` added for its user (the test clusters trust loopback, so any password
/// is accepted: what matters is where it ends up).
fn with_password(url: &str, password: &str) -> String {
    url.replacen("postgres@", &format!("postgres:{password}@"), 1)
}

#[tokio::test]
async fn a_shard_only_the_catalog_names_is_used_as_the_catalog_records_it() {
    let urls = fresh_shards("catalog_owns").await;
    let seeded: Vec<String> = urls.iter().map(|u| with_password(u, "s3cret")).collect();
    let gate = TestServer::start_with(config_for(&seeded, ""), urls.clone()).await;
    gate.stop().await;
    let stored = connect(&urls[0])
        .await
        .query("SELECT name, url FROM shardgate.shards ORDER BY ordinal", &[])
        .await
        .unwrap();
    let stored: Vec<(String, String)> = stored.iter().map(|r| (r.get(0), r.get(1))).collect();
    assert_eq!(
        stored,
        [
            ("s0".to_string(), urls[0].clone()),
            ("s1".to_string(), urls[1].clone())
        ],
        "the catalog keeps each URL without its password"
    );

    let gate = TestServer::start_with(config_for(&urls[..1], ""), urls.clone()).await;
    let reply = gate.post_events(&events(400, 37)).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let on_s1 = reply.body["shards"]["s1"].as_i64().unwrap_or_default();
    assert!(on_s1 > 0, "rows still reach s1: {}", reply.body);
    assert_eq!(count_on(&urls[1], "events").await, on_s1);
    let shards = gate.admin("/admin/shards").await.body;
    assert_eq!(shards[1]["name"], "s1");
    assert_eq!(shards[1]["url"], json!(urls[1]));
    assert_eq!(shards[1]["prepared"], true);
    gate.stop().await;
}

#[tokio::test]
async fn a_config_naming_a_shard_the_catalog_lacks_or_other_vnodes_stops_start_up() {
    let urls = fresh_shards("catalog_refuses").await;
    let gate = TestServer::start_on(urls[..2].to_vec(), "").await;
    gate.stop().await;
    let mut more = urls.clone();
    more.push(urls[1].replace("catalog_refuses", "postgres"));
    let mut heavier = config_for(&urls, "");
    heavier.shards[1].weight = 2;
    let refusals = [
        (
            config_for(&more, ""),
            "shard s2 is in the config but not in the catalog (which lists s0, s1); a shard joins \
             an existing catalog through POST /admin/shards (shardgate admin shards add)",
        ),
        (
            config_for(&urls, "[routing]\nvnodes = 64\n"),
            "routing.vnodes is 64 but the catalog's ring was built with 256",
        ),
    ];
    for (config, expected) in refusals {
        let error = shardgate::server::start(config)
            .await
            .err()
            .expect("start-up fails");
        let message = error.to_string();
        assert!(
            message.starts_with("the config disagrees with the catalog: ") && message.contains(expected),
            "{message}"
        );
    }
    let restarted = TestServer::start_on(urls.clone(), "").await;
    restarted.stop().await;
    let seeded_otherwise = TestServer::start_with(heavier, urls).await;
    let listed = seeded_otherwise.admin("/admin/shards").await.body;
    assert_eq!(
        listed[1]["weight"], 1,
        "the catalog's weight is used, whatever the config seeds: {listed}"
    );
    seeded_otherwise.stop().await;
}

/// Writes the catalog as the first layout did: no version table, shards without URLs.
async fn write_first_layout_catalog(catalog_url: &str, epoch: i64) {
    let client = connect(catalog_url).await;
    client
        .batch_execute(
            "CREATE SCHEMA shardgate;
             CREATE TABLE shardgate.routing (
                 singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
                 epoch bigint NOT NULL, vnodes integer NOT NULL,
                 updated_at timestamptz NOT NULL DEFAULT now());
             CREATE TABLE shardgate.shards (name text PRIMARY KEY, weight integer NOT NULL, added_epoch bigint NOT NULL);
             CREATE TABLE shardgate.ring_tokens (
                 position bigint PRIMARY KEY, shard text NOT NULL REFERENCES shardgate.shards (name));
             INSERT INTO shardgate.shards VALUES ('s0', 1, 1), ('s1', 1, 1);",
        )
        .await
        .unwrap();
    let ring = Ring::build([("s0", 1), ("s1", 1)], 256).unwrap();
    let positions: Vec<i64> = ring
        .tokens()
        .iter()
        .map(|t| KeyHash(t.position).as_i64())
        .collect();
    let owners: Vec<String> = ring.tokens().iter().map(|t| format!("s{}", t.shard.0)).collect();
    client
        .execute(
            "INSERT INTO shardgate.ring_tokens SELECT * FROM unnest($1::bigint[], $2::text[])",
            &[&positions, &owners],
        )
        .await
        .unwrap();
    client
        .execute(
            "INSERT INTO shardgate.routing (epoch, vnodes) VALUES ($1, 256)",
            &[&epoch],
        )
        .await
        .unwrap();
}

#[tokio::test]
async fn a_catalog_of_the_previous_layout_is_migrated_forward_at_start() {
    let urls = fresh_shards("catalog_layout").await;
    write_first_layout_catalog(&urls[0], 7).await;
    let gate = TestServer::start_on(urls.clone(), "").await;
    let ready = gate.admin("/readyz").await;
    assert_eq!(ready.body["epoch"], 7, "the stored epoch is kept: {}", ready.body);
    let reply = gate.post_events(&events(300, 23)).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    gate.stop().await;
    let catalog = connect(&urls[0]).await;
    let version: i32 = catalog
        .query_one("SELECT version FROM shardgate.catalog_version", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(version, 8);
    let stored = catalog
        .query(
            "SELECT name, url, ordinal FROM shardgate.shards ORDER BY name",
            &[],
        )
        .await
        .unwrap();
    let stored: Vec<(String, String, i32)> = stored.iter().map(|r| (r.get(0), r.get(1), r.get(2))).collect();
    assert_eq!(
        stored,
        [
            ("s0".to_string(), urls[0].clone(), 0),
            ("s1".to_string(), urls[1].clone(), 1)
        ]
    );
    let fence: i64 = connect(&urls[1])
        .await
        .query_one("SELECT epoch FROM shardgate_fence", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(fence, 7);

    let again = TestServer::start_on(urls[..1].to_vec(), "").await;
    assert_eq!(
        again.admin("/readyz").await.status,
        200,
        "a migrated catalog starts again"
    );
    again.stop().await;

    // Back to layout 2, as the previous release left it: no resharding journal.
    let journal = migrated_from(
        &catalog,
        &urls,
        "DROP TABLE shardgate.migration_ranges, shardgate.migrations, shardgate.hot_keys, shardgate.dead_letters, shardgate.key_claims;
         ALTER TABLE shardgate.shards DROP COLUMN retired;
         UPDATE shardgate.catalog_version SET version = 2;",
        "SELECT count(*) FROM pg_tables WHERE schemaname = 'shardgate' AND tablename = 'migration_ranges'",
    )
    .await;
    assert_eq!(journal, (8, 1), "layout 2 is migrated to 8, with the journal");

    // Back to layout 3: a journal without the dual-write epoch and the failure.
    let columns = migrated_from(
        &catalog,
        &urls,
        "ALTER TABLE shardgate.migration_ranges DROP COLUMN estimated_rows;
         ALTER TABLE shardgate.migrations DROP COLUMN dual_write_epoch, DROP COLUMN failure;
         DROP TABLE shardgate.hot_keys, shardgate.dead_letters, shardgate.key_claims;
         UPDATE shardgate.catalog_version SET version = 3;",
        "SELECT count(*) FROM information_schema.columns WHERE table_schema = 'shardgate' \
         AND table_name = 'migrations' AND column_name IN ('dual_write_epoch', 'failure')",
    )
    .await;
    assert_eq!(columns, (8, 2), "layout 3 is migrated to 8");

    // Back to layout 4: no hot keys.
    let hot_keys = migrated_from(
        &catalog,
        &urls,
        "ALTER TABLE shardgate.migration_ranges DROP COLUMN estimated_rows;
         DROP TABLE shardgate.hot_keys, shardgate.dead_letters, shardgate.key_claims;
         UPDATE shardgate.catalog_version SET version = 4;",
        "SELECT count(*) FROM pg_tables WHERE schemaname = 'shardgate' AND tablename = 'hot_keys'",
    )
    .await;
    assert_eq!(hot_keys, (8, 1), "layout 4 is migrated to 8, with the hot keys");

    // Back to layout 5: no dead letters.
    let dead_letters = migrated_from(
        &catalog,
        &urls,
        "ALTER TABLE shardgate.migration_ranges DROP COLUMN estimated_rows;
         DROP TABLE shardgate.dead_letters, shardgate.key_claims;
         UPDATE shardgate.catalog_version SET version = 5;",
        "SELECT count(*) FROM pg_tables WHERE schemaname = 'shardgate' AND tablename = 'dead_letters'",
    )
    .await;
    assert_eq!(
        dead_letters,
        (8, 1),
        "layout 5 is migrated to 8, with the dead letters"
    );

    // Back to layout 6: ranges without their estimated rows.
    let estimates = migrated_from(
        &catalog,
        &urls,
        "ALTER TABLE shardgate.migration_ranges DROP COLUMN estimated_rows;
         DROP TABLE shardgate.key_claims; UPDATE shardgate.catalog_version SET version = 6;",
        "SELECT count(*) FROM information_schema.columns WHERE table_schema = 'shardgate' \
         AND table_name = 'migration_ranges' AND column_name = 'estimated_rows'",
    )
    .await;
    assert_eq!(
        estimates,
        (8, 1),
        "layout 6 is migrated to 8, with the ranges' estimates"
    );

    // Back to layout 7: no claims of spooled writes' idempotency keys.
    let claims = migrated_from(
        &catalog,
        &urls,
        "DROP TABLE shardgate.key_claims; UPDATE shardgate.catalog_version SET version = 7;",
        "SELECT count(*) FROM pg_tables WHERE schemaname = 'shardgate' AND tablename = 'key_claims'",
    )
    .await;
    assert_eq!(claims, (8, 1), "layout 7 is migrated to 8, with the key claims");
}

/// Takes the catalog back to an older layout with `downgrade`, starts a proxy on it (which
/// must keep the stored epoch and answer the admin API), and returns the layout it left and
/// the count `check` reads.
async fn migrated_from(
    catalog: &tokio_postgres::Client,
    urls: &[String],
    downgrade: &str,
    check: &str,
) -> (i32, i64) {
    catalog.batch_execute(downgrade).await.unwrap();
    let gate = TestServer::start_on(urls.to_vec(), "").await;
    assert_eq!(gate.admin("/readyz").await.body["epoch"], 7);
    assert_eq!(gate.admin("/admin/migrations").await.status, 200);
    assert_eq!(gate.admin("/admin/hot-keys").await.status, 200);
    gate.stop().await;
    let version: i32 = catalog
        .query_one("SELECT version FROM shardgate.catalog_version", &[])
        .await
        .unwrap()
        .get(0);
    let count: i64 = catalog.query_one(check, &[]).await.unwrap().get(0);
    (version, count)
}

/// Moves the fences of every shard and then the catalog to `epoch`, as a cutover does;
/// announces it on the routing channel when `notify`.
async fn advance_epoch(urls: &[String], epoch: i64, notify: bool) {
    for url in urls {
        fence::bump(&mut connect(url).await, Epoch(epoch)).await.unwrap();
    }
    let announce = if notify {
        format!("NOTIFY {ROUTING_CHANNEL}, '{epoch}';")
    } else {
        String::new()
    };
    connect(&urls[0])
        .await
        .batch_execute(&format!(
            "BEGIN; UPDATE shardgate.routing SET epoch = {epoch}; {announce} COMMIT;"
        ))
        .await
        .unwrap();
}

#[tokio::test]
async fn a_second_proxy_on_the_same_catalog_takes_a_new_epoch_within_a_second() {
    let urls = fresh_shards("catalog_notify").await;
    let slow_fallback = "[catalog]\nrefresh_interval = \"60s\"\n";
    let first = TestServer::start_on(urls.clone(), slow_fallback).await;
    let second = TestServer::start_on(urls.clone(), slow_fallback).await;
    // Let both listeners connect before the change is written.
    tokio::time::sleep(Duration::from_millis(300)).await;
    advance_epoch(&urls, 2, true).await;
    for gate in [&first, &second] {
        let waited = time_to_epoch(gate, 2, Duration::from_secs(1)).await;
        assert!(waited < Duration::from_secs(1), "{waited:?}");
    }
    let reply = second.post_events(&events(100, 11)).await;
    assert_eq!(reply.status, 200, "written with the new epoch: {}", reply.body);
    first.stop().await;
    second.stop().await;
}

#[tokio::test]
async fn without_a_notification_the_periodic_re_read_finds_the_new_epoch() {
    let urls = fresh_shards("catalog_reread").await;
    let gate = TestServer::start_on(urls.clone(), "[catalog]\nrefresh_interval = \"200ms\"\n").await;
    advance_epoch(&urls, 3, false).await;
    time_to_epoch(&gate, 3, Duration::from_secs(2)).await;
    let reply = gate.post_events(&events(50, 7)).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    gate.stop().await;
}

#[tokio::test]
async fn a_config_without_shards_starts_from_the_catalog_it_names() {
    let urls = fresh_shards("catalog_only").await;
    let gate = TestServer::start_on(urls.clone(), "").await;
    gate.stop().await;
    let catalog_only = config_for(&[], &format!("[catalog]\nurl = \"{}\"\n", urls[0]));
    assert!(catalog_only.shards.is_empty());
    let gate = TestServer::start_with(catalog_only, urls.clone()).await;
    let reply = gate.post_events(&events(200, 19)).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    for (index, url) in urls.iter().enumerate() {
        let acknowledged = reply.body["shards"][format!("s{index}")]
            .as_i64()
            .unwrap_or_default();
        assert!(acknowledged > 0, "{}", reply.body);
        assert_eq!(count_on(url, "events").await, acknowledged, "shard s{index}");
    }
    gate.stop().await;
}

#[tokio::test]
async fn a_re_read_that_finds_a_new_shard_opens_it_and_routes_to_it() {
    let mut urls = fresh_shards("catalog_new_shard").await;
    let third = fresh_database(&clusters()[0], "catalog_new_shard_s2").await;
    let gate = TestServer::start_on(urls.clone(), "[catalog]\nrefresh_interval = \"60s\"\n").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    for url in &urls {
        fence::bump(&mut connect(url).await, Epoch(2)).await.unwrap();
    }
    connect(&urls[0])
        .await
        .batch_execute(&format!(
            "BEGIN;
             INSERT INTO shardgate.shards (name, weight, added_epoch, url, ordinal)
                 VALUES ('s2', 1, 2, '{third}', 2);
             UPDATE shardgate.ring_tokens SET shard = 's2' WHERE position < (
                 SELECT percentile_disc(0.33) WITHIN GROUP (ORDER BY position)
                 FROM shardgate.ring_tokens);
             UPDATE shardgate.routing SET epoch = 2;
             NOTIFY {ROUTING_CHANNEL}, '2';
             COMMIT;"
        ))
        .await
        .unwrap();
    time_to_epoch(&gate, 2, Duration::from_secs(5)).await;
    let listed = gate.admin("/admin/shards").await.body;
    let s2 = &listed[2];
    assert_eq!(
        (&s2["name"], &s2["prepared"]),
        (&json!("s2"), &json!(true)),
        "{listed}"
    );
    assert!(s2["owned_fraction"].as_f64().unwrap() > 0.2, "{listed}");
    let reply = gate.post_events(&events(300, 60)).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    urls.push(third);
    for (index, url) in urls.iter().enumerate() {
        let acknowledged = reply.body["shards"][format!("s{index}")]
            .as_i64()
            .unwrap_or_default();
        assert!(
            acknowledged > 0,
            "every shard, the new one included, took rows: {}",
            reply.body
        );
        assert_eq!(count_on(url, "events").await, acknowledged, "shard s{index}");
    }
    let counted = gate
        .http
        .post(gate.url("/v1/query"))
        .json(&json!({"sql": "SELECT count(*) AS n FROM events"}))
        .send()
        .await
        .unwrap();
    let counted = crate::common::Reply::read(counted).await;
    assert_eq!(
        counted.body["rows"],
        json!([[300]]),
        "queries read the new shard too: {}",
        counted.body
    );
    gate.stop().await;
}
