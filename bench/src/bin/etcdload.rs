//! The same lease load against a single local etcd (Debian's etcd-server 3.4): N leases, each
//! granted through etcd's HTTP/JSON gateway (`POST /v3/lease/grant`) and then kept alive at the
//! renew interval on its own `LeaseKeepAlive` gRPC stream over its own HTTP/2 connection (as
//! etcd's clients do it; one connection per lease, like one witness identity). The gateway's
//! `POST /v3/lease/keepalive` opens a new gRPC stream per call and cost etcd about 1.5 ms of CPU
//! per keep-alive in a trial, so it would measure the gateway, not etcd's leases. Starts etcd on
//! 127.0.0.1 with a temp data dir and stops it afterwards; prints renewals/s, latency
//! percentiles (from the scheduled send time), errors, etcd RSS and CPU, and, given the
//! witness run's JSON, the ratios.
//!
//! `cargo run --release -p witness-bench --bin etcdload -- --leases 20000 --seconds 20`

use anyhow::{bail, Context, Result};
use clap::Parser;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::process::Command;
use witness_bench::report::{percentile, Section};
use witness_bench::{free_port, sys};

#[derive(Parser)]
#[command(about = "Lease keep-alive load against a local etcd")]
struct Args {
    /// Leases to keep alive (the witness run's identities).
    #[arg(long, default_value_t = 20_000)]
    leases: usize,
    #[arg(long, default_value_t = 20)]
    seconds: u64,
    /// Keep-alive interval per lease (the protocol's renew interval by default).
    #[arg(long)]
    renew_ms: Option<u64>,
    /// The etcd binary.
    #[arg(long, default_value = "etcd", env = "ETCD_BIN")]
    etcd: String,
    /// The witness run's results (`loadgen --json-out`), for the ratios.
    #[arg(long)]
    witness_json: Option<PathBuf>,
    /// Append a markdown section to this file.
    #[arg(long)]
    markdown: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    tokio::select! {
        r = run(args) => r,
        _ = tokio::signal::ctrl_c() => {
            eprintln!("interrupted: stopping etcd");
            Ok(())
        }
    }
}

