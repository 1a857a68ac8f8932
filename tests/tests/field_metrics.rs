//! The measurements behind the field alerts of deploy/monitoring, taken by the real agents in the
//! namespace harness: the clock-rate skew against the witness (`agent_clock_rate_skew_ratio`,
//! alert `AgentClockRateSkewBeyondBound`) with one node's clock really running fast under
//! libfaketime, and the peer round trip (`agent_peer_rtt_seconds`, alert
//! `AgentPeerRttNearHeartbeat`). Needs root (the harness's namespaces): marked ignored with that
//! reason; run anyway without it, it prints `skipped: ...` and returns.
use anyhow::{ensure, Context, Result};
use std::time::Duration;
use witness_tests::{Cluster, Spec};

/// The value of an unlabelled metric line `name value` on a /metrics page.
fn value(page: &str, name: &str) -> Result<f64> {
    page.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .with_context(|| format!("{name} not on the page"))?
        .trim()
        .parse()
        .with_context(|| format!("{name} is not a number"))
}

#[test]
#[ignore = "needs root (the harness's namespaces); scripts/test.sh runs it as root"]
fn the_agents_measure_clock_rate_skew_and_peer_round_trips() -> Result<()> {
    let mut spec = Spec::new("fieldm", 71);
    // a1's clocks run 3 % fast (beyond ρ = 1 %): over a second of true time it counts 1030 ms,
    // the witness 1000 ms, so witness/ours − 1 = 1/1.03 − 1 = −2.9 %.
    spec.faketime.insert("a1".into(), "+0 x1.03".into());
    let h = spec.timings.heartbeat_interval_ms as f64 / 1000.0;
    let rho = spec.timings.drift_ppm as f64 / 1e6;
    let Some(c) = Cluster::start(spec)? else {
        return Ok(());
    };
    c.wait_all_active(30_000)?;
    // One window of 60 s of the agent's own clock, plus renewals to close it.
    std::thread::sleep(Duration::from_secs(68));
    let a1 = c.agent_metrics("a1")?;
    let b1 = c.agent_metrics("b1")?;
    let (skew_a1, skew_b1) = (
        value(&a1, "agent_clock_rate_skew_ratio")?,
        value(&b1, "agent_clock_rate_skew_ratio")?,
    );
    println!("clock-rate skew against the witness: a1 (x1.03) {skew_a1:+.5}, b1 {skew_b1:+.5}");
    ensure!(
        (skew_a1 - (1.0 / 1.03 - 1.0)).abs() < 0.004,
        "a1 runs at x1.03: skew {skew_a1}, expected about -0.029"
    );
    ensure!(skew_b1.abs() < 0.002, "b1's clock is true: skew {skew_b1}");
    // What the alert compares: beyond ρ on a1 only.
    ensure!(value(&a1, "agent_clock_drift_bound_ratio")? == rho);
    ensure!(skew_a1.abs() > rho && skew_b1.abs() <= rho);

    let count = value(&b1, "agent_peer_rtt_seconds_count")?;
    let sum = value(&b1, "agent_peer_rtt_seconds_sum")?;
    println!(
        "b1's pings: {count} answered, mean round trip {:.2} ms (H = {} ms)",
        sum / count * 1000.0,
        h * 1000.0
    );
    ensure!(
        sum / count < h / 2.0,
        "on an undisturbed link the mean round trip is far below H/2"
    );
    ensure!(
        count > 100.0,
        "b1 pings two peers every H for a minute: {count}"
    );
    ensure!(
        value(&b1, "agent_heartbeat_interval_seconds")? == h,
        "the heartbeat interval the RTT alert compares with"
    );
    let verdict = c.verdict();
    ensure!(verdict.ok(), "checker: {verdict:?}");
    Ok(())
}
