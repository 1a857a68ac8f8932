//! Protocol timings, the safe bounds derived from them, and the validation that refuses timer
//! combinations which would break those bounds.
//!
//! Every duration is in milliseconds of the measuring process's own clock. Clocks may run at
//! different rates, within `drift_ppm` of true time: over any true interval `d` a process
//! measures between `d·(1-ρ)` and `d·(1+ρ)`. A bound that one process must wait out on behalf of
//! another is therefore widened by `k = (1+ρ)/(1-ρ)` (see [`Timings::widen`]).
use serde::{Deserialize, Serialize};
use thiserror::Error;

/// A timer combination that breaks a protocol bound, naming the broken relation.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("timings.{field}: {relation} (got {detail})")]
pub struct ConfigError {
    /// The configuration field at fault.
    pub field: &'static str,
    /// The relation that must hold, in words.
    pub relation: &'static str,
    /// The values that broke it.
    pub detail: String,
}

/// Deliberately broken protocol variants, used only by the mutation checks to prove that the
/// model checker and the simulation can fail. Like raft-rs's `failpoints`, they exist only with
/// the `mutations` cargo feature (proto's own tests turn it on): without it the only value is
/// `None`, the type is zero-sized and no check of it is compiled, so the witness and the agent
/// carry no knob. The field stays in the configs so that they are built the same way with and
/// without the feature (cargo unifies features across a workspace test build).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Mutation {
    #[default]
    None,
    /// The survivor takes over as soon as it is granted the right to act alone, without waiting
    /// out the other room's leases and fence deadline.
    #[cfg(feature = "mutations")]
    TakeoverWithoutWait,
    /// The witness changes who may act alone without persisting the new epoch first.
    #[cfg(feature = "mutations")]
    GrantWithoutPersist,
    /// The agent counts a heartbeat it merely *receives* as contact, instead of a round trip.
    #[cfg(feature = "mutations")]
    TrustOneWayHeartbeat,
    /// The agent's contact rule leaves one counted member of the other room out (as if it
    /// had stopped counting while it still runs and vouches).
    #[cfg(feature = "mutations")]
    ContactSkipsVouchingMember,
    /// The witness grants a new or readmitted member before the other room's older members
    /// have acknowledged it.
    #[cfg(feature = "mutations")]
    AdmitWithoutAck,
    /// The agent tells DRBD the peer is fenced as soon as its room may act alone, without
    /// waiting for the takeover bound.
    #[cfg(feature = "mutations")]
    PeerFencedBeforeTakeover,
}

/// The protocol's timers. Defaults take over a whole lost room within 15 s (see
/// [`Timings::worst_case_room_loss_takeover`]).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Timings {
    /// H: how often an agent pings every node of the other room.
    pub heartbeat_interval_ms: u64,
    /// P: a ping answered with a vouch keeps peer contact for this long after it was sent.
    pub peer_timeout_ms: u64,
    /// R: how often an agent renews its lease with the witness.
    pub renew_interval_ms: u64,
    /// L: how long a witness grant is valid, counted from when the agent sent the request.
    pub lease_ms: u64,
    /// S: a room none of whose nodes the witness has heard from for this long counts as gone.
    pub silence_ms: u64,
    /// F: fencing must be confirmed by every driver within this time, else the watchdog resets.
    pub fence_deadline_ms: u64,
    /// W: the watchdog device's timeout; after the last pet the machine resets within it.
    pub watchdog_timeout_ms: u64,
    /// ρ in parts per million: the largest clock-rate error of any process against true time.
    pub drift_ppm: u64,
    /// Both rooms must see each other this long without a break before the witness lets a
    /// fenced room rejoin (damps a flapping link).
    pub rejoin_stable_ms: u64,
    /// A node stays fenced at least this long before it may unfence (no fence storms).
    pub min_fenced_ms: u64,
}

impl Default for Timings {
    fn default() -> Self {
        Timings {
            heartbeat_interval_ms: 500,
            peer_timeout_ms: 2_000,
            renew_interval_ms: 1_000,
            lease_ms: 4_000,
            silence_ms: 2_500,
            fence_deadline_ms: 3_000,
            watchdog_timeout_ms: 3_000,
            drift_ppm: 10_000,
            rejoin_stable_ms: 10_000,
            min_fenced_ms: 5_000,
        }
    }
}

