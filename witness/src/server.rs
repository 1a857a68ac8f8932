//! Starting and stopping the witness: [`prepare`] readies the data directory (certificates in
//! demo mode, the store, the proof key), [`serve`] runs the lease port (mutual TLS), the status
//! port (plain HTTP) and the background tasks until `shutdown` resolves, and [`run`] does both.
//! [`start`] binds the configured addresses (port 0 for tests) and runs in the background.
//!
//! Shutdown: stop accepting, let in-flight requests finish (each connection is told to close
//! after its current request), wait for every connection (bounded), then flush the store.
use crate::api::{Peer, PeerIdentity};
use crate::audit::AuditLog;
use crate::certs::{self, CertError};
use crate::clusters::{Clock, ClusterTable};
use crate::config::{Config, ConfigError};
use crate::metrics::Metrics;
use crate::proof::{ProofError, ProofSigner};
use crate::ratelimit::RateLimiter;
use crate::shortlock::{lock, ShortLock};
use crate::store::{Store, StoreError, StoreOrigin};
use crate::tls::{self, TlsError, TlsFiles, TlsReloader};
use hyper_util::rt::{TokioIo, TokioTimer};
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use thiserror::Error;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch, Semaphore};
use tower::ServiceExt;

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

enum Kind {
    Tls(watch::Receiver<Arc<tls::LoadedTls>>),
    Plain,
}

/// How many connections a port keeps.
enum Budget {
    /// At most this many; more are refused (the lease port: agents keep theirs open).
    Fixed(Arc<Semaphore>),
    /// At most this many; when full, the connection without a request in flight that has
    /// been quiet longest is closed to make room (the status port).
    Evicting(Arc<Evicting>),
}

/// One connection of an evicting budget.
struct Member {
    act: Arc<Activity>,
    evict: Arc<tokio::sync::Notify>,
}

/// The status port's connections, for eviction.
pub struct Evicting {
    cap: usize,
    members: ShortLock<(u64, std::collections::HashMap<u64, Member>)>,
}

/// Holds a place in an evicting budget; gives it back when the connection ends.
struct Place {
    budget: Arc<Evicting>,
    id: u64,
}

impl Drop for Place {
    fn drop(&mut self) {
        let mut m = lock(&self.budget.members);
        m.1.remove(&self.id);
    }
}

impl Evicting {
    fn new(cap: usize) -> Evicting {
        Evicting {
            cap,
            members: ShortLock::new((0, std::collections::HashMap::new())),
        }
    }

    /// A place for a new connection, evicting the quietest one without a request in flight
    /// when full; `None` when every connection is answering a request. Returns whether one
    /// was evicted.
    fn admit(
        self: &Arc<Self>,
        act: Arc<Activity>,
        evict: Arc<tokio::sync::Notify>,
    ) -> Option<(Place, bool)> {
        let mut m = lock(&self.members);
        let mut evicted = false;
        if m.1.len() >= self.cap {
            let victim =
                m.1.iter()
                    .filter(|(_, v)| v.act.inflight.load(Ordering::SeqCst) == 0)
                    .min_by_key(|(_, v)| v.act.quiet_since())
                    .map(|(k, _)| *k)?;
            if let Some(v) = m.1.remove(&victim) {
                v.evict.notify_one();
                evicted = true;
            }
        }
        m.0 += 1;
        let id = m.0;
        m.1.insert(id, Member { act, evict });
        Some((
            Place {
                budget: self.clone(),
                id,
            },
            evicted,
        ))
    }
}

