//! The lease port's own HTTP/1.1 layer over real mutual TLS, byte by byte: what it accepts
//! (keep-alive, pipelining, 100-continue, HTTP/1.0, chunked bodies), what it refuses and how
//! (400, 413, 417, 431, 501, each with `connection: close`, counted, and changing no
//! cluster), and its timeouts.
mod common;
use common::*;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

type Tls = tokio_rustls::client::TlsStream<tokio::net::TcpStream>;

fn lease_request(body: &[u8], extra: &str) -> Vec<u8> {
    [
        format!(
            "POST /v1/lease HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\n{extra}\r\n",
            body.len()
        )
        .into_bytes(),
        body.to_vec(),
    ]
    .concat()
}

/// Reads whole answers (head and a Content-Length body) until `count` are in, or the peer
/// closes; returns them as text, with whether the connection was closed.
async fn read_answers(tls: &mut Tls, count: usize) -> (Vec<String>, bool) {
    let mut got = Vec::new();
    let mut answers = Vec::new();
    let mut closed = false;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while answers.len() < count {
        let mut chunk = [0u8; 4096];
        let n = match tokio::time::timeout_at(deadline, tls.read(&mut chunk)).await {
            Ok(Ok(n)) => n,
            Ok(Err(_)) => 0,
            Err(_) => panic!(
                "no complete answer within 10 s; got {:?}",
                String::from_utf8_lossy(&got)
            ),
        };
        if n == 0 {
            closed = true;
            break;
        }
        got.extend_from_slice(&chunk[..n]);
        // Split off every complete answer.
        loop {
            let text = String::from_utf8_lossy(&got).into_owned();
            let Some(head_end) = text.find("\r\n\r\n") else {
                break;
            };
            let head = &text[..head_end];
            if head.starts_with("HTTP/1.1 100") {
                answers.push(head.to_string());
                got.drain(..head_end + 4);
                continue;
            }
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length: "))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            if got.len() < head_end + 4 + len {
                break;
            }
            answers.push(String::from_utf8_lossy(&got[..head_end + 4 + len]).into_owned());
            got.drain(..head_end + 4 + len);
        }
    }
    (answers, closed)
}

/// True when the peer closes the connection within `within` (EOF or reset).
async fn closes_within(tls: &mut Tls, within: Duration) -> bool {
    let mut b = [0u8; 256];
    matches!(
        tokio::time::timeout(within, tls.read(&mut b)).await,
        Ok(Ok(0)) | Ok(Err(_))
    )
}

