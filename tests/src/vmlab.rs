//! The VM lab: the real `witness-agent` in two qemu virtual machines (software emulation, TCG),
//! one per room, each with the real emulated watchdog card (`-device i6300esb -action
//! watchdog=reset`) and a small virtual disk replicated by the real in-tree DRBD 8.4 between
//! the rooms; the real `witness` on the host side of the link. The node image comes from
//! Debian packages only (`tests/vmlab/build-image.sh`).
//!
//! Layout: one network namespace `vml<pid>` holding a bridge `br0` (10.77.0.1, where the witness
//! listens) and one tap per VM (`ta1` for a1 = 10.77.0.11 in room a, `tb1` for b1 = 10.77.0.21
//! in room b). Each qemu runs inside that namespace with three host-side unix sockets: the
//! console (ttyS0: kernel, init and agent output, every line stamped on arrival with the
//! recorder's clock), a control shell (ttyS1) and QMP (whose `WATCHDOG` event is the moment the
//! card fired). Cuts between the rooms are nftables `bridge` rules in the namespace.
//!
//! Everything is torn down on `Drop` (qemu killed, namespace deleted), also when a test panics.
use crate::net::run;
use crate::procs::{binary, Proc};
use crate::recorder::{Event, Recorder};
use anyhow::{bail, Context, Result};
use proto::Timings;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// (node, room, tap, address).
pub const NODES: [(&str, &str, &str, &str); 2] = [
    ("a1", "a", "ta1", "10.77.0.11"),
    ("b1", "b", "tb1", "10.77.0.21"),
];
/// The host side of the link, where the witness listens.
pub const HOST_IP: &str = "10.77.0.1";
const CLUSTER: &str = "c1";
/// The virtual disk under DRBD: small, so a resync takes seconds under TCG.
const DISK_BYTES: u64 = 8 << 20;
/// The disk of the Dqlite scenario: Dqlite's Raft log preallocates 3 segments of 8 MiB.
const DQLITE_DISK_BYTES: u64 = 64 << 20;
/// Where Dqlite serves (`tests/vmlab/dqlite`): the address moves with r0's Primary.
pub const DQLITE_ADDR: &str = "10.77.0.50:8001";
/// Readers never outlive this.
const MAX_LIFE: Duration = Duration::from_secs(3600);

/// The DRBD resource exactly as the lab runs it (DRBD 8.4.11 syntax, read by drbd-utils 9.22's
/// `drbdadm-84`); `{a1}`/`{b1}` are the nodes' addresses. docs/operations.md quotes it.
pub const DRBD_CONF: &str = "global { usage-count no; }
resource r0 {
  protocol C;
  net {
    ping-int 3;
    after-sb-0pri disconnect;
    after-sb-1pri disconnect;
    after-sb-2pri disconnect;
  }
  disk { fencing resource-and-stonith; }
  handlers {
    fence-peer \"/usr/bin/witness-agent drbd-fence-peer --timeout-ms 60000\";
  }
  on a1 { device /dev/drbd0; disk /dev/vda; address {a1}:7789; meta-disk internal; }
  on b1 { device /dev/drbd0; disk /dev/vda; address {b1}:7789; meta-disk internal; }
}
";

/// The takeover hooks of room a's node: r0 and its writer are room b's workload, so the
/// survivor in room a promotes r0 and starts the writer when it takes room b over, and gives
/// both back when room b rejoins. Room b's node has none: when room b survives, r0 is its own
/// and stays where it runs (a release hook there would stop room b's own workload at rejoin).
const TAKEOVER_HOOKS: &str = "[[hooks]]\nname = \"promote-r0\"\non = [\"takeover\"]\n\
     command = [\"/bin/sh\", \"-c\", \"drbdadm primary r0 && \
     (pidof vmlab-writer >/dev/null || \
     (setsid vmlab-writer 1001 </dev/null >/dev/null 2>&1 &))\"]\ntimeout_ms = 30000\n\
     [[hooks]]\nname = \"demote-r0\"\non = [\"release\"]\n\
     command = [\"/bin/sh\", \"-c\", \"killall vmlab-writer; sleep 0.5; \
     drbdadm secondary r0\"]\ntimeout_ms = 30000\n";

/// Room a's takeover hooks when the datastore is Dqlite: promote r0, mount it, take the service
/// address and start Dqlite; on release stop it, unmount and demote.
const DQLITE_HOOKS: &str = "[[hooks]]\nname = \"promote-r0\"\non = [\"takeover\"]\n\
     command = [\"/bin/sh\", \"-c\", \"drbdadm primary r0 && vmlab-dqlite start\"]\n\
     timeout_ms = 30000\n\
     [[hooks]]\nname = \"demote-r0\"\non = [\"release\"]\n\
     command = [\"/bin/sh\", \"-c\", \"vmlab-dqlite stop; drbdadm secondary r0\"]\n\
     timeout_ms = 30000\n";

/// What a scenario changes in the lab.
#[derive(Clone, Copy, Debug, Default)]
pub struct Options<'a> {
    /// The witness's `preferred_room` (the split policy's first rule: without it, a tie
    /// between the rooms goes to room a).
    pub preferred_room: Option<&'a str>,
    /// The datastore is a single-node Dqlite on ext4 on r0 (`tests/vmlab/dqlite`), written
    /// through its API by a writer on the host side, instead of the raw-block writer.
    pub dqlite: bool,
}

