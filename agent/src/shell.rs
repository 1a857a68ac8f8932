//! The shell around [`proto::agent::NodeAgent`]: keeps time, moves bytes, persists, calls
//! drivers. It decides nothing about fencing, unfencing, takeover or vouching; every such
//! decision comes out of `NodeAgent::step`.
//!
//! One loop owns the state machine. Every input (a tick every [`tick_ms`], a lease reply, a
//! pong, a ping from a peer, a worker's report) becomes one `step`; the step's `persist` is
//! written to disk before any of its actions is performed or its pong sent.
use crate::actuator::{Actuators, Feedback, Job, Parts};
use crate::clock::{boot_id, Clock};
use crate::config::{Config, ConfigError};
use crate::drivers::drbd::DrbdDriver;
use crate::drivers::hooks::{Hooks, HooksDriver};
use crate::drivers::taint::TaintDriver;
use crate::drivers::vm::VmDriver;
use crate::drivers::watchdog::{Watchdog, WatchdogDriver};
use crate::drivers::FenceDriver;
use crate::events::EventSink;
use crate::kube::Kube;
use crate::metrics::Metrics;
use crate::net::{serve_heartbeats, Clients, PingRequest};
use crate::state::{Loaded, StateStore};
use crate::status::{
    CertStatus, FencePeerAnswer, LeaseStatus, PeerStatus, StatusReport, TakeoverView, WitnessStatus,
};
use crate::takeover::{RejoinGate, Takeover};
use crate::tls::TlsState;
use crate::Error;
use proto::agent::{AgentAction, AgentConfig, AgentInput, NodeAgent, Phase, RunState};
use proto::wire::{LeaseMode, LeaseReply, NodePhase, Pong, TakeoverPermit, Verdict};
use proto::{Millis, NodeId};
use serde_json::json;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

/// The tick period: about 100 ms, finer when the protocol timers are very short (tests).
pub fn tick_ms(cfg: &Config) -> u64 {
    let t = &cfg.timings;
    (t.heartbeat_interval_ms.min(t.renew_interval_ms) / 4).clamp(10, 100)
}

/// A running agent: its bound addresses and the task to wait for.
pub struct Started {
    pub peer_addr: SocketAddr,
    pub status_addr: SocketAddr,
    pub task: JoinHandle<Result<(), Error>>,
}

impl Started {
    /// Waits until the agent has stopped.
    pub async fn wait(self) -> Result<(), Error> {
        match self.task.await {
            Ok(r) => r,
            Err(e) => Err(Error::Internal(format!("agent task failed: {e}"))),
        }
    }
}

/// Results of the network tasks, back to the loop.
enum NetInput {
    Lease {
        sent_at: Millis,
        result: Result<LeaseReply, String>,
    },
    Pong {
        to: NodeId,
        result: Result<Pong, String>,
    },
}

#[derive(Default)]
struct WitnessSeen {
    last_answer: Option<Millis>,
    reachable: bool,
    last_verdict: Option<String>,
    last_error: Option<String>,
}

#[derive(Default)]
struct PeerSeen {
    address: String,
    last_answer: Option<Millis>,
    vouch: Option<bool>,
    phase: Option<NodePhase>,
    epoch: Option<u64>,
    last_error: Option<String>,
}

fn phase_name(p: NodePhase) -> &'static str {
    match p {
        NodePhase::Starting => "starting",
        NodePhase::Active => "active",
        NodePhase::Fencing => "fencing",
        NodePhase::Fenced => "fenced",
    }
}

async fn bind(field: &str, addr: &str) -> Result<TcpListener, Error> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| Error::Listen {
            field: field.to_string(),
            addr: addr.to_string(),
            source,
        })
}

