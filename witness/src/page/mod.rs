//! The status port's HTML: the fleet page (`/`: a summary by mode and by alarm, the clusters
//! that need an operator first, a server-side filter and paging, so it stays small with 10,000
//! clusters) and a page per cluster (`/cluster/NAME`: its state, alarms, nodes and an SVG
//! timeline of the last hour). Plain HTML and inline SVG, no script: it must work from a
//! jump host's text browser as well as from Chromium, and a stale page can be reloaded by hand.
use crate::history::{EventKind, TimelineEvent};
use crate::store::StoreOrigin;
use crate::view::{AlarmKind, ClusterMode, ClusterStatus, Timeline};
use crate::view::{StatusDoc, WitnessInfo};
use proto::wire::NodePhase;
use std::collections::BTreeMap;
use std::fmt::Write;

/// Clusters per page unless `per_page` asks otherwise (at most [`MAX_PER_PAGE`]).
pub const PER_PAGE: usize = 50;
pub const MAX_PER_PAGE: usize = 500;

/// The fleet page's query: `?q=NAME-PART&mode=MODE&alarm=KIND|any|none&page=N&per_page=N`.
#[derive(Clone, Debug, Default, serde::Deserialize)]
pub struct FleetQuery {
    /// Old form of the cluster page (`/?cluster=NAME`): redirected to `/cluster/NAME`.
    pub cluster: Option<String>,
    /// Part of the cluster's name.
    pub q: Option<String>,
    pub mode: Option<String>,
    /// An alarm kind, `any` (some alarm) or `none` (no alarm).
    pub alarm: Option<String>,
    pub page: Option<String>,
    pub per_page: Option<String>,
}

fn nonempty(s: &Option<String>) -> Option<&str> {
    s.as_deref().map(str::trim).filter(|s| !s.is_empty())
}

impl FleetQuery {
    fn matches(&self, c: &ClusterStatus) -> bool {
        if let Some(q) = nonempty(&self.q) {
            if !c.cluster.contains(q) {
                return false;
            }
        }
        if let Some(m) = nonempty(&self.mode) {
            if mode_of(c) != m {
                return false;
            }
        }
        match nonempty(&self.alarm) {
            None => true,
            Some("any") => !c.alarms.is_empty(),
            Some("none") => c.alarms.is_empty(),
            Some(k) => c.alarm_kinds.iter().any(|x| x.as_str() == k),
        }
    }

    fn page(&self) -> usize {
        nonempty(&self.page)
            .and_then(|p| p.parse::<usize>().ok())
            .unwrap_or(1)
            .max(1)
    }

    fn per_page(&self) -> usize {
        nonempty(&self.per_page)
            .and_then(|p| p.parse::<usize>().ok())
            .unwrap_or(PER_PAGE)
            .clamp(1, MAX_PER_PAGE)
    }

    /// This query as a URL with `page` replaced.
    fn url(&self, page: usize) -> String {
        let mut parts = Vec::new();
        for (k, v) in [
            ("q", &self.q),
            ("mode", &self.mode),
            ("alarm", &self.alarm),
            ("per_page", &self.per_page),
        ] {
            if let Some(v) = nonempty(v) {
                parts.push(format!("{k}={}", url_enc(v)));
            }
        }
        if page > 1 {
            parts.push(format!("page={page}"));
        }
        if parts.is_empty() {
            "/".into()
        } else {
            format!("/?{}", parts.join("&"))
        }
    }
}

/// The mode the page shows: a cluster known only from the store is `not_called`.
fn mode_of(c: &ClusterStatus) -> &'static str {
    if c.loaded {
        c.mode.as_str()
    } else {
        "not_called"
    }
}

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

