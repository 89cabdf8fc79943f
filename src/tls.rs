//! TLS to the shards. A shard URL with `sslmode=require` connects over TLS (rustls) and checks
//! the server's certificate chain against `tls.ca_file`, or the system's trusted roots, and its
//! host name; with `tls.verify = false` the connection is encrypted without those checks. URLs
//! without `sslmode`, or with `disable` or `prefer`, connect without TLS.
//!
//! TLS on shardgate's own listeners is [`serving`]'s.

pub mod serving;

use crate::config::TlsConfig;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, verify_tls12_signature, verify_tls13_signature};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use std::sync::Arc;
use tokio_postgres_rustls::MakeRustlsConnect;

/// Why TLS to the shards cannot be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// `tls.ca_file` is unreadable or holds no certificate.
    #[error("tls.ca_file {path}: {reason}")]
    CaFile {
        /// The file.
        path: String,
        /// What is wrong with it.
        reason: String,
    },
    /// No `tls.ca_file` and the system has no trusted roots.
    #[error("the system has no trusted root certificates ({0}); set tls.ca_file")]
    NoSystemRoots(String),
    /// rustls refused the settings.
    #[error("TLS settings: {0}")]
    Settings(#[from] rustls::Error),
}

/// Makes ring the process's default TLS crypto provider, once: the HTTP client (reqwest)
/// builds its TLS settings from the default provider. Call it before building one.
pub fn install_default_provider() {
    static INSTALLED: std::sync::Once = std::sync::Once::new();
    INSTALLED.call_once(|| {
        // Another provider installed first is as good; nothing to do then.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

/// The connector for shards whose URL requires TLS.
pub fn connector(config: &TlsConfig) -> Result<MakeRustlsConnect, TlsError> {
    Ok(MakeRustlsConnect::new(client_config(config)?))
}

/// A client's TLS settings that check servers as `config` says: against `ca_file` or the
/// system's roots, or (without `verify`) not at all.
pub fn client_config(config: &TlsConfig) -> Result<ClientConfig, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder =
        ClientConfig::builder_with_provider(provider.clone()).with_safe_default_protocol_versions()?;
    let client = if config.verify {
        builder
            .with_root_certificates(trusted_roots(config)?)
            .with_no_client_auth()
    } else {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(EncryptOnly(provider)))
            .with_no_client_auth()
    };
    Ok(client)
}

fn trusted_roots(config: &TlsConfig) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    match &config.ca_file {
        Some(path) => {
            let ca_error = |reason: String| TlsError::CaFile {
                path: path.display().to_string(),
                reason,
            };
            let certificates = CertificateDer::pem_file_iter(path)
                .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
                .map_err(|e| ca_error(e.to_string()))?;
            if certificates.is_empty() {
                return Err(ca_error("no PEM certificate in it".into()));
            }
            for certificate in certificates {
                roots.add(certificate).map_err(|e| ca_error(e.to_string()))?;
            }
        }
        None => {
            let system = rustls_native_certs::load_native_certs();
            roots.add_parsable_certificates(system.certs);
            if roots.is_empty() {
                let errors: Vec<String> = system.errors.iter().map(|e| e.to_string()).collect();
                return Err(TlsError::NoSystemRoots(errors.join("; ")));
            }
        }
    }
    Ok(roots)
}

/// Accepts any certificate (`tls.verify = false`): the handshake signatures are still checked,
/// so the session is encrypted with whoever holds the certificate's key.
#[derive(Debug)]
struct EncryptOnly(Arc<CryptoProvider>);

impl ServerCertVerifier for EncryptOnly {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
