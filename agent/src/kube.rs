//! The Kubernetes API as the agent uses it: nodes (taints, annotations) and KubeVirt VMs, through
//! kube-rs. Every change is a JSON patch guarded by a `test` of the `resourceVersion` the change
//! was computed from, so a concurrent writer is never overwritten; a conflict (409, or 422 from
//! a failed `test`) re-reads the node and tries again.
//!
//! "The API does not answer" (a room cut off from the control plane) is an error like any other
//! here; the drivers decide what it means for them.
use crate::config::KubernetesConfig;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, Preconditions,
};
use serde_json::{json, Value};
use std::time::Duration;

/// How many times a node patch is retried after a conflict before giving up.
pub const CONFLICT_RETRIES: usize = 8;

/// Errors talking to the API.
#[derive(Debug, thiserror::Error)]
pub enum KubeError {
    #[error("Kubernetes API is not configured: {0}")]
    NotConfigured(String),
    #[error("Kubernetes API did not answer within {0} ms")]
    Timeout(u64),
    #[error("Kubernetes API: {0}")]
    Api(#[source] kube::Error),
    #[error("Kubernetes API: {0}")]
    Other(String),
}

impl KubeError {
    /// The HTTP status the API answered with, if it answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            KubeError::Api(kube::Error::Api(s)) => Some(s.code),
            _ => None,
        }
    }

    /// The message of the API's answer (empty if it did not answer).
    pub fn message(&self) -> &str {
        match self {
            KubeError::Api(kube::Error::Api(s)) => &s.message,
            _ => "",
        }
    }

    /// The API answered (as opposed to: unreachable, timed out, not configured).
    pub fn answered(&self) -> bool {
        self.status().is_some()
    }

    fn conflict(&self) -> bool {
        matches!(self.status(), Some(409) | Some(422))
    }
}

/// The API client, or why there is none.
#[derive(Clone)]
pub struct Kube {
    client: Result<kube::Client, String>,
    /// Upper bound of one API call, so a dead API does not eat a fencing deadline on its own.
    pub call_timeout: Duration,
}

impl std::fmt::Debug for Kube {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Kube")
            .field("configured", &self.client.is_ok())
            .finish()
    }
}

/// The KubeVirt VirtualMachineInstance resource.
pub fn vmi_resource() -> ApiResource {
    ApiResource {
        group: "kubevirt.io".into(),
        version: "v1".into(),
        api_version: "kubevirt.io/v1".into(),
        kind: "VirtualMachineInstance".into(),
        plural: "virtualmachineinstances".into(),
    }
}

/// The KubeVirt VirtualMachine resource.
pub fn vm_resource() -> ApiResource {
    ApiResource {
        group: "kubevirt.io".into(),
        version: "v1".into(),
        api_version: "kubevirt.io/v1".into(),
        kind: "VirtualMachine".into(),
        plural: "virtualmachines".into(),
    }
}

/// Escapes one JSON pointer segment (`/` and `~`), e.g. an annotation key.
pub fn pointer_escape(s: &str) -> String {
    s.replace('~', "~0").replace('/', "~1")
}

impl Kube {
    /// Builds the client. The endpoint is `api_url` when set, else the in-cluster one
    /// (`KUBERNETES_SERVICE_HOST`/`_PORT`). Over https the service account in
    /// `service_account_dir` authenticates (its `token` file, re-read as the kubelet rotates it)
    /// and its `ca.crt` verifies the server, also for a configured `api_url`: an operator who
    /// points the agent at a local API server still acts as the agent's ServiceAccount, never
    /// as `system:anonymous`. Plain http (the test double) sends no credentials. A failure is
    /// kept and reported on every use.
    pub fn new(cfg: &KubernetesConfig) -> Kube {
        let call_timeout = Duration::from_secs(5);
        if !cfg.enabled {
            return Kube {
                client: Err("kubernetes.enabled = false".into()),
                call_timeout,
            };
        }
        let client = client_config(cfg).and_then(|mut c| {
            // Our own deadlines and conflict retries decide; no hidden retry loop underneath.
            c.default_retry = false;
            c.connect_timeout = Some(Duration::from_secs(1));
            c.read_timeout = Some(call_timeout);
            kube::Client::try_from(c).map_err(|e| format!("client: {e}"))
        });
        Kube {
            client,
            call_timeout,
        }
    }

    /// A client that is never configured (for drivers when Kubernetes is disabled).
    pub fn disabled() -> Kube {
        Kube {
            client: Err("kubernetes.enabled = false".into()),
            call_timeout: Duration::from_secs(1),
        }
    }

