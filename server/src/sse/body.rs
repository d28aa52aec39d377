//! The body of every SSE response: `retry` first, then whatever its [`StreamKind`] has
//! due, keep-alives while idle, `end` with reason `shutdown` when the server stops, the
//! fault-injection abort, and the permit's accounting when it ends, however it ends.
//!
//! The body is pulled by hyper: a frame is made only when the connection can take one.
//! A client that falls behind therefore never makes the server buffer events for it.

use super::frame;
use super::permit::{StreamPermit, Summary};
use super::shutdown::{Shutdown, ShutdownWatch};
use crate::metrics::DisconnectReason;
use bytes::Bytes;
use futures_util::Stream;
use http::{header, HeaderValue};
use shared::{events, End, EndReason};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::time::{Instant, Sleep};
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
    /// Timer wake-ups are rounded up to this grid (see [`on_grid`]); zero for none.
    fn grid(&self) -> Duration {
        Duration::ZERO
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
    /// One timer per stream, set to whichever comes first: the kind's next event or the
    /// next keep-alive.
    timer: Pin<Box<Sleep>>,
    armed_at: Instant,
    shutdown: ShutdownWatch,
    /// Abort the connection once this many events were sent on it (`drop_after`).
    fault_after: Option<u64>,
    /// Events sent on this connection.
    sent: u64,
    /// How the stream ended; stays `Client` unless the body ended it.
    reason: DisconnectReason,
    permit: StreamPermit,
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
            timer: Box::pin(tokio::time::sleep_until(now)),
            armed_at: now,
            fault_after,
            sent: 0,
            reason: DisconnectReason::Client,
            permit,
        }
    }

    /// The `200` response carrying this body, with the headers every stream has.
    pub fn into_response(self) -> Response {
        let mut res = warp::reply::stream(self).into_response();
        let h = res.headers_mut();
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
        res
    }

    fn arm(&mut self, at: Instant) {
        if at != self.armed_at {
            self.armed_at = at;
            self.timer.as_mut().reset(at);
        }
    }

    /// The `end` frame; the stream ends after it.
    fn end(&mut self, reason: EndReason) -> Bytes {
        self.phase = Phase::Done;
        self.reason = match reason {
            EndReason::Complete => DisconnectReason::Complete,
            EndReason::Shutdown => DisconnectReason::Shutdown,
        };
        self.permit.metrics().events_sent.increment(1);
        let end = End {
            reason,
            last: self.kind.last_id(),
        };
        let end = frame::json(Some(events::END), None, &end).expect("`end` is a valid event name");
        match reason {
            EndReason::Shutdown => match self.parts.shutdown_retry() {
                // One write: the new delay and the end it applies to.
                Some(retry) => [retry, end].concat().into(),
                None => end,
            },
            EndReason::Complete => end,
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
            let deadline = wait_until.map_or(keep_alive_at, |at| at.min(keep_alive_at));
            let grid = self.kind.grid();
            self.arm(on_grid(deadline, grid));
            if self.timer.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            let now = Instant::now();
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

/// `at`, rounded up to the next multiple of `grid` counted from one process-wide origin.
///
/// Streams whose events fall in the same grid cell then wake together: the runtime
/// runs them back to back and their clients are woken in a burst, instead of one thread
/// wake-up per event. The schedule itself stays exact, so a stream still sends one
/// event per interval; each is only up to one grid cell late, and its `sent_at_us` says
/// when it really left.
pub fn on_grid(at: Instant, grid: Duration) -> Instant {
    static ORIGIN: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    if grid.is_zero() {
        return at;
    }
    let origin = *ORIGIN.get_or_init(Instant::now);
    let Some(since) = at.checked_duration_since(origin) else {
        return at;
    };
    // In u64 nanoseconds (584 years), not u128: this runs once per event.
    // Bench: `cargo xtask bench` 1 Hz, CPU per event (callgrind instructions).
    let (Ok(since), Ok(grid)) = (
        u64::try_from(since.as_nanos()),
        u64::try_from(grid.as_nanos()),
    ) else {
        return at;
    };
    let rounded = since.div_ceil(grid).saturating_mul(grid);
    origin
        .checked_add(Duration::from_nanos(rounded))
        .unwrap_or(at)
}

#[cfg(test)]
mod tests {
    use super::on_grid;
    use std::time::Duration;

    #[test]
    fn timer_wake_ups_round_up_onto_the_grid() {
        let now = tokio::time::Instant::now();
        let grid = Duration::from_millis(3);
        let a = on_grid(now + Duration::from_micros(100), grid);
        let b = on_grid(now + Duration::from_micros(2900), grid);
        assert!(a >= now + Duration::from_micros(100));
        assert!(
            a - (now + Duration::from_micros(100)) < grid,
            "at most one cell late"
        );
        // Two deadlines in one cell wake together.
        if b - now < grid {
            assert_eq!(a, b);
        }
        assert_eq!(on_grid(a, grid), a, "a point on the grid stays");
        assert_eq!(on_grid(now, Duration::ZERO), now, "no grid, no rounding");
    }
}
