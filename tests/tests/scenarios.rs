//! The 13 scenarios of the design brief with the real `witness` and `witness-agent` binaries as
//! hosts in network namespaces, real nftables partitions, `kill -9`, a wiped store and
//! libfaketime clock-rate skew. Each test asserts the brief's expected outcome, measures the
//! failover time (fault to first takeover, harness clock) against
//! `Timings::worst_case_room_loss_takeover_ms()`, runs the checker over the recorded timeline and
//! writes its row of `docs/scenarios.md`. Without root each test prints
//! `skipped: needs root for network namespaces` and returns.
mod common;

use anyhow::{bail, ensure, Context, Result};
use common::*;
use witness_tests::cluster::phase_in;
use witness_tests::{Cluster, Spec};

/// Waits for the first takeover after `t0` and checks the survivor and loser; returns
/// (survivor room, measured ms).
fn failover(c: &Cluster, t0: u64, expect_survivor: Option<&str>) -> Result<(String, u64)> {
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
    for n in nodes_of(loser) {
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

fn measured(c: &Cluster, text: String, m: u64) -> Outcome {
    Outcome {
        text,
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
            format!(
                "room b got the survivor lease and took over after {m} ms; b1, b2 stayed active"
            ),
            m,
        ))
    })();
    conclude(&c, "s03", "one room lost entirely (power)", r, true);
}