    pub fn enabled(&self) -> bool {
        self.client.is_ok()
    }

    /// Why there is no client (`kubernetes.enabled = false`, or the configuration failed).
    pub fn unavailable(&self) -> String {
        match &self.client {
            Ok(_) => String::new(),
            Err(e) => format!("no Kubernetes API: {e}"),
        }
    }

    fn client(&self) -> Result<kube::Client, KubeError> {
        self.client.clone().map_err(KubeError::NotConfigured)
    }

    async fn call<T>(
        &self,
        f: impl std::future::Future<Output = Result<T, kube::Error>>,
    ) -> Result<T, KubeError> {
        match tokio::time::timeout(self.call_timeout, f).await {
            Ok(r) => r.map_err(KubeError::Api),
            Err(_) => Err(KubeError::Timeout(self.call_timeout.as_millis() as u64)),
        }
    }

    pub async fn get_node(&self, name: &str) -> Result<Node, KubeError> {
        let api: Api<Node> = Api::all(self.client()?);
        self.call(api.get(name)).await
    }

    /// Reads the node, asks `change` for the patch operations that bring it where it should be
    /// (`None`: nothing to do), and applies them guarded by the node's `resourceVersion`.
    /// Retries on conflicts. Returns whether a patch was applied.
    pub async fn reconcile_node(
        &self,
        name: &str,
        change: impl Fn(&Node) -> Option<Vec<Value>>,
    ) -> Result<bool, KubeError> {
        let api: Api<Node> = Api::all(self.client()?);
        let mut last = None;
        for _ in 0..CONFLICT_RETRIES {
            let node = self.call(api.get(name)).await?;
            let Some(ops) = change(&node) else {
                return Ok(false);
            };
            let rv = node.metadata.resource_version.clone().unwrap_or_default();
            let mut all =
                vec![json!({"op": "test", "path": "/metadata/resourceVersion", "value": rv})];
            all.extend(ops);
            let patch: json_patch::Patch = serde_json::from_value(Value::Array(all))
                .map_err(|e| KubeError::Other(format!("building the patch: {e}")))?;
            match self
                .call(api.patch(name, &PatchParams::default(), &Patch::Json::<()>(patch)))
                .await
            {
                Ok(_) => return Ok(true),
                Err(e) if e.conflict() => {
                    tracing::debug!(node = name, "patch conflict, re-reading: {e}");
                    last = Some(e);
                }
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or_else(|| KubeError::Other("patch retries exhausted".into())))
    }

    /// The VMIs KubeVirt runs on `node`: (namespace, name, owning VM name if any).
    pub async fn list_vmis(&self, node: &str) -> Result<Vec<VmiRef>, KubeError> {
        let api: Api<DynamicObject> = Api::all_with(self.client()?, &vmi_resource());
        let lp = ListParams::default().labels(&format!("kubevirt.io/nodeName={node}"));
        let list = self.call(api.list(&lp)).await?;
        Ok(list
            .items
            .into_iter()
            .map(|o| {
                let vm = o
                    .metadata
                    .owner_references
                    .as_ref()
                    .and_then(|refs| refs.iter().find(|r| r.kind == "VirtualMachine"))
                    .map(|r| r.name.clone());
                VmiRef {
                    namespace: o.metadata.namespace.clone().unwrap_or_default(),
                    name: o.metadata.name.clone().unwrap_or_default(),
                    uid: o.metadata.uid.clone().unwrap_or_default(),
                    vm,
                }
            })
            .collect())
    }

    /// `PUT .../virtualmachines/<name>/stop`. A VM that is not running (409) or gone (404
    /// naming the VM) is already where we want it. A 404 that does not name the VM means the
    /// `subresources.kubevirt.io` API itself is not served (virt-api missing or not yet
    /// registered): that is an error, or fencing would believe a stop it never asked for.
    pub async fn stop_vm(&self, ns: &str, name: &str) -> Result<(), KubeError> {
        let client = self.client()?;
        let uri = format!(
            "/apis/subresources.kubevirt.io/v1/namespaces/{ns}/virtualmachines/{name}/stop"
        );
        let req = http::Request::put(uri)
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(b"{}".to_vec())
            .map_err(|e| KubeError::Other(e.to_string()))?;
        match self.call(client.request_text(req)).await {
            Ok(_) => Ok(()),
            Err(e) if e.status() == Some(409) => Ok(()),
            Err(e) if e.status() == Some(404) && e.message().contains(&format!("\"{name}\"")) => {
                Ok(())
            }
            Err(e) if e.status() == Some(404) => Err(KubeError::Other(format!(
                "stopping VM {ns}/{name}: the stop subresource is not served (404: {}); is \
                 KubeVirt's virt-api running? vm.stop_mode = \"halt\" needs only the \
                 VirtualMachine resource",
                e.message()
            ))),
            Err(e) => Err(e),
        }
    }

    /// Sets `spec.runStrategy: Halted` (and drops the older `spec.running`) by merge patch.
    pub async fn halt_vm(&self, ns: &str, name: &str) -> Result<(), KubeError> {
        let api: Api<DynamicObject> = Api::namespaced_with(self.client()?, ns, &vm_resource());
        let patch = json!({"spec": {"runStrategy": "Halted", "running": null}});
        match self
            .call(api.patch(name, &PatchParams::default(), &Patch::Merge(&patch)))
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if e.status() == Some(404) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// The pods bound to `node`, in every namespace, each with the UID a deletion is guarded by.
    pub async fn list_pods_on(&self, node: &str) -> Result<Vec<BoundPod>, KubeError> {
        let api: Api<Pod> = Api::all(self.client()?);
        let lp = ListParams::default().fields(&format!("spec.nodeName={node}"));
        let list = self.call(api.list(&lp)).await?;
        Ok(list
            .items
            .into_iter()
            .map(|p| BoundPod {
                namespace: p.metadata.namespace.unwrap_or_default(),
                name: p.metadata.name.unwrap_or_default(),
                uid: p.metadata.uid.unwrap_or_default(),
            })
            .collect())
    }

    /// Deletes the pod `pod` names with grace period 0: the API server removes it at once,
    /// without waiting for a kubelet to confirm. Only for pods of a node that is proven
    /// stopped. Guarded by the pod's UID: a StatefulSet recreates its pod under the same name,
    /// possibly already running in the surviving room by the time this call arrives, and a
    /// force deletion of that one would leave its kubelet running it while a third copy starts.
    /// What the answer says happened.
    pub async fn force_delete_pod(&self, pod: &BoundPod) -> Result<Deleted, KubeError> {
        let api: Api<Pod> = Api::namespaced(self.client()?, &pod.namespace);
        let dp = DeleteParams::default()
            .grace_period(0)
            .preconditions(uid_precondition(&pod.uid));
        deleted(self.call(api.delete(&pod.name, &dp)).await.map(|_| ()))
    }

    /// Deletes a VMI with grace period 0, guarded by its UID (see [`Kube::force_delete_pod`]:
    /// virt-controller recreates a VM's VMI under the VM's name).
    pub async fn force_delete_vmi(&self, vmi: &VmiRef) -> Result<Deleted, KubeError> {
        self.delete_vmi_guarded(vmi, DeleteParams::default().grace_period(0))
            .await
    }

    /// Deletes a VMI no VM owns (nothing would stop it otherwise), guarded by its UID.
    pub async fn delete_vmi(&self, vmi: &VmiRef) -> Result<Deleted, KubeError> {
        self.delete_vmi_guarded(vmi, DeleteParams::default()).await
    }

    async fn delete_vmi_guarded(
        &self,
        vmi: &VmiRef,
        dp: DeleteParams,
    ) -> Result<Deleted, KubeError> {
        let api: Api<DynamicObject> =
            Api::namespaced_with(self.client()?, &vmi.namespace, &vmi_resource());
        let dp = dp.preconditions(uid_precondition(&vmi.uid));
        deleted(self.call(api.delete(&vmi.name, &dp)).await.map(|_| ()))
    }
}

/// The client configuration for `cfg` (see [`Kube::new`]).
fn client_config(cfg: &KubernetesConfig) -> Result<kube::Config, String> {
    let url = if cfg.api_url.is_empty() {
        let host = std::env::var("KUBERNETES_SERVICE_HOST").map_err(|_| {
            "in-cluster configuration: KUBERNETES_SERVICE_HOST is not set (not running in a \
             pod?); set kubernetes.api_url"
                .to_string()
        })?;
        let port = std::env::var("KUBERNETES_SERVICE_PORT").unwrap_or_else(|_| "443".into());
        // An IPv6 service address needs brackets in a URL.
        if host.contains(':') {
            format!("https://[{host}]:{port}")
        } else {
            format!("https://{host}:{port}")
        }
    } else {
        cfg.api_url.clone()
    };
    let uri = url
        .parse::<http::Uri>()
        .map_err(|e| format!("kubernetes.api_url {url:?}: {e}"))?;
    let https = uri.scheme_str() == Some("https");
    let mut config = kube::Config::new(uri);
    if !https {
        return Ok(config);
    }
    let dir = std::path::Path::new(&cfg.service_account_dir);
    let ca_path = dir.join("ca.crt");
    let ca = std::fs::read(&ca_path).map_err(|e| {
        format!(
            "reading the API's CA {} (kubernetes.service_account_dir): {e}",
            ca_path.display()
        )
    })?;
    let roots: Vec<Vec<u8>> = rustls_pemfile::certs(&mut ca.as_slice())
        .map(|c| c.map(|c| c.as_ref().to_vec()))
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{}: not PEM certificates: {e}", ca_path.display()))?;
    if roots.is_empty() {
        return Err(format!(
            "{}: no certificate in it (kubernetes.service_account_dir)",
            ca_path.display()
        ));
    }
    config.root_cert = Some(roots);
    config.root_cert_file = Some(ca_path);
    let token = dir.join("token");
    if !token.exists() {
        return Err(format!(
            "no service account token at {} (kubernetes.service_account_dir)",
            token.display()
        ));
    }
    config.auth_info.token_file = Some(token.to_string_lossy().into_owned());
    if let Ok(ns) = std::fs::read_to_string(dir.join("namespace")) {
        config.default_namespace = ns.trim().to_string();
    }
    Ok(config)
}

/// One VMI found on this node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VmiRef {
    pub namespace: String,
    pub name: String,
    /// Its `metadata.uid`: what a deletion is guarded by.
    pub uid: String,
    /// The VirtualMachine that owns it; `None` for a standalone VMI.
    pub vm: Option<String>,
}

/// A pod bound to a node, as listed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BoundPod {
    pub namespace: String,
    pub name: String,
    /// Its `metadata.uid`: what a deletion is guarded by.
    pub uid: String,
}

