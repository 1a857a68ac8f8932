//! The witness's configuration: the TOML schema of `witness.toml`, its defaults (so `witness
//! serve` runs with no file at all), and the validation that refuses a bad file naming the file,
//! the field and the reason.
//!
//! Every key is optional; the defaults are the demo setup on loopback with everything under
//! `./witness-data`. Per-cluster protocol settings are `[defaults]` overlaid field by field with
//! `[clusters.<name>]`, and each result is checked with `proto::Timings::validate`.
use proto::arbiter::ArbiterConfig;
use proto::{ClusterId, RoomId, Timings};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use thiserror::Error;

/// Config keys, kept in one place so error messages and docs name them the same way.
pub mod keys {
    pub const DATA_DIR: &str = "data_dir";
    pub const LISTEN: &str = "listen";
    pub const STATUS_LISTEN: &str = "status_listen";
    pub const TICK_INTERVAL_MS: &str = "tick_interval_ms";
}

/// A configuration the witness refuses to run with. The binary exits with status 64 (EX_USAGE).
#[derive(Debug, Error)]
#[error("{file}: {field}: {reason}")]
pub struct ConfigError {
    /// The file at fault (`<defaults>` / `<command line>` when there is none).
    pub file: String,
    /// The field at fault, as a dotted path (`limits.max_connections`).
    pub field: String,
    /// Why it is refused and what to do instead.
    pub reason: String,
}

impl ConfigError {
    fn new(file: &str, field: impl Into<String>, reason: impl Into<String>) -> Self {
        ConfigError {
            file: file.to_string(),
            field: field.into(),
            reason: reason.into(),
        }
    }
}

/// Where the TLS material lives. Unset paths mean "inside `<data_dir>/certs`, generated on first
/// start" (demo mode); set paths must exist.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsSection {
    /// The CA that signs every client certificate (node and admin). Trusted for client auth.
    pub ca: Option<PathBuf>,
    /// The witness's server certificate chain (PEM).
    pub cert: Option<PathBuf>,
    /// The server certificate's private key (PEM, PKCS#8 / SEC1 / PKCS#1).
    pub key: Option<PathBuf>,
    /// Extra DNS names / IP addresses for the server certificate generated in demo mode
    /// (localhost and 127.0.0.1 are always included).
    pub server_names: Vec<String>,
    /// How often the certificate files are checked for changes (also reloaded on SIGHUP).
    pub reload_interval_ms: Option<u64>,
}

/// Bounds on what a client can make the witness do.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Open connections on the lease port; further connections are closed at once.
    pub max_connections: usize,
    /// Largest accepted request body; larger bodies get 413.
    pub body_limit_bytes: usize,
    /// A connection must finish its TLS handshake and each request's headers within this.
    pub header_timeout_ms: u64,
    /// A keep-alive connection with no request for this long is closed.
    pub idle_timeout_ms: u64,
    /// Token bucket per certificate identity (burst = the same number); excess gets 429.
    pub requests_per_second_per_identity: u32,
    /// Clusters the witness keeps; a new cluster beyond this is refused (503).
    pub max_clusters: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 20_000,
            body_limit_bytes: 8_192,
            header_timeout_ms: 5_000,
            idle_timeout_ms: 60_000,
            requests_per_second_per_identity: 50,
            max_clusters: 100_000,
        }
    }
}

/// `[defaults]`: protocol settings for every cluster.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DefaultsSection {
    pub auto_rejoin: bool,
    pub preferred_room: Option<String>,
    /// `proto::Timings` fields; unset fields keep the protocol's defaults.
    pub timings: toml::Table,
}

impl Default for DefaultsSection {
    fn default() -> Self {
        DefaultsSection {
            auto_rejoin: true,
            preferred_room: None,
            timings: toml::Table::new(),
        }
    }
}

/// `[clusters.<name>]`: overrides for one cluster; unset fields come from `[defaults]`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterSection {
    pub preferred_room: Option<String>,
    pub auto_rejoin: Option<bool>,
    pub timings: toml::Table,
}

