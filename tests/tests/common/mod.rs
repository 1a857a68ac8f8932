//! Shared steps of the scenario and chaos tests: start a warm cluster (or skip without root),
//! judge the run with the checker, write the report row, and fail loudly with the timeline.
#![allow(dead_code)]
use anyhow::Result;
use witness_tests::report::{write_row, Row};
use witness_tests::{Cluster, Event, Spec};

/// What a scenario observed.
pub struct Outcome {
    pub text: String,
    pub measured_ms: Option<u64>,
    pub bound_ms: Option<u64>,
}

impl Outcome {
    pub fn plain(text: impl Into<String>) -> Outcome {
        Outcome {
            text: text.into(),
            measured_ms: None,
            bound_ms: None,
        }
    }
}

/// Starts the cluster and waits until every node is active; `None` when not root.
pub fn warm(spec: Spec) -> Option<Cluster> {
    let c = match Cluster::start(spec) {
        Ok(Some(c)) => c,
        Ok(None) => return None,
        Err(e) => panic!("cannot start the cluster: {e:#}"),
    };
    if let Err(e) = c.wait_all_active(30_000) {
        c.keep_logs();
        c.print_timeline();
        panic!("the cluster did not come up: {e:#}");
    }
    Some(c)
}

/// Judges the run: the scenario's own result and the checker; writes the report row; panics
/// (with the timeline) on failure.
pub fn conclude(c: &Cluster, id: &str, scenario: &str, r: Result<Outcome>, assert_safe: bool) {
    let v = c.verdict();
    let (text, measured_ms, bound_ms, ok_run, err) = match &r {
        Ok(o) => (o.text.clone(), o.measured_ms, o.bound_ms, true, None),
        Err(e) => (
            format!("FAILED: {e:#}"),
            None,
            None,
            false,
            Some(format!("{e:#}")),
        ),
    };
    let passed = ok_run && (v.ok() || !assert_safe);
    if let (Some(m), Some(b)) = (measured_ms, bound_ms) {
        println!("[{id}] failover {m} ms (bound {b} ms)");
    }
    println!("[{id}] outcome: {text}");
    let row = Row {
        id: id.to_string(),
        scenario: scenario.to_string(),
        outcome: text,
        measured_ms,
        bound_ms,
        checker: v.line(),
        passed,
        reported_only: !assert_safe,
    };
    if let Err(e) = write_row(&row) {
        println!("[{id}] cannot write the report row: {e}");
    }
    if !passed || std::env::var("WT_KEEP_LOGS").is_ok_and(|v| v == "1") {
        c.keep_logs();
    }
    if !passed {
        c.print_timeline();
        panic!(
            "[{id}] {}; {}",
            err.unwrap_or_else(|| "checker rejected the run".into()),
            v.line()
        );
    }
}

/// The first takeover event at or after `t0`.
pub fn first_takeover(ev: &[Event], t0: u64) -> Option<&Event> {
    ev.iter().find(|e| e.t >= t0 && e.kind == "takeover")
}

/// Number of events of `kind` at or after `t0` (optionally of one node).
pub fn count(ev: &[Event], t0: u64, kind: &str, node: Option<&str>) -> usize {
    ev.iter()
        .filter(|e| e.t >= t0 && e.kind == kind && node.is_none_or(|n| e.node == n))
        .count()
}

/// The other room.
pub fn other(room: &str) -> &'static str {
    if room == "a" {
        "b"
    } else {
        "a"
    }
}

/// The nodes of a room.
pub fn nodes_of(room: &str) -> [&'static str; 2] {
    if room == "a" {
        ["a1", "a2"]
    } else {
        ["b1", "b2"]
    }
}

/// Nothing fenced or took over since `t0`.
pub fn quiet_since(t0: u64) -> impl Fn(&[Event]) -> Option<String> {
    move |ev: &[Event]| {
        ev.iter()
            .find(|e| e.t >= t0 && matches!(e.kind.as_str(), "fence" | "takeover" | "reset"))
            .map(|e| format!("{} {} at t={} ms: {}", e.node, e.kind, e.t, e.data))
    }
}
