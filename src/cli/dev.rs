//! `shardgate dev`: start N local PostgreSQL clusters, write a config for them, and serve.
//!
//! Data lives under `--dir` (git-ignored `.shardgate/dev` by default) and is kept between runs;
//! `--fresh` starts from empty clusters. Ctrl-C stops the proxy, then the clusters.

use anyhow::{Context, Result, bail};
use shardgate::catalog::CatalogError;
use shardgate::config::{Config, TlsConfig};
use shardgate::devcluster::{ClusterOptions, DEV_TABLES, DevCertificates, LocalCluster, PgBinaries};
use shardgate::server::StartError;
use std::path::{Path, PathBuf};

/// Where the write API listens unless `--listen` says otherwise; also `shardgate query`'s default.
const DEFAULT_LISTEN: &str = "127.0.0.1:8080";

/// Database created on every dev cluster.
const DEV_DATABASE: &str = "shardgate";

/// Options of `shardgate dev`.
#[derive(clap::Args)]
pub struct DevArgs {
    /// Number of local shards.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u16).range(1..=16))]
    shards: u16,
    /// Directory holding the clusters' data and the generated config.
    #[arg(long, default_value = ".shardgate/dev")]
    dir: PathBuf,
    /// Delete existing dev data and start from empty clusters.
    #[arg(long)]
    fresh: bool,
    /// Address of the write API.
    #[arg(long, default_value = DEFAULT_LISTEN)]
    listen: String,
    /// Address of the admin API.
    #[arg(long, default_value = "127.0.0.1:8081")]
    admin_listen: String,
    /// Make the shards accept only TLS connections, with a local certificate authority
    /// generated into --dir, and connect to them with sslmode=require.
    #[arg(long)]
    tls: bool,
}

/// Runs the dev environment until Ctrl-C.
pub async fn run(args: DevArgs) -> Result<()> {
    let bins = PgBinaries::locate()?;
    let existing = existing_shards(&args.dir)?;
    if args.fresh {
        stop_leftovers(&bins, &args.dir, &existing, "deleting its data (--fresh)")?;
        if args.dir.exists() {
            std::fs::remove_dir_all(&args.dir)
                .with_context(|| format!("cannot delete {}", args.dir.display()))?;
        }
    } else {
        refuse_other_shard_count(&args, &existing)?;
        stop_leftovers(&bins, &args.dir, &existing, "starting it again")?;
    }
    let clusters = start_clusters(&bins, &args).await?;
    let result = serve(&args, &clusters).await;
    for cluster in &clusters {
        if let Err(e) = cluster.stop() {
            eprintln!("warning: {e}");
        }
    }
    result
}

/// The shards whose cluster data exists under `dir`, in order (`s0`, `s1`, ...).
fn existing_shards(dir: &Path) -> Result<Vec<u16>> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok(Vec::new());
    };
    let mut shards = Vec::new();
    for entry in entries {
        let entry = entry.with_context(|| format!("cannot list {}", dir.display()))?;
        let name = entry.file_name();
        let index = name
            .to_str()
            .and_then(|n| n.strip_prefix('s'))
            .and_then(|n| n.parse().ok());
        if let Some(index) = index
            && entry.path().join("data").join("PG_VERSION").is_file()
        {
            shards.push(index);
        }
    }
    shards.sort_unstable();
    Ok(shards)
}

/// Refuses, before anything is started or written, dev data made with another `--shards`.
fn refuse_other_shard_count(args: &DevArgs, existing: &[u16]) -> Result<()> {
    let wanted: Vec<u16> = (0..args.shards).collect();
    if existing.is_empty() || existing == wanted.as_slice() {
        return Ok(());
    }
    let names: Vec<String> = existing.iter().map(|i| format!("s{i}")).collect();
    bail!(
        "the dev data in {} has {} shard(s) ({}), not {}; run with --shards {}, or with --fresh to \
         start over (which deletes it)",
        args.dir.display(),
        existing.len(),
        names.join(", "),
        args.shards,
        existing.len()
    )
}

