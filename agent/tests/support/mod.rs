//! Test stand-ins for what cannot run here, each faithful at its interface:
//! - a PKI (rcgen) issuing certificates with the real identity scheme (SAN URI);
//! - a fake witness: a real mTLS server on 127.0.0.1 answering `POST /v1/lease` with scripted
//!   `LeaseReply` JSON;
//! - a Kubernetes API test double (no API server runs here): axum on 127.0.0.1:0 answering the
//!   real REST paths with real JSON (nodes GET/PATCH with JSON patch incl. `test` ops, 409
//!   conflicts; KubeVirt VMI list by label, VM stop subresource, VM merge patch, VMI delete),
//!   recording every call;
//! - a `drbdadm` stand-in script (no DRBD kernel module here) recording its command lines;
//! - the watchdog as a regular file the test reads (no /dev/watchdog here).
// Test doubles and stand-ins run on threads and real processes and measure real wall time:
// the shell's ban on std Instants and blocking locks (agent/clippy.toml) does not apply here.
#![allow(clippy::disallowed_types, clippy::disallowed_methods)]
#![allow(dead_code)]

use agent::config::{
    Config, DrbdConfig, HookConfig, KubernetesConfig, PeerConfig, TlsConfig, VmConfig,
    WatchdogConfig,
};
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, patch, put};
use axum::{Json, Router};
use proto::wire::{LeaseMode, LeaseReply, LeaseRequest, TakeoverPermit, Verdict, WIRE_VERSION};
use proto::Timings;
use rcgen::{
    BasicConstraints, CertificateParams, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, SanType,
};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub fn init() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_test_writer()
        .try_init();
}

// ---------------------------------------------------------------------------------------------
// PKI

/// A throwaway CA and the certificates it issues, as files in a temp dir.
pub struct Pki {
    pub dir: tempfile::TempDir,
    pub ca: PathBuf,
    issuer: Issuer<'static, KeyPair>,
}

/// Paths of one issued certificate and key.
#[derive(Clone, Debug)]
pub struct Issued {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl Pki {
    pub fn new() -> Pki {
        let dir = tempfile::tempdir().unwrap();
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.distinguished_name
            .push(rcgen::DnType::CommonName, "witness test CA");
        let key = KeyPair::generate().unwrap();
        let cert = p.self_signed(&key).unwrap();
        let ca = dir.path().join("ca.pem");
        std::fs::write(&ca, cert.pem()).unwrap();
        Pki {
            dir,
            ca,
            issuer: Issuer::new(p, key),
        }
    }

    /// Issues a certificate with the given SAN URIs and IP/DNS names.
    pub fn issue(&self, file: &str, uris: &[&str], names: &[&str]) -> Issued {
        self.issue_until(file, uris, names, None)
    }

    /// Like [`Pki::issue`], valid until January 1st of `year` when given.
    pub fn issue_until(
        &self,
        file: &str,
        uris: &[&str],
        names: &[&str],
        year: Option<i32>,
    ) -> Issued {
        let mut p = CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
            .unwrap();
        for u in uris {
            p.subject_alt_names
                .push(SanType::URI((*u).try_into().unwrap()));
        }
        if let Some(y) = year {
            p.not_after = rcgen::date_time_ymd(y, 1, 1);
        }
        p.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let key = KeyPair::generate().unwrap();
        let cert = p.signed_by(&key, &self.issuer).unwrap();
        let c = self.dir.path().join(format!("{file}.pem"));
        let k = self.dir.path().join(format!("{file}-key.pem"));
        std::fs::write(&c, cert.pem()).unwrap();
        std::fs::write(&k, key.serialize_pem()).unwrap();
        Issued { cert: c, key: k }
    }

