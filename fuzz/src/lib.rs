//! What the fuzz targets share: a reader that turns the rest of an input into choices, and the
//! drivers that feed a decoded value to the state machine the shell would hand it to (the
//! witness's arbiter, a node's agent), checking after every step the properties that must hold
//! for any input. The decoders themselves are always the project's own functions; nothing here
//! decodes bytes.
use proto::agent::{AgentConfig, AgentInput, NodeAgent, RunState};
use proto::arbiter::{Arbiter, ArbiterInput, ArbiterStep};
use proto::wire::{
    AdminCommand, LeaseMode, LeaseReply, LeaseRequest, NodePhase, PeerReport, Ping, Pong,
    TakeoverPermit, Verdict, WIRE_VERSION,
};
use proto::{ClusterId, Epoch, Millis, NodeId, RoomId, Timings};
use std::path::PathBuf;

/// Reads bytes as a sequence of choices; past the end every choice is zero.
pub struct Choices<'a> {
    data: &'a [u8],
}

impl<'a> Choices<'a> {
    pub fn new(data: &'a [u8]) -> Choices<'a> {
        Choices { data }
    }

    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    pub fn u8(&mut self) -> u8 {
        match self.data.split_first() {
            Some((b, rest)) => {
                self.data = rest;
                *b
            }
            None => 0,
        }
    }

    pub fn bool(&mut self) -> bool {
        self.u8() & 1 == 1
    }

    /// Mostly small numbers, sometimes the extremes: where arithmetic breaks.
    pub fn u64(&mut self) -> u64 {
        match self.u8() % 8 {
            0 => 0,
            1 => u64::MAX,
            2 => u64::MAX - u64::from(self.u8()),
            3 => u64::from(u32::from_le_bytes([
                self.u8(),
                self.u8(),
                self.u8(),
                self.u8(),
            ])),
            _ => u64::from(self.u8()) * 100,
        }
    }
}

/// The names the drivers use: cluster `c`, rooms `a` and `b`, two nodes each.
pub fn cluster() -> ClusterId {
    ClusterId::new("c")
}

fn node(i: u8) -> (RoomId, NodeId) {
    let room = if i % 4 < 2 { "a" } else { "b" };
    let n = format!("{room}{}", i % 2 + 1);
    (RoomId::new(room), NodeId::new(n))
}

fn phase(c: &mut Choices) -> NodePhase {
    match c.u8() % 4 {
        0 => NodePhase::Starting,
        1 => NodePhase::Active,
        2 => NodePhase::Fencing,
        _ => NodePhase::Fenced,
    }
}

/// A lease request from one of the four nodes, every field chosen by the input.
pub fn lease_request(c: &mut Choices, cluster: &ClusterId) -> LeaseRequest {
    let (room, node) = node(c.u8());
    LeaseRequest {
        version: WIRE_VERSION,
        cluster: cluster.clone(),
        room,
        node,
        epoch: Epoch(c.u64()),
        phase: phase(c),
        peer_contact: c.bool(),
        peer_reachable: c.bool(),
        claim: c.bool(),
        takeover: c.bool(),
        health: u32::from(c.u8()),
        peers: (0..c.u8() % 3).map(|_| peer_report(c)).collect(),
        members_version: c.u64() % 8,
        address: match c.u8() % 4 {
            0 => None,
            1 => Some(format!("10.0.0.{}:7444", c.u8())),
            2 => Some(String::from_utf8_lossy(&[c.u8(), c.u8(), b':', c.u8()]).into_owned()),
            _ => Some("x".repeat(usize::from(c.u8()) * 2)),
        },
    }
}

/// What a node reports of one peer: any node (also of its own room, or unknown ages), as a
/// hostile or confused agent might.
fn peer_report(c: &mut Choices) -> PeerReport {
    let (_, node) = node(c.u8());
    let age = |c: &mut Choices| c.bool().then(|| c.u64());
    PeerReport {
        node,
        vouched_ms_ago: age(c),
        answered_ms_ago: age(c),
        unvouched_ms: age(c),
    }
}

fn admin_command(c: &mut Choices) -> AdminCommand {
    match c.u8() % 7 {
        0 => AdminCommand::ForceSurvivor {
            room: node(c.u8()).0,
            other_room_down: c.bool(),
        },
        1 => AdminCommand::Release,
        2 => AdminCommand::Pause,
        3 => AdminCommand::MemberRemove {
            node: node(c.u8()).1,
            powered_off: c.bool(),
        },
        4 => AdminCommand::MemberAdd {
            node: node(c.u8()).1,
        },
        5 => AdminCommand::MemberDecommission {
            node: node(c.u8()).1,
            powered_off: c.bool(),
        },
        _ => AdminCommand::Resume,
    }
}

/// Checks one arbiter step: the epoch never goes back, a record to persist is one the witness
/// can read back at its next start (through the store's own decoder), and a reply answers the
/// node that asked, in the record's epoch.
pub fn check_arbiter_step(
    a: &Arbiter,
    epoch_before: Epoch,
    step: &ArbiterStep,
    asked: Option<&LeaseRequest>,
) {
    let epoch = a.record().epoch;
    assert!(
        epoch >= epoch_before,
        "the epoch went back from {epoch_before} to {epoch}"
    );
    if let Some(rec) = &step.persist {
        let bytes = serde_json::to_vec(rec).expect("a record encodes");
        let back = witness::store::decode_record(&bytes)
            .unwrap_or_else(|e| panic!("a record the arbiter persisted does not decode: {e}"));
        assert_eq!(&back, rec, "a persisted record reads back differently");
    }
    if let (Some(req), Some(reply)) = (asked, &step.reply) {
        assert_eq!(
            (&reply.cluster, &reply.room, &reply.node),
            (&req.cluster, &req.room, &req.node),
            "the reply is addressed to another node"
        );
        if matches!(reply.verdict, Verdict::Grant { .. }) {
            assert_eq!(
                reply.epoch, epoch,
                "a grant carries an epoch the record does not"
            );
        }
    }
}

/// Runs one input through the arbiter and checks the step.
pub fn arbiter_step(a: &mut Arbiter, now: Millis, input: ArbiterInput) {
    let before = a.record().epoch;
    let asked = match &input {
        ArbiterInput::Lease(r) => Some(r.clone()),
        _ => None,
    };
    let step = a.step(now, input);
    check_arbiter_step(a, before, &step, asked.as_ref());
}

/// Feeds the arbiter a sequence of lease requests, ticks and admin commands chosen by the input,
/// at times that only move forward (sometimes by a lot), checking every step.
pub fn drive_arbiter(a: &mut Arbiter, mut now: Millis, c: &mut Choices, max_steps: usize) {
    let cluster = a.cluster().clone();
    for _ in 0..max_steps {
        if c.is_empty() {
            break;
        }
        now = now + c.u64();
        let input = match c.u8() % 4 {
            0 | 1 => ArbiterInput::Lease(lease_request(c, &cluster)),
            2 => ArbiterInput::Tick,
            _ => ArbiterInput::Admin(admin_command(c)),
        };
        arbiter_step(a, now, input);
    }
}

/// Node `a1` of cluster `c`, peers `b1` and `b2`, default timings.
pub fn agent_config() -> AgentConfig {
    AgentConfig {
        timings: Timings::default(),
        cluster: cluster(),
        room: RoomId::new("a"),
        node: NodeId::new("a1"),
        peers: vec![NodeId::new("b1"), NodeId::new("b2")],
        address: Some("10.0.0.1:7444".into()),
        mutation: Default::default(),
    }
}

/// Runs one input through the agent; a run state to persist must read back through the state
/// file's own encoding unchanged.
pub fn agent_step(agent: &mut NodeAgent, now: Millis, input: AgentInput) {
    let step = agent.step(now, input);
    if let Some(run) = &step.persist {
        let bytes = serde_json::to_vec(run).expect("a run state encodes");
        let back: RunState = serde_json::from_slice(&bytes)
            .unwrap_or_else(|e| panic!("a persisted run state does not decode: {e}"));
        assert_eq!(&back, run, "a persisted run state reads back differently");
    }
}

fn verdict(c: &mut Choices) -> Verdict {
    match c.u8() % 5 {
        0 => Verdict::Grant {
            mode: LeaseMode::Paired,
            valid_ms: c.u64(),
        },
        1 => Verdict::Grant {
            mode: LeaseMode::Alone {
                takeover: match c.u8() % 3 {
                    0 => TakeoverPermit::Wait,
                    1 => TakeoverPermit::Allowed,
                    _ => TakeoverPermit::Release,
                },
            },
            valid_ms: c.u64(),
        },
        2 => Verdict::Fence {
            reason: "fuzz".into(),
        },
        _ => Verdict::Retry {
            after_ms: c.u64(),
            reason: "fuzz".into(),
        },
    }
}

/// Feeds the agent ticks, lease replies, pings and pongs chosen by the input (addressed as the
/// shell would let them through), at times that only move forward.
pub fn drive_agent(agent: &mut NodeAgent, mut now: Millis, c: &mut Choices, max_steps: usize) {
    let cfg = agent.config().clone();
    for _ in 0..max_steps {
        if c.is_empty() {
            break;
        }
        now = now + c.u64();
        let peer = cfg.peers[usize::from(c.u8()) % cfg.peers.len()].clone();
        let input = match c.u8() % 6 {
            0 | 1 => AgentInput::Tick,
            2 => AgentInput::LeaseReply {
                sent_at: now - c.u64(),
                reply: LeaseReply {
                    version: WIRE_VERSION,
                    cluster: cfg.cluster.clone(),
                    room: cfg.room.clone(),
                    node: cfg.node.clone(),
                    epoch: Epoch(c.u64()),
                    verdict: verdict(c),
                    proof: None,
                    members: c.bool().then(|| proto::wire::Membership {
                        version: c.u64() % 8,
                        members: (0..c.u8() % 4)
                            .map(|_| {
                                let (room, node) = node(c.u8());
                                proto::wire::MemberEntry {
                                    node,
                                    room,
                                    status: match c.u8() % 4 {
                                        0 => proto::wire::MemberStatus::Member,
                                        1 => proto::wire::MemberStatus::Excluded,
                                        2 => proto::wire::MemberStatus::Removed,
                                        _ => proto::wire::MemberStatus::Decommissioned,
                                    },
                                    address: c.bool().then(|| "10.0.0.2:7444".to_string()),
                                }
                            })
                            .collect(),
                    }),
                    witness_ms: c.bool().then(|| c.u64()),
                },
            },
            3 => AgentInput::Ping(Ping {
                version: WIRE_VERSION,
                cluster: cfg.cluster.clone(),
                room: RoomId::new("b"),
                node: peer,
                seq: c.u64(),
                epoch: Epoch(c.u64()),
            }),
            4 => AgentInput::Pong(Pong {
                version: WIRE_VERSION,
                cluster: cfg.cluster.clone(),
                room: RoomId::new("b"),
                node: peer,
                seq: c.u64(),
                epoch: Epoch(c.u64()),
                phase: phase(c),
                vouch: c.bool(),
            }),
            _ => AgentInput::FenceDone { ok: c.bool() },
        };
        agent_step(agent, now, input);
    }
}

/// A scratch file of this process for decoders that read a file (one per target process;
/// libFuzzer runs inputs one after another, so reuse is safe).
pub fn scratch_file(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("witness-fuzz-{}", std::process::id()));
    if let Err(e) = std::fs::create_dir_all(&dir) {
        panic!("cannot create the scratch directory {}: {e}", dir.display());
    }
    dir.join(name)
}

