//! Property tests for the arbiter's epoch rules (docs/protocol.md §6): whatever epochs nodes
//! report (including absurd ones such as `u64::MAX`), whatever admin commands arrive and
//! however often the witness restarts from its store, one epoch never stands for two different
//! modes (so two different rights to act alone never share an epoch), the epoch never goes
//! back, and it never saturates. Restarts here keep the store (state loss is the model
//! checker's: after it, only the nodes' reports can tell the witness which epochs were used).
use proptest::prelude::*;
use proto::arbiter::{Arbiter, ArbiterConfig, ArbiterInput, ClusterRecord, Mode};
use proto::wire::{AdminCommand, LeaseMode, LeaseRequest, NodePhase, Verdict, WIRE_VERSION};
use proto::{ClusterId, Epoch, Millis, RoomId};
use std::collections::BTreeMap;

#[derive(Clone, Debug)]
enum Op {
    Report {
        room: &'static str,
        node: u8,
        epoch: u64,
        claim: bool,
        reachable: bool,
        fenced: bool,
    },
    Admin(AdminCommand),
    /// The witness restarts from the last record it persisted.
    Restart,
    Wait(u64),
}

fn epoch_strategy() -> impl Strategy<Value = u64> {
    prop_oneof![
        4 => 0u64..8,
        1 => any::<u64>(),
        1 => Just(u64::MAX),
        1 => Just(u64::MAX - 1),
        1 => Just(Epoch::CEILING.0),
        1 => Just(Epoch::CEILING.0 + 1),
        1 => Just(Epoch::MAX_JUMP),
        1 => Just(Epoch::MAX_JUMP + 2),
        1 => Just(Epoch::MAX_JUMP * 3),
    ]
}

fn room_strategy() -> impl Strategy<Value = &'static str> {
    prop_oneof![4 => Just("a"), 4 => Just("b"), 1 => Just("zz")]
}

fn op_strategy() -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => (room_strategy(), 0u8..2, epoch_strategy(), any::<bool>(), any::<bool>(), any::<bool>())
            .prop_map(|(room, node, epoch, claim, reachable, fenced)| Op::Report {
                room, node, epoch, claim, reachable, fenced
            }),
        2 => (room_strategy(), any::<bool>()).prop_map(|(r, down)| Op::Admin(
            AdminCommand::ForceSurvivor { room: RoomId::new(r), other_room_down: down }
        )),
        1 => Just(Op::Admin(AdminCommand::Release)),
        1 => Just(Op::Admin(AdminCommand::Pause)),
        1 => Just(Op::Admin(AdminCommand::Resume)),
        1 => Just(Op::Restart),
        4 => (0u64..6_000).prop_map(Op::Wait),
    ]
}

/// Where the cluster starts: new, or restarted from a record an older witness may have left
/// (an epoch at or near the end of the range, from before the ceiling existed).
fn start_strategy() -> impl Strategy<Value = Option<u64>> {
    prop_oneof![
        4 => Just(None),
        1 => Just(Some(u64::MAX)),
        1 => Just(Some(u64::MAX - 2)),
        1 => Just(Some(Epoch::CEILING.0)),
    ]
}

/// What the checks remember across steps.
#[derive(Default)]
struct Seen {
    /// Every epoch the witness has shown, with the mode it stood for.
    modes: BTreeMap<Epoch, Mode>,
    /// Every right to act alone granted, by epoch.
    alone: BTreeMap<Epoch, RoomId>,
}

impl Seen {
    fn mode(&mut self, rec: &ClusterRecord) -> Result<(), TestCaseError> {
        let m = self.modes.entry(rec.epoch).or_insert(rec.mode.clone());
        prop_assert_eq!(
            &*m,
            &rec.mode,
            "epoch {} stood for two different modes",
            rec.epoch
        );
        Ok(())
    }
}