    /// A node certificate: `witness://<cluster>/<room>/<node>`.
    pub fn node(&self, cluster: &str, room: &str, node: &str) -> Issued {
        self.issue(node, &[&format!("witness://{cluster}/{room}/{node}")], &[])
    }
}

// ---------------------------------------------------------------------------------------------
// Fake witness

/// What the scripted witness does with one request.
pub enum Answer {
    Reply(LeaseReply),
    /// HTTP 503: the witness is there but answers nothing useful.
    Unavailable,
}

type Script = Box<dyn FnMut(&LeaseRequest) -> Answer + Send>;

/// A witness stand-in: a real mTLS server (client certificates required, our CA) answering
/// `POST /v1/lease` from a script the test can change at any time.
pub struct FakeWitness {
    pub addr: SocketAddr,
    pub requests: Arc<Mutex<Vec<(Instant, LeaseRequest)>>>,
    script: Arc<Mutex<Script>>,
}

pub fn reply(req: &LeaseRequest, epoch: u64, verdict: Verdict, proof: Option<&str>) -> LeaseReply {
    LeaseReply {
        version: WIRE_VERSION,
        cluster: req.cluster.clone(),
        room: req.room.clone(),
        node: req.node.clone(),
        epoch: proto::Epoch(epoch),
        verdict,
        proof: proof.map(str::to_string),
        members: None,
        witness_ms: None,
    }
}

pub fn paired(valid_ms: u64) -> Verdict {
    Verdict::Grant {
        mode: LeaseMode::Paired,
        valid_ms,
    }
}

pub fn alone(takeover: TakeoverPermit, valid_ms: u64) -> Verdict {
    Verdict::Grant {
        mode: LeaseMode::Alone { takeover },
        valid_ms,
    }
}

pub fn server_tls(pki: &Pki, cert: &Issued) -> Arc<rustls::ServerConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    let ca = std::fs::read(&pki.ca).unwrap();
    for c in rustls_pemfile::certs(&mut ca.as_slice()) {
        roots.add(c.unwrap()).unwrap();
    }
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .build()
    .unwrap();
    let chain = rustls_pemfile::certs(&mut std::fs::read(&cert.cert).unwrap().as_slice())
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = rustls_pemfile::private_key(&mut std::fs::read(&cert.key).unwrap().as_slice())
        .unwrap()
        .unwrap();
    let cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .unwrap();
    Arc::new(cfg)
}

/// Serves `router` over mTLS on 127.0.0.1:0.
pub async fn serve_mtls(router: Router, tls: Arc<rustls::ServerConfig>) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let acceptor = acceptor.clone();
            let router = router.clone();
            tokio::spawn(async move {
                let Ok(s) = acceptor.accept(stream).await else {
                    return;
                };
                let svc = hyper_util::service::TowerToHyperService::new(router);
                let _ = hyper_util::server::conn::auto::Builder::new(
                    hyper_util::rt::TokioExecutor::new(),
                )
                .serve_connection(hyper_util::rt::TokioIo::new(s), svc)
                .await;
            });
        }
    });
    addr
}

impl FakeWitness {
    pub async fn start(
        pki: &Pki,
        script: impl FnMut(&LeaseRequest) -> Answer + Send + 'static,
    ) -> FakeWitness {
        let cert = pki.issue("witness", &[], &["127.0.0.1", "localhost"]);
        let requests = Arc::new(Mutex::new(Vec::new()));
        let script: Arc<Mutex<Script>> = Arc::new(Mutex::new(Box::new(script)));
        let (r2, s2) = (requests.clone(), script.clone());
        let router = Router::new().route(
            "/v1/lease",
            axum::routing::post(move |Json(req): Json<LeaseRequest>| {
                let (r2, s2) = (r2.clone(), s2.clone());
                async move {
                    r2.lock().unwrap().push((Instant::now(), req.clone()));
                    let answer = (s2.lock().unwrap())(&req);
                    match answer {
                        Answer::Reply(rep) => (StatusCode::OK, Json(rep)).into_response(),
                        Answer::Unavailable => StatusCode::SERVICE_UNAVAILABLE.into_response(),
                    }
                }
            }),
        );
        let addr = serve_mtls(router, server_tls(pki, &cert)).await;
        FakeWitness {
            addr,
            requests,
            script,
        }
    }

    pub fn set(&self, script: impl FnMut(&LeaseRequest) -> Answer + Send + 'static) {
        *self.script.lock().unwrap() = Box::new(script);
    }

    pub fn url(&self) -> String {
        format!("https://127.0.0.1:{}", self.addr.port())
    }
}

