//! Prometheus metrics. The names are a contract: alert rules are written against them.
use prometheus::{Encoder, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder};

/// The phases `agent_phase{phase}` knows.
pub const PHASES: [&str; 4] = ["starting", "active", "fencing", "fenced"];

/// Every metric the agent exports, on its own registry.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    pub phase: IntGaugeVec,
    pub lease_valid: IntGauge,
    /// Fractional seconds are exported by the text encoder only for float gauges; the lease
    /// remaining is a float.
    pub lease_remaining_seconds: prometheus::Gauge,
    pub lease_renewals: IntCounterVec,
    pub witness_reachable: IntGauge,
    pub peer_contact: IntGauge,
    pub peer_reachable: IntGauge,
    pub takeover_active: IntGauge,
    pub epoch: IntGauge,
    pub fence_actions: IntCounterVec,
    pub watchdog_held: IntGauge,
    pub certificate_expiry_seconds: IntGauge,
    pub up: IntGauge,
}

impl Metrics {
    pub fn new() -> Metrics {
        let registry = Registry::new();
        // The names and help are constants; registering them on a fresh registry cannot clash,
        // so a failure here is a programming error caught by the tests.
        fn reg<C: prometheus::core::Collector + Clone + 'static>(r: &Registry, c: C) -> C {
            if let Err(e) = r.register(Box::new(c.clone())) {
                tracing::error!("metric registration failed: {e}");
            }
            c
        }
        let gauge =
            |n: &str, h: &str| reg(&registry, IntGauge::new(n, h).expect("valid metric name"));
        let m = Metrics {
            phase: reg(
                &registry,
                IntGaugeVec::new(
                    Opts::new("agent_phase", "1 for the node's current phase"),
                    &["phase"],
                )
                .expect("valid metric"),
            ),
            lease_valid: gauge(
                "agent_lease_valid",
                "1 while the node holds a valid lease from the witness",
            ),
            lease_remaining_seconds: reg(
                &registry,
                prometheus::Gauge::new(
                    "agent_lease_remaining_seconds",
                    "Seconds until the held lease expires (0 without one)",
                )
                .expect("valid metric"),
            ),
            lease_renewals: reg(
                &registry,
                IntCounterVec::new(
                    Opts::new("agent_lease_renewals_total", "Lease requests by outcome"),
                    &["result"],
                )
                .expect("valid metric"),
            ),
            witness_reachable: gauge(
                "agent_witness_reachable",
                "1 if the last lease request was answered",
            ),
            peer_contact: gauge(
                "agent_peer_contact",
                "1 while every node of the other room vouches for us",
            ),
            peer_reachable: gauge(
                "agent_peer_reachable",
                "1 while every node of the other room answers pings",
            ),
            takeover_active: gauge(
                "agent_takeover_active",
                "1 while this node has taken over the other room",
            ),
            epoch: gauge(
                "agent_epoch",
                "The highest fencing epoch this node has seen",
            ),
            fence_actions: reg(
                &registry,
                IntCounterVec::new(
                    Opts::new(
                        "agent_fence_actions_total",
                        "Fencing driver runs by driver and result",
                    ),
                    &["driver", "result"],
                )
                .expect("valid metric"),
            ),
            watchdog_held: gauge(
                "agent_watchdog_held",
                "1 while the agent holds the watchdog device open",
            ),
            certificate_expiry_seconds: gauge(
                "agent_certificate_expiry_seconds",
                "Seconds until the node's certificate expires",
            ),
            up: gauge("agent_up", "1 while the agent runs"),
            registry,
        };
        for p in PHASES {
            m.phase.with_label_values(&[p]).set(0);
        }
        for r in ["grant", "fence", "retry", "error"] {
            m.lease_renewals.with_label_values(&[r]);
        }
        for d in crate::drivers::DRIVERS {
            for r in ["ok", "failed", "overran", "skipped"] {
                m.fence_actions.with_label_values(&[d, r]);
            }
        }
        m.up.set(1);
        m
    }

    /// Sets `agent_phase` to 1 for `phase` and 0 for the others.
    pub fn set_phase(&self, phase: &str) {
        for p in PHASES {
            self.phase
                .with_label_values(&[p])
                .set(i64::from(p == phase));
        }
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut buf) {
            tracing::error!("metrics encoding failed: {e}");
        }
        String::from_utf8_lossy(&buf).into_owned()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_contracted_metric_name_is_exported() {
        let m = Metrics::new();
        m.set_phase("active");
        let text = m.render();
        for name in [
            "agent_phase{phase=\"active\"} 1",
            "agent_phase{phase=\"fencing\"} 0",
            "agent_lease_valid",
            "agent_lease_remaining_seconds",
            "agent_lease_renewals_total{result=\"grant\"}",
            "agent_witness_reachable",
            "agent_peer_contact",
            "agent_peer_reachable",
            "agent_takeover_active",
            "agent_epoch",
            "agent_fence_actions_total{driver=\"drbd\",result=\"overran\"}",
            "agent_watchdog_held",
            "agent_certificate_expiry_seconds",
            "agent_up 1",
        ] {
            assert!(text.contains(name), "{name} missing from\n{text}");
        }
    }
}
