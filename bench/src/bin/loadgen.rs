//! Load generator: N two-room clusters (two client identities each, every one with its own
//! certificate issued in-process with rcgen) renewing leases at the protocol's renew interval
//! over mutual-TLS keep-alive connections against the real `witness serve` binary, started as a
//! child process so its RSS and CPU come from /proc/<pid>. Prints sustained renewals/s,
//! latency percentiles (measured from each renewal's scheduled send time, so a witness that
//! falls behind shows it), errors, and the witness's idle and loaded RSS and CPU.
//!
//! `--floor` then drives the transport floor (`floor`: the same rustls mutual TLS and hyper
//! HTTP/1.1 keep-alive, answering a fixed reply of the witness's reply size) with the same load
//! in the same run, and prints the witness's CPU per renewal against the floor's per request.
//! `--callgrind N` instead runs the server under `valgrind --tool=callgrind` and counts the
//! instructions of exactly N renewals per identity: a figure that does not move with whatever
//! else the machine runs.
//!
//! `cargo run --release -p witness-bench --bin loadgen -- --clusters 10000 --seconds 20 --floor`
//!
//! `LOADGEN_TRACE=1` prints every measured second's answered count and the server's RSS.

use anyhow::{bail, Context, Result};
use clap::Parser;
use rcgen::{
    CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::process::Command;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;
use witness::certs::{self, Ca, Validity};
use witness_bench::report::{percentile, Section};
use witness_bench::{find_bin, free_port, sys};

/// The goals of issue 16, printed against each figure.
const TARGET_US_PER_RENEWAL: f64 = 25.0;
const TARGET_P99_MS: f64 = 25.0;
const TARGET_RSS_MIB: u64 = 256;
const TARGET_FLOOR_RATIO: f64 = 1.5;

#[derive(Parser)]
#[command(about = "Lease renewal load against a real witness process")]
struct Args {
    /// Two-room clusters to simulate (two identities each: one node per room).
    #[arg(long, default_value_t = 10_000)]
    clusters: usize,
    /// Seconds to measure after every connection is up and warmed.
    #[arg(long, default_value_t = 20)]
    seconds: u64,
    /// Renew interval per identity (default: the protocol's default renew interval).
    #[arg(long)]
    renew_ms: Option<u64>,
    /// TLS handshakes in flight while connecting.
    #[arg(long, default_value_t = 32)]
    connect_concurrency: usize,
    /// Append a markdown section with the figures to this file.
    #[arg(long)]
    markdown: Option<PathBuf>,
    /// Write the figures as JSON to this file (for the etcd comparison).
    #[arg(long)]
    json_out: Option<PathBuf>,
    /// Extra lines for the witness's configuration file (experiments).
    #[arg(long, default_value = "")]
    witness_extra: String,
    /// After the witness, drive the transport floor (bin `floor`) with the same load.
    #[arg(long)]
    floor: bool,
    /// Count instructions instead: the server under valgrind's callgrind, this many renewals
    /// per identity back to back after a warm-up (use few clusters: valgrind is ~50x slower).
    #[arg(long)]
    callgrind: Option<u64>,
    /// Keep the callgrind dumps in this directory (`callgrind.<server>.out`, for callgrind_annotate).
    #[arg(long)]
    callgrind_keep: Option<PathBuf>,
}

#[derive(Clone)]
struct Identity {
    cluster: String,
    room: &'static str,
    node: String,
    config: Arc<rustls::ClientConfig>,
}

#[derive(Default)]
struct Counters {
    ok: AtomicU64,
    errors: AtomicU64,
    non_grant: AtomicU64,
    reconnects: AtomicU64,
    reply_bytes: AtomicU64,
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    tokio::select! {
        r = run(args) => r,
        _ = tokio::signal::ctrl_c() => {
            eprintln!("interrupted: stopping the servers");
            Ok(())
        }
    }
}

/// What the load runs against.
#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Witness,
    /// The floor, answering `reply_bytes` of JSON.
    Floor {
        reply_bytes: usize,
    },
}

/// A server process started for one measurement.
struct Server {
    child: tokio::process::Child,
    pid: u32,
    port: u16,
    log: PathBuf,
    name: &'static str,
    /// Where callgrind writes its dumps (`<prefix>.<n>`), when under valgrind.
    callgrind_out: Option<PathBuf>,
}

impl Server {
    async fn stop(mut self) {
        let _ = sys::signal(self.pid, "TERM");
        if tokio::time::timeout(Duration::from_secs(10), self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.kill().await;
        }
    }
}

/// The directory with the CA, server certificate and the witness's files of one run.
struct Setup {
    dir: PathBuf,
    certs_dir: PathBuf,
    clusters: usize,
    ids: usize,
}

