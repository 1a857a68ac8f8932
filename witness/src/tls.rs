//! The lease port's TLS: a rustls server config (TLS 1.3 only, ring provider) that asks every
//! client for a certificate signed by the witness CA, the reading of a client's identity from
//! its certificate's SAN URI (the rule shared with the agent, in the `identity` crate), and the watcher that reloads the CA and server certificate from
//! disk without a restart.
//!
//! Client authentication is *offered*, not required, at the handshake: a client with no
//! certificate completes the handshake and is then refused with a clear JSON error. A client
//! that presents a bad certificate (another CA, expired) fails the handshake itself.
use crate::metrics::Metrics;
use proto::ids::Identity;
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;
use thiserror::Error;
use tokio::sync::watch;

#[derive(Debug, Error)]
pub enum TlsError {
    #[error("cannot read {path}: {source}; check tls.{field} in the configuration")]
    Read {
        field: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} (tls.{field}) holds no usable {what}; it must be PEM")]
    Empty {
        field: &'static str,
        path: PathBuf,
        what: &'static str,
    },
    #[error("{path} (tls.{field}): {reason}")]
    Invalid {
        field: &'static str,
        path: PathBuf,
        reason: String,
    },
    #[error(
        "the TLS configuration is refused by rustls: {0}; check that tls.key belongs to tls.cert"
    )]
    Rustls(#[from] rustls::Error),
}

/// The files behind the current TLS configuration.
#[derive(Clone, Debug)]
pub struct TlsFiles {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// A built server configuration with what the status page and metrics show about it.
#[derive(Clone)]
pub struct LoadedTls {
    pub config: Arc<ServerConfig>,
    /// Seconds since the Unix epoch when the server certificate expires.
    pub server_not_after: i64,
    /// Seconds since the Unix epoch when the (first) CA certificate expires.
    pub ca_not_after: i64,
    /// The file modification times this was built from (to notice changes).
    stamp: Vec<Option<SystemTime>>,
}

fn read(field: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        field,
        path: path.to_path_buf(),
        source,
    })
}

fn certs(field: &'static str, path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read(field, path)?;
    let certs: Vec<_> = rustls_pemfile::certs(&mut pem.as_slice())
        .collect::<Result<_, _>>()
        .map_err(|e| TlsError::Invalid {
            field,
            path: path.to_path_buf(),
            reason: format!("not valid PEM: {e}"),
        })?;
    if certs.is_empty() {
        return Err(TlsError::Empty {
            field,
            path: path.to_path_buf(),
            what: "certificate",
        });
    }
    Ok(certs)
}

fn not_after(field: &'static str, path: &Path, der: &CertificateDer<'_>) -> Result<i64, TlsError> {
    identity::cert_not_after(der).map_err(|e| TlsError::Invalid {
        field,
        path: path.to_path_buf(),
        reason: e.to_string(),
    })
}

fn mtimes(files: &TlsFiles) -> Vec<Option<SystemTime>> {
    [&files.ca, &files.cert, &files.key]
        .iter()
        .map(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok())
        .collect()
}

/// The crypto provider used everywhere in the witness (ring).
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Builds the lease port's server configuration from the files.
pub fn load(files: &TlsFiles) -> Result<LoadedTls, TlsError> {
    let stamp = mtimes(files);
    let ca_certs = certs("ca", &files.ca)?;
    let mut roots = RootCertStore::empty();
    for c in &ca_certs {
        roots.add(c.clone()).map_err(|e| TlsError::Invalid {
            field: "ca",
            path: files.ca.clone(),
            reason: format!("not a usable CA certificate: {e}"),
        })?;
    }
    let chain = certs("cert", &files.cert)?;
    let key_pem = read("key", &files.key)?;
    let key: PrivateKeyDer<'static> = rustls_pemfile::private_key(&mut key_pem.as_slice())
        .map_err(|e| TlsError::Invalid {
            field: "key",
            path: files.key.clone(),
            reason: format!("not valid PEM: {e}"),
        })?
        .ok_or_else(|| TlsError::Empty {
            field: "key",
            path: files.key.clone(),
            what: "private key",
        })?;
    let provider = provider();
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .allow_unauthenticated()
        .build()
        .map_err(|e| TlsError::Invalid {
            field: "ca",
            path: files.ca.clone(),
            reason: format!("cannot verify clients with it: {e}"),
        })?;
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain.clone(), key)?;
    // HTTP/1.0 too: the lease port answers it, and a client that offers only `http/1.0`
    // (`curl --http1.0`) would otherwise be refused in the handshake.
    config.alpn_protocols = vec![b"http/1.1".to_vec(), b"http/1.0".to_vec()];
    let server_not_after = not_after("cert", &files.cert, &chain[0])?;
    let ca_not_after = not_after("ca", &files.ca, &ca_certs[0])?;
    Ok(LoadedTls {
        config: Arc::new(config),
        server_not_after,
        ca_not_after,
        stamp,
    })
}

pub use identity::identities_in_pem;

/// The witness identity of a verified client certificate (the rule shared with the agent:
/// exactly one witness SAN URI), or why it has none, phrased for the client.
pub fn identity_of(der: &CertificateDer<'_>) -> Result<Identity, String> {
    identity::cert_identity(der).map_err(|e| format!("client certificate refused: {e}"))
}

/// Keeps the current TLS configuration and swaps it when the files change (or on demand).
pub struct TlsReloader {
    files: TlsFiles,
    tx: watch::Sender<Arc<LoadedTls>>,
    metrics: Arc<Metrics>,
}

impl TlsReloader {
    pub fn new(files: TlsFiles, first: LoadedTls, metrics: Arc<Metrics>) -> TlsReloader {
        metrics.set_cert_expiry(first.server_not_after, first.ca_not_after);
        let (tx, _) = watch::channel(Arc::new(first));
        TlsReloader { files, tx, metrics }
    }

    /// A receiver the accept loop reads the current configuration from, per connection.
    pub fn subscribe(&self) -> watch::Receiver<Arc<LoadedTls>> {
        self.tx.subscribe()
    }

    /// The configuration in use now.
    pub fn current(&self) -> Arc<LoadedTls> {
        self.tx.borrow().clone()
    }

    /// Reloads if any file changed since the configuration in use was built (or always, when
    /// `force`). A file that does not load keeps the old configuration; the error is logged and
    /// counted, and the same files are not retried until they change again.
    pub fn check(&self, force: bool) -> Result<bool, TlsError> {
        let now_stamp = mtimes(&self.files);
        let cur = self.current();
        if !force && now_stamp == cur.stamp {
            return Ok(false);
        }
        match load(&self.files) {
            Ok(new) => {
                self.metrics
                    .set_cert_expiry(new.server_not_after, new.ca_not_after);
                self.metrics.tls_reloads.with_label_values(&["ok"]).inc();
                tracing::info!(
                    ca = %self.files.ca.display(),
                    cert = %self.files.cert.display(),
                    "TLS configuration reloaded; new connections use the new certificates"
                );
                self.tx.send_replace(Arc::new(new));
                Ok(true)
            }
            Err(e) => {
                self.metrics.tls_reloads.with_label_values(&["error"]).inc();
                tracing::error!(error = %e, "TLS reload failed; keeping the configuration in use");
                // Remember the stamp so the same broken files are not retried every interval.
                let mut kept = (*cur).clone();
                kept.stamp = now_stamp;
                self.tx.send_replace(Arc::new(kept));
                Err(e)
            }
        }
    }
}
