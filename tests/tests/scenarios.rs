//! The 13 scenarios of the design brief with the real `witness` and `witness-agent` binaries as
//! hosts in network namespaces, real nftables partitions, `kill -9`, a wiped store and
//! libfaketime clock-rate skew. Each test asserts the brief's expected outcome, measures the
//! failover time (fault to first takeover, harness clock) against
//! `Timings::worst_case_room_loss_takeover_ms()`, runs the checker over the recorded timeline and
//! writes its row of `docs/scenarios.md`. Each test is marked ignored with the reason "needs
//! root", so the runner reports it as ignored unless asked (`--include-ignored`, as
//! scripts/test.sh does as root); run without root anyway, it prints
//! `skipped: needs root for network namespaces` and returns.
mod common;

use anyhow::{bail, ensure, Context, Result};
use common::*;
use witness_tests::cluster::phase_in;
use witness_tests::{Cluster, Spec};

/// Waits for the first takeover after `t0` and checks the survivor and loser; returns
/// (survivor room, measured ms).
fn failover(c: &Cluster, t0: u64, expect_survivor: Option<&str>) -> Result<(String, u64)> {
    failover_with(c, t0, expect_survivor, true)
}

/// [`failover`]; `check_loser: false` only reports (runs beyond the protocol's assumptions).
fn failover_with(
    c: &Cluster,
    t0: u64,
    expect_survivor: Option<&str>,
    check_loser: bool,
) -> Result<(String, u64)> {
    let bound = c.timings.worst_case_room_loss_takeover_ms();
    let t = c.wait_for("a takeover", 3 * bound + 10_000, |ev| {
        first_takeover(ev, t0).is_some()
    })?;
    let ev = c.events();
    let tk = first_takeover(&ev, t0).context("takeover vanished")?;
    let survivor = tk.room.clone();
    let _ = t;
    if let Some(s) = expect_survivor {
        ensure!(
            survivor == s,
            "room {survivor} took over, expected room {s}"
        );
    }
    let loser = other(&survivor);
    // The loser's nodes are stopped (fenced, or reset by the watchdog / powered off).
    for n in nodes_of(loser).into_iter().filter(|_| check_loser) {
        let p = phase_in(
            &ev[..=ev.iter().position(|e| std::ptr::eq(e, tk)).unwrap_or(0)],
            n,
        );
        ensure!(
            matches!(p.as_str(), "fenced" | "down" | "starting"),
            "{n} was {p} when room {survivor} took over"
        );
    }
    Ok((survivor, tk.t - t0))
}

/// How long before the first takeover after `t0` the last node of the other room stopped
/// (fenced, reset, powered off, or its VM died; whichever came first per node): positive is a
/// safety margin, negative an overlap.
fn margin(c: &Cluster, t0: u64) -> Option<i64> {
    let ev = c.events();
    let tk = first_takeover(&ev, t0)?;
    let mut last_stop: i64 = i64::MIN;
    for n in nodes_of(other(&tk.room)) {
        let stop = ev.iter().find(|e| {
            e.t >= t0
                && e.node == n
                && (matches!(e.kind.as_str(), "reset" | "power_off" | "vm_stopped")
                    || (e.kind == "phase" && matches!(e.str("phase"), "fenced" | "starting")))
        })?;
        last_stop = last_stop.max(stop.t as i64);
    }
    Some(tk.t as i64 - last_stop)
}

fn measured(c: &Cluster, t0: u64, text: String, m: u64) -> Outcome {
    let mg = match margin(c, t0) {
        Some(x) if x >= 0 => {
            format!("; the other room's last node had stopped {x} ms before the takeover")
        }
        Some(x) => format!(
            "; OVERLAP: the other room's last node stopped {} ms after the takeover",
            -x
        ),
        None => String::new(),
    };
    Outcome {
        text: format!("{text}{mg}"),
        measured_ms: Some(m),
        bound_ms: Some(c.timings.worst_case_room_loss_takeover_ms()),
    }
}

/// The survivor's nodes are still active, and stay so for `ms`.
fn survivor_holds(c: &Cluster, room: &str, ms: u64) -> Result<()> {
    let [x, y] = nodes_of(room);
    c.hold(ms, "the survivor must keep running", |ev| {
        for n in [x, y] {
            let p = phase_in(ev, n);
            if p != "active" {
                return Some(format!("{n} is {p}"));
            }
        }
        None
    })
}

#[test]
#[ignore = "needs root for network namespaces and nftables; scripts/test.sh runs it as root"]
fn s01_healthy_rooms_both_keep_running_without_any_fence() {
    let Some(c) = warm(Spec::new("s01", 1)) else {
        return;
    };
    let r = (|| -> Result<Outcome> {
        let t0 = c.rec.now();
        c.hold(6_000, "healthy cluster", quiet_since(t0))?;
        let ev = c.events();
        let pets = count(&ev, t0, "pet", None);
        ensure!(pets > 0, "no watchdog pets recorded");
        let drbd = count(&ev, 0, "drbdadm", None);
        ensure!(drbd == 0, "a healthy node called drbdadm {drbd} times");
        Ok(Outcome::plain(format!(
            "all 4 nodes active for 6 s: no fence, no takeover, no drbdadm call; watchdogs petted \
             ({pets} pet reads)"
        )))
    })();
    conclude(&c, "s01", "all healthy", r, true);
}

#[test]
#[ignore = "needs root for network namespaces and nftables; scripts/test.sh runs it as root"]
fn s03_lost_room_is_taken_over_by_the_other_within_the_bound() {
    let Some(c) = warm(Spec::new("s03", 3)) else {
        return;
    };
    let r = (|| -> Result<Outcome> {
        let t0 = c.fault("power loss of room a (links down, every process killed)");
        c.power_off_room("a")?;
        let (s, m) = failover(&c, t0, Some("b"))?;
        let bound = c.timings.worst_case_room_loss_takeover_ms();
        survivor_holds(&c, &s, 1_500)?;
        ensure!(m <= bound, "takeover after {m} ms, bound {bound} ms");
        Ok(measured(
            &c,
            t0,
            format!(
                "room b got the survivor lease and took over after {m} ms; b1, b2 stayed active"
            ),
            m,
        ))
    })();
    conclude(&c, "s03", "one room lost entirely (power)", r, true);
}

