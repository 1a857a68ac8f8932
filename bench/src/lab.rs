//! A witness and two rooms of real agents on 127.0.0.1, without root: the `witness serve` and
//! `witness-agent run` binaries as child processes, certificates and config files from
//! `witness-harness` (the witness's own certificate code, the real config types), a
//! pre-initialised store (no forgotten-state wait), log-only drivers
//! (Kubernetes, VM, DRBD and the watchdog disabled: there is no watchdog device here; every phase change
//! and action goes to a unix socket this process listens on).
//!
//! Everything the lab learns becomes one stream of [`Ev`]: the witness's JSON log (verdicts,
//! mode changes), the agents' event socket (phase, fence, takeover, release, unfence), and a
//! poll of each agent's `/v1/status` every 50 ms (peer contact, claims). Every child process is
//! killed when the lab is dropped (also on panic); [`Lab::shutdown`] stops them gracefully.
use crate::{free_port, http1, sys};
use agent::config::PeerConfig;
use anyhow::{bail, Context, Result};
use harness::pki::Member;
use harness::Pki;
use proto::Timings;
use serde_json::Value;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// The lab's cluster name.
pub const CLUSTER: &str = "demo";
/// The nodes: (room, node).
pub const NODES: [(&str, &str); 4] = [("a", "a1"), ("a", "a2"), ("b", "b1"), ("b", "b2")];

/// Protocol timings four times shorter than the defaults (still valid per `Timings::validate`;
/// the watchdog counts whole seconds, so it stays at 1 s).
pub fn quick_timings() -> Timings {
    Timings {
        heartbeat_interval_ms: 125,
        peer_timeout_ms: 500,
        renew_interval_ms: 250,
        lease_ms: 1_000,
        silence_ms: 625,
        fence_deadline_ms: 750,
        watchdog_timeout_ms: 1_000,
        drift_ppm: 10_000,
        rejoin_stable_ms: 2_500,
        min_fenced_ms: 1_250,
    }
}

/// What kind of thing happened.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// The witness's verdict for a node changed (grant paired/alone, fence, retry).
    Verdict,
    /// The witness changed the cluster's mode (a decision, with a new epoch).
    Decision,
    /// A node lost peer contact (no vouched answer from every node of the other room within P).
    PeerLost,
    /// A node (re)gained peer contact.
    PeerOk,
    /// A node asks the witness to let its room act alone.
    Claim,
    /// A node's phase changed (starting, active, fencing, fenced).
    Phase,
    /// A node starts fencing.
    Fence,
    /// Fencing finished (`ok`).
    FenceDone,
    /// A survivor node takes over the other room's workloads.
    Takeover,
    /// The takeover is released (the other room rejoins).
    Release,
    /// A fenced node unfences.
    Unfence,
    /// Something else worth a line.
    Other,
}

/// One thing that happened, when this process learned of it.
#[derive(Clone, Debug)]
pub struct Ev {
    pub at: Instant,
    /// `witness` or the node's name.
    pub who: String,
    pub kind: Kind,
    pub text: String,
    pub epoch: Option<u64>,
}

struct AgentProc {
    room: String,
    node: String,
    peer_port: u16,
    /// The other room reaches this agent through the lab's relay on this port (see
    /// [`Lab::split`]).
    relay_port: u16,
    status_port: u16,
    child: Option<Child>,
    generation: u32,
}

/// The running lab.
pub struct Lab {
    dir: tempfile::TempDir,
    pki: Pki,
    pub timings: Timings,
    agent_bin: PathBuf,
    witness: Option<Child>,
    pub witness_pid: u32,
    pub witness_lease_port: u16,
    pub witness_status: String,
    agents: Vec<AgentProc>,
    tx: mpsc::UnboundedSender<Ev>,
    rx: mpsc::UnboundedReceiver<Ev>,
    /// The newest `/v1/status` of each node (absent while it does not answer).
    status: Arc<Mutex<HashMap<String, Value>>>,
    tasks: Vec<JoinHandle<()>>,
    /// True while the link between the rooms is cut.
    cut: tokio::sync::watch::Sender<bool>,
}

