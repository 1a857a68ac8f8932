//! The `witness` binary: `serve`, `certs`, `status` and `admin`. A thin edge over the library;
//! errors become one clear message and an exit status (64 for a bad configuration or usage).

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};
use proto::wire::AdminCommand;
use proto::{NodeId, RoomId};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use witness::certs::{self, Validity};
use witness::config::{Config, TlsPaths, DEFAULT_DATA_DIR};

/// EX_USAGE: bad configuration or arguments.
const EXIT_CONFIG: u8 = 64;

#[derive(Parser)]
#[command(
    name = "witness",
    version,
    about = "The two-room witness: grants time-bounded site leases over mutual TLS so that exactly one room runs when the rooms are split"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the witness (with no arguments: a demo setup in ./witness-data on loopback).
    Serve(ServeArgs),
    /// Issue certificates: a CA, the witness's server certificate, node and operator certificates.
    #[command(subcommand)]
    Certs(CertsCmd),
    /// Show what a running witness knows.
    Status {
        /// Print the JSON document instead of a table.
        #[arg(long)]
        json: bool,
        /// The witness's status port.
        #[arg(
            long,
            default_value = "http://127.0.0.1:7480",
            env = "WITNESS_STATUS_URL"
        )]
        url: String,
        /// Only this cluster.
        #[arg(long)]
        cluster: Option<String>,
    },
    /// Send an operator command to a cluster (needs an admin certificate; every use is audited).
    Admin(AdminArgs),
    /// Validate a configuration file and print the settings and derived bounds per cluster.
    CheckConfig {
        #[arg(long, short, env = "WITNESS_CONFIG")]
        config: Option<PathBuf>,
        /// Do not check that the TLS files exist (validating a file for another machine).
        #[arg(long)]
        skip_file_checks: bool,
    },
}

#[derive(Args)]
struct ServeArgs {
    /// The configuration file (TOML); every setting has a default.
    #[arg(long, short, env = "WITNESS_CONFIG")]
    config: Option<PathBuf>,
    /// Overrides data_dir.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Overrides listen (the lease API, mutual TLS).
    #[arg(long)]
    listen: Option<String>,
    /// Overrides status_listen (status page, metrics, probes; plain HTTP).
    #[arg(long)]
    status_listen: Option<String>,
    /// Extra DNS name or IP for the generated server certificate (repeatable; demo mode).
    #[arg(long = "server-name")]
    server_names: Vec<String>,
    /// Log as JSON lines instead of text.
    #[arg(long)]
    log_json: bool,
}

#[derive(Subcommand)]
enum CertsCmd {
    /// Create a CA (ca.pem, ca-key.pem).
    Ca {
        #[arg(long)]
        out: PathBuf,
        #[arg(long, default_value = "witness CA")]
        name: String,
        #[arg(long, default_value_t = Validity::CA_DEFAULT_DAYS)]
        days: u32,
        /// Replace existing files.
        #[arg(long)]
        force: bool,
    },
    /// Issue the witness's server certificate (server.pem, server-key.pem).
    Server {
        #[arg(long)]
        ca_dir: PathBuf,
        /// DNS name (repeatable); localhost is always included.
        #[arg(long = "name")]
        names: Vec<String>,
        /// IP address (repeatable); 127.0.0.1 is always included.
        #[arg(long = "ip")]
        ips: Vec<String>,
        #[arg(long)]
        out: PathBuf,
        #[arg(long, default_value_t = Validity::LEAF_DEFAULT_DAYS)]
        days: u32,
        #[arg(long)]
        force: bool,
    },
    /// Issue a node certificate (witness://<cluster>/<room>/<node>) as <node>.pem.
    Node {
        #[arg(long)]
        ca_dir: PathBuf,
        #[arg(long)]
        cluster: String,
        #[arg(long)]
        room: String,
        #[arg(long)]
        node: String,
        /// Extra DNS name or IP for the agent's own TLS endpoint (repeatable).
        #[arg(long = "san")]
        sans: Vec<String>,
        /// File name instead of <node> (e.g. when nodes of several clusters share a directory).
        #[arg(long)]
        file_name: Option<String>,
        #[arg(long)]
        out: PathBuf,
        #[arg(long, default_value_t = Validity::LEAF_DEFAULT_DAYS)]
        days: u32,
        #[arg(long)]
        force: bool,
    },
    /// Show each certificate of the PEM files: subject, identity, days left; warns within 30
    /// days and fails on an expired one (for a cron job or a deploy check).
    Check {
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Issue an operator certificate (witness-admin://<name>) as <name>.pem.
    Admin {
        #[arg(long)]
        ca_dir: PathBuf,
        #[arg(long)]
        name: String,
        #[arg(long)]
        out: PathBuf,
        #[arg(long, default_value_t = Validity::LEAF_DEFAULT_DAYS)]
        days: u32,
        #[arg(long)]
        force: bool,
    },
}

#[derive(Args)]
struct AdminArgs {
    #[arg(long)]
    cluster: String,
    /// The witness's lease API.
    #[arg(
        long,
        global = true,
        default_value = "https://127.0.0.1:7443",
        env = "WITNESS_URL"
    )]
    url: String,
    /// Where the demo certificates are (used for --ca/--cert/--key when those are not given).
    #[arg(long, global = true, default_value = DEFAULT_DATA_DIR)]
    data_dir: PathBuf,
    /// The witness CA (default <data-dir>/certs/ca.pem).
    #[arg(long, global = true)]
    ca: Option<PathBuf>,
    /// The operator certificate (default <data-dir>/certs/admin.pem).
    #[arg(long, global = true)]
    cert: Option<PathBuf>,
    /// The operator key (default <data-dir>/certs/admin-key.pem).
    #[arg(long, global = true)]
    key: Option<PathBuf>,
    #[command(subcommand)]
    command: AdminCmd,
}