async fn accept_loop(
    kind: Kind,
    listener: TcpListener,
    router: axum::Router,
    app: Arc<App>,
    budget: Budget,
    mut stop: watch::Receiver<bool>,
    done: mpsc::Sender<()>,
) {
    let kind = Arc::new(kind);
    loop {
        let accepted = tokio::select! {
            biased;
            _ = stop.changed() => break,
            a = listener.accept() => a,
        };
        let (stream, addr) = match accepted {
            Ok(x) => x,
            Err(e) => {
                // Out of file descriptors and the like: back off a little, keep serving.
                if let Some(suppressed) = app.conn_log.allow() {
                    tracing::warn!(error = %e, suppressed, "accept failed");
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let act = Arc::new(Activity::new(app.table.clock()));
        let evict = Arc::new(tokio::sync::Notify::new());
        let permit = match &budget {
            Budget::Fixed(sem) => sem.clone().try_acquire_owned().ok().map(Held::Permit),
            Budget::Evicting(b) => b.admit(act.clone(), evict.clone()).map(|(p, evicted)| {
                if evicted {
                    app.metrics
                        .refusals
                        .with_label_values(&["idle_evicted"])
                        .inc();
                }
                Held::Place(p)
            }),
        };
        let Some(permit) = permit else {
            app.metrics
                .refusals
                .with_label_values(&["too_many_connections"])
                .inc();
            if let Some(suppressed) = app.conn_log.allow() {
                tracing::warn!(peer = %addr, suppressed, "connection refused: too many open connections (limits.max_connections on the lease port, 256 on the status port); further refusals are counted in witness_refusals_total");
            }
            drop(stream);
            continue;
        };
        let (kind, router, app, stop, done) = (
            kind.clone(),
            router.clone(),
            app.clone(),
            stop.clone(),
            done.clone(),
        );
        tokio::spawn(async move {
            let _permit = permit;
            let _done = done;
            let is_tls = matches!(*kind, Kind::Tls(_));
            if is_tls {
                app.metrics.connections.inc();
            }
            connection(&kind, stream, addr, router, &app, stop, act, evict).await;
            if is_tls {
                app.metrics.connections.dec();
            }
        });
    }
}

/// A connection's place in its port's budget, released when the connection ends.
enum Held {
    Permit(#[allow(dead_code)] tokio::sync::OwnedSemaphorePermit),
    Place(#[allow(dead_code)] Place),
}

#[allow(clippy::too_many_arguments)]
async fn connection(
    kind: &Kind,
    stream: TcpStream,
    addr: SocketAddr,
    router: axum::Router,
    app: &App,
    stop: watch::Receiver<bool>,
    act: Arc<Activity>,
    evict: Arc<tokio::sync::Notify>,
) {
    let _ = stream.set_nodelay(true);
    let header_timeout = Duration::from_millis(app.config.limits.header_timeout_ms);
    match kind {
        Kind::Plain => {
            let peer = Peer {
                addr,
                identity: PeerIdentity::None,
            };
            // Unauthenticated: the first request must begin and end within the header
            // timeout of the connection opening, so idle sockets cannot pile up.
            act.head_since
                .store(app.table.clock().now().0 + 1, Ordering::SeqCst);
            serve_http(stream, peer, router, app, stop, act, evict).await
        }
        Kind::Tls(rx) => {
            let cfg = rx.borrow().config.clone();
            let acceptor = tokio_rustls::TlsAcceptor::from(cfg);
            let tls = match tokio::time::timeout(header_timeout, acceptor.accept(stream)).await {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    app.metrics.tls_handshake_failures.inc();
                    if let Some(suppressed) = app.conn_log.allow() {
                        tracing::warn!(peer = %addr, error = %e, suppressed, "TLS handshake failed (client certificate not from the witness CA, expired, or not TLS 1.3)");
                    }
                    return;
                }
                Err(_) => {
                    app.metrics.tls_handshake_failures.inc();
                    if let Some(suppressed) = app.conn_log.allow() {
                        tracing::warn!(peer = %addr, suppressed, "TLS handshake timed out (limits.header_timeout_ms)");
                    }
                    return;
                }
            };
            let identity = match tls.get_ref().1.peer_certificates() {
                Some([first, ..]) => match tls::identity_of(first) {
                    Ok(id) => PeerIdentity::Valid(id),
                    Err(e) => PeerIdentity::Invalid(e),
                },
                _ => PeerIdentity::None,
            };
            serve_http(tls, Peer { addr, identity }, router, app, stop, act, evict).await
        }
    }
}

/// What the connection's watchdog needs to enforce the header and idle timeouts.
struct Activity {
    /// When the last request was answered (witness clock, ms).
    last_ms: AtomicU64,
    /// Requests being answered now.
    inflight: AtomicUsize,
    /// 1 + when the first byte of a request head arrived with no request in flight; 0 = none.
    head_since: AtomicU64,
    /// Wakes the watchdog when a head starts, so it re-arms with the header deadline.
    head_started: tokio::sync::Notify,
}

impl Activity {
    fn new(clock: Clock) -> Activity {
        Activity {
            last_ms: AtomicU64::new(clock.now().0),
            inflight: AtomicUsize::new(0),
            head_since: AtomicU64::new(0),
            head_started: tokio::sync::Notify::new(),
        }
    }

    /// Since when the connection has done nothing useful (for eviction: oldest first).
    fn quiet_since(&self) -> u64 {
        match self.head_since.load(Ordering::SeqCst) {
            0 => self.last_ms.load(Ordering::SeqCst),
            h => h - 1,
        }
    }
}

/// Wraps a connection's byte stream to note when the bytes of a new request head begin, so the
/// header timeout counts from the first byte of a request rather than from the end of the
/// previous one (which would make it an idle timeout).
struct TimedIo<I> {
    inner: I,
    act: Arc<Activity>,
    clock: Clock,
}

impl<I: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for TimedIo<I> {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let r = std::pin::Pin::new(&mut this.inner).poll_read(cx, buf);
        let head_begins = matches!(r, std::task::Poll::Ready(Ok(())))
            && buf.filled().len() > before
            && this.act.inflight.load(Ordering::SeqCst) == 0;
        let now = this.clock.now().0 + 1;
        if head_begins
            && this
                .act
                .head_since
                .compare_exchange(0, now, Ordering::SeqCst, Ordering::SeqCst)
                .is_ok()
        {
            this.act.head_started.notify_one();
        }
        r
    }
}

impl<I: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for TimedIo<I> {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }
    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }
    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// Serves HTTP/1.1 on one connection until it closes, the client is idle for
/// `idle_timeout_ms`, a request head takes longer than `header_timeout_ms`, or shutdown.
async fn serve_http<I>(
    io: I,
    peer: Peer,
    router: axum::Router,
    app: &App,
    mut stop: watch::Receiver<bool>,
    activity: Arc<Activity>,
    evict: Arc<tokio::sync::Notify>,
) where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let clock = app.table.clock();
    let io = TokioIo::new(TimedIo {
        inner: io,
        act: activity.clone(),
        clock,
    });
    let act = activity.clone();
    let addr = peer.addr;
    let svc = hyper::service::service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
        req.extensions_mut().insert(peer.clone());
        act.inflight.fetch_add(1, Ordering::SeqCst);
        act.head_since.store(0, Ordering::SeqCst);
        let act = act.clone();
        let fut = router.clone().oneshot(req);
        async move {
            let r = fut.await;
            act.last_ms.store(clock.now().0, Ordering::SeqCst);
            act.inflight.fetch_sub(1, Ordering::SeqCst);
            r
        }
    });
    let limits = &app.config.limits;
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        // Enforced below from the first byte of each head; hyper's own would start counting
        // as soon as the previous response is written.
        .header_read_timeout(None)
        .max_buf_size(64 * 1024)
        .keep_alive(true);
    let conn = builder.serve_connection(io, svc);
    tokio::pin!(conn);
    let (idle, header) = (limits.idle_timeout_ms, limits.header_timeout_ms);
    let mut closing = *stop.borrow();
    if closing {
        conn.as_mut().graceful_shutdown();
    }
    loop {
        let now = clock.now().0;
        let head = activity.head_since.load(Ordering::SeqCst);
        let deadline = if activity.inflight.load(Ordering::SeqCst) > 0 {
            now + header.min(idle)
        } else if head != 0 {
            head - 1 + header
        } else {
            activity.last_ms.load(Ordering::SeqCst) + idle
        };
        let wait = deadline.saturating_sub(now).max(10);
        tokio::select! {
            r = conn.as_mut() => {
                if let Err(e) = r {
                    tracing::debug!(peer = %addr, error = %e, "connection ended with an error");
                }
                break;
            }
            c = stop.changed(), if !closing => {
                let _ = c;
                closing = true;
                conn.as_mut().graceful_shutdown();
            }
            _ = activity.head_started.notified() => {}
            _ = evict.notified() => {
                // Made room for a new connection (the status port's budget was full).
                tracing::debug!(peer = %addr, "idle connection evicted to make room");
                break;
            }
            _ = tokio::time::sleep(Duration::from_millis(wait)) => {
                if activity.inflight.load(Ordering::SeqCst) > 0 {
                    continue;
                }
                let now = clock.now().0;
                let head = activity.head_since.load(Ordering::SeqCst);
                if head != 0 && now >= head - 1 + header {
                    app.metrics.refusals.with_label_values(&["header_timeout"]).inc();
                    if let Some(suppressed) = app.conn_log.allow() {
                        tracing::warn!(peer = %addr, suppressed, "request headers not complete within limits.header_timeout_ms; connection closed");
                    }
                    break;
                }
                if head == 0 && !closing && now >= activity.last_ms.load(Ordering::SeqCst) + idle {
                    closing = true;
                    conn.as_mut().graceful_shutdown();
                }
                if closing && head == 0 && now >= activity.last_ms.load(Ordering::SeqCst) + idle + header {
                    // A client that ignores the close: drop the connection.
                    break;
                }
            }
        }
    }
}

