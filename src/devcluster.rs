//! Local PostgreSQL clusters started from the installed server binaries, for `shardgate dev`
//! and for the integration tests.
//!
//! Each cluster has its own data directory, a free loopback port, its unix socket in its own
//! directory and trust authentication on loopback. Postgres refuses to run as root, so when this
//! process is root every server command runs as the `postgres` user, which also owns the data.
//! This module only manages processes; it never holds a connection.

use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use thiserror::Error;

/// Environment variable naming the directory that holds `initdb` and `pg_ctl`.
pub const PG_BIN_ENV: &str = "SHARDGATE_PG_BIN";

/// The OS user that runs Postgres when this process is root.
const POSTGRES_USER: &str = "postgres";

/// Server settings for sustained ingest, measured at half of the maximum ingest rate
/// (docs/benchmarks.md):
/// - the default 1GB `max_wal_size` makes a shard taking ~100 MB/s of WAL checkpoint every few
///   seconds, and the full-page images after each checkpoint double the WAL volume for a while
///   (p99 ack latency 260-360 ms); a larger `max_wal_size` and `wal_compression` make both rare
///   and small;
/// - COPY writes table pages from the backend, which piles up gigabytes of dirty OS pages whose
///   writeback then stalls WAL fsyncs; `backend_flush_after` writes them back as they go.
const INGEST_SETTINGS: &str =
    "-c max_wal_size=8GB -c checkpoint_timeout=15min -c wal_compression=lz4 -c backend_flush_after=1MB";

/// How many times a start is retried when the chosen port was taken in the meantime.
const PORT_ATTEMPTS: usize = 3;
/// Settings file of a cluster that requires TLS, included from `postgresql.conf`.
const TLS_CONF: &str = "tls.conf";
/// File beside the data directory holding the port of the last start, tried first next time.
const PORT_FILE: &str = "port";

/// A local cluster could not be set up or controlled.
#[derive(Debug, Error)]
pub enum DevClusterError {
    /// No server binaries were found.
    #[error(
        "PostgreSQL server binaries not found (looked in ${PG_BIN_ENV}, `pg_config --bindir` and \
         /usr/lib/postgresql/*/bin). Install them with `apt-get install postgresql`, or set \
         {PG_BIN_ENV} to the directory holding initdb and pg_ctl"
    )]
    BinariesNotFound,
    /// A file-system step failed.
    #[error("{what}: {cause}")]
    Io {
        /// The step.
        what: String,
        /// Why.
        cause: std::io::Error,
    },
    /// A server command exited with an error.
    #[error("{what} failed ({status}):\n{output}")]
    Command {
        /// The command.
        what: String,
        /// Its exit status.
        status: String,
        /// Its output, and the server log's tail when there is one.
        output: String,
    },
}

/// The directory of the server binaries.
#[derive(Debug, Clone)]
pub struct PgBinaries {
    dir: PathBuf,
}

impl PgBinaries {
    /// Finds `initdb` and `pg_ctl`: `$SHARDGATE_PG_BIN`, then `pg_config --bindir`, then the newest
    /// `/usr/lib/postgresql/*/bin`.
    pub fn locate() -> Result<PgBinaries, DevClusterError> {
        let from_env = std::env::var_os(PG_BIN_ENV).map(PathBuf::from);
        let from_pg_config = Command::new("pg_config")
            .arg("--bindir")
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()));
        from_env
            .into_iter()
            .chain(from_pg_config)
            .chain(debian_bin_dirs())
            .find(|dir| dir.join("initdb").is_file() && dir.join("pg_ctl").is_file())
            .map(|dir| PgBinaries { dir })
            .ok_or(DevClusterError::BinariesNotFound)
    }

    fn tool(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
}

/// `/usr/lib/postgresql/<version>/bin`, newest version first.
fn debian_bin_dirs() -> Vec<PathBuf> {
    let mut dirs: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse().ok()?;
            Some((version, entry.path().join("bin")))
        })
        .collect();
    dirs.sort_by_key(|(version, _)| std::cmp::Reverse(*version));
    dirs.into_iter().map(|(_, dir)| dir).collect()
}

