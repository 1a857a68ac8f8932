//! Building the status model from an arbiter: the alarms, per room and per node. Every rule
//! about time (is a room silent, is a node fresh) is asked of the arbiter, so the page shows
//! what the decisions see.
use super::model::{ClusterStatus, MemberView, NodeStatus, RoomStatus};
use super::vocab::{AlarmKind, ClusterMode, VerdictKind};
use crate::store::StoredCluster;
use proto::arbiter::{Arbiter, ClusterRecord, Mode, NodeSeen};
use proto::small::SmallMap;
use proto::wire::{MemberStatus, NodePhase};
use proto::{ClusterId, Millis, NodeId, RoomId};

/// Per room, when the witness last heard any of its nodes (None: not since it loaded the
/// cluster).
pub(crate) fn room_last_seen(a: &Arbiter) -> Vec<(RoomId, Option<Millis>)> {
    a.record()
        .rooms
        .iter()
        .map(|r| {
            let newest = a
                .nodes()
                .values()
                .filter(|n| &n.room == r)
                .map(|n| n.last_seen)
                .max();
            (r.clone(), newest)
        })
        .collect()
}

/// "who may act alone", in words.
pub(crate) fn mode_text(a: &Arbiter) -> String {
    if let Some(u) = a.recovering_until() {
        return format!("recovering until {u} (witness clock)");
    }
    match &a.record().mode {
        Mode::Paired => "paired: both rooms run, nobody may act alone".into(),
        Mode::Alone(r) => format!("alone: only room {r} may run"),
        Mode::Releasing(r) => format!("releasing: room {r} runs alone and releases its takeover"),
    }
}

/// Alarms and their kinds, kept side by side.
#[derive(Default)]
struct Alarms {
    text: Vec<String>,
    kinds: Vec<AlarmKind>,
}

impl Alarms {
    fn push(&mut self, kind: AlarmKind, text: String) {
        self.text.push(text);
        self.kinds.push(kind);
    }
}

fn node_status(
    id: &NodeId,
    n: &NodeSeen,
    now: Millis,
    last: Option<&(VerdictKind, Millis)>,
) -> NodeStatus {
    NodeStatus {
        node: id.to_string(),
        last_seen_ms_ago: now.since(n.last_seen),
        phase: n.phase,
        epoch: n.epoch.0,
        peer_contact: n.peer_contact,
        peer_reachable: n.peer_reachable,
        claim: n.claim,
        takeover: n.takeover,
        health: n.health,
        last_verdict: last.map(|l| l.0),
    }
}