#[derive(Subcommand)]
enum AdminCmd {
    /// The double fault: let ROOM act alone.
    ForceSurvivor {
        #[arg(long)]
        room: String,
        /// Certify that every node of the other room is powered off (takeover need not wait).
        #[arg(long)]
        other_room_down: bool,
    },
    /// End the survivor's sole right; the fenced room rejoins.
    Release,
    /// Stop split and rejoin decisions (maintenance).
    Pause,
    /// Resume arbitration.
    Resume,
    /// The cluster's membership: take a node out, let it back, or retire it.
    #[command(subcommand)]
    Member(MemberCmd),
}

#[derive(Subcommand)]
enum MemberCmd {
    /// Stop counting NODE for the other room's peer contact (planned work, a node that is off):
    /// refused while it may still run, unless --powered-off; it is granted nothing until `add`.
    Remove {
        node: String,
        /// Certify that the node is powered off (it need not be proven stopped first).
        #[arg(long)]
        powered_off: bool,
    },
    /// Let a removed or decommissioned NODE count again; it runs once the other room has
    /// acknowledged it.
    Add { node: String },
    /// Retire NODE for good (same conditions as `remove`); a machine that later calls with
    /// this name joins as a new node.
    Decommission {
        node: String,
        #[arg(long)]
        powered_off: bool,
    },
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() { EXIT_CONFIG } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("witness: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match rt.block_on(dispatch(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            if let Some(c) = e.downcast_ref::<witness::config::ConfigError>() {
                eprintln!("witness: configuration refused: {c}");
                return ExitCode::from(EXIT_CONFIG);
            }
            if let Some(witness::ServerError::Config(c)) = e.downcast_ref::<witness::ServerError>()
            {
                eprintln!("witness: configuration refused: {c}");
                return ExitCode::from(EXIT_CONFIG);
            }
            eprintln!("witness: {}", render_chain(&e));
            ExitCode::from(1)
        }
    }
}

/// The error and its causes, each cause shown once (our messages often already quote theirs).
fn render_chain(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let c = cause.to_string();
        if !out.contains(&c) {
            if !out.is_empty() {
                out.push_str(": ");
            }
            out.push_str(&c);
        }
    }
    out
}

async fn dispatch(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Serve(a) => serve(a).await,
        Command::Certs(c) => certs_cmd(c),
        Command::Status { json, url, cluster } => {
            let v = witness::client::fetch_status(&url, cluster.as_deref()).await?;
            // The operator's own certificate, where `witness serve` and `witness admin` keep it
            // by default: no process watches it, so the operator is told here and at each use.
            let admin_cert = Path::new(DEFAULT_DATA_DIR)
                .join("certs")
                .join(format!("{}.pem", certs::DEMO_ADMIN));
            if let Some(w) = certs::expiry_warning(&admin_cert) {
                eprintln!("warning: {w}");
            }
            if json {
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                print!("{}", witness::client::render_table(&v)?);
            }
            Ok(())
        }
        Command::Admin(a) => admin(a).await,
        Command::CheckConfig {
            config,
            skip_file_checks,
        } => check_config(config.as_deref(), !skip_file_checks),
    }
}