#[tokio::test]
async fn keep_alive_pipelining_continue_and_http10_are_answered_in_order() {
    let dir = tempfile::tempdir().expect("tempdir");
    let w = start_fresh(test_config(dir.path())).await;
    let body = serde_json::to_vec(&lease_body("demo", "a", "a1", 0, false)).expect("json");

    // Two requests in one write: two answers, in order, and the connection stays open.
    let mut tls = raw_tls(w.lease_addr, dir.path(), "a1").await;
    let two = [lease_request(&body, ""), lease_request(&body, "")].concat();
    tls.write_all(&two).await.expect("write");
    let (answers, closed) = read_answers(&mut tls, 2).await;
    assert_eq!(answers.len(), 2, "{answers:?}");
    assert!(!closed);
    for a in &answers {
        assert!(a.starts_with("HTTP/1.1 200 OK\r\n"), "{a}");
        assert!(a.contains("\"verdict\""), "{a}");
        assert!(a.contains("\r\ndate: "), "{a}");
        assert!(!a.contains("connection: close"), "{a}");
    }
    // Three requests of nearly 2 KiB each in one write, more than one read of the layer takes:
    // the TLS stream keeps what did not fit and hands it over in order. Three answers.
    let pad = format!("X-Pad: {}\r\n", "p".repeat(1_500));
    let three = [
        lease_request(&body, &pad),
        lease_request(&body, &pad),
        lease_request(&body, &pad),
    ]
    .concat();
    assert!(three.len() > 5_000, "{}", three.len());
    tls.write_all(&three).await.expect("write");
    let (answers, closed) = read_answers(&mut tls, 3).await;
    assert_eq!(answers.len(), 3, "{answers:?}");
    assert!(!closed);
    for a in &answers {
        assert!(a.starts_with("HTTP/1.1 200 OK\r\n"), "{a}");
    }
    // Split in the middle of the head and of the body: still one answer.
    let one = lease_request(&body, "");
    for part in one.chunks(37) {
        tls.write_all(part).await.expect("write");
        tls.flush().await.expect("flush");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let (answers, _) = read_answers(&mut tls, 1).await;
    assert!(answers[0].starts_with("HTTP/1.1 200"), "{answers:?}");

    // Expect: 100-continue gets the interim answer before the body is sent.
    let head = lease_request(&body, "Expect: 100-continue\r\n");
    let head_len = head.len() - body.len();
    tls.write_all(&head[..head_len]).await.expect("write");
    let (interim, _) = read_answers(&mut tls, 1).await;
    assert!(
        interim[0].starts_with("HTTP/1.1 100 Continue"),
        "{interim:?}"
    );
    tls.write_all(&body).await.expect("write");
    let (answers, _) = read_answers(&mut tls, 1).await;
    assert!(answers[0].starts_with("HTTP/1.1 200"), "{answers:?}");

    // Connection: close is honoured.
    tls.write_all(&lease_request(&body, "Connection: close\r\n"))
        .await
        .expect("write");
    let (answers, closed) = read_answers(&mut tls, 2).await;
    assert_eq!(answers.len(), 1, "{answers:?}");
    assert!(answers[0].contains("connection: close"), "{answers:?}");
    assert!(closed, "the connection stays open after Connection: close");

    // HTTP/1.0 without keep-alive: answered, then closed.
    let mut tls = raw_tls(w.lease_addr, dir.path(), "a1").await;
    let req = String::from_utf8(lease_request(&body, ""))
        .expect("utf8")
        .replacen("HTTP/1.1", "HTTP/1.0", 1);
    tls.write_all(req.as_bytes()).await.expect("write");
    let (answers, closed) = read_answers(&mut tls, 2).await;
    assert_eq!(answers.len(), 1, "{answers:?}");
    assert!(answers[0].starts_with("HTTP/1.1 200"), "{answers:?}");
    assert!(closed);

    // HTTP/1.0 asking for keep-alive: kept, and the answer says so.
    let mut tls = raw_tls(w.lease_addr, dir.path(), "a1").await;
    let req = String::from_utf8(lease_request(&body, "Connection: keep-alive\r\n"))
        .expect("utf8")
        .replacen("HTTP/1.1", "HTTP/1.0", 1);
    tls.write_all(format!("{req}{req}").as_bytes())
        .await
        .expect("write");
    let (answers, closed) = read_answers(&mut tls, 2).await;
    assert_eq!(answers.len(), 2, "{answers:?}");
    assert!(!closed);
    assert!(
        answers.iter().all(|a| a.contains("connection: keep-alive")),
        "{answers:?}"
    );

    // A chunked body (what a client streaming its body sends): answered like any other.
    let mut tls = raw_tls(w.lease_addr, dir.path(), "a1").await;
    let (first, rest) = body.split_at(body.len() / 2);
    let mut req =
        b"POST /v1/lease HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    for part in [first, rest] {
        req.extend_from_slice(format!("{:x}\r\n", part.len()).as_bytes());
        req.extend_from_slice(part);
        req.extend_from_slice(b"\r\n");
    }
    req.extend_from_slice(b"0\r\n\r\n");
    tls.write_all(&req).await.expect("write");
    let (answers, closed) = read_answers(&mut tls, 1).await;
    assert!(
        answers[0].starts_with("HTTP/1.1 200") && answers[0].contains("\"verdict\""),
        "{answers:?}"
    );
    assert!(!closed);

    // Other routes go through the router: the JWKS, and 404 for an unknown path.
    let mut tls = raw_tls(w.lease_addr, dir.path(), "a1").await;
    tls.write_all(
        b"GET /v1/jwks HTTP/1.1\r\nHost: x\r\n\r\nGET /nothing HTTP/1.1\r\nHost: x\r\n\r\n",
    )
    .await
    .expect("write");
    let (answers, _) = read_answers(&mut tls, 2).await;
    assert!(
        answers[0].starts_with("HTTP/1.1 200") && answers[0].contains("\"keys\""),
        "{answers:?}"
    );
    assert!(answers[1].starts_with("HTTP/1.1 404"), "{answers:?}");
    // HEAD: the head alone.
    let mut tls = raw_tls(w.lease_addr, dir.path(), "a1").await;
    tls.write_all(b"HEAD /v1/jwks HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("write");
    let mut rest = [0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(5), tls.read(&mut rest))
        .await
        .expect("HEAD answered")
        .expect("read");
    let head = String::from_utf8_lossy(&rest[..n]);
    assert!(
        head.starts_with("HTTP/1.1 200") && head.ends_with("\r\n\r\n"),
        "{head}"
    );
    assert!(!head.contains("\"keys\""), "{head}");
    w.stop().await.expect("stop");
}

#[tokio::test]
async fn requests_the_layer_cannot_take_are_refused_clearly_counted_and_change_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cfg = test_config(dir.path());
    cfg.limits.body_limit_bytes = 1024;
    let w = start_fresh(cfg).await;
    let body = serde_json::to_vec(&lease_body("demo", "a", "a1", 0, true)).expect("json");
    let cases: Vec<(&str, Vec<u8>, &str, &str)> = vec![
        (
            "smuggling: both lengths",
            format!(
                "POST /v1/lease HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\nTransfer-Encoding: chunked\r\n\r\n",
                body.len()
            )
            .into_bytes(),
            "HTTP/1.1 400",
            "bad_http",
        ),
        (
            "a transfer coding other than chunked",
            b"POST /v1/lease HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n".to_vec(),
            "HTTP/1.1 501",
            "bad_http",
        ),
        (
            "a chunked body over limits.body_limit_bytes",
            format!("POST /v1/lease HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n401\r\n{}\r\n0\r\n\r\n", "a".repeat(0x401)).into_bytes(),
            "HTTP/1.1 413",
            "body_too_large",
        ),
        (
            "two different lengths",
            b"POST /v1/lease HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd".to_vec(),
            "HTTP/1.1 400",
            "bad_http",
        ),
        (
            "a length that is not a number",
            b"POST /v1/lease HTTP/1.1\r\nHost: x\r\nContent-Length: +12\r\n\r\n".to_vec(),
            "HTTP/1.1 400",
            "bad_http",
        ),
        (
            "a body over limits.body_limit_bytes",
            b"POST /v1/lease HTTP/1.1\r\nHost: x\r\nContent-Length: 999999999999\r\n\r\n".to_vec(),
            "HTTP/1.1 413",
            "body_too_large",
        ),
        (
            "a head of 20 KiB",
            format!("GET /v1/jwks HTTP/1.1\r\nHost: x\r\nX-Pad: {}\r\n\r\n", "p".repeat(20 * 1024)).into_bytes(),
            "HTTP/1.1 431",
            "head_too_large",
        ),
        (
            "100 header fields",
            format!("GET /v1/jwks HTTP/1.1\r\n{}\r\n", "X-A: b\r\n".repeat(100)).into_bytes(),
            "HTTP/1.1 431",
            "head_too_large",
        ),
        (
            "not HTTP",
            b"\x16\x03\x01 hello there\r\n\r\n".to_vec(),
            "HTTP/1.1 400",
            "bad_http",
        ),
        (
            "an unknown expectation",
            b"POST /v1/lease HTTP/1.1\r\nHost: x\r\nExpect: 200-ok\r\nContent-Length: 2\r\n\r\n{}".to_vec(),
            "HTTP/1.1 417",
            "bad_http",
        ),
    ];
    for (what, bytes, status, reason) in cases {
        let mut tls = raw_tls(w.lease_addr, dir.path(), "a1").await;
        // The peer may close before reading everything; the answer is what counts.
        let _ = tls.write_all(&bytes).await;
        let (answers, closed) = read_answers(&mut tls, 2).await;
        assert_eq!(answers.len(), 1, "{what}: {answers:?}");
        let a = &answers[0];
        assert!(a.starts_with(status), "{what}: {a}");
        assert!(a.contains("connection: close"), "{what}: {a}");
        assert!(
            a.contains(&format!("\"reason\":\"{reason}\"")),
            "{what}: {a}"
        );
        assert!(a.contains("\"error\":\""), "{what}: {a}");
        assert!(closed, "{what}: the connection stays open after a refusal");
        let m = metrics(&w.status_url()).await;
        assert!(
            sample(
                &m,
                &format!("witness_refusals_total{{reason=\"{reason}\"}}")
            ) >= 1.0,
            "{what}: not counted\n{m}"
        );
    }
    // Nothing reached the cluster: no cluster was created by any of them.
    let s = status(&w.status_url()).await;
    assert!(
        !s.to_string().contains("\"a1\""),
        "a refused request reached the arbiter: {s}"
    );
    w.stop().await.expect("stop");
}

