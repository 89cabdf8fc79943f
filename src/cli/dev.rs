//! `shardgate dev`: start N local PostgreSQL clusters, write a config for them, and serve.
//!
//! Data lives under `--dir` (git-ignored `.shardgate/dev` by default) and is kept between runs;
//! `--fresh` starts from empty clusters. Shards are `s0`, `s1`, ...; `--spare N` adds clusters
//! `spare0`, ... outside the ring, to try adding a shard with. A restart brings back every
//! cluster the directory holds, each on its last port, so shards added from spares are where
//! the catalog recorded them. Ctrl-C stops the proxy, then the clusters.

use anyhow::{Context, Result, bail};
use shardgate::catalog::CatalogError;
use shardgate::config::{Config, TlsConfig};
use shardgate::devcluster::{ClusterOptions, DEV_TABLES, DevCertificates, LocalCluster, PgBinaries};
use shardgate::server::StartError;
use std::path::{Path, PathBuf};

/// Where the write API listens unless `--listen` says otherwise; also `shardgate query`'s default.
const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
/// Where the admin API listens unless `--admin-listen` says otherwise; also `shardgate admin`'s
/// default.
const DEFAULT_ADMIN_LISTEN: &str = "127.0.0.1:8081";
/// Where the Postgres listener listens unless `--postgres-listen` says otherwise: pgbouncer's
/// port, so a local Postgres on 5432 is left alone.
const DEFAULT_POSTGRES_LISTEN: &str = "127.0.0.1:6432";
/// The user the Postgres listener of `shardgate dev` logs in, and its database's name.
/// The dev user that writes and reads every table.
const DEV_WRITER: &str = "app";

/// The dev user that only reads.
const DEV_READER: &str = "analyst";

/// The database name the banner's `psql` line gives (the listener takes any).
const DEV_POSTGRES_DATABASE: &str = "shardgate";

/// Database created on every dev cluster.
const DEV_DATABASE: &str = "shardgate";

/// Options of `shardgate dev`.
#[derive(clap::Args)]
pub struct DevArgs {
    /// Number of local shards.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u16).range(1..=16))]
    shards: u16,
    /// Extra local clusters outside the ring, to add as shards while shardgate runs (spares an
    /// earlier start made come back as well).
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u16).range(0..=8))]
    spare: u16,
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
    #[arg(long, default_value = DEFAULT_ADMIN_LISTEN)]
    admin_listen: String,
    /// Address of the PostgreSQL-protocol listener (user `shardgate`, password in
    /// `postgres-password` in --dir).
    #[arg(long, default_value = DEFAULT_POSTGRES_LISTEN)]
    postgres_listen: String,
    /// Make the shards accept only TLS connections, with a local certificate authority
    /// generated into --dir, and connect to them with sslmode=require; serve the listeners
    /// (HTTPS, and TLS on the Postgres listener) with a certificate of that authority too.
    #[arg(long)]
    tls: bool,
}

/// Name prefix of the shards' cluster directories.
const SHARD_PREFIX: &str = "s";
/// Name prefix of the spares' cluster directories.
const SPARE_PREFIX: &str = "spare";

/// The clusters of one dev directory: the shards the ring started with, then the spares.
struct DevClusters {
    shards: Vec<LocalCluster>,
    spares: Vec<LocalCluster>,
}

impl DevClusters {
    fn all(&self) -> impl Iterator<Item = &LocalCluster> {
        self.shards.iter().chain(&self.spares)
    }

    fn stop(&self) {
        for cluster in self.all() {
            if let Err(e) = cluster.stop() {
                eprintln!("warning: {e}");
            }
        }
    }
}

/// Runs the dev environment until Ctrl-C.
pub async fn run(args: DevArgs) -> Result<()> {
    let bins = PgBinaries::locate()?;
    let existing = existing_clusters(&args.dir, SHARD_PREFIX)?;
    let existing_spares = existing_clusters(&args.dir, SPARE_PREFIX)?;
    let leftovers =
        cluster_names(SHARD_PREFIX, &existing).chain(cluster_names(SPARE_PREFIX, &existing_spares));
    let leftovers: Vec<String> = leftovers.collect();
    if args.fresh {
        stop_leftovers(&bins, &args.dir, &leftovers, "deleting its data (--fresh)")?;
        if args.dir.exists() {
            std::fs::remove_dir_all(&args.dir)
                .with_context(|| format!("cannot delete {}", args.dir.display()))?;
        }
    } else {
        refuse_other_shard_count(&args, &existing)?;
        stop_leftovers(&bins, &args.dir, &leftovers, "starting it again")?;
    }
    let spares = if args.fresh {
        args.spare
    } else {
        let made = existing_spares.last().map_or(0, |last| last + 1);
        args.spare.max(made)
    };
    let clusters = start_clusters(&bins, &args, spares).await?;
    let result = serve(&args, &clusters).await;
    clusters.stop();
    result
}

