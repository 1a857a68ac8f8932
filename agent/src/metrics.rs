//! Prometheus metrics. The names are a contract: alert rules are written against them.
//!
//! Besides the node's state, three measurements feed field alerts (deploy/monitoring): the
//! round-trip time of the pings to the other room (`agent_peer_rtt_seconds`, against
//! `agent_heartbeat_interval_seconds`), the rate of this node's clock against the witness's
//! (`agent_clock_rate_skew_ratio`, against `agent_clock_drift_bound_ratio`, the configured ρ),
//! and the expiry of the CA certificates the agent trusts.
use prometheus::{
    Encoder, Gauge, Histogram, HistogramOpts, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
    TextEncoder,
};
use std::sync::Arc;

/// A clock-rate sample window shorter than this is too noisy: the witness's signing instant is
/// known only to within the round trip, so a window of W ms has an error of about RTT/W.
pub const SKEW_WINDOW_MS: u64 = 60_000;

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
    /// Round trips of answered pings to the other room.
    pub peer_rtt_seconds: Histogram,
    /// The configured heartbeat interval H, so alerts compare the RTT with it.
    pub heartbeat_interval_seconds: Gauge,
    /// (witness time elapsed / our time elapsed) − 1 over the last window of renewals.
    pub clock_rate_skew_ratio: Gauge,
    /// The configured clock-rate bound ρ (`timings.drift_ppm` / 10⁶).
    pub clock_drift_bound_ratio: Gauge,
    /// Unix time when the first CA certificate in `tls.ca` to expire does.
    pub trust_anchor_expiry_timestamp_seconds: IntGauge,
    skew: Arc<SkewWindow>,
}

/// Estimates the rate of this node's clock against the witness's from lease renewals: each
/// reply carries the witness's clock (`witness_ms`), and the agent notes its own
/// clock at the midpoint of the request. Over a window of at least [`SKEW_WINDOW_MS`] the ratio of
/// the two elapsed times is the rate ratio.
#[derive(Debug, Default)]
pub struct SkewWindow {
    /// The window's first sample (our ms, witness ms). Held only for a read or a write, never
    /// across an await.
    #[allow(clippy::disallowed_types)]
    start: std::sync::Mutex<Option<(u64, u64)>>,
}

impl SkewWindow {
    /// Adds a sample; returns the skew when a window closes.
    pub fn sample(&self, ours_ms: u64, witness_ms: u64) -> Option<f64> {
        let mut start = match self.start.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        let Some((a0, w0)) = *start else {
            *start = Some((ours_ms, witness_ms));
            return None;
        };
        // A witness clock stepped back, or our clock behind the window (a restart): start over.
        if witness_ms < w0 || ours_ms < a0 {
            *start = Some((ours_ms, witness_ms));
            return None;
        }
        let ours = ours_ms - a0;
        if ours < SKEW_WINDOW_MS {
            return None;
        }
        *start = Some((ours_ms, witness_ms));
        Some((witness_ms - w0) as f64 / ours as f64 - 1.0)
    }
}

