//! Shared helpers for the witness's integration tests: short protocol timings, starting a real
//! witness in-process on port 0 or as the real binary ([`Binary`]), mutual-TLS clients built from
//! the demo certificates, and lease request bodies.
// Real processes against real wall time: witness/clippy.toml's ban is for the shell.
#![allow(clippy::disallowed_types, clippy::disallowed_methods)]
#![allow(dead_code)]

use proto::Timings;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::time::Duration;
use witness::config::Config;
use witness::server::RunningServer;

/// Valid timings small enough for quick tests. The watchdog must be whole seconds, so the
/// forgotten-state wait is about k·(200 + 100 + 1000) ≈ 1.33 s.
pub fn short_timings() -> Timings {
    let t = Timings {
        heartbeat_interval_ms: 50,
        peer_timeout_ms: 100,
        renew_interval_ms: 100,
        lease_ms: 200,
        silence_ms: 250,
        fence_deadline_ms: 100,
        watchdog_timeout_ms: 1000,
        drift_ppm: 10_000,
        rejoin_stable_ms: 200,
        min_fenced_ms: 100,
    };
    t.validate().expect("test timings are valid");
    t
}

pub fn test_config(dir: &Path) -> Config {
    let mut c = Config::for_tests(dir).with_timings(short_timings());
    c.tick_interval_ms = 20;
    c.tls.reload_interval_ms = 100;
    c
}

/// `<dir>/witness.toml` for the real binary: the store in `data`, both ports on 127.0.0.1:0, a
/// 20 ms tick, room a preferred and [`short_timings`]; demo-mode certificates in `<data>/certs`.
/// Built as the witness's own file type, so a renamed key fails to compile.
pub fn binary_config(dir: &Path, data: &Path) -> PathBuf {
    let mut c = witness::config::RawConfig {
        data_dir: Some(data.to_path_buf()),
        listen: Some("127.0.0.1:0".into()),
        status_listen: Some("127.0.0.1:0".into()),
        tick_interval_ms: Some(20),
        ..Default::default()
    };
    c.defaults.preferred_room = Some("a".into());
    c.defaults.timings = toml::Table::try_from(short_timings()).expect("timings serialise");
    let p = dir.join("witness.toml");
    std::fs::write(&p, toml::to_string(&c).expect("witness.toml serialises")).expect("config");
    p
}

/// Starts a witness whose store is new and intact (no forgotten-state wait).
pub async fn start_fresh(config: Config) -> RunningServer {
    let store = witness::server::store_path(&config);
    if !store.exists() {
        std::fs::create_dir_all(&config.data_dir).expect("data dir");
        witness::store::Store::init_fresh(&store)
            .await
            .expect("init store");
    }
    witness::server::start(config)
        .await
        .expect("witness starts")
}

pub fn certs_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("certs")
}

/// A client presenting `<certs>/<name>.pem` and trusting `<certs>/ca.pem`.
pub fn client(data_dir: &Path, name: &str) -> reqwest::Client {
    let d = certs_dir(data_dir);
    client_with(
        &d.join("ca.pem"),
        &d.join(format!("{name}.pem")),
        &d.join(format!("{name}-key.pem")),
    )
}

pub fn client_with(ca: &Path, cert: &Path, key: &Path) -> reqwest::Client {
    witness::client::mtls_client(ca, cert, key).expect("client")
}

/// A client with no client certificate.
pub fn anonymous_client(data_dir: &Path) -> reqwest::Client {
    let ca = std::fs::read(certs_dir(data_dir).join("ca.pem")).expect("ca");
    reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(&ca).expect("ca pem"))
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client")
}

pub fn plain() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client")
}

pub fn lease_body(cluster: &str, room: &str, node: &str, epoch: u64, claim: bool) -> Value {
    // The nodes of the other room this node counts (as an agent whose configuration lists
    // them reports them): the witness admits a node once the other room counts it.
    let other = if room == "a" { "b" } else { "a" };
    json!({
        "peers": [{"node": format!("{other}1")}, {"node": format!("{other}2")}],
        "version": 1,
        "cluster": cluster,
        "room": room,
        "node": node,
        "epoch": epoch,
        "phase": "active",
        "peer_contact": !claim,
        "peer_reachable": !claim,
        "claim": claim,
        "takeover": false,
        "health": 1
    })
}

/// POSTs a lease request; returns status and JSON body.
pub async fn lease(c: &reqwest::Client, base: &str, body: &Value) -> (u16, Value) {
    let r = c
        .post(format!("{base}/v1/lease"))
        .json(body)
        .send()
        .await
        .expect("request reaches the witness");
    let s = r.status().as_u16();
    let v = r.json().await.unwrap_or(Value::Null);
    (s, v)
}

