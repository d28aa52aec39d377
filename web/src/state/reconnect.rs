//! When the page reconnects the shared stream by itself, where the browser will not: an
//! `EventSource` gives up for good after any answer but `200` (so a `503` from the stream
//! cap would end the page's stream), and it cannot see comments, so a half-open stream
//! behind a proxy looks quiet for ever. The delays are pure functions of their inputs,
//! randomness included, so that tests pin them.

use super::form::query_pairs;
use std::ops::RangeInclusive;

/// A refusal's wait doubles while refusals repeat, up to this (before jitter).
pub const MAX_BACKOFF_MS: u64 = 60_000;
/// The shortest wait after a refusal, so that `Retry-After: 0` cannot make a tight loop.
pub const MIN_BACKOFF_MS: u64 = 1_000;
/// Jitter adds up to this share of the wait, so that pages refused together do not all
/// come back together.
pub const JITTER_SHARE: f64 = 0.5;
/// After this many heartbeat periods without any event the stream counts as dead.
pub const MISSED_HEARTBEATS: u64 = 2;
/// The longest wait before the page reopens a stream that was open and dropped, so
/// that the tabs catch up within a second whatever the server's `retry`: half of it,
/// leaving the other half for noticing the drop and opening the new stream (a loaded
/// machine took up to about 400 ms for those in the browser tests).
pub const MAX_DROP_WAIT_MS: u64 = 500;

/// What the page assumes about the server, since the wire cannot tell it in time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Config {
    /// How often the server sends a heartbeat on an idle stream. The page cannot learn it
    /// before the first heartbeat, and needs it to notice that none came, so it is
    /// configured: the server's default keep-alive period, or `?heartbeat_ms=`.
    pub heartbeat_ms: u64,
    /// The server's `retry` delay, the wait after a refusal that named none. An
    /// EventSource does not show `retry` to scripts, so it is configured: the server's
    /// default, or `?retry_ms=`.
    pub retry_ms: u64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            heartbeat_ms: 15_000,
            retry_ms: 3_000,
        }
    }
}

/// The range a configured period may take, in milliseconds.
const PERIOD_MS: RangeInclusive<u64> = 1..=3_600_000;

impl Config {
    /// The defaults, with `heartbeat_ms` and `retry_ms` from the page's query where they
    /// are whole numbers of milliseconds in range; anything else keeps its default.
    pub fn from_query(query: &str) -> Config {
        let mut config = Config::default();
        for (k, v) in query_pairs(query) {
            let Ok(ms) = shared::parse_number(k, v, PERIOD_MS) else {
                continue;
            };
            match k {
                "heartbeat_ms" => config.heartbeat_ms = ms,
                "retry_ms" => config.retry_ms = ms,
                _ => {}
            }
        }
        config
    }

    /// How long a stream may stay silent before the page gives up on it.
    pub fn silence_limit_ms(&self) -> u64 {
        self.heartbeat_ms.saturating_mul(MISSED_HEARTBEATS)
    }
}

/// The wait after a refusal: the server's `Retry-After` (or `default_ms` when it sent
/// none), doubled for each refusal in a row before this one (`repeats`), capped at
/// [`MAX_BACKOFF_MS`] unless the server itself asked for longer, plus jitter of up to
/// [`JITTER_SHARE`] of that. `jitter` is a random number in `0..1`.
pub fn after_refusal(
    retry_after_ms: Option<u64>,
    default_ms: u64,
    repeats: u32,
    jitter: f64,
) -> u64 {
    let asked = retry_after_ms.unwrap_or(default_ms).max(MIN_BACKOFF_MS);
    let doubled = asked.saturating_mul(1u64 << repeats.min(32));
    let base = doubled.min(MAX_BACKOFF_MS).max(asked);
    base + (base as f64 * JITTER_SHARE * unit(jitter)) as u64
}

/// The wait before reopening a stream that was open and dropped without `end`: drawn
/// uniformly from `0..min(retry_ms, MAX_DROP_WAIT_MS)` by `jitter` (a random number in
/// `0..1`), so that the pages a crashed server dropped together do not all come back at
/// the same instant, as they would after the browser's one fixed `retry`.
pub fn after_drop(retry_ms: u64, jitter: f64) -> u64 {
    let span = retry_ms.min(MAX_DROP_WAIT_MS);
    ((span as f64 * unit(jitter)) as u64).min(span.saturating_sub(1))
}

