//! Prometheus metrics of the witness. The names are a contract: alert rules are written against
//! them, so they change only with a note in docs/witness.md.
use prometheus::{
    Gauge, GaugeVec, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec,
    Opts, Registry,
};

/// Every metric the witness exports, registered in its own registry (so several witnesses can
/// run in one test process).
pub struct Metrics {
    pub registry: Registry,
    /// `result`: grant_paired, grant_alone, fence, retry, refused.
    pub lease_requests: IntCounterVec,
    pub lease_duration: Histogram,
    pub persist_duration: Histogram,
    /// `mode`: paired, alone, releasing, recovering.
    pub clusters: IntGaugeVec,
    pub cluster_epoch: IntGaugeVec,
    pub room_alone: IntGaugeVec,
    pub room_last_seen: GaugeVec,
    pub mode_changes: IntCounterVec,
    pub tls_handshake_failures: IntCounter,
    pub refusals: IntCounterVec,
    pub admin_commands: IntCounterVec,
    pub member_changes: IntCounterVec,
    /// `cert`: server, ca.
    pub cert_expiry: GaugeVec,
    /// `kind`: clusters with at least one alarm of that kind (`clusters::ALARM_KINDS`),
    /// refreshed at every scrape.
    pub cluster_alarms: IntGaugeVec,
    pub up: IntGauge,
    /// Extra: `result` ok / error of certificate reloads.
    pub tls_reloads: IntCounterVec,
    /// Extra: failed durable writes (each one answered 503).
    pub persist_failures: IntCounter,
    /// Extra: open connections on the lease port.
    pub connections: IntGauge,
    /// Extra: seconds since the process started.
    pub uptime: Gauge,
    /// `lease_requests` for each result label, looked up once: a renewal then counts itself
    /// with one atomic add, not a label hash and a lock.
    lease_by_result: Vec<(&'static str, IntCounter)>,
}

/// The `result` labels of `witness_lease_requests_total`.
const LEASE_RESULTS: [&str; 5] = ["grant_paired", "grant_alone", "fence", "retry", "refused"];

fn must<T>(r: prometheus::Result<T>) -> T {
    // Only fails for a malformed name or a duplicate registration: a bug, found by any test.
    match r {
        Ok(v) => v,
        Err(e) => panic!("metric definition is invalid: {e}"),
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let registry = Registry::new();
        let lat_buckets = vec![
            0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
        ];
        let mut m = Metrics {
            lease_requests: must(IntCounterVec::new(
                Opts::new("witness_lease_requests_total", "Lease requests by result"),
                &["result"],
            )),
            lease_duration: must(Histogram::with_opts(
                HistogramOpts::new(
                    "witness_lease_request_duration_seconds",
                    "Time to answer a lease request, including the durable write when one is needed",
                )
                .buckets(lat_buckets.clone()),
            )),
            persist_duration: must(Histogram::with_opts(
                HistogramOpts::new(
                    "witness_persist_duration_seconds",
                    "Time to write and flush a cluster record to disk",
                )
                .buckets(lat_buckets),
            )),
            clusters: must(IntGaugeVec::new(
                Opts::new("witness_clusters", "Known clusters by mode"),
                &["mode"],
            )),
            cluster_epoch: must(IntGaugeVec::new(
                Opts::new("witness_cluster_epoch", "The fencing epoch of each cluster"),
                &["cluster"],
            )),
            room_alone: must(IntGaugeVec::new(
                Opts::new(
                    "witness_room_alone",
                    "1 when the room holds the right to act alone",
                ),
                &["cluster", "room"],
            )),
            room_last_seen: must(GaugeVec::new(
                Opts::new(
                    "witness_room_last_seen_seconds",
                    "Age of the newest report from any node of the room",
                ),
                &["cluster", "room"],
            )),
            mode_changes: must(IntCounterVec::new(
                Opts::new("witness_mode_changes_total", "Changes of who may act alone"),
                &["to"],
            )),
            tls_handshake_failures: must(IntCounter::new(
                "witness_tls_handshake_failures_total",
                "TLS handshakes on the lease port that failed (bad or foreign client certificate, timeouts, non-TLS clients)",
            )),
            refusals: must(IntCounterVec::new(
                Opts::new(
                    "witness_refusals_total",
                    "Requests refused before they reached the arbiter, by reason",
                ),
                &["reason"],
            )),
            admin_commands: must(IntCounterVec::new(
                Opts::new("witness_admin_commands_total", "Operator commands by command"),
                &["command"],
            )),
            member_changes: must(IntCounterVec::new(
                Opts::new(
                    "witness_member_changes_total",
                    "Membership changes by the status a node moved to (joined or readmitted: member; proven stopped: excluded; operator: removed, decommissioned)",
                ),
                &["to"],
            )),
            cert_expiry: must(GaugeVec::new(
                Opts::new(
                    "witness_certificate_expiry_seconds",
                    "Seconds until the certificate expires",
                ),
                &["cert"],
            )),
            cluster_alarms: must(IntGaugeVec::new(
                Opts::new(
                    "witness_cluster_alarms",
                    "Clusters with at least one alarm of this kind (the status page's alarms)",
                ),
                &["kind"],
            )),
            up: must(IntGauge::new("witness_up", "1 while the witness runs")),
            tls_reloads: must(IntCounterVec::new(
                Opts::new("witness_tls_reloads_total", "Certificate reloads by result"),
                &["result"],
            )),
            persist_failures: must(IntCounter::new(
                "witness_persist_failures_total",
                "Durable writes that failed (the reply was withheld and 503 sent)",
            )),
            connections: must(IntGauge::new(
                "witness_connections",
                "Open connections on the lease port",
            )),
            uptime: must(Gauge::new(
                "witness_uptime_seconds",
                "Seconds since the witness process started serving",
            )),
            registry,
            lease_by_result: Vec::new(),
        };
        let r = &m.registry;
        must(r.register(Box::new(m.lease_requests.clone())));
        must(r.register(Box::new(m.lease_duration.clone())));
        must(r.register(Box::new(m.persist_duration.clone())));
        must(r.register(Box::new(m.clusters.clone())));
        must(r.register(Box::new(m.cluster_epoch.clone())));
        must(r.register(Box::new(m.room_alone.clone())));
        must(r.register(Box::new(m.room_last_seen.clone())));
        must(r.register(Box::new(m.mode_changes.clone())));
        must(r.register(Box::new(m.tls_handshake_failures.clone())));
        must(r.register(Box::new(m.refusals.clone())));
        must(r.register(Box::new(m.admin_commands.clone())));
        must(r.register(Box::new(m.member_changes.clone())));
        must(r.register(Box::new(m.cert_expiry.clone())));
        must(r.register(Box::new(m.cluster_alarms.clone())));
        must(r.register(Box::new(m.up.clone())));
        must(r.register(Box::new(m.tls_reloads.clone())));
        must(r.register(Box::new(m.persist_failures.clone())));
        must(r.register(Box::new(m.connections.clone())));
        must(r.register(Box::new(m.uptime.clone())));
        // Every label value exists from the start, so alerts and rate() see zeros, not gaps.
        m.lease_by_result = LEASE_RESULTS
            .iter()
            .map(|r| (*r, m.lease_requests.with_label_values(&[r])))
            .collect();
        for mode in ["paired", "alone", "releasing", "recovering"] {
            m.clusters.with_label_values(&[mode]);
        }
        for r in [
            "no_client_cert",
            "bad_identity",
            "identity_mismatch",
            "bad_request",
            "body_too_large",
            "rate_limited",
            "unsupported_version",
            "not_admin",
            "unavailable",
        ] {
            m.refusals.with_label_values(&[r]);
        }
        m.up.set(1);
        m
    }

    /// Counts a lease request by its result label.
    pub fn count_lease(&self, result: &str) {
        match self.lease_by_result.iter().find(|(r, _)| *r == result) {
            Some((_, c)) => c.inc(),
            None => self.lease_requests.with_label_values(&[result]).inc(),
        }
    }

    /// Counts a request refused before the arbiter saw it; `lease` also counts it as a lease
    /// request with result `refused`.
    pub fn refuse(&self, reason: &str, lease: bool) {
        self.refusals.with_label_values(&[reason]).inc();
        if lease {
            self.count_lease("refused");
        }
    }

    pub fn set_cert_expiry(&self, server_not_after: i64, ca_not_after: i64) {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        self.cert_expiry
            .with_label_values(&["server"])
            .set((server_not_after - now) as f64);
        self.cert_expiry
            .with_label_values(&["ca"])
            .set((ca_not_after - now) as f64);
    }

    /// The text exposition of every metric.
    pub fn render(&self) -> String {
        let enc = prometheus::TextEncoder::new();
        enc.encode_to_string(&self.registry.gather())
            .unwrap_or_else(|e| format!("# metrics encoding failed: {e}\n"))
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}