pub async fn post_raw(
    c: &reqwest::Client,
    url: &str,
    body: Vec<u8>,
) -> (u16, Value, reqwest::header::HeaderMap) {
    let r = c
        .post(url)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .expect("request reaches the witness");
    let s = r.status().as_u16();
    let h = r.headers().clone();
    let v = r.json().await.unwrap_or(Value::Null);
    (s, v, h)
}

pub fn verdict(v: &Value) -> String {
    let verdict = v["verdict"]["verdict"].as_str().unwrap_or("?");
    match v["verdict"]["mode"].as_str() {
        Some(m) => format!("{verdict}_{m}"),
        None => verdict.to_string(),
    }
}

pub async fn status(base: &str) -> Value {
    plain()
        .get(format!("{base}/v1/status"))
        .send()
        .await
        .expect("status")
        .json()
        .await
        .expect("status json")
}

pub async fn metrics(base: &str) -> String {
    plain()
        .get(format!("{base}/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("metrics text")
}

/// The value of one sample line (`name{labels} value`) in a Prometheus page, 0 when absent.
pub fn sample(page: &str, name_and_labels: &str) -> f64 {
    page.lines()
        .find(|l| l.starts_with(name_and_labels) && l[name_and_labels.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

/// Polls `f` every 20 ms until it returns Some, or panics after `within`.
pub async fn eventually<T, F, Fut>(within: Duration, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        if tokio::time::Instant::now() > deadline {
            panic!("timed out after {within:?} waiting for: {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A CA the witness does not know, and a node certificate `a1.pem` / `a1-key.pem` for cluster
/// `demo`, room `a` signed by it, in a fresh directory (removed when dropped).
pub fn foreign_ca_node_a1() -> tempfile::TempDir {
    use witness::certs::{self, Ca, Validity};
    let other = tempfile::tempdir().expect("tempdir");
    certs::create_ca(other.path(), "rogue CA", Validity { days: 10 }, false).expect("ca");
    Ca::load(other.path())
        .expect("rogue ca")
        .issue_node(
            other.path(),
            "demo",
            "a",
            "a1",
            &[],
            None,
            Validity { days: 10 },
            false,
        )
        .expect("rogue node");
    other
}

/// A raw TLS 1.3 connection to the lease port presenting `<certs>/<name>.pem`.
pub async fn raw_tls(
    addr: std::net::SocketAddr,
    data: &Path,
    name: &str,
) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    let d = certs_dir(data);
    let load = |p: PathBuf| {
        let pem = std::fs::read(p).expect("pem");
        rustls_pemfile::certs(&mut pem.as_slice())
            .collect::<Result<Vec<_>, _>>()
            .expect("certs")
    };
    let mut roots = rustls::RootCertStore::empty();
    for c in load(d.join("ca.pem")) {
        roots.add(c).expect("root");
    }
    let key_pem = std::fs::read(d.join(format!("{name}-key.pem"))).expect("key");
    let key = rustls_pemfile::private_key(&mut key_pem.as_slice())
        .expect("key pem")
        .expect("a key");
    let cfg = rustls::ClientConfig::builder_with_provider(witness::tls::provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("tls13")
        .with_root_certificates(roots)
        .with_client_auth_cert(load(d.join(format!("{name}.pem"))), key)
        .expect("client auth");
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    tokio_rustls::TlsConnector::from(std::sync::Arc::new(cfg))
        .connect(
            rustls_pki_types::ServerName::try_from("localhost").expect("name"),
            tcp,
        )
        .await
        .expect("handshake")
}

/// The real `witness serve` binary with a config file; its URLs are read from its banner. Killed
/// (like `kill -9`) when dropped, so a failing test leaves no witness running.
pub struct Binary {
    pub child: std::process::Child,
    pub lease_url: String,
    pub status_url: String,
}

impl Drop for Binary {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `witness serve --config CONFIG` in `dir`, its log in `dir/serve-RUN.log`, and waits for
/// its banner (20 s at most).
pub fn spawn(dir: &Path, config: &Path, run: u32) -> Binary {
    use std::process::{Command, Stdio};
    let log = dir.join(format!("serve-{run}.log"));
    let err = std::fs::File::create(&log).expect("log");
    let child = Command::new(env!("CARGO_BIN_EXE_witness"))
        .args(["serve", "--config"])
        .arg(config)
        .current_dir(dir)
        .env("NO_COLOR", "1")
        .stdout(Stdio::null())
        .stderr(Stdio::from(err))
        .spawn()
        .expect("witness binary starts");
    // Owned by the guard at once, so a failed start is killed too.
    let mut b = Binary {
        child,
        lease_url: String::new(),
        status_url: String::new(),
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if let Some(line) = text.lines().find(|l| l.contains("lease API https://")) {
            let field = |after: &str| {
                line.split(after)
                    .nth(1)
                    .and_then(|s| s.split_whitespace().next())
                    .expect("url in the banner")
                    .trim_end_matches('/')
                    .to_string()
            };
            b.lease_url = field("lease API ");
            b.status_url = field("status ");
            return b;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "witness did not start: {text}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}
