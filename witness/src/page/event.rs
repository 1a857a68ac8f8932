//! A timeline event in words and as a CSS class: what the cluster page's event table and the
//! SVG timeline's tooltips both say.
use super::ago;
use crate::view::{ClusterMode, EventKind, LoadedHow, TimelineEvent, VerdictKind};
use proto::wire::NodePhase;

pub(super) fn phase_name(p: NodePhase) -> &'static str {
    match p {
        NodePhase::Starting => "starting",
        NodePhase::Active => "active",
        NodePhase::Fencing => "fencing",
        NodePhase::Fenced => "fenced",
    }
}

pub(super) fn verdict_words(v: VerdictKind) -> &'static str {
    match v {
        VerdictKind::GrantPaired => "grant (paired)",
        VerdictKind::GrantAlone => "GRANT ALONE",
        VerdictKind::Fence => "FENCE",
        VerdictKind::Retry => "retry (nothing granted now)",
    }
}

/// A rejoin: the cluster back to paired after a survivor ran alone, or a fenced node unfencing.
pub(super) fn is_rejoin(e: &TimelineEvent) -> bool {
    match &e.kind {
        EventKind::Mode { from, to, .. } => {
            *to == ClusterMode::Paired && *from != ClusterMode::Paired
        }
        EventKind::Phase { from, to } => *from == NodePhase::Fenced && *to != NodePhase::Fenced,
        _ => false,
    }
}

/// The CSS class of an event (the browser test looks for these).
pub(super) fn event_class(e: &TimelineEvent) -> &'static str {
    if is_rejoin(e) {
        return "ev-rejoin";
    }
    match &e.kind {
        EventKind::Mode { .. } => "ev-decision",
        EventKind::Verdict {
            verdict: VerdictKind::Fence,
        } => "ev-fence",
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
        EventKind::Verdict { verdict } => format!("witness answers: {}", verdict_words(*verdict)),
        EventKind::Mode {
            from,
            to,
            survivor,
            epoch,
        } => match (to, survivor) {
            (ClusterMode::Alone, Some(r)) => {
                format!("DECISION: room {r} acts alone (epoch {epoch}, was {from})")
            }
            (ClusterMode::Releasing, Some(r)) => {
                format!("DECISION: room {r} releases its takeover; the other room rejoins (epoch {epoch})")
            }
            (ClusterMode::Paired, _) => {
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
            match how {
                LoadedHow::Restarted => "restarted from its stored record",
                LoadedHow::Recovering => "recovering: state may have been lost",
                LoadedHow::New => "new cluster",
            }
        ),
    }
}
