//! The real `witness` binary: `serve` with no arguments on a fresh machine (creates the demo
//! certificates, answers /healthz, stops cleanly on SIGTERM), `status` and `admin` against it,
//! `certs`, and a bad configuration refused with exit status 64.
// Real processes against real wall time: witness/clippy.toml's ban is for the shell.
#![allow(clippy::disallowed_types, clippy::disallowed_methods)]
mod common;

use common::*;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn witness() -> Command {
    Command::new(env!("CARGO_BIN_EXE_witness"))
}

/// Kills the child when the test ends, also when it fails.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn serve_with_no_arguments_creates_demo_certificates_and_answers_probes() {
    let dir = tempfile::tempdir().expect("tempdir");
    for port in [7443, 7480] {
        if let Err(e) = std::net::TcpListener::bind(("127.0.0.1", port)) {
            panic!("this test runs `witness serve` on its default ports, but 127.0.0.1:{port} is taken ({e}); stop whatever listens there");
        }
    }
    let log = std::fs::File::create(dir.path().join("serve.log")).expect("log");
    let mut child = KillOnDrop(
        witness()
            .arg("serve")
            .current_dir(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .spawn()
            .expect("binary starts"),
    );
    let data = dir.path().join("witness-data");
    let health = eventually(
        Duration::from_secs(20),
        "/healthz on the default status port",
        || async {
            let r = plain()
                .get("http://127.0.0.1:7480/healthz")
                .send()
                .await
                .ok()?;
            Some(r.status().as_u16())
        },
    )
    .await;
    assert_eq!(health, 200);
    for f in [
        "ca.pem",
        "server.pem",
        "server-key.pem",
        "a1.pem",
        "a2.pem",
        "b1.pem",
        "b2-key.pem",
        "admin.pem",
        "admin-key.pem",
    ] {
        assert!(data.join("certs").join(f).is_file(), "{f} missing");
    }
    let banner = std::fs::read_to_string(dir.path().join("serve.log")).expect("log");
    assert!(
        banner.contains("witness-data/certs"),
        "says where the certificates are: {banner}"
    );
    assert!(
        banner.contains("witness serving") && !banner.contains('\u{1b}'),
        "plain text, no ANSI colour codes, when stderr is not a terminal: {banner:?}"
    );

    // A demo node calls (the new store first waits out forgotten leases: retry).
    let a1 = client(&data, "a1");
    let (s, v) = lease(
        &a1,
        "https://127.0.0.1:7443",
        &lease_body("demo", "a", "a1", 0, false),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(verdict(&v), "retry", "{v}");

    let out = witness()
        .args(["status", "--json"])
        .current_dir(dir.path())
        .output()
        .expect("status");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(doc["clusters"][0]["cluster"], "demo");
    assert_eq!(doc["clusters"][0]["mode"], "recovering");
    let out = witness()
        .arg("status")
        .current_dir(dir.path())
        .output()
        .expect("status");
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        table.contains("CLUSTER") && table.contains("demo") && table.contains("a1"),
        "{table}"
    );

    // The admin command with the default (demo) admin certificate, and a node certificate refused.
    let out = witness()
        .args(["admin", "--cluster", "demo", "pause"])
        .current_dir(dir.path())
        .output()
        .expect("admin");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("paused"));
    let certs = data.join("certs");
    let out = witness()
        .args(["admin", "--cluster", "demo", "resume", "--cert"])
        .arg(certs.join("a1.pem"))
        .arg("--key")
        .arg(certs.join("a1-key.pem"))
        .current_dir(dir.path())
        .output()
        .expect("admin");
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("node certificate"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let audit = std::fs::read_to_string(data.join("audit.jsonl")).expect("audit");
    assert_eq!(audit.lines().count(), 2, "{audit}");

    // SIGTERM: graceful stop, exit status 0.
    let pid = child.0.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill")
        .success());
    let t0 = Instant::now();
    let status = loop {
        if let Some(s) = child.0.try_wait().expect("wait") {
            break s;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(15),
            "did not stop on SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "{status:?}");
    let log = std::fs::read_to_string(dir.path().join("serve.log")).expect("log");
    assert!(log.contains("store flushed"), "{log}");

    // Restarted, the certificates are reused, not regenerated.
    let ca_before = std::fs::read(certs.join("ca.pem")).expect("ca");
    let log = std::fs::File::create(dir.path().join("serve-2.log")).expect("log");
    let _child = KillOnDrop(
        witness()
            .args([
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--status-listen",
                "127.0.0.1:0",
            ])
            .current_dir(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .spawn()
            .expect("restart"),
    );
    eventually(
        Duration::from_secs(20),
        "the restarted witness serves",
        || async {
            let log = std::fs::read_to_string(dir.path().join("serve-2.log")).unwrap_or_default();
            log.contains("witness serving").then_some(())
        },
    )
    .await;
    let log = std::fs::read_to_string(dir.path().join("serve-2.log")).expect("log");
    assert!(!log.contains("created"), "certificates are reused: {log}");
    assert_eq!(std::fs::read(certs.join("ca.pem")).expect("ca"), ca_before);
}

#[test]
fn bad_config_is_refused_with_file_field_reason_and_status_64() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = dir.path().join("witness.toml");
    std::fs::write(&cfg, "[clusters.hospital-1.timings]\nlease_ms = 1500\n").expect("write");
    let out = witness()
        .args(["serve", "--config"])
        .arg(&cfg)
        .current_dir(dir.path())
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(64));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("witness.toml"), "{err}");
    assert!(
        err.contains("clusters.hospital-1.timings.lease_ms"),
        "{err}"
    );
    assert!(
        err.contains("renew_interval_ms"),
        "names the relation: {err}"
    );

    std::fs::write(&cfg, "[limits]\nmax_conections = 5\n").expect("write");
    let out = witness()
        .args(["serve", "--config"])
        .arg(&cfg)
        .current_dir(dir.path())
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("max_conections"));

    let out = witness()
        .args(["serve", "--config"])
        .arg(dir.path().join("missing.toml"))
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(64));
}

