//! A node's agent: decides, from its lease with the witness and its heartbeats with the other
//! room, whether this node may run, must fence, may unfence, or may take over the other room.
//!
//! A pure state machine: [`NodeAgent::step`] takes the node's monotonic time and one input and
//! returns [`AgentStep`]: a [`RunState`] to write *before* acting (the shell keeps it in a file
//! under `/run`, so it survives an agent restart but not a reboot), the actions to perform, and
//! for a ping the answer to send.
//!
//! The rule (see `docs/protocol.md`): a node may run while it holds a valid grant from the
//! witness, or, while it runs paired, a vouch from every node of the other room for a ping it
//! sent less than `peer_timeout_ms` ago. Otherwise it fences, and unfences only on a new grant.
use crate::config::{Mutation, Timings};
use crate::ids::{ClusterId, Epoch, NodeId, RoomId};
use crate::time::Millis;
use crate::wire::{
    LeaseMode, LeaseReply, LeaseRequest, Membership, NodePhase, PeerReport, Ping, Pong,
    TakeoverPermit, Verdict, WIRE_VERSION,
};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// Who this node is and whom it heartbeats.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct AgentConfig {
    pub timings: Timings,
    pub cluster: ClusterId,
    pub room: RoomId,
    pub node: NodeId,
    /// The nodes of the other room this node's configuration names: the seed of its view.
    /// Peer contact needs a vouch from every *counted* node of the other room (these, and the
    /// witness's members, minus the ones the witness says no longer count), so that any one
    /// survivor node that stops vouching ends the other room's peer contact.
    pub peers: Vec<NodeId>,
    /// This node's heartbeat endpoint (`host:port`) as the other room reaches it; reported to
    /// the witness, which hands it to them with the membership.
    #[serde(default)]
    pub address: Option<String>,
    #[serde(skip)]
    pub mutation: Mutation,
}

/// A node's phase, with the time it entered it (node-local).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "phase")]
pub enum Phase {
    Starting,
    Active { since: Millis },
    Fencing { since: Millis, escalated: bool },
    Fenced { since: Millis },
}

impl Phase {
    pub fn wire(&self) -> NodePhase {
        match self {
            Phase::Starting => NodePhase::Starting,
            Phase::Active { .. } => NodePhase::Active,
            Phase::Fencing { .. } => NodePhase::Fencing,
            Phase::Fenced { .. } => NodePhase::Fenced,
        }
    }
}

/// A grant this node holds.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct HeldLease {
    pub epoch: Epoch,
    pub mode: LeaseMode,
    /// When the request that earned it was sent (node-local).
    pub requested_at: Millis,
    /// `requested_at + valid_ms`: the node stops relying on it then.
    pub expires: Millis,
    /// The witness's signed proof, if the shell attached one.
    pub proof: Option<String>,
}

/// What must survive an agent restart (not a reboot): written before the actions it allows.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct RunState {
    pub phase: Phase,
    pub epoch: Epoch,
    pub lease: Option<HeldLease>,
    /// Peer contact lasts until then (the oldest vouch's ping time plus `peer_timeout_ms`).
    pub vouched_until: Option<Millis>,
    /// When this node stopped vouching because its room was granted the right to act alone.
    pub alone_since: Option<Millis>,
    /// This node has taken over the other room's workloads.
    pub takeover: bool,
    /// Peer contact was held at some point since this node became active.
    pub had_contact: bool,
    /// When this node last stopped vouching (fencing, or granted the right to act alone), while
    /// it has not vouched since. A survivor that was fenced counts its takeover wait from here,
    /// not from its unfence: it has not vouched in between.
    #[serde(default)]
    pub stopped_vouching: Option<Millis>,
    /// When this active node resumed vouching after acting alone (a rejoin), until it has peer
    /// contact again: like a node that just became active, it gives the other room's nodes, which
    /// are unfencing only now, one peer timeout to vouch before it claims.
    #[serde(default)]
    pub resumed_vouching: Option<Millis>,
    /// The cluster's membership as this node last learned it from the witness (`None`: only
    /// its configuration). Kept across agent restarts: a restart must not forget that a node
    /// was added.
    #[serde(default)]
    pub members: Option<Membership>,
}

