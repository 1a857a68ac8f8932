//! Issue 12: witness-owned membership. A dead node stops counting once proven stopped, a node
//! that returns runs only once the other room has acknowledged it, a node added while the
//! cluster runs needs no edit elsewhere, and with every dead node excluded no witness outage
//! fences anybody. Each test drives the real step functions through [`proto::world::World`]
//! at the shipped default timings (100 ms ticks), checking the promise after every action.
mod common;

use common::Run;
use proto::arbiter::{MemberRecord, Mode};
use proto::wire::MemberStatus;
use proto::world::{Action, AdminAction, Rate, WorldConfig};
use proto::{Millis, NodeId, Timings};

fn member<'a>(r: &'a Run, node: &str) -> Option<&'a MemberRecord> {
    r.w.witness
        .arbiter
        .as_ref()?
        .record()
        .members
        .get(&NodeId::new(node))
}

fn status(r: &Run, node: &str) -> Option<MemberStatus> {
    member(r, node).map(|m| m.status)
}

fn witness_deaf(r: &mut Run, on: bool) {
    r.w.cut_room_from_witness("a", on);
    r.w.cut_room_from_witness("b", on);
}

/// The exclusion bound: the witness's takeover wait `k·(L+F+W)` after the node's last grant,
/// then reports within a renewal; the agents learn the new membership within another.
fn exclusion_bound(t: &Timings) -> u64 {
    t.witness_takeover_wait_ms() + 3 * t.renew_interval_ms + t.silence_ms
}

#[test]
fn every_node_that_calls_joins_and_the_cluster_forms_without_a_fence() {
    let mut r = Run::default_two_by_two();
    r.warm_up();
    for n in ["a1", "a2", "b1", "b2"] {
        assert_eq!(status(&r, n), Some(MemberStatus::Member), "{n}");
    }
    let version =
        r.w.witness
            .arbiter
            .as_ref()
            .expect("up")
            .record()
            .members_version;
    for n in &r.w.nodes {
        let agent = n.agent.as_ref().expect("agent runs");
        assert_eq!(
            agent.members_version(),
            version,
            "{} holds the latest",
            n.name
        );
    }
    assert_eq!(r.w.ghost.fences, 0);
}

/// The dead-node rule: b2 powered off for good is excluded within the bound, with an event,
/// and from then on room a's nodes have peer contact again (they stop claiming).
#[test]
fn a_dead_node_is_excluded_within_the_bound_and_room_a_regains_peer_contact() {
    let t = Timings::default();
    let mut r = Run::default_two_by_two();
    r.warm_up();
    r.apply(Action::PowerOff(3)); // b2
    let took = r
        .until(exclusion_bound(&t) + 5_000, |w| {
            w.witness.arbiter.as_ref().is_some_and(|a| {
                a.record()
                    .members
                    .get(&NodeId::new("b2"))
                    .is_some_and(|m| m.status == MemberStatus::Excluded)
            })
        })
        .unwrap_or_else(|| panic!("b2 was never excluded: {}", r.w.describe()));
    println!(
        "b2 excluded {took} ms after it died (takeover wait k(L+F+W) = {} ms)",
        t.witness_takeover_wait_ms()
    );
    // The bound runs from the witness's last grant to b2, at most one renewal (plus a tick)
    // before it died.
    assert!(
        took + t.renew_interval_ms + 100 >= t.witness_takeover_wait_ms(),
        "excluded {took} ms after death: before the bound"
    );
    r.run_for(3_000);
    for i in [0, 1] {
        let n = &r.w.nodes[i];
        let a = n.agent.as_ref().expect("agent runs");
        assert!(
            a.peer_contact(Millis(n.clock)),
            "{} has no peer contact after b2's exclusion: {}",
            n.name,
            r.w.describe()
        );
        assert!(!a.peers().any(|p| p.as_str() == "b2"));
    }
    assert_eq!(r.w.ghost.fences, 0);
}

/// The rows: one node dead for good, then the witness silent for 2 s, 3 s, `L − R`,
/// and far longer (20 s). Once the dead node is excluded nothing fences, whatever the outage.
#[test]
fn a_dead_node_then_any_witness_outage_fences_nobody() {
    let t = Timings::default();
    for outage in [2_000, 3_000, t.lease_ms - t.renew_interval_ms, 20_000] {
        for dead in [1, 3] {
            let mut r = Run::default_two_by_two();
            r.warm_up();
            r.apply(Action::PowerOff(dead));
            r.run_for(15_000);
            witness_deaf(&mut r, true);
            r.run_for(outage);
            witness_deaf(&mut r, false);
            r.run_for(10_000);
            assert_eq!(
                r.w.ghost.fences,
                0,
                "node {dead} dead, outage {outage} ms: {}",
                r.w.describe()
            );
            assert_eq!(r.mode(), Some(Mode::Paired));
            for (i, n) in r.w.nodes.iter().enumerate() {
                assert!(i == dead || n.active(), "{} stopped", n.name);
            }
        }
    }
}

