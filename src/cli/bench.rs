//! `shardgate bench`: the load generator, with baselines in the same tool so ratios come from
//! one run on the same shards and rows.

use super::https;
use super::login::{Credentials, LoginArgs};
use anyhow::{Context, Result, bail};
use indicatif::{ProgressBar, ProgressStyle};
use shardgate::bench::listener;
use shardgate::bench::process::ProcessWatch;
use shardgate::bench::report::{Recorder, Report, SpoolDrain, Verification};
use shardgate::bench::targets::{
    Bodies, BodyPool, DirectTarget, Plan, StreamAppends, direct_worker, http_worker, insert_worker,
};
use shardgate::bench::timeline::{self, MIGRATION_PHASES, Timeline, chart};
use shardgate::bench::workload::{KeyDistribution, RowGenerator, WorkloadSpec};
use shardgate::catalog::Catalog;
use shardgate::config::Config;
use shardgate::ingest::copy::{TableStatements, session_setup_sql};
use shardgate::query::render::skip_clause;
use shardgate::routing::TokenRange;
use shardgate::schema::{TableSchema, quote_ident};
use shardgate::shards::{ShardEndpoint, ShardSettings, copy_pool};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinSet;
use tokio::time::Instant;

/// Rows written when neither `--rows` nor `--duration` is given.
const DEFAULT_ROWS: u64 = 1_000_000;

/// Where the rows go.
#[derive(Debug, Clone, Copy, PartialEq, clap::ValueEnum)]
pub enum Target {
    /// Through shardgate's HTTP write API.
    Shardgate,
    /// Straight to the shards with binary COPY, batched and loaded as shardgate loads them
    /// (a table with an id by plain COPY, through staging when an id is stored already).
    Direct,
    /// Straight to the shards with plain binary COPY into each table, batched as shardgate
    /// does but never deduplicated: the shards' physical limit.
    DirectCopy,
    /// One autocommit INSERT per row, straight to the shards.
    Insert,
    /// One prepared autocommit INSERT per row through shardgate's Postgres listener (what
    /// pgbench sends); compare with `insert` at the same --concurrency.
    PgInsert,
    /// One text COPY FROM STDIN of --rows-per-request rows at a time through shardgate's
    /// Postgres listener, on --concurrency sessions; compare with `direct`.
    PgCopy,
}

