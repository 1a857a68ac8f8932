//! At most one log line per interval for one kind of event (a flood of refused connections, a
//! full disk), with the number of lines left out since the last one: a hostile or broken client
//! must not turn into a flood of log lines.
use std::time::Duration;
use tokio::time::Instant;

/// One kind of event's log budget. `const` so it can be a `static` beside the code that logs.
// A blocking lock held for a few instructions, never across an await: it cannot stall a worker
// (the witness's and the agent's clippy bans on std locks are about long-held ones).
#[allow(clippy::disallowed_types)]
pub struct LogLimiter {
    every: Duration,
    state: std::sync::Mutex<(Option<Instant>, u64)>,
}

#[allow(clippy::disallowed_types)]
impl LogLimiter {
    pub const fn new(every: Duration) -> LogLimiter {
        LogLimiter {
            every,
            state: std::sync::Mutex::new((None, 0)),
        }
    }

    /// `Some(lines left out since the last one)` when a line may be written now.
    pub fn allow(&self) -> Option<u64> {
        // A panic elsewhere while holding this lock leaves two plain numbers behind: keep going.
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        match st.0 {
            Some(last) if now.duration_since(last) < self.every => {
                st.1 += 1;
                None
            }
            _ => {
                let suppressed = st.1;
                *st = (Some(now), 0);
                Some(suppressed)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::LogLimiter;
    use std::time::Duration;

    #[test]
    fn a_flood_of_warnings_writes_one_line_per_interval_and_counts_the_rest() {
        let l = LogLimiter::new(Duration::from_secs(3600));
        assert_eq!(l.allow(), Some(0));
        assert!((0..10_000).all(|_| l.allow().is_none()));
        let l = LogLimiter::new(Duration::ZERO);
        assert_eq!(l.allow(), Some(0));
        assert_eq!(l.allow(), Some(0));
    }

    #[tokio::test(start_paused = true)]
    async fn the_next_line_after_the_interval_reports_how_many_were_left_out() {
        let l = LogLimiter::new(Duration::from_secs(10));
        assert_eq!(l.allow(), Some(0));
        for _ in 0..7 {
            assert_eq!(l.allow(), None);
        }
        tokio::time::advance(Duration::from_secs(10)).await;
        assert_eq!(l.allow(), Some(7));
        assert_eq!(l.allow(), None);
    }
}
