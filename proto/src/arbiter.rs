//! The witness's arbiter for one cluster: decides which room may act alone when the rooms are
//! split, grants time-bounded leases, and never lets two rooms hold the right to act alone at
//! once.
//!
//! A pure state machine: [`Arbiter::step`] takes the witness's monotonic time and one input and
//! returns what to persist and what to answer. The shell must write [`ArbiterStep::persist`]
//! durably (fsync) *before* it sends [`ArbiterStep::reply`]; if the write fails it must not send
//! the reply and must rebuild the arbiter with [`Arbiter::restart`] from what is on disk.
use crate::config::{Mutation, Timings};
use crate::ids::{ClusterId, Epoch, NodeId, RoomId};
use crate::small::{SmallMap, SmallSet};
use crate::time::Millis;
use crate::wire::{
    AdminCommand, LeaseMode, LeaseReply, LeaseRequest, MemberEntry, MemberStatus, Membership,
    NodePhase, TakeoverPermit, Verdict, WIRE_VERSION,
};
use serde::{Deserialize, Serialize};

mod membership;
mod tracked;
use membership::{address_refusal, members_version_refusal};
use tracked::TrackedRecord;

/// Per-cluster arbitration settings.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ArbiterConfig {
    pub timings: Timings,
    /// In a split where both rooms reach the witness, this room survives.
    pub preferred_room: Option<RoomId>,
    /// Let a fenced room rejoin by itself once both rooms have seen each other for
    /// `rejoin_stable_ms`; otherwise only `witness admin release` does it.
    pub auto_rejoin: bool,
    #[serde(skip)]
    pub mutation: Mutation,
}

impl Default for ArbiterConfig {
    fn default() -> Self {
        ArbiterConfig {
            timings: Timings::default(),
            preferred_room: None,
            auto_rejoin: true,
            mutation: Mutation::None,
        }
    }
}

/// Who may act alone.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "mode", content = "room")]
pub enum Mode {
    /// Both rooms run; nobody may act alone.
    Paired,
    /// Only `room` may run; the other is fenced. Takeover once the bound has passed.
    Alone(RoomId),
    /// `room` still runs alone but must release its takeover; the other room rejoins next.
    Releasing(RoomId),
}

impl Mode {
    pub fn survivor(&self) -> Option<&RoomId> {
        match self {
            Mode::Paired => None,
            Mode::Alone(r) | Mode::Releasing(r) => Some(r),
        }
    }
}

/// The durable part of a cluster's arbitration state: written (and flushed) before any reply
/// that depends on it leaves the witness.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ClusterRecord {
    pub epoch: Epoch,
    pub mode: Mode,
    /// The (at most two) rooms of this cluster, in the order they first called.
    pub rooms: Vec<RoomId>,
    /// The room that last survived a split; kept when the rooms split again (no oscillation).
    pub last_survivor: Option<RoomId>,
    pub paused: bool,
    /// The witness lost this cluster's state and has not yet waited out what it may have
    /// forgotten: a restart starts that wait again.
    #[serde(default)]
    pub recovering: bool,
    /// In `Alone`/`Releasing`: the survivor has been granted the right to act alone in this
    /// epoch, so the other room's earlier rights had expired (a restart need not wait again).
    #[serde(default)]
    pub alone_granted: bool,
    /// The cluster's membership version: grows with every change of `members`.
    #[serde(default)]
    pub members_version: u64,
    /// Every node the witness knows of, counted or not (docs/protocol.md §Membership).
    #[serde(default)]
    pub members: SmallMap<NodeId, MemberRecord>,
}

/// One node of the cluster, as the witness keeps it durably.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct MemberRecord {
    pub room: RoomId,
    pub status: MemberStatus,
    /// The membership version at which it last became a counted member: it is granted nothing
    /// until every counted member of the other room has acknowledged this version.
    pub since: u64,
    /// The highest membership version it has reported holding.
    pub acked: u64,
    /// Its heartbeat endpoint as it last reported it.
    #[serde(default)]
    pub address: Option<String>,
    /// Older members of the other room that reported counting it (their configuration names
    /// it) since it last became a member: acknowledgements that survive a witness restart.
    #[serde(default, skip_serializing_if = "SmallSet::is_empty")]
    pub counted_by: SmallSet<NodeId>,
}

impl ClusterRecord {
    fn new() -> Self {
        ClusterRecord {
            epoch: Epoch(1),
            mode: Mode::Paired,
            rooms: Vec::new(),
            last_survivor: None,
            paused: false,
            recovering: false,
            alone_granted: false,
            members_version: 0,
            members: SmallMap::new(),
        }
    }

    /// The membership as the agents receive it.
    pub fn membership(&self) -> Membership {
        Membership {
            version: self.members_version,
            members: self
                .members
                .iter()
                .map(|(node, m)| MemberEntry {
                    node: node.clone(),
                    room: m.room.clone(),
                    status: m.status,
                    address: m.address.clone(),
                })
                .collect(),
        }
    }
}

/// What the witness last heard from one node (memory only).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct NodeSeen {
    pub room: RoomId,
    pub last_seen: Millis,
    pub phase: NodePhase,
    pub epoch: Epoch,
    pub peer_contact: bool,
    pub peer_reachable: bool,
    pub claim: bool,
    pub takeover: bool,
    pub health: u32,
    /// The latest moment (witness-local) at which, by this report, a node of the other room
    /// vouched for one of this node's pings: evidence that the other room ran paired then.
    #[serde(default)]
    pub other_room_vouched_at: Option<Millis>,
    /// From this node's latest report: for each node of the other room, how long this node had
    /// given it no vouch (ms on this node's clock).
    #[serde(default)]
    pub unvouched: SmallMap<NodeId, u64>,
    /// The nodes of the other room this node's latest report names: the nodes it counts for
    /// peer contact (its configuration and the membership it holds).
    #[serde(default)]
    pub counts: SmallSet<NodeId>,
}