impl RunState {
    pub fn booted() -> RunState {
        RunState {
            phase: Phase::Starting,
            epoch: Epoch(0),
            lease: None,
            vouched_until: None,
            alone_since: None,
            takeover: false,
            had_contact: false,
            stopped_vouching: None,
            resumed_vouching: None,
            members: None,
        }
    }
}

/// The nodes of the other room that count for this node's contact rule: those its
/// configuration names and the witness's membership does not mention, and the membership's
/// counted members of the other room.
pub fn counted_peers(cfg: &AgentConfig, members: Option<&Membership>) -> BTreeSet<NodeId> {
    let named = |n: &NodeId| members.is_some_and(|m| m.members.iter().any(|e| &e.node == n));
    let mut set: BTreeSet<NodeId> = cfg.peers.iter().filter(|p| !named(p)).cloned().collect();
    if let Some(m) = members {
        set.extend(m.counted_peers(&cfg.room).map(|e| e.node.clone()));
    }
    set.remove(&cfg.node);
    set
}

/// One input to the agent.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum AgentInput {
    /// Time passed (the shell ticks often, e.g. every 100 ms).
    Tick,
    /// The witness answered the request this node sent at `sent_at`.
    LeaseReply { sent_at: Millis, reply: LeaseReply },
    /// A node of the other room answered one of our pings.
    Pong(Pong),
    /// A node of the other room pinged us.
    Ping(Ping),
    /// The fencing drivers finished: all confirmed (`ok`), or one failed or overran.
    FenceDone { ok: bool },
    /// The node's health score changed (used by the witness only to break split ties).
    Health(u32),
}

/// Something the shell must do.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "action")]
pub enum AgentAction {
    SendLease(LeaseRequest),
    SendPing {
        to: NodeId,
        ping: Ping,
    },
    /// Keep the watchdog from firing (emitted on every step while the node may run).
    PetWatchdog,
    /// Run the fencing drivers in their order (the agent's `drivers::FenceDrivers`) and report
    /// back.
    Fence {
        epoch: Epoch,
        reason: String,
    },
    /// Undo our fence: remove our taint, run unfence hooks. Workloads come back by themselves.
    Unfence {
        epoch: Epoch,
    },
    /// Let the other room's workloads restart here (out-of-service taint on its nodes).
    TakeOver {
        epoch: Epoch,
        proof: Option<String>,
    },
    /// Lift the out-of-service taint from the other room's nodes.
    ReleaseTakeover {
        epoch: Epoch,
    },
}

/// What one step decided.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct AgentStep {
    /// Write this before performing `actions` or sending `pong`.
    pub persist: Option<RunState>,
    pub actions: Vec<AgentAction>,
    /// The answer to an [`AgentInput::Ping`]: a pong, or why the ping was refused.
    pub pong: Option<Result<Pong, String>>,
}

/// What this node knows of one node of the other room (memory only).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
struct PeerSeen {
    /// The ping in flight: (seq, sent_at).
    pending: Option<(u64, Millis)>,
    /// Send time of the latest ping answered with a vouch.
    vouched_ping: Option<Millis>,
    /// Send time of the latest ping answered with a vouch by a node that runs (evidence for
    /// the witness that the peer's room runs).
    vouched_active_ping: Option<Millis>,
    /// Send time of the latest ping answered at all.
    answered_ping: Option<Millis>,
    last_phase: Option<NodePhase>,
}

/// The agent state machine for one node.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct NodeAgent {
    cfg: AgentConfig,
    run: RunState,
    peers: BTreeMap<NodeId, PeerSeen>,
    seq: u64,
    last_ping: Option<Millis>,
    last_renew: Option<Millis>,
    /// The witness asked us to come back later, not before this time.
    renew_not_before: Option<Millis>,
    /// The latest renewal sent has not been answered yet: the next one goes out after
    /// [`Timings::renew_retry_ms`], not after a whole renew interval, so a lease outlives any
    /// witness silence shorter than `L − R − renew_retry_ms` minus a round trip.
    awaiting_reply: bool,
    /// Something the witness should hear about changed: renew now rather than at the interval.
    report_dirty: bool,
    /// Restarted while fencing: the drivers must run again (they are idempotent).
    refence: bool,
    health: u32,
    /// When this agent process first stepped: it knows of no vouch it gave before.
    started: Option<Millis>,
    /// Per node of the other room, when this node last answered its ping with a vouch.
    vouch_given: BTreeMap<NodeId, Millis>,
}

