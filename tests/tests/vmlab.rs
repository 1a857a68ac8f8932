//! The VM lab's scenarios (see `witness_tests::vmlab`): the real agent in qemu VMs with the real
//! i6300esb watchdog and real DRBD 8.4 between the rooms, the real witness on the host side.
//!
//! Every test here is `#[ignore]`d for the workspace's `cargo test` (the guests need the release
//! agent: a debug build under TCG misses its own deadlines). `scripts/test.sh` then runs the
//! short slice in its `== vm lab` block (the watchdog reset after SIGKILL and the loss of room
//! b, with `AGENT_BIN` set to the release build); `scripts/vmlab.sh` runs them all and writes
//! their rows into docs/scenarios.md. Without root or without qemu a test prints `skipped: ...`
//! and returns before doing anything (the harness's convention), writing no row.
//!
//! Each scenario writes its row (`target/vmlab-report/<id>.json`) from what it measured, also
//! when an assertion failed (as FAIL, naming it), and only then fails the test.
//! The tests share two cores with everything else: they run one at a time (a lock).
use std::sync::Mutex;
use std::time::{Duration, Instant};
use witness_tests::recorder::Event;
use witness_tests::vmlab::{Lab, Line, Options, VmRow};

/// One lab at a time: two TCG guests already fill the machine.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn last_before<'a>(ev: &'a [Event], node: &str, kind: &str, t: u64) -> Option<&'a Event> {
    ev.iter()
        .rev()
        .find(|e| e.node == node && e.kind == kind && e.t <= t)
}

/// What a scenario found: its figures (the row's outcome) and the assertions that failed.
#[derive(Default)]
struct Findings {
    outcome: Vec<String>,
    failures: Vec<String>,
}

impl Findings {
    fn note(&mut self, name: &str, line: String) {
        println!("[{name}] {line}");
        self.outcome.push(line);
    }
    fn require(&mut self, ok: bool, what: String) {
        if !ok {
            self.failures.push(what);
        }
    }
}

/// Starts a lab with `opts`, runs `body`, runs the checker over every
/// event, writes the row and then fails the test if anything did not hold. A lab that cannot
/// run here (the skip line is printed) writes no row.
fn scenario(
    id: &str,
    title: &str,
    name: &str,
    opts: Options,
    body: impl FnOnce(&mut Lab, &mut Findings) -> anyhow::Result<()>,
) {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let mut row = VmRow::new(id, title);
    let mut f = Findings::default();
    let mut lab = match Lab::start_with(name, opts) {
        Ok(Some(lab)) => lab,
        Ok(None) => return,
        Err(e) => {
            f.failures.push(format!("the lab did not come up: {e:#}"));
            row.outcome = "-".into();
            let _ = row.write(&f.failures);
            panic!("{}", f.failures.join("; "));
        }
    };
    if let Err(e) = body(&mut lab, &mut f) {
        f.failures.push(format!("{e:#}"));
    }
    let verdict = witness_tests::check(&lab.rec.events(), &Lab::rooms());
    println!("[{name}] {}", verdict.line());
    f.require(verdict.ok(), verdict.line());
    row.outcome = f.outcome.join("; ");
    row.checker = verdict.line();
    if let Err(e) = row.write(&f.failures) {
        println!("[{name}] cannot write its row: {e:#}");
    }
    assert!(f.failures.is_empty(), "{}", f.failures.join("; "));
}

