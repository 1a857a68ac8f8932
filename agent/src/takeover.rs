//! Takeover on the survivor: the `node.kubernetes.io/out-of-service=nodeshutdown:NoExecute`
//! taint on every node of the other room, so Kubernetes force-deletes the pods there and
//! detaches their volumes, and the lost room's VMs restart here. Each node also gets the epoch
//! and the witness's proof as annotations (`witness.dev/takeover-epoch`,
//! `witness.dev/takeover-proof`), so anyone can check why the taint is there.
//!
//! With `kubernetes.takeover_delete = "pods-and-vmis"` (the default) the takeover also
//! force-deletes (grace period 0) every pod and VirtualMachineInstance bound to those nodes,
//! as Medik8s's resource-deletion strategy does: the proof that allows the taint (every node of
//! the other room has stopped, measured on one true clock) allows this too, and it saves the wait
//! for kube-controller-manager (node-monitor grace, then the pod GC's tick).
//!
//! Release lifts the taint and the annotations, but only where our annotation shows the taint
//! is ours (an operator's own out-of-service taint is left alone). Both are idempotent JSON
//! patches guarded by the node's resourceVersion and retried on conflicts.
use crate::config::TakeoverDelete;
use crate::kube::{pointer_escape, Kube, KubeError};
use k8s_openapi::api::core::v1::Node;
use proto::Epoch;
use serde_json::{json, Value};

pub const OUT_OF_SERVICE_KEY: &str = "node.kubernetes.io/out-of-service";
pub const OUT_OF_SERVICE_VALUE: &str = "nodeshutdown";
pub const EPOCH_ANNOTATION: &str = "witness.dev/takeover-epoch";
pub const PROOF_ANNOTATION: &str = "witness.dev/takeover-proof";

fn annotations(node: &Node) -> Option<&std::collections::BTreeMap<String, String>> {
    node.metadata.annotations.as_ref()
}

fn oos_index(node: &Node) -> Option<usize> {
    node.spec
        .as_ref()?
        .taints
        .as_ref()?
        .iter()
        .position(|t| t.key == OUT_OF_SERVICE_KEY && t.effect == "NoExecute")
}

/// The operations that put the taint and annotations on `node` (`None`: already there).
pub fn takeover_ops(node: &Node, epoch: Epoch, proof: Option<&str>) -> Option<Vec<Value>> {
    let mut ops = Vec::new();
    let epoch_s = epoch.0.to_string();
    let ann = annotations(node);
    let has_epoch = ann.and_then(|a| a.get(EPOCH_ANNOTATION)) == Some(&epoch_s);
    let has_proof = ann
        .and_then(|a| a.get(PROOF_ANNOTATION))
        .map(String::as_str)
        == proof;
    if !(has_epoch && has_proof) {
        if ann.is_none() {
            ops.push(json!({"op": "add", "path": "/metadata/annotations", "value": {}}));
        }
        ops.push(json!({"op": "add", "path": format!("/metadata/annotations/{}", pointer_escape(EPOCH_ANNOTATION)), "value": epoch_s}));
        match proof {
            Some(p) => ops.push(json!({"op": "add", "path": format!("/metadata/annotations/{}", pointer_escape(PROOF_ANNOTATION)), "value": p})),
            None if ann.is_some_and(|a| a.contains_key(PROOF_ANNOTATION)) => ops.push(json!({"op": "remove", "path": format!("/metadata/annotations/{}", pointer_escape(PROOF_ANNOTATION))})),
            None => {}
        }
    }
    if oos_index(node).is_none() {
        let taint = json!({"key": OUT_OF_SERVICE_KEY, "value": OUT_OF_SERVICE_VALUE, "effect": "NoExecute"});
        match node.spec.as_ref().and_then(|s| s.taints.as_ref()) {
            Some(_) => ops.push(json!({"op": "add", "path": "/spec/taints/-", "value": taint})),
            None if node.spec.is_some() => {
                ops.push(json!({"op": "add", "path": "/spec/taints", "value": [taint]}))
            }
            None => ops.push(json!({"op": "add", "path": "/spec", "value": {"taints": [taint]}})),
        }
    }
    (!ops.is_empty()).then_some(ops)
}

