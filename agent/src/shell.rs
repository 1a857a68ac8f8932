//! The main loop around [`proto::agent::NodeAgent`]: keeps time, moves bytes, persists and
//! hands work to the workers. It decides nothing about fencing, unfencing, takeover or vouching;
//! every such decision comes out of `NodeAgent::step`.
//!
//! One loop owns the stepping of the state machine. Every input (a tick every [`tick_ms`], a
//! lease reply, a pong, a ping from a peer, a worker's report) becomes one `step`; the step's
//! `persist` (and the pending work its actions add, see [`proto::pending`]) is written to disk
//! before any of its actions is performed or its pong sent. [`crate::startup`] builds the loop.
use crate::actuator::{Actuators, Desired, Feedback, FenceRun};
use crate::clock::Clock;
use crate::config::Config;
use crate::drivers::watchdog::Watchdog;
use crate::events::EventSink;
use crate::machine::SharedAgent;
use crate::metrics::Metrics;
use crate::net::{Clients, PingRequest};
use crate::state::StateStore;
use crate::status::StatusReport;
use crate::tls::TlsState;
use crate::view::{self, mode_name, phase_name, Observed, PeerSeen, WitnessSeen};
use crate::Error;
use proto::agent::{AgentAction, AgentInput};
use proto::pending::PendingWork;
use proto::wire::{LeaseReply, NodePhase, Pong, Verdict};
use proto::{Millis, NodeId};
use serde_json::json;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};

pub use crate::startup::{check_identity, start, Started};

/// The tick period: about 100 ms, finer when the protocol timers are very short (tests).
pub fn tick_ms(cfg: &Config) -> u64 {
    let t = &cfg.timings;
    (t.heartbeat_interval_ms.min(t.renew_interval_ms) / 4).clamp(10, 100)
}

/// Results of the network tasks, back to the loop.
pub(crate) enum NetInput {
    Lease {
        sent_at: Millis,
        result: Result<LeaseReply, String>,
    },
    Pong {
        to: NodeId,
        result: Result<Pong, String>,
    },
}

pub(crate) struct Shell {
    pub(crate) cfg: Config,
    pub(crate) agent: SharedAgent,
    pub(crate) clock: Clock,
    pub(crate) store: StateStore,
    /// Kubernetes actions started but not confirmed; persisted with the run state.
    pub(crate) pending: PendingWork,
    /// The fencing run last asked of the own-node worker.
    pub(crate) fence: Option<FenceRun>,
    /// The HTTPS clients of the current certificates.
    pub(crate) clients: Arc<Clients>,
    /// The membership version `clients` were built for.
    pub(crate) clients_members: u64,
    pub(crate) tls: watch::Receiver<Arc<TlsState>>,
    pub(crate) tls_errors: watch::Receiver<Option<String>>,
    /// `None` once released at shutdown.
    pub(crate) watchdog: Option<Watchdog>,
    pub(crate) actuators: Actuators,
    /// The other room's nodes a takeover acts on (shared with the Kubernetes worker).
    pub(crate) takeover_nodes: crate::takeover::OtherNodes,
    pub(crate) metrics: Metrics,
    pub(crate) events: EventSink,
    /// `None` until the first view is built.
    pub(crate) report: Option<watch::Sender<StatusReport>>,
    /// For the network tasks to hand back replies.
    pub(crate) net_tx: mpsc::Sender<NetInput>,
    pub(crate) witness: WitnessSeen,
    pub(crate) peers: BTreeMap<NodeId, PeerSeen>,
    /// Whether the last step petted the watchdog (to log and record transitions).
    pub(crate) petting: Option<bool>,
    pub(crate) last_phase: Option<NodePhase>,
    /// The lease (mode with takeover permit, epoch) last reported on the event socket.
    pub(crate) last_lease: Option<(String, u64)>,
}

