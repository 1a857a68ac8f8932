//! The lease port's HTTP API (served over mutual TLS): `POST /v1/lease`, `POST
//! /v1/admin/{cluster}` and `GET /v1/jwks`.
//!
//! Every request is checked in this order, and refused before any cluster state is read or
//! changed: client certificate present and carrying a witness identity, the right kind of
//! identity for the endpoint, the identity's request rate, the body size, the JSON (version
//! first, then fields), and for leases that the body names exactly the certificate's cluster,
//! room and node. Refusals are JSON `{"error": "...", "reason": "..."}`.
use crate::app::{App, Peer, PeerIdentity, ValidIdentity};
use crate::audit::AuditEntry;
use crate::clusters::TableError;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use proto::ids::Identity;
use proto::wire::{check_version, AdminCommand, LeaseMode, LeaseRequest, TakeoverPermit, Verdict};
use proto::ClusterId;
use serde_json::json;
use std::sync::Arc;

/// A refusal: status, metric reason, message.
pub struct Refusal {
    pub status: StatusCode,
    pub reason: &'static str,
    pub message: String,
    pub retry_after_s: Option<u64>,
}

impl Refusal {
    pub fn new(status: StatusCode, reason: &'static str, message: impl Into<String>) -> Refusal {
        Refusal {
            status,
            reason,
            message: message.into(),
            retry_after_s: None,
        }
    }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let mut r = (
            self.status,
            Json(json!({"error": self.message, "reason": self.reason})),
        )
            .into_response();
        if let Some(s) = self.retry_after_s {
            if let Ok(v) = HeaderValue::from_str(&s.to_string()) {
                r.headers_mut().insert(header::RETRY_AFTER, v);
            }
        }
        if matches!(
            self.status,
            StatusCode::TOO_MANY_REQUESTS
                | StatusCode::PAYLOAD_TOO_LARGE
                | StatusCode::UNAUTHORIZED
                | StatusCode::FORBIDDEN
        ) {
            // Refused before (or while) the body was read: the server cannot reuse the
            // connection, so it says so rather than leave the client's next request to an EOF.
            r.headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        r
    }
}

/// The lease port's routes.
pub fn router(app: Arc<App>) -> Router {
    Router::new()
        .route("/v1/lease", post(lease))
        .route("/v1/admin/{cluster}", post(admin))
        .route("/v1/jwks", get(jwks))
        .fallback(not_found)
        .with_state(app)
}

pub async fn not_found() -> Response {
    Refusal::new(
        StatusCode::NOT_FOUND,
        "not_found",
        "no such endpoint: the lease API is POST /v1/lease, POST /v1/admin/{cluster} and GET /v1/jwks",
    )
    .into_response()
}

pub async fn jwks(State(app): State<Arc<App>>) -> Response {
    Json(app.proof.jwks().clone()).into_response()
}

fn table_refusal(e: TableError) -> Refusal {
    match e {
        TableError::UnknownCluster(_) => Refusal::new(StatusCode::NOT_FOUND, "unknown_cluster", e.to_string()),
        TableError::Store(_) | TableError::TooManyClusters(..) => Refusal {
            retry_after_s: Some(1),
            ..Refusal::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                format!("the witness cannot answer durably right now: {e}; nothing was granted, ask again"),
            )
        },
        TableError::Internal(_) => Refusal::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()),
        TableError::Refused(reason) => Refusal::new(StatusCode::CONFLICT, "epoch_out_of_range", format!("{reason}; nothing was changed or granted")),
    }
}

