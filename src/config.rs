//! The TOML configuration: listeners, shards, ring, batching, queues, pools and tables.
//!
//! Loading is three steps: parse (unknown keys are refused), apply environment overrides for URLs
//! (so secrets need not live in the file), then [`Config::validate`], which reports every problem
//! at once with the key path that caused it (`tables[0].partition_key[1]`). Nothing here talks to
//! a database.

use crate::pgtype::{ColumnType, DefaultValue, is_valid_identifier};
use crate::units::{ByteSize, duration};
use serde::Deserialize;
use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;
use thiserror::Error;

/// Environment variable that replaces `catalog.url`.
pub const CATALOG_URL_ENV: &str = "SHARDGATE_CATALOG_URL";

/// Environment variable that replaces `admin.token`.
pub const ADMIN_TOKEN_ENV: &str = "SHARDGATE_ADMIN_TOKEN";

/// Shortest admin token accepted.
const MIN_ADMIN_TOKEN_LEN: usize = 16;

/// Prefix of every environment variable shardgate reads.
const ENV_PREFIX: &str = "SHARDGATE_";

/// Most tokens one shard may own (`vnodes × weight`): keeps the ring table a few hundred KiB.
const MAX_TOKENS_PER_SHARD: u64 = 65_536;

/// Longest table name: its staging table adds `shardgate_stage_` within Postgres's 63 bytes.
const MAX_TABLE_NAME_LEN: usize = 47;

/// The largest `server.max_body_size`: a body is never larger than the most Postgres takes in
/// one field (1 GiB), so no value read from it needs a longer field than COPY may frame.
const MAX_BODY_SIZE: u64 = 1 << 30;

/// The whole configuration file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Listeners and per-request limits.
    pub server: ServerConfig,
    /// Consistent-hash ring parameters.
    pub routing: RoutingConfig,
    /// When a per-shard batch is flushed.
    pub batch: BatchConfig,
    /// Bounds of the per-(shard, table) queues.
    pub queue: QueueConfig,
    /// Connections to each shard.
    pub pool: PoolConfig,
    /// Where routing state is stored.
    pub catalog: CatalogConfig,
    /// Reporting queries.
    pub query: QueryConfig,
    /// How TLS connections to shards check the server.
    pub tls: TlsConfig,
    /// Who may change the shard set through the admin API.
    pub admin: AdminConfig,
    /// How a migration moves ranges.
    pub reshard: ReshardConfig,
    /// When a partition key counts as hot.
    pub hot_keys: HotKeysConfig,
    /// `[spool]`: the local log in front of the shards for writes acknowledged once spooled.
    pub spool: SpoolConfig,
    /// `[postgres]`: the PostgreSQL-protocol listener.
    pub postgres: PostgresConfig,
    /// `[idempotency]`: how long the shards keep the records of `Idempotency-Key` writes.
    pub idempotency: IdempotencyConfig,
    /// The shards, in ring order of declaration.
    pub shards: Vec<ShardConfig>,
    /// The logical tables that exist on every shard.
    pub tables: Vec<TableConfig>,
    /// Who may log in over either front end and what each may write and read; none leaves
    /// the HTTP API open to anyone who reaches it.
    pub users: Vec<UserConfig>,
    /// The `SHARDGATE_*` variables of the process environment, captured when the config was
    /// loaded: URL and password overrides, also for shards only the catalog names.
    #[serde(skip)]
    pub environment: Environment,
}

/// `SHARDGATE_*` variables by name. They hold URLs, passwords and the admin token, so its
/// `Debug` shows the names alone.
#[derive(Clone, Default)]
pub struct Environment(pub BTreeMap<String, String>);

impl std::ops::Deref for Environment {
    type Target = BTreeMap<String, String>;

    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl std::fmt::Debug for Environment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set().entries(self.0.keys()).finish()
    }
}

/// `[server]`: listeners and request limits.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Address of the write API (`/v1/...`).
    pub listen: String,
    /// Address of the admin API (`/admin/...`), kept apart from application traffic.
    pub admin_listen: String,
    /// Largest accepted request body.
    pub max_body_size: ByteSize,
    /// Bytes of request bodies read and decoded at once, over all requests; beyond it, 429.
    pub max_inflight_body_bytes: ByteSize,
    /// How long a write may wait for its rows to commit before it is answered 503.
    #[serde(with = "duration")]
    pub request_timeout: Duration,
    /// How long a client may take to send a request's headers, on both listeners; past it the
    /// connection is closed.
    #[serde(with = "duration")]
    pub header_read_timeout: Duration,
    /// How long a client may pause between two reads of a request body, on both listeners;
    /// past it the request is answered 408, its connection closed and nothing of it stored.
    #[serde(with = "duration")]
    pub body_read_timeout: Duration,
    /// `[server.tls]`: the certificate both HTTP listeners (and the Postgres listener, unless
    /// it has its own) serve; none serves plain HTTP.
    pub tls: Option<ServingTlsConfig>,
}