impl Lab {
    /// Starts the witness and the four agents with `timings`; returns once the witness answers
    /// (the agents are still starting).
    pub async fn start(
        witness_bin: &Path,
        agent_bin: &Path,
        timings: Timings,
        tick_ms: u64,
    ) -> Result<Lab> {
        timings
            .validate()
            .map_err(|e| anyhow::anyhow!("lab timings refused: {e}"))?;
        let dir = tempfile::Builder::new()
            .prefix("witness-lab-")
            .tempdir()
            .context("creating the lab's temp dir")?;
        let d = dir.path();
        let members: Vec<Member> = NODES
            .iter()
            .map(|(room, node)| Member::new(CLUSTER, room, node, &["127.0.0.1", "localhost"]))
            .collect();
        let pki = Pki::create(&d.join("certs"), &[], &members, &[])?;
        let wdata = d.join("witness");
        std::fs::create_dir_all(&wdata)?;
        // A new, intact store: no witness ever granted anything to this cluster.
        witness::store::Store::init_fresh(&wdata.join("state.sled"))
            .await
            .context("initialising the witness store")?;
        let lease_port = free_port()?;
        let status_port = free_port()?;
        let mut wconfig = harness::witness_config(
            &wdata,
            &format!("127.0.0.1:{lease_port}"),
            &format!("127.0.0.1:{status_port}"),
            pki.witness_tls(),
            &timings,
        )?;
        wconfig.tick_interval_ms = Some(tick_ms);
        let wconf = harness::write_witness(&d.join("witness.toml"), &wconfig)?;
        let (tx, rx) = mpsc::unbounded_channel();
        let mut tasks = Vec::new();

        // The event socket the agents write to.
        let sock = d.join("events.sock");
        let listener = tokio::net::UnixListener::bind(&sock).context("binding the event socket")?;
        {
            let tx = tx.clone();
            tasks.push(tokio::spawn(async move {
                while let Ok((conn, _)) = listener.accept().await {
                    let tx = tx.clone();
                    tokio::spawn(async move {
                        let mut lines = BufReader::new(conn).lines();
                        while let Ok(Some(line)) = lines.next_line().await {
                            if let Ok(v) = serde_json::from_str::<Value>(&line) {
                                if let Some(ev) = agent_event(&v) {
                                    let _ = tx.send(ev);
                                }
                            }
                        }
                    });
                }
            }));
        }

        let mut wchild = Command::new(witness_bin)
            .args(["serve", "--log-json", "--config"])
            .arg(&wconf)
            .env("WITNESS_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {}", witness_bin.display()))?;
        let witness_pid = wchild.id().context("witness has no pid")?;
        let stderr = wchild.stderr.take().context("witness stderr")?;
        let wlog = d.join("witness.log");
        {
            let tx = tx.clone();
            tasks.push(tokio::spawn(async move {
                let mut out = std::fs::File::create(&wlog).ok();
                let mut lines = BufReader::new(stderr).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    if let Some(f) = out.as_mut() {
                        use std::io::Write;
                        let _ = writeln!(f, "{line}");
                    }
                    if let Ok(v) = serde_json::from_str::<Value>(&line) {
                        if let Some(ev) = witness_event(&v) {
                            let _ = tx.send(ev);
                        }
                    }
                }
            }));
        }
        let witness_status = format!("127.0.0.1:{status_port}");
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Ok((200, _)) =
                http1::get(&witness_status, "/readyz", Duration::from_millis(500)).await
            {
                break;
            }
            if let Ok(Some(s)) = wchild.try_wait() {
                bail!(
                    "the witness exited ({s}); its log: {}",
                    tail(&d.join("witness.log"))
                );
            }
            if Instant::now() > deadline {
                bail!(
                    "the witness did not become ready within 15 s; its log: {}",
                    tail(&d.join("witness.log"))
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }

        let mut agents = Vec::new();
        let (cut, cut_rx) = tokio::sync::watch::channel(false);
        for (room, node) in NODES {
            let peer_port = free_port()?;
            let relay = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .context("binding a relay port for the link between the rooms")?;
            let relay_port = relay.local_addr()?.port();
            tasks.push(tokio::spawn(run_relay(relay, peer_port, cut_rx.clone())));
            agents.push(AgentProc {
                room: room.into(),
                node: node.into(),
                peer_port,
                relay_port,
                status_port: free_port()?,
                child: None,
                generation: 0,
            });
        }
        let mut lab = Lab {
            dir,
            pki,
            timings,
            agent_bin: agent_bin.to_path_buf(),
            witness: Some(wchild),
            witness_pid,
            witness_lease_port: lease_port,
            witness_status,
            agents,
            tx,
            rx,
            status: Arc::new(Mutex::new(HashMap::new())),
            tasks,
            cut,
        };
        for i in 0..lab.agents.len() {
            lab.spawn_agent(i)?;
            let (node, port) = (lab.agents[i].node.clone(), lab.agents[i].status_port);
            let task = tokio::spawn(poll_status(
                node,
                format!("127.0.0.1:{port}"),
                lab.status.clone(),
                lab.tx.clone(),
            ));
            lab.tasks.push(task);
        }
        Ok(lab)
    }

    /// The lab's temp dir (logs: `witness.log`, `<node>.log`).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The pids of the running agents: (node, pid).
    pub fn agent_pids(&self) -> Vec<(String, u32)> {
        self.agents
            .iter()
            .filter_map(|a| Some((a.node.clone(), a.child.as_ref()?.id()?)))
            .collect()
    }

    fn spawn_agent(&mut self, i: usize) -> Result<()> {
        let d = self.dir.path().to_path_buf();
        self.agents[i].generation += 1;
        let peers = peers_for(&self.agents, i);
        let a = &self.agents[i];
        let run_dir = d.join(format!("run-{}-{}", a.node, a.generation));
        std::fs::create_dir_all(&run_dir)?;
        let mut config = harness::agent_config(
            &Member::new(CLUSTER, &a.room, &a.node, &[]),
            &format!("https://127.0.0.1:{}", self.witness_lease_port),
            &format!("127.0.0.1:{}", a.peer_port),
            &run_dir,
            self.pki.agent_tls(&a.node),
            &self.timings,
        );
        config.status_listen = format!("127.0.0.1:{}", a.status_port);
        config.event_socket = d.join("events.sock").to_string_lossy().into_owned();
        config.peers = peers;
        let conf = harness::write_agent(&d.join(format!("{}.toml", a.node)), &config)?;
        let a = &mut self.agents[i];
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(d.join(format!("{}.log", a.node)))?;
        let child = Command::new(&self.agent_bin)
            .args(["run", "--config"])
            .arg(&conf)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {}", self.agent_bin.display()))?;
        a.child = Some(child);
        Ok(())
    }

    /// The next event, or `None` when `deadline` passes first.
    pub async fn next_event(&mut self, deadline: Instant) -> Option<Ev> {
        let left = deadline.saturating_duration_since(Instant::now());
        tokio::time::timeout(left, self.rx.recv())
            .await
            .ok()
            .flatten()
    }

    /// The newest status of a node.
    pub fn node_status(&self, node: &str) -> Option<Value> {
        self.status.lock().ok()?.get(node).cloned()
    }

    /// Every node of `rooms` is active, holds a paired lease and has peer contact.
    pub fn paired(&self, rooms: &[&str]) -> bool {
        let Ok(m) = self.status.lock() else {
            return false;
        };
        NODES
            .iter()
            .filter(|(r, _)| rooms.contains(r))
            .all(|(_, n)| {
                m.get(*n).is_some_and(|s| {
                    s["phase"] == "active"
                        && s["lease"]["mode"] == "paired"
                        && s["lease"]["valid"] == true
                        && s["peer_contact"] == true
                        && s["takeover"]["active"] == false
                })
            })
    }

    /// Cuts the power to a room: `kill -9` of every agent of it (its node "stops at once").
    /// Returns the instant of the kill.
    pub async fn power_off(&mut self, room: &str) -> Instant {
        let mut at = None;
        for a in self.agents.iter_mut().filter(|a| a.room == room) {
            if let Some(c) = a.child.as_mut() {
                let _ = c.start_kill(); // SIGKILL
                at.get_or_insert_with(Instant::now);
            }
        }
        let at = at.unwrap_or_else(Instant::now);
        for a in self.agents.iter_mut().filter(|a| a.room == room) {
            if let Some(mut c) = a.child.take() {
                let _ = c.wait().await;
            }
        }
        if let Ok(mut m) = self.status.lock() {
            for a in self.agents.iter().filter(|a| a.room == room) {
                m.remove(&a.node);
            }
        }
        at
    }

    /// Cuts the link between the rooms (both still reach the witness): nothing passes between
    /// them, as when a firewall drops the packets. Returns the instant of the cut.
    pub fn split(&self) -> Instant {
        let _ = self.cut.send(true);
        Instant::now()
    }

    /// Mends the link cut by [`Lab::split`]: what waited passes, and so does everything new.
    pub fn heal(&self) -> Instant {
        let _ = self.cut.send(false);
        Instant::now()
    }

    /// Powers a room back on: its agents start again with fresh (empty) run dirs, as after a
    /// reboot.
    pub fn power_on(&mut self, room: &str) -> Result<()> {
        for i in 0..self.agents.len() {
            if self.agents[i].room == room && self.agents[i].child.is_none() {
                self.spawn_agent(i)?;
            }
        }
        Ok(())
    }

    /// Stops every process gracefully (SIGTERM, then SIGKILL after 3 s) and waits for them.
    pub async fn shutdown(mut self) {
        let mut children: Vec<Child> = self
            .agents
            .iter_mut()
            .filter_map(|a| a.child.take())
            .collect();
        children.extend(self.witness.take());
        for c in &children {
            if let Some(pid) = c.id() {
                sys::signal(pid, "TERM");
            }
        }
        for mut c in children {
            if tokio::time::timeout(Duration::from_secs(3), c.wait())
                .await
                .is_err()
            {
                let _ = c.start_kill();
                let _ = c.wait().await;
            }
        }
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
        for c in self
            .agents
            .iter_mut()
            .filter_map(|a| a.child.as_mut())
            .chain(self.witness.as_mut())
        {
            let _ = c.start_kill();
        }
    }
}