/// The operations that lift our taint and annotations (`None`: nothing of ours is there).
pub fn release_ops(node: &Node) -> Option<Vec<Value>> {
    let ann = annotations(node)?;
    if !ann.contains_key(EPOCH_ANNOTATION) {
        return None; // not our takeover: leave any out-of-service taint alone
    }
    let mut ops = Vec::new();
    if let Some(i) = oos_index(node) {
        ops.push(json!({"op": "test", "path": format!("/spec/taints/{i}/key"), "value": OUT_OF_SERVICE_KEY}));
        ops.push(json!({"op": "remove", "path": format!("/spec/taints/{i}")}));
    }
    for k in [EPOCH_ANNOTATION, PROOF_ANNOTATION] {
        if ann.contains_key(k) {
            ops.push(json!({"op": "remove", "path": format!("/metadata/annotations/{}", pointer_escape(k))}));
        }
    }
    Some(ops)
}

/// Whether this node carries an out-of-service taint (ours or an operator's).
pub fn out_of_service(node: &Node) -> bool {
    oos_index(node).is_some()
}

/// The rejoin rule for a returning node (kubernetes#142331, docs/protocol.md "Rejoin and the
/// informer lag"): its own NoExecute fence taint stays until it has read its Node from the API
/// server without the out-of-service taint and then `settle` has passed, so the controllers'
/// informers (the taint-eviction controller, the pod GC) have seen the lift before the scheduler
/// can place a pod here. Otherwise a pod bound right after the lift can be evicted and then
/// force-deleted by a controller still acting on the cached taint, while it runs.
#[derive(Debug)]
pub struct RejoinGate {
    settle: std::time::Duration,
    /// When the lift was first seen (reset whenever the taint is seen again). Held only for a
    /// read or a write, never across an await.
    #[allow(clippy::disallowed_types)]
    lift_seen: std::sync::Mutex<Option<tokio::time::Instant>>,
}

impl RejoinGate {
    #[allow(clippy::disallowed_types)]
    pub fn new(settle: std::time::Duration) -> RejoinGate {
        RejoinGate {
            settle,
            lift_seen: std::sync::Mutex::new(None),
        }
    }

    /// `Ok` when the fence taint may come off `node` (read just now, at `now`); otherwise what
    /// is awaited, and the caller tries again later.
    pub fn check(&self, node: &Node, now: tokio::time::Instant) -> Result<(), String> {
        let mut seen = match self.lift_seen.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        if out_of_service(node) {
            *seen = None;
            return Err(format!(
                "waiting: the node still carries {OUT_OF_SERVICE_KEY} (the survivor lifts it at                  rejoin); the fence taint stays until the lift is seen"
            ));
        }
        let since = *seen.get_or_insert(now);
        let waited = now.saturating_duration_since(since);
        if waited < self.settle {
            return Err(format!(
                "waiting: {OUT_OF_SERVICE_KEY} lift seen {} ms ago, the fence taint stays {} ms                  after it (kubernetes.unfence_settle_ms) so the controllers see the lift first",
                waited.as_millis(),
                self.settle.as_millis()
            ));
        }
        Ok(())
    }
}

/// Applies or lifts the takeover on the other room's nodes.
#[derive(Clone, Debug)]
pub struct Takeover {
    pub kube: Kube,
    /// Every node of the other room (the configured peers).
    pub other_nodes: Vec<String>,
    /// What the takeover deletes besides tainting (`kubernetes.takeover_delete`).
    pub delete: TakeoverDelete,
}

/// What happened on one node.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct NodeResult {
    pub node: String,
    pub ok: bool,
    pub detail: String,
}

impl Takeover {
    /// Taints and annotates every node of the other room, then (if configured) force-deletes
    /// what is bound to it. Ok only if every node is done. Called only with the permit
    /// `Allowed`, i.e. after the takeover bound.
    pub async fn apply(&self, epoch: Epoch, proof: Option<&str>) -> (bool, Vec<NodeResult>) {
        let (mut all_ok, mut nodes) = self
            .each(
                |n| takeover_ops(n, epoch, proof),
                "out-of-service taint applied",
            )
            .await;
        if self.delete == TakeoverDelete::None || !self.kube.enabled() {
            return (all_ok, nodes);
        }
        for r in nodes.iter_mut().filter(|r| r.ok) {
            match self.delete_bound(&r.node).await {
                Ok(d) => r.detail = format!("{}; {d}", r.detail),
                Err(e) => {
                    r.ok = false;
                    all_ok = false;
                    r.detail = format!("{}; force-deleting what is bound to it: {e}", r.detail);
                }
            }
        }
        (all_ok, nodes)
    }

