//! Fault injection for the store: the real `witness serve` binary keeps its data directory on a
//! small tmpfs that the test fills to the last byte while lease and admin requests arrive, then
//! frees. Asserts: a clear 503 while full and `/readyz` not ready while writes fail; no grant
//! whose record is not durable; recovery by itself once space is back; and nothing that was
//! acknowledged is lost across `kill -9` and a restart.
//!
//! Mounting needs root: the test is ignored by default (the runner reports it as ignored) and
//! `scripts/test.sh` runs it with `--include-ignored` when it runs as root.
// A real witness process against real wall time: witness/clippy.toml's ban is for the shell.
#![allow(clippy::disallowed_types, clippy::disallowed_methods)]
mod common;

use common::*;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// A tmpfs mounted for the test; unmounted when dropped, also when the test fails.
struct Tmpfs {
    at: PathBuf,
}

impl Tmpfs {
    fn mount(at: &Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(at).expect("mount point");
        let st = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "witness-test"])
            .arg(at)
            .status()
            .expect("mount runs");
        assert!(st.success(), "mounting a tmpfs at {} failed", at.display());
        Tmpfs {
            at: at.to_path_buf(),
        }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        // Lazy: a witness still holding files must not keep the mount behind.
        let _ = Command::new("umount").arg("-l").arg(&self.at).status();
    }
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// Fills the file system at `dir` until it refuses a write; returns the filler's path.
fn fill(dir: &Path) -> PathBuf {
    let p = dir.join("filler");
    let mut f = std::fs::File::create(&p).expect("filler");
    let chunk = vec![0u8; 64 * 1024];
    while f.write_all(&chunk).is_ok() {}
    let small = [0u8; 512];
    while f.write_all(&small).is_ok() {}
    let _ = f.sync_all();
    p
}

async fn readyz(base: &str) -> u16 {
    plain()
        .get(format!("{base}/readyz"))
        .send()
        .await
        .map(|r| r.status().as_u16())
        .unwrap_or(0)
}

/// A node certificate for `cluster`/a/a1 (kept off the tmpfs), and its client.
fn node_client(
    ca: &witness::certs::Ca,
    certs: &Path,
    out: &Path,
    cluster: &str,
) -> reqwest::Client {
    let name = format!("{cluster}-a1");
    ca.issue_node(
        out,
        cluster,
        "a",
        "a1",
        &[],
        Some(&name),
        witness::certs::Validity { days: 2 },
        true,
    )
    .expect("node certificate");
    client_with(
        &certs.join("ca.pem"),
        &out.join(format!("{name}.pem")),
        &out.join(format!("{name}-key.pem")),
    )
}