/// A certificate chain and key a listener serves TLS with, read again on SIGHUP.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServingTlsConfig {
    /// PEM certificate chain, the server's certificate first.
    pub cert_file: PathBuf,
    /// PEM private key of that certificate.
    pub key_file: PathBuf,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8080".into(),
            admin_listen: "127.0.0.1:8081".into(),
            max_body_size: ByteSize(16 << 20),
            max_inflight_body_bytes: ByteSize(256 << 20),
            request_timeout: Duration::from_secs(10),
            // nginx's client_header_timeout and client_body_timeout.
            header_read_timeout: Duration::from_secs(60),
            body_read_timeout: Duration::from_secs(60),
            tls: None,
        }
    }
}

/// `[routing]`: the ring.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RoutingConfig {
    /// Tokens per unit of shard weight.
    pub vnodes: u32,
}

impl Default for RoutingConfig {
    fn default() -> Self {
        Self { vnodes: 256 }
    }
}

/// `[batch]`: flush triggers of a per-shard batch; whichever comes first.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BatchConfig {
    /// Flush when a batch holds this many rows (≈ 5,000 reaches the COPY ceiling).
    pub max_rows: usize,
    /// Flush when a batch holds this many encoded bytes.
    pub max_bytes: ByteSize,
    /// Flush when the oldest row of a batch has waited this long.
    #[serde(with = "duration")]
    pub max_delay: Duration,
}

impl Default for BatchConfig {
    fn default() -> Self {
        Self {
            max_rows: 5_000,
            max_bytes: ByteSize(8 << 20),
            max_delay: Duration::from_millis(10),
        }
    }
}

/// `[queue]`: bounds of each per-(shard, table) queue, counting rows not yet committed.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QueueConfig {
    /// Rows a queue may hold before writes to it are answered 429.
    pub max_rows: usize,
    /// Encoded bytes a queue may hold before writes to it are answered 429.
    pub max_bytes: ByteSize,
    /// The `Retry-After` a 429 carries.
    #[serde(with = "duration")]
    pub retry_after: Duration,
}

impl Default for QueueConfig {
    fn default() -> Self {
        Self {
            max_rows: 200_000,
            max_bytes: ByteSize(128 << 20),
            retry_after: Duration::from_secs(1),
        }
    }
}

/// `[spool]`: the durable spool, for tables whose writes may be acknowledged (`202`) once their
/// rows are on this machine's disk and are written to the shards afterwards.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SpoolConfig {
    /// Directory of the spool's segment files; needed when any table may spool.
    pub dir: Option<PathBuf>,
    /// Most bytes the spool may hold; a spooled write past it is answered 429.
    pub max_bytes: ByteSize,
    /// Size at which a segment file is closed and the next one started; a segment is removed
    /// once every row in it is written.
    pub segment_bytes: ByteSize,
    /// How long `GET /v1/writes/{write_id}` still knows a write after its last row was written.
    #[serde(with = "duration")]
    pub remember_writes: Duration,
}

impl Default for SpoolConfig {
    fn default() -> Self {
        Self {
            dir: None,
            max_bytes: ByteSize(1 << 30),
            segment_bytes: ByteSize(64 << 20),
            remember_writes: Duration::from_secs(600),
        }
    }
}

/// `[idempotency]`: the records by which a write sent with an `Idempotency-Key` is recognised
/// when it is sent again.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IdempotencyConfig {
    /// How long a key's records are kept on the shards; a key sent again later is a new write.
    #[serde(with = "duration")]
    pub retention: Duration,
}

impl Default for IdempotencyConfig {
    fn default() -> Self {
        Self {
            retention: Duration::from_secs(24 * 3600),
        }
    }
}

/// What a write to a table waits for before it is answered.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AckMode {
    /// `200` once every shard committed the rows.
    #[default]
    Commit,
    /// `202` once the rows are in the spool on this machine's disk.
    Spool,
}

/// `[pool]`: connections to each shard.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PoolConfig {
    /// COPY connections per shard, each flushing batches in parallel.
    pub connections_per_shard: usize,
    /// Longest wait to open a connection to a shard.
    #[serde(with = "duration")]
    pub connect_timeout: Duration,
}