async fn start(kind: Kind, setup: &Setup, args: &Args, callgrind: bool) -> Result<Server> {
    let port = free_port()?;
    let (name, bin, argv): (&'static str, PathBuf, Vec<String>) = match kind {
        Kind::Witness => {
            let data = setup.dir.join("data");
            if !data.exists() {
                std::fs::create_dir_all(&data)?;
                witness::store::Store::init_fresh(&data.join("state.sled")).await?;
            }
            let status_port = free_port()?;
            let conf = setup.dir.join("witness.toml");
            std::fs::write(
                &conf,
                format!(
                    "data_dir = \"{data}\"\nlisten = \"127.0.0.1:{port}\"\nstatus_listen = \"127.0.0.1:{status_port}\"\n\
                     {extra}\n[tls]\nca = \"{c}/ca.pem\"\ncert = \"{c}/server.pem\"\nkey = \"{c}/server-key.pem\"\n\
                     [limits]\nmax_connections = {maxc}\nrequests_per_second_per_identity = 1000\n\
                     idle_timeout_ms = 600000\nmax_clusters = {maxcl}\n",
                    data = data.display(),
                    c = setup.certs_dir.display(),
                    maxc = setup.ids + 1000,
                    maxcl = setup.clusters + 1000,
                    extra = args.witness_extra,
                ),
            )?;
            let argv = vec![
                "serve".into(),
                "--config".into(),
                conf.display().to_string(),
            ];
            (
                "witness",
                find_bin("WITNESS_BIN", "witness", "witness")?,
                argv,
            )
        }
        Kind::Floor { reply_bytes } => {
            let c = &setup.certs_dir;
            let argv = vec![
                "--listen".into(),
                format!("127.0.0.1:{port}"),
                "--ca".into(),
                c.join("ca.pem").display().to_string(),
                "--cert".into(),
                c.join("server.pem").display().to_string(),
                "--key".into(),
                c.join("server-key.pem").display().to_string(),
                "--reply-bytes".into(),
                reply_bytes.to_string(),
            ];
            (
                "floor",
                find_bin("FLOOR_BIN", "floor", "witness-bench")?,
                argv,
            )
        }
    };
    let log = setup.dir.join(format!("{name}.log"));
    let callgrind_out = callgrind.then(|| setup.dir.join(format!("callgrind.{name}")));
    let mut cmd = match &callgrind_out {
        Some(out) => {
            let mut c = Command::new("valgrind");
            // Fair scheduling: valgrind runs one thread at a time, and without it a thread
            // spinning on a lock (sled's IO threads at start) can starve the one holding it
            // for minutes.
            c.arg("--tool=callgrind")
                .arg("--fair-sched=yes")
                .arg(format!("--callgrind-out-file={}", out.display()))
                .arg(&bin);
            c
        }
        None => Command::new(&bin),
    };
    let child = cmd
        .args(&argv)
        .env("WITNESS_LOG", "warn")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log)?)
        .kill_on_drop(true)
        .spawn()
        .with_context(|| {
            format!(
                "starting {}{}",
                if callgrind { "valgrind " } else { "" },
                bin.display()
            )
        })?;
    let pid = child.id().context("server pid")?;
    let server = Server {
        child,
        pid,
        port,
        log,
        name,
        callgrind_out,
    };
    // Ready when it accepts connections (the witness listens only once its store is open).
    let ready = Instant::now() + Duration::from_secs(if callgrind { 300 } else { 15 });
    loop {
        if TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
            break;
        }
        if Instant::now() > ready {
            bail!(
                "the {name} did not become ready: {}",
                witness_bench::lab::tail(&server.log)
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    println!("{name} {} (pid {pid}) started", bin.display());
    Ok(server)
}

async fn run(args: Args) -> Result<()> {
    let renew_ms = args
        .renew_ms
        .unwrap_or(proto::Timings::default().renew_interval_ms);
    let dir = tempfile::Builder::new().prefix("witness-load-").tempdir()?;
    let certs_dir = dir.path().join("certs");
    let v = Validity { days: 2 };
    certs::create_ca(&certs_dir, "load CA", v, false)?;
    let ca = Ca::load(&certs_dir)?;
    ca.issue_server(&certs_dir, &[], v, false)?;
    // One kept-alive connection per identity on each side: both processes need a file
    // descriptor per connection, so the open-files limit caps the identities.
    let mut clusters = args.clusters;
    if let Some(limit) = sys::nofile_limit() {
        let fit = (limit.saturating_sub(200) / 2) as usize;
        if clusters > fit {
            println!(
                "note: the open-files limit is {limit} (ulimit -n; not raisable here), so one process holds at most \
                 ~{} connections: running {fit} clusters instead of {clusters}",
                limit - 200
            );
            clusters = fit;
        }
    }
    let ids = clusters * 2;
    let setup = Setup {
        dir: dir.path().to_path_buf(),
        certs_dir: certs_dir.clone(),
        clusters,
        ids,
    };
    let idents = identities(&certs_dir, clusters)?;

    if let Some(n) = args.callgrind {
        return callgrind_run(&args, &setup, &idents, n).await;
    }

    let witness = start(Kind::Witness, &setup, &args, false).await?;
    let w = paced(&witness, &idents, &args, renew_ms).await?;
    witness.stop().await;
    let target = ids as f64 * 1000.0 / renew_ms as f64;
    w.print("witness", "renewal", target);
    if let Some(j) = &args.json_out {
        let v = serde_json::json!({
            "clusters": clusters, "identities": ids, "renew_ms": renew_ms, "offered": target,
            "rate": w.rate, "errors": w.errors, "p50_ms": w.p50, "p99_ms": w.p99, "p999_ms": w.p999,
            "us_per_renewal": w.us_per_req, "cpu_pct": w.cpu_pct,
            "peak_rss_mib": w.peak_rss as f64 / 1024.0, "idle_rss_mib": w.idle_rss as f64 / 1024.0,
        });
        std::fs::write(j, v.to_string())?;
    }
    if let Some(md) = &args.markdown {
        witness_section(&w, &args, clusters, ids, renew_ms, target).append(md)?;
    }
    if args.floor {
        let reply_bytes = w.avg_reply_bytes.round() as usize;
        let floor = start(Kind::Floor { reply_bytes }, &setup, &args, false).await?;
        let f = paced(&floor, &idents, &args, renew_ms).await?;
        floor.stop().await;
        f.print("floor", "request", target);
        let ratio = w.us_per_req / f.us_per_req.max(0.001);
        println!(
            "witness / floor CPU per request: {ratio:.2}x (target <= {TARGET_FLOOR_RATIO}x); reply body {reply_bytes} bytes"
        );
        if let Some(md) = &args.markdown {
            let mut s = Section::new(&format!(
                "Transport floor side by side: {ids} identities, same run"
            ));
            s.row(
                "floor",
                "rustls mutual TLS 1.3 + hyper HTTP/1.1 keep-alive, reads the body, answers a fixed JSON reply",
                "",
            );
            s.row(
                "reply body",
                &format!("{reply_bytes} bytes (the witness's mean in this run)"),
                "",
            );
            s.row(
                "sustained requests/s",
                &format!("{:.0} (slowest second {})", f.rate, f.min_sec),
                &format!("witness {:.0}", w.rate),
            );
            s.row(
                "latency p50 / p99",
                &format!("{:.2} / {:.2} ms", f.p50, f.p99),
                &format!("witness {:.2} / {:.2} ms", w.p50, w.p99),
            );
            s.row(
                "server CPU per request",
                &format!(
                    "{:.1} us (user {:.1}, kernel {:.1})",
                    f.us_per_req,
                    f.us_per_req - f.kernel_us_per_req,
                    f.kernel_us_per_req
                ),
                &format!(
                    "witness {:.1} us (user {:.1}, kernel {:.1})",
                    w.us_per_req,
                    w.us_per_req - w.kernel_us_per_req,
                    w.kernel_us_per_req
                ),
            );
            s.row(
                "server RSS peak under load",
                &format!("{:.1} MiB", f.peak_rss as f64 / 1024.0),
                &format!("witness {:.1} MiB", w.peak_rss as f64 / 1024.0),
            );
            s.row(
                "load generator CPU per request",
                &format!("{:.1} us", f.client_us),
                &format!("with the witness {:.1} us", w.client_us),
            );
            s.row(
                "witness / floor, CPU per request",
                &format!("{ratio:.2}x"),
                &met(
                    ratio <= TARGET_FLOOR_RATIO,
                    &format!("<= {TARGET_FLOOR_RATIO}x"),
                ),
            );
            s.append(md)?;
        }
    }
    Ok(())
}

fn identities(certs_dir: &Path, clusters: usize) -> Result<Vec<Identity>> {
    let ids = clusters * 2;
    let t_gen = Instant::now();
    let ca_pem = std::fs::read_to_string(certs_dir.join("ca.pem"))?;
    let ca_key = KeyPair::from_pem(&std::fs::read_to_string(certs_dir.join("ca-key.pem"))?)?;
    let issuer = Issuer::from_ca_cert_pem(&ca_pem, ca_key)?;
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls_pemfile::certs(&mut ca_pem.as_bytes()) {
        roots.add(c?)?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut idents = Vec::with_capacity(ids);
    for i in 0..clusters {
        for room in ["a", "b"] {
            let cluster = format!("c{i}");
            let node = format!("c{i}-{room}");
            let uri = format!("witness://{cluster}/{room}/{node}");
            let key = KeyPair::generate()?;
            let mut p = CertificateParams::default();
            let mut dn = DistinguishedName::new();
            dn.push(DnType::CommonName, uri.clone());
            p.distinguished_name = dn;
            p.subject_alt_names = vec![SanType::URI(uri.as_str().try_into()?)];
            p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
            p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
            let now = time::OffsetDateTime::now_utc();
            p.not_before = now - time::Duration::minutes(5);
            p.not_after = now + time::Duration::days(2);
            let cert = p.signed_by(&key, &issuer)?;
            let chain = vec![CertificateDer::from(cert.der().to_vec())];
            let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
            let config = rustls::ClientConfig::builder_with_provider(provider.clone())
                .with_protocol_versions(&[&rustls::version::TLS13])?
                .with_root_certificates(roots.clone())
                .with_client_auth_cert(chain, key)?;
            idents.push(Identity {
                cluster,
                room,
                node,
                config: Arc::new(config),
            });
        }
    }
    println!(
        "{} identities ({} clusters x 2 rooms), certificates issued in {:.1} s",
        ids,
        clusters,
        t_gen.elapsed().as_secs_f64()
    );

    Ok(idents)
}

/// The figures of one paced run.
#[derive(Default)]
struct Figures {
    rate: f64,
    min_sec: u64,
    errors: u64,
    non_grant: u64,
    p50: f64,
    p99: f64,
    p999: f64,
    max_ms: f64,
    samples: usize,
    cpu_pct: f64,
    us_per_req: f64,
    /// The kernel's part of `us_per_req`.
    kernel_us_per_req: f64,
    self_cpu_pct: f64,
    client_us: f64,
    idle_rss: u64,
    rss_connected: u64,
    peak_rss: u64,
    conns: usize,
    connect_errors: u64,
    conn_secs: f64,
    hs_ms: f64,
    machine_busy_pct: f64,
    others_pct: f64,
    wait_s: f64,
    wait_pct: f64,
    warm_ok: u64,
    warm_err: u64,
    elapsed: f64,
    ncpu: f64,
    avg_reply_bytes: f64,
}

impl Figures {
    fn print(&self, name: &str, per: &str, target: f64) {
        println!(
            "{name}: warm-up 5 s: {} {per}s ({} errors) incl. the first request of every identity",
            self.warm_ok, self.warm_err
        );
        println!(
            "{name}: measured {:.1} s: {:.0} {per}s/s sustained (offered {:.0}/s; slowest second {}), {} errors, {} non-grant answers",
            self.elapsed, self.rate, target, self.min_sec, self.errors, self.non_grant
        );
        println!(
            "{name}: latency from scheduled send: p50 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms, max {:.2} ms ({} samples)",
            self.p50, self.p99, self.p999, self.max_ms, self.samples
        );
        println!(
            "{name}: CPU {:.0}% of one core ({:.1} us per {per}, kernel {:.1}), RSS idle {:.1} MiB, connected {:.1} MiB, peak under load {:.1} MiB; load generator CPU {:.0}% ({:.1} us per {per})",
            self.cpu_pct,
            self.us_per_req,
            self.kernel_us_per_req,
            self.idle_rss as f64 / 1024.0,
            self.rss_connected as f64 / 1024.0,
            self.peak_rss as f64 / 1024.0,
            self.self_cpu_pct,
            self.client_us
        );
        println!(
            "{name}: machine CPU during the window: {:.0}% of {:.0} x 100% (server {:.0}%, load generator {:.0}%, other processes {:.0}%); \
             server threads waited {:.1} s on the run queue ({:.0}% of the window)",
            self.machine_busy_pct, self.ncpu, self.cpu_pct, self.self_cpu_pct, self.others_pct, self.wait_s, self.wait_pct
        );
        println!(
            "{name}: {} connections in {:.1} s ({} failed), server CPU {:.2} ms per handshake",
            self.conns, self.conn_secs, self.connect_errors, self.hs_ms
        );
    }
}

fn witness_section(
    w: &Figures,
    args: &Args,
    clusters: usize,
    ids: usize,
    renew_ms: u64,
    target: f64,
) -> Section {
    let mut s = Section::new(&format!(
        "Witness capacity: {} clusters ({} identities, renew every {} ms)",
        clusters, ids, renew_ms
    ));
    if clusters < args.clusters {
        s.note(&format!(
            "Asked for {} clusters; the open-files limit of this machine ({}, not raisable without \
             CAP_SYS_RESOURCE) holds one connection per identity for {clusters} clusters in each process.",
            args.clusters,
            sys::nofile_limit().unwrap_or(0)
        ));
    }
    let capacity_both = w.ncpu * 1e6 / (w.us_per_req + w.client_us).max(1.0);
    let capacity_witness = w.ncpu * 1e6 / w.us_per_req.max(1.0);
    s.row(
        "offered renewals/s",
        &format!("{target:.0}"),
        "20,000 for 10,000 clusters",
    );
    s.row(
        "sustained renewals/s",
        &format!("{:.0} (slowest second {})", w.rate, w.min_sec),
        &met(
            w.rate >= 0.98 * target && w.min_sec as f64 >= 0.95 * target,
            "slowest second >= 95% of offered",
        ),
    );
    s.row(
        "errors / non-grant answers",
        &format!("{} / {}", w.errors, w.non_grant),
        "0",
    );
    s.row("latency p50", &format!("{:.2} ms", w.p50), "");
    s.row(
        "latency p99",
        &format!("{:.2} ms", w.p99),
        &met(w.p99 <= TARGET_P99_MS, &format!("<= {TARGET_P99_MS} ms")),
    );
    s.row("latency p99.9", &format!("{:.2} ms", w.p999), "");
    s.row(
        "witness RSS peak under load",
        &format!("{:.1} MiB", w.peak_rss as f64 / 1024.0),
        &met(
            w.peak_rss <= TARGET_RSS_MIB * 1024,
            &format!("<= {TARGET_RSS_MIB} MiB"),
        ),
    );
    s.row(
        "witness RSS idle (no clients) / connected",
        &format!(
            "{:.1} / {:.1} MiB",
            w.idle_rss as f64 / 1024.0,
            w.rss_connected as f64 / 1024.0
        ),
        &met(w.idle_rss <= 20 * 1024, "idle <= 20 MiB"),
    );
    s.row(
        "witness CPU per renewal (from /proc)",
        &format!(
            "{:.1} us ({:.0}% of one core; user {:.1}, kernel {:.1})",
            w.us_per_req,
            w.cpu_pct,
            w.us_per_req - w.kernel_us_per_req,
            w.kernel_us_per_req
        ),
        &met(
            w.us_per_req <= TARGET_US_PER_RENEWAL,
            &format!("<= {TARGET_US_PER_RENEWAL} us"),
        ),
    );
    s.row(
        "load generator CPU",
        &format!(
            "{:.0}% of one core, {:.1} us per renewal",
            w.self_cpu_pct, w.client_us
        ),
        "",
    );
    s.row(
        "machine CPU in the window (all processes)",
        &format!(
            "{:.0}% of {:.0}00%: witness {:.0}%, load generator {:.0}%, other processes {:.0}%; \
             witness threads waited for a CPU {:.1} s ({:.0}% of the window)",
            w.machine_busy_pct,
            w.ncpu,
            w.cpu_pct,
            w.self_cpu_pct,
            w.others_pct,
            w.wait_s,
            w.wait_pct
        ),
        "",
    );
    s.row(
        "capacity from CPU per renewal",
        &format!(
            "~{capacity_both:.0}/s with the load generator on the same {:.0} cores; ~{capacity_witness:.0}/s for the witness alone",
            w.ncpu
        ),
        "20,000/s",
    );
    s.row(
        "connection set-up",
        &format!(
            "{} mTLS handshakes in {:.1} s; witness CPU {:.2} ms per handshake",
            w.conns, w.conn_secs, w.hs_ms
        ),
        "",
    );
    s
}

/// Connects one kept-alive TLS connection per identity (bounded concurrency).
async fn connect_all(
    idents: &[Identity],
    port: u16,
    concurrency: usize,
) -> Result<(Vec<(Identity, Option<TlsStream<TcpStream>>)>, u64)> {
    let sem = Arc::new(tokio::sync::Semaphore::new(concurrency.max(1)));
    let mut handles = Vec::with_capacity(idents.len());
    for id in idents.iter().cloned() {
        let sem = sem.clone();
        handles.push(tokio::spawn(async move {
            let _p = sem.acquire_owned().await;
            let s = connect(&id.config, port).await;
            (id, s)
        }));
    }
    let mut conns = Vec::with_capacity(idents.len());
    let mut connect_errors = 0u64;
    for h in handles {
        let (id, s) = h.await?;
        match s {
            Ok(s) => conns.push((id, Some(s))),
            Err(e) => {
                if connect_errors == 0 {
                    eprintln!("first connect error: {e:#}");
                }
                connect_errors += 1;
                conns.push((id, None));
            }
        }
    }
    Ok((conns, connect_errors))
}

/// Every identity renewing at `renew_ms`, phases spread evenly over the interval.
async fn paced(
    server: &Server,
    idents: &[Identity],
    args: &Args,
    renew_ms: u64,
) -> Result<Figures> {
    let pid = server.pid;
    let mut f = Figures {
        idle_rss: sys::rss_kib(pid).unwrap_or(0),
        ..Figures::default()
    };
    println!(
        "{} idle, no clients: RSS {:.1} MiB",
        server.name,
        f.idle_rss as f64 / 1024.0
    );
    let ids = idents.len();
    let t_conn = Instant::now();
    let cpu_before_conn = sys::cpu_time(pid).unwrap_or_default();
    let (conns, connect_errors) =
        connect_all(idents, server.port, args.connect_concurrency).await?;
    f.conn_secs = t_conn.elapsed().as_secs_f64();
    f.conns = ids - connect_errors as usize;
    f.connect_errors = connect_errors;
    f.hs_ms = sys::cpu_time(pid)
        .unwrap_or_default()
        .saturating_sub(cpu_before_conn)
        .as_secs_f64()
        * 1000.0
        / ids.max(1) as f64;
    f.rss_connected = sys::rss_kib(pid).unwrap_or(0);

    // The first round creates the clusters (durable writes); measurement starts after a warm-up.
    let counters = Arc::new(Counters::default());
    let stop = Arc::new(AtomicBool::new(false));
    let measuring = Arc::new(AtomicBool::new(false));
    let start = tokio::time::Instant::now() + Duration::from_millis(200);
    let warm = Duration::from_secs(5);
    let mut tasks = Vec::with_capacity(ids);
    let n = conns.len();
    for (i, (id, s)) in conns.into_iter().enumerate() {
        let offset = Duration::from_micros((renew_ms * 1000) * i as u64 / n as u64);
        let (counters, stop, measuring) = (counters.clone(), stop.clone(), measuring.clone());
        tasks.push(tokio::spawn(renew_loop(
            id,
            s,
            server.port,
            start + offset,
            Duration::from_millis(renew_ms),
            counters,
            stop,
            measuring,
        )));
    }
    tokio::time::sleep_until(start + warm).await;
    f.warm_ok = counters.ok.load(Ordering::Relaxed);
    f.warm_err = counters.errors.load(Ordering::Relaxed);
    for c in [
        &counters.ok,
        &counters.errors,
        &counters.non_grant,
        &counters.reply_bytes,
    ] {
        c.store(0, Ordering::Relaxed);
    }
    measuring.store(true, Ordering::Relaxed);
    let t0 = Instant::now();
    let cpu0 = sys::cpu_split(pid).unwrap_or_default();
    let self0 = sys::cpu_time(std::process::id()).unwrap_or_default();
    let wait0 = sys::runqueue_wait(pid).unwrap_or_default();
    let mach0 = sys::machine_cpu_ticks().unwrap_or((0, 0));
    let mut samples = Vec::new();
    for s in 0..args.seconds {
        tokio::time::sleep_until(tokio::time::Instant::from_std(
            t0 + Duration::from_secs(s + 1),
        ))
        .await;
        let rss = sys::rss_kib(pid).unwrap_or(0);
        f.peak_rss = f.peak_rss.max(rss);
        samples.push(counters.ok.load(Ordering::Relaxed));
        if std::env::var_os("LOADGEN_TRACE").is_some() {
            eprintln!(
                "{}: second {}: {} answered so far, RSS {} KiB",
                server.name,
                s + 1,
                samples.last().copied().unwrap_or(0),
                rss
            );
        }
    }
    measuring.store(false, Ordering::Relaxed);
    f.elapsed = t0.elapsed().as_secs_f64();
    let cpu1 = sys::cpu_split(pid).unwrap_or_default();
    let kernel_cpu = cpu1.1.saturating_sub(cpu0.1);
    let cpu = cpu1.0.saturating_sub(cpu0.0) + kernel_cpu;
    let self_cpu = sys::cpu_time(std::process::id())
        .unwrap_or_default()
        .saturating_sub(self0);
    let wait = sys::runqueue_wait(pid)
        .unwrap_or_default()
        .saturating_sub(wait0);
    let mach1 = sys::machine_cpu_ticks().unwrap_or((0, 0));
    let (busy, total) = (
        mach1.0.saturating_sub(mach0.0),
        mach1.1.saturating_sub(mach0.1).max(1),
    );
    f.ncpu = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1) as f64;
    // Percent of one core, machine-wide (all cores busy = ncpu x 100%).
    f.machine_busy_pct = busy as f64 / total as f64 * f.ncpu * 100.0;
    let ok = counters.ok.load(Ordering::Relaxed);
    f.errors = counters.errors.load(Ordering::Relaxed);
    f.non_grant = counters.non_grant.load(Ordering::Relaxed);
    f.avg_reply_bytes = counters.reply_bytes.load(Ordering::Relaxed) as f64 / ok.max(1) as f64;
    stop.store(true, Ordering::Relaxed);
    let mut lat: Vec<u32> = Vec::new();
    for t in tasks {
        if let Ok(v) = tokio::time::timeout(Duration::from_secs(10), t).await {
            lat.extend(v.unwrap_or_default());
        }
    }
    lat.sort_unstable();
    f.rate = ok as f64 / f.elapsed;
    let per_sec: Vec<u64> = samples.windows(2).map(|w| w[1] - w[0]).collect();
    f.min_sec = per_sec.iter().copied().min().unwrap_or(0);
    let p = |q: f64| percentile(&lat, q) as f64 / 1000.0;
    (f.p50, f.p99, f.p999) = (p(0.5), p(0.99), p(0.999));
    f.max_ms = lat.last().copied().unwrap_or(0) as f64 / 1000.0;
    f.samples = lat.len();
    f.cpu_pct = cpu.as_secs_f64() / f.elapsed * 100.0;
    f.self_cpu_pct = self_cpu.as_secs_f64() / f.elapsed * 100.0;
    f.us_per_req = cpu.as_secs_f64() * 1e6 / ok.max(1) as f64;
    f.kernel_us_per_req = kernel_cpu.as_secs_f64() * 1e6 / ok.max(1) as f64;
    f.others_pct = (f.machine_busy_pct - f.cpu_pct - f.self_cpu_pct).max(0.0);
    f.wait_s = wait.as_secs_f64();
    f.wait_pct = f.wait_s / f.elapsed * 100.0;
    f.client_us = self_cpu.as_secs_f64() * 1e6 / ok.max(1) as f64;
    Ok(f)
}

/// Instructions per renewal: the server under callgrind, counters zeroed after a warm-up,
/// exactly `n` renewals per identity, then a dump; the same for the floor with `--floor`.
async fn callgrind_run(args: &Args, setup: &Setup, idents: &[Identity], n: u64) -> Result<()> {
    let mut kinds = vec![Kind::Witness];
    let mut results: Vec<(&'static str, u64, u64, f64)> = Vec::new();
    let mut reply_bytes = 0usize;
    while let Some(kind) = kinds.pop() {
        let server = start(kind, setup, args, true).await?;
        let (conns, errs) = connect_all(idents, server.port, 4).await?;
        if errs > 0 {
            bail!("{errs} connections to the {} failed", server.name);
        }
        // Warm-up: the first request of every identity creates its cluster (a durable write).
        let (conns, _, _) = fixed(conns, server.port, 3).await;
        callgrind_control(&["-z"], server.pid).await?;
        let (_, ok, bytes) = fixed(conns, server.port, n).await;
        callgrind_control(&["-d"], server.pid).await?;
        let (instructions, dump) = callgrind_total(server.callgrind_out.as_deref())?;
        if let Some(keep) = &args.callgrind_keep {
            std::fs::create_dir_all(keep)?;
            let to = keep.join(format!("callgrind.{}.out", server.name));
            std::fs::copy(&dump, &to)
                .with_context(|| format!("copying {} to {}", dump.display(), to.display()))?;
        }
        let name = server.name;
        server.stop().await;
        let per = instructions as f64 / ok.max(1) as f64;
        println!(
            "callgrind: {name}: {ok} requests, {instructions} instructions, {per:.0} per request ({:.0} reply bytes each)",
            bytes as f64 / ok.max(1) as f64
        );
        results.push((name, ok, instructions, per));
        if kind == Kind::Witness {
            reply_bytes = (bytes as f64 / ok.max(1) as f64).round() as usize;
            if args.floor {
                kinds.push(Kind::Floor { reply_bytes });
            }
        }
    }
    if let Some(md) = &args.markdown {
        let mut s = Section::new(&format!(
            "Instructions per renewal (callgrind, {} identities, {n} renewals each)",
            idents.len()
        ));
        for (name, ok, total, per) in &results {
            s.row(
                &format!("{name}: instructions per request"),
                &format!("{per:.0} ({total} over {ok} requests)"),
                "",
            );
        }
        if let [(_, _, _, w), (_, _, _, f)] = results[..] {
            s.row(
                "witness / floor, instructions per request",
                &format!("{:.2}x (floor reply {reply_bytes} bytes)", w / f.max(1.0)),
                &format!("CPU <= {TARGET_FLOOR_RATIO}x"),
            );
        }
        s.note(
            "Counted by `valgrind --tool=callgrind` in the server process only (all its threads), \
             zeroed after every identity has connected and renewed 3 times, dumped after the fixed \
             requests: the count does not depend on what else runs on the machine.",
        );
        s.append(md)?;
    }
    Ok(())
}

async fn callgrind_control(flags: &[&str], pid: u32) -> Result<()> {
    let st = Command::new("callgrind_control")
        .args(flags)
        .arg(pid.to_string())
        .stdout(std::process::Stdio::null())
        .status()
        .await
        .context("running callgrind_control (valgrind package)")?;
    if !st.success() {
        bail!("callgrind_control {flags:?} {pid} failed: {st}");
    }
    Ok(())
}

/// The `totals:` (or `summary:`) line of the newest callgrind dump `<prefix>.<n>`, and its path.
fn callgrind_total(prefix: Option<&Path>) -> Result<(u64, PathBuf)> {
    let prefix = prefix.context("not under callgrind")?;
    let dir = prefix.parent().context("callgrind output directory")?;
    let stem = prefix
        .file_name()
        .and_then(|s| s.to_str())
        .context("callgrind output name")?;
    let mut dumps: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|s| s.to_str())
                .is_some_and(|s| s.starts_with(stem) && s != stem)
        })
        .collect();
    dumps.sort_by_key(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok());
    let last = dumps
        .last()
        .with_context(|| format!("no callgrind dump {}.<n> was written", prefix.display()))?;
    let text = std::fs::read_to_string(last)?;
    let total = text
        .lines()
        .find_map(|l| {
            l.strip_prefix("totals:")
                .or_else(|| l.strip_prefix("summary:"))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
        })
        .with_context(|| format!("{}: no totals line", last.display()))?;
    Ok((total, last.clone()))
}