fn check_config(path: Option<&Path>, check_files: bool) -> Result<()> {
    let config = match path {
        Some(p) => Config::load_with(p, check_files)?,
        None => Config::default(),
    };
    let name = path
        .map(|p| p.display().to_string())
        .unwrap_or_else(|| "<defaults>".into());
    println!("{name}: valid");
    println!("data_dir        {}", config.data_dir.display());
    println!(
        "listen          {} (lease API, mutual TLS 1.3)",
        config.listen
    );
    println!("status_listen   {} (plain HTTP)", config.status_listen);
    println!(
        "tls             ca {} ; cert {} ; key {}{}",
        config.tls.ca.display(),
        config.tls.cert.display(),
        config.tls.key.display(),
        if config.tls.generate_missing {
            " (demo: generated when missing)"
        } else {
            ""
        }
    );
    let show = |label: &str, c: &proto::arbiter::ArbiterConfig| {
        let t = &c.timings;
        println!(
            "{label}: preferred_room {} auto_rejoin {} lease {} ms renew {} ms silence {} ms; \
             witness takeover wait {} ms, forgotten-state wait {} ms, worst-case room-loss takeover {} ms",
            c.preferred_room.as_ref().map(|r| r.as_str()).unwrap_or("-"),
            c.auto_rejoin,
            t.lease_ms,
            t.renew_interval_ms,
            t.silence_ms,
            t.witness_takeover_wait_ms(),
            t.forgotten_state_wait_ms(),
            t.worst_case_room_loss_takeover_ms()
        );
    };
    show("defaults", &config.default_cluster);
    for (c, cfg) in &config.clusters {
        show(&format!("cluster {c}"), cfg);
    }
    Ok(())
}

fn init_logs(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("WITNESS_LOG")
        .or_else(|_| tracing_subscriber::EnvFilter::try_from_default_env())
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colour only for a person at a terminal: journald and log files get plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr())
        && std::env::var_os("NO_COLOR").is_none();
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi);
    if json {
        b.json().init();
    } else {
        b.init();
    }
}

async fn serve(a: ServeArgs) -> Result<()> {
    init_logs(a.log_json);
    let mut config = match &a.config {
        Some(p) => Config::load(p)?,
        None => Config::default(),
    };
    let cli_err = |field: &str, reason: String| witness::config::ConfigError {
        file: "<command line>".into(),
        field: field.into(),
        reason,
    };
    if let Some(d) = a.data_dir {
        // Demo-mode certificate paths follow the data directory.
        if config.tls.generate_missing {
            config.tls = TlsPaths::in_data_dir(
                &d,
                config.tls.server_names.clone(),
                config.tls.reload_interval_ms,
            );
        }
        config.data_dir = d;
    }
    if let Some(l) = a.listen {
        config.listen = l
            .parse()
            .map_err(|e| cli_err("--listen", format!("{l:?}: {e}")))?;
    }
    if let Some(l) = a.status_listen {
        config.status_listen = l
            .parse()
            .map_err(|e| cli_err("--status-listen", format!("{l:?}: {e}")))?;
    }
    config.tls.server_names.extend(a.server_names);

    let prepared = witness::server::prepare(config).await?;
    let cfg = prepared.config().clone();
    let listeners = witness::Listeners::bind(&cfg).await?;
    let lease = listeners.lease.local_addr()?;
    let status = listeners.status.local_addr()?;
    print_banner(&cfg, &prepared.created_certs, lease, status);
    witness::server::serve(prepared, listeners, shutdown_signal()).await?;
    Ok(())
}

fn print_banner(
    cfg: &Config,
    created: &[PathBuf],
    lease: std::net::SocketAddr,
    status: std::net::SocketAddr,
) {
    let certs_dir = cfg
        .tls
        .ca
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default();
    eprintln!("witness: data directory {}", cfg.data_dir.display());
    if !created.is_empty() {
        eprintln!(
            "witness: created {} certificate files in {} (demo cluster `{}`: nodes {} ; operator `{}`)",
            created.len(),
            certs_dir.display(),
            certs::DEMO_CLUSTER,
            certs::DEMO_NODES
                .iter()
                .map(|(r, n)| format!("{n} (room {r})"))
                .collect::<Vec<_>>()
                .join(", "),
            certs::DEMO_ADMIN
        );
    }
    eprintln!(
        "witness: CA {} ; server certificate {} ; client certificates <name>.pem / <name>-key.pem in {}",
        cfg.tls.ca.display(),
        cfg.tls.cert.display(),
        certs_dir.display()
    );
    eprintln!("witness: lease API https://{lease} (mutual TLS 1.3) ; status http://{status}/ (metrics /metrics, probes /healthz /readyz)");
}

