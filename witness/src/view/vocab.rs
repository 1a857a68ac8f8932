//! The status model's words: every enum the status JSON, the timeline and the metrics carry as
//! a string. Each serialises to the exact string the JSON has always carried (`"mode":
//! "alone"`, `"alarm_kinds": ["room_silent"]`, `"verdict": "fence"`): dashboards, alerts, the
//! CLI table and the page check read those strings, so a variant is renamed only with them.
use proto::arbiter::{Arbiter, Mode};
use proto::wire::{AdminCommand, LeaseMode, Verdict};
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
    Excluded,
    Claim,
    PartialPeerLoss,
    Releasing,
    Paused,
    OneRoom,
    NotCalled,
}

impl AlarmKind {
    /// Every kind, most urgent first.
    pub const ALL: [AlarmKind; 11] = [
        AlarmKind::Recovering,
        AlarmKind::RoomSilent,
        AlarmKind::Alone,
        AlarmKind::NodeSilent,
        AlarmKind::Excluded,
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
            AlarmKind::Excluded => "excluded",
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
/// audit log's and the timeline's word for it (one list, in proto).
pub(crate) fn admin_label(cmd: &AdminCommand) -> &'static str {
    cmd.label()
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::StoreOrigin;

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
                "excluded",
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