/// `n` renewals per identity, back to back, all identities at once; returns the connections
/// for another round, the answers received and their body bytes.
async fn fixed(
    conns: Vec<(Identity, Option<TlsStream<TcpStream>>)>,
    port: u16,
    n: u64,
) -> (Vec<(Identity, Option<TlsStream<TcpStream>>)>, u64, u64) {
    let counters = Arc::new(Counters::default());
    let mut tasks = Vec::with_capacity(conns.len());
    for (id, mut conn) in conns {
        let counters = counters.clone();
        tasks.push(tokio::spawn(async move {
            let mut held = Held::default();
            let mut req = Request::new(&id);
            let mut buf = Vec::with_capacity(2048);
            for _ in 0..n {
                if conn.is_none() {
                    conn = connect(&id.config, port).await.ok();
                }
                let Some(c) = conn.as_mut() else {
                    counters.errors.fetch_add(1, Ordering::Relaxed);
                    continue;
                };
                match exchange(c, req.for_held(&id, held), &mut buf).await {
                    Ok((200, reply)) => {
                        counters.ok.fetch_add(1, Ordering::Relaxed);
                        counters
                            .reply_bytes
                            .fetch_add(reply.len() as u64, Ordering::Relaxed);
                        held.learn(reply);
                    }
                    _ => {
                        counters.errors.fetch_add(1, Ordering::Relaxed);
                        conn = None;
                    }
                }
            }
            (id, conn)
        }));
    }
    let mut back = Vec::new();
    for t in tasks {
        if let Ok(c) = t.await {
            back.push(c);
        }
    }
    (
        back,
        counters.ok.load(Ordering::Relaxed),
        counters.reply_bytes.load(Ordering::Relaxed),
    )
}

