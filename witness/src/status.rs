//! The status port (plain HTTP, meant for loopback or a management network): a small human
//! page at `/`, the same facts as JSON at `/v1/status`, Prometheus metrics at `/metrics`, the
//! probes `/healthz` (process alive) and `/readyz` (store open, TLS loaded), and the JWKS.
use crate::clusters::ClusterStatus;
use crate::server::App;
use axum::extract::{Query, State};
use axum::http::{header, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;
use std::fmt::Write;
use std::sync::Arc;

/// The status port's routes.
pub fn router(app: Arc<App>) -> Router {
    Router::new()
        .route("/", get(page))
        .route("/v1/status", get(status_json))
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/v1/jwks", get(crate::api::jwks))
        .fallback(not_found)
        .with_state(app)
}

async fn not_found() -> Response {
    (
        StatusCode::NOT_FOUND,
        Json(serde_json::json!({
            "error": "no such page: try /, /v1/status, /metrics, /healthz, /readyz or /v1/jwks"
        })),
    )
        .into_response()
}

/// Facts about the witness process itself.
#[derive(Clone, Debug, Serialize, serde::Deserialize)]
pub struct WitnessInfo {
    pub version: String,
    pub started_at: String,
    pub uptime_s: u64,
    pub lease_listen: String,
    pub status_listen: String,
    pub data_dir: String,
    /// `intact` or `lost_state` (empty or wiped store at start).
    pub store_origin: String,
    /// While the store's lost state may still hide leases: unknown clusters are recovered.
    pub lost_state_window_ms_left: Option<u64>,
    pub clusters_loaded: usize,
    pub server_cert_expires_in_s: i64,
    pub ca_cert_expires_in_s: i64,
    pub tls_ca: String,
    pub tls_cert: String,
    pub proof_kid: String,
    pub audit_log: String,
}

/// `/v1/status`.
#[derive(Clone, Debug, Serialize, serde::Deserialize)]
pub struct StatusDoc {
    pub witness: WitnessInfo,
    pub clusters: Vec<ClusterStatus>,
    /// The newest operator commands, newest first.
    pub audit: Vec<serde_json::Value>,
}

/// `?cluster=NAME` narrows the status to one cluster.
#[derive(Debug, Default, serde::Deserialize)]
pub struct StatusQuery {
    pub cluster: Option<String>,
}

/// Clusters shown in full on the HTML page; beyond this only clusters with alarms are listed.
const HTML_MAX_CLUSTERS: usize = 200;

pub async fn build(app: &App) -> StatusDoc {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let tls = app.tls.current();
    StatusDoc {
        witness: WitnessInfo {
            version: env!("CARGO_PKG_VERSION").to_string(),
            started_at: app.started_at.clone(),
            uptime_s: app.started.elapsed().as_secs(),
            lease_listen: app.lease_addr.to_string(),
            status_listen: app.status_addr.to_string(),
            data_dir: app.config.data_dir.display().to_string(),
            store_origin: if app.lost_state {
                "lost_state"
            } else {
                "intact"
            }
            .into(),
            lost_state_window_ms_left: app.table.lost_window_left(),
            clusters_loaded: app.table.cluster_count(),
            server_cert_expires_in_s: tls.server_not_after - now,
            ca_cert_expires_in_s: tls.ca_not_after - now,
            tls_ca: app.config.tls.ca.display().to_string(),
            tls_cert: app.config.tls.cert.display().to_string(),
            proof_kid: app.proof.kid().to_string(),
            audit_log: app.audit.path().display().to_string(),
        },
        clusters: app.table.snapshot().await,
        audit: app.audit.recent(20),
    }
}

fn filtered(mut doc: StatusDoc, q: &StatusQuery) -> StatusDoc {
    if let Some(c) = &q.cluster {
        doc.clusters.retain(|s| &s.cluster == c);
        doc.audit
            .retain(|a| a.get("cluster").and_then(|v| v.as_str()) == Some(c.as_str()));
    }
    doc
}

async fn status_json(State(app): State<Arc<App>>, Query(q): Query<StatusQuery>) -> Response {
    Json(filtered(build(&app).await, &q)).into_response()
}

async fn metrics(State(app): State<Arc<App>>) -> Response {
    app.table.refresh_age_gauges();
    app.metrics.uptime.set(app.started.elapsed().as_secs_f64());
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        app.metrics.render(),
    )
        .into_response()
}

async fn healthz() -> Response {
    (StatusCode::OK, "ok\n").into_response()
}

async fn readyz(State(app): State<Arc<App>>) -> Response {
    let store = app.table.store().healthy();
    let tls = app.tls.current().server_not_after > 0;
    let ready = store && tls;
    let code = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        code,
        Json(serde_json::json!({"ready": ready, "store_open": store, "tls_loaded": tls})),
    )
        .into_response()
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn secs(ms: Option<u64>) -> String {
    match ms {
        Some(ms) => format!("{:.1} s ago", ms as f64 / 1000.0),
        None => "never".into(),
    }
}

