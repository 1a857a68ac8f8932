//! The cluster page's SVG timeline of the last hour: a witness lane (the cluster's mode, its
//! decisions and operator commands) and a lane per node (phase bands, verdicts, takeovers,
//! silences), on one time axis.
use super::event::{describe, event_class, is_rejoin, phase_name};
use super::{ago, esc, hms};
use crate::view::{ClusterMode, EventKind, Timeline, TimelineEvent, VerdictKind};
use proto::wire::NodePhase;
use std::fmt::Write;

pub(super) const W: f64 = 1100.0;
pub(super) const LEFT: f64 = 150.0;
pub(super) const RIGHT: f64 = 40.0;
pub(super) const LANE: f64 = 22.0;

pub(super) fn phase_color(p: NodePhase) -> &'static str {
    match p {
        NodePhase::Starting => "#9e9e9e",
        NodePhase::Active => "#43a047",
        NodePhase::Fencing => "#fb8c00",
        NodePhase::Fenced => "#c62828",
    }
}

pub(super) fn mode_color(m: ClusterMode) -> &'static str {
    match m {
        ClusterMode::Paired => "#a5d6a7",
        ClusterMode::Alone => "#ffcc80",
        ClusterMode::Releasing => "#90caf9",
        ClusterMode::Recovering => "#ef9a9a",
    }
}

pub(super) struct Axis {
    window: f64,
}

impl Axis {
    /// x of an event `ago_ms` before now.
    fn x(&self, ago_ms: u64) -> f64 {
        let f = 1.0 - (ago_ms as f64 / self.window).min(1.0);
        LEFT + f * (W - LEFT - RIGHT)
    }
}

pub(super) fn band(h: &mut String, x0: f64, x1: f64, y: f64, fill: &str, class: &str, title: &str) {
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
pub(super) fn svg(h: &mut String, t: &Timeline, window_ms: u64, now_unix_ms: i64) {
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
    let mut mode_now = c.mode;
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
            mode_color(mode_now),
            &format!("mode mode-{mode_now}"),
            &format!("mode {mode_now}"),
        );
        end = e.ago_ms;
        mode_now = match &e.kind {
            EventKind::Mode { from, .. } => *from,
            _ => ClusterMode::Recovering,
        };
    }
    band(
        h,
        ax.x(start_of_history),
        ax.x(end),
        y + 3.0,
        mode_color(mode_now),
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
                    Some(r) if *to != ClusterMode::Paired => format!("{to}: {r}"),
                    _ => to.to_string(),
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
        (mode_color(ClusterMode::Paired), "paired"),
        (mode_color(ClusterMode::Alone), "alone"),
        (mode_color(ClusterMode::Releasing), "releasing"),
        (mode_color(ClusterMode::Recovering), "recovering"),
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
pub(super) fn marker(h: &mut String, ax: &Axis, e: &TimelineEvent, y: f64) {
    let x = ax.x(e.ago_ms);
    let class = event_class(e);
    let title = esc(&describe(e));
    let glyph = match &e.kind {
        EventKind::Verdict {
            verdict: VerdictKind::Fence,
        } => format!(
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