/// A random number as `0..1`, whatever came in.
fn unit(jitter: f64) -> f64 {
    if jitter.is_finite() {
        jitter.clamp(0.0, 1.0)
    } else {
        0.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refusal_waits_retry_after_plus_at_most_half_again() {
        assert_eq!(after_refusal(Some(2_000), 3_000, 0, 0.0), 2_000);
        assert_eq!(after_refusal(Some(2_000), 3_000, 0, 0.5), 2_500);
        assert_eq!(after_refusal(Some(2_000), 3_000, 0, 0.999_999), 2_999);
        // Whatever the randomness, the wait stays in its bounds.
        for j in [-1.0, 1.0, 7.0, f64::NAN, f64::INFINITY] {
            let ms = after_refusal(Some(2_000), 3_000, 0, j);
            assert!((2_000..=3_000).contains(&ms), "{j}: {ms}");
        }
        assert_eq!(after_refusal(None, 3_000, 0, 0.0), 3_000, "no Retry-After");
        assert_eq!(after_refusal(Some(0), 3_000, 0, 0.0), MIN_BACKOFF_MS);
    }

    #[test]
    fn repeated_refusals_double_up_to_the_cap() {
        let waits: Vec<u64> = (0..8)
            .map(|n| after_refusal(Some(1_000), 3_000, n, 0.0))
            .collect();
        assert_eq!(
            waits,
            [1_000, 2_000, 4_000, 8_000, 16_000, 32_000, 60_000, 60_000]
        );
        assert_eq!(
            after_refusal(Some(1_000), 3_000, 1_000, 0.0),
            MAX_BACKOFF_MS
        );
        assert_eq!(
            after_refusal(Some(1_000), 3_000, 1_000, 1.0),
            MAX_BACKOFF_MS + MAX_BACKOFF_MS / 2,
            "jitter comes on top of the cap"
        );
        // A server that asks for longer than the cap is obeyed.
        assert_eq!(after_refusal(Some(120_000), 3_000, 3, 0.0), 120_000);
    }

    #[test]
    fn a_drop_waits_less_than_half_a_second_and_less_than_the_retry() {
        assert_eq!(after_drop(3_000, 0.0), 0);
        assert_eq!(after_drop(3_000, 0.5), 250);
        assert_eq!(after_drop(3_000, 0.999_999), 499);
        assert_eq!(after_drop(200, 0.5), 100, "a shorter retry spreads less");
        assert_eq!(after_drop(200, 0.999_999), 199);
        // Whatever the randomness, the wait stays below both bounds.
        for retry_ms in [1, 200, 999, 1_000, 1_001, 3_000, 3_600_000] {
            for j in [-1.0, 0.0, 0.3, 0.999_999, 1.0, 7.0, f64::NAN, f64::INFINITY] {
                let ms = after_drop(retry_ms, j);
                assert!(ms < retry_ms.min(MAX_DROP_WAIT_MS), "{retry_ms} {j}: {ms}");
            }
        }
        // Uniform: equal shares of the randomness give equal shares of the span.
        let waits: Vec<u64> = (0..4).map(|i| after_drop(2_000, i as f64 / 4.0)).collect();
        assert_eq!(waits, [0, 125, 250, 375]);
    }

    #[test]
    fn the_query_can_set_the_heartbeat_and_retry() {
        assert_eq!(Config::from_query(""), Config::default());
        let c = Config::from_query("?shared=1&heartbeat_ms=200&retry_ms=100");
        assert_eq!(
            c,
            Config {
                heartbeat_ms: 200,
                retry_ms: 100,
            }
        );
        assert_eq!(c.silence_limit_ms(), 400);
        for bad in [
            "heartbeat_ms=0",
            "heartbeat_ms=x",
            "heartbeat_ms=",
            "heartbeat_ms=-5",
        ] {
            assert_eq!(Config::from_query(bad), Config::default(), "{bad}");
        }
    }
}