#[tokio::test]
#[ignore = "mounts a small tmpfs, so needs root: scripts/test.sh runs it with --include-ignored as root"]
async fn a_full_disk_grants_nothing_undurable_answers_503_and_recovers_by_itself() {
    assert!(
        is_root(),
        "this test mounts a tmpfs and needs root; without root it must stay ignored"
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let mnt = Tmpfs::mount(&dir.path().join("data"), "8m");
    let data = mnt.at.clone();
    let config = binary_config(dir.path(), &data);
    let mut w = spawn(dir.path(), &config, 1);
    let certs = certs_dir(&data);
    let a1 = client(&data, "a1");
    let admin_creds = witness::client::AdminCreds {
        ca: certs.join("ca.pem"),
        cert: certs.join(format!("{}.pem", witness::certs::DEMO_ADMIN)),
        key: certs.join(format!("{}-key.pem", witness::certs::DEMO_ADMIN)),
    };
    let ca = witness::certs::Ca::load(&certs).expect("demo CA");
    let extra = dir.path().join("extra-certs");
    std::fs::create_dir_all(&extra).expect("extra certs dir");
    let clusters: Vec<(String, reqwest::Client)> = (0..40)
        .map(|i| {
            let c = format!("full{i}");
            let cl = node_client(&ca, &certs, &extra, &c);
            (c, cl)
        })
        .collect();

    // Every grant answered, by cluster: the highest epoch acknowledged.
    let mut acked: BTreeMap<String, u64> = BTreeMap::new();
    let e = eventually(
        Duration::from_secs(10),
        "first grant after the forgotten-state wait",
        || async {
            let (_, v) = lease(&a1, &w.lease_url, &lease_body("demo", "a", "a1", 0, false)).await;
            (verdict(&v) == "grant_paired").then(|| v["epoch"].as_u64().expect("epoch"))
        },
    )
    .await;
    acked.insert("demo".into(), e);
    // An acknowledged operator decision before the disk fills.
    let out = witness::client::admin(
        &w.lease_url,
        &admin_creds,
        "demo",
        &proto::wire::AdminCommand::ForceSurvivor {
            room: "a".into(),
            other_room_down: true,
        },
    )
    .await
    .expect("force-survivor before the disk fills");
    assert_eq!(out["ok"], true, "{out}");
    let forced_epoch = out["epoch"].as_u64().expect("epoch");
    // The survivor's first right to act alone is recorded (durably) now, not while full.
    let v = eventually(
        Duration::from_secs(10),
        "room a is granted to act alone",
        || async {
            let (_, v) = lease(
                &a1,
                &w.lease_url,
                &lease_body("demo", "a", "a1", forced_epoch, false),
            )
            .await;
            (verdict(&v) == "grant_alone").then_some(v)
        },
    )
    .await;
    assert_eq!(v["epoch"].as_u64(), Some(forced_epoch), "{v}");
    assert_eq!(readyz(&w.status_url).await, 200);

    // Fill the disk, then ask for new clusters (each needs a new durable record).
    let filler = fill(&data);
    let mut saw_503 = false;
    let mut refused_clusters = Vec::new();
    for (c, cl) in &clusters {
        let (s, v) = lease(cl, &w.lease_url, &lease_body(c, "a", "a1", 0, false)).await;
        match s {
            200 => {
                // Allowed only if the record is durable: checked after kill -9 below.
                if verdict(&v).starts_with("grant") {
                    acked.insert(c.clone(), v["epoch"].as_u64().expect("epoch"));
                }
            }
            503 => {
                saw_503 = true;
                assert!(
                    v["error"]
                        .as_str()
                        .unwrap_or("")
                        .contains("nothing was granted"),
                    "a clear 503: {v}"
                );
                refused_clusters.push(c.clone());
                // The retry that used to be granted from sled's memory: still refused.
                let (s2, v2) = lease(cl, &w.lease_url, &lease_body(c, "a", "a1", 0, false)).await;
                assert_eq!(s2, 503, "a retry on a full disk is refused too: {v2}");
            }
            other => panic!("cluster {c}: unexpected status {other} on a full disk: {v}"),
        }
        if saw_503 {
            break;
        }
    }
    assert!(
        saw_503,
        "the witness never refused a write on a full disk: the test did not fill it"
    );
    assert_eq!(
        readyz(&w.status_url).await,
        503,
        "/readyz must say not ready while writes fail"
    );
    // A renewal that needs no new record is still answered: the survivor keeps its right
    // (its record is on disk), so a full disk at the witness does not take a cluster down.
    let (s, v) = lease(
        &a1,
        &w.lease_url,
        &lease_body("demo", "a", "a1", forced_epoch, false),
    )
    .await;
    assert_eq!((s, verdict(&v)), (200, "grant_alone".to_string()), "{v}");
    // Admin requests while full: refused with 503, and from then on this cluster is answered only once its state is read back from disk.
    let r = reqwest_admin(
        &admin_creds,
        &w.lease_url,
        "demo",
        json!({"command": "pause"}),
    )
    .await;
    assert_eq!(r.0, 503, "admin on a full disk: {}", r.1);

    // Free the space: the witness recovers by itself.
    std::fs::remove_file(&filler).expect("free the disk");
    eventually(
        Duration::from_secs(20),
        "/readyz ready again after space is freed",
        || async { (readyz(&w.status_url).await == 200).then_some(()) },
    )
    .await;
    for c in refused_clusters.iter().take(1) {
        let cl = &clusters.iter().find(|(n, _)| n == c).expect("client").1;
        let v = eventually(
            Duration::from_secs(20),
            "the refused cluster is granted after recovery",
            || async {
                let (s, v) = lease(cl, &w.lease_url, &lease_body(c, "a", "a1", 0, false)).await;
                (s == 200 && verdict(&v).starts_with("grant")).then_some(v)
            },
        )
        .await;
        acked.insert(c.clone(), v["epoch"].as_u64().expect("epoch"));
    }
    let (s, v) = lease(
        &a1,
        &w.lease_url,
        &lease_body("demo", "a", "a1", forced_epoch, false),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(
        verdict(&v),
        "grant_alone",
        "the forced decision survived: {v}"
    );

    // kill -9 and restart: everything acknowledged is on disk.
    let _ = w.child.kill();
    let _ = w.child.wait();
    drop(w);
    let w = spawn(dir.path(), &config, 2);
    let st = status(&w.status_url).await;
    let known: BTreeMap<String, Value> = st["clusters"]
        .as_array()
        .expect("clusters")
        .iter()
        .map(|c| (c["cluster"].as_str().unwrap_or("").to_string(), c.clone()))
        .collect();
    for (c, epoch) in &acked {
        let got = known
            .get(c)
            .unwrap_or_else(|| panic!("cluster {c} was granted (epoch {epoch}) but is not in the store after kill -9: {st}"));
        assert!(
            got["epoch"].as_u64().unwrap_or(0) >= *epoch,
            "cluster {c}: acknowledged epoch {epoch}, stored {got}"
        );
    }
    assert_eq!(known["demo"]["survivor"], "a", "{st}");
    let log = std::fs::read_to_string(dir.path().join("serve-1.log")).unwrap_or_default();
    let errors = log.lines().filter(|l| l.contains("ERROR")).count();
    assert!(
        errors <= 10,
        "the error log is rate-limited while the disk is full: {errors} lines\n{log}"
    );
}

/// Sends an admin command body as is.
async fn reqwest_admin(
    creds: &witness::client::AdminCreds,
    base: &str,
    cluster: &str,
    body: Value,
) -> (u16, Value) {
    let c = client_with(&creds.ca, &creds.cert, &creds.key);
    let (s, v, _) = post_raw(
        &c,
        &format!("{base}/v1/admin/{cluster}"),
        serde_json::to_vec(&body).expect("json"),
    )
    .await;
    (s, v)
}
