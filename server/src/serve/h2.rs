//! HTTP/2 served with the `h2` crate directly, bridging each stream to the routes.
//!
//! Why not hyper's HTTP/2 server: it polls a response body only while the stream's
//! send window has room, so a stream whose client stopped reading is never polled
//! again and nothing can end it without ending the whole connection. Here each stream
//! has a pipe of its own that waits for window with the stall timer running, and
//! resets just that stream (`RST_STREAM`) when the timer fires, when the body fails
//! (`drop_after`, a lagged reader), or ends it when the client resets it.
//!
//! Memory per stream is bounded: the pipe reserves window for one frame before it
//! sends it, so h2 never buffers more than the client allowed, and the body makes the
//! next frame only after that.

use crate::conn::ConnInfo;
use bytes::Bytes;
use h2::server::SendResponse;
use h2::{Reason, RecvStream, SendStream};
use http_body::Body as _;
use std::convert::Infallible;
use std::future::poll_fn;
use std::io;
use std::net::SocketAddr;
use std::pin::{pin, Pin};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::Instant;
use tower_service::Service;
use warp::reply::Response;

/// HTTP/2 limits of one connection.
#[derive(Debug, Clone, Copy)]
pub struct H2Limits {
    /// `SETTINGS_MAX_CONCURRENT_STREAMS`: past it a client waits.
    pub max_streams: u32,
    pub max_header_list: u32,
    pub stall_timeout: Duration,
    /// Also bounds the connection preface.
    pub handshake_timeout: Duration,
}

/// Streams the client may reset within [`RESET_WINDOW`] before the connection is cut
/// off with `ENHANCE_YOUR_CALM` (the rapid-reset attack, CVE-2023-44487). A browser
/// closing tabs resets a handful; the attack resets thousands a second.
pub const MAX_RESETS_PER_WINDOW: u32 = 200;
pub const RESET_WINDOW: Duration = Duration::from_secs(10);

/// Counts the client's resets of one connection.
struct ResetBudget {
    window: Mutex<(Instant, u32)>,
    exceeded: tokio::sync::Notify,
    count: AtomicU32,
}

impl ResetBudget {
    fn new() -> Self {
        ResetBudget {
            window: Mutex::new((Instant::now(), 0)),
            exceeded: tokio::sync::Notify::new(),
            count: AtomicU32::new(0),
        }
    }

    fn record(&self) {
        self.count.fetch_add(1, Ordering::Relaxed);
        let mut w = self.window.lock().unwrap_or_else(|e| e.into_inner());
        if w.0.elapsed() > RESET_WINDOW {
            *w = (Instant::now(), 0);
        }
        w.1 += 1;
        if w.1 > MAX_RESETS_PER_WINDOW {
            self.exceeded.notify_one();
        }
    }
}

/// Serves HTTP/2 on `io` until the client goes, the connection fails, or shutdown
/// (then `GOAWAY`, once every open stream has had its `end`).
pub async fn serve<I, S>(
    io: I,
    peer: SocketAddr,
    conn_info: Arc<ConnInfo>,
    service: S,
    limits: H2Limits,
    shutdown: Arc<crate::sse::Shutdown>,
) -> io::Result<()>
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: Service<http::Request<RequestBody>, Response = Response, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    let mut builder = h2::server::Builder::new();
    builder
        .max_concurrent_streams(limits.max_streams)
        .max_header_list_size(limits.max_header_list)
        // Request bodies are tiny here: a small receive window bounds what a client
        // can make the server hold.
        .initial_window_size(64 * 1024)
        .max_send_buffer_size(64 * 1024);
    let handshake = builder.handshake::<_, Bytes>(io);
    let mut conn = tokio::time::timeout(limits.handshake_timeout, handshake)
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "no HTTP/2 preface in time"))?
        .map_err(io::Error::other)?;
    let resets = Arc::new(ResetBudget::new());
    let mut shutdown_seen = false;
    let mut notified = pin!(shutdown.notified());
    loop {
        tokio::select! {
            next = conn.accept() => match next {
                Some(Ok((req, respond))) => {
                    let info = Arc::new(ConnInfo::for_stream(&conn_info));
                    let service = service.clone();
                    let resets = Arc::clone(&resets);
                    tokio::spawn(stream(req, respond, service, info, limits.stall_timeout, resets));
                }
                Some(Err(err)) => {
                    tracing::debug!(%err, %peer, "HTTP/2 connection error");
                    break;
                }
                None => break,
            },
            () = &mut notified, if !shutdown_seen => {
                // Open streams send their `end` now (they watch the same signal); the
                // GOAWAY lets them finish and refuses new ones.
                shutdown_seen = true;
                conn.graceful_shutdown();
            }
            () = resets.exceeded.notified() => {
                tracing::warn!(
                    %peer,
                    resets = resets.count.load(Ordering::Relaxed),
                    "client reset too many HTTP/2 streams: closing the connection"
                );
                conn.abrupt_shutdown(Reason::ENHANCE_YOUR_CALM);
                // Flush the GOAWAY, without waiting for more than a moment.
                let _ = tokio::time::timeout(Duration::from_secs(1), poll_fn(|cx| conn.poll_closed(cx))).await;
                break;
            }
        }
        if !shutdown_seen && shutdown.is_set() {
            shutdown_seen = true;
            conn.graceful_shutdown();
        }
    }
    Ok(())
}

