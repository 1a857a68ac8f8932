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
use crate::kube::{pointer_escape, Deleted, Kube, KubeError};
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
/// informer lag"). The scheduler and the taint-eviction controller read nodes from their own
/// informer caches, which lag the API server by different amounts. A pod the scheduler places
/// on a node whose NoExecute taint only it has seen lifted is evicted by a controller that still
/// sees the taint, and, while the pod GC still sees out-of-service, force-deleted while it runs.
/// So the fence taint comes off in steps, each seen before the next:
/// 1. wait until the node, read from the API server, carries no out-of-service taint;
/// 2. turn our fence taint from NoExecute into NoSchedule (still nothing is placed here, and
///    nothing evicts for it any more);
/// 3. wait `settle`, so every controller has seen both changes;
/// 4. remove the NoSchedule fence taint: only now can a pod be placed here.
#[derive(Debug)]
pub struct RejoinGate {
    settle: std::time::Duration,
    /// When step 3 began (reset whenever out-of-service is seen again). Held only for a read or
    /// a write, never across an await.
    #[allow(clippy::disallowed_types)]
    settling_since: std::sync::Mutex<Option<tokio::time::Instant>>,
}

/// What a returning node does next about its fence taint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RejoinStep {
    /// Not yet (the reason, for the status page and the log).
    Wait(String),
    /// Turn the NoExecute fence taint into NoSchedule, then wait.
    Downgrade,
    /// The fence taint may come off.
    Remove,
}

/// The patch operations that turn every NoExecute taint with `key` into NoSchedule (`None`:
/// none there).
pub fn downgrade_ops(node: &Node, key: &str) -> Option<Vec<Value>> {
    let taints = node.spec.as_ref()?.taints.as_ref()?;
    let ops: Vec<Value> = taints
        .iter()
        .enumerate()
        .filter(|(_, t)| t.key == key && t.effect == "NoExecute")
        .flat_map(|(i, _)| {
            [
                json!({"op": "test", "path": format!("/spec/taints/{i}/key"), "value": key}),
                json!({"op": "replace", "path": format!("/spec/taints/{i}/effect"), "value": "NoSchedule"}),
                json!({"op": "remove", "path": format!("/spec/taints/{i}/timeAdded")}),
            ]
            .into_iter()
            .filter(move |op| op["op"] != "remove" || taints[i].time_added.is_some())
        })
        .collect();
    (!ops.is_empty()).then_some(ops)
}

impl RejoinGate {
    #[allow(clippy::disallowed_types)]
    pub fn new(settle: std::time::Duration) -> RejoinGate {
        RejoinGate {
            settle,
            settling_since: std::sync::Mutex::new(None),
        }
    }

    fn since(&self) -> std::sync::MutexGuard<'_, Option<tokio::time::Instant>> {
        match self.settling_since.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    /// The next step for `node` (read just now, at `now`) whose fence taint key is `key`.
    pub fn step(&self, node: &Node, key: &str, now: tokio::time::Instant) -> RejoinStep {
        let mut since = self.since();
        if out_of_service(node) {
            *since = None;
            return RejoinStep::Wait(format!(
                "waiting: the node still carries {OUT_OF_SERVICE_KEY} (the survivor lifts it at \
                 rejoin); the fence taint stays until the lift is seen"
            ));
        }
        let taints = node
            .spec
            .as_ref()
            .and_then(|s| s.taints.as_deref())
            .unwrap_or_default();
        if taints
            .iter()
            .any(|t| t.key == key && t.effect == "NoExecute")
        {
            return RejoinStep::Downgrade;
        }
        if !taints.iter().any(|t| t.key == key) {
            // Nothing of ours keeps pods away (the fence ran without the API): nothing to wait for.
            return RejoinStep::Remove;
        }
        // A restarted agent finds NoSchedule already there: it settles again, from now.
        let from = *since.get_or_insert(now);
        let waited = now.saturating_duration_since(from);
        if waited < self.settle {
            return RejoinStep::Wait(format!(
                "waiting: the fence taint is NoSchedule since {} ms; it comes off after {} ms \
                 (kubernetes.unfence_settle_ms) so every controller has seen the lift first",
                waited.as_millis(),
                self.settle.as_millis()
            ));
        }
        RejoinStep::Remove
    }