const PPM: u64 = 1_000_000;

/// The longest any timer may be: one day. Longer is a typo (minutes for milliseconds, a stray
/// digit), and the bounds derived from the timers (sums, widened by the drift) must not
/// overflow: at this bound they stay far below `u64::MAX`.
pub const MAX_TIMING_MS: u64 = 86_400_000;

impl Timings {
    /// How soon an agent sends its next renewal while the previous one is unanswered: a quarter
    /// of the renew interval. The lease then outlives a witness silence of up to
    /// [`Timings::lease_silence_tolerance_ms`].
    pub fn renew_retry_ms(&self) -> u64 {
        (self.renew_interval_ms / 4).max(1)
    }

    /// The longest witness silence (no answer at all) a lease is sure to outlive, when the
    /// silence starts right after an answered renewal and the round trip is negligible:
    /// `L − R − R/4`. The last answered request was sent at most `R` before the silence; the
    /// first one after it leaves within `R/4`. Subtract the round trip for a real network.
    pub fn lease_silence_tolerance_ms(&self) -> u64 {
        self.lease_ms
            .saturating_sub(self.renew_interval_ms)
            .saturating_sub(self.renew_retry_ms())
    }

    /// Widens a duration measured on one clock into the time another clock must wait to be sure
    /// it has passed: `ceil(d · (1+ρ)/(1-ρ))`.
    pub fn widen(&self, d: u64) -> u64 {
        let num = (d as u128) * ((PPM + self.drift_ppm) as u128);
        let den = (PPM - self.drift_ppm.min(PPM - 1)) as u128;
        // Saturate rather than truncate: a wait that wrapped to a small number would be unsafe.
        u64::try_from(num.div_ceil(den)).unwrap_or(u64::MAX)
    }

    /// How long the witness waits, after its last grant to a room, before it lets the other room
    /// take over: `k·(L + F + W)`. By then every lease it granted that room has expired on the
    /// room's own clock, the room's nodes have fenced within `F`, or the watchdog reset them
    /// within `W`.
    pub fn witness_takeover_wait_ms(&self) -> u64 {
        self.widen(self.lease_ms + self.fence_deadline_ms + self.watchdog_timeout_ms)
    }

    /// How long a survivor node waits, after it stopped vouching for the other room, before it
    /// takes over: `k·(P + F + W)`. By then no node of the other room can still hold peer contact
    /// through this node's vouch, and each has fenced or been reset.
    pub fn node_takeover_wait_ms(&self) -> u64 {
        self.widen(self.peer_timeout_ms + self.fence_deadline_ms + self.watchdog_timeout_ms)
    }

    /// How long a witness that lost its state refuses to grant anything: every lease and every
    /// fence it may have forgotten has run out by then. Equal to the takeover wait.
    pub fn forgotten_state_wait_ms(&self) -> u64 {
        self.witness_takeover_wait_ms()
    }

    /// How long after its last grant of the right to act alone to one room the witness waits
    /// before it grants that right to the other room: `k·L`.
    pub fn alone_handover_wait_ms(&self) -> u64 {
        self.widen(self.lease_ms)
    }

    /// The worst case, from the moment a whole room loses power until the survivor takes over:
    /// `max(max(P, S) + R + k·(P+F+W), k·(L+F+W) + R) + R`. The first term is detection (peer
    /// contact lost and the other room silent, seen at the next renewal) plus the node's own
    /// wait; the second is the witness's wait after its last grant to the lost room plus one
    /// renewal to learn of it; the last `R` covers the renewal that carries the permission.
    pub fn worst_case_room_loss_takeover_ms(&self) -> u64 {
        let detect = self.peer_timeout_ms.max(self.silence_ms) + self.renew_interval_ms;
        let node_side = detect + self.node_takeover_wait_ms();
        let witness_side = self.witness_takeover_wait_ms() + self.renew_interval_ms;
        node_side.max(witness_side) + self.renew_interval_ms
    }

