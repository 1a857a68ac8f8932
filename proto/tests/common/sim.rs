//! Shared by the simulation test and the mutation checks: one seeded random schedule.
//!
//! Deterministic simulation: many random schedules, each from a seed, of the witness and two
//! rooms (two nodes each) on the real `proto` step functions. Every run mixes message delay,
//! reordering and loss with link cuts (one way and both), agent crashes, node power loss,
//! witness crashes and disk loss, fences that hang or fail, and per-process clock rates within
//! the drift bound; the promise is checked after every single action.
//!
//! A failing seed is printed with the command that replays it: `SIM_SEED=<n> cargo test -p
//! witness-proto --test simulation -- --nocapture`. `SIM_SEEDS` and `SIM_TICKS` lengthen the
//! run (see `scripts/long-checks.sh`).
use proto::world::{Action, End, Link, Rate, World, WorldConfig};
use proto::{Mutation, RoomId, Timings};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// What one run saw, for the progress checks.
#[derive(Default, Debug, Clone, Copy)]
pub struct Stats {
    pub takeovers: u32,
    pub heals: u32,
    pub fences: u32,
}

fn check(w: &World, seed: u64, m: Mutation, what: &Action) -> Result<(), String> {
    match w.violation() {
        None => Ok(()),
        Some(v) => Err(format!(
            "seed {seed} ({m:?}): {v}\n  after {what:?}\n  state: {}\n  replay: SIM_SEED={seed} cargo test -p witness-proto --test simulation -- --nocapture",
            w.describe()
        )),
    }
}

/// Runs one random schedule of `ticks` ticks; `Err` carries the broken promise and the seed.
pub fn run_seed(seed: u64, mutation: Mutation, ticks: u64) -> Result<Stats, String> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut cfg = WorldConfig::two_rooms(Timings::model(), 2, 2);
    cfg.tick = 10;
    cfg.mutation = mutation;
    if rng.gen_bool(0.3) {
        cfg.preferred_room = Some(RoomId::new(if rng.gen_bool(0.5) { "a" } else { "b" }));
    }
    let rates = [Rate::Slow, Rate::Exact, Rate::Fast];
    let pick_rate = |rng: &mut ChaCha8Rng| rates[rng.gen_range(0..3)];
    let wr = pick_rate(&mut rng);
    let nr: Vec<Rate> = (0..4).map(|_| pick_rate(&mut rng)).collect();
    let mut run = super::Run::with_rates(cfg.clone(), wr, &nr);
    run.warm_up();
    let mut w = run.w;
    let mut stats = Stats::default();
    let mut healed_seen = false;
    let rooms = [RoomId::new("a"), RoomId::new("b")];
    let links: Vec<Link> = vec![
        Link::Rooms {
            from: rooms[0].clone(),
            to: rooms[1].clone(),
        },
        Link::Rooms {
            from: rooms[1].clone(),
            to: rooms[0].clone(),
        },
        Link::RoomToWitness(rooms[0].clone()),
        Link::RoomToWitness(rooms[1].clone()),
        Link::WitnessToRoom(rooms[0].clone()),
        Link::WitnessToRoom(rooms[1].clone()),
    ];
    // How eventful this seed is.
    let fault_rate = [0.01, 0.03, 0.08][rng.gen_range(0..3)];
    let n = w.nodes.len();
    let trace = std::env::var("SIM_TRACE").is_ok();
    let act = |w: &mut World, a: Action| -> Result<(), String> {
        w.apply(&cfg, &a);
        if trace && !matches!(a, Action::Deliver(_) | Action::DeliverAll) {
            eprintln!("{a:?} -> {}", w.describe());
        }
        check(w, seed, mutation, &a)
    };
    for _ in 0..ticks {
        // Faults.
        if rng.gen_bool(fault_rate) {
            let a = match rng.gen_range(0..100) {
                0..=39 => {
                    let l = links[rng.gen_range(0..links.len())].clone();
                    let on = !w.cut_links.contains(&l);
                    Action::SetLink(l, on)
                }
                40..=49 => {
                    // heal everything: partitions end
                    for l in w.cut_links.clone() {
                        act(&mut w, Action::SetLink(l, false))?;
                    }
                    w.cuts.clear();
                    Action::DeliverAll
                }
                50..=59 => {
                    let i = rng.gen_range(0..n);
                    let j = rng.gen_range(0..n);
                    if w.nodes[i].room != w.nodes[j].room {
                        let on = !w.cuts.contains(&(End::Node(i), End::Node(j)));
                        w.cut(End::Node(i), End::Node(j), on);
                    }
                    Action::DeliverAll
                }
                60..=69 => {
                    let i = rng.gen_range(0..n);
                    if w.nodes[i].agent.is_some() {
                        Action::CrashAgent(i)
                    } else {
                        Action::StartAgent(i)
                    }
                }
                70..=79 => {
                    let i = rng.gen_range(0..n);
                    if w.nodes[i].powered {
                        Action::PowerOff(i)
                    } else {
                        Action::PowerOn(i)
                    }
                }
                80..=91 => {
                    if w.witness.arbiter.is_some() {
                        Action::CrashWitness
                    } else {
                        Action::StartWitness
                    }
                }
                92..=94 => Action::WipeWitness,
                _ => {
                    // a whole room loses power
                    let room = &rooms[rng.gen_range(0..2)];
                    for i in 0..n {
                        if &w.nodes[i].room == room {
                            act(&mut w, Action::PowerOff(i))?;
                        }
                    }
                    Action::DeliverAll
                }
            };
            act(&mut w, a)?;
        }
        // Down processes come back sooner or later.
        if w.witness.arbiter.is_none() && rng.gen_bool(0.05) {
            act(&mut w, Action::StartWitness)?;
        }
        for i in 0..n {
            if !w.nodes[i].powered && rng.gen_bool(0.03) {
                act(&mut w, Action::PowerOn(i))?;
            } else if w.nodes[i].powered && w.nodes[i].agent.is_none() && rng.gen_bool(0.2) {
                act(&mut w, Action::StartAgent(i))?;
            }
        }
        // The network: each message is delivered, held for later, or lost.
        for _round in 0..4 {
            let chans: Vec<_> = w.net.keys().copied().collect();
            if chans.is_empty() {
                break;
            }
            let mut order = chans;
            for k in (1..order.len()).rev() {
                order.swap(k, rng.gen_range(0..=k));
            }
            for ch in order {
                let r: f64 = rng.gen();
                if r < 0.85 {
                    act(&mut w, Action::Deliver(ch))?;
                } else if r < 0.90 {
                    act(&mut w, Action::Drop(ch))?;
                }
            }
        }
        // Fencing drivers: confirm, fail, or hang this tick.
        for i in 0..n {
            if w.nodes[i].fence_pending && w.nodes[i].agent.is_some() {
                let r: f64 = rng.gen();
                if r < 0.6 {
                    act(&mut w, Action::FenceDone(i, true))?;
                } else if r < 0.65 {
                    act(&mut w, Action::FenceDone(i, false))?;
                }
            }
        }
        let took_before = w.ghost.takeover_happened;
        act(&mut w, Action::Tick)?;
        if w.ghost.takeover_happened && !took_before {
            stats.takeovers += 1;
        }
        if w.ghost.healed_after_takeover && !healed_seen {
            healed_seen = true;
            stats.heals += 1;
        }
    }
    stats.fences = w.ghost.fences;
    Ok(stats)
}
