//! The Kubernetes test double (tests/support) against the real API server: the double must
//! answer the calls the agent relies on the way kube-apiserver did when tests/tests/kube.rs
//! recorded tests/kube/golden/api-answers.json (same status, kind, failure reason, and whether a
//! failure names the object). Otherwise the agent's fast tests would prove behaviour against
//! answers no real cluster gives.
mod support;

use serde_json::{json, Value};
use support::*;

/// Same rule as `witness_tests::kube_fixture::normalise`.
fn normalise(status: u16, body: &Value, object: &str) -> Value {
    let failed = !(200..300).contains(&status);
    json!({
        "status": status,
        "kind": body["kind"],
        "reason": if failed { body["reason"].clone() } else { Value::Null },
        "names_object": failed && !object.is_empty()
            && body["message"].as_str().is_some_and(|m| m.contains(&format!("\"{object}\""))),
    })
}

#[tokio::test]
async fn the_double_answers_the_agents_calls_as_the_real_api_server_did() {
    init();
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/kube/golden/api-answers.json");
    let text = std::fs::read_to_string(&path).expect("tests/kube/golden/api-answers.json");
    let golden: Value = serde_json::from_str(&text).expect("api-answers.json is JSON");
    let cases = golden["cases"].as_array().expect("cases");
    assert!(
        cases.iter().all(|c| !c["answer"].is_null()),
        "{} has cases without a recorded answer: run tests/tests/kube.rs \
         (cargo test -p witness-tests --test kube) to record them",
        path.display()
    );
    let http = reqwest::Client::new();
    let mut diffs = Vec::new();
    for case in cases {
        // Each case against the recorded world as it was (the double's halt stops the VMI, as
        // virt-controller would; the real control plane has none, so its VMI stayed).
        let kube = KubeDouble::start().await;
        {
            let mut w = kube.world.lock().unwrap();
            w.add_node("a1");
            w.add_vm("default", "vm-a1", "a1");
        }
        let rv = kube.node("a1")["metadata"]["resourceVersion"]
            .as_str()
            .unwrap_or("")
            .to_string();
        let method = reqwest::Method::from_bytes(case["method"].as_str().unwrap().as_bytes())
            .expect("method");
        let mut req = http.request(
            method,
            format!("{}{}", kube.url(), case["path"].as_str().unwrap()),
        );
        if !case["body"].is_null() {
            req = req
                .header("Content-Type", case["content_type"].as_str().unwrap())
                .body(case["body"].to_string().replace("{rv}", &rv));
        }
        let r = req.send().await.expect("the double answers");
        let status = r.status().as_u16();
        let body: Value = serde_json::from_str(&r.text().await.unwrap()).unwrap_or(Value::Null);
        let got = normalise(status, &body, case["object"].as_str().unwrap_or(""));
        if got != case["answer"] {
            diffs.push(format!(
                "{}: real {} double {} ({})",
                case["name"], case["answer"], got, body["message"]
            ));
        }
    }
    assert!(
        diffs.is_empty(),
        "the double differs from the real API server ({}):\n{}",
        golden["recorded_with"],
        diffs.join("\n")
    );
}
