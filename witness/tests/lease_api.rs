//! The lease API over mutual TLS against a real in-process witness on port 0: grants and
//! renewals, alone grants with proofs that verify against the JWKS, every refusal case
//! (answered clearly, no state changed), metrics and status, and the operator endpoint with its
//! audit log.
mod common;

use common::*;
use serde_json::{json, Value};
use witness::certs::{self, Ca};

#[tokio::test]
async fn grant_and_renewal_over_mtls_are_answered_and_counted() {
    let dir = tempfile::tempdir().expect("tempdir");
    let w = start_fresh(test_config(dir.path())).await;
    let a1 = client(dir.path(), "a1");
    let before = metrics(&w.status_url()).await;

    let (s, first) = lease(
        &a1,
        &w.lease_url(),
        &lease_body("demo", "a", "a1", 0, false),
    )
    .await;
    assert_eq!(s, 200, "{first}");
    assert_eq!(verdict(&first), "grant_paired", "{first}");
    let epoch = first["epoch"].as_u64().expect("epoch");
    let (s, renewal) = lease(
        &a1,
        &w.lease_url(),
        &lease_body("demo", "a", "a1", epoch, false),
    )
    .await;
    assert_eq!(s, 200);
    assert_eq!(verdict(&renewal), "grant_paired");
    assert_eq!(
        renewal["epoch"].as_u64(),
        Some(epoch),
        "a renewal keeps the epoch"
    );

    // A paired grant carries no proof: only grants to act alone do (the takeover's evidence).
    assert!(first.get("proof").is_none(), "{first}");
    assert!(renewal.get("proof").is_none(), "{renewal}");

    // Metrics and status reflect the grants.
    let after = metrics(&w.status_url()).await;
    let key = "witness_lease_requests_total{result=\"grant_paired\"}";
    assert_eq!(sample(&after, key) - sample(&before, key), 2.0, "{after}");
    assert_eq!(
        sample(&after, "witness_cluster_epoch{cluster=\"demo\"}"),
        epoch as f64
    );
    assert_eq!(sample(&after, "witness_up"), 1.0);
    assert!(
        sample(
            &after,
            "witness_certificate_expiry_seconds{cert=\"server\"}"
        ) > 86_400.0
    );
    assert!(after.contains("witness_room_last_seen_seconds{cluster=\"demo\",room=\"a\"}"));
    assert_eq!(sample(&after, "witness_clusters{mode=\"paired\"}"), 1.0);
    let st = status(&w.status_url()).await;
    let c = &st["clusters"][0];
    assert_eq!(c["cluster"], "demo", "{st}");
    assert_eq!(c["epoch"].as_u64(), Some(epoch));
    assert_eq!(c["mode"], "paired");
    assert_eq!(c["rooms"][0]["nodes"][0]["node"], "a1");
    // The human page shows it too.
    let page = plain()
        .get(w.status_url())
        .send()
        .await
        .expect("page")
        .text()
        .await
        .expect("html");
    assert!(page.contains("data-cluster=\"demo\""), "{page}");
    // And the cluster's own page its nodes and timeline.
    let page = plain()
        .get(format!("{}/cluster/demo", w.status_url()))
        .send()
        .await
        .expect("cluster page")
        .text()
        .await
        .expect("html");
    assert!(
        page.contains("data-node=\"a1\"") && page.contains("<svg id=\"timeline\""),
        "{page}"
    );
    w.stop().await.expect("clean stop");
}

