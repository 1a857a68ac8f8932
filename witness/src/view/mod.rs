//! The typed status model: what `/v1/status`, `/v1/timeline`, the pages and `witness status`
//! show. [`vocab`] holds its words (every enum the JSON carries as a string), [`model`] the
//! cluster, room, node and witness, [`event`] the timeline's events, and [`build`] makes a
//! cluster's status from its arbiter. No HTTP and no HTML here; the status port serves it and
//! `crate::page` renders it.
mod build;
mod event;
mod model;
mod vocab;

pub(crate) use build::{mode_text, room_last_seen, status_of, status_unloaded};
pub use event::{EventKind, Timeline, TimelineEvent};
pub use model::{ClusterStatus, StatusDoc, WitnessInfo};
pub(crate) use vocab::admin_label;
pub use vocab::{AlarmKind, ClusterMode, LoadedHow, VerdictKind};
// The pages' tests build statuses by hand.
#[cfg(test)]
pub use model::{NodeStatus, RoomStatus};
