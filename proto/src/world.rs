//! A whole simulated cluster — the witness, every node's agent, the network between them and
//! the faults that can hit them — built from the real [`Arbiter`] and [`NodeAgent`] step
//! functions, with one true clock that the processes cannot see.
//!
//! The model checker (`proto/tests/model_check.rs`), the seeded simulation
//! (`proto/tests/simulation.rs`), the mutation checks and the scenario tests all drive this one
//! world, so they check the code that ships, not a copy of it. The promise is checked here, on
//! the true clock, by [`World::violation`].
//!
//! Faithfulness notes: the network keeps at most one message per directed channel (a newer
//! message replaces an undelivered older one, which models loss), delivers in any order and may
//! hold a message across any number of ticks (delay); processes only act on their own clocks,
//! which advance at fixed per-process rates within the drift bound; a node's workloads count as
//! running until the watchdog check at the next tick after it should have fired (pessimistic).
use crate::agent::{AgentAction, AgentConfig, AgentInput, NodeAgent, Phase, RunState};
use crate::arbiter::{Arbiter, ArbiterConfig, ArbiterInput, ClusterRecord, Mode};
use crate::config::{Mutation, Timings};
use crate::ids::{ClusterId, Epoch, NodeId, RoomId};
use crate::time::Millis;
use crate::wire::{AdminCommand, LeaseMode, LeaseReply, LeaseRequest, Ping, Pong, Verdict};
use std::collections::{BTreeMap, BTreeSet};

/// How fast a process's clock runs against the true clock.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Rate {
    /// `1 - ρ`
    Slow,
    Exact,
    /// `1 + ρ`
    Fast,
}

/// Everything fixed for one run.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct WorldConfig {
    pub timings: Timings,
    /// `(room, node)` for every node.
    pub nodes: Vec<(RoomId, NodeId)>,
    pub preferred_room: Option<RoomId>,
    pub auto_rejoin: bool,
    /// True time per tick, in the same units as the timings.
    pub tick: u64,
    pub mutation: Mutation,
    /// Nodes no other agent's configuration names (added later: learned from the witness).
    pub unlisted: Vec<NodeId>,
}

impl WorldConfig {
    /// Room `a` with nodes `a1..a{na}`, room `b` with `b1..b{nb}`.
    pub fn two_rooms(timings: Timings, na: usize, nb: usize) -> WorldConfig {
        let mut nodes = Vec::new();
        for i in 1..=na {
            nodes.push((RoomId::new("a"), NodeId::new(format!("a{i}"))));
        }
        for i in 1..=nb {
            nodes.push((RoomId::new("b"), NodeId::new(format!("b{i}"))));
        }
        WorldConfig {
            tick: timings.heartbeat_interval_ms.min(timings.renew_interval_ms),
            timings,
            nodes,
            preferred_room: None,
            auto_rejoin: true,
            mutation: Mutation::None,
            unlisted: Vec::new(),
        }
    }

    pub fn cluster(&self) -> ClusterId {
        ClusterId::new("model")
    }

    fn local_step(&self, rate: Rate) -> u64 {
        let rho = self.timings.drift_ppm as u128;
        let t = self.tick as u128;
        let v = match rate {
            Rate::Slow => t * (1_000_000 - rho) / 1_000_000,
            Rate::Exact => t,
            Rate::Fast => t * (1_000_000 + rho) / 1_000_000,
        };
        v as u64
    }

    fn arbiter_config(&self) -> ArbiterConfig {
        ArbiterConfig {
            timings: self.timings.clone(),
            preferred_room: self.preferred_room.clone(),
            auto_rejoin: self.auto_rejoin,
            mutation: self.mutation,
        }
    }

    fn agent_config(&self, i: usize) -> AgentConfig {
        let (room, node) = self.nodes[i].clone();
        AgentConfig {
            timings: self.timings.clone(),
            cluster: self.cluster(),
            peers: self
                .nodes
                .iter()
                .filter(|(r, n)| *r != room && !self.unlisted.contains(n))
                .map(|(_, n)| n.clone())
                .collect(),
            room,
            node,
            address: None,
            mutation: self.mutation,
        }
    }
}