/// Stops the servers an earlier `shardgate dev` left running on this data (it was killed, or
/// its terminal closed), saying so, and what comes `next`, in one line each.
fn stop_leftovers(bins: &PgBinaries, dir: &Path, shards: &[u16], next: &str) -> Result<()> {
    for i in shards {
        let shard_dir = dir.join(format!("s{i}"));
        if let Some(leftover) = LocalCluster::stop_leftover(bins, &shard_dir)? {
            let port = leftover.port.map(|p| format!(", port {p}")).unwrap_or_default();
            eprintln!(
                "shard s{i}: its server (pid {}{port}) was still running from an earlier start \
                 that did not stop it; stopped it cleanly, {next}",
                leftover.pid
            );
        }
    }
    Ok(())
}

async fn start_clusters(bins: &PgBinaries, args: &DevArgs) -> Result<Vec<LocalCluster>> {
    let mut clusters = Vec::new();
    for i in 0..args.shards {
        let dir = args.dir.join(format!("s{i}"));
        eprintln!("starting PostgreSQL shard s{i} in {}", dir.display());
        match LocalCluster::start(bins, &dir, &ClusterOptions::default()) {
            Ok(cluster) => clusters.push(cluster),
            Err(e) => {
                clusters.iter().for_each(|c: &LocalCluster| drop(c.stop()));
                return Err(e.into());
            }
        }
    }
    if let Err(e) = prepare_clusters(args, &clusters).await {
        clusters.iter().for_each(|c| drop(c.stop()));
        return Err(e);
    }
    Ok(clusters)
}

/// Creates the dev database on every cluster and, with `--tls`, makes them require TLS.
async fn prepare_clusters(args: &DevArgs, clusters: &[LocalCluster]) -> Result<()> {
    for cluster in clusters {
        if cluster.requires_tls() && !args.tls {
            bail!(
                "the dev data in {} requires TLS; run with --tls, or with --fresh to start over",
                args.dir.display()
            );
        }
        create_database(cluster).await?;
    }
    if args.tls {
        let certificates = DevCertificates::generate().context("cannot generate certificates")?;
        let ca_file = ca_file(args);
        std::fs::write(&ca_file, &certificates.ca_pem)
            .with_context(|| format!("cannot write {}", ca_file.display()))?;
        for cluster in clusters {
            cluster.require_tls(&certificates.server_pem, &certificates.server_key_pem)?;
            wait_for_tls(cluster, &ca_file).await?;
        }
    }
    Ok(())
}

/// The CA certificate `--tls` writes and the config trusts.
fn ca_file(args: &DevArgs) -> PathBuf {
    std::path::absolute(args.dir.join("ca.pem")).unwrap_or_else(|_| args.dir.join("ca.pem"))
}

/// Waits until the cluster, reloading its settings, answers TLS connections.
async fn wait_for_tls(cluster: &LocalCluster, ca_file: &Path) -> Result<()> {
    let tls = TlsConfig {
        ca_file: Some(ca_file.to_path_buf()),
        verify: true,
    };
    let url = format!("{}?sslmode=require", cluster.url("postgres"));
    let mut last_error = String::new();
    for _ in 0..50 {
        match shardgate::pg::connect_once(&url, None, &tls).await {
            Ok(_) => return Ok(()),
            Err(e) => last_error = e,
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    bail!(
        "the cluster on port {} does not answer over TLS: {last_error}",
        cluster.port()
    )
}

async fn create_database(cluster: &LocalCluster) -> Result<()> {
    let (client, connection) =
        tokio_postgres::connect(&cluster.socket_config("postgres"), tokio_postgres::NoTls)
            .await
            .with_context(|| format!("cannot connect to the cluster on port {}", cluster.port()))?;
    let driver = tokio::spawn(connection);
    let exists = client
        .query_opt("SELECT 1 FROM pg_database WHERE datname = $1", &[&DEV_DATABASE])
        .await?
        .is_some();
    if !exists {
        client
            .batch_execute(&format!("CREATE DATABASE {DEV_DATABASE}"))
            .await?;
    }
    drop(client);
    driver.await??;
    Ok(())
}

async fn serve(args: &DevArgs, clusters: &[LocalCluster]) -> Result<()> {
    let config_path = args.dir.join("shardgate.toml");
    let token = admin_token(&args.dir)?;
    let text = dev_config(args, clusters, &token);
    std::fs::write(&config_path, &text).with_context(|| format!("cannot write {}", config_path.display()))?;
    let config = Config::parse(&text).map_err(anyhow::Error::msg)?;
    let server = match shardgate::server::start(config).await {
        Ok(server) => server,
        Err(StartError::Catalog(e @ CatalogError::Disagrees(_))) => {
            bail!(
                "{e}\nThe dev data in {} was made with other shards; run with --fresh to start over",
                args.dir.display()
            )
        }
        Err(e) => return Err(e).context("cannot start shardgate"),
    };
    let addresses = (server.write_addr(), server.admin_addr());
    print_welcome(&config_path, addresses, &token, clusters);
    super::shutdown_signal().await;
    server.shutdown();
    server.wait().await;
    eprintln!("stopping the local shards");
    Ok(())
}

/// The admin token of this dev directory: made once, kept in `admin-token` (readable by its
/// owner only) so it stays the same across restarts.
fn admin_token(dir: &Path) -> Result<String> {
    let path = dir.join("admin-token");
    if let Ok(token) = std::fs::read_to_string(&path) {
        return Ok(token.trim().to_string());
    }
    let token = format!("{:032x}", rand::random::<u128>());
    std::fs::write(&path, &token).with_context(|| format!("cannot write {}", path.display()))?;
    std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o600))
        .with_context(|| format!("cannot restrict {}", path.display()))?;
    Ok(token)
}

