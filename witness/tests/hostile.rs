//! The witness under hostile or mistaken input over the real API: a node certificate reporting
//! an absurd epoch, an operator's typo in a room name or a command, refusals that close the
//! connection, and a flood of idle connections on the status port.
mod common;

use common::*;
use std::time::Duration;
use witness::certs;

fn admin_client(dir: &std::path::Path) -> reqwest::Client {
    client(dir, certs::DEMO_ADMIN)
}

async fn admin_raw(
    c: &reqwest::Client,
    base: &str,
    cluster: &str,
    body: &[u8],
) -> (u16, serde_json::Value) {
    let (s, v, _) = post_raw(c, &format!("{base}/v1/admin/{cluster}"), body.to_vec()).await;
    (s, v)
}

#[tokio::test]
async fn one_node_certificate_cannot_move_its_clusters_epoch_to_the_end_of_the_range() {
    let dir = tempfile::tempdir().expect("tempdir");
    let w = start_fresh(test_config(dir.path())).await;
    let url = w.lease_url();
    let (a1, b1) = (client(dir.path(), "a1"), client(dir.path(), "b1"));
    assert_eq!(
        verdict(
            &lease(&a1, &url, &lease_body("demo", "a", "a1", 0, false))
                .await
                .1
        ),
        "grant_paired"
    );
    assert_eq!(
        verdict(
            &lease(&b1, &url, &lease_body("demo", "b", "b1", 0, false))
                .await
                .1
        ),
        "grant_paired"
    );
    let before = status(&w.status_url()).await["clusters"][0]["epoch"]
        .as_u64()
        .expect("epoch");

    let (s, v) = lease(&a1, &url, &lease_body("demo", "a", "a1", u64::MAX, false)).await;
    assert_eq!(s, 400, "{v}");
    assert_eq!(v["reason"], "epoch_out_of_range", "{v}");
    // Within the ceiling but far beyond what the witness issued, outside lost state: 409.
    let (s, v) = lease(&a1, &url, &lease_body("demo", "a", "a1", 1 << 40, false)).await;
    assert_eq!(s, 409, "{v}");
    assert_eq!(v["reason"], "epoch_out_of_range", "{v}");
    let st = status(&w.status_url()).await;
    assert_eq!(
        st["clusters"][0]["epoch"].as_u64(),
        Some(before),
        "nothing changed: {st}"
    );

    // The operator's sequence from the report now gives two different epochs.
    let admin = admin_client(dir.path());
    let (s, v) = admin_raw(
        &admin,
        &url,
        "demo",
        br#"{"command":"force_survivor","room":"a","other_room_down":true}"#,
    )
    .await;
    assert_eq!(s, 200, "{v}");
    let ea = v["epoch"].as_u64().expect("epoch");
    let (s, v) = admin_raw(&admin, &url, "demo", br#"{"command":"release"}"#).await;
    assert_eq!(s, 200, "{v}");
    let (s, v) = admin_raw(
        &admin,
        &url,
        "demo",
        br#"{"command":"force_survivor","room":"b","other_room_down":true}"#,
    )
    .await;
    assert_eq!(s, 200, "{v}");
    let eb = v["epoch"].as_u64().expect("epoch");
    assert!(eb > ea && ea > before, "a acts alone at {ea}, b at {eb}");
    w.stop().await.expect("stop");
}

#[tokio::test]
async fn an_admin_typo_is_refused_with_the_known_rooms_and_does_not_lock_a_room_out() {
    let dir = tempfile::tempdir().expect("tempdir");
    let w = start_fresh(test_config(dir.path())).await;
    let url = w.lease_url();
    let (a1, b1) = (client(dir.path(), "a1"), client(dir.path(), "b1"));
    assert_eq!(
        verdict(
            &lease(&a1, &url, &lease_body("demo", "a", "a1", 0, false))
                .await
                .1
        ),
        "grant_paired"
    );
    let admin = admin_client(dir.path());
    let (s, v) = admin_raw(
        &admin,
        &url,
        "demo",
        br#"{"command":"force_survivor","room":"zz","other_room_down":false}"#,
    )
    .await;
    assert_eq!(s, 409, "{v}");
    let msg = v["error"].as_str().unwrap_or("");
    assert!(
        msg.contains("no room zz") && msg.contains("known rooms: a"),
        "{v}"
    );
    for bad in [
        &br#"{"command":"pause","x":1}"#[..],
        br#"{"command":"release","room":"a"}"#,
    ] {
        let (s, v) = admin_raw(&admin, &url, "demo", bad).await;
        assert_eq!(s, 400, "{v}");
        assert!(
            v["error"].as_str().unwrap_or("").contains("unknown field"),
            "{v}"
        );
    }
    let st = status(&w.status_url()).await;
    assert_eq!(st["clusters"][0]["paused"], false, "{st}");
    assert_eq!(st["clusters"][0]["mode"], "paired", "{st}");
    // Room b still joins.
    let (s, v) = lease(&b1, &url, &lease_body("demo", "b", "b1", 0, false)).await;
    assert_eq!((s, verdict(&v)), (200, "grant_paired".to_string()), "{v}");
    w.stop().await.expect("stop");
}

#[tokio::test]
async fn refusals_before_the_body_is_read_say_connection_close() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cfg = test_config(dir.path());
    cfg.limits.requests_per_second_per_identity = 1;
    cfg.limits.body_limit_bytes = 1024;
    let w = start_fresh(cfg).await;
    let url = format!("{}/v1/lease", w.lease_url());
    let a1 = client(dir.path(), "a1");
    let big = vec![b' '; 4096];
    let (s, _, h) = post_raw(&a1, &url, big).await;
    assert_eq!(s, 413);
    assert_eq!(
        h.get("connection").map(|v| v.as_bytes()),
        Some(&b"close"[..]),
        "{h:?}"
    );
    let body = serde_json::to_vec(&lease_body("demo", "a", "a1", 0, false)).expect("json");
    let mut saw_429 = false;
    for _ in 0..10 {
        let (s, _, h) = post_raw(&a1, &url, body.clone()).await;
        if s == 429 {
            saw_429 = true;
            assert_eq!(
                h.get("connection").map(|v| v.as_bytes()),
                Some(&b"close"[..]),
                "{h:?}"
            );
            break;
        }
    }
    assert!(saw_429, "the rate limit never answered 429");
    w.stop().await.expect("stop");
}

