//! Certificate reload without restart: a replaced server certificate is presented to new
//! connections, a replaced CA file changes which client certificates are accepted, and a
//! broken file keeps the configuration in use (counted in a metric).
mod common;

use common::*;
use rustls_pki_types::{CertificateDer, ServerName};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use witness::certs::{self, Ca, Validity};

fn pem_certs(p: &Path) -> Vec<CertificateDer<'static>> {
    let pem = std::fs::read(p).expect("pem");
    rustls_pemfile::certs(&mut pem.as_slice())
        .collect::<Result<_, _>>()
        .expect("certs")
}

/// The server certificate a new TLS 1.3 connection is shown (client auth with `name`).
async fn presented_cert(
    addr: std::net::SocketAddr,
    data: &Path,
    name: &str,
) -> Option<CertificateDer<'static>> {
    let d = certs_dir(data);
    let mut roots = rustls::RootCertStore::empty();
    for c in pem_certs(&d.join("ca.pem")) {
        roots.add(c).ok()?;
    }
    let key_pem = std::fs::read(d.join(format!("{name}-key.pem"))).ok()?;
    let key = rustls_pemfile::private_key(&mut key_pem.as_slice()).ok()??;
    let cfg = rustls::ClientConfig::builder_with_provider(witness::tls::provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .ok()?
        .with_root_certificates(roots)
        .with_client_auth_cert(pem_certs(&d.join(format!("{name}.pem"))), key)
        .ok()?;
    let tcp = tokio::net::TcpStream::connect(addr).await.ok()?;
    let tls = tokio_rustls::TlsConnector::from(Arc::new(cfg))
        .connect(ServerName::try_from("localhost").ok()?, tcp)
        .await
        .ok()?;
    tls.get_ref().1.peer_certificates()?.first().cloned()
}

#[tokio::test]
async fn replaced_server_certificate_and_ca_are_used_by_new_connections_without_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let w = start_fresh(test_config(dir.path())).await;
    let d = certs_dir(dir.path());
    let first = pem_certs(&d.join("server.pem"))[0].clone();
    assert_eq!(
        presented_cert(w.lease_addr, dir.path(), "a1").await,
        Some(first.clone())
    );

    // A new server certificate from the same CA (e.g. renewed, with a new name).
    let ca = Ca::load(&d).expect("ca");
    ca.issue_server(
        &d,
        &["witness.example.org".into()],
        Validity { days: 30 },
        true,
    )
    .expect("new server cert");
    let second = pem_certs(&d.join("server.pem"))[0].clone();
    assert_ne!(first, second);
    eventually(
        Duration::from_secs(5),
        "the new server certificate is presented",
        || async {
            (presented_cert(w.lease_addr, dir.path(), "a1")
                .await
                .as_ref()
                == Some(&second))
            .then_some(())
        },
    )
    .await;

    // A node certificate from a new CA is refused until the CA file is replaced.
    let new_ca_dir = tempfile::tempdir().expect("tempdir");
    certs::create_ca(new_ca_dir.path(), "new CA", Validity { days: 30 }, false).expect("ca2");
    let ca2 = Ca::load(new_ca_dir.path()).expect("ca2");
    ca2.issue_node(
        new_ca_dir.path(),
        "demo",
        "a",
        "a1",
        &[],
        None,
        Validity { days: 30 },
        false,
    )
    .expect("node from ca2");
    // The client trusts the server through the old CA (the server certificate is unchanged).
    let new_client = || {
        client_with(
            &d.join("ca.pem.old"),
            &new_ca_dir.path().join("a1.pem"),
            &new_ca_dir.path().join("a1-key.pem"),
        )
    };
    std::fs::copy(d.join("ca.pem"), d.join("ca.pem.old")).expect("keep old ca");
    let body = lease_body("demo", "a", "a1", 0, false);
    assert!(new_client()
        .post(format!("{}/v1/lease", w.lease_url()))
        .json(&body)
        .send()
        .await
        .is_err());
    let ca2_pem = std::fs::read(new_ca_dir.path().join("ca.pem")).expect("ca2 pem");
    certs::write_file(&d.join("ca.pem"), &ca2_pem, false, true).expect("replace ca");
    eventually(
        Duration::from_secs(5),
        "a client certificate from the new CA is accepted",
        || async {
            let r = new_client()
                .post(format!("{}/v1/lease", w.lease_url()))
                .json(&body)
                .send()
                .await;
            matches!(r, Ok(r) if r.status() == 200).then_some(())
        },
    )
    .await;
    // ... and one from the old CA no longer is.
    let old = client_with(
        &d.join("ca.pem.old"),
        &d.join("a1.pem"),
        &d.join("a1-key.pem"),
    );
    assert!(old
        .post(format!("{}/v1/lease", w.lease_url()))
        .json(&body)
        .send()
        .await
        .is_err());

    // A broken server certificate file keeps the configuration in use.
    let before = sample(
        &metrics(&w.status_url()).await,
        "witness_tls_reloads_total{result=\"error\"}",
    );
    certs::write_file(
        &d.join("server.pem"),
        b"-----BEGIN CERTIFICATE-----\nnot base64\n",
        false,
        true,
    )
    .expect("break cert");
    eventually(
        Duration::from_secs(5),
        "the failed reload is counted",
        || async {
            let m = metrics(&w.status_url()).await;
            (sample(&m, "witness_tls_reloads_total{result=\"error\"}") > before).then_some(())
        },
    )
    .await;
    let r = new_client()
        .post(format!("{}/v1/lease", w.lease_url()))
        .json(&body)
        .send()
        .await
        .expect("still serving with the previous configuration");
    assert_eq!(r.status(), 200);
    let ready = plain()
        .get(format!("{}/readyz", w.status_url()))
        .send()
        .await
        .expect("readyz");
    assert_eq!(ready.status(), 200);
    w.stop().await.expect("stop");
}