/// Writes `data` to `path` (the fuzz harness's own failure, not the decoder's, if it cannot).
pub fn write_scratch(path: &std::path::Path, data: &[u8]) {
    if let Err(e) = std::fs::write(path, data) {
        panic!("cannot write the scratch file {}: {e}", path.display());
    }
}

/// What an accepted set of timings must give: every derived wait computes (no overflow) and is
/// at least as long as the durations it has to outlast. A wait that wrapped around would let a
/// room take over while the other still holds a lease.
pub fn check_accepted_timings(where_: &str, t: &Timings) {
    if let Err(e) = t.validate() {
        panic!("{where_}: accepted timings do not validate: {e:?}");
    }
    let sum = |xs: &[u64]| {
        xs.iter()
            .try_fold(0u64, |a, x| a.checked_add(*x))
            .unwrap_or_else(|| panic!("{where_}: accepted timings whose sum overflows: {t:?}"))
    };
    let witness_wait = t.witness_takeover_wait_ms();
    assert!(
        witness_wait >= sum(&[t.lease_ms, t.fence_deadline_ms, t.watchdog_timeout_ms]),
        "{where_}: the witness's takeover wait {witness_wait} ms is shorter than L+F+W: {t:?}"
    );
    let node_wait = t.node_takeover_wait_ms();
    assert!(
        node_wait
            >= sum(&[
                t.peer_timeout_ms,
                t.fence_deadline_ms,
                t.watchdog_timeout_ms
            ]),
        "{where_}: the node's takeover wait {node_wait} ms is shorter than P+F+W: {t:?}"
    );
    assert!(
        t.alone_handover_wait_ms() >= t.lease_ms,
        "{where_}: the alone handover wait is shorter than the lease: {t:?}"
    );
    assert!(t.forgotten_state_wait_ms() >= t.lease_ms);
    let _ = t.worst_case_room_loss_takeover_ms();
}
