//! Moving protocol messages: the lease client (`POST https://witness/v1/lease`), the heartbeat
//! client (`POST https://<peer>/v1/heartbeat`) and the heartbeat server, all over mutual TLS.
//!
//! The server takes identity only from the client certificate: a heartbeat whose body names a
//! different cluster, room or node than the certificate is refused (403) before it reaches the
//! state machine; one without a witness node identity is refused with 401. The state machine
//! then refuses pings from nodes that are not in its peer list (403 with its reason).
use crate::config::Config;
use crate::tls::{cert_identity, PeerExpectation, TlsError, TlsState};
use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Extension, Json, Router};
use identity::LogLimiter;
use proto::ids::Identity;
use proto::wire::{check_version, LeaseReply, LeaseRequest, Ping, Pong};
use proto::NodeId;
use serde_json::json;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot, watch, Semaphore};
use tower::ServiceExt;

/// Heartbeat connections served at once; more are closed at accept.
pub const MAX_CONNECTIONS: usize = 256;
/// Largest heartbeat body accepted.
pub const MAX_BODY: usize = 16 * 1024;
/// A TLS handshake must finish within this.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// HTTPS clients built from one reading of the certificates (rebuilt on reload, so new
/// connections use the new certificates).
#[derive(Clone)]
pub struct Clients {
    witness: reqwest::Client,
    lease_url: String,
    peers: BTreeMap<NodeId, (reqwest::Client, String)>,
    /// Where the ping round trips and the renewals' clock readings go (see `with_metrics`).
    metrics: Option<crate::metrics::Metrics>,
    timings: proto::Timings,
    ca: std::path::PathBuf,
}

impl Clients {
    /// Builds the witness client (timeout: the renew interval, after which a newer request is
    /// due anyway) and one client per peer (timeout: the heartbeat interval, after which a newer
    /// ping replaces this one).
    pub fn build(
        cfg: &Config,
        tls: &TlsState,
        learned: &BTreeMap<NodeId, String>,
    ) -> Result<Clients, TlsError> {
        let t = &cfg.timings;
        let terr = |e: reqwest::Error| TlsError {
            field: "tls".into(),
            reason: format!("building the HTTPS client: {e}"),
        };
        let witness = reqwest::Client::builder()
            .use_preconfigured_tls(tls.witness_client()?)
            .timeout(Duration::from_millis(t.renew_interval_ms))
            .connect_timeout(Duration::from_millis(t.renew_interval_ms))
            .no_proxy()
            .build()
            .map_err(terr)?;
        let mut peers = BTreeMap::new();
        // Configured peers at their configured address (the operator's word wins: it may be a
        // relay or a path the witness cannot see), then the peers only the membership names, at
        // the address they advertise.
        let mut targets: BTreeMap<NodeId, String> = cfg
            .peers
            .iter()
            .map(|p| (NodeId::new(&p.node), p.address.clone()))
            .collect();
        for (n, a) in learned {
            targets.entry(n.clone()).or_insert_with(|| a.clone());
        }
        for (node, address) in &targets {
            let client = reqwest::Client::builder()
                .use_preconfigured_tls(tls.peer_client(PeerExpectation {
                    cluster: cfg.cluster.clone(),
                    own_room: cfg.room.clone(),
                    node: node.to_string(),
                })?)
                .timeout(Duration::from_millis(t.heartbeat_interval_ms))
                .connect_timeout(Duration::from_millis(t.heartbeat_interval_ms))
                .no_proxy()
                .build()
                .map_err(terr)?;
            peers.insert(
                node.clone(),
                (client, format!("https://{address}/v1/heartbeat")),
            );
        }
        Ok(Clients {
            witness,
            lease_url: format!("{}/v1/lease", cfg.witness_url.trim_end_matches('/')),
            peers,
            metrics: None,
            timings: cfg.timings.clone(),
            ca: cfg.tls.ca.clone(),
        })
    }

    /// Measures into `m`: each answered ping's round trip, each grant's clock readings (for the
    /// clock-rate skew), and the expiry of the trusted CA certificates of this reading.
    pub fn with_metrics(mut self, m: &crate::metrics::Metrics) -> Clients {
        m.set_bounds(&self.timings);
        match std::fs::read(&self.ca)
            .map_err(|e| e.to_string())
            .and_then(|pem| crate::metrics::earliest_not_after(&pem))
        {
            Ok(t) => m.trust_anchor_expiry_timestamp_seconds.set(t),
            Err(e) => tracing::warn!("tls.ca {}: expiry not exported: {e}", self.ca.display()),
        }
        self.metrics = Some(m.clone());
        self
    }

