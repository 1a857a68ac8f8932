//! `witness.toml` and `agent.toml` for a local cluster, built as the programs' own configuration
//! types (`witness::config::RawConfig`, `agent::config::Config`) and serialised. Every file is
//! parsed back with the program's own parser before it is handed out, so a launcher learns of a
//! value the program refuses when it builds the file, with the program's own message.
use crate::pki::Member;
use crate::HarnessError;
use agent::config::{
    Config as AgentConfig, DrbdConfig, KubernetesConfig, TlsConfig, VmConfig, WatchdogConfig,
};
use proto::Timings;
use std::path::{Path, PathBuf};
use witness::config::{DefaultsSection, RawConfig as WitnessConfig, TlsSection};

/// `proto::Timings` as the table `[defaults.timings]` holds.
pub fn timings_table(t: &Timings) -> Result<toml::Table, HarnessError> {
    toml::Table::try_from(t).map_err(|source| HarnessError::Serialise {
        what: "proto::Timings".into(),
        source,
    })
}

/// A witness keeping its store in `data_dir`, serving leases on `listen` and its status page on
/// `status_listen`, with `tls` and `timings` for every cluster (auto-rejoin on, no preferred
/// room). Everything else is the witness's default; set fields on the result to change them.
pub fn witness_config(
    data_dir: &Path,
    listen: &str,
    status_listen: &str,
    tls: TlsSection,
    timings: &Timings,
) -> Result<WitnessConfig, HarnessError> {
    Ok(WitnessConfig {
        data_dir: Some(data_dir.to_path_buf()),
        listen: Some(listen.into()),
        status_listen: Some(status_listen.into()),
        tls,
        defaults: DefaultsSection {
            auto_rejoin: true,
            preferred_room: None,
            timings: timings_table(timings)?,
        },
        ..Default::default()
    })
}

/// An agent for `member` leasing from `witness_url`, with its heartbeat listener on `listen`,
/// its status on 127.0.0.1:7481 and its state in `run_dir`; no peers, no event socket, and
/// every fencing driver disabled (log only). Set fields on the result for the rest.
pub fn agent_config(
    member: &Member,
    witness_url: &str,
    listen: &str,
    run_dir: &Path,
    tls: TlsConfig,
    timings: &Timings,
) -> AgentConfig {
    AgentConfig {
        cluster: member.cluster.clone(),
        room: member.room.clone(),
        node: member.node.clone(),
        witness_url: witness_url.into(),
        listen: listen.into(),
        status_listen: "127.0.0.1:7481".into(),
        advertise: String::new(),
        run_dir: run_dir.to_path_buf(),
        event_socket: String::new(),
        tls,
        peers: Vec::new(),
        timings: timings.clone(),
        kubernetes: KubernetesConfig {
            enabled: false,
            ..Default::default()
        },
        vm: VmConfig {
            enabled: false,
            ..Default::default()
        },
        drbd: DrbdConfig {
            enabled: false,
            ..Default::default()
        },
        watchdog: WatchdogConfig {
            enabled: false,
            ..Default::default()
        },
        hooks: Vec::new(),
        origin: String::new(),
    }
}

fn serialise<T: serde::Serialize>(what: &str, v: &T) -> Result<String, HarnessError> {
    toml::to_string(v).map_err(|source| HarnessError::Serialise {
        what: what.into(),
        source,
    })
}

/// The text of `witness.toml`, checked by the witness's own parser (the TLS files must exist).
pub fn witness_toml(c: &WitnessConfig) -> Result<String, HarnessError> {
    let text = serialise("witness.toml", c)?;
    witness::config::Config::parse(&text, "witness.toml (built by the harness)")
        .map_err(|e| HarnessError::Refused(e.to_string()))?;
    Ok(text)
}

/// The text of an `agent.toml`, checked by the agent's own parser (paths are not opened: the
/// file may be for another machine, as the VM lab's guests).
pub fn agent_toml(c: &AgentConfig) -> Result<String, HarnessError> {
    let text = serialise("agent.toml", c)?;
    let origin = format!("{}'s agent.toml (built by the harness)", c.node);
    agent::config::Config::parse(&text, &origin, &|_| None)
        .map_err(|e| HarnessError::Refused(e.to_string()))?;
    Ok(text)
}

fn write(path: &Path, text: String) -> Result<PathBuf, HarnessError> {
    std::fs::write(path, text).map_err(|source| HarnessError::Write {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(path.to_path_buf())
}

/// Writes [`witness_toml`] to `path`.
pub fn write_witness(path: &Path, c: &WitnessConfig) -> Result<PathBuf, HarnessError> {
    write(path, witness_toml(c)?)
}

/// Writes [`agent_toml`] to `path`.
pub fn write_agent(path: &Path, c: &AgentConfig) -> Result<PathBuf, HarnessError> {
    write(path, agent_toml(c)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Pki;
    use agent::config::PeerConfig;

    #[test]
    fn built_files_parse_back_to_what_was_built() {
        let dir = tempfile::tempdir().expect("temp dir");
        let a1 = Member::new("c1", "a", "a1", &["127.0.0.1"]);
        let pki = Pki::create(
            &dir.path().join("certs"),
            &["witness"],
            std::slice::from_ref(&a1),
            &["ops"],
        )
        .expect("certificates");
        for f in ["ca", "server", "a1", "ops"] {
            assert!(pki.pair(f).0.is_file() && pki.pair(f).1.is_file(), "{f}");
        }

        let t = Timings {
            lease_ms: 6_000,
            ..Timings::default()
        };
        let mut w = witness_config(
            &dir.path().join("data"),
            "127.0.0.1:7443",
            "127.0.0.1:7480",
            pki.witness_tls(),
            &t,
        )
        .expect("witness config");
        w.tick_interval_ms = Some(50);
        w.defaults.preferred_room = Some("a".into());
        let text = witness_toml(&w).expect("witness.toml");
        let parsed = witness::config::Config::parse(&text, "w.toml").expect("parses");
        assert_eq!(parsed.default_cluster.timings, t);
        assert_eq!(parsed.tick_interval_ms, 50);
        assert_eq!(parsed.tls.cert, pki.pair("server").0);
        assert!(!parsed.tls.generate_missing);

        let mut c = agent_config(
            &a1,
            "https://127.0.0.1:7443",
            "127.0.0.1:7444",
            &dir.path().join("run"),
            pki.agent_tls("a1"),
            &t,
        );
        c.peers = vec![PeerConfig {
            node: "b1".into(),
            address: "127.0.0.1:7445".into(),
        }];
        c.drbd.enabled = true;
        let text = agent_toml(&c).expect("agent.toml");
        let mut back = AgentConfig::parse(&text, "a1.toml", &|_| None).expect("parses");
        back.origin = String::new();
        assert_eq!(back, c);
    }

    #[test]
    fn a_value_the_program_refuses_is_refused_when_the_file_is_built() {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut w = witness_config(
            dir.path(),
            "127.0.0.1:1",
            "127.0.0.1:2",
            TlsSection::default(),
            &Timings::default(),
        )
        .expect("witness config");
        w.tick_interval_ms = Some(5);
        let e = witness_toml(&w).expect_err("tick of 5 ms is refused");
        assert!(e.to_string().contains("tick_interval_ms"), "{e}");
    }
}
