//! The node's view model: what the shell has seen of the witness and the peers, and the
//! [`StatusReport`] built from it and the state machine for `/v1/status`, plus the metrics that
//! mirror it. Nothing here decides; every verdict comes from [`NodeAgent`].
use crate::actuator::{FencingStatus, TakeoverStatus};
use crate::config::Config;
use crate::drivers::watchdog::WatchdogStatus;
use crate::metrics::Metrics;
use crate::status::{
    CertStatus, FencePeerAnswer, LeaseKind, LeaseStatus, PeerStatus, StatusReport, TakeoverView,
    WitnessStatus,
};
use crate::tls::TlsState;
use proto::agent::{NodeAgent, Phase};
use proto::fence_peer::PeerFenceVerdict;
use proto::pending::PendingWork;
use proto::wire::{LeaseMode, NodePhase, Pong, TakeoverPermit, Verdict};
use proto::{Millis, NodeId};
use std::collections::BTreeMap;

/// What the shell last heard from the witness.
#[derive(Default)]
pub struct WitnessSeen {
    pub last_answer: Option<Millis>,
    pub reachable: bool,
    pub last_verdict: Option<String>,
    pub last_error: Option<String>,
}

impl WitnessSeen {
    /// The witness answered at `now`.
    pub fn answered(&mut self, now: Millis, verdict: &Verdict) {
        self.reachable = true;
        self.last_answer = Some(now);
        self.last_error = None;
        self.last_verdict = Some(match verdict {
            Verdict::Grant { mode, valid_ms } => {
                format!("grant {} for {valid_ms} ms", mode_name(mode))
            }
            Verdict::Fence { reason } => format!("fence: {reason}"),
            Verdict::Retry { after_ms, reason } => {
                format!("retry after {after_ms} ms: {reason}")
            }
        });
    }
}

/// What the shell last heard from one node of the other room.
#[derive(Default)]
pub struct PeerSeen {
    pub address: String,
    pub last_answer: Option<Millis>,
    pub vouch: Option<bool>,
    pub phase: Option<NodePhase>,
    pub epoch: Option<u64>,
    pub last_error: Option<String>,
}

impl PeerSeen {
    /// The peer answered our ping at `now`.
    pub fn answered(&mut self, now: Millis, pong: &Pong) {
        self.last_answer = Some(now);
        self.vouch = Some(pong.vouch);
        self.phase = Some(pong.phase);
        self.epoch = Some(pong.epoch.0);
        self.last_error = None;
    }
}

/// The status page's and the metrics' name of a phase.
pub fn phase_name(p: NodePhase) -> &'static str {
    match p {
        NodePhase::Starting => "starting",
        NodePhase::Active => "active",
        NodePhase::Fencing => "fencing",
        NodePhase::Fenced => "fenced",
    }
}

/// A lease mode for the log and the event socket, e.g. `alone (takeover wait)`.
pub fn mode_name(m: &LeaseMode) -> String {
    match m {
        LeaseMode::Paired => "paired".into(),
        LeaseMode::Alone { takeover } => format!("alone (takeover {})", permit_name(*takeover)),
    }
}

fn permit_name(p: TakeoverPermit) -> &'static str {
    match p {
        TakeoverPermit::Wait => "wait",
        TakeoverPermit::Allowed => "allowed",
        TakeoverPermit::Release => "release",
    }
}

/// The answer to DRBD's fence-peer handler for `now`, from the state machine's verdict.
pub fn fence_peer_answer(agent: &NodeAgent, now: Millis) -> FencePeerAnswer {
    let verdict = agent.peer_fenced(now);
    let reason = match verdict {
        PeerFenceVerdict::PeerFenced { epoch } => format!(
            "this room holds the right to act alone (epoch {}) and has taken over the \
             other room after the safe bound: its nodes are fenced or reset",
            epoch.0
        ),
        PeerFenceVerdict::SelfFencing => {
            "this node is fencing itself: its DRBD IO must stay frozen".to_string()
        }
        PeerFenceVerdict::Starting => "this node has not started yet".to_string(),
        PeerFenceVerdict::AloneWaiting => {
            "this room may act alone but the takeover bound has not passed yet".to_string()
        }
        PeerFenceVerdict::Paired => {
            "running paired: the other room may still be active".to_string()
        }
    };
    FencePeerAnswer {
        peer_fenced: verdict.peer_fenced(),
        phase: agent.run_state().phase.wire(),
        reason,
    }
}

