//! The VM lab's scenarios (see `witness_tests::vmlab`): the real agent in qemu VMs with the real
//! i6300esb watchdog and real DRBD 8.4 between the rooms, the real witness on the host side.
//!
//! Every test here is `#[ignore]`d for the workspace's `cargo test` (the guests need the release
//! agent: a debug build under TCG misses its own deadlines). `scripts/test.sh` then runs the
//! short slice in its `== vm lab` block (the watchdog reset after SIGKILL and the loss of room
//! b, with `AGENT_BIN` set to the release build); `scripts/vmlab.sh` runs them all. Without root
//! or without qemu a test prints `skipped: ...` and returns before doing anything (the
//! harness's convention).
//! The tests share two cores with everything else: they run one at a time (a lock).
use std::sync::Mutex;
use std::time::Duration;
use witness_tests::recorder::Event;
use witness_tests::vmlab::Lab;

/// One lab at a time: two TCG guests already fill the machine.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn last_before<'a>(ev: &'a [Event], node: &str, kind: &str, t: u64) -> Option<&'a Event> {
    ev.iter()
        .rev()
        .find(|e| e.node == node && e.kind == kind && e.t <= t)
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
#[ignore = "VM lab: scripts/test.sh runs it in its own block with the release agent (TCG)"]
fn agent_killed_on_active_node_the_real_watchdog_resets_it_within_w() {
    watchdog_resets_after("vm-s1-sigkill", "9");
}

#[test]
#[ignore = "VM lab, slow under TCG and outside the short slice: scripts/vmlab.sh runs it"]
fn agent_hung_on_active_node_the_real_watchdog_resets_it_within_w() {
    watchdog_resets_after("vm-s2-sigstop", "STOP");
}

#[test]
#[ignore = "VM lab: scripts/test.sh runs it in its own block with the release agent (TCG)"]
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
        .wait_console_after(
            "a1",
            "fence-peer r0 exit code",
            helper.t,
            Duration::from_secs(90),
        )
        .expect("the fence-peer handler returns");
    let first_ack = lab
        .wait_console_after("a1", "VMLAB ack 1001", takeover.t, Duration::from_secs(60))
        .expect("a1 writes after the takeover");
    let bound = lab.timings.worst_case_room_loss_takeover_ms();
    let exit = helper_exit
        .text
        .split("exit code ")
        .nth(1)
        .and_then(|c| c.split_whitespace().next())
        .and_then(|c| c.parse::<i64>().ok());
    println!(
        "[{name}] power off t={fault} ms; takeover on a1 +{} ms (worst case {bound} ms); \
         fence-peer handler called +{} ms, answered {exit:?} +{} ms; first write acknowledged \
         on a1 +{} ms",
        takeover.t - fault,
        helper.t - fault,
        helper_exit.t - fault,
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
    println!(
        "[{name}] {acked} acknowledged keys read back on a1, {} missing",
        missing.len()
    );
    assert!(missing.is_empty(), "acknowledged keys lost: {missing:?}");
    let verdict = witness_tests::check(&lab.rec.events(), &Lab::rooms());
    println!("[{name}] {}", verdict.line());
    assert!(verdict.ok(), "{}", verdict.line());
}

#[test]
#[ignore = "VM lab, slow under TCG and outside the short slice: scripts/vmlab.sh runs it"]
fn fencing_with_the_drbd_device_held_open_fails_the_demote_and_the_watchdog_resets_the_node() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let name = "vm-s3-held-open";
    let Some(mut lab) = Lab::start(name).expect("lab starts") else {
        return;
    };
    let w = lab.timings.watchdog_timeout_ms;
    // Something the fencing drivers do not know holds r0 open on the Primary b1.
    lab.ctl(
        "b1",
        "(setsid sleep 100000 </dev/drbd0 >/dev/null 2>&1 &)",
        Duration::from_secs(10),
    )
    .expect("holder starts");
    let fault = lab.fault("b1 isolated from the witness and room a, r0 held open");
    lab.isolate("tb1").expect("isolate b1");
    let fence = lab
        .wait_event("b1", "fence", fault, Duration::from_secs(60))
        .expect("b1 fences itself");
    let failed = lab
        .wait_console_after(
            "b1",
            "drbdadm secondary failed",
            fence.t,
            Duration::from_secs(30),
        )
        .expect("the demote fails: the device is held open");
    let reset = lab
        .wait_event("b1", "reset", fence.t, Duration::from_secs(60))
        .expect("the watchdog resets b1");
    let ev = lab.rec.events();
    let pet = last_before(&ev, "b1", "pet", reset.t).expect("b1 petted before");
    println!(
        "[{name}] isolated t={fault} ms; fencing began +{} ms; demote failed +{} ms ({}); card \
         fired +{} ms, {} ms after the last pet (W = {w} ms)",
        fence.t - fault,
        failed.t - fault,
        failed
            .text
            .split("drbdadm secondary failed")
            .nth(1)
            .unwrap_or("")
            .trim(),
        reset.t - fault,
        reset.t - pet.t
    );
    assert!(
        reset.t - pet.t <= w + 500,
        "reset more than W after the last pet"
    );
    // Room a takes over only once b1 is gone; its promote asks the fence-peer handler.
    let takeover = lab
        .wait_event("a1", "takeover", fault, Duration::from_secs(120))
        .expect("a1 takes over");
    println!("[{name}] a1 took over +{} ms", takeover.t - fault);
    let verdict = witness_tests::check(&lab.rec.events(), &Lab::rooms());
    println!("[{name}] {}", verdict.line());
    assert!(verdict.ok(), "{}", verdict.line());
}