/// Options of `shardgate bench`.
#[derive(clap::Args)]
pub struct BenchArgs {
    /// shardgate config: listen address, shards, batch size and connections.
    #[arg(long, default_value = ".shardgate/dev/shardgate.toml")]
    config: PathBuf,
    /// Where to write.
    #[arg(long, value_enum, default_value_t = Target::Shardgate)]
    target: Target,
    /// Base URL of shardgate (default: http:// + the config's server.listen).
    #[arg(long)]
    url: Option<String>,
    /// Table to write: columns event_id (unless --no-ids), tenant_id, event_type, ts, payload
    /// [default: events, or events_no_id with --no-ids].
    #[arg(long)]
    table: Option<String>,
    /// Concurrent workers (HTTP keep-alive connections, or INSERT connections). `direct` uses
    /// the config's connections per shard instead.
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// Rows per HTTP request.
    #[arg(long, default_value_t = 1000)]
    rows_per_request: u64,
    /// Total rows to write [default: 1000000 unless --duration is given].
    #[arg(long, conflicts_with = "duration")]
    rows: Option<u64>,
    /// How long to write, e.g. 30s.
    #[arg(long, value_parser = humantime::parse_duration)]
    duration: Option<Duration>,
    /// Distinct tenants (K).
    #[arg(long, default_value_t = 1000)]
    tenants: u32,
    /// Distinct event types (M).
    #[arg(long, default_value_t = 20)]
    event_types: u32,
    /// Key distribution over tenants and event types.
    #[arg(long, value_enum, default_value_t = KeyDistribution::Uniform)]
    distribution: KeyDistribution,
    /// Exponent of the Zipf distribution.
    #[arg(long, default_value_t = 1.1)]
    zipf_s: f64,
    /// Send this share of the rows (0 to below 1) to one hot key, (tenant-0, type-0); the
    /// others follow --distribution. The report adds when the key was split, and the shards'
    /// skew and the total rows/s before and after.
    #[arg(long, default_value_t = 0.0, value_parser = share)]
    hot_share: f64,
    /// Bytes of padding in each row's payload.
    #[arg(long, default_value_t = 100)]
    payload_bytes: usize,
    /// Write rows without ids (plain COPY, no deduplication).
    #[arg(long)]
    no_ids: bool,
    /// Send this share of the rows (0 to below 1) again: each repeats, id and all, one of the
    /// worker's recent rows, as a client's retries do (stored once in a table with an id).
    #[arg(long, default_value_t = 0.0, value_parser = share)]
    retry_share: f64,
    /// Build every request body before the clock starts (shardgate target; needs --rows), so
    /// the run times the proxy and not this client's JSON encoding. Without it each body is
    /// generated while timed, as a real client would.
    #[arg(long)]
    prebuilt_bodies: bool,
    /// Send request bodies gzip-compressed (shardgate target).
    #[arg(long)]
    gzip: bool,
    /// Send every request with an `Idempotency-Key` of its own (shardgate target), to measure
    /// what the key's lookup and records cost.
    #[arg(long)]
    idempotency_keys: bool,
    /// Append to this many streams of a stream table (shardgate target; columns account_id,
    /// version, type, data; default table account_events): each worker owns its share of the
    /// streams and appends --rows-per-request events to one of them at a time, at the
    /// stream's next version.
    #[arg(long)]
    streams: Option<u64>,
    /// Ask for the spool's 202 (`Prefer: respond-async`; the table must allow it), and after
    /// the run wait until the spool wrote every row, reporting how long that took (shardgate
    /// target).
    #[arg(long)]
    spool: bool,
    /// Offered load in rows per second (open loop); as fast as possible when absent.
    #[arg(long)]
    rate: Option<f64>,
    /// Report peak resident memory and CPU time (in all and per row) of this process (e.g. the
    /// shardgate server).
    #[arg(long)]
    watch_pid: Option<u32>,
    /// Count the table's rows before and after, and report the difference: each row once, on
    /// the shards and ranges a read of the catalog's routing visits, so the copies a migration
    /// holds are not counted twice.
    #[arg(long)]
    verify: bool,
    /// Write the run second by second to this CSV file: rows acknowledged, errors, p50, p99
    /// and max ack latency, and the phase of a migration running meanwhile (read from the
    /// admin API). With a migration the report adds ingest while copying against the steady
    /// rate before it, and the write pause at the cutover.
    #[arg(long)]
    timeline: Option<PathBuf>,
    /// Draw the timeline as an SVG chart into this file.
    #[arg(long)]
    chart: Option<PathBuf>,
    /// Base URL of shardgate's admin API, for the migration phase (default: http:// + the
    /// config's server.admin_listen).
    #[arg(long)]
    admin_url: Option<String>,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
    /// PEM file of the authority to check shardgate's HTTPS listeners against [default: the
    /// config's tls.ca_file; else the system's trusted roots].
    #[arg(long, env = "SHARDGATE_CACERT")]
    cacert: Option<PathBuf>,
    #[command(flatten)]
    login: LoginArgs,
}

impl BenchArgs {
    /// The authority HTTPS servers are checked against: --cacert, else the config's.
    fn cacert(&self, config: &Config) -> Option<PathBuf> {
        self.cacert.clone().or_else(|| config.tls.ca_file.clone())
    }
}

/// A `--hot-share` or `--retry-share`: a share in [0, 1).
fn share(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(share) if (0.0..1.0).contains(&share) => Ok(share),
        _ => Err(format!("`{text}` is not a share from 0 up to (not including) 1")),
    }
}