/// Reads the body, refusing one larger than the limit. A lease request arrives in one frame,
/// which is returned as it is (no copy); only a body in several frames is gathered.
async fn read_body(app: &App, body: Body) -> Result<bytes::Bytes, Refusal> {
    use futures::StreamExt;
    let limit = app.config.limits.body_limit_bytes;
    let too_large = || {
        Refusal::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            format!("request body is larger than {limit} bytes (limits.body_limit_bytes)"),
        )
    };
    let mut frames = body.into_data_stream();
    let mut whole: Option<bytes::Bytes> = None;
    let mut gathered: Option<bytes::BytesMut> = None;
    let mut len = 0usize;
    while let Some(frame) = frames.next().await {
        let data = frame.map_err(|e| {
            Refusal::new(
                StatusCode::BAD_REQUEST,
                "bad_request",
                format!("cannot read the request body: {e}"),
            )
        })?;
        len = len.saturating_add(data.len());
        if len > limit {
            return Err(too_large());
        }
        match (whole.take(), gathered.as_mut()) {
            (None, None) => whole = Some(data),
            (Some(first), None) => {
                let mut g = bytes::BytesMut::with_capacity(len);
                g.extend_from_slice(&first);
                g.extend_from_slice(&data);
                gathered = Some(g);
            }
            (_, Some(g)) => g.extend_from_slice(&data),
        }
    }
    Ok(match gathered {
        Some(g) => g.freeze(),
        None => whole.unwrap_or_default(),
    })
}

/// Parses a versioned JSON body: the version is checked before any other field, so a newer
/// agent is told about the version, not about a field it added. Public for the fuzz targets.
///
/// A well-formed body is parsed once, straight into `T` (the hot path of every renewal): in the
/// plain form agents send by [`Versioned::from_json_plain`], else by `serde_json`, which reads
/// the same message from the same text; only a body that does not parse is read again as a
/// generic JSON value, to say what is wrong in the order above (version first).
pub fn parse_versioned<T: serde::de::DeserializeOwned + Versioned>(
    raw: &[u8],
    what: &str,
) -> Result<T, Refusal> {
    if let Some(t) = T::from_json_plain(raw).or_else(|| serde_json::from_slice::<T>(raw).ok()) {
        check_version(t.version())
            .map_err(|e| Refusal::new(StatusCode::BAD_REQUEST, "unsupported_version", e))?;
        return Ok(t);
    }
    let v: serde_json::Value = serde_json::from_slice(raw).map_err(|e| {
        Refusal::new(
            StatusCode::BAD_REQUEST,
            "bad_request",
            format!("{what} is not valid JSON: {e}"),
        )
    })?;
    let obj = v.as_object().ok_or_else(|| {
        Refusal::new(
            StatusCode::BAD_REQUEST,
            "bad_request",
            format!("{what} must be a JSON object"),
        )
    })?;
    let version = obj.get("version").ok_or_else(|| {
        Refusal::new(
            StatusCode::BAD_REQUEST,
            "bad_request",
            format!("{what}: missing field `version`"),
        )
    })?;
    let version = version
        .as_u64()
        .and_then(|n| u32::try_from(n).ok())
        .ok_or_else(|| {
            Refusal::new(
                StatusCode::BAD_REQUEST,
                "bad_request",
                format!("{what}: field `version` must be a small unsigned integer, got {version}"),
            )
        })?;
    check_version(version)
        .map_err(|e| Refusal::new(StatusCode::BAD_REQUEST, "unsupported_version", e))?;
    serde_json::from_value(v).map_err(|e| {
        Refusal::new(
            StatusCode::BAD_REQUEST,
            "bad_request",
            format!("{what} is malformed: {e}"),
        )
    })
}

/// A wire message that carries its `version`, so [`parse_versioned`] can check it after
/// parsing the body straight into the message.
pub trait Versioned: Sized {
    fn version(&self) -> u32;

    /// Reads the message without serde when it is in the plain form (`None` otherwise): what it
    /// returns must be what `serde_json` returns for the same text.
    fn from_json_plain(_raw: &[u8]) -> Option<Self> {
        None
    }
}

impl Versioned for LeaseRequest {
    fn version(&self) -> u32 {
        self.version
    }

    fn from_json_plain(raw: &[u8]) -> Option<LeaseRequest> {
        LeaseRequest::from_json_plain(raw)
    }
}

fn rate_limit(app: &App, who: &str) -> Result<(), Refusal> {
    app.limiter.check(who).map_err(|wait| Refusal {
        retry_after_s: Some(wait.ceil().max(1.0) as u64),
        ..Refusal::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            format!(
                "{who} sends more than {} requests per second (limits.requests_per_second_per_identity); slow down",
                app.config.limits.requests_per_second_per_identity
            ),
        )
    })
}

/// `POST /v1/lease` through the router (the lease port answers it with [`lease_for`] before
/// routing; this route stays for anything that serves the router alone).
pub async fn lease(
    State(app): State<Arc<App>>,
    Extension(peer): Extension<Peer>,
    body: Body,
) -> Response {
    lease_for(&app, &peer, body).await
}

