//! `witness-agent`: the node agent binary.
//!
//! - `witness-agent run --config agent.toml` runs the agent (bad configuration: exit 64).
//! - `witness-agent check-config --config agent.toml` validates a configuration and exits.
//! - `witness-agent status [--json] [--url http://127.0.0.1:7481]` shows the node's view.
//! - `witness-agent drbd-fence-peer [--status-url ...] [--timeout-ms ...]` is DRBD's
//!   `fence-peer` handler (exit 7 only when the other room is provably fenced).

use agent::config::{Config, ENV_CONFIG};
use anyhow::Context;
use clap::{Parser, Subcommand};
use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Parser)]
#[command(
    name = "witness-agent",
    version,
    about = "Node agent of the two-room witness"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the agent.
    Run {
        /// The configuration file.
        #[arg(long, env = ENV_CONFIG)]
        config: PathBuf,
    },
    /// Validate a configuration file (and the certificates it names) and exit.
    CheckConfig {
        #[arg(long, env = ENV_CONFIG)]
        config: PathBuf,
        /// Check structure and timings only, not the certificate files (validating a file for
        /// another machine, or the shipped samples).
        #[arg(long)]
        skip_file_checks: bool,
    },
    /// Show the local agent's view of its node.
    Status {
        /// Print the raw JSON.
        #[arg(long)]
        json: bool,
        #[arg(long, default_value = "http://127.0.0.1:7481")]
        url: String,
    },
    /// DRBD fence-peer handler: exit 7 when the other room is provably fenced, 1 (IO stays
    /// frozen) otherwise.
    DrbdFencePeer {
        #[arg(long, default_value = "http://127.0.0.1:7481")]
        status_url: String,
        /// How long to wait for the takeover before giving up (must exceed the worst-case
        /// takeover time of the timings in use).
        #[arg(long, default_value_t = 60_000)]
        timeout_ms: u64,
        /// Pause between questions to the agent.
        #[arg(long, default_value_t = 500)]
        poll_ms: u64,
    },
}

fn env(k: &str) -> Option<String> {
    std::env::var(k).ok()
}

fn init_logs() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(
            std::io::IsTerminal::is_terminal(&std::io::stderr())
                && std::env::var_os("NO_COLOR").is_none(),
        )
        .try_init();
}

fn main() {
    let cli = Cli::parse();
    let code = match cli.cmd {
        Cmd::Run { config } => run(config),
        Cmd::CheckConfig {
            config,
            skip_file_checks,
        } => match Config::load(&config, &env) {
            Ok(c) if skip_file_checks => {
                let n = c.names();
                println!(
                    "{}: ok (structure and timings of node {}/{}/{}; certificate files not checked)",
                    config.display(),
                    n.cluster,
                    n.room,
                    n.node
                );
                0
            }
            Ok(c) => match agent::tls::TlsState::load(&c.tls) {
                Ok(t) => match agent::shell::check_identity(&c, &t) {
                    Ok(()) => {
                        println!("{}: ok ({})", config.display(), t.identity.to_uri());
                        0
                    }
                    Err(e) => {
                        eprintln!("{e}");
                        64
                    }
                },
                Err(e) => {
                    eprintln!("{}: {e}", config.display());
                    64
                }
            },
            Err(e) => {
                eprintln!("{e}");
                64
            }
        },
        Cmd::Status { json, url } => match status(&url, json) {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("witness-agent status: {e:#}");
                69
            }
        },
        Cmd::DrbdFencePeer {
            status_url,
            timeout_ms,
            poll_ms,
        } => fence_peer(&status_url, timeout_ms, poll_ms),
    };
    std::process::exit(code);
}

fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
}

fn run(path: PathBuf) -> i32 {
    init_logs();
    let cfg = match Config::load(&path, &env) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("witness-agent: refusing to start: {e}");
            return 64;
        }
    };
    let rt = match runtime() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("witness-agent: cannot start the runtime: {e}");
            return 71;
        }
    };
    let r = rt.block_on(agent::run(cfg, async {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(e) => {
                    tracing::error!("cannot watch SIGTERM: {e}");
                    let _ = tokio::signal::ctrl_c().await;
                    return;
                }
            };
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM: stopping"),
            _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT: stopping"),
        }
    }));
    match r {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("witness-agent: {e}");
            e.exit_code()
        }
    }
}