/// Runs one benchmark and prints its report.
pub async fn run(args: BenchArgs) -> Result<()> {
    let config = Config::load(&args.config)?;
    let table_name = args.table.clone().unwrap_or_else(|| {
        if args.streams.is_some() {
            "account_events".into()
        } else if args.no_ids {
            "events_no_id".into()
        } else {
            "events".into()
        }
    });
    let table = match args.streams {
        Some(streams) => stream_table(&args, &config, &table_name, streams)?,
        None => bench_table(&config, &table_name, !args.no_ids)?,
    };
    let spec = WorkloadSpec {
        tenants: args.tenants,
        event_types: args.event_types,
        distribution: args.distribution,
        zipf_s: args.zipf_s,
        hot_share: args.hot_share,
        payload_bytes: args.payload_bytes,
        with_ids: !args.no_ids,
        retry_share: args.retry_share,
    };
    let total_rows = match (args.rows, args.duration) {
        (None, None) => Some(DEFAULT_ROWS),
        (rows, _) => rows,
    };
    let rows_before = if args.verify {
        Some(count_rows(&config, &table_name).await?)
    } else {
        None
    };
    let pool = prebuilt_bodies(&args, &spec, total_rows)?;
    let watch = args.watch_pid.map(ProcessWatch::start);
    let progress = progress_bar(total_rows);
    let plan = Plan::new(args.rows_per_request, total_rows, args.duration, args.rate);
    let keeps_timeline = args.timeline.is_some() || args.chart.is_some() || args.hot_share > 0.0;
    let timeline = keeps_timeline.then(|| Arc::new(Timeline::new(Instant::now())));
    let plan = Arc::new(match &timeline {
        Some(timeline) => plan.with_timeline(timeline.clone()),
        None => plan,
    });
    let admin = AdminApi::new(
        args.admin_url
            .clone()
            .unwrap_or_else(|| https::base_url(config.server.tls.is_some(), &config.server.admin_listen)),
        &config,
        args.cacert(&config).as_deref(),
    )?;
    let phases = timeline
        .as_ref()
        .map(|timeline| tokio::spawn(watch_migrations(admin.clone(), timeline.clone())));
    let splits = timeline
        .as_ref()
        .filter(|_| args.hot_share > 0.0)
        .map(|timeline| {
            tokio::spawn(watch_hot_keys(
                admin.clone(),
                table_name.clone(),
                timeline.clone(),
            ))
        });
    let started = Instant::now();
    let (recorder, latency_of) = match args.target {
        Target::Shardgate => (
            run_http(&args, &config, &table_name, &spec, pool, &plan, &progress).await?,
            "request",
        ),
        Target::Direct | Target::DirectCopy => (
            run_direct(&config, &table, &spec, (&plan, args.target), &progress).await?,
            "COPY batch",
        ),
        Target::Insert => (
            run_insert(&args, &config, &table_name, &spec, &plan, &progress).await?,
            "row",
        ),
        Target::PgInsert | Target::PgCopy => (
            run_listener(&args, &config, &table_name, &spec, &plan, &progress).await?,
            if args.target == Target::PgCopy {
                "COPY"
            } else {
                "row"
            },
        ),
    };
    let elapsed = started.elapsed();
    progress.finish_and_clear();
    for watcher in phases.into_iter().chain(splits) {
        watcher.abort();
    }
    let mut target = clap::ValueEnum::to_possible_value(&args.target)
        .map(|value| value.get_name().to_string())
        .unwrap_or_default();
    if args.gzip && args.target == Target::Shardgate {
        target.push_str(" (gzip)");
    }
    if args.prebuilt_bodies && args.target == Target::Shardgate {
        target.push_str(" (prebuilt bodies)");
    }
    if args.spool && args.target == Target::Shardgate {
        target.push_str(" (spool)");
    }
    if args.idempotency_keys && args.target == Target::Shardgate {
        target.push_str(" (idempotency keys)");
    }
    if let Some(streams) = args.streams {
        target.push_str(&format!(" ({streams} streams)"));
    }
    let mut report = Report::new(&target, latency_of, &recorder, elapsed);
    if args.spool && args.target == Target::Shardgate {
        let drained = wait_for_the_spool(&admin, &table_name, started).await?;
        report.spool = Some(SpoolDrain {
            drained_after_seconds: drained.as_secs_f64(),
            backlog_seconds: drained.saturating_sub(elapsed).as_secs_f64(),
            drained_rows_per_second: recorder.rows() as f64 / drained.as_secs_f64(),
        });
    }
    if let Some(watch) = watch {
        report.watched(watch.finish().await);
    }
    if let Some(before) = rows_before {
        let after = count_rows(&config, &table_name).await?;
        report.verification = Some(Verification {
            rows_added: after - before,
            rows_acknowledged: recorder.rows(),
        });
    }
    if let Some(timeline) = &timeline {
        report.migration = timeline.migration_effect();
        report.hot_key = timeline.hot_key_effect();
        write_timeline(&args, timeline)?;
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report.render());
        if args.hot_share > 0.0 && report.hot_key.is_none() {
            println!(
                "hot key       no split seen with a second before it and a settled second after it; \
                 run longer, or see GET /admin/hot-keys"
            );
        }
    }
    match report.failure() {
        Some(failure) => bail!("{failure}"),
        None => Ok(()),
    }
}