#[test]
fn certs_subcommands_issue_a_working_set_with_private_keys() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let run = |args: &[&str]| {
        let out = witness().args(args).current_dir(d).output().expect("run");
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    run(&["certs", "ca", "--out", "pki"]);
    run(&[
        "certs",
        "server",
        "--ca-dir",
        "pki",
        "--name",
        "witness.example.org",
        "--ip",
        "10.0.0.5",
        "--out",
        "pki",
    ]);
    let out = run(&[
        "certs",
        "node",
        "--ca-dir",
        "pki",
        "--cluster",
        "hospital-1",
        "--room",
        "a",
        "--node",
        "node-a1",
        "--out",
        "pki",
    ]);
    assert!(out.contains("witness://hospital-1/a/node-a1"), "{out}");
    run(&[
        "certs", "admin", "--ca-dir", "pki", "--name", "ops", "--out", "pki",
    ]);
    let pki = d.join("pki");
    for (f, want) in [
        ("ca-key.pem", 0o600),
        ("server-key.pem", 0o600),
        ("node-a1-key.pem", 0o600),
        ("ops-key.pem", 0o600),
        ("ops.pem", 0o644),
    ] {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(pki.join(f))
            .expect(f)
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, want, "{f}");
    }
    let ids = witness::tls::identities_in_pem(&std::fs::read(pki.join("ops.pem")).expect("ops"))
        .expect("ids");
    assert_eq!(ids, vec!["witness-admin://ops".to_string()]);
    // Never overwrites by accident.
    let out = witness()
        .args(["certs", "ca", "--out", "pki"])
        .current_dir(d)
        .output()
        .expect("run");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--force"));
}

#[test]
fn check_config_accepts_the_shipped_deploy_configuration() {
    let shipped =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/witness/witness.toml");
    if !shipped.exists() {
        eprintln!("skipped: {} is not in this checkout", shipped.display());
        return;
    }
    let out = witness()
        .args(["check-config", "--skip-file-checks", "--config"])
        .arg(&shipped)
        .output()
        .expect("run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("valid") && text.contains("forgotten-state wait"),
        "{text}"
    );
    // Without --skip-file-checks the missing TLS files are named (exit 64).
    let out = witness()
        .args(["check-config", "--config"])
        .arg(&shipped)
        .output()
        .expect("run");
    if !std::path::Path::new("/etc/witness/tls/ca.pem").exists() {
        assert_eq!(out.status.code(), Some(64));
        assert!(String::from_utf8_lossy(&out.stderr).contains("tls.ca"));
    }
}
