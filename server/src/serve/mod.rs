//! From a bound listener to served connections, and the shutdown that ends them all.
//!
//! [`accept`] takes connections and tunes their sockets; its [`Handshake`] seam turns
//! each into the stream HTTP is spoken over (plain TCP today, TLS later); [`http`]
//! serves HTTP on it; [`run_with_metrics`] wires them to the routes and shuts down.

pub mod accept;
pub mod h2;
pub mod http;
pub mod stall;
pub mod tls;

pub use crate::config::TlsSource;
pub use crate::conn::ConnInfo;
pub use accept::{Handshake, Plain, Protocol, SocketOptions};
pub use http::{HttpOptions, HttpServer, MAX_HEADERS, MAX_HEADER_BYTES, MAX_URI_BYTES};
pub use stall::StallGuard;
pub use tls::{Tls, TlsError};

use crate::config::Config;
use crate::state::AppState;
use crate::{error, routes};
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
    let tls = match &config.tls {
        Some(source) => Some(
            tls::server_config(source)
                .map_err(|err| io::Error::new(io::ErrorKind::InvalidInput, err))?,
        ),
        None => None,
    };
    let state = AppState::new(config);
    let metrics_stop = metrics_listener.map(|l| serve_metrics(l, Arc::clone(&state)));
    let (open, mut all_closed) = tokio::sync::mpsc::channel::<()>(1);
    let options = || HttpOptions {
        header_read_timeout: state.config.header_read_timeout,
        stall_timeout: state.config.stall_timeout,
        h2_max_streams: state.config.h2_max_streams,
        shutdown: Arc::clone(&state.shutdown),
        open: open.clone(),
    };
    let service = warp::service(routes::routes(Arc::clone(&state)));
    match tls {
        Some(config) => {
            let server = HttpServer::new(service, Tls::new(config), options());
            accept_all(&listener, &state, shutdown, &server).await;
        }
        None => {
            let server = HttpServer::new(service, Plain, options());
            accept_all(&listener, &state, shutdown, &server).await;
        }
    }
    drop(listener);
    drop(open);
    if let Some(stop) = metrics_stop {
        let _ = stop.send(());
    }
    drain(&state, &mut all_closed).await;
    Ok(())
}

/// Accepts until `shutdown`, serving each connection with `server`.
async fn accept_all<S, H>(
    listener: &TcpListener,
    state: &AppState,
    shutdown: impl Future<Output = ()>,
    server: &HttpServer<S, H>,
) where
    S: tower_service::Service<
            ::http::Request<hyper::body::Incoming>,
            Response = warp::reply::Response,
            Error = std::convert::Infallible,
        > + tower_service::Service<
            ::http::Request<h2::RequestBody>,
            Response = warp::reply::Response,
            Error = std::convert::Infallible,
        > + Clone
        + Send
        + 'static,
    <S as tower_service::Service<::http::Request<hyper::body::Incoming>>>::Future: Send + 'static,
    <S as tower_service::Service<::http::Request<h2::RequestBody>>>::Future: Send + 'static,
    H: Handshake,
{
    let options = SocketOptions {
        send_buffer: state.config.send_buffer,
    };
    accept::accept_until(listener, options, shutdown, |tcp, peer| {
        server.spawn(tcp, peer);
    })
    .await;
}

/// Ends every open stream with `end` (reason `shutdown`) and waits up to the grace
/// period for the connections to close.
async fn drain(state: &AppState, all_closed: &mut tokio::sync::mpsc::Receiver<()>) {
    tracing::info!(
        open_streams = state.admission.active(),
        "shutting down: ending every open stream"
    );
    state.shutdown.begin();
    // HTTP/1.1 connections close once idle; every connection task, HTTP/2 ones
    // included (they send GOAWAY), then ends and drops its `open` sender.
    let closed = async {
        let _ = all_closed.recv().await;
    };
    match tokio::time::timeout(state.config.shutdown_grace, closed).await {
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