/// One HTTP/2 stream: the request through the routes, the response back.
async fn stream<S>(
    req: http::Request<RecvStream>,
    mut respond: SendResponse<Bytes>,
    mut service: S,
    info: Arc<ConnInfo>,
    stall_timeout: Duration,
    resets: Arc<ResetBudget>,
) where
    S: Service<http::Request<RequestBody>, Response = Response, Error = Infallible>,
{
    let (mut parts, recv) = req.into_parts();
    // Routes read the origin from `Host`; HTTP/2 carries it in `:authority`.
    if !parts.headers.contains_key(http::header::HOST) {
        if let Some(host) = parts
            .uri
            .authority()
            .and_then(|a| http::HeaderValue::from_str(a.as_str()).ok())
        {
            parts.headers.insert(http::header::HOST, host);
        }
    }
    let head_only = parts.method == http::Method::HEAD;
    let mut req = http::Request::from_parts(parts, RequestBody::new(recv));
    let res = match crate::routes::gate(&req) {
        Some(res) => res,
        None => {
            req.extensions_mut().insert(Arc::clone(&info));
            // Boxed, and dropped once it answers: the routes' future (every filter of
            // `routes::routes`, several KiB) would otherwise be part of this task's
            // allocation for as long as the stream is open, as `serve::http` boxes it
            // for HTTP/1.1 (docs/performance.md § 7).
            let call = Box::pin(service.call(req));
            tokio::select! {
                res = call => match res {
                    Ok(res) => res,
                    Err(never) => match never {},
                },
                _ = poll_fn(|cx| respond.poll_reset(cx)) => {
                    resets.record();
                    return;
                }
            }
        }
    };
    let (parts, body) = res.into_parts();
    let end_now = head_only || body.is_end_stream();
    let send = match respond.send_response(http::Response::from_parts(parts, ()), end_now) {
        Ok(send) => send,
        Err(err) => {
            tracing::debug!(%err, "sending an HTTP/2 response head failed");
            return;
        }
    };
    if !end_now {
        pipe(body, send, stall_timeout, &info, &resets).await;
    }
}

/// What ended a pipe early.
enum Cut {
    ClientReset,
    Failed,
}

/// Sends `body` on `send`, one frame at a time as the window allows.
async fn pipe<B>(
    body: B,
    mut send: SendStream<Bytes>,
    stall_timeout: Duration,
    info: &ConnInfo,
    resets: &ResetBudget,
) where
    B: http_body::Body<Data = Bytes>,
    B::Error: std::fmt::Display,
{
    let mut body = pin!(body);
    let outcome: Result<(), Cut> = async {
        loop {
            let frame = tokio::select! {
                biased;
                _ = poll_fn(|cx| send.poll_reset(cx)) => return Err(Cut::ClientReset),
                frame = poll_fn(|cx| body.as_mut().poll_frame(cx)) => frame,
            };
            let mut data = match frame {
                None => {
                    let _ = send.send_data(Bytes::new(), true);
                    return Ok(());
                }
                Some(Err(err)) => {
                    // `drop_after` or a lagged reader: this stream only.
                    tracing::debug!(%err, "HTTP/2 response body failed: resetting the stream");
                    send.send_reset(Reason::INTERNAL_ERROR);
                    return Err(Cut::Failed);
                }
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => data,
                    Err(_) => continue,
                },
            };
            while !data.is_empty() {
                send.reserve_capacity(data.len());
                let mut stall = pin!(tokio::time::sleep(stall_timeout));
                let capacity = loop {
                    if send.capacity() > 0 {
                        break send.capacity();
                    }
                    tokio::select! {
                        got = poll_fn(|cx| poll_capacity_or_reset(&mut send, cx)) => match got {
                            Some(_) => {}
                            None => return Err(Cut::ClientReset),
                        },
                        () = &mut stall => {
                            info.mark_stalled();
                            send.send_reset(Reason::CANCEL);
                            return Err(Cut::Failed);
                        }
                    }
                };
                let chunk = data.split_to(capacity.min(data.len()));
                if send.send_data(chunk, false).is_err() {
                    return Err(Cut::ClientReset);
                }
            }
        }
    }
    .await;
    if let Err(Cut::ClientReset) = outcome {
        resets.record();
    }
}

/// More window for `send`, or `None` once the stream was reset or closed.
fn poll_capacity_or_reset(
    send: &mut SendStream<Bytes>,
    cx: &mut Context<'_>,
) -> Poll<Option<usize>> {
    if send.poll_reset(cx).is_ready() {
        return Poll::Ready(None);
    }
    match send.poll_capacity(cx) {
        Poll::Ready(Some(Ok(n))) => Poll::Ready(Some(n)),
        Poll::Ready(Some(Err(_)) | None) => Poll::Ready(None),
        Poll::Pending => Poll::Pending,
    }
}

/// A request body read from an HTTP/2 stream, giving its window back as it is read.
pub struct RequestBody {
    recv: RecvStream,
    data_done: bool,
}

impl RequestBody {
    fn new(recv: RecvStream) -> Self {
        RequestBody {
            recv,
            data_done: false,
        }
    }
}

impl http_body::Body for RequestBody {
    type Data = Bytes;
    type Error = h2::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, h2::Error>>> {
        if !self.data_done {
            match self.recv.poll_data(cx) {
                Poll::Ready(Some(Ok(data))) => {
                    let _ = self.recv.flow_control().release_capacity(data.len());
                    return Poll::Ready(Some(Ok(http_body::Frame::data(data))));
                }
                Poll::Ready(Some(Err(err))) => return Poll::Ready(Some(Err(err))),
                Poll::Ready(None) => self.data_done = true,
                Poll::Pending => return Poll::Pending,
            }
        }
        match self.recv.poll_trailers(cx) {
            Poll::Ready(Ok(Some(trailers))) => {
                Poll::Ready(Some(Ok(http_body::Frame::trailers(trailers))))
            }
            Poll::Ready(Ok(None)) => Poll::Ready(None),
            Poll::Ready(Err(err)) => Poll::Ready(Some(Err(err))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.recv.is_end_stream()
    }
}