/// The earliest not-after (Unix seconds) of the certificates in a PEM file of CA certificates.
pub fn earliest_not_after(pem: &[u8]) -> Result<i64, String> {
    let mut earliest = None;
    for c in rustls_pemfile::certs(&mut &pem[..]) {
        let c = c.map_err(|e| format!("not PEM: {e}"))?;
        let t = crate::tls::cert_not_after(&c).map_err(|e| e.to_string())?;
        earliest = Some(earliest.map_or(t, |e: i64| e.min(t)));
    }
    earliest.ok_or_else(|| "no certificate in it".to_string())
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
            peer_rtt_seconds: reg(
                &registry,
                Histogram::with_opts(
                    HistogramOpts::new(
                        "agent_peer_rtt_seconds",
                        "Round-trip time of answered pings to the other room's nodes",
                    )
                    .buckets(vec![
                        0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4,
                        0.5, 0.75, 1.0, 2.0,
                    ]),
                )
                .expect("valid metric"),
            ),
            heartbeat_interval_seconds: reg(
                &registry,
                Gauge::new(
                    "agent_heartbeat_interval_seconds",
                    "The configured heartbeat interval (timings.heartbeat_interval_ms)",
                )
                .expect("valid metric"),
            ),
            clock_rate_skew_ratio: reg(
                &registry,
                Gauge::new(
                    "agent_clock_rate_skew_ratio",
                    "Rate of the witness's clock against this node's, minus 1, measured over \
                     lease renewals (0 until a window of 60 s has been measured)",
                )
                .expect("valid metric"),
            ),
            clock_drift_bound_ratio: reg(
                &registry,
                Gauge::new(
                    "agent_clock_drift_bound_ratio",
                    "The configured clock-rate bound rho (timings.drift_ppm / 1e6)",
                )
                .expect("valid metric"),
            ),
            trust_anchor_expiry_timestamp_seconds: gauge(
                "agent_trust_anchor_expiry_timestamp_seconds",
                "Unix time when the first CA certificate in tls.ca expires",
            ),
            skew: Arc::new(SkewWindow::default()),
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

    /// Sets the gauges that show the configuration the measurements are judged against.
    pub fn set_bounds(&self, t: &proto::Timings) {
        self.heartbeat_interval_seconds
            .set(t.heartbeat_interval_ms as f64 / 1000.0);
        self.clock_drift_bound_ratio
            .set(t.drift_ppm as f64 / 1_000_000.0);
    }

    /// A granted renewal: `sent_ms`/`received_ms` on our protocol clock, the witness's
    /// signing time from the grant's proof.
    pub fn observe_renewal(&self, sent_ms: u64, received_ms: u64, witness_ms: u64) {
        let mid = sent_ms + received_ms.saturating_sub(sent_ms) / 2;
        if let Some(skew) = self.skew.sample(mid, witness_ms) {
            self.clock_rate_skew_ratio.set(skew);
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
            "agent_peer_rtt_seconds_bucket",
            "agent_heartbeat_interval_seconds",
            "agent_clock_rate_skew_ratio",
            "agent_clock_drift_bound_ratio",
            "agent_trust_anchor_expiry_timestamp_seconds",
        ] {
            assert!(text.contains(name), "{name} missing from\n{text}");
        }
    }

    #[test]
    fn the_clock_rate_skew_is_measured_over_a_window_of_renewals() {
        let m = Metrics::new();
        // The witness's clock runs 2% fast against ours: 1020 ms for each 1000 ms of ours.
        for i in 0..=60u64 {
            let ours = 5_000 + i * 1_000;
            m.observe_renewal(ours - 3, ours + 3, 1_700_000_000_000 + i * 1_020);
        }
        let skew = m.clock_rate_skew_ratio.get();
        assert!((skew - 0.02).abs() < 1e-3, "{skew}");
        // A witness clock stepped back starts a new window instead of a negative rate.
        let w = SkewWindow::default();
        assert_eq!(w.sample(0, 10_000), None);
        assert_eq!(w.sample(70_000, 5_000), None);
        let s = w.sample(130_000, 5_000 + 59_400).unwrap();
        assert!((s + 0.01).abs() < 1e-9, "{s}");
    }

    #[test]
    fn the_earliest_trust_anchor_expiry_is_exported() {
        let mk = |day: u8| {
            let mut p = rcgen::CertificateParams::new(vec!["ca".to_string()]).unwrap();
            p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
            p.not_after = rcgen::date_time_ymd(2030, 1, day);
            p.self_signed(&rcgen::KeyPair::generate().unwrap())
                .unwrap()
                .pem()
        };
        let pem = format!("{}{}", mk(11), mk(1));
        let t = earliest_not_after(pem.as_bytes()).unwrap();
        assert_eq!(t, 1_893_456_000); // 2030-01-01T00:00:00Z
        assert!(earliest_not_after(b"").is_err());
    }
}
