//! Starting and stopping the witness: [`prepare`] readies the data directory (certificates in
//! demo mode, the store, the proof key), [`serve`] runs the lease port (mutual TLS), the status
//! port (plain HTTP) and the background tasks until `shutdown` resolves, and [`run`] does both.
//! [`start`] binds the configured addresses (port 0 for tests) and runs in the background.
//!
//! The connections themselves (budgets, timeouts, identity from the certificate) are in
//! [`conn`]; the periodic tasks in [`tasks`].
//!
//! Shutdown: stop accepting, let in-flight requests finish (each connection is told to close
//! after its current request), wait for every connection (bounded), then flush the store.
use crate::app::App;
use crate::audit::AuditLog;
use crate::certs::{self, CertError};
use crate::clusters::{Clock, ClusterTable};
use crate::config::{Config, ConfigError};
use crate::metrics::Metrics;
use crate::proof::{ProofError, ProofSigner};
use crate::ratelimit::RateLimiter;
use crate::store::{Store, StoreError, StoreOrigin};
use crate::tls::{self, TlsError, TlsFiles, TlsReloader};
use conn::{accept_loop, Budget, Evicting, Kind};
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tasks::{memory_returner, reloader, ticker};
use thiserror::Error;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch, Semaphore};

mod conn;
pub mod http1;
mod lean_tls;
mod tasks;