/// Answers one lease request from `peer` whose body is still to be read.
pub async fn lease_for(app: &App, peer: &Peer, body: Body) -> Response {
    match lease_timed(app, peer, LeaseBody::Unread(body)).await {
        Ok(json) => json_response(json),
        Err(refused) => refused,
    }
}

/// Answers one lease request from `peer` whose body the lease port has read: the JSON of the
/// reply (a 200), or the whole answer to a refused request. The lease port writes the first
/// itself, with no response value, header map or body stream to build and take apart.
pub async fn lease_json(app: &App, peer: &Peer, body: &[u8]) -> Result<Vec<u8>, Response> {
    lease_timed(app, peer, LeaseBody::Read(body)).await
}

/// A 200 with `json` as its body.
fn json_response(json: Vec<u8>) -> Response {
    // Built directly: `(headers, Vec<u8>)` sets `application/octet-stream` first, then
    // replaces it.
    let mut response = Response::new(Body::from(json));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// A lease request's body, read or not yet.
enum LeaseBody<'a> {
    Read(&'a [u8]),
    Unread(Body),
}

async fn lease_timed(app: &App, peer: &Peer, body: LeaseBody<'_>) -> Result<Vec<u8>, Response> {
    let t0 = tokio::time::Instant::now();
    let r = lease_inner(app, peer, body).await.map_err(|refusal| {
        app.metrics.refuse(refusal.reason, true);
        tracing::warn!(peer = %peer.addr, reason = refusal.reason, error = %refusal.message, "lease request refused");
        refusal.into_response()
    });
    app.metrics
        .lease_duration
        .observe(t0.elapsed().as_secs_f64());
    r
}

fn node_identity<'a>(peer: &'a Peer, endpoint: &str) -> Result<&'a ValidIdentity, Refusal> {
    match &peer.identity {
        PeerIdentity::None => Err(Refusal::new(
            StatusCode::UNAUTHORIZED,
            "no_client_cert",
            format!(
                "no client certificate: {endpoint} needs mutual TLS with a certificate signed by the witness CA \
                 (issue one with `witness certs node` or `witness certs admin`)"
            ),
        )),
        PeerIdentity::Invalid(e) => Err(Refusal::new(StatusCode::FORBIDDEN, "bad_identity", e.clone())),
        PeerIdentity::Valid(id) => Ok(id),
    }
}

