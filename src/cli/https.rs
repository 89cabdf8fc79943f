//! The HTTP client `bench`, `query` and `admin` send with: plain HTTP, or HTTPS whose server
//! is checked against a given authority (`--cacert`, or the config's `tls.ca_file`) or else
//! the system's trusted roots.

use anyhow::{Context, Result};
use shardgate::config::TlsConfig;
use std::path::Path;

/// A client for `url` built from `builder`, checking an HTTPS server against `cacert` or the
/// system's trusted roots.
pub fn client(url: &str, builder: reqwest::ClientBuilder, cacert: Option<&Path>) -> Result<reqwest::Client> {
    let builder = if url.starts_with("https://") {
        let trust = TlsConfig {
            ca_file: cacert.map(Path::to_path_buf),
            verify: true,
        };
        let tls = shardgate::tls::client_config(&trust)
            .with_context(|| format!("cannot check the certificate of {url}; give --cacert"))?;
        builder.tls_backend_preconfigured(tls)
    } else {
        builder
    };
    builder.build().context("cannot build the HTTP client")
}

/// The base URL of a listener at `address`: https when the config serves TLS there.
pub fn base_url(tls: bool, address: &str) -> String {
    let scheme = if tls { "https" } else { "http" };
    format!("{scheme}://{address}")
}