impl NodeAgent {
    /// Starts the agent. `run` is what the previous agent process on this boot persisted, or
    /// [`RunState::booted`] after a reboot.
    pub fn new(cfg: AgentConfig, run: RunState) -> NodeAgent {
        let peers = counted_peers(&cfg, run.members.as_ref())
            .into_iter()
            .map(|p| (p, PeerSeen::default()))
            .collect();
        NodeAgent {
            cfg,
            peers,
            seq: 0,
            last_ping: None,
            last_renew: None,
            renew_not_before: None,
            awaiting_reply: false,
            report_dirty: true,
            refence: matches!(run.phase, Phase::Fencing { .. }),
            run,
            health: 0,
            started: None,
            vouch_given: BTreeMap::new(),
        }
    }

    /// The nodes of the other room this node counts for peer contact (and pings).
    pub fn peers(&self) -> impl Iterator<Item = &NodeId> {
        self.peers.keys()
    }

    /// Where a counted peer's heartbeat endpoint is, as the witness's membership says (`None`:
    /// only the configuration knows).
    pub fn peer_address(&self, node: &NodeId) -> Option<&str> {
        self.run
            .members
            .as_ref()?
            .members
            .iter()
            .find(|e| &e.node == node)?
            .address
            .as_deref()
    }

    /// The membership version this node holds (0: its configuration only).
    pub fn members_version(&self) -> u64 {
        self.run.members.as_ref().map_or(0, |m| m.version)
    }

    pub fn run_state(&self) -> &RunState {
        &self.run
    }
    pub fn config(&self) -> &AgentConfig {
        &self.cfg
    }

    /// The node's workloads may be running: it is active, or fencing and not yet confirmed.
    pub fn may_be_running(&self) -> bool {
        matches!(self.run.phase, Phase::Active { .. } | Phase::Fencing { .. })
    }

    /// Our pongs vouch: running paired and not granted the right to act alone, or booted and
    /// not yet granted anything. A vouch promises only that this node has not been granted
    /// the right to act alone (so its room will not take over through it while the pinger
    /// relies on the answer); a node that has not started has been granted nothing, and a
    /// node rebooted while the witness is away keeps the other room's contact whole. The
    /// witness takes only an *active* node's vouch as evidence that its room runs.
    pub fn vouching(&self) -> bool {
        match self.run.phase {
            Phase::Active { .. } => self.run.alone_since.is_none(),
            Phase::Starting => true,
            Phase::Fencing { .. } | Phase::Fenced { .. } => false,
        }
    }

    pub fn lease_valid(&self, now: Millis) -> bool {
        self.run.lease.as_ref().is_some_and(|l| now < l.expires)
    }

    /// Peer contact: we run and vouch, and every counted node of the other room vouched for a
    /// recent ping.
    pub fn peer_contact(&self, now: Millis) -> bool {
        matches!(self.run.phase, Phase::Active { .. })
            && self.vouching()
            && self.run.vouched_until.is_some_and(|u| now < u)
    }

    /// Every node of the other room answered a recent ping, vouching or not.
    pub fn peer_reachable(&self, now: Millis) -> bool {
        let p = self.cfg.timings.peer_timeout_ms;
        !self.peers.is_empty()
            && self
                .peers
                .values()
                .all(|s| s.answered_ping.is_some_and(|t| now < t + p))
    }

    /// When the node's current right to run ends (or ended): the later of its grant's expiry
    /// and, while it vouches, its peer contact's.
    pub fn authority_end(&self) -> Option<Millis> {
        let lease = self.run.lease.as_ref().map(|l| l.expires);
        let peer = if matches!(self.run.phase, Phase::Active { .. }) && self.vouching() {
            self.run.vouched_until
        } else {
            None
        };
        lease.max(peer)
    }

    /// The node may run now.
    pub fn authority(&self, now: Millis) -> bool {
        self.lease_valid(now) || self.peer_contact(now)
    }