impl Default for PoolConfig {
    fn default() -> Self {
        Self {
            connections_per_shard: 4,
            connect_timeout: Duration::from_secs(5),
        }
    }
}

/// `[query]`: scatter-gather reporting queries.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QueryConfig {
    /// Longest a query may run on a shard.
    #[serde(with = "duration")]
    pub statement_timeout: Duration,
    /// Most rows a query without LIMIT may return, most rows of an answer sent whole as JSON,
    /// and most groups a shard may send.
    pub max_rows: usize,
    /// Query connections per shard, apart from the COPY connections.
    pub connections_per_shard: usize,
    /// Longest a query waits for a free query connection to a shard before it gets 503.
    #[serde(with = "duration")]
    pub wait_timeout: Duration,
    /// Time zone every shard uses for a query (`date_trunc`, casts of timestamps), so that all
    /// shards cut days and hours alike.
    pub time_zone: String,
}

impl Default for QueryConfig {
    fn default() -> Self {
        Self {
            statement_timeout: Duration::from_secs(30),
            max_rows: 100_000,
            connections_per_shard: 2,
            wait_timeout: Duration::from_secs(5),
            time_zone: "UTC".into(),
        }
    }
}

/// `[tls]`: how connections whose URL says `sslmode=require` check the server. URLs without it
/// (or with `sslmode=disable` or `prefer`) connect without TLS.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    /// PEM file of the certificate authorities to trust; the system's trusted roots when absent.
    pub ca_file: Option<PathBuf>,
    /// Check the server's certificate and host name; `false` encrypts without checking.
    pub verify: bool,
}

impl Default for TlsConfig {
    fn default() -> Self {
        Self {
            ca_file: None,
            verify: true,
        }
    }
}

/// `[catalog]`: the database holding routing state.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CatalogConfig {
    /// Postgres URL; the first shard's when absent.
    pub url: Option<String>,
    /// How often the routing table is re-read when no change notification arrived (a
    /// fallback: a change is normally announced at once with `NOTIFY`).
    #[serde(with = "duration")]
    pub refresh_interval: Duration,
}

impl Default for CatalogConfig {
    fn default() -> Self {
        CatalogConfig {
            url: None,
            refresh_interval: Duration::from_secs(10),
        }
    }
}

/// `[reshard]`: how a migration copies, switches and cleans up ranges.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReshardConfig {
    /// Rows copied per backfill chunk (one read on the source, one transaction on the target).
    pub chunk_rows: usize,
    /// Most rows the backfill copies per second, so live ingest keeps most of the shards' time.
    pub rows_per_second: u64,
    /// Largest share of the time the backfill and the cleanup work: after a chunk that took
    /// `t`, they wait `t × (1 / busy_share − 1)`, so live ingest keeps the rest of the shards.
    pub busy_share: f64,
    /// How long after a new epoch is announced the fences are moved to it, so every proxy that
    /// follows the catalog routes with it first and none of its batches is refused.
    #[serde(with = "duration")]
    pub grace: Duration,
    /// How long after the cutover the sources delete the moved rows: longer than any query
    /// that planned with the old placement may run.
    #[serde(with = "duration")]
    pub cleanup_delay: Duration,
}

impl Default for ReshardConfig {
    fn default() -> Self {
        ReshardConfig {
            chunk_rows: 5_000,
            rows_per_second: 100_000,
            busy_share: 0.5,
            grace: Duration::from_secs(1),
            cleanup_delay: Duration::from_secs(60),
        }
    }
}

/// `[hot_keys]`: when a partition key counts as hot, and how far it is spread.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HotKeysConfig {
    /// Length of a detection window.
    #[serde(with = "duration")]
    pub window: Duration,
    /// Share of its shard's rows in a window above which a key is a candidate.
    pub min_share: f64,
    /// Rows per second in a window above which a key is a candidate.
    pub min_rows_per_second: u64,
    /// Consecutive windows a candidate must stay above both thresholds to be hot.
    pub windows: u32,
    /// Most ring positions a hot key is spread over.
    pub max_fanout: u32,
    /// Rows per second one position of a hot key should take at most: the fan-out is its rate
    /// divided by this, rounded up.
    pub rows_per_position: u64,
    /// Counters of the heavy-hitter sketch of each table and window.
    pub sketch_counters: usize,
    /// How long after a split is decided rows made take the new fan-out: the time every proxy
    /// has to learn of it first.
    #[serde(with = "duration")]
    pub split_delay: Duration,
}

