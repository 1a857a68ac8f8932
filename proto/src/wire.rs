//! Wire types: every message between an agent and the witness, and between agents of the two
//! rooms. JSON over mutual TLS; every message carries `version` and a receiver refuses versions
//! it does not speak (see [`check_version`]).
//!
//! Identity fields (`cluster`, `room`, `node`) must match the sender's client certificate; the
//! shells check that before a message reaches a state machine.
use crate::ids::{ClusterId, Epoch, NodeId, RoomId};
use serde::{Deserialize, Serialize};

mod json;

/// The one wire version this build speaks.
pub const WIRE_VERSION: u32 = 1;

/// Refuses a message of a version this build does not speak, with a message for the operator.
pub fn check_version(got: u32) -> Result<(), String> {
    if got == WIRE_VERSION {
        Ok(())
    } else {
        Err(format!(
            "wire version {got} is not supported: this build speaks version {WIRE_VERSION}; \
             upgrade the older side so both speak the same version"
        ))
    }
}

/// Where a node is in its life, as it reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NodePhase {
    /// Booted, has not yet been granted anything; runs no workloads.
    Starting,
    /// Runs its workloads.
    Active,
    /// Lost the right to run; the fencing drivers are running.
    Fencing,
    /// Fencing confirmed: workloads stopped, DRBD secondary, node tainted.
    Fenced,
}

/// A node's lease request (also its report): `POST /v1/lease` on the witness.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LeaseRequest {
    pub version: u32,
    pub cluster: ClusterId,
    pub room: RoomId,
    pub node: NodeId,
    /// The highest epoch this node has seen.
    pub epoch: Epoch,
    pub phase: NodePhase,
    /// This node holds peer contact: a vouch from every node of the other room, recent enough.
    pub peer_contact: bool,
    /// Every node of the other room answered a recent ping (vouching or not): the link works.
    pub peer_reachable: bool,
    /// This running node lost peer contact and asks to act alone.
    pub claim: bool,
    /// This node has taken over the other room's workloads.
    pub takeover: bool,
    /// A health score (higher is healthier), used only to break a split tie.
    pub health: u32,
    /// What this node last heard from each node of the other room. The witness takes a recent
    /// vouch as evidence that the vouching node's room runs, whatever the witness itself heard
    /// (an older agent sends none: the witness then has only its own hearing).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub peers: Vec<PeerReport>,
    /// The version of the cluster's membership this node holds (0: only what its configuration
    /// names). Reporting a version acknowledges it: the witness admits a node only once every
    /// counted member of the other room has acknowledged it (docs/protocol.md §Membership).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub members_version: u64,
    /// Where the other room's nodes reach this node's heartbeat endpoint (`host:port`); the
    /// witness hands it to them with the membership, so a new node needs no edit elsewhere.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}

/// One node of the other room, as a reporting node last heard it. Ages are on the reporting
/// node's clock, counted back from when the report was sent.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeerReport {
    pub node: NodeId,
    /// How long ago the latest ping this peer answered with a vouch was sent; `None` if it has
    /// not vouched for a ping of this node since this node became active.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vouched_ms_ago: Option<u64>,
    /// How long ago the latest ping this peer answered at all was sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub answered_ms_ago: Option<u64>,
    /// This node has given that peer no vouch for at least this long (counted from this agent's
    /// start when it never has): evidence the witness needs before it stops counting a silent
    /// member (docs/protocol.md §Membership).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unvouched_ms: Option<u64>,
}

/// Whether a member counts for the contact rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MemberStatus {
    /// Counts: the other room's nodes need its vouch, and it may be granted leases.
    Member,
    /// Proven stopped (silent to the witness, no vouch from the other room, long enough):
    /// counts no more, is granted nothing; readmitted when it calls again.
    Excluded,
    /// Taken out by the operator: counts no more, is granted nothing until `member add`.
    Removed,
    /// Retired by the operator: counts no more; a machine that later calls with this name
    /// joins as a new node.
    Decommissioned,
}

/// One node in the cluster's membership, as the witness hands it to the agents.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemberEntry {
    pub node: NodeId,
    pub room: RoomId,
    pub status: MemberStatus,
    /// The node's heartbeat endpoint (`host:port`) as it last reported it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
}

/// The cluster's membership: owned by the witness, versioned, carried in replies to a node
/// that reports an older version.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Membership {
    /// Grows with every change.
    pub version: u64,
    pub members: Vec<MemberEntry>,
}