    /// This running node lost peer contact and asks the witness to let its room act alone. A
    /// node that just became active gets one peer timeout to establish contact first.
    pub fn claims(&self, now: Millis) -> bool {
        match self.run.phase {
            Phase::Active { since } => {
                let grace_from = self.run.resumed_vouching.map_or(since, |r| r.max(since));
                self.vouching()
                    && !self.peer_contact(now)
                    && (self.run.had_contact
                        || now >= grace_from + self.cfg.timings.peer_timeout_ms)
            }
            _ => false,
        }
    }

    /// The watchdog may be petted: the node runs with authority, fences within its deadline,
    /// is fenced, or has not started anything yet.
    pub fn may_pet_watchdog(&self, now: Millis) -> bool {
        match self.run.phase {
            Phase::Starting | Phase::Fenced { .. } => true,
            Phase::Active { .. } => self.authority(now),
            Phase::Fencing { since, escalated } => {
                !escalated && now < since + self.cfg.timings.fence_deadline_ms
            }
        }
    }

    /// The request this node would send now.
    pub fn lease_request(&self, now: Millis) -> LeaseRequest {
        LeaseRequest {
            version: WIRE_VERSION,
            cluster: self.cfg.cluster.clone(),
            room: self.cfg.room.clone(),
            node: self.cfg.node.clone(),
            epoch: self.run.epoch,
            phase: self.run.phase.wire(),
            peer_contact: self.peer_contact(now),
            peer_reachable: self.peer_reachable(now),
            claim: self.claims(now),
            takeover: self.run.takeover,
            health: self.health,
            peers: self.peer_reports(now),
            members_version: self.members_version(),
            address: self.cfg.address.clone(),
        }
    }

    /// What this node heard from each counted peer within the last peer timeout (older
    /// answers say nothing current), and how long it has given each no vouch.
    fn peer_reports(&self, now: Millis) -> Vec<PeerReport> {
        let p = self.cfg.timings.peer_timeout_ms;
        let age = |t: Option<Millis>| t.map(|t| now.since(t)).filter(|a| *a < p);
        let started = self.started.unwrap_or(now);
        self.peers
            .iter()
            .map(|(node, s)| PeerReport {
                node: node.clone(),
                vouched_ms_ago: age(s.vouched_active_ping),
                answered_ms_ago: age(s.answered_ping),
                unvouched_ms: Some(
                    now.since(
                        self.vouch_given
                            .get(node)
                            .copied()
                            .unwrap_or(started)
                            .max(started),
                    ),
                ),
            })
            .collect()
    }

    /// One step at node-local time `now`.
    pub fn step(&mut self, now: Millis, input: AgentInput) -> AgentStep {
        self.started.get_or_insert(now);
        let before = self.run.clone();
        let claim_before = self.claims(now);
        let mut out = AgentStep::default();
        if self.refence {
            self.refence = false;
            out.actions.push(AgentAction::Fence {
                epoch: self.run.epoch,
                reason: "the agent restarted while fencing; fencing again".to_string(),
            });
        }
        match input {
            AgentInput::Tick => {}
            AgentInput::Health(h) => {
                if h != self.health {
                    self.health = h;
                    self.report_dirty = true;
                }
            }
            AgentInput::LeaseReply { sent_at, reply } => {
                self.on_lease_reply(now, sent_at, reply, &mut out)
            }
            AgentInput::Pong(pong) => self.on_pong(now, pong),
            AgentInput::Ping(ping) => out.pong = Some(self.on_ping(now, ping)),
            AgentInput::FenceDone { ok } => {
                if let Phase::Fencing { since, .. } = self.run.phase {
                    self.run.phase = if ok {
                        Phase::Fenced { since: now }
                    } else {
                        // A driver failed or overran: stop petting so the watchdog resets us.
                        Phase::Fencing {
                            since,
                            escalated: true,
                        }
                    };
                    self.report_dirty = true;
                }
            }
        }
        self.evaluate(now, &mut out);
        self.timers(now, &mut out);
        if self.claims(now) != claim_before {
            self.report_dirty = true;
        }
        if self.may_pet_watchdog(now) {
            out.actions.push(AgentAction::PetWatchdog);
        }
        if self.run != before {
            out.persist = Some(self.run.clone());
        }
        out
    }

