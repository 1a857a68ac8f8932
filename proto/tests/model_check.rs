//! Exhaustive bounded model check (stateright) of the witness and two rooms (a1, a2 | b1),
//! calling the real `proto` step functions through [`proto::world::World`].
//!
//! Explicit actions: time (one tick of true time; each process's clock advances at its own rate
//! within the drift bound), delivery of any message in flight in any order, message loss, cuts
//! of whole directed links (room to room, room to witness, witness to room) and their heals,
//! agent crashes and restarts, node power loss, witness crashes, restarts and disk loss, and
//! fencing drivers that confirm, fail or hang. Every state reachable within the horizon is
//! explored; the horizon and fault budgets are the bounds.
//!
//! `MODEL_EXTRA_TICKS` and `MODEL_MAX_STATES` widen the search (see `scripts/long-checks.sh`).
mod common;

use common::model::*;
use proto::Mutation;

#[test]
fn model_check_rejoin_after_a_healed_partition_is_safe_and_sometimes_completes() {
    let extra = 14 + env_u64("MODEL_EXTRA_TICKS", 0);
    let max = env_u64("MODEL_MAX_STATES", 50_000_000) as usize;
    let started = std::time::Instant::now();
    let o = explore(heal_exploration(Mutation::None, extra), max);
    println!(
        "model check [rejoin after a healed partition, re-cuts (and a held message in long runs); {extra} ticks]: {} states explored in {:.1?}",
        o.states,
        started.elapsed()
    );
    assert!(o.violations.is_empty(), "{:#?}", o.violations);
    assert!(
        o.found_heal,
        "the split never healed back to both rooms running"
    );
}

#[test]
fn model_check_keeps_the_promise_under_every_fault_class_and_failover_completes() {
    let scale = env_u64("MODEL_EXTRA_TICKS", 0);
    let max = env_u64("MODEL_MAX_STATES", 50_000_000) as usize;
    let mut total = 0;
    let mut failover_somewhere = false;
    for (name, x) in suite(Mutation::None, scale) {
        let horizon = (x.horizon - x.init.now) / x.cfg.tick;
        let started = std::time::Instant::now();
        let o = explore(x, max);
        println!(
            "model check [{name}; {horizon} ticks]: {} states explored in {:.1?}",
            o.states,
            started.elapsed()
        );
        total += o.states;
        assert!(o.violations.is_empty(), "{name}: {:#?}", o.violations);
        failover_somewhere |= o.found_failover;
    }
    assert!(failover_somewhere, "no failover found within any horizon");
    println!("model check total: {total} states explored, no violation");
}
