//! Integration tests of the agent shell: real agents (in-process, via `agent::start`) with real
//! mTLS, a scripted fake witness, the Kubernetes API double, a `drbdadm` stand-in and a
//! watchdog file. Short timings (see `support::timings`) keep each scenario to a few seconds.
// The tests measure real agents against real wall time (agent/clippy.toml's ban is for the shell).
#![allow(clippy::disallowed_types, clippy::disallowed_methods)]
mod driver_cases;
mod support;

use proto::wire::TakeoverPermit;
use serde_json::{json, Value};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::*;

const WAIT: Duration = Duration::from_secs(10);

fn phase(s: &Value) -> &str {
    s["phase"].as_str().unwrap_or("")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthy_nodes_make_no_fencing_call_at_all() {
    init();
    let pki = Pki::new();
    let witness = FakeWitness::start(&pki, |r| Answer::Reply(reply(r, 1, paired(300), None))).await;
    let kube = KubeDouble::start().await;
    {
        let mut w = kube.world.lock().unwrap();
        for n in ["node-a1", "node-b1"] {
            w.add_node(n);
        }
        w.add_vm("default", "vm-a", "node-a1");
    }
    // Reserve the heartbeat ports first so each agent can name the other.
    let la = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let lb = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let (pa, pb) = (la.local_addr().unwrap(), lb.local_addr().unwrap());
    drop((la, lb));
    let mut a = NodeSetup::new(&pki, "a", "node-a1", &witness.url());
    a.listen = pa.to_string();
    a.peers = vec![("node-b1".into(), pb.to_string())];
    a.kube_url = Some(kube.url());
    let mut b = NodeSetup::new(&pki, "b", "node-b1", &witness.url());
    b.listen = pb.to_string();
    b.peers = vec![("node-a1".into(), pa.to_string())];
    b.kube_url = Some(kube.url());
    let ra = start(a.config(&pki)).await;
    let rb = start(b.config(&pki)).await;

    for r in [&ra, &rb] {
        r.wait_for(WAIT, "active with peer contact", |s| {
            phase(s) == "active" && s["peer_contact"] == true
        })
        .await;
    }
    let pets_before = file_len(&a.watchdog);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let s = ra.status().await;
    assert_eq!(phase(&s), "active", "{s}");
    assert_eq!(s["lease"]["mode"], "paired");
    assert_eq!(s["peers"][0]["reachable"], true);
    assert_eq!(s["peers"][0]["vouch"], true);
    assert_eq!(s["fencing"]["state"], "idle");
    assert!(
        file_len(&a.watchdog) > pets_before,
        "the watchdog is petted while healthy"
    );

    // Radio silence: no Kubernetes write of any kind, and once running no call at all (the only
    // reads allowed are each node checking, as it first becomes active, that it carries no fence
    // taint of ours from before a reboot); no drbdadm, no hook.
    let writes: Vec<_> = kube
        .calls()
        .into_iter()
        .filter(|c| c.method != "GET")
        .collect();
    assert!(writes.is_empty(), "unexpected API writes: {writes:?}");
    let settled = Instant::now();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let late: Vec<_> = kube
        .calls()
        .into_iter()
        .filter(|c| c.at >= settled)
        .collect();
    assert!(
        late.is_empty(),
        "unexpected API calls while healthy: {late:?}"
    );
    for c in kube.calls() {
        assert!(
            c.uri.starts_with("/api/v1/nodes/node-"),
            "only a node's own read at activation: {c:?}"
        );
    }
    assert_eq!(read(&a.drbd_log), "", "drbdadm must not be called");
    assert_eq!(read(&b.drbd_log), "");
    // The one hook call is the unfence of the node's first activation (on plain hosts it
    // starts what may only run with the witness's permission); nothing fences.
    assert_eq!(read(&a.hook_log), "unfence epoch=1 c1/a/node-a1\n");
    let m = ra.metrics().await;
    assert!(m.contains("agent_phase{phase=\"active\"} 1"), "{m}");
    assert!(m.contains("agent_peer_contact 1"), "{m}");
    assert!(m.contains("agent_witness_reachable 1"), "{m}");
    assert!(m.contains("agent_watchdog_held 1"), "{m}");
    assert!(m.contains("agent_lease_valid 1"), "{m}");
    assert!(
        m.contains("agent_fence_actions_total{driver=\"vm\",result=\"ok\"} 0"),
        "{m}"
    );
    ra.shutdown().await;
    rb.shutdown().await;
}

/// Starts node-a1 in room a whose only peer never answers, active on a paired grant.
async fn isolated_node(
    pki: &Pki,
    witness: &FakeWitness,
    kube: &KubeDouble,
    tweak: impl FnOnce(&mut NodeSetup),
) -> (NodeSetup, Running) {
    {
        let mut w = kube.world.lock().unwrap();
        w.add_node("node-a1");
        w.add_node("node-b1");
        w.add_vm("default", "vm-a", "node-a1");
        w.add_vm("default", "vm-b", "node-b1");
    }
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead_addr = dead.local_addr().unwrap();
    drop(dead);
    let mut a = NodeSetup::new(pki, "a", "node-a1", &witness.url());
    a.peers = vec![("node-b1".into(), dead_addr.to_string())];
    a.kube_url = Some(kube.url());
    tweak(&mut a);
    let r = start(a.config(pki)).await;
    r.wait_for(WAIT, "active", |s| phase(s) == "active").await;
    (a, r)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn losing_peer_and_witness_runs_the_drivers_in_order_within_their_deadlines() {
    init();
    let pki = Pki::new();
    let witness = FakeWitness::start(&pki, |r| Answer::Reply(reply(r, 3, paired(300), None))).await;
    let kube = KubeDouble::start().await;
    let events_dir = tempfile::tempdir().unwrap();
    let sock = events_dir.path().join("events.sock");
    let listener = tokio::net::UnixListener::bind(&sock).unwrap();
    let lines = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let l2 = lines.clone();
    tokio::spawn(async move {
        use tokio::io::AsyncBufReadExt;
        while let Ok((s, _)) = listener.accept().await {
            let mut r = tokio::io::BufReader::new(s).lines();
            while let Ok(Some(l)) = r.next_line().await {
                l2.lock().unwrap().push(l);
            }
        }
    });
    let (a, r) = isolated_node(&pki, &witness, &kube, |a| {
        a.event_socket = Some(sock.clone())
    })
    .await;
    let writes: Vec<_> = kube
        .calls()
        .into_iter()
        .filter(|c| c.method != "GET")
        .collect();
    assert!(writes.is_empty(), "no write while active: {writes:?}");
    let calls_before_loss = kube.calls().len();

    // The witness goes away too: the lease runs out without peer contact.
    let lost = Instant::now();
    witness.set(|_| Answer::Unavailable);
    let s = r.wait_for(WAIT, "fenced", |s| phase(s) == "fenced").await;
    let fenced_after = lost.elapsed();
    assert!(
        fenced_after < Duration::from_secs(3),
        "fenced after {fenced_after:?}"
    );

    let drivers: Vec<(&str, &str, u64)> = s["fencing"]["drivers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["driver"].as_str().unwrap(),
                d["outcome"].as_str().unwrap(),
                d["elapsed_ms"].as_u64().unwrap(),
            )
        })
        .collect();
    let order: Vec<&str> = drivers.iter().map(|d| d.0).collect();
    assert_eq!(order, ["vm", "drbd", "taint", "watchdog", "hooks"], "{s}");
    for (d, outcome, ms) in &drivers {
        assert_eq!(*outcome, "ok", "{d}: {s}");
        let deadline = match *d {
            "vm" | "drbd" => 300,
            "taint" => 200,
            _ => 300,
        };
        assert!(*ms <= deadline, "{d} took {ms} ms");
    }
    assert_eq!(s["fencing"]["state"], "confirmed");
    assert_eq!(s["epoch"], 3);

    // The real calls, in order: VMI list by label, VM stop, then the node taint.
    let calls: Vec<_> = kube.calls().into_iter().skip(calls_before_loss).collect();
    let seq: Vec<String> = calls
        .iter()
        .map(|c| format!("{} {}", c.method, c.uri))
        .collect();
    assert!(
        seq[0].starts_with("GET /apis/kubevirt.io/v1/virtualmachineinstances?"),
        "{seq:?}"
    );
    assert!(
        seq[0].contains("labelSelector=kubevirt.io%2FnodeName%3Dnode-a1"),
        "{seq:?}"
    );
    assert_eq!(
        seq[1],
        "PUT /apis/subresources.kubevirt.io/v1/namespaces/default/virtualmachines/vm-a/stop"
    );
    assert!(
        seq.iter().all(|c| !c.contains("vm-b")),
        "only this node's VMs: {seq:?}"
    );
    let patch = calls
        .iter()
        .find(|c| c.method == "PATCH")
        .expect("taint patch");
    assert!(
        patch.uri.starts_with("/api/v1/nodes/node-a1"),
        "{}",
        patch.uri
    );
    assert!(
        patch.body.contains("\"op\":\"test\""),
        "guarded: {}",
        patch.body
    );
    let node = kube.node("node-a1");
    assert_eq!(node["spec"]["taints"][0]["key"], "witness.dev/fenced");
    assert_eq!(node["spec"]["taints"][0]["value"], "3");
    assert_eq!(node["spec"]["taints"][0]["effect"], "NoExecute");
    assert_eq!(
        read(&a.drbd_log),
        "drbdadm secondary all\ndrbdadm role all\n"
    );
    assert_eq!(
        read(&a.hook_log),
        "unfence epoch=3 c1/a/node-a1\nfence epoch=3 c1/a/node-a1\n",
        "activation, then the one fence"
    );

    // A fenced node keeps petting (it runs nothing); the events told the recorder everything.
    let len = file_len(&a.watchdog);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(file_len(&a.watchdog) > len, "fenced nodes keep petting");
    let m = r.metrics().await;
    assert!(
        m.contains("agent_fence_actions_total{driver=\"drbd\",result=\"ok\"} 1"),
        "{m}"
    );
    assert!(m.contains("agent_phase{phase=\"fenced\"} 1"), "{m}");
    let ev = lines.lock().unwrap().clone();
    let phases: Vec<String> = ev
        .iter()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["event"] == "phase")
        .map(|v| v["phase"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        phases,
        ["starting", "active", "fencing", "fenced"],
        "{ev:?}"
    );
    assert!(
        ev.iter()
            .any(|l| l.contains("\"event\":\"fence\"") && l.contains("\"node\":\"node-a1\"")),
        "{ev:?}"
    );
    r.shutdown().await;
    // Stopped while fenced: the watchdog was disarmed with the magic character.
    assert!(
        read(&a.watchdog).ends_with('V'),
        "magic close expected when fenced"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_drbdadm_stops_the_watchdog_petting() {
    init();
    let pki = Pki::new();
    let witness = FakeWitness::start(&pki, |r| Answer::Reply(reply(r, 1, paired(300), None))).await;
    let kube = KubeDouble::start().await;
    let (a, r) = isolated_node(&pki, &witness, &kube, |a| a.drbd_hang = true).await;
    witness.set(|_| Answer::Unavailable);
    let s = r
        .wait_for(WAIT, "escalated", |s| s["escalated"] == true)
        .await;
    assert_eq!(phase(&s), "fencing");
    let drbd = &s["fencing"]["drivers"][1];
    assert_eq!(drbd["driver"], "drbd");
    assert_eq!(drbd["outcome"], "overran", "{s}");
    // Petting stops: the file does not grow any more.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let len = file_len(&a.watchdog);
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(
        file_len(&a.watchdog),
        len,
        "the watchdog must not be petted any more"
    );
    let s = r.status().await;
    assert_eq!(s["watchdog_petting"], false);
    assert_eq!(s["watchdog"]["held"], true);
    // The remaining drivers still ran, after the escalation.
    let s = r
        .wait_for(WAIT, "all drivers reported", |s| {
            s["fencing"]["drivers"]
                .as_array()
                .is_some_and(|d| d.len() == 5)
        })
        .await;
    assert_eq!(s["fencing"]["state"], "failed");
    let m = r.metrics().await;
    assert!(
        m.contains("agent_fence_actions_total{driver=\"drbd\",result=\"overran\"} 1"),
        "{m}"
    );
    r.shutdown().await;
    // Stopped while fencing: the watchdog stays armed (no magic close).
    assert!(!read(&a.watchdog).ends_with('V'), "must stay armed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_takeover_also_frees_a_node_of_the_other_room_that_only_the_membership_names() {
    init();
    let pki = Pki::new();
    // node-b2 was added to room b at runtime: no configuration of room a names it, the
    // witness's membership does (with an address where nothing answers: room b is lost).
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let b2_addr = dead.local_addr().unwrap().to_string();
    drop(dead);
    let member = |node: &str, room: &str, address: Option<String>| proto::wire::MemberEntry {
        node: proto::NodeId::new(node),
        room: proto::RoomId::new(room),
        status: proto::wire::MemberStatus::Member,
        address,
    };
    let membership = proto::wire::Membership {
        version: 7,
        members: vec![
            member("node-a1", "a", None),
            member("node-b1", "b", None),
            member("node-b2", "b", Some(b2_addr)),
        ],
    };
    let alone_once = Arc::new(AtomicBool::new(false));
    let sticky = alone_once.clone();
    let witness = FakeWitness::start(&pki, move |r| {
        let mut answer = if r.claim || r.takeover || sticky.load(Ordering::SeqCst) {
            sticky.store(true, Ordering::SeqCst);
            reply(r, 5, alone(TakeoverPermit::Allowed, 300), Some("jwt-5"))
        } else {
            reply(r, 4, paired(300), None)
        };
        if r.members_version < membership.version {
            answer.members = Some(membership.clone());
        }
        Answer::Reply(answer)
    })
    .await;
    let kube = KubeDouble::start().await;
    {
        let mut w = kube.world.lock().unwrap();
        w.add_node("node-b2");
        w.add_pod("shop", "web-b2", "node-b2");
    }
    let (_a, r) = isolated_node(&pki, &witness, &kube, |_| {}).await;
    let s = r
        .wait_for(WAIT, "takeover applied", |s| {
            s["takeover"]["work"]["state"] == "applied"
        })
        .await;
    assert!(alone_once.load(Ordering::SeqCst));
    let covered: Vec<&str> = s["takeover"]["work"]["nodes"]
        .as_array()
        .map(|n| n.iter().filter_map(|n| n["node"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(covered, ["node-b1", "node-b2"], "{s}");
    for node in ["node-b1", "node-b2"] {
        let n = kube.node(node);
        assert_eq!(
            n["spec"]["taints"][0]["key"], "node.kubernetes.io/out-of-service",
            "{node}: {n}"
        );
    }
    {
        let w = kube.world.lock().unwrap();
        assert!(
            w.pods.iter().all(|p| p["metadata"]["name"] != "web-b2"),
            "the pod bound to node-b2 is force-deleted"
        );
    }
    assert!(kube.node("node-a1")["spec"].get("taints").is_none());
    r.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn survivor_takes_over_only_after_the_bound_and_releases_after_rejoin() {
    init();
    let pki = Pki::new();
    // The witness: paired until the node claims, then alone with the takeover allowed (the
    // witness's own wait is its business; here it allows at once so the node's wait shows).
    let first_alone: Arc<std::sync::Mutex<Option<Instant>>> = Default::default();
    let release = Arc::new(AtomicBool::new(false));
    let (fa, rel) = (first_alone.clone(), release.clone());
    let witness = FakeWitness::start(&pki, move |r| {
        if rel.load(Ordering::SeqCst) {
            return Answer::Reply(reply(
                r,
                6,
                alone(TakeoverPermit::Release, 300),
                Some("jwt-6"),
            ));
        }
        if r.claim || r.takeover || fa.lock().unwrap().is_some() {
            fa.lock().unwrap().get_or_insert_with(Instant::now);
            return Answer::Reply(reply(
                r,
                5,
                alone(TakeoverPermit::Allowed, 300),
                Some("jwt-5"),
            ));
        }
        Answer::Reply(reply(r, 4, paired(300), None))
    })
    .await;
    let kube = KubeDouble::start().await;
    {
        // What is bound to the lost room's node b1, and a pod of our own room.
        let mut w = kube.world.lock().unwrap();
        w.add_pod("shop", "web-b", "node-b1");
        w.add_pod("shop", "web-a", "node-a1");
        w.add_vm("shop", "vm-b", "node-b1");
        // A StatefulSet's pod of b1, recreated under its name in our room between the
        // agent's list and its delete (the taint-eviction controller deleted the first one).
        w.add_pod("shop", "db-0", "node-b1");
        w.recreate_after_list = vec![("shop".into(), "db-0".into(), "node-a1".into())];
    }
    let (a, r) = isolated_node(&pki, &witness, &kube, |_| {}).await;

    let s = r
        .wait_for(WAIT, "takeover applied", |s| {
            s["takeover"]["work"]["state"] == "applied"
        })
        .await;
    assert_eq!(s["takeover"]["active"], true);
    assert_eq!(phase(&s), "active", "the survivor keeps running");
    let alone_at = first_alone.lock().unwrap().expect("alone granted");
    let patch = kube
        .calls()
        .into_iter()
        .find(|c| c.method == "PATCH" && c.uri.contains("node-b1"))
        .expect("out-of-service patch");
    let waited = patch.at.duration_since(alone_at);
    assert!(
        waited >= Duration::from_millis(NODE_TAKEOVER_WAIT_MS - 50),
        "took over after {waited:?}, before the bound of {NODE_TAKEOVER_WAIT_MS} ms"
    );
    let b1 = kube.node("node-b1");
    let t = &b1["spec"]["taints"][0];
    assert_eq!(t["key"], "node.kubernetes.io/out-of-service");
    assert_eq!(t["value"], "nodeshutdown");
    assert_eq!(t["effect"], "NoExecute");
    assert_eq!(
        b1["metadata"]["annotations"]["witness.dev/takeover-epoch"],
        "5"
    );
    assert_eq!(
        b1["metadata"]["annotations"]["witness.dev/takeover-proof"],
        "jwt-5"
    );
    // takeover_delete = "pods-and-vmis" (the default): what was bound to b1 is force-deleted
    // (grace period 0), no earlier than the out-of-service taint; our own room's pods stay,
    // the replacement db-0 among them: each deletion is guarded by the UID listed.
    {
        let w = kube.world.lock().unwrap();
        let pods: Vec<_> = w
            .pods
            .iter()
            .map(|p| (p["metadata"]["name"].clone(), p["spec"]["nodeName"].clone()))
            .collect();
        assert_eq!(
            pods,
            [
                (json!("web-a"), json!("node-a1")),
                (json!("db-0"), json!("node-a1"))
            ],
            "the pods of b1 are gone and the replacement of db-0 in our room is not"
        );
        assert!(w.vmis.iter().all(|v| v["metadata"]["name"] != "vm-b"));
    }
    let db0 = kube
        .calls()
        .into_iter()
        .find(|c| c.method == "DELETE" && c.uri.contains("/pods/db-0"))
        .expect("a DELETE of the listed db-0");
    assert!(
        db0.body
            .replace(' ', "")
            .contains("\"preconditions\":{\"uid\":\"pod-db-0-"),
        "the force deletion of db-0 names the UID it listed: {}",
        db0.body
    );
    let detail = s["takeover"]["work"]["nodes"][0]["detail"].to_string();
    assert!(
        detail.contains("force-deleted 1 pods and 2 VMIs")
            && detail.contains("1 already replaced under the same name, left alone"),
        "{detail}"
    );
    for what in ["/pods/web-b", "/virtualmachineinstances/vm-b"] {
        let del = kube
            .calls()
            .into_iter()
            .find(|c| c.method == "DELETE" && c.uri.contains(what))
            .unwrap_or_else(|| panic!("no DELETE of {what}"));
        assert!(del.at >= patch.at, "{what} deleted before the taint");
        assert!(
            del.body
                .replace(' ', "")
                .contains("\"gracePeriodSeconds\":0"),
            "{what} not force-deleted: {}",
            del.body
        );
    }
    // Our own node is left alone, and nothing of ours was fenced.
    assert!(kube.node("node-a1")["spec"].get("taints").is_none());
    assert_eq!(read(&a.drbd_log), "");
    assert!(read(&a.hook_log).contains("takeover epoch=5"));
    // The DRBD fence-peer handler now lets IO resume.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_witness-agent"))
        .args([
            "drbd-fence-peer",
            "--status-url",
            &format!("http://{}", r.status),
            "--timeout-ms",
            "2000",
        ])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(7),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(r.metrics().await.contains("agent_takeover_active 1"));

    // The other room rejoins: the witness says release.
    release.store(true, Ordering::SeqCst);
    let s = r
        .wait_for(WAIT, "takeover released", |s| {
            s["takeover"]["work"]["state"] == "released"
        })
        .await;
    assert_eq!(s["takeover"]["active"], false);
    let b1 = kube.node("node-b1");
    assert!(
        b1["spec"]["taints"].as_array().is_none_or(|t| t.is_empty()),
        "out-of-service lifted: {b1}"
    );
    assert!(
        b1["metadata"]["annotations"]
            .get("witness.dev/takeover-epoch")
            .is_none(),
        "{b1}"
    );
    assert!(read(&a.hook_log).contains("release epoch=6"));
    assert!(s["pending"].as_array().unwrap().is_empty(), "{s}");
    r.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_agent_resumes_its_phase_and_repeats_unfinished_work() {
    init();
    let pki = Pki::new();
    // A long grant, so the lease is still valid when the successor starts.
    let witness =
        FakeWitness::start(&pki, |r| Answer::Reply(reply(r, 2, paired(5000), None))).await;
    let kube = KubeDouble::start().await;
    let (a, r) = isolated_node(&pki, &witness, &kube, |_| {}).await;
    r.shutdown().await;
    // Stopped while active: left armed.
    assert!(!read(&a.watchdog).ends_with('V'));
    let state: Value = serde_json::from_str(&read(&a.run_dir().join("state.json"))).unwrap();
    assert_eq!(state["run"]["phase"]["phase"], "active", "{state}");
    // The successor on the same boot starts where its predecessor was: active, not starting.
    let r = start(a.config(&pki)).await;
    let s = r.status().await;
    assert_eq!(phase(&s), "active", "{s}");
    r.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_heartbeats_are_refused_with_a_clear_reason() {
    init();
    let pki = Pki::new();
    let witness = FakeWitness::start(&pki, |r| Answer::Reply(reply(r, 1, paired(300), None))).await;
    let kube = KubeDouble::start().await;
    let (_a, r) = isolated_node(&pki, &witness, &kube, |_| {}).await;
    let url = format!("https://{}/v1/heartbeat", r.peer);
    let client_for = |cert: &Issued| {
        let t = agent::tls::TlsState::load(&agent::config::TlsConfig {
            ca: pki.ca.clone(),
            cert: cert.cert.clone(),
            key: cert.key.clone(),
        })
        .unwrap();
        let tls = t
            .peer_client(agent::tls::PeerExpectation {
                cluster: "c1".into(),
                own_room: "b".into(),
                node: "node-a1".into(),
            })
            .unwrap();
        reqwest::Client::builder()
            .use_preconfigured_tls(tls)
            .no_proxy()
            .build()
            .unwrap()
    };
    let ping = |room: &str, node: &str, version: u32| serde_json::json!({"version": version, "cluster": "c1", "room": room, "node": node, "seq": 1, "epoch": 0});
    let b1 = client_for(&pki.node("c1", "b", "node-b1"));
    // A good ping is answered with a pong.
    let resp = b1
        .post(&url)
        .json(&ping("b", "node-b1", 1))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let pong: proto::wire::Pong = resp.json().await.unwrap();
    assert_eq!(pong.node.as_str(), "node-a1");
    // A body naming another node than the certificate: 403.
    let resp = b1
        .post(&url)
        .json(&ping("b", "node-b2", 1))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
    let body = resp.text().await.unwrap();
    assert!(
        body.contains("client certificate is witness://c1/b/node-b1"),
        "{body}"
    );
    // A node that is not a peer: refused by the state machine.
    let b9 = client_for(&pki.node("c1", "b", "node-b9"));
    let resp = b9
        .post(&url)
        .json(&ping("b", "node-b9", 1))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
    assert!(resp
        .text()
        .await
        .unwrap()
        .contains("not a counted member of the other room"));
    // A node of our own room: refused.
    let a2 = client_for(&pki.node("c1", "a", "node-a2"));
    let resp = a2
        .post(&url)
        .json(&ping("a", "node-a2", 1))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
    assert!(resp.text().await.unwrap().contains("other room only"));
    // Another wire version, and garbage: 400.
    let resp = b1
        .post(&url)
        .json(&ping("b", "node-b1", 2))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    assert!(resp.text().await.unwrap().contains("wire version 2"));
    let resp = b1.post(&url).body("{\"hello\":1}").send().await.unwrap();
    assert_eq!(resp.status(), 400);
    // An admin certificate does not heartbeat.
    let admin = pki.issue("ops", &["witness-admin://ops"], &[]);
    let resp = client_for(&admin)
        .post(&url)
        .json(&ping("b", "node-b1", 1))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
    // A certificate from another CA, or none at all, does not get through the handshake.
    let other = Pki::new();
    let foreign = other.node("c1", "b", "node-b1");
    let t = agent::tls::TlsState::load(&agent::config::TlsConfig {
        ca: pki.ca.clone(),
        cert: foreign.cert.clone(),
        key: foreign.key.clone(),
    })
    .unwrap();
    let c = reqwest::Client::builder()
        .use_preconfigured_tls(
            t.peer_client(agent::tls::PeerExpectation {
                cluster: "c1".into(),
                own_room: "b".into(),
                node: "node-a1".into(),
            })
            .unwrap(),
        )
        .build()
        .unwrap();
    assert!(c
        .post(&url)
        .json(&ping("b", "node-b1", 1))
        .send()
        .await
        .is_err());
    r.shutdown().await;
}

fn bin() -> std::process::Command {
    std::process::Command::new(env!("CARGO_BIN_EXE_witness-agent"))
}

#[test]
fn bad_config_is_refused_with_file_field_and_reason_and_exit_64() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("agent.toml");
    std::fs::write(
        &path,
        "cluster = \"c1\"\nroom = \"a\"\nnode = \"node-a1\"\nwitness_url = \"https://w:7443\"\n\
         [tls]\nca = \"/nonexistent/ca.pem\"\ncert = \"/x\"\nkey = \"/y\"\n\
         [[peers]]\nnode = \"node-b1\"\naddress = \"10.0.2.11:7444\"\n[vm]\nstop_mode = \"pause\"\n",
    )
    .unwrap();
    let out = bin().args(["run", "--config"]).arg(&path).output().unwrap();
    assert_eq!(out.status.code(), Some(64));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&path.display().to_string()), "{err}");
    assert!(err.contains("vm.stop_mode"), "{err}");
    assert!(err.contains("\"pause\""), "{err}");

    // WITNESS_AGENT_CONFIG names the file; WITNESS_AGENT_NODE overrides the node (here to a
    // bad name).
    std::fs::write(
        &path,
        read(&path).replace("[vm]\nstop_mode = \"pause\"\n", ""),
    )
    .unwrap();
    let out = bin()
        .arg("run")
        .env("WITNESS_AGENT_CONFIG", &path)
        .env("WITNESS_AGENT_NODE", "Node_A1")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains(": node: "));

    // Missing certificate files are named with their field.
    let out = bin().args(["run", "--config"]).arg(&path).output().unwrap();
    assert_eq!(out.status.code(), Some(64));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("tls.ca") && err.contains("/nonexistent/ca.pem"),
        "{err}"
    );
}

#[test]
fn a_certificate_of_another_node_is_refused_at_start() {
    let pki = Pki::new();
    let a = NodeSetup::new(&pki, "a", "node-a1", "https://127.0.0.1:1");
    let other = pki.node("c1", "a", "node-a9");
    let mut cfg = {
        let mut s = NodeSetup::new(&pki, "a", "node-a1", "https://127.0.0.1:1");
        s.peers = vec![("node-b1".into(), "127.0.0.1:1".into())];
        s.config(&pki)
    };
    cfg.tls.cert = other.cert;
    cfg.tls.key = other.key;
    let _ = a;
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (_tx, rx) = tokio::sync::watch::channel(false);
    let e = match rt.block_on(agent::start(cfg, rx)) {
        Err(e) => e,
        Ok(_) => panic!("started with another node's certificate"),
    };
    assert_eq!(e.exit_code(), 64);
    let msg = e.to_string();
    assert!(
        msg.contains("tls.cert") && msg.contains("witness://c1/a/node-a9"),
        "{msg}"
    );
}

#[test]
fn check_config_refuses_a_certificate_of_another_node_like_run_does() {
    let pki = Pki::new();
    let other = pki.node("c1", "a", "node-a9");
    let mut cfg = {
        let mut s = NodeSetup::new(&pki, "a", "node-a1", "https://127.0.0.1:1");
        s.peers = vec![("node-b1".into(), "127.0.0.1:1".into())];
        s.config(&pki)
    };
    cfg.tls.cert = other.cert;
    cfg.tls.key = other.key;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("agent.toml");
    let text = format!(
        "cluster = \"c1\"\nroom = \"a\"\nnode = \"node-a1\"\nwitness_url = \"https://127.0.0.1:1\"\n\
         [tls]\nca = {:?}\ncert = {:?}\nkey = {:?}\n\
         [[peers]]\nnode = \"node-b1\"\naddress = \"127.0.0.1:1\"\n",
        cfg.tls.ca, cfg.tls.cert, cfg.tls.key
    );
    std::fs::write(&path, text).unwrap();
    let out = bin()
        .args(["check-config", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("tls.cert") && err.contains("witness://c1/a/node-a9"),
        "{err}"
    );
    // Offline: structure and timings only, no certificate files needed.
    std::fs::write(
        &path,
        read(&path).replace(&format!("{:?}", cfg.tls.ca), "\"/nonexistent/ca.pem\""),
    )
    .unwrap();
    let out = bin()
        .args(["check-config", "--skip-file-checks", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let out = bin()
        .args(["check-config", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(64),
        "the files are checked without the flag"
    );
}

#[test]
fn the_shipped_agent_samples_pass_check_config_offline() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    for sample in [
        "deploy/agent-systemd/agent.toml",
        "deploy/kubernetes/overlays/room-a/agent.toml",
        "deploy/kubernetes/overlays/room-b/agent.toml",
    ] {
        let out = bin()
            .args(["check-config", "--skip-file-checks", "--config"])
            .arg(root.join(sample))
            .env("WITNESS_AGENT_NODE", "node-1")
            .env_remove("WITNESS_AGENT_CONFIG")
            .output()
            .unwrap();
        assert_eq!(
            out.status.code(),
            Some(0),
            "{sample}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fenced_node_unfences_on_a_new_grant_and_removes_its_taint() {
    init();
    let pki = Pki::new();
    let witness = FakeWitness::start(&pki, |r| Answer::Reply(reply(r, 1, paired(300), None))).await;
    let kube = KubeDouble::start().await;
    let (a, r) = isolated_node(&pki, &witness, &kube, |_| {}).await;
    witness.set(|r| {
        Answer::Reply(reply(
            r,
            2,
            proto::wire::Verdict::Fence {
                reason: "the other room survives".into(),
            },
            None,
        ))
    });
    r.wait_for(WAIT, "fenced", |s| phase(s) == "fenced").await;
    assert_eq!(kube.node("node-a1")["spec"]["taints"][0]["value"], "2");
    // The partition heals: the witness grants again; after min_fenced_ms the node unfences.
    witness.set(|r| Answer::Reply(reply(r, 3, paired(300), None)));
    let s = r
        .wait_for(WAIT, "active and untainted", |s| {
            phase(s) == "active" && s["pending"].as_array().is_some_and(|p| p.is_empty())
        })
        .await;
    assert!(
        s["fencing"]["unfence"]
            .as_str()
            .unwrap()
            .contains("removed taint"),
        "{s}"
    );
    let taints = kube.node("node-a1")["spec"]["taints"].clone();
    assert!(taints.as_array().is_some_and(|t| t.is_empty()), "{taints}");
    let hooks = read(&a.hook_log);
    assert!(
        hooks.contains("fence epoch=2") && hooks.contains("unfence epoch=3"),
        "{hooks}"
    );
    r.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_are_reloaded_without_a_restart() {
    init();
    let pki = Pki::new();
    let witness = FakeWitness::start(&pki, |r| Answer::Reply(reply(r, 1, paired(300), None))).await;
    let kube = KubeDouble::start().await;
    let (a, r) = isolated_node(&pki, &witness, &kube, |_| {}).await;
    let before = r.status().await["certificate"]["expires_in_s"]
        .as_i64()
        .unwrap();
    // Rotate: same identity, a certificate expiring much sooner, written over the old files.
    let new = pki.issue_until("rotated", &["witness://c1/a/node-a1"], &[], Some(2031));
    std::fs::copy(&new.key, &a.certs.key).unwrap();
    std::fs::copy(&new.cert, &a.certs.cert).unwrap();
    let s = r
        .wait_for(Duration::from_secs(8), "the new certificate", |s| {
            s["certificate"]["expires_in_s"].as_i64().unwrap() < before - 1000
        })
        .await;
    assert!(s["certificate"]["reload_error"].is_null(), "{s}");
    // Still working with the new certificate: renewals keep the node active.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(phase(&r.status().await), "active");
    let m = r.metrics().await;
    let line = m
        .lines()
        .find(|l| l.starts_with("agent_certificate_expiry_seconds "))
        .unwrap();
    let v: i64 = line.split(' ').nth(1).unwrap().parse().unwrap();
    assert!(v < before - 1000, "{line}");
    r.shutdown().await;
}

/// Issue 12: a renewal the witness does not answer must not hold back the next one until the
/// next whole renew interval: the agent retries after R/4 (`Timings::renew_retry_ms`), so a
/// lease outlives `L − R − R/4` of witness silence instead of `L − 2R`. With R = 100 ms, one
/// second of failed answers must bring well over the 10 requests a fixed schedule would send.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unanswered_renewal_is_retried_after_a_quarter_of_the_renew_interval() {
    init();
    let pki = Pki::new();
    let witness = FakeWitness::start(&pki, |r| Answer::Reply(reply(r, 1, paired(300), None))).await;
    let kube = KubeDouble::start().await;
    let (a, r) = isolated_node(&pki, &witness, &kube, |_| {}).await;
    let renew = a.config(&pki).timings.renew_interval_ms;
    witness.set(|_| Answer::Unavailable);
    let t0 = Instant::now();
    tokio::time::sleep(Duration::from_millis(10 * renew)).await;
    let sent = witness
        .requests
        .lock()
        .unwrap()
        .iter()
        .filter(|(t, _)| *t >= t0)
        .count();
    println!(
        "{sent} lease requests in {} ms without an answer",
        10 * renew
    );
    assert!(
        sent >= 20,
        "only {sent} lease requests in {} ms without an answer (R = {renew} ms): unanswered \
         renewals are not retried sooner than the renew interval",
        10 * renew
    );
    r.shutdown().await;
}