/// The file as written (every key optional). Public and `Serialize` so that launchers (the test
/// harness, the benches) write `witness.toml` from this type: a renamed key fails to compile.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawConfig {
    pub data_dir: Option<PathBuf>,
    pub listen: Option<String>,
    pub status_listen: Option<String>,
    pub tick_interval_ms: Option<u64>,
    pub tls: TlsSection,
    pub limits: Limits,
    pub defaults: DefaultsSection,
    pub clusters: BTreeMap<String, ClusterSection>,
}

/// The resolved TLS paths.
#[derive(Clone, Debug)]
pub struct TlsPaths {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
    /// True when no path was configured: missing files are generated (demo mode).
    pub generate_missing: bool,
    pub server_names: Vec<String>,
    pub reload_interval_ms: u64,
}

/// The validated configuration the server runs with.
#[derive(Clone, Debug)]
pub struct Config {
    pub data_dir: PathBuf,
    pub listen: SocketAddr,
    pub status_listen: SocketAddr,
    /// How often time-based decisions are made for clusters that have one pending.
    pub tick_interval_ms: u64,
    pub tls: TlsPaths,
    pub limits: Limits,
    /// The protocol settings of a cluster with no `[clusters.<name>]` section.
    pub default_cluster: ArbiterConfig,
    /// Clusters with their own settings.
    pub clusters: BTreeMap<ClusterId, ArbiterConfig>,
}

pub const DEFAULT_DATA_DIR: &str = "./witness-data";
pub const DEFAULT_LISTEN: &str = "127.0.0.1:7443";
pub const DEFAULT_STATUS_LISTEN: &str = "127.0.0.1:7480";

impl Default for Config {
    fn default() -> Self {
        // The empty document always validates; a failure here is a bug in the defaults.
        match Config::parse("", "<defaults>") {
            Ok(c) => c,
            Err(e) => panic!("built-in defaults do not validate: {e}"),
        }
    }
}

impl Config {
    /// Reads and validates a TOML file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        Config::load_with(path, true)
    }

    /// Like [`Config::load`]; `check_files: false` skips checking that the TLS files exist
    /// (validating a file for another machine).
    pub fn load_with(path: &Path, check_files: bool) -> Result<Config, ConfigError> {
        let name = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| {
            ConfigError::new(
                &name,
                "<file>",
                format!(
                    "cannot read the configuration file: {e}; check the path given to --config"
                ),
            )
        })?;
        Config::parse_with(&text, &name, check_files)
    }

    /// Parses and validates TOML text; `file` names it in errors.
    pub fn parse(text: &str, file: &str) -> Result<Config, ConfigError> {
        Config::parse_with(text, file, true)
    }

    fn parse_with(text: &str, file: &str, check_files: bool) -> Result<Config, ConfigError> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| {
            let (field, line) = match e.span() {
                Some(span) => (field_path(text, span.start), line_of(text, span.start)),
                None => ("<document>".to_string(), 0),
            };
            ConfigError::new(file, field, format!("{} (line {line})", e.message().trim()))
        })?;
        raw.validate(file, check_files)
    }

    /// The protocol settings for one cluster.
    pub fn cluster_config(&self, cluster: &ClusterId) -> ArbiterConfig {
        self.clusters
            .get(cluster)
            .cloned()
            .unwrap_or_else(|| self.default_cluster.clone())
    }

    /// The longest `forgotten_state_wait_ms` of any cluster configuration: how long a witness
    /// that lost its store treats every unknown cluster as possibly holding forgotten leases.
    pub fn max_forgotten_state_wait_ms(&self) -> u64 {
        self.clusters
            .values()
            .chain(std::iter::once(&self.default_cluster))
            .map(|c| c.timings.forgotten_state_wait_ms())
            .max()
            .unwrap_or(0)
    }

    /// A configuration for tests: everything under `data_dir`, both ports on 127.0.0.1:0.
    pub fn for_tests(data_dir: &Path) -> Config {
        let mut c = Config::default();
        c.data_dir = data_dir.to_path_buf();
        c.listen = SocketAddr::from(([127, 0, 0, 1], 0));
        c.status_listen = SocketAddr::from(([127, 0, 0, 1], 0));
        c.tls = TlsPaths::in_data_dir(data_dir, Vec::new(), c.tls.reload_interval_ms);
        c
    }

    /// Sets the timings of every cluster (tests use short ones).
    pub fn with_timings(mut self, t: Timings) -> Config {
        self.default_cluster.timings = t.clone();
        for c in self.clusters.values_mut() {
            c.timings = t.clone();
        }
        self
    }
}