/// Sets `key`'s time, copying the key only when it is new.
fn set_time<K: Ord + Clone>(map: &mut SmallMap<K, Millis>, key: &K, at: Millis) {
    match map.get_mut(key) {
        Some(t) => *t = at,
        None => {
            map.insert(key.clone(), at);
        }
    }
}

/// One input to the arbiter.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum ArbiterInput {
    Lease(LeaseRequest),
    /// Time passed; lets decisions that depend only on silence be made.
    Tick,
    Admin(AdminCommand),
}

/// Something worth a log line and a metric.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "event")]
pub enum ArbiterEvent {
    ModeChanged {
        epoch: Epoch,
        from: Mode,
        to: Mode,
        why: String,
    },
    RecoveryFinished {
        epoch: Epoch,
    },
    EpochJumped {
        from: Epoch,
        to: Epoch,
    },
    Refused {
        node: NodeId,
        reason: String,
    },
    /// The epoch cannot grow any more (a record from before the epoch ceiling): no change of
    /// who may act alone is possible, as it would need a new epoch.
    EpochExhausted {
        epoch: Epoch,
    },
    /// A node's membership changed (joined, excluded, readmitted, removed, added back,
    /// decommissioned). An exclusion is an alarm: a node of a live room is proven stopped.
    MemberChanged {
        version: u64,
        node: NodeId,
        room: RoomId,
        from: Option<MemberStatus>,
        to: MemberStatus,
        why: String,
    },
}

/// What one step decided.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct ArbiterStep {
    /// Write this durably before sending `reply`.
    pub persist: Option<ClusterRecord>,
    pub reply: Option<LeaseReply>,
    /// For an admin command: `Err` with the reason it was refused.
    pub admin_result: Option<Result<String, String>>,
    /// A lease request refused without any change (its reported epoch is out of range): the
    /// shell answers with an error instead of `reply`.
    pub refused: Option<String>,
    pub events: Vec<ArbiterEvent>,
}

/// The arbiter for one cluster.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Arbiter {
    cfg: ArbiterConfig,
    cluster: ClusterId,
    record: TrackedRecord,
    /// When this incarnation of the arbiter started (witness-local).
    incarnation_start: Millis,
    /// Set when the witness lost (or never had) this cluster's state: it grants nothing before.
    recovering_until: Option<Millis>,
    /// The highest epoch any node reported while recovering.
    max_epoch_seen: Epoch,
    mode_since: Millis,
    nodes: SmallMap<NodeId, NodeSeen>,
    /// Per room, when this incarnation last granted it anything.
    last_grant: SmallMap<RoomId, Millis>,
    /// Per node, when this incarnation last granted it anything.
    last_node_grant: SmallMap<NodeId, Millis>,
    /// Per room, when it was last granted the right to act alone (or might have been).
    last_alone_grant: SmallMap<RoomId, Millis>,
    /// In `Alone`: when the other room's leases and fences are surely over.
    takeover_at: Millis,
    /// In `Alone`: since when every report from both rooms says the link works.
    reachable_since: Option<Millis>,
    /// When the witness last heard any node of this cluster.
    last_heard: Option<Millis>,
    /// Since when the witness has heard some node at least every `silence_ms`. A room's silence
    /// counts only from here: a gap in *every* report is the witness's own deafness (its link,
    /// a pause, a restart), not evidence about either room.
    listening_since: Millis,
}

impl Arbiter {
    /// A cluster that calls for the first time, in a store that is intact (so it was never
    /// granted anything before).
    pub fn create(cfg: ArbiterConfig, cluster: ClusterId, now: Millis) -> Arbiter {
        Arbiter {
            cfg,
            cluster,
            record: TrackedRecord::new(ClusterRecord::new()),
            incarnation_start: now,
            recovering_until: None,
            max_epoch_seen: Epoch(0),
            mode_since: now,
            nodes: SmallMap::new(),
            last_grant: SmallMap::new(),
            last_node_grant: SmallMap::new(),
            last_alone_grant: SmallMap::new(),
            takeover_at: now,
            reachable_since: None,
            last_heard: None,
            listening_since: now,
        }
    }

    /// The witness restarted with this cluster's record intact. Grants made before the restart
    /// are forgotten, so every room is treated as if it had been granted a lease just now.
    pub fn restart(
        cfg: ArbiterConfig,
        cluster: ClusterId,
        record: ClusterRecord,
        now: Millis,
    ) -> Arbiter {
        if record.recovering {
            // Restarted in the middle of a recovery: wait it out again, from now.
            let mut a = Arbiter::recover(cfg, cluster, now);
            a.max_epoch_seen = record.epoch;
            a.record = TrackedRecord::new(record);
            return a;
        }
        let mut a = Arbiter::create(cfg, cluster, now);
        // Once the survivor of the current epoch has been granted its right, the other room's
        // earlier rights had already expired and it gets none in this mode: only the survivor
        // may hold one. Otherwise any room may hold one granted just before the restart.
        let settled = if record.alone_granted {
            record.mode.survivor().cloned()
        } else {
            None
        };
        for room in &record.rooms {
            a.last_grant.insert(room.clone(), now);
            if settled.as_ref().is_none_or(|s| s == room) {
                a.last_alone_grant.insert(room.clone(), now);
            }
        }
        a.takeover_at = now + a.cfg.timings.witness_takeover_wait_ms();
        a.record = TrackedRecord::new(record);
        a
    }