async fn lease_inner(app: &App, peer: &Peer, body: LeaseBody<'_>) -> Result<Vec<u8>, Refusal> {
    let valid = node_identity(peer, "the lease API")?;
    let (id, who) = (&valid.identity, valid.uri.as_str());
    let Identity::Node {
        cluster,
        room,
        node,
    } = id
    else {
        return Err(Refusal::new(
            StatusCode::FORBIDDEN,
            "identity_mismatch",
            format!(
                "{} is an operator certificate; leases are held with a node certificate witness://<cluster>/<room>/<node>",
                id.to_uri()
            ),
        ));
    };
    rate_limit(app, who)?;
    let read;
    let raw = match body {
        LeaseBody::Read(raw) => raw,
        LeaseBody::Unread(body) => {
            read = read_body(app, body).await?;
            &read[..]
        }
    };
    let req: LeaseRequest = parse_versioned(raw, "the lease request")?;
    if &req.cluster != cluster || &req.room != room || &req.node != node {
        return Err(Refusal::new(
            StatusCode::FORBIDDEN,
            "identity_mismatch",
            format!(
                "the certificate is {who} but the request speaks for cluster {} room {} node {}; a node may only ask for its own lease",
                req.cluster, req.room, req.node
            ),
        ));
    }
    if req.epoch > proto::Epoch::CEILING {
        // Refused before the cluster is even looked up: such a report changes nothing.
        return Err(Refusal::new(
            StatusCode::BAD_REQUEST,
            "epoch_out_of_range",
            format!(
                "the lease request reports epoch {}, above the highest epoch a node may report ({}); \
                 the node's state is corrupt or forged: stop its agent and clear its state file",
                req.epoch,
                proto::Epoch::CEILING
            ),
        ));
    }
    let outcome = app.table.lease(req).await.map_err(table_refusal)?;
    let mut reply = outcome.reply;
    app.metrics.count_lease(outcome.result);
    // The witness's clock for the agents' clock-rate skew measurement (every reply, not only
    // those that carry a proof).
    reply.witness_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .ok()
        .and_then(|d| u64::try_from(d.as_millis()).ok());
    // Only a grant to act alone carries a signed proof: it is what a survivor shows for its
    // takeover (the agent writes it into the `witness.dev/takeover-proof` annotation). A paired
    // renewal changes nobody's rights, nothing reads a proof of it, and signing one was a third
    // of the witness's CPU per renewal (docs/witness.md, "Signed lease proofs").
    if let Verdict::Grant {
        mode: LeaseMode::Alone { takeover },
        valid_ms,
    } = &reply.verdict
    {
        let takeover = match takeover {
            TakeoverPermit::Wait => "wait",
            TakeoverPermit::Allowed => "allowed",
            TakeoverPermit::Release => "release",
        };
        match app.proof.sign(
            reply.cluster.as_str(),
            reply.room.as_str(),
            reply.node.as_str(),
            reply.epoch.0,
            "alone",
            Some(takeover),
            *valid_ms,
        ) {
            Ok(t) => reply.proof = Some(t),
            Err(e) => {
                tracing::error!(error = %e, "cannot sign a lease proof; the grant is sent without one")
            }
        }
    }
    // Written into one buffer of about the right size (axum's `Json` starts at 128 bytes and
    // grows), by proto's writer: the bytes `serde_json` writes, without its generic machinery.
    let mut json = Vec::with_capacity(if reply.proof.is_some() { 768 } else { 192 });
    reply.write_json(&mut json);
    Ok(json)
}

/// `POST /v1/admin/{cluster}`: operator certificate only; every use with a verified
/// certificate is audited before the answer is sent.
pub async fn admin(
    State(app): State<Arc<App>>,
    Extension(peer): Extension<Peer>,
    Path(cluster): Path<String>,
    body: Body,
) -> Response {
    let (id, who) = match node_identity(&peer, "the admin API") {
        Ok(valid) => (&valid.identity, valid.uri.clone()),
        Err(r) => {
            app.metrics.refuse(r.reason, false);
            tracing::warn!(peer = %peer.addr, reason = r.reason, error = %r.message, "admin request refused");
            return r.into_response();
        }
    };
    let mut entry = AuditEntry::now(
        who.clone(),
        peer.addr.to_string(),
        cluster.clone(),
        serde_json::Value::Null,
    );
    let result = admin_inner(&app, id, &cluster, body, &mut entry).await;
    let response = match result {
        Ok(r) => r,
        Err(r) => {
            app.metrics.refuse(r.reason, false);
            entry.outcome = "refused".into();
            entry.message = r.message.clone();
            tracing::warn!(%who, %cluster, reason = r.reason, error = %r.message, "admin request refused");
            r.into_response()
        }
    };
    if let Err(e) = app.audit.append(&entry).await {
        tracing::error!(error = %e, %who, %cluster, "cannot write the audit log");
        if !app.table.store().available() {
            // A full or failing disk: the command was refused by the store too (nothing changed).
            return Refusal {
                retry_after_s: Some(1),
                ..Refusal::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "unavailable",
                    format!(
                        "the witness cannot write durably right now ({e}); outcome of the command: {} {}",
                        entry.outcome, entry.message
                    ),
                )
            }
            .into_response();
        }
        return Refusal::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "audit_failed",
            format!(
                "the audit log could not be written ({e}); outcome of the command: {} {}",
                entry.outcome, entry.message
            ),
        )
        .into_response();
    }
    response
}

