//! Reading the server's Prometheus text in tests: one value, and waiting for one.

#![allow(dead_code)]

use std::time::Duration;
use tokio::time::Instant;

/// The value of the series `name` (with its labels, e.g. `a{reason="x"}`) in `body`.
pub fn value(body: &str, name: &str) -> f64 {
    body.lines()
        .find_map(|l| {
            let (k, v) = l.rsplit_once(' ')?;
            (k == name).then(|| v.parse().ok())?
        })
        .unwrap_or_else(|| panic!("{name} missing from:\n{body}"))
}

/// Polls `read` until it returns `want`, failing with the last value after `within`.
pub async fn wait_for(name: &str, want: f64, within: Duration, mut read: impl AsyncFnMut() -> f64) {
    let deadline = Instant::now() + within;
    loop {
        let got = read().await;
        if got == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{name} stuck at {got}, want {want}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
