//! The witness's status pages in a real headless browser (Debian's `chromium`): screenshots
//! with checks of what they must show, and the fleet page's load time with 10,000 clusters.
//!
//! 1. The lab (a real witness and four real agents on 127.0.0.1, see `witness_bench::lab`)
//!    runs paired; the cluster page is shot (`cluster-quiet.png`). The link between the rooms
//!    is cut (both still reach the witness): the witness decides, room b fences, room a takes
//!    over; the page is shot (`cluster-split.png`) and must show the decision, the fence, the
//!    fenced phase and the takeover on its SVG timeline. The link is mended; once room b has
//!    rejoined the page is shot again (`cluster-rejoin.png`) and must show the rejoin.
//! 2. A second real witness gets `--clusters` two-room clusters (one mutual-TLS report per
//!    node, each node with its own certificate; long timings so nothing goes silent during the
//!    run). The fleet page is shot while all are quiet (`fleet-quiet.png`), then after a few
//!    clusters report trouble (`fleet-trouble.png`: they must come first). The time to serve
//!    the fleet page and the time Chromium takes to load it are measured and printed (not
//!    asserted: the machine is shared).
//!
//! Exits non-zero when a check fails. `cargo run -p witness-bench --bin statuspage -- --out DIR`
#![forbid(unsafe_code)]

use anyhow::{bail, ensure, Context, Result};
use clap::Parser;
use rcgen::{
    CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::Command;
use witness_bench::lab::{self, Lab};
use witness_bench::{find_bin, free_port, http1, sys};

#[derive(Parser)]
#[command(about = "Screenshots and checks of the witness's status pages in headless Chromium")]
struct Args {
    /// Where the screenshots go.
    #[arg(long, default_value = "target/status-page")]
    out: PathBuf,
    /// Two-room clusters on the fleet page.
    #[arg(long, default_value_t = 10_000)]
    clusters: usize,
    /// The browser (default: chromium, chromium-browser or google-chrome on PATH).
    #[arg(long, env = "CHROMIUM")]
    chromium: Option<PathBuf>,
    /// Skip the split-and-rejoin part (fleet only).
    #[arg(long)]
    fleet_only: bool,
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    let browser = Browser::find(args.chromium.clone())?;
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    println!(
        "browser: {} ({})",
        browser.bin.display(),
        browser.version().await
    );
    let mut checks = Checks::default();
    if !args.fleet_only {
        split_and_rejoin(&browser, &args.out, &mut checks).await?;
    }
    fleet(&browser, &args.out, args.clusters, &mut checks).await?;
    println!(
        "status page checks: {} passed, {} failed",
        checks.passed,
        checks.failed.len()
    );
    for f in &checks.failed {
        println!("  failed: {f}");
    }
    ensure!(checks.failed.is_empty(), "some status page checks failed");
    Ok(())
}

#[derive(Default)]
struct Checks {
    passed: usize,
    failed: Vec<String>,
}

impl Checks {
    fn check(&mut self, ok: bool, what: String) {
        if ok {
            self.passed += 1;
            println!("  ok    {what}");
        } else {
            println!("  FAIL  {what}");
            self.failed.push(what);
        }
    }

    /// Every needle is in `dom` (the page as Chromium built it).
    fn has(&mut self, page: &str, dom: &str, needles: &[&str]) {
        for n in needles {
            self.check(dom.contains(n), format!("{page} shows {n}"));
        }
    }
}

struct Browser {
    bin: PathBuf,
    profile: tempfile::TempDir,
}

impl Browser {
    fn find(given: Option<PathBuf>) -> Result<Browser> {
        let bin = match given {
            Some(b) => b,
            None => ["chromium", "chromium-browser", "google-chrome"]
                .iter()
                .find_map(|n| which(n))
                .context(
                    "no Chromium found: install Debian's `chromium` (apt-get install chromium) or pass --chromium PATH",
                )?,
        };
        Ok(Browser {
            bin,
            profile: tempfile::Builder::new()
                .prefix("statuspage-chromium-")
                .tempdir()?,
        })
    }

    fn command(&self) -> Command {
        let mut c = Command::new(&self.bin);
        c.args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
        ])
        .arg(format!("--user-data-dir={}", self.profile.path().display()))
        .stdin(Stdio::null())
        .kill_on_drop(true);
        c
    }

    async fn version(&self) -> String {
        let out = Command::new(&self.bin).arg("--version").output().await;
        out.map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_else(|e| format!("version unknown: {e}"))
    }

    /// The DOM Chromium built from `url`, and how long the whole run took.
    async fn dom(&self, url: &str) -> Result<(String, Duration)> {
        let t0 = Instant::now();
        let out = tokio::time::timeout(
            Duration::from_secs(90),
            self.command()
                .arg("--dump-dom")
                .arg(url)
                .stderr(Stdio::null())
                .output(),
        )
        .await
        .with_context(|| format!("chromium --dump-dom {url} took over 90 s"))??;
        ensure!(
            out.status.success(),
            "chromium --dump-dom {url} failed: {}",
            out.status
        );
        Ok((
            String::from_utf8_lossy(&out.stdout).into_owned(),
            t0.elapsed(),
        ))
    }

    /// A PNG of `url` at `width` x `height`; checks it is a real, non-empty image.
    async fn shot(&self, url: &str, png: &Path, width: u32, height: u32) -> Result<(u32, u32)> {
        let _ = std::fs::remove_file(png);
        let out = tokio::time::timeout(
            Duration::from_secs(90),
            self.command()
                .arg(format!("--window-size={width},{height}"))
                .arg(format!("--screenshot={}", png.display()))
                .arg(url)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status(),
        )
        .await
        .with_context(|| format!("chromium --screenshot {url} took over 90 s"))??;
        ensure!(out.success(), "chromium --screenshot {url} failed: {out}");
        let bytes = std::fs::read(png).with_context(|| format!("reading {}", png.display()))?;
        ensure!(
            bytes.len() > 24 && &bytes[..8] == b"\x89PNG\r\n\x1a\n" && &bytes[12..16] == b"IHDR",
            "{} is not a PNG",
            png.display()
        );
        let w = u32::from_be_bytes([bytes[16], bytes[17], bytes[18], bytes[19]]);
        let h = u32::from_be_bytes([bytes[20], bytes[21], bytes[22], bytes[23]]);
        // A blank page compresses to almost nothing; a drawn one does not.
        ensure!(
            bytes.len() > 10_000,
            "{} is only {} bytes: the page looks empty",
            png.display(),
            bytes.len()
        );
        println!(
            "  shot  {} ({w}x{h}, {} KiB)",
            png.display(),
            bytes.len() / 1024
        );
        Ok((w, h))
    }
}

fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|d| Path::new(d).join(name))
        .find(|p| p.is_file())
}

// ---- 1. a split and a rejoin in the lab -----------------------------------------------------

async fn cluster_mode(status: &str) -> Option<String> {
    let (code, body) = http1::get(
        status,
        &format!("/v1/status?cluster={}", lab::CLUSTER),
        Duration::from_secs(2),
    )
    .await
    .ok()?;
    if code != 200 {
        return None;
    }
    let v: serde_json::Value = serde_json::from_str(&body).ok()?;
    v["clusters"][0]["mode"].as_str().map(str::to_string)
}

/// Paired, with no alarm, on the witness's JSON status.
async fn cluster_quiet(status: &str) -> bool {
    let Ok((200, body)) = http1::get(
        status,
        &format!("/v1/status?cluster={}", lab::CLUSTER),
        Duration::from_secs(2),
    )
    .await
    else {
        return false;
    };
    let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
    let c = &v["clusters"][0];
    c["mode"] == "paired" && c["alarms"].as_array().is_some_and(|a| a.is_empty())
}

async fn wait_until(what: &str, secs: u64, mut f: impl AsyncFnMut() -> bool) -> Result<Duration> {
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(secs) {
        if f().await {
            return Ok(t0.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!("{what}: not within {secs} s")
}

async fn split_and_rejoin(browser: &Browser, out: &Path, checks: &mut Checks) -> Result<()> {
    println!("== a split and a rejoin (lab: a real witness and four real agents)");
    let witness_bin = find_bin("WITNESS_BIN", "witness", "witness")?;
    let agent_bin = find_bin("AGENT_BIN", "witness-agent", "witness-agent")?;
    // The protocol's default timings: the agents may be debug builds on a busy machine, where
    // the demo's short peer timeout would see splits that nobody made.
    let t = proto::Timings::default();
    let lab = Lab::start(&witness_bin, &agent_bin, t, 50).await?;
    let status = lab.witness_status.clone();
    let page = format!("http://{status}/cluster/{}?window=120", lab::CLUSTER);
    wait_until("both rooms paired", 60, async || lab.paired(&["a", "b"]))
        .await
        .with_context(|| format!("lab logs in {}", lab.dir().display()))?;
    let status0 = status.clone();
    wait_until(
        "the witness shows the cluster paired without alarms",
        60,
        async || cluster_quiet(&status0).await,
    )
    .await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    browser
        .shot(&page, &out.join("cluster-quiet.png"), 1280, 900)
        .await?;
    let (dom, _) = browser.dom(&page).await?;
    checks.has(
        "quiet cluster page",
        &dom,
        &[
            "<svg id=\"timeline\"",
            "data-node=\"a1\"",
            "data-node=\"b2\"",
            "class=\"phase phase-active\"",
            "class=\"mode mode-paired\"",
            "no alarms",
        ],
    );

    println!("  cutting the link between the rooms (both still reach the witness)");
    lab.split();
    let status2 = status.clone();
    let took = wait_until("the witness decides a survivor", 60, async || {
        cluster_mode(&status2).await.as_deref() == Some("alone")
    })
    .await?;
    println!("  the witness decided after {:.1} s", took.as_secs_f64());
    let took = wait_until("the survivor takes over", 60, async || {
        ["a1", "a2", "b1", "b2"].iter().any(|n| {
            lab.node_status(n)
                .is_some_and(|s| s["takeover"]["active"] == true)
        })
    })
    .await?;
    println!("  takeover {:.1} s after the decision", took.as_secs_f64());
    tokio::time::sleep(Duration::from_secs(1)).await;
    browser
        .shot(&page, &out.join("cluster-split.png"), 1280, 900)
        .await?;
    let (dom, _) = browser.dom(&page).await?;
    checks.has(
        "split cluster page",
        &dom,
        &[
            "<svg id=\"timeline\"",
            "class=\"marker ev-decision\"",
            "class=\"marker ev-fence\"",
            "class=\"marker ev-takeover\"",
            "class=\"phase phase-fenced\"",
            "class=\"mode mode-alone\"",
            "acts alone",
            "data-kind=\"alone\"",
        ],
    );

    println!("  mending the link");
    lab.heal();
    let took = wait_until("room b rejoins (all four paired)", 90, async || {
        lab.paired(&["a", "b"])
    })
    .await?;
    println!(
        "  rejoined {:.1} s after the link came back",
        took.as_secs_f64()
    );
    let status3 = status.clone();
    wait_until("the witness shows paired", 30, async || {
        cluster_mode(&status3).await.as_deref() == Some("paired")
    })
    .await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    browser
        .shot(&page, &out.join("cluster-rejoin.png"), 1280, 900)
        .await?;
    let (dom, _) = browser.dom(&page).await?;
    checks.has(
        "rejoined cluster page",
        &dom,
        &[
            "class=\"marker ev-rejoin\"",
            "class=\"marker ev-decision\"",
            "class=\"mode mode-releasing\"",
            "both rooms paired again",
            "no alarms",
        ],
    );
    // Keep the lab's logs beside the screenshots when something failed.
    if !checks.failed.is_empty() {
        let logs = out.join("lab-logs");
        let _ = std::fs::create_dir_all(&logs);
        for e in std::fs::read_dir(lab.dir())?.flatten() {
            if e.path().extension().is_some_and(|x| x == "log") {
                let _ = std::fs::copy(e.path(), logs.join(e.file_name()));
            }
        }
        println!("  lab logs kept in {}", logs.display());
    }
    lab.shutdown().await;
    Ok(())
}

// ---- 2. the fleet ---------------------------------------------------------------------------

struct Fleet {
    dir: tempfile::TempDir,
    child: tokio::process::Child,
    pid: u32,
    lease_port: u16,
    status: String,
    roots: rustls::RootCertStore,
    issuer: Issuer<'static, KeyPair>,
}

/// Timings long enough that a node reporting once stays fresh for the whole run.
fn fleet_timings() -> proto::Timings {
    proto::Timings {
        heartbeat_interval_ms: 500,
        peer_timeout_ms: 2_000,
        renew_interval_ms: 60_000,
        lease_ms: 120_000,
        silence_ms: 900_000,
        fence_deadline_ms: 3_000,
        watchdog_timeout_ms: 3_000,
        drift_ppm: 10_000,
        rejoin_stable_ms: 10_000,
        min_fenced_ms: 5_000,
    }
}

async fn start_fleet_witness(clusters: usize) -> Result<Fleet> {
    let witness_bin = find_bin("WITNESS_BIN", "witness", "witness")?;
    // The store in memory when the machine has /dev/shm: 10,000 new clusters are 10,000 flushed
    // writes, and what is measured here is the page, not the disk.
    let shm = Path::new("/dev/shm");
    let mut b = tempfile::Builder::new();
    b.prefix("statuspage-fleet-");
    let dir = if shm.is_dir() {
        b.tempdir_in(shm)?
    } else {
        b.tempdir()?
    };
    let pki = harness::Pki::create(&dir.path().join("certs"), &[], &[], &[])?;
    let certs_dir = pki.dir().to_path_buf();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data)?;
    witness::store::Store::init_fresh(&data.join("state.sled")).await?;
    let lease_port = free_port()?;
    let status_port = free_port()?;
    let t = fleet_timings();
    t.validate()
        .map_err(|e| anyhow::anyhow!("fleet timings: {e}"))?;
    let mut wconfig = harness::witness_config(
        &data,
        &format!("127.0.0.1:{lease_port}"),
        &format!("127.0.0.1:{status_port}"),
        pki.witness_tls(),
        &t,
    )?;
    wconfig.limits.max_connections = 4096;
    wconfig.limits.requests_per_second_per_identity = 1000;
    wconfig.limits.max_clusters = clusters + 1000;
    let conf = harness::write_witness(&dir.path().join("witness.toml"), &wconfig)?;
    let child = Command::new(&witness_bin)
        .args(["serve", "--config"])
        .arg(&conf)
        .env("WITNESS_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.path().join("witness.log"))?)
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting {}", witness_bin.display()))?;
    let pid = child.id().context("witness pid")?;
    let status = format!("127.0.0.1:{status_port}");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !matches!(
        http1::get(&status, "/readyz", Duration::from_millis(500)).await,
        Ok((200, _))
    ) {
        if Instant::now() > deadline {
            bail!(
                "the fleet witness did not become ready: {}",
                lab::tail(&dir.path().join("witness.log"))
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let ca_pem = std::fs::read_to_string(certs_dir.join("ca.pem"))?;
    let ca_key = KeyPair::from_pem(&std::fs::read_to_string(certs_dir.join("ca-key.pem"))?)?;
    let issuer = Issuer::from_ca_cert_pem(&ca_pem, ca_key)?;
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls_pemfile::certs(&mut ca_pem.as_bytes()) {
        roots.add(c?)?;
    }
    Ok(Fleet {
        dir,
        child,
        pid,
        lease_port,
        status,
        roots,
        issuer,
    })
}

/// One report of one node.
#[derive(Clone)]
struct Report {
    cluster: String,
    room: &'static str,
    node: String,
    peer_contact: bool,
    claim: bool,
}

impl Fleet {
    fn client_config(&self, r: &Report) -> Result<Arc<rustls::ClientConfig>> {
        let uri = format!("witness://{}/{}/{}", r.cluster, r.room, r.node);
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
        let cert = p.signed_by(&key, &self.issuer)?;
        let chain = vec![CertificateDer::from(cert.der().to_vec())];
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        Ok(Arc::new(
            rustls::ClientConfig::builder_with_provider(provider)
                .with_protocol_versions(&[&rustls::version::TLS13])?
                .with_root_certificates(self.roots.clone())
                .with_client_auth_cert(chain, key)?,
        ))
    }

    /// Sends every report once, each over its own mutual-TLS connection.
    async fn report(&self, reports: Vec<Report>, concurrency: usize) -> Result<usize> {
        let sem = Arc::new(tokio::sync::Semaphore::new(concurrency));
        let mut tasks = Vec::with_capacity(reports.len());
        for r in reports {
            let config = self.client_config(&r)?;
            let sem = sem.clone();
            let port = self.lease_port;
            tasks.push(tokio::spawn(async move {
                let _p = sem.acquire_owned().await;
                send_report(config, port, &r).await
            }));
        }
        let mut failed = 0;
        for t in tasks {
            if let Err(e) = t.await? {
                if failed == 0 {
                    eprintln!("first failed report: {e:#}");
                }
                failed += 1;
            }
        }
        Ok(failed)
    }
}

async fn send_report(config: Arc<rustls::ClientConfig>, port: u16, r: &Report) -> Result<()> {
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    let mut tls = tokio_rustls::TlsConnector::from(config)
        .connect(ServerName::try_from("localhost")?.to_owned(), tcp)
        .await
        .context("TLS handshake")?;
    // Like an agent's report, it names the node of the other room it counts.
    let other = if r.room == "a" { "b" } else { "a" };
    let peer = r
        .node
        .replace(&format!("-{}1", r.room), &format!("-{other}1"));
    let body = format!(
        r#"{{"version":1,"cluster":"{}","room":"{}","node":"{}","epoch":0,"phase":"active","peer_contact":{},"peer_reachable":{},"claim":{},"takeover":false,"health":100,"peers":[{{"node":"{peer}"}}]}}"#,
        r.cluster, r.room, r.node, r.peer_contact, r.peer_contact, r.claim
    );
    let req = format!(
        "POST /v1/lease HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    tls.write_all(req.as_bytes()).await?;
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(30), tls.read_to_end(&mut buf)).await;
    let head = String::from_utf8_lossy(&buf[..buf.len().min(64)]).to_string();
    ensure!(
        head.starts_with("HTTP/1.1 200"),
        "lease for {}/{} answered: {head}",
        r.cluster,
        r.node
    );
    Ok(())
}

fn quiet_reports(clusters: usize) -> Vec<Report> {
    let mut v = Vec::with_capacity(clusters * 2);
    for i in 0..clusters {
        for room in ["a", "b"] {
            v.push(Report {
                cluster: format!("store-{i:05}"),
                room,
                node: format!("store-{i:05}-{room}1"),
                peer_contact: true,
                claim: false,
            });
        }
    }
    v
}

/// Median of `n` timed GETs of `path`, with the page's size.
async fn time_get(status: &str, path: &str, n: usize) -> Result<(f64, usize)> {
    let mut times = Vec::new();
    let mut size = 0;
    for _ in 0..n {
        let t0 = Instant::now();
        let (code, body) = http1::get(status, path, Duration::from_secs(30)).await?;
        times.push(t0.elapsed().as_secs_f64() * 1000.0);
        ensure!(code == 200, "GET {path}: {code}");
        size = body.len();
    }
    times.sort_by(f64::total_cmp);
    Ok((times[times.len() / 2], size))
}

async fn fleet(browser: &Browser, out: &Path, clusters: usize, checks: &mut Checks) -> Result<()> {
    println!("== the fleet page with {clusters} clusters (a real witness, one mutual-TLS report per node)");
    let mut f = start_fleet_witness(clusters).await?;
    let rss0 = sys::rss_kib(f.pid).unwrap_or(0);
    let t0 = Instant::now();
    let failed = f.report(quiet_reports(clusters), 16).await?;
    let took = t0.elapsed();
    ensure!(
        failed == 0,
        "{failed} reports failed; witness log: {}",
        lab::tail(&f.dir.path().join("witness.log"))
    );
    let rss1 = sys::rss_kib(f.pid).unwrap_or(0);
    println!(
        "  {} reports ({clusters} clusters x 2 rooms) in {:.1} s; witness RSS {:.1} MiB -> {:.1} MiB ({:.1} KiB per cluster, all state included)",
        clusters * 2,
        took.as_secs_f64(),
        rss0 as f64 / 1024.0,
        rss1 as f64 / 1024.0,
        (rss1.saturating_sub(rss0)) as f64 / clusters.max(1) as f64
    );

    let url = format!("http://{}/", f.status);
    let (serve_ms, size) = time_get(&f.status, "/", 5).await?;
    let (json_ms, json_size) = time_get(&f.status, "/v1/status", 3).await?;
    let (base_dom, base_t) = browser.dom(&format!("http://{}/healthz", f.status)).await?;
    let _ = base_dom;
    let (dom, dom_t) = browser.dom(&url).await?;
    println!(
        "  fleet page with {clusters} clusters: served in {serve_ms:.0} ms (median of 5, {} KiB of HTML); \
         Chromium load-and-render {:.0} ms beyond its own start-up ({:.0} ms for the page vs {:.0} ms for /healthz); \
         /v1/status JSON of every cluster: {json_ms:.0} ms, {} KiB",
        size / 1024,
        (dom_t.as_secs_f64() - base_t.as_secs_f64()) * 1000.0,
        dom_t.as_secs_f64() * 1000.0,
        base_t.as_secs_f64() * 1000.0,
        json_size / 1024
    );
    browser
        .shot(&url, &out.join("fleet-quiet.png"), 1280, 1000)
        .await?;
    checks.has(
        "quiet fleet page",
        &dom,
        &[
            &format!("<b>{clusters}</b> cluster(s)"),
            "<b class=\"ok\">0 need attention</b>",
            &format!("data-mode=\"paired\">{clusters}</td>"),
            "<form class=\"filter\"",
            "rel=\"next\"",
            "data-cluster=\"store-00000\"",
        ],
    );
    checks.check(
        dom.matches("<tr class=\"mode-paired\" data-cluster=")
            .count()
            == witness::page::PER_PAGE,
        format!(
            "quiet fleet page lists one page of {} clusters",
            witness::page::PER_PAGE
        ),
    );

    // Trouble in a few clusters: one room never calls (shop-*), partial peer loss (clinic-7),
    // a claim to act alone (plant-2: the witness decides for room a).
    let mut trouble = Vec::new();
    for i in 0..3 {
        trouble.push(Report {
            cluster: format!("shop-{i}"),
            room: "a",
            node: format!("shop-{i}-a1"),
            peer_contact: true,
            claim: false,
        });
    }
    for (name, peer, claim) in [("clinic-7", false, false), ("plant-2", false, true)] {
        for room in ["a", "b"] {
            trouble.push(Report {
                cluster: name.into(),
                room,
                node: format!("{name}-{room}1"),
                peer_contact: if room == "a" { peer } else { true },
                claim: room == "a" && claim,
            });
        }
    }
    let failed = f.report(trouble, 4).await?;
    ensure!(failed == 0, "{failed} trouble reports failed");
    for c in ["clinic-7", "plant-2"] {
        if let Ok((_, body)) = http1::get(
            &f.status,
            &format!("/v1/status?cluster={c}"),
            Duration::from_secs(5),
        )
        .await
        {
            let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
            println!(
                "  {c}: mode {} alarms {}",
                v["clusters"][0]["mode"], v["clusters"][0]["alarms"]
            );
        }
    }
    let (dom, _) = browser.dom(&url).await?;
    browser
        .shot(&url, &out.join("fleet-trouble.png"), 1280, 1000)
        .await?;
    let first_quiet = dom
        .find("data-cluster=\"store-00000\"")
        .unwrap_or(usize::MAX);
    for c in ["shop-0", "clinic-7", "plant-2"] {
        let at = dom
            .find(&format!("data-cluster=\"{c}\""))
            .unwrap_or(usize::MAX);
        checks.check(
            at < first_quiet,
            format!("fleet page lists {c} (in trouble) before the quiet clusters"),
        );
    }
    checks.has(
        "fleet page with trouble",
        &dom,
        &[
            "<b class=\"alarm\">5 need attention</b>",
            "data-alarm=\"one_room\">3</td>",
            "data-alarm=\"partial_peer_loss\">",
        ],
    );
    // plant-2's claim is either still being decided or already decided for room a (the
    // witness decides on its own clock; both are right, and the page must show one of them).
    checks.check(
        dom.contains("data-alarm=\"claim\">1</td>") || dom.contains("data-alarm=\"alone\">1</td>"),
        "fleet page with trouble counts plant-2's claim (or the decision it led to)".into(),
    );
    let filtered = format!("http://{}/?alarm=any&q=shop", f.status);
    let (fdom, _) = browser.dom(&filtered).await?;
    checks.check(
        fdom.contains("<p id=\"matching\">3 matches;"),
        "filter ?alarm=any&q=shop matches the 3 shop clusters".into(),
    );
    checks.check(
        !fdom.contains("data-cluster=\"store-00000\""),
        "filtered page leaves out the quiet clusters".into(),
    );
    let (cdom, _) = browser
        .dom(&format!("http://{}/cluster/plant-2?window=600", f.status))
        .await?;
    checks.has(
        "cluster page of plant-2",
        &cdom,
        &["<svg id=\"timeline\"", "data-node=\"plant-2-a1\""],
    );
    checks.check(
        cdom.contains("data-kind=\"claim\"") || cdom.contains("class=\"marker ev-decision\""),
        "cluster page of plant-2 shows the claim or the decision".into(),
    );
    let _ = f.child.start_kill();
    let _ = f.child.wait().await;
    Ok(())
}
