//! From a bound listener to served connections, and the shutdown that ends them all.
//!
//! [`accept`] takes connections and tunes their sockets; its [`Handshake`] seam turns
//! each into the stream HTTP is spoken over (plain TCP today, TLS later); [`http`]
//! serves HTTP on it; [`run_with_metrics`] wires them to the routes and shuts down.

pub mod accept;
pub mod http;
pub mod stall;

pub use accept::{Handshake, Plain, Protocol, SocketOptions};
pub use http::{HttpServer, MAX_HEADERS, MAX_HEADER_BYTES, MAX_URI_BYTES};
pub use stall::{ConnInfo, StallGuard};

use crate::config::Config;
use crate::state::AppState;
use crate::{error, routes};
use hyper_util::server::graceful::GracefulShutdown;
use std::future::Future;
use std::io;
use std::sync::Arc;
use tokio::net::TcpListener;
use warp::Filter as _;

/// [`crate::run`], with `/metrics` served on its own listener when one is given (and
/// then not on the main one), for deployments that must not expose it.
pub async fn run_with_metrics(
    listener: TcpListener,
    metrics_listener: Option<TcpListener>,
    mut config: Config,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    config.metrics_on_main = metrics_listener.is_none();
    let config = config
        .validate()
        .map_err(|err| io::Error::new(io::ErrorKind::InvalidInput, err))?;
    let state = AppState::new(config);
    let metrics_stop = metrics_listener.map(|l| serve_metrics(l, Arc::clone(&state)));
    let server = HttpServer::new(
        warp::service(routes::routes(Arc::clone(&state))),
        Plain,
        state.config.header_read_timeout,
        state.config.stall_timeout,
    );
    let options = SocketOptions {
        send_buffer: state.config.send_buffer,
    };
    let graceful = GracefulShutdown::new();
    accept::accept_until(&listener, options, shutdown, |tcp, peer| {
        server.spawn(tcp, peer, graceful.watcher());
    })
    .await;
    drop(listener);
    if let Some(stop) = metrics_stop {
        let _ = stop.send(());
    }
    drain(&state, graceful).await;
    Ok(())
}

/// Ends every open stream with `end` (reason `shutdown`) and waits up to the grace
/// period for the connections to close.
async fn drain(state: &AppState, graceful: GracefulShutdown) {
    tracing::info!(
        open_streams = state.admission.active(),
        "shutting down: ending every open stream"
    );
    state.shutdown.begin();
    match tokio::time::timeout(state.config.shutdown_grace, graceful.shutdown()).await {
        Ok(()) => tracing::info!("every connection closed"),
        Err(_) => tracing::warn!(
            open_streams = state.admission.active(),
            "grace period over with connections still open; exiting anyway"
        ),
    }
}

/// Serves `/metrics` alone on `listener` until the returned sender is used or dropped.
fn serve_metrics(listener: TcpListener, state: Arc<AppState>) -> tokio::sync::oneshot::Sender<()> {
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let metrics = routes::ops::metrics(state).recover(error::recover);
    tokio::spawn(
        warp::serve(metrics)
            .incoming(listener)
            .graceful(async {
                let _ = stopped.await;
            })
            .run(),
    );
    stop
}
