//! The loopback demo: a real witness and two rooms of real agents (two nodes each) on 127.0.0.1,
//! no root needed. It waits until both rooms run paired, cuts the power to room b (kill -9 of
//! both its agents), prints the timeline of what happens relative to the power cut (loss
//! detected, the witness's decision, fences, the safe bound, the takeover), then powers room b
//! back on and shows the rejoin. Every process and temp dir is cleaned up on exit, Ctrl-C or
//! panic. `cargo run --release -p witness-bench --bin demo`.

use anyhow::{Context, Result};
use std::time::{Duration, Instant};
use witness_bench::lab::{self, Ev, Kind, Lab};
use witness_bench::{find_bin, secs};

#[tokio::main]
async fn main() -> Result<()> {
    tokio::select! {
        r = run() => r,
        _ = tokio::signal::ctrl_c() => {
            eprintln!("\ninterrupted: stopping every process and removing the temp dir");
            Ok(())
        }
    }
}

fn rel(at: Instant, base: Instant) -> String {
    let ms = if at >= base {
        at.duration_since(base).as_millis() as i64
    } else {
        -(base.duration_since(at).as_millis() as i64)
    };
    format!(
        "{}{:>6.3} s",
        if ms < 0 { "T-" } else { "T+" },
        ms.abs() as f64 / 1000.0
    )
}

fn show(ev: &Ev, base: Instant) {
    println!("  {}  {:<8} {}", rel(ev.at, base), ev.who, ev.text);
}