/// Kills (or stops) the agent on the active node b1 and measures last pet -> card fired.
fn watchdog_resets_after(lab: &mut Lab, f: &mut Findings, signal: &str) -> anyhow::Result<()> {
    let name = lab.name.clone();
    let w = lab.timings.watchdog_timeout_ms;
    let fault = lab.fault(&format!("kill -{signal} the agent on b1"));
    lab.ctl(
        "b1",
        &format!("kill -{signal} $(pidof witness-agent)"),
        Duration::from_secs(10),
    )?;
    // The kill has happened by the time the control shell answers.
    let killed = lab.rec.now();
    let reset = lab.wait_event("b1", "reset", fault, Duration::from_secs(60))?;
    let ev = lab.rec.events();
    let pet = last_before(&ev, "b1", "pet", reset.t)
        .ok_or_else(|| anyhow::anyhow!("b1 never petted before the reset"))?;
    let since_pet = reset.t - pet.t;
    f.note(
        &name,
        format!(
            "SIG{signal} sent at t={fault} ms; the card fired **{since_pet} ms after the last \
             pet** (W = {w} ms) and qemu reset b1"
        ),
    );
    // The pet line reaches the host after the pet (console latency), so the measured interval
    // can only be shorter than the true one, never longer: W plus the card's own rounding
    // (the i6300esb counts in 1 kHz ticks through two stages) is the bound we hold it to.
    f.require(
        since_pet <= w + 500,
        format!("b1 was reset {since_pet} ms after its last pet, more than W = {w} ms (+500 ms)"),
    );
    f.require(
        pet.t <= killed,
        format!(
            "b1 petted after its agent was sent SIG{signal} (last pet t={} ms, kill done \
             t={killed} ms)",
            pet.t
        ),
    );
    // The node boots again; its fresh agent comes back.
    let boot = lab.wait_event("b1", "boot", reset.t, Duration::from_secs(180))?;
    f.note(
        &name,
        format!("b1 booted again {} ms after the reset", boot.t - reset.t),
    );
    Ok(())
}

#[test]
#[ignore = "VM lab: scripts/test.sh runs it in its own block with the release agent (TCG)"]
fn agent_killed_on_active_node_the_real_watchdog_resets_it_within_w() {
    scenario(
        "vm1",
        "agent `kill -9` on the active node b1",
        "vm-s1-sigkill",
        Options::default(),
        |lab, f| watchdog_resets_after(lab, f, "9"),
    );
}

#[test]
#[ignore = "VM lab, slow under TCG and outside the short slice: scripts/vmlab.sh runs it"]
fn agent_hung_on_active_node_the_real_watchdog_resets_it_within_w() {
    scenario(
        "vm2",
        "agent hung (`SIGSTOP`) on the active node b1",
        "vm-s2-sigstop",
        Options::default(),
        |lab, f| watchdog_resets_after(lab, f, "STOP"),
    );
}

/// The exit code in DRBD's "helper command: ... fence-peer r0 exit code N" line.
fn exit_code(l: &Line) -> Option<i64> {
    l.text
        .split("exit code ")
        .nth(1)
        .and_then(|c| c.split_whitespace().next())
        .and_then(|c| c.parse::<i64>().ok())
}

/// Reads every acknowledged key back on `node`, into the findings.
fn keys_read_back(lab: &mut Lab, f: &mut Findings, node: &str) -> anyhow::Result<()> {
    let name = lab.name.clone();
    let missing = lab.missing_keys(node)?;
    let acked = lab.acked().len();
    f.note(
        &name,
        format!(
            "**{} of {acked} acknowledged keys read back on {node}**",
            acked - missing.len()
        ),
    );
    f.require(acked > 0, "no key was acknowledged".into());
    f.require(
        missing.is_empty(),
        format!("acknowledged keys lost: {missing:?}"),
    );
    Ok(())
}

#[test]
#[ignore = "VM lab: scripts/test.sh runs it in its own block with the release agent (TCG)"]
fn room_b_powered_off_while_primary_room_a_takes_over_after_the_bound_and_keeps_every_key() {
    scenario(
        "vm4",
        "room b's VM powered off while Primary",
        "vm-s4-room-loss",
        Options::default(),
        room_loss,
    );
}