/// Everything besides the state machine that the report shows.
pub struct Observed<'a> {
    pub cfg: &'a Config,
    pub witness: &'a WitnessSeen,
    pub peers: &'a BTreeMap<NodeId, PeerSeen>,
    pub petting: bool,
    pub tls: &'a TlsState,
    pub tls_error: Option<String>,
    pub watchdog: WatchdogStatus,
    pub fencing: FencingStatus,
    pub takeover: TakeoverStatus,
    pub pending: &'a PendingWork,
}

/// The status report for time `now`.
pub fn report(agent: &NodeAgent, now: Millis, o: Observed<'_>) -> StatusReport {
    let run = agent.run_state();
    let since = match run.phase {
        Phase::Starting => None,
        Phase::Active { since } | Phase::Fencing { since, .. } | Phase::Fenced { since } => {
            Some(since)
        }
    };
    let lease = match &run.lease {
        Some(l) => LeaseStatus {
            valid: agent.lease_valid(now),
            mode: Some(match l.mode {
                LeaseMode::Paired => LeaseKind::Paired,
                LeaseMode::Alone { .. } => LeaseKind::Alone,
            }),
            takeover_permit: match l.mode {
                LeaseMode::Alone { takeover } => Some(takeover),
                LeaseMode::Paired => None,
            },
            epoch: Some(l.epoch.0),
            remaining_ms: l.expires.since(now),
            has_proof: l.proof.is_some(),
        },
        None => LeaseStatus::default(),
    };
    let p_timeout = o.cfg.timings.peer_timeout_ms;
    let peers = o
        .peers
        .iter()
        .map(|(n, p)| PeerStatus {
            node: n.to_string(),
            address: p.address.clone(),
            reachable: p.last_answer.is_some_and(|t| now.since(t) < p_timeout),
            vouch: p.vouch,
            phase: p.phase,
            epoch: p.epoch,
            last_answer_ago_ms: p.last_answer.map(|t| now.since(t)),
            last_error: p.last_error.clone(),
        })
        .collect();
    StatusReport {
        cluster: o.cfg.cluster.clone(),
        room: o.cfg.room.clone(),
        node: o.cfg.node.clone(),
        phase: run.phase.wire(),
        phase_for_ms: since.map(|s| now.since(s)),
        escalated: matches!(
            run.phase,
            Phase::Fencing {
                escalated: true,
                ..
            }
        ),
        authority: agent.authority(now),
        vouching: agent.vouching(),
        claiming: agent.claims(now),
        watchdog_petting: o.petting,
        epoch: run.epoch.0,
        lease,
        witness: WitnessStatus {
            url: o.cfg.witness_url.clone(),
            reachable: o.witness.reachable,
            last_answer_ago_ms: o.witness.last_answer.map(|t| now.since(t)),
            last_verdict: o.witness.last_verdict.clone(),
            last_error: o.witness.last_error.clone(),
        },
        peer_contact: agent.peer_contact(now),
        peer_reachable: agent.peer_reachable(now),
        peers,
        fencing: o.fencing,
        takeover: TakeoverView {
            active: run.takeover,
            work: o.takeover,
        },
        watchdog: o.watchdog,
        certificate: CertStatus {
            identity: o.tls.identity.to_uri(),
            expires_in_s: o.tls.expiry_seconds(),
            reload_error: o.tls_error,
        },
        pending: o.pending.clone(),
        fence_peer: fence_peer_answer(agent, now),
        published: Some(tokio::time::Instant::now()),
    }
}

/// Mirrors the report in the gauges.
pub fn record_metrics(m: &Metrics, r: &StatusReport) {
    m.set_phase(phase_name(r.phase));
    m.lease_valid.set(i64::from(r.lease.valid));
    m.lease_remaining_seconds
        .set(r.lease.remaining_ms as f64 / 1000.0);
    m.peer_contact.set(i64::from(r.peer_contact));
    m.peer_reachable.set(i64::from(r.peer_reachable));
    m.takeover_active.set(i64::from(r.takeover.active));
    m.epoch.set(r.epoch as i64);
    m.watchdog_held.set(i64::from(r.watchdog.held));
    m.certificate_expiry_seconds.set(r.certificate.expires_in_s);
}
