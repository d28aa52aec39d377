//! sse-counter: a warp + tokio server that streams a counter over Server-Sent Events.
//!
//! [`routes`] is the whole HTTP surface; [`run`] serves it on a listener the caller has
//! bound, until the shutdown future resolves.

pub mod conn;
pub mod error;
pub mod metrics;
pub mod routes;
pub mod state;
pub mod stream;

pub use routes::routes;
pub use state::AppState;

use conn::{ConnInfo, StallGuard};
use futures_util::future::Either;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use std::convert::Infallible;
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use warp::Filter as _;

/// Everything the server needs to know; built from the CLI by the binary.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where the trunk-built page lives.
    pub static_dir: PathBuf,
    /// The `retry:` value sent first on every stream: the browser's reconnection delay.
    pub retry_ms: u64,
    /// How long a stream may be idle before a `: keep-alive` comment is sent.
    pub keep_alive: Duration,
    /// Streams open at once; past it, 503 with `Retry-After`.
    pub max_streams: usize,
    /// Origins allowed to read the API cross-origin (`*` for any).
    pub cors_origins: Vec<String>,
    /// Whether `drop_after` is honoured.
    pub allow_fault_injection: bool,
    /// How long shutdown waits for connections to close once every stream has ended.
    pub shutdown_grace: Duration,
    /// How long a client may take to send its request headers (slowloris guard).
    pub header_read_timeout: Duration,
    /// How long a client may accept no bytes before its connection is closed.
    pub stall_timeout: Duration,
    /// The kernel send buffer of each connection (`None`: the OS tunes it). A fixed,
    /// modest size bounds what a client that stops reading can pin in the kernel, and
    /// lets the stall timeout start soon; Linux's autotuning grows it to 4 MiB, a
    /// minute of ticks at 1 kHz.
    pub send_buffer: Option<usize>,
    /// Whether `/metrics` is served on the main listener (off when it has its own).
    pub metrics_on_main: bool,
}

/// Request line and headers together may not exceed this (hyper answers 431). It also
/// caps hyper's write buffer per connection.
pub const MAX_HEADER_BYTES: usize = 16 * 1024;
/// A longer path and query gets 414.
pub const MAX_URI_BYTES: usize = 8 * 1024;
/// More request headers than this get 431.
pub const MAX_HEADERS: usize = 64;

impl Default for Config {
    fn default() -> Self {
        Config {
            static_dir: PathBuf::from("web/dist"),
            retry_ms: 3000,
            keep_alive: Duration::from_secs(15),
            max_streams: 10_000,
            cors_origins: Vec::new(),
            allow_fault_injection: false,
            shutdown_grace: Duration::from_secs(5),
            header_read_timeout: Duration::from_secs(10),
            stall_timeout: Duration::from_secs(30),
            send_buffer: Some(128 * 1024),
            metrics_on_main: true,
        }
    }
}

/// Serves [`routes`] on `listener` until `shutdown` resolves; then stops accepting,
/// ends every open stream with `event: end` (reason `shutdown`) and waits up to
/// `shutdown_grace` for the connections to close.
pub async fn run(
    listener: TcpListener,
    config: Config,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    run_with_metrics(listener, None, config, shutdown).await
}

/// [`run`], with `/metrics` served on its own listener when one is given (and then not
/// on the main one), for deployments that must not expose it.
pub async fn run_with_metrics(
    listener: TcpListener,
    metrics_listener: Option<TcpListener>,
    mut config: Config,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let grace = config.shutdown_grace;
    config.metrics_on_main = metrics_listener.is_none();
    let stall_timeout = config.stall_timeout;
    let send_buffer = config.send_buffer;
    let state = AppState::new(config);
    let (metrics_stop, metrics_stopped) = tokio::sync::oneshot::channel::<()>();
    if let Some(listener) = metrics_listener {
        let metrics = routes::ops::metrics(Arc::clone(&state)).recover(error::recover);
        tokio::spawn(
            warp::serve(metrics)
                .incoming(listener)
                .graceful(async {
                    let _ = metrics_stopped.await;
                })
                .run(),
        );
    }
    let service = warp::service(routes(Arc::clone(&state)));
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(state.config.header_read_timeout)
        .max_buf_size(MAX_HEADER_BYTES)
        .max_headers(MAX_HEADERS);
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(err) => {
                    // Out of file descriptors and the like: keep serving the open streams
                    // and try again shortly rather than spin or exit.
                    tracing::warn!(%err, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        // Each event is one small write that should leave at once, not wait for an ACK.
        if let Err(err) = tcp.set_nodelay(true) {
            tracing::debug!(%err, %peer, "set_nodelay failed");
        }
        if let Some(size) = send_buffer {
            if let Err(err) = socket2::SockRef::from(&tcp).set_send_buffer_size(size) {
                tracing::debug!(%err, %peer, "setting the send buffer failed");
            }
        }
        let info = Arc::new(ConnInfo::default());
        let io = StallGuard::new(TokioIo::new(tcp), stall_timeout, Arc::clone(&info));
        let service = service.clone();
        let per_request = hyper::service::service_fn(move |mut req| {
            if let Some(res) = routes::gate(&req) {
                return Either::Left(std::future::ready(Ok::<_, Infallible>(res)));
            }
            req.extensions_mut().insert(Arc::clone(&info));
            let mut service = service.clone();
            Either::Right(tower_service::Service::call(&mut service, req))
        });
        let conn = http.serve_connection(io, per_request);
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            if let Err(err) = conn.await {
                tracing::debug!(%err, %peer, "connection ended with an error");
            }
        });
    }
    drop(listener);
    tracing::info!(
        open_streams = state.active_streams(),
        "shutting down: ending every open stream"
    );
    state.begin_shutdown();
    let _ = metrics_stop.send(());
    match tokio::time::timeout(grace, graceful.shutdown()).await {
        Ok(()) => tracing::info!("every connection closed"),
        Err(_) => tracing::warn!(
            open_streams = state.active_streams(),
            "grace period over with connections still open; exiting anyway"
        ),
    }
    Ok(())
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