/// What a node holds from the witness's replies and reports back, as an agent does: the epoch
/// and the membership version (a node that reported no version would be sent the whole
/// membership with every reply).
#[derive(Clone, Copy, Default)]
struct Held {
    epoch: u64,
    members_version: u64,
}

/// The parts of a lease reply the load generator reads (borrowed; the rest is skipped), so
/// its own CPU per renewal stays small beside the witness's on the same cores.
#[derive(serde::Deserialize)]
struct ReplyView<'a> {
    epoch: u64,
    #[serde(borrow)]
    verdict: VerdictView<'a>,
    #[serde(default)]
    members: Option<MembersView>,
}

#[derive(serde::Deserialize)]
struct VerdictView<'a> {
    verdict: &'a str,
}

#[derive(serde::Deserialize)]
struct MembersView {
    version: u64,
}

impl Held {
    /// Takes in a reply; whether it was a grant (None: not a lease reply).
    fn learn(&mut self, reply: &[u8]) -> Option<bool> {
        let v: ReplyView = serde_json::from_slice(reply).ok()?;
        self.epoch = v.epoch;
        if let Some(m) = v.members {
            self.members_version = m.version;
        }
        Some(v.verdict.verdict == "grant")
    }
}

/// A node's request, rebuilt only when what it reports changes.
struct Request {
    held: Held,
    bytes: String,
}

