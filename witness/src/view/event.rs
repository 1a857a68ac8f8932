//! The timeline's events, as the cluster page and `/v1/timeline` show them (recorded, compactly,
//! by `crate::history`). Serialised with a `kind` tag; every enum serialises to the string the
//! JSON has always carried. Also [`Timeline`], what the cluster page draws.
use super::model::ClusterStatus;
use super::vocab::{ClusterMode, LoadedHow, VerdictKind};
use proto::wire::NodePhase;
use serde::{Deserialize, Serialize};

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

/// What the cluster page draws: the status now and what happened before.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Timeline {
    pub status: ClusterStatus,
    /// Oldest first.
    pub events: Vec<TimelineEvent>,
    /// A node not heard for longer than this is silent.
    pub silence_ms: u64,
    /// The history starts when the witness loaded the cluster (it is not persisted).
    pub loaded_ms_ago: u64,
}