    fn start_fencing(&mut self, now: Millis, reason: String, out: &mut AgentStep) {
        if matches!(self.run.phase, Phase::Fencing { .. } | Phase::Fenced { .. }) {
            return;
        }
        if self.vouching() {
            self.run.stopped_vouching = Some(now);
        }
        self.run.phase = if self.run.phase == Phase::Starting {
            // Nothing runs on a node that has not started: it is fenced already. The drivers
            // still run once, idempotently, to make sure.
            Phase::Fenced { since: now }
        } else {
            // The fence deadline counts from when the right to run ended, not from when this
            // step noticed it: the bound `F + W` after the end of authority then holds however
            // late the agent ticks.
            let since = self.authority_end().map_or(now, |end| end.min(now));
            Phase::Fencing {
                since,
                escalated: false,
            }
        };
        self.run.lease = None;
        self.run.alone_since = None;
        self.run.vouched_until = None;
        self.report_dirty = true;
        out.actions.push(AgentAction::Fence {
            epoch: self.run.epoch,
            reason,
        });
        if self.run.takeover {
            // A survivor that fences gives the other room's nodes back: they are fenced too
            // (our fence taint and theirs keep workloads off), and a later rejoin must not find
            // an out-of-service taint nobody owns.
            self.run.takeover = false;
            out.actions.push(AgentAction::ReleaseTakeover {
                epoch: self.run.epoch,
            });
        }
    }

    fn on_lease_reply(
        &mut self,
        now: Millis,
        sent_at: Millis,
        reply: LeaseReply,
        out: &mut AgentStep,
    ) {
        if reply.cluster != self.cfg.cluster
            || reply.room != self.cfg.room
            || reply.node != self.cfg.node
        {
            return;
        }
        if self.last_renew.is_some_and(|l| sent_at >= l) {
            self.awaiting_reply = false;
        }
        if let Some(m) = reply.members {
            if m.version > self.members_version() {
                self.adopt_membership(now, m);
            }
        }
        if reply.epoch < self.run.epoch {
            return; // stale: we have seen a newer epoch
        }
        if reply.epoch > self.run.epoch {
            self.run.epoch = reply.epoch;
        }
        match reply.verdict {
            Verdict::Retry { after_ms, .. } => {
                self.renew_not_before =
                    Some(now + after_ms.min(self.cfg.timings.renew_interval_ms));
            }
            Verdict::Fence { reason } => {
                self.start_fencing(now, format!("the witness says: {reason}"), out);
            }
            Verdict::Grant { mode, valid_ms } => {
                let expires = sent_at + valid_ms;
                if expires <= now {
                    return; // arrived too late to be of use
                }
                if let Some(held) = &self.run.lease {
                    if held.requested_at > sent_at && held.epoch >= reply.epoch {
                        return; // an answer to an older request, overtaken
                    }
                }
                if matches!(self.run.phase, Phase::Fencing { .. }) {
                    return; // finish fencing first; unfence needs a grant after that
                }
                self.run.lease = Some(HeldLease {
                    epoch: reply.epoch,
                    mode,
                    requested_at: sent_at,
                    expires,
                    proof: reply.proof,
                });
                match mode {
                    LeaseMode::Alone { takeover } => {
                        if self.run.alone_since.is_none()
                            && matches!(self.run.phase, Phase::Active { .. })
                        {
                            self.run.alone_since = Some(now);
                            self.run.stopped_vouching = Some(now);
                        }
                        if takeover == TakeoverPermit::Release && self.run.takeover {
                            self.run.takeover = false;
                            out.actions.push(AgentAction::ReleaseTakeover {
                                epoch: self.run.epoch,
                            });
                        }
                    }
                    LeaseMode::Paired => {
                        if matches!(self.run.phase, Phase::Active { .. }) {
                            self.run.stopped_vouching = None;
                            if self.run.alone_since.is_some() {
                                // The rooms rejoin: the other room unfences only now.
                                self.run.had_contact = false;
                                self.run.resumed_vouching = Some(now);
                            }
                        }
                        if self.run.takeover {
                            self.run.takeover = false;
                            out.actions.push(AgentAction::ReleaseTakeover {
                                epoch: self.run.epoch,
                            });
                        }
                        self.run.alone_since = None;
                    }
                }
            }
        }
    }