impl TlsPaths {
    /// The demo layout: `<data_dir>/certs/{ca,server,server-key}.pem`, generated when missing.
    pub fn in_data_dir(data_dir: &Path, server_names: Vec<String>, reload_ms: u64) -> TlsPaths {
        let d = data_dir.join("certs");
        TlsPaths {
            ca: d.join("ca.pem"),
            cert: d.join("server.pem"),
            key: d.join("server-key.pem"),
            generate_missing: true,
            server_names,
            reload_interval_ms: reload_ms,
        }
    }
}

fn parse_addr(
    file: &str,
    field: &str,
    v: Option<&str>,
    default: &str,
) -> Result<SocketAddr, ConfigError> {
    let s = v.unwrap_or(default);
    s.parse().map_err(|e| {
        ConfigError::new(
            file,
            field,
            format!("{s:?} is not an address:port ({e}); write e.g. \"0.0.0.0:7443\""),
        )
    })
}

/// The 1-based line holding byte `at`.
fn line_of(text: &str, at: usize) -> usize {
    text.get(..at).map_or(0, |b| b.matches('\n').count() + 1)
}

/// The dotted path (`limits.max_connections`) of the key on the line holding byte `at`: the
/// table header in effect there, then the key before `=` (or the header itself).
fn field_path(text: &str, at: usize) -> String {
    let Some(before) = text.get(..at) else {
        return "<document>".to_string();
    };
    let start = before.rfind('\n').map_or(0, |i| i + 1);
    let end = text[start..].find('\n').map_or(text.len(), |i| start + i);
    let line = text[start..end].trim();
    let header = |l: &str| {
        let l = l.trim();
        l.starts_with('[').then(|| {
            l.trim_start_matches('[')
                .split(']')
                .next()
                .unwrap_or("")
                .trim()
                .to_string()
        })
    };
    if let Some(h) = header(line) {
        return h;
    }
    let key = line
        .split('=')
        .next()
        .unwrap_or("")
        .trim()
        .trim_matches('"')
        .to_string();
    let table = text[..start].lines().rev().find_map(header);
    match (table, key.is_empty()) {
        (_, true) => "<document>".to_string(),
        (Some(t), false) if !t.is_empty() => format!("{t}.{key}"),
        _ => key,
    }
}

fn timings_from(
    file: &str,
    field: &str,
    base: &toml::Table,
    over: &toml::Table,
) -> Result<Timings, ConfigError> {
    let mut t = base.clone();
    for (k, v) in over {
        t.insert(k.clone(), v.clone());
    }
    let timings: Timings = toml::Value::Table(t)
        .try_into()
        .map_err(|e: toml::de::Error| {
            ConfigError::new(
                file,
                field,
                format!("{}; see proto::Timings for the fields", e.message().trim()),
            )
        })?;
    timings.validate().map_err(|e| {
        ConfigError::new(
            file,
            format!("{field}.{}", e.field),
            format!("{} (got {})", e.relation, e.detail),
        )
    })?;
    Ok(timings)
}

fn room_name(file: &str, field: &str, v: &Option<String>) -> Result<Option<RoomId>, ConfigError> {
    match v {
        None => Ok(None),
        Some(s) => {
            proto::ids::check_name("room", s).map_err(|e| ConfigError::new(file, field, e))?;
            Ok(Some(RoomId::new(s.clone())))
        }
    }
}