/// Directory names of the clusters `prefix` + each index.
fn cluster_names<'a>(prefix: &'a str, indexes: &'a [u16]) -> impl Iterator<Item = String> + 'a {
    indexes.iter().map(move |i| format!("{prefix}{i}"))
}

/// The clusters named `prefix` + index whose data exists under `dir`, by index.
fn existing_clusters(dir: &Path, prefix: &str) -> Result<Vec<u16>> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok(Vec::new());
    };
    let mut shards = Vec::new();
    for entry in entries {
        let entry = entry.with_context(|| format!("cannot list {}", dir.display()))?;
        let name = entry.file_name();
        let index = name
            .to_str()
            .and_then(|n| n.strip_prefix(prefix))
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
fn stop_leftovers(bins: &PgBinaries, dir: &Path, clusters: &[String], next: &str) -> Result<()> {
    for name in clusters {
        if let Some(leftover) = LocalCluster::stop_leftover(bins, &dir.join(name))? {
            let port = leftover.port.map(|p| format!(", port {p}")).unwrap_or_default();
            let what = if name.starts_with(SPARE_PREFIX) {
                "cluster"
            } else {
                "shard"
            };
            eprintln!(
                "{what} {name}: its server (pid {}{port}) was still running from an earlier start \
                 that did not stop it; stopped it cleanly, {next}",
                leftover.pid
            );
        }
    }
    Ok(())
}

/// Starts the shards' clusters and `spares` spare ones, each with the dev database.
async fn start_clusters(bins: &PgBinaries, args: &DevArgs, spares: u16) -> Result<DevClusters> {
    let mut clusters = DevClusters {
        shards: Vec::new(),
        spares: Vec::new(),
    };
    let wanted = (0..args.shards)
        .map(|i| (format!("{SHARD_PREFIX}{i}"), "shard"))
        .chain((0..spares).map(|i| (format!("{SPARE_PREFIX}{i}"), "spare cluster")));
    for (name, what) in wanted {
        let dir = args.dir.join(&name);
        eprintln!("starting PostgreSQL {what} {name} in {}", dir.display());
        match LocalCluster::start(bins, &dir, &ClusterOptions::default()) {
            Ok(cluster) if name.starts_with(SPARE_PREFIX) => clusters.spares.push(cluster),
            Ok(cluster) => clusters.shards.push(cluster),
            Err(e) => {
                clusters.stop();
                return Err(e.into());
            }
        }
    }
    if let Err(e) = prepare_clusters(args, &clusters).await {
        clusters.stop();
        return Err(e);
    }
    Ok(clusters)
}

/// Creates the dev database on every cluster and, with `--tls`, makes them require TLS.
async fn prepare_clusters(args: &DevArgs, clusters: &DevClusters) -> Result<()> {
    for cluster in clusters.all() {
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
        for cluster in clusters.all() {
            cluster.require_tls(&certificates.server_pem, &certificates.server_key_pem)?;
            wait_for_tls(cluster, &ca_file).await?;
        }
        let (cert, key) = listener_certificate(args);
        std::fs::write(&cert, &certificates.server_pem)
            .with_context(|| format!("cannot write {}", cert.display()))?;
        write_private(&key, &certificates.server_key_pem)?;
    }
    Ok(())
}

/// The spool's directory, absolute so the config works from any directory.
fn spool_dir(args: &DevArgs) -> PathBuf {
    std::path::absolute(args.dir.join("spool")).unwrap_or_else(|_| args.dir.join("spool"))
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

async fn serve(args: &DevArgs, clusters: &DevClusters) -> Result<()> {
    let config_path = args.dir.join("shardgate.toml");
    let token = secret(&args.dir, "admin-token")?;
    let users = DevUsers {
        app: secret(&args.dir, "app-password")?,
        analyst: secret(&args.dir, "analyst-password")?,
    };
    let text = dev_config(args, &clusters.shards, &token, &users);
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
    let welcome = Welcome {
        config: &config_path,
        addresses: (server.write_addr(), server.admin_addr()),
        postgres: server.postgres_addr(),
        users: &users,
        token: &token,
        ring: server.shards(),
        spares: clusters.spares.iter().map(|c| dev_url(args, c)).collect(),
        ca: args.tls.then(|| ca_file(args)),
    };
    welcome.print();
    super::serve_until_signal(&server).await;
    server.shutdown();
    server.wait().await;
    eprintln!("stopping the local shards");
    Ok(())
}

/// The passwords of the users dev configures: `app` writes and reads every table, `analyst`
/// reads every table.
struct DevUsers {
    app: String,
    analyst: String,
}

/// A secret of this dev directory (the admin token, a user's password): made once, kept
/// in `file` (readable by its owner only) so it stays the same across restarts.
fn secret(dir: &Path, file: &str) -> Result<String> {
    let path = dir.join(file);
    if let Ok(token) = std::fs::read_to_string(&path) {
        return Ok(token.trim().to_string());
    }
    let token = format!("{:032x}", rand::random::<u128>());
    write_private(&path, &token)?;
    Ok(token)
}

/// Writes `text` to `path`, readable by its owner only.
fn write_private(path: &Path, text: &str) -> Result<()> {
    std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))?;
    std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o600))
        .with_context(|| format!("cannot restrict {}", path.display()))
}

