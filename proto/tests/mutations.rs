//! Mutation checks: a checker that cannot fail proves nothing. Each deliberately broken variant
//! of the protocol must be caught — by the model checker, and by the seeded simulation.
mod common;

use common::model as model_check;
use common::sim as simulation;

use proto::Mutation;

/// Runs the explorations whose name contains `which` (the fault class that exposes the
/// mutation) and returns the first counterexample.
fn caught_by_model_checker(m: Mutation, which: &str) -> String {
    for (name, x) in model_check::suite(m, 0)
        .into_iter()
        .filter(|(n, _)| n.contains(which))
    {
        let o = model_check::explore_until(x, 20_000_000, true);
        if let Some((property, trace)) = o.violations.first() {
            return format!(
                "[{name}] broke \"{property}\" after {} states: {trace}",
                o.states
            );
        }
    }
    panic!("the model checker did not catch mutation {m:?}");
}

#[test]
fn model_checker_catches_takeover_without_the_wait() {
    let how = caught_by_model_checker(Mutation::TakeoverWithoutWait, "fences that fail or hang");
    println!("TakeoverWithoutWait caught: {how}");
}

#[test]
fn model_checker_catches_a_witness_granting_without_persisting_the_epoch() {
    // A witness crash and restart, and two directed cuts (the rooms, then one room from the
    // witness): every placement of them within nine ticks.
    let x = model_check::exploration(
        Mutation::GrantWithoutPersist,
        proto::world::FaultBudget {
            witness_crashes: 1,
            cuts: 2,
            ..Default::default()
        },
        proto::world::Allow::default(),
        9,
        (
            proto::world::Rate::Exact,
            proto::world::Rate::Exact,
            proto::world::Rate::Exact,
        ),
    );
    let o = model_check::explore_until(x, 20_000_000, true);
    let (property, trace) = o
        .violations
        .first()
        .expect("the model checker did not catch GrantWithoutPersist");
    println!(
        "GrantWithoutPersist caught: broke \"{property}\" after {} states: {trace}",
        o.states
    );
}

#[test]
fn model_checker_catches_an_agent_trusting_a_one_way_heartbeat() {
    let how = caught_by_model_checker(Mutation::TrustOneWayHeartbeat, "fences that fail or hang");
    println!("TrustOneWayHeartbeat caught: {how}");
}

#[test]
fn model_checker_catches_a_member_admitted_before_the_other_room_acknowledged_it() {
    // The counterexample needs the readmitted node to claim, win a split and wait out its
    // takeover bound: 13 ticks of the membership exploration (CI explores it to 9 without the
    // mutation); the search stops at the first violation.
    let x = model_check::membership_exploration(Mutation::AdmitWithoutAck, 13);
    let o = model_check::explore_until(x, 20_000_000, true);
    let (property, trace) = o
        .violations
        .first()
        .expect("the model checker did not catch AdmitWithoutAck");
    println!(
        "AdmitWithoutAck caught: broke \"{property}\" after {} states: {trace}",
        o.states
    );
}

/// The every-member contact rule, broken: b1 counts only a1 of room a. The model's links cut
/// whole rooms, so a2 and a1 always see room b alike there; this run cuts single nodes: a2
/// loses b1 (and claims), a1 loses the witness (and lives on b1's vouch), room b is silent to
/// the witness. The witness lets room a act alone and a2 takes over after its wait. With the
/// rule intact b1 lost a2's vouch and fenced long before; with the mutation it keeps running on
/// a1's vouch (and a1 on b1's), and the checker must see the broken promise.
fn skipped_member_run(m: Mutation) -> Result<(), String> {
    use proto::world::{End, Link, WorldConfig};
    use proto::{NodeId, RoomId, Timings};
    let mut cfg = WorldConfig::two_rooms(Timings::default(), 2, 1);
    cfg.tick = 100;
    cfg.mutation = m;
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
        let mut r = common::Run::new(cfg);
        r.warm_up();
        r.w.cut(End::Node(1), End::Node(2), true); // a2 <-> b1
        for l in [
            Link::NodeToWitness(NodeId::new("a1")),
            Link::WitnessToNode(NodeId::new("a1")),
            Link::RoomToWitness(RoomId::new("b")),
            Link::WitnessToRoom(RoomId::new("b")),
        ] {
            r.w.cut_links.insert(l);
        }
        r.run_for(40_000);
        assert!(
            r.w.nodes[1].taken_over(),
            "a2 did not take over: {}",
            r.w.describe()
        );
    }));
    outcome.map_err(|e| {
        e.downcast_ref::<String>()
            .cloned()
            .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_default()
    })
}

#[test]
fn the_checker_catches_a_contact_rule_that_skips_a_member_still_vouching() {
    skipped_member_run(Mutation::None).expect("the intact rule keeps the promise and fails over");
    let e = skipped_member_run(Mutation::ContactSkipsVouchingMember)
        .expect_err("the checker did not catch ContactSkipsVouchingMember");
    assert!(e.contains("promise broken"), "{e}");
    println!("ContactSkipsVouchingMember caught: {e}");
}

#[test]
fn model_checker_catches_a_peer_fenced_verdict_before_the_takeover() {
    let how = caught_by_model_checker(
        Mutation::PeerFencedBeforeTakeover,
        "fences that fail or hang",
    );
    assert!(how.contains("peer-fenced verdict"), "{how}");
    println!("PeerFencedBeforeTakeover caught: {how}");
}

#[test]
fn simulation_catches_every_mutation() {
    for m in [
        Mutation::TakeoverWithoutWait,
        Mutation::GrantWithoutPersist,
        Mutation::TrustOneWayHeartbeat,
        Mutation::PeerFencedBeforeTakeover,
    ] {
        let found = (0..2_000u64)
            .find_map(|seed| simulation::run_seed(seed, m, 400).err().map(|e| (seed, e)));
        let (seed, e) = found.unwrap_or_else(|| panic!("simulation did not catch {m:?}"));
        println!("{m:?} caught by simulation seed {seed}: {e}");
    }
}
