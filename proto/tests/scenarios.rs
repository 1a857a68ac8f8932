//! Golden tests: one per scenario of the design brief, driving the real arbiter and agent state
//! machines through it (fair network, default timings, 100 ms ticks) and asserting the outcome
//! the brief promises. The promise itself is checked after every single action (see
//! `common::Run::apply`).
mod common;

use common::Run;
use proto::arbiter::Mode;
use proto::world::{Action, AdminAction, End, Rate, WorldConfig};
use proto::{RoomId, Timings};

fn bound() -> u64 {
    Timings::default().worst_case_room_loss_takeover_ms()
}

#[test]
fn s01_all_healthy_both_rooms_run_and_nothing_is_fenced() {
    let mut r = Run::default_two_by_two();
    r.warm_up();
    r.run_for(60_000);
    assert!(r.all_active("a") && r.all_active("b"), "{}", r.w.describe());
    assert_eq!(r.mode(), Some(Mode::Paired));
    assert_eq!(r.w.ghost.fences, 0);
}

#[test]
fn s02_witness_down_both_rooms_keep_running_on_peer_contact() {
    let mut r = Run::default_two_by_two();
    r.warm_up();
    r.apply(Action::CrashWitness);
    r.run_for(60_000);
    assert!(r.all_active("a") && r.all_active("b"), "{}", r.w.describe());
    assert_eq!(r.w.ghost.fences, 0);
    // the alarm: no node holds a lease any more
    for n in &r.w.nodes {
        assert!(!n
            .agent
            .as_ref()
            .unwrap()
            .lease_valid(proto::Millis(n.clock)));
    }
}

#[test]
fn s02_witness_unreachable_from_both_rooms_keeps_both_running() {
    let mut r = Run::default_two_by_two();
    r.warm_up();
    r.w.cut_room_from_witness("a", true);
    r.w.cut_room_from_witness("b", true);
    r.run_for(60_000);
    assert!(r.all_active("a") && r.all_active("b"));
    assert_eq!(r.w.ghost.fences, 0);
}

#[test]
fn s03_room_lost_entirely_survivor_takes_over_within_the_bound() {
    let mut r = Run::default_two_by_two();
    r.warm_up();
    r.power_off_room("b");
    let took = r.until(30_000, |w| w.nodes.iter().any(|n| n.taken_over()));
    let took = took.expect("room a never took over");
    assert!(took <= bound(), "took {took} ms, bound {} ms", bound());
    assert_eq!(r.mode(), Some(Mode::Alone(RoomId::new("a"))));
    assert!(r.all_active("a"));
}

#[test]
fn s04_link_cut_both_reach_witness_exactly_one_room_survives_by_policy() {
    for preferred in ["a", "b"] {
        let mut cfg = WorldConfig::two_rooms(Timings::default(), 2, 2);
        cfg.tick = 100;
        cfg.preferred_room = Some(RoomId::new(preferred));
        let mut r = Run::new(cfg);
        r.warm_up();
        r.w.cut_rooms("a", "b", true, true);
        let took = r.until(30_000, |w| w.nodes.iter().any(|n| n.taken_over()));
        assert!(took.is_some(), "no takeover: {}", r.w.describe());
        let loser = if preferred == "a" { "b" } else { "a" };
        assert!(r.taken_over(preferred), "{}", r.w.describe());
        assert!(r.all_active(preferred));
        assert!(r.none_active(loser), "{}", r.w.describe());
        r.run_for(30_000);
        assert!(r.none_active(loser) && r.all_active(preferred));
    }
}

#[test]
fn s04_without_preference_the_tie_break_is_deterministic() {
    let mut r = Run::default_two_by_two();
    r.warm_up();
    r.w.cut_rooms("a", "b", true, true);
    r.until(30_000, |w| w.nodes.iter().any(|n| n.taken_over()))
        .expect("takeover");
    assert!(r.taken_over("a") && r.none_active("b"));
}

