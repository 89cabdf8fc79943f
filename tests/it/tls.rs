//! TLS to the shards: one shard accepts only TLS connections; shardgate reaches it with
//! `sslmode=require` and checks its certificate against `tls.ca_file`.

use crate::common::{TestServer, config_for, fresh_database};
use serde_json::{Value, json};
use shardgate::config::TlsConfig;
use shardgate::devcluster::DevCertificates;
use std::path::PathBuf;
use std::time::Duration;

/// Two shard URLs: s0 on the shared cluster without TLS, s1 on a private cluster that refuses
/// connections without TLS, with `sslmode=require`; and the CA file that signed s1's
/// certificate.
async fn shards_with_one_tls_only(test: &str) -> (Vec<String>, PathBuf) {
    let cluster = crate::common::private_cluster(test);
    let plain_url = fresh_database(&crate::common::clusters()[0], test).await;
    let tls_url = fresh_database(&cluster, test).await;
    let certificates = DevCertificates::generate().unwrap();
    cluster
        .require_tls(&certificates.server_pem, &certificates.server_key_pem)
        .unwrap();
    let ca_file = std::env::temp_dir().join(format!("shardgate-{test}-{}-ca.pem", std::process::id()));
    std::fs::write(&ca_file, &certificates.ca_pem).unwrap();
    wait_until_plain_connections_are_refused(&tls_url).await;
    (vec![plain_url, format!("{tls_url}?sslmode=require")], ca_file)
}

async fn wait_until_plain_connections_are_refused(url: &str) {
    for _ in 0..50 {
        if tokio_postgres::connect(url, tokio_postgres::NoTls).await.is_err() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the cluster still accepts connections without TLS");
}

fn tls_section(ca_file: &std::path::Path) -> String {
    format!("[tls]\nca_file = \"{}\"\n", ca_file.display())
}

#[tokio::test]
async fn a_tls_only_shard_takes_writes_and_queries_over_verified_tls() {
    let (urls, ca_file) = shards_with_one_tls_only("tls_verified").await;
    let gate = TestServer::start_on(urls.clone(), &tls_section(&ca_file)).await;
    let rows: Vec<Value> = (0..200)
        .map(|i| json!({"tenant_id": format!("t{i}"), "event_type": "view", "ts": "2024-05-01T00:00:00Z"}))
        .collect();
    let reply = gate.post_events(&Value::Array(rows)).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let on_tls_shard = reply.body["shards"]["s1"].as_i64().unwrap();
    assert!(on_tls_shard > 0, "{}", reply.body);

    let answer = gate
        .http
        .post(gate.url("/v1/query"))
        .json(&json!({"sql": "SELECT count(*) FROM events"}))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    assert_eq!(answer.json::<Value>().await.unwrap()["rows"], json!([[200]]));

    let tls = TlsConfig {
        ca_file: Some(ca_file.clone()),
        verify: true,
    };
    let shard = shardgate::pg::connect_once(&urls[1], None, &tls).await.unwrap();
    let stored: i64 = shard
        .query_one("SELECT count(*) FROM events", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(stored, on_tls_shard);
    let encrypted: i64 = shard
        .query_one(
            "SELECT count(*) FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) \
             WHERE a.application_name LIKE 'shardgate%' AND s.ssl",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(encrypted >= 2, "shardgate's writer and query connections use TLS");
    gate.stop().await;
    std::fs::remove_file(ca_file).unwrap();
}

#[tokio::test]
async fn an_unknown_certificate_stops_start_up_unless_verification_is_off() {
    let (urls, ca_file) = shards_with_one_tls_only("tls_unverified").await;
    let error = shardgate::server::start(config_for(&urls, ""))
        .await
        .err()
        .expect("start-up fails without the CA")
        .to_string();
    assert!(error.contains("s1"), "{error}");
    assert!(
        error.contains("invalid peer certificate: UnknownIssuer"),
        "{error}"
    );

    let gate = TestServer::start_on(urls, "[tls]\nverify = false\n").await;
    let reply = gate
        .post_events(
            &json!([{"tenant_id": "a", "event_type": "view"}, {"tenant_id": "b", "event_type": "view"}]),
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    gate.stop().await;
    std::fs::remove_file(ca_file).unwrap();
}
