//! A real Kubernetes control plane for the harness: kine (sqlite) + kube-apiserver +
//! kube-controller-manager + kube-scheduler, built from the published Go modules by
//! `scripts/kube-fixture.sh` and started on loopback with real certificates (made here with
//! rcgen) and a ServiceAccount signing key.
//!
//! What it stands in for, and how:
//! - **kubelets**: none run. A node is a real `Node` object (zone label, capacity, Ready) whose
//!   `kube-node-lease` Lease and Ready condition a heartbeat task keeps fresh while the harness
//!   says the node is powered ([`Powered`]), and leaves alone when it is not, so the real node
//!   lifecycle controller sees it go NotReady exactly as it would. Pods bound to a node stay
//!   Pending (nothing runs them); what the scenarios measure is binding and deletion. A
//!   graceful deletion of a pod bound to a powered node is finished within [`LEASE_RENEW`], as
//!   its kubelet would once the containers stopped (none run here); on a node without power it
//!   waits, as on a real one.
//! - **KubeVirt**: its `VirtualMachine` and `VirtualMachineInstance` CRDs are installed with
//!   their real group/version/kind and a schema that keeps every field. There is no
//!   virt-controller (nothing turns `runStrategy: Halted` into a stopped VMI) and no virt-api
//!   (the `subresources.kubevirt.io` group that serves `virtualmachines/stop` does not exist,
//!   so a `stop` call gets 404). So the agent's API stop is checked by what it wrote (`halt`
//!   mode: the VM's runStrategy), and the VM process itself is stopped by the agent's local
//!   kill, as on a node whose KubeVirt does not answer.
//!
//! The agents get an in-cluster-style configuration: a directory like the projected
//! ServiceAccount volume (`token` from the TokenRequest API, `ca.crt`, `namespace`) for the
//! ServiceAccount of the project's own `deploy/kubernetes` base, applied unchanged.
use anyhow::{bail, Context, Result};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Which nodes are powered (their heartbeats run). Shared with the cluster harness, which flips
/// it on power-off, watchdog reset and boot.
pub type Powered = Arc<Mutex<BTreeMap<String, bool>>>;

/// The zone label value of a harness room (`a` -> `room-a`, as in deploy/kubernetes overlays).
pub fn zone(room: &str) -> String {
    format!("room-{room}")
}

/// The fixture's namespace for workloads.
pub const WORKLOAD_NS: &str = "default";
/// The namespace and ServiceAccount of deploy/kubernetes/base.
pub const AGENT_NS: &str = "witness-system";
pub const AGENT_SA: &str = "witness-agent";
/// How often a powered node renews its Lease (the kubelet's default is 10 s; faster here only
/// so that a node is seen Ready sooner after boot — the lifecycle controller's grace period,
/// which decides NotReady, is left at its default).
const LEASE_RENEW: Duration = Duration::from_secs(2);
/// How often a powered node re-posts its Ready condition.
const STATUS_EVERY: Duration = Duration::from_secs(10);

/// Builds (or reuses) the binaries; their directory. `Ok(None)` (with the skip line printed)
/// when Go is not installed.
pub fn binaries() -> Result<Option<PathBuf>> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .context("workspace root")?
        .to_path_buf();
    if let Ok(dir) = std::env::var("WITNESS_KUBE_BIN") {
        return Ok(Some(PathBuf::from(dir)));
    }
    let have_go = Path::new("/usr/local/go/bin/go").exists()
        || Command::new("go")
            .arg("version")
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false);
    if !have_go {
        println!(
            "skipped: needs Go to build the Kubernetes control plane (scripts/kube-fixture.sh)"
        );
        return Ok(None);
    }
    let started = Instant::now();
    let out = Command::new("bash")
        .arg(root.join("scripts/kube-fixture.sh"))
        .arg("build")
        .stderr(Stdio::inherit())
        .output()
        .context("running scripts/kube-fixture.sh build")?;
    if !out.status.success() {
        bail!("scripts/kube-fixture.sh build failed ({})", out.status);
    }
    let dir = String::from_utf8_lossy(&out.stdout).trim().to_string();
    println!(
        "kube fixture: control plane binaries in {dir} ({} ms)",
        started.elapsed().as_millis()
    );
    Ok(Some(PathBuf::from(dir)))
}

fn free_port() -> Result<u16> {
    let l = TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}

/// One answer of the API: status code and JSON body.
#[derive(Clone, Debug)]
pub struct Answer {
    pub status: u16,
    pub body: Value,
}

impl Answer {
    pub fn ok(&self) -> bool {
        (200..300).contains(&self.status)
    }
}

/// A client of the API server: admin (a static token in `system:masters`) or a ServiceAccount.
#[derive(Clone)]
pub struct ApiClient {
    base: String,
    token: String,
    http: reqwest::Client,
    rt: Arc<tokio::runtime::Runtime>,
}

impl ApiClient {
    /// `method path` with a JSON body (`content_type`), answer as JSON (or the text as a
    /// string when it is not JSON).
    pub fn call(
        &self,
        method: &str,
        path: &str,
        content_type: &str,
        body: Option<&Value>,
    ) -> Result<Answer> {
        let m = reqwest::Method::from_bytes(method.as_bytes())?;
        let mut req = self
            .http
            .request(m, format!("{}{path}", self.base))
            .bearer_auth(&self.token)
            .header("Accept", "application/json");
        if let Some(b) = body {
            req = req
                .header("Content-Type", content_type)
                .body(serde_json::to_vec(b)?);
        }
        self.rt.block_on(async {
            let r = tokio::time::timeout(Duration::from_secs(20), req.send())
                .await
                .with_context(|| format!("{method} {path}: no answer in 20 s"))?
                .with_context(|| format!("{method} {path}"))?;
            let status = r.status().as_u16();
            let text = r.text().await?;
            let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
            Ok(Answer { status, body })
        })
    }