/// Every grant to act alone carries a proof, and every proof the witness sends verifies with a
/// standard JWT library (jsonwebtoken) against `/v1/jwks` from either port; paired grants
/// carry none.
#[tokio::test]
async fn alone_grants_carry_a_proof_that_a_standard_jwt_library_verifies_against_the_jwks() {
    use base64::Engine;
    use jsonwebtoken::{decode, decode_header, Algorithm, DecodingKey, Validation};
    let dir = tempfile::tempdir().expect("tempdir");
    let w = start_fresh(test_config(dir.path())).await;
    let (a1, b1) = (client(dir.path(), "a1"), client(dir.path(), "b1"));
    let jwks_status: jsonwebtoken::jwk::JwkSet = plain()
        .get(format!("{}/v1/jwks", w.status_url()))
        .send()
        .await
        .expect("jwks")
        .json()
        .await
        .expect("jwks json");
    let jwks_lease: jsonwebtoken::jwk::JwkSet = a1
        .get(format!("{}/v1/jwks", w.lease_url()))
        .send()
        .await
        .expect("jwks over mTLS")
        .json()
        .await
        .expect("jwks json");
    assert_eq!(jwks_status, jwks_lease);
    // Checks one answer: a proof on every alone grant, none on a paired one, and each proof
    // verifies and names exactly what was granted.
    let check = |v: &Value| -> Option<jsonwebtoken::TokenData<Value>> {
        let got = verdict(v);
        let Some(token) = v["proof"].as_str() else {
            assert_ne!(got, "grant_alone", "an alone grant without a proof: {v}");
            return None;
        };
        assert_eq!(got, "grant_alone", "only alone grants carry a proof: {v}");
        let header = decode_header(token).expect("a JWT header");
        assert_eq!(header.alg, Algorithm::EdDSA);
        let kid = header.kid.expect("the header names its key");
        let jwk = jwks_status.find(&kid).expect("the key is in the JWKS");
        let mut validation = Validation::new(Algorithm::EdDSA);
        validation.set_issuer(&["witness"]);
        validation.set_required_spec_claims(&["exp", "iss", "sub"]);
        let data = decode::<Value>(
            token,
            &DecodingKey::from_jwk(jwk).expect("an Ed25519 JWK"),
            &validation,
        )
        .expect("the proof verifies with jsonwebtoken against /v1/jwks");
        let c = &data.claims;
        assert_eq!(c["cluster"], v["cluster"], "{c}");
        assert_eq!(c["room"], v["room"], "{c}");
        assert_eq!(c["node"], v["node"], "{c}");
        assert_eq!(c["epoch"], v["epoch"], "{c}");
        assert_eq!(c["mode"], "alone", "{c}");
        assert_eq!(c["takeover"], v["verdict"]["takeover"], "{c}");
        assert_eq!(c["valid_ms"], v["verdict"]["valid_ms"], "{c}");
        assert_eq!(c["kid"].as_str(), Some(kid.as_str()), "{c}");
        Some(data)
    };

    let (_, v) = lease(
        &a1,
        &w.lease_url(),
        &lease_body("demo", "a", "a1", 0, false),
    )
    .await;
    assert_eq!(verdict(&v), "grant_paired", "{v}");
    assert!(check(&v).is_none());
    let e = v["epoch"].as_u64().expect("epoch");
    let (_, v) = lease(
        &b1,
        &w.lease_url(),
        &lease_body("demo", "b", "b1", e, false),
    )
    .await;
    assert_eq!(verdict(&v), "grant_paired", "{v}");
    assert!(check(&v).is_none());

    // The split: both claim; b (not the preferred room) is fenced, a is granted alone.
    let (_, v) = lease(&a1, &w.lease_url(), &lease_body("demo", "a", "a1", e, true)).await;
    check(&v);
    let (_, v) = lease(&b1, &w.lease_url(), &lease_body("demo", "b", "b1", e, true)).await;
    assert_eq!(verdict(&v), "fence", "{v}");
    assert!(check(&v).is_none());
    let split_epoch = v["epoch"].as_u64().expect("epoch");
    let token = eventually(
        std::time::Duration::from_secs(5),
        "a is granted alone",
        || async {
            let (_, v) = lease(
                &a1,
                &w.lease_url(),
                &lease_body("demo", "a", "a1", split_epoch, true),
            )
            .await;
            check(&v).map(|_| v["proof"].as_str().expect("proof").to_string())
        },
    )
    .await;
    // The witness's own verifier agrees, and a tampered payload fails both.
    let claims = witness::proof::verify(&token, &jwks_status).expect("the proof verifies");
    assert_eq!(
        (claims.room.as_str(), claims.epoch, claims.mode.as_str()),
        ("a", split_epoch, "alone")
    );
    assert_eq!(claims.exp_ms - claims.iat_ms, short_timings().lease_ms);
    let parts: Vec<&str> = token.split('.').collect();
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let mut payload: Value =
        serde_json::from_slice(&b64.decode(parts[1]).expect("b64")).expect("json");
    payload["room"] = json!("b");
    let forged = format!(
        "{}.{}.{}",
        parts[0],
        b64.encode(serde_json::to_vec(&payload).expect("json")),
        parts[2]
    );
    assert!(
        witness::proof::verify(&forged, &jwks_status).is_err(),
        "a tampered proof must not verify"
    );
    let jwk = jwks_status.keys.first().expect("a key");
    assert!(
        jsonwebtoken::decode::<Value>(
            &forged,
            &DecodingKey::from_jwk(jwk).expect("jwk"),
            &Validation::new(Algorithm::EdDSA)
        )
        .is_err(),
        "a tampered proof must not verify with jsonwebtoken either"
    );
}