async fn run(args: Args) -> Result<()> {
    let renew_ms = args
        .renew_ms
        .unwrap_or(proto::Timings::default().renew_interval_ms);
    let mut leases = args.leases;
    if let Some(limit) = sys::nofile_limit() {
        let fit = limit.saturating_sub(200) as usize;
        if leases > fit {
            println!("note: open-files limit {limit}: running {fit} leases instead of {leases}");
            leases = fit;
        }
    }
    let dir = tempfile::Builder::new().prefix("etcd-bench-").tempdir()?;
    let client_port = free_port()?;
    let peer_port = free_port()?;
    let mut child = Command::new(&args.etcd)
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .args([
            "--name",
            "bench",
            "--listen-client-urls",
            &format!("http://127.0.0.1:{client_port}"),
            "--advertise-client-urls",
            &format!("http://127.0.0.1:{client_port}"),
            "--listen-peer-urls",
            &format!("http://127.0.0.1:{peer_port}"),
            "--initial-advertise-peer-urls",
            &format!("http://127.0.0.1:{peer_port}"),
            "--initial-cluster",
            &format!("bench=http://127.0.0.1:{peer_port}"),
            "--log-level",
            "warn",
        ])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(dir.path().join("etcd.log"))?)
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting {} (apt-get install etcd-server)", args.etcd))?;
    let pid = child.id().context("etcd pid")?;
    // Opened before the leases' connections take nearly every file descriptor this process
    // may open (at 19,800 leases, opening it later failed now and then).
    let mut etcd_stat = sys::StatFile::open(pid);
    let ready = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(mut c) = TcpStream::connect(("127.0.0.1", client_port)).await {
            if let Ok((200, _)) = post(&mut c, "/v3/lease/grant", r#"{"TTL":1}"#).await {
                break;
            }
        }
        if Instant::now() > ready {
            bail!(
                "etcd did not answer: {}",
                witness_bench::lab::tail(&dir.path().join("etcd.log"))
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let idle_rss = sys::rss_kib(pid).unwrap_or(0);
    let version = std::process::Command::new(&args.etcd)
        .arg("--version")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.lines().next().map(str::to_string))
        .unwrap_or_default();
    println!(
        "{version} (pid {pid}) on 127.0.0.1:{client_port}, idle RSS {:.1} MiB",
        idle_rss as f64 / 1024.0
    );

    // Connect and grant (TTL well above the interval: the lease must never lapse).
    let ttl_s = (renew_ms * 5).div_ceil(1000).max(5);
    let t_conn = Instant::now();
    let sem = Arc::new(tokio::sync::Semaphore::new(64));
    let mut hs = Vec::with_capacity(leases);
    for _ in 0..leases {
        let sem = sem.clone();
        hs.push(tokio::spawn(async move {
            let _p = sem.acquire_owned().await;
            let mut c = TcpStream::connect(("127.0.0.1", client_port)).await?;
            c.set_nodelay(true)?;
            let (code, body) =
                post(&mut c, "/v3/lease/grant", &format!(r#"{{"TTL":{ttl_s}}}"#)).await?;
            if code != 200 {
                bail!("grant: {code} {body}");
            }
            let v: serde_json::Value = serde_json::from_str(&body)?;
            let id = v["ID"].as_str().context("no lease ID")?.to_string();
            drop(c);
            // Open the keep-alive stream now (like the witness's TLS handshakes, outside the
            // measured loop) and send the first keep-alive on it.
            let lease: i64 = id.parse()?;
            let mut k = KeepAlive::open(client_port).await?;
            tokio::time::timeout(Duration::from_secs(30), k.keep_alive(lease)).await??;
            anyhow::Ok((k, lease))
        }));
    }
    let mut conns = Vec::with_capacity(leases);
    let mut failed = 0;
    for h in hs {
        match h.await? {
            Ok(x) => conns.push(x),
            Err(e) => {
                if failed == 0 {
                    eprintln!("first grant error: {e:#}");
                }
                failed += 1;
            }
        }
    }
    println!(
        "{} leases granted, each with its keep-alive stream on its own HTTP/2 connection, in {:.1} s ({failed} failed)",
        conns.len(),
        t_conn.elapsed().as_secs_f64()
    );

    let ok = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let measuring = Arc::new(AtomicBool::new(false));
    let start = tokio::time::Instant::now() + Duration::from_millis(200);
    let n = conns.len().max(1);
    let mut tasks = Vec::new();
    for (i, (c, id)) in conns.into_iter().enumerate() {
        let first = start + Duration::from_micros(renew_ms * 1000 * i as u64 / n as u64);
        let (ok, errors, stop, measuring) =
            (ok.clone(), errors.clone(), stop.clone(), measuring.clone());
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let lease = id;
            let mut stream: Option<KeepAlive> = Some(c);
            let mut next = first;
            for _ in 0..3600 * 1000 / renew_ms.max(1) {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                tokio::time::sleep_until(next).await;
                let scheduled = next;
                next += Duration::from_millis(renew_ms);
                if stream.is_none() {
                    stream = KeepAlive::open(client_port).await.ok();
                }
                let Some(k) = stream.as_mut() else {
                    errors.fetch_add(1, Ordering::Relaxed);
                    continue;
                };
                match tokio::time::timeout(Duration::from_secs(10), k.keep_alive(lease)).await {
                    Ok(Ok(ttl)) if ttl > 0 => {
                        if measuring.load(Ordering::Relaxed) {
                            lat.push(scheduled.elapsed().as_micros().min(u32::MAX as u128) as u32);
                        }
                        ok.fetch_add(1, Ordering::Relaxed);
                    }
                    _ => {
                        errors.fetch_add(1, Ordering::Relaxed);
                        stream = None;
                    }
                }
            }
            lat
        }));
    }
    tokio::time::sleep_until(start + Duration::from_secs(5)).await;
    ok.store(0, Ordering::Relaxed);
    errors.store(0, Ordering::Relaxed);
    measuring.store(true, Ordering::Relaxed);
    let t0 = Instant::now();
    let cpu0 = etcd_stat.as_mut().and_then(sys::StatFile::cpu_time);
    let mut peak = 0;
    for s in 0..args.seconds {
        tokio::time::sleep_until(tokio::time::Instant::from_std(
            t0 + Duration::from_secs(s + 1),
        ))
        .await;
        peak = peak.max(sys::rss_kib(pid).unwrap_or(0));
    }
    measuring.store(false, Ordering::Relaxed);
    let elapsed = t0.elapsed().as_secs_f64();
    if let Ok(Some(st)) = child.try_wait() {
        eprintln!(
            "etcd exited during the run ({st}): {}",
            witness_bench::lab::tail(&dir.path().join("etcd.log"))
        );
    }
    // Unknown, not zero, when /proc could not be read at either end of the window.
    let cpu1 = etcd_stat.as_mut().and_then(sys::StatFile::cpu_time);
    let cpu = cpu0.zip(cpu1).map(|(a, b)| b.saturating_sub(a));
    if cpu.is_none() {
        eprintln!(
            "etcd's CPU time is unknown: /proc/{pid}/stat read at the start {}, at the end {}",
            if cpu0.is_some() { "worked" } else { "failed" },
            if cpu1.is_some() { "worked" } else { "failed" }
        );
        if let Ok(Some(st)) = child.try_wait() {
            eprintln!("etcd exited at the end of the window ({st})");
        }
    }
    let (okn, errn) = (ok.load(Ordering::Relaxed), errors.load(Ordering::Relaxed));
    stop.store(true, Ordering::Relaxed);
    let mut lat = Vec::new();
    for t in tasks {
        if let Ok(v) = tokio::time::timeout(Duration::from_secs(10), t).await {
            lat.extend(v.unwrap_or_default());
        }
    }
    lat.sort_unstable();
    let p = |q: f64| percentile(&lat, q) as f64 / 1000.0;
    let rate = okn as f64 / elapsed;
    let cpu_pct = cpu.map(|c| c.as_secs_f64() / elapsed * 100.0);
    let us = cpu.map(|c| c.as_secs_f64() * 1e6 / okn.max(1) as f64);
    let cpu_text = match (cpu_pct, us) {
        (Some(pct), Some(us)) => format!("{pct:.0}% of one core ({us:.0} us per keep-alive)"),
        _ => "unknown (/proc unreadable)".to_string(),
    };
    println!(
        "etcd: {:.0} keep-alives/s sustained (offered {:.0}/s), {errn} errors; latency p50 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms; \
         CPU {cpu_text}, RSS peak {:.1} MiB",
        rate,
        n as f64 * 1000.0 / renew_ms as f64,
        p(0.5),
        p(0.99),
        p(0.999),
        peak as f64 / 1024.0
    );
    let w: Option<serde_json::Value> = args
        .witness_json
        .as_ref()
        .and_then(|f| std::fs::read_to_string(f).ok())
        .and_then(|s| serde_json::from_str(&s).ok());
    if let Some(w) = &w {
        let wr = w["rate"].as_f64().unwrap_or(0.0);
        let w99 = w["p99_ms"].as_f64().unwrap_or(0.0);
        println!(
            "ratio witness/etcd: throughput {}, p99 latency {}",
            ratio(wr, rate),
            ratio(w99, p(0.99))
        );
    }
    if let Some(md) = &args.markdown {
        let mut s = Section::new(&format!(
            "Side by side: etcd with the same load ({} leases, keep-alive every {renew_ms} ms)",
            n
        ));
        s.row("etcd version", &version, "");
        s.row(
            "sustained keep-alives/s",
            &format!("{rate:.0}"),
            &format!("offered {:.0}", n as f64 * 1000.0 / renew_ms as f64),
        );
        s.row("errors", &errn.to_string(), "");
        s.row(
            "latency p50 / p99 / p99.9",
            &format!("{:.2} / {:.2} / {:.2} ms", p(0.5), p(0.99), p(0.999)),
            "",
        );
        s.row("etcd CPU", &cpu_text, "");
        s.row(
            "etcd RSS idle / peak",
            &format!(
                "{:.1} / {:.1} MiB",
                idle_rss as f64 / 1024.0,
                peak as f64 / 1024.0
            ),
            "",
        );
        if let Some(w) = &w {
            let wr = w["rate"].as_f64().unwrap_or(0.0);
            let w99 = w["p99_ms"].as_f64().unwrap_or(0.0);
            let wus = w["us_per_renewal"].as_f64().unwrap_or(0.0);
            let wrss = w["peak_rss_mib"].as_f64().unwrap_or(0.0);
            s.row(
                "witness in the same run",
                &format!("{wr:.0}/s, p99 {w99:.2} ms, {wus:.0} us CPU per renewal, RSS peak {wrss:.1} MiB"),
                "",
            );
            s.row(
                "ratio witness / etcd",
                &format!(
                    "throughput {}, p99 latency {}, CPU per renewal {}",
                    ratio(wr, rate),
                    ratio(w99, p(0.99)),
                    ratio(wus, if okn == 0 { 0.0 } else { us.unwrap_or(0.0) })
                ),
                "",
            );
        }
        s.note(
            "Not like for like, in etcd's favour on the wire and in the witness's favour on the work: \
             etcd is reached over plain-text HTTP/2 (no TLS), one gRPC LeaseKeepAlive stream per lease, \
             hand-written protobuf (no protoc needed); the witness runs mutual TLS 1.3 and evaluates the arbiter \
             for every renewal (it signs an Ed25519 proof only for grants to act alone, not for the paired \
             renewals measured here). Neither writes to disk for a renewal (etcd keeps lease renewals in the \
             leader's memory; the witness persists only decisions).",
        );
        s.append(md)?;
    }
    sys::signal(pid, "TERM");
    let _ = tokio::time::timeout(Duration::from_secs(10), child.wait()).await;
    Ok(())
}

