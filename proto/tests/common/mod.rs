//! Shared driver for the proto tests: runs a [`World`] with a fair network (every message
//! delivered between ticks, unless a link is cut) and checks the promise after every action.
#![allow(dead_code)]
pub mod model;
pub mod sim;
use proto::arbiter::Mode;
use proto::world::{Action, Rate, World, WorldConfig};
use proto::Timings;

pub struct Run {
    pub cfg: WorldConfig,
    pub w: World,
    /// Fencing drivers confirm (true) or hang (false).
    pub fence_ok: bool,
}

impl Run {
    pub fn new(cfg: WorldConfig) -> Run {
        let rates = vec![Rate::Exact; cfg.nodes.len()];
        Run::with_rates(cfg, Rate::Exact, &rates)
    }

    pub fn with_rates(cfg: WorldConfig, witness: Rate, nodes: &[Rate]) -> Run {
        let w = World::new(&cfg, witness, nodes);
        Run {
            cfg,
            w,
            fence_ok: true,
        }
    }

    /// Default timings at 100 ms ticks, rooms a (two nodes) and b (two nodes).
    pub fn default_two_by_two() -> Run {
        let mut cfg = WorldConfig::two_rooms(Timings::default(), 2, 2);
        cfg.tick = 100;
        Run::new(cfg)
    }

    pub fn apply(&mut self, a: Action) {
        self.w.apply(&self.cfg, &a);
        if let Some(v) = self.w.violation() {
            panic!("promise broken: {v}\n  state: {}", self.w.describe());
        }
    }

    /// Delivers everything in flight (answers included), completes fencing, then one tick.
    pub fn step(&mut self) {
        for _ in 0..64 {
            let Some(ch) = self.w.net.keys().next().copied() else {
                break;
            };
            self.apply(Action::Deliver(ch));
        }
        if self.fence_ok {
            for i in 0..self.w.nodes.len() {
                if self.w.nodes[i].fence_pending && self.w.nodes[i].agent.is_some() {
                    self.apply(Action::FenceDone(i, true));
                }
            }
        }
        self.apply(Action::Tick);
    }

    pub fn run_for(&mut self, ms: u64) {
        let end = self.w.now + ms;
        while self.w.now < end {
            self.step();
        }
    }

    /// Runs until `pred` holds (checked after each step); returns the true time it took.
    pub fn until(&mut self, max_ms: u64, mut pred: impl FnMut(&World) -> bool) -> Option<u64> {
        let start = self.w.now;
        while self.w.now < start + max_ms {
            self.step();
            if pred(&self.w) {
                return Some(self.w.now - start);
            }
        }
        None
    }

    pub fn mode(&self) -> Option<Mode> {
        self.w
            .witness
            .arbiter
            .as_ref()
            .map(|a| a.record().mode.clone())
    }

    pub fn room_nodes(&self, room: &str) -> Vec<usize> {
        (0..self.w.nodes.len())
            .filter(|&i| self.w.nodes[i].room.as_str() == room)
            .collect()
    }

    pub fn all_active(&self, room: &str) -> bool {
        self.room_nodes(room)
            .iter()
            .all(|&i| self.w.nodes[i].active())
    }

    pub fn none_active(&self, room: &str) -> bool {
        self.room_nodes(room)
            .iter()
            .all(|&i| !self.w.nodes[i].active())
    }

    pub fn taken_over(&self, room: &str) -> bool {
        self.room_nodes(room)
            .iter()
            .any(|&i| self.w.nodes[i].taken_over())
    }

    /// Brings the cluster up and waits until every node runs paired with peer contact.
    pub fn warm_up(&mut self) {
        let t = self.until(20_000, |w| {
            w.nodes.iter().all(|n| {
                n.agent.as_ref().is_some_and(|a| {
                    a.peer_contact(proto::Millis(n.clock)) && a.lease_valid(proto::Millis(n.clock))
                })
            })
        });
        assert!(
            t.is_some(),
            "cluster did not come up: {}",
            self.w.describe()
        );
        assert_eq!(self.w.ghost.fences, 0, "no fence during start-up");
    }

    /// [`Run::warm_up`] for every node but the ones listed (powered off, say).
    pub fn warm_up_without(&mut self, skip: &[usize]) {
        let t = self.until(20_000, |w| {
            w.nodes.iter().enumerate().all(|(i, n)| {
                skip.contains(&i)
                    || n.agent.as_ref().is_some_and(|a| {
                        a.peer_contact(proto::Millis(n.clock))
                            && a.lease_valid(proto::Millis(n.clock))
                    })
            })
        });
        assert!(
            t.is_some(),
            "cluster did not come up: {}",
            self.w.describe()
        );
    }

    pub fn power_off_room(&mut self, room: &str) {
        for i in self.room_nodes(room) {
            self.apply(Action::PowerOff(i));
        }
    }
}
