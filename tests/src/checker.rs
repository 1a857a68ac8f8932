//! The checker: judges a recorded timeline on the harness's one clock.
//!
//! 1. No room takes over while a node of the other room is still active: at a `takeover` event
//!    of a node of room X, every node of the other room must be stopped, i.e. its last phase was
//!    `fenced` or `starting`, or it has been reset / powered off since its last phase event (an
//!    agent merely killed with `kill -9` still counts as running: its node and VM live on until
//!    the watchdog resets it). While a room holds a takeover (until its `release`, or until its
//!    nodes are reset), no node of the other room may become active either.
//! 2. At most one room acts alone per epoch: `takeover` events, and `lease` events whose mode is
//!    `alone ...`, of one epoch all come from one room.
use crate::recorder::Event;
use std::collections::{BTreeMap, BTreeSet};

/// The verdict over one timeline.
#[derive(Clone, Debug)]
pub struct Verdict {
    pub violations: Vec<String>,
    pub events: usize,
    pub takeovers: usize,
    pub fences: usize,
    pub resets: usize,
}

impl Verdict {
    pub fn ok(&self) -> bool {
        self.violations.is_empty()
    }

    /// `checker: OK (n events, ...)` or `checker: VIOLATION ...`.
    pub fn line(&self) -> String {
        let counts = format!(
            "{} events, {} takeovers, {} fence actions, {} watchdog resets",
            self.events, self.takeovers, self.fences, self.resets
        );
        if self.ok() {
            format!("checker: OK ({counts})")
        } else {
            format!(
                "checker: VIOLATION ({counts}): {}",
                self.violations.join("; ")
            )
        }
    }
}

#[derive(Default, Clone)]
struct NodeView {
    room: String,
    phase: Option<String>,
    stopped: bool,
}

impl NodeView {
    fn may_run(&self) -> bool {
        !self.stopped && matches!(self.phase.as_deref(), Some("active") | Some("fencing"))
    }
}