/// What the lab needs on the host, with the Debian package that provides it.
const TOOLS: [(&str, &str); 7] = [
    ("qemu-system-x86_64", "qemu-system-x86"),
    ("busybox", "busybox-static"),
    ("cpio", "cpio"),
    ("depmod", "kmod"),
    ("drbdadm", "drbd-utils"),
    ("nft", "nftables"),
    ("strip", "binutils"),
];
/// What the Dqlite lab needs on the host besides.
const DQLITE_TOOLS: [(&str, &str); 2] = [("curl", "curl"), ("mkfs.ext4", "e2fsprogs")];

/// Whether the lab can run here; prints the skip line (and why) when not.
pub fn can_run(dqlite: bool) -> bool {
    if !crate::have_root() {
        return false;
    }
    let extra: &[(&str, &str)] = if dqlite { &DQLITE_TOOLS } else { &[] };
    for &(tool, pkg) in TOOLS.iter().chain(extra) {
        let found = Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .stdout(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        if !found {
            println!(
                "skipped: the VM lab needs {tool} (Debian package {pkg}; .ci/run installs it)"
            );
            return false;
        }
    }
    true
}

/// One line of a VM's console, stamped on arrival.
#[derive(Clone, Debug)]
pub struct Line {
    pub t: u64,
    pub text: String,
}

struct Vm {
    qemu: Proc,
    ctl: UnixStream,
    ctl_out: Arc<Mutex<Vec<String>>>,
    qmp: UnixStream,
}

/// The running lab.
pub struct Lab {
    pub name: String,
    pub timings: Timings,
    pub rec: Recorder,
    ns: String,
    dir: tempfile::TempDir,
    witness: Option<Proc>,
    vms: BTreeMap<String, Vm>,
    console: Arc<Mutex<BTreeMap<String, Vec<Line>>>>,
    kernel: PathBuf,
    initrd: PathBuf,
    dqlite: bool,
    /// The host-side Dqlite writer (`ip netns exec ... sh`), killed on drop.
    host_writer: Option<std::process::Child>,
    /// Console logs (`<node>-console.log`, lines stamped with the recorder's ms), kept after the
    /// test: `target/vmlab-logs/<scenario>/`.
    pub logs: PathBuf,
}

fn s(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

fn room_of(node: &str) -> &'static str {
    NODES
        .iter()
        .find(|n| n.0 == node)
        .map(|n| n.1)
        .unwrap_or("")
}

/// Builds (or finds cached) the kernel and the node initramfs for `agent`.
pub fn build_image(agent: &Path) -> Result<(PathBuf, PathBuf)> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("vmlab/build-image.sh");
    let cache = std::env::var("VMLAB_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|_| target_dir().join("vmlab-cache"));
    let out = run(&s(&script), &[&s(&cache), &s(agent)])
        .with_context(|| format!("{} failed", script.display()))?;
    let mut lines = out.lines();
    match (lines.next(), lines.next()) {
        (Some(k), Some(i)) => Ok((PathBuf::from(k), PathBuf::from(i))),
        _ => bail!("{} printed {out:?}, expected two paths", script.display()),
    }
}

fn target_dir() -> PathBuf {
    std::env::var("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"))
}

fn init_store(path: &Path) -> Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(witness::store::Store::init_fresh(path))
        .map_err(|e| anyhow::anyhow!("init_fresh {}: {e}", path.display()))
}

