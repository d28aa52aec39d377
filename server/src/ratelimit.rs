//! The limits on publishing: increments of the shared counter per client address, and
//! channel publishes per publisher; `rate` a second, bursts of twice as many (GCRA,
//! from the `governor` crate).

use governor::clock::Clock as _;
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use http::HeaderMap;
use std::hash::Hash;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// A keyed limit: per client address for increments, per publisher for channels.
pub struct PublishLimiter<K: Hash + Eq + Clone = IpAddr> {
    limiter: DefaultKeyedRateLimiter<K>,
    checks: AtomicU64,
}

/// Who a channel publish is counted for: the token's `sub`, else the client address.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Publisher {
    Sub(String),
    Addr(IpAddr),
}

/// Addresses idle long enough to be back at a full burst are forgotten every this many
/// checks, so the map stays as small as the set of recent publishers.
const PRUNE_EVERY: u64 = 4096;

impl<K: Hash + Eq + Clone> PublishLimiter<K> {
    pub fn new(rate: u32) -> Self {
        let rate = NonZeroU32::new(rate).unwrap_or(NonZeroU32::MIN);
        let burst = rate.saturating_mul(NonZeroU32::new(2).expect("2 is not zero"));
        PublishLimiter {
            limiter: RateLimiter::keyed(Quota::per_second(rate).allow_burst(burst)),
            checks: AtomicU64::new(0),
        }
    }

    /// Takes one publish for `key`, or says how long until one is allowed.
    pub fn check(&self, key: K) -> Result<(), Duration> {
        if self.checks.fetch_add(1, Ordering::Relaxed) % PRUNE_EVERY == PRUNE_EVERY - 1 {
            self.limiter.retain_recent();
        }
        self.limiter
            .check_key(&key)
            .map_err(|not_until| not_until.wait_time_from(self.limiter.clock().now()))
    }
}

/// The address the limit counts for a request from `peer`: the peer itself, unless it
/// is one of the `trusted` proxies (`--trusted-proxy`). Then it is the rightmost address
/// in `X-Forwarded-For` that is not a trusted proxy: each proxy appends the address it
/// got the request from, so that one was written by a proxy we trust, while anything
/// left of it may have been written by the client itself.
pub fn client_addr(peer: Option<SocketAddr>, headers: &HeaderMap, trusted: &[IpAddr]) -> IpAddr {
    let is_trusted = |addr: IpAddr| trusted.iter().any(|t| t.to_canonical() == addr);
    let Some(peer) = peer.map(|p| p.ip().to_canonical()) else {
        return IpAddr::V4(Ipv4Addr::UNSPECIFIED);
    };
    let mut client = peer;
    if !is_trusted(peer) {
        return client;
    }
    for value in headers.get_all("x-forwarded-for").iter().rev() {
        let Ok(value) = value.to_str() else {
            return client;
        };
        for entry in value.rsplit(',') {
            // What a trusted proxy wrote does not parse: count the last good hop.
            let Some(addr) = forwarded_addr(entry.trim()) else {
                return client;
            };
            if !is_trusted(addr) {
                return addr;
            }
            client = addr;
        }
    }
    client
}

/// One entry of `X-Forwarded-For`: an address, with or without a port.
fn forwarded_addr(entry: &str) -> Option<IpAddr> {
    let addr = entry
        .parse::<IpAddr>()
        .ok()
        .or_else(|| entry.parse::<SocketAddr>().ok().map(|s| s.ip()))
        .or_else(|| {
            entry
                .strip_prefix('[')
                .and_then(|e| e.strip_suffix(']'))
                .and_then(|e| e.parse().ok())
        })?;
    Some(addr.to_canonical())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_trusted_proxy_names_the_client() {
        let proxy: IpAddr = "10.0.0.1".parse().unwrap();
        let inner: IpAddr = "10.0.0.2".parse().unwrap();
        let trusted = [proxy, inner];
        let from = |ip: &str| Some(SocketAddr::new(ip.parse().unwrap(), 40000));
        let xff = |values: &[&str]| {
            let mut h = HeaderMap::new();
            for v in values {
                h.append("x-forwarded-for", v.parse().unwrap());
            }
            h
        };
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        // An untrusted peer is the client, whatever it claims.
        assert_eq!(
            client_addr(from("203.0.113.9"), &xff(&["1.1.1.1"]), &trusted),
            ip("203.0.113.9")
        );
        // Without any trusted proxy, as before: the peer.
        assert_eq!(
            client_addr(from("10.0.0.1"), &xff(&["1.1.1.1"]), &[]),
            ip("10.0.0.1")
        );
        // Through the proxy: the address it appended, not what the client wrote left
        // of it.
        assert_eq!(
            client_addr(from("10.0.0.1"), &xff(&["6.6.6.6, 198.51.100.7"]), &trusted),
            ip("198.51.100.7")
        );
        // Two trusted hops, over two header lines; ports and IPv6 brackets allowed.
        assert_eq!(
            client_addr(
                from("10.0.0.1"),
                &xff(&["[2001:db8::1]:5000", "10.0.0.2:81"]),
                &trusted
            ),
            ip("2001:db8::1")
        );
        // IPv4 mapped into IPv6 is the same address.
        assert_eq!(
            client_addr(from("::ffff:10.0.0.1"), &xff(&["198.51.100.7"]), &trusted),
            ip("198.51.100.7")
        );
        // Nothing, or nothing usable, named: the last trusted hop.
        assert_eq!(client_addr(from("10.0.0.1"), &xff(&[]), &trusted), proxy);
        assert_eq!(
            client_addr(from("10.0.0.1"), &xff(&["junk, 10.0.0.2"]), &trusted),
            inner
        );
        assert_eq!(
            client_addr(None, &xff(&["1.1.1.1"]), &trusted),
            IpAddr::V4(Ipv4Addr::UNSPECIFIED)
        );
    }

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