impl RawConfig {
    fn validate(self, file: &str, check_files: bool) -> Result<Config, ConfigError> {
        let data_dir = self
            .data_dir
            .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR));
        if data_dir.as_os_str().is_empty() {
            return Err(ConfigError::new(file, keys::DATA_DIR, "must not be empty"));
        }
        let listen = parse_addr(file, keys::LISTEN, self.listen.as_deref(), DEFAULT_LISTEN)?;
        let status_listen = parse_addr(
            file,
            keys::STATUS_LISTEN,
            self.status_listen.as_deref(),
            DEFAULT_STATUS_LISTEN,
        )?;
        if listen.port() != 0 && listen == status_listen {
            return Err(ConfigError::new(
                file,
                keys::STATUS_LISTEN,
                format!("{status_listen} is also the lease port (listen); use another port"),
            ));
        }
        let tick_interval_ms = self.tick_interval_ms.unwrap_or(200);
        if !(10..=1_000).contains(&tick_interval_ms) {
            return Err(ConfigError::new(
                file,
                keys::TICK_INTERVAL_MS,
                format!(
                    "{tick_interval_ms} is out of range: use 10..=1000 ms (time-based decisions are made this often)"
                ),
            ));
        }
        let l = &self.limits;
        for (field, v) in [
            ("limits.max_connections", l.max_connections as u64),
            ("limits.body_limit_bytes", l.body_limit_bytes as u64),
            ("limits.header_timeout_ms", l.header_timeout_ms),
            ("limits.idle_timeout_ms", l.idle_timeout_ms),
            (
                "limits.requests_per_second_per_identity",
                l.requests_per_second_per_identity as u64,
            ),
            ("limits.max_clusters", l.max_clusters as u64),
        ] {
            if v == 0 {
                return Err(ConfigError::new(file, field, "must be greater than zero"));
            }
        }
        if l.body_limit_bytes < 512 {
            return Err(ConfigError::new(
                file,
                "limits.body_limit_bytes",
                format!(
                    "{} is too small for a lease request (about 300 bytes); use at least 512",
                    l.body_limit_bytes
                ),
            ));
        }
        let tls = {
            let t = &self.tls;
            let set = [t.ca.is_some(), t.cert.is_some(), t.key.is_some()];
            let reload = t.reload_interval_ms.unwrap_or(2_000);
            if reload < 100 {
                return Err(ConfigError::new(
                    file,
                    "tls.reload_interval_ms",
                    "use at least 100 ms",
                ));
            }
            for n in &t.server_names {
                if n.is_empty() {
                    return Err(ConfigError::new(
                        file,
                        "tls.server_names",
                        "an empty name is not a DNS name or IP address",
                    ));
                }
            }
            if set.iter().all(|s| !s) {
                TlsPaths::in_data_dir(&data_dir, t.server_names.clone(), reload)
            } else if set.iter().all(|s| *s) {
                let paths = TlsPaths {
                    ca: t.ca.clone().unwrap_or_default(),
                    cert: t.cert.clone().unwrap_or_default(),
                    key: t.key.clone().unwrap_or_default(),
                    generate_missing: false,
                    server_names: t.server_names.clone(),
                    reload_interval_ms: reload,
                };
                for (field, p) in [
                    ("tls.ca", &paths.ca),
                    ("tls.cert", &paths.cert),
                    ("tls.key", &paths.key),
                ] {
                    if check_files && !p.is_file() {
                        return Err(ConfigError::new(
                            file,
                            field,
                            format!(
                                "{} does not exist or is not a file; create it with `witness certs` (see docs/witness.md)",
                                p.display()
                            ),
                        ));
                    }
                }
                paths
            } else {
                return Err(ConfigError::new(
                    file,
                    "tls",
                    "set all of ca, cert and key, or none of them (then the certificates in <data_dir>/certs are used and generated when missing)",
                ));
            }
        };
        let d = &self.defaults;
        let default_timings =
            timings_from(file, "defaults.timings", &toml::Table::new(), &d.timings)?;
        let default_cluster = ArbiterConfig {
            timings: default_timings,
            preferred_room: room_name(file, "defaults.preferred_room", &d.preferred_room)?,
            auto_rejoin: d.auto_rejoin,
            ..ArbiterConfig::default()
        };
        let mut clusters = BTreeMap::new();
        for (name, c) in &self.clusters {
            let prefix = format!("clusters.{name}");
            proto::ids::check_name("cluster", name)
                .map_err(|e| ConfigError::new(file, &prefix, e))?;
            let timings = timings_from(file, &format!("{prefix}.timings"), &d.timings, &c.timings)?;
            let preferred_room =
                match room_name(file, &format!("{prefix}.preferred_room"), &c.preferred_room)? {
                    Some(r) => Some(r),
                    None => default_cluster.preferred_room.clone(),
                };
            clusters.insert(
                ClusterId::new(name.clone()),
                ArbiterConfig {
                    timings,
                    preferred_room,
                    auto_rejoin: c.auto_rejoin.unwrap_or(d.auto_rejoin),
                    ..ArbiterConfig::default()
                },
            );
        }
        Ok(Config {
            data_dir,
            listen,
            status_listen,
            tick_interval_ms,
            tls,
            limits: self.limits,
            default_cluster,
            clusters,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_gives_the_demo_defaults() {
        let c = Config::parse("", "w.toml").expect("defaults");
        assert_eq!(c.listen.to_string(), DEFAULT_LISTEN);
        assert_eq!(c.status_listen.to_string(), DEFAULT_STATUS_LISTEN);
        assert!(c.tls.generate_missing);
        assert_eq!(c.limits.max_connections, 20_000);
    }

    #[test]
    fn cluster_overrides_layer_over_defaults_field_by_field() {
        let c = Config::parse(
            r#"
            [defaults]
            auto_rejoin = false
            [defaults.timings]
            lease_ms = 6000
            [clusters.hospital-1]
            preferred_room = "a"
            [clusters.hospital-1.timings]
            renew_interval_ms = 500
            "#,
            "w.toml",
        )
        .expect("valid");
        let h = c.cluster_config(&ClusterId::new("hospital-1"));
        assert_eq!(h.timings.lease_ms, 6000);
        assert_eq!(h.timings.renew_interval_ms, 500);
        assert_eq!(h.preferred_room, Some(RoomId::new("a")));
        assert!(!h.auto_rejoin);
        let other = c.cluster_config(&ClusterId::new("other"));
        assert_eq!(other.timings.renew_interval_ms, 1000);
    }

    #[test]
    fn bad_config_names_file_field_and_reason() {
        let e = Config::parse("[limits]\nmax_conections = 5\n", "w.toml").unwrap_err();
        assert_eq!(e.file, "w.toml");
        assert!(e.to_string().contains("max_conections"), "{e}");

        let e = Config::parse("[clusters.h.timings]\nlease_ms = 1500\n", "w.toml").unwrap_err();
        assert_eq!(e.field, "clusters.h.timings.lease_ms", "{e}");
        assert!(e.reason.contains("renew_interval_ms"), "{e}");

        let e = Config::parse("listen = \"nowhere\"\n", "w.toml").unwrap_err();
        assert_eq!(e.field, "listen");

        let e = Config::parse("[tls]\nca = \"/nonexistent/ca.pem\"\n", "w.toml").unwrap_err();
        assert_eq!(e.field, "tls");

        let e = Config::parse("# c\n\n[limits]\nfoo = 1\n", "w.toml").unwrap_err();
        assert_eq!(e.field, "limits.foo", "{e}");
        assert!(e.reason.contains("line 4"), "{e}");
        assert!(e.reason.contains("expected"), "says what was expected: {e}");
        let e = Config::parse(
            "[limits]\nmax_connections = 99999999999999999999999\n",
            "w.toml",
        )
        .unwrap_err();
        assert_eq!(e.field, "limits.max_connections", "{e}");
        assert!(e.reason.contains("line 2"), "{e}");
        let e = Config::parse("[limits]\nmax_connections = 0\n", "w.toml").unwrap_err();
        assert_eq!(e.field, "limits.max_connections");

        let e = Config::parse("[clusters.h]\npreferred_room = \"A B\"\n", "w.toml").unwrap_err();
        assert_eq!(e.field, "clusters.h.preferred_room");
    }
}
