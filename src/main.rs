//! The `shardgate` command line: `serve`, `dev`, `bench`, `query`, `admin` and `check-config`.

mod cli;

use anyhow::Result;
use clap::{Parser, Subcommand, ValueEnum};
use std::io::IsTerminal;
use std::path::PathBuf;

/// A write router for PostgreSQL: rows in over HTTP, routed by partition key over a
/// consistent-hash ring, batched per shard into binary COPY, acknowledged once committed.
#[derive(Parser)]
#[command(name = "shardgate", version, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,

    /// Log format.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text, env = "SHARDGATE_LOG_FORMAT")]
    log_format: LogFormat,
}

#[derive(Subcommand)]
enum Command {
    /// Run the router with a config file.
    Serve {
        /// Path of the TOML config.
        #[arg(short, long, env = "SHARDGATE_CONFIG", default_value = "shardgate.toml")]
        config: PathBuf,
    },
    /// Start local PostgreSQL shards and run shardgate against them (for trying it out).
    Dev(cli::dev::DevArgs),
    /// Measure ingest throughput and ack latency (through shardgate, or the baselines).
    Bench(Box<cli::bench::BenchArgs>),
    /// Run a reporting query through a running shardgate and print the answer.
    Query(cli::query::QueryArgs),
    /// Look at and change the shard set of a running shardgate (add a shard, follow a migration).
    Admin(cli::admin::AdminArgs),
    /// Validate a config file and print every problem found.
    CheckConfig {
        /// Path of the TOML config.
        #[arg(short, long, env = "SHARDGATE_CONFIG", default_value = "shardgate.toml")]
        config: PathBuf,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

#[tokio::main]
async fn main() -> Result<()> {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    shardgate::tls::install_default_provider();
    match cli.command {
        Command::Serve { config } => cli::serve::run(&config).await,
        Command::Dev(args) => cli::dev::run(args).await,
        Command::Bench(args) => cli::bench::run(*args).await,
        Command::Query(args) => cli::query::run(args).await,
        Command::Admin(args) => cli::admin::run(args).await,
        Command::CheckConfig { config } => {
            shardgate::config::Config::load(&config)?;
            println!("{}: ok", config.display());
            Ok(())
        }
    }
}