async fn run() -> Result<()> {
    let witness_bin = find_bin("WITNESS_BIN", "witness", "witness")?;
    let agent_bin = find_bin("AGENT_BIN", "witness-agent", "witness-agent")?;
    let t = lab::quick_timings();
    let bound = t.worst_case_room_loss_takeover_ms();
    println!("Two-room witness demo (everything on 127.0.0.1, no root)");
    println!("  witness: {}", witness_bin.display());
    println!("  agents:  {}", agent_bin.display());
    println!(
        "  timings (4x shorter than the defaults, shared by witness and agents): heartbeat {} ms, \
         peer timeout P {} ms, renew R {} ms, lease L {} ms, silence S {} ms, fence deadline F {} ms, \
         watchdog W {} ms, drift {} ppm",
        t.heartbeat_interval_ms,
        t.peer_timeout_ms,
        t.renew_interval_ms,
        t.lease_ms,
        t.silence_ms,
        t.fence_deadline_ms,
        t.watchdog_timeout_ms,
        t.drift_ppm
    );
    println!(
        "  drivers: log only (Kubernetes, VM, DRBD and the watchdog disabled: no watchdog device here; \
         events go to a unix socket this demo reads)"
    );
    println!();

    let start = Instant::now();
    let mut lab = Lab::start(&witness_bin, &agent_bin, t.clone(), 50).await?;
    println!(
        "Starting a witness (pid {}, lease port {}) and agents a1 a2 (room a), b1 b2 (room b) ...",
        lab.witness_pid, lab.witness_lease_port
    );
    let mut setup = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !lab.paired(&["a", "b"]) {
        let Some(ev) = lab
            .next_event(deadline.min(Instant::now() + Duration::from_millis(200)))
            .await
        else {
            if Instant::now() >= deadline {
                anyhow::bail!(
                    "the rooms did not run paired within 30 s; logs in {} (witness: {})",
                    lab.dir().display(),
                    lab::tail(&lab.dir().join("witness.log"))
                );
            }
            continue;
        };
        setup.push(ev);
    }
    // Let the pairing settle for a moment, collecting what arrives.
    let settle = Instant::now() + Duration::from_millis(1500);
    while let Some(ev) = lab.next_event(settle).await {
        setup.push(ev);
    }
    println!(
        "Both rooms run paired after {} (times below relative to the start):",
        secs(start.elapsed().as_millis() as f64 - 1500.0)
    );
    for ev in &setup {
        println!(
            "  start+{:>6.3} s  {:<8} {}",
            ev.at.duration_since(start).as_secs_f64(),
            ev.who,
            ev.text
        );
    }
    println!();
    println!(
        "=== POWER CUT: room b. kill -9 of agents b1 and b2: this stands in for losing the power"
    );
    println!("    of the whole room (the nodes stop at once, send nothing more, fence nothing).");
    println!(
        "    Times are now relative to the power cut (T+0). The safe bound for these timings:"
    );
    println!(
        "    worst_case_room_loss_takeover_ms() = max(max(P,S) + R + k(P+F+W), k(L+F+W) + R) + R = {bound} ms"
    );
    println!();
    let cut = lab.power_off("b").await;
    let mut after: Vec<Ev> = Vec::new();
    let deadline = cut + Duration::from_millis(bound + 10_000);
    let mut taken = std::collections::BTreeSet::new();
    while taken.len() < 2 {
        let Some(ev) = lab.next_event(deadline).await else {
            println!(
                "  (no takeover by both a nodes within bound + 10 s; logs in {})",
                lab.dir().display()
            );
            break;
        };
        show(&ev, cut);
        if ev.kind == Kind::Takeover && ev.who.starts_with('a') {
            taken.insert(ev.who.clone());
        }
        after.push(ev);
    }
    // A moment more, to show that nothing else happens (no fence in room a).
    let quiet = Instant::now() + Duration::from_millis(1000);
    while let Some(ev) = lab.next_event(quiet).await {
        show(&ev, cut);
        after.push(ev);
    }
    let first = |pred: &dyn Fn(&Ev) -> bool| after.iter().find(|e| pred(e)).map(|e| e.at);
    let at = |i: Option<Instant>| {
        i.map(|i| format!("T+{}", secs(i.duration_since(cut).as_millis() as f64)))
            .unwrap_or_else(|| "-".into())
    };
    let detected = first(&|e| e.kind == Kind::PeerLost);
    let decision = after.iter().find(|e| e.kind == Kind::Decision);
    let fences_a: Vec<&Ev> = after
        .iter()
        .filter(|e| e.kind == Kind::Fence && e.who.starts_with('a'))
        .collect();
    let takeover = after.iter().find(|e| e.kind == Kind::Takeover);
    println!();
    println!("Summary of the power cut:");
    println!(
        "  loss detected (first node of room a without peer contact): {}",
        at(detected)
    );
    println!(
        "  witness decision: {}",
        decision
            .map(|d| format!("{} at {}", d.text, at(Some(d.at))))
            .unwrap_or_else(|| "-".into())
    );
    println!(
        "  fences: room b none (powered off, it cannot); room a {}",
        if fences_a.is_empty() {
            "none".to_string()
        } else {
            format!("{} (unexpected!)", fences_a.len())
        }
    );
    println!(
        "  safe bound (computed from the timings): {bound} ms; the takeover may come only after \
         the lost room's last lease + fence deadline + watchdog have surely passed"
    );
    println!(
        "  takeover: {}{}",
        takeover
            .map(|t| format!("{} by {} at {}", t.text, t.who, at(Some(t.at))))
            .unwrap_or_else(|| "none".into()),
        takeover
            .map(|t| format!(
                " ({} the bound)",
                if t.at.duration_since(cut).as_millis() as u64 <= bound {
                    "within"
                } else {
                    "BEYOND"
                }
            ))
            .unwrap_or_default()
    );
    println!();

    println!("=== POWER BACK: room b. Agents b1 and b2 start again with fresh run dirs (as after a reboot).");
    println!("    Times are relative to the power coming back (P+0).");
    println!();
    tokio::time::sleep(Duration::from_millis(500)).await;
    lab.power_on("b").context("restarting room b")?;
    let back = Instant::now();
    let deadline = back + Duration::from_secs(60);
    let mut rejoined = false;
    loop {
        if lab.paired(&["a", "b"]) {
            rejoined = true;
            break;
        }
        let Some(ev) = lab
            .next_event(deadline.min(Instant::now() + Duration::from_millis(200)))
            .await
        else {
            if Instant::now() >= deadline {
                break;
            }
            continue;
        };
        println!(
            "  P+{:>6.3} s  {:<8} {}",
            ev.at.duration_since(back).as_secs_f64(),
            ev.who,
            ev.text
        );
    }
    let quiet = Instant::now() + Duration::from_millis(800);
    while let Some(ev) = lab.next_event(quiet).await {
        println!(
            "  P+{:>6.3} s  {:<8} {}",
            ev.at.duration_since(back).as_secs_f64(),
            ev.who,
            ev.text
        );
    }
    println!();
    if rejoined {
        println!(
            "Room b rejoined: all four nodes active, paired, with peer contact, {} after the power came back \
             (the witness waits rejoin_stable_ms = {} ms of stable contact, the fenced nodes at least \
             min_fenced_ms = {} ms).",
            secs(back.elapsed().as_millis() as f64),
            t.rejoin_stable_ms,
            t.min_fenced_ms
        );
    } else {
        println!(
            "Room b did not rejoin within 60 s; logs in {}",
            lab.dir().display()
        );
    }
    println!("Stopping every process and removing the temp dir.");
    lab.shutdown().await;
    Ok(())
}
