//! sse-counter: a warp + tokio server that streams counters over Server-Sent Events.
//!
//! [`routes`] is the whole HTTP surface; [`run`] serves it on a listener the caller has
//! bound, until the shutdown future resolves. `docs/architecture.md` maps the modules.

pub mod config;
pub mod error;
pub mod metrics;
pub mod ratelimit;
pub mod routes;
pub mod serve;
pub mod sse;
pub mod state;
pub mod streams;

pub use config::{Config, ConfigError};
pub use routes::routes;
pub use serve::{run_with_metrics, MAX_HEADERS, MAX_HEADER_BYTES, MAX_URI_BYTES};
pub use state::AppState;

use std::future::Future;
use std::time::{SystemTime, UNIX_EPOCH};
use tokio::net::TcpListener;

/// Serves [`routes`] on `listener` until `shutdown` resolves; then stops accepting,
/// ends every open stream with `event: end` (reason `shutdown`) and waits up to
/// `shutdown_grace` for the connections to close. A `config` that does not
/// [validate](Config::validate) is refused with `InvalidInput`.
pub async fn run(
    listener: TcpListener,
    config: Config,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    run_with_metrics(listener, None, config, shutdown).await
}

/// Resolves on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(err) = tokio::signal::ctrl_c().await {
            tracing::error!(%err, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(err) => {
                tracing::error!(%err, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}

/// The server's wall clock in microseconds since the UNIX epoch.
pub fn unix_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}