/// The witness restarts (record intact) while a node is dead: the exclusion is durable, and a
/// node that died while the witness was down is excluded after the restart's bound.
#[test]
fn exclusion_survives_a_witness_restart_and_a_node_dead_across_the_restart_is_excluded() {
    let t = Timings::default();
    let mut r = Run::default_two_by_two();
    r.warm_up();
    r.apply(Action::PowerOff(3)); // b2
    r.run_for(exclusion_bound(&t) + 2_000);
    assert_eq!(status(&r, "b2"), Some(MemberStatus::Excluded));
    r.apply(Action::CrashWitness);
    r.apply(Action::PowerOff(1)); // a2 dies while the witness is down
    r.run_for(2_000);
    r.apply(Action::StartWitness);
    assert_eq!(status(&r, "b2"), Some(MemberStatus::Excluded), "durable");
    r.run_for(exclusion_bound(&t) + 3_000);
    assert_eq!(status(&r, "a2"), Some(MemberStatus::Excluded));
    assert!(r.w.nodes[0].active() && r.w.nodes[2].active());
    assert_eq!(r.w.ghost.fences, 0, "{}", r.w.describe());
}

/// A room's last counted node is never excluded: that is a room loss, handled by the split
/// rules (the survivor takes over).
#[test]
fn the_last_node_of_a_room_is_never_excluded_a_lost_room_is_taken_over() {
    let t = Timings::default();
    let mut r = Run::default_two_by_two();
    r.warm_up();
    r.apply(Action::PowerOff(3)); // b2 first
    r.run_for(exclusion_bound(&t) + 2_000);
    assert_eq!(status(&r, "b2"), Some(MemberStatus::Excluded));
    r.apply(Action::PowerOff(2)); // then b1: room b is gone
    r.until(30_000, |w| w.nodes.iter().any(|n| n.taken_over()))
        .unwrap_or_else(|| panic!("no takeover: {}", r.w.describe()));
    assert_eq!(status(&r, "b1"), Some(MemberStatus::Member));
    assert!(r.all_active("a"));
}

/// The dead node comes back: it is readmitted when it calls, and it runs only after every
/// running node of the other room holds (has acknowledged) the membership that counts it.
#[test]
fn a_returning_node_runs_only_after_the_other_room_acknowledged_it() {
    let t = Timings::default();
    let mut r = Run::default_two_by_two();
    r.warm_up();
    r.apply(Action::PowerOff(3)); // b2
    r.run_for(exclusion_bound(&t) + 2_000);
    assert_eq!(status(&r, "b2"), Some(MemberStatus::Excluded));
    r.apply(Action::PowerOn(3));
    let mut first_active = None;
    for _ in 0..200 {
        r.step();
        if r.w.nodes[3].active() {
            let since = member(&r, "b2").expect("known").since;
            for i in [0, 1] {
                let held = r.w.nodes[i].agent.as_ref().expect("runs").members_version();
                assert!(
                    held >= since,
                    "b2 runs while {} holds membership {held} < {since}",
                    r.w.nodes[i].name
                );
            }
            first_active = Some(r.w.now);
            break;
        }
    }
    assert!(first_active.is_some(), "b2 never ran: {}", r.w.describe());
    assert_eq!(status(&r, "b2"), Some(MemberStatus::Member));
    r.run_for(5_000);
    for n in &r.w.nodes {
        let a = n.agent.as_ref().expect("runs");
        assert!(a.peer_contact(Millis(n.clock)), "{} lacks contact", n.name);
    }
    assert_eq!(r.w.ghost.fences, 0, "{}", r.w.describe());
}

