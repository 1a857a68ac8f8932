//! The timeline's events, as the cluster page and `/v1/timeline` show them (recorded, compactly,
//! by `crate::history`). Serialised with a `kind` tag; every enum serialises to the string the
//! JSON has always carried.
use super::model::ClusterMode;
use proto::wire::{AdminCommand, LeaseMode, NodePhase, Verdict};
use serde::{Deserialize, Serialize};

/// What the witness answered a node: also the `result` label of `witness_lease_requests_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VerdictKind {
    GrantPaired = 0,
    GrantAlone = 1,
    Fence = 2,
    Retry = 3,
}

impl VerdictKind {
    pub fn of(v: &Verdict) -> VerdictKind {
        match v {
            Verdict::Grant {
                mode: LeaseMode::Paired,
                ..
            } => VerdictKind::GrantPaired,
            Verdict::Grant {
                mode: LeaseMode::Alone { .. },
                ..
            } => VerdictKind::GrantAlone,
            Verdict::Fence { .. } => VerdictKind::Fence,
            Verdict::Retry { .. } => VerdictKind::Retry,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            VerdictKind::GrantPaired => "grant_paired",
            VerdictKind::GrantAlone => "grant_alone",
            VerdictKind::Fence => "fence",
            VerdictKind::Retry => "retry",
        }
    }

    /// The verdict stored as `self as u8` (the history's one-byte form).
    pub(crate) fn from_code(c: u8) -> VerdictKind {
        match c {
            0 => VerdictKind::GrantPaired,
            1 => VerdictKind::GrantAlone,
            2 => VerdictKind::Fence,
            _ => VerdictKind::Retry,
        }
    }
}

impl std::fmt::Display for VerdictKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An operator command's name: the `command` label of `witness_admin_commands_total`, the
/// audit log's and the timeline's word for it.
pub(crate) fn admin_label(cmd: &AdminCommand) -> &'static str {
    match cmd {
        AdminCommand::ForceSurvivor { .. } => "force_survivor",
        AdminCommand::Release => "release",
        AdminCommand::Pause => "pause",
        AdminCommand::Resume => "resume",
    }
}

/// How the witness came to hold a cluster.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LoadedHow {
    /// First call of a cluster the store never held.
    New = 0,
    /// From its stored record.
    Restarted = 1,
    /// The state may have been lost: nothing is granted until forgotten leases ran out.
    Recovering = 2,
}

impl LoadedHow {
    /// The value stored as `self as u8` (the history's one-byte form).
    pub(crate) fn from_code(c: u8) -> LoadedHow {
        match c {
            0 => LoadedHow::New,
            1 => LoadedHow::Restarted,
            _ => LoadedHow::Recovering,
        }
    }
}

/// What happened, as the page and `/v1/timeline` show it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum EventKind {
    /// A node reported a new phase.
    Phase { from: NodePhase, to: NodePhase },
    /// The witness's answer to a node changed.
    Verdict { verdict: VerdictKind },
    /// The witness decided a new mode (a split or rejoin decision, with a new epoch).
    Mode {
        from: ClusterMode,
        to: ClusterMode,
        survivor: Option<String>,
        epoch: u64,
    },
    /// A node started (`active: true`) or released its takeover of the other room's workloads.
    Takeover { active: bool },
    /// A node started or stopped asking for its room to act alone.
    Claim { active: bool },
    /// A node lost or regained contact with the other room.
    PeerContact { ok: bool },
    /// A node called again after `silent_ms` without a call.
    Returned { silent_ms: u64 },
    /// An operator command.
    Admin { command: String, ok: bool },
    /// The forgotten-state wait of this cluster is over.
    RecoveryFinished { epoch: u64 },
    /// The arbiter refused a node's report.
    Refused,
    /// The cluster was loaded by this witness.
    Loaded { how: LoadedHow },
}

/// One event of the timeline.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TimelineEvent {
    /// How long ago, on the witness's clock.
    pub ago_ms: u64,
    /// The node (or, for a mode change, nothing: the survivor is in the kind).
    pub node: Option<String>,
    #[serde(flatten)]
    pub kind: EventKind,
}