impl Default for HotKeysConfig {
    fn default() -> Self {
        HotKeysConfig {
            window: Duration::from_secs(1),
            min_share: 0.2,
            min_rows_per_second: 5_000,
            windows: 3,
            max_fanout: 8,
            rows_per_position: 20_000,
            sketch_counters: 64,
            split_delay: Duration::from_millis(500),
        }
    }
}

/// `[admin]`: access to the admin endpoints.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    /// The bearer token the endpoints that change the shard set require (and, with users
    /// configured, every admin endpoint); without one they answer 403 unless an admin user asks.
    pub token: Option<AdminToken>,
    /// With users configured, whether the status page and what it reads (shards, ring, hot
    /// keys, migrations, metrics) may be read without credentials.
    pub public_status: bool,
}

/// A secret bearer token; its `Debug` does not show it.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct AdminToken(pub String);

impl std::fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AdminToken(***)")
    }
}

impl AdminToken {
    /// Whether `offered` is this token, compared in time that does not depend on where they
    /// differ.
    pub fn matches(&self, offered: &str) -> bool {
        let (ours, theirs) = (self.0.as_bytes(), offered.as_bytes());
        ours.len() == theirs.len() && ours.iter().zip(theirs).fold(0u8, |d, (a, b)| d | (a ^ b)) == 0
    }
}

/// One `[[shards]]` entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShardConfig {
    /// Short stable name (`s0`): the ring is built from it, so never rename a shard.
    pub name: String,
    /// Postgres URL of the shard's database.
    pub url: String,
    /// Relative share of the key space.
    #[serde(default = "default_weight")]
    pub weight: u32,
}

fn default_weight() -> u32 {
    1
}

/// One `[[tables]]` entry: a logical table present on every shard.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TableConfig {
    /// Table name on every shard.
    pub name: String,
    /// Column whose value identifies a row; makes retries idempotent.
    #[serde(default)]
    pub id: Option<String>,
    /// Ordered columns whose values choose the shard.
    pub partition_key: Vec<String>,
    /// A `timestamptz` column saying when each row was made: a split hot key places a row by the
    /// fan-out in force then, so a retry lands where its first attempt did. Without it, a
    /// UUIDv7 id's time is used, and else the time the proxy received the row.
    #[serde(default)]
    pub made_at: Option<String>,
    /// Most rows per second one key of the table may send; a key found above it gets 429 for
    /// its rows beyond it, other keys are not affected. No limit when absent.
    #[serde(default)]
    pub max_key_rows_per_second: Option<u64>,
    /// What a write waits for by default: `"commit"` or `"spool"`.
    #[serde(default)]
    pub ack: AckMode,
    /// Whether a request may choose the other ack (`Prefer: respond-async` asks for the
    /// spool, `Shardgate-Ack: commit` for the commit).
    #[serde(default)]
    pub ack_per_request: bool,
    /// Makes the table a set of event streams, one per partition key, each appended in
    /// version order with the version its writer expects.
    #[serde(default)]
    pub stream: Option<StreamConfig>,
    /// Every column, in table order.
    pub columns: Vec<ColumnConfig>,
}

/// `stream = { version = "..." }` of a table: its partition key names a stream, and each row
/// carries its version in the stream, `1, 2, 3, ...` with no gap and no repeat.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamConfig {
    /// The `bigint` or `integer` column holding a row's version in its stream.
    pub version: String,
}

/// One column of a table.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ColumnConfig {
    /// Column name.
    pub name: String,
    /// Postgres type.
    #[serde(rename = "type")]
    pub ty: ColumnType,
    /// Whether the column accepts NULL (absent values become NULL).
    #[serde(default)]
    pub nullable: bool,
    /// Value used when a row omits the column: `"now()"` or a literal of the column's type.
    #[serde(default)]
    pub default: Option<toml::Value>,
}

/// A configuration that could not be loaded.
#[derive(Debug, Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {cause}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        cause: std::io::Error,
    },
    /// The file is not valid TOML or has a key of the wrong shape.
    #[error("config file {path}: {message}")]
    Parse {
        /// The file.
        path: String,
        /// The parser's message, naming the key.
        message: String,
    },
    /// The values do not make a working configuration.
    #[error("invalid config:\n{}", format_problems(.0))]
    Invalid(Vec<Problem>),
}

/// One validation failure: the key path and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Key path, e.g. `tables[0].partition_key[1]`.
    pub key: String,
    /// What is wrong.
    pub reason: String,
}

fn format_problems(problems: &[Problem]) -> String {
    problems
        .iter()
        .map(|p| format!("  {}: {}", p.key, p.reason))
        .collect::<Vec<_>>()
        .join("\n")
}