    /// Steps 1 to 3 against the API: `Ok` when the fence taint `key` may come off `node`,
    /// otherwise what is awaited (the caller tries again later).
    pub async fn ready(&self, kube: &Kube, node: &str, key: &str) -> Result<(), String> {
        let n = kube
            .get_node(node)
            .await
            .map_err(|e| format!("reading node {node} before unfencing: {e}"))?;
        match self.step(&n, key, tokio::time::Instant::now()) {
            RejoinStep::Remove => Ok(()),
            RejoinStep::Wait(why) => Err(why),
            RejoinStep::Downgrade => {
                kube.reconcile_node(node, |n| downgrade_ops(n, key))
                    .await
                    .map_err(|e| format!("turning {key} into NoSchedule on {node}: {e}"))?;
                *self.since() = Some(tokio::time::Instant::now());
                if self.settle.is_zero() {
                    return Ok(());
                }
                Err(format!(
                    "waiting: {key} is NoSchedule now; it comes off after {} ms",
                    self.settle.as_millis()
                ))
            }
        }
    }
}

/// The other room's nodes a takeover acts on: the configured peers, then every node the
/// witness's membership has made a counted peer since this agent started (a node added at
/// runtime, named in no configuration). A node once listed stays listed while the process
/// runs, so a release lifts the taint from every node an earlier takeover may have tainted,
/// even one excluded since (a returning node waits for its taint to be lifted).
// Held only to copy or extend the list, never across an await.
#[allow(clippy::disallowed_types)]
#[derive(Clone, Debug, Default)]
pub struct OtherNodes(std::sync::Arc<std::sync::Mutex<Vec<String>>>);

impl OtherNodes {
    pub fn new(configured: impl IntoIterator<Item = String>) -> OtherNodes {
        let nodes = OtherNodes::default();
        nodes.add(configured);
        nodes
    }

    /// Adds the nodes not listed yet; returns them.
    pub fn add(&self, nodes: impl IntoIterator<Item = String>) -> Vec<String> {
        let mut list = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let mut added = Vec::new();
        for n in nodes {
            if !list.contains(&n) {
                list.push(n.clone());
                added.push(n);
            }
        }
        added
    }

    pub fn list(&self) -> Vec<String> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// Applies or lifts the takeover on the other room's nodes.
#[derive(Clone, Debug)]
pub struct Takeover {
    pub kube: Kube,
    /// Every node of the other room this agent knows of.
    pub other_nodes: OtherNodes,
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

