//! Durability: after `kill -9` of the real binary no acknowledged decision is forgotten and no
//! conflicting grant is made; an empty (lost) store waits out every lease it may have
//! forgotten before granting anything, also across a restart in the middle of that wait.
// Real processes against real wall time: witness/clippy.toml's ban is for the shell.
#![allow(clippy::disallowed_types, clippy::disallowed_methods)]
mod common;

use common::*;
use std::time::{Duration, Instant};

#[tokio::test]
async fn acknowledged_split_decision_survives_kill_9_and_no_conflicting_grant_follows() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = binary_config(dir.path(), &dir.path().join("data"));
    let data = dir.path().join("data");
    let mut w = spawn(dir.path(), &config, 1);
    let (a1, b1) = (client(&data, "a1"), client(&data, "b1"));

    // A new store is lost state: wait it out, then both rooms run paired.
    let e = eventually(
        Duration::from_secs(5),
        "first grant after the forgotten-state wait",
        || async {
            let (_, v) = lease(&a1, &w.lease_url, &lease_body("demo", "a", "a1", 0, false)).await;
            (verdict(&v) == "grant_paired").then(|| v["epoch"].as_u64().expect("epoch"))
        },
    )
    .await;
    assert_eq!(
        verdict(
            &lease(&b1, &w.lease_url, &lease_body("demo", "b", "b1", e, false))
                .await
                .1
        ),
        "grant_paired"
    );

    // The split: both rooms claim; a wins as the preferred room, b is told to fence.
    let (_, v) = lease(&a1, &w.lease_url, &lease_body("demo", "a", "a1", e, true)).await;
    assert_eq!(
        verdict(&v),
        "grant_paired",
        "no decision while b still reports: {v}"
    );
    let (_, v) = lease(&b1, &w.lease_url, &lease_body("demo", "b", "b1", e, true)).await;
    assert_eq!(verdict(&v), "fence", "{v}");
    let split_epoch = v["epoch"].as_u64().expect("epoch");
    assert!(split_epoch > e);
    let (_, v) = lease(
        &a1,
        &w.lease_url,
        &lease_body("demo", "a", "a1", split_epoch, true),
    )
    .await;
    assert_eq!(verdict(&v), "grant_alone", "{v}");
    assert_eq!(v["epoch"].as_u64(), Some(split_epoch));

    // kill -9: no graceful anything.
    w.child.kill().expect("SIGKILL");
    w.child.wait().expect("reaped");

    let mut w = spawn(dir.path(), &config, 2);
    let (a1, b1) = (client(&data, "a1"), client(&data, "b1"));
    // b asks first and as if nothing happened: it is fenced at the same epoch.
    for claim in [false, true] {
        let (s, v) = lease(&b1, &w.lease_url, &lease_body("demo", "b", "b1", e, claim)).await;
        assert_eq!(s, 200);
        assert_eq!(
            verdict(&v),
            "fence",
            "after restart b must stay fenced: {v}"
        );
        assert_eq!(
            v["epoch"].as_u64(),
            Some(split_epoch),
            "the epoch is kept: {v}"
        );
    }
    // a keeps the right to act alone (after the restart's handover wait it is granted alone
    // again; until then it may only be granted paired), and b is never granted anything.
    eventually(
        Duration::from_secs(3),
        "a is granted alone again",
        || async {
            let (_, v) = lease(
                &a1,
                &w.lease_url,
                &lease_body("demo", "a", "a1", split_epoch, true),
            )
            .await;
            assert_eq!(v["epoch"].as_u64(), Some(split_epoch), "{v}");
            let got = verdict(&v);
            assert!(got == "grant_alone" || got == "grant_paired", "{v}");
            let (_, vb) = lease(
                &b1,
                &w.lease_url,
                &lease_body("demo", "b", "b1", split_epoch, true),
            )
            .await;
            assert_eq!(verdict(&vb), "fence", "{vb}");
            (got == "grant_alone").then_some(())
        },
    )
    .await;
    let st = status(&w.status_url).await;
    assert_eq!(st["clusters"][0]["mode"], "alone", "{st}");
    assert_eq!(st["clusters"][0]["epoch"].as_u64(), Some(split_epoch));
    assert_eq!(st["witness"]["store_origin"], "intact");
    w.child.kill().expect("SIGKILL");
    w.child.wait().expect("reaped");
}

