//! The agent's configuration: the TOML schema that deploy manifests are written against, the
//! environment overrides, and the validation that refuses a bad file with its path, the field
//! at fault and the reason (the binary then exits with status 64, `EX_USAGE`).
//!
//! Parsing takes an abstract environment (`&dyn Fn(&str) -> Option<String>`) so tests pass a
//! map instead of touching the process environment.
use proto::ids::check_name;
use proto::{ClusterId, NodeId, RoomId, Timings};
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// Environment variable naming the configuration file when `--config` is not given.
pub const ENV_CONFIG: &str = "WITNESS_AGENT_CONFIG";
/// Environment variable that overrides `node` (the DaemonSet passes `spec.nodeName`).
pub const ENV_NODE: &str = "WITNESS_AGENT_NODE";

/// The events a hook can be bound to.
pub const HOOK_EVENTS: [&str; 4] = ["fence", "unfence", "takeover", "release"];

/// A configuration the agent refuses: which file, which field, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}: {field}: {reason}")]
pub struct ConfigError {
    /// The file (or `<env>` / `<inline>`) the bad value came from.
    pub file: String,
    /// The dotted path of the field at fault (`peers[1].address`, `timings.lease_ms`).
    pub field: String,
    /// What is wrong and what would be right.
    pub reason: String,
}

/// The whole configuration file.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub cluster: String,
    pub room: String,
    /// May be left out of the file when `WITNESS_AGENT_NODE` is set.
    #[serde(default)]
    pub node: String,
    pub witness_url: String,
    #[serde(default = "default_listen")]
    pub listen: String,
    #[serde(default = "default_status_listen")]
    pub status_listen: String,
    /// `host:port` at which the other room's nodes reach this node's heartbeat listener. The
    /// witness hands it to them with the membership, so a node added later needs no edit of
    /// any other agent. Empty: `listen`, when it names a specific address.
    #[serde(default)]
    pub advertise: String,
    #[serde(default = "default_run_dir")]
    pub run_dir: PathBuf,
    /// Unix stream socket for the event recorder; empty: no events are written.
    #[serde(default)]
    pub event_socket: String,
    pub tls: TlsConfig,
    #[serde(default)]
    pub peers: Vec<PeerConfig>,
    #[serde(default)]
    pub timings: Timings,
    #[serde(default)]
    pub kubernetes: KubernetesConfig,
    #[serde(default)]
    pub vm: VmConfig,
    #[serde(default)]
    pub drbd: DrbdConfig,
    #[serde(default)]
    pub watchdog: WatchdogConfig,
    #[serde(default)]
    pub hooks: Vec<HookConfig>,
    /// Where this configuration came from (for messages); not part of the file.
    #[serde(skip)]
    pub origin: String,
}

impl Config {
    /// Where the other room reaches this node's heartbeat listener: `advertise`, else `listen`
    /// when it names a specific address (an unspecified one, 0.0.0.0, says nothing).
    pub fn advertised_address(&self) -> Option<String> {
        if !self.advertise.is_empty() {
            return Some(self.advertise.clone());
        }
        let addr: SocketAddr = self.listen.parse().ok()?;
        (!addr.ip().is_unspecified()).then(|| self.listen.clone())
    }
}

fn default_listen() -> String {
    "0.0.0.0:7444".into()
}
fn default_status_listen() -> String {
    "0.0.0.0:7481".into()
}
fn default_run_dir() -> PathBuf {
    PathBuf::from("/run/witness-agent")
}

/// The node's certificate, key and the CA that signs every witness and agent certificate.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// One node of the other room.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeerConfig {
    pub node: String,
    /// `host:port` of that node's heartbeat listener.
    pub address: String,
}

/// How to reach the Kubernetes API, and the name of our own fence taint.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KubernetesConfig {
    pub enabled: bool,
    /// Empty: in-cluster configuration (service account). Set: this API endpoint instead of the
    /// in-cluster one; over https the service account's token and CA are still used (from
    /// `service_account_dir`), over plain http (the test double) no credentials are sent.
    pub api_url: String,
    /// Where the service account's `token`, `ca.crt` (and `namespace`) are mounted.
    pub service_account_dir: String,
    pub fence_taint_key: String,
    /// How long one taint step may take while fencing; an API that does not answer within it
    /// counts as unreachable and the taint is skipped (reported).
    pub deadline_ms: u64,
    /// What the survivor's takeover removes from the lost room's nodes, at the moment it applies
    /// the out-of-service taint (the lost room is then proven fenced): see [`TakeoverDelete`].
    pub takeover_delete: TakeoverDelete,
    /// How long a returning node keeps its own fence taint after it has read its Node without the
    /// out-of-service taint, so kube-controller-manager's informers see the lift before anything
    /// can be scheduled here (kubernetes#142331; docs/protocol.md, "Rejoin and the informer lag").
    pub unfence_settle_ms: u64,
}