/// One end of a link.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum End {
    Witness,
    Node(usize),
}

/// A directed channel; it holds at most one message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Channel {
    ToWitness(usize),
    FromWitness(usize),
    Ping { from: usize, to: usize },
    Pong { from: usize, to: usize },
}

impl Channel {
    pub fn ends(self) -> (End, End) {
        match self {
            Channel::ToWitness(i) => (End::Node(i), End::Witness),
            Channel::FromWitness(i) => (End::Witness, End::Node(i)),
            Channel::Ping { from, to } | Channel::Pong { from, to } => {
                (End::Node(from), End::Node(to))
            }
        }
    }
}

/// A message in flight.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Msg {
    Lease { sent_at: Millis, req: LeaseRequest },
    Reply { sent_at: Millis, reply: LeaseReply },
    Ping(Ping),
    Pong(Pong),
}

/// The witness host.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct WitnessHost {
    pub rate: Rate,
    pub clock: u64,
    /// `None` while the process is down.
    pub arbiter: Option<Arbiter>,
    /// What the store holds (flushed).
    pub disk: Option<ClusterRecord>,
    /// The store was wiped: the next start must recover.
    pub store_lost: bool,
    /// Arbitration paused by the operator.
    pub paused: bool,
}

/// One node host.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct NodeHost {
    pub room: RoomId,
    pub name: NodeId,
    pub rate: Rate,
    pub clock: u64,
    pub powered: bool,
    /// `None` while the agent process is down (the node and its workloads may still run).
    pub agent: Option<NodeAgent>,
    /// The agent's run file (survives agent restarts, not reboots).
    pub run_file: RunState,
    pub last_pet: u64,
    pub watchdog_armed: bool,
    /// The fencing drivers are running.
    pub fence_pending: bool,
}

impl NodeHost {
    fn run(&self) -> &RunState {
        match &self.agent {
            Some(a) => a.run_state(),
            None => &self.run_file,
        }
    }

    /// The node's workloads may be running.
    pub fn active(&self) -> bool {
        self.powered
            && matches!(
                self.run().phase,
                Phase::Active { .. } | Phase::Fencing { .. }
            )
    }

    /// The node runs the other room's workloads.
    pub fn taken_over(&self) -> bool {
        self.powered && matches!(self.run().phase, Phase::Active { .. }) && self.run().takeover
    }

    /// The node holds an unexpired right to act alone (on its own clock).
    pub fn holds_alone_right(&self) -> Option<Epoch> {
        if !self.powered || !matches!(self.run().phase, Phase::Active { .. }) {
            return None;
        }
        let l = self.run().lease.as_ref()?;
        (matches!(l.mode, LeaseMode::Alone { .. }) && Millis(self.clock) < l.expires)
            .then_some(l.epoch)
    }
}

/// What has happened, for the properties (the processes cannot see this).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Ghost {
    /// Which room the witness granted the right to act alone, per epoch.
    pub alone_grants: BTreeMap<Epoch, RoomId>,
    /// Two rooms were granted the right to act alone in one epoch (set once).
    pub epoch_conflict: Option<(Epoch, RoomId, RoomId)>,
    pub takeover_happened: bool,
    pub healed_after_takeover: bool,
    pub state_lost: bool,
    pub fences: u32,
}

/// Faults still allowed in this run (the model checker bounds them).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct FaultBudget {
    pub drops: u32,
    pub agent_crashes: u32,
    pub power_cycles: u32,
    pub witness_crashes: u32,
    pub witness_wipes: u32,
    pub fence_failures: u32,
    /// Link cuts (each heal is free, but only if `Allow::heals`).
    pub cuts: u32,
    /// Messages held back (delayed past later ones, across any number of ticks).
    pub holds: u32,
}