fn room_loss(lab: &mut Lab, f: &mut Findings) -> anyhow::Result<()> {
    let name = lab.name.clone();
    // The workload of room b: numbered keys on DRBD r0, each acknowledged once durable.
    lab.ctl(
        "b1",
        "(setsid vmlab-writer 1 </dev/null >/dev/null 2>&1 &)",
        Duration::from_secs(10),
    )?;
    lab.wait_console("b1", "VMLAB ack 5", Duration::from_secs(60))?;
    let fault = lab.power_off("b1")?;
    lab.fault("b1 powered off while Primary");
    let takeover = lab.wait_event("a1", "takeover", fault, Duration::from_secs(120))?;
    let helper = lab.wait_event("a1", "fence_peer", takeover.t, Duration::from_secs(60))?;
    let helper_exit = lab.wait_console_after(
        "a1",
        "fence-peer r0 exit code",
        helper.t,
        Duration::from_secs(90),
    )?;
    let first_ack =
        lab.wait_console_after("a1", "VMLAB ack 1001", takeover.t, Duration::from_secs(60))?;
    let bound = lab.timings.worst_case_room_loss_takeover_ms();
    let wait = lab.timings.node_takeover_wait_ms();
    let exit = exit_code(&helper_exit);
    f.note(
        &name,
        format!(
            "a1 took over **{} ms** after the power-off (its own wait {wait} ms, worst case \
             {bound} ms); its promote made DRBD call the fence-peer handler (+{} ms), which \
             answered **{}** (+{} ms); IO on r0 resumed on a1, first write acknowledged +{} ms",
            takeover.t - fault,
            helper.t - fault,
            exit.map(|e| e.to_string()).unwrap_or("?".into()),
            helper_exit.t - fault,
            first_ack.t - fault
        ),
    );
    f.require(
        exit == Some(7),
        format!("the handler answered {exit:?}, not 7 (peer fenced)"),
    );
    f.require(
        takeover.t - fault >= wait,
        format!(
            "a1 took over {} ms after the power-off, before its own wait of {wait} ms",
            takeover.t - fault
        ),
    );
    let role = lab.ctl("a1", "drbdadm role r0", Duration::from_secs(10))?;
    f.require(
        role.starts_with("Primary"),
        format!("a1 is not Primary: {role}"),
    );
    keys_read_back(lab, f, "a1")
}

#[test]
#[ignore = "VM lab, slow under TCG and outside the short slice: scripts/vmlab.sh runs it"]
fn fencing_with_the_drbd_device_held_open_fails_the_demote_and_the_watchdog_resets_the_node() {
    scenario(
        "vm3",
        "fencing b1 with `r0` held open (b1 isolated from the witness and room a)",
        "vm-s3-held-open",
        Options::default(),
        held_open,
    );
}

fn held_open(lab: &mut Lab, f: &mut Findings) -> anyhow::Result<()> {
    let name = lab.name.clone();
    let w = lab.timings.watchdog_timeout_ms;
    // Something the fencing drivers do not know holds r0 open on the Primary b1.
    lab.ctl(
        "b1",
        "(setsid sleep 100000 </dev/drbd0 >/dev/null 2>&1 &)",
        Duration::from_secs(10),
    )?;
    let fault = lab.fault("b1 isolated from the witness and room a, r0 held open");
    lab.isolate("tb1")?;
    let fence = lab.wait_event("b1", "fence", fault, Duration::from_secs(60))?;
    let failed = lab.wait_console_after(
        "b1",
        "drbdadm secondary failed",
        fence.t,
        Duration::from_secs(30),
    )?;
    let reset = lab.wait_event("b1", "reset", fence.t, Duration::from_secs(60))?;
    let ev = lab.rec.events();
    let pet = last_before(&ev, "b1", "pet", reset.t)
        .ok_or_else(|| anyhow::anyhow!("b1 never petted before the reset"))?;
    // The kernel's reason, from the console (drbd-utils print warnings around it).
    let held = lab
        .console("b1")
        .into_iter()
        .find(|l| l.t >= fence.t && l.text.contains("held open by someone"));
    let cause = held
        .as_ref()
        .and_then(|l| {
            l.text
                .find("State change failed")
                .map(|i| l.text[i..].to_string())
        })
        .unwrap_or_default();
    f.require(
        held.is_some(),
        format!(
            "the demote failed, but not because r0 is held open: {}",
            failed.text
        ),
    );
    f.note(
        &name,
        format!(
            "fencing began +{} ms after the isolation; the demote failed +{} ms (\"{cause}\"); \
             petting stopped and the card fired +{} ms, **{} ms after the last pet** (W = {w} ms)",
            fence.t - fault,
            failed.t - fault,
            reset.t - fault,
            reset.t - pet.t
        ),
    );
    f.require(
        reset.t - pet.t <= w + 500,
        format!(
            "reset {} ms after the last pet, more than W = {w} ms (+500 ms)",
            reset.t - pet.t
        ),
    );
    // Room a takes over only once b1 is gone; its promote asks the fence-peer handler.
    let takeover = lab.wait_event("a1", "takeover", fault, Duration::from_secs(120))?;
    let wait = lab.timings.node_takeover_wait_ms();
    f.note(
        &name,
        format!(
            "a1 took over +{} ms (its own wait {wait} ms)",
            takeover.t - fault
        ),
    );
    f.require(
        takeover.t - fault >= wait,
        format!(
            "a1 took over {} ms after the isolation, before its own wait of {wait} ms",
            takeover.t - fault
        ),
    );
    Ok(())
}