/// The survivor's resource deletion at takeover (Medik8s's "ResourceDeletion" strategy).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TakeoverDelete {
    /// Force-delete (grace period 0) every pod and VirtualMachineInstance bound to the lost
    /// room's nodes. The default: the proof that allows the out-of-service taint allows this
    /// too, and it does not wait for kube-controller-manager's node-monitor grace (50 s) and
    /// pod GC tick (20 s), so the replacements are bound seconds after the takeover.
    #[default]
    PodsAndVmis,
    /// Only the out-of-service taint; kube-controller-manager deletes the pods once it has
    /// marked the nodes NotReady.
    None,
}

impl Default for KubernetesConfig {
    fn default() -> Self {
        KubernetesConfig {
            enabled: true,
            api_url: String::new(),
            service_account_dir: "/var/run/secrets/kubernetes.io/serviceaccount".into(),
            fence_taint_key: "witness.dev/fenced".into(),
            deadline_ms: 500,
            takeover_delete: TakeoverDelete::default(),
            unfence_settle_ms: 3_000,
        }
    }
}

/// How this node's KubeVirt VMs are stopped.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct VmConfig {
    pub enabled: bool,
    /// `stop` (the VM stop subresource) or `halt` (patch `spec.runStrategy: Halted`).
    pub stop_mode: String,
    /// When the API does not answer, kill this host's VM processes found by `process_patterns`.
    pub local_kill: bool,
    pub process_patterns: Vec<String>,
    pub deadline_ms: u64,
}

impl Default for VmConfig {
    fn default() -> Self {
        VmConfig {
            enabled: true,
            stop_mode: "stop".into(),
            local_kill: true,
            process_patterns: vec![
                "qemu-kvm".into(),
                "qemu-system".into(),
                "virt-launcher".into(),
            ],
            deadline_ms: 1500,
        }
    }
}

/// How DRBD resources are demoted.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DrbdConfig {
    pub enabled: bool,
    pub drbdadm: String,
    pub resources: Vec<String>,
    pub deadline_ms: u64,
}

impl Default for DrbdConfig {
    fn default() -> Self {
        DrbdConfig {
            enabled: true,
            drbdadm: "drbdadm".into(),
            resources: vec!["all".into()],
            deadline_ms: 1000,
        }
    }
}

/// The watchdog device the agent holds.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WatchdogConfig {
    pub enabled: bool,
    pub device: PathBuf,
    /// No longer used: the agent sets the device's timeout to `timings.watchdog_timeout_ms`
    /// itself, by ioctl on the descriptor it holds (`wdctl -s` before the open could not be
    /// verified and raced the open). Still accepted so existing files parse.
    pub wdctl: String,
}

impl Default for WatchdogConfig {
    fn default() -> Self {
        WatchdogConfig {
            enabled: true,
            device: PathBuf::from("/dev/watchdog"),
            wdctl: "wdctl".into(),
        }
    }
}

/// A site-specific command run on fencing events (like booth's handlers).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HookConfig {
    pub name: String,
    pub on: Vec<String>,
    pub command: Vec<String>,
    #[serde(default = "default_hook_timeout")]
    pub timeout_ms: u64,
}

fn default_hook_timeout() -> u64 {
    1000
}

/// The validated identity of this node and its peers, as the protocol names them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Names {
    pub cluster: ClusterId,
    pub room: RoomId,
    pub node: NodeId,
}