/// No node fenced, took over or was reset since `t0`, and a node's status shows the witness
/// unreachable (the alarm).
fn rooms_ride_it_out(c: &Cluster, t0: u64, ms: u64, alarm_node: &str) -> Result<String> {
    c.hold(ms, "both rooms must keep running", quiet_since(t0))?;
    let st = c.agent_status(alarm_node)?;
    let reachable = st["witness"]["reachable"].as_bool();
    let lease_valid = st["lease"]["valid"].as_bool();
    ensure!(
        reachable == Some(false),
        "{alarm_node} still reports the witness reachable: {}",
        st["witness"]
    );
    ensure!(
        phase_in(&c.events(), alarm_node) == "active",
        "{alarm_node} not active"
    );
    Ok(format!(
        "alarm on {alarm_node}: witness.reachable=false, lease.valid={}, last error {}",
        lease_valid.unwrap_or(false),
        st["witness"]["last_error"]
    ))
}

#[test]
#[ignore = "needs root for network namespaces and nftables; scripts/test.sh runs it as root"]
fn s02_witness_down_leaves_both_rooms_running_with_an_alarm() {
    let Some(c) = warm(Spec::new("s02a", 21)) else {
        return;
    };
    let r = (|| -> Result<Outcome> {
        let t0 = c.fault("kill -9 of the witness");
        c.kill_witness();
        let hold = 4 * c.timings.lease_ms;
        let alarm = rooms_ride_it_out(&c, t0, hold, "a1")?;
        Ok(Outcome::plain(format!(
            "all 4 nodes stayed active for {} s (4 leases) on peer contact; {alarm}",
            hold / 1000
        )))
    })();
    conclude(&c, "s02a", "witness down", r, true);
}

#[test]
#[ignore = "needs root for network namespaces and nftables; scripts/test.sh runs it as root"]
fn s02_witness_unreachable_from_both_rooms_leaves_both_running_with_an_alarm() {
    let Some(c) = warm(Spec::new("s02b", 22)) else {
        return;
    };
    let r = (|| -> Result<Outcome> {
        let t0 = c.fault("witness cut from both rooms (nftables, both ways)");
        c.cut_witness("a")?;
        c.cut_witness("b")?;
        let hold = 4 * c.timings.lease_ms;
        let alarm = rooms_ride_it_out(&c, t0, hold, "b2")?;
        Ok(Outcome::plain(format!(
            "all 4 nodes stayed active for {} s on peer contact; {alarm}",
            hold / 1000
        )))
    })();
    conclude(&c, "s02b", "witness unreachable from both rooms", r, true);
}

#[test]
#[ignore = "needs root for network namespaces and nftables; scripts/test.sh runs it as root"]
fn s04_cut_between_rooms_leaves_exactly_one_room_running() {
    let Some(c) = warm(Spec::new("s04", 4)) else {
        return;
    };
    let r = (|| -> Result<Outcome> {
        let t0 = c.fault("link between the rooms cut both ways; both reach the witness");
        c.cut_rooms()?;
        let (s, m) = failover(&c, t0, None)?;
        let loser = other(&s);
        c.wait_phase(&nodes_of(loser), "fenced", 10_000)?;
        survivor_holds(&c, &s, 2_000)?;
        let bound = c.timings.worst_case_room_loss_takeover_ms();
        ensure!(m <= bound, "takeover after {m} ms, bound {bound} ms");
        let ev = c.events();
        let resets = count(&ev, t0, "reset", None);
        Ok(measured(
            &c,
            t0,
            format!(
                "both rooms claimed; the policy (no preferred room configured) chose room {s}; \
                 room {loser} fenced itself ({} drbdadm calls, {resets} resets), \
                 room {s} took over after {m} ms",
                count(&ev, t0, "drbdadm", None)
            ),
            m,
        ))
    })();
    conclude(
        &c,
        "s04",
        "link between rooms cut, both reach the witness",
        r,
        true,
    );
}

#[test]
#[ignore = "needs root for network namespaces and nftables; scripts/test.sh runs it as root"]
fn s05_isolated_room_fences_itself_and_the_other_takes_over() {
    let Some(c) = warm(Spec::new("s05", 5)) else {
        return;
    };
    let r = (|| -> Result<Outcome> {
        let t0 = c.fault("room a cut from room b and from the witness");
        c.cut_rooms()?;
        c.cut_witness("a")?;
        let (s, m) = failover(&c, t0, Some("b"))?;
        c.wait_phase(&["a1", "a2"], "fenced", 10_000)?;
        survivor_holds(&c, &s, 1_500)?;
        let ev = c.events();
        let fenced_at: Vec<u64> = ["a1", "a2"]
            .iter()
            .filter_map(|n| {
                ev.iter()
                    .find(|e| {
                        e.t >= t0 && e.node == *n && e.kind == "phase" && e.str("phase") == "fenced"
                    })
                    .map(|e| e.t - t0)
            })
            .collect();
        let bound = c.timings.worst_case_room_loss_takeover_ms();
        ensure!(m <= bound, "takeover after {m} ms, bound {bound} ms");
        Ok(measured(
            &c,
            t0,
            format!(
                "room a fenced itself (fenced after {fenced_at:?} ms: no grant, no contact); \
                 room b took over after {m} ms"
            ),
            m,
        ))
    })();
    conclude(
        &c,
        "s05",
        "one room isolated from peer and witness",
        r,
        true,
    );
}