    /// Force-deletes the pods and VMIs bound to `node` (idempotent: gone counts as done).
    async fn delete_bound(&self, node: &str) -> Result<String, KubeError> {
        let pods = self.kube.list_pods_on(node).await?;
        for (ns, name) in &pods {
            self.kube.force_delete_pod(ns, name).await?;
        }
        let vmis = self.kube.list_vmis(node).await?;
        for v in &vmis {
            self.kube.force_delete_vmi(&v.namespace, &v.name).await?;
        }
        Ok(format!(
            "force-deleted {} pods and {} VMIs",
            pods.len(),
            vmis.len()
        ))
    }

    /// Lifts our taint and annotations from every node of the other room.
    pub async fn release(&self) -> (bool, Vec<NodeResult>) {
        self.each(release_ops, "out-of-service taint lifted").await
    }

    async fn each(
        &self,
        change: impl Fn(&Node) -> Option<Vec<Value>>,
        what: &str,
    ) -> (bool, Vec<NodeResult>) {
        let mut all_ok = true;
        let mut out = Vec::new();
        if !self.kube.enabled() {
            let detail = format!("skipped: {}", self.kube.unavailable());
            return (
                true,
                self.other_nodes
                    .iter()
                    .map(|n| NodeResult {
                        node: n.clone(),
                        ok: true,
                        detail: detail.clone(),
                    })
                    .collect(),
            );
        }
        for n in &self.other_nodes {
            let r: Result<bool, KubeError> = self.kube.reconcile_node(n, &change).await;
            let (ok, detail) = match r {
                Ok(true) => (true, what.to_string()),
                Ok(false) => (true, "already as wanted".to_string()),
                Err(e) => (false, e.to_string()),
            };
            all_ok &= ok;
            out.push(NodeResult {
                node: n.clone(),
                ok,
                detail,
            });
        }
        (all_ok, out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::NodeSpec;

    #[test]
    fn a_returning_node_unfences_only_after_the_lift_has_settled() {
        let tainted = Node {
            spec: Some(NodeSpec {
                taints: Some(vec![k8s_openapi::api::core::v1::Taint {
                    key: OUT_OF_SERVICE_KEY.into(),
                    value: Some(OUT_OF_SERVICE_VALUE.into()),
                    effect: "NoExecute".into(),
                    time_added: None,
                }]),
                ..Default::default()
            }),
            ..Default::default()
        };
        let clear = Node::default();
        let gate = RejoinGate::new(std::time::Duration::from_secs(3));
        let t0 = tokio::time::Instant::now();
        let s = std::time::Duration::from_secs;
        let e = gate.check(&tainted, t0).unwrap_err();
        assert!(e.contains(OUT_OF_SERVICE_KEY), "{e}");
        // The lift is seen at +1 s; the taint may come off from +4 s on.
        assert!(gate.check(&clear, t0 + s(1)).is_err());
        assert!(gate.check(&clear, t0 + s(3)).is_err());
        assert!(gate.check(&clear, t0 + s(4)).is_ok());
        // A new takeover puts the taint back: the settle starts over after the next lift.
        assert!(gate.check(&tainted, t0 + s(5)).is_err());
        assert!(gate.check(&clear, t0 + s(6)).is_err());
        assert!(gate.check(&clear, t0 + s(9)).is_ok());
        // Without a settle time, the first read without the taint is enough.
        let now = RejoinGate::new(std::time::Duration::ZERO);
        assert!(now.check(&clear, t0).is_ok());
    }

    #[test]
    fn takeover_then_release_round_trips_and_is_idempotent() {
        let mut node = Node {
            spec: Some(NodeSpec::default()),
            ..Default::default()
        };
        let ops = takeover_ops(&node, Epoch(4), Some("jwt")).unwrap();
        let mut v = serde_json::to_value(&node).unwrap();
        let p: json_patch::Patch = serde_json::from_value(Value::Array(ops)).unwrap();
        json_patch::patch(&mut v, &p).unwrap();
        node = serde_json::from_value(v.clone()).unwrap();
        assert!(takeover_ops(&node, Epoch(4), Some("jwt")).is_none());
        assert_eq!(v["metadata"]["annotations"][EPOCH_ANNOTATION], "4");
        assert_eq!(v["spec"]["taints"][0]["key"], OUT_OF_SERVICE_KEY);
        let ops = release_ops(&node).unwrap();
        let p: json_patch::Patch = serde_json::from_value(Value::Array(ops)).unwrap();
        json_patch::patch(&mut v, &p).unwrap();
        node = serde_json::from_value(v.clone()).unwrap();
        assert_eq!(oos_index(&node), None);
        assert!(release_ops(&node).is_none_or(|o| o.is_empty()));
    }
}