#[test]
fn s05_room_isolated_from_peer_and_witness_fences_and_the_other_takes_over() {
    let mut r = Run::default_two_by_two();
    r.warm_up();
    r.w.cut_rooms("a", "b", true, true);
    r.w.cut_room_from_witness("a", true);
    let took = r
        .until(30_000, |w| w.nodes.iter().any(|n| n.taken_over()))
        .expect("room b never took over");
    assert!(took <= bound(), "took {took} ms, bound {}", bound());
    assert!(r.taken_over("b") && r.none_active("a"));
}

#[test]
fn s06_witness_and_room_lost_together_remaining_room_fences_then_override_restores_it() {
    let mut r = Run::default_two_by_two();
    r.warm_up();
    r.apply(Action::CrashWitness);
    r.power_off_room("b");
    r.until(30_000, |_| false);
    assert!(r.none_active("a"), "room a must fence: {}", r.w.describe());
    assert!(!r.taken_over("a"));
    // The operator brings the witness back and certifies room b is powered off.
    r.apply(Action::StartWitness);
    r.apply(Action::Admin(AdminAction::ForceSurvivor {
        room: "a".into(),
        other_room_down: true,
    }));
    r.until(30_000, |w| w.nodes.iter().any(|n| n.taken_over()))
        .expect("room a resumes and takes over after the override");
    assert!(r.all_active("a"));
}

#[test]
fn s07_one_room_loses_only_the_witness_nothing_stops() {
    let mut r = Run::default_two_by_two();
    r.warm_up();
    r.w.cut_room_from_witness("b", true);
    r.run_for(60_000);
    assert!(r.all_active("a") && r.all_active("b"), "{}", r.w.describe());
    assert_eq!(r.w.ghost.fences, 0);
    assert_eq!(r.mode(), Some(Mode::Paired));
}

#[test]
fn s08_asymmetric_link_exactly_one_room_survives() {
    for (deaf, preferred) in [("b", "a"), ("b", "b"), ("a", "a"), ("a", "b")] {
        let mut cfg = WorldConfig::two_rooms(Timings::default(), 2, 2);
        cfg.tick = 100;
        cfg.preferred_room = Some(RoomId::new(preferred));
        let mut r = Run::new(cfg);
        r.warm_up();
        // `deaf` no longer hears the other room; the other room still hears `deaf`.
        let other = if deaf == "a" { "b" } else { "a" };
        r.w.cut_rooms(other, deaf, false, true);
        r.until(30_000, |w| w.nodes.iter().any(|n| n.taken_over()))
            .unwrap_or_else(|| panic!("no takeover ({deaf} deaf): {}", r.w.describe()));
        let loser = if preferred == "a" { "b" } else { "a" };
        assert!(
            r.all_active(preferred) && r.none_active(loser),
            "{}",
            r.w.describe()
        );
    }
}

#[test]
fn s09_witness_crash_and_restart_is_noticed_only_as_an_alarm() {
    for down_ms in [500, 3_000, 20_000] {
        let mut r = Run::default_two_by_two();
        r.warm_up();
        r.apply(Action::CrashWitness);
        r.run_for(down_ms);
        r.apply(Action::StartWitness);
        r.run_for(30_000);
        assert!(r.all_active("a") && r.all_active("b"));
        assert_eq!(r.w.ghost.fences, 0, "down {down_ms} ms");
        assert_eq!(r.mode(), Some(Mode::Paired));
    }
}

#[test]
fn s09_witness_restart_keeps_the_survivor_and_refuses_the_other_room() {
    let mut r = Run::default_two_by_two();
    r.warm_up();
    r.w.cut_rooms("a", "b", true, true);
    r.until(30_000, |w| w.nodes.iter().any(|n| n.taken_over()))
        .expect("takeover");
    let epoch = r.w.witness.arbiter.as_ref().unwrap().record().epoch;
    r.apply(Action::CrashWitness);
    r.run_for(1_000);
    r.apply(Action::StartWitness);
    for _ in 0..200 {
        r.step();
        assert!(
            r.taken_over("a"),
            "the survivor must keep its takeover across a witness restart: {}",
            r.w.describe()
        );
    }
    let rec = r.w.witness.arbiter.as_ref().unwrap().record().clone();
    assert_eq!(rec.epoch, epoch, "the restarted witness keeps its epoch");
    assert_eq!(rec.mode, Mode::Alone(RoomId::new("a")));
    assert!(r.taken_over("a") && r.none_active("b"));
}

