//! Serving HTTP on one connection once its [`Handshake`] is done: the stall guard, the
//! request gate, HTTP/1.1 through hyper or HTTP/2 through [`super::h2`], and the
//! shutdown watch that closes each connection once it is idle.

use super::accept::{Handshake, Protocol};
use super::h2::H2Limits;
use super::stall::StallGuard;
use crate::config::{MAX_HEADERS, MAX_HEADER_BYTES};
use crate::conn::ConnInfo;
use crate::routes;
use crate::sse::Shutdown;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::convert::Infallible;
use std::future::{poll_fn, Future};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tower_service::Service;
use warp::reply::Response;

/// Serves the routes' `service` on connections made by `handshake`.
///
/// Shared by its connection tasks rather than copied into each: a task's future is
/// held for as long as its connection is open. Bench: `cargo xtask bench` 1 Hz,
/// memory per stream.
pub struct HttpServer<S, H>(Arc<Shared<S, H>>);

impl<S, H> Clone for HttpServer<S, H> {
    fn clone(&self) -> Self {
        HttpServer(Arc::clone(&self.0))
    }
}

struct Shared<S, H> {
    service: S,
    handshake: H,
    http1: hyper::server::conn::http1::Builder,
    h2: H2Limits,
    /// Also bounds the handshake: a client that never finishes one is dropped then.
    header_read_timeout: Duration,
    stall_timeout: Duration,
    shutdown: Arc<Shutdown>,
    /// Held by every connection task; shutdown waits until all are dropped.
    open: mpsc::Sender<()>,
}

/// What [`HttpServer::new`] needs besides the service and the handshake.
pub struct HttpOptions {
    pub header_read_timeout: Duration,
    pub stall_timeout: Duration,
    pub h2_max_streams: u32,
    pub shutdown: Arc<Shutdown>,
    pub open: mpsc::Sender<()>,
}

impl<S, H> HttpServer<S, H>
where
    S: super::Service + Clone + Send + Sync + 'static,
    H: Handshake,
{
    pub fn new(service: S, handshake: H, options: HttpOptions) -> Self {
        let mut http1 = hyper::server::conn::http1::Builder::new();
        http1
            .timer(TokioTimer::new())
            .header_read_timeout(options.header_read_timeout)
            .max_buf_size(MAX_HEADER_BYTES)
            .max_headers(MAX_HEADERS)
            // Each event copied into hyper's write buffer and sent with one `write`,
            // instead of a queue of three pieces for `writev`: fewer instructions, and
            // no queue kept per connection. Bench: `cargo xtask bench` 1 Hz, CPU per
            // event and memory per stream.
            .writev(false);
        HttpServer(Arc::new(Shared {
            service,
            handshake,
            http1,
            h2: H2Limits {
                max_streams: options.h2_max_streams,
                max_header_list: MAX_HEADER_BYTES as u32,
                stall_timeout: options.stall_timeout,
                handshake_timeout: options.header_read_timeout,
            },
            header_read_timeout: options.header_read_timeout,
            stall_timeout: options.stall_timeout,
            shutdown: options.shutdown,
            open: options.open,
        }))
    }

    /// Serves one accepted connection in a task of its own.
    pub fn spawn(&self, tcp: TcpStream, peer: SocketAddr) {
        let this = Arc::clone(&self.0);
        tokio::spawn(async move {
            let _open = this.open.clone();
            let handshake = this.handshake.handshake(tcp);
            let (io, protocol) =
                match tokio::time::timeout(this.header_read_timeout, handshake).await {
                    Ok(Ok(done)) => done,
                    Ok(Err(err)) => {
                        tracing::debug!(%err, %peer, "handshake failed");
                        return;
                    }
                    Err(_) => {
                        tracing::debug!(%peer, "handshake timed out");
                        return;
                    }
                };
            let info = Arc::new(ConnInfo::new(peer));
            // A connection that stops reading altogether fails its writes after the
            // stall timeout, which ends every stream on it.
            let io = StallGuard::new(TokioIo::new(io), this.stall_timeout, Arc::clone(&info));
            let result = match protocol {
                Protocol::Http1 => {
                    let service = per_request(this.service.clone(), info);
                    until_shutdown(this.http1.serve_connection(io, service), &this.shutdown)
                        .await
                        .map_err(std::io::Error::other)
                }
                // Boxed: the HTTP/2 connection's state is several times the size of
                // an HTTP/1.1 one, and a task is as large as its largest state.
                // Bench: `cargo xtask bench` 1 Hz, memory per stream.
                Protocol::Http2 => {
                    Box::pin(super::h2::serve(
                        TokioIo::new(io),
                        peer,
                        info,
                        this.service.clone(),
                        this.h2,
                        Arc::clone(&this.shutdown),
                    ))
                    .await
                }
            };
            if let Err(err) = result {
                tracing::debug!(%err, %peer, "connection ended with an error");
            }
        });
    }
}

/// The HTTP/1.1 service of one connection: the request gate, the connection's
/// [`ConnInfo`] in the request's extensions, then the routes.
fn per_request<S>(
    service: S,
    info: Arc<ConnInfo>,
) -> impl hyper::service::Service<
    http::Request<Incoming>,
    Response = Response,
    Error = Infallible,
    Future = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>,
>
where
    S: Service<http::Request<Incoming>, Response = Response, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    hyper::service::service_fn(move |mut req: http::Request<Incoming>| {
        // Boxed: hyper keeps room for this future for as long as the connection is
        // open, and the routes' future is large. Bench: `cargo xtask bench` 1 Hz,
        // memory per stream.
        if let Some(res) = routes::gate(&req) {
            return Box::pin(std::future::ready(Ok(res)))
                as Pin<Box<dyn Future<Output = _> + Send>>;
        }
        req.extensions_mut().insert(Arc::clone(&info));
        let mut service = service.clone();
        Box::pin(Service::<http::Request<Incoming>>::call(&mut service, req))
    })
}

/// Serves `conn` to its end; when shutdown begins, it closes once its response (a
/// stream's `end`) is written.
///
/// A closure that owns `conn`, not an `async fn`: an `async fn` keeps room for its
/// argument and for the local it moves it into, twice the connection per task.
/// Bench: `cargo xtask bench` 1 Hz, memory per stream.
fn until_shutdown<C>(mut conn: C, shutdown: &Arc<Shutdown>) -> impl Future<Output = C::Output>
where
    C: Future + GracefulConnection + Unpin,
{
    // Not hyper-util's graceful watcher, which takes a lock on every poll of the
    // connection. Bench: `cargo xtask bench` 1 Hz, CPU per event (callgrind).
    let mut watch = Some(shutdown.watch());
    poll_fn(move |cx| {
        if watch.as_mut().is_some_and(|w| w.poll_begun(cx)) {
            watch = None;
            Pin::new(&mut conn).graceful_shutdown();
        }
        Pin::new(&mut conn).poll(cx)
    })
}

/// What [`until_shutdown`] needs of a connection.
trait GracefulConnection {
    fn graceful_shutdown(self: Pin<&mut Self>);
}

impl<I, S> GracefulConnection for hyper::server::conn::http1::Connection<I, S>
where
    S: hyper::service::HttpService<Incoming>,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    I: hyper::rt::Read + hyper::rt::Write + Unpin,
    S::ResBody: 'static,
    <S::ResBody as hyper::body::Body>::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    fn graceful_shutdown(self: Pin<&mut Self>) {
        hyper::server::conn::http1::Connection::graceful_shutdown(self);
    }
}