    pub fn get(&self, path: &str) -> Result<Answer> {
        self.call("GET", path, "", None)
    }

    /// GET that must succeed.
    pub fn get_ok(&self, path: &str) -> Result<Value> {
        let a = self.get(path)?;
        if !a.ok() {
            bail!("GET {path}: {} {}", a.status, a.body);
        }
        Ok(a.body)
    }

    /// POST that must succeed (or 409 AlreadyExists when `exists_ok`).
    pub fn create(&self, path: &str, body: &Value) -> Result<Value> {
        let a = self.call("POST", path, "application/json", Some(body))?;
        if !a.ok() {
            bail!("POST {path}: {} {}", a.status, a.body);
        }
        Ok(a.body)
    }

    /// Body as YAML text (the API server accepts `application/yaml`).
    pub fn create_yaml(&self, path: &str, yaml: &str) -> Result<Answer> {
        let m = reqwest::Method::POST;
        let req = self
            .http
            .request(m, format!("{}{path}", self.base))
            .bearer_auth(&self.token)
            .header("Accept", "application/json")
            .header("Content-Type", "application/yaml")
            .body(yaml.to_string());
        self.rt.block_on(async {
            let r = req.send().await.with_context(|| format!("POST {path}"))?;
            let status = r.status().as_u16();
            let text = r.text().await?;
            let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
            Ok(Answer { status, body })
        })
    }

    pub fn merge_patch(&self, path: &str, body: &Value) -> Result<Answer> {
        self.call("PATCH", path, "application/merge-patch+json", Some(body))
    }

    pub fn strategic_patch(&self, path: &str, body: &Value) -> Result<Answer> {
        self.call(
            "PATCH",
            path,
            "application/strategic-merge-patch+json",
            Some(body),
        )
    }
}

/// The running control plane.
pub struct ControlPlane {
    pub dir: PathBuf,
    _tmp: tempfile::TempDir,
    procs: Vec<(String, Child)>,
    /// `https://127.0.0.1:<port>`.
    pub url: String,
    pub addr: SocketAddr,
    pub ca_pem: String,
    pub admin: ApiClient,
    pub rt: Arc<tokio::runtime::Runtime>,
    pub powered: Powered,
    /// Node name -> room.
    pub nodes: BTreeMap<String, String>,
    stop: Arc<std::sync::atomic::AtomicBool>,
}

fn write(path: &Path, text: &str) -> Result<()> {
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}

/// The certificates of one control plane: a CA, the API server's serving certificate (for
/// loopback and `extra_ips`, where the harness forwards the API to its namespaces).
struct Pki {
    ca_pem: String,
    server_pem: String,
    server_key: String,
    sa_key: String,
    sa_pub: String,
}

fn make_pki(extra_ips: &[std::net::IpAddr]) -> Result<Pki> {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, SanType};
    let ca_key = KeyPair::generate()?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "witness-test kubernetes CA");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::CrlSign,
        rcgen::KeyUsagePurpose::DigitalSignature,
    ];
    let ca = ca_params.self_signed(&ca_key)?;
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let server_key = KeyPair::generate()?;
    let mut sp = CertificateParams::new(vec![
        "kubernetes".to_string(),
        "kubernetes.default".to_string(),
        "kubernetes.default.svc".to_string(),
        "localhost".to_string(),
    ])?;
    sp.distinguished_name
        .push(DnType::CommonName, "kube-apiserver");
    let mut ips: Vec<std::net::IpAddr> = vec![
        "127.0.0.1".parse()?,
        // The first address of --service-cluster-ip-range (the `kubernetes` Service).
        "10.96.0.1".parse()?,
    ];
    ips.extend_from_slice(extra_ips);
    for ip in ips {
        sp.subject_alt_names.push(SanType::IpAddress(ip));
    }
    sp.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    let server = sp.signed_by(&server_key, &issuer)?;
    let sa_key = KeyPair::generate()?;
    Ok(Pki {
        ca_pem: ca.pem(),
        server_pem: server.pem(),
        server_key: server_key.serialize_pem(),
        sa_key: sa_key.serialize_pem(),
        sa_pub: sa_key.public_key_pem(),
    })
}

struct Spawned<'a> {
    dir: &'a Path,
    procs: &'a mut Vec<(String, Child)>,
}

impl Spawned<'_> {
    fn spawn(&mut self, name: &str, bin: &Path, args: &[String]) -> Result<()> {
        let log = std::fs::File::create(self.dir.join(format!("{name}.log")))?;
        let child = Command::new(bin)
            .args(args)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        self.procs.push((name.to_string(), child));
        Ok(())
    }
}

fn now_ts() -> k8s_openapi::jiff::Timestamp {
    let us = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0);
    k8s_openapi::jiff::Timestamp::from_microsecond(us).unwrap_or_default()
}

