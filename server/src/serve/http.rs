//! Serving HTTP on one connection once its [`Handshake`] is done: the stall guard, the
//! request gate, HTTP/1.1 through hyper or HTTP/2 through [`super::h2`], and the
//! shutdown watch that closes each connection once it is idle.

use super::accept::{Handshake, Protocol};
use super::h2::{H2Limits, RequestBody};
use super::stall::StallGuard;
use crate::conn::ConnInfo;
use crate::routes;
use crate::sse::Shutdown;
use futures_util::future::Either;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::convert::Infallible;
use std::future::{poll_fn, Future as _};
use std::net::SocketAddr;
use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tower_service::Service;
use warp::reply::Response;

/// Request line and headers together may not exceed this (hyper answers 431; for
/// HTTP/2 it is the header list limit). It also caps hyper's write buffer per
/// connection.
pub const MAX_HEADER_BYTES: usize = 16 * 1024;
/// A longer path and query gets 414.
pub const MAX_URI_BYTES: usize = 8 * 1024;
/// More request headers than this get 431.
pub const MAX_HEADERS: usize = 64;

/// Serves the routes' `service` on connections made by `handshake`.
#[derive(Clone)]
pub struct HttpServer<S, H> {
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
    S: Service<http::Request<Incoming>, Response = Response, Error = Infallible>
        + Service<http::Request<RequestBody>, Response = Response, Error = Infallible>
        + Clone
        + Send
        + 'static,
    <S as Service<http::Request<Incoming>>>::Future: Send + 'static,
    <S as Service<http::Request<RequestBody>>>::Future: Send + 'static,
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
        HttpServer {
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
        }
    }

    /// Serves one accepted connection in a task of its own.
    pub fn spawn(&self, tcp: TcpStream, peer: SocketAddr) {
        let this = self.clone();
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
            let result = match protocol {
                Protocol::Http1 => {
                    let io =
                        StallGuard::new(TokioIo::new(io), this.stall_timeout, Arc::clone(&info));
                    let service = this.service.clone();
                    let per_request = hyper::service::service_fn(move |mut req| {
                        if let Some(res) = routes::gate(&req) {
                            return Either::Left(std::future::ready(Ok::<_, Infallible>(res)));
                        }
                        req.extensions_mut().insert(Arc::clone(&info));
                        let mut service = service.clone();
                        Either::Right(Service::<http::Request<Incoming>>::call(&mut service, req))
                    });
                    let mut conn = pin!(this.http1.serve_connection(io, per_request));
                    // When shutdown begins, the connection closes once its response
                    // (a stream's `end`) is written. This replaces hyper-util's graceful
                    // watcher, which takes a lock on every poll of the connection.
                    // Bench: `cargo xtask bench` 1 Hz, CPU per event (callgrind).
                    let mut watch = Some(this.shutdown.watch());
                    poll_fn(|cx| {
                        if watch.as_mut().is_some_and(|w| w.poll_begun(cx)) {
                            watch = None;
                            conn.as_mut().graceful_shutdown();
                        }
                        conn.as_mut().poll(cx)
                    })
                    .await
                    .map_err(std::io::Error::other)
                }
                Protocol::Http2 => {
                    // A connection that stops reading altogether fails its writes
                    // after the stall timeout, which ends every stream on it.
                    let io =
                        StallGuard::new(TokioIo::new(io), this.stall_timeout, Arc::clone(&info));
                    super::h2::serve(
                        TokioIo::new(io),
                        peer,
                        info,
                        this.service.clone(),
                        this.h2,
                        Arc::clone(&this.shutdown),
                    )
                    .await
                }
            };
            if let Err(err) = result {
                tracing::debug!(%err, %peer, "connection ended with an error");
            }
        });
    }
}