impl Config {
    /// Reads, overrides from the process environment, and validates a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|cause| ConfigError::Read {
            path: shown.clone(),
            cause,
        })?;
        let mut config =
            Config::parse(&text).map_err(|message| ConfigError::Parse { path: shown, message })?;
        config.apply_env(std::env::vars());
        config.validate()?;
        Ok(config)
    }

    /// Parses TOML text without validating it.
    pub fn parse(text: &str) -> Result<Config, String> {
        toml::from_str(text).map_err(|e| e.to_string())
    }

    /// Keeps the `SHARDGATE_*` variables of `vars` and replaces URLs from them:
    /// `SHARDGATE_CATALOG_URL` and `SHARDGATE_SHARD_<NAME>_URL` (name upper-cased).
    pub fn apply_env(&mut self, vars: impl IntoIterator<Item = (String, String)>) {
        self.environment
            .0
            .extend(vars.into_iter().filter(|(name, _)| name.starts_with(ENV_PREFIX)));
        if let Some(url) = self.environment.get(CATALOG_URL_ENV) {
            self.catalog.url = Some(url.clone());
        }
        if let Some(token) = self.environment.get(ADMIN_TOKEN_ENV) {
            self.admin.token = Some(AdminToken(token.clone()));
        }
        users::apply_env(&mut self.users, &self.environment);
        for shard in &mut self.shards {
            if let Some(url) = self.environment.get(&shard_url_env(&shard.name)) {
                shard.url = url.clone();
            }
        }
    }

    /// `SHARDGATE_SHARD_<NAME>_URL`, when set.
    pub fn shard_url_override(&self, name: &str) -> Option<&str> {
        self.environment.get(&shard_url_env(name)).map(String::as_str)
    }

    /// `SHARDGATE_SHARD_<NAME>_PASSWORD`, when set.
    pub fn shard_password(&self, name: &str) -> Option<&str> {
        let key = format!("SHARDGATE_SHARD_{}_PASSWORD", name.to_ascii_uppercase());
        self.environment.get(&key).map(String::as_str)
    }

    /// The catalog database URL: `catalog.url`, else the first shard's.
    pub fn catalog_url(&self) -> Option<&str> {
        self.catalog
            .url
            .as_deref()
            .or_else(|| self.shards.first().map(|s| s.url.as_str()))
    }

    /// Checks every value; returns all problems found, each with its key path.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let mut problems = Problems::default();
        self.validate_server(&mut problems);
        self.validate_limits(&mut problems);
        self.validate_tls(&mut problems);
        self.validate_admin(&mut problems);
        self.postgres.validate(&self.users, &mut problems);
        self.validate_reshard(&mut problems);
        self.validate_hot_keys(&mut problems);
        self.validate_shards(&mut problems);
        self.validate_spool(&mut problems);
        if self.idempotency.retention < Duration::from_secs(60) {
            problems.add("idempotency.retention", "must be at least 1m");
        }
        if self.tables.is_empty() {
            problems.add("tables", "declare at least one table");
        }
        let mut names = HashSet::new();
        for (i, table) in self.tables.iter().enumerate() {
            if !names.insert(table.name.as_str()) {
                problems.add(format!("tables[{i}].name"), "table declared twice");
            }
            validate_table(&format!("tables[{i}]"), table, &mut problems);
        }
        users::validate(&self.users, &names, &mut problems);
        problems.finish()
    }

    fn validate_server(&self, problems: &mut Problems) {
        let listen = self.server.listen.parse::<SocketAddr>();
        let admin = self.server.admin_listen.parse::<SocketAddr>();
        if let Err(e) = &listen {
            problems.add("server.listen", format!("not a socket address: {e}"));
        }
        if let Err(e) = &admin {
            problems.add("server.admin_listen", format!("not a socket address: {e}"));
        }
        if let (Ok(a), Ok(b)) = (listen, admin)
            && a == b
            && a.port() != 0
        {
            problems.add("server.admin_listen", "must differ from server.listen");
        }
        if self.server.max_body_size.0 == 0 {
            problems.add("server.max_body_size", "must be positive");
        }
        if self.server.max_body_size.0 > MAX_BODY_SIZE {
            problems.add(
                "server.max_body_size",
                "must be at most 1GiB, the most Postgres takes in one field",
            );
        }
        if self.server.max_inflight_body_bytes < self.server.max_body_size
            || u32::try_from(self.server.max_inflight_body_bytes.0).is_err()
        {
            problems.add(
                "server.max_inflight_body_bytes",
                "must be at least server.max_body_size and below 4Gi",
            );
        }
        if let Some(tls) = &self.server.tls {
            for (key, path) in [
                ("server.tls.cert_file", &tls.cert_file),
                ("server.tls.key_file", &tls.key_file),
            ] {
                if !path.is_file() {
                    problems.add(key, format!("{} is not a readable file", path.display()));
                }
            }
        }
        for (key, timeout) in [
            ("server.request_timeout", self.server.request_timeout),
            ("server.header_read_timeout", self.server.header_read_timeout),
            ("server.body_read_timeout", self.server.body_read_timeout),
        ] {
            if timeout.is_zero() {
                problems.add(key, "must be positive");
            }
        }
    }

    /// Whether some table's writes may be spooled, by default or on request.
    pub fn may_spool(&self) -> bool {
        self.tables
            .iter()
            .any(|t| t.ack == AckMode::Spool || t.ack_per_request)
    }

    fn validate_spool(&self, problems: &mut Problems) {
        let spool = &self.spool;
        if self.may_spool() && spool.dir.is_none() {
            let (i, table) = self
                .tables
                .iter()
                .enumerate()
                .find(|(_, t)| t.ack == AckMode::Spool || t.ack_per_request)
                .expect("some table may spool");
            problems.add(
                "spool.dir",
                format!(
                    "required: table `{}` (tables[{i}]) may be acknowledged once spooled",
                    table.name
                ),
            );
        }
        if spool.segment_bytes.0 < 64 << 10 || spool.segment_bytes.0 > 1 << 30 {
            problems.add("spool.segment_bytes", "must be between 64KiB and 1GiB");
        }
        if spool.max_bytes.0 < spool.segment_bytes.0.saturating_mul(2) {
            // The newest segment stays until it is full, written rows and all.
            problems.add("spool.max_bytes", "must be at least twice spool.segment_bytes");
        }
    }

    fn validate_tls(&self, problems: &mut Problems) {
        if let Some(path) = &self.tls.ca_file
            && let Err(e) = std::fs::metadata(path)
        {
            problems.add("tls.ca_file", format!("cannot read {}: {e}", path.display()));
        }
    }

    fn validate_reshard(&self, problems: &mut Problems) {
        let reshard = &self.reshard;
        if !(1..=1_000_000).contains(&reshard.chunk_rows) {
            problems.add("reshard.chunk_rows", "must be between 1 and 1000000");
        }
        if reshard.rows_per_second == 0 {
            problems.add("reshard.rows_per_second", "must be positive");
        }
        if !(reshard.busy_share > 0.0 && reshard.busy_share <= 1.0) {
            problems.add("reshard.busy_share", "must be above 0 and at most 1");
        }
        if reshard.grace > Duration::from_secs(60) {
            problems.add("reshard.grace", "must be at most 60s");
        }
        if reshard.cleanup_delay < self.query.statement_timeout {
            problems.add(
                "reshard.cleanup_delay",
                "must be at least query.statement_timeout, so no query still reads the old placement",
            );
        }
    }

    fn validate_hot_keys(&self, problems: &mut Problems) {
        let hot = &self.hot_keys;
        if !(Duration::from_millis(100)..=Duration::from_secs(60)).contains(&hot.window) {
            problems.add("hot_keys.window", "must be between 100ms and 60s");
        }
        if !(hot.min_share > 0.0 && hot.min_share <= 1.0) {
            problems.add("hot_keys.min_share", "must be above 0 and at most 1");
        }
        if hot.min_rows_per_second == 0 {
            problems.add("hot_keys.min_rows_per_second", "must be positive");
        }
        if !(1..=100).contains(&hot.windows) {
            problems.add("hot_keys.windows", "must be between 1 and 100");
        }
        if !(2..=256).contains(&hot.max_fanout) {
            problems.add("hot_keys.max_fanout", "must be between 2 and 256");
        }
        if hot.rows_per_position == 0 {
            problems.add("hot_keys.rows_per_position", "must be positive");
        }
        if !(8..=4096).contains(&hot.sketch_counters) {
            problems.add("hot_keys.sketch_counters", "must be between 8 and 4096");
        }
        if !(Duration::from_millis(10)..=Duration::from_secs(60)).contains(&hot.split_delay) {
            problems.add("hot_keys.split_delay", "must be between 10ms and 60s");
        }
    }

    fn validate_admin(&self, problems: &mut Problems) {
        if let Some(AdminToken(token)) = &self.admin.token
            && (token.len() < MIN_ADMIN_TOKEN_LEN || !token.chars().all(|c| c.is_ascii_graphic()))
        {
            problems.add(
                "admin.token",
                format!("must be at least {MIN_ADMIN_TOKEN_LEN} visible ASCII characters without spaces"),
            );
        }
    }

    fn validate_limits(&self, problems: &mut Problems) {
        if !(1..=4096).contains(&self.routing.vnodes) {
            problems.add("routing.vnodes", "must be between 1 and 4096");
        }
        if self.batch.max_rows == 0 {
            problems.add("batch.max_rows", "must be positive");
        }
        if self.batch.max_bytes.0 < 1024 {
            problems.add("batch.max_bytes", "must be at least 1KiB");
        }
        if self.queue.max_rows < self.batch.max_rows {
            problems.add("queue.max_rows", "must be at least batch.max_rows");
        }
        if self.queue.max_bytes < self.batch.max_bytes {
            problems.add("queue.max_bytes", "must be at least batch.max_bytes");
        }
        if u32::try_from(self.queue.max_rows).is_err() {
            problems.add("queue.max_rows", "must stay below 4Gi");
        }
        if u32::try_from(self.queue.max_bytes.0).is_err() {
            problems.add("queue.max_bytes", "must stay below 4Gi");
        }
        if !(1..=64).contains(&self.pool.connections_per_shard) {
            problems.add("pool.connections_per_shard", "must be between 1 and 64");
        }
        if !(1..=64).contains(&self.query.connections_per_shard) {
            problems.add("query.connections_per_shard", "must be between 1 and 64");
        }
        if self.query.max_rows == 0 {
            problems.add("query.max_rows", "must be positive");
        }
        if self.catalog.refresh_interval < Duration::from_millis(100) {
            problems.add("catalog.refresh_interval", "must be at least 100ms");
        }
        let zone = &self.query.time_zone;
        if zone.is_empty()
            || !zone
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "_/+-:.".contains(c))
        {
            problems.add(
                "query.time_zone",
                "must be a time zone name such as UTC or Europe/Paris",
            );
        }
        if self.query.statement_timeout < Duration::from_millis(1) {
            problems.add("query.statement_timeout", "must be at least 1ms");
        }
    }

    fn validate_shards(&self, problems: &mut Problems) {
        if self.shards.is_empty() && self.catalog.url.is_none() {
            problems.add(
                "shards",
                "declare at least one shard, or set catalog.url to start from a catalog that lists them",
            );
        }
        let mut names = HashSet::new();
        for (i, shard) in self.shards.iter().enumerate() {
            let key = format!("shards[{i}]");
            if !is_valid_identifier(&shard.name) {
                problems.add(
                    format!("{key}.name"),
                    "must match [a-z_][a-z0-9_]* (at most 63 characters)",
                );
            } else if !names.insert(shard.name.as_str()) {
                problems.add(
                    format!("{key}.name"),
                    format!("shard `{}` declared twice", shard.name),
                );
            }
            if let Err(e) = shard.url.parse::<tokio_postgres::Config>() {
                problems.add(format!("{key}.url"), format!("not a Postgres URL: {e}"));
            }
            let tokens = u64::from(shard.weight) * u64::from(self.routing.vnodes);
            if shard.weight == 0 || tokens > MAX_TOKENS_PER_SHARD {
                problems.add(
                    format!("{key}.weight"),
                    format!("must be positive and weight × vnodes at most {MAX_TOKENS_PER_SHARD}"),
                );
            }
        }
        if let Some(url) = &self.catalog.url
            && let Err(e) = url.parse::<tokio_postgres::Config>()
        {
            problems.add("catalog.url", format!("not a Postgres URL: {e}"));
        }
    }
}