#[test]
#[ignore = "needs root for network namespaces and nftables; scripts/test.sh runs it as root"]
fn s06_witness_and_room_lost_together_fence_the_rest_until_the_operator_overrides() {
    let Some(c) = warm(Spec::new("s06", 6)) else {
        return;
    };
    let r = (|| -> Result<Outcome> {
        let t0 = c.fault("witness killed and room b powered off together");
        c.kill_witness();
        c.power_off_room("b")?;
        let tf = c.wait_phase(&["a1", "a2"], "fenced", 15_000)?;
        ensure!(
            first_takeover(&c.events(), t0).is_none(),
            "a takeover without the witness"
        );
        // The operator brings the witness back and certifies room b is powered off.
        c.start_witness()?;
        let mut out = String::new();
        let mut t1 = 0;
        for _ in 0..40 {
            t1 = c.rec.now();
            match c.admin(&["force-survivor", "--room", "a", "--other-room-down"]) {
                Ok(o) => {
                    out = o;
                    break;
                }
                Err(_) => std::thread::sleep(std::time::Duration::from_millis(250)),
            }
        }
        ensure!(
            !out.is_empty(),
            "witness admin force-survivor never succeeded"
        );
        c.note(
            "harness",
            "fault",
            serde_json::json!({"what": "operator override"}),
        );
        let bound = c.timings.worst_case_room_loss_takeover_ms();
        c.wait_for(
            "room a takes over after the override",
            3 * bound + 10_000,
            |ev| first_takeover(ev, t1).is_some(),
        )?;
        let ev = c.events();
        let tk = first_takeover(&ev, t1).context("takeover")?;
        ensure!(tk.room == "a", "room {} took over", tk.room);
        let m = tk.t - t1;
        survivor_holds(&c, "a", 1_000)?;
        // This path has its own bound: the fenced room first stays fenced min_fenced_ms, then
        // its node waits k(P+F+W) after its first alone grant, one renewal each way.
        let t = &c.timings;
        let path_bound = t.min_fenced_ms + t.node_takeover_wait_ms() + 2 * t.renew_interval_ms;
        ensure!(
            m <= path_bound,
            "takeover {m} ms after the override, bound {path_bound} ms"
        );
        Ok(Outcome {
            text: format!(
                "room a fenced itself {} ms after the double fault (it cannot know); after \
                 `witness admin force-survivor --room a --other-room-down` ({}) it unfenced and \
                 took over {m} ms after the command (measured from the override; bound \
                 min_fenced + k(P+F+W) + 2R, not the room-loss bound)",
                tf - t0,
                out.split_whitespace().collect::<Vec<_>>().join(" ")
            ),
            measured_ms: Some(m),
            bound_ms: Some(path_bound),
        })
    })();
    conclude(&c, "s06", "witness and one room lost together", r, true);
}

#[test]
#[ignore = "needs root for network namespaces and nftables; scripts/test.sh runs it as root"]
fn s07_room_that_loses_only_the_witness_keeps_running_with_an_alarm() {
    let Some(c) = warm(Spec::new("s07", 7)) else {
        return;
    };
    let r = (|| -> Result<Outcome> {
        let t0 = c.fault("room a cut from the witness only");
        c.cut_witness("a")?;
        let hold = 4 * c.timings.lease_ms;
        let alarm = rooms_ride_it_out(&c, t0, hold, "a2")?;
        Ok(Outcome::plain(format!(
            "nothing stopped for {} s: room a runs on peer contact, room b on its grants; {alarm}",
            hold / 1000
        )))
    })();
    conclude(&c, "s07", "one room loses only the witness", r, true);
}

#[test]
#[ignore = "needs root for network namespaces and nftables; scripts/test.sh runs it as root"]
fn s08_asymmetric_link_leaves_exactly_one_room_running() {
    let Some(c) = warm(Spec::new("s08", 8)) else {
        return;
    };
    let r = (|| -> Result<Outcome> {
        let t0 = c.fault("one-way cut: room a hears room b, room b does not hear room a");
        c.cut_one_way("b", "a")?;
        let (s, m) = failover(&c, t0, None)?;
        let loser = other(&s);
        c.wait_phase(&nodes_of(loser), "fenced", 10_000)?;
        survivor_holds(&c, &s, 2_000)?;
        let bound = c.timings.worst_case_room_loss_takeover_ms();
        ensure!(m <= bound, "takeover after {m} ms, bound {bound} ms");
        Ok(measured(
            &c,
            t0,
            format!(
                "both rooms lost contact (a round trip is needed); room {s} survived and took \
                 over after {m} ms, room {loser} fenced"
            ),
            m,
        ))
    })();
    conclude(
        &c,
        "s08",
        "asymmetric link (A hears B, B does not hear A)",
        r,
        true,
    );
}

#[test]
#[ignore = "needs root for network namespaces and nftables; scripts/test.sh runs it as root"]
fn s09_witness_crash_and_host_reboot_go_unnoticed_by_the_rooms() {
    let Some(c) = warm(Spec::new("s09", 9)) else {
        return;
    };
    let r = (|| -> Result<Outcome> {
        let t0 = c.fault("kill -9 of the witness, restarted at once (crash)");
        c.kill_witness();
        c.start_witness()?;
        c.hold(
            2 * c.timings.lease_ms,
            "after a witness crash",
            quiet_since(t0),
        )?;
        let t1 = c.fault("kill -9 of the witness, back after 3 leases (host reboot)");
        c.kill_witness();
        std::thread::sleep(std::time::Duration::from_millis(3 * c.timings.lease_ms));
        c.start_witness()?;
        c.hold(
            3 * c.timings.lease_ms,
            "after a witness reboot",
            quiet_since(t1),
        )?;
        let ev = c.events();
        let epochs: std::collections::BTreeSet<u64> = ev
            .iter()
            .filter(|e| e.kind == "lease")
            .filter_map(|e| e.u64("epoch"))
            .collect();
        ensure!(epochs.len() == 1, "epochs changed: {epochs:?}");
        // Still arbitrates correctly after the restarts.
        let t2 = c.fault("link between the rooms cut after the restarts");
        c.cut_rooms()?;
        let (s, m) = failover(&c, t2, None)?;
        Ok(measured(
            &c,
            t2,
            format!(
                "no fence, no takeover, epoch unchanged ({epochs:?}) through a crash and a \
                 {} s outage; a cut afterwards: room {s} took over after {m} ms",
                3 * c.timings.lease_ms / 1000
            ),
            m,
        ))
    })();
    conclude(
        &c,
        "s09",
        "witness crashes and restarts, or its host reboots",
        r,
        true,
    );
}