/// Waits until shardgate's spool wrote every row of `table` it spooled, as its metrics at
/// `admin` count them, and returns the time since `started`.
async fn wait_for_the_spool(admin: &AdminApi, table: &str, started: Instant) -> Result<Duration> {
    let client = &admin.client;
    let url = admin.url("/metrics");
    let series =
        |outcome: &str| format!("shardgate_spool_rows_total{{outcome=\"{outcome}\",table=\"{table}\"}}");
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let page = client.get(&url).send().await?.error_for_status()?.text().await?;
        let value = |name: &str| {
            page.lines()
                .find_map(|line| line.strip_prefix(name).and_then(|v| v.trim().parse::<f64>().ok()))
                .unwrap_or(0.0)
        };
        if value(&series("drained")) >= value(&series("spooled")) {
            return Ok(started.elapsed());
        }
        if Instant::now() > deadline {
            bail!("the spool did not drain within ten minutes of the run's end");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Notes in `timeline`, four times a second, the phase of the newest migration while it runs,
/// as the admin API at `admin` shows it. Errors (an admin API that is not up) note nothing.
async fn watch_migrations(admin: AdminApi, timeline: Arc<Timeline>) {
    let client = &admin.client;
    let url = admin.url("/admin/migrations");
    loop {
        let newest = match client.get(&url).send().await {
            Ok(response) => match response.bytes().await {
                Ok(body) => serde_json::from_slice::<serde_json::Value>(&body).ok(),
                Err(_) => None,
            },
            Err(_) => None,
        };
        let phase = newest
            .as_ref()
            .and_then(|all| all[0]["phase"].as_str())
            .filter(|phase| MIGRATION_PHASES.contains(phase));
        timeline.phase(phase);
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Notes in `timeline`, four times a second, whether the admin API at `admin` lists a split
/// hot key, and once a second the rows each shard has committed to `table` (from `/metrics`).
/// Errors note nothing.
async fn watch_hot_keys(admin: AdminApi, table: String, timeline: Arc<Timeline>) {
    let client = &admin.client;
    for tick in 0u64.. {
        if let Some(listed) = fetch(client, &admin.url("/admin/hot-keys")).await
            && let Ok(listed) = serde_json::from_str::<serde_json::Value>(&listed)
            && listed["splits"].as_array().is_some_and(|s| !s.is_empty())
        {
            timeline.split_seen();
        }
        if tick % 4 == 0
            && let Some(metrics) = fetch(client, &admin.url("/metrics")).await
        {
            timeline.shard_totals(timeline::committed_per_shard(&metrics, &table));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// shardgate's admin API, asked with the config's admin token when it has one (with users
/// configured, the admin API answers no one else but admin users).
#[derive(Clone)]
struct AdminApi {
    base: String,
    client: reqwest::Client,
}

impl AdminApi {
    fn new(base: String, config: &Config, cacert: Option<&std::path::Path>) -> Result<AdminApi> {
        let mut headers = reqwest::header::HeaderMap::new();
        if let Some(token) = &config.admin.token {
            let mut value = reqwest::header::HeaderValue::from_str(&format!("Bearer {}", token.0))
                .context("admin.token holds characters an HTTP header cannot carry")?;
            value.set_sensitive(true);
            headers.insert(reqwest::header::AUTHORIZATION, value);
        }
        let client = https::client(&base, reqwest::Client::builder().default_headers(headers), cacert)?;
        Ok(AdminApi {
            base: base.trim_end_matches('/').to_string(),
            client,
        })
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }
}

async fn fetch(client: &reqwest::Client, url: &str) -> Option<String> {
    client.get(url).send().await.ok()?.text().await.ok()
}

/// Writes the timeline's CSV and chart where `args` asks.
fn write_timeline(args: &BenchArgs, timeline: &Timeline) -> Result<()> {
    let rows = timeline.rows();
    if let Some(path) = &args.timeline {
        std::fs::write(path, timeline::to_csv(&rows))
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    if let Some(path) = &args.chart {
        let title = format!(
            "shardgate bench, {} clients: rows/s and ack latency per second",
            args.concurrency
        );
        std::fs::write(path, chart::svg(&rows, &title))
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(())
}

/// The declared table, checked to have the columns the generator writes.
/// The stream table `--streams` appends to, checked to be one with the columns it writes, and
/// the run to be one the appends can take.
fn stream_table(args: &BenchArgs, config: &Config, name: &str, streams: u64) -> Result<TableSchema> {
    let table = declared_table(config, name)?;
    let names: Vec<&str> = table.columns.iter().map(|c| c.name.as_str()).collect();
    let writes = ["account_id", "version", "type", "data"];
    if table.stream_version.is_none() || !writes.iter().all(|c| names.contains(c)) {
        bail!(
            "--streams appends ({}) to a stream table; `{name}` is not one with those columns",
            writes.join(", ")
        );
    }
    if args.target != Target::Shardgate || args.prebuilt_bodies || args.spool {
        bail!("--streams is for --target shardgate, without --prebuilt-bodies or --spool");
    }
    if streams < args.concurrency as u64 {
        bail!("--streams must be at least --concurrency, so each worker has a stream of its own");
    }
    Ok(table)
}

/// The table `name` as the config declares it.
fn declared_table(config: &Config, name: &str) -> Result<TableSchema> {
    let declared = config
        .tables
        .iter()
        .find(|t| t.name == name)
        .with_context(|| format!("table `{name}` is not declared in the config"))?;
    TableSchema::from_config(declared).map_err(anyhow::Error::msg)
}

fn bench_table(config: &Config, name: &str, with_ids: bool) -> Result<TableSchema> {
    let table = declared_table(config, name)?;
    let mut want = vec!["tenant_id", "event_type", "ts", "payload"];
    if with_ids {
        want.insert(0, "event_id");
    }
    let have: Vec<&str> = table.columns.iter().map(|c| c.name.as_str()).collect();
    if have != want || table.is_idempotent() != with_ids {
        bail!(
            "table `{name}` has columns ({}){}; the benchmark writes ({}){}",
            have.join(", "),
            if table.is_idempotent() {
                " with an id"
            } else {
                " without an id"
            },
            want.join(", "),
            if with_ids {
                " with id event_id"
            } else {
                " without an id (--no-ids)"
            },
        );
    }
    Ok(table)
}

/// With `--prebuilt-bodies`, every body of the run, built now, before the clock starts.
fn prebuilt_bodies(
    args: &BenchArgs,
    spec: &WorkloadSpec,
    total_rows: Option<u64>,
) -> Result<Option<Arc<BodyPool>>> {
    if !args.prebuilt_bodies || args.target != Target::Shardgate {
        return Ok(None);
    }
    let Some(total) = total_rows.filter(|_| args.duration.is_none()) else {
        bail!("--prebuilt-bodies needs --rows (and no --duration): the bodies are built before the run");
    };
    eprintln!("building {total} rows of request bodies before the run");
    // A seed no timed worker uses (they take 0..concurrency).
    let mut generator = RowGenerator::new(spec, args.concurrency as u64).map_err(anyhow::Error::msg)?;
    Ok(Some(Arc::new(BodyPool::build(
        &mut generator,
        args.rows_per_request,
        total,
        args.gzip,
    ))))
}

async fn run_http(
    args: &BenchArgs,
    config: &Config,
    table: &str,
    spec: &WorkloadSpec,
    pool: Option<Arc<BodyPool>>,
    plan: &Arc<Plan>,
    progress: &ProgressBar,
) -> Result<Recorder> {
    let base = args
        .url
        .clone()
        .unwrap_or_else(|| https::base_url(config.server.tls.is_some(), &config.server.listen));
    let url = format!("{}/v1/tables/{table}/rows", base.trim_end_matches('/'));
    let credentials = args.login.credentials(
        Some(config),
        |user| user.may_write(table),
        &format!("may write table {table}"),
    )?;
    let mut headers = Credentials::headers(credentials.as_ref())?;
    if args.spool {
        headers.insert(
            "prefer",
            reqwest::header::HeaderValue::from_static("respond-async"),
        );
    }
    let builder = reqwest::Client::builder()
        .default_headers(headers)
        .pool_max_idle_per_host(args.concurrency)
        .timeout(config.server.request_timeout + Duration::from_secs(5));
    let client = https::client(&url, builder, args.cacert(config).as_deref())?;
    let run = format!("run-{}", uuid::Uuid::now_v7().simple());
    let mut workers = JoinSet::new();
    for worker in 0..args.concurrency {
        let bodies = match (&pool, args.streams) {
            (Some(pool), _) => Bodies::Prebuilt(pool.clone()),
            (None, Some(streams)) => {
                Bodies::Streams(StreamAppends::new(&run, (worker, args.concurrency), streams))
            }
            (None, None) => {
                Bodies::Generated(RowGenerator::new(spec, worker as u64).map_err(anyhow::Error::msg)?)
            }
        };
        workers.spawn(http_worker(
            plan.clone(),
            client.clone(),
            url.clone(),
            bodies,
            (args.gzip, args.idempotency_keys),
            progress.clone(),
        ));
    }
    Ok(merge(workers).await)
}

async fn run_direct(
    config: &Config,
    table: &TableSchema,
    spec: &WorkloadSpec,
    (plan, target): (&Arc<Plan>, Target),
    progress: &ProgressBar,
) -> Result<Recorder> {
    let stored = Catalog::connect(config)?.load(config).await?;
    let statements = match target {
        Target::DirectCopy => TableStatements::without_deduplication(table),
        _ => TableStatements::new(table),
    };
    let session_setup = session_setup_sql(std::slice::from_ref(&statements));
    let target = Arc::new(DirectTarget {
        pools: direct_pools(&stored.shards, config, session_setup)?,
        epoch: stored.routing.epoch,
        routing: Arc::new(stored.routing),
        statements: Arc::new(statements),
        batch_rows: config.batch.max_rows,
    });
    let mut workers = JoinSet::new();
    for worker in 0..stored.shards.len() * config.pool.connections_per_shard {
        let generator = RowGenerator::new(spec, worker as u64).map_err(anyhow::Error::msg)?;
        workers.spawn(direct_worker(
            plan.clone(),
            target.clone(),
            generator,
            progress.clone(),
        ));
    }
    Ok(merge(workers).await)
}

/// A COPY pool per shard, sized and set up like shardgate's writers'.
fn direct_pools(
    endpoints: &[ShardEndpoint],
    config: &Config,
    session_setup: String,
) -> Result<Vec<deadpool_postgres::Pool>> {
    let settings = ShardSettings::from_config(config, session_setup, 1);
    let pools = endpoints
        .iter()
        .map(|endpoint| copy_pool(endpoint, &settings))
        .collect::<Result<_, _>>()?;
    Ok(pools)
}

async fn run_insert(
    args: &BenchArgs,
    config: &Config,
    table: &str,
    spec: &WorkloadSpec,
    plan: &Arc<Plan>,
    progress: &ProgressBar,
) -> Result<Recorder> {
    let stored = Catalog::connect(config)?.load(config).await?;
    let routing = Arc::new(stored.routing);
    let mut workers = JoinSet::new();
    for worker in 0..args.concurrency {
        let mut clients = Vec::new();
        for shard in &stored.shards {
            clients.push(connect(shard, config).await?);
        }
        let generator = RowGenerator::new(spec, worker as u64).map_err(anyhow::Error::msg)?;
        workers.spawn(insert_worker(
            plan.clone(),
            clients,
            table.to_string(),
            routing.clone(),
            spec.clone(),
            generator,
            progress.clone(),
        ));
    }
    Ok(merge(workers).await)
}

/// Writes through the Postgres listener of `config`, as its first user, on --concurrency
/// sessions.
async fn run_listener(
    args: &BenchArgs,
    config: &Config,
    table: &str,
    spec: &WorkloadSpec,
    plan: &Arc<Plan>,
    progress: &ProgressBar,
) -> Result<Recorder> {
    let listen = config
        .postgres
        .address()
        .context("the config has no [postgres] listen address to write to")?;
    let credentials = args.login.credentials(
        Some(config),
        |user| user.may_write(table),
        &format!("may write table {table}"),
    )?;
    let Some(Credentials::Password { user, password }) = credentials else {
        bail!("the Postgres listener logs in with a user's name and password; give --user and --password");
    };
    let mut connect = tokio_postgres::Config::new();
    connect
        .host(listen.ip().to_string())
        .port(listen.port())
        .user(&user)
        .password(&password)
        .dbname("shardgate");
    let mut workers = JoinSet::new();
    for worker in 0..args.concurrency {
        let (client, connection) = connect
            .connect(tokio_postgres::NoTls)
            .await
            .with_context(|| format!("logging in to the Postgres listener at {listen}"))?;
        tokio::spawn(connection);
        let generator = RowGenerator::new(spec, worker as u64).map_err(anyhow::Error::msg)?;
        let (plan, table, progress) = (plan.clone(), table.to_string(), progress.clone());
        match args.target {
            Target::PgCopy => workers.spawn(listener::copy_worker(plan, client, table, generator, progress)),
            _ => workers.spawn(listener::insert_worker(plan, client, table, generator, progress)),
        };
    }
    Ok(merge(workers).await)
}

async fn merge(mut workers: JoinSet<Recorder>) -> Recorder {
    let mut total = Recorder::new();
    while let Some(result) = workers.join_next().await {
        match result {
            Ok(recorder) => total.merge(&recorder),
            Err(e) => total.failed(&format!("worker: {e}")),
        }
    }
    total
}

async fn connect(shard: &ShardEndpoint, config: &Config) -> Result<tokio_postgres::Client> {
    shardgate::pg::connect_once(&shard.url, shard.password.as_deref(), &config.tls)
        .await
        .map_err(anyhow::Error::msg)
}

/// Rows of `table` over every shard the catalog lists.
async fn count_rows(config: &Config, table: &str) -> Result<i64> {
    let stored = Catalog::connect(config)?.load(config).await?;
    let mut total = 0;
    for shard in stored.routing.shards_for_scatter() {
        let skipped: Vec<TokenRange> = stored.routing.ranges_to_skip(shard).copied().collect();
        let owned_only = skip_clause(&skipped)
            .map(|c| format!(" WHERE {c}"))
            .unwrap_or_default();
        let client = connect(&stored.shards[shard.0], config).await?;
        let count: i64 = client
            .query_one(
                &format!("SELECT count(*) FROM {}{owned_only}", quote_ident(table)),
                &[],
            )
            .await?
            .get(0);
        total += count;
    }
    Ok(total)
}

fn progress_bar(total_rows: Option<u64>) -> ProgressBar {
    let bar = match total_rows {
        Some(total) => ProgressBar::new(total),
        None => ProgressBar::no_length(),
    };
    let template = "{elapsed_precise} [{bar:40}] {human_pos}/{human_len} rows  {per_sec}";
    if let Ok(style) = ProgressStyle::with_template(template) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}