/// The environment variable that overrides the URL of shard `name`.
pub fn shard_url_env(name: &str) -> String {
    format!("SHARDGATE_SHARD_{}_URL", name.to_ascii_uppercase())
}

fn validate_table(key: &str, table: &TableConfig, problems: &mut Problems) {
    if !is_valid_identifier(&table.name)
        || table.name.starts_with("shardgate")
        || table.name.len() > MAX_TABLE_NAME_LEN
    {
        problems.add(
            format!("{key}.name"),
            "must match [a-z_][a-z0-9_]*, have at most 47 characters and not start with `shardgate`",
        );
    }
    if table.columns.is_empty() {
        problems.add(format!("{key}.columns"), "declare at least one column");
    }
    let mut seen = HashSet::new();
    for (i, column) in table.columns.iter().enumerate() {
        validate_column(&format!("{key}.columns[{i}]"), column, &mut seen, problems);
    }
    let find = |name: &str| table.columns.iter().find(|c| c.name == name);
    if table.partition_key.is_empty() {
        problems.add(format!("{key}.partition_key"), "name at least one column");
    }
    let mut key_seen = HashSet::new();
    for (i, name) in table.partition_key.iter().enumerate() {
        let at = format!("{key}.partition_key[{i}]");
        match find(name) {
            None => problems.add(at, format!("column `{name}` is not declared")),
            Some(_) if !key_seen.insert(name) => problems.add(at, format!("column `{name}` named twice")),
            Some(c) if c.nullable => {
                problems.add(at, format!("partition-key column `{name}` cannot be nullable"))
            }
            Some(c) if !c.ty.can_be_partition_key() => {
                problems.add(at, format!("a {} column cannot be part of a partition key", c.ty))
            }
            Some(_) => {}
        }
    }
    if let Some(id) = &table.id {
        let at = format!("{key}.id");
        match find(id) {
            None => problems.add(at, format!("column `{id}` is not declared")),
            Some(c) if c.nullable => problems.add(at, format!("id column `{id}` cannot be nullable")),
            Some(c) if !c.ty.can_be_id() => problems.add(
                at,
                format!(
                    "a {} column cannot be an id (use uuid, bigint, integer or text)",
                    c.ty
                ),
            ),
            Some(_) => {}
        }
    }
    if table.max_key_rows_per_second == Some(0) {
        problems.add(format!("{key}.max_key_rows_per_second"), "must be positive");
    }
    if let Some(stream) = &table.stream {
        validate_stream(key, table, stream, problems);
    }
    if let Some(made_at) = &table.made_at {
        let at = format!("{key}.made_at");
        match find(made_at) {
            None => problems.add(at, format!("column `{made_at}` is not declared")),
            Some(c) if c.ty != ColumnType::Timestamptz => problems.add(
                at,
                format!("column `{made_at}` is {}; it must be a timestamptz", c.ty),
            ),
            Some(_) => {}
        }
    }
}