    /// The witness lost its state (empty or missing store): it grants nothing until every lease
    /// and fence it may have forgotten has run out.
    pub fn recover(cfg: ArbiterConfig, cluster: ClusterId, now: Millis) -> Arbiter {
        let mut a = Arbiter::create(cfg, cluster, now);
        a.recovering_until = Some(now + a.cfg.timings.forgotten_state_wait_ms());
        a.record.recovering = true;
        a
    }

    pub fn record(&self) -> &ClusterRecord {
        &self.record
    }
    pub fn cluster(&self) -> &ClusterId {
        &self.cluster
    }
    pub fn config(&self) -> &ArbiterConfig {
        &self.cfg
    }
    pub fn nodes(&self) -> &SmallMap<NodeId, NodeSeen> {
        &self.nodes
    }
    pub fn recovering_until(&self) -> Option<Millis> {
        self.recovering_until
    }
    pub fn mode_since(&self) -> Millis {
        self.mode_since
    }
    /// In `Alone`: when the takeover becomes allowed (witness-local).
    pub fn takeover_at(&self) -> Option<Millis> {
        matches!(self.record.mode, Mode::Alone(_)).then_some(self.takeover_at)
    }

    /// Whether a decision may come from time alone (so the shell must keep ticking this
    /// cluster): while recovering, whenever some room may act alone (rejoin and release are
    /// timed), and in `Paired` while a claim is recent enough that the other room's silence
    /// could still settle a split. A shell serving many clusters ticks only these.
    pub fn wants_tick(&self, now: Millis) -> bool {
        if self.recovering_until.is_some() || self.record.mode != Mode::Paired {
            return true;
        }
        let horizon = 2 * self.cfg.timings.silence_ms;
        self.nodes
            .values()
            .any(|n| n.claim && now.since(n.last_seen) <= horizon)
    }

    /// One step: `now` is the witness's monotonic time.
    pub fn step(&mut self, now: Millis, input: ArbiterInput) -> ArbiterStep {
        // Whether this step changed the record is judged against the record as it is now.
        let _ = self.record.changed();
        let mut out = ArbiterStep::default();
        match input {
            ArbiterInput::Tick => self.evaluate(now, &mut out),
            ArbiterInput::Admin(cmd) => {
                let r = self.admin(now, cmd, &mut out);
                out.admin_result = Some(r);
            }
            ArbiterInput::Lease(req) => {
                let reply = self.lease(now, req, &mut out);
                out.reply = Some(reply);
            }
        }
        if self.record.changed() && !mutated!(self.cfg.mutation, GrantWithoutPersist) {
            out.persist = Some(ClusterRecord::clone(&self.record));
        }
        out
    }

    /// The reply to `req`; it takes the request's names rather than copying them.
    fn reply(&self, req: LeaseRequest, verdict: Verdict) -> LeaseReply {
        let members = (req.members_version < self.record.members_version
            && self.recovering_until.is_none()
            && self.record.rooms.contains(&req.room))
        .then(|| self.record.membership());
        LeaseReply {
            version: WIRE_VERSION,
            cluster: req.cluster,
            room: req.room,
            node: req.node,
            epoch: self.record.epoch,
            verdict,
            proof: None,
            witness_ms: None,
            // Not while waiting out lost state: a membership rebuilt from the calls heard so far
            // would drop nodes the agents learned before the loss.
            members,
        }
    }

