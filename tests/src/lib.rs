//! The real-process fault harness: the `witness` and `witness-agent` binaries run as separate
//! hosts in network namespaces (one per host, joined by veth pairs to a bridge in a switch
//! namespace), with real mTLS certificates and config files from `witness-harness`, and real
//! faults: nftables cuts (both ways, one way, random loss), `kill -9` and restarts, a wiped
//! witness store, libfaketime clock-rate skew and flapping links.
//!
//! What this machine lacks is stood in for at the interface and said so in
//! `docs/scenarios.md`: the watchdog is a FIFO per node read by the harness ([`standin`]),
//! `drbdadm` is a script recording its command lines, Kubernetes is disabled, and a node's "VM"
//! is a `sleep` process with a unique argv[0] that the agent's local VM kill finds in `/proc`.
//!
//! Everything an agent does is recorded from outside ([`recorder`]) on the harness's own
//! monotonic clock (never under faketime), and the [`checker`] judges the timeline.

pub mod checker;
pub mod cluster;
pub mod kube_fixture;
pub mod net;
pub mod procs;
pub mod recorder;
pub mod report;
pub mod standin;
pub mod vmlab;

pub use checker::{check, Verdict};
pub use cluster::{Cluster, Spec};
pub use recorder::Event;

use std::process::Command;

/// Whether this process may create network namespaces. Prints the skip line when not.
pub fn have_root() -> bool {
    if !running_as_root() {
        println!("skipped: needs root for network namespaces");
        return false;
    }
    true
}

fn running_as_root() -> bool {
    // Effective uid from /proc (no unsafe geteuid); then prove `ip netns` works.
    let uid_ok = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|u| u == "0"))
        })
        .unwrap_or(false);
    if !uid_ok {
        return false;
    }
    Command::new("ip")
        .args(["netns", "list"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
        && Command::new("nft")
            .arg("--version")
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false)
}

/// The protocol timings of every scenario: the defaults scaled down about 2x (valid per
/// `Timings::validate`), so a failover takes seconds, yet timeouts stay far above the
/// scheduling noise of a loaded 2-core machine.
pub fn test_timings() -> proto::Timings {
    let t = proto::Timings {
        heartbeat_interval_ms: 250,
        peer_timeout_ms: 1_000,
        renew_interval_ms: 500,
        lease_ms: 2_000,
        silence_ms: 1_250,
        fence_deadline_ms: 1_500,
        watchdog_timeout_ms: 1_000,
        drift_ppm: 10_000,
        rejoin_stable_ms: 4_000,
        min_fenced_ms: 2_500,
    };
    debug_assert!(t.validate().is_ok());
    t
}