// ---------------------------------------------------------------------------------------------
// Kubernetes API test double

/// One recorded API call.
#[derive(Clone, Debug)]
pub struct Call {
    pub at: Instant,
    pub method: String,
    pub uri: String,
    pub body: String,
}

#[derive(Default)]
pub struct KubeWorld {
    pub nodes: BTreeMap<String, Value>,
    pub vmis: Vec<Value>,
    pub pods: Vec<Value>,
    pub vms: BTreeMap<(String, String), Value>,
    pub calls: Vec<Call>,
    /// The next this-many node PATCHes answer 409 Conflict (a concurrent writer won).
    pub conflicts: usize,
    /// Every request hangs this long first (a control plane that does not answer).
    pub hang: Option<Duration>,
    /// Right after the next pod list, each of these pods (namespace, name) is recreated under
    /// the same name with a new UID on the given node, as a StatefulSet's controller does
    /// between someone's list and their delete.
    pub recreate_after_list: Vec<(String, String, String)>,
    rv: u64,
}

/// The Kubernetes API double.
#[derive(Clone)]
pub struct KubeDouble {
    pub addr: SocketAddr,
    pub world: Arc<Mutex<KubeWorld>>,
}

fn status(code: u16, reason: &str, message: &str) -> Response {
    (
        StatusCode::from_u16(code).unwrap(),
        Json(
            json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                    "message": message, "reason": reason, "code": code}),
        ),
    )
        .into_response()
}

async fn record(w: &Arc<Mutex<KubeWorld>>, method: &Method, uri: &Uri, body: &Bytes) {
    let hang = {
        let mut g = w.lock().unwrap();
        g.calls.push(Call {
            at: Instant::now(),
            method: method.to_string(),
            uri: uri.to_string(),
            body: String::from_utf8_lossy(body).into_owned(),
        });
        g.hang
    };
    if let Some(h) = hang {
        tokio::time::sleep(h).await;
    }
}

impl KubeWorld {
    fn bump(&mut self) -> String {
        self.rv += 1;
        self.rv.to_string()
    }

    pub fn add_node(&mut self, name: &str) {
        let rv = self.bump();
        self.nodes.insert(
            name.into(),
            json!({"apiVersion": "v1", "kind": "Node",
                   "metadata": {"name": name, "resourceVersion": rv,
                                "labels": {"kubernetes.io/hostname": name}},
                   "spec": {}}),
        );
    }

    /// A pod `name` in `ns` bound to `node`.
    pub fn add_pod(&mut self, ns: &str, name: &str, node: &str) {
        let rv = self.bump();
        self.pods.push(json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": ns, "resourceVersion": rv,
                         "uid": format!("pod-{name}-{rv}")},
            "spec": {"nodeName": node, "containers": [{"name": "c", "image": "app:1"}]}}));
    }

    /// A running VM `name` in `ns` whose VMI runs on `node`.
    pub fn add_vm(&mut self, ns: &str, name: &str, node: &str) {
        let rv = self.bump();
        self.vms.insert(
            (ns.into(), name.into()),
            json!({"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine",
                   "metadata": {"name": name, "namespace": ns, "resourceVersion": rv,
                                "uid": format!("vm-{name}")},
                   "spec": {"runStrategy": "Always"}}),
        );
        self.vmis.push(json!({"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachineInstance",
            "metadata": {"name": name, "namespace": ns, "resourceVersion": rv,
                         "uid": format!("vmi-{name}-{rv}"),
                         "labels": {"kubevirt.io/nodeName": node},
                         "ownerReferences": [{"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine",
                                              "name": name, "uid": format!("vm-{name}"), "controller": true}]},
            "status": {"phase": "Running", "nodeName": node}}));
    }
}