    fn lease(&mut self, now: Millis, req: LeaseRequest, out: &mut ArbiterStep) -> LeaseReply {
        if req.cluster != self.cluster {
            let reason = format!(
                "request for cluster {} reached the arbiter of cluster {}",
                req.cluster, self.cluster
            );
            out.events.push(ArbiterEvent::Refused {
                node: req.node.clone(),
                reason: reason.clone(),
            });
            return self.reply(req, Verdict::Fence { reason });
        }
        if let Some(reason) = self
            .epoch_report_refusal(&req)
            .or_else(|| address_refusal(&req))
            .or_else(|| members_version_refusal(&req))
        {
            out.events.push(ArbiterEvent::Refused {
                node: req.node.clone(),
                reason: reason.clone(),
            });
            out.refused = Some(reason.clone());
            return self.reply(
                req,
                Verdict::Retry {
                    after_ms: self.cfg.timings.lease_ms.max(1),
                    reason,
                },
            );
        }
        if !self.record.rooms.contains(&req.room) {
            if self.record.rooms.len() >= 2 {
                let reason = format!(
                    "cluster {} already has rooms {} and {}; room {} is refused (a cluster has two rooms)",
                    self.cluster, self.record.rooms[0], self.record.rooms[1], req.room
                );
                out.events.push(ArbiterEvent::Refused {
                    node: req.node.clone(),
                    reason: reason.clone(),
                });
                return self.reply(req, Verdict::Fence { reason });
            }
            self.record.rooms.push(req.room.clone());
        }
        if let Some(old) = self.nodes.get(&req.node) {
            if old.room != req.room {
                let reason = format!(
                    "node {} reported from room {} before and now from room {}; a node belongs to one room",
                    req.node, old.room, req.room
                );
                out.events.push(ArbiterEvent::Refused {
                    node: req.node.clone(),
                    reason: reason.clone(),
                });
                return self.reply(req, Verdict::Fence { reason });
            }
        }
        if let Some(reason) = self.note_member(&req, out) {
            out.events.push(ArbiterEvent::Refused {
                node: req.node.clone(),
                reason: reason.clone(),
            });
            return self.reply(req, Verdict::Fence { reason });
        }
        self.max_epoch_seen = self.max_epoch_seen.max(req.epoch);
        if self.recovering_until.is_none() && req.epoch > self.record.epoch {
            // Only after lost state (or a restored old backup): never reuse an epoch a node
            // has already seen. `epoch_report_refusal` bounds the report, so this cannot
            // overflow; checked all the same.
            if let Some(to) = req.epoch.checked_next() {
                let from = self.record.epoch;
                self.record.epoch = to;
                out.events.push(ArbiterEvent::EpochJumped { from, to });
            }
        }
        if self
            .last_heard
            .is_none_or(|l| now.since(l) > self.cfg.timings.silence_ms)
        {
            self.listening_since = now;
        }
        self.last_heard = Some(now);
        let other_room_vouched_at = req
            .peers
            .iter()
            .filter_map(|p| p.vouched_ms_ago)
            .min()
            .map(|age| now - age)
            // Evidence does not expire with a later report that names no vouch.
            .max(
                self.nodes
                    .get(&req.node)
                    .and_then(|n| n.other_room_vouched_at),
            );
        self.note_seen(now, &req, other_room_vouched_at);
        if !req.peer_reachable {
            self.reachable_since = None;
        }
        self.evaluate(now, out);

        if let Some(until) = self.recovering_until {
            return self.reply(
                req,
                Verdict::Retry {
                    after_ms: until.since(now).max(1),
                    reason: format!(
                        "the witness lost its state and waits {} ms more for every lease it may have forgotten to run out",
                        until.since(now)
                    ),
                },
            );
        }
        let t = &self.cfg.timings;
        let fenced_by_mode = self.record.mode.survivor().is_some_and(|s| *s != req.room);
        let waiting = if fenced_by_mode {
            None
        } else {
            self.awaiting_acks(now, &req.node)
        };
        let verdict = match self.record.mode.clone() {
            _ if waiting.is_some() => Verdict::Retry {
                after_ms: t.renew_retry_ms(),
                reason: waiting.unwrap_or_default(),
            },
            Mode::Paired => Verdict::Grant {
                mode: LeaseMode::Paired,
                valid_ms: t.lease_ms,
            },
            Mode::Alone(room) if room == req.room => {
                if now < self.alone_free_at(&room) {
                    // The other room may still hold a right to act alone from before: keep this
                    // room running paired until that has surely expired.
                    Verdict::Grant {
                        mode: LeaseMode::Paired,
                        valid_ms: t.lease_ms,
                    }
                } else {
                    let permit = if now >= self.takeover_at || self.other_room_all_fenced(now) {
                        TakeoverPermit::Allowed
                    } else {
                        TakeoverPermit::Wait
                    };
                    self.last_alone_grant.insert(room.clone(), now);
                    if !self.record.alone_granted {
                        self.record.alone_granted = true;
                    }
                    Verdict::Grant {
                        mode: LeaseMode::Alone { takeover: permit },
                        valid_ms: t.lease_ms,
                    }
                }
            }
            Mode::Releasing(room) if room == req.room => {
                self.last_alone_grant.insert(room.clone(), now);
                Verdict::Grant {
                    mode: LeaseMode::Alone {
                        takeover: TakeoverPermit::Release,
                    },
                    valid_ms: t.lease_ms,
                }
            }
            Mode::Alone(room) => Verdict::Fence {
                reason: format!(
                    "room {room} acts alone since epoch {}; room {} must stay fenced until it rejoins",
                    self.record.epoch, req.room
                ),
            },
            Mode::Releasing(room) => Verdict::Fence {
                reason: format!(
                    "room {room} is releasing its takeover (epoch {}); room {} rejoins after that",
                    self.record.epoch, req.room
                ),
            },
        };
        if matches!(verdict, Verdict::Grant { .. }) {
            set_time(&mut self.last_grant, &req.room, now);
            set_time(&mut self.last_node_grant, &req.node, now);
        }
        self.reply(req, verdict)
    }

    /// Keeps what a lease request said about its node. Updated in place: on a renewal nothing
    /// but the times has changed, and rebuilding the entry would copy every name again.
    fn note_seen(
        &mut self,
        now: Millis,
        req: &LeaseRequest,
        other_room_vouched_at: Option<Millis>,
    ) {
        let unvouched = req
            .peers
            .iter()
            .filter_map(|p| p.unvouched_ms.map(|u| (&p.node, u)));
        let Some(seen) = self.nodes.get_mut(&req.node) else {
            let seen = NodeSeen {
                room: req.room.clone(),
                last_seen: now,
                phase: req.phase,
                epoch: req.epoch,
                peer_contact: req.peer_contact,
                peer_reachable: req.peer_reachable,
                claim: req.claim,
                takeover: req.takeover,
                health: req.health,
                other_room_vouched_at,
                unvouched: unvouched.map(|(n, u)| (n.clone(), u)).collect(),
                counts: req.peers.iter().map(|p| p.node.clone()).collect(),
            };
            self.nodes.insert(req.node.clone(), seen);
            return;
        };
        // A node keeps its room (a report from another room is refused before this).
        seen.last_seen = now;
        seen.phase = req.phase;
        seen.epoch = req.epoch;
        seen.peer_contact = req.peer_contact;
        seen.peer_reachable = req.peer_reachable;
        seen.claim = req.claim;
        seen.takeover = req.takeover;
        seen.health = req.health;
        seen.other_room_vouched_at = other_room_vouched_at;
        let same_unvouched_names = unvouched
            .clone()
            .all(|(n, _)| seen.unvouched.contains_key(n))
            && seen
                .unvouched
                .keys()
                .all(|k| unvouched.clone().any(|(n, _)| n == k));
        if same_unvouched_names {
            for (n, u) in unvouched {
                if let Some(v) = seen.unvouched.get_mut(n) {
                    *v = u;
                }
            }
        } else {
            seen.unvouched = unvouched.map(|(n, u)| (n.clone(), u)).collect();
        }
        let same_counts = req.peers.iter().all(|p| seen.counts.contains(&p.node))
            && seen
                .counts
                .iter()
                .all(|c| req.peers.iter().any(|p| p.node == *c));
        if !same_counts {
            seen.counts = req.peers.iter().map(|p| p.node.clone()).collect();
        }
    }

