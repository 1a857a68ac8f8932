//! One cluster of real processes: the witness in its namespace, agents a1, a2 (room a) and b1,
//! b2 (room b) in theirs, each node with its stand-in VM, watchdog FIFO and drbdadm; a monitor
//! thread that stamps watchdog pets, drbdadm calls and VM deaths, resets a node whose watchdog
//! expired and boots it again when the spec says so. Faults are methods; everything is torn
//! down on `Drop` (also when a test panics).
use crate::checker::{check, Verdict};
use crate::net::{run, Net};
use crate::procs::{binary, Proc};
use crate::recorder::{Event, Recorder};
use crate::standin::{drbdadm_script, Tail, WatchdogFifo};
use agent::config::{DrbdConfig, KubernetesConfig, PeerConfig, VmConfig, WatchdogConfig};
use anyhow::{bail, Context, Result};
use harness::pki::Member;
use harness::Pki;
use proto::Timings;
use serde_json::json;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// The cluster's name at the witness.
pub const CLUSTER: &str = "c1";
/// (node, room, last address octet).
pub const NODES: [(&str, &str, u8); 4] = [
    ("a1", "a", 11),
    ("a2", "a", 12),
    ("b1", "b", 21),
    ("b2", "b", 22),
];
const WITNESS_OCTET: u8 = 10;
/// The `kube` host (the API server as the namespaces see it), present with [`Spec::kube`].
const KUBE_OCTET: u8 = 5;
/// The port the API server is reached at from the namespaces.
pub const KUBE_PORT: u16 = 6443;
const LEASE_PORT: u16 = 7443;
const PEER_PORT: u16 = 7444;
/// A monitor thread never outlives this (a bound on its loop).
const MONITOR_MAX: Duration = Duration::from_secs(3600);

/// What to build.
#[derive(Clone, Debug)]
pub struct Spec {
    /// The scenario's name (logs, report).
    pub name: String,
    /// Addresses are `198.18.<index>.0/24`.
    pub index: u8,
    pub timings: Timings,
    /// Start the witness with an empty, uninitialised store (it then waits out the
    /// forgotten-state bound); else the store is made with `Store::init_fresh`.
    pub wiped_store: bool,
    /// libfaketime spec per host (`witness`, `a1`, ...), e.g. `+0 x1.005`.
    pub faketime: BTreeMap<String, String>,
    /// A node reset by its watchdog boots again after this long (`None`: stays down).
    pub reboot_after_reset_ms: Option<u64>,
    pub preferred_room: Option<String>,
    /// Delay the lease API by this many ms each way from the start, through the given
    /// `delay-relay` binary (see [`Cluster::delay_witness`]).
    pub witness_delay: Option<(PathBuf, u64)>,
    /// Kubernetes enabled in the agents, against a real API server (see
    /// [`crate::kube_fixture`]); `None`: `kubernetes.enabled = false`.
    pub kube: Option<KubeAccess>,
}

/// How the agents reach a real API server.
#[derive(Clone, Debug)]
pub struct KubeAccess {
    /// The API server on this host's loopback; the cluster forwards `<kube host>:6443` in its
    /// namespaces to it (so cutting the `kube` host cuts a node off from the API).
    pub upstream: std::net::SocketAddr,
    /// A projected-ServiceAccount-style directory (`token`, `ca.crt`, `namespace`).
    pub sa_dir: PathBuf,
    /// `vm.stop_mode` of the agents (`stop` or `halt`).
    pub stop_mode: String,
    /// More lines for the agents' `[kubernetes]` section (e.g. `takeover_delete = "none"`).
    pub extra: String,
    /// Nodes' power as the fixture's kubelet stand-in sees it: cleared on power-off and
    /// watchdog reset, set on boot.
    pub powered: crate::kube_fixture::Powered,
}

impl KubeAccess {
    fn set(&self, node: &str, on: bool) {
        if let Ok(mut m) = self.powered.lock() {
            m.insert(node.to_string(), on);
        }
    }
}

impl Spec {
    pub fn new(name: &str, index: u8) -> Spec {
        Spec {
            name: name.to_string(),
            index,
            timings: crate::test_timings(),
            wiped_store: false,
            faketime: BTreeMap::new(),
            reboot_after_reset_ms: Some(2_000),
            preferred_room: None,
            witness_delay: None,
            kube: None,
        }
    }
}