/// RFC 3339 with microseconds, as `MicroTime` (Lease `renewTime`) wants it.
pub fn micro_time() -> String {
    now_ts().strftime("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()
}

/// RFC 3339 to the second, as `Time` (conditions) wants it.
pub fn time_now() -> String {
    now_ts().strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

impl ControlPlane {
    /// Starts everything and waits until the API answers and the controllers have made the
    /// `default` ServiceAccount (the sign that kube-controller-manager runs). `extra_ips`: more
    /// addresses the serving certificate must name.
    pub fn start(bins: &Path, extra_ips: &[std::net::IpAddr]) -> Result<ControlPlane> {
        let tmp = tempfile::Builder::new().prefix("witness-kube-").tempdir()?;
        let dir = tmp.path().to_path_buf();
        let pki = make_pki(extra_ips)?;
        write(&dir.join("ca.pem"), &pki.ca_pem)?;
        write(&dir.join("apiserver.pem"), &pki.server_pem)?;
        write(&dir.join("apiserver-key.pem"), &pki.server_key)?;
        write(&dir.join("sa-key.pem"), &pki.sa_key)?;
        write(&dir.join("sa-pub.pem"), &pki.sa_pub)?;
        let admin_token = format!("admin-{}", rand::random::<u64>());
        write(
            &dir.join("tokens.csv"),
            &format!("{admin_token},admin,admin,system:masters\n"),
        )?;
        let kine_port = free_port()?;
        let api_port = free_port()?;
        let url = format!("https://127.0.0.1:{api_port}");
        write(
            &dir.join("admin.kubeconfig"),
            &format!(
                "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: {url}\n    \
                 certificate-authority: {ca}\nusers:\n- name: admin\n  user:\n    token: {admin_token}\n\
                 contexts:\n- name: c\n  context:\n    cluster: c\n    user: admin\ncurrent-context: c\n",
                ca = dir.join("ca.pem").display()
            ),
        )?;
        let p = |f: &str| dir.join(f).to_string_lossy().into_owned();
        let mut procs = Vec::new();
        let mut sp = Spawned {
            dir: &dir,
            procs: &mut procs,
        };
        sp.spawn(
            "kine",
            &bins.join("kine"),
            &[
                format!(
                    "--endpoint=sqlite://{}?_journal=WAL&cache=shared",
                    p("state.db")
                ),
                format!("--listen-address=127.0.0.1:{kine_port}"),
            ],
        )?;
        let kc = p("admin.kubeconfig");
        sp.spawn(
            "kube-apiserver",
            &bins.join("kube-apiserver"),
            &[
                format!("--etcd-servers=http://127.0.0.1:{kine_port}"),
                "--bind-address=127.0.0.1".into(),
                "--advertise-address=127.0.0.1".into(),
                // Loopback may not be a `kubernetes` Service endpoint; nothing here uses it.
                "--endpoint-reconciler-type=none".into(),
                format!("--secure-port={api_port}"),
                format!("--cert-dir={}", p("certs")),
                format!("--tls-cert-file={}", p("apiserver.pem")),
                format!("--tls-private-key-file={}", p("apiserver-key.pem")),
                format!("--client-ca-file={}", p("ca.pem")),
                format!("--token-auth-file={}", p("tokens.csv")),
                "--service-account-issuer=https://kubernetes.default.svc.cluster.local".into(),
                format!("--service-account-key-file={}", p("sa-pub.pem")),
                format!("--service-account-signing-key-file={}", p("sa-key.pem")),
                "--service-cluster-ip-range=10.96.0.0/16".into(),
                "--authorization-mode=RBAC".into(),
                "--enable-priority-and-fairness=false".into(),
                "--profiling=false".into(),
                "--watch-cache=true".into(),
            ],
        )?;
        sp.spawn(
            "kube-controller-manager",
            &bins.join("kube-controller-manager"),
            &[
                format!("--kubeconfig={kc}"),
                format!("--authentication-kubeconfig={kc}"),
                format!("--authorization-kubeconfig={kc}"),
                "--leader-elect=false".into(),
                "--bind-address=127.0.0.1".into(),
                format!("--secure-port={}", free_port()?),
                format!("--cert-dir={}", p("kcm-certs")),
                format!("--service-account-private-key-file={}", p("sa-key.pem")),
                format!("--root-ca-file={}", p("ca.pem")),
                "--profiling=false".into(),
            ],
        )?;
        sp.spawn(
            "kube-scheduler",
            &bins.join("kube-scheduler"),
            &[
                format!("--kubeconfig={kc}"),
                format!("--authentication-kubeconfig={kc}"),
                format!("--authorization-kubeconfig={kc}"),
                "--leader-elect=false".into(),
                "--bind-address=127.0.0.1".into(),
                format!("--secure-port={}", free_port()?),
                format!("--cert-dir={}", p("sched-certs")),
                "--profiling=false".into(),
            ],
        )?;
        let rt = Arc::new(
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()?,
        );
        let http = reqwest::Client::builder()
            .add_root_certificate(reqwest::Certificate::from_pem(pki.ca_pem.as_bytes())?)
            .build()?;
        let admin = ApiClient {
            base: url.clone(),
            token: admin_token,
            http,
            rt: rt.clone(),
        };
        let mut cp = ControlPlane {
            dir,
            _tmp: tmp,
            procs,
            addr: format!("127.0.0.1:{api_port}").parse()?,
            url,
            ca_pem: pki.ca_pem,
            admin,
            rt,
            powered: Arc::new(Mutex::new(BTreeMap::new())),
            nodes: BTreeMap::new(),
            stop: Arc::new(std::sync::atomic::AtomicBool::new(false)),
        };
        let t0 = Instant::now();
        cp.wait(
            "the API server to answer /readyz",
            Duration::from_secs(180),
            |cp| Ok(cp.admin.get("/readyz").map(|a| a.ok()).unwrap_or(false)),
        )?;
        let ready = t0.elapsed();
        cp.wait(
            "kube-controller-manager to create the default ServiceAccount",
            Duration::from_secs(180),
            |cp| {
                Ok(cp
                    .admin
                    .get("/api/v1/namespaces/default/serviceaccounts/default")?
                    .ok())
            },
        )?;
        println!(
            "kube fixture: API ready after {} ms, controllers after {} ms (logs in {})",
            ready.as_millis(),
            t0.elapsed().as_millis(),
            cp.dir.display()
        );
        Ok(cp)
    }

    /// Polls `f` every 200 ms until it says true; fails naming `what` after `limit` (with the
    /// tail of each component's log, and whether it still runs).
    pub fn wait(
        &mut self,
        what: &str,
        limit: Duration,
        mut f: impl FnMut(&ControlPlane) -> Result<bool>,
    ) -> Result<Duration> {
        let t0 = Instant::now();
        loop {
            if f(self).unwrap_or(false) {
                return Ok(t0.elapsed());
            }
            for (name, c) in self.procs.iter_mut() {
                if let Ok(Some(st)) = c.try_wait() {
                    bail!(
                        "waiting for {what}: {name} exited ({st}); its log:\n{}",
                        tail(&self.dir.join(format!("{name}.log")), 30)
                    );
                }
            }
            if t0.elapsed() > limit {
                let logs: Vec<String> = self
                    .procs
                    .iter()
                    .map(|(n, _)| {
                        format!("--- {n}\n{}", tail(&self.dir.join(format!("{n}.log")), 10))
                    })
                    .collect();
                bail!(
                    "timed out after {limit:?} waiting for {what}\n{}",
                    logs.join("\n")
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Applies the ServiceAccount, its namespace and RBAC of deploy/kubernetes/base, unchanged:
    /// rendered by `kubectl kustomize` when kubectl is installed, else the base files as they
    /// are. Returns the kinds/names applied.
    pub fn apply_deploy_rbac(&self) -> Result<Vec<String>> {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .context("workspace root")?
            .to_path_buf();
        let base = root.join("deploy/kubernetes/base");
        let rendered = Command::new("kubectl")
            .args(["kustomize"])
            .arg(&base)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned());
        let text = match rendered {
            Some(t) => t,
            None => ["namespace.yaml", "serviceaccount.yaml", "rbac.yaml"]
                .iter()
                .map(|f| std::fs::read_to_string(base.join(f)))
                .collect::<std::io::Result<Vec<_>>>()?
                .join("\n---\n"),
        };
        let mut applied = Vec::new();
        for doc in text.split("\n---") {
            let kind = doc
                .lines()
                .find_map(|l| l.strip_prefix("kind: "))
                .map(str::trim)
                .unwrap_or("");
            let path = match kind {
                "Namespace" => "/api/v1/namespaces".to_string(),
                "ServiceAccount" => format!("/api/v1/namespaces/{AGENT_NS}/serviceaccounts"),
                "ClusterRole" => "/apis/rbac.authorization.k8s.io/v1/clusterroles".into(),
                "ClusterRoleBinding" => {
                    "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings".into()
                }
                "Role" => format!("/apis/rbac.authorization.k8s.io/v1/namespaces/{AGENT_NS}/roles"),
                "RoleBinding" => {
                    format!("/apis/rbac.authorization.k8s.io/v1/namespaces/{AGENT_NS}/rolebindings")
                }
                // The DaemonSet and ConfigMaps would need kubelets and images; not ours to run.
                _ => continue,
            };
            let a = self.admin.create_yaml(&path, doc)?;
            if !a.ok() && a.status != 409 {
                bail!(
                    "applying {kind} from deploy/kubernetes/base: {} {}",
                    a.status,
                    a.body
                );
            }
            let name = a.body["metadata"]["name"]
                .as_str()
                .unwrap_or("?")
                .to_string();
            applied.push(format!("{kind}/{name}"));
        }
        if !applied.iter().any(|a| a.starts_with("ClusterRole/")) {
            bail!("deploy/kubernetes/base rendered no ClusterRole: {applied:?}");
        }
        Ok(applied)
    }

    /// Writes a projected-ServiceAccount-style directory (`token` from the TokenRequest API,
    /// `ca.crt`, `namespace`) for `sa` in `ns`, valid for an hour.
    pub fn service_account_dir(&self, ns: &str, sa: &str, dir: &Path) -> Result<PathBuf> {
        let body = json!({
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenRequest",
            "spec": {"audiences": ["https://kubernetes.default.svc.cluster.local"], "expirationSeconds": 3600}
        });
        let a = self.admin.create(
            &format!("/api/v1/namespaces/{ns}/serviceaccounts/{sa}/token"),
            &body,
        )?;
        let token = a["status"]["token"]
            .as_str()
            .context("TokenRequest answered without status.token")?;
        std::fs::create_dir_all(dir)?;
        write(&dir.join("token"), token)?;
        write(&dir.join("ca.crt"), &self.ca_pem)?;
        write(&dir.join("namespace"), ns)?;
        Ok(dir.to_path_buf())
    }

    /// A client acting as the ServiceAccount whose token is in `sa_dir`.
    pub fn client_for(&self, sa_dir: &Path) -> Result<ApiClient> {
        let mut c = self.admin.clone();
        c.token = std::fs::read_to_string(sa_dir.join("token"))?;
        Ok(c)
    }

    /// Installs KubeVirt's VirtualMachine and VirtualMachineInstance CRDs (real group, version,
    /// kind, plural, short names; a schema that keeps every field) and waits until served.
    pub fn install_kubevirt_crds(&mut self) -> Result<()> {
        for (kind, plural, short) in [
            ("VirtualMachine", "virtualmachines", "vm"),
            ("VirtualMachineInstance", "virtualmachineinstances", "vmi"),
        ] {
            let crd = json!({
                "apiVersion": "apiextensions.k8s.io/v1",
                "kind": "CustomResourceDefinition",
                "metadata": {"name": format!("{plural}.kubevirt.io")},
                "spec": {
                    "group": "kubevirt.io",
                    "scope": "Namespaced",
                    "names": {"kind": kind, "plural": plural, "singular": kind.to_lowercase(),
                              "shortNames": [short], "categories": ["all"]},
                    "versions": [{
                        "name": "v1", "served": true, "storage": true,
                        "subresources": {"status": {}},
                        "schema": {"openAPIV3Schema": {"type": "object",
                                   "x-kubernetes-preserve-unknown-fields": true}}
                    }]
                }
            });
            let a = self.admin.call(
                "POST",
                "/apis/apiextensions.k8s.io/v1/customresourcedefinitions",
                "application/json",
                Some(&crd),
            )?;
            if !a.ok() && a.status != 409 {
                bail!("creating the {kind} CRD: {} {}", a.status, a.body);
            }
        }
        self.wait(
            "the KubeVirt CRDs to be served",
            Duration::from_secs(60),
            |cp| {
                Ok(cp
                    .admin
                    .get("/apis/kubevirt.io/v1/namespaces/default/virtualmachineinstances")?
                    .ok()
                    && cp
                        .admin
                        .get("/apis/kubevirt.io/v1/namespaces/default/virtualmachines")?
                        .ok())
            },
        )?;
        Ok(())
    }

    /// Creates the Node objects (`node` -> `room`), powered, and starts their heartbeats.
    pub fn add_nodes(&mut self, nodes: &[(&str, &str)]) -> Result<()> {
        for (n, room) in nodes {
            let node = json!({
                "apiVersion": "v1", "kind": "Node",
                "metadata": {"name": n, "labels": {
                    "kubernetes.io/hostname": n, "kubernetes.io/os": "linux",
                    "topology.kubernetes.io/zone": zone(room)}},
                "spec": {},
                "status": {
                    "capacity": {"cpu": "8", "memory": "16Gi", "pods": "110"},
                    "allocatable": {"cpu": "8", "memory": "16Gi", "pods": "110"},
                    "conditions": [ready_condition()],
                    "nodeInfo": {"kubeletVersion": "v1.37.2", "operatingSystem": "linux",
                                 "architecture": "amd64"}
                }
            });
            self.admin.create("/api/v1/nodes", &node)?;
            self.nodes.insert(n.to_string(), room.to_string());
            self.powered
                .lock()
                .map_err(|_| anyhow::anyhow!("powered map poisoned"))?
                .insert(n.to_string(), true);
            heartbeat_once(&self.admin, n, true)?;
        }
        self.start_heartbeats();
        let names: Vec<String> = nodes.iter().map(|(n, _)| n.to_string()).collect();
        self.wait(
            "the nodes to be Ready and untainted",
            Duration::from_secs(60),
            |cp| {
                for n in &names {
                    let v = cp.admin.get_ok(&format!("/api/v1/nodes/{n}"))?;
                    if !node_ready(&v)
                        || !v["spec"]["taints"].as_array().is_none_or(|t| t.is_empty())
                    {
                        return Ok(false);
                    }
                }
                Ok(true)
            },
        )?;
        Ok(())
    }

    fn start_heartbeats(&self) {
        let admin = self.admin.clone();
        let powered = self.powered.clone();
        let stop = self.stop.clone();
        std::thread::spawn(move || {
            let mut last_status: BTreeMap<String, Instant> = BTreeMap::new();
            let mut was: BTreeMap<String, bool> = BTreeMap::new();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let now: Vec<(String, bool)> = powered
                    .lock()
                    .map(|m| m.iter().map(|(k, v)| (k.clone(), *v)).collect())
                    .unwrap_or_default();
                for (n, on) in now {
                    if !on {
                        was.insert(n, false);
                        continue;
                    }
                    // Just powered on, or due: post Ready like a kubelet after (re)start.
                    let due = was.get(&n) != Some(&true)
                        || last_status
                            .get(&n)
                            .is_none_or(|t| t.elapsed() >= STATUS_EVERY);
                    if heartbeat_once(&admin, &n, due).is_ok() && due {
                        last_status.insert(n.clone(), Instant::now());
                    }
                    was.insert(n, true);
                }
                let _ = finish_graceful_deletions(&admin, &powered);
                std::thread::sleep(LEASE_RENEW);
            }
        });
    }

    /// Sets whether `node` is powered (its heartbeats run).
    pub fn set_powered(&self, node: &str, on: bool) {
        if let Ok(mut m) = self.powered.lock() {
            m.insert(node.to_string(), on);
        }
    }

    /// Creates a VirtualMachine (`runStrategy: Always`) and the VMI KubeVirt would run for it
    /// on `node` (owned by the VM, labelled `kubevirt.io/nodeName`, `status.nodeName` set).
    pub fn add_vm(&self, ns: &str, name: &str, node: &str) -> Result<()> {
        self.admin.create(
            &format!("/apis/kubevirt.io/v1/namespaces/{ns}/virtualmachines"),
            &json!({"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine",
                    "metadata": {"name": name},
                    "spec": {"runStrategy": "Always", "template": {"spec": {"domain": {"devices": {}}}}}}),
        )?;
        self.add_vmi(ns, name, node)
    }

    /// The running VMI of VM `name` on `node`, as virt-controller would create it (there is no
    /// virt-controller here); nothing if one already exists.
    pub fn add_vmi(&self, ns: &str, name: &str, node: &str) -> Result<()> {
        let path = format!("/apis/kubevirt.io/v1/namespaces/{ns}/virtualmachineinstances");
        if self.admin.get(&format!("{path}/{name}"))?.ok() {
            return Ok(());
        }
        let vm = self.admin.get_ok(&format!(
            "/apis/kubevirt.io/v1/namespaces/{ns}/virtualmachines/{name}"
        ))?;
        let uid = vm["metadata"]["uid"].as_str().context("VM without uid")?;
        self.admin.create(
            &path,
            &json!({"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachineInstance",
                    "metadata": {"name": name, "labels": {"kubevirt.io/nodeName": node},
                                 "ownerReferences": [{"apiVersion": "kubevirt.io/v1",
                                   "kind": "VirtualMachine", "name": name, "uid": uid,
                                   "controller": true, "blockOwnerDeletion": true}]},
                    "spec": {"domain": {"devices": {}}}}),
        )?;
        let a = self.admin.merge_patch(
            &format!("{path}/{name}/status"),
            &json!({"status": {"nodeName": node, "phase": "Running"}}),
        )?;
        if !a.ok() {
            bail!("setting VMI {name} status: {} {}", a.status, a.body);
        }
        Ok(())
    }

    /// A Deployment of `replicas` pods spread over the zones (one per zone at most ahead of the
    /// other while both have room; anywhere when one zone is unusable).
    pub fn add_deployment(&self, name: &str, replicas: u32) -> Result<()> {
        self.admin.create(
            &format!("/apis/apps/v1/namespaces/{WORKLOAD_NS}/deployments"),
            &json!({"apiVersion": "apps/v1", "kind": "Deployment",
                    "metadata": {"name": name},
                    "spec": {"replicas": replicas,
                             "selector": {"matchLabels": {"app": name}},
                             "template": pod_template(name)}}),
        )?;
        Ok(())
    }

    /// A StatefulSet (Parallel pod management: nothing here ever becomes Ready).
    pub fn add_statefulset(&self, name: &str, replicas: u32) -> Result<()> {
        self.admin.create(
            &format!("/apis/apps/v1/namespaces/{WORKLOAD_NS}/statefulsets"),
            &json!({"apiVersion": "apps/v1", "kind": "StatefulSet",
                    "metadata": {"name": name},
                    "spec": {"replicas": replicas, "serviceName": name,
                             "podManagementPolicy": "Parallel",
                             "selector": {"matchLabels": {"app": name}},
                             "template": pod_template(name)}}),
        )?;
        Ok(())
    }

    /// Every pod in the workload namespace: (name, uid, node, terminating).
    pub fn pods(&self) -> Result<Vec<PodInfo>> {
        let v = self
            .admin
            .get_ok(&format!("/api/v1/namespaces/{WORKLOAD_NS}/pods"))?;
        Ok(v["items"]
            .as_array()
            .map(|items| {
                items
                    .iter()
                    .map(|p| PodInfo {
                        name: p["metadata"]["name"].as_str().unwrap_or("").into(),
                        uid: p["metadata"]["uid"].as_str().unwrap_or("").into(),
                        node: p["spec"]["nodeName"].as_str().unwrap_or("").into(),
                        terminating: !p["metadata"]["deletionTimestamp"].is_null(),
                    })
                    .collect()
            })
            .unwrap_or_default())
    }

    pub fn node(&self, name: &str) -> Result<Value> {
        self.admin.get_ok(&format!("/api/v1/nodes/{name}"))
    }

    /// The tail of a component's log.
    pub fn log_tail(&self, component: &str, lines: usize) -> String {
        tail(&self.dir.join(format!("{component}.log")), lines)
    }

    /// What the control plane looks like now, for the report of a failed scenario: whether
    /// each component still runs, every node's Ready condition and taints, every pod of the
    /// workload namespace with its node, and the error lines at the end of each component's
    /// log. Copies every component's whole log into `keep`.
    pub fn diagnose(&self, keep: &Path) -> String {
        let mut out = Vec::new();
        let _ = std::fs::create_dir_all(keep);
        for (name, child) in &self.procs {
            // /proc/<pid>/stat's third field: Z (or no file) once the process has exited.
            let state = std::fs::read_to_string(format!("/proc/{}/stat", child.id()))
                .ok()
                .and_then(|s| {
                    s.rsplit_once(')')
                        .and_then(|(_, r)| r.split_whitespace().next().map(str::to_string))
                })
                .unwrap_or_else(|| "gone".into());
            let running = if state == "Z" || state == "gone" {
                "EXITED"
            } else {
                "running"
            };
            out.push(format!("  {name}: {running}"));
            let log = self.dir.join(format!("{name}.log"));
            let _ = std::fs::copy(&log, keep.join(format!("{name}.log")));
        }
        for n in self.nodes.keys() {
            match self.node(n) {
                Ok(v) => out.push(format!(
                    "  node {n}: ready={} taints={}",
                    node_ready(&v),
                    v["spec"]["taints"]
                )),
                Err(e) => out.push(format!("  node {n}: {e:#}")),
            }
        }
        match self.pods() {
            Ok(pods) => {
                for p in pods {
                    out.push(format!(
                        "  pod {}: node={:?}{}",
                        p.name,
                        p.node,
                        if p.terminating { " terminating" } else { "" }
                    ));
                }
            }
            Err(e) => out.push(format!("  pods: {e:#}")),
        }
        for (name, _) in &self.procs {
            // klog's error and warning lines (E1130 ..., W1130 ...), the last few.
            let text =
                std::fs::read_to_string(self.dir.join(format!("{name}.log"))).unwrap_or_default();
            let bad: Vec<&str> = text
                .lines()
                .filter(|l| l.starts_with('E') || l.starts_with('F'))
                // Start-up noise of every run of this fixture (no front proxy CA configured).
                .filter(|l| !l.contains("configmap_cafile_content"))
                .collect();
            for l in &bad[bad.len().saturating_sub(4)..] {
                out.push(format!("  {name}| {}", truncate_line(l, 300)));
            }
        }
        out.push(format!("  (component logs copied to {})", keep.display()));
        out.join("\n")
    }
}

fn truncate_line(l: &str, max: usize) -> &str {
    match l.char_indices().nth(max) {
        Some((i, _)) => &l[..i],
        None => l,
    }
}

/// One pod.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodInfo {
    pub name: String,
    pub uid: String,
    pub node: String,
    pub terminating: bool,
}

fn pod_template(app: &str) -> Value {
    json!({
        "metadata": {"labels": {"app": app}},
        "spec": {
            "terminationGracePeriodSeconds": 30,
            "topologySpreadConstraints": [{
                "maxSkew": 1, "topologyKey": "topology.kubernetes.io/zone",
                "whenUnsatisfiable": "ScheduleAnyway",
                "labelSelector": {"matchLabels": {"app": app}}}],
            "containers": [{"name": "app", "image": "registry.example.org/app:1",
                            "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}}}]
        }
    })
}

fn ready_condition() -> Value {
    let now = time_now();
    json!({"type": "Ready", "status": "True", "reason": "KubeletReady",
           "message": "witness-tests fixture heartbeat", "lastHeartbeatTime": now,
           "lastTransitionTime": now})
}

/// Whether the node's Ready condition is True.
pub fn node_ready(node: &Value) -> bool {
    node["status"]["conditions"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["type"] == "Ready"))
        .is_some_and(|c| c["status"] == "True")
}

/// Whether the node carries a taint with `key`.
pub fn has_taint(node: &Value, key: &str) -> bool {
    node["spec"]["taints"]
        .as_array()
        .is_some_and(|t| t.iter().any(|t| t["key"] == key))
}

/// What a kubelet does for a pod of its node that is being deleted gracefully, once the
/// containers have stopped: deletes it for good (grace period 0, guarded by its UID). Only on
/// powered nodes. Without this, a pod that the taint-eviction controller deletes by name after
/// a StatefulSet recreated it in the surviving room would stay Terminating forever here.
fn finish_graceful_deletions(admin: &ApiClient, powered: &Powered) -> Result<()> {
    let on: Vec<String> = powered
        .lock()
        .map(|m| {
            m.iter()
                .filter(|(_, v)| **v)
                .map(|(k, _)| k.clone())
                .collect()
        })
        .unwrap_or_default();
    let pods = admin.get_ok("/api/v1/pods")?;
    for p in pods["items"].as_array().into_iter().flatten() {
        let node = p["spec"]["nodeName"].as_str().unwrap_or("");
        if p["metadata"]["deletionTimestamp"].is_null() || !on.iter().any(|n| n == node) {
            continue;
        }
        let (ns, name) = (
            p["metadata"]["namespace"].as_str().unwrap_or(""),
            p["metadata"]["name"].as_str().unwrap_or(""),
        );
        admin.call(
            "DELETE",
            &format!("/api/v1/namespaces/{ns}/pods/{name}"),
            "application/json",
            Some(
                &json!({"kind": "DeleteOptions", "apiVersion": "v1", "gracePeriodSeconds": 0,
                         "preconditions": {"uid": p["metadata"]["uid"]}}),
            ),
        )?;
    }
    Ok(())
}

/// Renews the node's Lease (creating it the first time) and, with `status`, posts Ready=True.
fn heartbeat_once(admin: &ApiClient, node: &str, status: bool) -> Result<()> {
    let lease_path =
        format!("/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/{node}");
    let a = admin.merge_patch(
        &lease_path,
        &json!({"spec": {"holderIdentity": node, "leaseDurationSeconds": 40, "renewTime": micro_time()}}),
    )?;
    if a.status == 404 {
        admin.create(
            "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases",
            &json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                    "metadata": {"name": node},
                    "spec": {"holderIdentity": node, "leaseDurationSeconds": 40,
                             "renewTime": micro_time()}}),
        )?;
    } else if !a.ok() {
        bail!("renewing the Lease of {node}: {} {}", a.status, a.body);
    }
    if status {
        let now = time_now();
        // Strategic merge: conditions merge by type. lastTransitionTime only when it changes.
        let cur = admin.get_ok(&format!("/api/v1/nodes/{node}"))?;
        let mut cond = ready_condition();
        if node_ready(&cur) {
            if let Some(t) = cur["status"]["conditions"]
                .as_array()
                .and_then(|c| c.iter().find(|c| c["type"] == "Ready"))
                .and_then(|c| c["lastTransitionTime"].as_str())
            {
                cond["lastTransitionTime"] = json!(t);
            }
        }
        cond["lastHeartbeatTime"] = json!(now);
        let a = admin.strategic_patch(
            &format!("/api/v1/nodes/{node}/status"),
            &json!({"status": {"conditions": [cond]}}),
        )?;
        if !a.ok() {
            bail!("posting Ready for {node}: {} {}", a.status, a.body);
        }
    }
    Ok(())
}

fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        // Controllers first, the datastore last.
        for (_, c) in self.procs.iter_mut().rev() {
            let _ = c.kill();
            let _ = c.wait();
        }
        if std::env::var("WITNESS_KEEP_LOGS").is_ok() {
            let keep =
                std::env::temp_dir().join(format!("witness-kube-logs-{}", std::process::id()));
            let _ = std::fs::create_dir_all(&keep);
            for (n, _) in &self.procs {
                let f = format!("{n}.log");
                let _ = std::fs::copy(self.dir.join(&f), keep.join(&f));
            }
            println!("kube fixture logs kept in {}", keep.display());
        }
    }
}