/// The certificate and key `--tls` writes for the listeners: the shards' own, for 127.0.0.1
/// and localhost, signed by the local authority.
fn listener_certificate(args: &DevArgs) -> (PathBuf, PathBuf) {
    let absolute =
        |name: &str| std::path::absolute(args.dir.join(name)).unwrap_or_else(|_| args.dir.join(name));
    (absolute("server.pem"), absolute("server-key.pem"))
}

/// The URL shardgate reaches a dev cluster's database at.
fn dev_url(args: &DevArgs, cluster: &LocalCluster) -> String {
    let ssl = if args.tls { "?sslmode=require" } else { "" };
    format!("{}{ssl}", cluster.url(DEV_DATABASE))
}

/// The config of the shards the ring starts with; shards added later live in the catalog.
fn dev_config(args: &DevArgs, shards: &[LocalCluster], token: &str, users: &DevUsers) -> String {
    let mut text = format!(
        "# Written by `shardgate dev` at every start.\n\n[server]\nlisten = \"{}\"\nadmin_listen = \"{}\"\n\n\
         # The status page is readable without credentials; the rest of the admin API is not.\n\
         [admin]\ntoken = \"{token}\"\npublic_status = true\n",
        args.listen, args.admin_listen
    );
    text.push_str(&format!(
        "\n[[users]]\nname = \"{DEV_WRITER}\"\npassword = \"{}\"\nwrite = [\"*\"]\nread = [\"*\"]\n\
         \n[[users]]\nname = \"{DEV_READER}\"\npassword = \"{}\"\nread = [\"*\"]\n",
        users.app, users.analyst
    ));
    text.push_str(&format!(
        "\n# Room for pgbench's 256 clients.\n[postgres]\nlisten = \"{}\"\nmax_sessions = 1000\n",
        args.postgres_listen
    ));
    text.push_str(
        "\n# Shorter than the default 60 s, so that a shard added here is done soon after its copy;\n\
         # the cleanup waits at least as long as a query may run (query.statement_timeout, 30 s).\n\
         [reshard]\ncleanup_delay = \"30s\"\n",
    );
    text.push_str(&format!(
        "\n# Where writes answered 202 wait for their shards.\n[spool]\ndir = \"{}\"\n",
        spool_dir(args).display()
    ));
    if args.tls {
        let (cert, key) = listener_certificate(args);
        text.push_str(&format!(
            "\n# The listeners serve a certificate of the local authority too.\n[server.tls]\n\
             cert_file = \"{}\"\nkey_file = \"{}\"\n",
            cert.display(),
            key.display()
        ));
        text.push_str(&format!("\n[tls]\nca_file = \"{}\"\n", ca_file(args).display()));
    }
    for (i, cluster) in shards.iter().enumerate() {
        text.push_str(&format!(
            "\n[[shards]]\nname = \"{SHARD_PREFIX}{i}\"\nurl = \"{}\"\n",
            dev_url(args, cluster)
        ));
    }
    text.push_str(DEV_TABLES);
    text
}

/// What the banner shows once shardgate serves.
struct Welcome<'a> {
    config: &'a Path,
    addresses: (std::net::SocketAddr, std::net::SocketAddr),
    /// The Postgres listener's address.
    postgres: Option<std::net::SocketAddr>,
    users: &'a DevUsers,
    token: &'a str,
    /// Name and URL of every shard in the ring, added ones included.
    ring: Vec<(String, String)>,
    /// URL of every spare cluster.
    spares: Vec<String>,
    /// The local authority whose certificate the listeners serve, with `--tls`.
    ca: Option<PathBuf>,
}