/// Judges `events` (time order). `rooms` maps every node to its room.
pub fn check(events: &[Event], rooms: &BTreeMap<String, String>) -> Verdict {
    let mut nodes: BTreeMap<String, NodeView> = rooms
        .iter()
        .map(|(n, r)| {
            (
                n.clone(),
                NodeView {
                    room: r.clone(),
                    ..Default::default()
                },
            )
        })
        .collect();
    let mut v = Verdict {
        violations: Vec::new(),
        events: events.len(),
        takeovers: 0,
        fences: 0,
        resets: 0,
    };
    // node -> epoch of the takeover it holds
    let mut holding: BTreeMap<String, u64> = BTreeMap::new();
    let mut takeover_rooms: BTreeMap<u64, BTreeSet<String>> = BTreeMap::new();
    let mut alone_rooms: BTreeMap<u64, BTreeSet<String>> = BTreeMap::new();
    for e in events {
        let Some(room) = rooms.get(&e.node).cloned() else {
            continue;
        };
        match e.kind.as_str() {
            "phase" => {
                let phase = e.str("phase").to_string();
                if let Some(n) = nodes.get_mut(&e.node) {
                    n.phase = Some(phase.clone());
                    n.stopped = false;
                }
                if phase == "active" {
                    for (h, ep) in &holding {
                        if rooms.get(h) != Some(&room) {
                            v.violations.push(format!(
                                "t={} ms: {} (room {room}) became active while {h} held the \
                                 takeover of epoch {ep}",
                                e.t, e.node
                            ));
                        }
                    }
                }
            }
            "reset" | "power_off" => {
                if e.kind == "reset" {
                    v.resets += 1;
                }
                if let Some(n) = nodes.get_mut(&e.node) {
                    n.stopped = true;
                    n.phase = None;
                }
                holding.remove(&e.node);
            }
            "fence" => v.fences += 1,
            "takeover" => {
                v.takeovers += 1;
                let epoch = e.u64("epoch").unwrap_or(0);
                for (other, n) in &nodes {
                    if n.room != room && n.may_run() {
                        v.violations.push(format!(
                            "t={} ms: {} (room {room}) took over at epoch {epoch} while {other} \
                             (room {}) was still {}",
                            e.t,
                            e.node,
                            n.room,
                            n.phase.as_deref().unwrap_or("?")
                        ));
                    }
                }
                holding.insert(e.node.clone(), epoch);
                takeover_rooms
                    .entry(epoch)
                    .or_default()
                    .insert(room.clone());
            }
            "release" => {
                holding.remove(&e.node);
            }
            "lease" if e.str("mode").starts_with("alone") => {
                let epoch = e.u64("epoch").unwrap_or(0);
                alone_rooms.entry(epoch).or_default().insert(room.clone());
            }
            _ => {}
        }
    }
    for (what, map) in [
        ("took over", &takeover_rooms),
        ("held an alone grant", &alone_rooms),
    ] {
        for (epoch, rs) in map {
            if rs.len() > 1 {
                v.violations.push(format!(
                    "epoch {epoch}: rooms {:?} both {what}",
                    rs.iter().collect::<Vec<_>>()
                ));
            }
        }
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ev(t: u64, node: &str, kind: &str, data: serde_json::Value) -> Event {
        Event {
            t,
            node: node.into(),
            room: node[..1].into(),
            kind: kind.into(),
            data,
        }
    }

    fn rooms() -> BTreeMap<String, String> {
        ["a1", "a2", "b1", "b2"]
            .iter()
            .map(|n| (n.to_string(), n[..1].to_string()))
            .collect()
    }

    fn warm() -> Vec<Event> {
        ["a1", "a2", "b1", "b2"]
            .iter()
            .map(|n| ev(0, n, "phase", json!({"phase": "active", "epoch": 1})))
            .collect()
    }

    #[test]
    fn a_takeover_while_a_node_of_the_other_room_still_runs_is_rejected() {
        let mut t = warm();
        t.push(ev(
            10,
            "a1",
            "phase",
            json!({"phase": "fenced", "epoch": 1}),
        ));
        // a2 is still active (its agent was only killed: its node still runs)
        t.push(ev(20, "a2", "agent_kill", json!({})));
        t.push(ev(30, "b1", "takeover", json!({"epoch": 2})));
        let v = check(&t, &rooms());
        assert!(!v.ok(), "{}", v.line());
        assert!(v.line().contains("a2"), "{}", v.line());
    }

    #[test]
    fn two_rooms_acting_alone_in_one_epoch_are_rejected() {
        let mut t = warm();
        for n in ["a1", "a2", "b1", "b2"] {
            t.push(ev(5, n, "power_off", json!({})));
        }
        t.push(ev(30, "b1", "takeover", json!({"epoch": 2})));
        t.push(ev(31, "b1", "release", json!({"epoch": 2})));
        t.push(ev(
            40,
            "a1",
            "lease",
            json!({"mode": "alone (takeover wait)", "epoch": 2}),
        ));
        t.push(ev(
            41,
            "b2",
            "lease",
            json!({"mode": "alone (takeover wait)", "epoch": 2}),
        ));
        let v = check(&t, &rooms());
        assert!(!v.ok());
        assert!(v.line().contains("epoch 2"), "{}", v.line());
    }

    #[test]
    fn a_node_unfencing_while_the_other_room_holds_the_takeover_is_rejected() {
        let mut t = warm();
        t.push(ev(
            10,
            "a1",
            "phase",
            json!({"phase": "fenced", "epoch": 2}),
        ));
        t.push(ev(10, "a2", "reset", json!({})));
        t.push(ev(30, "b1", "takeover", json!({"epoch": 2})));
        t.push(ev(
            40,
            "a1",
            "phase",
            json!({"phase": "active", "epoch": 3}),
        ));
        let v = check(&t, &rooms());
        assert!(!v.ok(), "{}", v.line());
    }

    #[test]
    fn a_takeover_after_the_other_room_fenced_and_was_reset_passes() {
        let mut t = warm();
        t.push(ev(
            10,
            "a1",
            "phase",
            json!({"phase": "fencing", "epoch": 1}),
        ));
        t.push(ev(
            12,
            "a1",
            "phase",
            json!({"phase": "fenced", "epoch": 1}),
        ));
        t.push(ev(15, "a2", "reset", json!({})));
        t.push(ev(30, "b1", "takeover", json!({"epoch": 2})));
        t.push(ev(
            30,
            "b1",
            "lease",
            json!({"mode": "alone (takeover allowed)", "epoch": 2}),
        ));
        t.push(ev(50, "b1", "release", json!({"epoch": 3})));
        t.push(ev(
            60,
            "a1",
            "phase",
            json!({"phase": "active", "epoch": 4}),
        ));
        let v = check(&t, &rooms());
        assert!(v.ok(), "{}", v.line());
        assert!(v.line().starts_with("checker: OK (11 events, 1 takeovers"));
    }
}