    fn on_pong(&mut self, now: Millis, pong: Pong) {
        if pong.cluster != self.cfg.cluster || pong.room == self.cfg.room {
            return;
        }
        let Some(seen) = self.peers.get_mut(&pong.node) else {
            return;
        };
        let Some((seq, sent_at)) = seen.pending else {
            return;
        };
        if seq != pong.seq {
            return;
        }
        seen.pending = None;
        seen.answered_ping = Some(sent_at);
        seen.last_phase = Some(pong.phase);
        if pong.vouch {
            seen.vouched_ping = Some(sent_at);
            if pong.phase == NodePhase::Active {
                seen.vouched_active_ping = Some(sent_at);
            }
        }
        self.recompute_vouch(now);
    }

    /// A newer membership from the witness: the counted peers change (a new node counts from
    /// now on; an excluded or removed one no longer does), and the next report acknowledges it.
    fn adopt_membership(&mut self, now: Millis, m: Membership) {
        self.run.members = Some(m);
        let counted = counted_peers(&self.cfg, self.run.members.as_ref());
        self.peers.retain(|n, _| counted.contains(n));
        for n in counted {
            self.peers.entry(n).or_default();
        }
        self.vouch_given.retain(|n, _| self.peers.contains_key(n));
        self.report_dirty = true;
        self.recompute_vouch(now);
    }

    fn recompute_vouch(&mut self, now: Millis) {
        let p = self.cfg.timings.peer_timeout_ms;
        let mut counted: Vec<Option<Millis>> =
            self.peers.values().map(|s| s.vouched_ping).collect();
        if mutated!(self.cfg.mutation, ContactSkipsVouchingMember) && counted.len() > 1 {
            // Broken on purpose: one member of the other room is left out of the rule.
            counted.pop();
        }
        // Every counted peer must have vouched; with none counted there is no contact.
        let oldest = counted
            .into_iter()
            .collect::<Option<Vec<_>>>()
            .and_then(|v| v.into_iter().min());
        self.run.vouched_until = oldest.map(|o| o + p);
        if self.peer_contact(now) && !self.run.had_contact {
            self.run.had_contact = true;
            self.run.resumed_vouching = None;
        }
    }