struct NodeSlot {
    dir: PathBuf,
    config: PathBuf,
    agent: Option<Proc>,
    vm: Option<Proc>,
    wd: WatchdogFifo,
    drbd: Tail,
    /// Powered off or reset: nothing runs until `boot`.
    down: bool,
    reboot_at: Option<Instant>,
}

struct Inner {
    nodes: BTreeMap<String, NodeSlot>,
    witness: Option<Proc>,
    relays: Vec<Proc>,
}

struct Shared {
    spec: Spec,
    rec: Recorder,
    net: Net,
    inner: Mutex<Inner>,
    agent_bin: PathBuf,
    tag: String,
}

/// A running cluster.
pub struct Cluster {
    pub spec: Spec,
    pub timings: Timings,
    pub rec: Recorder,
    shared: Arc<Shared>,
    stop: Arc<AtomicBool>,
    monitor: Option<std::thread::JoinHandle<()>>,
    witness_bin: PathBuf,
    dir: tempfile::TempDir,
    _slot: Slot,
}

// ---- a limit on clusters running at once (2 cores) ----

static RUNNING: Mutex<usize> = Mutex::new(0);
static FREED: Condvar = Condvar::new();

struct Slot;

impl Slot {
    fn take() -> Slot {
        let max: usize = std::env::var("WT_PARALLEL")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(3);
        let deadline = Instant::now() + Duration::from_secs(1800);
        let mut n = RUNNING.lock().unwrap_or_else(|e| e.into_inner());
        while *n >= max && Instant::now() < deadline {
            n = FREED
                .wait_timeout(n, Duration::from_millis(500))
                .map(|r| r.0)
                .unwrap_or_else(|e| e.into_inner().0);
        }
        *n += 1;
        Slot
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut n = RUNNING.lock().unwrap_or_else(|e| e.into_inner());
        *n = n.saturating_sub(1);
        FREED.notify_all();
    }
}