async fn ticker(app: Arc<App>, mut stop: watch::Receiver<bool>) {
    let mut iv = tokio::time::interval(Duration::from_millis(app.config.tick_interval_ms));
    iv.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut n: u64 = 0;
    loop {
        tokio::select! {
            biased;
            _ = stop.changed() => break,
            _ = iv.tick() => {}
        }
        app.table.tick().await;
        n += 1;
        if n >= 150 {
            n = 0;
            app.limiter.prune();
        }
    }
}

async fn reloader(app: Arc<App>, mut stop: watch::Receiver<bool>) {
    let mut iv = tokio::time::interval(Duration::from_millis(app.config.tls.reload_interval_ms));
    iv.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    #[cfg(unix)]
    let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
    loop {
        #[cfg(unix)]
        let hup_fut = async {
            match hup.as_mut() {
                Some(h) => {
                    h.recv().await;
                }
                None => std::future::pending::<()>().await,
            }
        };
        #[cfg(not(unix))]
        let hup_fut = std::future::pending::<()>();
        let force = tokio::select! {
            biased;
            _ = stop.changed() => break,
            _ = hup_fut => true,
            _ = iv.tick() => false,
        };
        if force {
            tracing::info!("SIGHUP: reloading certificates");
        }
        let _ = app.tls.check(force);
        let cur = app.tls.current();
        app.metrics
            .set_cert_expiry(cur.server_not_after, cur.ca_not_after);
    }
}