#[tokio::test]
async fn a_slow_body_is_cut_off_and_an_idle_connection_is_closed_after_the_idle_timeout() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cfg = test_config(dir.path());
    cfg.limits.header_timeout_ms = 300;
    cfg.limits.idle_timeout_ms = 800;
    let w = start_fresh(cfg).await;
    let body = serde_json::to_vec(&lease_body("demo", "a", "a1", 0, false)).expect("json");
    // The head in time, the body never: cut off after the header timeout, counted.
    let mut tls = raw_tls(w.lease_addr, dir.path(), "a1").await;
    let req = lease_request(&body, "");
    tls.write_all(&req[..req.len() - 5]).await.expect("write");
    let t0 = tokio::time::Instant::now();
    assert!(closes_within(&mut tls, Duration::from_secs(5)).await);
    assert!(
        t0.elapsed() >= Duration::from_millis(250),
        "{:?}",
        t0.elapsed()
    );
    let m = metrics(&w.status_url()).await;
    assert_eq!(
        sample(&m, "witness_refusals_total{reason=\"header_timeout\"}"),
        1.0,
        "{m}"
    );

    // Answered, then silent: closed after the idle timeout, not before the header timeout.
    let mut tls = raw_tls(w.lease_addr, dir.path(), "a1").await;
    tls.write_all(&req).await.expect("write");
    let (answers, _) = read_answers(&mut tls, 1).await;
    assert!(answers[0].starts_with("HTTP/1.1 200"), "{answers:?}");
    let t0 = tokio::time::Instant::now();
    assert!(closes_within(&mut tls, Duration::from_secs(5)).await);
    let idle = t0.elapsed();
    assert!(
        idle >= Duration::from_millis(700),
        "closed after {idle:?}, before the idle timeout"
    );
    // An idle close is not a refusal.
    let m = metrics(&w.status_url()).await;
    assert_eq!(
        sample(&m, "witness_refusals_total{reason=\"header_timeout\"}"),
        1.0,
        "{m}"
    );
    w.stop().await.expect("stop");
}

