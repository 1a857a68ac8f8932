//! A bounded, in-memory history of what happened to one cluster, for the status page's
//! timeline: each node's phase changes and silences, the witness's verdicts and decisions, fences,
//! takeovers, rejoins and operator commands.
//!
//! Memory is what matters here: a witness may hold 10,000 clusters, most of them quiet. An event
//! is a fixed 24-byte record whose node or room is an index into a small per-cluster name table;
//! the ring starts empty (a quiet cluster holds about ten events, under 1 KiB) and never holds
//! more than [`MAX_EVENTS`], nor anything older than [`WINDOW_MS`]. Nothing here is persisted:
//! the history starts again with the witness (the page says so), the durable facts stay in the
//! store and the audit log.
use crate::view::{ClusterMode, EventKind, LoadedHow, TimelineEvent, VerdictKind};
use proto::arbiter::Mode;
use proto::wire::{AdminCommand, NodePhase};
use proto::Millis;
use std::collections::VecDeque;

/// How far back the history reaches.
pub const WINDOW_MS: u64 = 3_600_000;
/// At most this many events per cluster (a flapping cluster drops its oldest first).
pub const MAX_EVENTS: usize = 256;
/// Names (nodes and rooms) a cluster's history can tell apart; more are shown as `?`.
const MAX_NAMES: usize = 254;
const NO_NAME: u8 = u8::MAX;

/// The kinds of event, as stored (one byte).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
enum Code {
    Phase = 0,
    Verdict = 1,
    Mode = 2,
    Takeover = 3,
    Claim = 4,
    PeerContact = 5,
    Returned = 6,
    Admin = 7,
    RecoveryFinished = 8,
    Refused = 9,
    Loaded = 10,
}

#[derive(Clone, Copy, Debug)]
struct Rec {
    at: u64,
    /// Kind-specific number: epoch, or the silence's length for `Returned`.
    value: u64,
    code: Code,
    /// Index into `names`, or `NO_NAME`.
    name: u8,
    a: u8,
    b: u8,
}

/// One cluster's recent history.
#[derive(Debug, Default)]
pub struct History {
    names: Vec<Box<str>>,
    events: VecDeque<Rec>,
}

/// The operator commands, as stored.
const ADMIN: [&str; 7] = AdminCommand::LABELS;

fn phase_code(p: NodePhase) -> u8 {
    match p {
        NodePhase::Starting => 0,
        NodePhase::Active => 1,
        NodePhase::Fencing => 2,
        NodePhase::Fenced => 3,
    }
}

fn phase_of(c: u8) -> NodePhase {
    match c {
        0 => NodePhase::Starting,
        1 => NodePhase::Active,
        2 => NodePhase::Fencing,
        _ => NodePhase::Fenced,
    }
}

fn index_of(table: &[&str], s: &str) -> u8 {
    table.iter().position(|t| *t == s).unwrap_or(0) as u8
}

impl History {
    fn name(&mut self, s: &str) -> u8 {
        if let Some(i) = self.names.iter().position(|n| &**n == s) {
            return i as u8;
        }
        if self.names.len() >= MAX_NAMES {
            return NO_NAME;
        }
        self.names.push(s.into());
        (self.names.len() - 1) as u8
    }

    fn push(&mut self, now: Millis, code: Code, name: Option<&str>, a: u8, b: u8, value: u64) {
        let name = name.map_or(NO_NAME, |n| self.name(n));
        let oldest = now.0.saturating_sub(WINDOW_MS);
        while self
            .events
            .front()
            .is_some_and(|e| e.at < oldest || self.events.len() >= MAX_EVENTS)
        {
            self.events.pop_front();
        }
        self.events.push_back(Rec {
            at: now.0,
            value,
            code,
            name,
            a,
            b,
        });
    }

    pub fn phase(&mut self, now: Millis, node: &str, from: NodePhase, to: NodePhase) {
        self.push(
            now,
            Code::Phase,
            Some(node),
            phase_code(from),
            phase_code(to),
            0,
        );
    }

    pub fn verdict(&mut self, now: Millis, node: &str, verdict: VerdictKind) {
        self.push(now, Code::Verdict, Some(node), verdict as u8, 0, 0);
    }

    /// A decision: the cluster's new mode, and the one it left.
    pub fn mode(&mut self, now: Millis, from: &Mode, to: &Mode, epoch: u64) {
        let code = |m: &Mode| ClusterMode::of_mode(m) as u8;
        let room = to.survivor().map(|r| r.as_str());
        self.push(now, Code::Mode, room, code(to), code(from), epoch);
    }

    pub fn takeover(&mut self, now: Millis, node: &str, active: bool) {
        self.push(now, Code::Takeover, Some(node), u8::from(active), 0, 0);
    }

    pub fn claim(&mut self, now: Millis, node: &str, active: bool) {
        self.push(now, Code::Claim, Some(node), u8::from(active), 0, 0);
    }

    pub fn peer_contact(&mut self, now: Millis, node: &str, ok: bool) {
        self.push(now, Code::PeerContact, Some(node), u8::from(ok), 0, 0);
    }

    pub fn returned(&mut self, now: Millis, node: &str, silent_ms: u64) {
        self.push(now, Code::Returned, Some(node), 0, 0, silent_ms);
    }

    pub fn admin(&mut self, now: Millis, command: &str, ok: bool) {
        self.push(
            now,
            Code::Admin,
            None,
            index_of(&ADMIN, command),
            u8::from(ok),
            0,
        );
    }

    pub fn recovery_finished(&mut self, now: Millis, epoch: u64) {
        self.push(now, Code::RecoveryFinished, None, 0, 0, epoch);
    }

    pub fn refused(&mut self, now: Millis, node: &str) {
        self.push(now, Code::Refused, Some(node), 0, 0, 0);
    }