#[tokio::test]
async fn idle_connections_cannot_silence_the_status_port() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cfg = test_config(dir.path());
    // Long enough that the flood would hold every place for the whole test without eviction.
    cfg.limits.idle_timeout_ms = 60_000;
    cfg.limits.header_timeout_ms = 5_000;
    let w = start_fresh(cfg).await;
    let mut idle = Vec::new();
    for _ in 0..(witness::server::STATUS_MAX_CONNECTIONS + 44) {
        idle.push(
            tokio::net::TcpStream::connect(w.status_addr)
                .await
                .expect("connect"),
        );
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let c = plain();
    for path in ["/healthz", "/metrics", "/", "/readyz"] {
        let t0 = tokio::time::Instant::now();
        let r = tokio::time::timeout(
            Duration::from_secs(3),
            c.get(format!("{}{path}", w.status_url())).send(),
        )
        .await
        .unwrap_or_else(|_| {
            panic!("{path} did not answer within 3 s under a flood of idle connections")
        })
        .unwrap_or_else(|e| panic!("{path}: {e}"));
        assert!(r.status().is_success(), "{path}: {}", r.status());
        assert!(t0.elapsed() < Duration::from_secs(3));
    }
    let m = metrics(&w.status_url()).await;
    assert!(
        sample(&m, "witness_refusals_total{reason=\"idle_evicted\"}") >= 1.0,
        "{m}"
    );
    drop(idle);
    w.stop().await.expect("stop");
}

