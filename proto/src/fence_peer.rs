//! DRBD's fence-peer question, answered by the state machine: may this node tell DRBD that the
//! other room is fenced (handler exit 7, IO resumes on this side)?
//!
//! The shell asks [`NodeAgent::peer_fenced`] at the moment the handler asks it, with the node's
//! clock then, never from an earlier snapshot: a verdict read a little late could outlive the
//! lease it rests on. The model check holds it to the promise (`World::peer_fence_violation`):
//! the verdict is never [`PeerFenceVerdict::PeerFenced`] while a node of the other room may still
//! be running.
use crate::agent::{NodeAgent, Phase};
use crate::ids::Epoch;
use crate::time::Millis;
use crate::wire::LeaseMode;
use serde::{Deserialize, Serialize};

/// The answer, with the reason in its variant.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "verdict")]
pub enum PeerFenceVerdict {
    /// This room holds a valid right to act alone and has taken over after the safe bound:
    /// every node of the other room has fenced itself or been reset. DRBD may resume IO.
    PeerFenced { epoch: Epoch },
    /// This node is fencing itself (or is fenced): its own IO must stay frozen.
    SelfFencing,
    /// This node has not become active yet.
    Starting,
    /// This room may act alone, but the takeover bound has not passed.
    AloneWaiting,
    /// Running paired: the other room may still be active.
    Paired,
}

impl PeerFenceVerdict {
    /// DRBD may resume IO on this side.
    pub fn peer_fenced(self) -> bool {
        matches!(self, PeerFenceVerdict::PeerFenced { .. })
    }
}

impl NodeAgent {
    /// The fence-peer verdict at node-local time `now`.
    pub fn peer_fenced(&self, now: Millis) -> PeerFenceVerdict {
        let run = self.run_state();
        let alone = matches!(
            run.lease.as_ref().map(|l| l.mode),
            Some(LeaseMode::Alone { .. })
        );
        let alone_now = alone && self.lease_valid(now);
        match run.phase {
            Phase::Fencing { .. } | Phase::Fenced { .. } => PeerFenceVerdict::SelfFencing,
            Phase::Starting => PeerFenceVerdict::Starting,
            Phase::Active { .. } if alone_now && run.takeover => {
                PeerFenceVerdict::PeerFenced { epoch: run.epoch }
            }
            Phase::Active { .. }
                if alone_now && mutated!(self.config().mutation, PeerFencedBeforeTakeover) =>
            {
                // Broken on purpose: the right to act alone taken as proof that the other room
                // has stopped, without the takeover bound.
                PeerFenceVerdict::PeerFenced { epoch: run.epoch }
            }
            Phase::Active { .. } if alone_now => PeerFenceVerdict::AloneWaiting,
            Phase::Active { .. } => PeerFenceVerdict::Paired,
        }
    }
}
