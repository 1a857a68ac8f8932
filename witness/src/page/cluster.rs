//! A cluster's page (`/cluster/NAME`): its state, alarms, nodes, the timeline picture (drawn in
//! `super::timeline`) and the recent events in words.
use super::event::{describe, event_class, phase_name};
use super::timeline::svg;
use super::{ago, audit_table, esc, head, hms, refresh_s, url_enc, witness_header};
use crate::view::WitnessInfo;
use crate::view::{ClusterMode, Timeline, TimelineEvent};
use std::fmt::Write;

/// The windows the cluster page offers, in milliseconds.
pub const WINDOWS: [(u64, &str); 4] = [
    (3_600_000, "1 h"),
    (600_000, "10 min"),
    (120_000, "2 min"),
    (30_000, "30 s"),
];

/// A cluster's page. `now_unix_ms` is the wall clock the axis is labelled with.
pub fn cluster(
    w: &WitnessInfo,
    t: &Timeline,
    audit: &[serde_json::Value],
    window_ms: u64,
    now_unix_ms: i64,
) -> String {
    let c = &t.status;
    let mut h = String::with_capacity(32 * 1024);
    head(&mut h, &format!("witness: {}", c.cluster), refresh_s(w));
    let _ = write!(
        h,
        "<p><a href=\"/\">&larr; fleet</a></p><h1>Cluster {}</h1>",
        esc(&c.cluster)
    );
    witness_header(&mut h, w, usize::from(c.mode == ClusterMode::Recovering));
    let _ = write!(
        h,
        "<table id=\"state\"><tr><th>mode</th><th>who may act alone</th><th>epoch</th><th>since</th><th>takeover</th>\
         <th>preferred room</th><th>auto rejoin</th><th>paused</th></tr>\
         <tr class=\"mode-{m}\"><td>{m}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr></table>",
        esc(&c.summary),
        c.epoch,
        c.mode_since_ms_ago.map(|ms| format!("{} ago", ago(ms))).unwrap_or("-".into()),
        match c.takeover_allowed_in_ms {
            None => "-".to_string(),
            Some(0) => "allowed".to_string(),
            Some(ms) => format!("in {:.1} s", ms as f64 / 1000.0),
        },
        esc(c.preferred_room.as_deref().unwrap_or("-")),
        c.auto_rejoin,
        c.paused,
        m = esc(c.mode.as_str()),
    );
    if c.alarms.is_empty() {
        h.push_str("<p class=\"ok\" id=\"alarms\">no alarms</p>");
    } else {
        h.push_str("<ul id=\"alarms\">");
        for (i, a) in c.alarms.iter().enumerate() {
            let _ = write!(
                h,
                "<li class=\"alarm\" data-kind=\"{}\">{}</li>",
                esc(c.alarm_kinds.get(i).map(|k| k.as_str()).unwrap_or("")),
                esc(a)
            );
        }
        h.push_str("</ul>");
    }

    h.push_str("<h2>Timeline</h2><p>window: ");
    for (ms, label) in WINDOWS {
        if ms == window_ms {
            let _ = write!(h, "<b>{label}</b> ");
        } else {
            let _ = write!(
                h,
                "<a href=\"/cluster/{}?window={}\">{label}</a> ",
                url_enc(&c.cluster),
                ms / 1000
            );
        }
    }
    let _ = write!(
        h,
        "&middot; <small>times in UTC; the history is kept in memory for the last hour and starts when \
         this witness loaded the cluster ({} ago)</small></p>",
        ago(t.loaded_ms_ago)
    );
    svg(&mut h, t, window_ms, now_unix_ms);

    h.push_str(
        "<h2>Nodes</h2><table id=\"nodes\"><tr><th>room</th><th>node</th><th>last seen</th><th>phase</th><th>epoch</th>\
         <th>peer contact</th><th>peer reachable</th><th>claim</th><th>takeover</th><th>last verdict</th></tr>",
    );
    for r in &c.rooms {
        if r.nodes.is_empty() {
            let _ = write!(
                h,
                "<tr><td>{}{}</td><td colspan=\"9\">no node has called</td></tr>",
                esc(&r.room),
                if r.alone { " (alone)" } else { "" }
            );
        }
        for n in &r.nodes {
            let _ = write!(
                h,
                "<tr><td>{}{}</td><td>{}</td><td>{} ago</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                esc(&r.room),
                if r.alone { " (alone)" } else { "" },
                esc(&n.node),
                ago(n.last_seen_ms_ago),
                phase_name(n.phase),
                n.epoch,
                n.peer_contact,
                n.peer_reachable,
                n.claim,
                n.takeover,
                esc(n.last_verdict.map(|v| v.as_str()).unwrap_or("-"))
            );
        }
    }
    h.push_str("</table>");

    h.push_str("<h2>Events (newest first)</h2>");
    let shown: Vec<&TimelineEvent> = t.events.iter().filter(|e| e.ago_ms <= window_ms).collect();
    if shown.is_empty() {
        h.push_str("<p>nothing in this window</p>");
    } else {
        h.push_str("<table id=\"events\"><tr><th>time (UTC)</th><th>ago</th><th>who</th><th>what</th></tr>");
        for e in shown.iter().rev() {
            let _ = write!(
                h,
                "<tr class=\"{}\"><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                event_class(e),
                hms(now_unix_ms - e.ago_ms as i64),
                ago(e.ago_ms),
                esc(e.node.as_deref().unwrap_or("witness")),
                esc(&describe(e))
            );
        }
        h.push_str("</table>");
    }
    audit_table(&mut h, audit);
    let _ = write!(
        h,
        "<p><small><a href=\"/v1/timeline?cluster={u}\">timeline JSON</a> &middot; \
         <a href=\"/v1/status?cluster={u}\">status JSON</a> &middot; <a href=\"/metrics\">metrics</a></small></p></body></html>",
        u = url_enc(&c.cluster)
    );
    h
}