/// A loaded cluster's status. `last_verdict` is what each node was last answered (label,
/// when); `loaded_at` is when the witness loaded the cluster (a room not heard since has been
/// silent since then).
pub(crate) fn status_of(
    cluster: &ClusterId,
    a: &Arbiter,
    last_verdict: &SmallMap<NodeId, (VerdictKind, Millis)>,
    loaded_at: Millis,
    now: Millis,
) -> ClusterStatus {
    let rec = a.record();
    let survivor = rec.mode.survivor().cloned();
    let mut alarms = Alarms::default();
    if let Some(u) = a.recovering_until() {
        alarms.push(AlarmKind::Recovering, format!(
            "recovering: the witness may have lost state for this cluster and grants nothing for {} ms more",
            u.since(now)
        ));
    }
    if rec.paused {
        alarms.push(
            AlarmKind::Paused,
            "paused: an operator paused arbitration; no split or rejoin decisions are made".into(),
        );
    }
    match &rec.mode {
        Mode::Alone(r) => alarms.push(
            AlarmKind::Alone,
            format!(
                "room {r} acts alone (epoch {}); the other room must stay fenced",
                rec.epoch
            ),
        ),
        Mode::Releasing(r) => alarms.push(
            AlarmKind::Releasing,
            format!("room {r} is releasing its takeover; the other room rejoins next"),
        ),
        Mode::Paired => {}
    }
    if rec.rooms.len() < 2 {
        alarms.push(
            AlarmKind::OneRoom,
            format!(
                "only {} room(s) have called: a cluster needs both rooms reporting",
                rec.rooms.len()
            ),
        );
    }
    for (id, m) in &rec.members {
        if m.status == MemberStatus::Excluded {
            alarms.push(
                AlarmKind::Excluded,
                format!(
                    "node {id} (room {}) is excluded: proven stopped while its room runs, it no \
                     longer counts for the other room's peer contact; repair it (it rejoins when \
                     it calls) or decommission it",
                    m.room
                ),
            );
        }
    }
    let mut rooms = Vec::new();
    for (room, newest) in room_last_seen(a) {
        let silent = a.room_silent(now, &room);
        let ago = newest.map(|s| now.since(s));
        if silent {
            match ago {
                Some(ms) => alarms.push(
                    AlarmKind::RoomSilent,
                    format!("room {room} silent for {:.1} s", ms as f64 / 1000.0),
                ),
                None => alarms.push(
                    AlarmKind::RoomSilent,
                    format!(
                        "room {room} has not called since the witness started ({:.1} s ago)",
                        now.since(loaded_at) as f64 / 1000.0
                    ),
                ),
            }
        }
        let mut nodes = Vec::new();
        for (id, n) in a.nodes().iter().filter(|(_, n)| n.room == room) {
            let fresh = !a.node_silent(now, id);
            if fresh && rec.mode == Mode::Paired && n.phase == NodePhase::Active {
                if !n.peer_contact || !n.peer_reachable {
                    alarms.push(AlarmKind::PartialPeerLoss, format!(
                        "partial peer loss: node {id} (room {room}) reports peer_contact={} peer_reachable={}",
                        n.peer_contact, n.peer_reachable
                    ));
                }
                if n.claim {
                    alarms.push(
                        AlarmKind::Claim,
                        format!(
                            "node {id} (room {room}) claims to act alone: a split is being decided"
                        ),
                    );
                }
            }
            // A node gone quiet while its room still calls: dead or cut off, and nothing else
            // raises it (the room runs on; a fenced node of the losing room is expected to go).
            let fenced_room = survivor.as_ref().is_some_and(|s| s != &room);
            // A node that no longer counts (excluded, removed) has its own alarm or none.
            let counted = rec
                .members
                .get(id)
                .is_none_or(|m| m.status == MemberStatus::Member);
            if !fresh && !silent && !fenced_room && counted {
                alarms.push(
                    AlarmKind::NodeSilent,
                    format!(
                        "node {id} (room {room}) silent for {:.1} s while its room runs: dead or cut off from the witness",
                        now.since(n.last_seen) as f64 / 1000.0
                    ),
                );
            }
            nodes.push(node_status(id, n, now, last_verdict.get(id)));
        }
        rooms.push(RoomStatus {
            alone: survivor.as_ref() == Some(&room),
            room: room.to_string(),
            last_seen_ms_ago: ago,
            silent,
            nodes,
        });
    }
    ClusterStatus {
        cluster: cluster.to_string(),
        epoch: rec.epoch.0,
        mode: ClusterMode::of(a),
        survivor: survivor.map(|r| r.to_string()),
        summary: mode_text(a),
        paused: rec.paused,
        recovering_ms_left: a.recovering_until().map(|u| u.since(now)),
        takeover_allowed_in_ms: a.takeover_at().map(|u| u.since(now)),
        mode_since_ms_ago: Some(now.since(a.mode_since())),
        preferred_room: a.config().preferred_room.as_ref().map(|r| r.to_string()),
        auto_rejoin: a.config().auto_rejoin,
        rooms,
        alarms: alarms.text,
        alarm_kinds: alarms.kinds,
        loaded: true,
        members_version: rec.members_version,
        members: member_views(rec),
    }
}