#[test]
#[ignore = "needs root for network namespaces and nftables; scripts/test.sh runs it as root"]
fn s10_witness_with_a_wiped_store_grants_nothing_until_forgotten_leases_ran_out() {
    let Some(c) = warm(Spec::new("s10", 10)) else {
        return;
    };
    let r = (|| -> Result<Outcome> {
        let ev = c.events();
        let old_epoch = ev
            .iter()
            .filter(|e| e.kind == "lease")
            .filter_map(|e| e.u64("epoch"))
            .max()
            .context("no lease event")?;
        let t0 = c.fault("witness killed, its data dir wiped (certificates kept), restarted");
        c.kill_witness();
        c.wipe_witness_store()?;
        c.start_witness()?;
        let tr = c.rec.now();
        let wait = c.timings.forgotten_state_wait_ms();
        let tg = c.wait_for("a grant at a new epoch", wait + 15_000, |ev| {
            ev.iter()
                .any(|e| e.t >= tr && e.kind == "lease" && e.u64("epoch").unwrap_or(0) > old_epoch)
        })?;
        let ev = c.events();
        let first = ev
            .iter()
            .find(|e| e.t >= tr && e.kind == "lease" && e.u64("epoch").unwrap_or(0) > old_epoch)
            .context("grant")?;
        let after = first.t - tr;
        ensure!(
            after + 50 >= wait,
            "first grant {after} ms after the restart, forgotten-state wait {wait} ms"
        );
        ensure!(
            ev.iter()
                .all(|e| !(e.t >= t0 && matches!(e.kind.as_str(), "fence" | "takeover"))),
            "a node fenced or took over during the recovery"
        );
        let _ = tg;
        // A second wipe, now with the rooms cut during the recovery: no grant, no contact.
        let t2 = c.fault("witness wiped again and the rooms cut during its recovery");
        c.kill_witness();
        c.wipe_witness_store()?;
        c.start_witness()?;
        c.cut_rooms()?;
        let (s, m) = failover(&c, t2, None)?;
        // Composed bound for this path: the recovery wait, then the fenced rooms rejoin as
        // active at the next renewal and get P to find contact before they claim, then the
        // room-loss bound.
        let tm = &c.timings;
        let path_bound = wait
            + tm.renew_interval_ms
            + tm.peer_timeout_ms
            + tm.worst_case_room_loss_takeover_ms();
        ensure!(
            m <= path_bound,
            "takeover {m} ms after the fault, bound {path_bound} ms"
        );
        Ok(Outcome {
            text: format!(
                "first grant {after} ms after the restart (wait {wait} ms), at epoch {} > {old_epoch}; \
                 both rooms ran on peer contact meanwhile. Wiped again with the rooms cut: both \
                 rooms fenced (no grant, no contact), then room {s} took over {m} ms after the \
                 fault (bound: recovery wait + R + P + room-loss bound)",
                first.u64("epoch").unwrap_or(0)
            ),
            measured_ms: Some(m),
            bound_ms: Some(path_bound),
        })
    })();
    conclude(&c, "s10", "witness disk lost (empty state)", r, true);
}

/// Isolates room b (slow clock) and lets room a (fast clock, with the witness) take over.
fn skewed(id: &str, index: u8, fast: &str, slow: &str, assert_safe: bool) {
    let mut spec = Spec::new(id, index);
    for h in ["witness", "a1", "a2"] {
        spec.faketime.insert(h.into(), format!("+0 x{fast}"));
    }
    for h in ["b1", "b2"] {
        spec.faketime.insert(h.into(), format!("+0 x{slow}"));
    }
    let drift = spec.timings.drift_ppm;
    let c = match Cluster::start(spec) {
        Ok(Some(c)) => c,
        Ok(None) => return,
        Err(e) => panic!("cannot start the cluster: {e:#}"),
    };
    let warm_err = c.wait_all_active(30_000).err();
    let r = (|| -> Result<Outcome> {
        if let Some(e) = &warm_err {
            ensure!(!assert_safe, "the cluster did not come up: {e:#}");
            // Beyond the bound even a healthy start may split: report what happened.
            let ev = c.events();
            let why = ev
                .iter()
                .find(|e| e.kind == "fence")
                .map(|e| format!("{} fenced: {}", e.node, e.str("reason")))
                .unwrap_or_default();
            return Ok(Outcome::plain(format!(
                "witness and room a at x{fast}, room b at x{slow}: the cluster never came up paired, without any fault ({why}; phases {}); {}",
                c.phases_line(),
                witness_tests::check(&ev, &Cluster::rooms()).line()
            )));
        }
        // The agent's protocol clock follows libfaketime: phase_for_ms grows at the fast rate.
        // Harness time taken around each status call, its midpoint compared; 3 s window.
        let probe = || -> Result<(u64, f64)> {
            let before = c.rec.now();
            let v = c.agent_status("a1")?["phase_for_ms"].as_u64().unwrap_or(0);
            Ok((v, (before + c.rec.now()) as f64 / 2.0))
        };
        let (s1, h1) = probe()?;
        std::thread::sleep(std::time::Duration::from_millis(3_000));
        let (s2, h2) = probe()?;
        let rate = (s2.saturating_sub(s1)) as f64 / (h2 - h1);
        println!(
            "[{id}] a1's protocol clock ran at x{rate:.3} of the harness clock (faketime x{fast})"
        );
        let want: f64 = fast.parse().unwrap_or(1.0);
        ensure!(
            // The status is published once per agent tick: a few percent of noise over 2 s.
            (rate - want).abs() < 0.05 + (want - 1.0).abs() * 0.1,
            "a1's clock ran at x{rate:.3}, faketime says x{fast}"
        );
        let t0 = c.fault("room b (slow clock) cut from room a and from the witness");
        c.cut_rooms()?;
        c.cut_witness("b")?;
        let (s, m) = failover_with(&c, t0, Some("a"), assert_safe)?;
        if !assert_safe {
            // Let room b stop (late) so the overlap can be measured.
            let _ = c.wait_phase(&["b1", "b2"], "fenced", 15_000);
        }
        survivor_holds(&c, &s, 1_000)?;
        let v = witness_tests::check(&c.events(), &Cluster::rooms());
        Ok(measured(
            &c,
            t0,
            format!(
                "witness and room a at x{fast}, room b at x{slow} (drift bound {} %; a1's \
                 protocol clock measured at x{rate:.3}): room a took over after {m} ms; {}",
                drift as f64 / 10_000.0,
                if v.ok() {
                    "the checker found no overlap".to_string()
                } else {
                    format!("UNSAFE: {}", v.violations.join("; "))
                }
            ),
            m,
        ))
    })();
    let scenario = if assert_safe {
        "clock rates differ within the stated bound"
    } else {
        "clock rates differ BEYOND the stated bound (reported, not asserted)"
    };
    conclude(&c, id, scenario, r, assert_safe);
}

