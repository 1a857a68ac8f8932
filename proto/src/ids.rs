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
    /// The highest epoch the witness accepts from a node (2^53, also the largest integer every
    /// JSON reader keeps exact). A node can move a cluster's epoch at most this far; the
    /// remaining 2^64 - 2^53 values are headroom for the witness's own increments, which at one
    /// change of mode per second last longer than any hardware, so the epoch never saturates.
    pub const CEILING: Epoch = Epoch(1 << 53);

    /// How far ahead of the witness's epoch a report may be while the witness has not lost
    /// state (a store restored from an old backup): more mode changes than a cluster goes
    /// through in its life. Further ahead, the report is refused and nothing changes.
    pub const MAX_JUMP: u64 = 1 << 20;

    /// The epoch after this one, or `None` when it would overflow (never saturates: two
    /// different rights must never share an epoch).
    pub fn checked_next(self) -> Option<Epoch> {
        self.0.checked_add(1).map(Epoch)
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

/// Who a client certificate speaks for. Encoded as a SAN URI:
/// `witness://<cluster>/<room>/<node>` for a node's agent, `witness-admin://<name>` for an
/// operator. The witness and the agents take identity only from the certificate, never from a
/// message body.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Identity {
    Node {
        cluster: ClusterId,
        room: RoomId,
        node: NodeId,
    },
    Admin {
        name: String,
    },
}

impl Identity {
    pub const NODE_SCHEME: &'static str = "witness://";
    pub const ADMIN_SCHEME: &'static str = "witness-admin://";

    /// The SAN URI that encodes this identity.
    pub fn to_uri(&self) -> String {
        match self {
            Identity::Node {
                cluster,
                room,
                node,
            } => {
                // Built by hand, not with format!: the witness builds one for every request.
                let parts = [
                    Self::NODE_SCHEME,
                    cluster.as_str(),
                    "/",
                    room.as_str(),
                    "/",
                    node.as_str(),
                ];
                let mut uri = String::with_capacity(parts.iter().map(|p| p.len()).sum());
                for p in parts {
                    uri.push_str(p);
                }
                uri
            }
            Identity::Admin { name } => format!("{}{name}", Self::ADMIN_SCHEME),
        }
    }

    /// Parses a SAN URI; the error says what was expected.
    pub fn parse_uri(uri: &str) -> Result<Identity, String> {
        if let Some(rest) = uri.strip_prefix(Self::NODE_SCHEME) {
            let parts: Vec<&str> = rest.split('/').collect();
            let [cluster, room, node] = parts.as_slice() else {
                return Err(format!(
                    "certificate identity {uri:?} is not of the form witness://<cluster>/<room>/<node>"
                ));
            };
            check_name("cluster", cluster)?;
            check_name("room", room)?;
            check_name("node", node)?;
            return Ok(Identity::Node {
                cluster: ClusterId::new(*cluster),
                room: RoomId::new(*room),
                node: NodeId::new(*node),
            });
        }
        if let Some(name) = uri.strip_prefix(Self::ADMIN_SCHEME) {
            check_name("admin", name)?;
            return Ok(Identity::Admin {
                name: name.to_string(),
            });
        }
        Err(format!(
            "certificate identity {uri:?} has no witness identity: expected a SAN URI \
             witness://<cluster>/<room>/<node> or witness-admin://<name>"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identities_round_trip_through_uris() {
        let n = Identity::Node {
            cluster: "hospital-1".into(),
            room: "a".into(),
            node: "node-a1".into(),
        };
        assert_eq!(n.to_uri(), "witness://hospital-1/a/node-a1");
        assert_eq!(Identity::parse_uri(&n.to_uri()).unwrap(), n);
        let a = Identity::Admin { name: "ops".into() };
        assert_eq!(Identity::parse_uri(&a.to_uri()).unwrap(), a);
    }

    #[test]
    fn malformed_identities_are_refused_with_the_expected_form() {
        let e = Identity::parse_uri("witness://c/a").unwrap_err();
        assert!(e.contains("witness://<cluster>/<room>/<node>"), "{e}");
        assert!(Identity::parse_uri("spiffe://x").is_err());
        assert!(Identity::parse_uri("witness://c/A B/n").is_err());
    }
}
