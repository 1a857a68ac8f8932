//! The VM lab's scenarios (see `witness_tests::vmlab`): the real agent in qemu VMs with the real
//! i6300esb watchdog and real DRBD 8.4 between the rooms, the real witness on the host side.
//!
//! `cargo test -p witness-tests --test vmlab` runs the short slice `scripts/test.sh` runs (the
//! watchdog reset after SIGKILL and the loss of room b); `scripts/vmlab.sh` runs every scenario
//! (`VMLAB_ALL=1`). Without root or without qemu each test prints `skipped: ...` and returns
//! before doing anything; the runner then counts it as passed, so the skip line is what tells.
//! The tests share two cores with everything else: they run one at a time (a lock).
use std::sync::Mutex;
use std::time::Duration;
use witness_tests::recorder::Event;
use witness_tests::vmlab::Lab;

/// One lab at a time: two TCG guests already fill the machine.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn all() -> bool {
    std::env::var_os("VMLAB_ALL").is_some()
}

fn last_before<'a>(ev: &'a [Event], node: &str, kind: &str, t: u64) -> Option<&'a Event> {
    ev.iter()
        .filter(|e| e.node == node && e.kind == kind && e.t <= t)
        .last()
}

/// Kills (or stops) the agent on the active node b1 and measures last pet -> card fired.
fn watchdog_resets_after(name: &str, signal: &str) {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let Some(mut lab) = Lab::start(name).expect("lab starts") else {
        return;
    };
    let w = lab.timings.watchdog_timeout_ms;
    let fault = lab.fault(&format!("kill -{signal} the agent on b1"));
    lab.ctl(
        "b1",
        &format!("kill -{signal} $(pidof witness-agent)"),
        Duration::from_secs(10),
    )
    .expect("control port");
    // The kill has happened by the time the control shell answers.
    let killed = lab.rec.now();
    let reset = lab
        .wait_event("b1", "reset", fault, Duration::from_secs(60))
        .expect("the watchdog resets b1");
    let ev = lab.rec.events();
    let pet = last_before(&ev, "b1", "pet", reset.t).expect("b1 petted before");
    let since_pet = reset.t - pet.t;
    println!(
        "[{name}] watchdog: last pet t={} ms, kill sent t={fault} ms, card fired t={} \
         ms: {since_pet} ms after the last pet (W = {w} ms)",
        pet.t, reset.t
    );
    // The pet line reaches the host after the pet (console latency), so the measured interval
    // can only be shorter than the true one, never longer: W plus the card's own rounding
    // (the i6300esb counts in 1 kHz ticks through two stages) is the bound we hold it to.
    assert!(
        since_pet <= w + 500,
        "b1 was reset {since_pet} ms after its last pet, more than W = {w} ms (+500 ms)"
    );
    assert!(
        pet.t <= killed,
        "b1 petted after its agent was sent SIG{signal} (last pet t={} ms, kill done t={killed} ms)",
        pet.t
    );
    // The node boots again; its fresh agent comes back.
    lab.wait_event("b1", "boot", reset.t, Duration::from_secs(120))
        .expect("b1 boots again after the reset");
    let verdict = witness_tests::check(&lab.rec.events(), &Lab::rooms());
    println!("[{name}] {}", verdict.line());
    assert!(verdict.ok(), "{}", verdict.line());
}

#[test]
fn agent_killed_on_active_node_the_real_watchdog_resets_it_within_w() {
    watchdog_resets_after("vm-s1-sigkill", "9");
}

#[test]
fn agent_hung_on_active_node_the_real_watchdog_resets_it_within_w() {
    if !all() {
        println!("skipped: the SIGSTOP scenario runs in scripts/vmlab.sh (VMLAB_ALL=1)");
        return;
    }
    watchdog_resets_after("vm-s2-sigstop", "STOP");
}

#[test]
fn room_b_powered_off_while_primary_room_a_takes_over_after_the_bound_and_keeps_every_key() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let name = "vm-s4-room-loss";
    let Some(mut lab) = Lab::start(name).expect("lab starts") else {
        return;
    };
    // The workload of room b: numbered keys on DRBD r0, each acknowledged once durable.
    lab.ctl(
        "b1",
        "(setsid vmlab-writer 1 </dev/null >/dev/null 2>&1 &)",
        Duration::from_secs(10),
    )
    .expect("writer starts");
    lab.wait_console("b1", "VMLAB ack 5", Duration::from_secs(60))
        .expect("b1 acknowledges writes");
    let fault = lab.power_off("b1").expect("power off b1");
    lab.fault("b1 powered off while Primary");
    let takeover = lab
        .wait_event("a1", "takeover", fault, Duration::from_secs(120))
        .expect("a1 takes over");
    let helper = lab
        .wait_event("a1", "fence_peer", takeover.t, Duration::from_secs(60))
        .expect("DRBD asks the fence-peer handler on a1");
    let helper_exit = lab
        .rec
        .events()
        .into_iter()
        .filter(|e| e.node == "a1" && e.kind == "fence_peer" && e.data["exit"].is_i64())
        .last();
    let first_ack = lab
        .wait_console_after("a1", "VMLAB ack 1001", takeover.t, Duration::from_secs(60))
        .expect("a1 writes after the takeover");
    let bound = lab.timings.worst_case_room_loss_takeover_ms();
    let exit = helper_exit.as_ref().and_then(|e| e.data["exit"].as_i64());
    println!(
        "[{name}] power off t={fault} ms; takeover on a1 +{} ms (worst case {bound} ms); \
         fence-peer handler called +{} ms, exit {exit:?}; first write acknowledged on a1 +{} ms",
        takeover.t - fault,
        helper.t - fault,
        first_ack.t - fault
    );
    assert_eq!(exit, Some(7), "the handler answered 7 (peer fenced)");
    assert!(
        takeover.t - fault >= lab.timings.node_takeover_wait_ms(),
        "a1 took over {} ms after the power-off, before its own wait of {} ms",
        takeover.t - fault,
        lab.timings.node_takeover_wait_ms()
    );
    let role = lab
        .ctl("a1", "drbdadm role r0", Duration::from_secs(10))
        .expect("role");
    assert!(role.starts_with("Primary"), "a1 is Primary: {role}");
    let missing = lab.missing_keys("a1").expect("read back");
    let acked = lab.acked().len();
    println!("[{name}] {acked} acknowledged keys read back on a1, {} missing", missing.len());
    assert!(missing.is_empty(), "acknowledged keys lost: {missing:?}");
    let verdict = witness_tests::check(&lab.rec.events(), &Lab::rooms());
    println!("[{name}] {}", verdict.line());
    assert!(verdict.ok(), "{}", verdict.line());
}
