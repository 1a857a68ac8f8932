//! Load generator: N two-room clusters (two client identities each, every one with its own
//! certificate issued in-process with rcgen) renewing leases at the protocol's renew interval
//! over mutual-TLS keep-alive connections against the real `witness serve` binary, started as a
//! child process so its RSS and CPU come from /proc/<pid>. Prints sustained renewals/s,
//! latency percentiles (measured from each renewal's scheduled send time, so a witness that
//! falls behind shows it), errors, and the witness's idle and loaded RSS and CPU.
//!
//! `cargo run --release -p witness-bench --bin loadgen -- --clusters 10000 --seconds 20`

use anyhow::{bail, Context, Result};
use clap::Parser;
use rcgen::{
    CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::process::Command;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;
use witness::config::RawConfig;
use witness_bench::report::{percentile, Section};
use witness_bench::{find_bin, free_port, http1, sys};

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
}

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
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    tokio::select! {
        r = run(args) => r,
        _ = tokio::signal::ctrl_c() => {
            eprintln!("interrupted: stopping the witness");
            Ok(())
        }
    }
}

async fn run(args: Args) -> Result<()> {
    let renew_ms = args
        .renew_ms
        .unwrap_or(proto::Timings::default().renew_interval_ms);
    let witness_bin = find_bin("WITNESS_BIN", "witness", "witness")?;
    let dir = tempfile::Builder::new().prefix("witness-load-").tempdir()?;
    let pki = harness::Pki::create(&dir.path().join("certs"), &[], &[], &[])?;
    let certs_dir = pki.dir().to_path_buf();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data)?;
    witness::store::Store::init_fresh(&data.join("state.sled")).await?;
    let lease_port = free_port()?;
    let status_port = free_port()?;
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
    let mut wconfig = harness::witness_config(
        &data,
        &format!("127.0.0.1:{lease_port}"),
        &format!("127.0.0.1:{status_port}"),
        pki.witness_tls(),
        &proto::Timings::default(),
    )?;
    wconfig.limits.max_connections = ids + 1000;
    wconfig.limits.requests_per_second_per_identity = 1000;
    wconfig.limits.idle_timeout_ms = 600_000;
    wconfig.limits.max_clusters = clusters + 1000;
    let wconfig = with_extra(wconfig, &args.witness_extra)?;
    let conf = harness::write_witness(&dir.path().join("witness.toml"), &wconfig)?;
    let mut child = Command::new(&witness_bin)
        .args(["serve", "--config"])
        .arg(&conf)
        .env("WITNESS_LOG", "warn")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(dir.path().join("witness.log"))?)
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting {}", witness_bin.display()))?;
    let pid = child.id().context("witness pid")?;
    let status_addr = format!("127.0.0.1:{status_port}");
    let ready = Instant::now() + Duration::from_secs(15);
    while !matches!(
        http1::get(&status_addr, "/readyz", Duration::from_millis(500)).await,
        Ok((200, _))
    ) {
        if Instant::now() > ready {
            bail!(
                "the witness did not become ready: {}",
                witness_bench::lab::tail(&dir.path().join("witness.log"))
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let idle_rss = sys::rss_kib(pid).unwrap_or(0);
    println!(
        "witness {} (pid {pid}) idle, no clients: RSS {:.1} MiB",
        witness_bin.display(),
        idle_rss as f64 / 1024.0
    );

    // Identities: every node its own certificate, signed by the CA in-process.
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

    // Connect everything (bounded concurrency), one kept-alive TLS connection per identity.
    let t_conn = Instant::now();
    let cpu_before_conn = sys::cpu_time(pid).unwrap_or_default();
    let sem = Arc::new(tokio::sync::Semaphore::new(args.connect_concurrency));
    let mut handles = Vec::with_capacity(ids);
    for id in idents {
        let sem = sem.clone();
        handles.push(tokio::spawn(async move {
            let _p = sem.acquire_owned().await;
            let s = connect(&id.config, lease_port).await;
            (id, s)
        }));
    }
    let mut conns = Vec::with_capacity(ids);
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
    let conn_secs = t_conn.elapsed().as_secs_f64();
    let hs_cpu = sys::cpu_time(pid)
        .unwrap_or_default()
        .saturating_sub(cpu_before_conn);
    println!(
        "{} TLS 1.3 mutual-auth connections in {:.1} s ({:.0} handshakes/s, {} failed); witness CPU {:.2} ms per handshake",
        ids - connect_errors as usize,
        conn_secs,
        ids as f64 / conn_secs,
        connect_errors,
        hs_cpu.as_secs_f64() * 1000.0 / ids.max(1) as f64
    );
    let rss_connected = sys::rss_kib(pid).unwrap_or(0);

    // Renew: every identity at `renew_ms`, phases spread evenly over the interval. The first
    // round creates the clusters (durable writes); measurement starts after a warm-up.
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
            lease_port,
            start + offset,
            Duration::from_millis(renew_ms),
            counters,
            stop,
            measuring,
        )));
    }
    tokio::time::sleep_until(start + warm).await;
    let warm_ok = counters.ok.load(Ordering::Relaxed);
    let warm_err = counters.errors.load(Ordering::Relaxed);
    for c in [&counters.ok, &counters.errors, &counters.non_grant] {
        c.store(0, Ordering::Relaxed);
    }
    measuring.store(true, Ordering::Relaxed);
    let t0 = Instant::now();
    let cpu0 = sys::cpu_time(pid).unwrap_or_default();
    let self0 = sys::cpu_time(std::process::id()).unwrap_or_default();
    let wait0 = sys::runqueue_wait(pid).unwrap_or_default();
    let mach0 = sys::machine_cpu_ticks().unwrap_or((0, 0));
    let mut peak_rss = 0u64;
    let mut samples = Vec::new();
    for s in 0..args.seconds {
        tokio::time::sleep_until(tokio::time::Instant::from_std(
            t0 + Duration::from_secs(s + 1),
        ))
        .await;
        let rss = sys::rss_kib(pid).unwrap_or(0);
        peak_rss = peak_rss.max(rss);
        samples.push(counters.ok.load(Ordering::Relaxed));
    }
    measuring.store(false, Ordering::Relaxed);
    let elapsed = t0.elapsed().as_secs_f64();
    if let Ok(Some(st)) = child.try_wait() {
        eprintln!(
            "the witness exited during the run ({st}): {}",
            witness_bench::lab::tail(&dir.path().join("witness.log"))
        );
    }
    let cpu = sys::cpu_time(pid).unwrap_or_default().saturating_sub(cpu0);
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
    let ncpu = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1) as f64;
    // Percent of one core, machine-wide (all cores busy = ncpu x 100%).
    let machine_busy_pct = busy as f64 / total as f64 * ncpu * 100.0;
    let ok = counters.ok.load(Ordering::Relaxed);
    let errors = counters.errors.load(Ordering::Relaxed);
    let non_grant = counters.non_grant.load(Ordering::Relaxed);
    stop.store(true, Ordering::Relaxed);
    let mut lat: Vec<u32> = Vec::new();
    for t in tasks {
        if let Ok(v) = tokio::time::timeout(Duration::from_secs(10), t).await {
            lat.extend(v.unwrap_or_default());
        }
    }
    lat.sort_unstable();
    let rate = ok as f64 / elapsed;
    let per_sec: Vec<u64> = samples.windows(2).map(|w| w[1] - w[0]).collect();
    let min_sec = per_sec.iter().copied().min().unwrap_or(0);
    let p = |q: f64| percentile(&lat, q) as f64 / 1000.0;
    let witness_cpu_pct = cpu.as_secs_f64() / elapsed * 100.0;
    let self_cpu_pct = self_cpu.as_secs_f64() / elapsed * 100.0;
    let us_per_req = cpu.as_secs_f64() * 1e6 / ok.max(1) as f64;
    let target = ids as f64 * 1000.0 / renew_ms as f64;
    let others_pct = (machine_busy_pct - witness_cpu_pct - self_cpu_pct).max(0.0);
    let wait_pct = wait.as_secs_f64() / elapsed * 100.0;
    let client_us = self_cpu.as_secs_f64() * 1e6 / ok.max(1) as f64;
    let capacity_both = ncpu * 1e6 / (us_per_req + client_us).max(1.0);
    let capacity_witness = ncpu * 1e6 / us_per_req.max(1.0);
    println!(
        "warm-up {} s: {} renewals ({} errors) incl. the first request of every identity (cluster creation, durable)",
        warm.as_secs(),
        warm_ok,
        warm_err
    );
    println!(
        "measured {:.1} s: {:.0} renewals/s sustained (offered {:.0}/s; slowest second {}), {} errors, {} non-grant answers",
        elapsed, rate, target, min_sec, errors, non_grant
    );
    println!(
        "latency from scheduled send: p50 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms, max {:.2} ms ({} samples)",
        p(0.50),
        p(0.99),
        p(0.999),
        lat.last().copied().unwrap_or(0) as f64 / 1000.0,
        lat.len()
    );
    println!(
        "witness: CPU {:.0}% of one core ({:.0} us per renewal), RSS idle {:.1} MiB, connected {:.1} MiB, peak under load {:.1} MiB; load generator CPU {:.0}%",
        witness_cpu_pct,
        us_per_req,
        idle_rss as f64 / 1024.0,
        rss_connected as f64 / 1024.0,
        peak_rss as f64 / 1024.0,
        self_cpu_pct
    );
    println!(
        "machine CPU during the window: {machine_busy_pct:.0}% of {ncpu:.0} x 100% (witness {witness_cpu_pct:.0}%, load generator {self_cpu_pct:.0}%, \
         other processes {others_pct:.0}%); witness threads waited {:.1} s on the run queue ({wait_pct:.0}% of the window)",
        wait.as_secs_f64()
    );
    println!(
        "CPU per renewal: witness {us_per_req:.0} us + load generator {client_us:.0} us -> this machine, undisturbed, \
         carries ~{capacity_both:.0}/s with both on it, ~{capacity_witness:.0}/s for the witness alone"
    );
    if let Some(j) = &args.json_out {
        let v = serde_json::json!({
            "clusters": clusters, "identities": ids, "renew_ms": renew_ms, "offered": target,
            "rate": rate, "errors": errors, "p50_ms": p(0.5), "p99_ms": p(0.99), "p999_ms": p(0.999),
            "us_per_renewal": us_per_req, "cpu_pct": witness_cpu_pct,
            "peak_rss_mib": peak_rss as f64 / 1024.0, "idle_rss_mib": idle_rss as f64 / 1024.0,
        });
        std::fs::write(j, v.to_string())?;
    }
    if let Some(md) = &args.markdown {
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
        s.row(
            "offered renewals/s",
            &format!("{target:.0}"),
            "20,000 for 10,000 clusters",
        );
        s.row(
            "sustained renewals/s",
            &format!("{rate:.0} (slowest second {min_sec})"),
            &met(rate >= 0.98 * target, ""),
        );
        s.row(
            "errors / non-grant answers",
            &format!("{errors} / {non_grant}"),
            "0",
        );
        s.row("latency p50", &format!("{:.2} ms", p(0.5)), "");
        s.row(
            "latency p99",
            &format!("{:.2} ms", p(0.99)),
            &met(p(0.99) <= 25.0, "<= 25 ms"),
        );
        s.row("latency p99.9", &format!("{:.2} ms", p(0.999)), "");
        s.row(
            "witness RSS peak under load",
            &format!("{:.1} MiB", peak_rss as f64 / 1024.0),
            &met(peak_rss <= 512 * 1024, "<= 512 MiB"),
        );
        s.row(
            "witness RSS idle (no clients)",
            &format!("{:.1} MiB", idle_rss as f64 / 1024.0),
            &met(idle_rss <= 20 * 1024, "<= 20 MiB"),
        );
        s.row(
            "witness CPU under load",
            &format!("{witness_cpu_pct:.0}% of one core, {us_per_req:.0} us CPU per renewal"),
            "",
        );
        s.row(
            "load generator CPU",
            &format!("{self_cpu_pct:.0}% of one core, {client_us:.0} us per renewal"),
            "",
        );
        s.row(
            "machine CPU in the window (all processes)",
            &format!(
                "{machine_busy_pct:.0}% of {ncpu:.0}00%: witness {witness_cpu_pct:.0}%, load generator {self_cpu_pct:.0}%, \
                 other processes {others_pct:.0}%; witness threads waited for a CPU {:.1} s ({wait_pct:.0}% of the window)",
                wait.as_secs_f64()
            ),
            "",
        );
        s.row(
            "capacity from CPU per renewal",
            &format!(
                "~{capacity_both:.0}/s with the load generator on the same {ncpu:.0} cores; ~{capacity_witness:.0}/s for the witness alone"
            ),
            "20,000/s",
        );
        s.row(
            "connection set-up",
            &format!(
                "{} mTLS handshakes in {:.1} s; witness CPU {:.2} ms per handshake",
                ids,
                conn_secs,
                hs_cpu.as_secs_f64() * 1000.0 / ids.max(1) as f64
            ),
            "",
        );
        s.append(md)?;
    }
    let _ = sys::signal(pid, "TERM");
    let _ = tokio::time::timeout(Duration::from_secs(10), child.wait()).await;
    Ok(())
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
    let mut epoch = 0u64;
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
        let body = format!(
            r#"{{"version":1,"cluster":"{}","room":"{}","node":"{}","epoch":{epoch},"phase":"active","peer_contact":true,"peer_reachable":true,"claim":false,"takeover":false,"health":100}}"#,
            id.cluster, id.room, id.node
        );
        let req = format!(
            "POST /v1/lease HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        let r = tokio::time::timeout(
            Duration::from_secs(10),
            exchange(c, req.as_bytes(), &mut buf),
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
                if let Ok(v) = serde_json::from_slice::<serde_json::Value>(reply) {
                    if let Some(e) = v["epoch"].as_u64() {
                        epoch = e;
                    }
                    if v["verdict"]["verdict"] != "grant" {
                        counters.non_grant.fetch_add(1, Ordering::Relaxed);
                    }
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

/// The witness's configuration with `--witness-extra` laid over it, key by key (a table in the
/// extra text replaces the keys it names in that table).
fn with_extra(base: RawConfig, extra: &str) -> Result<RawConfig> {
    let extra: toml::Table =
        toml::from_str(extra).context("--witness-extra is not TOML key = value lines")?;
    let mut merged = toml::Table::try_from(&base).context("the witness configuration")?;
    for (k, v) in extra {
        match (merged.get_mut(&k), v) {
            (Some(toml::Value::Table(into)), toml::Value::Table(from)) => into.extend(from),
            (_, v) => {
                merged.insert(k, v);
            }
        }
    }
    toml::Value::Table(merged)
        .try_into()
        .context("--witness-extra names a key the witness does not have (see docs/witness.md)")
}