/// A cluster known only from the store: no node has called since the witness started.
pub(crate) fn status_unloaded(cluster: &ClusterId, stored: StoredCluster) -> ClusterStatus {
    let rec = stored.record.unwrap_or(ClusterRecord {
        epoch: proto::Epoch(0),
        mode: Mode::Paired,
        rooms: Vec::new(),
        last_survivor: None,
        paused: false,
        recovering: false,
        alone_granted: false,
        members_version: 0,
        members: Default::default(),
    });
    let survivor = rec.mode.survivor().cloned();
    ClusterStatus {
        cluster: cluster.to_string(),
        epoch: rec.epoch.0,
        mode: if stored.recovering {
            ClusterMode::Recovering
        } else {
            ClusterMode::of_mode(&rec.mode)
        },
        survivor: survivor.as_ref().map(|r| r.to_string()),
        summary: "known from the store; no node has called since the witness started".into(),
        paused: rec.paused,
        recovering_ms_left: None,
        takeover_allowed_in_ms: None,
        mode_since_ms_ago: None,
        preferred_room: None,
        auto_rejoin: true,
        rooms: rec
            .rooms
            .iter()
            .map(|r| RoomStatus {
                room: r.to_string(),
                last_seen_ms_ago: None,
                silent: true,
                alone: survivor.as_ref() == Some(r),
                nodes: Vec::new(),
            })
            .collect(),
        alarms: vec!["no node of this cluster has called since the witness started".into()],
        alarm_kinds: vec![AlarmKind::NotCalled],
        loaded: false,
        members_version: rec.members_version,
        members: member_views(&rec),
    }
}

fn member_views(rec: &ClusterRecord) -> Vec<MemberView> {
    rec.members
        .iter()
        .map(|(n, m)| MemberView {
            node: n.to_string(),
            room: m.room.to_string(),
            status: m.status,
            since: m.since,
            acked: m.acked,
            address: m.address.clone(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proto::arbiter::{ArbiterConfig, ArbiterInput};
    use proto::wire::{LeaseRequest, WIRE_VERSION};
    use proto::Epoch;

    fn report(room: &str, node: &str) -> ArbiterInput {
        ArbiterInput::Lease(LeaseRequest {
            version: WIRE_VERSION,
            cluster: "c".into(),
            room: room.into(),
            node: node.into(),
            epoch: Epoch(0),
            phase: NodePhase::Active,
            peer_contact: true,
            peer_reachable: true,
            claim: false,
            takeover: false,
            health: 0,
            peers: Vec::new(),
            members_version: 0,
            address: None,
        })
    }

    fn room<'a>(s: &'a ClusterStatus, name: &str) -> &'a RoomStatus {
        s.rooms.iter().find(|r| r.room == name).expect("room shown")
    }

    #[test]
    fn a_room_is_shown_silent_exactly_when_the_arbiter_finds_no_fresh_node_in_it() {
        let mut a = Arbiter::create(ArbiterConfig::default(), "c".into(), Millis(0));
        let silence = a.config().timings.silence_ms;
        a.step(Millis(10), report("a", "a1"));
        a.step(Millis(10), report("b", "b1"));
        a.step(Millis(20 + silence), report("a", "a1"));
        let none = SmallMap::new();
        let id = ClusterId::from("c");
        // b1 was last heard `silence` ms ago: still fresh, by the arbiter's rule.
        let s = status_of(&id, &a, &none, Millis(0), Millis(10 + silence));
        assert!(!room(&s, "b").silent);
        assert!(!s.alarm_kinds.contains(&AlarmKind::RoomSilent));
        // One millisecond later it is not, and the page says so with an alarm.
        let now = Millis(11 + silence);
        assert!(a.room_silent(now, &RoomId::from("b")));
        let s = status_of(&id, &a, &none, Millis(0), now);
        assert!(room(&s, "b").silent);
        assert!(!room(&s, "a").silent);
        assert_eq!(
            s.alarm_kinds
                .iter()
                .filter(|k| **k == AlarmKind::RoomSilent)
                .count(),
            1
        );
        assert!(s.alarms.iter().any(|t| t.starts_with("room b silent for")));
    }
}