/// A directed link between groups of ends, cut or healed as one fault.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Link {
    /// Every node of room `from` to every node of room `to`.
    Rooms { from: RoomId, to: RoomId },
    /// Every node of `room` to the witness.
    RoomToWitness(RoomId),
    /// The witness to every node of `room`.
    WitnessToRoom(RoomId),
    /// One node to the witness (explored only with [`Allow::node_links`]).
    NodeToWitness(NodeId),
    /// The witness to one node.
    WitnessToNode(NodeId),
}

/// One step of the world.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Action {
    /// True time advances one tick; every running process ticks.
    Tick,
    /// Deliver every message in flight that is not held, and the answers they cause, in
    /// channel order (a fair network).
    DeliverAll,
    /// Hold a message back: it stays in flight until delivered by [`Action::Deliver`].
    Hold(Channel),
    Deliver(Channel),
    Drop(Channel),
    /// Node `i`'s fencing drivers finish: all confirmed, or one failed.
    FenceDone(usize, bool),
    CrashAgent(usize),
    StartAgent(usize),
    PowerOff(usize),
    PowerOn(usize),
    CrashWitness,
    /// The witness loses its disk and its process.
    WipeWitness,
    StartWitness,
    Admin(AdminAction),
    /// Cut (`true`) or heal (`false`) a directed link.
    SetLink(Link, bool),
}

/// Operator commands in the world (by room index: 0 = a, 1 = b).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum AdminAction {
    ForceSurvivor { room: String, other_room_down: bool },
    Release,
    MemberRemove { node: String, powered_off: bool },
    MemberAdd { node: String },
    MemberDecommission { node: String, powered_off: bool },
}

/// The simulated cluster.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct World {
    /// True time.
    pub now: u64,
    pub witness: WitnessHost,
    pub nodes: Vec<NodeHost>,
    pub net: BTreeMap<Channel, Msg>,
    /// Messages in flight that [`Action::DeliverAll`] passes over.
    pub held: BTreeSet<Channel>,
    /// Directed links that drop everything (simulation and scenarios; the model checker drops
    /// single messages instead).
    pub cuts: BTreeSet<(End, End)>,
    /// Links cut as a whole by [`Action::SetLink`].
    pub cut_links: BTreeSet<Link>,
    pub budget: FaultBudget,
    pub ghost: Ghost,
}

impl World {
    /// All processes freshly started at true time 0, with the given clock rates.
    pub fn new(cfg: &WorldConfig, witness_rate: Rate, node_rates: &[Rate]) -> World {
        let nodes = cfg
            .nodes
            .iter()
            .enumerate()
            .map(|(i, (room, name))| NodeHost {
                room: room.clone(),
                name: name.clone(),
                rate: node_rates.get(i).copied().unwrap_or(Rate::Exact),
                clock: 1_000,
                powered: true,
                agent: Some(NodeAgent::new(cfg.agent_config(i), RunState::booted())),
                run_file: RunState::booted(),
                last_pet: 1_000,
                watchdog_armed: false,
                fence_pending: false,
            })
            .collect();
        World {
            now: 0,
            witness: WitnessHost {
                rate: witness_rate,
                clock: 1_000,
                arbiter: Some(Arbiter::create(
                    cfg.arbiter_config(),
                    cfg.cluster(),
                    Millis(1_000),
                )),
                disk: None,
                store_lost: false,
                paused: false,
            },
            nodes,
            net: BTreeMap::new(),
            held: BTreeSet::new(),
            cuts: BTreeSet::new(),
            cut_links: BTreeSet::new(),
            budget: FaultBudget::default(),
            ghost: Ghost::default(),
        }
    }

    fn index_of(&self, node: &NodeId) -> Option<usize> {
        self.nodes.iter().position(|n| &n.name == node)
    }

    fn name_of(&self, end: End) -> Option<&NodeId> {
        match end {
            End::Witness => None,
            End::Node(i) => Some(&self.nodes[i].name),
        }
    }