/// A fresh witness with `limits.idle_timeout_ms` set, a renewal of node a1 (cluster demo,
/// room a) and a1's connection to the lease port. The directory holds the witness's files.
async fn a1_renewing_with_idle_timeout(
    idle_timeout_ms: u64,
) -> (
    tempfile::TempDir,
    witness::server::RunningServer,
    Vec<u8>,
    Tls,
) {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cfg = test_config(dir.path());
    cfg.limits.idle_timeout_ms = idle_timeout_ms;
    let w = start_fresh(cfg).await;
    let body = serde_json::to_vec(&lease_body("demo", "a", "a1", 0, false)).expect("json");
    let req = lease_request(&body, "");
    let tls = raw_tls(w.lease_addr, dir.path(), "a1").await;
    (dir, w, req, tls)
}

#[tokio::test]
async fn a_connection_in_use_outlives_the_idle_timeout_and_is_closed_once_silent() {
    // The idle timer is set once per connection and moved only when it fires: a connection
    // that renews more often than the idle timeout must never be closed by it, however many
    // times the timer fires in between.
    let (_dir, w, req, mut tls) = a1_renewing_with_idle_timeout(500).await;
    let t0 = tokio::time::Instant::now();
    for round in 0..8 {
        tls.write_all(&req).await.expect("write");
        let (answers, closed) = read_answers(&mut tls, 1).await;
        assert!(
            answers.len() == 1 && answers[0].starts_with("HTTP/1.1 200") && !closed,
            "renewal {round} on a connection in use: {answers:?}, closed: {closed}"
        );
        if round < 7 {
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }
    assert!(
        t0.elapsed() >= Duration::from_millis(2_000),
        "the renewals took {:?}, not four idle timeouts",
        t0.elapsed()
    );
    // Silent from now: closed, and not before the idle timeout.
    let t1 = tokio::time::Instant::now();
    assert!(closes_within(&mut tls, Duration::from_secs(5)).await);
    assert!(
        t1.elapsed() >= Duration::from_millis(400),
        "closed {:?} after the last answer, before the idle timeout",
        t1.elapsed()
    );
    w.stop().await.expect("stop");
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed_when_the_witness_stops() {
    // Each connection waits for the stop signal once for its whole life, not once per request:
    // a connection idle between renewals must still see the witness stop and close.
    let (_dir, w, req, mut tls) = a1_renewing_with_idle_timeout(60_000).await;
    for _ in 0..2 {
        tls.write_all(&req).await.expect("write");
        let (answers, closed) = read_answers(&mut tls, 1).await;
        assert!(
            answers[0].starts_with("HTTP/1.1 200") && !closed,
            "{answers:?}"
        );
    }
    w.stop().await.expect("stop");
    assert!(
        closes_within(&mut tls, Duration::from_secs(10)).await,
        "an idle connection stayed open after the witness stopped"
    );
}

/// Runs a client program to completion; its stdout, or a failure naming the program and what
/// it printed. The program must exist: CI installs both (.ci/run).
fn run_client(what: &str, cmd: &mut std::process::Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {what} ({e}); install it (.ci/run does)"));
    assert!(
        out.status.success(),
        "{what} failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test]
async fn real_clients_renew_with_content_length_and_chunked_bodies() {
    let dir = tempfile::tempdir().expect("tempdir");
    let w = start_fresh(test_config(dir.path())).await;
    let certs = certs_dir(dir.path());
    let body = serde_json::to_vec(&lease_body("demo", "a", "a1", 0, false)).expect("json");
    let body_file = dir.path().join("body.json");
    std::fs::write(&body_file, &body).expect("body");
    let port = w.lease_addr.port();
    let url = format!("https://localhost:{port}/v1/lease");
    let (ca, cert, key) = (
        certs.join("ca.pem"),
        certs.join("a1.pem"),
        certs.join("a1-key.pem"),
    );
    let curl = |extra: &[&str]| {
        let mut c = std::process::Command::new("curl");
        c.args(["-sS", "--max-time", "10", "--resolve"])
            .arg(format!("localhost:{port}:127.0.0.1"))
            .arg("--cacert")
            .arg(&ca)
            .arg("--cert")
            .arg(&cert)
            .arg("--key")
            .arg(&key)
            .args([
                "-H",
                "Content-Type: application/json",
                "-w",
                "\n%{http_code}",
            ])
            .arg("--data-binary")
            .arg(format!("@{}", body_file.display()))
            .args(extra)
            .arg(&url);
        c
    };
    let cases: [(&str, &[&str]); 4] = [
        ("curl", &[]),
        ("curl, chunked", &["-H", "Transfer-Encoding: chunked"]),
        ("curl, HTTP/1.0", &["--http1.0"]),
        ("curl, 100-continue", &["-H", "Expect: 100-continue"]),
    ];
    for (what, extra) in cases {
        let out = tokio::task::spawn_blocking({
            let mut c = curl(extra);
            move || run_client(what, &mut c)
        })
        .await
        .expect("join");
        assert!(out.trim_end().ends_with("\n200"), "{what}: {out}");
        assert!(out.contains("\"verdict\""), "{what}: {out}");
    }

    // Python's requests: a bytes body (Content-Length) and a generator (chunked), on one
    // keep-alive session.
    let script = r#"
import json, sys, requests
ca, cert, key, url, path = sys.argv[1:6]
body = open(path, "rb").read()
s = requests.Session()
# Per request: a REQUESTS_CA_BUNDLE in the environment would override the session's.
for name, data in [("bytes", body), ("chunked", (body[i:i + 40] for i in range(0, len(body), 40)))]:
    r = s.post(url, data=data, headers={"Content-Type": "application/json"}, timeout=10,
               verify=ca, cert=(cert, key))
    print(name, r.status_code, "verdict" in r.json())
"#;
    let out = tokio::task::spawn_blocking({
        let (ca, cert, key, url, body_file) = (
            ca.clone(),
            cert.clone(),
            key.clone(),
            url.clone(),
            body_file.clone(),
        );
        move || {
            run_client(
                "python3 with requests",
                std::process::Command::new("python3")
                    .arg("-c")
                    .arg(script)
                    .args([&ca, &cert, &key])
                    .arg(&url)
                    .arg(&body_file),
            )
        }
    })
    .await
    .expect("join");
    assert_eq!(out.trim(), "bytes 200 True\nchunked 200 True", "{out}");
    let m = metrics(&w.status_url()).await;
    assert_eq!(
        sample(&m, "witness_refusals_total{reason=\"bad_http\"}"),
        0.0,
        "{m}"
    );
    w.stop().await.expect("stop");
}