fn status(url: &str, json: bool) -> anyhow::Result<()> {
    let rt = runtime()?;
    let v: serde_json::Value = rt.block_on(async {
        let u = format!("{}/v1/status", url.trim_end_matches('/'));
        reqwest::Client::builder()
            .timeout(Duration::from_secs(3))
            .no_proxy()
            .build()?
            .get(&u)
            .send()
            .await
            .with_context(|| format!("asking {u}"))?
            .error_for_status()?
            .json()
            .await
            .context("reading the status")
    })?;
    if json {
        // A closed pipe (`| head`) is not an error worth a panic.
        let _ = writeln!(std::io::stdout(), "{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    let mut out = std::io::stdout().lock();
    let s = |p: &str| match v.pointer(p) {
        None | Some(serde_json::Value::Null) => "-".to_string(),
        Some(serde_json::Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
    };
    let _ = writeln!(
        out,
        "node      {} (room {}, cluster {})",
        s("/node"),
        s("/room"),
        s("/cluster")
    );
    let _ = writeln!(
        out,
        "phase     {}  for {} ms  escalated={}",
        s("/phase"),
        s("/phase_for_ms"),
        s("/escalated")
    );
    let _ = writeln!(
        out,
        "authority {}  vouching={}  claiming={}  epoch={}",
        s("/authority"),
        s("/vouching"),
        s("/claiming"),
        s("/epoch")
    );
    let _ = writeln!(
        out,
        "lease     valid={} mode={} permit={} remaining={} ms",
        s("/lease/valid"),
        s("/lease/mode"),
        s("/lease/takeover_permit"),
        s("/lease/remaining_ms")
    );
    let _ = writeln!(
        out,
        "witness   {} reachable={} last={} error={}",
        s("/witness/url"),
        s("/witness/reachable"),
        s("/witness/last_verdict"),
        s("/witness/last_error")
    );
    let _ = writeln!(
        out,
        "peers     contact={} reachable={}",
        s("/peer_contact"),
        s("/peer_reachable")
    );
    if let Some(peers) = v.get("peers").and_then(|p| p.as_array()) {
        for p in peers {
            let _ = writeln!(
                out,
                "  {:<16} {:<22} reachable={} vouch={} phase={} error={}",
                p["node"].as_str().unwrap_or("-"),
                p["address"].as_str().unwrap_or("-"),
                p["reachable"],
                p["vouch"],
                p["phase"],
                p["last_error"]
            );
        }
    }
    let _ = writeln!(
        out,
        "fencing   {} (epoch {}) {}",
        s("/fencing/state"),
        s("/fencing/epoch"),
        s("/fencing/reason")
    );
    if let Some(ds) = v.pointer("/fencing/drivers").and_then(|p| p.as_array()) {
        for d in ds {
            let _ = writeln!(
                out,
                "  {:<9} {:<8} {:>5} ms  {}",
                d["driver"].as_str().unwrap_or("-"),
                d["outcome"].as_str().unwrap_or("-"),
                d["elapsed_ms"],
                d["detail"].as_str().unwrap_or("")
            );
        }
    }
    let _ = writeln!(
        out,
        "takeover  active={} work={}",
        s("/takeover/active"),
        s("/takeover/work/state")
    );
    let _ = writeln!(
        out,
        "watchdog  enabled={} held={} device={} error={}",
        s("/watchdog/enabled"),
        s("/watchdog/held"),
        s("/watchdog/device"),
        s("/watchdog/error")
    );
    let _ = writeln!(
        out,
        "cert      {} expires in {} s",
        s("/certificate/identity"),
        s("/certificate/expires_in_s")
    );
    Ok(())
}

fn fence_peer(url: &str, timeout_ms: u64, poll_ms: u64) -> i32 {
    let rt = match runtime() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("drbd-fence-peer: {e}");
            return agent::fence_peer::KEEP_FROZEN;
        }
    };
    let (code, why) = rt.block_on(agent::fence_peer::decide(
        url,
        Duration::from_millis(timeout_ms),
        Duration::from_millis(poll_ms.max(10)),
    ));
    let res = env("DRBD_RESOURCE").unwrap_or_default();
    eprintln!("witness-agent drbd-fence-peer {res}: exit {code}: {why}");
    code
}