    fn room_of(&self, end: End) -> Option<&RoomId> {
        match end {
            End::Witness => None,
            End::Node(i) => Some(&self.nodes[i].room),
        }
    }

    /// Whether a message from `from` to `to` is lost to a cut.
    pub fn is_cut(&self, from: End, to: End) -> bool {
        if self.cuts.contains(&(from, to)) {
            return true;
        }
        self.cut_links.iter().any(|l| match l {
            Link::Rooms { from: f, to: t } => {
                self.room_of(from) == Some(f) && self.room_of(to) == Some(t)
            }
            Link::RoomToWitness(r) => to == End::Witness && self.room_of(from) == Some(r),
            Link::WitnessToRoom(r) => from == End::Witness && self.room_of(to) == Some(r),
            Link::NodeToWitness(n) => to == End::Witness && self.name_of(from) == Some(n),
            Link::WitnessToNode(n) => from == End::Witness && self.name_of(to) == Some(n),
        })
    }

    fn send(&mut self, ch: Channel, msg: Msg) {
        let (from, to) = ch.ends();
        if self.is_cut(from, to) {
            return;
        }
        self.held.remove(&ch);
        self.net.insert(ch, msg);
    }

    /// Cuts (or heals) both directions between two ends.
    pub fn cut(&mut self, a: End, b: End, on: bool) {
        for pair in [(a, b), (b, a)] {
            if on {
                self.cuts.insert(pair);
            } else {
                self.cuts.remove(&pair);
            }
        }
    }

    /// Cuts (or heals) every link between the nodes of two rooms, one way or both.
    pub fn cut_rooms(&mut self, from_room: &str, to_room: &str, both_ways: bool, on: bool) {
        let pairs: Vec<(usize, usize)> = (0..self.nodes.len())
            .flat_map(|i| (0..self.nodes.len()).map(move |j| (i, j)))
            .filter(|&(i, j)| {
                self.nodes[i].room.as_str() == from_room && self.nodes[j].room.as_str() == to_room
            })
            .collect();
        for (i, j) in pairs {
            for pair in [(End::Node(i), End::Node(j)), (End::Node(j), End::Node(i))]
                .into_iter()
                .take(if both_ways { 2 } else { 1 })
            {
                if on {
                    self.cuts.insert(pair);
                } else {
                    self.cuts.remove(&pair);
                }
            }
        }
    }

    /// Cuts (or heals) every link between a room's nodes and the witness, both ways.
    pub fn cut_room_from_witness(&mut self, room: &str, on: bool) {
        for i in 0..self.nodes.len() {
            if self.nodes[i].room.as_str() == room {
                self.cut(End::Node(i), End::Witness, on);
            }
        }
    }

    fn agent_effects(&mut self, cfg: &WorldConfig, i: usize, step: crate::agent::AgentStep) {
        if let Some(run) = step.persist {
            self.nodes[i].run_file = run;
        }
        let clock = self.nodes[i].clock;
        for action in step.actions {
            match action {
                AgentAction::SendLease(req) => self.send(
                    Channel::ToWitness(i),
                    Msg::Lease {
                        sent_at: Millis(clock),
                        req,
                    },
                ),
                AgentAction::SendPing { to, ping } => {
                    if let Some(j) = self.index_of(&to) {
                        self.send(Channel::Ping { from: i, to: j }, Msg::Ping(ping));
                    }
                }
                AgentAction::PetWatchdog => {
                    self.nodes[i].last_pet = clock;
                    self.nodes[i].watchdog_armed = true;
                }
                AgentAction::Fence { .. } => {
                    self.nodes[i].fence_pending = true;
                    self.ghost.fences += 1;
                }
                AgentAction::Unfence { .. } => {}
                AgentAction::TakeOver { .. } => self.ghost.takeover_happened = true,
                AgentAction::ReleaseTakeover { .. } => {}
            }
        }
        let _ = cfg;
    }