async fn admin_inner(
    app: &App,
    id: &Identity,
    cluster: &str,
    body: Body,
    entry: &mut AuditEntry,
) -> Result<Response, Refusal> {
    let Identity::Admin { name } = id else {
        return Err(Refusal::new(
            StatusCode::FORBIDDEN,
            "not_admin",
            format!(
                "{} is a node certificate; the admin API needs an operator certificate witness-admin://<name> \
                 (issue one with `witness certs admin`)",
                id.to_uri()
            ),
        ));
    };
    rate_limit(app, &id.to_uri())?;
    let raw = read_body(app, body).await?;
    entry.command = serde_json::from_slice(&raw)
        .unwrap_or_else(|_| serde_json::Value::String(String::from_utf8_lossy(&raw).into_owned()));
    proto::ids::check_name("cluster", cluster)
        .map_err(|e| Refusal::new(StatusCode::BAD_REQUEST, "bad_request", e))?;
    let cmd: AdminCommand = serde_json::from_slice(&raw).map_err(|e| {
        Refusal::new(
            StatusCode::BAD_REQUEST,
            "bad_request",
            format!(
                "the admin command is malformed: {e}; send e.g. {{\"command\":\"force_survivor\",\"room\":\"a\",\"other_room_down\":false}}, \
                 {{\"command\":\"release\"}}, {{\"command\":\"pause\"}}, {{\"command\":\"resume\"}} or \
                 {{\"command\":\"member_remove\",\"node\":\"b2\",\"powered_off\":true}}"
            ),
        )
    })?;
    if let AdminCommand::ForceSurvivor { room, .. } = &cmd {
        proto::ids::check_name("room", room.as_str())
            .map_err(|e| Refusal::new(StatusCode::BAD_REQUEST, "bad_request", e))?;
    }
    if let AdminCommand::MemberRemove { node, .. }
    | AdminCommand::MemberAdd { node }
    | AdminCommand::MemberDecommission { node, .. } = &cmd
    {
        proto::ids::check_name("node", node.as_str())
            .map_err(|e| Refusal::new(StatusCode::BAD_REQUEST, "bad_request", e))?;
    }
    let label = cmd.label();
    app.metrics.admin_commands.with_label_values(&[label]).inc();
    let cluster_id = ClusterId::new(cluster);
    let out = app
        .table
        .admin(&cluster_id, cmd)
        .await
        .map_err(table_refusal)?;
    entry.outcome = if out.ok { "ok" } else { "rejected" }.into();
    entry.message = out.message.clone();
    entry.epoch_after = Some(out.epoch);
    tracing::info!(admin = %name, %cluster, command = label, ok = out.ok, epoch = out.epoch, message = %out.message, "admin command");
    let status = if out.ok {
        StatusCode::OK
    } else {
        StatusCode::CONFLICT
    };
    let mut body = serde_json::to_value(&out).unwrap_or_default();
    if !out.ok {
        if let Some(o) = body.as_object_mut() {
            o.insert("error".into(), json!(out.message));
        }
    }
    Ok((status, Json(body)).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    const BODY: &str = r#""cluster":"c","room":"a","node":"a1","epoch":3,"phase":"active","peer_contact":true,"peer_reachable":true,"claim":false,"takeover":false,"health":1"#;

    fn reason(raw: &str) -> &'static str {
        match parse_versioned::<LeaseRequest>(raw.as_bytes(), "the lease request") {
            Ok(_) => "ok",
            Err(r) => r.reason,
        }
    }

    #[test]
    fn the_one_parse_path_answers_as_the_generic_one_did() {
        let ok = format!(r#"{{"version":1,{BODY}}}"#);
        let Ok(req) = parse_versioned::<LeaseRequest>(ok.as_bytes(), "x") else {
            panic!("a well-formed request is refused");
        };
        assert_eq!((req.epoch.0, req.node.as_str()), (3, "a1"));
        // A newer agent is told about the version, with or without a field it added.
        assert_eq!(
            reason(&format!(r#"{{"version":2,{BODY}}}"#)),
            "unsupported_version"
        );
        assert_eq!(
            reason(&format!(r#"{{"version":2,{BODY},"new":1}}"#)),
            "unsupported_version"
        );
        assert_eq!(
            reason(&format!(r#"{{"version":1,{BODY},"new":1}}"#)),
            "bad_request"
        );
        assert_eq!(reason(&format!(r#"{{{BODY}}}"#)), "bad_request");
        assert_eq!(reason("[1]"), "bad_request");
        assert_eq!(reason("{"), "bad_request");
        // A repeated key was taken as its last value by the generic parse: still accepted.
        assert_eq!(
            reason(&format!(r#"{{"version":1,"version":1,{BODY}}}"#)),
            "ok"
        );
    }
}
