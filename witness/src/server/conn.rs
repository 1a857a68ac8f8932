//! One port's connections: the accept loop, the connection budgets (a fixed number for the
//! lease port, evicting the quietest for the status port), the TLS handshake and the identity
//! its client certificate carries, and HTTP/1.1 with the header and idle timeouts: hyper on
//! the status port (browsers, scrapers), the witness's own on the lease port (`http1`).
use crate::app::{App, Peer, PeerIdentity, ValidIdentity};
use crate::clusters::Clock;
use crate::shortlock::{lock, ShortLock};
use crate::tls;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch, Semaphore};
use tower::ServiceExt;

/// Which protocol a port speaks.
pub(super) enum Kind {
    Tls(watch::Receiver<Arc<tls::LoadedTls>>),
    Plain,
}

/// How many connections a port keeps.
pub(super) enum Budget {
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
pub(super) struct Evicting {
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
    pub(super) fn new(cap: usize) -> Evicting {
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

pub(super) async fn accept_loop(
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
    app: &Arc<App>,
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
            // Boxed, as every phase below: a connection's task is as large as its largest
            // phase for its whole life, and the lease port keeps thousands of them.
            Box::pin(serve_http(stream, peer, router, app, stop, act, evict)).await
        }
        Kind::Tls(rx) => {
            let cfg = rx.borrow().config.clone();
            let tls = match tokio::time::timeout(
                header_timeout,
                Box::pin(super::lean_tls::accept(stream, cfg)),
            )
            .await
            {
                Ok(Ok(s)) => Box::new(s),
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
            let identity = match tls.peer_certificates() {
                Some([first, ..]) => match tls::identity_of(first) {
                    Ok(id) => PeerIdentity::Valid(Arc::new(ValidIdentity::new(id))),
                    Err(e) => PeerIdentity::Invalid(e),
                },
                _ => PeerIdentity::None,
            };
            // The lease port's budget is fixed: nothing is evicted, so no activity is kept.
            let _ = (act, evict);
            Box::pin(super::http1::serve(
                tls,
                Peer { addr, identity },
                router,
                app,
                stop,
            ))
            .await
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

/// Serves HTTP/1.1 (hyper) on one status-port connection until it closes, the client is idle for
/// `idle_timeout_ms`, a request head takes longer than `header_timeout_ms`, or shutdown.
async fn serve_http<I>(
    io: I,
    peer: Peer,
    router: axum::Router,
    app: &Arc<App>,
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
        act.inflight.fetch_add(1, Ordering::SeqCst);
        act.head_since.store(0, Ordering::SeqCst);
        let act = act.clone();
        req.extensions_mut().insert(peer.clone());
        let answer = router.clone().oneshot(req);
        // Boxed: hyper keeps a slot the size of this future for the whole life of the
        // connection, and the lease path's future (down to the durable write) is several KiB;
        // boxed, an idle connection holds a pointer and each request allocates once.
        let answer: futures::future::BoxFuture<'static, _> = Box::pin(async move {
            let r = answer.await;
            act.last_ms.store(clock.now().0, Ordering::SeqCst);
            act.inflight.fetch_sub(1, Ordering::SeqCst);
            r
        });
        answer
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