/// A node rebooted while the witness is down: it answers pings (vouching: it has been granted
/// nothing) as soon as its agent is back, so the other room's peer contact survives a witness
/// outage far longer than the lease.
#[test]
fn a_node_rebooted_while_the_witness_is_down_costs_nobody_their_workloads() {
    let mut r = Run::default_two_by_two();
    r.warm_up();
    r.apply(Action::CrashWitness);
    r.run_for(1_000);
    r.apply(Action::PowerOff(3)); // b2 reboots: off and on within one tick
    r.apply(Action::PowerOn(3));
    r.run_for(30_000);
    for i in [0, 1, 2] {
        assert!(r.w.nodes[i].active(), "{}", r.w.describe());
    }
    assert_eq!(r.w.ghost.fences, 0, "{}", r.w.describe());
    r.apply(Action::StartWitness);
    r.run_for(10_000);
    assert!(r.w.nodes.iter().all(|n| n.active()), "{}", r.w.describe());
    assert_eq!(r.w.ghost.fences, 0);
}

/// The operator removes a node (certified powered off), then adds it back; a running node can
/// be removed only once proven stopped.
#[test]
fn the_operator_removes_and_adds_a_node_and_a_running_node_is_refused() {
    let mut r = Run::default_two_by_two();
    r.warm_up();
    let version =
        r.w.witness
            .arbiter
            .as_ref()
            .expect("up")
            .record()
            .members_version;
    r.apply(Action::Admin(AdminAction::MemberRemove {
        node: "b2".into(),
        powered_off: false,
    }));
    assert_eq!(
        status(&r, "b2"),
        Some(MemberStatus::Member),
        "refused: b2 runs"
    );
    assert_eq!(
        r.w.witness
            .arbiter
            .as_ref()
            .expect("up")
            .record()
            .members_version,
        version,
        "a refused command changes nothing"
    );
    r.apply(Action::PowerOff(3));
    r.apply(Action::Admin(AdminAction::MemberRemove {
        node: "b2".into(),
        powered_off: true,
    }));
    assert_eq!(status(&r, "b2"), Some(MemberStatus::Removed));
    r.run_for(3_000);
    for i in [0, 1] {
        let n = &r.w.nodes[i];
        assert!(n
            .agent
            .as_ref()
            .expect("runs")
            .peer_contact(Millis(n.clock)));
    }
    // Powered on again, it is refused (fenced) until the operator adds it back.
    r.apply(Action::PowerOn(3));
    r.run_for(5_000);
    assert!(!r.w.nodes[3].active(), "a removed node does not run");
    r.apply(Action::Admin(AdminAction::MemberAdd { node: "b2".into() }));
    r.until(20_000, |w| w.nodes[3].active())
        .unwrap_or_else(|| panic!("b2 never came back: {}", r.w.describe()));
    r.run_for(5_000);
    assert!(r.w.nodes.iter().all(|n| n.active()));
    // Only the removed node itself was ever fenced.
    assert!(r.w.ghost.fences <= 1, "{}", r.w.describe());
}

/// A third node joins room a while the cluster runs, with no change to any other agent's
/// configuration: it runs once room b has acknowledged it, and then room b counts it.
#[test]
fn a_node_added_to_a_running_room_joins_without_touching_the_other_agents() {
    // a3 exists in the world from the start but is powered off; the others' configurations
    // do not name it (the world's configurations name every node, so a3's peers are removed
    // from what room b's agents are told below by construction of the test: they learn it
    // from the witness only).
    let mut cfg = WorldConfig::two_rooms(Timings::default(), 3, 2);
    cfg.tick = 100;
    cfg.unlisted = vec![NodeId::new("a3")];
    let rates = vec![Rate::Exact; 5];
    let mut r = Run::with_rates(cfg, Rate::Exact, &rates);
    r.apply(Action::PowerOff(2)); // a3 not yet installed
    r.warm_up_without(&[2]);
    for i in [3, 4] {
        let a = r.w.nodes[i].agent.as_ref().expect("runs");
        assert!(
            !a.peers().any(|p| p.as_str() == "a3"),
            "b does not know a3 yet"
        );
    }
    r.apply(Action::PowerOn(2));
    r.until(20_000, |w| w.nodes[2].active())
        .unwrap_or_else(|| panic!("a3 never ran: {}", r.w.describe()));
    r.run_for(5_000);
    for i in [3, 4] {
        let n = &r.w.nodes[i];
        let a = n.agent.as_ref().expect("runs");
        assert!(
            a.peers().any(|p| p.as_str() == "a3"),
            "{} counts a3",
            n.name
        );
        assert!(a.peer_contact(Millis(n.clock)), "{} has contact", n.name);
    }
    assert_eq!(r.w.ghost.fences, 0, "{}", r.w.describe());
}
