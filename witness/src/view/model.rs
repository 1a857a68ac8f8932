//! The status model's types. Each enum serialises to the exact string the JSON has always
//! carried (`"mode": "alone"`, `"alarm_kinds": ["room_silent"]`): dashboards, alerts, the CLI
//! table and the page check read those strings, so a variant is renamed only with them.
use super::event::{TimelineEvent, VerdictKind};
use crate::store::StoreOrigin;
use proto::arbiter::{Arbiter, Mode};
use proto::wire::NodePhase;
use serde::{Deserialize, Serialize};

/// Who may act alone, as one word: the arbiter's mode, or `recovering` while the witness
/// grants nothing after it may have lost state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClusterMode {
    Paired = 0,
    Alone = 1,
    Releasing = 2,
    Recovering = 3,
}

impl ClusterMode {
    /// Every mode, in the order the fleet page lists them.
    pub const ALL: [ClusterMode; 4] = [
        ClusterMode::Paired,
        ClusterMode::Alone,
        ClusterMode::Releasing,
        ClusterMode::Recovering,
    ];

    /// The serialised name, also the `mode` label of the metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            ClusterMode::Paired => "paired",
            ClusterMode::Alone => "alone",
            ClusterMode::Releasing => "releasing",
            ClusterMode::Recovering => "recovering",
        }
    }

    /// The arbiter's decided mode, without the recovering state.
    pub fn of_mode(m: &Mode) -> ClusterMode {
        match m {
            Mode::Paired => ClusterMode::Paired,
            Mode::Alone(_) => ClusterMode::Alone,
            Mode::Releasing(_) => ClusterMode::Releasing,
        }
    }

    /// The mode stored as `self as u8` (the history's one-byte form).
    pub(crate) fn from_code(c: u8) -> ClusterMode {
        match c {
            0 => ClusterMode::Paired,
            1 => ClusterMode::Alone,
            2 => ClusterMode::Releasing,
            _ => ClusterMode::Recovering,
        }
    }

    /// The cluster's mode as the status shows it: recovering first.
    pub fn of(a: &Arbiter) -> ClusterMode {
        if a.recovering_until().is_some() {
            return ClusterMode::Recovering;
        }
        ClusterMode::of_mode(&a.record().mode)
    }
}

impl std::fmt::Display for ClusterMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The kinds of alarm. Declared most urgent first: the fleet page sorts clusters by their most
/// urgent alarm, and the derived order is that urgency.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlarmKind {
    Recovering,
    RoomSilent,
    Alone,
    NodeSilent,
    Claim,
    PartialPeerLoss,
    Releasing,
    Paused,
    OneRoom,
    NotCalled,
}

impl AlarmKind {
    /// Every kind, most urgent first.
    pub const ALL: [AlarmKind; 10] = [
        AlarmKind::Recovering,
        AlarmKind::RoomSilent,
        AlarmKind::Alone,
        AlarmKind::NodeSilent,
        AlarmKind::Claim,
        AlarmKind::PartialPeerLoss,
        AlarmKind::Releasing,
        AlarmKind::Paused,
        AlarmKind::OneRoom,
        AlarmKind::NotCalled,
    ];

    /// The serialised name, also the `kind` label of `witness_clusters_alarmed`.
    pub fn as_str(self) -> &'static str {
        match self {
            AlarmKind::Recovering => "recovering",
            AlarmKind::RoomSilent => "room_silent",
            AlarmKind::Alone => "alone",
            AlarmKind::NodeSilent => "node_silent",
            AlarmKind::Claim => "claim",
            AlarmKind::PartialPeerLoss => "partial_peer_loss",
            AlarmKind::Releasing => "releasing",
            AlarmKind::Paused => "paused",
            AlarmKind::OneRoom => "one_room",
            AlarmKind::NotCalled => "not_called",
        }
    }

    /// The kind named `s` (a page's `?alarm=` filter).
    pub fn parse(s: &str) -> Option<AlarmKind> {
        AlarmKind::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

impl std::fmt::Display for AlarmKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enums_serialise_to_the_strings_the_status_json_always_carried() {
        let modes: Vec<String> = ClusterMode::ALL
            .iter()
            .map(|m| serde_json::to_string(m).expect("json"))
            .collect();
        assert_eq!(
            modes,
            ["\"paired\"", "\"alone\"", "\"releasing\"", "\"recovering\""]
        );
        for m in ClusterMode::ALL {
            assert_eq!(serde_json::to_value(m).expect("json"), m.as_str());
        }
        let kinds: Vec<&str> = AlarmKind::ALL.iter().map(|k| k.as_str()).collect();
        assert_eq!(
            kinds,
            [
                "recovering",
                "room_silent",
                "alone",
                "node_silent",
                "claim",
                "partial_peer_loss",
                "releasing",
                "paused",
                "one_room",
                "not_called",
            ]
        );
        for k in AlarmKind::ALL {
            assert_eq!(serde_json::to_value(k).expect("json"), k.as_str());
            assert_eq!(AlarmKind::parse(k.as_str()), Some(k));
        }
        let mut sorted = AlarmKind::ALL;
        sorted.sort();
        assert_eq!(sorted, AlarmKind::ALL, "declaration order is urgency order");
        assert_eq!(
            serde_json::to_value(StoreOrigin::LostState).expect("json"),
            "lost_state"
        );
        assert_eq!(
            serde_json::to_value(StoreOrigin::Intact).expect("json"),
            "intact"
        );
    }
}