impl Membership {
    /// The nodes of rooms other than `room` that count for the contact rule.
    pub fn counted_peers(&self, room: &RoomId) -> impl Iterator<Item = &MemberEntry> {
        let room = room.clone();
        self.members
            .iter()
            .filter(move |m| m.room != room && m.status == MemberStatus::Member)
    }
}

/// What the witness allows a survivor to do about the other room's workloads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TakeoverPermit {
    /// Not yet: the other room may still hold a lease or be fencing. Keep a takeover already made.
    Wait,
    /// The other room's leases and fence deadline are over: take over (after your own wait).
    Allowed,
    /// The other room is rejoining: release the takeover now.
    Release,
}

/// The kind of right a grant gives.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "mode")]
pub enum LeaseMode {
    /// Both rooms run; this node keeps vouching for the other room.
    Paired,
    /// Only this node's room may run; it stops vouching for the other room.
    Alone { takeover: TakeoverPermit },
}

/// The witness's answer to a lease request.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "verdict")]
pub enum Verdict {
    /// Run, for `valid_ms` counted from when you sent the request.
    Grant {
        #[serde(flatten)]
        mode: LeaseMode,
        valid_ms: u64,
    },
    /// Your room may not run: fence now.
    Fence { reason: String },
    /// Nothing granted now (the witness is waiting out forgotten leases, or arbitration is
    /// paused); keep what you have and ask again.
    Retry { after_ms: u64, reason: String },
}

/// The reply to a [`LeaseRequest`].
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LeaseReply {
    pub version: u32,
    pub cluster: ClusterId,
    pub room: RoomId,
    pub node: NodeId,
    pub epoch: Epoch,
    pub verdict: Verdict,
    /// A signed proof of the grant (a JWT naming cluster, room, epoch and validity), added by the
    /// witness service; `None` from the pure arbiter.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proof: Option<String>,
    /// The cluster's membership, when the node reported an older version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub members: Option<Membership>,
    /// The witness's clock (ms) when it answered, added by the witness service: an agent
    /// compares its rate with its own to measure clock-rate skew (a measurement only; no rule
    /// depends on it). `None` from the pure arbiter.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub witness_ms: Option<u64>,
}

/// A heartbeat from one node to a node of the other room: `POST /v1/heartbeat` on the agent.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ping {
    pub version: u32,
    pub cluster: ClusterId,
    pub room: RoomId,
    pub node: NodeId,
    pub seq: u64,
    pub epoch: Epoch,
}

/// The answer to a [`Ping`]. `vouch` is the responder's promise that it is running paired: it
/// has not been granted the right to act alone, so its room will not take over while the pinger
/// relies on this answer.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pong {
    pub version: u32,
    pub cluster: ClusterId,
    pub room: RoomId,
    pub node: NodeId,
    pub seq: u64,
    pub epoch: Epoch,
    pub phase: NodePhase,
    pub vouch: bool,
}

/// The operator's commands to the witness (admin certificate only; every use is audited).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(
    rename_all = "snake_case",
    tag = "command",
    from = "AdminCommandStrict"
)]
pub enum AdminCommand {
    /// The double fault: let `room` act alone. With `other_room_down` the operator certifies
    /// that every node of the other room is powered off, so the takeover need not wait.
    ForceSurvivor { room: RoomId, other_room_down: bool },
    /// End the survivor's sole right: release the takeover and let the fenced room rejoin.
    Release,
    /// Stop making split and rejoin decisions (maintenance); renewals continue as they are.
    Pause,
    /// Resume arbitration.
    Resume,
    /// Stop counting `node` (planned work, or a node the operator knows is off): it is granted
    /// nothing until `member_add`. Refused while the node may still run, unless the operator
    /// certifies it is powered off.
    MemberRemove { node: NodeId, powered_off: bool },
    /// Let a removed node back: it joins again when it calls, once the other room has
    /// acknowledged it.
    MemberAdd { node: NodeId },
    /// Forget a node for good (hardware retired): the same conditions as `member_remove`; the
    /// name may later be used by a new machine, which then joins as a new node.
    MemberDecommission { node: NodeId, powered_off: bool },
}

