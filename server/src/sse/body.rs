//! The body of every SSE response: `retry` first, then whatever its [`StreamKind`] has
//! due, keep-alives while idle, `end` with reason `shutdown` when the server stops, the
//! fault-injection abort, and the permit's accounting when it ends, however it ends.
//!
//! The body is pulled by hyper: a frame is made only when the connection can take one.
//! A client that falls behind therefore never makes the server buffer events for it.

use super::frame;
use super::grid::GridTimer;
use super::permit::{StreamPermit, Summary};
use super::shutdown::{Shutdown, ShutdownWatch};
use crate::access::Access;
use crate::metrics::DisconnectReason;
use bytes::Bytes;
use futures_util::Stream;
use http::{header, HeaderMap, HeaderValue};
use shared::{events, End, EndReason};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::time::Instant;
use warp::reply::Response;
use warp::Reply as _;

/// What a stream kind has for the body now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Due {
    /// An event is due: the body calls [`StreamKind::next_frame`] when it may send it.
    Ready,
    /// Nothing before this instant.
    At(Instant),
    /// Nothing until the kind wakes the task (it registered the context).
    Wait,
    /// Everything was sent: the body sends `end` with reason `complete`.
    Complete,
    /// The stream cannot go on: the body aborts the response (no `end`).
    Abort(DisconnectReason),
}

/// One kind of stream: which payload is due when. Keep-alive, shutdown, fault
/// injection and accounting are the body's.
pub trait StreamKind: Send + Sync + Unpin + 'static {
    /// Whether an event is due at `now`, and if not, what to wait for.
    fn poll_due(&mut self, now: Instant, cx: &mut Context<'_>) -> Due;
    /// The frame of the event [`StreamKind::poll_due`] just said is due.
    fn next_frame(&mut self, now: Instant) -> Bytes;
    /// The id of the last event sent (0 if none), for `end` and the log.
    fn last_id(&self) -> u64;
    /// The frame sent after the stream has been idle for the keep-alive period; `None`
    /// sends the keep-alive comment.
    fn keep_alive(&mut self) -> Option<Bytes> {
        None
    }
    /// Timer wake-ups are rounded up to a multiple of this on the runtime's
    /// [`Grid`](super::grid::Grid), so that streams with the same step wake together;
    /// zero for none beyond the grid's millisecond.
    fn grid(&self) -> Duration {
        Duration::ZERO
    }
    /// The `end` frame for `reason`; `None` sends the counter's `{"reason","last"}` with
    /// [`StreamKind::last_id`].
    fn end_frame(&self, _reason: EndReason) -> Option<Bytes> {
        None
    }
}

/// What every stream of one server shares: made once, cloned per stream.
#[derive(Clone)]
pub struct BodyParts {
    pub retry_ms: u64,
    pub retry_frame: Bytes,
    /// See [`crate::Config::shutdown_retry_spread`], in milliseconds.
    pub shutdown_retry_spread_ms: u64,
    pub keep_alive_frame: Bytes,
    pub keep_alive: Duration,
    pub shutdown: Arc<Shutdown>,
}

impl BodyParts {
    pub fn new(config: &crate::Config, shutdown: Arc<Shutdown>) -> Self {
        let retry_ms = config.retry_ms;
        BodyParts {
            retry_ms,
            retry_frame: frame::retry(retry_ms),
            shutdown_retry_spread_ms: config.shutdown_retry_spread.as_millis() as u64,
            keep_alive: config.keep_alive,
            keep_alive_frame: frame::comment(events::KEEP_ALIVE_COMMENT)
                .expect("the keep-alive comment is one line"),
            shutdown,
        }
    }

    /// The `retry:` sent before `end` on shutdown: uniform over
    /// `retry_ms..=retry_ms + spread`, or `None` without a spread.
    fn shutdown_retry(&self) -> Option<Bytes> {
        let spread = self.shutdown_retry_spread_ms;
        (spread > 0).then(|| frame::retry(self.retry_ms.saturating_add(fastrand::u64(0..=spread))))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// The `retry` field has not been sent yet.
    Start,
    Open,
    Done,
}

/// The body of one SSE response.
pub struct SseBody<K: StreamKind> {
    kind: K,
    phase: Phase,
    parts: BodyParts,
    last_write: Instant,
    /// Set to whichever comes first: the kind's next event or the next keep-alive.
    timer: GridTimer,
    shutdown: ShutdownWatch,
    /// Abort the connection once this many events were sent on it (`drop_after`).
    fault_after: Option<u64>,
    /// Events sent on this connection.
    sent: u64,
    /// How the stream ended; stays `Client` unless the body ended it.
    reason: DisconnectReason,
    permit: StreamPermit,
    /// The token's limits, for a stream opened with one.
    access: Option<Access>,
}

impl<K: StreamKind> SseBody<K> {
    pub fn new(kind: K, parts: BodyParts, permit: StreamPermit, fault_after: Option<u64>) -> Self {
        let now = Instant::now();
        SseBody {
            kind,
            phase: Phase::Start,
            shutdown: parts.shutdown.watch(),
            parts,
            last_write: now,
            timer: GridTimer::new(),
            fault_after,
            sent: 0,
            reason: DisconnectReason::Client,
            permit,
            access: None,
        }
    }

    /// Ends the stream when `access` does: at the token's `exp` (`expired`), or when its
    /// session is revoked (`revoked`). Nothing is sent past either.
    pub fn with_access(mut self, access: Access) -> Self {
        self.access = Some(access);
        self
    }

