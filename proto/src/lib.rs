//! The two-room witness protocol: wire types and the lease/arbitration logic as pure state
//! machines.
//!
//! Nothing in this crate touches a socket, a disk or a clock. The witness's [`arbiter::Arbiter`]
//! (one per cluster) and a node's [`agent::NodeAgent`] each take `(now, input)` and return data:
//! what to persist, what to send, and what to do (grant, deny, fence, unfence, take over,
//! release). The `witness` and `witness-agent` binaries are shells that keep time, move bytes,
//! persist and call drivers. `docs/protocol.md` is the specification this code implements; every
//! rule lives here once.

/// `mutated!(m, Variant)`: the run is broken on purpose as `Mutation::Variant`. Without the
/// `mutations` feature it is the constant `false` and no comparison is compiled.
macro_rules! mutated {
    ($m:expr, $v:ident) => {{
        #[cfg(feature = "mutations")]
        let on = $m == $crate::config::Mutation::$v;
        #[cfg(not(feature = "mutations"))]
        let on = {
            let _ = &$m;
            false
        };
        on
    }};
}

pub mod agent;
pub mod arbiter;
pub mod config;
pub mod fence_peer;
pub mod ids;
pub mod pending;
pub mod small;
pub mod time;
pub mod wire;
pub mod world;

pub use config::{ConfigError, Mutation, Timings};
pub use ids::{ClusterId, Epoch, NodeId, RoomId};
pub use time::Millis;