fn request(
    room: &str,
    node: u8,
    epoch: u64,
    claim: bool,
    reachable: bool,
    fenced: bool,
) -> LeaseRequest {
    LeaseRequest {
        version: WIRE_VERSION,
        cluster: ClusterId::new("c"),
        room: RoomId::new(room),
        node: format!("{room}{node}").as_str().into(),
        epoch: Epoch(epoch),
        phase: if fenced {
            NodePhase::Fenced
        } else {
            NodePhase::Active
        },
        peer_contact: reachable && !claim,
        peer_reachable: reachable,
        claim,
        takeover: false,
        health: 0,
        peers: Vec::new(),
        members_version: 0,
        address: None,
    }
}

fn run(start: Option<u64>, ops: Vec<Op>) -> Result<(), TestCaseError> {
    let cfg = ArbiterConfig::default();
    let cluster = ClusterId::new("c");
    let mut now = Millis(0);
    let (mut arb, mut persisted) = match start {
        None => (Arbiter::create(cfg.clone(), cluster.clone(), now), None),
        Some(e) => {
            let rec = ClusterRecord {
                epoch: Epoch(e),
                mode: Mode::Paired,
                rooms: vec![RoomId::new("a"), RoomId::new("b")],
                last_survivor: None,
                paused: false,
                recovering: false,
                alone_granted: false,
                members_version: 0,
                members: Default::default(),
            };
            (
                Arbiter::restart(cfg.clone(), cluster.clone(), rec.clone(), now),
                Some(rec),
            )
        }
    };
    let first = arb.record().epoch;
    let mut seen = Seen::default();
    seen.mode(arb.record())?;
    let mut highest = arb.record().epoch;
    let mut steps: u64 = 0;
    for op in ops {
        let before = arb.record().clone();
        let step = match op {
            Op::Wait(ms) => {
                now = now + ms;
                arb.step(now, ArbiterInput::Tick)
            }
            Op::Restart => {
                arb = match &persisted {
                    Some(rec) => Arbiter::restart(cfg.clone(), cluster.clone(), rec.clone(), now),
                    None => Arbiter::create(cfg.clone(), cluster.clone(), now),
                };
                seen.mode(arb.record())?;
                continue;
            }
            Op::Admin(cmd) => arb.step(now, ArbiterInput::Admin(cmd)),
            Op::Report {
                room,
                node,
                epoch,
                claim,
                reachable,
                fenced,
            } => {
                let s = arb.step(
                    now,
                    ArbiterInput::Lease(request(room, node, epoch, claim, reachable, fenced)),
                );
                let out_of_range = epoch > Epoch::CEILING.0
                    || (arb.recovering_until().is_none()
                        && before
                            .epoch
                            .0
                            .checked_add(Epoch::MAX_JUMP)
                            .is_some_and(|l| epoch > l));
                if out_of_range {
                    prop_assert!(s.refused.is_some(), "epoch {epoch} was not refused");
                    prop_assert!(s.persist.is_none(), "a refused report changed the record");
                    prop_assert_eq!(arb.record(), &before);
                }
                s
            }
        };
        steps += 1;
        if let Some(rec) = &step.persist {
            persisted = Some(rec.clone());
        }
        let rec = arb.record().clone();
        seen.mode(&rec)?;
        prop_assert!(
            rec.epoch >= highest,
            "epoch went back from {highest} to {}",
            rec.epoch
        );
        highest = rec.epoch;
        // Never saturates: a node moves the epoch at most to the ceiling (or not at all when it
        // already is beyond), and the witness adds one per step at most.
        let bound = first.max(Epoch::CEILING).0.checked_add(steps + 1);
        prop_assert!(
            bound.is_none_or(|b| rec.epoch.0 <= b),
            "epoch {} is beyond any the rules allow",
            rec.epoch
        );
        if let Some(reply) = &step.reply {
            if step.refused.is_none() {
                // Persist before reply: what the reply says is on disk.
                let on_disk = persisted.as_ref().map(|r| r.epoch).unwrap_or(Epoch(1));
                prop_assert!(reply.epoch <= on_disk.max(first));
                if let Verdict::Grant {
                    mode: LeaseMode::Alone { .. },
                    ..
                } = reply.verdict
                {
                    let r = seen.alone.entry(reply.epoch).or_insert(reply.room.clone());
                    prop_assert_eq!(
                        &*r,
                        &reply.room,
                        "two rooms were granted to act alone at epoch {}",
                        reply.epoch
                    );
                }
            }
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn epochs_never_repeat_across_rights_never_go_back_and_never_saturate(
        start in start_strategy(),
        ops in proptest::collection::vec(op_strategy(), 1..80),
    ) {
        run(start, ops)?;
    }
}

#[test]
fn one_node_reporting_the_largest_epoch_cannot_move_the_clusters_epoch() {
    let mut a = Arbiter::create(ArbiterConfig::default(), "c".into(), Millis(0));
    let s = a.step(
        Millis(10),
        ArbiterInput::Lease(request("a", 1, 1, false, true, false)),
    );
    assert!(s.refused.is_none());
    let before = a.record().clone();
    let s = a.step(
        Millis(20),
        ArbiterInput::Lease(request("a", 1, u64::MAX, false, true, false)),
    );
    let why = s.refused.expect("an epoch of u64::MAX is refused");
    assert!(why.contains("above the highest epoch"), "{why}");
    assert_eq!(a.record(), &before, "nothing changed");
    assert!(s.persist.is_none());
    // Within the bound the jump still happens (a store restored from a backup).
    let s = a.step(
        Millis(30),
        ArbiterInput::Lease(request("a", 1, 1_000, false, true, false)),
    );
    assert!(s.refused.is_none());
    assert_eq!(a.record().epoch, Epoch(1_001));
}

#[test]
fn a_stored_epoch_at_the_end_of_the_range_refuses_to_change_who_acts_alone() {
    let rec = ClusterRecord {
        epoch: Epoch(u64::MAX),
        mode: Mode::Paired,
        rooms: vec![RoomId::new("a"), RoomId::new("b")],
        last_survivor: None,
        paused: false,
        recovering: false,
        alone_granted: false,
        members_version: 0,
        members: Default::default(),
    };
    let mut a = Arbiter::restart(ArbiterConfig::default(), "c".into(), rec, Millis(0));
    let s = a.step(
        Millis(10),
        ArbiterInput::Admin(AdminCommand::ForceSurvivor {
            room: RoomId::new("b"),
            other_room_down: true,
        }),
    );
    let err = s.admin_result.expect("a result").expect_err("refused");
    assert!(err.contains("cannot grow any more"), "{err}");
    assert_eq!(a.record().mode, Mode::Paired);
    assert_eq!(a.record().epoch, Epoch(u64::MAX));
}

#[test]
fn force_survivor_naming_an_unknown_room_is_refused_with_the_known_rooms_and_changes_nothing() {
    let mut a = Arbiter::create(ArbiterConfig::default(), "c".into(), Millis(0));
    a.step(
        Millis(10),
        ArbiterInput::Lease(request("a", 1, 1, false, true, false)),
    );
    let before = a.record().clone();
    let s = a.step(
        Millis(20),
        ArbiterInput::Admin(AdminCommand::ForceSurvivor {
            room: RoomId::new("zz"),
            other_room_down: false,
        }),
    );
    let err = s.admin_result.expect("a result").expect_err("refused");
    assert!(
        err.contains("no room zz") && err.contains("known rooms: a"),
        "{err}"
    );
    assert_eq!(a.record(), &before);
    assert!(s.persist.is_none());
    // Room b can still join the cluster.
    let s = a.step(
        Millis(30),
        ArbiterInput::Lease(request("b", 1, 1, false, true, false)),
    );
    // It joins (is not fenced); its first grant waits for room a's acknowledgement of the
    // membership that names it.
    let verdict = s.reply.expect("reply").verdict;
    assert!(
        !matches!(verdict, Verdict::Fence { .. }),
        "room b was locked out: {verdict:?}"
    );
}