#[test]
fn s10_witness_disk_lost_grants_nothing_before_the_bound_and_nothing_stops() {
    let mut r = Run::default_two_by_two();
    r.warm_up();
    r.apply(Action::WipeWitness);
    r.apply(Action::StartWitness);
    let until = r.w.witness.arbiter.as_ref().unwrap().recovering_until();
    assert!(until.is_some(), "an empty store must recover");
    r.run_for(5_000);
    for n in &r.w.nodes {
        assert!(
            !n.agent
                .as_ref()
                .unwrap()
                .lease_valid(proto::Millis(n.clock)),
            "no grant while recovering"
        );
    }
    r.run_for(30_000);
    assert!(r.all_active("a") && r.all_active("b"));
    assert_eq!(r.w.ghost.fences, 0);
    assert_eq!(r.mode(), Some(Mode::Paired));
}

#[test]
fn s10_witness_disk_lost_while_a_room_acts_alone_stays_safe() {
    let mut r = Run::default_two_by_two();
    r.warm_up();
    r.w.cut_rooms("a", "b", true, true);
    r.until(30_000, |w| w.nodes.iter().any(|n| n.taken_over()))
        .expect("takeover");
    r.apply(Action::WipeWitness);
    r.apply(Action::StartWitness);
    // Safety is checked after every action; room b never comes back while a has taken over.
    r.run_for(60_000);
    assert!(r.none_active("b"), "{}", r.w.describe());
}

#[test]
fn s11_clock_rates_within_the_bound_stay_safe_in_every_combination() {
    let rates = [Rate::Slow, Rate::Fast];
    for &wr in &rates {
        for &ar in &rates {
            for &br in &rates {
                for cut_link in [true, false] {
                    let mut cfg = WorldConfig::two_rooms(Timings::default(), 2, 2);
                    cfg.tick = 100;
                    let mut r = Run::with_rates(cfg, wr, &[ar, ar, br, br]);
                    r.warm_up();
                    if cut_link {
                        r.w.cut_rooms("a", "b", true, true);
                    } else {
                        r.power_off_room("b");
                    }
                    r.until(40_000, |w| w.nodes.iter().any(|n| n.taken_over()))
                        .unwrap_or_else(|| panic!("no takeover {wr:?} {ar:?} {br:?}"));
                }
            }
        }
    }
}

#[test]
fn s12_flapping_link_causes_no_fence_storm_and_no_oscillation() {
    let mut r = Run::default_two_by_two();
    r.warm_up();
    let mut survivors = std::collections::BTreeSet::new();
    for i in 0..40 {
        r.w.cut_rooms("a", "b", true, i % 2 == 0);
        r.run_for(if i % 2 == 0 { 3_000 } else { 1_500 });
        if let Some(Mode::Alone(room)) = r.mode() {
            survivors.insert(room);
        }
    }
    assert!(
        survivors.len() <= 1,
        "the survivor oscillated: {survivors:?}"
    );
    assert!(
        r.w.ghost.fences <= 2,
        "fence storm: {} fences for two nodes of one room",
        r.w.ghost.fences
    );
}

#[test]
fn s13_partition_heals_fenced_room_rejoins_only_after_the_takeover_is_released() {
    let mut r = Run::default_two_by_two();
    r.warm_up();
    r.w.cut_rooms("a", "b", true, true);
    r.until(30_000, |w| w.nodes.iter().any(|n| n.taken_over()))
        .expect("takeover");
    r.run_for(10_000);
    r.w.cut_rooms("a", "b", true, false);
    // Safety (no b node active while a holds the takeover) is checked after every action.
    let t = r.until(60_000, |w| w.nodes.iter().all(|n| n.active()));
    assert!(t.is_some(), "room b never rejoined: {}", r.w.describe());
    assert!(!r.taken_over("a"));
    r.run_for(20_000);
    assert!(r.all_active("a") && r.all_active("b"));
    assert_eq!(r.mode(), Some(Mode::Paired));
}

