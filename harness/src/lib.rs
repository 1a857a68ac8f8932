//! What every launcher of a local cluster shares (the real-process harness in `tests/`, the
//! benches and the demo in `bench/`, the VM lab): one set of certificates made with the
//! witness's own certificate code ([`Pki`]), and `witness.toml` / `agent.toml` built as the
//! witness's and the agent's real configuration types and serialised ([`config`]), so that a
//! renamed or removed key fails to compile here instead of failing at run time in a launcher.
//!
//! How the processes are then run (network namespaces with faults, or loopback with a relay
//! between the rooms) stays with each launcher: that is what differs between them.

pub mod config;
pub mod pki;

pub use config::{
    agent_config, agent_toml, witness_config, witness_toml, write_agent, write_witness,
};
pub use pki::Pki;

use std::path::PathBuf;

/// What the harness could not set up, naming the file or field at fault.
#[derive(Debug, thiserror::Error)]
pub enum HarnessError {
    #[error("certificates in {dir}: {source}")]
    Certs {
        dir: PathBuf,
        #[source]
        source: witness::certs::CertError,
    },
    #[error("{what} does not serialise to TOML: {source}")]
    Serialise {
        what: String,
        #[source]
        source: toml::ser::Error,
    },
    /// The built file is one the real parser refuses: the builder's caller set a bad value.
    #[error("the harness built a configuration its program refuses: {0}; fix the value the launcher sets")]
    Refused(String),
    #[error("writing {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}