/// Starts an agent: loads certificates and state, binds the listeners, opens the watchdog and
/// spawns everything. Returns once it runs; stops when `shutdown` flips to true (or its
/// sender is dropped).
/// The certificate must carry the configured node's identity: peers and the witness refuse
/// any other (`run` and `check-config` make the same check).
pub fn check_identity(cfg: &Config, tls: &TlsState) -> Result<(), ConfigError> {
    let names = cfg.names();
    let expected = proto::ids::Identity::Node {
        cluster: names.cluster.clone(),
        room: names.room.clone(),
        node: names.node.clone(),
    };
    if tls.identity != expected {
        return Err(ConfigError {
            file: cfg.origin.clone(),
            field: "tls.cert".into(),
            reason: format!(
                "the certificate is {} but this agent is configured as {}: peers and the \
                 witness would refuse it; issue one with `witness certs node --cluster {} \
                 --room {} --node {}`",
                tls.identity.to_uri(),
                expected.to_uri(),
                names.cluster,
                names.room,
                names.node
            ),
        });
    }
    Ok(())
}

pub async fn start(cfg: Config, shutdown: watch::Receiver<bool>) -> Result<Started, Error> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let tls_err = |e: crate::tls::TlsError| {
        Error::Config(ConfigError {
            file: cfg.origin.clone(),
            field: e.field,
            reason: e.reason,
        })
    };
    let tls = TlsState::load(&cfg.tls).map_err(tls_err)?;
    check_identity(&cfg, &tls).map_err(Error::Config)?;
    let names = cfg.names();
    if cfg.fence_budget_ms() > cfg.timings.fence_deadline_ms {
        tracing::warn!(
            "the fencing drivers' deadlines add up to {} ms, more than timings.fence_deadline_ms \
             ({} ms): a slow but healthy fence can end in a watchdog reset",
            cfg.fence_budget_ms(),
            cfg.timings.fence_deadline_ms
        );
    }
    let clients = Clients::build(&cfg, &tls).map_err(tls_err)?;
    let peer_listener = bind("listen", &cfg.listen).await?;
    let status_listener = bind("status_listen", &cfg.status_listen).await?;
    let peer_addr = peer_listener.local_addr().map_err(|source| Error::Listen {
        field: "listen".into(),
        addr: cfg.listen.clone(),
        source,
    })?;
    let status_addr = status_listener
        .local_addr()
        .map_err(|source| Error::Listen {
            field: "status_listen".into(),
            addr: cfg.status_listen.clone(),
            source,
        })?;

    let store = StateStore::new(&cfg.run_dir, boot_id().map_err(Error::BootId)?);
    let (run, pending) = match store.load() {
        Loaded::Resumed(p) => {
            tracing::info!(phase = ?p.run.phase, epoch = p.run.epoch.0, "resuming the state of the previous agent process on this boot");
            (p.run, p.pending)
        }
        Loaded::Fresh(why) => {
            tracing::info!("{why}");
            (RunState::booted(), Vec::new())
        }
    };

    let metrics = Metrics::new();
    let events = EventSink::new(&cfg.event_socket, &cfg.cluster, &cfg.room, &cfg.node);
    let watchdog = Watchdog::start(&cfg.watchdog, cfg.timings.watchdog_timeout_ms);
    let kube = if cfg.kubernetes.enabled {
        Kube::new(&cfg.kubernetes)
    } else {
        Kube::disabled()
    };
    let hooks = Hooks {
        hooks: cfg.hooks.clone(),
        names: names.clone(),
    };
    let taint: Arc<dyn FenceDriver> = Arc::new(TaintDriver {
        kube: kube.clone(),
        node: cfg.node.clone(),
        key: cfg.kubernetes.fence_taint_key.clone(),
        deadline: Duration::from_millis(cfg.kubernetes.deadline_ms),
        rejoin: RejoinGate::new(Duration::from_millis(cfg.kubernetes.unfence_settle_ms)),
    });
    let drivers: Vec<Arc<dyn FenceDriver>> = vec![
        Arc::new(VmDriver {
            kube: kube.clone(),
            node: cfg.node.clone(),
            cfg: cfg.vm.clone(),
        }),
        Arc::new(DrbdDriver {
            cfg: cfg.drbd.clone(),
        }),
        taint.clone(),
        Arc::new(WatchdogDriver {
            status: watchdog.status(),
        }),
        Arc::new(HooksDriver {
            hooks: hooks.clone(),
        }),
    ];
    let (fb_tx, fb_rx) = mpsc::channel(64);
    let actuators = Actuators::start(
        Parts {
            drivers,
            taint,
            hooks,
            takeover: Takeover {
                kube,
                other_nodes: cfg.peers.iter().map(|p| p.node.clone()).collect(),
                delete: cfg.kubernetes.takeover_delete,
            },
            metrics: metrics.clone(),
            events: events.clone(),
        },
        fb_tx,
    );

    let agent = NodeAgent::new(
        AgentConfig {
            timings: cfg.timings.clone(),
            cluster: names.cluster.clone(),
            room: names.room.clone(),
            node: names.node.clone(),
            peers: cfg.peers.iter().map(|p| NodeId::new(&p.node)).collect(),
            mutation: Default::default(),
        },
        run,
    );

    // Work the previous process left unfinished: a fence in progress is run again (every
    // driver is idempotent), pending Kubernetes actions are repeated.
    if let Phase::Fencing {
        escalated: false, ..
    } = agent.run_state().phase
    {
        actuators.submit(Job::Fence {
            epoch: agent.run_state().epoch,
            reason: "resuming a fence interrupted by an agent restart".into(),
        });
    }
    for a in &pending {
        if let Some(j) = Job::from_action(a) {
            actuators.submit(j);
        }
    }

    let (tls_tx, tls_rx) = watch::channel(Arc::new(tls));
    let (tls_err_tx, tls_err_rx) = watch::channel(None);
    tokio::spawn(crate::tls::reload_task(
        cfg.tls.clone(),
        tls_tx,
        tls_err_tx,
        shutdown.clone(),
    ));
    let (ping_tx, ping_rx) = mpsc::channel(64);
    tokio::spawn(serve_heartbeats(
        peer_listener,
        tls_rx.clone(),
        ping_tx,
        shutdown.clone(),
    ));
    let (report_tx, report_rx) = watch::channel(StatusReport::default());
    let (net_tx, net_rx) = mpsc::channel(256);
    let peers = cfg
        .peers
        .iter()
        .map(|p| {
            (
                NodeId::new(&p.node),
                PeerSeen {
                    address: p.address.clone(),
                    ..Default::default()
                },
            )
        })
        .collect();
    tracing::info!(
        node = %cfg.node, room = %cfg.room, cluster = %cfg.cluster,
        %peer_addr, %status_addr, "agent started"
    );
    let shell = Shell {
        store,
        pending,
        clients: Arc::new(clients.with_metrics(&metrics)),
        tls: tls_rx,
        tls_errors: tls_err_rx,
        watchdog: Some(watchdog),
        actuators,
        metrics,
        events,
        report: report_tx,
        net_tx,
        witness: WitnessSeen::default(),
        peers,
        petting: None,
        last_phase: None,
        last_lease: None,
        clock: Clock,
        agent,
        cfg,
    };
    // The first view is published before anyone can ask for it.
    let mut shell = shell;
    shell.publish(shell.clock.now());
    tokio::spawn(crate::status::serve(
        status_listener,
        report_rx,
        shell.metrics.clone(),
        shutdown.clone(),
    ));
    let task = tokio::spawn(shell.run(shutdown, ping_rx, net_rx, fb_rx));
    Ok(Started {
        peer_addr,
        status_addr,
        task,
    })
}

