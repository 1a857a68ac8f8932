//! The drivers one by one, against the same stand-ins, plus the DRBD fence-peer handler's exit
//! codes and a check of our drbdadm command lines against the real drbd-utils.
// Test doubles and stand-ins run on threads and real processes and measure real wall time:
// the shell's ban on std Instants and blocking locks (agent/clippy.toml) does not apply here.
#![allow(clippy::disallowed_types, clippy::disallowed_methods)]
use crate::support::*;
use agent::config::{DrbdConfig, VmConfig};
use agent::drivers::drbd::{role_args, secondary_args, DrbdDriver};
use agent::drivers::taint::TaintDriver;
use agent::drivers::vm::VmDriver;
use agent::drivers::{run_one, FenceContext, FenceDriver, Outcome};
use agent::kube::Kube;
use std::time::{Duration, Instant};

fn ctx(epoch: u64) -> FenceContext {
    FenceContext {
        epoch: proto::Epoch(epoch),
        reason: "test".into(),
    }
}

fn kube_at(url: &str) -> Kube {
    Kube::new(&agent::config::KubernetesConfig {
        enabled: true,
        api_url: url.into(),
        fence_taint_key: "witness.dev/fenced".into(),
        deadline_ms: 500,
        ..Default::default()
    })
}

#[test]
fn our_drbd_command_lines_are_accepted_by_the_real_drbdadm() {
    let drbdadm = std::path::Path::new("/usr/sbin/drbdadm");
    if !drbdadm.exists() {
        println!("skipped: drbdadm not installed (CI installs drbd-utils)");
        return;
    }
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .unwrap()
        .trim()
        .to_string();
    let dir = tempfile::tempdir().unwrap();
    let res = dir.path().join("r0.res");
    std::fs::write(
        &res,
        format!(
            "resource r0 {{\n  device /dev/drbd0;\n  disk /dev/vdb;\n  meta-disk internal;\n  \
             on {host} {{ address 127.0.0.1:7789; node-id 0; }}\n  \
             on witness-test-peer {{ address 127.0.0.2:7789; node-id 1; }}\n}}\n"
        ),
    )
    .unwrap();
    // (our arguments, what drbdadm must turn them into)
    let cases = [
        (secondary_args("r0", false), "drbdsetup secondary r0"),
        (secondary_args("r0", true), "drbdsetup secondary r0 --force"),
        (secondary_args("all", false), "drbdsetup secondary r0"),
        (
            secondary_args("all", true),
            "drbdsetup secondary r0 --force",
        ),
        (role_args("r0"), "drbdsetup role r0"),
        (role_args("all"), "drbdsetup role r0"),
    ];
    for (args, expect) in cases {
        let out = std::process::Command::new(drbdadm)
            .arg("-c")
            .arg(&res)
            .arg("-d")
            .args(&args)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "drbdadm {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        // drbdadm names drbdsetup by full path when it found it through its own search path.
        let normalized = |l: &str| {
            let l = l.trim();
            match l.split_once(' ') {
                Some((prog, rest)) => format!("{} {rest}", prog.rsplit('/').next().unwrap_or(prog)),
                None => l.to_string(),
            }
        };
        assert!(
            stdout.lines().any(|l| normalized(l) == expect),
            "{args:?} -> {stdout}"
        );
    }
}

#[tokio::test]
async fn drbd_demote_forces_when_the_device_is_held_open() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("log");
    let prog = dir.path().join("drbdadm");
    // The first plain `secondary` fails as DRBD does when a process holds the device open.
    script(
        &prog,
        &format!(
            "echo \"$*\" >> {log}\ncase \"$*\" in\n  'secondary r0') echo 'r0: State change failed: (-12) Device is held open by someone' >&2; exit 11;;\n  role*) echo Secondary;;\nesac\nexit 0",
            log = log.display()
        ),
    );
    let d = DrbdDriver {
        cfg: DrbdConfig {
            enabled: true,
            drbdadm: prog.display().to_string(),
            resources: vec!["r0".into()],
            deadline_ms: 1000,
        },
    };
    let r = run_one(&d, &ctx(1), false).await;
    assert_eq!(r.outcome, Outcome::Ok, "{}", r.detail);
    assert_eq!(read(&log), "secondary r0\nsecondary --force r0\nrole r0\n");
    // A resource that stays Primary is a failure, not a success.
    script(&prog, "case \"$1\" in role) echo Primary;; esac\nexit 0");
    let r = run_one(&d, &ctx(1), false).await;
    assert_eq!(r.outcome, Outcome::Failed, "{}", r.detail);
}

