//! The node's view for humans and machines: `/v1/status` (JSON), `/v1/fence-peer` (the DRBD
//! handler's question), `/metrics`, `/healthz` and `/readyz`, on a plain-HTTP listener meant for
//! localhost, the kubelet and Prometheus.
use crate::actuator::{FencingStatus, TakeoverStatus};
use crate::clock::Clock;
use crate::drivers::watchdog::WatchdogStatus;
use crate::machine::SharedAgent;
use crate::metrics::Metrics;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use proto::pending::PendingWork;
use proto::wire::{NodePhase, TakeoverPermit};
use serde::{Deserialize, Serialize};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;

/// `/healthz` fails when the main loop has not published a view for this long.
pub const STALE: Duration = Duration::from_secs(3);

/// The kind of lease held, as the status page names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LeaseKind {
    Paired,
    Alone,
}

/// The lease as the node holds it.
#[derive(Clone, Debug, Default, Serialize)]
pub struct LeaseStatus {
    pub valid: bool,
    /// `paired` or `alone`.
    pub mode: Option<LeaseKind>,
    /// With `alone`: `wait`, `allowed` or `release`.
    pub takeover_permit: Option<TakeoverPermit>,
    pub epoch: Option<u64>,
    pub remaining_ms: u64,
    pub has_proof: bool,
}

/// What we know of the witness.
#[derive(Clone, Debug, Default, Serialize)]
pub struct WitnessStatus {
    pub url: String,
    pub reachable: bool,
    pub last_answer_ago_ms: Option<u64>,
    /// grant, fence or retry, with the witness's reason where it gave one.
    pub last_verdict: Option<String>,
    pub last_error: Option<String>,
}

/// What we know of one node of the other room.
#[derive(Clone, Debug, Default, Serialize)]
pub struct PeerStatus {
    pub node: String,
    pub address: String,
    /// It answered a ping within the peer timeout.
    pub reachable: bool,
    /// Its last answer vouched for us.
    pub vouch: Option<bool>,
    pub phase: Option<NodePhase>,
    pub epoch: Option<u64>,
    pub last_answer_ago_ms: Option<u64>,
    pub last_error: Option<String>,
}

/// Our certificate.
#[derive(Clone, Debug, Default, Serialize)]
pub struct CertStatus {
    pub identity: String,
    pub expires_in_s: i64,
    pub reload_error: Option<String>,
}

/// The takeover: the protocol's flag and the work on the other room's nodes.
#[derive(Clone, Debug, Default, Serialize)]
pub struct TakeoverView {
    /// The state machine has taken over the other room.
    pub active: bool,
    pub work: TakeoverStatus,
}

/// The answer to the DRBD fence-peer handler.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FencePeerAnswer {
    /// The other room is provably stopped and this room may act alone: DRBD may resume IO.
    pub peer_fenced: bool,
    pub phase: NodePhase,
    pub reason: String,
}

impl Default for FencePeerAnswer {
    fn default() -> FencePeerAnswer {
        FencePeerAnswer {
            peer_fenced: false,
            phase: NodePhase::Starting,
            reason: String::new(),
        }
    }
}

/// Everything `/v1/status` shows.
#[derive(Clone, Debug, Serialize)]
pub struct StatusReport {
    pub cluster: String,
    pub room: String,
    pub node: String,
    /// starting, active, fencing, fenced.
    pub phase: NodePhase,
    pub phase_for_ms: Option<u64>,
    /// Fencing failed or overran: the watchdog is expected to reset this node.
    pub escalated: bool,
    /// The node may run now (valid lease or peer contact).
    pub authority: bool,
    /// Our pongs vouch for the other room (running paired).
    pub vouching: bool,
    /// We asked the witness to let our room act alone.
    pub claiming: bool,
    pub watchdog_petting: bool,
    pub epoch: u64,
    pub lease: LeaseStatus,
    pub witness: WitnessStatus,
    pub peer_contact: bool,
    pub peer_reachable: bool,
    pub peers: Vec<PeerStatus>,
    pub fencing: FencingStatus,
    pub takeover: TakeoverView,
    pub watchdog: WatchdogStatus,
    pub certificate: CertStatus,
    /// Kubernetes actions started but not yet confirmed.
    pub pending: PendingWork,
    pub fence_peer: FencePeerAnswer,
    /// When the main loop published this view (not serialized).
    #[serde(skip)]
    pub published: Option<tokio::time::Instant>,
}

