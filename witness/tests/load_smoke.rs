//! A rough throughput check, not a benchmark: many clusters renewing over kept-alive mutual-TLS
//! connections against an in-process witness. Ignored by default (it measures, it does not
//! judge); run with `cargo test --release -p witness --test load_smoke -- --ignored --nocapture`.
mod common;

use common::*;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use witness::certs::{Ca, Validity};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "measures throughput; run by hand with --ignored"]
async fn many_clusters_renewing_over_kept_alive_connections() {
    let clusters: usize = std::env::var("LOAD_CLUSTERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    let secs: u64 = std::env::var("LOAD_SECONDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cfg = test_config(dir.path());
    cfg.default_cluster.timings = proto::Timings::default();
    cfg.limits.requests_per_second_per_identity = 1_000_000;
    let w = start_fresh(cfg).await;
    let d = certs_dir(dir.path());
    let ca = Ca::load(&d).expect("ca");
    let certs = dir.path().join("load");
    let mut clients = Vec::new();
    for i in 0..clusters {
        for room in ["a", "b"] {
            let node = format!("c{i}-{room}");
            ca.issue_node(
                &certs,
                &format!("c{i}"),
                room,
                &node,
                &[],
                None,
                Validity { days: 1 },
                true,
            )
            .expect("cert");
            let c = client_with(
                &d.join("ca.pem"),
                &certs.join(format!("{node}.pem")),
                &certs.join(format!("{node}-key.pem")),
            );
            clients.push((c, lease_body(&format!("c{i}"), room, &node, 0, false)));
        }
    }
    // Warm up: one request per identity, all at once (handshakes and first durable writes).
    let t_warm = Instant::now();
    let mut warm = Vec::new();
    for (c, body) in &clients {
        let (c, body, url) = (c.clone(), body.clone(), w.lease_url());
        warm.push(tokio::spawn(async move { lease(&c, &url, &body).await.0 }));
    }
    for t in warm {
        assert_eq!(t.await.expect("warm"), 200);
    }
    eprintln!(
        "warm-up of {} identities: {:?}",
        clients.len(),
        t_warm.elapsed()
    );
    let n = Arc::new(AtomicU64::new(0));
    let stop = Instant::now() + Duration::from_secs(secs);
    let url = w.lease_url();
    let mut tasks = Vec::new();
    for (c, body) in clients {
        let (n, url) = (n.clone(), url.clone());
        tasks.push(tokio::spawn(async move {
            while Instant::now() < stop {
                let (s, _) = lease(&c, &url, &body).await;
                assert_eq!(s, 200);
                n.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    let t0 = Instant::now();
    for t in tasks {
        t.await.expect("task");
    }
    let total = n.load(Ordering::Relaxed);
    eprintln!(
        "{} identities: {total} renewals in {:.1} s = {:.0}/s (client and server share the 2 cores)",
        clusters * 2,
        t0.elapsed().as_secs_f64(),
        total as f64 / t0.elapsed().as_secs_f64()
    );
    let m = metrics(&w.status_url()).await;
    eprintln!(
        "persist duration: sum {} count {}",
        sample(&m, "witness_persist_duration_seconds_sum"),
        sample(&m, "witness_persist_duration_seconds_count")
    );
    eprintln!(
        "lease duration: sum {} count {}",
        sample(&m, "witness_lease_request_duration_seconds_sum"),
        sample(&m, "witness_lease_request_duration_seconds_count")
    );
    w.stop().await.expect("stop");
}
