//! The node agent of the two-room witness: keeps a lease with the witness, heartbeats the other
//! room, and fences its own node when its room may no longer run (VM stop, DRBD demote, taint,
//! watchdog, hooks); on the survivor it takes over the other room's workloads.
//!
//! This crate is the shell around [`proto::agent::NodeAgent`]: it keeps time, moves bytes,
//! persists and calls drivers; every protocol decision is the state machine's.
//!
//! Entry points: [`run`] runs an agent until a shutdown future completes; [`start`] starts one
//! and returns its bound addresses (tests use port 0).

pub mod actuator;
pub mod clock;
pub mod config;
pub mod drivers;
pub mod events;
pub mod fence_peer;
pub mod kube;
pub mod machine;
pub mod metrics;
pub mod net;
pub mod shell;
pub mod startup;
pub mod state;
pub mod status;
pub mod takeover;
pub mod tls;
pub mod view;

pub use config::{Config, ConfigError};
pub use shell::{start, Started};

/// Why the agent could not start or had to stop.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("bad configuration: {0}")]
    Config(#[from] ConfigError),
    #[error("cannot listen on {addr} ({field}): {source}")]
    Listen {
        field: String,
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot read the boot id: {0}")]
    BootId(#[source] std::io::Error),
    #[error("cannot persist the run state: {0}")]
    State(#[from] state::StateError),
    #[error("{0}")]
    Internal(String),
}

impl Error {
    /// The process exit status for this error (sysexits.h).
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Config(_) => 64,     // EX_USAGE
            Error::Listen { .. } => 69, // EX_UNAVAILABLE
            Error::BootId(_) => 71,     // EX_OSERR
            Error::State(_) => 74,      // EX_IOERR
            Error::Internal(_) => 70,   // EX_SOFTWARE
        }
    }
}

/// Runs an agent until `shutdown` completes. On the way out the watchdog is disarmed only if
/// this node runs no workloads (see [`drivers::watchdog`]).
pub async fn run(
    config: Config,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), Error> {
    let (tx, rx) = tokio::sync::watch::channel(false);
    let started = start(config, rx).await?;
    tokio::spawn(async move {
        shutdown.await;
        let _ = tx.send(true);
        // Keep the sender alive so the receivers see `true`, not a closed channel.
        std::future::pending::<()>().await;
    });
    started.wait().await
}
