//! Time as the protocol sees it: milliseconds on one process's own monotonic clock.
//!
//! Two processes never compare their clocks; each only measures elapsed time on its own clock,
//! and every bound that spans processes is widened by the stated clock-rate drift
//! (see [`crate::config::Timings::widen`]).
use serde::{Deserialize, Serialize};
use std::fmt;
use std::ops::{Add, Sub};

/// A point on one process's monotonic clock, in milliseconds since an arbitrary origin.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Millis(pub u64);

impl Millis {
    pub const ZERO: Millis = Millis(0);

    /// Milliseconds from `earlier` to `self`, zero if `earlier` is later.
    pub fn since(self, earlier: Millis) -> u64 {
        self.0.saturating_sub(earlier.0)
    }
}

impl Add<u64> for Millis {
    type Output = Millis;
    fn add(self, rhs: u64) -> Millis {
        Millis(self.0.saturating_add(rhs))
    }
}

impl Sub<u64> for Millis {
    type Output = Millis;
    fn sub(self, rhs: u64) -> Millis {
        Millis(self.0.saturating_sub(rhs))
    }
}

impl fmt::Display for Millis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}ms", self.0)
    }
}