/// What a guarded deletion found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Deleted {
    /// The object listed was deleted.
    Deleted,
    /// Nothing of that name is left (deleted by someone else).
    Gone,
    /// The name now belongs to a new object (the UID differs): left alone.
    Replaced,
}

/// A precondition on `uid`; none for an empty UID (an object listed without one, which a real
/// API server never sends).
fn uid_precondition(uid: &str) -> Preconditions {
    Preconditions {
        uid: (!uid.is_empty()).then(|| uid.to_string()),
        resource_version: None,
    }
}

/// Reads a guarded deletion's answer: 404 is gone, 409 is a failed UID precondition (the
/// name is another object's now).
fn deleted(r: Result<(), KubeError>) -> Result<Deleted, KubeError> {
    match r {
        Ok(()) => Ok(Deleted::Deleted),
        Err(e) if e.status() == Some(404) => Ok(Deleted::Gone),
        Err(e) if e.status() == Some(409) => Ok(Deleted::Replaced),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(url: &str, dir: &std::path::Path) -> KubernetesConfig {
        KubernetesConfig {
            api_url: url.into(),
            service_account_dir: dir.to_string_lossy().into_owned(),
            ..Default::default()
        }
    }

    #[test]
    fn an_https_api_url_authenticates_with_the_service_account_token_and_ca() {
        let dir = tempfile::tempdir().unwrap();
        let e = client_config(&cfg("https://10.1.0.10:6443", dir.path())).unwrap_err();
        assert!(
            e.contains("ca.crt") && e.contains("service_account_dir"),
            "{e}"
        );
        let key = rcgen::KeyPair::generate().unwrap();
        let ca = rcgen::CertificateParams::new(vec!["kubernetes".to_string()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        std::fs::write(dir.path().join("ca.crt"), ca.pem()).unwrap();
        let e = client_config(&cfg("https://10.1.0.10:6443", dir.path())).unwrap_err();
        assert!(e.contains("token"), "{e}");
        std::fs::write(dir.path().join("token"), "t").unwrap();
        std::fs::write(dir.path().join("namespace"), "witness-system\n").unwrap();
        let c = client_config(&cfg("https://10.1.0.10:6443", dir.path())).unwrap();
        assert_eq!(c.root_cert.as_ref().map(Vec::len), Some(1));
        assert!(c
            .auth_info
            .token_file
            .is_some_and(|t| t.ends_with("/token")));
        assert_eq!(c.default_namespace, "witness-system");
    }

    #[test]
    fn a_plain_http_api_url_sends_no_credentials() {
        let dir = tempfile::tempdir().unwrap();
        let c = client_config(&cfg("http://127.0.0.1:1", dir.path())).unwrap();
        assert!(c.root_cert.is_none() && c.auth_info.token_file.is_none());
    }
}