/// The tables of the config `shardgate dev` writes: the example `events` table a newcomer can
/// write to at once (and ask to spool), the same rows without an id (used by `shardgate
/// bench --no-ids`), and `account_events`, an event stream per account. A config with them
/// needs `spool.dir`.
pub const DEV_TABLES: &str = r#"
# The example table: events partitioned by (tenant_id, event_type), deduplicated by event_id.
# A request may ask to be answered 202 once its rows are in the spool: `Prefer: respond-async`.
[[tables]]
name = "events"
id = "event_id"
partition_key = ["tenant_id", "event_type"]
ack_per_request = true
columns = [
  { name = "event_id", type = "uuid" },
  { name = "tenant_id", type = "text" },
  { name = "event_type", type = "text" },
  { name = "ts", type = "timestamptz", default = "now()" },
  { name = "payload", type = "jsonb", nullable = true },
]

# The same rows without an id: plain COPY, no deduplication (used by `shardgate bench --no-ids`).
[[tables]]
name = "events_no_id"
partition_key = ["tenant_id", "event_type"]
columns = [
  { name = "tenant_id", type = "text" },
  { name = "event_type", type = "text" },
  { name = "ts", type = "timestamptz", default = "now()" },
  { name = "payload", type = "jsonb", nullable = true },
]

# An event stream per account: each append gives the version it expects to write, 1, 2, 3...;
# one that is not the account's next version is refused (409) and stores nothing.
[[tables]]
name = "account_events"
partition_key = ["account_id"]
stream = { version = "version" }
columns = [
  { name = "account_id", type = "text" },
  { name = "version", type = "bigint" },
  { name = "type", type = "text" },
  { name = "data", type = "jsonb", nullable = true },
  { name = "ts", type = "timestamptz", default = "now()" },
]
"#;

/// How a cluster runs.
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    /// Whether commits are flushed to disk. Tests turn it off for speed; benchmarks must not.
    pub fsync: bool,
    /// `max_connections` of the server.
    pub max_connections: u32,
}

impl Default for ClusterOptions {
    fn default() -> Self {
        Self {
            fsync: true,
            max_connections: 200,
        }
    }
}

/// A local certificate authority and a server certificate it signed for 127.0.0.1 and
/// localhost, in PEM, for clusters that require TLS.
pub struct DevCertificates {
    /// The authority's certificate: what clients trust.
    pub ca_pem: String,
    /// The server's certificate.
    pub server_pem: String,
    /// The server's private key.
    pub server_key_pem: String,
}

impl DevCertificates {
    /// Generates a new authority and server certificate.
    pub fn generate() -> Result<DevCertificates, rcgen::Error> {
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new())?;
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "shardgate local CA");
        let ca = rcgen::CertifiedIssuer::self_signed(ca_params, rcgen::KeyPair::generate()?)?;
        let server_key = rcgen::KeyPair::generate()?;
        let server = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])?
            .signed_by(&server_key, &ca)?;
        Ok(DevCertificates {
            ca_pem: ca.pem(),
            server_pem: server.pem(),
            server_key_pem: server_key.serialize_pem(),
        })
    }
}

/// A running local cluster. Stop it with [`LocalCluster::stop`]; dropping it does not.
#[derive(Debug, Clone)]
pub struct LocalCluster {
    bins: PgBinaries,
    dir: PathBuf,
    port: u16,
    options: ClusterOptions,
}

impl LocalCluster {
    /// Starts the cluster kept in `dir`, creating it first when `dir` holds none.
    pub fn start(
        bins: &PgBinaries,
        dir: &Path,
        options: &ClusterOptions,
    ) -> Result<LocalCluster, DevClusterError> {
        let dir = absolute(dir)?;
        let data = dir.join("data");
        create_dir(&dir)?;
        if !data.join("PG_VERSION").is_file() {
            create_dir(&data)?;
            give_to_postgres(&dir)?;
            initdb(bins, &data, options)?;
        }
        give_to_postgres(&dir)?;
        let mut last_error = None;
        for attempt in 0..PORT_ATTEMPTS {
            let port = match previous_port(&dir) {
                Some(port) if attempt == 0 && port_is_free(port) => port,
                _ => free_port(&dir)?,
            };
            let cluster = LocalCluster {
                bins: bins.clone(),
                dir: dir.clone(),
                port,
                options: options.clone(),
            };
            match cluster.pg_ctl_start() {
                Ok(()) => {
                    remember_port(&dir, port);
                    return Ok(cluster);
                }
                Err(e) => last_error = Some(e),
            }
        }
        Err(last_error.expect("PORT_ATTEMPTS is positive"))
    }