#[test]
#[ignore = "needs root for network namespaces and nftables; scripts/test.sh runs it as root"]
fn s11_clock_rates_within_the_bound_stay_safe() {
    skewed("s11", 11, "1.005", "0.995", true);
}

#[test]
#[ignore = "report-only measurement beyond the stated skew bound, not a test; scripts/long-checks.sh --reports runs it"]
fn report_only_s11_clock_rates_beyond_the_bound() {
    skewed("s11x", 111, "1.5", "0.6", false);
}

#[test]
#[ignore = "report-only measurement beyond the stated skew bound, not a test; scripts/long-checks.sh --reports runs it"]
fn report_only_s11_clock_rates_far_beyond_the_bound() {
    skewed("s11y", 112, "2", "0.5", false);
}

#[test]
#[ignore = "needs root for network namespaces and nftables; scripts/test.sh runs it as root"]
fn s12_flapping_link_causes_no_fence_storm_and_no_survivor_oscillation() {
    let Some(c) = warm(Spec::new("s12", 12)) else {
        return;
    };
    let r = (|| -> Result<Outcome> {
        let t0 = c.fault("link between the rooms flaps: 8 x (cut 1.5 s, up 1.5 s)");
        for _ in 0..8 {
            c.cut_rooms()?;
            std::thread::sleep(std::time::Duration::from_millis(1_500));
            c.heal()?;
            std::thread::sleep(std::time::Duration::from_millis(1_500));
        }
        let ev = c.events();
        let takeover_rooms: std::collections::BTreeSet<String> = ev
            .iter()
            .filter(|e| e.t >= t0 && e.kind == "takeover")
            .map(|e| e.room.clone())
            .collect();
        ensure!(
            takeover_rooms.len() <= 1,
            "survivor oscillated: {takeover_rooms:?}"
        );
        let mut fences = Vec::new();
        for n in ["a1", "a2", "b1", "b2"] {
            let f = count(&ev, t0, "fence", Some(n));
            ensure!(f <= 1, "{n} fenced {f} times while the link flapped");
            fences.push(format!("{n}:{f}"));
        }
        let first = first_takeover(&ev, t0).map(|e| e.t - t0);
        Ok(Outcome {
            text: format!(
                "24 s of flapping: takeovers only by room(s) {takeover_rooms:?}; fence actions \
                 per node {}; the fenced room stayed fenced (a flap never lasts \
                 rejoin_stable_ms = {} ms)",
                fences.join(" "),
                c.timings.rejoin_stable_ms
            ),
            measured_ms: first,
            bound_ms: first.map(|_| c.timings.worst_case_room_loss_takeover_ms()),
        })
    })();
    conclude(&c, "s12", "flapping link", r, true);
}

#[test]
#[ignore = "needs root for network namespaces and nftables; scripts/test.sh runs it as root"]
fn s13_healed_partition_lets_the_fenced_room_rejoin_only_after_the_release() {
    let Some(c) = warm(Spec::new("s13", 13)) else {
        return;
    };
    let r = (|| -> Result<Outcome> {
        let t0 = c.fault("link between the rooms cut");
        c.cut_rooms()?;
        let (s, m) = failover(&c, t0, None)?;
        let loser = other(&s);
        c.wait_phase(&nodes_of(loser), "fenced", 10_000)?;
        let th = c.fault("link healed");
        c.heal()?;
        let t = &c.timings;
        let budget = t.rejoin_stable_ms + 2 * t.widen(t.lease_ms) + t.min_fenced_ms + 15_000;
        let ta = c.wait_phase(&["a1", "a2", "b1", "b2"], "active", budget)?;
        let ev = c.events();
        let last_release = ev
            .iter()
            .filter(|e| e.t >= th && e.kind == "release")
            .map(|e| e.t)
            .max();
        let first_unfence = ev
            .iter()
            .filter(|e| {
                e.t >= th && e.room == loser && e.kind == "phase" && e.str("phase") == "active"
            })
            .map(|e| e.t)
            .min()
            .context("no unfence")?;
        let rel = last_release.context("the survivor never released its takeover")?;
        if rel >= first_unfence {
            bail!("room {loser} unfenced at {first_unfence} ms before the release at {rel} ms");
        }
        c.hold(3_000, "after the rejoin", quiet_since(ta))?;
        Ok(measured(
            &c,
            t0,
            format!(
                "room {s} took over after {m} ms; after the heal it released the takeover \
                 ({} ms after the heal) and room {loser} rejoined {} ms after the heal \
                 (rejoin_stable {} ms + k·L + min_fenced); no automatic double activation",
                rel - th,
                first_unfence - th,
                t.rejoin_stable_ms
            ),
            m,
        ))
    })();
    conclude(&c, "s13", "partition heals", r, true);
}