/// The other room's agents, reached through their relays.
fn peers_for(agents: &[AgentProc], i: usize) -> Vec<PeerConfig> {
    agents
        .iter()
        .filter(|p| p.room != agents[i].room)
        .map(|p| PeerConfig {
            node: p.node.clone(),
            address: format!("127.0.0.1:{}", p.relay_port),
        })
        .collect()
}

/// The link between the rooms, for one agent: forwards connections from the other room to the
/// agent's peer port. While `cut` is set nothing passes: bytes already on their way wait in the
/// relay and new connections wait unanswered, as behind a firewall that drops packets; once the
/// link is mended everything that is still open flows again (as TCP retransmissions would).
async fn run_relay(
    listener: tokio::net::TcpListener,
    target: u16,
    cut: tokio::sync::watch::Receiver<bool>,
) {
    while let Ok((inbound, _)) = listener.accept().await {
        let mut cut = cut.clone();
        tokio::spawn(async move {
            if cut.wait_for(|c| !*c).await.is_err() {
                return;
            }
            let Ok(outbound) = tokio::net::TcpStream::connect(("127.0.0.1", target)).await else {
                return;
            };
            let (ri, wi) = inbound.into_split();
            let (ro, wo) = outbound.into_split();
            tokio::select! {
                _ = pump(ri, wo, cut.clone()) => {}
                _ = pump(ro, wi, cut) => {}
            }
        });
    }
}