fn dev_config(args: &DevArgs, clusters: &[LocalCluster], token: &str) -> String {
    let mut text = format!(
        "# Written by `shardgate dev` at every start.\n\n[server]\nlisten = \"{}\"\nadmin_listen = \"{}\"\n\n[admin]\ntoken = \"{token}\"\n",
        args.listen, args.admin_listen
    );
    let ssl = if args.tls { "?sslmode=require" } else { "" };
    if args.tls {
        text.push_str(&format!("\n[tls]\nca_file = \"{}\"\n", ca_file(args).display()));
    }
    for (i, cluster) in clusters.iter().enumerate() {
        text.push_str(&format!(
            "\n[[shards]]\nname = \"s{i}\"\nurl = \"{}{ssl}\"\n",
            cluster.url(DEV_DATABASE)
        ));
    }
    text.push_str(DEV_TABLES);
    text
}

fn print_welcome(
    config: &Path,
    (write, admin): (std::net::SocketAddr, std::net::SocketAddr),
    token: &str,
    clusters: &[LocalCluster],
) {
    println!();
    println!(
        "shardgate is running on {} local shard(s); config: {}",
        clusters.len(),
        config.display()
    );
    println!();
    println!("  write API:  http://{write}/v1/tables/events/rows");
    println!("  query API:  http://{write}/v1/query");
    println!("  admin API:  http://{admin}/admin/shards");
    println!();
    println!("  write:");
    println!("    curl -s http://{write}/v1/tables/events/rows -H 'Content-Type: application/json' \\");
    println!(
        "      -d '[{{\"tenant_id\": \"acme\", \"event_type\": \"click\", \"payload\": {{\"x\": 1}}}}]'"
    );
    println!("  query:");
    println!("    curl -s http://{write}/v1/query -H 'Content-Type: application/json' \\");
    println!("      -d '{{\"sql\": \"SELECT tenant_id, count(*) FROM events GROUP BY tenant_id\"}}'");
    let url = if write.to_string() == DEFAULT_LISTEN {
        String::new()
    } else {
        format!("--url http://{write} ")
    };
    println!("    shardgate query {url}\"SELECT event_type, count(*) FROM events GROUP BY 1\"");
    println!("  plan adding a shard (the admin token is in the config's [admin] section):");
    println!("    curl -s http://{admin}/admin/shards/plan -H 'Authorization: Bearer {token}' \\");
    println!(
        "      -d '{{\"name\": \"s{}\", \"url\": \"postgres://USER@HOST/DATABASE\"}}'",
        clusters.len()
    );
    println!();
    println!("  admin token: {token}");
    println!();
    for (i, cluster) in clusters.iter().enumerate() {
        println!("  shard s{i}:  psql {}", cluster.url(DEV_DATABASE));
    }
    println!();
    println!("Press Ctrl-C to stop shardgate and the shards.");
}