    /// Sends a lease request; the reply is checked for version and addressee.
    pub async fn lease(&self, req: &LeaseRequest) -> Result<LeaseReply, String> {
        let sent = crate::clock::Clock.now();
        let resp = self
            .witness
            .post(&self.lease_url)
            .json(req)
            .send()
            .await
            .map_err(|e| format!("witness unreachable: {}", error_chain(&e)))?;
        let status = resp.status();
        let body = resp
            .bytes()
            .await
            .map_err(|e| format!("witness reply unreadable: {e}"))?;
        if !status.is_success() {
            return Err(format!(
                "witness answered {status}: {}",
                String::from_utf8_lossy(&body).trim()
            ));
        }
        let reply = decode_lease_reply(&body)?;
        if reply.cluster != req.cluster || reply.room != req.room || reply.node != req.node {
            return Err(format!(
                "witness reply is addressed to {}/{}/{}, not to us",
                reply.cluster, reply.room, reply.node
            ));
        }
        if let (Some(m), Some(witness_ms)) = (&self.metrics, reply.witness_ms) {
            // A measurement only: no rule depends on the witness's clock.
            m.observe_renewal(sent.0, crate::clock::Clock.now().0, witness_ms);
        }
        Ok(reply)
    }

    /// Pings one peer; the pong is checked for version and sender.
    pub async fn ping(&self, to: &NodeId, ping: &Ping) -> Result<Pong, String> {
        let (client, url) = self
            .peers
            .get(to)
            .ok_or_else(|| format!("{to} is not a configured peer"))?;
        let sent = tokio::time::Instant::now();
        let resp = client
            .post(url)
            .json(ping)
            .send()
            .await
            .map_err(|e| format!("peer {to} unreachable: {}", error_chain(&e)))?;
        let status = resp.status();
        let body = resp
            .bytes()
            .await
            .map_err(|e| format!("peer {to} reply unreadable: {e}"))?;
        if !status.is_success() {
            return Err(format!(
                "peer {to} answered {status}: {}",
                String::from_utf8_lossy(&body).trim()
            ));
        }
        let pong = decode_pong(&body).map_err(|e| format!("peer {to} {e}"))?;
        if &pong.node != to || pong.cluster != ping.cluster {
            return Err(format!(
                "peer {to} answered as {}/{}/{}",
                pong.cluster, pong.room, pong.node
            ));
        }
        if let Some(m) = &self.metrics {
            m.peer_rtt_seconds.observe(sent.elapsed().as_secs_f64());
        }
        Ok(pong)
    }
}

/// Decodes the witness's answer to a lease request (JSON, then the wire version). Public so the
/// fuzz targets (`fuzz/`) exercise exactly what the agent runs on bytes from the network.
pub fn decode_lease_reply(body: &[u8]) -> Result<LeaseReply, String> {
    let reply: LeaseReply = serde_json::from_slice(body)
        .map_err(|e| format!("witness reply is not a lease reply: {e}"))?;
    check_version(reply.version)?;
    Ok(reply)
}

/// Decodes a peer's answer to a ping (JSON, then the wire version); the caller names the peer.
pub fn decode_pong(body: &[u8]) -> Result<Pong, String> {
    let pong: Pong =
        serde_json::from_slice(body).map_err(|e| format!("reply is not a pong: {e}"))?;
    check_version(pong.version)?;
    Ok(pong)
}

/// Decodes the body of `POST /v1/heartbeat` (JSON, then the wire version); the caller then
/// checks that it names the sender's certificate.
pub fn decode_ping(body: &[u8]) -> Result<Ping, String> {
    let ping: Ping =
        serde_json::from_slice(body).map_err(|e| format!("body is not a ping: {e}"))?;
    check_version(ping.version)?;
    Ok(ping)
}

/// The full cause chain of an error (reqwest hides the TLS reason in its sources).
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

/// A ping for the main loop, with the channel for its answer.
pub struct PingRequest {
    pub ping: Ping,
    pub reply: oneshot::Sender<Result<Pong, String>>,
}

/// Who the client certificate of a connection says it is (or why it says nothing usable).
#[derive(Clone, Debug)]
struct PeerIdentity(Result<Identity, String>);

/// Refused heartbeats and refused, failed or timed-out heartbeat connections.
static CONN_LOG: LogLimiter = LogLimiter::new(Duration::from_secs(10));