    /// Finds a server still running on the data kept in `dir` (left behind by a process that
    /// died without stopping it) and stops it cleanly. Only a server whose `postmaster.pid`
    /// names this very data directory and a live postgres process is touched; a stale file of a
    /// dead process is left for Postgres, which replaces it at start.
    pub fn stop_leftover(bins: &PgBinaries, dir: &Path) -> Result<Option<Leftover>, DevClusterError> {
        let data = absolute(dir)?.join("data");
        let Some(leftover) = Leftover::find(&data) else {
            return Ok(None);
        };
        let mut command = server_command(&bins.tool("pg_ctl"));
        command.arg("-D").arg(&data).args(["-m", "fast", "-w", "stop"]);
        run(command, "pg_ctl stop of the server left running", None)?;
        Ok(Some(leftover))
    }

    /// The loopback port the server listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// A URL for `database` as the `postgres` superuser over loopback.
    pub fn url(&self, database: &str) -> String {
        format!("postgres://{POSTGRES_USER}@127.0.0.1:{}/{database}", self.port)
    }

    /// Connection settings for `database` as the `postgres` superuser over the cluster's unix
    /// socket, which stays open whether or not TCP connections must use TLS.
    pub fn socket_config(&self, database: &str) -> String {
        format!(
            "host={} port={} user={POSTGRES_USER} dbname={database}",
            self.dir.display(),
            self.port
        )
    }

    /// Whether [`LocalCluster::require_tls`] was applied to this cluster's data.
    pub fn requires_tls(&self) -> bool {
        self.dir.join("data").join(TLS_CONF).is_file()
    }

    /// Makes the server accept only TLS connections over loopback, with the given PEM
    /// certificate and key (unix-socket connections stay as they are).
    pub fn require_tls(&self, certificate_pem: &str, key_pem: &str) -> Result<(), DevClusterError> {
        let data = self.dir.join("data");
        let write = |name: &str, text: &str| {
            let path = data.join(name);
            std::fs::write(&path, text).map_err(|cause| DevClusterError::Io {
                what: format!("cannot write {}", path.display()),
                cause,
            })
        };
        write("server.crt", certificate_pem)?;
        write("server.key", key_pem)?;
        write(
            "pg_hba.conf",
            "local all all trust\nhostssl all all 127.0.0.1/32 trust\nhostnossl all all 0.0.0.0/0 reject\n",
        )?;
        write(
            TLS_CONF,
            "ssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\n",
        )?;
        let include = format!("include_if_exists = '{TLS_CONF}'");
        let mut conf = std::fs::read_to_string(data.join("postgresql.conf")).unwrap_or_default();
        if !conf.contains(&include) {
            conf.push_str(&format!("\n{include}\n"));
            write("postgresql.conf", &conf)?;
        }
        std::fs::set_permissions(data.join("server.key"), std::fs::Permissions::from_mode(0o600)).map_err(
            |cause| DevClusterError::Io {
                what: "cannot restrict server.key".into(),
                cause,
            },
        )?;
        give_to_postgres(&data)?;
        let mut command = server_command(&self.bins.tool("pg_ctl"));
        command.arg("-D").arg(&data).arg("reload");
        run(command, "pg_ctl reload", None)
    }

    /// Starts the stopped server again on the same port.
    pub fn restart(&self) -> Result<(), DevClusterError> {
        self.pg_ctl_start()
    }

    /// Stops the server, waiting for it to exit (fast shutdown: open sessions are ended).
    pub fn stop(&self) -> Result<(), DevClusterError> {
        let data = self.dir.join("data");
        let mut command = server_command(&self.bins.tool("pg_ctl"));
        command.arg("-D").arg(&data).args(["-m", "fast", "-w", "stop"]);
        run(command, "pg_ctl stop", None)
    }

    fn pg_ctl_start(&self) -> Result<(), DevClusterError> {
        let options = &self.options;
        let log = self.dir.join("postgres.log");
        let settings = format!(
            "-p {port} -k {socket} -c listen_addresses=127.0.0.1 -c fsync={fsync} \
             -c max_connections={max} -c logging_collector=off {INGEST_SETTINGS}",
            port = self.port,
            socket = self.dir.display(),
            fsync = if options.fsync { "on" } else { "off" },
            max = options.max_connections,
        );
        let mut command = server_command(&self.bins.tool("pg_ctl"));
        command
            .arg("-D")
            .arg(self.dir.join("data"))
            .arg("-l")
            .arg(&log)
            .args(["-w", "-t", "60", "-o", &settings, "start"]);
        run(command, "pg_ctl start", Some(&log))
    }
}

/// A postmaster found running on a cluster's data directory at start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leftover {
    /// Its process id.
    pub pid: i32,
    /// The port it listened on.
    pub port: Option<u16>,
}