impl Config {
    /// Reads and validates a configuration file, applying `WITNESS_AGENT_NODE` from `env`.
    pub fn load(path: &Path, env: &dyn Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: file.clone(),
            field: "(file)".into(),
            reason: format!("cannot read the configuration file: {e}"),
        })?;
        Config::parse(&text, &file, env)
    }

    /// Parses and validates configuration text; `origin` names it in messages.
    pub fn parse(
        text: &str,
        origin: &str,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        let mut cfg: Config = toml::from_str(text).map_err(|e| {
            let field = toml_error_field(text, &e);
            ConfigError {
                file: origin.to_string(),
                field,
                reason: e.message().trim().to_string(),
            }
        })?;
        cfg.origin = origin.to_string();
        if let Some(node) = env(ENV_NODE).filter(|n| !n.is_empty()) {
            cfg.node = node;
        }
        cfg.validate()?;
        Ok(cfg)
    }

    fn err(&self, field: impl Into<String>, reason: impl Into<String>) -> ConfigError {
        ConfigError {
            file: self.origin.clone(),
            field: field.into(),
            reason: reason.into(),
        }
    }

    /// Checks every field; the first problem found is returned.
    pub fn validate(&self) -> Result<(), ConfigError> {
        check_name("cluster", &self.cluster).map_err(|r| self.err("cluster", r))?;
        check_name("room", &self.room).map_err(|r| self.err("room", r))?;
        if self.node.is_empty() {
            return Err(self.err(
                "node",
                format!("missing: set `node` in the file or the {ENV_NODE} environment variable"),
            ));
        }
        check_name("node", &self.node).map_err(|r| self.err("node", r))?;
        match self.witness_url.split_once("://") {
            Some(("https", rest)) if !rest.is_empty() => {}
            _ => {
                return Err(self.err(
                    "witness_url",
                    format!(
                        "{:?} is not an https URL: the witness is reached over mutual TLS, \
                         e.g. https://witness.example.org:7443",
                        self.witness_url
                    ),
                ))
            }
        }
        if reqwest::Url::parse(&self.witness_url).is_err() {
            return Err(self.err(
                "witness_url",
                format!("{:?} is not a valid URL", self.witness_url),
            ));
        }
        for (field, v) in [
            ("listen", &self.listen),
            ("status_listen", &self.status_listen),
        ] {
            v.parse::<SocketAddr>().map_err(|e| {
                self.err(
                    field,
                    format!("{v:?} is not an address:port such as 0.0.0.0:7444 ({e})"),
                )
            })?;
        }
        if !self.advertise.is_empty() {
            check_host_port(&self.advertise).map_err(|r| self.err("advertise", r))?;
        }
        if self.run_dir.as_os_str().is_empty() {
            return Err(self.err("run_dir", "must not be empty"));
        }
        if self.peers.is_empty() {
            return Err(self.err(
                "peers",
                "list every node of the other room ([[peers]] with node and address); \
                 without peers the room could never keep running through a witness outage",
            ));
        }
        let mut seen = std::collections::BTreeSet::new();
        for (i, p) in self.peers.iter().enumerate() {
            check_name("node", &p.node).map_err(|r| self.err(format!("peers[{i}].node"), r))?;
            if p.node == self.node {
                return Err(self.err(
                    format!("peers[{i}].node"),
                    format!(
                        "{:?} is this node itself: peers are the nodes of the other room",
                        p.node
                    ),
                ));
            }
            if !seen.insert(p.node.clone()) {
                return Err(self.err(
                    format!("peers[{i}].node"),
                    format!("{:?} is listed twice", p.node),
                ));
            }
            check_host_port(&p.address).map_err(|r| self.err(format!("peers[{i}].address"), r))?;
        }
        self.timings.validate().map_err(|e| {
            self.err(
                format!("timings.{}", e.field),
                format!("{} (got {})", e.relation, e.detail),
            )
        })?;
        if self.kubernetes.enabled {
            let u = &self.kubernetes.api_url;
            if !(u.is_empty() || u.starts_with("https://") || u.starts_with("http://")) {
                return Err(self.err(
                    "kubernetes.api_url",
                    format!(
                        "{:?} is not an http(s) URL; leave it empty for the in-cluster configuration",
                        self.kubernetes.api_url
                    ),
                ));
            }
            if !u.is_empty() && u.parse::<http::Uri>().is_err() {
                return Err(self.err("kubernetes.api_url", "not a valid URL"));
            }
            if self.kubernetes.fence_taint_key.is_empty() {
                return Err(self.err("kubernetes.fence_taint_key", "must not be empty"));
            }
            if self.kubernetes.deadline_ms == 0 {
                return Err(self.err("kubernetes.deadline_ms", "must be greater than zero"));
            }
            if self.kubernetes.unfence_settle_ms > proto::config::MAX_TIMING_MS {
                return Err(self.err(
                    "kubernetes.unfence_settle_ms",
                    "must be at most a day (86400000 ms)",
                ));
            }
        }
        if self.vm.enabled {
            if self.vm.stop_mode != "stop" && self.vm.stop_mode != "halt" {
                return Err(self.err(
                    "vm.stop_mode",
                    format!(
                        "{:?} is not a stop mode: use \"stop\" (VM stop subresource) or \"halt\" \
                         (patch spec.runStrategy: Halted)",
                        self.vm.stop_mode
                    ),
                ));
            }
            if self.vm.deadline_ms == 0 {
                return Err(self.err("vm.deadline_ms", "must be greater than zero"));
            }
            if self.vm.local_kill
                && (self.vm.process_patterns.is_empty()
                    || self.vm.process_patterns.iter().any(|p| p.trim().is_empty()))
            {
                return Err(self.err(
                    "vm.process_patterns",
                    "local_kill needs non-empty process name patterns",
                ));
            }
            if !self.vm.local_kill && !self.kubernetes.enabled {
                return Err(self.err(
                    "vm.local_kill",
                    "with kubernetes.enabled = false the VMs can only be stopped locally: \
                     set vm.local_kill = true or vm.enabled = false",
                ));
            }
        }
        if self.drbd.enabled {
            if self.drbd.drbdadm.is_empty() {
                return Err(self.err("drbd.drbdadm", "must name the drbdadm program"));
            }
            if self.drbd.resources.is_empty() {
                return Err(self.err("drbd.resources", "list resources, or [\"all\"]"));
            }
            for (i, r) in self.drbd.resources.iter().enumerate() {
                if r.is_empty() || r.starts_with('-') || r.contains(char::is_whitespace) {
                    return Err(self.err(
                        format!("drbd.resources[{i}]"),
                        format!("{r:?} is not a DRBD resource name"),
                    ));
                }
            }
            if self.drbd.deadline_ms == 0 {
                return Err(self.err("drbd.deadline_ms", "must be greater than zero"));
            }
        }
        if self.watchdog.enabled && self.watchdog.device.as_os_str().is_empty() {
            return Err(self.err("watchdog.device", "must name the watchdog device"));
        }
        let mut names = std::collections::BTreeSet::new();
        for (i, h) in self.hooks.iter().enumerate() {
            if h.name.is_empty() || !names.insert(h.name.clone()) {
                return Err(self.err(
                    format!("hooks[{i}].name"),
                    "every hook needs a unique, non-empty name",
                ));
            }
            if h.command.is_empty() || h.command[0].is_empty() {
                return Err(self.err(
                    format!("hooks[{i}].command"),
                    "must be a non-empty list: program, then arguments",
                ));
            }
            if h.on.is_empty() {
                return Err(self.err(
                    format!("hooks[{i}].on"),
                    format!("list the events to run on, from {HOOK_EVENTS:?}"),
                ));
            }
            for (j, e) in h.on.iter().enumerate() {
                if !HOOK_EVENTS.contains(&e.as_str()) {
                    return Err(self.err(
                        format!("hooks[{i}].on[{j}]"),
                        format!("{e:?} is not an event: use one of {HOOK_EVENTS:?}"),
                    ));
                }
            }
            if h.timeout_ms == 0 {
                return Err(self.err(
                    format!("hooks[{i}].timeout_ms"),
                    "must be greater than zero",
                ));
            }
        }
        Ok(())
    }

    /// The protocol names of this node.
    pub fn names(&self) -> Names {
        Names {
            cluster: ClusterId::new(&self.cluster),
            room: RoomId::new(&self.room),
            node: NodeId::new(&self.node),
        }
    }
}

