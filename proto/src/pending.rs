//! The agent's unfinished work on Kubernetes: an unfence of this node, a takeover or release of
//! the other room. The shell persists it with the [`RunState`](crate::agent::RunState) and its
//! workers reconcile toward it until each item is confirmed, so a crash or a repeated attempt is
//! harmless (every item is idempotent).
//!
//! The rule of which work survives which decision lives here, next to the state machine that
//! makes the decisions: a fence cancels a pending unfence, and of a takeover and a release only
//! the newer stands.
use crate::agent::AgentAction;
use crate::ids::Epoch;
use serde::{Deserialize, Serialize};

/// Kubernetes actions started but not yet confirmed done, oldest first.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct PendingWork(Vec<AgentAction>);

impl PendingWork {
    /// Work as persisted by an earlier agent process, with the rule applied in order (a file
    /// written by hand or by an older agent cannot hold two contradicting items).
    pub fn from_actions(actions: impl IntoIterator<Item = AgentAction>) -> PendingWork {
        let mut w = PendingWork::default();
        for a in actions {
            w.decided(&a);
        }
        w
    }

    /// Takes account of an action the state machine just decided. Returns whether the pending
    /// work changed (then it must be persisted before the action is carried out).
    pub fn decided(&mut self, a: &AgentAction) -> bool {
        let before = self.0.clone();
        match a {
            AgentAction::Fence { .. } => {
                self.0.retain(|p| !matches!(p, AgentAction::Unfence { .. }));
            }
            AgentAction::Unfence { .. } => {
                self.0.retain(|p| !matches!(p, AgentAction::Unfence { .. }));
                self.0.push(a.clone());
            }
            AgentAction::TakeOver { .. } | AgentAction::ReleaseTakeover { .. } => {
                self.0.retain(|p| {
                    !matches!(
                        p,
                        AgentAction::TakeOver { .. } | AgentAction::ReleaseTakeover { .. }
                    )
                });
                self.0.push(a.clone());
            }
            _ => {}
        }
        self.0 != before
    }

    /// A worker confirmed `a`: it is forgotten, unless a newer decision replaced it already.
    /// Returns whether it was still pending.
    pub fn done(&mut self, a: &AgentAction) -> bool {
        let before = self.0.len();
        self.0.retain(|p| p != a);
        self.0.len() != before
    }

    /// The unfence of this node still to be confirmed.
    pub fn unfence(&self) -> Option<Epoch> {
        self.0.iter().find_map(|a| match a {
            AgentAction::Unfence { epoch } => Some(*epoch),
            _ => None,
        })
    }

    /// The takeover or release of the other room still to be confirmed.
    pub fn other_room(&self) -> Option<&AgentAction> {
        self.0.iter().find(|a| {
            matches!(
                a,
                AgentAction::TakeOver { .. } | AgentAction::ReleaseTakeover { .. }
            )
        })
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn actions(&self) -> &[AgentAction] {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fence(e: u64) -> AgentAction {
        AgentAction::Fence {
            epoch: Epoch(e),
            reason: "test".into(),
        }
    }

    #[test]
    fn a_fence_cancels_a_pending_unfence_and_keeps_the_other_rooms_work() {
        let mut w = PendingWork::default();
        assert!(w.decided(&AgentAction::Unfence { epoch: Epoch(3) }));
        assert!(w.decided(&AgentAction::TakeOver {
            epoch: Epoch(3),
            proof: None
        }));
        assert_eq!(w.unfence(), Some(Epoch(3)));
        assert!(w.decided(&fence(4)), "the unfence was dropped");
        assert_eq!(w.unfence(), None);
        assert!(matches!(w.other_room(), Some(AgentAction::TakeOver { .. })));
        assert!(!w.decided(&fence(4)), "nothing left to cancel");
    }

    #[test]
    fn the_newer_of_takeover_and_release_stands_and_unfences_do_not_pile_up() {
        let mut w = PendingWork::default();
        w.decided(&AgentAction::Unfence { epoch: Epoch(1) });
        w.decided(&AgentAction::Unfence { epoch: Epoch(2) });
        w.decided(&AgentAction::TakeOver {
            epoch: Epoch(2),
            proof: None,
        });
        w.decided(&AgentAction::ReleaseTakeover { epoch: Epoch(2) });
        assert_eq!(
            w.actions(),
            &[
                AgentAction::Unfence { epoch: Epoch(2) },
                AgentAction::ReleaseTakeover { epoch: Epoch(2) }
            ]
        );
        assert!(!w.decided(&AgentAction::PetWatchdog));
    }

    #[test]
    fn confirmed_work_is_forgotten_only_if_it_is_still_the_pending_one() {
        let mut w = PendingWork::from_actions([
            AgentAction::TakeOver {
                epoch: Epoch(5),
                proof: None,
            },
            AgentAction::ReleaseTakeover { epoch: Epoch(5) },
        ]);
        assert_eq!(w.actions().len(), 1, "the file's contradiction is resolved");
        assert!(!w.done(&AgentAction::TakeOver {
            epoch: Epoch(5),
            proof: None
        }));
        assert!(w.done(&AgentAction::ReleaseTakeover { epoch: Epoch(5) }));
        assert!(w.is_empty());
    }
}
