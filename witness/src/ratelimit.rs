//! Per-identity request rate limit: a token bucket per certificate identity, so one broken or
//! hostile agent cannot crowd out the others. Excess requests get 429 with `Retry-After`.
//!
//! Memory is bounded by the identities the CA issued; idle, full buckets are dropped by
//! [`RateLimiter::prune`].
use crate::sharded::Sharded;
use tokio::time::Instant;

const SHARDS: usize = 32;

struct Bucket {
    tokens: f64,
    last: Instant,
}

/// Token buckets keyed by identity URI.
pub struct RateLimiter {
    per_second: f64,
    burst: f64,
    /// Sharded so concurrent requests from different identities rarely contend.
    buckets: Sharded<String, Bucket>,
}

impl RateLimiter {
    pub fn new(per_second: u32) -> RateLimiter {
        let per_second = f64::from(per_second.max(1));
        RateLimiter {
            per_second,
            burst: per_second,
            buckets: Sharded::new(SHARDS),
        }
    }

    /// Takes one token; `Err(seconds)` tells how long until one is available.
    pub fn check(&self, key: &str) -> Result<(), f64> {
        let now = Instant::now();
        let mut shard = self.buckets.lock(key);
        // Looked up by `&str`: an owned key is allocated only for a new identity.
        if let Some(b) = shard.get_mut(key) {
            return self.take(b, now);
        }
        let mut b = Bucket {
            tokens: self.burst,
            last: now,
        };
        let r = self.take(&mut b, now);
        shard.insert_new(key.to_string(), b);
        r
    }

    fn take(&self, b: &mut Bucket, now: Instant) -> Result<(), f64> {
        let dt = now.saturating_duration_since(b.last).as_secs_f64();
        b.tokens = (b.tokens + dt * self.per_second).min(self.burst);
        b.last = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            Ok(())
        } else {
            Err((1.0 - b.tokens) / self.per_second)
        }
    }

    /// Drops buckets that have been refilled completely (their identity has been idle).
    pub fn prune(&self) {
        let now = Instant::now();
        let full_after = self.burst / self.per_second;
        self.buckets.each_shard(|table| {
            table.retain(|(_, b)| {
                now.saturating_duration_since(b.last).as_secs_f64() < full_after + 1.0
            });
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn bucket_allows_a_burst_then_refuses_then_refills() {
        let r = RateLimiter::new(5);
        for _ in 0..5 {
            assert!(r.check("x").is_ok());
        }
        assert!(r.check("x").is_err());
        assert!(r.check("y").is_ok(), "identities are independent");
        tokio::time::advance(std::time::Duration::from_millis(250)).await;
        assert!(r.check("x").is_ok());
    }
}
