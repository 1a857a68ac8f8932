//! The typed status model ([`model`]) and how it is built from an arbiter ([`build`]): what
//! `/v1/status`, `/v1/timeline`, the pages and `witness status` show. No HTTP and no HTML
//! here; the status port serves it and `crate::page` renders it.
mod build;
mod event;
mod model;

pub(crate) use build::{mode_text, room_last_seen, status_of, status_unloaded};
pub(crate) use event::admin_label;
pub use event::{EventKind, LoadedHow, TimelineEvent, VerdictKind};
pub use model::{AlarmKind, ClusterMode, ClusterStatus, StatusDoc, Timeline, WitnessInfo};
// The pages' tests build statuses by hand.
#[cfg(test)]
pub use model::{NodeStatus, RoomStatus};
