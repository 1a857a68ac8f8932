//! Takeover on the survivor: the `node.kubernetes.io/out-of-service=nodeshutdown:NoExecute`
//! taint on every node of the other room, so Kubernetes force-deletes the pods there and
//! detaches their volumes, and the lost room's VMs restart here. Each node also gets the epoch
//! and the witness's proof as annotations (`witness.dev/takeover-epoch`,
//! `witness.dev/takeover-proof`), so anyone can check why the taint is there.
//!
//! Release lifts the taint and the annotations, but only where our annotation shows the taint
//! is ours (an operator's own out-of-service taint is left alone). Both are idempotent JSON
//! patches guarded by the node's resourceVersion and retried on conflicts.
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

/// Applies or lifts the takeover on the other room's nodes.
#[derive(Clone, Debug)]
pub struct Takeover {
    pub kube: Kube,
    /// Every node of the other room (the configured peers).
    pub other_nodes: Vec<String>,
}

/// What happened on one node.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct NodeResult {
    pub node: String,
    pub ok: bool,
    pub detail: String,
}

impl Takeover {
    /// Taints and annotates every node of the other room. Ok only if every node is done.
    pub async fn apply(&self, epoch: Epoch, proof: Option<&str>) -> (bool, Vec<NodeResult>) {
        self.each(
            |n| takeover_ops(n, epoch, proof),
            "out-of-service taint applied",
        )
        .await
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
