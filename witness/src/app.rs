//! The state every handler shares ([`App`]), and what a connection tells its requests about
//! the client ([`Peer`]). The server builds these and hands them to the routers; the handlers
//! (`api`, `status`) only read them, so neither depends on the server's wiring.
use crate::audit::AuditLog;
use crate::clusters::ClusterTable;
use crate::config::Config;
use crate::metrics::Metrics;
use crate::proof::ProofSigner;
use crate::ratelimit::RateLimiter;
use crate::tls::TlsReloader;
use proto::ids::Identity;
use std::net::SocketAddr;
use std::sync::Arc;

/// Everything the handlers share.
pub struct App {
    pub config: Arc<Config>,
    pub table: ClusterTable,
    pub metrics: Arc<Metrics>,
    pub proof: ProofSigner,
    pub limiter: RateLimiter,
    pub audit: Arc<AuditLog>,
    pub tls: TlsReloader,
    /// The store was empty or wiped at start.
    pub lost_state: bool,
    pub started: tokio::time::Instant,
    pub started_at: String,
    pub lease_addr: SocketAddr,
    pub status_addr: SocketAddr,
    /// One warning line per interval for refused, failed or timed-out connections (a flood
    /// must not become a flood of log lines).
    pub conn_log: identity::LogLimiter,
    /// Requests on the lease port being answered now (`server::http1::MAX_ANSWERING`).
    pub answering: tokio::sync::Semaphore,
}

/// Who is on the other end of a connection, as its certificate says.
#[derive(Clone, Debug)]
pub enum PeerIdentity {
    /// Plain HTTP, or TLS without a client certificate.
    None,
    /// A certificate from the CA whose identity could not be read.
    Invalid(String),
    /// Shared: the peer is attached to every request of the connection, and cloning three
    /// strings per request showed in the renewal profile.
    Valid(Arc<ValidIdentity>),
}

/// A certificate's identity, with its URI written once per connection (the rate limiter and
/// the log lines name it on every request).
#[derive(Debug)]
pub struct ValidIdentity {
    pub identity: Identity,
    pub uri: String,
}

impl ValidIdentity {
    pub fn new(identity: Identity) -> ValidIdentity {
        let uri = identity.to_uri();
        ValidIdentity { identity, uri }
    }
}

/// Per-connection facts, attached to every request of the connection.
#[derive(Clone, Debug)]
pub struct Peer {
    pub addr: SocketAddr,
    pub identity: PeerIdentity,
}