/// Copies one direction of a relayed connection, holding each chunk while the link is cut.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut cut: tokio::sync::watch::Receiver<bool>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if cut.wait_for(|c| !*c).await.is_err() {
            return;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

/// The last lines of a log file, for error messages.
pub fn tail(path: &Path) -> String {
    let s = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(15)..].join("\n")
}

fn as_u64(v: &Value) -> Option<u64> {
    v.as_u64().or_else(|| v.as_str()?.parse().ok())
}

/// A line of the witness's JSON log that belongs on the timeline.
fn witness_event(v: &Value) -> Option<Ev> {
    let f = &v["fields"];
    let msg = f["message"].as_str()?;
    let at = Instant::now();
    let epoch = as_u64(&f["epoch"]);
    match msg {
        "mode changed" => Some(Ev {
            at,
            who: "witness".into(),
            kind: Kind::Decision,
            text: format!(
                "DECISION {} -> {} (survivor: {}), epoch {}: {}",
                mode_text(f["from"].as_str().unwrap_or("?")),
                mode_text(f["to"].as_str().unwrap_or("?")),
                f["survivor"].as_str().unwrap_or("-"),
                epoch.map(|e| e.to_string()).unwrap_or("?".into()),
                f["why"].as_str().unwrap_or("")
            ),
            epoch,
        }),
        "verdict for this node changed" => Some(Ev {
            at,
            who: "witness".into(),
            kind: Kind::Verdict,
            text: format!(
                "-> {}: {} (epoch {})",
                f["node"].as_str().unwrap_or("?"),
                verdict_text(f["verdict"].as_str().unwrap_or("?")),
                epoch.map(|e| e.to_string()).unwrap_or("?".into())
            ),
            epoch,
        }),
        _ => None,
    }
}

fn mode_text(s: &str) -> String {
    s.replace("RoomId(\"", "")
        .replace("\")", "")
        .replace("(\"", "(")
        .replace("\")", ")")
}