/// `a / b` as "1.23x", or "n/a" when `b` is zero.
fn ratio(a: f64, b: f64) -> String {
    if b.abs() < 1e-9 {
        "n/a".into()
    } else {
        format!("{:.2}x", a / b)
    }
}

/// One POST with a JSON body on a kept-alive connection; handles Content-Length and chunked
/// answers (the gateway streams keep-alive answers chunked).
async fn post(c: &mut TcpStream, path: &str, body: &str) -> Result<(u16, String)> {
    let req = format!(
        "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    c.write_all(req.as_bytes()).await?;
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 4096];
    loop {
        let n = c.read(&mut chunk).await?;
        if n == 0 {
            bail!("connection closed");
        }
        buf.extend_from_slice(&chunk[..n]);
        let Some(h) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
            continue;
        };
        let head = String::from_utf8_lossy(&buf[..h]).to_string();
        let code: u16 = head
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .context("status")?;
        let rest = &buf[h + 4..];
        let lower = head.to_ascii_lowercase();
        if lower.contains("transfer-encoding: chunked") {
            if rest.ends_with(b"0\r\n\r\n") {
                // De-chunk: size line, data, CRLF, ... until the 0 chunk.
                let mut out = Vec::new();
                let mut r = rest;
                while let Some(e) = r.windows(2).position(|w| w == b"\r\n") {
                    let size = usize::from_str_radix(std::str::from_utf8(&r[..e])?.trim(), 16)?;
                    if size == 0 {
                        break;
                    }
                    out.extend_from_slice(&r[e + 2..e + 2 + size]);
                    r = &r[e + 2 + size + 2..];
                }
                return Ok((code, String::from_utf8_lossy(&out).to_string()));
            }
        } else if let Some(len) = lower.lines().find_map(|l| {
            l.strip_prefix("content-length:")
                .and_then(|v| v.trim().parse::<usize>().ok())
        }) {
            if rest.len() >= len {
                return Ok((code, String::from_utf8_lossy(&rest[..len]).to_string()));
            }
        }
    }
}

