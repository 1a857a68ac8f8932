//! The Kubernetes API as the agent uses it: nodes (taints, annotations) and KubeVirt VMs, through
//! kube-rs. Every change is a JSON patch guarded by a `test` of the `resourceVersion` the change
//! was computed from, so a concurrent writer is never overwritten; a conflict (409, or 422 from
//! a failed `test`) re-reads the node and tries again.
//!
//! "The API does not answer" (a room cut off from the control plane) is an error like any other
//! here; the drivers decide what it means for them.
use crate::config::KubernetesConfig;
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, ListParams, Patch, PatchParams};
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
    /// Builds the client: from `api_url` when set (plain http allowed, for the stand-in in tests),
    /// else from the in-cluster service account. A failure is kept and reported on every use.
    pub fn new(cfg: &KubernetesConfig) -> Kube {
        let call_timeout = Duration::from_secs(5);
        if !cfg.enabled {
            return Kube {
                client: Err("kubernetes.enabled = false".into()),
                call_timeout,
            };
        }
        let config = if cfg.api_url.is_empty() {
            kube::Config::incluster().map_err(|e| format!("in-cluster configuration: {e}"))
        } else {
            cfg.api_url
                .parse::<http::Uri>()
                .map(kube::Config::new)
                .map_err(|e| format!("kubernetes.api_url: {e}"))
        };
        let client = config.and_then(|mut c| {
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
                    vm,
                }
            })
            .collect())
    }

    /// `PUT .../virtualmachines/<name>/stop`. A VM that is not running (409) or gone (404) is
    /// already where we want it.
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
            Err(e) if matches!(e.status(), Some(404) | Some(409)) => Ok(()),
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

    /// Deletes a VMI no VM owns (nothing would stop it otherwise).
    pub async fn delete_vmi(&self, ns: &str, name: &str) -> Result<(), KubeError> {
        let api: Api<DynamicObject> = Api::namespaced_with(self.client()?, ns, &vmi_resource());
        match self.call(api.delete(name, &DeleteParams::default())).await {
            Ok(_) => Ok(()),
            Err(e) if e.status() == Some(404) => Ok(()),
            Err(e) => Err(e),
        }
    }
}

/// One VMI found on this node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VmiRef {
    pub namespace: String,
    pub name: String,
    /// The VirtualMachine that owns it; `None` for a standalone VMI.
    pub vm: Option<String>,
}
