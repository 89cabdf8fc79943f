//! `shardgate serve`: run with a config file until SIGINT or SIGTERM; SIGHUP reloads the
//! listeners' certificates.

use anyhow::{Context, Result};
use shardgate::config::Config;
use std::path::Path;

/// Loads the config, serves, and shuts down gracefully on a signal.
pub async fn run(config_path: &Path) -> Result<()> {
    let config = Config::load(config_path)?;
    let server = shardgate::server::start(config)
        .await
        .context("cannot start shardgate")?;
    super::serve_until_signal(&server).await;
    server.shutdown();
    server.wait().await;
    Ok(())
}
