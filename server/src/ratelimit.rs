//! The per-address limit on increments of the shared counter: `rate` a second, bursts
//! of twice as many (GCRA, from the `governor` crate).

use governor::clock::Clock as _;
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

pub struct PublishLimiter {
    limiter: DefaultKeyedRateLimiter<IpAddr>,
    checks: AtomicU64,
}

/// Addresses idle long enough to be back at a full burst are forgotten every this many
/// checks, so the map stays as small as the set of recent publishers.
const PRUNE_EVERY: u64 = 4096;

impl PublishLimiter {
    pub fn new(rate: u32) -> Self {
        let rate = NonZeroU32::new(rate).unwrap_or(NonZeroU32::MIN);
        let burst = rate.saturating_mul(NonZeroU32::new(2).expect("2 is not zero"));
        PublishLimiter {
            limiter: RateLimiter::keyed(Quota::per_second(rate).allow_burst(burst)),
            checks: AtomicU64::new(0),
        }
    }

    /// Takes one increment for `addr`, or says how long until one is allowed.
    pub fn check(&self, addr: IpAddr) -> Result<(), Duration> {
        if self.checks.fetch_add(1, Ordering::Relaxed) % PRUNE_EVERY == PRUNE_EVERY - 1 {
            self.limiter.retain_recent();
        }
        self.limiter
            .check_key(&addr)
            .map_err(|not_until| not_until.wait_time_from(self.limiter.clock().now()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bursts_of_twice_the_rate_then_refused_with_a_wait() {
        let limiter = PublishLimiter::new(2);
        let a: IpAddr = "127.0.0.1".parse().unwrap();
        let b: IpAddr = "127.0.0.2".parse().unwrap();
        for i in 0..4 {
            assert!(limiter.check(a).is_ok(), "burst of 4, at {i}");
        }
        let wait = limiter.check(a).unwrap_err();
        assert!(
            wait > Duration::ZERO && wait <= Duration::from_millis(500),
            "{wait:?}"
        );
        assert!(
            limiter.check(b).is_ok(),
            "another address has its own budget"
        );
    }
}
