//! The status port's HTML: the fleet page (`/`: a summary by mode and by alarm, the clusters
//! that need an operator first, a server-side filter and paging, so it stays small with 10,000
//! clusters) and a page per cluster (`/cluster/NAME`: its state, alarms, nodes and an SVG
//! timeline of the last hour). Plain HTML and inline SVG, no script: it must work from a
//! jump host's text browser as well as from Chromium, and a stale page can be reloaded by hand.
//!
//! Layout: [`fleet`] and [`cluster`] are the two pages, [`timeline`] the cluster page's
//! picture, [`event`] an event in words; this file holds what they share (escaping, the head, the witness header).
use crate::store::StoreOrigin;
use crate::view::WitnessInfo;
use std::fmt::Write;

mod cluster;
mod event;
mod fleet;
mod timeline;

pub(crate) use cluster::cluster;
pub use fleet::PER_PAGE;
pub(crate) use fleet::{fleet, FleetQuery};

pub fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for ch in s.chars() {
        match ch {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            c => o.push(c),
        }
    }
    o
}

pub(super) fn url_enc(s: &str) -> String {
    let mut o = String::new();
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                o.push(b as char)
            }
            _ => {
                let _ = write!(o, "%{b:02X}");
            }
        }
    }
    o
}

/// `HH:MM:SS` (UTC) of a Unix time in milliseconds.
pub fn hms(unix_ms: i64) -> String {
    let s = unix_ms.div_euclid(1000).rem_euclid(86_400);
    format!("{:02}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
}

pub(super) fn ago(ms: u64) -> String {
    if ms < 60_000 {
        format!("{:.1} s", ms as f64 / 1000.0)
    } else if ms < 3_600_000 {
        format!("{} min {} s", ms / 60_000, ms / 1000 % 60)
    } else {
        format!("{} h {} min", ms / 3_600_000, ms / 60_000 % 60)
    }
}

pub(super) const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:1.2em 1.5em;color:#222}\
h1{margin:.2em 0}h2{margin:1.2em 0 .4em}\
table{border-collapse:collapse;margin:.4em 0 1em}td,th{border:1px solid #ccc;padding:.2em .55em;text-align:left;vertical-align:top}\
th{background:#f3f3f3}.alarm{color:#a00;font-weight:600}.ok{color:#070}.muted{color:#666}\
.mode-alone,.mode-releasing{background:#fff3cd}.mode-recovering,.mode-not_called{background:#f8d7da}\
.banner{border:2px solid #c62828;background:#fdecea;padding:.5em .8em;margin:.6em 0}\
.history{color:#555;font-size:.92em}\
.summary td.n{text-align:right;font-variant-numeric:tabular-nums}\
form.filter{margin:.5em 0;padding:.5em;background:#f7f7f7;border:1px solid #ddd;display:inline-block}\
form.filter label{margin-right:.8em}ul.alarms{margin:0;padding-left:1.1em}\
nav.pages a,nav.pages span{margin-right:.8em}small{color:#666}td.rooms{white-space:nowrap}";

pub(super) fn head(h: &mut String, title: &str, refresh_s: u64) {
    let _ = write!(
        h,
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta http-equiv=\"refresh\" content=\"{refresh_s}\"><title>{}</title><style>{STYLE}</style></head><body>",
        esc(title)
    );
}

/// The witness line and the lost-state banner (or, once the wait is over, its history line).
pub(super) fn witness_header(h: &mut String, w: &WitnessInfo, recovering_clusters: usize) {
    let _ = write!(
        h,
        "<p id=\"witness\">version {} &middot; up {} &middot; lease API {} &middot; store {} &middot; \
         server certificate expires in {} days &middot; CA in {} days</p>",
        esc(&w.version),
        ago(w.uptime_s * 1000),
        esc(&w.lease_listen),
        if w.store_origin == StoreOrigin::Intact {
            "intact"
        } else {
            "was empty at start (lost state)"
        },
        w.server_cert_expires_in_s / 86_400,
        w.ca_cert_expires_in_s / 86_400
    );
    if w.store_origin == StoreOrigin::Intact {
        return;
    }
    match w.lost_state_window_ms_left {
        Some(ms) => {
            let _ = write!(
                h,
                "<div class=\"banner\" id=\"lost-state\"><b>Forgotten-state wait: nothing is granted for \
                 <span id=\"countdown\">{:.0}</span> s more.</b> The store was empty at start (a first \
                 install or a lost disk: the witness cannot tell them apart), so it cannot know which \
                 leases it granted before. A cluster that calls now is held (its nodes keep what they \
                 have and ask again) until any such lease, its fence deadline and watchdog have surely \
                 run out{}. Nothing to do: it ends by itself.</div>",
                (ms as f64 / 1000.0).ceil(),
                w.lost_state_wait_ms
                    .map(|t| format!(" ({:.1} s in all, from the configured timings)", t as f64 / 1000.0))
                    .unwrap_or_default()
            );
        }
        None if recovering_clusters > 0 => {
            let _ = write!(
                h,
                "<div class=\"banner\" id=\"lost-state\"><b>The store was empty at start:</b> {recovering_clusters} \
                 cluster(s) that called during the forgotten-state wait still wait out their own \
                 forgotten leases (see their pages).</div>"
            );
        }
        None => {
            let _ = write!(
                h,
                "<p class=\"history\" id=\"lost-state-history\">History: the store was empty when this witness \
                 started ({}); the forgotten-state wait is over and every cluster is granted normally.</p>",
                esc(&w.started_at)
            );
        }
    }
}

/// Seconds between refreshes: every second while a countdown runs, else every 5 s.
pub(super) fn refresh_s(w: &WitnessInfo) -> u64 {
    if w.lost_state_window_ms_left.is_some() {
        1
    } else {
        5
    }
}

pub(super) fn audit_table(h: &mut String, audit: &[serde_json::Value]) {
    h.push_str("<h2>Operator commands (newest first)</h2>");
    if audit.is_empty() {
        h.push_str("<p>none</p>");
        return;
    }
    h.push_str("<table id=\"audit\"><tr><th>when</th><th>who</th><th>cluster</th><th>command</th><th>outcome</th><th>message</th></tr>");
    for a in audit {
        let f = |k: &str| {
            a.get(k)
                .map(|v| match v {
                    serde_json::Value::String(s) => s.clone(),
                    other => other.to_string(),
                })
                .unwrap_or_default()
        };
        let _ = write!(
            h,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&f("at")),
            esc(&f("who")),
            esc(&f("cluster")),
            esc(&f("command")),
            esc(&f("outcome")),
            esc(&f("message"))
        );
    }
    h.push_str("</table>");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::view::{
        AlarmKind, ClusterMode, ClusterStatus, EventKind, TimelineEvent, VerdictKind,
    };
    use crate::view::{NodeStatus, RoomStatus, StatusDoc, Timeline};
    use proto::wire::NodePhase;

    fn cluster(name: &str, mode: &str, kinds: &[&str]) -> ClusterStatus {
        ClusterStatus {
            cluster: name.into(),
            epoch: 1,
            mode: serde_json::from_value(serde_json::Value::from(mode)).expect("a mode"),
            survivor: None,
            summary: "s".into(),
            paused: false,
            recovering_ms_left: None,
            takeover_allowed_in_ms: None,
            mode_since_ms_ago: Some(1),
            preferred_room: None,
            auto_rejoin: true,
            rooms: vec![],
            alarms: kinds.iter().map(|k| format!("alarm {k}")).collect(),
            alarm_kinds: kinds
                .iter()
                .map(|k| AlarmKind::parse(k).expect("an alarm kind"))
                .collect(),
            loaded: true,
            members_version: 0,
            members: Vec::new(),
        }
    }

    fn info() -> WitnessInfo {
        WitnessInfo {
            version: "0".into(),
            started_at: "2026-11-30T03:00:00Z".into(),
            uptime_s: 10,
            lease_listen: "l".into(),
            status_listen: "s".into(),
            data_dir: "d".into(),
            store_origin: StoreOrigin::Intact,
            lost_state_window_ms_left: None,
            lost_state_wait_ms: None,
            clusters_loaded: 0,
            server_cert_expires_in_s: 0,
            ca_cert_expires_in_s: 0,
            tls_ca: String::new(),
            tls_cert: String::new(),
            proof_kid: String::new(),
            audit_log: String::new(),
        }
    }

    fn doc(clusters: Vec<ClusterStatus>) -> StatusDoc {
        StatusDoc {
            witness: info(),
            clusters,
            audit: vec![],
        }
    }

    #[test]
    fn fleet_page_lists_clusters_in_trouble_first_and_counts_by_mode_and_alarm() {
        let d = doc(vec![
            cluster("aaa", "paired", &[]),
            cluster("bbb", "paired", &["partial_peer_loss"]),
            cluster("ccc", "alone", &["alone"]),
            cluster("ddd", "recovering", &["recovering"]),
        ]);
        let h = fleet(&d, &FleetQuery::default());
        let pos = |s: &str| h.find(s).unwrap_or_else(|| panic!("{s} not on the page"));
        assert!(pos("data-cluster=\"ddd\"") < pos("data-cluster=\"ccc\""));
        assert!(pos("data-cluster=\"ccc\"") < pos("data-cluster=\"bbb\""));
        assert!(pos("data-cluster=\"bbb\"") < pos("data-cluster=\"aaa\""));
        assert!(h.contains("<td class=\"n\" data-mode=\"paired\">2</td>"));
        assert!(h.contains("<td class=\"n\" data-alarm=\"alone\">1</td>"));
        assert!(h.contains("<b class=\"alarm\">3 need attention</b>"));
    }

    #[test]
    fn fleet_filter_by_name_mode_and_alarm_happens_on_the_server() {
        let d = doc(vec![
            cluster("store-1", "paired", &[]),
            cluster("store-2", "alone", &["alone"]),
            cluster("lab-3", "paired", &["node_silent"]),
        ]);
        let q = |q: &str, m: &str, a: &str| FleetQuery {
            q: Some(q.into()),
            mode: Some(m.into()),
            alarm: Some(a.into()),
            ..Default::default()
        };
        let h = fleet(&d, &q("store", "", ""));
        assert!(h.contains("data-cluster=\"store-1\"") && !h.contains("data-cluster=\"lab-3\""));
        let h = fleet(&d, &q("", "paired", "any"));
        assert!(h.contains("data-cluster=\"lab-3\"") && !h.contains("data-cluster=\"store-1\""));
        let h = fleet(&d, &q("", "", "none"));
        assert!(h.contains("data-cluster=\"store-1\"") && !h.contains("data-cluster=\"store-2\""));
        let h = fleet(&d, &q("", "", "node_silent"));
        assert!(h.contains("<p id=\"matching\">1 match;"));
    }

    #[test]
    fn fleet_pages_hold_per_page_clusters_with_links_between_them() {
        let d = doc((0..120)
            .map(|i| cluster(&format!("c{i:03}"), "paired", &[]))
            .collect());
        let h = fleet(&d, &FleetQuery::default());
        assert_eq!(
            h.matches("<tr class=\"mode-paired\" data-cluster=").count(),
            PER_PAGE
        );
        assert!(h.contains("page 1 of 3") && h.contains("href=\"/?page=2\""));
        let h = fleet(
            &d,
            &FleetQuery {
                page: Some("3".into()),
                ..Default::default()
            },
        );
        assert_eq!(
            h.matches("<tr class=\"mode-paired\" data-cluster=").count(),
            20
        );
        assert!(h.contains("data-cluster=\"c119\"") && h.contains("rel=\"prev\""));
    }

    #[test]
    fn names_are_escaped_on_the_page() {
        assert_eq!(
            esc("<a href='x'>&\""),
            "&lt;a href=&#39;x&#39;&gt;&amp;&quot;"
        );
        assert_eq!(url_enc("a b&c"), "a%20b%26c");
    }

    #[test]
    fn lost_state_banner_counts_down_then_becomes_history() {
        let mut w = info();
        w.store_origin = StoreOrigin::LostState;
        w.lost_state_window_ms_left = Some(7_200);
        w.lost_state_wait_ms = Some(10_400);
        let mut h = String::new();
        witness_header(&mut h, &w, 0);
        assert!(h.contains("<span id=\"countdown\">8</span> s more"), "{h}");
        assert!(h.contains("10.4 s in all"));
        w.lost_state_window_ms_left = None;
        let mut h = String::new();
        witness_header(&mut h, &w, 0);
        assert!(h.contains("id=\"lost-state-history\"") && !h.contains("banner"));
    }

    #[test]
    fn timeline_draws_phases_decisions_fences_takeovers_and_rejoins() {
        let node = |name: &str, phase| NodeStatus {
            node: name.into(),
            last_seen_ms_ago: 100,
            phase,
            epoch: 3,
            peer_contact: true,
            peer_reachable: true,
            claim: false,
            takeover: false,
            health: 0,
            last_verdict: None,
        };
        let mut status = cluster("demo", "paired", &[]);
        status.rooms = vec![
            RoomStatus {
                room: "a".into(),
                last_seen_ms_ago: Some(100),
                silent: false,
                alone: false,
                nodes: vec![node("a1", NodePhase::Active)],
            },
            RoomStatus {
                room: "b".into(),
                last_seen_ms_ago: Some(100),
                silent: false,
                alone: false,
                nodes: vec![node("b1", NodePhase::Active)],
            },
        ];
        let ev = |ago_ms, node: Option<&str>, kind| TimelineEvent {
            ago_ms,
            node: node.map(str::to_string),
            kind,
        };
        let t = Timeline {
            status,
            events: vec![
                ev(60_000, Some("b1"), EventKind::PeerContact { ok: false }),
                ev(
                    55_000,
                    None,
                    EventKind::Mode {
                        from: ClusterMode::Paired,
                        to: ClusterMode::Alone,
                        survivor: Some("a".into()),
                        epoch: 2,
                    },
                ),
                ev(
                    55_000,
                    Some("b1"),
                    EventKind::Verdict {
                        verdict: VerdictKind::Fence,
                    },
                ),
                ev(
                    54_000,
                    Some("b1"),
                    EventKind::Phase {
                        from: NodePhase::Active,
                        to: NodePhase::Fenced,
                    },
                ),
                ev(50_000, Some("a1"), EventKind::Takeover { active: true }),
                ev(
                    25_000,
                    None,
                    EventKind::Mode {
                        from: ClusterMode::Alone,
                        to: ClusterMode::Releasing,
                        survivor: Some("a".into()),
                        epoch: 3,
                    },
                ),
                ev(
                    20_000,
                    None,
                    EventKind::Mode {
                        from: ClusterMode::Releasing,
                        to: ClusterMode::Paired,
                        survivor: None,
                        epoch: 4,
                    },
                ),
                ev(
                    19_000,
                    Some("b1"),
                    EventKind::Phase {
                        from: NodePhase::Fenced,
                        to: NodePhase::Active,
                    },
                ),
            ],
            silence_ms: 2_500,
            loaded_ms_ago: 600_000,
        };
        let h = cluster_page_for_test(&t);
        for needle in [
            "<svg id=\"timeline\"",
            "data-node=\"a1\"",
            "data-node=\"b1\"",
            "class=\"phase phase-fenced\"",
            "class=\"marker ev-decision\"",
            "class=\"marker ev-fence\"",
            "class=\"marker ev-takeover\"",
            "class=\"marker ev-rejoin\"",
            "class=\"mode mode-alone\"",
            "DECISION: room a acts alone (epoch 2, was paired)",
        ] {
            assert!(h.contains(needle), "{needle} missing from the cluster page");
        }
    }

    fn cluster_page_for_test(t: &Timeline) -> String {
        super::cluster(&info(), t, &[], 120_000, 1_790_000_000_000)
    }
}
