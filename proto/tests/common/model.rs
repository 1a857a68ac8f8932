//! Shared by the model check and the mutation checks: the explorations.
//!
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
use super::Run;
use proto::world::{Action, Allow, FaultBudget, Link, Rate, World, WorldConfig};
use proto::{Mutation, RoomId, Timings};
use stateright::{Checker, Model, Property};

/// One exploration: a starting state, a horizon and the faults allowed.
pub struct Exploration {
    pub cfg: WorldConfig,
    pub init: World,
    pub horizon: u64,
    pub allow: Allow,
}

impl Model for Exploration {
    type State = World;
    type Action = Action;

    fn init_states(&self) -> Vec<World> {
        vec![self.init.clone()]
    }

    fn actions(&self, s: &World, out: &mut Vec<Action>) {
        out.extend(s.enabled(self.horizon, &self.allow));
    }

    fn next_state(&self, s: &World, a: Action) -> Option<World> {
        let mut n = s.clone();
        n.apply(&self.cfg, &a);
        Some(n)
    }

    fn properties(&self) -> Vec<Property<Self>> {
        vec![
            Property::always(
                "no takeover while a node of the other room is still active",
                |_, s: &World| s.takeover_violation().is_none(),
            ),
            Property::always(
                "at most one room holds the right to act alone",
                |_, s: &World| s.alone_violation().is_none(),
            ),
            Property::always(
                "at most one room is granted the right to act alone per epoch",
                |_, s: &World| s.epoch_violation().is_none(),
            ),
            Property::always(
                "no peer-fenced verdict while a node of the other room is still active",
                |_, s: &World| s.peer_fence_violation().is_none(),
            ),
            Property::sometimes("failover completes", |_, s: &World| {
                s.ghost.takeover_happened
            }),
            Property::sometimes(
                "the split heals back to both rooms running",
                |_, s: &World| s.ghost.healed_after_takeover,
            ),
        ]
    }

    fn within_boundary(&self, s: &World) -> bool {
        s.now <= self.horizon
    }
}

pub fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

pub fn model_config(mutation: Mutation) -> WorldConfig {
    let mut cfg = WorldConfig::two_rooms(Timings::model(), 2, 1);
    cfg.tick = 10;
    cfg.mutation = mutation;
    cfg
}

/// The cluster brought up on a fair network until every node runs paired with peer contact.
pub fn warm(cfg: &WorldConfig, rates: (Rate, Rate, Rate)) -> World {
    let mut r = Run::with_rates(cfg.clone(), rates.0, &[rates.1, rates.1, rates.2]);
    r.warm_up();
    r.w
}

pub struct Outcome {
    pub states: usize,
    pub violations: Vec<(String, String)>,
    pub found_failover: bool,
    pub found_heal: bool,
}

/// Explorations run one at a time even when the test harness runs tests in parallel: each
/// already uses every core.
static HEAVY: std::sync::Mutex<()> = std::sync::Mutex::new(());

pub fn explore(x: Exploration, max_states: usize) -> Outcome {
    explore_until(x, max_states, false)
}

/// Explores; with `stop_at_failure` it stops at the first broken `always` property (the
/// mutation checks only need one counterexample).
pub fn explore_until(x: Exploration, max_states: usize, stop_at_failure: bool) -> Outcome {
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let mut builder = x.checker().threads(threads).target_state_count(max_states);
    if stop_at_failure {
        builder = builder.finish_when(stateright::HasDiscoveries::AnyFailures);
    }
    // Depth-first: the same exhaustive set of states as breadth-first, but memory is the
    // visited fingerprints and one path, not a frontier of whole states (which reached 12 GB).
    let _one_at_a_time = HEAVY.lock().unwrap_or_else(|p| p.into_inner());
    let checker = builder.spawn_dfs().join();
    let mut violations = Vec::new();
    for name in [
        "no takeover while a node of the other room is still active",
        "at most one room holds the right to act alone",
        "at most one room is granted the right to act alone per epoch",
        "no peer-fenced verdict while a node of the other room is still active",
    ] {
        if let Some(path) = checker.discovery(name) {
            let last = path.last_state().describe();
            let actions: Vec<String> = path
                .into_actions()
                .iter()
                .filter(|a| !matches!(a, Action::DeliverAll))
                .map(|a| format!("{a:?}"))
                .collect();
            violations.push((
                name.to_string(),
                format!("{last}\n  faults and ticks: {}", actions.join(", ")),
            ));
        }
    }
    Outcome {
        states: checker.unique_state_count(),
        found_failover: checker.discovery("failover completes").is_some(),
        found_heal: checker
            .discovery("the split heals back to both rooms running")
            .is_some(),
        violations,
    }
}

/// One named exploration from a warm cluster: a fault budget, the fault kinds allowed, and how
/// many ticks of true time to explore.
pub fn exploration(
    mutation: Mutation,
    budget: FaultBudget,
    allow: Allow,
    extra_ticks: u64,
    rates: (Rate, Rate, Rate),
) -> Exploration {
    let cfg = model_config(mutation);
    let mut init = warm(&cfg, rates);
    init.budget = budget;
    Exploration {
        horizon: init.now + extra_ticks * cfg.tick,
        cfg,
        init,
        allow,
    }
}

