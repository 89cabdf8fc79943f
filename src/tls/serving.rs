//! TLS on shardgate's own listeners. A [`ServedCertificate`] holds the certificate chain and
//! key a listener offers, read from their files at start-up and again on SIGHUP: a new
//! handshake gets the certificate read last, a connection already open keeps the one it began
//! with, and a reload that fails (a missing file, a key that does not match) keeps the old
//! certificate and says why.

use arc_swap::ArcSwap;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio_rustls::TlsAcceptor;

/// Why a certificate could not be served.
#[derive(Debug, thiserror::Error)]
pub enum ServingTlsError {
    /// A file could not be read or parsed.
    #[error("{path}: {reason}")]
    File {
        /// The file.
        path: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The key does not fit the certificate, or rustls refused them.
    #[error("{cert} and {key}: {reason}")]
    Pair {
        /// The certificate file.
        cert: String,
        /// The key file.
        key: String,
        /// What rustls said.
        reason: String,
    },
}

/// The certificate a listener serves, replaceable while it serves.
pub struct ServedCertificate {
    cert_file: PathBuf,
    key_file: PathBuf,
    provider: Arc<CryptoProvider>,
    current: ArcSwap<Loaded>,
}

/// One reading of the files.
struct Loaded {
    key: Arc<CertifiedKey>,
    /// The chain as PEM, for SCRAM's channel binding.
    chain_pem: Vec<u8>,
}

impl std::fmt::Debug for ServedCertificate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServedCertificate")
            .field("cert_file", &self.cert_file)
            .finish_non_exhaustive()
    }
}

impl ServedCertificate {
    /// Reads the chain in `cert_file` and the key in `key_file`.
    pub fn load(cert_file: &Path, key_file: &Path) -> Result<Arc<ServedCertificate>, ServingTlsError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let loaded = read(cert_file, key_file, &provider)?;
        Ok(Arc::new(ServedCertificate {
            cert_file: cert_file.to_path_buf(),
            key_file: key_file.to_path_buf(),
            provider,
            current: ArcSwap::from_pointee(loaded),
        }))
    }

    /// Reads the files again; on an error the certificate served so far stays.
    pub fn reload(&self) -> Result<(), ServingTlsError> {
        let loaded = read(&self.cert_file, &self.key_file, &self.provider)?;
        self.current.store(Arc::new(loaded));
        Ok(())
    }

    /// The certificate file, for messages.
    pub fn cert_file(&self) -> &Path {
        &self.cert_file
    }

    /// The chain served now, as PEM.
    pub fn chain_pem(&self) -> Vec<u8> {
        self.current.load().chain_pem.clone()
    }

    /// An acceptor whose handshakes offer the certificate read last, with `alpn` protocols.
    pub fn acceptor(self: &Arc<Self>, alpn: &[&[u8]]) -> Result<TlsAcceptor, ServingTlsError> {
        let mut config = rustls::ServerConfig::builder_with_provider(self.provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| self.pair_error(&e))?
            .with_no_client_auth()
            .with_cert_resolver(self.clone());
        config.alpn_protocols = alpn.iter().map(|protocol| protocol.to_vec()).collect();
        Ok(TlsAcceptor::from(Arc::new(config)))
    }

    fn pair_error(&self, e: &dyn std::fmt::Display) -> ServingTlsError {
        ServingTlsError::Pair {
            cert: self.cert_file.display().to_string(),
            key: self.key_file.display().to_string(),
            reason: e.to_string(),
        }
    }
}

impl ResolvesServerCert for ServedCertificate {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load().key.clone())
    }
}

/// Reads and pairs a chain and key.
fn read(cert_file: &Path, key_file: &Path, provider: &CryptoProvider) -> Result<Loaded, ServingTlsError> {
    let file_error = |path: &Path, reason: String| ServingTlsError::File {
        path: path.display().to_string(),
        reason,
    };
    let chain_pem = std::fs::read(cert_file).map_err(|e| file_error(cert_file, e.to_string()))?;
    let chain = CertificateDer::pem_slice_iter(&chain_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| file_error(cert_file, e.to_string()))?;
    if chain.is_empty() {
        return Err(file_error(cert_file, "holds no certificate".into()));
    }
    let key = PrivateKeyDer::from_pem_file(key_file).map_err(|e| file_error(key_file, e.to_string()))?;
    let key = CertifiedKey::from_der(chain, key, provider).map_err(|e| ServingTlsError::Pair {
        cert: cert_file.display().to_string(),
        key: key_file.display().to_string(),
        reason: e.to_string(),
    })?;
    Ok(Loaded {
        key: Arc::new(key),
        chain_pem,
    })
}