struct Shell {
    cfg: Config,
    agent: NodeAgent,
    clock: Clock,
    store: StateStore,
    /// Kubernetes actions started but not confirmed; persisted with the run state.
    pending: Vec<AgentAction>,
    /// The HTTPS clients of the current certificates.
    clients: Arc<Clients>,
    tls: watch::Receiver<Arc<TlsState>>,
    tls_errors: watch::Receiver<Option<String>>,
    /// `None` once released at shutdown.
    watchdog: Option<Watchdog>,
    actuators: Actuators,
    metrics: Metrics,
    events: EventSink,
    report: watch::Sender<StatusReport>,
    /// For the network tasks to hand back replies.
    net_tx: mpsc::Sender<NetInput>,
    witness: WitnessSeen,
    peers: BTreeMap<NodeId, PeerSeen>,
    /// Whether the last step petted the watchdog (to log and record transitions).
    petting: Option<bool>,
    last_phase: Option<NodePhase>,
    /// The lease (mode with takeover permit, epoch) last reported on the event socket.
    last_lease: Option<(String, u64)>,
}

impl Shell {
    async fn run(
        mut self,
        mut shutdown: watch::Receiver<bool>,
        mut pings: mpsc::Receiver<PingRequest>,
        mut net: mpsc::Receiver<NetInput>,
        mut feedback: mpsc::Receiver<Feedback>,
    ) -> Result<(), Error> {
        let mut tick = tokio::time::interval(Duration::from_millis(tick_ms(&self.cfg)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let result = loop {
            let r = tokio::select! {
                biased;
                _ = shutdown.changed() => break Ok(()),
                Some(fb) = feedback.recv() => self.on_feedback(fb).await,
                Some(p) = pings.recv() => {
                    match self.step(AgentInput::Ping(p.ping)).await {
                        Ok(pong) => {
                            let answer = pong.unwrap_or_else(|| Err("no answer".into()));
                            let _ = p.reply.send(answer);
                            Ok(())
                        }
                        Err(e) => Err(e),
                    }
                }
                Some(n) = net.recv() => self.on_net(n).await,
                _ = tick.tick() => {
                    self.reload_clients();
                    self.step(AgentInput::Tick).await.map(|_| ())
                }
            };
            if let Err(e) = r {
                break Err(e);
            }
        };
        self.stop().await;
        result
    }

    /// Lets go of the watchdog: disarmed only when this node runs no workloads.
    async fn stop(&mut self) {
        let magic = !self.agent.may_be_running();
        if let Some(w) = self.watchdog.take() {
            if !magic {
                tracing::warn!(
                    "stopping while the node may run workloads: the watchdog stays armed and \
                     resets the machine unless a new agent takes it over in time"
                );
            }
            let _ = tokio::task::spawn_blocking(move || w.close(magic)).await;
        }
        self.metrics.up.set(0);
        tracing::info!("agent stopped");
    }

    fn reload_clients(&mut self) {
        if !self.tls.has_changed().unwrap_or(false) {
            return;
        }
        let tls = self.tls.borrow_and_update().clone();
        match Clients::build(&self.cfg, &tls) {
            Ok(c) => self.clients = Arc::new(c.with_metrics(&self.metrics)),
            Err(e) => tracing::error!("new certificates unusable for clients: {e}"),
        }
    }

    async fn on_feedback(&mut self, fb: Feedback) -> Result<(), Error> {
        match fb {
            Feedback::FenceDone { ok } => {
                self.events.emit("fence_done", json!({"ok": ok}));
                self.step(AgentInput::FenceDone { ok }).await.map(|_| ())
            }
            Feedback::Done(a) => {
                let before = self.pending.len();
                self.pending.retain(|p| p != &a);
                if self.pending.len() != before {
                    self.save().await?;
                }
                Ok(())
            }
        }
    }

    async fn on_net(&mut self, n: NetInput) -> Result<(), Error> {
        let now = self.clock.now();
        match n {
            NetInput::Lease { sent_at, result } => match result {
                Ok(reply) => {
                    let label = match &reply.verdict {
                        Verdict::Grant { .. } => "grant",
                        Verdict::Fence { .. } => "fence",
                        Verdict::Retry { .. } => "retry",
                    };
                    self.metrics
                        .lease_renewals
                        .with_label_values(&[label])
                        .inc();
                    self.metrics.witness_reachable.set(1);
                    self.witness.reachable = true;
                    self.witness.last_answer = Some(now);
                    self.witness.last_error = None;
                    self.witness.last_verdict = Some(match &reply.verdict {
                        Verdict::Grant { mode, valid_ms } => {
                            format!("grant {} for {valid_ms} ms", mode_name(mode))
                        }
                        Verdict::Fence { reason } => format!("fence: {reason}"),
                        Verdict::Retry { after_ms, reason } => {
                            format!("retry after {after_ms} ms: {reason}")
                        }
                    });
                    self.step(AgentInput::LeaseReply { sent_at, reply })
                        .await
                        .map(|_| ())
                }
                Err(e) => {
                    self.metrics
                        .lease_renewals
                        .with_label_values(&["error"])
                        .inc();
                    self.metrics.witness_reachable.set(0);
                    if self.witness.reachable || self.witness.last_error.is_none() {
                        tracing::warn!("lease request failed: {e}");
                    }
                    self.witness.reachable = false;
                    self.witness.last_error = Some(e);
                    Ok(())
                }
            },
            NetInput::Pong { to, result } => match result {
                Ok(pong) => {
                    if let Some(p) = self.peers.get_mut(&to) {
                        p.last_answer = Some(now);
                        p.vouch = Some(pong.vouch);
                        p.phase = Some(pong.phase);
                        p.epoch = Some(pong.epoch.0);
                        p.last_error = None;
                    }
                    self.step(AgentInput::Pong(pong)).await.map(|_| ())
                }
                Err(e) => {
                    if let Some(p) = self.peers.get_mut(&to) {
                        if p.last_error.is_none() {
                            tracing::warn!(peer = %to, "heartbeat failed: {e}");
                        }
                        p.last_error = Some(e);
                    }
                    Ok(())
                }
            },
        }
    }

    async fn save(&self) -> Result<(), Error> {
        let store = self.store.clone();
        let run = self.agent.run_state().clone();
        let pending = self.pending.clone();
        let r = tokio::task::spawn_blocking(move || store.save(&run, &pending)).await;
        match r {
            Ok(r) => r.map_err(Error::State),
            Err(e) => Err(Error::Internal(format!("state writer failed: {e}"))),
        }
    }

    /// One step of the state machine: persist, then act. Returns the pong for a ping.
    async fn step(&mut self, input: AgentInput) -> Result<Option<Result<Pong, String>>, Error> {
        let now = self.clock.now();
        let step = self.agent.step(now, input);
        // Keep the list of unfinished Kubernetes work in step with the new actions: a newer
        // action supersedes the opposite one (fence cancels unfence, release cancels takeover).
        let before = self.pending.clone();
        for a in &step.actions {
            match a {
                AgentAction::Fence { .. } => self
                    .pending
                    .retain(|p| !matches!(p, AgentAction::Unfence { .. })),
                AgentAction::Unfence { .. } => {
                    self.pending
                        .retain(|p| !matches!(p, AgentAction::Unfence { .. }));
                    self.pending.push(a.clone());
                }
                AgentAction::TakeOver { .. } | AgentAction::ReleaseTakeover { .. } => {
                    self.pending.retain(|p| {
                        !matches!(
                            p,
                            AgentAction::TakeOver { .. } | AgentAction::ReleaseTakeover { .. }
                        )
                    });
                    self.pending.push(a.clone());
                }
                _ => {}
            }
        }
        if step.persist.is_some() || self.pending != before {
            if let Err(e) = self.save().await {
                // The contract cannot be kept. Fencing is always safe to perform, so it still
                // happens; nothing else does, and the agent stops (the watchdog, if armed,
                // then resets a node that may still be running).
                tracing::error!("cannot persist the run state: {e}; stopping");
                for a in &step.actions {
                    if let AgentAction::Fence { .. } = a {
                        if let Some(j) = Job::from_action(a) {
                            self.actuators.submit(j);
                        }
                    }
                }
                return Err(e);
            }
        }
        let mut pet = false;
        for a in step.actions {
            match a {
                AgentAction::PetWatchdog => pet = true,
                AgentAction::SendLease(req) => {
                    let clients = self.clients.clone();
                    let tx = self.net_tx.clone();
                    tokio::spawn(async move {
                        let result = clients.lease(&req).await;
                        let _ = tx
                            .send(NetInput::Lease {
                                sent_at: now,
                                result,
                            })
                            .await;
                    });
                }
                AgentAction::SendPing { to, ping } => {
                    let clients = self.clients.clone();
                    let tx = self.net_tx.clone();
                    tokio::spawn(async move {
                        let result = clients.ping(&to, &ping).await;
                        let _ = tx.send(NetInput::Pong { to, result }).await;
                    });
                }
                other => {
                    self.record_action(&other);
                    if let Some(j) = Job::from_action(&other) {
                        self.actuators.submit(j);
                    }
                }
            }
        }
        if pet {
            if let Some(w) = &self.watchdog {
                w.pet();
            }
        }
        if self.petting != Some(pet) {
            if self.petting.is_some() {
                if pet {
                    tracing::info!("watchdog petting resumed");
                } else {
                    tracing::error!(
                        "watchdog petting stopped: the machine resets unless fencing is confirmed"
                    );
                }
                self.events.emit("watchdog", json!({"petting": pet}));
            }
            self.petting = Some(pet);
        }
        self.publish(now);
        Ok(step.pong)
    }

    fn record_action(&self, a: &AgentAction) {
        match a {
            AgentAction::Fence { epoch, reason } => {
                self.events
                    .emit("fence", json!({"epoch": epoch.0, "reason": reason}));
            }
            AgentAction::Unfence { epoch } => {
                tracing::warn!(epoch = epoch.0, "unfencing this node");
                self.events.emit("unfence", json!({"epoch": epoch.0}));
            }
            AgentAction::TakeOver { epoch, proof } => {
                tracing::warn!(epoch = epoch.0, "taking over the other room's workloads");
                self.events.emit(
                    "takeover",
                    json!({"epoch": epoch.0, "proof": proof.is_some()}),
                );
            }
            AgentAction::ReleaseTakeover { epoch } => {
                tracing::warn!(epoch = epoch.0, "releasing the takeover of the other room");
                self.events.emit("release", json!({"epoch": epoch.0}));
            }
            _ => {}
        }
    }

    /// Publishes the status view and the metrics for time `now`.
    fn publish(&mut self, now: Millis) {
        let run = self.agent.run_state().clone();
        let a = &self.agent;
        let wire = run.phase.wire();
        let phase = phase_name(wire);
        if self.last_phase != Some(wire) {
            tracing::info!(phase, epoch = run.epoch.0, "phase");
            self.events
                .emit("phase", json!({"phase": phase, "epoch": run.epoch.0}));
            self.last_phase = Some(wire);
        }
        let lease_now = run.lease.as_ref().map(|l| (mode_name(&l.mode), l.epoch.0));
        if self.last_lease != lease_now {
            if let Some((mode, epoch)) = &lease_now {
                self.events
                    .emit("lease", json!({"mode": mode, "epoch": epoch}));
            }
            self.last_lease = lease_now;
        }
        let since = match run.phase {
            Phase::Starting => None,
            Phase::Active { since } | Phase::Fencing { since, .. } | Phase::Fenced { since } => {
                Some(since)
            }
        };
        let lease = match &run.lease {
            Some(l) => LeaseStatus {
                valid: a.lease_valid(now),
                mode: Some(match l.mode {
                    LeaseMode::Paired => "paired".into(),
                    LeaseMode::Alone { .. } => "alone".into(),
                }),
                takeover_permit: match l.mode {
                    LeaseMode::Alone { takeover } => Some(permit_name(takeover).into()),
                    LeaseMode::Paired => None,
                },
                epoch: Some(l.epoch.0),
                remaining_ms: l.expires.since(now),
                has_proof: l.proof.is_some(),
            },
            None => LeaseStatus::default(),
        };
        let alone = matches!(
            run.lease.as_ref().map(|l| l.mode),
            Some(LeaseMode::Alone { .. })
        );
        let peer_fenced = run.takeover
            && a.lease_valid(now)
            && alone
            && matches!(run.phase, Phase::Active { .. });
        let reason = if peer_fenced {
            format!(
                "this room holds the right to act alone (epoch {}) and has taken over the \
                 other room after the safe bound: its nodes are fenced or reset",
                run.epoch.0
            )
        } else {
            match run.phase {
                Phase::Fencing { .. } | Phase::Fenced { .. } => {
                    "this node is fencing itself: its DRBD IO must stay frozen".to_string()
                }
                Phase::Starting => "this node has not started yet".to_string(),
                Phase::Active { .. } if alone && a.lease_valid(now) => {
                    "this room may act alone but the takeover bound has not passed yet".to_string()
                }
                Phase::Active { .. } => {
                    "running paired: the other room may still be active".to_string()
                }
            }
        };
        let p_timeout = self.cfg.timings.peer_timeout_ms;
        let peers = self
            .peers
            .iter()
            .map(|(n, p)| PeerStatus {
                node: n.to_string(),
                address: p.address.clone(),
                reachable: p.last_answer.is_some_and(|t| now.since(t) < p_timeout),
                vouch: p.vouch,
                phase: p.phase.map(|p| phase_name(p).to_string()),
                epoch: p.epoch,
                last_answer_ago_ms: p.last_answer.map(|t| now.since(t)),
                last_error: p.last_error.clone(),
            })
            .collect();
        let tls = self.tls.borrow().clone();
        let watchdog = self
            .watchdog
            .as_ref()
            .map(|w| w.status().borrow().clone())
            .unwrap_or_default();
        let report = StatusReport {
            cluster: self.cfg.cluster.clone(),
            room: self.cfg.room.clone(),
            node: self.cfg.node.clone(),
            phase: phase.into(),
            phase_for_ms: since.map(|s| now.since(s)),
            escalated: matches!(
                run.phase,
                Phase::Fencing {
                    escalated: true,
                    ..
                }
            ),
            authority: a.authority(now),
            vouching: a.vouching(),
            claiming: a.claims(now),
            watchdog_petting: self.petting.unwrap_or(false),
            epoch: run.epoch.0,
            lease,
            witness: WitnessStatus {
                url: self.cfg.witness_url.clone(),
                reachable: self.witness.reachable,
                last_answer_ago_ms: self.witness.last_answer.map(|t| now.since(t)),
                last_verdict: self.witness.last_verdict.clone(),
                last_error: self.witness.last_error.clone(),
            },
            peer_contact: a.peer_contact(now),
            peer_reachable: a.peer_reachable(now),
            peers,
            fencing: self.actuators.fencing.borrow().clone(),
            takeover: TakeoverView {
                active: run.takeover,
                work: self.actuators.takeover_status.borrow().clone(),
            },
            watchdog: watchdog.clone(),
            certificate: CertStatus {
                identity: tls.identity.to_uri(),
                expires_in_s: tls.expiry_seconds(),
                reload_error: self.tls_errors.borrow().clone(),
            },
            pending: self.pending.clone(),
            fence_peer: FencePeerAnswer {
                peer_fenced,
                phase: phase.into(),
                reason,
            },
            published: Some(tokio::time::Instant::now()),
        };
        let m = &self.metrics;
        m.set_phase(phase);
        m.lease_valid.set(i64::from(report.lease.valid));
        m.lease_remaining_seconds
            .set(report.lease.remaining_ms as f64 / 1000.0);
        m.peer_contact.set(i64::from(report.peer_contact));
        m.peer_reachable.set(i64::from(report.peer_reachable));
        m.takeover_active.set(i64::from(run.takeover));
        m.epoch.set(run.epoch.0 as i64);
        m.watchdog_held.set(i64::from(watchdog.held));
        m.certificate_expiry_seconds
            .set(report.certificate.expires_in_s);
        let _ = self.report.send(report);
    }
}

fn mode_name(m: &LeaseMode) -> String {
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