    /// The `200` response carrying this body, with the headers every stream has.
    pub fn into_response(self) -> Response {
        let mut res = warp::reply::stream(self).into_response();
        // Sized for these three: hyper keeps the map, emptied, for as long as the
        // connection is open. Bench: `cargo xtask bench` 1 Hz, memory per stream.
        let mut h = HeaderMap::with_capacity(3);
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/event-stream"),
        );
        // `no-transform`: proxies must not compress or rewrite an event stream.
        h.insert(
            header::CACHE_CONTROL,
            HeaderValue::from_static("no-cache, no-transform"),
        );
        // Tells nginx-style proxies not to buffer the stream.
        h.insert("x-accel-buffering", HeaderValue::from_static("no"));
        h.extend(std::mem::take(res.headers_mut()));
        *res.headers_mut() = h;
        res
    }

    /// The `end` frame; the stream ends after it.
    fn end(&mut self, reason: EndReason) -> Bytes {
        self.phase = Phase::Done;
        self.reason = match reason {
            EndReason::Complete => DisconnectReason::Complete,
            EndReason::Shutdown => DisconnectReason::Shutdown,
            EndReason::Expired => DisconnectReason::Expired,
            EndReason::Revoked => DisconnectReason::Revoked,
        };
        self.permit.metrics().events_sent.increment(1);
        let end = self.kind.end_frame(reason).unwrap_or_else(|| {
            let end = End {
                reason,
                last: self.kind.last_id(),
            };
            frame::json(Some(events::END), None, &end).expect("`end` is a valid event name")
        });
        match reason {
            EndReason::Shutdown => match self.parts.shutdown_retry() {
                // One write: the new delay and the end it applies to.
                Some(retry) => [retry, end].concat().into(),
                None => end,
            },
            EndReason::Complete | EndReason::Expired | EndReason::Revoked => end,
        }
    }

    fn abort(&mut self, reason: DisconnectReason) -> std::io::Error {
        self.phase = Phase::Done;
        self.reason = reason;
        let what = match reason {
            DisconnectReason::Fault => "fault injection: drop_after reached",
            DisconnectReason::Lagged => "the client fell behind the history",
            _ => "the stream was aborted",
        };
        std::io::Error::new(std::io::ErrorKind::ConnectionAborted, what)
    }

    fn poll_open(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Bytes, std::io::Error>>> {
        if self.shutdown.poll_begun(cx) {
            return Poll::Ready(Some(Ok(self.end(EndReason::Shutdown))));
        }
        if let Some(access) = &self.access {
            if access.cancel.as_ref().is_some_and(|c| c.poll_tripped(cx)) {
                return Poll::Ready(Some(Ok(self.end(EndReason::Revoked))));
            }
            if Instant::now() >= access.until {
                return Poll::Ready(Some(Ok(self.end(EndReason::Expired))));
            }
        }
        // Twice at most: when the timer fires for the kind's event, the kind is asked
        // again and has it ready.
        for _ in 0..2 {
            let now = Instant::now();
            let wait_until = match self.kind.poll_due(now, cx) {
                Due::Ready => {
                    if self.fault_after == Some(self.sent) {
                        // The abort comes when the next event is due, not right after
                        // the last one, so that one has been flushed: hyper flushes
                        // while the body is pending, but drops unflushed bytes when the
                        // body fails.
                        return Poll::Ready(Some(Err(self.abort(DisconnectReason::Fault))));
                    }
                    let frame = self.kind.next_frame(now);
                    self.sent += 1;
                    self.last_write = now;
                    self.permit.metrics().events_sent.increment(1);
                    return Poll::Ready(Some(Ok(frame)));
                }
                Due::Complete => return Poll::Ready(Some(Ok(self.end(EndReason::Complete)))),
                Due::Abort(reason) => return Poll::Ready(Some(Err(self.abort(reason)))),
                Due::At(at) => Some(at),
                Due::Wait => None,
            };
            let keep_alive_at = self
                .last_write
                .checked_add(self.parts.keep_alive)
                .unwrap_or(now);
            let mut deadline = wait_until.map_or(keep_alive_at, |at| at.min(keep_alive_at));
            if let Some(access) = &self.access {
                if now >= access.until {
                    return Poll::Ready(Some(Ok(self.end(EndReason::Expired))));
                }
                deadline = deadline.min(access.until);
            }
            if self
                .timer
                .poll_until(deadline, self.kind.grid(), now, cx)
                .is_pending()
            {
                return Poll::Pending;
            }
            if self
                .access
                .as_ref()
                .is_some_and(|a| Instant::now() >= a.until)
            {
                return Poll::Ready(Some(Ok(self.end(EndReason::Expired))));
            }
            // `now` is past the deadline: the keep-alive's, unless the kind's event is
            // due too.
            if wait_until.is_none_or(|at| now < at) {
                self.last_write = now;
                let frame = self
                    .kind
                    .keep_alive()
                    .unwrap_or_else(|| self.parts.keep_alive_frame.clone());
                return Poll::Ready(Some(Ok(frame)));
            }
        }
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

impl<K: StreamKind> Stream for SseBody<K> {
    type Item = Result<Bytes, std::io::Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        match this.phase {
            Phase::Start => {
                this.phase = Phase::Open;
                Poll::Ready(Some(Ok(this.parts.retry_frame.clone())))
            }
            Phase::Open => this.poll_open(cx),
            Phase::Done => Poll::Ready(None),
        }
    }
}

impl<K: StreamKind> Drop for SseBody<K> {
    fn drop(&mut self) {
        self.permit.finish(Summary {
            reason: self.reason,
            last: self.kind.last_id(),
            sent: self.sent,
        });
    }
}