    /// The rule for a reported epoch (docs/protocol.md §6): never above [`Epoch::CEILING`],
    /// and, unless the witness is waiting out lost state, at most [`Epoch::MAX_JUMP`] above
    /// the witness's own. A report beyond is refused before anything changes, so one node
    /// cannot move its cluster's epoch where it likes.
    fn epoch_report_refusal(&self, req: &LeaseRequest) -> Option<String> {
        if req.epoch > Epoch::CEILING {
            return Some(format!(
                "node {} reports epoch {}, above the highest epoch a node may report ({}); its \
                 state is corrupt or forged: stop its agent and clear its state file",
                req.node,
                req.epoch,
                Epoch::CEILING
            ));
        }
        let limit = self.record.epoch.0.checked_add(Epoch::MAX_JUMP);
        if self.recovering_until.is_none() && limit.is_some_and(|l| req.epoch.0 > l) {
            return Some(format!(
                "node {} reports epoch {}, more than {} ahead of cluster {}'s epoch {} at the \
                 witness; the witness jumps only that far without having lost state: if its \
                 store was restored from a very old backup, start it on an empty store \
                 (it then waits out lost state and accepts the report), otherwise the node's \
                 state is corrupt: stop its agent and clear its state file",
                req.node,
                req.epoch,
                Epoch::MAX_JUMP,
                self.cluster,
                self.record.epoch
            ));
        }
        None
    }

    /// The earliest time `room` may be granted the right to act alone: the other room's last
    /// such right has surely expired by then.
    fn alone_free_at(&self, room: &RoomId) -> Millis {
        let wait = self.cfg.timings.alone_handover_wait_ms();
        self.last_alone_grant
            .iter()
            .filter(|(r, _)| *r != room)
            .map(|(_, t)| *t + wait)
            .max()
            .unwrap_or(Millis::ZERO)
    }

    fn other_room(&self, room: &RoomId) -> Option<&RoomId> {
        self.record.rooms.iter().find(|r| *r != room)
    }

    fn fresh(&self, n: &NodeSeen, now: Millis) -> bool {
        now.since(n.last_seen) <= self.cfg.timings.silence_ms
    }

    /// Since when the witness has no evidence that `room` runs: the later of its last report
    /// (or a report of the other room naming a recent vouch from one of its nodes) and the
    /// moment the witness last started listening. `None` names a room that never called.
    fn quiet_since(&self, room: Option<&RoomId>) -> Millis {
        let Some(room) = room else {
            return self.listening_since;
        };
        self.nodes
            .values()
            .filter_map(|n| {
                if &n.room == room {
                    Some(n.last_seen)
                } else {
                    n.other_room_vouched_at
                }
            })
            .max()
            .unwrap_or(Millis::ZERO)
            .max(self.listening_since)
    }

    /// `room` claims, and the claim is fresher than the silence of `other` it relies on: it was
    /// reported more than `silence_ms` after the witness last had any evidence of `other`
    /// (while listening). A claim older than that, or a gap in what the witness heard, never
    /// makes the other room silent.
    fn claims_over_silence(&self, room: &RoomId, other: Option<&RoomId>, now: Millis) -> bool {
        let silent_from = self.quiet_since(other) + self.cfg.timings.silence_ms;
        self.nodes
            .values()
            .any(|n| &n.room == room && self.fresh(n, now) && n.claim && n.last_seen > silent_from)
    }

    fn room_claims(&self, room: &RoomId, now: Millis) -> bool {
        self.nodes
            .values()
            .any(|n| &n.room == room && self.fresh(n, now) && n.claim)
    }

    /// After the decision, every node of the other room this incarnation knows has confirmed it
    /// is fenced at the current epoch. Only trusted once every lease from before this
    /// incarnation has run out (so no unknown node can hold one).
    fn other_room_all_fenced(&self, now: Millis) -> bool {
        let Some(survivor) = self.record.mode.survivor() else {
            return false;
        };
        if now < self.incarnation_start + self.cfg.timings.witness_takeover_wait_ms() {
            return false;
        }
        let mut any = false;
        for (name, n) in self.nodes.iter().filter(|(_, n)| &n.room != survivor) {
            if !self.counted(name) {
                // Proven stopped (excluded) or taken out by the operator: not running.
                continue;
            }
            any = true;
            let confirmed = n.phase == NodePhase::Fenced
                && n.epoch >= self.record.epoch
                && n.last_seen >= self.mode_since;
            if !confirmed {
                return false;
            }
        }
        any
    }

    fn health(&self, room: &RoomId, now: Millis) -> u64 {
        self.nodes
            .values()
            .filter(|n| &n.room == room && self.fresh(n, now) && n.phase == NodePhase::Active)
            .map(|n| n.health as u64 + 1)
            .sum()
    }

    /// The split policy: preferred room, else the room that survived last time, else the
    /// healthier room, else the smaller room name.
    fn choose(&self, a: &RoomId, b: &RoomId, now: Millis) -> (RoomId, String) {
        if let Some(p) = &self.cfg.preferred_room {
            if p == a || p == b {
                return (p.clone(), format!("room {p} is the preferred room"));
            }
        }
        if let Some(s) = &self.record.last_survivor {
            if s == a || s == b {
                return (s.clone(), format!("room {s} survived the last split"));
            }
        }
        let (ha, hb) = (self.health(a, now), self.health(b, now));
        if ha != hb {
            let w = if ha > hb { a } else { b };
            return (
                w.clone(),
                format!("room {w} reports the higher health ({ha} vs {hb})"),
            );
        }
        let w = if a <= b { a } else { b };
        (
            w.clone(),
            format!("tie broken by name: room {w} sorts first"),
        )
    }