    /// Refuses timer combinations that break the protocol's bounds, naming the broken relation.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let t = self;
        let err = |field, relation, detail: String| {
            Err(ConfigError {
                field,
                relation,
                detail,
            })
        };
        if t.drift_ppm >= 200_000 {
            return err(
                "drift_ppm",
                "the clock-rate bound must be below 200000 ppm (20%)",
                format!("drift_ppm = {}", t.drift_ppm),
            );
        }
        for (field, v) in [
            ("heartbeat_interval_ms", t.heartbeat_interval_ms),
            ("peer_timeout_ms", t.peer_timeout_ms),
            ("renew_interval_ms", t.renew_interval_ms),
            ("lease_ms", t.lease_ms),
            ("silence_ms", t.silence_ms),
            ("fence_deadline_ms", t.fence_deadline_ms),
            ("watchdog_timeout_ms", t.watchdog_timeout_ms),
        ] {
            if v == 0 {
                return err(field, "must be greater than zero", format!("{field} = 0"));
            }
        }
        for (field, v) in [
            ("heartbeat_interval_ms", t.heartbeat_interval_ms),
            ("peer_timeout_ms", t.peer_timeout_ms),
            ("renew_interval_ms", t.renew_interval_ms),
            ("lease_ms", t.lease_ms),
            ("silence_ms", t.silence_ms),
            ("fence_deadline_ms", t.fence_deadline_ms),
            ("watchdog_timeout_ms", t.watchdog_timeout_ms),
            ("rejoin_stable_ms", t.rejoin_stable_ms),
            ("min_fenced_ms", t.min_fenced_ms),
        ] {
            if v > MAX_TIMING_MS {
                return err(
                    field,
                    "must be at most 86400000 ms (one day); longer timers are a typo, and the waits derived from them must not overflow",
                    format!("{field} = {v}"),
                );
            }
        }
        if 2 * t.heartbeat_interval_ms > t.peer_timeout_ms {
            return err(
                "peer_timeout_ms",
                "peer_timeout_ms >= 2 x heartbeat_interval_ms, so one lost ping does not end peer contact",
                format!(
                    "peer_timeout_ms = {}, heartbeat_interval_ms = {}",
                    t.peer_timeout_ms, t.heartbeat_interval_ms
                ),
            );
        }
        if 2 * t.renew_interval_ms > t.lease_ms {
            return err(
                "lease_ms",
                "lease_ms >= 2 x renew_interval_ms, so one lost renewal does not end the lease",
                format!(
                    "lease_ms = {}, renew_interval_ms = {}",
                    t.lease_ms, t.renew_interval_ms
                ),
            );
        }
        if t.silence_ms <= t.widen(t.renew_interval_ms) {
            return err(
                "silence_ms",
                "silence_ms > k x renew_interval_ms, so a healthy room never looks silent",
                format!(
                    "silence_ms = {}, k x renew_interval_ms = {}",
                    t.silence_ms,
                    t.widen(t.renew_interval_ms)
                ),
            );
        }
        if t.watchdog_timeout_ms < 1_000 || !t.watchdog_timeout_ms.is_multiple_of(1_000) {
            return err(
                "watchdog_timeout_ms",
                "watchdog devices count whole seconds: use a multiple of 1000, at least 1000",
                format!("watchdog_timeout_ms = {}", t.watchdog_timeout_ms),
            );
        }
        if t.rejoin_stable_ms < t.peer_timeout_ms {
            return err(
                "rejoin_stable_ms",
                "rejoin_stable_ms >= peer_timeout_ms, so a link must outlast one detection before a room rejoins",
                format!(
                    "rejoin_stable_ms = {}, peer_timeout_ms = {}",
                    t.rejoin_stable_ms, t.peer_timeout_ms
                ),
            );
        }
        Ok(())
    }

    /// Timings in abstract units for the model checker and simulation: small numbers keep the
    /// state space finite, and a large drift (ρ = 10%) makes skew matter. `validate` is not
    /// applied to these (the watchdog is not whole seconds here).
    pub fn model() -> Timings {
        Timings {
            heartbeat_interval_ms: 10,
            peer_timeout_ms: 25,
            renew_interval_ms: 10,
            lease_ms: 30,
            silence_ms: 25,
            fence_deadline_ms: 10,
            // longer than the longest tick of a fast clock (11), so petting once a tick holds
            watchdog_timeout_ms: 15,
            drift_ppm: 100_000,
            rejoin_stable_ms: 30,
            min_fenced_ms: 10,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_timings_are_valid_and_take_over_a_lost_room_within_15_seconds() {
        let t = Timings::default();
        t.validate().expect("defaults must validate");
        assert!(
            t.worst_case_room_loss_takeover_ms() <= 15_000,
            "{}",
            t.worst_case_room_loss_takeover_ms()
        );
    }

    #[test]
    fn widen_rounds_up_and_grows_with_drift() {
        let mut t = Timings {
            drift_ppm: 0,
            ..Timings::default()
        };
        assert_eq!(t.widen(1000), 1000);
        t.drift_ppm = 10_000;
        // 1000 * 1.01 / 0.99 = 1020.2 -> 1021
        assert_eq!(t.widen(1000), 1021);
    }

    #[test]
    fn timings_longer_than_a_day_are_refused_so_derived_waits_cannot_wrap() {
        // Found by the agent_config fuzz target: accepted, then L+F+W overflowed (a panic in a
        // checked build, a wrapped, tiny takeover wait in a release build).
        let t = Timings {
            lease_ms: i64::MAX as u64,
            fence_deadline_ms: i64::MAX as u64,
            ..Timings::default()
        };
        let e = t.validate().unwrap_err();
        assert_eq!(e.field, "lease_ms");
        assert!(e.to_string().contains("one day"), "{e}");
        let ok = Timings::default();
        for (field, set) in [
            (
                "heartbeat_interval_ms",
                (|t, v| t.heartbeat_interval_ms = v) as fn(&mut Timings, u64),
            ),
            ("peer_timeout_ms", |t, v| t.peer_timeout_ms = v),
            ("renew_interval_ms", |t, v| t.renew_interval_ms = v),
            ("lease_ms", |t, v| t.lease_ms = v),
            ("silence_ms", |t, v| t.silence_ms = v),
            ("fence_deadline_ms", |t, v| t.fence_deadline_ms = v),
            ("watchdog_timeout_ms", |t, v| t.watchdog_timeout_ms = v),
            ("rejoin_stable_ms", |t, v| t.rejoin_stable_ms = v),
            ("min_fenced_ms", |t, v| t.min_fenced_ms = v),
        ] {
            let mut t = ok.clone();
            set(&mut t, MAX_TIMING_MS + 1_000);
            assert_eq!(t.validate().unwrap_err().field, field);
        }
    }

    #[test]
    fn derived_waits_at_the_largest_accepted_timings_do_not_wrap() {
        let m = MAX_TIMING_MS;
        let t = Timings {
            heartbeat_interval_ms: m,
            peer_timeout_ms: m,
            renew_interval_ms: m,
            lease_ms: m,
            silence_ms: m,
            fence_deadline_ms: m,
            watchdog_timeout_ms: m,
            drift_ppm: 199_999,
            rejoin_stable_ms: m,
            min_fenced_ms: m,
        };
        assert!(t.witness_takeover_wait_ms() >= 3 * m);
        assert!(t.node_takeover_wait_ms() >= 3 * m);
        assert!(t.alone_handover_wait_ms() >= m);
        assert!(t.worst_case_room_loss_takeover_ms() >= 5 * m);
        assert_eq!(t.widen(u64::MAX), u64::MAX, "widen saturates, never wraps");
    }

    #[test]
    fn validate_names_the_broken_relation() {
        let t = Timings {
            lease_ms: 1_500,
            ..Timings::default()
        };
        let e = t.validate().unwrap_err();
        assert_eq!(e.field, "lease_ms");
        assert!(e.to_string().contains("renew_interval_ms"), "{e}");

        let t = Timings {
            heartbeat_interval_ms: 1_500,
            ..Timings::default()
        };
        assert_eq!(t.validate().unwrap_err().field, "peer_timeout_ms");

        let t = Timings {
            silence_ms: 900,
            ..Timings::default()
        };
        assert_eq!(t.validate().unwrap_err().field, "silence_ms");

        let t = Timings {
            watchdog_timeout_ms: 2_500,
            ..Timings::default()
        };
        assert_eq!(t.validate().unwrap_err().field, "watchdog_timeout_ms");

        let t = Timings {
            drift_ppm: 300_000,
            ..Timings::default()
        };
        assert_eq!(t.validate().unwrap_err().field, "drift_ppm");
    }
}
