//! sse-counter: a warp + tokio server that streams counters over Server-Sent Events.
//!
//! [`routes()`] is the whole HTTP surface; [`run`] serves it on a listener the caller has
//! bound, until the shutdown future resolves. `docs/architecture.md` maps the modules.

pub mod access;
pub mod auth;
pub mod config;
pub mod conn;
pub mod error;
pub mod metrics;
pub mod ratelimit;
pub mod routes;
pub mod serve;
pub mod sse;
pub mod state;
pub mod store;
pub mod streams;

pub use config::{Config, ConfigError};
pub use config::{MAX_HEADERS, MAX_HEADER_BYTES, MAX_URI_BYTES};
pub use routes::routes;
pub use serve::{run_threads, run_with_metrics};
pub use state::AppState;

use std::future::Future;
use std::time::{SystemTime, UNIX_EPOCH};
use tokio::net::TcpListener;

/// Serves [`routes()`] on `listener` until `shutdown` resolves; then stops accepting,
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

/// Resolves on Ctrl-C (SIGINT) or SIGTERM. The handlers are installed when this is
/// called, not when the future is first polled, so a signal that comes right after
/// (a test that sends SIGTERM as soon as the server says it listens) is not missed.
pub fn shutdown_signal() -> impl Future<Output = ()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let term = signal(SignalKind::terminate());
        let int = signal(SignalKind::interrupt());
        async move {
            match (term, int) {
                (Ok(mut term), Ok(mut int)) => {
                    tokio::select! {
                        _ = term.recv() => {},
                        _ = int.recv() => {},
                    }
                }
                (Err(err), _) | (_, Err(err)) => {
                    tracing::error!(%err, "cannot listen for SIGTERM or SIGINT");
                    std::future::pending::<()>().await;
                }
            }
        }
    }
    #[cfg(not(unix))]
    {
        async {
            if let Err(err) = tokio::signal::ctrl_c().await {
                tracing::error!(%err, "cannot listen for Ctrl-C");
                std::future::pending::<()>().await;
            }
        }
    }
}

/// The server's wall clock in microseconds since the UNIX epoch.
pub fn unix_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}