/// `Grant { mode: Alone { takeover: Wait }, valid_ms: 1000 }` -> `grant alone (takeover: wait), 1000 ms`.
fn verdict_text(s: &str) -> String {
    if let Some(rest) = s.strip_prefix("Grant { mode: ") {
        let mode = if rest.starts_with("Paired") {
            "paired".to_string()
        } else if let Some(t) = rest.strip_prefix("Alone { takeover: ") {
            let permit = t.split_whitespace().next().unwrap_or("?").to_lowercase();
            format!("ALONE (takeover: {permit})")
        } else {
            rest.to_string()
        };
        let ms = s
            .rsplit("valid_ms: ")
            .next()
            .and_then(|x| x.split_whitespace().next())
            .unwrap_or("?");
        format!("grant {mode}, valid {ms} ms")
    } else if s.starts_with("Fence") {
        format!("FENCE {}", s.trim_start_matches("Fence "))
    } else if s.starts_with("Retry") {
        format!("retry {}", s.trim_start_matches("Retry "))
    } else {
        s.to_string()
    }
}

/// A line from the agents' event socket that belongs on the timeline.
fn agent_event(v: &Value) -> Option<Ev> {
    let node = v["node"].as_str()?.to_string();
    let epoch = as_u64(&v["epoch"]);
    let e = epoch.map(|e| format!(" (epoch {e})")).unwrap_or_default();
    let (kind, text) = match v["event"].as_str()? {
        "phase" => (
            Kind::Phase,
            format!("phase {}{e}", v["phase"].as_str().unwrap_or("?")),
        ),
        "fence" => (
            Kind::Fence,
            format!("FENCE{e}: {}", v["reason"].as_str().unwrap_or("")),
        ),
        "fence_done" => (Kind::FenceDone, format!("fencing done, ok={}", v["ok"])),
        "driver" => (
            Kind::Other,
            format!(
                "  driver {}: {} ({} ms)",
                v["driver"].as_str().unwrap_or("?"),
                // A driver switched off in the lab's configuration is "skipped" by the agent.
                match v["result"].as_str().unwrap_or("?") {
                    "skipped" => "disabled",
                    other => other,
                },
                v["elapsed_ms"]
            ),
        ),
        "takeover" => (
            Kind::Takeover,
            format!(
                "TAKEOVER of the other room's workloads{e}, proof attached: {}",
                v["proof"]
            ),
        ),
        "takeover_applied" => (Kind::Other, "takeover applied (log-only drivers)".into()),
        "release" => (Kind::Release, format!("RELEASE of the takeover{e}")),
        "release_applied" => (Kind::Other, "release applied".into()),
        "unfence" => (Kind::Unfence, format!("UNFENCE{e}")),
        "unfenced" => (Kind::Other, "unfenced".into()),
        _ => return None,
    };
    Some(Ev {
        at: Instant::now(),
        who: node,
        kind,
        text,
        epoch,
    })
}

/// Polls one agent's `/v1/status` every 50 ms; keeps the newest in `status`, and reports changes
/// of peer contact and claims as events.
async fn poll_status(
    node: String,
    addr: String,
    status: Arc<Mutex<HashMap<String, Value>>>,
    tx: mpsc::UnboundedSender<Ev>,
) {
    let mut contact: Option<bool> = None;
    let mut claiming = false;
    loop {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let Ok(v) = http1::get_json(&addr, "/v1/status").await else {
            contact = None;
            claiming = false;
            continue;
        };
        let at = Instant::now();
        let epoch = v["epoch"].as_u64();
        let c = v["peer_contact"] == true;
        // Starting nodes have no contact to lose; report transitions of running nodes.
        if v["phase"] == "active" && contact.is_some_and(|old| old != c) {
            let (kind, text) = if c {
                (Kind::PeerOk, "peer contact established".to_string())
            } else {
                (
                    Kind::PeerLost,
                    "LOSS DETECTED: peer contact lost (no vouched answer from every node of the other room within P)".to_string(),
                )
            };
            let _ = tx.send(Ev {
                at,
                who: node.clone(),
                kind,
                text,
                epoch,
            });
        }
        if v["phase"] == "active" {
            contact = Some(c);
        }
        let cl = v["claiming"] == true;
        if cl && !claiming {
            let _ = tx.send(Ev {
                at,
                who: node.clone(),
                kind: Kind::Claim,
                text: "claims: asks the witness to let room act alone".into(),
                epoch,
            });
        }
        claiming = cl;
        if let Ok(mut m) = status.lock() {
            m.insert(node.clone(), v);
        }
    }
}