fn validate_stream(key: &str, table: &TableConfig, stream: &StreamConfig, problems: &mut Problems) {
    let at = format!("{key}.stream.version");
    let version = &stream.version;
    match table.columns.iter().find(|c| c.name == *version) {
        None => problems.add(at, format!("column `{version}` is not declared")),
        Some(c) if !matches!(c.ty, ColumnType::BigInt | ColumnType::Integer) => problems.add(
            at,
            format!(
                "column `{version}` is {}; a version must be a bigint or an integer",
                c.ty
            ),
        ),
        Some(c) if c.nullable || c.default.is_some() => problems.add(
            at,
            format!("column `{version}` must be not null and without a default: every row gives its version"),
        ),
        Some(_) if table.partition_key.contains(version) => problems.add(
            at,
            format!("column `{version}` is in the partition key, which names the stream"),
        ),
        Some(_) => {}
    }
    if table.ack == AckMode::Spool || table.ack_per_request {
        problems.add(
            format!("{key}.ack"),
            "a stream table acknowledges on commit only: a spooled append could not be refused \
             for its version",
        );
    }
}

fn validate_column<'a>(
    key: &str,
    column: &'a ColumnConfig,
    seen: &mut HashSet<&'a str>,
    problems: &mut Problems,
) {
    if !is_valid_identifier(&column.name) || column.name.starts_with("_sg_") {
        problems.add(
            format!("{key}.name"),
            "must match [a-z_][a-z0-9_]* (at most 63 characters) and not start with `_sg_`",
        );
    } else if !seen.insert(column.name.as_str()) {
        problems.add(
            format!("{key}.name"),
            format!("column `{}` declared twice", column.name),
        );
    }
    if let Some(value) = &column.default
        && let Err(reason) = DefaultValue::from_config(column.ty, value)
    {
        problems.add(format!("{key}.default"), reason);
    }
}

#[derive(Default)]
struct Problems(Vec<Problem>);

impl Problems {
    fn add(&mut self, key: impl Into<String>, reason: impl Into<String>) {
        self.0.push(Problem {
            key: key.into(),
            reason: reason.into(),
        });
    }

    fn finish(self) -> Result<(), ConfigError> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(ConfigError::Invalid(self.0))
        }
    }
}

mod postgres;
mod users;

pub use postgres::PostgresConfig;
pub use users::{
    ALL_TABLES, Password, ScramVerifier, UserConfig, password_env as user_password_env,
    token_env as user_token_env,
};

#[cfg(test)]
mod tests;