/// The explorations every release must pass: each fault class combined with partitions.
pub fn suite(mutation: Mutation, scale: u64) -> Vec<(&'static str, Exploration)> {
    let exact = (Rate::Exact, Rate::Exact, Rate::Exact);
    let skewed = (Rate::Slow, Rate::Fast, Rate::Slow);
    let skewed_rev = (Rate::Fast, Rate::Slow, Rate::Fast);
    let cuts = |n| FaultBudget {
        cuts: n,
        ..FaultBudget::default()
    };
    vec![
        (
            "partitions (any two directed link cuts, any time), fences that fail or hang",
            exploration(
                mutation,
                FaultBudget {
                    fence_failures: 1,
                    ..cuts(2)
                },
                Allow::default(),
                12 + scale,
                exact,
            ),
        ),
        (
            "partitions under clock-rate skew (witness slow, a fast, b slow)",
            exploration(mutation, cuts(2), Allow::default(), 12 + scale, skewed),
        ),
        (
            "partitions under clock-rate skew (witness fast, a slow, b fast)",
            exploration(mutation, cuts(2), Allow::default(), 12 + scale, skewed_rev),
        ),
        (
            "a partition plus delayed (held), reordered and lost messages",
            exploration(
                mutation,
                FaultBudget {
                    // two held messages multiply the space by ~20: long runs only
                    holds: if scale > 0 { 2 } else { 1 },
                    drops: 1,
                    ..cuts(1)
                },
                Allow::default(),
                9 + scale,
                exact,
            ),
        ),
        (
            "a partition (two in long runs) plus witness crash, restart and disk loss",
            exploration(
                mutation,
                FaultBudget {
                    witness_crashes: 1,
                    witness_wipes: 1,
                    ..cuts(if scale > 0 { 2 } else { 1 })
                },
                Allow::default(),
                9 + scale,
                exact,
            ),
        ),
        (
            "a node dead for good plus any two directed link cuts (the witness deaf to both rooms among them)",
            {
                let mut x = exploration(mutation, cuts(2), Allow::default(), 12 + scale, exact);
                // a2 is powered off for good before the exploration starts: b1 never has peer
                // contact again (a2 never vouches) and lives on its lease; a1 keeps contact.
                x.init.apply(&x.cfg, &Action::PowerOff(1));
                x
            },
        ),
        ("membership: a dead node excluded, then back (readmission), with any two directed cuts of rooms or single nodes from the witness", membership_exploration(mutation, 9 + scale)),
        (
            "agent crashes, restarts and node power loss (plus a partition in long runs)",
            exploration(
                mutation,
                FaultBudget {
                    agent_crashes: 1,
                    power_cycles: 1,
                    // with a cut as well the space is ~15M states: long runs only
                    ..cuts(if scale > 0 { 1 } else { 0 })
                },
                Allow {
                    agent_crashes: true,
                    power: true,
                    heals: false,
                    node_links: false,
                },
                9 + scale,
                exact,
            ),
        ),
    ]
}

/// From the moment room a has taken over after a cut between the rooms: the cut may heal (and
/// be cut again), one message may be held back; the fenced room must rejoin only when safe.
pub fn heal_exploration(mutation: Mutation, extra_ticks: u64) -> Exploration {
    let cfg = model_config(mutation);
    let mut r = Run::new(cfg.clone());
    r.warm_up();
    for (from, to) in [("a", "b"), ("b", "a")] {
        r.apply(Action::SetLink(
            Link::Rooms {
                from: RoomId::new(from),
                to: RoomId::new(to),
            },
            true,
        ));
    }
    r.until(1_000, |w| w.nodes.iter().any(|n| n.taken_over()))
        .expect("the fair run takes over");
    let mut init = r.w;
    init.budget = FaultBudget {
        holds: if extra_ticks > 14 { 1 } else { 0 },
        cuts: 1,
        ..FaultBudget::default()
    };
    Exploration {
        horizon: init.now + extra_ticks * cfg.tick,
        cfg,
        init,
        allow: Allow {
            heals: true,
            ..Allow::default()
        },
    }
}

/// Issue 12: a2 died and the witness excluded it (the dead-node rule); from there a2 may power
/// on again at any moment (it is readmitted when it calls, and runs only once b1 has
/// acknowledged it), while any two directed links are cut, whole rooms or single nodes to and
/// from the witness. The mutations `AdmitWithoutAck` and `ContactSkipsVouchingMember` must be
/// caught here.
pub fn membership_exploration(mutation: Mutation, extra_ticks: u64) -> Exploration {
    use proto::wire::MemberStatus;
    let mut cfg = model_config(mutation);
    // b1's configuration does not name a2 (a node added later): b1 counts a2 only through the
    // witness's membership, so a2's admission depends on b1 acknowledging it.
    cfg.unlisted = vec![proto::NodeId::new("a2")];
    let mut r = Run::new(cfg.clone());
    r.warm_up();
    r.apply(Action::PowerOff(1));
    r.until(1_000, |w| {
        w.witness.arbiter.as_ref().is_some_and(|a| {
            a.record()
                .members
                .get(&proto::NodeId::new("a2"))
                .is_some_and(|m| m.status == MemberStatus::Excluded)
        })
    })
    .expect("the dead node is excluded in a fair run");
    // and b1 has learned it
    r.run_for(3 * cfg.tick);
    let mut init = r.w;
    init.budget = FaultBudget {
        cuts: 2,
        ..FaultBudget::default()
    };
    Exploration {
        horizon: init.now + extra_ticks * cfg.tick,
        cfg,
        init,
        allow: Allow {
            power: true,
            node_links: true,
            ..Allow::default()
        },
    }
}