    /// Feeds one input to node `i`'s agent (if it runs) and applies what it decided; returns
    /// the pong when the input was a ping.
    fn agent_step(&mut self, cfg: &WorldConfig, i: usize, input: AgentInput) -> Option<Pong> {
        if !self.nodes[i].powered {
            return None;
        }
        let clock = Millis(self.nodes[i].clock);
        let agent = self.nodes[i].agent.as_mut()?;
        let mut step = agent.step(clock, input);
        let pong = step.pong.take().and_then(|p| p.ok());
        self.agent_effects(cfg, i, step);
        pong
    }

    fn witness_step(&mut self, input: ArbiterInput) -> Option<LeaseReply> {
        let clock = Millis(self.witness.clock);
        let arb = self.witness.arbiter.as_mut()?;
        let step = arb.step(clock, input);
        if let Some(rec) = step.persist {
            self.witness.disk = Some(rec);
        }
        let reply = step.reply?;
        if let Verdict::Grant {
            mode: LeaseMode::Alone { .. },
            ..
        } = reply.verdict
        {
            if !self.ghost.state_lost {
                match self.ghost.alone_grants.get(&reply.epoch) {
                    Some(r) if *r != reply.room => {
                        if self.ghost.epoch_conflict.is_none() {
                            self.ghost.epoch_conflict =
                                Some((reply.epoch, r.clone(), reply.room.clone()));
                        }
                    }
                    Some(_) => {}
                    None => {
                        self.ghost
                            .alone_grants
                            .insert(reply.epoch, reply.room.clone());
                    }
                }
            }
        }
        Some(reply)
    }

    /// The actions enabled now. `allow` chooses which fault kinds the caller explores.
    pub fn enabled(&self, horizon: u64, allow: &Allow) -> Vec<Action> {
        let mut v = Vec::new();
        // Time moves on only once the fair network has delivered what it carries; the
        // adversary delays a message only by holding it (bounded by the budget).
        let unheld_in_flight = self.net.keys().any(|c| !self.held.contains(c));
        if self.now < horizon && !unheld_in_flight {
            v.push(Action::Tick);
        }
        if unheld_in_flight {
            v.push(Action::DeliverAll);
        }
        for ch in self.net.keys() {
            if self.held.contains(ch) {
                v.push(Action::Deliver(*ch));
            } else if self.budget.holds > 0 {
                v.push(Action::Hold(*ch));
            }
            if self.budget.drops > 0 {
                v.push(Action::Drop(*ch));
            }
        }
        for (i, n) in self.nodes.iter().enumerate() {
            if n.powered && n.fence_pending && n.agent.is_some() {
                v.push(Action::FenceDone(i, true));
                if self.budget.fence_failures > 0 {
                    v.push(Action::FenceDone(i, false));
                }
            }
            if allow.agent_crashes && n.powered {
                if n.agent.is_some() {
                    if self.budget.agent_crashes > 0 {
                        v.push(Action::CrashAgent(i));
                    }
                } else {
                    v.push(Action::StartAgent(i));
                }
            }
            if allow.power {
                if n.powered {
                    if self.budget.power_cycles > 0 {
                        v.push(Action::PowerOff(i));
                    }
                } else {
                    v.push(Action::PowerOn(i));
                }
            }
        }
        if self.budget.cuts > 0 || allow.heals {
            let rooms: Vec<RoomId> = {
                let mut r: Vec<RoomId> = self.nodes.iter().map(|n| n.room.clone()).collect();
                r.dedup();
                r
            };
            let mut links = Vec::new();
            for x in &rooms {
                links.push(Link::RoomToWitness(x.clone()));
                links.push(Link::WitnessToRoom(x.clone()));
                for y in rooms.iter().filter(|y| *y != x) {
                    links.push(Link::Rooms {
                        from: x.clone(),
                        to: y.clone(),
                    });
                }
            }
            if allow.node_links {
                for n in &self.nodes {
                    links.push(Link::NodeToWitness(n.name.clone()));
                    links.push(Link::WitnessToNode(n.name.clone()));
                }
            }
            for l in links {
                let cut = self.cut_links.contains(&l);
                if !cut && self.budget.cuts > 0 {
                    v.push(Action::SetLink(l, true));
                } else if cut && allow.heals {
                    v.push(Action::SetLink(l, false));
                }
            }
        }
        if self.witness.arbiter.is_some() {
            if self.budget.witness_crashes > 0 {
                v.push(Action::CrashWitness);
            }
            if self.budget.witness_wipes > 0 {
                v.push(Action::WipeWitness);
            }
        } else {
            v.push(Action::StartWitness);
        }
        v
    }