fn url_enc(s: &str) -> String {
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

/// How urgent a cluster is: the index of its most urgent alarm kind; no alarm sorts last.
fn urgency(c: &ClusterStatus) -> usize {
    c.alarm_kinds
        .iter()
        .filter_map(|k| AlarmKind::ALL.iter().position(|x| x == k))
        .min()
        .unwrap_or(if c.alarms.is_empty() {
            usize::MAX
        } else {
            AlarmKind::ALL.len()
        })
}

/// `HH:MM:SS` (UTC) of a Unix time in milliseconds.
pub fn hms(unix_ms: i64) -> String {
    let s = unix_ms.div_euclid(1000).rem_euclid(86_400);
    format!("{:02}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
}

fn ago(ms: u64) -> String {
    if ms < 60_000 {
        format!("{:.1} s", ms as f64 / 1000.0)
    } else if ms < 3_600_000 {
        format!("{} min {} s", ms / 60_000, ms / 1000 % 60)
    } else {
        format!("{} h {} min", ms / 3_600_000, ms / 60_000 % 60)
    }
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:1.2em 1.5em;color:#222}\
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

fn head(h: &mut String, title: &str, refresh_s: u64) {
    let _ = write!(
        h,
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta http-equiv=\"refresh\" content=\"{refresh_s}\"><title>{}</title><style>{STYLE}</style></head><body>",
        esc(title)
    );
}

/// The witness line and the lost-state banner (or, once the wait is over, its history line).
fn witness_header(h: &mut String, w: &WitnessInfo, recovering_clusters: usize) {
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
fn refresh_s(w: &WitnessInfo) -> u64 {
    if w.lost_state_window_ms_left.is_some() {
        1
    } else {
        5
    }
}

/// The fleet page.
pub fn fleet(doc: &StatusDoc, q: &FleetQuery) -> String {
    let w = &doc.witness;
    let mut h = String::with_capacity(64 * 1024);
    head(&mut h, "witness: fleet", refresh_s(w));
    let mut by_mode: BTreeMap<&str, usize> = BTreeMap::new();
    let mut by_alarm: BTreeMap<AlarmKind, usize> = BTreeMap::new();
    let mut troubled = 0;
    for c in &doc.clusters {
        *by_mode.entry(mode_of(c)).or_default() += 1;
        if !c.alarms.is_empty() {
            troubled += 1;
        }
        let mut kinds = c.alarm_kinds.clone();
        kinds.sort_unstable();
        kinds.dedup();
        for k in kinds {
            *by_alarm.entry(k).or_default() += 1;
        }
    }
    h.push_str("<h1>Witness</h1>");
    witness_header(&mut h, w, by_mode.get("recovering").copied().unwrap_or(0));

    let total = doc.clusters.len();
    let _ = write!(
        h,
        "<h2>Fleet</h2><p id=\"fleet-summary\"><b>{total}</b> cluster(s): <b class=\"{}\">{troubled} need attention</b>, {} without alarms.</p>",
        if troubled > 0 { "alarm" } else { "ok" },
        total - troubled
    );
    h.push_str("<table class=\"summary\" id=\"by-mode\"><tr><th>mode</th><th>clusters</th></tr>");
    for m in ClusterMode::ALL
        .iter()
        .map(|m| m.as_str())
        .chain(std::iter::once("not_called"))
    {
        let n = by_mode.get(m).copied().unwrap_or(0);
        if n == 0 && (m == "not_called" || m == "recovering") {
            continue;
        }
        let _ = write!(
            h,
            "<tr class=\"mode-{m}\"><td><a href=\"/?mode={m}\">{m}</a></td><td class=\"n\" data-mode=\"{m}\">{n}</td></tr>"
        );
    }
    h.push_str("</table>");
    h.push_str("<table class=\"summary\" id=\"by-alarm\"><tr><th>alarm</th><th>clusters</th></tr>");
    if by_alarm.is_empty() {
        h.push_str("<tr><td colspan=\"2\" class=\"ok\">no alarms</td></tr>");
    }
    for k in AlarmKind::ALL {
        if let Some(n) = by_alarm.get(&k) {
            let _ = write!(
                h,
                "<tr><td><a href=\"/?alarm={k}\">{}</a></td><td class=\"n\" data-alarm=\"{k}\">{n}</td></tr>",
                k.as_str().replace('_', " ")
            );
        }
    }
    h.push_str("</table>");

    // The filter: a plain GET form, evaluated here.
    let sel = |v: &Option<String>, x: &str| {
        if nonempty(v) == Some(x) {
            " selected"
        } else {
            ""
        }
    };
    let _ = write!(
        h,
        "<form class=\"filter\" method=\"get\" action=\"/\"><label>name contains <input name=\"q\" value=\"{}\" size=\"16\"></label>\
         <label>mode <select name=\"mode\"><option value=\"\">any</option>",
        esc(nonempty(&q.q).unwrap_or(""))
    );
    for m in ClusterMode::ALL
        .iter()
        .map(|m| m.as_str())
        .chain(std::iter::once("not_called"))
    {
        let _ = write!(h, "<option{}>{m}</option>", sel(&q.mode, m));
    }
    let _ = write!(
        h,
        "</select></label><label>alarm <select name=\"alarm\"><option value=\"\">any or none</option>\
         <option value=\"any\"{}>some alarm</option><option value=\"none\"{}>no alarm</option>",
        sel(&q.alarm, "any"),
        sel(&q.alarm, "none")
    );
    for k in AlarmKind::ALL {
        let _ = write!(
            h,
            "<option value=\"{k}\"{}>{}</option>",
            sel(&q.alarm, k.as_str()),
            k.as_str().replace('_', " ")
        );
    }
    h.push_str(
        "</select></label><button type=\"submit\">filter</button> <a href=\"/\">clear</a></form>",
    );

    let mut shown: Vec<&ClusterStatus> = doc.clusters.iter().filter(|c| q.matches(c)).collect();
    shown.sort_by(|a, b| {
        urgency(a)
            .cmp(&urgency(b))
            .then(b.alarms.len().cmp(&a.alarms.len()))
            .then(a.cluster.cmp(&b.cluster))
    });
    let per = q.per_page();
    let pages = shown.len().div_ceil(per).max(1);
    let page = q.page().min(pages);
    let from = (page - 1) * per;
    let to = (from + per).min(shown.len());
    let _ = write!(
        h,
        "<h2>Clusters, most urgent first</h2><p id=\"matching\">{} match{}; showing {}&ndash;{}.</p>",
        shown.len(),
        if shown.len() == 1 { "" } else { "es" },
        if shown.is_empty() { 0 } else { from + 1 },
        to
    );
    nav(&mut h, q, page, pages);
    if shown.is_empty() {
        h.push_str("<p>No cluster matches.</p>");
    } else {
        h.push_str(
            "<table id=\"clusters\"><tr><th>cluster</th><th>mode</th><th>who may act alone</th><th>epoch</th>\
             <th>rooms</th><th>alarms</th></tr>",
        );
        for c in &shown[from..to] {
            cluster_row(&mut h, c);
        }
        h.push_str("</table>");
    }
    nav(&mut h, q, page, pages);
    audit_table(&mut h, &doc.audit);
    h.push_str(
        "<p><small><a href=\"/v1/status\">JSON</a> &middot; <a href=\"/metrics\">metrics</a> &middot; \
         <a href=\"/v1/jwks\">JWKS</a></small></p></body></html>",
    );
    h
}

fn nav(h: &mut String, q: &FleetQuery, page: usize, pages: usize) {
    if pages <= 1 {
        return;
    }
    h.push_str("<nav class=\"pages\">");
    if page > 1 {
        let _ = write!(
            h,
            "<a href=\"{}\" rel=\"prev\">&larr; previous</a>",
            esc(&q.url(page - 1))
        );
    }
    let _ = write!(h, "<span>page {page} of {pages}</span>");
    if page < pages {
        let _ = write!(
            h,
            "<a href=\"{}\" rel=\"next\">next &rarr;</a>",
            esc(&q.url(page + 1))
        );
    }
    h.push_str("</nav>");
}

fn cluster_row(h: &mut String, c: &ClusterStatus) {
    let rooms: Vec<String> = c
        .rooms
        .iter()
        .map(|r| {
            let state = if r.silent {
                "silent".to_string()
            } else {
                format!("{} node(s)", r.nodes.len())
            };
            format!(
                "{}{}: {state}",
                esc(&r.room),
                if r.alone { " (alone)" } else { "" }
            )
        })
        .collect();
    let mode = mode_of(c);
    let _ = write!(
        h,
        "<tr class=\"mode-{mode}\" data-cluster=\"{name}\"><td><a href=\"/cluster/{url}\">{name}</a></td><td>{mode}</td>\
         <td>{}</td><td>{}</td><td class=\"rooms\">{}</td><td>",
        esc(&c.summary),
        c.epoch,
        rooms.join("<br>"),
        name = esc(&c.cluster),
        url = url_enc(&c.cluster),
    );
    if c.alarms.is_empty() {
        h.push_str("<span class=\"ok\">none</span>");
    } else {
        h.push_str("<ul class=\"alarms\">");
        for a in c.alarms.iter().take(3) {
            let _ = write!(h, "<li class=\"alarm\">{}</li>", esc(a));
        }
        if c.alarms.len() > 3 {
            let _ = write!(h, "<li>and {} more</li>", c.alarms.len() - 3);
        }
        h.push_str("</ul>");
    }
    h.push_str("</td></tr>");
}

fn audit_table(h: &mut String, audit: &[serde_json::Value]) {
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
                esc(n.last_verdict.as_deref().unwrap_or("-"))
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

fn phase_name(p: NodePhase) -> &'static str {
    match p {
        NodePhase::Starting => "starting",
        NodePhase::Active => "active",
        NodePhase::Fencing => "fencing",
        NodePhase::Fenced => "fenced",
    }
}

fn verdict_words(v: &str) -> &str {
    match v {
        "grant_paired" => "grant (paired)",
        "grant_alone" => "GRANT ALONE",
        "fence" => "FENCE",
        "retry" => "retry (nothing granted now)",
        other => other,
    }
}

/// A rejoin: the cluster back to paired after a survivor ran alone, or a fenced node unfencing.
fn is_rejoin(e: &TimelineEvent) -> bool {
    match &e.kind {
        EventKind::Mode { from, to, .. } => to == "paired" && from != "paired",
        EventKind::Phase { from, to } => *from == NodePhase::Fenced && *to != NodePhase::Fenced,
        _ => false,
    }
}

/// The CSS class of an event (the browser test looks for these).
fn event_class(e: &TimelineEvent) -> &'static str {
    if is_rejoin(e) {
        return "ev-rejoin";
    }
    match &e.kind {
        EventKind::Mode { .. } => "ev-decision",
        EventKind::Verdict { verdict } if verdict == "fence" => "ev-fence",
        EventKind::Phase {
            to: NodePhase::Fencing,
            ..
        } => "ev-fence",
        EventKind::Takeover { active: true } => "ev-takeover",
        EventKind::Takeover { active: false } => "ev-release",
        EventKind::PeerContact { ok: false } => "ev-peer-lost",
        EventKind::Admin { .. } => "ev-admin",
        _ => "ev-other",
    }
}

/// An event in words.
pub fn describe(e: &TimelineEvent) -> String {
    match &e.kind {
        EventKind::Phase { from, to } if from == to => {
            format!("first report: phase {}", phase_name(*to))
        }
        EventKind::Phase { from, to } => {
            format!("phase {} \u{2192} {}", phase_name(*from), phase_name(*to))
        }
        EventKind::Verdict { verdict } => format!("witness answers: {}", verdict_words(verdict)),
        EventKind::Mode {
            from,
            to,
            survivor,
            epoch,
        } => match (to.as_str(), survivor) {
            ("alone", Some(r)) => {
                format!("DECISION: room {r} acts alone (epoch {epoch}, was {from})")
            }
            ("releasing", Some(r)) => {
                format!("DECISION: room {r} releases its takeover; the other room rejoins (epoch {epoch})")
            }
            ("paired", _) => {
                format!("DECISION: both rooms paired again (epoch {epoch}, was {from})")
            }
            _ => format!("DECISION: mode {to} (epoch {epoch})"),
        },
        EventKind::Takeover { active: true } => "TAKEOVER of the other room's workloads".into(),
        EventKind::Takeover { active: false } => "takeover released".into(),
        EventKind::Claim { active: true } => "asks the witness to let its room act alone".into(),
        EventKind::Claim { active: false } => "no longer asks to act alone".into(),
        EventKind::PeerContact { ok: false } => "lost contact with the other room".into(),
        EventKind::PeerContact { ok: true } => "contact with the other room again".into(),
        EventKind::Returned { silent_ms } => {
            format!("called again after {} of silence", ago(*silent_ms))
        }
        EventKind::Admin { command, ok } => format!(
            "operator command {command}: {}",
            if *ok { "done" } else { "refused" }
        ),
        EventKind::RecoveryFinished { epoch } => {
            format!("forgotten-state wait over: granted again (epoch {epoch})")
        }
        EventKind::Refused => "report refused by the arbiter (see the witness log)".into(),
        EventKind::Loaded { how } => format!(
            "loaded by this witness ({})",
            match how.as_str() {
                "restarted" => "restarted from its stored record",
                "recovering" => "recovering: state may have been lost",
                _ => "new cluster",
            }
        ),
    }
}

// ---- the SVG timeline ----------------------------------------------------------------------

const W: f64 = 1100.0;
const LEFT: f64 = 150.0;
const RIGHT: f64 = 40.0;
const LANE: f64 = 22.0;

fn phase_color(p: NodePhase) -> &'static str {
    match p {
        NodePhase::Starting => "#9e9e9e",
        NodePhase::Active => "#43a047",
        NodePhase::Fencing => "#fb8c00",
        NodePhase::Fenced => "#c62828",
    }
}

fn mode_color(m: &str) -> &'static str {
    match m {
        "paired" => "#a5d6a7",
        "alone" => "#ffcc80",
        "releasing" => "#90caf9",
        "recovering" => "#ef9a9a",
        _ => "#e0e0e0",
    }
}

struct Axis {
    window: f64,
}

impl Axis {
    /// x of an event `ago_ms` before now.
    fn x(&self, ago_ms: u64) -> f64 {
        let f = 1.0 - (ago_ms as f64 / self.window).min(1.0);
        LEFT + f * (W - LEFT - RIGHT)
    }
}

fn band(h: &mut String, x0: f64, x1: f64, y: f64, fill: &str, class: &str, title: &str) {
    if x1 - x0 < 0.01 {
        return;
    }
    let _ = write!(
        h,
        "<rect class=\"{class}\" x=\"{x0:.1}\" y=\"{y:.1}\" width=\"{:.1}\" height=\"{:.1}\" fill=\"{fill}\"><title>{}</title></rect>",
        (x1 - x0).max(1.0),
        LANE - 6.0,
        esc(title)
    );
}

/// The timeline picture: a witness lane (the cluster's mode, its decisions and operator
/// commands) and one lane per node, grouped by room (phase bands, silences, fences,
/// takeovers, rejoins), on one time axis ending now.
fn svg(h: &mut String, t: &Timeline, window_ms: u64, now_unix_ms: i64) {
    let c = &t.status;
    let ax = Axis {
        window: window_ms as f64,
    };
    let events: Vec<&TimelineEvent> = t.events.iter().filter(|e| e.ago_ms <= window_ms).collect();
    let rows: usize = 1 + c.rooms.iter().map(|r| 1 + r.nodes.len()).sum::<usize>();
    let top = 34.0;
    let height = top + rows as f64 * LANE + 60.0;
    let _ = write!(
        h,
        "<svg id=\"timeline\" xmlns=\"http://www.w3.org/2000/svg\" width=\"{W}\" height=\"{height}\" \
         viewBox=\"0 0 {W} {height}\" font-family=\"sans-serif\" font-size=\"12\" role=\"img\" \
         aria-label=\"timeline of cluster {}\"><defs><pattern id=\"silent\" width=\"6\" height=\"6\" \
         patternUnits=\"userSpaceOnUse\" patternTransform=\"rotate(45)\"><rect width=\"6\" height=\"6\" fill=\"#eee\"/>\
         <line x1=\"0\" y1=\"0\" x2=\"0\" y2=\"6\" stroke=\"#999\" stroke-width=\"2\"/></pattern></defs>",
        esc(&c.cluster)
    );
    // Axis with ticks at round times.
    let step_ms = [5_000u64, 10_000, 30_000, 60_000, 120_000, 300_000, 600_000]
        .into_iter()
        .find(|s| window_ms / s <= 8)
        .unwrap_or(600_000);
    let axis_y = top - 8.0;
    let plot_bottom = top + rows as f64 * LANE;
    let _ = write!(
        h,
        "<g class=\"axis\"><line x1=\"{LEFT}\" y1=\"{axis_y}\" x2=\"{}\" y2=\"{axis_y}\" stroke=\"#555\"/>",
        W - RIGHT
    );
    let oldest_unix = now_unix_ms - window_ms as i64;
    let first_tick = (oldest_unix.div_euclid(step_ms as i64) + 1) * step_ms as i64;
    let mut tick = first_tick;
    while tick <= now_unix_ms {
        let x = ax.x((now_unix_ms - tick) as u64);
        let _ = write!(
            h,
            "<line x1=\"{x:.1}\" y1=\"{:.1}\" x2=\"{x:.1}\" y2=\"{plot_bottom:.1}\" stroke=\"#ddd\"/>\
             <text x=\"{x:.1}\" y=\"{:.1}\" text-anchor=\"middle\" fill=\"#444\">{}</text>",
            axis_y - 3.0,
            axis_y - 6.0,
            hms(tick)
        );
        tick += step_ms as i64;
    }
    let _ = write!(
        h,
        "<line x1=\"{0:.1}\" y1=\"{1:.1}\" x2=\"{0:.1}\" y2=\"{2:.1}\" stroke=\"#000\"/>\
         <text x=\"{3:.1}\" y=\"{4:.1}\" fill=\"#000\" font-weight=\"bold\">now</text></g>",
        W - RIGHT,
        axis_y - 3.0,
        plot_bottom,
        W - RIGHT + 4.0,
        axis_y + 4.0
    );
    // Before the cluster was loaded there is no history.
    if t.loaded_ms_ago < window_ms {
        let x = ax.x(t.loaded_ms_ago);
        let _ = write!(
            h,
            "<rect class=\"no-history\" x=\"{LEFT}\" y=\"{top}\" width=\"{:.1}\" height=\"{:.1}\" fill=\"#f5f5f5\">\
             <title>no history: this witness had not loaded the cluster yet</title></rect>",
            (x - LEFT).max(0.0),
            rows as f64 * LANE
        );
    }

    // The witness lane: the mode over time, walked back from the mode now.
    let mut y = top;
    let _ = write!(
        h,
        "<g class=\"lane\" data-lane=\"witness\"><text x=\"6\" y=\"{:.1}\" font-weight=\"bold\">witness (mode)</text>",
        y + 14.0
    );
    let mut mode_now = c.mode.as_str().to_string();
    let mut end = 0u64;
    let start_of_history = t.loaded_ms_ago.min(window_ms);
    let mode_events: Vec<&&TimelineEvent> = events
        .iter()
        .filter(|e| {
            matches!(
                e.kind,
                EventKind::Mode { .. } | EventKind::RecoveryFinished { .. }
            )
        })
        .collect();
    for e in mode_events.iter().rev() {
        band(
            h,
            ax.x(e.ago_ms),
            ax.x(end),
            y + 3.0,
            mode_color(&mode_now),
            &format!("mode mode-{mode_now}"),
            &format!("mode {mode_now}"),
        );
        end = e.ago_ms;
        mode_now = match &e.kind {
            EventKind::Mode { from, .. } => from.clone(),
            _ => "recovering".into(),
        };
    }
    band(
        h,
        ax.x(start_of_history),
        ax.x(end),
        y + 3.0,
        mode_color(&mode_now),
        &format!("mode mode-{mode_now}"),
        &format!("mode {mode_now}"),
    );
    // A decision's label is drawn only where it fits before the next one (the tooltip and the
    // event table always have it).
    let decision_x: Vec<f64> = mode_events
        .iter()
        .filter(|e| matches!(e.kind, EventKind::Mode { .. }))
        .map(|e| ax.x(e.ago_ms))
        .collect();
    for e in &events {
        let x = ax.x(e.ago_ms);
        match &e.kind {
            EventKind::Mode { to, survivor, .. } => {
                let label = match survivor {
                    Some(r) if to != "paired" => format!("{to}: {r}"),
                    _ => to.clone(),
                };
                let room = decision_x
                    .iter()
                    .find(|&&nx| nx > x + 0.5)
                    .copied()
                    .unwrap_or(W - RIGHT)
                    - x;
                let label = if room > 10.0 + label.len() as f64 * 7.5 {
                    label
                } else {
                    String::new()
                };
                let _ = write!(
                    h,
                    "<g class=\"marker {}\"><path d=\"M{x:.1} {:.1} l6 8 l-6 8 l-6 -8 z\" fill=\"#6a1b9a\" stroke=\"#fff\"/>\
                     <text x=\"{:.1}\" y=\"{:.1}\" fill=\"#4a148c\" font-weight=\"bold\">{}</text><title>{}</title></g>",
                    event_class(e),
                    y + 3.0,
                    x + 8.0,
                    y + 15.0,
                    esc(&label),
                    esc(&describe(e))
                );
            }
            EventKind::Admin { command, .. } => {
                let _ = write!(
                    h,
                    "<g class=\"marker ev-admin\"><rect x=\"{:.1}\" y=\"{:.1}\" width=\"8\" height=\"8\" fill=\"#37474f\"/>\
                     <text x=\"{:.1}\" y=\"{:.1}\" fill=\"#37474f\">{}</text><title>{}</title></g>",
                    x - 4.0,
                    y + 7.0,
                    x + 6.0,
                    y + 15.0,
                    esc(command),
                    esc(&describe(e))
                );
            }
            _ => {}
        }
    }
    h.push_str("</g>");
    y += LANE;

    // One lane per node, grouped by room.
    for r in &c.rooms {
        let _ = write!(
            h,
            "<g class=\"room\" data-room=\"{0}\"><text x=\"6\" y=\"{1:.1}\" font-weight=\"bold\" fill=\"#333\">room {0}{2}</text>\
             <line x1=\"{LEFT}\" y1=\"{3:.1}\" x2=\"{4}\" y2=\"{3:.1}\" stroke=\"#bbb\" stroke-dasharray=\"3 3\"/></g>",
            esc(&r.room),
            y + 15.0,
            if r.alone { " (runs alone)" } else { "" },
            y + LANE / 2.0,
            W - RIGHT
        );
        y += LANE;
        for n in &r.nodes {
            let mine: Vec<&&TimelineEvent> = events
                .iter()
                .filter(|e| e.node.as_deref() == Some(n.node.as_str()))
                .collect();
            let _ = write!(
                h,
                "<g class=\"lane\" data-lane=\"node\" data-node=\"{0}\"><text x=\"18\" y=\"{1:.1}\">{0}</text>",
                esc(&n.node),
                y + 14.0
            );
            // Phase bands, walked back from the phase now.
            let mut phase = n.phase;
            let mut end = 0u64;
            let mut first_seen: Option<u64> = None;
            for e in mine.iter().rev() {
                if let EventKind::Phase { from, to } = &e.kind {
                    band(
                        h,
                        ax.x(e.ago_ms),
                        ax.x(end),
                        y + 3.0,
                        phase_color(phase),
                        &format!("phase phase-{}", phase_name(phase)),
                        &format!("{}: {}", n.node, phase_name(phase)),
                    );
                    end = e.ago_ms;
                    if from == to {
                        first_seen = Some(e.ago_ms);
                        break;
                    }
                    phase = *from;
                }
            }
            if first_seen.is_none() {
                band(
                    h,
                    ax.x(start_of_history),
                    ax.x(end),
                    y + 3.0,
                    phase_color(phase),
                    &format!("phase phase-{}", phase_name(phase)),
                    &format!("{}: {}", n.node, phase_name(phase)),
                );
            }
            // Silences: those that ended (a call came again) and the one going on now.
            for e in &mine {
                if let EventKind::Returned { silent_ms } = e.kind {
                    band(
                        h,
                        ax.x(e.ago_ms + silent_ms),
                        ax.x(e.ago_ms),
                        y + 3.0,
                        "url(#silent)",
                        "silent",
                        &format!("{}: silent for {}", n.node, ago(silent_ms)),
                    );
                }
            }
            if n.last_seen_ms_ago > t.silence_ms {
                band(
                    h,
                    ax.x(n.last_seen_ms_ago),
                    ax.x(0),
                    y + 3.0,
                    "url(#silent)",
                    "silent",
                    &format!("{}: silent for {}", n.node, ago(n.last_seen_ms_ago)),
                );
            }
            for e in &mine {
                marker(h, &ax, e, y);
            }
            h.push_str("</g>");
            y += LANE;
        }
    }

    // Legend.
    let ly = y + 14.0;
    let mut lx = LEFT;
    h.push_str("<g class=\"legend\">");
    for (fill, label) in [
        (phase_color(NodePhase::Starting), "starting"),
        (phase_color(NodePhase::Active), "active"),
        (phase_color(NodePhase::Fencing), "fencing"),
        (phase_color(NodePhase::Fenced), "fenced"),
        ("url(#silent)", "silent"),
        (mode_color("paired"), "paired"),
        (mode_color("alone"), "alone"),
        (mode_color("releasing"), "releasing"),
        (mode_color("recovering"), "recovering"),
    ] {
        let _ = write!(
            h,
            "<rect x=\"{lx:.1}\" y=\"{:.1}\" width=\"12\" height=\"12\" fill=\"{fill}\" stroke=\"#999\"/>\
             <text x=\"{:.1}\" y=\"{ly:.1}\">{label}</text>",
            ly - 10.0,
            lx + 16.0
        );
        lx += 22.0 + label.len() as f64 * 7.0;
    }
    let _ = write!(
        h,
        "<text x=\"{LEFT}\" y=\"{:.1}\" fill=\"#444\">\u{25c6} decision (new epoch) \u{00a0} \u{25a0} operator command \u{00a0} \u{2715} fence verdict \u{00a0} \u{25b2} takeover \u{00a0} \u{25bd} release \u{00a0} \u{25cf} rejoin \u{00a0} | contact with the other room lost</text>",
        ly + 18.0
    );
    h.push_str("</g></svg>");
}

/// A node event's glyph on its lane.
fn marker(h: &mut String, ax: &Axis, e: &TimelineEvent, y: f64) {
    let x = ax.x(e.ago_ms);
    let class = event_class(e);
    let title = esc(&describe(e));
    let glyph = match &e.kind {
        EventKind::Verdict { verdict } if verdict == "fence" => format!(
            "<path d=\"M{:.1} {:.1} l10 10 m0 -10 l-10 10\" stroke=\"#b71c1c\" stroke-width=\"3\"/>",
            x - 5.0,
            y + 6.0
        ),
        EventKind::Takeover { active: true } => format!(
            "<path d=\"M{x:.1} {:.1} l7 12 l-14 0 z\" fill=\"#6a1b9a\" stroke=\"#fff\"/>",
            y + 4.0
        ),
        EventKind::Takeover { active: false } => format!(
            "<path d=\"M{x:.1} {:.1} l7 -12 l-14 0 z\" fill=\"#fff\" stroke=\"#6a1b9a\" stroke-width=\"2\"/>",
            y + 16.0
        ),
        EventKind::PeerContact { ok: false } => format!(
            "<line x1=\"{x:.1}\" y1=\"{:.1}\" x2=\"{x:.1}\" y2=\"{:.1}\" stroke=\"#000\" stroke-width=\"2\"/>",
            y + 1.0,
            y + LANE - 1.0
        ),
        _ if is_rejoin(e) => format!(
            "<circle cx=\"{x:.1}\" cy=\"{:.1}\" r=\"5\" fill=\"#1b5e20\" stroke=\"#fff\"/>",
            y + 10.0
        ),
        _ => return,
    };
    let _ = write!(
        h,
        "<g class=\"marker {class}\">{glyph}<title>{title}</title></g>"
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::view::{NodeStatus, RoomStatus};

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
                        from: "paired".into(),
                        to: "alone".into(),
                        survivor: Some("a".into()),
                        epoch: 2,
                    },
                ),
                ev(
                    55_000,
                    Some("b1"),
                    EventKind::Verdict {
                        verdict: "fence".into(),
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
                        from: "alone".into(),
                        to: "releasing".into(),
                        survivor: Some("a".into()),
                        epoch: 3,
                    },
                ),
                ev(
                    20_000,
                    None,
                    EventKind::Mode {
                        from: "releasing".into(),
                        to: "paired".into(),
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
