//! The fleet page (`/`): a summary by mode and by alarm, the clusters that need an operator
//! first, a server-side filter and paging, so it stays small with 10,000 clusters.
use super::{audit_table, esc, head, refresh_s, url_enc, witness_header};
use crate::view::{AlarmKind, ClusterMode, ClusterStatus, StatusDoc};
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

pub(super) fn nonempty(s: &Option<String>) -> Option<&str> {
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
pub(super) fn mode_of(c: &ClusterStatus) -> &'static str {
    if c.loaded {
        c.mode.as_str()
    } else {
        "not_called"
    }
}

/// How urgent a cluster is: the index of its most urgent alarm kind; no alarm sorts last.
pub(super) fn urgency(c: &ClusterStatus) -> usize {
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

pub(super) fn nav(h: &mut String, q: &FleetQuery, page: usize, pages: usize) {
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

pub(super) fn cluster_row(h: &mut String, c: &ClusterStatus) {
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