impl KubeDouble {
    pub async fn start() -> KubeDouble {
        let world = Arc::new(Mutex::new(KubeWorld::default()));
        let router = Router::new()
            .route("/api/v1/nodes/{name}", get(get_node).patch(patch_node))
            .route(
                "/apis/kubevirt.io/v1/virtualmachineinstances",
                get(list_vmis),
            )
            .route("/api/v1/pods", get(list_pods))
            .route(
                "/api/v1/namespaces/{ns}/pods/{name}",
                axum::routing::delete(delete_pod),
            )
            .route(
                "/apis/subresources.kubevirt.io/v1/namespaces/{ns}/virtualmachines/{name}/stop",
                put(stop_vm),
            )
            .route(
                "/apis/kubevirt.io/v1/namespaces/{ns}/virtualmachines/{name}",
                patch(patch_vm),
            )
            .route(
                "/apis/kubevirt.io/v1/namespaces/{ns}/virtualmachineinstances/{name}",
                axum::routing::delete(delete_vmi),
            )
            .fallback(any(unknown))
            .with_state(world.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        KubeDouble { addr, world }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.addr.port())
    }

    pub fn calls(&self) -> Vec<Call> {
        self.world.lock().unwrap().calls.clone()
    }

    pub fn node(&self, name: &str) -> Value {
        self.world.lock().unwrap().nodes[name].clone()
    }
}

type W = State<Arc<Mutex<KubeWorld>>>;

async fn unknown(State(w): W, method: Method, uri: Uri, body: Bytes) -> Response {
    record(&w, &method, &uri, &body).await;
    status(
        404,
        "NotFound",
        &format!("the double does not serve {method} {uri}"),
    )
}

async fn get_node(State(w): W, Path(name): Path<String>, method: Method, uri: Uri) -> Response {
    record(&w, &method, &uri, &Bytes::new()).await;
    let node = w.lock().unwrap().nodes.get(&name).cloned();
    match node {
        Some(n) => Json(n).into_response(),
        None => status(404, "NotFound", &format!("nodes \"{name}\" not found")),
    }
}

async fn patch_node(
    State(w): W,
    Path(name): Path<String>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    record(&w, &method, &uri, &body).await;
    let ct = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    if ct != "application/json-patch+json" {
        return status(
            415,
            "UnsupportedMediaType",
            &format!("the double takes JSON patches only, got {ct}"),
        );
    }
    let mut g = w.lock().unwrap();
    if g.conflicts > 0 {
        g.conflicts -= 1;
        return status(409, "Conflict", &format!("Operation cannot be fulfilled on nodes \"{name}\": the object has been modified; please apply your changes to the latest version and try again"));
    }
    let Some(mut node) = g.nodes.get(&name).cloned() else {
        return status(404, "NotFound", &format!("nodes \"{name}\" not found"));
    };
    let p: json_patch::Patch = match serde_json::from_slice(&body) {
        Ok(p) => p,
        Err(e) => return status(400, "BadRequest", &e.to_string()),
    };
    if let Err(e) = json_patch::patch(&mut node, &p) {
        // What the API server answers when a `test` op (or any op) fails.
        return status(
            422,
            "Invalid",
            &format!("the server rejected our request due to an error in our request: {e}"),
        );
    }
    let rv = g.bump();
    node["metadata"]["resourceVersion"] = json!(rv);
    g.nodes.insert(name, node.clone());
    Json(node).into_response()
}

async fn list_vmis(
    State(w): W,
    Query(q): Query<BTreeMap<String, String>>,
    method: Method,
    uri: Uri,
) -> Response {
    record(&w, &method, &uri, &Bytes::new()).await;
    let sel = q.get("labelSelector").cloned().unwrap_or_default();
    let (k, v) = sel.split_once('=').unwrap_or(("", ""));
    let g = w.lock().unwrap();
    let items: Vec<Value> = g
        .vmis
        .iter()
        .filter(|i| k.is_empty() || i["metadata"]["labels"][k] == json!(v))
        .cloned()
        .collect();
    Json(
        json!({"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachineInstanceList",
                "metadata": {"resourceVersion": g.rv.to_string()}, "items": items}),
    )
    .into_response()
}

