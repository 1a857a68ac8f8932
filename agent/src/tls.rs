//! Mutual TLS: loading the node's certificate, key and CA, building the rustls configurations
//! (TLS 1.3 only, ring), reading identities from certificates, and reloading the files without
//! a restart.
//!
//! Identity is the certificate's SAN URI `witness://<cluster>/<room>/<node>`
//! ([`proto::ids::Identity`]), read by the rule the witness uses too ([`identity::cert`]).
//! Peers are addressed by IP, so a peer's server certificate is not
//! checked against the address but against the identity we expect there: the chain must lead to
//! our CA and the URI must name that peer, in our cluster, in the other room.
//!
//! Reloading: a task polls the three files' size and mtime every [`RELOAD_POLL`] and publishes a
//! new [`TlsState`] on a `watch` channel; listeners and clients take the newest state for every
//! new connection, so established connections are left alone. A file that does not parse keeps
//! the previous state in use (and says so in the log and the status).
use crate::config::TlsConfig;
pub use identity::{cert_identity, cert_not_after};
use proto::ids::Identity;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::{CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, ServerConfig};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::sync::watch;

/// How often the certificate files are checked for changes.
pub const RELOAD_POLL: Duration = Duration::from_secs(2);

/// Why TLS material could not be used.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct TlsError {
    /// The configuration field naming the file at fault (`tls.cert`, ...).
    pub field: String,
    pub reason: String,
}

fn terr(field: &str, reason: impl Into<String>) -> TlsError {
    TlsError {
        field: field.into(),
        reason: reason.into(),
    }
}

/// The ring crypto provider every configuration here uses.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Everything built from one reading of the certificate files.
#[derive(Clone)]
pub struct TlsState {
    pub roots: Arc<RootCertStore>,
    pub chain: Vec<CertificateDer<'static>>,
    pub key: Arc<PrivateKeyDer<'static>>,
    /// Who our own certificate says we are.
    pub identity: Identity,
    /// Our certificate's `notAfter`, seconds since the Unix epoch.
    pub not_after: i64,
    /// The heartbeat server's configuration (client certificate required).
    pub server: Arc<ServerConfig>,
}

impl std::fmt::Debug for TlsState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsState")
            .field("identity", &self.identity)
            .field("not_after", &self.not_after)
            .finish_non_exhaustive()
    }
}

fn read(field: &str, path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|e| terr(field, format!("cannot read {}: {e}", path.display())))
}

fn parse_certs(field: &str, path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read(field, path)?;
    let certs = rustls_pemfile::certs(&mut pem.as_slice())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| terr(field, format!("{} is not PEM: {e}", path.display())))?;
    if certs.is_empty() {
        return Err(terr(
            field,
            format!("{} holds no CERTIFICATE block", path.display()),
        ));
    }
    Ok(certs)
}

impl TlsState {
    /// Loads and checks the files named in the configuration.
    pub fn load(cfg: &TlsConfig) -> Result<TlsState, TlsError> {
        let ca = parse_certs("tls.ca", &cfg.ca)?;
        let mut roots = RootCertStore::empty();
        for c in ca {
            roots
                .add(c)
                .map_err(|e| terr("tls.ca", format!("{}: {e}", cfg.ca.display())))?;
        }
        let roots = Arc::new(roots);
        let chain = parse_certs("tls.cert", &cfg.cert)?;
        let key_pem = read("tls.key", &cfg.key)?;
        let key = rustls_pemfile::private_key(&mut key_pem.as_slice())
            .map_err(|e| terr("tls.key", format!("{}: {e}", cfg.key.display())))?
            .ok_or_else(|| {
                terr(
                    "tls.key",
                    format!("{} holds no PRIVATE KEY block", cfg.key.display()),
                )
            })?;
        let identity = cert_identity(&chain[0]).map_err(|r| terr("tls.cert", r.to_string()))?;
        let not_after = cert_not_after(&chain[0]).map_err(|r| terr("tls.cert", r.to_string()))?;
        let client_verifier =
            WebPkiClientVerifier::builder_with_provider(roots.clone(), provider())
                .build()
                .map_err(|e| terr("tls.ca", e.to_string()))?;
        let mut server = ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| terr("tls", e.to_string()))?
            .with_client_cert_verifier(client_verifier)
            .with_single_cert(chain.clone(), key.clone_key())
            .map_err(|e| terr("tls.key", format!("does not match tls.cert: {e}")))?;
        server.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(TlsState {
            roots,
            chain,
            key: Arc::new(key),
            identity,
            not_after,
            server: Arc::new(server),
        })
    }

    /// Seconds until our certificate expires (negative once it has).
    pub fn expiry_seconds(&self) -> i64 {
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        self.not_after - now
    }

    /// The client configuration for the witness: normal server-name verification against our CA.
    pub fn witness_client(&self) -> Result<ClientConfig, TlsError> {
        ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| terr("tls", e.to_string()))?
            .with_root_certificates(self.roots.clone())
            .with_client_auth_cert(self.chain.clone(), self.key.clone_key())
            .map_err(|e| terr("tls.key", e.to_string()))
    }

    /// The client configuration for one peer: the server certificate must chain to our CA and
    /// carry the identity `witness://<cluster>/<other room>/<node>`.
    pub fn peer_client(&self, expect: PeerExpectation) -> Result<ClientConfig, TlsError> {
        let inner = rustls::client::WebPkiServerVerifier::builder_with_provider(
            self.roots.clone(),
            provider(),
        )
        .build()
        .map_err(|e| terr("tls.ca", e.to_string()))?;
        let verifier = Arc::new(PeerVerifier { inner, expect });
        ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| terr("tls", e.to_string()))?
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_client_auth_cert(self.chain.clone(), self.key.clone_key())
            .map_err(|e| terr("tls.key", e.to_string()))
    }
}