#[tokio::test]
async fn every_refusal_is_clear_and_changes_no_state() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cfg = test_config(dir.path());
    cfg.limits.requests_per_second_per_identity = 20;
    let w = start_fresh(cfg).await;
    let url = w.lease_url();
    let good = lease_body("demo", "a", "a1", 0, false);
    let good_bytes = serde_json::to_vec(&good).expect("json");

    // No client certificate: the handshake completes, the request is refused with JSON.
    let (s, v, _) = post_raw(
        &anonymous_client(dir.path()),
        &format!("{url}/v1/lease"),
        good_bytes.clone(),
    )
    .await;
    assert_eq!(s, 401, "{v}");
    assert!(
        v["error"]
            .as_str()
            .expect("error")
            .contains("no client certificate"),
        "{v}"
    );

    // A certificate from another CA, and an expired one from the right CA: the handshake fails.
    let other = foreign_ca_node_a1();
    let c = client_with(
        &certs_dir(dir.path()).join("ca.pem"),
        &other.path().join("a1.pem"),
        &other.path().join("a1-key.pem"),
    );
    assert!(
        c.post(format!("{url}/v1/lease"))
            .json(&good)
            .send()
            .await
            .is_err(),
        "foreign CA must fail"
    );
    let ca = Ca::load(&certs_dir(dir.path())).expect("ca");
    let now = time::OffsetDateTime::now_utc();
    let id = proto::ids::Identity::Node {
        cluster: "demo".into(),
        room: "a".into(),
        node: "a1".into(),
    };
    ca.issue_node_with_dates(
        other.path(),
        &id,
        "expired",
        now - time::Duration::days(10),
        now - time::Duration::days(1),
    )
    .expect("expired cert");
    let c = client_with(
        &certs_dir(dir.path()).join("ca.pem"),
        &other.path().join("expired.pem"),
        &other.path().join("expired-key.pem"),
    );
    assert!(
        c.post(format!("{url}/v1/lease"))
            .json(&good)
            .send()
            .await
            .is_err(),
        "expired cert must fail"
    );

    // Right certificate, body for another room / another cluster / another node.
    let a1 = client(dir.path(), "a1");
    for (body, what) in [
        (lease_body("demo", "b", "b1", 0, false), "room b"),
        (lease_body("other", "a", "a1", 0, false), "cluster other"),
        (lease_body("demo", "a", "a2", 0, false), "node a2"),
    ] {
        let (s, v) = lease(&a1, &url, &body).await;
        assert_eq!(s, 403, "{what}: {v}");
        assert!(
            v["error"]
                .as_str()
                .expect("error")
                .contains("witness://demo/a/a1"),
            "{v}"
        );
        assert_eq!(v["reason"], "identity_mismatch");
    }

    // Malformed JSON, an unknown field, an unknown version, a missing field.
    let lease_url = format!("{url}/v1/lease");
    let (s, v, _) = post_raw(&a1, &lease_url, b"{not json".to_vec()).await;
    assert_eq!((s, v["reason"].as_str()), (400, Some("bad_request")), "{v}");
    let mut extra = good.clone();
    extra["surprise"] = json!(1);
    let (s, v, _) = post_raw(&a1, &lease_url, serde_json::to_vec(&extra).expect("json")).await;
    assert_eq!(s, 400);
    assert!(
        v["error"].as_str().expect("error").contains("surprise"),
        "names the field: {v}"
    );
    let mut v2 = good.clone();
    v2["version"] = json!(2);
    v2["new_field"] = json!(true);
    let (s, v, _) = post_raw(&a1, &lease_url, serde_json::to_vec(&v2).expect("json")).await;
    assert_eq!(
        (s, v["reason"].as_str()),
        (400, Some("unsupported_version")),
        "{v}"
    );
    assert!(
        v["error"].as_str().expect("error").contains("version 2"),
        "{v}"
    );
    let mut missing = good.clone();
    missing.as_object_mut().expect("object").remove("claim");
    let (s, v, _) = post_raw(&a1, &lease_url, serde_json::to_vec(&missing).expect("json")).await;
    assert_eq!(s, 400);
    assert!(v["error"].as_str().expect("error").contains("claim"), "{v}");

    // Oversize body.
    let big = vec![b' '; 9_000];
    let (s, v, _) = post_raw(&client(dir.path(), "a2"), &lease_url, big).await;
    assert_eq!(
        (s, v["reason"].as_str()),
        (413, Some("body_too_large")),
        "{v}"
    );

    // None of that created any state.
    let st = status(&w.status_url()).await;
    assert_eq!(st["clusters"].as_array().map(Vec::len), Some(0), "{st}");

    // Rate limit: 20 per second per identity; b1 has used none yet.
    let b1 = client(dir.path(), "b1");
    // 60 at once: far beyond the burst of 20 however slow the machine is.
    let body = serde_json::to_vec(&lease_body("demo", "b", "b1", 0, false)).expect("json");
    let answers =
        futures::future::join_all((0..60).map(|_| post_raw(&b1, &lease_url, body.clone()))).await;
    let mut limited = None;
    for (s, v, h) in answers {
        if s == 429 {
            limited = Some((v, h));
        } else {
            assert_eq!(s, 200, "{v}");
        }
    }
    let (v, h) = limited.expect("a burst beyond 20 per second is refused");
    assert_eq!(v["reason"], "rate_limited");
    assert!(h.contains_key("retry-after"));

    let m = metrics(&w.status_url()).await;
    assert!(
        sample(&m, "witness_tls_handshake_failures_total") >= 2.0,
        "{m}"
    );
    for (reason, n) in [
        ("no_client_cert", 1.0),
        ("identity_mismatch", 3.0),
        ("bad_request", 3.0),
        ("unsupported_version", 1.0),
        ("body_too_large", 1.0),
    ] {
        assert_eq!(
            sample(
                &m,
                &format!("witness_refusals_total{{reason=\"{reason}\"}}")
            ),
            n,
            "{reason}: {m}"
        );
    }
    assert!(
        sample(&m, "witness_refusals_total{reason=\"rate_limited\"}") >= 1.0,
        "{m}"
    );
    assert!(sample(&m, "witness_lease_requests_total{result=\"refused\"}") >= 10.0);
    w.stop().await.expect("clean stop");
}