impl Welcome<'_> {
    fn print(&self) {
        let (write, admin) = self.addresses;
        println!();
        println!(
            "shardgate is running on {} local shard(s); config: {}",
            self.ring.len(),
            self.config.display()
        );
        println!();
        let (scheme, curl) = (self.scheme(), self.curl());
        println!("  write API:  {scheme}://{write}/v1/tables/events/rows");
        println!("  query API:  {scheme}://{write}/v1/query");
        println!("  admin API:  {scheme}://{admin}/admin/shards");
        println!("  status page: {scheme}://{admin}/");
        if let Some(ca) = &self.ca {
            println!(
                "  TLS:  certificates of the local authority {}: trust it with curl --cacert, \
                 psql sslrootcert= (sslmode=verify-full), or your system's or browser's store",
                ca.display()
            );
        }
        println!();
        let (app, analyst) = (&self.users.app, &self.users.analyst);
        println!("  user {DEV_WRITER}:      {app}  (writes and reads every table)");
        println!("  user {DEV_READER}:  {analyst}  (reads every table)");
        println!();
        println!("  write:");
        println!("    {curl} -u {DEV_WRITER}:{app} {scheme}://{write}/v1/tables/events/rows \\");
        println!("      -H 'Content-Type: application/json' \\");
        println!(
            "      -d '[{{\"tenant_id\": \"acme\", \"event_type\": \"click\", \"payload\": {{\"x\": 1}}}}]'"
        );
        println!("  query:");
        println!("    {curl} -u {DEV_READER}:{analyst} {scheme}://{write}/v1/query \\");
        println!("      -H 'Content-Type: application/json' \\");
        println!("      -d '{{\"sql\": \"SELECT tenant_id, count(*) FROM events GROUP BY tenant_id\"}}'");
        // The query command reads the URL, the authority and a reader's password from the config.
        let mut options = String::new();
        if write.to_string() != DEFAULT_LISTEN {
            options.push_str(&format!("--url {scheme}://{write} "));
        }
        if self.config != Path::new(super::query::DEFAULT_CONFIG) {
            options.push_str(&format!("--config {} ", self.config.display()));
        }
        println!("    shardgate query {options}\"SELECT event_type, count(*) FROM events GROUP BY 1\"");
        self.print_adding();
        println!();
        println!("  admin token: {}", self.token);
        println!();
        if let Some(addr) = self.postgres {
            let tls = match &self.ca {
                Some(ca) => format!("?sslmode=verify-full&sslrootcert={}", ca.display()),
                None => String::new(),
            };
            println!("  postgres:  psql postgres://{DEV_WRITER}:{app}@{addr}/{DEV_POSTGRES_DATABASE}{tls}");
        }
        for (name, url) in &self.ring {
            println!("  shard {name}:  psql {url}");
        }
        for (i, url) in self.spares.iter().enumerate() {
            match self.ring.iter().find(|(_, in_ring)| in_ring == url) {
                Some((name, _)) => println!("  {SPARE_PREFIX}{i}:  {url}  (in the ring as {name})"),
                None => println!("  {SPARE_PREFIX}{i}:  {url}  (spare, not in the ring)"),
            }
        }
        println!();
        println!("Press Ctrl-C to stop shardgate and the shards.");
    }

    /// How to add a shard: the command for the first free spare, else a plan to try.
    fn print_adding(&self) {
        let admin = self.addresses.1;
        let name = self.next_shard_name();
        let free = self
            .spares
            .iter()
            .find(|url| !self.ring.iter().any(|(_, in_ring)| in_ring == *url));
        let Some(spare) = free else {
            println!(
                "  plan adding a shard (run with --spare {} for a local database to add):",
                self.spares.len() + 1
            );
            println!(
                "    {} {}://{admin}/admin/shards/plan -H 'Authorization: Bearer {}' \\",
                self.curl(),
                self.scheme(),
                self.token
            );
            println!("      -d '{{\"name\": \"{name}\", \"url\": \"postgres://USER@HOST/DATABASE\"}}'");
            return;
        };
        let url = match &self.ca {
            Some(ca) => format!("--url https://{admin} --cacert {} ", ca.display()),
            None if admin.to_string() == DEFAULT_ADMIN_LISTEN => String::new(),
            None => format!("--url http://{admin} "),
        };
        println!("  add a spare as a shard while writes run (it follows the move to its end):");
        println!(
            "    shardgate admin {url}--token {} shards add {name} {spare}",
            self.token
        );
    }

    /// The listeners' URL scheme.
    fn scheme(&self) -> &'static str {
        if self.ca.is_some() { "https" } else { "http" }
    }

    /// curl, trusting the local authority when the listeners serve TLS.
    fn curl(&self) -> String {
        match &self.ca {
            Some(ca) => format!("curl -s --cacert {}", ca.display()),
            None => "curl -s".to_string(),
        }
    }

    /// The first `s<N>` no shard in the ring is called.
    fn next_shard_name(&self) -> String {
        (0..)
            .map(|i| format!("{SHARD_PREFIX}{i}"))
            .find(|name| !self.ring.iter().any(|(in_ring, _)| in_ring == name))
            .expect("some index is free")
    }
}
