//! Deterministic simulation: many random schedules, each from a seed, of the witness and two
//! rooms (two nodes each) on the real `proto` step functions. Every run mixes message delay,
//! reordering and loss with link cuts (one way and both), agent crashes, node power loss,
//! witness crashes and disk loss, fences that hang or fail, and per-process clock rates within
//! the drift bound; the promise is checked after every single action.
//!
//! A failing seed is printed with the command that replays it: `SIM_SEED=<n> cargo test -p
//! witness-proto --test simulation -- --nocapture`. `SIM_SEEDS` and `SIM_TICKS` lengthen the
//! run (see `scripts/long-checks.sh`).
mod common;

use common::model::env_u64;
use common::sim::{run_seed, Stats};
use proto::Mutation;

#[test]
fn simulation_slice_keeps_the_promise_and_makes_progress() {
    let ticks = env_u64("SIM_TICKS", 600);
    let seeds: Vec<u64> = match std::env::var("SIM_SEED") {
        Ok(s) => vec![s.parse().expect("SIM_SEED must be a number")],
        Err(_) => (0..env_u64("SIM_SEEDS", 300)).collect(),
    };
    let mut total = Stats::default();
    for &seed in &seeds {
        match run_seed(seed, Mutation::None, ticks) {
            Ok(s) => {
                total.takeovers += s.takeovers;
                total.heals += s.heals;
                total.fences += s.fences;
            }
            Err(e) => panic!("{e}"),
        }
    }
    println!(
        "simulation: {} seeds x {ticks} ticks, no violation; {} runs took over, {} healed back to both rooms, {} fences",
        seeds.len(),
        total.takeovers,
        total.heals,
        total.fences
    );
    if seeds.len() > 50 {
        assert!(total.takeovers > 0, "no schedule ever failed over");
        assert!(total.heals > 0, "no schedule ever healed");
    }
}