/// `GET /api/v1/pods?fieldSelector=spec.nodeName=<node>`, the one selector the agent uses.
async fn list_pods(
    State(w): W,
    Query(q): Query<BTreeMap<String, String>>,
    method: Method,
    uri: Uri,
) -> Response {
    record(&w, &method, &uri, &Bytes::new()).await;
    let sel = q.get("fieldSelector").cloned().unwrap_or_default();
    let node = sel.strip_prefix("spec.nodeName=");
    let mut g = w.lock().unwrap();
    let items: Vec<Value> = g
        .pods
        .iter()
        .filter(|p| node.is_none_or(|n| p["spec"]["nodeName"] == json!(n)))
        .cloned()
        .collect();
    for (ns, name, node) in std::mem::take(&mut g.recreate_after_list) {
        g.pods.retain(|p| {
            !(p["metadata"]["name"] == json!(name) && p["metadata"]["namespace"] == json!(ns))
        });
        g.add_pod(&ns, &name, &node);
    }
    Json(json!({"apiVersion": "v1", "kind": "PodList",
                "metadata": {"resourceVersion": g.rv.to_string()}, "items": items}))
    .into_response()
}

async fn delete_pod(
    State(w): W,
    Path((ns, name)): Path<(String, String)>,
    method: Method,
    uri: Uri,
    body: Bytes,
) -> Response {
    record(&w, &method, &uri, &body).await;
    let mut g = w.lock().unwrap();
    let i = g.pods.iter().position(|p| {
        p["metadata"]["name"] == json!(name) && p["metadata"]["namespace"] == json!(ns)
    });
    match i {
        Some(i) => match failed_precondition("pods", &g.pods[i], &body) {
            Some(refusal) => refusal,
            None => Json(g.pods.remove(i)).into_response(),
        },
        None => status(404, "NotFound", &format!("pods \"{name}\" not found")),
    }
}

/// A DELETE's `preconditions.uid` that is not the object's: refused as kube-apiserver does
/// (409 Conflict, tests/kube/golden/api-answers.json).
fn failed_precondition(resource: &str, object: &Value, body: &Bytes) -> Option<Response> {
    let options: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let want = options["preconditions"]["uid"].as_str()?;
    let have = object["metadata"]["uid"].as_str().unwrap_or("");
    let name = object["metadata"]["name"].as_str().unwrap_or("");
    (want != have).then(|| {
        status(
            409,
            "Conflict",
            &format!(
                "Operation cannot be fulfilled on {resource} \"{name}\": Precondition failed: UID in precondition: {want}, UID in object meta: {have}"
            ),
        )
    })
}

fn drop_vmi(g: &mut KubeWorld, ns: &str, name: &str) -> bool {
    let before = g.vmis.len();
    g.vmis.retain(|i| {
        !(i["metadata"]["name"] == json!(name) && i["metadata"]["namespace"] == json!(ns))
    });
    g.vmis.len() != before
}

async fn stop_vm(
    State(w): W,
    Path((ns, name)): Path<(String, String)>,
    method: Method,
    uri: Uri,
    body: Bytes,
) -> Response {
    record(&w, &method, &uri, &body).await;
    let mut g = w.lock().unwrap();
    if !g.vms.contains_key(&(ns.clone(), name.clone())) {
        return status(
            404,
            "NotFound",
            &format!("virtualmachines \"{name}\" not found"),
        );
    }
    if !drop_vmi(&mut g, &ns, &name) {
        return status(409, "Conflict", "VM is not running");
    }
    if let Some(vm) = g.vms.get_mut(&(ns, name)) {
        vm["spec"]["runStrategy"] = json!("Halted");
    }
    StatusCode::ACCEPTED.into_response()
}

async fn patch_vm(
    State(w): W,
    Path((ns, name)): Path<(String, String)>,
    method: Method,
    uri: Uri,
    body: Bytes,
) -> Response {
    record(&w, &method, &uri, &body).await;
    let mut g = w.lock().unwrap();
    let p: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let Some(vm) = g.vms.get_mut(&(ns.clone(), name.clone())) else {
        return status(
            404,
            "NotFound",
            &format!("virtualmachines \"{name}\" not found"),
        );
    };
    json_patch::merge(vm, &p);
    let out = vm.clone();
    drop_vmi(&mut g, &ns, &name);
    Json(out).into_response()
}