/// Renders the status document as a small HTML page (refreshes itself every 5 s).
pub fn render_html(doc: &StatusDoc) -> String {
    let w = &doc.witness;
    let mut h = String::new();
    let _ = write!(
        h,
        "<!doctype html><html><head><meta charset=\"utf-8\"><meta http-equiv=\"refresh\" content=\"5\">\
         <title>witness</title><style>\
         body{{font-family:system-ui,sans-serif;margin:1.5em;color:#222}}\
         table{{border-collapse:collapse;margin:.5em 0 1.5em}}td,th{{border:1px solid #ccc;padding:.25em .6em;text-align:left}}\
         th{{background:#f3f3f3}}.alarm{{color:#a00;font-weight:600}}.ok{{color:#070}}\
         .mode-alone,.mode-releasing{{background:#fff3cd}}.mode-recovering{{background:#f8d7da}}\
         small{{color:#666}}</style></head><body>\
         <h1>Witness</h1><p>version {} &middot; up {} s &middot; lease API {} &middot; store {} &middot; \
         server certificate expires in {} days &middot; CA in {} days</p>",
        esc(&w.version),
        w.uptime_s,
        esc(&w.lease_listen),
        if w.store_origin == "intact" { "intact" } else { "was empty at start (lost state)" },
        w.server_cert_expires_in_s / 86_400,
        w.ca_cert_expires_in_s / 86_400
    );
    if let Some(ms) = w.lost_state_window_ms_left {
        let _ = write!(
            h,
            "<p class=\"alarm\">The store was empty at start (first install or lost disk): clusters that call in the next {:.1} s wait out leases this witness may have forgotten.</p>",
            ms as f64 / 1000.0
        );
    }
    let _ = write!(h, "<h2>Clusters ({})</h2>", doc.clusters.len());
    if doc.clusters.is_empty() {
        h.push_str("<p>No cluster has called yet.</p>");
    }
    for c in &doc.clusters {
        let _ = write!(
            h,
            "<h3>{}</h3><table><tr><th>mode</th><th>who may act alone</th><th>epoch</th><th>takeover</th><th>preferred room</th><th>auto rejoin</th><th>paused</th></tr>\
             <tr class=\"mode-{}\"><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr></table>",
            esc(&c.cluster),
            esc(&c.mode),
            esc(&c.mode),
            esc(&c.summary),
            c.epoch,
            match c.takeover_allowed_in_ms {
                None => "-".to_string(),
                Some(0) => "allowed".to_string(),
                Some(ms) => format!("in {:.1} s", ms as f64 / 1000.0),
            },
            esc(c.preferred_room.as_deref().unwrap_or("-")),
            c.auto_rejoin,
            c.paused
        );
        if c.alarms.is_empty() {
            h.push_str("<p class=\"ok\">no alarms</p>");
        } else {
            h.push_str("<ul>");
            for a in &c.alarms {
                let _ = write!(h, "<li class=\"alarm\">{}</li>", esc(a));
            }
            h.push_str("</ul>");
        }
        h.push_str(
            "<table><tr><th>room</th><th>node</th><th>last seen</th><th>phase</th><th>epoch</th>\
             <th>peer contact</th><th>peer reachable</th><th>claim</th><th>takeover</th><th>last verdict</th></tr>",
        );
        for r in &c.rooms {
            if r.nodes.is_empty() {
                let _ = write!(
                    h,
                    "<tr><td>{}{}</td><td colspan=\"9\">no node has called ({})</td></tr>",
                    esc(&r.room),
                    if r.alone { " (alone)" } else { "" },
                    secs(r.last_seen_ms_ago)
                );
            }
            for n in &r.nodes {
                let _ = write!(
                    h,
                    "<tr><td>{}{}</td><td>{}</td><td>{}</td><td>{:?}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                    esc(&r.room),
                    if r.alone { " (alone)" } else { "" },
                    esc(&n.node),
                    secs(Some(n.last_seen_ms_ago)),
                    n.phase,
                    n.epoch,
                    n.peer_contact,
                    n.peer_reachable,
                    n.claim,
                    n.takeover,
                    esc(n.last_verdict.as_deref().unwrap_or("-"))
                );
            }
        }
        h.push_str("</table>");
    }
    h.push_str("<h2>Operator commands (newest first)</h2>");
    if doc.audit.is_empty() {
        h.push_str("<p>none</p>");
    } else {
        h.push_str("<table><tr><th>when</th><th>who</th><th>cluster</th><th>command</th><th>outcome</th><th>message</th></tr>");
        for a in &doc.audit {
            let f = |k: &str| {
                a.get(k)
                    .map(|v| match v {
                        serde_json::Value::String(s) => s.clone(),
                        other => other.to_string(),
                    })
                    .unwrap_or_default()
            };
            let _ = write!(
                h,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                esc(&f("at")),
                esc(&f("who")),
                esc(&f("cluster")),
                esc(&f("command")),
                esc(&f("outcome")),
                esc(&f("message"))
            );
        }
        h.push_str("</table>");
    }
    h.push_str("<p><small><a href=\"/v1/status\">JSON</a> &middot; <a href=\"/metrics\">metrics</a> &middot; <a href=\"/v1/jwks\">JWKS</a></small></p></body></html>");
    h
}

async fn page(State(app): State<Arc<App>>, Query(q): Query<StatusQuery>) -> Response {
    let mut doc = filtered(build(&app).await, &q);
    let total = doc.clusters.len();
    let mut note = String::new();
    if total > HTML_MAX_CLUSTERS {
        doc.clusters.retain(|c| !c.alarms.is_empty());
        doc.clusters.truncate(HTML_MAX_CLUSTERS);
        note = format!(
            "<p><small>{total} clusters: showing {} with alarms; use <code>/?cluster=NAME</code> or <code>/v1/status</code> for the rest.</small></p>",
            doc.clusters.len()
        );
    }
    let html = render_html(&doc).replacen("<h2>Clusters", &format!("{note}<h2>Clusters"), 1);
    Html(html).into_response()
}
