//! The status model: one cluster, its rooms and nodes, and the witness itself, as `/v1/status`
//! and the pages show them.
use super::vocab::{AlarmKind, ClusterMode, VerdictKind};
use crate::store::StoreOrigin;
use proto::wire::NodePhase;
use serde::{Deserialize, Serialize};

/// One node on the status page.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct NodeStatus {
    pub node: String,
    pub last_seen_ms_ago: u64,
    pub phase: NodePhase,
    pub epoch: u64,
    pub peer_contact: bool,
    pub peer_reachable: bool,
    pub claim: bool,
    pub takeover: bool,
    pub health: u32,
    pub last_verdict: Option<VerdictKind>,
}

/// One room on the status page.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RoomStatus {
    pub room: String,
    /// None when no node of the room has called since the witness started.
    pub last_seen_ms_ago: Option<u64>,
    pub silent: bool,
    /// This room holds the right to act alone.
    pub alone: bool,
    pub nodes: Vec<NodeStatus>,
}

/// One cluster on the status page.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ClusterStatus {
    pub cluster: String,
    pub epoch: u64,
    pub mode: ClusterMode,
    pub survivor: Option<String>,
    /// Who may act alone, in words.
    pub summary: String,
    pub paused: bool,
    pub recovering_ms_left: Option<u64>,
    pub takeover_allowed_in_ms: Option<u64>,
    pub mode_since_ms_ago: Option<u64>,
    pub preferred_room: Option<String>,
    pub auto_rejoin: bool,
    pub rooms: Vec<RoomStatus>,
    pub alarms: Vec<String>,
    /// One kind per alarm, in the same order: what the fleet page counts and filters by.
    #[serde(default)]
    pub alarm_kinds: Vec<AlarmKind>,
    /// False for a cluster known from the store that has not called since the witness started.
    pub loaded: bool,
    /// The membership version and every node the witness knows, counted or not.
    #[serde(default)]
    pub members_version: u64,
    #[serde(default)]
    pub members: Vec<MemberView>,
}

/// One node of a cluster's membership, as the status shows it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct MemberView {
    pub node: String,
    pub room: String,
    pub status: proto::wire::MemberStatus,
    /// The membership version at which it last became a counted member.
    pub since: u64,
    /// The highest membership version it has reported holding.
    pub acked: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
}

/// Facts about the witness process itself.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct WitnessInfo {
    pub version: String,
    pub started_at: String,
    pub uptime_s: u64,
    pub lease_listen: String,
    pub status_listen: String,
    pub data_dir: String,
    /// `intact` or `lost_state` (empty or wiped store at start).
    pub store_origin: StoreOrigin,
    /// While the store's lost state may still hide leases: unknown clusters are recovered.
    pub lost_state_window_ms_left: Option<u64>,
    /// The whole forgotten-state wait, when the store was empty at start.
    #[serde(default)]
    pub lost_state_wait_ms: Option<u64>,
    pub clusters_loaded: usize,
    pub server_cert_expires_in_s: i64,
    pub ca_cert_expires_in_s: i64,
    pub tls_ca: String,
    pub tls_cert: String,
    pub proof_kid: String,
    pub audit_log: String,
}

/// `/v1/status`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct StatusDoc {
    pub witness: WitnessInfo,
    pub clusters: Vec<ClusterStatus>,
    /// The newest operator commands, newest first.
    pub audit: Vec<serde_json::Value>,
}
