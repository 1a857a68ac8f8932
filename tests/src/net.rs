//! Network namespaces as hosts: one per host (the witness and every node) plus a switch
//! namespace holding a bridge; each host reaches the bridge over a veth pair, with its address in
//! `198.18.<index>.0/24` (a benchmarking range, used only inside namespaces made here). Faults are
//! nftables rules in each host's own `inet witness_test` table. Everything is removed on `Drop`.
//!
//! Delay: this kernel has no `tc netem` (only htb, tbf and fifo qdiscs), so the harness injects
//! no latency; loss uses nftables `numgen random`.
use anyhow::{bail, Context, Result};
use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// Runs a command; fails with its stderr.
pub fn run(cmd: &str, args: &[&str]) -> Result<String> {
    let out = Command::new(cmd)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("cannot run {cmd}"))?;
    if !out.status.success() {
        bail!(
            "{cmd} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// One host's namespace and address.
#[derive(Clone, Debug)]
pub struct Host {
    pub name: String,
    pub ns: String,
    pub ip: String,
}

/// The namespaces of one test run.
pub struct Net {
    pub tag: String,
    switch: String,
    hosts: BTreeMap<String, Host>,
    /// nftables input rules per host, by fault id (re-applied as a whole on every change).
    rules: Mutex<BTreeMap<String, BTreeMap<String, String>>>,
}

impl Net {
    /// Creates the switch and one namespace per `(name, last address octet)`.
    pub fn new(index: u8, hosts: &[(&str, u8)]) -> Result<Net> {
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        if n == 0 {
            remove_stale();
        }
        let tag = format!("wt{}x{n}", std::process::id());
        let switch = format!("{tag}-sw");
        let mut net = Net {
            tag: tag.clone(),
            switch: switch.clone(),
            hosts: BTreeMap::new(),
            rules: Mutex::new(BTreeMap::new()),
        };
        run("ip", &["netns", "add", &switch])?;
        run(
            "ip",
            &["-n", &switch, "link", "add", "br0", "type", "bridge"],
        )?;
        run("ip", &["-n", &switch, "link", "set", "br0", "up"])?;
        for (name, octet) in hosts {
            let ns = format!("{tag}-{name}");
            let ip = format!("198.18.{index}.{octet}");
            // Registered before it exists, so Drop removes a half-made host too.
            net.hosts.insert(
                name.to_string(),
                Host {
                    name: name.to_string(),
                    ns: ns.clone(),
                    ip: ip.clone(),
                },
            );
            run("ip", &["netns", "add", &ns])?;
            run("ip", &["-n", &ns, "link", "set", "lo", "up"])?;
            let port = format!("p-{name}");
            run(
                "ip",
                &[
                    "-n", &ns, "link", "add", "eth0", "type", "veth", "peer", "name", &port,
                    "netns", &switch,
                ],
            )?;
            run(
                "ip",
                &["-n", &ns, "addr", "add", &format!("{ip}/24"), "dev", "eth0"],
            )?;
            run("ip", &["-n", &ns, "link", "set", "eth0", "up"])?;
            run(
                "ip",
                &["-n", &switch, "link", "set", &port, "master", "br0", "up"],
            )?;
            net.apply_rules(name, &BTreeMap::new())?;
        }
        Ok(net)
    }

    pub fn host(&self, name: &str) -> Result<&Host> {
        self.hosts
            .get(name)
            .with_context(|| format!("no host {name}"))
    }

    pub fn ip(&self, name: &str) -> String {
        self.hosts
            .get(name)
            .map(|h| h.ip.clone())
            .unwrap_or_default()
    }

    pub fn ns(&self, name: &str) -> String {
        self.hosts
            .get(name)
            .map(|h| h.ns.clone())
            .unwrap_or_default()
    }

    fn apply_rules(&self, host: &str, rules: &BTreeMap<String, String>) -> Result<()> {
        let ns = self.ns(host);
        let mut text = String::from(
            "table inet witness_test\ndelete table inet witness_test\n\
             table inet witness_test {\n  chain input {\n    type filter hook input priority 0; policy accept;\n",
        );
        for r in rules.values() {
            text.push_str("    ");
            text.push_str(r);
            text.push('\n');
        }
        text.push_str("  }\n}\n");
        let path = std::env::temp_dir().join(format!("{}-{host}.nft", self.tag));
        std::fs::write(&path, text)?;
        let p = path.to_string_lossy().into_owned();
        let r = run("ip", &["netns", "exec", &ns, "nft", "-f", &p]);
        let _ = std::fs::remove_file(&path);
        r.map(|_| ())
    }

    /// Adds (or replaces) the rule `id` in `host`'s input chain.
    pub fn add_rule(&self, host: &str, id: &str, rule: &str) -> Result<()> {
        let mut all = self.rules.lock().map_err(|_| anyhow::anyhow!("poisoned"))?;
        let r = all.entry(host.to_string()).or_default();
        r.insert(id.to_string(), rule.to_string());
        let snapshot = r.clone();
        drop(all);
        self.apply_rules(host, &snapshot)
    }

    /// Removes the rule `id` from `host`'s input chain (no-op if absent).
    pub fn remove_rule(&self, host: &str, id: &str) -> Result<()> {
        let mut all = self.rules.lock().map_err(|_| anyhow::anyhow!("poisoned"))?;
        let r = all.entry(host.to_string()).or_default();
        r.remove(id);
        let snapshot = r.clone();
        drop(all);
        self.apply_rules(host, &snapshot)
    }

    /// `to` hears `from` again (undoes [`Net::drop_from`] only).
    pub fn hear_from(&self, to: &str, from: &str) -> Result<()> {
        self.remove_rule(to, &format!("from-{from}"))
    }

    /// `to` no longer hears `from` (packets from `from` are dropped at `to`, with `loss`% when
    /// given). A one-way drop still breaks TCP both ways (the handshake needs both).
    pub fn drop_from(&self, to: &str, from: &str, loss: Option<u8>) -> Result<()> {
        let ip = self.ip(from);
        let rule = match loss {
            None => format!("ip saddr {ip} drop"),
            Some(p) => format!("ip saddr {ip} numgen random mod 100 < {p} drop"),
        };
        self.add_rule(to, &format!("from-{from}"), &rule)
    }

    /// Loads an nftables script into `host`'s namespace.
    pub fn nft(&self, host: &str, text: &str) -> Result<()> {
        let path = std::env::temp_dir().join(format!("{}-{host}-extra.nft", self.tag));
        std::fs::write(&path, text)?;
        let p = path.to_string_lossy().into_owned();
        let r = run("ip", &["netns", "exec", &self.ns(host), "nft", "-f", &p]);
        let _ = std::fs::remove_file(&path);
        r.map(|_| ())
    }

    /// Removes every fault rule everywhere.
    pub fn heal_all(&self) -> Result<()> {
        let hosts: Vec<String> = self.hosts.keys().cloned().collect();
        {
            let mut all = self.rules.lock().map_err(|_| anyhow::anyhow!("poisoned"))?;
            all.clear();
        }
        for h in hosts {
            self.apply_rules(&h, &BTreeMap::new())?;
        }
        Ok(())
    }

    /// Takes a host's link down or up (power loss: nobody answers, not even with a reset).
    pub fn link(&self, host: &str, up: bool) -> Result<()> {
        let ns = self.ns(host);
        run(
            "ip",
            &[
                "-n",
                &ns,
                "link",
                "set",
                "eth0",
                if up { "up" } else { "down" },
            ],
        )
        .map(|_| ())
    }
}

/// Removes namespaces left by earlier runs whose process is gone (a test process killed with
/// SIGKILL cannot clean up): names `wt<pid>x<n>-...` whose pid no longer exists.
fn remove_stale() {
    let Ok(list) = run("ip", &["netns", "list"]) else {
        return;
    };
    for name in list.lines().filter_map(|l| l.split_whitespace().next()) {
        let Some(rest) = name.strip_prefix("wt") else {
            continue;
        };
        let Some((pid, _)) = rest.split_once('x') else {
            continue;
        };
        if pid.is_empty() || !pid.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        if !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = run("ip", &["netns", "del", name]);
        }
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        for h in self.hosts.values() {
            let _ = run("ip", &["netns", "del", &h.ns]);
        }
        let _ = run("ip", &["netns", "del", &self.switch]);
    }
}