fn refuse(status: StatusCode, msg: impl Into<String>) -> Response {
    let msg = msg.into();
    if let Some(suppressed) = CONN_LOG.allow() {
        tracing::warn!(
            status = status.as_u16(),
            suppressed,
            "heartbeat refused: {msg}"
        );
    }
    (status, Json(json!({"error": msg}))).into_response()
}

async fn heartbeat(
    State(tx): State<mpsc::Sender<PingRequest>>,
    Extension(id): Extension<PeerIdentity>,
    body: axum::body::Bytes,
) -> Response {
    let id = match id.0 {
        Ok(Identity::Node {
            cluster,
            room,
            node,
        }) => (cluster, room, node),
        Ok(Identity::Admin { name }) => {
            return refuse(
                StatusCode::FORBIDDEN,
                format!(
                    "admin certificate {name:?} cannot send heartbeats: use a node certificate"
                ),
            )
        }
        Err(e) => return refuse(StatusCode::UNAUTHORIZED, format!("client certificate: {e}")),
    };
    let ping = match decode_ping(&body) {
        Ok(p) => p,
        Err(e) => return refuse(StatusCode::BAD_REQUEST, e),
    };
    if (&ping.cluster, &ping.room, &ping.node) != (&id.0, &id.1, &id.2) {
        return refuse(
            StatusCode::FORBIDDEN,
            format!(
                "heartbeat names witness://{}/{}/{} but the client certificate is witness://{}/{}/{}: \
                 a node may only speak for itself",
                ping.cluster, ping.room, ping.node, id.0, id.1, id.2
            ),
        );
    }
    let (rtx, rrx) = oneshot::channel();
    if tx.send(PingRequest { ping, reply: rtx }).await.is_err() {
        return refuse(
            StatusCode::SERVICE_UNAVAILABLE,
            "the agent is shutting down",
        );
    }
    match tokio::time::timeout(Duration::from_secs(1), rrx).await {
        Ok(Ok(Ok(pong))) => (StatusCode::OK, Json(pong)).into_response(),
        Ok(Ok(Err(reason))) => refuse(StatusCode::FORBIDDEN, reason),
        _ => refuse(
            StatusCode::SERVICE_UNAVAILABLE,
            "the agent did not answer in time",
        ),
    }
}

/// Serves heartbeats on `listener` until `shutdown` flips. Every new connection uses the newest
/// TLS configuration from `tls`.
pub async fn serve_heartbeats(
    listener: TcpListener,
    tls: watch::Receiver<Arc<TlsState>>,
    pings: mpsc::Sender<PingRequest>,
    mut shutdown: watch::Receiver<bool>,
) {
    let router = Router::new()
        .route("/v1/heartbeat", post(heartbeat))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(pings);
    let limit = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let (stream, addr) = tokio::select! {
            _ = shutdown.changed() => return,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    if let Some(suppressed) = CONN_LOG.allow() {
                        tracing::warn!(suppressed, "heartbeat accept failed: {e}");
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Ok(permit) = limit.clone().try_acquire_owned() else {
            if let Some(suppressed) = CONN_LOG.allow() {
                tracing::warn!(%addr, suppressed, "too many heartbeat connections; closing this one");
            }
            continue;
        };
        let acceptor = tokio_rustls::TlsAcceptor::from(tls.borrow().server.clone());
        let router = router.clone();
        let mut shutdown = shutdown.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let tls_stream = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream))
                .await
            {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    if let Some(suppressed) = CONN_LOG.allow() {
                        tracing::warn!(%addr, suppressed, "heartbeat TLS handshake refused: {e}");
                    }
                    return;
                }
                Err(_) => {
                    if let Some(suppressed) = CONN_LOG.allow() {
                        tracing::warn!(%addr, suppressed, "heartbeat TLS handshake timed out");
                    }
                    return;
                }
            };
            let id = match tls_stream.get_ref().1.peer_certificates() {
                Some([leaf, ..]) => cert_identity(leaf).map_err(|e| e.to_string()),
                _ => Err("no client certificate".to_string()),
            };
            let id = PeerIdentity(id);
            let svc =
                router.map_request(move |mut req: axum::http::Request<hyper::body::Incoming>| {
                    req.extensions_mut().insert(id.clone());
                    req
                });
            let svc = hyper_util::service::TowerToHyperService::new(svc);
            let builder =
                hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new());
            let conn = builder.serve_connection(hyper_util::rt::TokioIo::new(tls_stream), svc);
            tokio::select! {
                r = conn => if let Err(e) = r {
                    tracing::debug!(%addr, "heartbeat connection ended: {e}");
                },
                _ = shutdown.changed() => {}
            }
        });
    }
}
