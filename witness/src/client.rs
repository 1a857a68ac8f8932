//! The command-line clients of a running witness: `witness status` (reads the status port) and
//! `witness admin` (sends an operator command over mutual TLS with an admin certificate).
use crate::view::StatusDoc;
use proto::wire::AdminCommand;
use std::path::{Path, PathBuf};
use std::time::Duration;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum ClientError {
    #[error("cannot read {path}: {source}; pass --ca/--cert/--key or --data-dir pointing at the admin certificate")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{what}: {source}")]
    Http {
        what: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("the witness answered {status}: {body}")]
    Refused { status: u16, body: String },
    #[error("the answer is not what a witness sends: {0}")]
    Decode(String),
}

/// Fetches `/v1/status` as JSON.
pub async fn fetch_status(
    url: &str,
    cluster: Option<&str>,
) -> Result<serde_json::Value, ClientError> {
    let mut u = format!("{}/v1/status", url.trim_end_matches('/'));
    if let Some(c) = cluster {
        proto::ids::check_name("cluster", c).map_err(ClientError::Decode)?;
        u.push_str(&format!("?cluster={c}"));
    }
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .map_err(|source| ClientError::Http {
            what: "cannot build an HTTP client".into(),
            source,
        })?;
    let r = http.get(&u).send().await.map_err(|source| ClientError::Http {
        what: format!("cannot reach the witness status port at {u} (is `witness serve` running? see status_listen)"),
        source,
    })?;
    json_answer(r).await
}

/// Renders the status document as a table for a terminal.
pub fn render_table(v: &serde_json::Value) -> Result<String, ClientError> {
    let doc: StatusDoc =
        serde_json::from_value(v.clone()).map_err(|e| ClientError::Decode(e.to_string()))?;
    let w = &doc.witness;
    let mut s = String::new();
    s.push_str(&format!(
        "witness {} up {} s, lease API {}, store {}, {} cluster(s) loaded\n",
        w.version, w.uptime_s, w.lease_listen, w.store_origin, w.clusters_loaded
    ));
    s.push_str(&format!(
        "server certificate expires in {} days, CA in {} days\n",
        w.server_cert_expires_in_s / 86_400,
        w.ca_cert_expires_in_s / 86_400
    ));
    if let Some(ms) = w.lost_state_window_ms_left {
        s.push_str(&format!(
            "ALARM: store was empty at start; unknown clusters wait {:.1} s more\n",
            ms as f64 / 1000.0
        ));
    }
    s.push('\n');
    s.push_str(&format!(
        "{:<20} {:<11} {:>6}  {:<8} {:<6} {:<10} {:<12} {}\n",
        "CLUSTER", "MODE", "EPOCH", "ALONE", "ROOM", "NODE", "LAST SEEN", "LAST VERDICT"
    ));
    for c in &doc.clusters {
        let alone = c.survivor.clone().unwrap_or_else(|| "-".into());
        let mut first = true;
        let head = |first: bool| {
            if first {
                format!(
                    "{:<20} {:<11} {:>6}  {:<8}",
                    c.cluster, c.mode, c.epoch, alone
                )
            } else {
                format!("{:<20} {:<11} {:>6}  {:<8}", "", "", "", "")
            }
        };
        for r in &c.rooms {
            if r.nodes.is_empty() {
                s.push_str(&format!(
                    "{} {:<6} {:<10} {:<12} -\n",
                    head(first),
                    r.room,
                    "-",
                    "never"
                ));
                first = false;
            }
            for n in &r.nodes {
                s.push_str(&format!(
                    "{} {:<6} {:<10} {:<12} {}\n",
                    head(first),
                    r.room,
                    n.node,
                    format!("{:.1}s ago", n.last_seen_ms_ago as f64 / 1000.0),
                    n.last_verdict.map(|v| v.as_str()).unwrap_or("-")
                ));
                first = false;
            }
        }
        if first {
            s.push_str(&format!("{}\n", head(true)));
        }
        for a in &c.alarms {
            s.push_str(&format!("{:<20} ALARM: {a}\n", ""));
        }
    }
    if !doc.audit.is_empty() {
        s.push_str("\nrecent operator commands:\n");
        for a in doc.audit.iter().take(10) {
            let f = |k: &str| a.get(k).map(|v| v.to_string()).unwrap_or_default();
            s.push_str(&format!(
                "  {} {} {} {} {} {}\n",
                f("at"),
                f("who"),
                f("cluster"),
                f("command"),
                f("outcome"),
                f("message")
            ));
        }
    }
    Ok(s)
}

/// The admin client's TLS material.
pub struct AdminCreds {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

fn read(p: &Path) -> Result<Vec<u8>, ClientError> {
    std::fs::read(p).map_err(|source| ClientError::Read {
        path: p.to_path_buf(),
        source,
    })
}

/// A reqwest client presenting a client certificate and trusting only `ca` (TLS 1.3).
pub fn mtls_client(ca: &Path, cert: &Path, key: &Path) -> Result<reqwest::Client, ClientError> {
    let ca_pem = read(ca)?;
    let mut id_pem = read(cert)?;
    id_pem.extend_from_slice(b"\n");
    id_pem.extend(read(key)?);
    let build = |what: &str, source| ClientError::Http {
        what: what.to_string(),
        source,
    };
    let ca_cert = reqwest::Certificate::from_pem(&ca_pem)
        .map_err(|e| build("the CA file is not a PEM certificate", e))?;
    let identity = reqwest::Identity::from_pem(&id_pem)
        .map_err(|e| build("the certificate and key are not a usable PEM identity", e))?;
    reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(ca_cert)
        .identity(identity)
        .min_tls_version(reqwest::tls::Version::TLS_1_3)
        .timeout(Duration::from_secs(15))
        .build()
        .map_err(|e| build("cannot build the TLS client", e))
}

/// Sends one admin command; returns the witness's JSON answer.
pub async fn admin(
    url: &str,
    creds: &AdminCreds,
    cluster: &str,
    cmd: &AdminCommand,
) -> Result<serde_json::Value, ClientError> {
    let http = mtls_client(&creds.ca, &creds.cert, &creds.key)?;
    let u = format!("{}/v1/admin/{cluster}", url.trim_end_matches('/'));
    let r = http.post(&u).json(cmd).send().await.map_err(|source| ClientError::Http {
        what: format!("cannot reach the witness lease API at {u} (is it running, and is --ca the witness CA?)"),
        source,
    })?;
    json_answer(r).await
}

/// Reads a witness answer: the JSON document on success, else the status and body it refused with.
async fn json_answer(r: reqwest::Response) -> Result<serde_json::Value, ClientError> {
    let status = r.status();
    let body = r.text().await.map_err(|source| ClientError::Http {
        what: "cannot read the answer".into(),
        source,
    })?;
    if !status.is_success() {
        return Err(ClientError::Refused {
            status: status.as_u16(),
            body,
        });
    }
    serde_json::from_str(&body).map_err(|e| ClientError::Decode(e.to_string()))
}