impl Shell {
    pub(crate) async fn run(
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
        let magic = !self.agent.with(|a| a.may_be_running());
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

    /// New certificates, or a new membership (a peer added, or moved to a new address):
    /// new clients. A configured peer keeps its configured address.
    fn reload_clients(&mut self) {
        let members = self.agent.with(|a| a.members_version());
        if !self.tls.has_changed().unwrap_or(false) && members == self.clients_members {
            return;
        }
        let tls = self.tls.borrow_and_update().clone();
        let learned: BTreeMap<NodeId, String> = self.agent.with(|a| {
            a.peers()
                .filter_map(|p| Some((p.clone(), a.peer_address(p)?.to_string())))
                .collect()
        });
        // A peer the membership added is also one the takeover must free.
        for node in self.takeover_nodes.add(
            self.agent
                .with(|a| a.peers().map(|p| p.to_string()).collect::<Vec<_>>()),
        ) {
            tracing::info!(%node, "node {node} of the other room (from the witness's membership) is now covered by a takeover");
        }
        match Clients::build(&self.cfg, &tls, &learned) {
            Ok(c) => {
                self.clients = Arc::new(c.with_metrics(&self.metrics));
                self.clients_members = members;
            }
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
                if self.pending.done(&a) {
                    self.save().await?;
                    self.desire();
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
                    self.witness.answered(now, &reply.verdict);
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
                    // A peer learned from the membership appears here on its first answer.
                    self.peers
                        .entry(to.clone())
                        .or_default()
                        .answered(now, &pong);
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
        let run = self.agent.with(|a| a.run_state().clone());
        let pending = self.pending.clone();
        let r = tokio::task::spawn_blocking(move || store.save(&run, &pending)).await;
        match r {
            Ok(r) => r.map_err(Error::State),
            Err(e) => Err(Error::Internal(format!("state writer failed: {e}"))),
        }
    }

    /// What the workers are to bring about now.
    fn desire(&self) {
        self.actuators.desire(Desired {
            fence: self.fence.clone(),
            work: self.pending.clone(),
        });
    }

    /// One step of the state machine: persist, then act. Returns the pong for a ping.
    async fn step(&mut self, input: AgentInput) -> Result<Option<Result<Pong, String>>, Error> {
        let now = self.clock.now();
        let step = self.agent.with(|a| a.step(now, input));
        // The unfinished Kubernetes work follows the new decisions (a fence cancels a pending
        // unfence, and so on: the rule is proto's).
        let mut work_changed = false;
        for a in &step.actions {
            work_changed |= self.pending.decided(a);
            if let AgentAction::Fence { epoch, reason } = a {
                self.fence = Some(FenceRun {
                    number: self.fence.as_ref().map_or(1, |f| f.number + 1),
                    epoch: *epoch,
                    reason: reason.clone(),
                });
            }
        }
        if step.persist.is_some() || work_changed {
            if let Err(e) = self.save().await {
                // The contract cannot be kept. Fencing is always safe to perform, so it still
                // happens; nothing else does, and the agent stops (the watchdog, if armed,
                // then resets a node that may still be running).
                tracing::error!("cannot persist the run state: {e}; stopping");
                self.actuators.desire(Desired {
                    fence: self.fence.clone(),
                    work: PendingWork::default(),
                });
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
                other => self.record_action(&other),
            }
        }
        self.desire();
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

    /// Publishes the status view and the metrics for time `now`; returns the view.
    pub(crate) fn publish(&mut self, now: Millis) -> StatusReport {
        let report = self.agent.with(|a| {
            let tls = self.tls.borrow().clone();
            view::report(
                a,
                now,
                Observed {
                    cfg: &self.cfg,
                    witness: &self.witness,
                    peers: &self.peers,
                    petting: self.petting.unwrap_or(false),
                    tls: &tls,
                    tls_error: self.tls_errors.borrow().clone(),
                    watchdog: self
                        .watchdog
                        .as_ref()
                        .map(|w| w.status().borrow().clone())
                        .unwrap_or_default(),
                    fencing: self.actuators.fencing.borrow().clone(),
                    takeover: self.actuators.takeover_status.borrow().clone(),
                    pending: &self.pending,
                },
            )
        });
        let phase = phase_name(report.phase);
        if self.last_phase != Some(report.phase) {
            tracing::info!(phase, epoch = report.epoch, "phase");
            self.events
                .emit("phase", json!({"phase": phase, "epoch": report.epoch}));
            self.last_phase = Some(report.phase);
        }
        let lease_now = self.agent.with(|a| {
            a.run_state()
                .lease
                .as_ref()
                .map(|l| (mode_name(&l.mode), l.epoch.0))
        });
        if self.last_lease != lease_now {
            if let Some((mode, epoch)) = &lease_now {
                self.events
                    .emit("lease", json!({"mode": mode, "epoch": epoch}));
            }
            self.last_lease = lease_now;
        }
        view::record_metrics(&self.metrics, &report);
        if let Some(tx) = &self.report {
            let _ = tx.send(report.clone());
        }
        report
    }
}
