//! The status port (plain HTTP, meant for loopback or a management network): the fleet page
//! at `/` and a page per cluster at `/cluster/NAME` (rendered in [`crate::page`]), the same
//! facts as JSON at `/v1/status` and `/v1/timeline?cluster=NAME`, Prometheus metrics at
//! `/metrics`, the probes `/healthz` (process alive) and `/readyz` (store open, TLS loaded), and
//! the JWKS.
use crate::app::App;
use crate::page::{self, FleetQuery};
use crate::store::StoreOrigin;
use crate::view::{AlarmKind, StatusDoc, WitnessInfo};
use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::{Json, Router};
use proto::ClusterId;
use std::sync::Arc;
use std::time::Duration;

/// The status port's routes.
pub fn router(app: Arc<App>) -> Router {
    Router::new()
        .route("/", get(fleet_page))
        .route("/cluster/{name}", get(cluster_page))
        .route("/v1/status", get(status_json))
        .route("/v1/timeline", get(timeline_json))
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
            "error": "no such page: try /, /cluster/NAME, /v1/status, /v1/timeline?cluster=NAME, /metrics, /healthz, /readyz or /v1/jwks"
        })),
    )
        .into_response()
}

/// `?cluster=NAME` narrows the status to one cluster.
#[derive(Debug, Default, serde::Deserialize)]
pub struct StatusQuery {
    pub cluster: Option<String>,
}

/// Facts about the witness itself, for the pages and `/v1/status`.
pub fn build_info(app: &App) -> WitnessInfo {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let tls = app.tls.current();
    WitnessInfo {
        version: env!("CARGO_PKG_VERSION").to_string(),
        started_at: app.started_at.clone(),
        uptime_s: app.started.elapsed().as_secs(),
        lease_listen: app.lease_addr.to_string(),
        status_listen: app.status_addr.to_string(),
        data_dir: app.config.data_dir.display().to_string(),
        store_origin: if app.lost_state {
            StoreOrigin::LostState
        } else {
            StoreOrigin::Intact
        },
        lost_state_window_ms_left: app.table.lost_window_left(),
        lost_state_wait_ms: app
            .lost_state
            .then(|| app.config.max_forgotten_state_wait_ms()),
        clusters_loaded: app.table.cluster_count(),
        server_cert_expires_in_s: tls.server_not_after - now,
        ca_cert_expires_in_s: tls.ca_not_after - now,
        tls_ca: app.config.tls.ca.display().to_string(),
        tls_cert: app.config.tls.cert.display().to_string(),
        proof_kid: app.proof.kid().to_string(),
        audit_log: app.audit.path().display().to_string(),
    }
}

pub async fn build(app: &App) -> StatusDoc {
    StatusDoc {
        witness: build_info(app),
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
    // Alarm counts by kind (a handful of series whatever the fleet's size): what the
    // alerts need to say "some cluster has a silent node" without a series per node.
    let mut counts = std::collections::BTreeMap::new();
    for c in app.table.snapshot().await {
        let mut kinds = c.alarm_kinds.clone();
        kinds.sort_unstable();
        kinds.dedup();
        for k in kinds {
            *counts.entry(k).or_insert(0i64) += 1;
        }
    }
    for k in AlarmKind::ALL {
        app.metrics
            .cluster_alarms
            .with_label_values(&[k.as_str()])
            .set(counts.get(&k).copied().unwrap_or(0));
    }
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

async fn fleet_page(State(app): State<Arc<App>>, Query(q): Query<FleetQuery>) -> Response {
    if let Some(c) = q.cluster.as_deref().filter(|c| !c.is_empty()) {
        return Redirect::to(&format!("/cluster/{}", page::esc(c))).into_response();
    }
    let doc = build(&app).await;
    Html(page::fleet(&doc, &q)).into_response()
}

/// `?window=SECONDS` on the cluster page (default: the last hour).
#[derive(Debug, Default, serde::Deserialize)]
pub struct WindowQuery {
    pub window: Option<String>,
}

fn window_ms(q: &WindowQuery) -> u64 {
    q.window
        .as_deref()
        .and_then(|w| w.trim().parse::<u64>().ok())
        .map(|s| s.saturating_mul(1000))
        .filter(|ms| *ms > 0)
        .unwrap_or(crate::history::WINDOW_MS)
        .clamp(10_000, crate::history::WINDOW_MS)
}

fn unknown_cluster(name: &str) -> Response {
    (
        StatusCode::NOT_FOUND,
        Html(format!(
            "<!doctype html><html><body><p>No cluster <b>{}</b> has called this witness since it started. \
             Check the name on the <a href=\"/\">fleet page</a>.</p></body></html>",
            page::esc(name)
        )),
    )
        .into_response()
}

async fn cluster_page(
    State(app): State<Arc<App>>,
    Path(name): Path<String>,
    Query(q): Query<WindowQuery>,
) -> Response {
    let win = window_ms(&q);
    let Some(t) = app.table.timeline(&ClusterId::new(name.clone()), win).await else {
        return unknown_cluster(&name);
    };
    let doc = build_info(&app);
    let mut audit = app.audit.recent(200);
    audit.retain(|a| a.get("cluster").and_then(|v| v.as_str()) == Some(name.as_str()));
    audit.truncate(20);
    Html(page::cluster(&doc, &t, &audit, win, unix_ms())).into_response()
}

async fn timeline_json(State(app): State<Arc<App>>, Query(q): Query<TimelineQuery>) -> Response {
    let win = window_ms(&WindowQuery {
        window: q.window.clone(),
    });
    match app.table.timeline(&ClusterId::new(q.cluster.clone()), win).await {
        Some(t) => Json(t).into_response(),
        None => (
            StatusCode::NOT_FOUND,
            Json(serde_json::json!({
                "error": format!("no cluster {} has called this witness since it started; see /v1/status for the names", q.cluster)
            })),
        )
            .into_response(),
    }
}

/// `/v1/timeline?cluster=NAME&window=SECONDS`.
#[derive(Debug, serde::Deserialize)]
pub struct TimelineQuery {
    pub cluster: String,
    pub window: Option<String>,
}

fn unix_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Says on the console, once a second, why nothing is granted while the forgotten-state wait
/// of an empty store runs, and when it is over. Ends with the wait (or with `stop`).
pub async fn lost_state_countdown(app: Arc<App>, mut stop: tokio::sync::watch::Receiver<bool>) {
    if !app.lost_state {
        return;
    }
    loop {
        match app.table.lost_window_left() {
            Some(ms) => tracing::warn!(
                seconds_left = format!("{:.0}", (ms as f64 / 1000.0).ceil()),
                "forgotten-state wait: nothing is granted for {:.0} s more (the store was empty at start, \
                 so leases this witness may have granted before must run out first; it ends by itself)",
                (ms as f64 / 1000.0).ceil()
            ),
            None => {
                tracing::info!("forgotten-state wait over: clusters are granted normally from now on");
                return;
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = stop.changed() => return,
        }
    }
}