impl Leftover {
    /// The live postmaster of `data`, as its `postmaster.pid` names it (pid on the first line,
    /// data directory on the second, port on the fourth).
    fn find(data: &Path) -> Option<Leftover> {
        let text = std::fs::read_to_string(data.join("postmaster.pid")).ok()?;
        let mut lines = text.lines();
        let pid: i32 = lines.next()?.trim().parse().ok()?;
        let named = lines.next()?.trim();
        let port = lines.nth(1).and_then(|l| l.trim().parse().ok());
        let same_data = std::fs::canonicalize(named).ok()? == std::fs::canonicalize(data).ok()?;
        (pid > 0 && same_data && is_live_postgres(pid)).then_some(Leftover { pid, port })
    }
}

/// Whether `pid` is a running process whose program is postgres.
fn is_live_postgres(pid: i32) -> bool {
    let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
        return false;
    };
    let program = cmdline.split(|b| *b == 0).next().unwrap_or_default();
    let name = Path::new(std::str::from_utf8(program).unwrap_or_default())
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default();
    matches!(name, "postgres" | "postmaster")
}

fn initdb(bins: &PgBinaries, data: &Path, options: &ClusterOptions) -> Result<(), DevClusterError> {
    let mut command = server_command(&bins.tool("initdb"));
    command
        .arg("-D")
        .arg(data)
        .args(["-U", POSTGRES_USER, "-A", "trust", "-E", "UTF8", "--locale=C"]);
    if !options.fsync {
        command.arg("--no-sync");
    }
    run(command, "initdb", None)
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// A command for a server binary, run as `postgres` when this process is root.
fn server_command(tool: &Path) -> Command {
    if is_root() {
        let mut command = Command::new("runuser");
        command.args(["-u", POSTGRES_USER, "--"]).arg(tool);
        command
    } else {
        Command::new(tool)
    }
}

fn give_to_postgres(dir: &Path) -> Result<(), DevClusterError> {
    if !is_root() {
        return Ok(());
    }
    let mut command = Command::new("chown");
    command.arg("-R").arg(format!("{POSTGRES_USER}:")).arg(dir);
    run(command, "chown of the cluster directory", None)
}

fn run(mut command: Command, what: &str, log: Option<&Path>) -> Result<(), DevClusterError> {
    let output: Output = command.output().map_err(|cause| DevClusterError::Io {
        what: format!("cannot run {what}"),
        cause,
    })?;
    if output.status.success() {
        return Ok(());
    }
    let mut text = String::from_utf8_lossy(&output.stderr).into_owned();
    text.push_str(&String::from_utf8_lossy(&output.stdout));
    if let Some(log) = log.and_then(|l| std::fs::read_to_string(l).ok()) {
        let tail: Vec<&str> = log.lines().rev().take(20).collect();
        text.push_str("\nserver log (last lines):\n");
        text.push_str(&tail.into_iter().rev().collect::<Vec<_>>().join("\n"));
    }
    Err(DevClusterError::Command {
        what: what.to_string(),
        status: output.status.to_string(),
        output: text,
    })
}

fn create_dir(dir: &Path) -> Result<(), DevClusterError> {
    std::fs::create_dir_all(dir).map_err(|cause| DevClusterError::Io {
        what: format!("cannot create {}", dir.display()),
        cause,
    })
}

fn absolute(dir: &Path) -> Result<PathBuf, DevClusterError> {
    std::path::absolute(dir).map_err(|cause| DevClusterError::Io {
        what: format!("cannot resolve {}", dir.display()),
        cause,
    })
}

/// The port the cluster in `dir` listened on at its last start, if recorded.
fn previous_port(dir: &Path) -> Option<u16> {
    std::fs::read_to_string(dir.join(PORT_FILE))
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// Records the port for the next start. Best effort: without the file the next start only
/// picks another port.
fn remember_port(dir: &Path, port: u16) {
    if let Err(e) = std::fs::write(dir.join(PORT_FILE), format!("{port}\n")) {
        tracing::warn!(dir = %dir.display(), error = %e, "cannot record the cluster's port");
    }
}

fn port_is_free(port: u16) -> bool {
    TcpListener::bind(("127.0.0.1", port)).is_ok()
}

fn free_port(dir: &Path) -> Result<u16, DevClusterError> {
    let listener = TcpListener::bind("127.0.0.1:0").map_err(|cause| DevClusterError::Io {
        what: format!("cannot find a free port for {}", dir.display()),
        cause,
    })?;
    listener
        .local_addr()
        .map(|a| a.port())
        .map_err(|cause| DevClusterError::Io {
            what: "cannot read the free port".into(),
            cause,
        })
}
