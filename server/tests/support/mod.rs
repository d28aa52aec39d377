//! The integration tests' toolkit, one module per concern:
//!
//! - [`inproc`]: the library server ([`server::run`]) in a task, on `127.0.0.1:0`;
//! - [`binary`]: the `sse-counter` binary, started one way, with its log and signals;
//! - [`http`]: reqwest requests with finite answers, and [`Endpoint`], which gives both
//!   servers the same requests;
//! - [`sse`]: an SSE client (reqwest + eventsource-stream) with typed readers;
//! - [`raw`]: a raw HTTP/1.1 client over TCP, for exact bytes and misbehaving clients;
//! - [`prom`]: reading and awaiting values of the Prometheus exposition;
//! - [`proxy`]: a TCP proxy that a test can cut, make refuse, or silence;
//! - [`report`]: figures recorded for `cargo xtask reliability`;
//! - [`tls`]: the server over TLS, and TLS and HTTP/2 clients that trust it;
//! - [`cluster`]: instances sharing the counter through a real Redis, behind a real
//!   nginx.
//!
//! One timeout convention holds throughout: every network await sits inside [`within`]
//! or [`within_for`], and a condition the server reaches on its own is polled with
//! [`poll_until`]; each fails the test with a message saying what hung instead of
//! blocking the suite.

// Each test binary compiles this module tree and uses only part of it.
#![allow(dead_code)]

pub mod binary;
pub mod cluster;
pub mod http;
pub mod inproc;
pub mod prom;
pub mod proxy;
pub mod raw;
pub mod report;
pub mod sse;
pub mod tls;
pub mod tokens;

// The names most tests use, at the top; as with dead code, each binary uses some.
#[allow(unused_imports)]
pub use http::{client, Endpoint, Reply};
#[allow(unused_imports)]
pub use inproc::{config, spawn, TestServer};
#[allow(unused_imports)]
pub use prom::Metrics;
#[allow(unused_imports)]
pub use raw::{raw_get, BodyEnd, RawConn};
#[allow(unused_imports)]
pub use sse::{assert_plausible_times, now_us, Finish, Sse};

use std::fmt::Debug;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How long any single network step may take before the test fails. Generous: it only
/// catches hangs, it never measures speed. Tests that load the machine heavily give
/// their servers a longer limit (see [`Endpoint::limit`]).
pub const TIMEOUT: Duration = Duration::from_secs(5);

/// How often [`poll_until`] looks again: often enough not to slow a test down, seldom
/// enough not to load the server it watches.
pub const POLL_EVERY: Duration = Duration::from_millis(20);

/// Awaits `fut`, failing the test with `what` if it takes longer than [`TIMEOUT`].
pub async fn within<F: Future>(what: &str, fut: F) -> F::Output {
    within_for(TIMEOUT, what, fut).await
}

/// [`within`] with a chosen limit.
pub async fn within_for<F: Future>(limit: Duration, what: &str, fut: F) -> F::Output {
    match tokio::time::timeout(limit, fut).await {
        Ok(out) => out,
        Err(_) => panic!("timed out after {limit:?}: {what}"),
    }
}

/// Calls `probe` every [`POLL_EVERY`] until it returns `Ok`, failing the test after
/// `limit` with `what` and the last `Err` seen. For a condition the server reaches on its
/// own (a dropped client noticed, a gauge back to 0) and offers no event for; never for
/// something the test could await instead.
pub async fn poll_until<T, E: Debug>(
    limit: Duration,
    what: &str,
    mut probe: impl AsyncFnMut() -> Result<T, E>,
) -> T {
    let mut last = None;
    let polled = tokio::time::timeout(limit, async {
        loop {
            match probe().await {
                Ok(done) => return done,
                Err(seen) => last = Some(seen),
            }
            tokio::time::sleep(POLL_EVERY).await;
        }
    })
    .await;
    match polled {
        Ok(done) => done,
        Err(_) => panic!("timed out after {limit:?}: {what} (last seen {last:?})"),
    }
}

/// A directory under the system temp dir, removed on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        use std::sync::atomic::{AtomicU32, Ordering};
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir =
            std::env::temp_dir().join(format!("sse-counter-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create temp dir");
        TempDir(dir)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A page directory that does not exist, for servers whose page no test looks at.
pub fn no_page_dir() -> PathBuf {
    std::env::temp_dir().join("sse-counter-tests-no-such-dir")
}