#[test]
#[ignore = "needs root for network namespaces and nftables; scripts/test.sh runs it as root"]
fn s03_lost_room_with_the_default_timings_is_taken_over_within_the_bound() {
    let mut spec = Spec::new("s03d", 31);
    spec.timings = proto::Timings::default();
    let Some(c) = warm(spec) else {
        return;
    };
    let r = (|| -> Result<Outcome> {
        let t0 = c.fault("power loss of room a, default timings");
        c.power_off_room("a")?;
        let (_, m) = failover(&c, t0, Some("b"))?;
        let bound = c.timings.worst_case_room_loss_takeover_ms();
        survivor_holds(&c, "b", 1_000)?;
        ensure!(m <= bound, "takeover after {m} ms, bound {bound} ms");
        Ok(measured(
            &c,
            t0,
            format!("with the shipped default timings room b took over after {m} ms"),
            m,
        ))
    })();
    conclude(
        &c,
        "s03d",
        "one room lost entirely, default timings",
        r,
        true,
    );
}

#[test]
#[ignore = "needs root for network namespaces and nftables; scripts/test.sh runs it as root"]
fn s12_lossy_link_between_the_rooms_stays_safe_without_fence_storms() {
    let Some(c) = warm(Spec::new("s12l", 121)) else {
        return;
    };
    let r = (|| -> Result<Outcome> {
        let t0 = c.fault("30% random loss on every link between the rooms for 20 s");
        c.lossy_rooms(30)?;
        std::thread::sleep(std::time::Duration::from_millis(20_000));
        c.heal()?;
        let ev = c.events();
        let mut fences = Vec::new();
        for n in ["a1", "a2", "b1", "b2"] {
            let f = count(&ev, t0, "fence", Some(n));
            ensure!(f <= 1, "{n} fenced {f} times on a lossy link");
            fences.push(format!("{n}:{f}"));
        }
        let takeover_rooms: std::collections::BTreeSet<String> = ev
            .iter()
            .filter(|e| e.t >= t0 && e.kind == "takeover")
            .map(|e| e.room.clone())
            .collect();
        ensure!(
            takeover_rooms.len() <= 1,
            "survivor oscillated: {takeover_rooms:?}"
        );
        Ok(Outcome {
            text: format!(
                "20 s of 30% loss between the rooms: fence actions per node {}; takeovers by \
                 {takeover_rooms:?} (a split decision on a lossy link is availability, not \
                 safety); final phases {}",
                fences.join(" "),
                c.phases_line()
            ),
            measured_ms: first_takeover(&ev, t0).map(|e| e.t - t0),
            bound_ms: None,
        })
    })();
    conclude(
        &c,
        "s12l",
        "lossy link between the rooms (30% loss)",
        r,
        true,
    );
}

#[test]
#[ignore = "needs root for network namespaces and nftables; scripts/test.sh runs it as root"]
fn s14_delayed_witness_link_still_leaves_exactly_one_room_running() {
    let mut spec = Spec::new("s14", 14);
    // No netem here: a delaying TCP relay in the witness's namespace, 100 ms each way.
    spec.witness_delay = Some((env!("CARGO_BIN_EXE_delay-relay").into(), 100));
    let Some(c) = warm(spec) else {
        return;
    };
    let r = (|| -> Result<Outcome> {
        let t0 = c.rec.now();
        c.hold(3_000, "a delayed witness link alone", quiet_since(t0))?;
        // The relay is really in the path: the nodes' connections end at the relay's port.
        let via_relay = c.host_ss("witness", "8443")?;
        let direct = c.host_ss("witness", "7443")?;
        println!("[s14] lease connections: {via_relay} through the relay, {direct} at the witness");
        ensure!(via_relay > 0, "no lease connection goes through the relay");
        let t1 = c.fault("link between the rooms cut, witness link delayed 100 ms each way");
        c.cut_rooms()?;
        let (s, m) = failover(&c, t1, None)?;
        let loser = other(&s);
        c.wait_phase(&nodes_of(loser), "fenced", 10_000)?;
        survivor_holds(&c, &s, 1_000)?;
        let bound = c.timings.worst_case_room_loss_takeover_ms();
        ensure!(m <= bound, "takeover after {m} ms, bound {bound} ms");
        Ok(measured(
            &c,
            t1,
            format!(
                "with every lease request and reply delayed 100 ms (relay), nothing fenced \
                 while the rooms were joined; after the cut room {s} took over after {m} ms and \
                 room {loser} fenced"
            ),
            m,
        ))
    })();
    conclude(
        &c,
        "s14",
        "extra: witness link delayed 100 ms each way, then a cut",
        r,
        true,
    );
}

#[test]
#[ignore = "needs root for network namespaces and nftables; scripts/test.sh runs it as root"]
fn s15_slow_heartbeats_into_one_room_keep_both_rooms_running() {
    let Some(c) = warm(Spec::new("s15", 15)) else {
        return;
    };
    let relay = std::path::PathBuf::from(env!("CARGO_BIN_EXE_delay-relay"));
    let r = (|| -> Result<Outcome> {
        let h = c.timings.heartbeat_interval_ms;
        let d = h * 6 / 10;
        let t0 = c.fault(&format!(
            "heartbeats into room b delayed {d} ms each way (round trip {} ms > H = {h} ms)",
            2 * d
        ));
        for n in ["b1", "b2"] {
            c.delay_port(n, 7444, &relay, d)?;
        }
        // New connections only go through the relay: let the agents reconnect.
        c.hold(
            4 * c.timings.lease_ms,
            "slow heartbeats into room b",
            |ev| quiet_since(t0)(ev),
        )?;
        let via = c.host_ss("b1", "8444")?;
        ensure!(via > 0, "no heartbeat connection goes through the relay");
        let a1 = c.agent_status("a1")?;
        let b1 = c.agent_status("b1")?;
        Ok(Outcome::plain(format!(
            "8 s with room a's pings answered {} ms late: nothing fenced, nobody took over; a1 \
             peer_contact={} (claiming={}), b1 peer_contact={}; the witness keeps both rooms \
             paired while one room still reports contact (a partial-loss alarm)",
            2 * d,
            a1["peer_contact"],
            a1["claiming"],
            b1["peer_contact"]
        )))
    })();
    conclude(
        &c,
        "s15",
        "extra: heartbeats into one room slower than H",
        r,
        true,
    );
}

