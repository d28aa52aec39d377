//! From a bound listener to served connections, and the shutdown that ends them all.
//!
//! [`accept`] takes connections and tunes their sockets; its [`Handshake`] seam turns
//! each into the stream HTTP is spoken over (plain TCP, or TLS with ALPN); [`http`]
//! serves HTTP on it; [`run_with_metrics`] wires them to the routes and shuts down.

pub mod accept;
pub mod h2;
pub mod http;
pub mod stall;
pub mod tls;

pub use crate::config::TlsSource;
pub use crate::conn::ConnInfo;
pub use accept::{Handshake, Plain, Protocol, SocketOptions};
pub use http::{HttpOptions, HttpServer};
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
    config: Config,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    run_threads(listener, Vec::new(), metrics_listener, config, shutdown).await
}

/// [`run_with_metrics`], with each of `more` served by a current-thread runtime on a
/// thread of its own. `listener` is served on the caller's runtime until `shutdown`;
/// `more` are handles to the same socket (`try_clone`), and the `i`th of them starts
/// taking connections once `i` × [`Config::streams_per_thread`] streams are open:
/// until then it is not watched at all, so a small load is served by one runtime,
/// whose grid cells hold every stream and which no other thread's scheduling delays.
/// Once several watch the socket, whichever is free takes the next connection. One
/// runtime per thread keeps every connection, its timer and its wake-ups on one
/// thread, with no work stealing between them.
// Bench: `cargo xtask bench` 1 Hz, CPU per event (user time, median of A/B runs);
// 10 Hz, CPU per event and time to headers p99 (docs/performance.md).
pub async fn run_threads(
    listener: TcpListener,
    more: Vec<std::net::TcpListener>,
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
    // Every connection task, and every other thread until its runtime is done, holds
    // a sender: the drain is over when all are dropped.
    let (open, mut all_closed) = tokio::sync::mpsc::channel::<()>(1);
    let service = warp::service(routes::routes(Arc::clone(&state)));
    for (i, more) in more.into_iter().enumerate() {
        let (state, service, tls, open) = (
            Arc::clone(&state),
            service.clone(),
            tls.clone(),
            open.clone(),
        );
        let join_at = state.config.streams_per_thread.saturating_mul(i + 1);
        std::thread::Builder::new()
            .name(format!("sse-counter-{}", i + 1))
            .spawn(move || serve_thread(more, join_at, state, service, tls, open))?;
    }
    serve(&listener, &state, service, tls, open.clone(), shutdown).await;
    drop(listener);
    drop(open);
    if let Some(stop) = metrics_stop {
        let _ = stop.send(());
    }
    drain(&state, &mut all_closed).await;
    Ok(())
}

/// How often a thread that waits to join checks the open streams: seldom enough to
/// cost nothing measurable on an idle server, soon enough for a load that grows.
const JOIN_CHECK: std::time::Duration = std::time::Duration::from_millis(250);

/// One more thread of [`run_threads`]: once `join_at` streams are open, serves
/// `listener` on a runtime of its own until shutdown begins, then until its
/// connections have closed.
fn serve_thread<S>(
    listener: std::net::TcpListener,
    join_at: usize,
    state: Arc<AppState>,
    service: S,
    tls: Option<Arc<rustls::ServerConfig>>,
    open: tokio::sync::mpsc::Sender<()>,
) where
    S: Service + Clone + Send + Sync + 'static,
{
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            tracing::error!(%err, "cannot start a runtime: this thread serves nothing");
            return;
        }
    };
    runtime.block_on(async move {
        let mut watch = state.shutdown.watch();
        let mut begun = std::future::poll_fn(|cx| {
            if watch.poll_begun(cx) {
                std::task::Poll::Ready(())
            } else {
                std::task::Poll::Pending
            }
        });
        // Not yet registered with this runtime's epoll: connections wake only the
        // runtimes that serve.
        while state.admission.active() < join_at {
            tokio::select! {
                () = tokio::time::sleep(JOIN_CHECK) => {}
                () = &mut begun => return,
            }
        }
        let listener = match TcpListener::from_std(listener) {
            Ok(listener) => listener,
            Err(err) => {
                tracing::error!(%err, "cannot serve a listener: this thread serves nothing");
                return;
            }
        };
        // The connections of this runtime hold these senders; it stops once they all
        // have gone.
        let (mine, mut closed) = tokio::sync::mpsc::channel::<()>(1);
        serve(&listener, &state, service, tls, mine, begun).await;
        drop(listener);
        let _ = closed.recv().await;
        drop(open);
    });
}

/// What [`HttpServer`] needs of the routes' service, for HTTP/1.1 and HTTP/2.
pub trait Service:
    tower_service::Service<
        ::http::Request<hyper::body::Incoming>,
        Response = warp::reply::Response,
        Error = std::convert::Infallible,
        Future: Send + 'static,
    > + tower_service::Service<
        ::http::Request<h2::RequestBody>,
        Response = warp::reply::Response,
        Error = std::convert::Infallible,
        Future: Send + 'static,
    >
{
}

impl<S> Service for S where
    S: tower_service::Service<
            ::http::Request<hyper::body::Incoming>,
            Response = warp::reply::Response,
            Error = std::convert::Infallible,
            Future: Send + 'static,
        > + tower_service::Service<
            ::http::Request<h2::RequestBody>,
            Response = warp::reply::Response,
            Error = std::convert::Infallible,
            Future: Send + 'static,
        >
{
}

/// Serves `listener` over TLS or plain TCP until `stop`; each connection holds `open`.
async fn serve<S>(
    listener: &TcpListener,
    state: &AppState,
    service: S,
    tls: Option<Arc<rustls::ServerConfig>>,
    open: tokio::sync::mpsc::Sender<()>,
    stop: impl Future<Output = ()>,
) where
    S: Service + Clone + Send + Sync + 'static,
{
    let options = HttpOptions {
        header_read_timeout: state.config.header_read_timeout,
        stall_timeout: state.config.stall_timeout,
        h2_max_streams: state.config.h2_max_streams,
        shutdown: Arc::clone(&state.shutdown),
        open,
    };
    match tls {
        Some(config) => {
            let server = HttpServer::new(service, Tls::new(config), options);
            accept_all(listener, state, stop, &server).await;
        }
        None => {
            let server = HttpServer::new(service, Plain, options);
            accept_all(listener, state, stop, &server).await;
        }
    }
}

/// Accepts until `shutdown`, serving each connection with `server`.
async fn accept_all<S, H>(
    listener: &TcpListener,
    state: &AppState,
    shutdown: impl Future<Output = ()>,
    server: &HttpServer<S, H>,
) where
    S: Service + Clone + Send + Sync + 'static,
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