/// Serves `listen` inside network namespace `ns` (a harness host) by forwarding every
/// connection to `upstream` on this process's own loopback: the API server runs on the test
/// host, the agents reach it at their room's view of the network, and an nftables cut of the
/// `kube` host cuts them off from it. The listening socket is made by a thread that enters the
/// namespace and comes back; the connections to `upstream` are made from the host namespace.
/// Stops accepting when `stop` is set.
pub fn forward_into_namespace(
    ns: &str,
    listen: SocketAddr,
    upstream: SocketAddr,
    stop: Arc<std::sync::atomic::AtomicBool>,
) -> Result<()> {
    use rustix::thread::{move_into_link_name_space, LinkNameSpaceType};
    use std::os::fd::AsFd;
    let ns_file = std::fs::File::open(format!("/run/netns/{ns}"))
        .with_context(|| format!("opening network namespace {ns}"))?;
    let (tx, rx) = std::sync::mpsc::channel::<Result<TcpListener>>();
    std::thread::spawn(move || {
        let bound = (|| -> Result<TcpListener> {
            let home = std::fs::File::open("/proc/thread-self/ns/net")?;
            move_into_link_name_space(ns_file.as_fd(), Some(LinkNameSpaceType::Network))?;
            let l = TcpListener::bind(listen);
            move_into_link_name_space(home.as_fd(), Some(LinkNameSpaceType::Network))?;
            let l = l.with_context(|| format!("binding {listen} in {ns_file:?}"))?;
            l.set_nonblocking(true)?;
            Ok(l)
        })();
        let listener = match bound {
            Ok(l) => {
                let _ = tx.send(l.try_clone().map_err(Into::into));
                l
            }
            Err(e) => {
                let _ = tx.send(Err(e));
                return;
            }
        };
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            match listener.accept() {
                Ok((down, _)) => {
                    let _ = down.set_nonblocking(false);
                    let Ok(up) =
                        std::net::TcpStream::connect_timeout(&upstream, Duration::from_secs(2))
                    else {
                        continue;
                    };
                    for (mut from, mut to) in [
                        (down.try_clone(), up.try_clone()),
                        (up.try_clone(), down.try_clone()),
                    ]
                    .into_iter()
                    .filter_map(|(a, b)| Some((a.ok()?, b.ok()?)))
                    {
                        std::thread::spawn(move || {
                            let _ = std::io::copy(&mut from, &mut to);
                            let _ = to.shutdown(std::net::Shutdown::Both);
                        });
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(_) => std::thread::sleep(Duration::from_millis(20)),
            }
        }
    });
    rx.recv_timeout(Duration::from_secs(5))
        .context("the forwarding thread did not start")??;
    Ok(())
}

/// What of an answer the agent relies on: status, the body's kind, a failure's reason, whether
/// a failure's message names `object` (the agent tells "this VM is gone" from "this API is not
/// served" by it). Same rule as agent/tests/kube_double.rs.
pub fn normalise(a: &Answer, object: &str) -> Value {
    let failed = !a.ok();
    json!({
        "status": a.status,
        "kind": a.body["kind"],
        "reason": if failed { a.body["reason"].clone() } else { Value::Null },
        "names_object": failed && !object.is_empty()
            && a.body["message"].as_str().is_some_and(|m| m.contains(&format!("\"{object}\""))),
    })
}

/// Runs the cases of tests/kube/golden/api-answers.json as `client`; records the answers into
/// the file when `WITNESS_KUBE_RECORD` is set or none is recorded yet, else checks that the
/// real server still answers as recorded. The cases expect Node a1 and VM default/vm-a1 whose
/// VMI runs on a1.
pub fn golden_answers(client: &ApiClient, server_version: &str) -> Result<()> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("kube/golden/api-answers.json");
    let mut golden: Value = serde_json::from_str(&std::fs::read_to_string(&path)?)
        .with_context(|| format!("parsing {}", path.display()))?;
    let record = std::env::var("WITNESS_KUBE_RECORD").is_ok()
        || golden["cases"]
            .as_array()
            .is_some_and(|c| c.iter().any(|c| c["answer"].is_null()));
    let mut diffs = Vec::new();
    let cases = golden["cases"]
        .as_array_mut()
        .context("api-answers.json: no cases")?;
    for case in cases.iter_mut() {
        let rv = client.get_ok("/api/v1/nodes/a1")?["metadata"]["resourceVersion"]
            .as_str()
            .unwrap_or("")
            .to_string();
        let body = (!case["body"].is_null()).then(|| {
            serde_json::from_str::<Value>(&case["body"].to_string().replace("{rv}", &rv))
                .unwrap_or(Value::Null)
        });
        let a = client.call(
            case["method"].as_str().unwrap_or("GET"),
            case["path"].as_str().unwrap_or("/"),
            case["content_type"].as_str().unwrap_or(""),
            body.as_ref(),
        )?;
        let got = normalise(&a, case["object"].as_str().unwrap_or(""));
        if record {
            case["answer"] = got;
        } else if case["answer"] != got {
            diffs.push(format!(
                "{}: recorded {} now {} ({})",
                case["name"], case["answer"], got, a.body["message"]
            ));
        }
    }
    if record {
        golden["recorded_with"] = json!(format!("kube-apiserver {server_version}"));
        std::fs::write(&path, serde_json::to_string_pretty(&golden)? + "\n")?;
        println!("recorded the API server's answers into {}", path.display());
    }
    if !diffs.is_empty() {
        bail!(
            "the real API server no longer answers as recorded in {} (re-record with \
             WITNESS_KUBE_RECORD=1 and check the double):\n{}",
            path.display(),
            diffs.join("\n")
        );
    }
    Ok(())
}