#[test]
fn a_single_dead_node_does_not_fence_either_room_while_the_witness_answers() {
    let mut r = Run::default_two_by_two();
    r.warm_up();
    r.apply(Action::PowerOff(0)); // a1
    r.run_for(60_000);
    assert!(r.w.nodes[1].active(), "a2 keeps running");
    assert!(r.all_active("b"), "{}", r.w.describe());
    assert_eq!(r.mode(), Some(Mode::Paired));
    assert_eq!(r.w.ghost.fences, 0);
}

#[test]
fn a_node_cut_from_one_peer_is_treated_as_a_split_and_stays_safe() {
    let mut r = Run::default_two_by_two();
    r.warm_up();
    r.w.cut(End::Node(0), End::Node(2), true);
    r.run_for(60_000);
    // exactly one room runs
    let a = r.all_active("a");
    let b = r.all_active("b");
    assert!(a ^ b, "{}", r.w.describe());
}

/// Issue 12, item 1: one node of room b is dead for good; then the witness goes deaf to both
/// rooms for a short while. Room b's last node still has peer contact with room a and must never
/// be fenced: the witness may not read its own deafness as room b's silence.
#[test]
fn a_dead_node_and_a_short_witness_blip_never_fence_the_healthy_node_of_that_room() {
    for blip_ms in [1_500, 2_000] {
        for offset_ms in (0..1_000).step_by(100) {
            let mut r = Run::default_two_by_two();
            r.warm_up();
            r.apply(Action::PowerOff(3)); // b2, for good
            r.run_for(15_000 + offset_ms);
            r.w.cut_room_from_witness("a", true);
            r.w.cut_room_from_witness("b", true);
            r.run_for(blip_ms);
            r.w.cut_room_from_witness("a", false);
            r.w.cut_room_from_witness("b", false);
            r.run_for(20_000);
            assert_eq!(
                r.w.ghost.fences,
                0,
                "blip {blip_ms} ms at offset {offset_ms} ms fenced a node: {}",
                r.w.describe()
            );
            assert_eq!(r.mode(), Some(Mode::Paired), "{}", r.w.describe());
            assert!(r.w.nodes[2].active() && r.all_active("a"));
        }
    }
}

/// Issue 12, item 3: the witness restarts while the rooms are split and room b's claims reach it
/// first. The policy (here the preferred room a) decides, not the order of arrival.
#[test]
fn a_restarted_witness_lets_the_preferred_room_win_a_split_whatever_claim_arrives_first() {
    for head_start_ms in [100, 300, 600, 1_000] {
        let mut cfg = WorldConfig::two_rooms(Timings::default(), 2, 2);
        cfg.tick = 100;
        cfg.preferred_room = Some(RoomId::new("a"));
        let mut r = Run::new(cfg);
        r.warm_up();
        r.apply(Action::CrashWitness);
        r.w.cut_rooms("a", "b", true, true);
        r.run_for(1_000);
        // Room a's reports are late: room b's claims reach the restarted witness first.
        r.w.cut_room_from_witness("a", true);
        r.apply(Action::StartWitness);
        r.run_for(head_start_ms);
        r.w.cut_room_from_witness("a", false);
        r.until(30_000, |w| w.nodes.iter().any(|n| n.taken_over()))
            .unwrap_or_else(|| panic!("no takeover: {}", r.w.describe()));
        assert_eq!(
            r.mode(),
            Some(Mode::Alone(RoomId::new("a"))),
            "head start {head_start_ms} ms: {}",
            r.w.describe()
        );
        assert!(
            r.all_active("a") && r.none_active("b"),
            "{}",
            r.w.describe()
        );
    }
}

