//! The durable record as the arbiter holds it: readable as a plain `ClusterRecord`, and copied
//! aside the first time a step takes it mutably, so the step can tell whether it changed (and
//! must be persisted before the reply) without copying the whole record on every renewal.
//!
//! Why not a dirty flag: a write that leaves the record as it was must not cost a durable
//! write, and a flag set by hand at each write is a persist waiting to be forgotten. Here every
//! mutable access goes through `DerefMut`, so none can be missed, and the verdict is still an
//! equality test against the record as it was when the step began.
use super::ClusterRecord;
use std::hash::{Hash, Hasher};
use std::ops::{Deref, DerefMut};

#[derive(Clone, Debug)]
pub(super) struct TrackedRecord {
    value: ClusterRecord,
    /// The record as it was before the first mutable access since the last [`Self::changed`].
    before: Option<Box<ClusterRecord>>,
}

impl TrackedRecord {
    pub(super) fn new(value: ClusterRecord) -> TrackedRecord {
        TrackedRecord {
            value,
            before: None,
        }
    }

    /// Whether the record differs from what it was at the previous call (or at creation), and
    /// starts counting afresh.
    pub(super) fn changed(&mut self) -> bool {
        self.before.take().is_some_and(|b| *b != self.value)
    }
}

impl Deref for TrackedRecord {
    type Target = ClusterRecord;
    fn deref(&self) -> &ClusterRecord {
        &self.value
    }
}

impl DerefMut for TrackedRecord {
    fn deref_mut(&mut self) -> &mut ClusterRecord {
        if self.before.is_none() {
            self.before = Some(Box::new(self.value.clone()));
        }
        &mut self.value
    }
}

// The arbiter's identity (for the model checker's state set) is the record itself: the copy
// aside is bookkeeping within one step and is always empty between steps.
impl PartialEq for TrackedRecord {
    fn eq(&self, other: &Self) -> bool {
        self.value == other.value
    }
}

impl Eq for TrackedRecord {}

impl Hash for TrackedRecord {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.value.hash(state)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::RoomId;

    #[test]
    fn a_read_is_no_change_and_a_write_back_of_the_same_value_is_none_either() {
        let mut r = TrackedRecord::new(ClusterRecord::new());
        assert!(!r.rooms.contains(&RoomId::new("a")));
        assert!(!r.changed());
        r.paused = false;
        assert!(!r.changed(), "the same value written back is not a change");
        r.rooms.push(RoomId::new("a"));
        assert!(r.changed());
        assert!(!r.changed(), "counting starts afresh after each question");
        r.epoch = r.epoch.checked_next().expect("epoch 1 has a successor");
        r.rooms.clear();
        assert!(
            r.changed(),
            "a change since the last question, whatever came first"
        );
    }
}