#[tokio::test]
async fn admin_endpoint_refuses_node_certificates_and_audits_force_survivor() {
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

    // A node certificate on the admin endpoint: refused, state unchanged, attempt audited.
    let cmd = json!({"command": "force_survivor", "room": "a", "other_room_down": false});
    let (s, v, _) = post_raw(
        &a1,
        &format!("{url}/v1/admin/demo"),
        serde_json::to_vec(&cmd).expect("json"),
    )
    .await;
    assert_eq!(s, 403, "{v}");
    assert_eq!(v["reason"], "not_admin");
    assert_eq!(
        status(&w.status_url()).await["clusters"][0]["mode"],
        "paired"
    );

    // The operator forces room a: the mode changes, room b is fenced, and it is audited.
    let creds = witness::client::AdminCreds {
        ca: certs_dir(dir.path()).join("ca.pem"),
        cert: certs_dir(dir.path()).join(format!("{}.pem", certs::DEMO_ADMIN)),
        key: certs_dir(dir.path()).join(format!("{}-key.pem", certs::DEMO_ADMIN)),
    };
    let out = witness::client::admin(
        &url,
        &creds,
        "demo",
        &proto::wire::AdminCommand::ForceSurvivor {
            room: "a".into(),
            other_room_down: false,
        },
    )
    .await
    .expect("admin command");
    assert_eq!(out["ok"], true, "{out}");
    let st = status(&w.status_url()).await;
    assert_eq!(st["clusters"][0]["mode"], "alone", "{st}");
    assert_eq!(st["clusters"][0]["survivor"], "a");
    let (_, v) = lease(&b1, &url, &lease_body("demo", "b", "b1", 0, false)).await;
    assert_eq!(verdict(&v), "fence", "{v}");
    // Unknown clusters are not created by an operator typo.
    let e = witness::client::admin(&url, &creds, "dmeo", &proto::wire::AdminCommand::Pause).await;
    assert!(format!("{e:?}").contains("unknown"), "{e:?}");

    let audit = st["audit"].as_array().expect("audit");
    assert_eq!(audit[0]["who"], "witness-admin://admin", "{st}");
    assert_eq!(audit[0]["outcome"], "ok");
    assert_eq!(audit[0]["command"]["command"], "force_survivor");
    assert_eq!(audit[1]["who"], "witness://demo/a/a1");
    assert_eq!(audit[1]["outcome"], "refused");
    let file = std::fs::read_to_string(dir.path().join("audit.jsonl")).expect("audit file");
    assert_eq!(file.lines().count(), 3, "{file}");
    let m = metrics(&w.status_url()).await;
    assert_eq!(
        sample(
            &m,
            "witness_admin_commands_total{command=\"force_survivor\"}"
        ),
        1.0
    );
    assert_eq!(sample(&m, "witness_mode_changes_total{to=\"alone\"}"), 1.0);
    assert_eq!(
        sample(&m, "witness_room_alone{cluster=\"demo\",room=\"a\"}"),
        1.0
    );
    assert_eq!(
        sample(&m, "witness_room_alone{cluster=\"demo\",room=\"b\"}"),
        0.0
    );
    w.stop().await.expect("clean stop");
}