/// Issue 12, item 2: with one node of room b dead for good, room a's nodes have no peer contact
/// and live on their leases alone. A witness silence shorter than the lease's stated tolerance
/// (`L − R − R/4`, minus two 100 ms ticks: the retry waits for the agent's next tick, and the
/// answer for the one after) must not let a lease run out: an
/// unanswered renewal is retried soon, not at the next whole renew interval.
#[test]
fn a_lease_outlives_a_witness_silence_up_to_its_stated_tolerance() {
    let t = Timings::default();
    let silence = t.lease_silence_tolerance_ms() - 200;
    assert!(silence > t.lease_ms - 2 * t.renew_interval_ms);
    for offset_ms in (0..1_000).step_by(100) {
        let mut r = Run::default_two_by_two();
        r.warm_up();
        r.apply(Action::PowerOff(3)); // b2, for good
        r.run_for(15_000 + offset_ms);
        r.w.cut_room_from_witness("a", true);
        r.w.cut_room_from_witness("b", true);
        r.run_for(silence);
        r.w.cut_room_from_witness("a", false);
        r.w.cut_room_from_witness("b", false);
        r.run_for(10_000);
        assert_eq!(
            r.w.ghost.fences,
            0,
            "a {silence} ms silence at offset {offset_ms} ms fenced a node: {}",
            r.w.describe()
        );
        assert!(r.all_active("a") && r.w.nodes[2].active());
    }
}

/// Issue 12, item 3 of the build list: when the rooms return to `Paired` after a split, the
/// survivor's nodes resume vouching before the fenced room's nodes have unfenced. They must give
/// the other room one peer timeout to answer with a vouch, as a node that just became active
/// does, instead of claiming at once.
#[test]
fn the_survivor_makes_no_claim_when_the_rooms_return_to_paired() {
    let mut r = Run::default_two_by_two();
    r.warm_up();
    r.w.cut_rooms("a", "b", true, true);
    r.until(30_000, |w| w.nodes.iter().any(|n| n.taken_over()))
        .expect("takeover");
    r.w.cut_rooms("a", "b", true, false);
    r.until(60_000, |w| {
        w.witness
            .arbiter
            .as_ref()
            .is_some_and(|a| a.record().mode == Mode::Paired)
    })
    .expect("the rooms return to paired");
    // Room b's renewals are lost for a second: room a resumes vouching first.
    r.w.cut_room_from_witness("b", true);
    let heal = r.w.now + 1_000;
    let end = r.w.now + 10_000;
    while r.w.now < end {
        if r.w.now >= heal {
            r.w.cut_room_from_witness("b", false);
        }
        r.step();
        for n in r.w.nodes.iter().filter(|n| n.active()) {
            let a = n.agent.as_ref().expect("agent runs");
            assert!(
                !a.claims(proto::Millis(n.clock)),
                "{} claims after the rejoin: {}",
                n.name,
                r.w.describe()
            );
        }
    }
    assert!(r.all_active("a") && r.all_active("b"));
    assert_eq!(r.mode(), Some(Mode::Paired));
}

#[test]
fn the_fence_peer_verdict_turns_to_peer_fenced_only_with_the_takeover() {
    use proto::fence_peer::PeerFenceVerdict;
    let verdict = |r: &Run, i: usize| {
        let n = &r.w.nodes[i];
        n.agent
            .as_ref()
            .expect("the agent runs")
            .peer_fenced(proto::Millis(n.clock))
    };
    let mut r = Run::default_two_by_two();
    r.warm_up();
    assert_eq!(verdict(&r, 0), PeerFenceVerdict::Paired);
    r.power_off_room("b");
    let alone = r.until(30_000, |w| {
        let n = &w.nodes[0];
        n.agent.as_ref().is_some_and(|a| {
            a.peer_fenced(proto::Millis(n.clock)) == PeerFenceVerdict::AloneWaiting
        })
    });
    assert!(
        alone.is_some(),
        "a1 never held the right to act alone: {}",
        r.w.describe()
    );
    assert!(!r.w.nodes[0].taken_over());
    r.until(30_000, |w| w.nodes[0].taken_over())
        .expect("a1 never took over");
    assert!(matches!(
        verdict(&r, 0),
        PeerFenceVerdict::PeerFenced { .. }
    ));
}