    pub fn loaded(&mut self, now: Millis, how: LoadedHow) {
        self.push(now, Code::Loaded, None, how as u8, 0, 0);
    }

    /// Events of the last `window_ms`, oldest first.
    pub fn events(&self, now: Millis, window_ms: u64) -> Vec<TimelineEvent> {
        let oldest = now.0.saturating_sub(window_ms);
        self.events
            .iter()
            .filter(|e| e.at >= oldest)
            .map(|e| self.view(e, now))
            .collect()
    }

    fn view(&self, e: &Rec, now: Millis) -> TimelineEvent {
        let name = (e.name != NO_NAME)
            .then(|| self.names.get(e.name as usize).map(|n| n.to_string()))
            .flatten();
        let pick = |t: &[&str], i: u8| t.get(i as usize).copied().unwrap_or("?").to_string();
        let (node, kind) = match e.code {
            Code::Phase => (
                name,
                EventKind::Phase {
                    from: phase_of(e.a),
                    to: phase_of(e.b),
                },
            ),
            Code::Verdict => (
                name,
                EventKind::Verdict {
                    verdict: VerdictKind::from_code(e.a),
                },
            ),
            Code::Mode => (
                None,
                EventKind::Mode {
                    from: ClusterMode::from_code(e.b),
                    to: ClusterMode::from_code(e.a),
                    survivor: name,
                    epoch: e.value,
                },
            ),
            Code::Takeover => (name, EventKind::Takeover { active: e.a == 1 }),
            Code::Claim => (name, EventKind::Claim { active: e.a == 1 }),
            Code::PeerContact => (name, EventKind::PeerContact { ok: e.a == 1 }),
            Code::Returned => (name, EventKind::Returned { silent_ms: e.value }),
            Code::Admin => (
                None,
                EventKind::Admin {
                    command: pick(&ADMIN, e.a),
                    ok: e.b == 1,
                },
            ),
            Code::RecoveryFinished => (None, EventKind::RecoveryFinished { epoch: e.value }),
            Code::Refused => (name, EventKind::Refused),
            Code::Loaded => (
                None,
                EventKind::Loaded {
                    how: LoadedHow::from_code(e.a),
                },
            ),
        };
        TimelineEvent {
            ago_ms: now.since(Millis(e.at)),
            node,
            kind,
        }
    }

    /// Bytes this history holds on the heap (for the memory test and the docs).
    pub fn heap_bytes(&self) -> usize {
        self.events.capacity() * std::mem::size_of::<Rec>()
            + self.names.capacity() * std::mem::size_of::<Box<str>>()
            + self.names.iter().map(|n| n.len()).sum::<usize>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_record_stays_24_bytes() {
        assert_eq!(std::mem::size_of::<Rec>(), 24);
    }

    #[test]
    fn history_keeps_at_most_max_events_and_drops_the_oldest_first() {
        let mut h = History::default();
        for i in 0..(MAX_EVENTS as u64 + 40) {
            h.verdict(
                Millis(i),
                "n1",
                if i % 2 == 0 {
                    VerdictKind::Fence
                } else {
                    VerdictKind::Retry
                },
            );
        }
        let ev = h.events(Millis(MAX_EVENTS as u64 + 40), WINDOW_MS);
        assert_eq!(ev.len(), MAX_EVENTS);
        assert_eq!(ev[0].ago_ms, MAX_EVENTS as u64);
        assert!(h.heap_bytes() < 8 * 1024, "{} bytes", h.heap_bytes());
    }

    #[test]
    fn history_forgets_what_is_older_than_the_window() {
        let mut h = History::default();
        h.phase(Millis(0), "n1", NodePhase::Starting, NodePhase::Active);
        h.claim(Millis(WINDOW_MS + 10), "n1", true);
        let ev = h.events(Millis(WINDOW_MS + 10), WINDOW_MS);
        assert_eq!(ev.len(), 1);
        assert_eq!(ev[0].kind, EventKind::Claim { active: true });
    }

    #[test]
    fn events_come_back_with_their_names_and_details() {
        let mut h = History::default();
        h.phase(Millis(1_000), "b1", NodePhase::Active, NodePhase::Fencing);
        h.mode(Millis(2_000), &Mode::Paired, &Mode::Alone("a".into()), 3);
        h.admin(Millis(2_500), "release", true);
        h.returned(Millis(3_000), "b1", 1_500);
        let ev = h.events(Millis(4_000), WINDOW_MS);
        assert_eq!(ev[0].node.as_deref(), Some("b1"));
        assert_eq!(
            ev[0].kind,
            EventKind::Phase {
                from: NodePhase::Active,
                to: NodePhase::Fencing
            }
        );
        assert_eq!(ev[0].ago_ms, 3_000);
        assert_eq!(
            ev[1].kind,
            EventKind::Mode {
                from: ClusterMode::Paired,
                to: ClusterMode::Alone,
                survivor: Some("a".into()),
                epoch: 3
            }
        );
        assert_eq!(
            ev[2].kind,
            EventKind::Admin {
                command: "release".into(),
                ok: true
            }
        );
        assert_eq!(ev[3].kind, EventKind::Returned { silent_ms: 1_500 });
    }

    #[test]
    fn a_quiet_cluster_history_stays_under_one_kibibyte() {
        let mut h = History::default();
        h.loaded(Millis(0), LoadedHow::New);
        for n in ["a1", "a2", "b1", "b2"] {
            h.phase(Millis(10), n, NodePhase::Starting, NodePhase::Active);
            h.verdict(Millis(10), n, VerdictKind::GrantPaired);
        }
        assert!(h.heap_bytes() < 1024, "{} bytes", h.heap_bytes());
    }
}