    /// Applies one action.
    pub fn apply(&mut self, cfg: &WorldConfig, action: &Action) {
        match action {
            Action::Tick => self.tick(cfg),
            Action::DeliverAll => {
                for _ in 0..64 {
                    let Some(ch) = self.net.keys().find(|c| !self.held.contains(c)).copied() else {
                        break;
                    };
                    if let Some(msg) = self.net.remove(&ch) {
                        self.deliver(cfg, ch, msg);
                    }
                }
            }
            Action::Hold(ch) => {
                if self.net.contains_key(ch) && self.held.insert(*ch) {
                    self.budget.holds = self.budget.holds.saturating_sub(1);
                }
            }
            Action::Deliver(ch) => {
                self.held.remove(ch);
                if let Some(msg) = self.net.remove(ch) {
                    self.deliver(cfg, *ch, msg);
                }
            }
            Action::Drop(ch) => {
                self.held.remove(ch);
                if self.net.remove(ch).is_some() {
                    self.budget.drops = self.budget.drops.saturating_sub(1);
                }
            }
            Action::FenceDone(i, ok) => {
                let i = *i;
                if self.nodes[i].fence_pending {
                    self.nodes[i].fence_pending = false;
                    if !ok {
                        self.budget.fence_failures = self.budget.fence_failures.saturating_sub(1);
                    }
                    let _ = self.agent_step(cfg, i, AgentInput::FenceDone { ok: *ok });
                }
            }
            Action::CrashAgent(i) => {
                let n = &mut self.nodes[*i];
                if n.agent.take().is_some() {
                    self.budget.agent_crashes = self.budget.agent_crashes.saturating_sub(1);
                    // the drivers die with the agent; a restarted agent runs them again
                    n.fence_pending = false;
                }
            }
            Action::StartAgent(i) => {
                let i = *i;
                if self.nodes[i].powered && self.nodes[i].agent.is_none() {
                    let run = self.nodes[i].run_file.clone();
                    self.nodes[i].agent = Some(NodeAgent::new(cfg.agent_config(i), run));
                }
            }
            Action::PowerOff(i) => {
                let n = &mut self.nodes[*i];
                if n.powered {
                    n.powered = false;
                    n.agent = None;
                    n.fence_pending = false;
                    self.budget.power_cycles = self.budget.power_cycles.saturating_sub(1);
                }
            }
            Action::PowerOn(i) => {
                let i = *i;
                if !self.nodes[i].powered {
                    self.reboot(cfg, i);
                }
            }
            Action::CrashWitness => {
                if self.witness.arbiter.take().is_some() {
                    self.budget.witness_crashes = self.budget.witness_crashes.saturating_sub(1);
                }
            }
            Action::WipeWitness => {
                self.witness.arbiter = None;
                self.witness.disk = None;
                self.witness.store_lost = true;
                self.ghost.state_lost = true;
                self.budget.witness_wipes = self.budget.witness_wipes.saturating_sub(1);
            }
            Action::StartWitness => {
                if self.witness.arbiter.is_none() {
                    let now = Millis(self.witness.clock);
                    let acfg = cfg.arbiter_config();
                    let arb = match (&self.witness.disk, self.witness.store_lost) {
                        (Some(rec), _) => Arbiter::restart(acfg, cfg.cluster(), rec.clone(), now),
                        (None, true) => Arbiter::recover(acfg, cfg.cluster(), now),
                        (None, false) => Arbiter::create(acfg, cfg.cluster(), now),
                    };
                    self.witness.store_lost = false;
                    self.witness.arbiter = Some(arb);
                }
            }
            Action::Admin(a) => {
                let cmd = match a {
                    AdminAction::ForceSurvivor {
                        room,
                        other_room_down,
                    } => AdminCommand::ForceSurvivor {
                        room: RoomId::new(room.clone()),
                        other_room_down: *other_room_down,
                    },
                    AdminAction::Release => AdminCommand::Release,
                    AdminAction::MemberRemove { node, powered_off } => AdminCommand::MemberRemove {
                        node: NodeId::new(node.clone()),
                        powered_off: *powered_off,
                    },
                    AdminAction::MemberAdd { node } => AdminCommand::MemberAdd {
                        node: NodeId::new(node.clone()),
                    },
                    AdminAction::MemberDecommission { node, powered_off } => {
                        AdminCommand::MemberDecommission {
                            node: NodeId::new(node.clone()),
                            powered_off: *powered_off,
                        }
                    }
                };
                self.witness_step(ArbiterInput::Admin(cmd));
            }
            Action::SetLink(link, on) => {
                if *on {
                    if self.cut_links.insert(link.clone()) {
                        self.budget.cuts = self.budget.cuts.saturating_sub(1);
                    }
                } else {
                    self.cut_links.remove(link);
                }
            }
        }
        self.observe();
    }