/// Checks `host:port` (host may be a name, an IPv4 address or `[IPv6]`).
fn check_host_port(s: &str) -> Result<(), String> {
    if s.parse::<SocketAddr>().is_ok() {
        return Ok(());
    }
    let bad = || format!("{s:?} is not host:port, e.g. 10.0.2.11:7444 or node-b1.example:7444");
    let (host, port) = s.rsplit_once(':').ok_or_else(bad)?;
    port.parse::<u16>().map_err(|_| bad())?;
    if host.is_empty()
        || !host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
    {
        return Err(bad());
    }
    Ok(())
}

/// Names the field a TOML error points at, from its byte span (the toml crate reports the
/// position; the dotted key path is the closest `[table]` header plus the key on that line).
fn toml_error_field(text: &str, e: &toml::de::Error) -> String {
    let Some(span) = e.span() else {
        return "(file)".into();
    };
    let before = &text[..span.start.min(text.len())];
    let line_no = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map(|i| i + 1).unwrap_or(0);
    let line = text[line_start..].lines().next().unwrap_or("");
    let key = line
        .split_once('=')
        .map(|(k, _)| k.trim().to_string())
        .unwrap_or_default();
    let table = before
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| l.starts_with('['))
        .map(|l| l.trim_matches(|c| c == '[' || c == ']').to_string());
    let path = match (table, key.is_empty()) {
        (Some(t), false) => format!("{t}.{key}"),
        (Some(t), true) => t,
        (None, false) => key,
        (None, true) => "(file)".into(),
    };
    format!("{path} (line {line_no})")
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) const SAMPLE: &str = r#"
cluster = "hospital-1"
room = "a"
node = "node-a1"
witness_url = "https://witness.example.org:7443"
[tls]
ca = "/etc/witness-agent/ca.pem"
cert = "/etc/witness-agent/node.pem"
key = "/etc/witness-agent/node-key.pem"
[[peers]]
node = "node-b1"
address = "10.0.2.11:7444"
[[hooks]]
name = "notify"
on = ["fence", "unfence", "takeover", "release"]
command = ["/usr/local/bin/notify", "--x"]
timeout_ms = 1000
"#;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    /// The documented sample, parsed (for other modules' tests).
    pub(crate) fn sample() -> Config {
        Config::parse(SAMPLE, "agent.toml", &no_env).expect("the sample parses")
    }

    #[test]
    fn the_documented_sample_parses_with_defaults() {
        let c = Config::parse(SAMPLE, "agent.toml", &no_env).unwrap();
        assert_eq!(c.listen, "0.0.0.0:7444");
        assert_eq!(c.status_listen, "0.0.0.0:7481");
        assert_eq!(c.vm.stop_mode, "stop");
        assert_eq!(c.drbd.resources, vec!["all".to_string()]);
        assert_eq!(c.kubernetes.fence_taint_key, "witness.dev/fenced");
        assert_eq!(c.timings, Timings::default());
    }

    #[test]
    fn the_node_name_comes_from_the_environment_when_set() {
        let env = |k: &str| (k == ENV_NODE).then(|| "node-a7".to_string());
        let c = Config::parse(SAMPLE, "agent.toml", &env).unwrap();
        assert_eq!(c.node, "node-a7");
    }

    #[test]
    fn bad_values_are_refused_with_file_field_and_reason() {
        let cases = [
            ("room = \"a\"", "room = \"A B\"", "room"),
            (
                "address = \"10.0.2.11:7444\"",
                "address = \"nowhere\"",
                "peers[0].address",
            ),
            (
                "witness_url = \"https://witness.example.org:7443\"",
                "witness_url = \"http://witness:80\"",
                "witness_url",
            ),
            (
                "[tls]",
                "[timings]\nlease_ms = 1500\n[tls]",
                "timings.lease_ms",
            ),
            ("node = \"node-b1\"", "node = \"node-a1\"", "peers[0].node"),
            ("on = [\"fence\",", "on = [\"explode\",", "hooks[0].on[0]"),
        ];
        for (from, to, field) in cases {
            let text = SAMPLE.replacen(from, to, 1);
            let e = Config::parse(&text, "agent.toml", &no_env).unwrap_err();
            assert_eq!(e.field, field, "{e}");
            assert_eq!(e.file, "agent.toml");
            assert!(e.to_string().starts_with("agent.toml: "), "{e}");
        }
    }

    #[test]
    fn unknown_keys_and_wrong_types_name_the_line() {
        let text = SAMPLE.replacen("[tls]", "[tls]\nkeyfile = \"x\"", 1);
        let e = Config::parse(&text, "agent.toml", &no_env).unwrap_err();
        assert!(e.field.starts_with("tls"), "{e}");
        assert!(e.reason.contains("keyfile"), "{e}");
        let text = SAMPLE.replacen("[tls]", "[vm]\ndeadline_ms = \"soon\"\n[tls]", 1);
        let e = Config::parse(&text, "agent.toml", &no_env).unwrap_err();
        assert!(e.field.starts_with("vm.deadline_ms"), "{e}");
    }

    #[test]
    fn a_missing_node_names_the_environment_variable() {
        let text = SAMPLE.replacen("node = \"node-a1\"", "", 1);
        let e = Config::parse(&text, "agent.toml", &no_env).unwrap_err();
        assert_eq!(e.field, "node");
        assert!(e.reason.contains(ENV_NODE), "{e}");
    }
}
