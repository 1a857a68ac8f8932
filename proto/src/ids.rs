//! Names of the things the protocol talks about: clusters, rooms, nodes and fencing epochs.
use serde::{Deserialize, Serialize};
use std::fmt;

macro_rules! name_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub String);

        impl $name {
            pub fn new(s: impl Into<String>) -> Self {
                Self(s.into())
            }
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl From<&str> for $name {
            fn from(s: &str) -> Self {
                Self(s.to_string())
            }
        }
    };
}

name_type!(
    /// One two-room cluster protected by the witness (one witness may serve many).
    ClusterId
);
name_type!(
    /// One of the two rooms (server rooms, sites) of a cluster.
    RoomId
);
name_type!(
    /// One node (host) of a room; the Kubernetes node name where there is one.
    NodeId
);

/// The fencing epoch: grows with every change of who may act alone. The witness persists it
/// before announcing it; every grant and every takeover carries it.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Epoch(pub u64);

impl Epoch {
    pub fn next(self) -> Epoch {
        Epoch(self.0.saturating_add(1))
    }
}

impl fmt::Display for Epoch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Checks that a cluster, room or node name is usable in certificates, URLs and Kubernetes
/// labels: 1..=63 characters of `[a-z0-9-]`, not starting or ending with `-`.
pub fn check_name(kind: &str, s: &str) -> Result<(), String> {
    let ok_chars = s
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.');
    if s.is_empty() || s.len() > 63 || !ok_chars || s.starts_with('-') || s.ends_with('-') {
        return Err(format!(
            "{kind} name {s:?} is not valid: use 1 to 63 characters of a-z, 0-9, '-' and '.', \
             not starting or ending with '-'"
        ));
    }
    Ok(())
}