fn connect(path: &Path, within: Duration) -> Result<UnixStream> {
    let until = Instant::now() + within;
    loop {
        match UnixStream::connect(path) {
            Ok(c) => return Ok(c),
            Err(e) if Instant::now() > until => {
                bail!("cannot connect to qemu's socket {}: {e}", path.display())
            }
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}

/// The console is a terminal, so the agent's log lines carry colour codes: drop them.
fn strip_ansi(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    let mut chars = raw.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // CSI: ESC [ parameters final-byte (a letter).
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else if c != '\r' {
            out.push(c);
        }
    }
    out.trim_end().to_string()
}

/// What an agent's or the kernel's console line means for the recorder.
fn classify(text: &str) -> Option<(&'static str, Value)> {
    let field = |k: &str| -> Option<String> {
        let i = text.find(&format!("{k}="))?;
        let v = &text[i + k.len() + 1..];
        let v = v.split_whitespace().next()?.trim_matches('"');
        Some(v.to_string())
    };
    if text.contains("watchdog_pet") {
        return Some(("pet", json!({})));
    }
    if text.contains("VMLAB boot") {
        return Some(("boot", json!({})));
    }
    if text.contains("VMLAB ack ") {
        let n: u64 = text.rsplit(' ').next()?.trim().parse().ok()?;
        return Some(("ack", json!({ "key": n })));
    }
    if text.contains(" phase=") && text.contains("phase") {
        let epoch: u64 = field("epoch")?.parse().ok()?;
        return Some(("phase", json!({ "phase": field("phase")?, "epoch": epoch })));
    }
    if text.contains("taking over the other room's workloads") {
        let epoch: u64 = field("epoch").and_then(|e| e.parse().ok()).unwrap_or(0);
        return Some(("takeover", json!({ "epoch": epoch })));
    }
    if text.contains("releasing the takeover of the other room") {
        let epoch: u64 = field("epoch").and_then(|e| e.parse().ok()).unwrap_or(0);
        return Some(("release", json!({ "epoch": epoch })));
    }
    if text.contains("fencing this node") {
        return Some(("fence", json!({ "line": text })));
    }
    if text.contains("helper command: /sbin/drbdadm fence-peer") {
        let code = text
            .split("exit code ")
            .nth(1)
            .and_then(|c| c.split_whitespace().next())
            .and_then(|c| c.parse::<i64>().ok());
        return Some(("fence_peer", json!({ "exit": code, "line": text })));
    }
    None
}

impl Lab {
    /// Builds the image, the network and the witness, boots both VMs, and waits until both
    /// agents are active and DRBD is connected, r0 Primary on b1 (room b runs the workload).
    /// `Ok(None)` when the lab cannot run here (the skip line is printed).
    pub fn start(name: &str) -> Result<Option<Lab>> {
        Lab::start_with(name, Options::default())
    }

    /// Like [`Lab::start`], with `opts`. With Dqlite, b1 also mounts r0 and starts Dqlite
    /// there, and the lab returns once its API answers on the host side.
    pub fn start_with(name: &str, opts: Options) -> Result<Option<Lab>> {
        if !can_run(opts.dqlite) {
            return Ok(None);
        }
        let timings = Timings::default();
        let witness_bin = binary("witness")?;
        let agent_bin = binary("witness-agent")?;
        let (kernel, initrd) = build_image(&agent_bin)?;
        let dir = tempfile::Builder::new().prefix("vmlab-").tempdir()?;
        let ns = format!("vml{}", std::process::id());
        let rec = Recorder::start(&dir.path().join("events.sock"))?;
        let logs = target_dir().join("vmlab-logs").join(name);
        let _ = std::fs::remove_dir_all(&logs);
        std::fs::create_dir_all(&logs)?;
        let mut lab = Lab {
            name: name.to_string(),
            timings,
            rec,
            ns,
            dir,
            witness: None,
            vms: BTreeMap::new(),
            console: Arc::new(Mutex::new(BTreeMap::new())),
            kernel,
            initrd,
            logs,
            dqlite: opts.dqlite,
            host_writer: None,
        };
        lab.network()?;
        lab.certs_and_witness(&witness_bin, opts.preferred_room)?;
        println!(
            "[{name}] namespace {}, dir {}",
            lab.ns,
            lab.dir.path().display()
        );
        for (n, _, _, _) in NODES {
            lab.write_node_files(n)?;
        }
        if lab.dqlite {
            lab.format_disks()?;
        }
        for (n, _, _, _) in NODES {
            lab.boot(n)?;
        }
        for (n, _, _, _) in NODES {
            // Generous: a TCG guest on a loaded 2-core machine has taken 2 minutes to boot.
            lab.wait_console(n, "VMLAB agent started", Duration::from_secs(300))?;
        }
        // The agent that starts first may take over the other room until it arrives, then
        // releases it: set DRBD up once both are active (the takeover hook cannot promote r0
        // before: both disks are Inconsistent until the new current UUID).
        for (n, _, _, _) in NODES {
            lab.wait_phase(n, "active", Duration::from_secs(300))?;
        }
        // A fresh pair of disks: skip the initial sync (both empty), then b1 runs r0.
        lab.ctl("b1", "drbdadm wait-connect r0", Duration::from_secs(60))?;
        lab.ctl(
            "b1",
            "drbdadm -- --clear-bitmap new-current-uuid r0",
            Duration::from_secs(30),
        )?;
        lab.ctl("b1", "drbdadm primary r0", Duration::from_secs(30))?;
        if lab.dqlite {
            lab.ctl("b1", "vmlab-dqlite start", Duration::from_secs(60))?;
            lab.wait_dqlite(Duration::from_secs(180))?;
        }
        for (n, _, _, _) in NODES {
            lab.wait_phase(n, "active", Duration::from_secs(300))?;
        }
        Ok(Some(lab))
    }

    fn network(&self) -> Result<()> {
        // A lab whose test process died without its Drop (SIGKILL) leaves its namespace: its
        // name carries the pid, so one whose process is gone is removed here.
        if let Ok(list) = run("ip", &["netns", "list"]) {
            for old in list.lines().filter_map(|l| l.split_whitespace().next()) {
                let Some(pid) = old.strip_prefix("vml") else {
                    continue;
                };
                if pid.parse::<u32>().is_ok() && !Path::new("/proc").join(pid).exists() {
                    let _ = run("ip", &["netns", "delete", old]);
                }
            }
        }
        let ns = &self.ns;
        run("ip", &["netns", "add", ns])?;
        let ip = |args: &[&str]| -> Result<String> {
            let mut v = vec!["-n", ns.as_str()];
            v.extend_from_slice(args);
            run("ip", &v)
        };
        ip(&["link", "set", "lo", "up"])?;
        ip(&["link", "add", "br0", "type", "bridge"])?;
        ip(&["addr", "add", &format!("{HOST_IP}/24"), "dev", "br0"])?;
        ip(&["link", "set", "br0", "up"])?;
        for (_, _, tap, _) in NODES {
            ip(&["tuntap", "add", "dev", tap, "mode", "tap"])?;
            ip(&["link", "set", tap, "master", "br0"])?;
            ip(&["link", "set", tap, "up"])?;
        }
        // The table the cuts go into; empty chains let everything through.
        self.nft("add table bridge vmlab")?;
        self.nft(
            "add chain bridge vmlab cfwd { type filter hook forward priority 0; policy accept; }",
        )?;
        self.nft(
            "add chain bridge vmlab cinp { type filter hook input priority 0; policy accept; }",
        )?;
        self.nft(
            "add chain bridge vmlab coutp { type filter hook output priority 0; policy accept; }",
        )?;
        Ok(())
    }

    fn nft(&self, rule: &str) -> Result<()> {
        let mut args = vec!["netns", "exec", &self.ns, "nft"];
        args.extend(rule.split(' '));
        run("ip", &args).map(|_| ())
    }

    fn certs_and_witness(&mut self, witness_bin: &Path, preferred: Option<&str>) -> Result<()> {
        let d = self.dir.path();
        let c = s(&d.join("certs"));
        std::fs::create_dir_all(&c)?;
        let wb = s(witness_bin);
        run(&wb, &["certs", "ca", "--out", &c])?;
        run(
            &wb,
            &[
                "certs", "server", "--ca-dir", &c, "--name", "witness", "--ip", HOST_IP, "--out",
                &c,
            ],
        )?;
        for (n, r, _, ip) in NODES {
            run(
                &wb,
                &[
                    "certs",
                    "node",
                    "--ca-dir",
                    &c,
                    "--cluster",
                    CLUSTER,
                    "--room",
                    r,
                    "--node",
                    n,
                    "--san",
                    ip,
                    "--out",
                    &c,
                ],
            )?;
        }
        let data = d.join("witness-data");
        std::fs::create_dir_all(&data)?;
        init_store(&data.join("state.sled"))?;
        let wcfg = format!(
            "data_dir = \"{data}\"\nlisten = \"{HOST_IP}:7443\"\nstatus_listen = \
             \"127.0.0.1:7480\"\ntick_interval_ms = 50\n[tls]\nca = \"{c}/ca.pem\"\ncert = \
             \"{c}/server.pem\"\nkey = \"{c}/server-key.pem\"\n[defaults]\nauto_rejoin = true\n\
             {preferred}[defaults.timings]\n{}",
            toml::to_string(&self.timings)?,
            data = s(&data),
            preferred = preferred
                .map(|r| format!("preferred_room = \"{r}\"\n"))
                .unwrap_or_default(),
        );
        std::fs::write(d.join("witness.toml"), wcfg)?;
        self.witness = Some(Proc::spawn(
            "witness",
            &self.ns,
            witness_bin,
            &[
                "serve".into(),
                "--config".into(),
                s(&d.join("witness.toml")),
            ],
            &[("WITNESS_LOG".into(), "info".into())],
            None,
            &d.join("witness.log"),
        )?);
        Ok(())
    }

    /// The per-node archive appended to the image: identity, agent configuration, certificates,
    /// drbd.conf and the takeover hook; and a fresh disk.
    fn write_node_files(&self, node: &str) -> Result<()> {
        let d = self.dir.path();
        let nd = d.join("nodes").join(node);
        let root = nd.join("overlay");
        let etc = root.join("etc/vmlab");
        std::fs::create_dir_all(&etc)?;
        let (_, room, _, ip) = NODES
            .iter()
            .find(|n| n.0 == node)
            .copied()
            .context("unknown node")?;
        std::fs::write(etc.join("node.env"), format!("NODE={node}\nIP={ip}\n"))?;
        for f in ["ca.pem", &format!("{node}.pem"), &format!("{node}-key.pem")] {
            std::fs::copy(d.join("certs").join(f), etc.join(f))?;
        }
        let peers: String = NODES
            .iter()
            .filter(|p| p.1 != room)
            .map(|p| {
                format!(
                    "[[peers]]\nnode = \"{}\"\naddress = \"{}:7444\"\n",
                    p.0, p.3
                )
            })
            .collect();
        // The fencing budget F = 3 s, split by what the steps cost under TCG on a loaded
        // machine: the vm driver (a local kill) took under 150 ms; the drbd step is two
        // drbdadm runs (secondary, then role read back), each about 1.3 s there through
        // drbd-utils 9's `drbdadm`, which parses the configuration and then executes
        // `drbdadm-84` to parse it again; 1.5 s overran (the node was reset: the safe
        // direction). So the agent calls `drbdadm-84` directly and the drbd step gets 2.5 s.
        let agent = format!(
            "cluster = \"{CLUSTER}\"\nroom = \"{room}\"\nnode = \"{node}\"\n\
             witness_url = \"https://{HOST_IP}:7443\"\nlisten = \"{ip}:7444\"\n\
             status_listen = \"127.0.0.1:7481\"\nrun_dir = \"/run/witness-agent\"\n\
             [tls]\nca = \"/etc/vmlab/ca.pem\"\ncert = \"/etc/vmlab/{node}.pem\"\n\
             key = \"/etc/vmlab/{node}-key.pem\"\n{peers}[timings]\n{timings}\
             [kubernetes]\nenabled = false\n\
             [vm]\nenabled = true\nlocal_kill = true\n\
             process_patterns = [\"vmlab-writer\", \"dqlite-demo\"]\n\
             deadline_ms = 500\n\
             [drbd]\nenabled = true\ndrbdadm = \"/usr/lib/drbd/drbdadm-84\"\n\
             resources = [\"r0\"]\ndeadline_ms = 2500\n\
             [watchdog]\nenabled = true\ndevice = \"/dev/watchdog\"\n{hooks}",
            hooks = match (room, self.dqlite) {
                ("a", false) => TAKEOVER_HOOKS,
                ("a", true) => DQLITE_HOOKS,
                _ => "",
            },
            timings = toml::to_string(&self.timings)?,
        );
        std::fs::write(etc.join("agent.toml"), agent)?;
        let drbd = DRBD_CONF
            .replace("{a1}", NODES[0].3)
            .replace("{b1}", NODES[1].3);
        std::fs::write(root.join("etc/drbd.conf"), drbd)?;
        // The per-node archive, concatenated after the cached image.
        let list = Command::new("sh")
            .arg("-c")
            .arg("find . -mindepth 1 | LC_ALL=C sort | cpio -o -H newc --quiet | gzip -1")
            .current_dir(&root)
            .output()?;
        if !list.status.success() {
            bail!(
                "cpio of {}: {}",
                root.display(),
                String::from_utf8_lossy(&list.stderr)
            );
        }
        let mut initrd = std::fs::read(&self.initrd)
            .with_context(|| format!("read {}", self.initrd.display()))?;
        initrd.extend_from_slice(&list.stdout);
        std::fs::write(nd.join("initrd.gz"), initrd)?;
        let disk = std::fs::File::create(nd.join("disk.img"))?;
        disk.set_len(if self.dqlite {
            DQLITE_DISK_BYTES
        } else {
            DISK_BYTES
        })?;
        Ok(())
    }

    /// The Dqlite lab's disks: one ext4 file system made on the host (`mkfs.ext4`, e2fsprogs)
    /// and copied, so both disks start identical and the initial sync can be skipped; it stops
    /// 4 MiB short of the disk, where DRBD keeps its internal meta data.
    fn format_disks(&self) -> Result<()> {
        let nodes = self.dir.path().join("nodes");
        let first = nodes.join(NODES[0].0).join("disk.img");
        let size = format!("{}k", (DQLITE_DISK_BYTES - (4 << 20)) / 1024);
        run(
            "mkfs.ext4",
            &["-F", "-q", "-E", "nodiscard", &s(&first), &size],
        )
        .context("mkfs.ext4 (Debian package e2fsprogs) for the Dqlite disk")?;
        for (n, _, _, _) in &NODES[1..] {
            std::fs::copy(&first, nodes.join(n).join("disk.img"))?;
        }
        Ok(())
    }

    /// Runs `script` with `sh -c` in the lab's namespace (the host side of the link).
    fn host_sh(&self, script: &str) -> Result<String> {
        run("ip", &["netns", "exec", &self.ns, "sh", "-c", script])
    }

    /// Waits until Dqlite answers on its service address.
    pub fn wait_dqlite(&self, within: Duration) -> Result<()> {
        let until = Instant::now() + within;
        loop {
            // An unknown key is an error of the SQL layer: Dqlite is up.
            let out = self
                .host_sh(&format!("curl -s -m 3 http://{DQLITE_ADDR}/k0 || true"))
                .unwrap_or_default();
            if out.contains("no rows") || out.starts_with('v') {
                return Ok(());
            }
            if Instant::now() > until {
                bail!("Dqlite did not answer at {DQLITE_ADDR} within {within:?} (last: {out:?})");
            }
            std::thread::sleep(Duration::from_secs(1));
        }
    }

    /// Starts the host-side Dqlite writer: keys kFIRST, kFIRST+1, ... each PUT until Dqlite
    /// answers `done` (committed), recorded as an `ack` event when it does; at most 3000 keys.
    pub fn start_host_writer(&mut self, first: u64) -> Result<()> {
        let script = format!(
            "n={first}; last=$((n + 2999)); while [ $n -le $last ]; do \
             if [ \"$(curl -s -m 2 -X PUT --data-binary v$n http://{DQLITE_ADDR}/k$n)\" = done ]; \
             then echo \"ack $n\"; n=$((n + 1)); else sleep 0.2; fi; sleep 0.1; done"
        );
        let mut child = Command::new("ip")
            .args(["netns", "exec", &self.ns, "sh", "-c", &script])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .context("start the host-side Dqlite writer")?;
        let out = child.stdout.take().context("writer stdout")?;
        let rec = self.rec.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(|l| l.ok()) {
                if let Some(n) = line
                    .strip_prefix("ack ")
                    .and_then(|n| n.trim().parse::<u64>().ok())
                {
                    rec.push("harness", "", "ack", json!({ "key": n }));
                }
            }
        });
        self.host_writer = Some(child);
        Ok(())
    }

    /// Stops the host-side writer.
    pub fn stop_host_writer(&mut self) {
        if let Some(mut c) = self.host_writer.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts a node's VM (again) and its console, control and QMP readers.
    pub fn boot(&mut self, node: &str) -> Result<()> {
        let nd = self.dir.path().join("nodes").join(node);
        let (_, _, tap, ip) = NODES
            .iter()
            .find(|n| n.0 == node)
            .copied()
            .context("unknown node")?;
        let mac = format!("52:54:00:00:00:{}", ip.rsplit('.').next().unwrap_or("99"));
        for f in ["console.sock", "ctl.sock", "qmp.sock"] {
            let _ = std::fs::remove_file(nd.join(f));
        }
        let sock = |f: &str| s(&nd.join(f));
        let args: Vec<String> = vec![
            "-name".into(),
            format!("vmlab-{node}"),
            "-accel".into(),
            "tcg".into(),
            "-cpu".into(),
            "max".into(),
            "-m".into(),
            "512".into(),
            "-nodefaults".into(),
            "-display".into(),
            "none".into(),
            "-kernel".into(),
            s(&self.kernel),
            "-initrd".into(),
            sock("initrd.gz"),
            "-append".into(),
            "console=ttyS0 quiet panic=-1".into(),
            "-chardev".into(),
            format!(
                "socket,id=con,path={},server=on,wait=on",
                sock("console.sock")
            ),
            "-serial".into(),
            "chardev:con".into(),
            "-chardev".into(),
            format!("socket,id=ctl,path={},server=on,wait=off", sock("ctl.sock")),
            "-serial".into(),
            "chardev:ctl".into(),
            "-qmp".into(),
            format!("unix:{},server=on,wait=off", sock("qmp.sock")),
            "-drive".into(),
            format!(
                "file={},format=raw,if=virtio,cache=unsafe",
                sock("disk.img")
            ),
            "-netdev".into(),
            format!("tap,id=n0,ifname={tap},script=no,downscript=no"),
            "-device".into(),
            format!("virtio-net-pci,netdev=n0,mac={mac}"),
            "-device".into(),
            "i6300esb".into(),
            "-action".into(),
            "watchdog=reset".into(),
        ];
        let qemu = Proc::spawn(
            &format!("qemu-{node}"),
            &self.ns,
            Path::new("qemu-system-x86_64"),
            &args,
            &[],
            None,
            &nd.join("qemu.log"),
        )?;
        let con = connect(&nd.join("console.sock"), Duration::from_secs(20))?;
        self.spawn_console_reader(node, con);
        let ctl = connect(&nd.join("ctl.sock"), Duration::from_secs(20))?;
        let ctl_out = Arc::new(Mutex::new(Vec::new()));
        {
            let out = ctl_out.clone();
            let r = ctl.try_clone()?;
            std::thread::spawn(move || {
                for line in BufReader::new(r).lines().map_while(|l| l.ok()) {
                    out.lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push(line.trim_end_matches('\r').to_string());
                }
            });
        }
        let mut qmp = connect(&nd.join("qmp.sock"), Duration::from_secs(20))?;
        qmp.write_all(b"{\"execute\":\"qmp_capabilities\"}\n")?;
        self.spawn_qmp_reader(node, qmp.try_clone()?);
        self.rec.push(node, room_of(node), "vm_start", json!({}));
        self.vms.insert(
            node.to_string(),
            Vm {
                qemu,
                ctl,
                ctl_out,
                qmp,
            },
        );
        Ok(())
    }

    fn spawn_console_reader(&self, node: &str, con: UnixStream) {
        let rec = self.rec.clone();
        let console = self.console.clone();
        let node = node.to_string();
        let log = self.logs.join(format!("{node}-console.log"));
        std::thread::spawn(move || {
            let mut file = std::fs::File::create(&log).ok();
            let start = Instant::now();
            for line in BufReader::new(con).split(b'\n').map_while(|l| l.ok()) {
                if start.elapsed() > MAX_LIFE {
                    break;
                }
                let text = strip_ansi(&String::from_utf8_lossy(&line));
                let t = rec.now();
                if let Some(f) = file.as_mut() {
                    let _ = writeln!(f, "{t:>8} {text}");
                }
                if let Some((kind, data)) = classify(&text) {
                    rec.push(&node, room_of(&node), kind, data);
                }
                console
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .entry(node.clone())
                    .or_default()
                    .push(Line { t, text });
            }
        });
    }

    fn spawn_qmp_reader(&self, node: &str, qmp: UnixStream) {
        let rec = self.rec.clone();
        let node = node.to_string();
        std::thread::spawn(move || {
            for line in BufReader::new(qmp).lines().map_while(|l| l.ok()) {
                let Ok(v) = serde_json::from_str::<Value>(&line) else {
                    continue;
                };
                match v.get("event").and_then(Value::as_str) {
                    // The card fired: qemu resets the machine now (`-action watchdog=reset`).
                    Some("WATCHDOG") => rec.push(&node, room_of(&node), "reset", v["data"].clone()),
                    Some("SHUTDOWN") | Some("POWERDOWN") => {
                        rec.push(&node, room_of(&node), "power_off", v["data"].clone())
                    }
                    _ => {}
                }
            }
        });
    }

    /// Runs a shell command on a node's control port; returns its output and exit status.
    pub fn ctl(&mut self, node: &str, cmd: &str, within: Duration) -> Result<String> {
        let (out, code) = self.ctl_status(node, cmd, within)?;
        if code != 0 {
            bail!("{node}: `{cmd}` exited with {code}: {out}");
        }
        Ok(out)
    }

    /// Like [`Lab::ctl`] but returns the exit status instead of failing on it.
    pub fn ctl_status(&mut self, node: &str, cmd: &str, within: Duration) -> Result<(String, i32)> {
        let vm = self.vms.get_mut(node).context("no such VM")?;
        let tag = format!("@@{}", rand::random::<u32>());
        vm.ctl_out.lock().unwrap_or_else(|e| e.into_inner()).clear();
        writeln!(vm.ctl, "{cmd} 2>&1; echo \"{tag} $?\"")?;
        let until = Instant::now() + within;
        loop {
            {
                let out = vm.ctl_out.lock().unwrap_or_else(|e| e.into_inner());
                if let Some(i) = out.iter().position(|l| l.contains(&tag)) {
                    let code: i32 = out[i]
                        .split(&tag)
                        .nth(1)
                        .and_then(|c| c.trim().parse().ok())
                        .unwrap_or(-1);
                    return Ok((out[..i].join("\n"), code));
                }
            }
            if Instant::now() > until {
                bail!("{node}: `{cmd}` did not finish within {within:?}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Sends a command to the control port without waiting for it (for commands that end the
    /// shell's world, like stopping the agent).
    pub fn ctl_send(&mut self, node: &str, cmd: &str) -> Result<()> {
        let vm = self.vms.get_mut(node).context("no such VM")?;
        writeln!(vm.ctl, "{cmd}")?;
        Ok(())
    }

    /// Powers a VM off at once (QMP `quit`: no shutdown, like pulling the plug).
    pub fn power_off(&mut self, node: &str) -> Result<u64> {
        let t = self.rec.now();
        if let Some(mut vm) = self.vms.remove(node) {
            let _ = vm.qmp.write_all(b"{\"execute\":\"quit\"}\n");
            std::thread::sleep(Duration::from_millis(200));
            vm.qemu.kill9();
        }
        self.rec.push(node, room_of(node), "power_off", json!({}));
        Ok(t)
    }

    /// Records a fault; returns its time.
    pub fn fault(&self, what: &str) -> u64 {
        println!("[{}] t={} ms fault: {what}", self.name, self.rec.now());
        self.rec
            .push("harness", "", "fault", json!({ "what": what }));
        self.rec.now()
    }

    /// The console lines of a node so far.
    pub fn console(&self, node: &str) -> Vec<Line> {
        self.console
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(node)
            .cloned()
            .unwrap_or_default()
    }

    /// Waits until a node's console shows a line containing `what` (after time `after`).
    pub fn wait_console_after(
        &self,
        node: &str,
        what: &str,
        after: u64,
        within: Duration,
    ) -> Result<Line> {
        let until = Instant::now() + within;
        loop {
            if let Some(l) = self
                .console(node)
                .into_iter()
                .find(|l| l.t >= after && l.text.contains(what))
            {
                return Ok(l);
            }
            if Instant::now() > until {
                bail!(
                    "{node}: no console line with {what:?} within {within:?} (console log in {})",
                    self.logs.join(format!("{node}-console.log")).display()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn wait_console(&self, node: &str, what: &str, within: Duration) -> Result<Line> {
        self.wait_console_after(node, what, 0, within)
    }

    /// Waits for a recorded event of `kind` from `node` at or after `after`.
    pub fn wait_event(
        &self,
        node: &str,
        kind: &str,
        after: u64,
        within: Duration,
    ) -> Result<Event> {
        let until = Instant::now() + within;
        loop {
            if let Some(e) = self
                .rec
                .events()
                .into_iter()
                .find(|e| e.node == node && e.kind == kind && e.t >= after)
            {
                return Ok(e);
            }
            if Instant::now() > until {
                bail!("{node}: no {kind} event within {within:?}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits until a node's last recorded phase is `phase`.
    pub fn wait_phase(&self, node: &str, phase: &str, within: Duration) -> Result<u64> {
        let until = Instant::now() + within;
        loop {
            let last = self
                .rec
                .events()
                .into_iter()
                .rev()
                .find(|e| e.node == node && e.kind == "phase");
            if let Some(e) = last.filter(|e| e.str("phase") == phase) {
                return Ok(e.t);
            }
            if Instant::now() > until {
                bail!("{node}: not {phase} within {within:?}");
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Drops everything between the rooms' VMs (both still reach the witness).
    pub fn cut_rooms(&self) -> Result<()> {
        self.nft("add rule bridge vmlab cfwd iifname ta1 oifname tb1 drop")?;
        self.nft("add rule bridge vmlab cfwd iifname tb1 oifname ta1 drop")
    }

    /// Isolates one VM from everything (the other room and the witness).
    pub fn isolate(&self, tap: &str) -> Result<()> {
        self.nft(&format!("add rule bridge vmlab cfwd iifname {tap} drop"))?;
        self.nft(&format!("add rule bridge vmlab cfwd oifname {tap} drop"))?;
        self.nft(&format!("add rule bridge vmlab cinp iifname {tap} drop"))?;
        self.nft(&format!("add rule bridge vmlab coutp oifname {tap} drop"))
    }

    /// Removes every cut.
    pub fn heal(&self) -> Result<()> {
        for c in ["cfwd", "cinp", "coutp"] {
            self.nft(&format!("flush chain bridge vmlab {c}"))?;
        }
        Ok(())
    }

    /// The acknowledged keys of the writer so far (from every node's console).
    pub fn acked(&self) -> Vec<u64> {
        let mut v: Vec<u64> = self
            .rec
            .events()
            .iter()
            .filter(|e| e.kind == "ack")
            .filter_map(|e| e.u64("key"))
            .collect();
        v.sort_unstable();
        v.dedup();
        v
    }

    /// Reads every acknowledged key back on `node` (which must be Primary); returns the missing.
    /// With Dqlite, through its API at the service address, which must be on `node`.
    pub fn missing_keys(&mut self, node: &str) -> Result<Vec<u64>> {
        let keys = self.acked();
        let mut missing = Vec::new();
        if self.dqlite {
            let ip = DQLITE_ADDR.split(':').next().unwrap_or("");
            let addrs = self.ctl(node, "ip -4 addr show dev eth0", Duration::from_secs(10))?;
            if !addrs.contains(&format!("{ip}/")) {
                bail!("{node} does not hold Dqlite's address {ip}: {addrs}");
            }
            for chunk in keys.chunks(200) {
                let list: Vec<String> = chunk.iter().map(u64::to_string).collect();
                let out = self.host_sh(&format!(
                    "for n in {}; do [ \"$(curl -s -m 5 http://{DQLITE_ADDR}/k$n)\" = v$n ] \
                     || echo \"VMLAB missing $n\"; done",
                    list.join(" ")
                ))?;
                missing.extend(
                    out.lines()
                        .filter_map(|l| l.strip_prefix("VMLAB missing "))
                        .filter_map(|n| n.trim().parse::<u64>().ok()),
                );
            }
            return Ok(missing);
        }
        for chunk in keys.chunks(200) {
            let list: Vec<String> = chunk.iter().map(u64::to_string).collect();
            let out = self.ctl(
                node,
                &format!("vmlab-check {}", list.join(" ")),
                Duration::from_secs(120),
            )?;
            missing.extend(
                out.lines()
                    .filter_map(|l| l.strip_prefix("VMLAB missing "))
                    .filter_map(|n| n.trim().parse::<u64>().ok()),
            );
        }
        Ok(missing)
    }

    /// The rooms of the nodes, for the checker.
    pub fn rooms() -> BTreeMap<String, String> {
        NODES
            .iter()
            .map(|n| (n.0.to_string(), n.1.to_string()))
            .collect()
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        self.stop_host_writer();
        for (_, mut vm) in std::mem::take(&mut self.vms) {
            vm.qemu.kill9();
        }
        if let Some(mut w) = self.witness.take() {
            w.kill9();
        }
        let _ = Command::new("ip")
            .args(["netns", "delete", &self.ns])
            .status();
    }
}

/// One row of the VM lab's table in docs/scenarios.md: written by each scenario from what it
/// measured (`target/vmlab-report/<id>.json`), rendered by `scripts/vmlab.sh` (the
/// `vmlab-report` binary) between the markers of the VM section.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct VmRow {
    /// Sort key and file name, e.g. `vm1`.
    pub id: String,
    pub scenario: String,
    /// What happened, in words, with the figures measured.
    pub outcome: String,
    /// The checker's line.
    pub checker: String,
    /// Every assertion of the scenario held (a failed run is written too, as FAIL, with the
    /// failed assertions in `outcome`).
    pub passed: bool,
    /// When the run ended (UTC) and the load average then, for the reader of the figures.
    pub when: String,
}

/// `target/vmlab-report` of this workspace (or `$VMLAB_REPORT_DIR`).
pub fn report_dir() -> PathBuf {
    std::env::var("VMLAB_REPORT_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| target_dir().join("vmlab-report"))
}

impl VmRow {
    pub fn new(id: &str, scenario: &str) -> VmRow {
        VmRow {
            id: id.into(),
            scenario: scenario.into(),
            outcome: String::new(),
            checker: String::new(),
            passed: false,
            when: String::new(),
        }
    }

    /// Writes the row; `failures` are the assertions that did not hold (none: passed).
    pub fn write(mut self, failures: &[String]) -> Result<()> {
        self.passed = failures.is_empty();
        if !failures.is_empty() {
            self.outcome = format!("{} FAILED: {}", self.outcome, failures.join("; "));
        }
        let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
        let load = load.split_whitespace().next().unwrap_or("?");
        let date = Command::new("date")
            .args(["-u", "+%Y-%m-%d %H:%M UTC"])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_default();
        self.when = format!("{date}, load {load}");
        let d = report_dir();
        std::fs::create_dir_all(&d).with_context(|| format!("create {}", d.display()))?;
        let f = d.join(format!("{}.json", self.id));
        std::fs::write(&f, serde_json::to_string_pretty(&self)?)
            .with_context(|| format!("write {}", f.display()))?;
        Ok(())
    }
}

/// The markers around the generated table in docs/scenarios.md (and in
/// tests/scenarios-header.md, which `scripts/chaos.sh --report` renders it from).
pub const BEGIN_MARK: &str = "<!-- vmlab-rows: generated by scripts/vmlab.sh; do not edit -->";
pub const END_MARK: &str = "<!-- /vmlab-rows -->";

/// Reads every row in `dir`, sorted by id.
pub fn read_rows(dir: &Path) -> Result<Vec<VmRow>> {
    let mut rows = Vec::new();
    if dir.exists() {
        for e in std::fs::read_dir(dir).with_context(|| format!("read {}", dir.display()))? {
            let p = e?.path();
            if p.extension().is_some_and(|x| x == "json") {
                let text = std::fs::read_to_string(&p)?;
                let row: VmRow = serde_json::from_str(&text)
                    .with_context(|| format!("{} is not a VM lab row", p.display()))?;
                rows.push(row);
            }
        }
    }
    rows.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(rows)
}

/// The Markdown table of `rows`.
pub fn table(rows: &[VmRow]) -> String {
    let mut s = String::from(
        "| # | scenario | what happened, measured on the host clock | checker | result | run |\n\
         |---|---|---|---|---|---|\n",
    );
    let cell = |t: &str| t.replace('|', "\\|").replace('\n', " ");
    for r in rows {
        s.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} |\n",
            r.id,
            cell(&r.scenario),
            cell(&r.outcome),
            cell(&r.checker),
            if r.passed { "pass" } else { "FAIL" },
            cell(&r.when)
        ));
    }
    s
}

/// `text` with the part between [`BEGIN_MARK`] and [`END_MARK`] replaced by the table of
/// `rows`; `None` when `text` has no (well-ordered) markers.
pub fn replace_section(text: &str, rows: &[VmRow]) -> Option<String> {
    let b = text.find(BEGIN_MARK)?;
    let e = text[b..].find(END_MARK)? + b;
    Some(format!(
        "{}{BEGIN_MARK}\n{}{}",
        &text[..b],
        table(rows),
        &text[e..]
    ))
}