impl Request {
    fn new(id: &Identity) -> Request {
        let held = Held::default();
        Request {
            held,
            bytes: request(id, held),
        }
    }

    fn for_held(&mut self, id: &Identity, held: Held) -> &[u8] {
        if (held.epoch, held.members_version) != (self.held.epoch, self.held.members_version) {
            self.held = held;
            self.bytes = request(id, held);
        }
        self.bytes.as_bytes()
    }
}

/// One lease request (a paired renewal of a running node), head and body.
fn request(id: &Identity, held: Held) -> String {
    // Like an agent's report in a steady paired state: the node of the other room it counts,
    // when that node last vouched and answered, the membership version it holds and the
    // address its heartbeat endpoint listens on.
    let other = if id.room == "a" { "b" } else { "a" };
    let (epoch, members_version) = (held.epoch, held.members_version);
    let members = if members_version > 0 {
        format!(r#","members_version":{members_version}"#)
    } else {
        String::new()
    };
    let body = format!(
        r#"{{"version":1,"cluster":"{}","room":"{}","node":"{}","epoch":{epoch},"phase":"active","peer_contact":true,"peer_reachable":true,"claim":false,"takeover":false,"health":100,"peers":[{{"node":"{}-{other}","vouched_ms_ago":412,"answered_ms_ago":412}}]{members},"address":"127.0.0.1:7400"}}"#,
        id.cluster, id.room, id.node, id.cluster
    );
    format!(
        "POST /v1/lease HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

fn met(ok: bool, target: &str) -> String {
    if target.is_empty() {
        return if ok { "met".into() } else { "MISSED".into() };
    }
    format!("{target}: {}", if ok { "met" } else { "MISSED" })
}

async fn connect(config: &Arc<rustls::ClientConfig>, port: u16) -> Result<TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(("127.0.0.1", port)).await?;
    tcp.set_nodelay(true)?;
    let name = ServerName::IpAddress(std::net::Ipv4Addr::LOCALHOST.into());
    let s = tokio::time::timeout(
        Duration::from_secs(30),
        TlsConnector::from(config.clone()).connect(name, tcp),
    )
    .await
    .context("TLS handshake timed out")??;
    Ok(s)
}

#[allow(clippy::too_many_arguments)]
async fn renew_loop(
    id: Identity,
    mut conn: Option<TlsStream<TcpStream>>,
    port: u16,
    first: tokio::time::Instant,
    every: Duration,
    counters: Arc<Counters>,
    stop: Arc<AtomicBool>,
    measuring: Arc<AtomicBool>,
) -> Vec<u32> {
    let mut lat = Vec::new();
    let mut held = Held::default();
    let mut req = Request::new(&id);
    let mut next = first;
    let mut buf = Vec::with_capacity(2048);
    // Bounded: at most one renewal per interval, until told to stop (or one hour).
    for _ in 0..3600 * 1000 / every.as_millis().max(1) as u64 {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        tokio::time::sleep_until(next).await;
        let scheduled = next;
        next += every;
        if conn.is_none() {
            counters.reconnects.fetch_add(1, Ordering::Relaxed);
            conn = connect(&id.config, port).await.ok();
        }
        let Some(c) = conn.as_mut() else {
            counters.errors.fetch_add(1, Ordering::Relaxed);
            continue;
        };
        let r = tokio::time::timeout(
            Duration::from_secs(10),
            exchange(c, req.for_held(&id, held), &mut buf),
        )
        .await;
        match r {
            Ok(Ok((200, reply))) => {
                let done = tokio::time::Instant::now();
                if measuring.load(Ordering::Relaxed) {
                    lat.push(
                        done.duration_since(scheduled)
                            .as_micros()
                            .min(u32::MAX as u128) as u32,
                    );
                }
                counters.ok.fetch_add(1, Ordering::Relaxed);
                counters
                    .reply_bytes
                    .fetch_add(reply.len() as u64, Ordering::Relaxed);
                if held.learn(reply) == Some(false) {
                    counters.non_grant.fetch_add(1, Ordering::Relaxed);
                }
            }
            _ => {
                counters.errors.fetch_add(1, Ordering::Relaxed);
                conn = None;
            }
        }
    }
    lat
}

/// Writes one request and reads one response (Content-Length bodies); returns status and body.
async fn exchange<'a>(
    c: &mut TlsStream<TcpStream>,
    req: &[u8],
    buf: &'a mut Vec<u8>,
) -> Result<(u16, &'a [u8])> {
    c.write_all(req).await?;
    buf.clear();
    let mut chunk = [0u8; 4096];
    loop {
        let n = c.read(&mut chunk).await?;
        if n == 0 {
            bail!("connection closed");
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(h) = find(buf, b"\r\n\r\n") {
            let head = std::str::from_utf8(&buf[..h])?;
            let status: u16 = head
                .split_whitespace()
                .nth(1)
                .and_then(|s| s.parse().ok())
                .context("status")?;
            let len: usize = head
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse().ok())?
                })
                .context("no content-length")?;
            while buf.len() < h + 4 + len {
                let n = c.read(&mut chunk).await?;
                if n == 0 {
                    bail!("connection closed mid-body");
                }
                buf.extend_from_slice(&chunk[..n]);
            }
            return Ok((status, &buf[h + 4..h + 4 + len]));
        }
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}
