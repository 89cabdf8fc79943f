//! Start-up and lifecycle: builds the shared state in one place, binds the write and admin
//! listeners, and shuts down gracefully.
//!
//! Start-up order: validate config → load (or initialise, or migrate) the catalog, which owns
//! the shard list → connect pools to its shards → create or verify tables and fences on every
//! shard → start the writers → open the spool, if some table may use it, and start draining
//! it → listen.
//! Shutdown: stop accepting, let in-flight requests finish while the writers flush at once, then
//! let the writers drain their queues and exit. No acknowledged row is left in memory.

use crate::catalog::watch::{RefreshHandle, WatchSettings, watch};
use crate::catalog::{Catalog, CatalogError, RoutingSource};
use crate::config::{Config, ConfigError};
use crate::gateway::{Administration, Gateway};
use crate::hotkeys::{HotKeyWatch, Splitter};
use crate::http::state::{AppState, RequestLimits};
use crate::http::{Listeners, ReadTimeouts};
use crate::ingest::batcher::{WriterSettings, Writers};
use crate::ingest::copy::{TableStatements, session_setup_sql};
use crate::ingest::drain::{DepartedShards, DrainSettings, Recovered, drain};
use crate::ingest::pruning;
use crate::ingest::write::{Spool, Writes};
use crate::metrics::Metrics;
use crate::postgres::PostgresListener;
use crate::postgres::block::BlockLimits;
use crate::postgres::copy_in::ChunkLimits;
use crate::query::QueryEngine;
use crate::reshard::Resharder;
use crate::schema::Tables;
use crate::shards::queue::QueueLimits;
use crate::shards::set::{PublishError, Published};
use crate::shards::{ShardError, ShardSettings};
use crate::spool::{SpoolError, SpoolLog, SpoolWriter, WriteStatuses, WriterOptions};
use crate::tls::serving::{ServedCertificate, ServingTlsError};
use std::net::SocketAddr;
use std::sync::Arc;
use thiserror::Error;
use tokio::net::TcpListener;
use tokio::task::{JoinHandle, JoinSet};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// shardgate could not start.
#[derive(Debug, Error)]
pub enum StartError {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A table declaration could not be built.
    #[error("table declaration: {0}")]
    Schema(String),
    /// The catalog could not be loaded.
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    /// A shard could not be set up.
    #[error(transparent)]
    Shard(#[from] ShardError),
    /// The shards could not be opened.
    #[error(transparent)]
    Publish(#[from] PublishError),
    /// The spool could not be opened.
    #[error("spool: {0}")]
    Spool(#[from] SpoolError),
    /// The Postgres listener could not be set up.
    #[error(transparent)]
    Postgres(#[from] crate::postgres::ListenerError),
    /// A listener's certificate could not be served.
    #[error("TLS of the listeners: {0}")]
    Tls(#[from] ServingTlsError),
    /// A listener could not be bound.
    #[error("cannot listen on {address}: {cause}")]
    Bind {
        /// The configured address.
        address: String,
        /// Why.
        cause: std::io::Error,
    },
}

/// A started shardgate; call [`RunningServer::shutdown`] then [`RunningServer::wait`].
pub struct RunningServer {
    write_addr: SocketAddr,
    admin_addr: SocketAddr,
    postgres_addr: Option<SocketAddr>,
    shutdown: CancellationToken,
    task: JoinHandle<()>,
    shards: Arc<Published>,
    certificates: Vec<Arc<ServedCertificate>>,
}

impl RunningServer {
    /// Address the write API listens on.
    pub fn write_addr(&self) -> SocketAddr {
        self.write_addr
    }

    /// Address the admin API listens on.
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin_addr
    }

    /// Address the Postgres listener listens on, when `[postgres] listen` is set.
    pub fn postgres_addr(&self) -> Option<SocketAddr> {
        self.postgres_addr
    }

    /// Reads the listeners' certificates and keys again (SIGHUP): new connections get the new
    /// ones, open connections keep theirs, and a certificate that cannot be read is kept as it
    /// was and logged.
    pub fn reload_certificates(&self) {
        for certificate in &self.certificates {
            match certificate.reload() {
                Ok(()) => {
                    tracing::info!(cert_file = %certificate.cert_file().display(), "certificate reloaded")
                }
                Err(e) => {
                    tracing::error!(error = %e, "certificate not reloaded; the one read before is still served")
                }
            }
        }
    }

    /// Name and URL (password redacted) of every shard the current routing table names, in
    /// its order.
    pub fn shards(&self) -> Vec<(String, String)> {
        self.shards
            .load()
            .iter()
            .map(|(_, shard)| (shard.id.0.clone(), shard.redacted_url.clone()))
            .collect()
    }

    /// Begins a graceful shutdown: stop accepting, flush every queue, exit.
    pub fn shutdown(&self) {
        self.shutdown.cancel();
    }

    /// Waits until shutdown has finished.
    pub async fn wait(self) {
        if let Err(e) = self.task.await {
            tracing::error!(error = %e, "server task failed");
        }
    }
}

/// Starts shardgate with `config`: sets up the shards and begins serving.
pub async fn start(config: Config) -> Result<RunningServer, StartError> {
    config.validate()?;
    let config = Arc::new(config);
    let tables = Arc::new(Tables::from_config(&config.tables).map_err(StartError::Schema)?);
    let statements: Vec<TableStatements> = tables.iter().map(|(_, t)| TableStatements::new(t)).collect();
    let catalog = Arc::new(Catalog::connect(&config)?);
    let stored = catalog.load_or_init(&config).await?;
    let epoch = stored.routing.epoch;
    let shard_count = stored.shards.len();
    let spool = open_spool(&config)?;
    let shutdown = CancellationToken::new();
    let close_queues = CancellationToken::new();
    let metrics = Arc::new(Metrics::new());
    let (refresh, refresh_requests) = RefreshHandle::new();
    let settings = ShardSettings::from_config(&config, session_setup_sql(&statements), statements.len());
    let writers = Writers::new(
        writer_settings(&config, &tables, statements, refresh.clone(), &metrics),
        shutdown.clone(),
        close_queues.clone(),
    );
    let writer_tasks = writers.tasks();
    let shards = Arc::new(Published::open(
        stored.routing,
        &stored.shards,
        settings,
        Arc::new(writers),
    )?);
    let all_prepared = shards.load().prepare(&tables).await?;
    let queries = QueryEngine::new(tables.clone(), shards.clone(), config.query.clone());
    let write_listener = bind(&config.server.listen).await?;
    let admin_listener = bind(&config.server.admin_listen).await?;
    let postgres_listener = match &config.postgres.listen {
        Some(address) => Some(bind(address).await?),
        None => None,
    };
    let resharder = Arc::new(Resharder {
        catalog: catalog.clone(),
        shards: shards.clone(),
        tables: tables.clone(),
        settings: config.reshard.clone(),
        vnodes: config.routing.vnodes,
        catalog_url: config.catalog_url().unwrap_or_default().to_string(),
        tls: config.tls.clone(),
        started: tokio::sync::Notify::new(),
        metrics: metrics.clone(),
    });
    let splitter = Splitter {
        catalog: catalog.clone(),
        refresh,
        shards: shards.clone(),
        tables: tables.clone(),
        delay: config.hot_keys.split_delay,
    };
    let routing_source = Arc::new(RoutingSource {
        catalog: catalog.clone(),
        config: config.clone(),
        tables: tables.clone(),
        shards: shards.clone(),
    });
    let mut background = JoinSet::new();
    if !all_prepared {
        let later = shards
            .clone()
            .prepare_in_background(tables.clone(), shutdown.clone());
        background.spawn(later);
    }
    background.spawn(resharder.clone().run(shutdown.clone()));
    background.spawn(watch(
        routing_source,
        watch_settings(&config),
        refresh_requests,
        shutdown.clone(),
    ));
    background.spawn(pruning::prune_periodically(
        shards.clone(),
        catalog.clone(),
        config.idempotency.retention,
        shutdown.clone(),
    ));
    let hot_keys = Arc::new(HotKeyWatch::new(config.hot_keys.clone(), tables.clone()));
    background.spawn(hot_keys.clone().run(
        shards.clone(),
        metrics.clone(),
        splitter.clone(),
        shutdown.clone(),
    ));
    let spool = spool.map(|spool| {
        let settings = DrainContext {
            catalog: &catalog,
            config: &config,
            shards: &shards,
            tables: &tables,
            metrics: &metrics,
        };
        start_spool(spool, settings, &mut background, &shutdown)
    });
    let writes = Arc::new(Writes::new(
        shards.clone(),
        metrics.clone(),
        hot_keys.clone(),
        config.server.request_timeout,
        spool,
        catalog.clone(),
    ));
    let gateway = Arc::new(Gateway::new(
        config.clone(),
        tables,
        writes,
        shards.clone(),
        metrics,
        queries,
        Administration {
            resharder,
            hot_keys,
            splitter,
        },
    ));
    let served = served_certificates(&config)?;
    let postgres_addr = match postgres_listener {
        Some(listener) => {
            let address = config.postgres.listen.as_deref().unwrap_or_default();
            let addr = local_addr(&listener, address)?;
            let services = crate::postgres::Services {
                gateway: gateway.clone(),
                chunks: ChunkLimits::for_queues(config.queue.max_rows, config.queue.max_bytes.as_usize()),
                blocks: Arc::new(BlockLimits {
                    dir: config
                        .postgres
                        .block_dir
                        .clone()
                        .unwrap_or_else(std::env::temp_dir),
                    max_bytes: config.postgres.max_block_size.0,
                }),
                metadata: Arc::new(crate::postgres::metadata::Metadata::new(
                    &config,
                    gateway.tables().clone(),
                )),
            };
            let certificate = served.postgres.clone();
            let listener = PostgresListener::new(listener, &config.postgres, services, certificate)?;
            background.spawn(listener.serve(shutdown.clone()));
            Some(addr)
        }
        None => None,
    };
    let state = Arc::new(AppState {
        gateway,
        limits: RequestLimits {
            max_body_size: config.server.max_body_size.as_usize(),
            retry_after: config.queue.retry_after,
        },
        body_budget: tokio::sync::Semaphore::new(config.server.max_inflight_body_bytes.as_usize()),
    });
    let write_addr = local_addr(&write_listener, &config.server.listen)?;
    let admin_addr = local_addr(&admin_listener, &config.server.admin_listen)?;
    tracing::info!(%write_addr, %admin_addr, epoch = epoch.0, shards = shard_count, "shardgate is serving");
    if config.users.is_empty() {
        tracing::warn!(
            %write_addr,
            "no [[users]] are configured: the write and query API is open to anyone who can reach it"
        );
    }
    let listeners = Listeners {
        write: write_listener,
        admin: admin_listener,
        timeouts: ReadTimeouts {
            header: config.server.header_read_timeout,
            body: config.server.body_read_timeout,
        },
        tls: match &served.http {
            Some(certificate) => Some(certificate.acceptor(&[b"http/1.1"])?),
            None => None,
        },
    };
    let tasks = Tasks {
        writers: writer_tasks,
        close_queues,
        background,
    };
    let task = tokio::spawn(serve(listeners, state, tasks, shutdown.clone()));
    Ok(RunningServer {
        write_addr,
        admin_addr,
        postgres_addr,
        shutdown,
        task,
        shards,
        certificates: served.all(),
    })
}

/// The certificates the listeners serve: `[server.tls]`'s for both HTTP listeners, and for the
/// Postgres listener its own (`postgres.tls_cert`) or else the same one.
struct ServedCertificates {
    http: Option<Arc<ServedCertificate>>,
    postgres: Option<Arc<ServedCertificate>>,
}

impl ServedCertificates {
    /// Each certificate once.
    fn all(&self) -> Vec<Arc<ServedCertificate>> {
        let mut all: Vec<_> = self.http.iter().cloned().collect();
        if let Some(postgres) = &self.postgres
            && !all.iter().any(|c| Arc::ptr_eq(c, postgres))
        {
            all.push(postgres.clone());
        }
        all
    }
}

fn served_certificates(config: &Config) -> Result<ServedCertificates, StartError> {
    let http = match &config.server.tls {
        Some(tls) => Some(ServedCertificate::load(&tls.cert_file, &tls.key_file)?),
        None => None,
    };
    let postgres = match (&config.postgres.tls_cert, &config.postgres.tls_key) {
        (Some(cert), Some(key)) => {
            Some(ServedCertificate::load(cert, key).map_err(crate::postgres::ListenerError::from)?)
        }
        _ => http.clone(),
    };
    Ok(ServedCertificates { http, postgres })
}

/// The spool as found at start-up: its log and the records it holds.
struct OpenedSpool {
    log: SpoolLog,
    recovered: Recovered,
}

/// Opens the spool when some table may use it, cutting a torn tail a crash left (with a
/// warning naming it) and reading back every record it still holds.
fn open_spool(config: &Config) -> Result<Option<OpenedSpool>, StartError> {
    let Some(dir) = config.spool.dir.as_deref().filter(|_| config.may_spool()) else {
        return Ok(None);
    };
    let (mut log, recovery) = SpoolLog::open(dir, config.spool.segment_bytes.0)?;
    if let Some(torn) = &recovery.torn_tail {
        tracing::warn!(
            segment = %torn.path.display(),
            offset = torn.offset,
            bytes_cut = torn.bytes_cut,
            reason = torn.reason,
            "the spool's last segment ended in a torn record (a crash while it was written); it was cut there and the rest replays"
        );
    }
    let first = log.segments().next().expect("the log always has a segment").first;
    let records = log.read_from(first, usize::MAX)?;
    tracing::info!(dir = %dir.display(), records = records.len(), bytes = log.bytes(), "spool opened");
    let next = log.next_seq();
    Ok(Some(OpenedSpool {
        log,
        recovered: Recovered { records, next },
    }))
}

/// What the drainer is built from.
struct DrainContext<'a> {
    catalog: &'a Arc<Catalog>,
    config: &'a Arc<Config>,
    shards: &'a Arc<Published>,
    tables: &'a Arc<Tables>,
    metrics: &'a Arc<Metrics>,
}

/// Starts the spool's writer thread and its drainer (a background task that stops at
/// `shutdown`), and returns the write path's side of it.
fn start_spool(
    spool: OpenedSpool,
    context: DrainContext<'_>,
    background: &mut JoinSet<()>,
    shutdown: &CancellationToken,
) -> Spool {
    let config = context.config;
    let queue = QueueLimits {
        max_rows: config.queue.max_rows,
        max_bytes: config.queue.max_bytes.as_usize(),
    };
    let spool_id = spool.log.id();
    let statuses = Arc::new(WriteStatuses::new(config.spool.remember_writes));
    let (durable, handed) = tokio::sync::mpsc::unbounded_channel();
    let options = WriterOptions {
        max_bytes: config.spool.max_bytes.0,
        durable: Some(durable),
        sync_seconds: Some(context.metrics.spool_sync_duration.clone()),
    };
    // The thread runs until every appender is dropped; each append is synced before it is
    // answered, so nothing waits for the thread at shutdown.
    let (_writer, appender) = SpoolWriter::start(spool.log, options);
    let settings = DrainSettings {
        spool: spool_id,
        shards: context.shards.clone(),
        tables: context.tables.clone(),
        appender: appender.clone(),
        request_timeout: config.server.request_timeout,
        queue,
        metrics: context.metrics.clone(),
        statuses: statuses.clone(),
        catalog: context.catalog.clone(),
        departed: Arc::new(DepartedShards::new(
            context.catalog.clone(),
            config.clone(),
            context.shards.settings(),
        )),
    };
    background.spawn(drain(settings, spool.recovered, handed, shutdown.clone()));
    Spool {
        appender,
        queue,
        statuses,
    }
}

fn writer_settings(
    config: &Config,
    tables: &Tables,
    statements: Vec<TableStatements>,
    refresh: RefreshHandle,
    metrics: &Arc<Metrics>,
) -> WriterSettings {
    WriterSettings {
        statements: Arc::new(statements),
        table_names: Arc::new(tables.iter().map(|(_, t)| t.name.clone()).collect()),
        batch: config.batch.clone(),
        connections_per_shard: config.pool.connections_per_shard,
        refresh,
        metrics: metrics.clone(),
    }
}

/// Where the catalog watcher listens: the catalog database, validated to be named.
fn watch_settings(config: &Config) -> WatchSettings {
    WatchSettings {
        url: config.catalog_url().unwrap_or_default().to_string(),
        tls: config.tls.clone(),
        refresh_interval: config.catalog.refresh_interval,
    }
}

/// The tasks a running server owns besides its listeners: the shard writers, which drain the
/// queues once the listeners are closed, and background work that stops at shutdown (the
/// catalog watcher, the preparation of shards that were down at start-up).
struct Tasks {
    writers: TaskTracker,
    /// Tells the writers no request will queue rows any more.
    close_queues: CancellationToken,
    background: JoinSet<()>,
}

async fn serve(listeners: Listeners, state: Arc<AppState>, tasks: Tasks, shutdown: CancellationToken) {
    listeners.serve(state, shutdown).await;
    tasks.background.join_all().await;
    // No request is in flight any more: the writers close their queues, drain them and stop.
    tracing::info!("listeners closed; flushing queues");
    tasks.close_queues.cancel();
    tasks.writers.close();
    tasks.writers.wait().await;
    tracing::info!("shutdown complete");
}

async fn bind(address: &str) -> Result<TcpListener, StartError> {
    TcpListener::bind(address)
        .await
        .map_err(|cause| StartError::Bind {
            address: address.to_string(),
            cause,
        })
}

fn local_addr(listener: &TcpListener, address: &str) -> Result<SocketAddr, StartError> {
    listener.local_addr().map_err(|cause| StartError::Bind {
        address: address.to_string(),
        cause,
    })
}