#[test]
#[ignore = "VM lab, slow under TCG and outside the short slice: scripts/vmlab.sh runs it"]
fn link_cut_between_rooms_the_loser_demotes_the_winner_resumes_after_the_bound_and_heal_resyncs() {
    // Room b runs r0 and is the preferred room: it wins the split, room a loses. (Without a
    // preference the tie goes to room a, whose node would then fence nothing and take r0 over:
    // the power-off scenario covers that path.)
    scenario(
        "vm5",
        "link between the rooms cut, both reach the witness (room b preferred), then healed",
        "vm-s5-link-cut",
        Options {
            preferred_room: Some("b"),
            ..Options::default()
        },
        link_cut_and_heal,
    );
}

/// Polls `cmd` on `node` until its output contains `what` (bounded by `within`).
fn poll_ctl(lab: &mut Lab, node: &str, cmd: &str, what: &str, within: Duration) -> bool {
    let until = Instant::now() + within;
    while Instant::now() < until {
        if let Ok(out) = lab.ctl(node, cmd, Duration::from_secs(20)) {
            if out.contains(what) {
                return true;
            }
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    false
}

fn link_cut_and_heal(lab: &mut Lab, f: &mut Findings) -> anyhow::Result<()> {
    let name = lab.name.clone();
    lab.ctl(
        "b1",
        "(setsid vmlab-writer 1 </dev/null >/dev/null 2>&1 &)",
        Duration::from_secs(10),
    )?;
    lab.wait_console("b1", "VMLAB ack 5", Duration::from_secs(60))?;
    let cut = lab.fault("link between the rooms cut; both still reach the witness");
    lab.cut_rooms()?;

    // The loser: a1 fences; its DRBD step demotes r0 and reads the role back from the kernel.
    let fence = lab.wait_event("a1", "fence", cut, Duration::from_secs(60))?;
    let demoted = lab.wait_console_after(
        "a1",
        "r0: secondary, verified",
        fence.t,
        Duration::from_secs(30),
    )?;
    let role_a = lab.ctl("a1", "drbdadm role r0", Duration::from_secs(10))?;
    f.note(
        &name,
        format!(
            "a1 (loser) began fencing +{} ms after the cut; its drbd step demoted r0 +{} ms \
             (role read back: {})",
            fence.t - cut,
            demoted.t - cut,
            role_a.trim()
        ),
    );
    f.require(
        role_a.starts_with("Secondary"),
        format!("a1 still holds r0: {role_a}"),
    );

    // The winner: DRBD froze b1's IO when it lost its peer and asked the fence-peer handler,
    // which answers 7 (IO resumes) only once b1 has taken over, after the bound.
    let takeover = lab.wait_event("b1", "takeover", cut, Duration::from_secs(120))?;
    let call = lab.wait_console_after(
        "b1",
        "helper command: /sbin/drbdadm fence-peer",
        cut,
        Duration::from_secs(60),
    )?;
    let answer = lab.wait_console_after(
        "b1",
        "fence-peer r0 exit code",
        call.t,
        Duration::from_secs(90),
    )?;
    let exit = exit_code(&answer);
    let resumed = lab.wait_console_after("b1", "VMLAB ack", answer.t, Duration::from_secs(60))?;
    let console = lab.console("b1");
    let acked_while_frozen: Vec<&Line> = console
        .iter()
        .filter(|l| l.t >= call.t && l.t <= answer.t && l.text.contains("VMLAB ack"))
        .collect();
    let last_before_freeze = console
        .iter()
        .rfind(|l| l.t <= call.t && l.text.contains("VMLAB ack"))
        .map(|l| l.t)
        .unwrap_or(cut);
    let wait = lab.timings.node_takeover_wait_ms();
    f.note(
        &name,
        format!(
            "b1 (winner): DRBD froze IO and called the fence-peer handler +{} ms; b1 took over \
             **+{} ms** (its own wait {wait} ms); the handler answered **{}** +{} ms; writes \
             resumed +{} ms: **IO frozen {} ms** (last write acknowledged before the freeze to \
             the first after)",
            call.t - cut,
            takeover.t - cut,
            exit.map(|e| e.to_string()).unwrap_or("?".into()),
            answer.t - cut,
            resumed.t - cut,
            resumed.t - last_before_freeze
        ),
    );
    f.require(
        exit == Some(7),
        format!("b1's handler answered {exit:?}, not 7 (peer fenced)"),
    );
    f.require(
        takeover.t - cut >= wait,
        format!(
            "b1 took over {} ms after the cut, before its own wait of {wait} ms",
            takeover.t - cut
        ),
    );
    f.require(
        answer.t >= takeover.t,
        format!(
            "b1's handler answered at t={} ms, before b1 took over (t={} ms)",
            answer.t, takeover.t
        ),
    );
    f.require(
        acked_while_frozen.is_empty(),
        format!("writes acknowledged on b1 while its IO was frozen: {acked_while_frozen:?}"),
    );

    // Heal (scenario 6): a1 rejoins per the protocol, DRBD reconnects and resyncs b1 -> a1
    // with no split brain (a1 never wrote), and both rooms are paired again.
    let heal = lab.fault("link between the rooms restored");
    lab.heal()?;
    let release = lab.wait_event("b1", "release", heal, Duration::from_secs(180))?;
    let active = lab.wait_phase("a1", "active", Duration::from_secs(180))?;
    let synced = poll_ctl(
        lab,
        "b1",
        "cat /proc/drbd",
        "cs:Connected ro:Primary/Secondary ds:UpToDate/UpToDate",
        Duration::from_secs(180),
    );
    let synced_t = lab.rec.now();
    let resync_done = lab
        .console("a1")
        .into_iter()
        .find(|l| l.t >= heal && l.text.contains("Resync done"))
        .map(|l| format!("+{} ms", l.t - heal))
        .unwrap_or("not logged".into());
    let split_brain: Vec<String> = ["a1", "b1"]
        .iter()
        .flat_map(|n| {
            lab.console(n)
                .into_iter()
                .filter(|l| l.t >= cut && l.text.contains("Split-Brain"))
                .map(move |l| format!("{n}: {}", l.text))
        })
        .collect();
    f.require(
        active > heal,
        format!("a1's last phase `active` (t={active} ms) is from before the heal"),
    );
    f.require(
        synced,
        "DRBD did not come back Connected and UpToDate/UpToDate within 180 s".into(),
    );
    f.require(
        split_brain.is_empty(),
        format!("DRBD detected a split brain: {split_brain:?}"),
    );
    // No divergent writes: with the writer stopped, both backing disks hold the same data.
    lab.ctl(
        "b1",
        "killall vmlab-writer; sleep 1; sync",
        Duration::from_secs(30),
    )?;
    let same = poll_ctl(
        lab,
        "b1",
        "cat /proc/drbd",
        "ds:UpToDate/UpToDate",
        Duration::from_secs(60),
    );
    let digest = "sync; echo 3 > /proc/sys/vm/drop_caches; \
                  dd if=/dev/vda bs=4096 count=1792 2>/dev/null | md5sum";
    let da = lab.ctl("a1", digest, Duration::from_secs(60))?;
    let db = lab.ctl("b1", digest, Duration::from_secs(60))?;
    f.require(
        same && !da.trim().is_empty() && da.trim() == db.trim(),
        format!(
            "the disks differ after the resync (first 7 MiB of /dev/vda: a1 {} b1 {})",
            da.trim(),
            db.trim()
        ),
    );
    f.note(
        &name,
        format!(
            "healed: b1 released its takeover +{} ms, a1 active again (paired) +{} ms; DRBD \
             resynced to a1 (resync done {resync_done}; Connected UpToDate/UpToDate seen by \
             +{} ms); **no split brain**, both disks identical (md5 of the data area)",
            release.t - heal,
            active.saturating_sub(heal),
            synced_t - heal
        ),
    );
    keys_read_back(lab, f, "b1")
}

#[test]
#[ignore = "VM lab, slow under TCG and outside the short slice: scripts/vmlab.sh runs it"]
fn room_b_powered_off_while_dqlite_runs_there_room_a_starts_it_after_the_bound_with_every_key() {
    scenario(
        "vm7",
        "room b's VM powered off while it runs Dqlite (on ext4 on r0), written from the host",
        "vm-s7-dqlite",
        Options {
            dqlite: true,
            ..Options::default()
        },
        dqlite_room_loss,
    );
}

fn dqlite_room_loss(lab: &mut Lab, f: &mut Findings) -> anyhow::Result<()> {
    let name = lab.name.clone();
    lab.start_host_writer(1)?;
    let started = lab.rec.now();
    let wait_acks = Instant::now() + Duration::from_secs(120);
    while lab.acked().len() < 20 && Instant::now() < wait_acks {
        std::thread::sleep(Duration::from_millis(200));
    }
    anyhow::ensure!(
        lab.acked().len() >= 20,
        "Dqlite on b1 acknowledged {} keys within 120 s",
        lab.acked().len()
    );
    let fault = lab.power_off("b1")?;
    lab.fault("b1 powered off while it runs Dqlite");
    let takeover = lab.wait_event("a1", "takeover", fault, Duration::from_secs(120))?;
    let helper_exit = lab.wait_console_after(
        "a1",
        "fence-peer r0 exit code",
        takeover.t,
        Duration::from_secs(90),
    )?;
    let dq = lab.wait_console_after(
        "a1",
        "VMLAB dqlite started",
        takeover.t,
        Duration::from_secs(90),
    )?;
    let until = Instant::now() + Duration::from_secs(120);
    let first_ack = loop {
        let a = lab
            .rec
            .events()
            .into_iter()
            .find(|e| e.kind == "ack" && e.t > dq.t);
        if let Some(a) = a {
            break a;
        }
        anyhow::ensure!(
            Instant::now() < until,
            "no key acknowledged by Dqlite on a1 within 120 s of its start"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    // A few more keys through the survivor's Dqlite, then the writer stops.
    let more_until = Instant::now() + Duration::from_secs(60);
    let count_after = |lab: &Lab| {
        lab.rec
            .events()
            .iter()
            .filter(|e| e.kind == "ack" && e.t > dq.t)
            .count()
    };
    while count_after(lab) < 10 && Instant::now() < more_until {
        std::thread::sleep(Duration::from_millis(200));
    }
    lab.stop_host_writer();
    let after = count_after(lab);
    let before = lab
        .rec
        .events()
        .iter()
        .filter(|e| e.kind == "ack" && e.t >= started && e.t <= fault)
        .count();
    let wait = lab.timings.node_takeover_wait_ms();
    let exit = exit_code(&helper_exit);
    f.note(
        &name,
        format!(
            "{before} keys acknowledged by Dqlite on b1 before the power-off; a1 took over \
             **{} ms** after it (its own wait {wait} ms); the fence-peer handler answered \
             **{}** +{} ms; Dqlite started on a1 (r0 promoted and mounted, address moved) \
             +{} ms; first key acknowledged by it +{} ms; {after} more after it",
            takeover.t - fault,
            exit.map(|e| e.to_string()).unwrap_or("?".into()),
            helper_exit.t - fault,
            dq.t - fault,
            first_ack.t - fault
        ),
    );
    f.require(
        exit == Some(7),
        format!("the handler answered {exit:?}, not 7 (peer fenced)"),
    );
    f.require(
        takeover.t - fault >= wait,
        format!(
            "a1 took over {} ms after the power-off, before its own wait of {wait} ms",
            takeover.t - fault
        ),
    );
    keys_read_back(lab, f, "a1")
}