    fn on_ping(&mut self, now: Millis, ping: Ping) -> Result<Pong, String> {
        crate::wire::check_version(ping.version)?;
        if ping.cluster != self.cfg.cluster {
            return Err(format!(
                "ping from cluster {} refused: this node belongs to cluster {}",
                ping.cluster, self.cfg.cluster
            ));
        }
        if ping.room == self.cfg.room {
            return Err(format!(
                "ping from room {} refused: heartbeats come from the other room only",
                ping.room
            ));
        }
        if !self.peers.contains_key(&ping.node) {
            return Err(format!(
                "ping from node {} refused: it is not a counted member of the other room for \
                 this node (counted: {}; membership version {}); a new node is counted once the \
                 witness has admitted it, an excluded one once it is readmitted",
                ping.node,
                self.peers
                    .keys()
                    .map(|p| p.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
                self.members_version()
            ));
        }
        if mutated!(self.cfg.mutation, TrustOneWayHeartbeat) {
            // Broken on purpose: hearing a peer is taken as the peer vouching for us.
            if let Some(seen) = self.peers.get_mut(&ping.node) {
                seen.vouched_ping = Some(now);
                seen.answered_ping = Some(now);
            }
            self.recompute_vouch(now);
        }
        let vouch = self.vouching();
        if vouch {
            self.vouch_given.insert(ping.node.clone(), now);
        }
        Ok(Pong {
            version: WIRE_VERSION,
            cluster: self.cfg.cluster.clone(),
            room: self.cfg.room.clone(),
            node: self.cfg.node.clone(),
            seq: ping.seq,
            epoch: self.run.epoch,
            phase: self.run.phase.wire(),
            vouch,
        })
    }

    fn evaluate(&mut self, now: Millis, out: &mut AgentStep) {
        let t = self.cfg.timings.clone();
        match self.run.phase {
            Phase::Starting => {
                if self.lease_valid(now) {
                    // Unfence on the first activation too: a node fenced before a reboot still
                    // carries our taint (idempotent when it does not).
                    self.become_active(now, out, true);
                }
            }
            Phase::Active { .. } => {
                if !self.authority(now) {
                    let reason = if self.run.lease.is_some() || self.run.alone_since.is_some() {
                        "the lease from the witness ran out and there is no peer contact"
                    } else {
                        "no lease from the witness and no peer contact"
                    };
                    self.start_fencing(now, reason.to_string(), out);
                    return;
                }
                self.consider_takeover(now, out);
            }
            Phase::Fencing { .. } => {}
            Phase::Fenced { since } => {
                if self.lease_valid(now) && now >= since + t.min_fenced_ms {
                    self.become_active(now, out, true);
                }
            }
        }
    }

    fn become_active(&mut self, now: Millis, out: &mut AgentStep, unfence: bool) {
        self.run.phase = Phase::Active { since: now };
        self.run.had_contact = false;
        self.run.resumed_vouching = None;
        self.run.vouched_until = None;
        for s in self.peers.values_mut() {
            s.vouched_ping = None;
            s.vouched_active_ping = None;
        }
        let alone = matches!(
            self.run.lease.as_ref().map(|l| l.mode),
            Some(LeaseMode::Alone { .. })
        );
        // Not vouched since `stopped_vouching` (fenced nodes do not vouch): the takeover wait
        // runs from there. After a reboot there is no record, so it runs from now.
        self.run.alone_since = alone.then(|| self.run.stopped_vouching.unwrap_or(now));
        if !alone {
            self.run.stopped_vouching = None;
        }
        self.report_dirty = true;
        if unfence {
            out.actions.push(AgentAction::Unfence {
                epoch: self.run.epoch,
            });
        }
    }

    fn consider_takeover(&mut self, now: Millis, out: &mut AgentStep) {
        if self.run.takeover {
            return;
        }
        let Some(lease) = self.run.lease.as_ref() else {
            return;
        };
        if now >= lease.expires {
            return;
        }
        let LeaseMode::Alone { takeover } = lease.mode else {
            return;
        };
        let Some(alone_since) = self.run.alone_since else {
            return;
        };
        let allowed = if mutated!(self.cfg.mutation, TakeoverWithoutWait) {
            takeover != TakeoverPermit::Release
        } else {
            takeover == TakeoverPermit::Allowed
                && now >= alone_since + self.cfg.timings.node_takeover_wait_ms()
        };
        if allowed {
            self.run.takeover = true;
            self.report_dirty = true;
            out.actions.push(AgentAction::TakeOver {
                epoch: lease.epoch,
                proof: lease.proof.clone(),
            });
        }
    }

    fn timers(&mut self, now: Millis, out: &mut AgentStep) {
        let t = &self.cfg.timings;
        if self
            .last_ping
            .is_none_or(|l| now >= l + t.heartbeat_interval_ms)
        {
            self.last_ping = Some(now);
            for (node, seen) in self.peers.iter_mut() {
                self.seq += 1;
                seen.pending = Some((self.seq, now));
                out.actions.push(AgentAction::SendPing {
                    to: node.clone(),
                    ping: Ping {
                        version: WIRE_VERSION,
                        cluster: self.cfg.cluster.clone(),
                        room: self.cfg.room.clone(),
                        node: self.cfg.node.clone(),
                        seq: self.seq,
                        epoch: self.run.epoch,
                    },
                });
            }
        }
        // A renewal in flight never holds back the next: unanswered, it is retried sooner.
        let interval = if self.awaiting_reply {
            t.renew_retry_ms()
        } else {
            t.renew_interval_ms
        };
        let due = self.last_renew.is_none_or(|l| now >= l + interval);
        let allowed = self.renew_not_before.is_none_or(|n| now >= n);
        if (due || self.report_dirty) && allowed {
            self.last_renew = Some(now);
            self.renew_not_before = None;
            self.report_dirty = false;
            self.awaiting_reply = true;
            out.actions
                .push(AgentAction::SendLease(self.lease_request(now)));
        }
    }
}