impl AdminCommand {
    /// The command's name, as on the wire (audit log, metrics, history).
    pub fn label(&self) -> &'static str {
        match self {
            AdminCommand::ForceSurvivor { .. } => "force_survivor",
            AdminCommand::Release => "release",
            AdminCommand::Pause => "pause",
            AdminCommand::Resume => "resume",
            AdminCommand::MemberRemove { .. } => "member_remove",
            AdminCommand::MemberAdd { .. } => "member_add",
            AdminCommand::MemberDecommission { .. } => "member_decommission",
        }
    }

    /// Every label [`AdminCommand::label`] gives, in a fixed order.
    pub const LABELS: [&'static str; 7] = [
        "force_survivor",
        "release",
        "pause",
        "resume",
        "member_remove",
        "member_add",
        "member_decommission",
    ];
}

/// How [`AdminCommand`] is read: serde's `deny_unknown_fields` ignores extra fields next to
/// the tag of a unit variant (`{"command":"pause","x":1}`), so every variant here has fields
/// (empty for the unit ones) and a typo in a command is refused as in a lease request.
#[derive(Deserialize)]
#[serde(rename_all = "snake_case", tag = "command", deny_unknown_fields)]
enum AdminCommandStrict {
    ForceSurvivor { room: RoomId, other_room_down: bool },
    Release {},
    Pause {},
    Resume {},
    MemberRemove { node: NodeId, powered_off: bool },
    MemberAdd { node: NodeId },
    MemberDecommission { node: NodeId, powered_off: bool },
}

impl From<AdminCommandStrict> for AdminCommand {
    fn from(c: AdminCommandStrict) -> AdminCommand {
        match c {
            AdminCommandStrict::ForceSurvivor {
                room,
                other_room_down,
            } => AdminCommand::ForceSurvivor {
                room,
                other_room_down,
            },
            AdminCommandStrict::Release {} => AdminCommand::Release,
            AdminCommandStrict::Pause {} => AdminCommand::Pause,
            AdminCommandStrict::Resume {} => AdminCommand::Resume,
            AdminCommandStrict::MemberRemove { node, powered_off } => {
                AdminCommand::MemberRemove { node, powered_off }
            }
            AdminCommandStrict::MemberAdd { node } => AdminCommand::MemberAdd { node },
            AdminCommandStrict::MemberDecommission { node, powered_off } => {
                AdminCommand::MemberDecommission { node, powered_off }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grant_serializes_flat_and_round_trips() {
        let r = LeaseReply {
            version: WIRE_VERSION,
            cluster: "c1".into(),
            room: "a".into(),
            node: "n1".into(),
            epoch: Epoch(3),
            verdict: Verdict::Grant {
                mode: LeaseMode::Alone {
                    takeover: TakeoverPermit::Allowed,
                },
                valid_ms: 4000,
            },
            proof: None,
            members: None,
            witness_ms: None,
        };
        let s = serde_json::to_string(&r).unwrap();
        assert!(
            s.contains(r#""verdict":"grant","mode":"alone","takeover":"allowed","valid_ms":4000"#),
            "{s}"
        );
        let back: LeaseReply = serde_json::from_str(&s).unwrap();
        assert_eq!(back, r);
    }

    #[test]
    fn unknown_fields_and_versions_are_refused() {
        let bad = r#"{"version":1,"cluster":"c","room":"a","node":"n","epoch":0,"phase":"active",
            "peer_contact":true,"peer_reachable":true,"claim":false,"takeover":false,"health":1,"extra":1}"#;
        assert!(serde_json::from_str::<LeaseRequest>(bad).is_err());
        assert!(check_version(2).unwrap_err().contains("version 2"));
        assert!(check_version(WIRE_VERSION).is_ok());
    }

    #[test]
    fn admin_commands_with_unknown_fields_are_refused_like_lease_requests() {
        for bad in [
            r#"{"command":"pause","x":1}"#,
            r#"{"command":"resume","force":true}"#,
            r#"{"command":"release","room":"a"}"#,
            r#"{"command":"force_survivor","room":"a","other_room_down":false,"x":1}"#,
        ] {
            assert!(
                serde_json::from_str::<AdminCommand>(bad).is_err(),
                "accepted {bad}"
            );
        }
        for good in [
            r#"{"command":"pause"}"#,
            r#"{"command":"resume"}"#,
            r#"{"command":"release"}"#,
            r#"{"command":"force_survivor","room":"a","other_room_down":true}"#,
        ] {
            let c: AdminCommand = serde_json::from_str(good).expect(good);
            assert_eq!(serde_json::to_string(&c).expect("encodes"), good);
        }
    }
}