#[derive(Debug, Error)]
pub enum ServerError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("certificates: {0}")]
    Certs(#[from] CertError),
    #[error("TLS: {0}")]
    Tls(#[from] TlsError),
    #[error("store: {0}")]
    Store(#[from] StoreError),
    #[error("proofs: {0}")]
    Proof(#[from] ProofError),
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
}

/// Connections the status port keeps at once. Beyond, the connection idle the longest is
/// closed to make room, so monitoring stays answerable under a flood of idle connections.
pub const STATUS_MAX_CONNECTIONS: usize = 256;

/// A prepared witness, not yet serving.
pub struct Prepared {
    config: Arc<Config>,
    store: Store,
    origin: StoreOrigin,
    proof: ProofSigner,
    tls: TlsReloader,
    metrics: Arc<Metrics>,
    /// Certificate files created by the demo bootstrap (empty when all existed).
    pub created_certs: Vec<PathBuf>,
}

impl Prepared {
    pub fn config(&self) -> &Config {
        &self.config
    }
    pub fn store_origin(&self) -> StoreOrigin {
        self.origin
    }
}

/// The data directory's layout.
pub fn store_path(config: &Config) -> PathBuf {
    config.data_dir.join("state.sled")
}
pub fn proof_key_path(config: &Config) -> PathBuf {
    config.data_dir.join("proof-key.pem")
}
pub fn audit_path(config: &Config) -> PathBuf {
    config.data_dir.join("audit.jsonl")
}

/// Readies the data directory: certificates (generated in demo mode when missing), the TLS
/// configuration, the store and the proof signing key.
pub async fn prepare(config: Config) -> Result<Prepared, ServerError> {
    let io = |what: String| move |source| ServerError::Io { what, source };
    std::fs::create_dir_all(&config.data_dir).map_err(io(format!(
        "cannot create the data directory {}",
        config.data_dir.display()
    )))?;
    let mut created = Vec::new();
    if config.tls.generate_missing {
        if let Some(dir) = config.tls.ca.parent() {
            let b = certs::bootstrap_demo(dir, &config.tls.server_names)?;
            created = b.created;
        }
    }
    let metrics = Arc::new(Metrics::new());
    let files = TlsFiles {
        ca: config.tls.ca.clone(),
        cert: config.tls.cert.clone(),
        key: config.tls.key.clone(),
    };
    let loaded = tls::load(&files)?;
    let tls = TlsReloader::new(files, loaded, metrics.clone());
    let (store, origin) = Store::open(&store_path(&config)).await?;
    let proof = ProofSigner::load_or_create(&proof_key_path(&config))?;
    Ok(Prepared {
        config: Arc::new(config),
        store,
        origin,
        proof,
        tls,
        metrics,
        created_certs: created,
    })
}

/// The two listening sockets.
pub struct Listeners {
    /// The lease API (mutual TLS).
    pub lease: TcpListener,
    /// The status page, metrics and probes (plain HTTP).
    pub status: TcpListener,
}

impl Listeners {
    /// Binds the configured addresses (port 0 picks a free port).
    pub async fn bind(config: &Config) -> Result<Listeners, ServerError> {
        let lease = TcpListener::bind(config.listen)
            .await
            .map_err(|source| ServerError::Io {
                what: format!(
                    "cannot listen on {} (listen); is another witness running there?",
                    config.listen
                ),
                source,
            })?;
        let status = TcpListener::bind(config.status_listen)
            .await
            .map_err(|source| ServerError::Io {
                what: format!(
                    "cannot listen on {} (status_listen); is another witness running there?",
                    config.status_listen
                ),
                source,
            })?;
        Ok(Listeners { lease, status })
    }
}

/// Prepares and serves until `shutdown` resolves.
pub async fn run(
    listeners: Listeners,
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    let p = prepare(config).await?;
    serve(p, listeners, shutdown).await
}

/// A witness running in the background (tests, benches).
pub struct RunningServer {
    pub lease_addr: SocketAddr,
    pub status_addr: SocketAddr,
    pub data_dir: PathBuf,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<Result<(), ServerError>>,
}

impl RunningServer {
    /// `https://127.0.0.1:<port>` of the lease API.
    pub fn lease_url(&self) -> String {
        format!("https://{}", self.lease_addr)
    }
    /// `http://127.0.0.1:<port>` of the status port.
    pub fn status_url(&self) -> String {
        format!("http://{}", self.status_addr)
    }
    /// Stops gracefully and waits until the store is flushed.
    pub async fn stop(mut self) -> Result<(), ServerError> {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        match (&mut self.task).await {
            Ok(r) => r,
            Err(e) => Err(ServerError::Io {
                what: "the server task failed".into(),
                source: std::io::Error::other(e.to_string()),
            }),
        }
    }
}

/// Prepares, binds `config.listen` / `config.status_listen` and serves in the background.
pub async fn start(config: Config) -> Result<RunningServer, ServerError> {
    let listeners = Listeners::bind(&config).await?;
    let lease_addr = local(&listeners.lease)?;
    let status_addr = local(&listeners.status)?;
    let data_dir = config.data_dir.clone();
    let p = prepare(config).await?;
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(serve(p, listeners, async move {
        let _ = rx.await;
    }));
    Ok(RunningServer {
        lease_addr,
        status_addr,
        data_dir,
        stop: Some(tx),
        task,
    })
}

fn local(l: &TcpListener) -> Result<SocketAddr, ServerError> {
    l.local_addr().map_err(|source| ServerError::Io {
        what: "cannot read the listening address".into(),
        source,
    })
}

/// Serves until `shutdown` resolves, then stops gracefully and flushes the store.
pub async fn serve(
    p: Prepared,
    listeners: Listeners,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    let config = p.config.clone();
    let clock = Clock::start();
    let lost_state = p.origin == StoreOrigin::LostState;
    let table = ClusterTable::new(
        p.store.clone(),
        lost_state,
        config.clone(),
        clock,
        p.metrics.clone(),
    );
    let lease_addr = local(&listeners.lease)?;
    let status_addr = local(&listeners.status)?;
    let now = time::OffsetDateTime::now_utc();
    let app = Arc::new(App {
        table,
        metrics: p.metrics.clone(),
        proof: p.proof,
        limiter: RateLimiter::new(config.limits.requests_per_second_per_identity),
        audit: AuditLog::new(p.store.clone(), audit_path(&config)),
        tls: p.tls,
        lost_state,
        started: tokio::time::Instant::now(),
        started_at: now
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default(),
        lease_addr,
        status_addr,
        config: config.clone(),
        conn_log: identity::LogLimiter::new(Duration::from_secs(10)),
        answering: tokio::sync::Semaphore::new(http1::MAX_ANSWERING),
    });
    if lost_state {
        tracing::warn!(
            wait_ms = config.max_forgotten_state_wait_ms(),
            store = %p.store.path().display(),
            "the store was empty (first install or lost state): clusters grant nothing until every lease this witness may have forgotten has run out"
        );
    }
    let (stop_tx, stop_rx) = watch::channel(false);
    // Every connection task holds a clone; when all are dropped, every connection is done.
    let (done_tx, mut done_rx) = mpsc::channel::<()>(1);

    let lease_router = crate::api::router(app.clone());
    let status_router = crate::status::router(app.clone());
    let sem = Arc::new(Semaphore::new(config.limits.max_connections));
    let mut tasks = Vec::new();
    tasks.push(tokio::spawn(accept_loop(
        Kind::Tls(app.tls.subscribe()),
        listeners.lease,
        lease_router,
        app.clone(),
        Budget::Fixed(sem),
        stop_rx.clone(),
        done_tx.clone(),
    )));
    // The status port gets its own, smaller connection budget, so a scrape storm cannot take
    // lease connections (and the other way round); it evicts idle connections when full.
    tasks.push(tokio::spawn(accept_loop(
        Kind::Plain,
        listeners.status,
        status_router,
        app.clone(),
        Budget::Evicting(Arc::new(Evicting::new(STATUS_MAX_CONNECTIONS))),
        stop_rx.clone(),
        done_tx.clone(),
    )));
    drop(done_tx);
    tasks.push(tokio::spawn(ticker(app.clone(), stop_rx.clone())));
    tasks.push(tokio::spawn(reloader(app.clone(), stop_rx.clone())));
    tasks.push(tokio::spawn(memory_returner(stop_rx.clone())));
    tasks.push(tokio::spawn(crate::status::lost_state_countdown(
        app.clone(),
        stop_rx.clone(),
    )));
    tracing::info!(
        lease = %lease_addr,
        status = %status_addr,
        data_dir = %config.data_dir.display(),
        "witness serving"
    );

    shutdown.await;
    tracing::info!("shutting down: no new connections; finishing requests in flight");
    let _ = stop_tx.send(true);
    for t in tasks {
        let _ = t.await;
    }
    // Bounded wait for connections: a client that never reads must not block shutdown forever.
    if tokio::time::timeout(Duration::from_secs(10), done_rx.recv())
        .await
        .is_err()
    {
        tracing::warn!("some connections did not finish within 10 s; closing anyway");
    }
    app.metrics.up.set(0);
    app.table.store().flush_all().await?;
    tracing::info!("store flushed; witness stopped");
    Ok(())
}