    fn reboot(&mut self, cfg: &WorldConfig, i: usize) {
        let n = &mut self.nodes[i];
        n.powered = true;
        n.run_file = RunState::booted();
        n.agent = Some(NodeAgent::new(cfg.agent_config(i), RunState::booted()));
        n.last_pet = n.clock;
        n.watchdog_armed = false;
        n.fence_pending = false;
    }

    fn tick(&mut self, cfg: &WorldConfig) {
        self.now += cfg.tick;
        self.witness.clock += cfg.local_step(self.witness.rate);
        for n in self.nodes.iter_mut() {
            n.clock += cfg.local_step(n.rate);
        }
        // A watchdog that was not petted in time reset its machine somewhere in the tick that
        // just passed: before anything else happens at this instant.
        for i in 0..self.nodes.len() {
            let n = &self.nodes[i];
            if n.powered
                && n.watchdog_armed
                && n.clock >= n.last_pet + cfg.timings.watchdog_timeout_ms
            {
                self.reboot(cfg, i);
            }
        }
        self.witness_step(ArbiterInput::Tick);
        for i in 0..self.nodes.len() {
            let _ = self.agent_step(cfg, i, AgentInput::Tick);
        }
    }

    fn deliver(&mut self, cfg: &WorldConfig, ch: Channel, msg: Msg) {
        match (ch, msg) {
            (Channel::ToWitness(i), Msg::Lease { sent_at, req }) => {
                if let Some(reply) = self.witness_step(ArbiterInput::Lease(req)) {
                    self.send(Channel::FromWitness(i), Msg::Reply { sent_at, reply });
                }
            }
            (Channel::FromWitness(i), Msg::Reply { sent_at, reply }) => {
                let _ = self.agent_step(cfg, i, AgentInput::LeaseReply { sent_at, reply });
            }
            (Channel::Ping { from, to }, Msg::Ping(ping)) => {
                if let Some(pong) = self.agent_step(cfg, to, AgentInput::Ping(ping)) {
                    self.send(Channel::Pong { from: to, to: from }, Msg::Pong(pong));
                }
            }
            (Channel::Pong { to, .. }, Msg::Pong(pong)) => {
                let _ = self.agent_step(cfg, to, AgentInput::Pong(pong));
            }
            _ => {}
        }
    }