#[derive(Clone)]
struct Shared {
    report: watch::Receiver<StatusReport>,
    agent: SharedAgent,
    metrics: Metrics,
}

async fn status(State(s): State<Shared>) -> Json<StatusReport> {
    Json(s.report.borrow().clone())
}

/// Asked of the state machine now, on the node's clock now: a published view can be late, and
/// a lease that ran out since must not still resume DRBD's IO.
async fn fence_peer(State(s): State<Shared>) -> Json<FencePeerAnswer> {
    let now = Clock.now();
    Json(s.agent.with(|a| crate::view::fence_peer_answer(a, now)))
}

async fn metrics_page(State(s): State<Shared>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        s.metrics.render(),
    )
        .into_response()
}

async fn healthz(State(s): State<Shared>) -> Response {
    let fresh = s
        .report
        .borrow()
        .published
        .is_some_and(|t| t.elapsed() < STALE);
    if fresh {
        (StatusCode::OK, "ok\n").into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "the agent's main loop is not running\n",
        )
            .into_response()
    }
}

async fn readyz(State(s): State<Shared>) -> Response {
    let r = s.report.borrow().clone();
    if r.phase == NodePhase::Active && r.authority {
        (StatusCode::OK, "active\n").into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "not ready: phase {}, authority {}\n",
                crate::view::phase_name(r.phase),
                r.authority
            ),
        )
            .into_response()
    }
}

/// The status router (also used directly by tests).
pub fn router(
    report: watch::Receiver<StatusReport>,
    agent: SharedAgent,
    metrics: Metrics,
) -> Router {
    Router::new()
        .route("/v1/status", get(status))
        .route("/v1/fence-peer", get(fence_peer))
        .route("/metrics", get(metrics_page))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(Shared {
            report,
            agent,
            metrics,
        })
}

/// Serves the status endpoints until `shutdown` flips.
pub async fn serve(
    listener: TcpListener,
    report: watch::Receiver<StatusReport>,
    agent: SharedAgent,
    metrics: Metrics,
    mut shutdown: watch::Receiver<bool>,
) {
    let app = router(report, agent, metrics);
    let r = axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            let _ = shutdown.changed().await;
        })
        .await;
    if let Err(e) = r {
        tracing::error!("status server failed: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proto::agent::{AgentConfig, NodeAgent, RunState};
    use proto::{ClusterId, NodeId, RoomId, Timings};
    use tower::ServiceExt;

    #[tokio::test]
    async fn the_fence_peer_answer_comes_from_the_state_machine_not_the_published_view() {
        let agent = SharedAgent::new(NodeAgent::new(
            AgentConfig {
                timings: Timings::default(),
                cluster: ClusterId::new("c"),
                room: RoomId::new("a"),
                node: NodeId::new("a1"),
                peers: vec![NodeId::new("b1")],
                address: None,
                mutation: Default::default(),
            },
            RunState::booted(),
        ));
        // A view that says "peer fenced" (as if published before the lease ran out).
        let (_tx, report) = watch::channel(StatusReport {
            cluster: "c".into(),
            room: "a".into(),
            node: "a1".into(),
            phase: NodePhase::Active,
            phase_for_ms: None,
            escalated: false,
            authority: true,
            vouching: false,
            claiming: false,
            watchdog_petting: true,
            epoch: 3,
            lease: LeaseStatus::default(),
            witness: WitnessStatus::default(),
            peer_contact: false,
            peer_reachable: false,
            peers: Vec::new(),
            fencing: FencingStatus::default(),
            takeover: TakeoverView::default(),
            watchdog: WatchdogStatus::default(),
            certificate: CertStatus::default(),
            pending: PendingWork::default(),
            fence_peer: FencePeerAnswer {
                peer_fenced: true,
                phase: NodePhase::Active,
                reason: "stale".into(),
            },
            published: None,
        });
        let app = router(report, agent, Metrics::new());
        let req = axum::http::Request::get("/v1/fence-peer")
            .body(axum::body::Body::empty())
            .expect("a request");
        let resp = app.oneshot(req).await.expect("an answer");
        assert_eq!(resp.status(), StatusCode::OK);
        let body = axum::body::to_bytes(resp.into_body(), 1 << 16)
            .await
            .expect("a body");
        let a: FencePeerAnswer = serde_json::from_slice(&body).expect("json");
        assert!(!a.peer_fenced, "{a:?}");
        assert_eq!(a.phase, NodePhase::Starting);
        assert_eq!(a.reason, "this node has not started yet");
    }
}