    fn set_mode(&mut self, now: Millis, to: Mode, why: String, out: &mut ArbiterStep) {
        let from = self.record.mode.clone();
        let Some(epoch) = self.record.epoch.checked_next() else {
            out.events.push(ArbiterEvent::EpochExhausted {
                epoch: self.record.epoch,
            });
            return;
        };
        self.record.epoch = epoch;
        self.record.mode = to.clone();
        // Releasing keeps the survivor's settled right; a new Alone must be granted anew.
        self.record.alone_granted = matches!(to, Mode::Releasing(_)) && self.record.alone_granted;
        self.mode_since = now;
        self.reachable_since = None;
        if let Mode::Alone(room) = &to {
            self.record.last_survivor = Some(room.clone());
            let other_last = self
                .other_room(room)
                .and_then(|o| self.last_grant.get(o))
                .copied()
                .unwrap_or(Millis::ZERO);
            self.takeover_at = now.max(other_last + self.cfg.timings.witness_takeover_wait_ms());
        }
        out.events.push(ArbiterEvent::ModeChanged {
            epoch: self.record.epoch,
            from,
            to,
            why,
        });
    }

    /// Decisions that follow from what the arbiter knows at `now`.
    fn evaluate(&mut self, now: Millis, out: &mut ArbiterStep) {
        if let Some(until) = self.recovering_until {
            if now < until {
                return;
            }
            let Some(epoch) = self.record.epoch.max(self.max_epoch_seen).checked_next() else {
                // No fresh epoch left: keep granting nothing rather than reuse one.
                out.events.push(ArbiterEvent::EpochExhausted {
                    epoch: self.record.epoch,
                });
                return;
            };
            self.recovering_until = None;
            self.record.recovering = false;
            self.record.alone_granted = false;
            self.record.epoch = epoch;
            self.record.mode = Mode::Paired;
            self.mode_since = now;
            out.events.push(ArbiterEvent::RecoveryFinished {
                epoch: self.record.epoch,
            });
        }
        if self.record.paused {
            return;
        }
        self.exclude_stopped_members(now, out);
        let t = self.cfg.timings.clone();
        match self.record.mode.clone() {
            Mode::Paired => {
                let decision = match self.record.rooms.as_slice() {
                    [a] if self.claims_over_silence(a, None, now) => Some((
                        a.clone(),
                        format!("room {a} lost its peer and no other room has ever called"),
                    )),
                    [a, b] => {
                        let (ca, cb) = (self.room_claims(a, now), self.room_claims(b, now));
                        if ca && cb {
                            let (w, why) = self.choose(a, b, now);
                            Some((w, format!("both rooms lost sight of each other; {why}")))
                        } else if ca && self.claims_over_silence(a, Some(b), now) {
                            Some((
                                a.clone(),
                                format!("room {a} lost its peer and room {b} is silent"),
                            ))
                        } else if cb && self.claims_over_silence(b, Some(a), now) {
                            Some((
                                b.clone(),
                                format!("room {b} lost its peer and room {a} is silent"),
                            ))
                        } else {
                            None
                        }
                    }
                    _ => None,
                };
                if let Some((winner, why)) = decision {
                    self.set_mode(now, Mode::Alone(winner), why, out);
                }
            }
            Mode::Alone(room) => {
                if !self.cfg.auto_rejoin {
                    return;
                }
                let Some(other) = self.other_room(&room).cloned() else {
                    return;
                };
                let fresh: Vec<&NodeSeen> =
                    self.nodes.values().filter(|n| self.fresh(n, now)).collect();
                let both_heard =
                    fresh.iter().any(|n| n.room == room) && fresh.iter().any(|n| n.room == other);
                let all_reach = fresh.iter().all(|n| n.peer_reachable);
                if !(both_heard && all_reach) {
                    self.reachable_since = None;
                    return;
                }
                let since = *self.reachable_since.get_or_insert(now);
                if now.since(since) >= t.rejoin_stable_ms {
                    self.set_mode(
                        now,
                        Mode::Releasing(room.clone()),
                        format!(
                            "rooms {room} and {other} have seen each other for {} ms; room {room} releases its takeover",
                            now.since(since)
                        ),
                        out,
                    );
                }
            }
            Mode::Releasing(room) => {
                if now.since(self.mode_since) >= t.alone_handover_wait_ms() {
                    self.set_mode(
                        now,
                        Mode::Paired,
                        format!(
                            "room {room}'s takeover leases have run out; both rooms run paired"
                        ),
                        out,
                    );
                }
            }
        }
    }

