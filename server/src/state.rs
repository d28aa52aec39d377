//! What every request shares: the configuration, the metrics, the count of open streams
//! and the shutdown signal; and the permit that one open stream holds.

use crate::conn::ConnInfo;
use crate::metrics::Metrics;
use crate::Config;
use bytes::Bytes;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use tokio::sync::Notify;

/// Why a stream ended, as counted in `sse_disconnects_total{reason}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DisconnectReason {
    /// Every tick and the `end` event were sent.
    Complete,
    /// The server was shutting down and sent `end` with reason `shutdown`.
    Shutdown,
    /// The client went away before the end.
    Client,
    /// `drop_after` aborted the connection.
    Fault,
    /// The client accepted no bytes for the stall timeout.
    Stalled,
}

impl DisconnectReason {
    pub const ALL: [DisconnectReason; 5] = [
        DisconnectReason::Complete,
        DisconnectReason::Shutdown,
        DisconnectReason::Client,
        DisconnectReason::Fault,
        DisconnectReason::Stalled,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            DisconnectReason::Complete => "complete",
            DisconnectReason::Shutdown => "shutdown",
            DisconnectReason::Client => "client",
            DisconnectReason::Fault => "fault",
            DisconnectReason::Stalled => "stalled",
        }
    }
}

pub struct AppState {
    pub config: Config,
    pub metrics: Metrics,
    /// Streams open now; admission compares it with `max_streams`.
    active: AtomicUsize,
    next_stream_id: AtomicU64,
    shutting_down: AtomicBool,
    /// Woken once when shutdown begins; every open stream waits on it.
    pub shutdown: Arc<Notify>,
    /// Frames that are the same for every stream, encoded once.
    pub retry_frame: Bytes,
    pub keep_alive_frame: Bytes,
}

impl AppState {
    pub fn new(config: Config) -> Arc<Self> {
        Arc::new(AppState {
            retry_frame: crate::stream::frame::retry(config.retry_ms),
            keep_alive_frame: crate::stream::keep_alive_frame(),
            config,
            metrics: Metrics::new(),
            active: AtomicUsize::new(0),
            next_stream_id: AtomicU64::new(1),
            shutting_down: AtomicBool::new(false),
            shutdown: Arc::new(Notify::new()),
        })
    }

    pub fn active_streams(&self) -> usize {
        self.active.load(Ordering::Acquire)
    }

    pub fn is_shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::Acquire)
    }

    /// Tells every open stream to send `end` with reason `shutdown`. The flag is set
    /// before the wake-up, and a stream checks the flag after it starts waiting, so no
    /// stream can miss both.
    pub fn begin_shutdown(&self) {
        self.shutting_down.store(true, Ordering::Release);
        self.shutdown.notify_waiters();
    }

    /// Takes a place for one more stream, or `None` when `max_streams` are open.
    pub fn try_open_stream(self: &Arc<Self>, conn: Option<Arc<ConnInfo>>) -> Option<StreamPermit> {
        let max = self.config.max_streams;
        self.active
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .ok()?;
        self.metrics.active_streams.increment(1.0);
        self.metrics.streams_total.increment(1);
        let id = self.next_stream_id.fetch_add(1, Ordering::Relaxed);
        Some(StreamPermit {
            state: Arc::clone(self),
            id,
            conn,
            reason: DisconnectReason::Client,
            last: 0,
            sent: 0,
        })
    }
}

/// One open stream's place. Dropping it frees the place, updates the metrics and logs
/// how the stream ended: whatever way the stream goes, this runs exactly once.
pub struct StreamPermit {
    state: Arc<AppState>,
    pub id: u64,
    /// The connection carrying the stream, which knows whether it stalled.
    conn: Option<Arc<ConnInfo>>,
    /// Stays `Client` unless the stream itself ended otherwise.
    reason: DisconnectReason,
    last: u64,
    sent: u64,
}

impl StreamPermit {
    pub fn state(&self) -> &Arc<AppState> {
        &self.state
    }

    pub fn set_reason(&mut self, reason: DisconnectReason) {
        self.reason = reason;
    }

    pub fn set_last(&mut self, last: u64) {
        self.last = last;
    }

    pub fn set_sent(&mut self, sent: u64) {
        self.sent = sent;
    }
}

impl Drop for StreamPermit {
    fn drop(&mut self) {
        if self.reason == DisconnectReason::Client
            && self.conn.as_ref().is_some_and(|c| c.stalled())
        {
            self.reason = DisconnectReason::Stalled;
        }
        self.state.active.fetch_sub(1, Ordering::AcqRel);
        let metrics = &self.state.metrics;
        metrics.active_streams.decrement(1.0);
        metrics.disconnect(self.reason).increment(1);
        let (stream, sent, last, reason) = (self.id, self.sent, self.last, self.reason.as_str());
        if self.reason == DisconnectReason::Client {
            tracing::info!(
                stream,
                sent,
                last,
                reason,
                "client dropped the stream; ticker stopped"
            );
        } else {
            tracing::info!(stream, sent, last, reason, "stream ended");
        }
    }
}
