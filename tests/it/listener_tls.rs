//! TLS on shardgate's own listeners: both HTTP listeners and the Postgres listener serve
//! `[server.tls]`'s certificate, checked by curl and psql (`sslmode=verify-full`) against the
//! authority that signed it; plain HTTP to the TLS port is refused; a reload serves a new
//! certificate to new connections while an open one goes on, and a reload of a broken file
//! keeps the certificate served before.

use crate::common::{TestServer, count_on};
use shardgate::config::TlsConfig;
use shardgate::devcluster::DevCertificates;
use std::path::{Path, PathBuf};
use tokio::process::Command;

const USER: &str = "app";
const PASSWORD: &str = "app-password-1";

/// A directory holding a certificate and key for 127.0.0.1 and the authority that signed them.
struct Certificates {
    dir: PathBuf,
}

impl Certificates {
    fn new(test: &str) -> Certificates {
        let dir = std::env::temp_dir().join(format!("shardgate-{test}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let certificates = Certificates { dir };
        certificates.issue("ca.pem");
        certificates
    }

    /// Writes a new authority to `ca_name` and a certificate it signed to `server.pem` and
    /// `server-key.pem`.
    fn issue(&self, ca_name: &str) {
        let issued = DevCertificates::generate().unwrap();
        std::fs::write(self.dir.join(ca_name), issued.ca_pem).unwrap();
        std::fs::write(self.cert(), issued.server_pem).unwrap();
        std::fs::write(self.key(), issued.server_key_pem).unwrap();
    }

    fn cert(&self) -> PathBuf {
        self.dir.join("server.pem")
    }

    fn key(&self) -> PathBuf {
        self.dir.join("server-key.pem")
    }

    fn ca(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
}

impl Drop for Certificates {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// curl's exit status and what it printed for `url`, trusting `ca`.
async fn curl(url: &str, ca: Option<&Path>) -> (i32, String) {
    let mut command = Command::new("curl");
    command.args(["-s", "-u", &format!("{USER}:{PASSWORD}"), url]);
    if let Some(ca) = ca {
        command.arg("--cacert").arg(ca);
    }
    let output = command.output().await.expect("curl runs");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
    )
}

/// psql's stdout for `sql` over TLS that checks the certificate against `ca` and the host name.
async fn psql_verified(gate: &TestServer, ca: &Path, sql: &str) -> std::process::Output {
    let addr = gate.server.postgres_addr().unwrap();
    let url = format!(
        "postgres://{USER}:{PASSWORD}@127.0.0.1:{}/shardgate?sslmode=verify-full&sslrootcert={}",
        addr.port(),
        ca.display()
    );
    Command::new("psql")
        .args([url.as_str(), "-X", "-A", "-t", "-c", sql])
        .output()
        .await
        .expect("psql runs")
}

#[tokio::test]
async fn the_listeners_serve_tls_checked_by_curl_and_psql_and_a_reload_serves_the_new_certificate() {
    let certificates = Certificates::new("listener_tls");
    let extra = format!(
        "[server.tls]\ncert_file = \"{}\"\nkey_file = \"{}\"\n\
         [postgres]\nlisten = \"127.0.0.1:0\"\n\
         [[users]]\nname = \"{USER}\"\npassword = \"{PASSWORD}\"\nwrite = [\"*\"]\nread = [\"*\"]\nadmin = true\n",
        certificates.cert().display(),
        certificates.key().display()
    );
    let gate = TestServer::start("listener_tls", &extra).await;
    let write = format!("https://127.0.0.1:{}", gate.server.write_addr().port());
    let admin = format!("https://127.0.0.1:{}", gate.server.admin_addr().port());
    let first_ca = certificates.ca("ca.pem");

    assert_eq!(curl(&format!("{write}/healthz"), Some(&first_ca)).await.0, 0);
    let (status, shards) = curl(&format!("{admin}/admin/shards"), Some(&first_ca)).await;
    assert_eq!(status, 0, "the admin listener serves TLS too");
    assert!(shards.contains("\"s0\""), "{shards}");
    let (unverified, _) = curl(&format!("{write}/healthz"), None).await;
    assert_eq!(
        unverified, 60,
        "curl refuses a certificate from an authority it does not trust"
    );
    let plain = format!("http://127.0.0.1:{}/healthz", gate.server.write_addr().port());
    let (status, answer) = curl(&plain, None).await;
    assert_eq!(status, 0, "{answer}");
    assert!(
        answer.contains("this port speaks HTTPS: send the request with https://"),
        "{answer}"
    );

    let psql = psql_verified(
        &gate,
        &first_ca,
        "INSERT INTO logs (source, line) VALUES ('a', 'x')",
    )
    .await;
    assert!(psql.status.success(), "{psql:?}");
    let (before, connection) = tokio_postgres::connect(
        &format!(
            "postgres://{USER}:{PASSWORD}@127.0.0.1:{}/shardgate?sslmode=require",
            gate.server.postgres_addr().unwrap().port()
        ),
        shardgate::tls::connector(&TlsConfig {
            ca_file: Some(first_ca.clone()),
            verify: true,
        })
        .unwrap(),
    )
    .await
    .expect("tokio-postgres checks the first certificate");
    tokio::spawn(connection);

    certificates.issue("second-ca.pem");
    gate.server.reload_certificates();
    let second_ca = certificates.ca("second-ca.pem");
    // curl fails the handshake (35 or 60: both authorities have one name, so OpenSSL finds a
    // signature that does not verify rather than no issuer).
    let (status, _) = curl(&format!("{write}/healthz"), Some(&first_ca)).await;
    assert!(
        [35, 60].contains(&status),
        "the old certificate is no longer served: {status}"
    );
    assert_eq!(
        curl(&format!("{write}/healthz"), Some(&second_ca)).await.0,
        0,
        "the new one is served"
    );
    let psql = psql_verified(
        &gate,
        &second_ca,
        "INSERT INTO logs (source, line) VALUES ('b', 'y')",
    )
    .await;
    assert!(psql.status.success(), "{psql:?}");
    before
        .simple_query("INSERT INTO logs (source, line) VALUES ('c', 'z')")
        .await
        .expect("a session opened before the reload goes on");

    std::fs::write(certificates.cert(), "not a certificate").unwrap();
    gate.server.reload_certificates();
    assert_eq!(
        curl(&format!("{admin}/healthz"), Some(&second_ca)).await.0,
        0,
        "a broken file keeps the certificate served before"
    );
    let mut total = 0;
    for url in &gate.shard_urls {
        total += count_on(url, "logs").await;
    }
    assert_eq!(total, 3);
}
