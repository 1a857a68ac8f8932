//! The node's monotonic clock for the protocol: milliseconds of `CLOCK_BOOTTIME`.
//!
//! Why BOOTTIME: it is shared by every process on this boot (a restarted agent compares its
//! readings with times persisted by its predecessor), never jumps with wall-clock changes, and,
//! unlike `CLOCK_MONOTONIC`, keeps counting while the machine is suspended, so a lease expires on
//! true elapsed time even across a suspend. It restarts at a reboot, which is why the persisted
//! state is tied to the boot id.
use proto::Millis;
use rustix::time::{clock_gettime, ClockId};

/// Reads the protocol clock. Copyable; every reading is a fresh system call.
#[derive(Clone, Copy, Debug, Default)]
pub struct Clock;

impl Clock {
    /// Milliseconds since boot, including time spent suspended.
    pub fn now(&self) -> Millis {
        let ts = clock_gettime(ClockId::Boottime);
        let ms = (ts.tv_sec.max(0) as u64)
            .saturating_mul(1000)
            .saturating_add((ts.tv_nsec.max(0) as u64) / 1_000_000);
        Millis(ms)
    }
}

/// The kernel's id of this boot; a state file written under another boot id is ignored.
pub fn boot_id() -> std::io::Result<String> {
    Ok(std::fs::read_to_string("/proc/sys/kernel/random/boot_id")?
        .trim()
        .to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[allow(clippy::disallowed_methods)] // a plain test thread, not a tokio worker
    fn the_clock_moves_forward_and_the_boot_id_is_readable() {
        let c = Clock;
        let a = c.now();
        std::thread::sleep(std::time::Duration::from_millis(20));
        let b = c.now();
        assert!(b.0 >= a.0 + 19, "{a} -> {b}");
        assert_eq!(boot_id().unwrap().len(), 36);
    }
}