    fn admin(
        &mut self,
        now: Millis,
        cmd: AdminCommand,
        out: &mut ArbiterStep,
    ) -> Result<String, String> {
        if matches!(
            cmd,
            AdminCommand::ForceSurvivor { .. } | AdminCommand::Release
        ) && self
            .record
            .epoch
            .max(self.max_epoch_seen)
            .checked_next()
            .is_none()
        {
            return Err(format!(
                "cluster {}'s epoch {} cannot grow any more, so who may act alone cannot change; \
                 see docs/witness.md (out-of-range epochs) for the recovery",
                self.cluster, self.record.epoch
            ));
        }
        match cmd {
            AdminCommand::ForceSurvivor {
                room,
                other_room_down,
            } => {
                // Only a room one of whose nodes has called: a typo must not add a room (a
                // cluster has two, so a phantom one would lock the real one out for good).
                if !self.record.rooms.contains(&room) {
                    let known = if self.record.rooms.is_empty() {
                        "none yet: a room becomes known when one of its nodes calls".to_string()
                    } else {
                        self.record
                            .rooms
                            .iter()
                            .map(|r| r.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    };
                    return Err(format!(
                        "cluster {} has no room {room}; nothing changed (known rooms: {known})",
                        self.cluster
                    ));
                }
                if other_room_down {
                    // The operator certifies the other room is powered off: nothing to wait for.
                    self.recovering_until = None;
                    self.record.recovering = false;
                    self.last_alone_grant.retain(|r, _| *r == room);
                    if let Some(o) = self.other_room(&room).cloned() {
                        self.last_grant.remove(&o);
                    }
                } else if let Some(until) = self.recovering_until.take() {
                    self.record.recovering = false;
                    // Still wait out what a lost state may have forgotten.
                    for r in self.record.rooms.clone() {
                        self.last_grant.insert(r.clone(), until);
                        if r != room {
                            self.last_alone_grant.insert(r, until);
                        }
                    }
                    self.record.epoch = self.record.epoch.max(self.max_epoch_seen);
                }
                self.set_mode(
                    now,
                    Mode::Alone(room.clone()),
                    format!(
                        "operator override: room {room} acts alone{}",
                        if other_room_down {
                            " (other room certified powered off)"
                        } else {
                            ""
                        }
                    ),
                    out,
                );
                if other_room_down {
                    self.takeover_at = now;
                }
                Ok(format!(
                    "room {room} acts alone at epoch {}",
                    self.record.epoch
                ))
            }
            AdminCommand::Release => match self.record.mode.clone() {
                Mode::Alone(room) => {
                    self.set_mode(
                        now,
                        Mode::Releasing(room.clone()),
                        format!("operator release: room {room} releases its takeover"),
                        out,
                    );
                    Ok(format!(
                        "room {room} releases its takeover at epoch {}",
                        self.record.epoch
                    ))
                }
                other => Err(format!(
                    "nothing to release: cluster {} is {:?}, not acting alone",
                    self.cluster, other
                )),
            },
            AdminCommand::Pause => {
                self.record.paused = true;
                Ok(format!(
                    "arbitration paused for cluster {}: no split or rejoin decisions until resume",
                    self.cluster
                ))
            }
            AdminCommand::Resume => {
                self.record.paused = false;
                self.evaluate(now, out);
                Ok(format!("arbitration resumed for cluster {}", self.cluster))
            }
            AdminCommand::MemberRemove { node, powered_off } => {
                self.admin_take_out(now, node, powered_off, MemberStatus::Removed, out)
            }
            AdminCommand::MemberDecommission { node, powered_off } => {
                self.admin_take_out(now, node, powered_off, MemberStatus::Decommissioned, out)
            }
            AdminCommand::MemberAdd { node } => {
                let Some(m) = self.record.members.get(&node) else {
                    return Err(format!(
                        "cluster {} has no node {node}; nothing changed (a new node joins by \
                         calling with a certificate of this cluster and its room)",
                        self.cluster
                    ));
                };
                match m.status {
                    MemberStatus::Removed | MemberStatus::Decommissioned => {
                        let room = m.room.clone();
                        self.change_member(
                            &node,
                            &room,
                            MemberStatus::Member,
                            format!("operator: node {node} added back to room {room}"),
                            out,
                        );
                        Ok(format!(
                            "node {node} is a member of room {room} again at membership version \
                             {}; it runs once the other room has acknowledged it",
                            self.record.members_version
                        ))
                    }
                    MemberStatus::Member => Err(format!(
                        "node {node} is already a member of room {}; nothing changed",
                        m.room
                    )),
                    MemberStatus::Excluded => Err(format!(
                        "node {node} was excluded as stopped; it is readmitted by itself when it \
                         calls again; nothing changed"
                    )),
                }
            }
        }
    }

    /// Whether the witness has heard no node of `room` within `silence_ms` (a room none of
    /// whose nodes has called in this incarnation is silent): the room silence the status page
    /// shows, by the same freshness rule the decisions use for each node.
    pub fn room_silent(&self, now: Millis, room: &RoomId) -> bool {
        !self
            .nodes
            .values()
            .any(|n| &n.room == room && self.fresh(n, now))
    }

    /// Whether `node` has not been heard within `silence_ms` (an unknown node is silent).
    pub fn node_silent(&self, now: Millis, node: &NodeId) -> bool {
        self.nodes.get(node).is_none_or(|n| !self.fresh(n, now))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::NodePhase;

    fn req(room: &str, node: &str, epoch: u64, claim: bool, health: u32) -> ArbiterInput {
        ArbiterInput::Lease(LeaseRequest {
            version: WIRE_VERSION,
            cluster: "c".into(),
            room: room.into(),
            node: node.into(),
            epoch: Epoch(epoch),
            phase: NodePhase::Active,
            peer_contact: !claim,
            peer_reachable: !claim,
            claim,
            takeover: false,
            health,
            peers: Vec::new(),
            members_version: 0,
            address: None,
        })
    }

    #[test]
    fn a_node_reporting_a_higher_epoch_makes_the_witness_jump_past_it_and_persist() {
        let mut a = Arbiter::create(ArbiterConfig::default(), "c".into(), Millis(0));
        let step = a.step(Millis(10), req("a", "a1", 7, false, 0));
        assert_eq!(step.reply.expect("reply").epoch, Epoch(8));
        assert_eq!(step.persist.expect("the jump is persisted").epoch, Epoch(8));
    }

    #[test]
    fn without_preference_or_history_the_healthier_room_survives_a_split() {
        let mut a = Arbiter::create(ArbiterConfig::default(), "c".into(), Millis(0));
        a.step(Millis(10), req("a", "a1", 1, false, 1));
        a.step(Millis(10), req("b", "b1", 1, false, 5));
        a.step(Millis(20), req("a", "a1", 1, true, 1));
        a.step(Millis(20), req("b", "b1", 1, true, 5));
        assert_eq!(a.record().mode, Mode::Alone(RoomId::new("b")));
    }

    #[test]
    fn the_room_that_survived_last_wins_the_next_split_over_a_healthier_one() {
        let mut a = Arbiter::create(ArbiterConfig::default(), "c".into(), Millis(0));
        a.step(Millis(10), req("a", "a1", 1, false, 1));
        a.step(Millis(10), req("b", "b1", 1, false, 5));
        a.record.last_survivor = Some(RoomId::new("a"));
        a.step(Millis(20), req("a", "a1", 1, true, 1));
        a.step(Millis(20), req("b", "b1", 1, true, 5));
        assert_eq!(a.record().mode, Mode::Alone(RoomId::new("a")));
    }

    fn claim_naming(room: &str, node: &str, vouched_by: &[(&str, u64)]) -> ArbiterInput {
        let ArbiterInput::Lease(mut r) = req(room, node, 1, true, 0) else {
            unreachable!("req builds a lease request")
        };
        r.peers = vouched_by
            .iter()
            .map(|(n, age)| crate::wire::PeerReport {
                node: NodeId::new(*n),
                vouched_ms_ago: Some(*age),
                answered_ms_ago: Some(*age),
                unvouched_ms: None,
            })
            .collect();
        ArbiterInput::Lease(r)
    }

    #[test]
    fn a_witness_deaf_to_both_rooms_does_not_read_its_deafness_as_a_rooms_silence() {
        let mut a = Arbiter::create(ArbiterConfig::default(), "c".into(), Millis(0));
        // Room a claims (one peer of b is dead), room b's last node still has contact.
        a.step(Millis(100), req("a", "a1", 1, true, 0));
        a.step(Millis(500), req("b", "b1", 1, false, 0));
        // The witness hears nobody for 3 s (longer than silence_ms), then room a first.
        for t in (600..3_500).step_by(100) {
            a.step(Millis(t), ArbiterInput::Tick);
        }
        a.step(Millis(3_500), req("a", "a1", 1, true, 0));
        a.step(Millis(3_550), req("a", "a2", 1, true, 0));
        assert_eq!(a.record().mode, Mode::Paired, "deafness is not silence");
        // Room b's node reports again: still nothing to decide.
        a.step(Millis(3_700), req("b", "b1", 1, false, 0));
        assert_eq!(a.record().mode, Mode::Paired);
    }

    #[test]
    fn a_claim_that_names_a_recent_vouch_from_the_other_room_does_not_make_it_silent() {
        let mut a = Arbiter::create(ArbiterConfig::default(), "c".into(), Millis(0));
        a.step(Millis(0), req("b", "b1", 1, false, 0));
        // Room b no longer reaches the witness, but a2 still gets b1's vouches: room b runs.
        for t in (500..6_000).step_by(500) {
            a.step(Millis(t), claim_naming("a", "a1", &[("b1", 200)]));
        }
        assert_eq!(a.record().mode, Mode::Paired, "room b still runs paired");
        // The vouches stop (the last one reported was for a ping sent at t = 5 300): room b is
        // silent for a claim made more than silence_ms after that.
        let mut decided = None;
        for t in (6_000..10_000).step_by(500) {
            a.step(Millis(t), claim_naming("a", "a1", &[]));
            if a.record().mode != Mode::Paired {
                decided = Some(t);
                break;
            }
        }
        assert_eq!(a.record().mode, Mode::Alone(RoomId::new("a")));
        let decided = decided.expect("decided");
        assert_eq!(decided, 8_000, "the first claim later than 5 300 + 2 500");
    }

    #[test]
    fn after_a_restart_the_policy_decides_a_split_not_the_order_claims_arrive_in() {
        let cfg = ArbiterConfig {
            preferred_room: Some(RoomId::new("a")),
            ..ArbiterConfig::default()
        };
        let mut record = ClusterRecord::new();
        record.rooms = vec![RoomId::new("a"), RoomId::new("b")];
        let mut a = Arbiter::restart(cfg, "c".into(), record, Millis(50_000));
        // Room b's claims arrive first, for longer than one renewal interval.
        for t in (50_100..51_500).step_by(250) {
            a.step(Millis(t), req("b", "b1", 1, true, 9));
            assert_eq!(a.record().mode, Mode::Paired, "room a was not heard yet");
        }
        a.step(Millis(51_600), req("a", "a1", 1, true, 0));
        assert_eq!(a.record().mode, Mode::Alone(RoomId::new("a")));
    }

    #[test]
    fn after_a_restart_a_room_never_heard_becomes_silent_only_after_the_silence_window() {
        let mut record = ClusterRecord::new();
        record.rooms = vec![RoomId::new("a"), RoomId::new("b")];
        let mut a = Arbiter::restart(ArbiterConfig::default(), "c".into(), record, Millis(0));
        let s = a.config().timings.silence_ms;
        let mut t = 100;
        while t <= s + 100 {
            a.step(Millis(t), req("b", "b1", 1, true, 0));
            assert_eq!(a.record().mode, Mode::Paired, "at {t}");
            t += 500;
        }
        a.step(Millis(s + 600), req("b", "b1", 1, true, 0));
        assert_eq!(a.record().mode, Mode::Alone(RoomId::new("b")));
    }
}
