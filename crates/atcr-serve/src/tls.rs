//! Serving over TLS (rustls): the certificate is re-read when its files
//! change, without dropping connections; client certificates are verified
//! against a configured CA when asked (mTLS, e.g. Gatekeeper's).
//!
//! The handshake runs in [`crate::serve`]'s accept loop (`tokio-rustls`).

use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

/// TLS settings.
#[derive(Debug, Clone)]
pub struct TlsSettings {
    /// PEM certificate chain.
    pub cert: PathBuf,
    /// PEM private key.
    pub key: PathBuf,
    /// Verify client certificates against this PEM CA bundle (mTLS).
    pub client_ca: Option<PathBuf>,
    /// TLS 1.3 only (Gatekeeper requires it; the API server speaks it too).
    pub tls13_only: bool,
}

/// Why TLS could not be set up.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct TlsError(pub String);

fn load_key(cert: &Path, key: &Path) -> Result<CertifiedKey, TlsError> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| TlsError(format!("{}: {e}", cert.display())))?
        .collect::<Result<_, _>>()
        .map_err(|e| TlsError(format!("{}: {e}", cert.display())))?;
    if chain.is_empty() {
        return Err(TlsError(format!("{}: no certificate", cert.display())));
    }
    let key = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| TlsError(format!("{}: {e}", key.display())))?;
    let provider = rustls::crypto::ring::default_provider();
    CertifiedKey::from_der(chain, key, &provider)
        .map_err(|e| TlsError(format!("certificate and key: {e}")))
}

fn mtime(p: &Path) -> Option<SystemTime> {
    std::fs::metadata(p).and_then(|m| m.modified()).ok()
}

/// The current certificate, swapped when the files change.
#[derive(Debug)]
struct Reloading {
    current: RwLock<Arc<CertifiedKey>>,
}

impl ResolvesServerCert for Reloading {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(
            self.current
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
        )
    }
}

/// A TLS acceptor whose certificate follows its files.
#[derive(Clone)]
pub struct Acceptor {
    pub(crate) acceptor: tokio_rustls::TlsAcceptor,
}

impl Acceptor {
    /// Loads the certificate (an error here stops start-up) and starts
    /// watching its files: a change is loaded within `poll`; a bad new
    /// certificate keeps the old one (logged).
    pub fn new(s: &TlsSettings, poll: Duration) -> Result<Self, TlsError> {
        let key = load_key(&s.cert, &s.key)?;
        let reloading = Arc::new(Reloading {
            current: RwLock::new(Arc::new(key)),
        });
        let versions: &[&rustls::SupportedProtocolVersion] = if s.tls13_only {
            &[&rustls::version::TLS13]
        } else {
            rustls::DEFAULT_VERSIONS
        };
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(versions)
            .map_err(|e| TlsError(e.to_string()))?;
        let builder = match &s.client_ca {
            None => builder.with_no_client_auth(),
            Some(ca) => {
                let mut roots = rustls::RootCertStore::empty();
                for c in CertificateDer::pem_file_iter(ca)
                    .map_err(|e| TlsError(format!("{}: {e}", ca.display())))?
                {
                    let c = c.map_err(|e| TlsError(format!("{}: {e}", ca.display())))?;
                    roots
                        .add(c)
                        .map_err(|e| TlsError(format!("{}: {e}", ca.display())))?;
                }
                let verifier =
                    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                        .build()
                        .map_err(|e| TlsError(format!("client CA: {e}")))?;
                builder.with_client_cert_verifier(verifier)
            }
        };
        let mut cfg = builder.with_cert_resolver(reloading.clone());
        cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
        let (cert, keyf) = (s.cert.clone(), s.key.clone());
        let weak = Arc::downgrade(&reloading);
        tokio::spawn(async move {
            let mut seen = (mtime(&cert), mtime(&keyf));
            loop {
                tokio::time::sleep(poll).await;
                let Some(r) = weak.upgrade() else { return };
                let now = (mtime(&cert), mtime(&keyf));
                if now == seen {
                    continue;
                }
                match load_key(&cert, &keyf) {
                    Ok(k) => {
                        *r.current.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(k);
                        tracing::info!(cert = %cert.display(), "TLS certificate reloaded");
                        seen = now;
                    }
                    // Files mid-write are retried at the next poll.
                    Err(e) => {
                        tracing::warn!("TLS certificate not reloaded, keeping the old one: {e}")
                    }
                }
            }
        });
        Ok(Self {
            acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(cfg)),
        })
    }
}