#[tokio::test]
async fn slow_request_headers_are_cut_off_but_an_idle_keep_alive_connection_is_kept() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cfg = test_config(dir.path());
    cfg.limits.header_timeout_ms = 300;
    cfg.limits.idle_timeout_ms = 3_000;
    let w = start_fresh(cfg).await;
    let mut tls = raw_tls(w.lease_addr, dir.path(), "a1").await;
    let body = serde_json::to_vec(&lease_body("demo", "a", "a1", 0, false)).expect("json");
    let request = [
        format!("POST /v1/lease HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n", body.len())
            .into_bytes(),
        body,
    ]
    .concat();
    let mut buf = vec![0u8; 16 * 1024];
    for round in 0..2 {
        tls.write_all(&request).await.expect("write");
        let n = tokio::time::timeout(std::time::Duration::from_secs(5), tls.read(&mut buf))
            .await
            .expect("answer in time")
            .expect("read");
        let text = String::from_utf8_lossy(&buf[..n]);
        assert!(text.starts_with("HTTP/1.1 200"), "round {round}: {text}");
        // Idle longer than the header timeout, shorter than the idle timeout: kept open.
        tokio::time::sleep(std::time::Duration::from_millis(600)).await;
    }
    // Half a request head, then nothing: cut off after the header timeout.
    tls.write_all(b"POST /v1/lease HTTP/1.1\r\nHost: localhost\r\n")
        .await
        .expect("write");
    let t0 = tokio::time::Instant::now();
    let r = tokio::time::timeout(std::time::Duration::from_secs(5), tls.read(&mut buf))
        .await
        .expect("the witness closes the connection");
    assert!(matches!(r, Ok(0) | Err(_)), "{r:?}");
    assert!(
        t0.elapsed() >= std::time::Duration::from_millis(250),
        "{:?}",
        t0.elapsed()
    );
    let m = metrics(&w.status_url()).await;
    assert_eq!(
        sample(&m, "witness_refusals_total{reason=\"header_timeout\"}"),
        1.0,
        "{m}"
    );
    w.stop().await.expect("stop");
}