/// One lease's `etcdserverpb.Lease/LeaseKeepAlive` bidirectional gRPC stream over its own
/// HTTP/2 connection (h2c, as etcd's clients use it), spoken with hand-written protobuf: the
/// request is `{ int64 ID = 1 }`, the answer `{ header = 1; int64 ID = 2; int64 TTL = 3 }`.
struct KeepAlive {
    send: h2::SendStream<bytes::Bytes>,
    resp: Option<h2::client::ResponseFuture>,
    recv: Option<h2::RecvStream>,
    buf: Vec<u8>,
}

impl KeepAlive {
    async fn open(port: u16) -> Result<KeepAlive> {
        let tcp = TcpStream::connect(("127.0.0.1", port)).await?;
        tcp.set_nodelay(true)?;
        let (client, conn) = h2::client::handshake(tcp).await?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let mut client = client.ready().await?;
        let req = http::Request::builder()
            .method("POST")
            .uri(format!(
                "http://127.0.0.1:{port}/etcdserverpb.Lease/LeaseKeepAlive"
            ))
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .body(())?;
        let (resp, send) = client.send_request(req, false)?;
        Ok(KeepAlive {
            send,
            resp: Some(resp),
            recv: None,
            buf: Vec::new(),
        })
    }

    /// Sends one keep-alive and returns the TTL etcd answers (0 or less: the lease is gone).
    async fn keep_alive(&mut self, id: i64) -> Result<i64> {
        let mut msg = vec![0x08];
        varint(id as u64, &mut msg);
        let mut frame = vec![0u8];
        frame.extend_from_slice(&(msg.len() as u32).to_be_bytes());
        frame.extend_from_slice(&msg);
        self.send.send_data(bytes::Bytes::from(frame), false)?;
        if self.recv.is_none() {
            let resp = self.resp.take().context("stream already failed")?.await?;
            if resp.status() != 200 {
                bail!("gRPC status {}", resp.status());
            }
            self.recv = Some(resp.into_body());
        }
        let recv = self.recv.as_mut().context("no stream")?;
        loop {
            if self.buf.len() >= 5 {
                let len = u32::from_be_bytes([self.buf[1], self.buf[2], self.buf[3], self.buf[4]])
                    as usize;
                if self.buf.len() >= 5 + len {
                    let ttl = ttl_of(&self.buf[5..5 + len]);
                    self.buf.drain(..5 + len);
                    return ttl;
                }
            }
            let chunk = recv.data().await.context("stream closed")??;
            let _ = recv.flow_control().release_capacity(chunk.len());
            self.buf.extend_from_slice(&chunk);
        }
    }
}

fn varint(mut v: u64, out: &mut Vec<u8>) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn read_varint(b: &[u8], i: &mut usize) -> Result<u64> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let byte = *b.get(*i).context("truncated varint")?;
        *i += 1;
        v |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Ok(v);
        }
    }
    bail!("varint too long")
}

/// Field 3 (TTL) of a LeaseKeepAliveResponse.
fn ttl_of(m: &[u8]) -> Result<i64> {
    let mut i = 0;
    let mut ttl = 0i64;
    while i < m.len() {
        let tag = read_varint(m, &mut i)?;
        match tag & 7 {
            0 => {
                let v = read_varint(m, &mut i)?;
                if tag >> 3 == 3 {
                    ttl = v as i64;
                }
            }
            2 => {
                let len = read_varint(m, &mut i)? as usize;
                i += len;
            }
            w => bail!("unexpected protobuf wire type {w}"),
        }
    }
    Ok(ttl)
}