/// Resolves on SIGTERM or SIGINT.
async fn shutdown_signal() {
    #[cfg(unix)]
    {
        let term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate());
        match term {
            Ok(mut t) => {
                tokio::select! {
                    _ = t.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

fn certs_cmd(c: CertsCmd) -> Result<()> {
    let show = |w: certs::Written| {
        println!(
            "wrote {} and {} (key mode 0600)",
            w.cert.display(),
            w.key.display()
        );
    };
    match c {
        CertsCmd::Ca {
            out,
            name,
            days,
            force,
        } => {
            show(certs::create_ca(&out, &name, Validity { days }, force)?);
        }
        CertsCmd::Server {
            ca_dir,
            names,
            ips,
            out,
            days,
            force,
        } => {
            let ca = certs::Ca::load(&ca_dir)?;
            let all: Vec<String> = names.into_iter().chain(ips).collect();
            show(ca.issue_server(&out, &all, Validity { days }, force)?);
        }
        CertsCmd::Node {
            ca_dir,
            cluster,
            room,
            node,
            sans,
            file_name,
            out,
            days,
            force,
        } => {
            let ca = certs::Ca::load(&ca_dir)?;
            show(ca.issue_node(
                &out,
                &cluster,
                &room,
                &node,
                &sans,
                file_name.as_deref(),
                Validity { days },
                force,
            )?);
            println!("identity witness://{cluster}/{room}/{node}");
        }
        CertsCmd::Admin {
            ca_dir,
            name,
            out,
            days,
            force,
        } => {
            let ca = certs::Ca::load(&ca_dir)?;
            show(ca.issue_admin(&out, &name, Validity { days }, force)?);
            println!("identity witness-admin://{name}");
        }
        CertsCmd::Check { files } => {
            let now = certs::unix_now();
            let mut expired = 0;
            for f in &files {
                for c in certs::inspect(f, now)? {
                    println!(
                        "{}: {} {} {} days left",
                        f.display(),
                        c.subject,
                        c.identities.join(","),
                        c.days_left
                    );
                    if let Some(w) = c.warning() {
                        eprintln!("warning: {}: {w}", f.display());
                    }
                    expired += usize::from(c.days_left < 0);
                }
            }
            anyhow::ensure!(expired == 0, "{expired} certificate(s) expired");
        }
    }
    Ok(())
}

async fn admin(a: AdminArgs) -> Result<()> {
    let certs_dir = a.data_dir.join("certs");
    let creds = witness::client::AdminCreds {
        ca: a.ca.unwrap_or_else(|| certs_dir.join("ca.pem")),
        cert: a
            .cert
            .unwrap_or_else(|| certs_dir.join(format!("{}.pem", certs::DEMO_ADMIN))),
        key: a
            .key
            .unwrap_or_else(|| certs_dir.join(format!("{}-key.pem", certs::DEMO_ADMIN))),
    };
    if let Some(w) = certs::expiry_warning(&creds.cert) {
        eprintln!("warning: {w}");
    }
    let cmd = match a.command {
        AdminCmd::ForceSurvivor {
            room,
            other_room_down,
        } => AdminCommand::ForceSurvivor {
            room: RoomId::new(room),
            other_room_down,
        },
        AdminCmd::Release => AdminCommand::Release,
        AdminCmd::Pause => AdminCommand::Pause,
        AdminCmd::Resume => AdminCommand::Resume,
        AdminCmd::Member(MemberCmd::Remove { node, powered_off }) => AdminCommand::MemberRemove {
            node: NodeId::new(node),
            powered_off,
        },
        AdminCmd::Member(MemberCmd::Add { node }) => AdminCommand::MemberAdd {
            node: NodeId::new(node),
        },
        AdminCmd::Member(MemberCmd::Decommission { node, powered_off }) => {
            AdminCommand::MemberDecommission {
                node: NodeId::new(node),
                powered_off,
            }
        }
    };
    let v = witness::client::admin(&a.url, &creds, &a.cluster, &cmd)
        .await
        .with_context(|| format!("admin command for cluster {}", a.cluster))?;
    println!("{}", serde_json::to_string_pretty(&v)?);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_line_definition_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