#[tokio::test]
async fn empty_store_grants_nothing_until_the_forgotten_state_wait_has_passed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = test_config(dir.path());
    let wait = short_timings().forgotten_state_wait_ms();
    let w = start_fresh(cfg.clone()).await;
    let a1 = client(dir.path(), "a1");
    let (_, v) = lease(
        &a1,
        &w.lease_url(),
        &lease_body("demo", "a", "a1", 0, false),
    )
    .await;
    assert_eq!(verdict(&v), "grant_paired");
    let old_epoch = v["epoch"].as_u64().expect("epoch");
    w.stop().await.expect("stop");

    // The disk is lost: the sled database goes, the certificates stay.
    std::fs::remove_dir_all(witness::server::store_path(&cfg)).expect("delete store");
    let w = witness::server::start(cfg.clone()).await.expect("restart");
    let t0 = Instant::now();
    let a1 = client(dir.path(), "a1");
    let (s, v) = lease(
        &a1,
        &w.lease_url(),
        &lease_body("demo", "a", "a1", old_epoch, false),
    )
    .await;
    assert_eq!(s, 200);
    assert_eq!(verdict(&v), "retry", "{v}");
    let after = v["verdict"]["after_ms"].as_u64().expect("after_ms");
    assert!(
        after > wait - 200 && after <= wait,
        "after_ms {after} vs wait {wait}"
    );

    // A restart in the middle of the wait does not shorten it.
    w.stop().await.expect("stop");
    let w = witness::server::start(cfg.clone())
        .await
        .expect("restart again");
    let t1 = Instant::now();
    let (_, v) = lease(
        &a1,
        &w.lease_url(),
        &lease_body("demo", "a", "a1", old_epoch, false),
    )
    .await;
    assert_eq!(verdict(&v), "retry", "still waiting after a restart: {v}");
    assert!(status(&w.status_url()).await["witness"]["store_origin"] == "lost_state");

    let epoch = eventually(
        Duration::from_secs(5),
        "a grant once the wait is over",
        || async {
            let (_, v) = lease(
                &a1,
                &w.lease_url(),
                &lease_body("demo", "a", "a1", old_epoch, false),
            )
            .await;
            match verdict(&v).as_str() {
                "retry" => None,
                "grant_paired" => Some(v["epoch"].as_u64().expect("epoch")),
                other => panic!("unexpected verdict {other}: {v}"),
            }
        },
    )
    .await;
    assert!(
        t1.elapsed() >= Duration::from_millis(wait - 50),
        "granted after {:?}, wait is {wait} ms",
        t1.elapsed()
    );
    assert!(t0.elapsed() >= Duration::from_millis(wait));
    assert!(
        epoch > old_epoch,
        "the epoch moves past every epoch a node reported ({epoch} vs {old_epoch})"
    );
    let m = metrics(&w.status_url()).await;
    assert!(sample(&m, "witness_lease_requests_total{result=\"retry\"}") >= 1.0);
    w.stop().await.expect("stop");
}

#[tokio::test]
async fn unreadable_record_is_treated_as_lost_state_also_after_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = test_config(dir.path());
    let w = start_fresh(cfg.clone()).await;
    let a1 = client(dir.path(), "a1");
    assert_eq!(
        verdict(
            &lease(
                &a1,
                &w.lease_url(),
                &lease_body("demo", "a", "a1", 0, false)
            )
            .await
            .1
        ),
        "grant_paired"
    );
    w.stop().await.expect("stop");

    // Corrupt the record behind the witness's back.
    {
        let db = sled::open(witness::server::store_path(&cfg)).expect("open");
        db.open_tree("clusters")
            .expect("tree")
            .insert("demo", &b"{not json"[..])
            .expect("insert");
        db.flush().expect("flush");
    }
    let w = witness::server::start(cfg.clone()).await.expect("restart");
    let (_, v) = lease(
        &a1,
        &w.lease_url(),
        &lease_body("demo", "a", "a1", 1, false),
    )
    .await;
    assert_eq!(
        verdict(&v),
        "retry",
        "an unreadable record means lost state: {v}"
    );
    w.stop().await.expect("stop");
    // The request above wrote a readable record; the wait must still not be skipped.
    let w = witness::server::start(cfg.clone()).await.expect("restart");
    let (_, v) = lease(
        &a1,
        &w.lease_url(),
        &lease_body("demo", "a", "a1", 1, false),
    )
    .await;
    assert_eq!(
        verdict(&v),
        "retry",
        "still recovering after a restart: {v}"
    );
    w.stop().await.expect("stop");
}