#[tokio::test]
async fn taint_patches_are_retried_after_conflicts() {
    let k = KubeDouble::start().await;
    {
        let mut w = k.world.lock().unwrap();
        w.add_node("node-a1");
        w.conflicts = 2;
    }
    let d = TaintDriver {
        kube: kube_at(&k.url()),
        node: "node-a1".into(),
        key: "witness.dev/fenced".into(),
        deadline: Duration::from_secs(2),
        rejoin: agent::takeover::RejoinGate::new(Duration::ZERO),
    };
    let r = run_one(&d, &ctx(7), false).await;
    assert_eq!(r.outcome, Outcome::Ok, "{}", r.detail);
    let patches = k.calls().iter().filter(|c| c.method == "PATCH").count();
    assert_eq!(patches, 3, "two conflicts, then success");
    assert_eq!(k.node("node-a1")["spec"]["taints"][0]["value"], "7");
    // Idempotent: a second run reads and changes nothing.
    let before = k.calls().len();
    let r = run_one(&d, &ctx(7), false).await;
    assert_eq!(r.outcome, Outcome::Ok);
    let after: Vec<_> = k.calls()[before..]
        .iter()
        .map(|c| c.method.clone())
        .collect();
    assert_eq!(after, ["GET"]);
    // Unfence removes it with a guarded patch.
    let r = d.unfence(&ctx(8)).await.unwrap();
    assert_eq!(r.outcome, Outcome::Ok);
    let last = k.calls().last().unwrap().clone();
    assert!(
        last.body.contains("\"op\":\"test\"") && last.body.contains("\"op\":\"remove\""),
        "{}",
        last.body
    );
    assert!(k.node("node-a1")["spec"]["taints"]
        .as_array()
        .unwrap()
        .is_empty());
}

#[tokio::test]
async fn taint_is_skipped_not_failed_when_the_api_does_not_answer() {
    let k = KubeDouble::start().await;
    {
        let mut w = k.world.lock().unwrap();
        w.add_node("node-a1");
        w.hang = Some(Duration::from_secs(30));
    }
    let d = TaintDriver {
        kube: kube_at(&k.url()),
        node: "node-a1".into(),
        key: "witness.dev/fenced".into(),
        deadline: Duration::from_millis(300),
        rejoin: agent::takeover::RejoinGate::new(Duration::ZERO),
    };
    let t = Instant::now();
    let r = run_one(&d, &ctx(2), false).await;
    assert_eq!(r.outcome, Outcome::Skipped, "{}", r.detail);
    assert!(t.elapsed() < Duration::from_millis(400));
}

#[tokio::test]
async fn vm_processes_are_killed_locally_when_the_api_is_unreachable() {
    let name = format!("qemu-system-wtest-{}", std::process::id());
    // A stand-in VM process: argv[0] looks like qemu, and it ignores SIGTERM (needs SIGKILL).
    let mut child = std::process::Command::new("bash")
        .arg("-c")
        .arg(format!("trap '' TERM; exec -a {name} sleep 30"))
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(
        agent::drivers::vm::find_vm_processes(std::slice::from_ref(&name)).len(),
        1
    );
    // Nothing listens on this port: the API cannot be reached.
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", dead.local_addr().unwrap());
    drop(dead);
    let d = VmDriver {
        kube: kube_at(&url),
        node: "node-a1".into(),
        cfg: VmConfig {
            enabled: true,
            stop_mode: "stop".into(),
            local_kill: true,
            process_patterns: vec![name.clone()],
            deadline_ms: 1500,
        },
    };
    let r = run_one(&d, &ctx(1), false).await;
    assert_eq!(r.outcome, Outcome::Ok, "{}", r.detail);
    assert!(r.detail.contains("SIGKILL"), "{}", r.detail);
    let status = child.wait().unwrap();
    assert!(!status.success());
}

#[tokio::test]
async fn vms_are_halted_through_the_api_in_halt_mode() {
    let k = KubeDouble::start().await;
    k.world.lock().unwrap().add_vm("ns1", "db", "node-a1");
    k.world.lock().unwrap().add_vm("ns1", "web", "node-a2");
    let d = VmDriver {
        kube: kube_at(&k.url()),
        node: "node-a1".into(),
        cfg: VmConfig {
            enabled: true,
            stop_mode: "halt".into(),
            local_kill: false,
            process_patterns: vec![],
            deadline_ms: 1500,
        },
    };
    let r = run_one(&d, &ctx(1), false).await;
    assert_eq!(r.outcome, Outcome::Ok, "{}", r.detail);
    let calls = k.calls();
    let p = calls.iter().find(|c| c.method == "PATCH").unwrap();
    assert_eq!(
        p.uri,
        "/apis/kubevirt.io/v1/namespaces/ns1/virtualmachines/db?"
    );
    assert!(p.body.contains("\"runStrategy\":\"Halted\""), "{}", p.body);
    assert_eq!(
        k.world.lock().unwrap().vms[&("ns1".to_string(), "db".to_string())]["spec"]["runStrategy"],
        "Halted"
    );
    assert!(
        calls.iter().all(|c| !c.uri.contains("/web")),
        "only this node's VMs"
    );
}