    fn observe(&mut self) {
        if self.ghost.takeover_happened && !self.ghost.healed_after_takeover {
            let paired = self
                .witness
                .arbiter
                .as_ref()
                .is_some_and(|a| a.record().mode == Mode::Paired);
            if paired && self.nodes.iter().all(|n| n.active()) {
                self.ghost.healed_after_takeover = true;
            }
        }
    }

    /// The promise, part 1, on the true clock: no node runs the other room's workloads while a
    /// node of the other room may still be running its own.
    pub fn takeover_violation(&self) -> Option<String> {
        for x in self.nodes.iter().filter(|n| n.taken_over()) {
            if let Some(y) = self.nodes.iter().find(|n| n.room != x.room && n.active()) {
                return Some(format!(
                    "node {} (room {}) has taken over while node {} of room {} is still active",
                    x.name, x.room, y.name, y.room
                ));
            }
        }
        None
    }

    /// The promise, part 2: at no moment do nodes of both rooms hold an unexpired right to act
    /// alone.
    pub fn alone_violation(&self) -> Option<String> {
        let alone: BTreeSet<&RoomId> = self
            .nodes
            .iter()
            .filter(|n| n.holds_alone_right().is_some())
            .map(|n| &n.room)
            .collect();
        (alone.len() > 1).then(|| {
            format!(
                "rooms {:?} hold the right to act alone at the same time",
                alone
            )
        })
    }

    /// The promise, part 3: the witness never grants the right to act alone to two rooms in
    /// one epoch (checked while the witness has not lost its disk; see docs/protocol.md).
    pub fn epoch_violation(&self) -> Option<String> {
        self.ghost.epoch_conflict.as_ref().map(|(e, r1, r2)| {
            format!("epoch {e} granted the right to act alone to room {r1} and to room {r2}")
        })
    }

    /// The promise as DRBD sees it: no running agent would answer the fence-peer handler
    /// "peer fenced" (IO resumes) while a node of the other room may still be running.
    pub fn peer_fence_violation(&self) -> Option<String> {
        for x in self.nodes.iter().filter(|n| n.powered) {
            let Some(agent) = &x.agent else { continue };
            if !agent.peer_fenced(Millis(x.clock)).peer_fenced() {
                continue;
            }
            if let Some(y) = self.nodes.iter().find(|n| n.room != x.room && n.active()) {
                return Some(format!(
                    "node {} (room {}) would tell DRBD its peer is fenced while node {} of room \
                     {} is still active",
                    x.name, x.room, y.name, y.room
                ));
            }
        }
        None
    }

    /// Any broken part of the promise.
    pub fn violation(&self) -> Option<String> {
        self.takeover_violation()
            .or_else(|| self.alone_violation())
            .or_else(|| self.epoch_violation())
            .or_else(|| self.peer_fence_violation())
    }

    /// A short description of the state, for failure reports.
    pub fn describe(&self) -> String {
        let mut s = format!("t={} witness:", self.now);
        match &self.witness.arbiter {
            Some(a) => s += &format!(" {:?} epoch {}", a.record().mode, a.record().epoch),
            None => s += " down",
        }
        for n in &self.nodes {
            s += &format!(
                " | {}:{}{}{}",
                n.name,
                if !n.powered {
                    "off".to_string()
                } else {
                    format!("{:?}", n.run().phase.wire())
                },
                if n.run().takeover { "+takeover" } else { "" },
                if n.agent.is_none() && n.powered {
                    "(agent down)"
                } else {
                    ""
                }
            );
        }
        s
    }
}

/// Which fault kinds an exploration may use (drops, fence failures and witness faults are
/// bounded by the [`FaultBudget`] instead).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Allow {
    pub agent_crashes: bool,
    pub power: bool,
    pub heals: bool,
    /// Cut single nodes from the witness, not only whole rooms (the membership explorations).
    pub node_links: bool,
}