#[tokio::test]
async fn a_status_connection_that_sends_nothing_is_closed_after_the_header_timeout() {
    use tokio::io::AsyncReadExt;
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cfg = test_config(dir.path());
    cfg.limits.header_timeout_ms = 300;
    cfg.limits.idle_timeout_ms = 60_000;
    let w = start_fresh(cfg).await;
    let mut s = tokio::net::TcpStream::connect(w.status_addr)
        .await
        .expect("connect");
    let mut buf = [0u8; 64];
    let r = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
        .await
        .expect("closed well before the idle timeout");
    assert!(matches!(r, Ok(0) | Err(_)), "{r:?}");
    w.stop().await.expect("stop");
}

/// Issue 12 over the real API: the operator's membership commands. A running node cannot be
/// taken out without proof or certification (nothing changes), an unknown node is named in the
/// refusal, a removed node is fenced until it is added back, and the status shows the members.
#[tokio::test]
async fn member_commands_refuse_a_running_node_and_fence_a_removed_one_until_it_is_added() {
    let dir = tempfile::tempdir().expect("tempdir");
    let w = start_fresh(test_config(dir.path())).await;
    let url = w.lease_url();
    let (a1, b1, b2) = (
        client(dir.path(), "a1"),
        client(dir.path(), "b1"),
        client(dir.path(), "b2"),
    );
    for (c, room, node) in [(&a1, "a", "a1"), (&b1, "b", "b1"), (&b2, "b", "b2")] {
        let (s, v) = lease(c, &url, &lease_body("demo", room, node, 0, false)).await;
        assert_eq!(s, 200, "{v}");
    }
    let admin = admin_client(dir.path());
    let version = |st: &serde_json::Value| st["clusters"][0]["members_version"].as_u64();
    let before = status(&w.status_url()).await;
    let (s, v) = admin_raw(
        &admin,
        &url,
        "demo",
        br#"{"command":"member_remove","node":"b2","powered_off":false}"#,
    )
    .await;
    assert_eq!(s, 409, "{v}");
    assert!(
        v["error"].as_str().unwrap_or("").contains("may still run"),
        "{v}"
    );
    let (s, v) = admin_raw(
        &admin,
        &url,
        "demo",
        br#"{"command":"member_remove","node":"zz9","powered_off":true}"#,
    )
    .await;
    assert_eq!(s, 409, "{v}");
    assert!(
        v["error"].as_str().unwrap_or("").contains("no node zz9"),
        "{v}"
    );
    assert_eq!(
        version(&status(&w.status_url()).await),
        version(&before),
        "refusals change nothing"
    );
    let (s, v) = admin_raw(
        &admin,
        &url,
        "demo",
        br#"{"command":"member_remove","node":"b2","powered_off":true}"#,
    )
    .await;
    assert_eq!(s, 200, "{v}");
    let (s, v) = lease(&b2, &url, &lease_body("demo", "b", "b2", 0, false)).await;
    assert_eq!((s, verdict(&v)), (200, "fence".to_string()), "{v}");
    let st = status(&w.status_url()).await;
    let members = st["clusters"][0]["members"].as_array().expect("members");
    let b2_status = members
        .iter()
        .find(|m| m["node"] == "b2")
        .map(|m| m["status"].clone());
    assert_eq!(b2_status, Some(serde_json::json!("removed")), "{st}");
    let (s, v) = admin_raw(
        &admin,
        &url,
        "demo",
        br#"{"command":"member_add","node":"b2"}"#,
    )
    .await;
    assert_eq!(s, 200, "{v}");
    // Room a counts b2 (its report names it), so b2 is granted again at once.
    let (_, v) = lease(&a1, &url, &lease_body("demo", "a", "a1", 0, false)).await;
    assert_eq!(verdict(&v), "grant_paired", "{v}");
    let (s, v) = lease(&b2, &url, &lease_body("demo", "b", "b2", 0, false)).await;
    assert_eq!((s, verdict(&v)), (200, "grant_paired".to_string()), "{v}");
    w.stop().await.expect("stop");
}