async fn delete_vmi(
    State(w): W,
    Path((ns, name)): Path<(String, String)>,
    method: Method,
    uri: Uri,
    body: Bytes,
) -> Response {
    record(&w, &method, &uri, &body).await;
    let mut g = w.lock().unwrap();
    let found = g
        .vmis
        .iter()
        .find(|i| i["metadata"]["name"] == json!(name) && i["metadata"]["namespace"] == json!(ns));
    if let Some(refusal) =
        found.and_then(|vmi| failed_precondition("virtualmachineinstances.kubevirt.io", vmi, &body))
    {
        return refusal;
    }
    if !drop_vmi(&mut g, &ns, &name) {
        // As kube-apiserver answers (tests/kube/golden/api-answers.json).
        return status(
            404,
            "NotFound",
            &format!("virtualmachineinstances.kubevirt.io \"{name}\" not found"),
        );
    }
    Json(json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success"}))
        .into_response()
}

// ---------------------------------------------------------------------------------------------
// drbdadm stand-in, hooks, files

/// Writes an executable script.
pub fn script(path: &std::path::Path, body: &str) {
    use std::os::unix::fs::PermissionsExt;
    // Written aside and renamed over: the old script may still be running (an agent restarted
    // by the test while its hook runs), and opening a running executable for writing fails
    // with "text file busy".
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// A `drbdadm` stand-in that logs its command line to `log`, reports `Secondary` for `role`,
/// and, with `hang`, sleeps instead of demoting (a device stuck in IO).
pub fn drbdadm_stand_in(dir: &std::path::Path, log: &std::path::Path, hang: bool) -> PathBuf {
    let p = dir.join("drbdadm");
    let hang_line = if hang {
        "case \"$1\" in secondary) exec sleep 30;; esac"
    } else {
        ""
    };
    script(
        &p,
        &format!(
            "echo \"drbdadm $*\" >> {log}\n{hang_line}\ncase \"$1\" in role) echo Secondary;; esac\nexit 0",
            log = log.display()
        ),
    );
    p
}

pub fn read(path: &std::path::Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

pub fn file_len(path: &std::path::Path) -> u64 {
    std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

/// Short protocol timings: node takeover wait = widen(300 + 1000 + 1000) = 2347 ms.
pub fn timings() -> Timings {
    Timings {
        heartbeat_interval_ms: 100,
        peer_timeout_ms: 300,
        renew_interval_ms: 100,
        lease_ms: 300,
        silence_ms: 250,
        fence_deadline_ms: 1000,
        watchdog_timeout_ms: 1000,
        drift_ppm: 10000,
        rejoin_stable_ms: 300,
        min_fenced_ms: 200,
    }
}

/// `widen(peer_timeout + fence_deadline + watchdog_timeout)` for [`timings`].
pub const NODE_TAKEOVER_WAIT_MS: u64 = 2347;

/// Everything one test agent uses.
pub struct NodeSetup {
    pub dir: tempfile::TempDir,
    pub room: String,
    pub node: String,
    pub certs: Issued,
    pub drbd_log: PathBuf,
    pub hook_log: PathBuf,
    pub watchdog: PathBuf,
    pub listen: String,
    pub peers: Vec<(String, String)>,
    pub witness_url: String,
    pub kube_url: Option<String>,
    pub drbd_hang: bool,
    pub event_socket: Option<PathBuf>,
}

impl NodeSetup {
    pub fn new(pki: &Pki, room: &str, node: &str, witness_url: &str) -> NodeSetup {
        let dir = tempfile::tempdir().unwrap();
        let certs = pki.node("c1", room, node);
        let watchdog = dir.path().join("watchdog");
        std::fs::write(&watchdog, b"").unwrap();
        NodeSetup {
            drbd_log: dir.path().join("drbd.log"),
            hook_log: dir.path().join("hook.log"),
            watchdog,
            dir,
            room: room.into(),
            node: node.into(),
            certs,
            listen: "127.0.0.1:0".into(),
            peers: Vec::new(),
            witness_url: witness_url.into(),
            kube_url: None,
            drbd_hang: false,
            event_socket: None,
        }
    }

    pub fn run_dir(&self) -> PathBuf {
        self.dir.path().join("run")
    }

    pub fn config(&self, pki: &Pki) -> Config {
        let drbdadm = drbdadm_stand_in(self.dir.path(), &self.drbd_log, self.drbd_hang);
        let hook = self.dir.path().join("hook.sh");
        script(
            &hook,
            &format!(
                "echo \"$WITNESS_EVENT epoch=$WITNESS_EPOCH $WITNESS_CLUSTER/$WITNESS_ROOM/$WITNESS_NODE\" >> {}",
                self.hook_log.display()
            ),
        );
        let text = toml::to_string(&Config {
            cluster: "c1".into(),
            room: self.room.clone(),
            node: self.node.clone(),
            witness_url: self.witness_url.clone(),
            listen: self.listen.clone(),
            status_listen: "127.0.0.1:0".into(),
            advertise: String::new(),
            run_dir: self.run_dir(),
            event_socket: self
                .event_socket
                .as_ref()
                .map(|p| p.display().to_string())
                .unwrap_or_default(),
            tls: TlsConfig {
                ca: pki.ca.clone(),
                cert: self.certs.cert.clone(),
                key: self.certs.key.clone(),
            },
            peers: self
                .peers
                .iter()
                .map(|(node, address)| PeerConfig {
                    node: node.clone(),
                    address: address.clone(),
                })
                .collect(),
            timings: timings(),
            kubernetes: match &self.kube_url {
                Some(u) => KubernetesConfig {
                    api_url: u.clone(),
                    deadline_ms: 200,
                    ..Default::default()
                },
                None => KubernetesConfig {
                    enabled: false,
                    ..Default::default()
                },
            },
            vm: VmConfig {
                process_patterns: vec![format!(
                    "qemu-system-witness-test-never-matches-{}",
                    self.node
                )],
                deadline_ms: 300,
                ..Default::default()
            },
            drbd: DrbdConfig {
                enabled: true,
                drbdadm: drbdadm.display().to_string(),
                resources: vec!["all".into()],
                deadline_ms: 300,
            },
            watchdog: WatchdogConfig {
                enabled: true,
                device: self.watchdog.clone(),
                wdctl: String::new(),
            },
            hooks: vec![HookConfig {
                name: "record".into(),
                on: ["fence", "unfence", "takeover", "release"]
                    .map(String::from)
                    .to_vec(),
                command: vec![hook.display().to_string()],
                timeout_ms: 200,
            }],
            origin: String::new(),
        })
        .expect("the test config serialises");
        // Through the agent's parser, as a file would go (validation, the origin in messages).
        Config::parse(&text, &format!("{}.toml", self.node), &|_| None)
            .unwrap_or_else(|e| panic!("test config refused: {e}"))
    }
}

/// A running agent with its shutdown switch.
pub struct Running {
    pub peer: SocketAddr,
    pub status: SocketAddr,
    pub stop: tokio::sync::watch::Sender<bool>,
    pub task: tokio::task::JoinHandle<Result<(), agent::Error>>,
}

pub async fn start(cfg: Config) -> Running {
    let (tx, rx) = tokio::sync::watch::channel(false);
    let s = agent::start(cfg, rx).await.expect("agent starts");
    Running {
        peer: s.peer_addr,
        status: s.status_addr,
        stop: tx,
        task: s.task,
    }
}

impl Running {
    pub async fn status(&self) -> Value {
        reqwest::get(format!("http://{}/v1/status", self.status))
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    pub async fn metrics(&self) -> String {
        reqwest::get(format!("http://{}/metrics", self.status))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// Polls the status until `pred` holds, or panics after `within`.
    pub async fn wait_for(
        &self,
        within: Duration,
        what: &str,
        pred: impl Fn(&Value) -> bool,
    ) -> Value {
        let until = Instant::now() + within;
        loop {
            let s = self.status().await;
            if pred(&s) {
                return s;
            }
            if Instant::now() > until {
                panic!(
                    "timed out waiting for {what}; status:\n{}",
                    serde_json::to_string_pretty(&s).unwrap()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        let _ = tokio::time::timeout(Duration::from_secs(5), self.task).await;
    }
}