/// Issue 12: one node of room b is powered off for good (hardware repair), then the witness is
/// unreachable from both rooms for 2 s, and later for 2.4 s (just under the lease's stated
/// tolerance `L − R − R/4` = 2.75 s minus a round trip), with the shipped default timings. Room
/// a's nodes have no peer contact (b2 never vouches) and live on their leases; b1 has peer
/// contact. Nothing may fence: the witness must not read its own deafness as room b's silence,
/// and a renewal in flight must not hold back the next.
#[test]
#[ignore = "needs root for network namespaces and nftables; scripts/test.sh runs it as root"]
fn s16_dead_node_and_short_witness_outages_fence_nothing() {
    let mut spec = Spec::new("s16", 16);
    spec.timings = proto::Timings::default();
    let Some(c) = warm(spec) else {
        return;
    };
    let r = (|| -> Result<Outcome> {
        c.fault("b2 powered off for good");
        c.power_off("b2")?;
        // Room a's nodes lose peer contact (b2 does not vouch) and claim; b1 keeps contact.
        std::thread::sleep(std::time::Duration::from_millis(5_000));
        let t0 = c.rec.now();
        let mut texts = Vec::new();
        for outage_ms in [2_000u64, 2_400] {
            c.fault(&format!(
                "witness unreachable from both rooms for {outage_ms} ms"
            ));
            c.cut_witness("a")?;
            c.cut_witness("b")?;
            std::thread::sleep(std::time::Duration::from_millis(outage_ms));
            c.heal()?;
            let back = c.rec.now();
            c.hold(8_000, "no node may fence", quiet_since(t0))?;
            for n in ["a1", "a2", "b1"] {
                let p = phase_in(&c.events(), n);
                ensure!(p == "active", "{n} is {p} after the {outage_ms} ms outage");
            }
            let st = c.witness_status()?;
            texts.push(format!(
                "{outage_ms} ms outage: a1, a2, b1 active 8 s after it ended (t={back} ms), \
                 witness {}",
                st["clusters"][0]["mode"]
            ));
        }
        Ok(Outcome::plain(format!(
            "b2 off for good; {}; no fence, no takeover, no reset",
            texts.join("; ")
        )))
    })();
    conclude(
        &c,
        "s16",
        "a dead node plus witness outages of 2 s and 2.4 s (default timings)",
        r,
        true,
    );
}

/// Issue 12: the witness restarts while the rooms are split, and room b's claims reach it
/// first (room a's link to the witness comes back 600 ms later). With `preferred_room = "a"`
/// room a must win: after a restart the policy decides, not the order claims arrive in.
#[test]
#[ignore = "needs root for network namespaces and nftables; scripts/test.sh runs it as root"]
fn s17_witness_restart_during_a_split_lets_the_preferred_room_win() {
    let mut spec = Spec::new("s17", 17);
    spec.preferred_room = Some("a".into());
    let Some(c) = warm(spec) else {
        return;
    };
    let r = (|| -> Result<Outcome> {
        let t0 =
            c.fault("kill -9 of the witness, the rooms cut apart, room a cut from the witness");
        c.kill_witness();
        c.cut_rooms()?;
        c.cut_witness("a")?;
        c.start_witness()?;
        std::thread::sleep(std::time::Duration::from_millis(600));
        c.restore_witness("a")?;
        c.note(
            "harness",
            "fault",
            serde_json::json!({ "what": "room a reaches the restarted witness again" }),
        );
        let (survivor, m) = failover(&c, t0, Some("a"))?;
        survivor_holds(&c, &survivor, 2_000)?;
        let st = c.witness_status()?;
        let mut o = measured(
            &c,
            t0,
            format!(
                "room b's claims reached the restarted witness 600 ms before room a's; the \
                 preferred room a won (witness {}) and took over after {m} ms (after a \
                 restart the takeover waits k·(L+F+W) from the restart, and the survivor's \
                 own wait from its first grant to act alone, k·L after the restart)",
                st["clusters"][0]["mode"]
            ),
            m,
        );
        // The lost-room bound does not apply: the restart rule adds its own wait.
        o.bound_ms = None;
        Ok(o)
    })();
    conclude(
        &c,
        "s17",
        "witness restart during a split, preferred room a, room b's claims first",
        r,
        true,
    );
}

/// The status of `node` in the witness's membership (`member`, `excluded`, ...), if it knows it.
fn member_status(c: &Cluster, node: &str) -> Result<Option<String>> {
    let st = c.witness_status()?;
    Ok(st["clusters"][0]["members"]
        .as_array()
        .and_then(|ms| ms.iter().find(|m| m["node"] == node))
        .and_then(|m| m["status"].as_str().map(str::to_string)))
}