    /// Force-deletes the pods and VMIs bound to `node` (idempotent: gone counts as done). Each
    /// deletion is guarded by the UID listed, so a same-named replacement already started
    /// elsewhere (a StatefulSet's pod, a VM's VMI) is left alone.
    async fn delete_bound(&self, node: &str) -> Result<String, KubeError> {
        let (mut pods, mut vmis, mut replaced) = (0, 0, 0);
        for pod in self.kube.list_pods_on(node).await? {
            match self.kube.force_delete_pod(&pod).await? {
                Deleted::Deleted | Deleted::Gone => pods += 1,
                Deleted::Replaced => replaced += 1,
            }
        }
        for vmi in self.kube.list_vmis(node).await? {
            match self.kube.force_delete_vmi(&vmi).await? {
                Deleted::Deleted | Deleted::Gone => vmis += 1,
                Deleted::Replaced => replaced += 1,
            }
        }
        let mut detail = format!("force-deleted {pods} pods and {vmis} VMIs");
        if replaced > 0 {
            detail.push_str(&format!(
                "; {replaced} already replaced under the same name, left alone"
            ));
        }
        Ok(detail)
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
        let other_nodes = self.other_nodes.list();
        if !self.kube.enabled() {
            let detail = format!("skipped: {}", self.kube.unavailable());
            return (
                true,
                other_nodes
                    .iter()
                    .map(|n| NodeResult {
                        node: n.clone(),
                        ok: true,
                        detail: detail.clone(),
                    })
                    .collect(),
            );
        }
        for n in &other_nodes {
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

    #[test]
    fn the_takeover_covers_configured_peers_then_learned_ones_and_forgets_none() {
        let nodes = OtherNodes::new(["b1".to_string(), "b2".to_string()]);
        assert_eq!(nodes.list(), ["b1", "b2"]);
        let added = nodes.add(["b2".to_string(), "b3".to_string()]);
        assert_eq!(added, ["b3"], "only a node not listed yet is new");
        assert_eq!(nodes.list(), ["b1", "b2", "b3"]);
        assert!(nodes.add(["b1".to_string()]).is_empty());
        let shared = nodes.clone();
        shared.add(["b4".to_string()]);
        assert_eq!(
            nodes.list(),
            ["b1", "b2", "b3", "b4"],
            "clones share one list"
        );
    }
    use k8s_openapi::api::core::v1::NodeSpec;

    fn node_with(taints: &[(&str, &str)]) -> Node {
        Node {
            spec: Some(NodeSpec {
                taints: Some(
                    taints
                        .iter()
                        .map(|(k, e)| k8s_openapi::api::core::v1::Taint {
                            key: k.to_string(),
                            value: Some("2".into()),
                            effect: e.to_string(),
                            time_added: None,
                        })
                        .collect(),
                ),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn a_returning_node_unfences_in_steps_each_seen_before_the_next() {
        let fence = "witness.dev/fenced";
        let gate = RejoinGate::new(std::time::Duration::from_secs(3));
        let t0 = tokio::time::Instant::now();
        let s = std::time::Duration::from_secs;
        let both = node_with(&[(fence, "NoExecute"), (OUT_OF_SERVICE_KEY, "NoExecute")]);
        let fenced = node_with(&[(fence, "NoExecute")]);
        let closed = node_with(&[(fence, "NoSchedule")]);
        // 1. Out-of-service still there: wait, whatever our taint is.
        assert!(
            matches!(gate.step(&both, fence, t0), RejoinStep::Wait(w) if w.contains(OUT_OF_SERVICE_KEY))
        );
        // 2. Lift seen: downgrade our NoExecute taint.
        assert_eq!(gate.step(&fenced, fence, t0 + s(1)), RejoinStep::Downgrade);
        let ops = downgrade_ops(&fenced, fence).unwrap();
        let mut v = serde_json::to_value(&fenced).unwrap();
        let p: json_patch::Patch = serde_json::from_value(Value::Array(ops)).unwrap();
        json_patch::patch(&mut v, &p).unwrap();
        assert_eq!(serde_json::from_value::<Node>(v).unwrap(), closed);
        assert!(downgrade_ops(&closed, fence).is_none());
        // 3. Settle from the first sight of NoSchedule (+1 s): the taint may come off at +4 s.
        assert!(matches!(
            gate.step(&closed, fence, t0 + s(1)),
            RejoinStep::Wait(_)
        ));
        assert!(matches!(
            gate.step(&closed, fence, t0 + s(3)),
            RejoinStep::Wait(_)
        ));
        assert_eq!(gate.step(&closed, fence, t0 + s(4)), RejoinStep::Remove);
        // A new takeover puts out-of-service back: the settle starts over.
        let again = node_with(&[(fence, "NoSchedule"), (OUT_OF_SERVICE_KEY, "NoExecute")]);
        assert!(matches!(
            gate.step(&again, fence, t0 + s(5)),
            RejoinStep::Wait(_)
        ));
        assert!(matches!(
            gate.step(&closed, fence, t0 + s(6)),
            RejoinStep::Wait(_)
        ));
        assert_eq!(gate.step(&closed, fence, t0 + s(9)), RejoinStep::Remove);
        // No fence taint at all (fenced without the API): nothing to wait for.
        assert_eq!(
            gate.step(&node_with(&[]), fence, t0 + s(10)),
            RejoinStep::Remove
        );
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