/// A status endpoint that answers the fence-peer question from a script.
async fn fence_peer_server(answer: Option<(bool, &'static str)>) -> String {
    use axum::routing::get;
    let app = axum::Router::new().route(
        "/v1/fence-peer",
        get(move || async move {
            match answer {
                Some((peer_fenced, phase)) => axum::Json(serde_json::json!({
                    "peer_fenced": peer_fenced, "phase": phase, "reason": "scripted"}))
                .into_response_ok(),
                None => axum::http::StatusCode::SERVICE_UNAVAILABLE.into_response_ok(),
            }
        }),
    );
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", l.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(l, app).await });
    url
}

trait IntoResponseOk {
    fn into_response_ok(self) -> axum::response::Response;
}
impl<T: axum::response::IntoResponse> IntoResponseOk for T {
    fn into_response_ok(self) -> axum::response::Response {
        self.into_response()
    }
}

fn fence_peer(url: &str, timeout_ms: u64) -> (Option<i32>, Duration, String) {
    let t = Instant::now();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_witness-agent"))
        .args(["drbd-fence-peer", "--status-url", url, "--timeout-ms"])
        .arg(timeout_ms.to_string())
        .args(["--poll-ms", "50"])
        .output()
        .unwrap();
    (
        out.status.code(),
        t.elapsed(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fence_peer_handler_exits_7_only_when_the_peer_is_provably_fenced() {
    let fenced = fence_peer_server(Some((true, "active"))).await;
    let paired = fence_peer_server(Some((false, "active"))).await;
    let fencing = fence_peer_server(Some((false, "fencing"))).await;
    let broken = fence_peer_server(None).await;
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let gone = format!("http://{}", dead.local_addr().unwrap());
    drop(dead);
    let (code, _, err) = tokio::task::spawn_blocking(move || fence_peer(&fenced, 2000))
        .await
        .unwrap();
    assert_eq!(code, Some(7), "{err}");
    // Not (yet) fenced: keeps asking until the timeout, then 1 (IO stays frozen).
    let (code, took, err) = tokio::task::spawn_blocking(move || fence_peer(&paired, 600))
        .await
        .unwrap();
    assert_eq!(code, Some(1), "{err}");
    assert!(took >= Duration::from_millis(500), "{took:?}");
    // This node is fencing itself: 1 at once.
    let (code, took, _) = tokio::task::spawn_blocking(move || fence_peer(&fencing, 5000))
        .await
        .unwrap();
    assert_eq!(code, Some(1));
    assert!(took < Duration::from_secs(2), "{took:?}");
    // The agent is unreachable or broken: retried until the timeout, then 1.
    let (code, took, err) = tokio::task::spawn_blocking(move || fence_peer(&gone, 600))
        .await
        .unwrap();
    assert_eq!(code, Some(1));
    assert!(took >= Duration::from_millis(500), "{took:?}");
    assert!(err.contains("unreachable"), "{err}");
    let (code, _, _) = tokio::task::spawn_blocking(move || fence_peer(&broken, 300))
        .await
        .unwrap();
    assert_eq!(code, Some(1));
}

#[tokio::test]
async fn a_watchdog_that_cannot_be_opened_is_reported_and_fails_the_fence_step() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = agent::config::WatchdogConfig {
        enabled: true,
        device: dir.path().join("no-such-watchdog"),
        wdctl: String::new(),
    };
    let w = agent::drivers::watchdog::Watchdog::start(&cfg, 1000);
    let mut st = w.status();
    let s = tokio::time::timeout(Duration::from_secs(3), async {
        loop {
            let s = st.borrow_and_update().clone();
            if s.error.is_some() {
                return s;
            }
            st.changed().await.unwrap();
        }
    })
    .await
    .unwrap();
    assert!(!s.held);
    assert!(s.error.unwrap().contains("no-such-watchdog"));
    let d = agent::drivers::watchdog::WatchdogDriver { status: w.status() };
    let r = run_one(&d, &ctx(1), false).await;
    assert_eq!(r.outcome, Outcome::Failed, "{}", r.detail);
    // Once the device appears it is held (the open is retried every second).
    std::fs::write(dir.path().join("no-such-watchdog"), b"").unwrap();
    tokio::time::timeout(Duration::from_secs(3), async {
        while !st.borrow_and_update().held {
            st.changed().await.unwrap();
        }
    })
    .await
    .unwrap();
    w.pet();
    tokio::task::spawn_blocking(move || w.close(true))
        .await
        .unwrap();
    assert_eq!(read(&dir.path().join("no-such-watchdog")), "\0V");
}