fn s(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

impl Cluster {
    /// Builds and starts everything, and waits until every node is active. `Ok(None)` when not
    /// root (the skip line is printed).
    pub fn start(spec: Spec) -> Result<Option<Cluster>> {
        if !crate::have_root() {
            return Ok(None);
        }
        spec.timings
            .validate()
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let witness_bin = binary("witness")?;
        let agent_bin = binary("witness-agent")?;
        let slot = Slot::take();
        let dir = tempfile::Builder::new()
            .prefix("witness-tests-")
            .tempdir()?;
        let mut hosts: Vec<(&str, u8)> = vec![("witness", WITNESS_OCTET)];
        hosts.extend(NODES.iter().map(|(n, _, o)| (*n, *o)));
        if spec.kube.is_some() {
            hosts.push(("kube", KUBE_OCTET));
        }
        let net = Net::new(spec.index, &hosts)?;
        let stop = Arc::new(AtomicBool::new(false));
        // The agents' `[kubernetes]` when the spec has an API server (else it stays disabled).
        let kubernetes = match &spec.kube {
            Some(k) => {
                let ip = net.ip("kube");
                crate::kube_fixture::forward_into_namespace(
                    &net.ns("kube"),
                    format!("{ip}:{KUBE_PORT}").parse()?,
                    k.upstream,
                    stop.clone(),
                )?;
                let typed = KubernetesConfig {
                    enabled: true,
                    api_url: format!("https://{ip}:{KUBE_PORT}"),
                    service_account_dir: s(&k.sa_dir),
                    deadline_ms: 400,
                    ..Default::default()
                };
                // `extra` overrides fields of the typed section (a misspelled key is refused).
                let mut table = toml::Table::try_from(&typed)?;
                table.extend(k.extra.parse::<toml::Table>()?);
                Some(table.try_into::<KubernetesConfig>()?)
            }
            None => None,
        };
        let tag = net.tag.clone();
        println!(
            "[{}] namespaces {tag}-*, 198.18.{}.0/24, dir {}",
            spec.name,
            spec.index,
            dir.path().display()
        );
        // Certificates, made by the witness's own certificate code.
        let wip = net.ip("witness");
        let node_ips: Vec<String> = NODES.iter().map(|(n, _, _)| net.ip(n)).collect();
        let members: Vec<Member> = NODES
            .iter()
            .zip(&node_ips)
            .map(|((n, r, _), ip)| Member::new(CLUSTER, r, n, &[ip]))
            .collect();
        let pki = Pki::create(
            &dir.path().join("certs"),
            &["witness", &wip],
            &members,
            &["ops"],
        )?;
        // The witness.
        let data = dir.path().join("witness-data");
        std::fs::create_dir_all(&data)?;
        let mut wconfig = harness::witness_config(
            &data,
            &format!("{wip}:{LEASE_PORT}"),
            "127.0.0.1:7480",
            pki.witness_tls(),
            &spec.timings,
        )?;
        wconfig.tick_interval_ms = Some(50);
        wconfig.limits.requests_per_second_per_identity = 200;
        wconfig.defaults.preferred_room = spec.preferred_room.clone();
        harness::write_witness(&dir.path().join("witness.toml"), &wconfig)?;
        if !spec.wiped_store {
            init_store(&data.join("state.sled"))?;
        }
        let rec = Recorder::start(&dir.path().join("events.sock"))?;
        // The nodes.
        let mut nodes = BTreeMap::new();
        for (n, r, _) in NODES {
            let nd = dir.path().join("nodes").join(n);
            std::fs::create_dir_all(nd.join("run"))?;
            let wd = WatchdogFifo::create(
                &nd.join("watchdog"),
                Duration::from_millis(spec.timings.watchdog_timeout_ms),
            )?;
            let (drbdadm, drbd_log) = drbdadm_script(&nd)?;
            let mut cfg = harness::agent_config(
                &Member::new(CLUSTER, r, n, &[]),
                &format!("https://{wip}:{LEASE_PORT}"),
                &format!("{}:{PEER_PORT}", net.ip(n)),
                &nd.join("run"),
                pki.agent_tls(n),
                &spec.timings,
            );
            cfg.event_socket = s(&rec.socket);
            cfg.peers = NODES
                .iter()
                .filter(|(_, pr, _)| *pr != r)
                .map(|(pn, _, _)| PeerConfig {
                    node: pn.to_string(),
                    address: format!("{}:{PEER_PORT}", net.ip(pn)),
                })
                .collect();
            if let Some(k) = &kubernetes {
                cfg.kubernetes = k.clone();
            }
            cfg.vm = VmConfig {
                enabled: true,
                stop_mode: spec
                    .kube
                    .as_ref()
                    .map_or("stop".into(), |k| k.stop_mode.clone()),
                local_kill: true,
                process_patterns: vec![format!("qemu-{tag}-{n}")],
                deadline_ms: 500,
            };
            cfg.drbd = DrbdConfig {
                enabled: true,
                drbdadm: s(&drbdadm),
                resources: vec!["r0".into()],
                deadline_ms: 600,
            };
            cfg.watchdog = WatchdogConfig {
                enabled: true,
                device: wd.path.clone(),
                wdctl: String::new(),
            };
            let config = harness::write_agent(&nd.join("agent.toml"), &cfg)?;
            nodes.insert(
                n.to_string(),
                NodeSlot {
                    dir: nd,
                    config,
                    agent: None,
                    vm: None,
                    wd,
                    drbd: Tail::new(&drbd_log),
                    down: true,
                    reboot_at: None,
                },
            );
        }
        let shared = Arc::new(Shared {
            spec: spec.clone(),
            rec: rec.clone(),
            net,
            inner: Mutex::new(Inner {
                nodes,
                witness: None,
                relays: Vec::new(),
            }),
            agent_bin,
            tag,
        });
        let monitor = {
            let sh = shared.clone();
            let st = stop.clone();
            std::thread::spawn(move || monitor(sh, st))
        };
        let cluster = Cluster {
            timings: spec.timings.clone(),
            spec,
            rec,
            shared,
            stop,
            monitor: Some(monitor),
            witness_bin,
            dir,
            _slot: slot,
        };
        if let Some((relay, ms)) = &cluster.spec.witness_delay {
            cluster.delay_witness(relay, *ms)?;
        }
        cluster.start_witness()?;
        for (n, _, _) in NODES {
            cluster.boot(n)?;
        }
        Ok(Some(cluster))
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.shared.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records a harness event now; returns its time.
    pub fn note(&self, node: &str, kind: &str, data: serde_json::Value) -> u64 {
        let room = room_of(node);
        self.rec.push(node, room, kind, data);
        self.rec.now()
    }

    /// Records a fault (what the failover time is measured from); returns its time.
    pub fn fault(&self, what: &str) -> u64 {
        println!("[{}] t={} ms fault: {what}", self.spec.name, self.rec.now());
        self.note("harness", "fault", json!({ "what": what }))
    }

    // ---- processes ----

    pub fn start_witness(&self) -> Result<()> {
        let ft = self.spec.faketime.get("witness").cloned();
        let p = Proc::spawn(
            "witness",
            &self.shared.net.ns("witness"),
            &self.witness_bin,
            &[
                "serve".into(),
                "--config".into(),
                s(&self.dir.path().join("witness.toml")),
            ],
            &[("WITNESS_LOG".into(), "info".into())],
            ft.as_deref(),
            &self.dir.path().join("witness.log"),
        )?;
        self.lock().witness = Some(p);
        self.note("witness", "witness_start", json!({}));
        Ok(())
    }

    /// `kill -9` the witness.
    pub fn kill_witness(&self) {
        if let Some(mut w) = self.lock().witness.take() {
            w.kill9();
        }
        self.note("witness", "witness_kill", json!({}));
    }

    /// Wipes the witness's data directory (the store, proof key, audit); certificates live
    /// elsewhere and stay. The witness must be stopped.
    pub fn wipe_witness_store(&self) -> Result<()> {
        let data = self.dir.path().join("witness-data");
        std::fs::remove_dir_all(&data)?;
        std::fs::create_dir_all(&data)?;
        self.note("witness", "witness_wipe", json!({}));
        Ok(())
    }

    /// Boots a node: link up, empty /run, the stand-in VM, then the agent.
    pub fn boot(&self, node: &str) -> Result<()> {
        boot(&self.shared, node)
    }

    /// `kill -9` a node's agent only (its VM and watchdog live on: the watchdog resets the node
    /// unless a new agent takes the device over within W).
    pub fn kill_agent(&self, node: &str) {
        if let Some(n) = self.lock().nodes.get_mut(node) {
            if let Some(mut a) = n.agent.take() {
                a.kill9();
            }
        }
        self.note(node, "agent_kill", json!({}));
    }

    /// Whether a node is down (powered off or reset and not booted yet).
    pub fn is_down(&self, node: &str) -> bool {
        self.lock().nodes.get(node).is_none_or(|n| n.down)
    }

    /// Whether a node's agent process runs.
    pub fn agent_running(&self, node: &str) -> bool {
        self.lock()
            .nodes
            .get_mut(node)
            .and_then(|n| n.agent.as_mut())
            .is_some_and(|a| a.alive())
    }

    /// Whether the witness process runs.
    pub fn witness_running(&self) -> bool {
        self.lock().witness.as_mut().is_some_and(|w| w.alive())
    }

    /// Starts a node's agent again (the node itself kept running).
    pub fn start_agent(&self, node: &str) -> Result<()> {
        start_agent(&self.shared, node)
    }

    /// Power loss of a whole room: links down, every process killed, watchdogs gone.
    pub fn power_off_room(&self, room: &str) -> Result<()> {
        for (n, r, _) in NODES {
            if r == room {
                self.power_off(n)?;
            }
        }
        Ok(())
    }

    pub fn power_off(&self, node: &str) -> Result<()> {
        if let Some(k) = &self.spec.kube {
            k.set(node, false);
        }
        self.shared.net.link(node, false)?;
        {
            let mut g = self.lock();
            if let Some(n) = g.nodes.get_mut(node) {
                if let Some(mut a) = n.agent.take() {
                    a.kill9();
                }
                if let Some(mut v) = n.vm.take() {
                    v.kill9();
                }
                n.wd.reset();
                n.down = true;
                n.reboot_at = None;
            }
        }
        self.note(node, "power_off", json!({}));
        Ok(())
    }

    // ---- network faults ----

    fn room_nodes(room: &str) -> Vec<&'static str> {
        NODES
            .iter()
            .filter(|(_, r, _)| *r == room)
            .map(|(n, _, _)| *n)
            .collect()
    }

    /// Cuts every link between the rooms, both ways.
    pub fn cut_rooms(&self) -> Result<()> {
        for a in Self::room_nodes("a") {
            for b in Self::room_nodes("b") {
                self.shared.net.drop_from(a, b, None)?;
                self.shared.net.drop_from(b, a, None)?;
            }
        }
        Ok(())
    }

    /// Room `deaf` no longer hears room `other` (packets from `other` dropped at `deaf`).
    pub fn cut_one_way(&self, deaf: &str, other: &str) -> Result<()> {
        for d in Self::room_nodes(deaf) {
            for o in Self::room_nodes(other) {
                self.shared.net.drop_from(d, o, None)?;
            }
        }
        Ok(())
    }

    /// Random loss of `pct`% on every inter-room link, both ways.
    pub fn lossy_rooms(&self, pct: u8) -> Result<()> {
        for a in Self::room_nodes("a") {
            for b in Self::room_nodes("b") {
                self.shared.net.drop_from(a, b, Some(pct))?;
                self.shared.net.drop_from(b, a, Some(pct))?;
            }
        }
        Ok(())
    }

    /// Cuts `room` from the witness, both ways.
    /// Starts the node's VM again (as KubeVirt would after an unfence) if it is not running.
    pub fn start_vm(&self, node: &str) -> Result<()> {
        let mut g = self.lock();
        let n = g.nodes.get_mut(node).context("no such node")?;
        if n.down {
            bail!("start_vm: {node} is down");
        }
        if n.vm.as_mut().is_none_or(|v| !v.alive()) {
            n.vm = Some(spawn_vm(&self.shared, node, &n.dir)?);
        }
        Ok(())
    }

    /// The nodes of `room` no longer reach the API server (nor it them): needs [`Spec::kube`].
    pub fn cut_kube(&self, room: &str) -> Result<()> {
        if self.spec.kube.is_none() {
            bail!("cut_kube: this cluster has no Kubernetes (Spec::kube)");
        }
        for n in Self::room_nodes(room) {
            self.shared.net.drop_from(n, "kube", None)?;
            self.shared.net.drop_from("kube", n, None)?;
        }
        Ok(())
    }

    pub fn cut_witness(&self, room: &str) -> Result<()> {
        for n in Self::room_nodes(room) {
            self.shared.net.drop_from(n, "witness", None)?;
            self.shared.net.drop_from("witness", n, None)?;
        }
        Ok(())
    }

    /// Undoes [`Cluster::cut_witness`] for `room`, leaving every other fault in place.
    pub fn restore_witness(&self, room: &str) -> Result<()> {
        for n in Self::room_nodes(room) {
            self.shared.net.hear_from(n, "witness")?;
            self.shared.net.hear_from("witness", n)?;
        }
        Ok(())
    }

    /// Cuts one node from everything, both ways.
    pub fn isolate_node(&self, node: &str) -> Result<()> {
        for (o, _, _) in NODES.iter().filter(|(o, _, _)| *o != node) {
            self.shared.net.drop_from(node, o, None)?;
            self.shared.net.drop_from(o, node, None)?;
        }
        self.shared.net.drop_from(node, "witness", None)?;
        self.shared.net.drop_from("witness", node, None)
    }

    /// Delays the lease API by `ms` each way (see [`Cluster::delay_port`]).
    pub fn delay_witness(&self, relay: &Path, ms: u64) -> Result<()> {
        self.delay_port("witness", LEASE_PORT, relay, ms)
    }

    /// Delays every connection to `host`'s `port` by `ms` each way: a relay (`relay`, the
    /// `delay-relay` binary) in `host`'s namespace on `port + 1000`, and an nftables redirect of
    /// `port` to it (the relay itself reaches `port` on the host's address from inside, which
    /// is not redirected: only prerouting is).
    pub fn delay_port(&self, host: &str, port: u16, relay: &Path, ms: u64) -> Result<()> {
        let relay_port = port + 1000;
        let ip = self.shared.net.ip(host);
        let p = Proc::spawn(
            "delay-relay",
            &self.shared.net.ns(host),
            relay,
            &[
                format!("0.0.0.0:{relay_port}"),
                format!("{ip}:{port}"),
                ms.to_string(),
            ],
            &[],
            None,
            &self.dir.path().join(format!("relay-{host}.log")),
        )?;
        self.lock().relays.push(p);
        std::thread::sleep(Duration::from_millis(100));
        self.shared.net.nft(
            host,
            &format!(
                "table ip witness_delay {{\n  chain prerouting {{\n    type nat hook prerouting \
                 priority -100; policy accept;\n    tcp dport {port} redirect to :{relay_port}\n  \
                 }}\n}}\n"
            ),
        )
    }

    /// Established TCP connections in `host`'s namespace whose local port is `port`.
    pub fn host_ss(&self, host: &str, port: &str) -> Result<usize> {
        let ns = self.shared.net.ns(host);
        let out = run(
            "ip",
            &[
                "netns",
                "exec",
                &ns,
                "ss",
                "-Htn",
                "state",
                "established",
                &format!("( sport = :{port} )"),
            ],
        )?;
        Ok(out.lines().filter(|l| !l.trim().is_empty()).count())
    }

    /// Removes every network fault.
    pub fn heal(&self) -> Result<()> {
        self.shared.net.heal_all()
    }

    /// Runs `witness admin --cluster c1 ARGS` with the operator certificate inside the witness's
    /// namespace; returns its output.
    pub fn admin(&self, args: &[&str]) -> Result<String> {
        let c = s(&self.dir.path().join("certs"));
        let url = format!("https://{}:{LEASE_PORT}", self.shared.net.ip("witness"));
        let ca = format!("{c}/ca.pem");
        let cert = format!("{c}/ops.pem");
        let key = format!("{c}/ops-key.pem");
        let wb = s(&self.witness_bin);
        let ns = self.shared.net.ns("witness");
        let mut a: Vec<&str> = vec!["netns", "exec", &ns, &wb, "admin", "--cluster", CLUSTER];
        a.extend_from_slice(args);
        a.extend_from_slice(&["--url", &url, "--ca", &ca, "--cert", &cert, "--key", &key]);
        let out = run("ip", &a)?;
        self.note(
            "harness",
            "admin",
            json!({ "args": args.join(" "), "out": out }),
        );
        Ok(out)
    }

    /// The witness's `/v1/status` JSON (`witness status --json` inside its namespace).
    pub fn witness_status(&self) -> Result<serde_json::Value> {
        let ns = self.shared.net.ns("witness");
        let wb = s(&self.witness_bin);
        let out = run("ip", &["netns", "exec", &ns, &wb, "status", "--json"])?;
        Ok(serde_json::from_str(&out)?)
    }

    /// A node agent's `/v1/status` JSON (`witness-agent status --json` inside its namespace).
    pub fn agent_status(&self, node: &str) -> Result<serde_json::Value> {
        let ns = self.shared.net.ns(node);
        let ab = s(&self.shared.agent_bin);
        let out = run("ip", &["netns", "exec", &ns, &ab, "status", "--json"])?;
        Ok(serde_json::from_str(&out)?)
    }

    /// The agent's `/metrics` page (its status port, inside its namespace).
    pub fn agent_metrics(&self, node: &str) -> Result<String> {
        let ns = self.shared.net.ns(node);
        run(
            "ip",
            &[
                "netns",
                "exec",
                &ns,
                "curl",
                "-sf",
                "--max-time",
                "5",
                "http://127.0.0.1:7481/metrics",
            ],
        )
    }

    // ---- the timeline ----

    pub fn events(&self) -> Vec<Event> {
        self.rec.events()
    }

    /// Every node's room.
    pub fn rooms() -> BTreeMap<String, String> {
        NODES
            .iter()
            .map(|(n, r, _)| (n.to_string(), r.to_string()))
            .collect()
    }

    /// A node's phase now as the timeline says (`down` after a reset or power loss).
    pub fn phase(&self, node: &str) -> String {
        phase_in(&self.events(), node)
    }

    /// Waits (polling, bounded by `timeout_ms`) until `pred` holds on the timeline; returns
    /// the harness time it first held.
    pub fn wait_for(
        &self,
        what: &str,
        timeout_ms: u64,
        pred: impl Fn(&[Event]) -> bool,
    ) -> Result<u64> {
        let deadline = Instant::now() + Duration::from_millis(timeout_ms);
        loop {
            if pred(&self.events()) {
                return Ok(self.rec.now());
            }
            if Instant::now() >= deadline {
                bail!(
                    "[{}] timed out after {timeout_ms} ms waiting for {what}; phases: {}",
                    self.spec.name,
                    self.phases_line()
                );
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    /// Waits until every listed node is in `phase`.
    pub fn wait_phase(&self, nodes: &[&str], phase: &str, timeout_ms: u64) -> Result<u64> {
        let list: Vec<String> = nodes.iter().map(|n| n.to_string()).collect();
        let ph = phase.to_string();
        self.wait_for(&format!("{nodes:?} {phase}"), timeout_ms, move |ev| {
            list.iter().all(|n| phase_in(ev, n) == ph)
        })
    }

    /// Waits until every node is active (a warm cluster).
    pub fn wait_all_active(&self, timeout_ms: u64) -> Result<u64> {
        self.wait_phase(&["a1", "a2", "b1", "b2"], "active", timeout_ms)
    }

    /// Keeps watching for `ms`, failing at once if `bad` ever holds.
    pub fn hold(
        &self,
        ms: u64,
        what: &str,
        bad: impl Fn(&[Event]) -> Option<String>,
    ) -> Result<()> {
        let deadline = Instant::now() + Duration::from_millis(ms);
        while Instant::now() < deadline {
            if let Some(why) = bad(&self.events()) {
                bail!("[{}] {what}: {why}", self.spec.name);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    }

    /// `a1=active a2=fenced ...`
    pub fn phases_line(&self) -> String {
        let ev = self.events();
        NODES
            .iter()
            .map(|(n, _, _)| format!("{n}={}", phase_in(&ev, n)))
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// The first event after `t0` matching.
    pub fn first_after(&self, t0: u64, f: impl Fn(&Event) -> bool) -> Option<Event> {
        self.events().into_iter().find(|e| e.t >= t0 && f(e))
    }

    /// Runs the checker over the timeline and prints its verdict.
    pub fn verdict(&self) -> Verdict {
        let v = check(&self.events(), &Self::rooms());
        println!("[{}] {}", self.spec.name, v.line());
        v
    }

    /// Prints the interesting part of the timeline (no pets).
    pub fn print_timeline(&self) {
        for e in self.events() {
            if matches!(e.kind.as_str(), "pet" | "driver") {
                continue;
            }
            let mut d = e.data.clone();
            if let Some(o) = d.as_object_mut() {
                for k in ["event", "cluster", "room", "node", "ts_ms"] {
                    o.remove(k);
                }
            }
            println!("  {:>7} {:<8} {:<16} {}", e.t, e.node, e.kind, d);
        }
    }

    /// Copies the logs of the run to `target/scenario-report/logs/<name>/` for a post-mortem.
    pub fn keep_logs(&self) {
        let root = crate::report::report_dir()
            .join("logs")
            .join(&self.spec.name);
        let _ = std::fs::create_dir_all(&root);
        let _ = std::fs::copy(
            self.dir.path().join("witness.log"),
            root.join("witness.log"),
        );
        for (n, _, _) in NODES {
            let nd = self.dir.path().join("nodes").join(n);
            let _ = std::fs::copy(nd.join("agent.log"), root.join(format!("{n}.log")));
            let _ = std::fs::copy(
                nd.join("drbdadm.log"),
                root.join(format!("{n}-drbdadm.log")),
            );
        }
        let lines: Vec<String> = self
            .events()
            .iter()
            .filter(|e| e.kind != "pet")
            .filter_map(|e| serde_json::to_string(e).ok())
            .collect();
        let _ = std::fs::write(root.join("timeline.jsonl"), lines.join("\n"));
    }
}

/// A node's phase at the end of `ev`: its last phase event, or `down` after a reset or power
/// loss, or `none` before any.
pub fn phase_in(ev: &[Event], node: &str) -> String {
    let mut p = "none".to_string();
    for e in ev.iter().filter(|e| e.node == node) {
        match e.kind.as_str() {
            "phase" => p = e.str("phase").to_string(),
            "reset" | "power_off" => p = "down".into(),
            _ => {}
        }
    }
    p
}

fn room_of(node: &str) -> &'static str {
    NODES
        .iter()
        .find(|(n, _, _)| *n == node)
        .map(|(_, r, _)| *r)
        .unwrap_or("")
}

fn init_store(path: &Path) -> Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(witness::store::Store::init_fresh(path))
        .map_err(|e| anyhow::anyhow!("init_fresh {}: {e}", path.display()))
}

fn boot(sh: &Shared, node: &str) -> Result<()> {
    sh.net.link(node, true)?;
    if let Some(k) = &sh.spec.kube {
        k.set(node, true);
    }
    {
        let mut g = sh.inner.lock().unwrap_or_else(|e| e.into_inner());
        let n = g.nodes.get_mut(node).context("no such node")?;
        // /run is tmpfs: empty at boot.
        let run_dir = n.dir.join("run");
        let _ = std::fs::remove_dir_all(&run_dir);
        std::fs::create_dir_all(&run_dir)?;
        std::fs::remove_file(n.dir.join("drbd-secondary")).ok();
        n.vm = Some(spawn_vm(sh, node, &n.dir)?);
        n.down = false;
        n.reboot_at = None;
    }
    sh.rec.push(node, room_of(node), "boot", json!({}));
    start_agent(sh, node)
}

/// The node's stand-in VM: a `sleep` whose argv[0] the agent's `process_patterns` match.
fn spawn_vm(sh: &Shared, node: &str, dir: &Path) -> Result<Proc> {
    let vm_name = format!("qemu-{}-{node}", sh.tag);
    Proc::spawn(
        &vm_name,
        &sh.net.ns(node),
        Path::new("/bin/bash"),
        &["-c".into(), format!("exec -a {vm_name} sleep 86400")],
        &[],
        None,
        &dir.join("vm.log"),
    )
}

fn start_agent(sh: &Shared, node: &str) -> Result<()> {
    let mut g = sh.inner.lock().unwrap_or_else(|e| e.into_inner());
    let n = g.nodes.get_mut(node).context("no such node")?;
    let ft = sh.spec.faketime.get(node).cloned();
    let p = Proc::spawn(
        node,
        &sh.net.ns(node),
        &sh.agent_bin,
        &["run".into(), "--config".into(), s(&n.config)],
        &[("RUST_LOG".into(), "info".into())],
        ft.as_deref(),
        &n.dir.join("agent.log"),
    )?;
    n.agent = Some(p);
    drop(g);
    sh.rec.push(node, room_of(node), "agent_start", json!({}));
    Ok(())
}

/// The monitor: watchdog FIFOs, drbdadm logs, VM and agent deaths, resets and reboots.
fn monitor(sh: Arc<Shared>, stop: Arc<AtomicBool>) {
    let started = Instant::now();
    while !stop.load(Ordering::SeqCst) && started.elapsed() < MONITOR_MAX {
        let now = Instant::now();
        let mut events: Vec<(String, String, serde_json::Value)> = Vec::new();
        let mut reboot: Vec<String> = Vec::new();
        {
            let mut g = sh.inner.lock().unwrap_or_else(|e| e.into_inner());
            for (name, n) in g.nodes.iter_mut() {
                let p = n.wd.poll(now);
                if p.armed {
                    events.push((name.clone(), "wd_armed".into(), json!({})));
                }
                if p.pets > 0 {
                    events.push((name.clone(), "pet".into(), json!({ "n": p.pets })));
                }
                if p.disarmed {
                    events.push((name.clone(), "wd_disarmed".into(), json!({})));
                }
                if p.closed_armed {
                    events.push((name.clone(), "wd_closed_armed".into(), json!({})));
                }
                for l in n.drbd.lines() {
                    events.push((name.clone(), "drbdadm".into(), json!({ "args": l })));
                }
                if let Some(v) = n.vm.as_mut() {
                    if !v.alive() {
                        n.vm = None;
                        events.push((name.clone(), "vm_stopped".into(), json!({})));
                    }
                }
                if let Some(a) = n.agent.as_mut() {
                    if !a.alive() {
                        n.agent = None;
                        events.push((name.clone(), "agent_exit".into(), json!({})));
                    }
                }
                if p.expired && !n.down {
                    // The watchdog fires: the machine resets. Everything on it dies; /run is
                    // tmpfs.
                    if let Some(mut a) = n.agent.take() {
                        a.kill9();
                    }
                    if let Some(mut v) = n.vm.take() {
                        v.kill9();
                    }
                    n.wd.reset();
                    let _ = std::fs::remove_dir_all(n.dir.join("run"));
                    n.down = true;
                    if let Some(k) = &sh.spec.kube {
                        k.set(name, false);
                    }
                    n.reboot_at = sh
                        .spec
                        .reboot_after_reset_ms
                        .map(|ms| now + Duration::from_millis(ms));
                    events.push((name.clone(), "reset".into(), json!({})));
                } else if p.expired {
                    n.wd.reset();
                }
                if n.down && n.reboot_at.is_some_and(|t| now >= t) {
                    n.reboot_at = None;
                    reboot.push(name.clone());
                }
            }
        }
        for (node, kind, data) in events {
            if kind == "reset" {
                println!(
                    "[{}] t={} ms watchdog reset of {node}",
                    sh.spec.name,
                    sh.rec.now()
                );
            }
            sh.rec.push(&node, room_of(&node), &kind, data);
        }
        for node in reboot {
            if let Err(e) = boot(&sh, &node) {
                sh.rec.push(
                    &node,
                    room_of(&node),
                    "boot_failed",
                    json!({ "error": e.to_string() }),
                );
            }
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.keep_logs();
            self.print_timeline();
        }
        self.stop.store(true, Ordering::SeqCst);
        if let Some(m) = self.monitor.take() {
            let _ = m.join();
        }
        let mut g = self.lock();
        for n in g.nodes.values_mut() {
            if let Some(mut a) = n.agent.take() {
                a.kill9();
            }
            if let Some(mut v) = n.vm.take() {
                v.kill9();
            }
        }
        if let Some(mut w) = g.witness.take() {
            w.kill9();
        }
        for mut r in g.relays.drain(..) {
            r.kill9();
        }
        drop(g);
        self.rec.shutdown();
        // Net (namespaces) and the temp dir go with the fields.
    }
}