/// Issue 12: a dead node stops counting. b2 is powered off for good; once the witness has
/// proven it stopped (the takeover bound after its last grant, and room a's reports that they
/// gave it no vouch for the node-side bound), it excludes it with an alarm, room a regains peer
/// contact, and witness outages of `L − R` (3 s) and 12 s fence nobody. Then b2 boots again:
/// it is readmitted and runs once room a has acknowledged it, without a fence anywhere.
#[test]
#[ignore = "needs root for network namespaces and nftables; scripts/test.sh runs it as root"]
fn s18_dead_node_is_excluded_then_long_witness_outages_fence_nothing_and_it_rejoins() {
    let mut spec = Spec::new("s18", 18);
    spec.timings = proto::Timings::default();
    let Some(c) = warm(spec) else {
        return;
    };
    let r = (|| -> Result<Outcome> {
        c.fault("b2 powered off for good");
        c.power_off("b2")?;
        let off = c.rec.now();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(40);
        let excluded_at = loop {
            if member_status(&c, "b2")?.as_deref() == Some("excluded") {
                break c.rec.now();
            }
            ensure!(
                std::time::Instant::now() < deadline,
                "b2 was not excluded within 40 s: {}",
                c.witness_status()?["clusters"][0]["members"]
            );
            std::thread::sleep(std::time::Duration::from_millis(200));
        };
        let alarms = c.witness_status()?["clusters"][0]["alarm_kinds"].to_string();
        ensure!(alarms.contains("excluded"), "no exclusion alarm: {alarms}");
        // The agents learn the new membership at their next renewal.
        std::thread::sleep(std::time::Duration::from_millis(3_000));
        let t0 = c.rec.now();
        let t = proto::Timings::default();
        let mut texts = Vec::new();
        for outage_ms in [t.lease_ms - t.renew_interval_ms, 12_000] {
            c.fault(&format!(
                "witness unreachable from both rooms for {outage_ms} ms"
            ));
            c.cut_witness("a")?;
            c.cut_witness("b")?;
            std::thread::sleep(std::time::Duration::from_millis(outage_ms));
            c.heal()?;
            c.hold(8_000, "no node may fence", quiet_since(t0))?;
            for n in ["a1", "a2", "b1"] {
                let p = phase_in(&c.events(), n);
                ensure!(p == "active", "{n} is {p} after the {outage_ms} ms outage");
            }
            texts.push(format!("{outage_ms} ms outage: a1, a2, b1 active"));
        }
        c.fault("b2 boots again");
        c.boot("b2")?;
        let back = c.wait_all_active(40_000)?;
        ensure!(
            member_status(&c, "b2")?.as_deref() == Some("member"),
            "b2 runs but is not a member again"
        );
        c.hold(5_000, "no node may fence", quiet_since(t0))?;
        Ok(Outcome::plain(format!(
            "b2 off at t={off} ms, excluded {} ms later (bound k(L+F+W) = {} ms after its last \
             grant); {}; b2 booted, readmitted and active again at t={back} ms; no fence, no \
             takeover, no reset",
            excluded_at - off,
            t.witness_takeover_wait_ms(),
            texts.join("; ")
        )))
    })();
    conclude(
        &c,
        "s18",
        "a dead node excluded, then witness outages of L − R and 12 s, then the node returns",
        r,
        true,
    );
}

/// Issue 12: a node rebooted while the witness is down. b2 reboots; it cannot be granted
/// anything until the witness is back, but as soon as its agent answers it vouches (a node
/// that has been granted nothing promises nothing it could break, docs/protocol.md §4.1 M5), so
/// room a keeps its peer contact through a witness outage far longer than the lease, and nobody
/// is fenced. When the witness returns, b2 is granted and runs.
#[test]
#[ignore = "needs root for network namespaces and nftables; scripts/test.sh runs it as root"]
fn s19_node_rebooted_while_the_witness_is_down_fences_nobody() {
    let mut spec = Spec::new("s19", 19);
    spec.timings = proto::Timings::default();
    let Some(c) = warm(spec) else {
        return;
    };
    let r = (|| -> Result<Outcome> {
        let t0 = c.rec.now();
        c.fault("witness killed");
        c.kill_witness();
        std::thread::sleep(std::time::Duration::from_millis(1_000));
        c.fault("b2 reboots while the witness is down");
        c.power_off("b2")?;
        c.boot("b2")?;
        c.hold(20_000, "no node may fence", quiet_since(t0))?;
        for n in ["a1", "a2", "b1"] {
            let p = phase_in(&c.events(), n);
            ensure!(p == "active", "{n} is {p} 20 s into the witness outage");
        }
        let b2 = phase_in(&c.events(), "b2");
        c.fault("witness back");
        c.start_witness()?;
        let back = c.wait_all_active(30_000)?;
        c.hold(5_000, "no node may fence", quiet_since(t0))?;
        Ok(Outcome::plain(format!(
            "witness down 21 s; b2 rebooted 1 s into it and stayed {b2} (vouching) until the \
             witness returned; a1, a2, b1 active throughout; all four active at t={back} ms; no \
             fence, no takeover, no reset"
        )))
    })();
    conclude(
        &c,
        "s19",
        "a node rebooted while the witness is down (21 s, default timings)",
        r,
        true,
    );
}

/// Issue 12: a node removed for good by the operator. b2 is powered off and decommissioned
/// with `witness admin member decommission b2 --powered-off` (no wait for the automatic
/// proof); room a counts only b1 from its next renewal, and a witness outage of 6 s (twice the
/// lease's tolerance) fences nobody.
#[test]
#[ignore = "needs root for network namespaces and nftables; scripts/test.sh runs it as root"]
fn s20_node_decommissioned_by_the_operator_then_a_witness_outage_fences_nothing() {
    let mut spec = Spec::new("s20", 20);
    spec.timings = proto::Timings::default();
    let Some(c) = warm(spec) else {
        return;
    };
    let r = (|| -> Result<Outcome> {
        let t0 = c.rec.now();
        c.fault("b2 powered off and decommissioned");
        c.power_off("b2")?;
        let refused = c.admin(&["member", "decommission", "b1"]);
        ensure!(
            refused.is_err(),
            "decommissioning a running node was accepted: {refused:?}"
        );
        let out = c.admin(&["member", "decommission", "b2", "--powered-off"])?;
        ensure!(
            member_status(&c, "b2")?.as_deref() == Some("decommissioned"),
            "b2 not decommissioned: {out}"
        );
        std::thread::sleep(std::time::Duration::from_millis(2_500));
        c.fault("witness unreachable from both rooms for 6000 ms");
        c.cut_witness("a")?;
        c.cut_witness("b")?;
        std::thread::sleep(std::time::Duration::from_millis(6_000));
        c.heal()?;
        c.hold(6_000, "no node may fence", quiet_since(t0))?;
        for n in ["a1", "a2", "b1"] {
            let p = phase_in(&c.events(), n);
            ensure!(p == "active", "{n} is {p} after the outage");
        }
        Ok(Outcome::plain(
            "b2 off and decommissioned (decommissioning running b1 refused); a 6 s witness \
             outage 2.5 s later: a1, a2, b1 active, no fence, no takeover, no reset"
                .to_string(),
        ))
    })();
    conclude(
        &c,
        "s20",
        "a node decommissioned by the operator, then a 6 s witness outage",
        r,
        true,
    );
}