/// The identity a peer's certificate must carry.
#[derive(Clone, Debug)]
pub struct PeerExpectation {
    pub cluster: String,
    /// Our room: the peer must be in another one.
    pub own_room: String,
    pub node: String,
}

impl PeerExpectation {
    /// Checks a certificate identity against the expectation.
    pub fn check(&self, id: &Identity) -> Result<(), String> {
        match id {
            Identity::Node {
                cluster,
                room,
                node,
            } if cluster.as_str() == self.cluster
                && room.as_str() != self.own_room
                && node.as_str() == self.node =>
            {
                Ok(())
            }
            other => Err(format!(
                "peer {} presented the certificate of {}, expected witness://{}/<other room>/{}",
                self.node,
                other.to_uri(),
                self.cluster,
                self.node
            )),
        }
    }
}

/// Verifies a peer's server certificate by chain and identity, not by address.
#[derive(Debug)]
struct PeerVerifier {
    inner: Arc<rustls::client::WebPkiServerVerifier>,
    expect: PeerExpectation,
}

impl ServerCertVerifier for PeerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self.inner.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        ) {
            Ok(_) => {}
            // The chain is valid; only the address is not in the certificate. Peers are
            // identified by their SAN URI, checked next.
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => {}
            Err(e) => return Err(e),
        }
        let id = cert_identity(end_entity).map_err(|e| rustls::Error::General(e.to_string()))?;
        self.expect.check(&id).map_err(rustls::Error::General)?;
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// A fingerprint of the files' metadata: a change triggers a reload.
fn stamp(cfg: &TlsConfig) -> Vec<Option<(u64, SystemTime)>> {
    [&cfg.ca, &cfg.cert, &cfg.key]
        .iter()
        .map(|p| {
            std::fs::metadata(p)
                .ok()
                .map(|m| (m.len(), m.modified().unwrap_or(SystemTime::UNIX_EPOCH)))
        })
        .collect()
}

/// Watches the certificate files and publishes every good new reading on `tx`. `check`
/// refuses material whose identity is not this node's (a reload must not change who we are).
pub async fn reload_task(
    cfg: TlsConfig,
    tx: watch::Sender<Arc<TlsState>>,
    errors: watch::Sender<Option<String>>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut last = stamp(&cfg);
    let mut tick = tokio::time::interval(RELOAD_POLL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.changed() => return,
            _ = tick.tick() => {}
        }
        let now = stamp(&cfg);
        if now == last {
            continue;
        }
        last = now;
        let cfg2 = cfg.clone();
        let loaded = tokio::task::spawn_blocking(move || TlsState::load(&cfg2)).await;
        let current = tx.borrow().identity.clone();
        match loaded {
            Ok(Ok(state)) if state.identity == current => {
                tracing::info!(
                    expires_in_s = state.expiry_seconds(),
                    "certificates reloaded; new connections use them"
                );
                let _ = errors.send(None);
                let _ = tx.send(Arc::new(state));
            }
            Ok(Ok(state)) => {
                let msg = format!(
                    "reloaded certificate names {} but this agent is {}: keeping the old one",
                    state.identity.to_uri(),
                    current.to_uri()
                );
                tracing::error!("{msg}");
                let _ = errors.send(Some(msg));
            }
            Ok(Err(e)) => {
                let msg = format!("certificate reload failed, keeping the old one: {e}");
                tracing::error!("{msg}");
                let _ = errors.send(Some(msg));
            }
            Err(e) => tracing::error!("certificate reload task failed: {e}"),
        }
    }
}
