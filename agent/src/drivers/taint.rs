//! Node taint: our own `NoExecute` taint (`kubernetes.fence_taint_key`, value = the epoch) on
//! this node, so the scheduler and the taint manager stop placing and running pods here.
//! Added by JSON patch when the API answers; skipped (and reported) when it does not, because a
//! room cut off from the control plane cannot taint anything and must not wait for it.
use super::{DriverReport, FenceContext, FenceDriver, FenceError};
use crate::kube::Kube;
use crate::takeover::RejoinGate;
use futures::future::BoxFuture;
use k8s_openapi::api::core::v1::Node;
use serde_json::{json, Value};
use std::time::Duration;

/// Taints this node while it is fenced.
pub struct TaintDriver {
    pub kube: Kube,
    pub node: String,
    pub key: String,
    pub deadline: Duration,
    /// Unfence waits for the out-of-service lift and lifts our taint in steps (kubernetes#142331).
    pub rejoin: RejoinGate,
}

/// The patch operations that put `key=value:NoExecute` on the node (`None`: already there).
pub fn add_taint_ops(node: &Node, key: &str, value: &str) -> Option<Vec<Value>> {
    let taint = json!({"key": key, "value": value, "effect": "NoExecute"});
    let Some(spec) = node.spec.as_ref() else {
        return Some(vec![
            json!({"op": "add", "path": "/spec", "value": {"taints": [taint]}}),
        ]);
    };
    let Some(taints) = spec.taints.as_ref() else {
        return Some(vec![
            json!({"op": "add", "path": "/spec/taints", "value": [taint]}),
        ]);
    };
    match taints
        .iter()
        .position(|t| t.key == key && t.effect == "NoExecute")
    {
        Some(i) if taints[i].value.as_deref() == Some(value) => None,
        Some(i) => Some(vec![
            json!({"op": "test", "path": format!("/spec/taints/{i}/key"), "value": key}),
            json!({"op": "replace", "path": format!("/spec/taints/{i}/value"), "value": value}),
        ]),
        None => Some(vec![
            json!({"op": "add", "path": "/spec/taints/-", "value": taint}),
        ]),
    }
}

/// The patch operations that remove every taint with `key` (`None`: none there). Each removal
/// is guarded by a `test` of the key at that index, highest index first so indexes stay valid.
pub fn remove_taint_ops(node: &Node, key: &str) -> Option<Vec<Value>> {
    let taints = node.spec.as_ref()?.taints.as_ref()?;
    let idx: Vec<usize> = taints
        .iter()
        .enumerate()
        .filter(|(_, t)| t.key == key)
        .map(|(i, _)| i)
        .collect();
    if idx.is_empty() {
        return None;
    }
    let mut ops = Vec::new();
    for i in idx.into_iter().rev() {
        ops.push(json!({"op": "test", "path": format!("/spec/taints/{i}/key"), "value": key}));
        ops.push(json!({"op": "remove", "path": format!("/spec/taints/{i}")}));
    }
    Some(ops)
}

impl FenceDriver for TaintDriver {
    fn name(&self) -> &'static str {
        "taint"
    }

    fn deadline(&self) -> Duration {
        self.deadline
    }

    fn fence<'a>(
        &'a self,
        ctx: &'a FenceContext,
    ) -> BoxFuture<'a, Result<DriverReport, FenceError>> {
        Box::pin(async move {
            if !self.kube.enabled() {
                return Ok(DriverReport::skipped(self.kube.unavailable()));
            }
            let value = ctx.epoch.0.to_string();
            // Leave a tenth of the deadline so "no answer" is reported as skipped, not overrun.
            let budget = self.deadline.mul_f64(0.9);
            let work = self
                .kube
                .reconcile_node(&self.node, |n| add_taint_ops(n, &self.key, &value));
            match tokio::time::timeout(budget, work).await {
                Ok(Ok(true)) => Ok(DriverReport::ok(format!(
                    "tainted node {} with {}={}:NoExecute",
                    self.node, self.key, value
                ))),
                Ok(Ok(false)) => Ok(DriverReport::ok(format!(
                    "node {} already carries {}={}:NoExecute",
                    self.node, self.key, value
                ))),
                Ok(Err(e)) if e.answered() => Err(FenceError::Failed(format!(
                    "tainting node {}: {e}",
                    self.node
                ))),
                Ok(Err(e)) => Ok(DriverReport::skipped(format!(
                    "API unreachable, taint skipped: {e}"
                ))),
                Err(_) => Ok(DriverReport::skipped(format!(
                    "API did not answer within {} ms, taint skipped",
                    budget.as_millis()
                ))),
            }
        })
    }

    fn unfence<'a>(
        &'a self,
        _ctx: &'a FenceContext,
    ) -> BoxFuture<'a, Result<DriverReport, FenceError>> {
        Box::pin(async move {
            if !self.kube.enabled() {
                return Ok(DriverReport::skipped(self.kube.unavailable()));
            }
            self.rejoin
                .ready(&self.kube, &self.node, &self.key)
                .await
                .map_err(FenceError::Failed)?;
            match self
                .kube
                .reconcile_node(&self.node, |n| remove_taint_ops(n, &self.key))
                .await
            {
                Ok(true) => Ok(DriverReport::ok(format!(
                    "removed taint {} from node {}",
                    self.key, self.node
                ))),
                Ok(false) => Ok(DriverReport::ok(format!(
                    "node {} carries no {} taint",
                    self.node, self.key
                ))),
                Err(e) => Err(FenceError::Failed(format!(
                    "untainting node {}: {e}",
                    self.node
                ))),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{NodeSpec, Taint};

    fn node(taints: Option<Vec<Taint>>) -> Node {
        Node {
            spec: Some(NodeSpec {
                taints,
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn taint(key: &str, value: &str) -> Taint {
        Taint {
            key: key.into(),
            value: Some(value.into()),
            effect: "NoExecute".into(),
            time_added: None,
        }
    }

    #[test]
    fn taint_ops_add_update_or_leave_alone() {
        let k = "witness.dev/fenced";
        let ops = add_taint_ops(&node(None), k, "3").unwrap();
        assert_eq!(ops[0]["path"], "/spec/taints");
        let ops = add_taint_ops(&node(Some(vec![taint("other", "x")])), k, "3").unwrap();
        assert_eq!(ops[0]["path"], "/spec/taints/-");
        assert!(add_taint_ops(&node(Some(vec![taint(k, "3")])), k, "3").is_none());
        let ops = add_taint_ops(&node(Some(vec![taint("o", "x"), taint(k, "2")])), k, "3").unwrap();
        assert_eq!(ops[1]["path"], "/spec/taints/1/value");
        assert_eq!(ops[0]["op"], "test");
    }

    #[test]
    fn untaint_ops_remove_only_our_key_guarded_by_tests() {
        let k = "witness.dev/fenced";
        assert!(remove_taint_ops(&node(Some(vec![taint("o", "x")])), k).is_none());
        let ops = remove_taint_ops(&node(Some(vec![taint("o", "x"), taint(k, "2")])), k).unwrap();
        assert_eq!(
            ops,
            vec![
                json!({"op":"test","path":"/spec/taints/1/key","value":k}),
                json!({"op":"remove","path":"/spec/taints/1"}),
            ]
        );
    }
}
