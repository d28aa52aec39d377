//! Admission of streams under `--max-streams`, and the permit one open stream holds.
//!
//! The permit owns a stream's accounting: taking it counts the stream in, and
//! [`StreamPermit::finish`] counts it out, with its disconnect reason, metrics and log
//! line. `finish` runs exactly once, whichever comes first: the body's own end or the
//! permit being dropped (a response that was never sent).

use crate::conn::ConnInfo;
use crate::metrics::{DisconnectReason, Metrics};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

/// How many streams are open, against the cap.
pub struct Admission {
    max: usize,
    active: AtomicUsize,
    next_id: AtomicU64,
    metrics: Arc<Metrics>,
}

impl Admission {
    pub fn new(max: usize, metrics: Arc<Metrics>) -> Arc<Self> {
        Arc::new(Admission {
            max,
            active: AtomicUsize::new(0),
            next_id: AtomicU64::new(1),
            metrics,
        })
    }

    pub fn active(&self) -> usize {
        self.active.load(Ordering::Acquire)
    }

    pub fn max(&self) -> usize {
        self.max
    }

    /// Takes a place for one more stream, or `None` when `max` are open.
    pub fn try_open(
        self: &Arc<Self>,
        kind: &'static str,
        conn: Option<Arc<ConnInfo>>,
    ) -> Option<StreamPermit> {
        self.active
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.max).then_some(n + 1)
            })
            .ok()?;
        self.metrics.active_streams.increment(1.0);
        self.metrics.streams_total.increment(1);
        Some(StreamPermit {
            admission: Some(Arc::clone(self)),
            id: self.next_id.fetch_add(1, Ordering::Relaxed),
            kind,
            conn,
        })
    }
}

/// How a stream went, for its permit's accounting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Summary {
    /// How it ended; `Client` is refined to `Stalled` when the connection stalled.
    pub reason: DisconnectReason,
    /// The last event id the client was sent (0 if none).
    pub last: u64,
    /// Events sent on this connection.
    pub sent: u64,
}

/// One open stream's place under the cap.
pub struct StreamPermit {
    /// `None` once finished.
    admission: Option<Arc<Admission>>,
    pub id: u64,
    /// Which route the stream serves, for the log.
    kind: &'static str,
    /// The connection carrying the stream, which knows whether it stalled.
    conn: Option<Arc<ConnInfo>>,
}

impl StreamPermit {
    pub fn metrics(&self) -> &Metrics {
        // Only `finish` clears it, and nothing uses a permit after that.
        &self
            .admission
            .as_ref()
            .expect("a permit is used only before it finishes")
            .metrics
    }

    /// Frees the place, counts the disconnect and logs how the stream ended. Runs once:
    /// later calls (and the drop after it) do nothing.
    pub fn finish(&mut self, summary: Summary) {
        let Some(admission) = self.admission.take() else {
            return;
        };
        let mut reason = summary.reason;
        if reason == DisconnectReason::Client && self.conn.as_ref().is_some_and(|c| c.stalled()) {
            reason = DisconnectReason::Stalled;
        }
        admission.active.fetch_sub(1, Ordering::AcqRel);
        let metrics = &admission.metrics;
        metrics.active_streams.decrement(1.0);
        metrics.disconnect(reason).increment(1);
        let (stream, kind, sent, last) = (self.id, self.kind, summary.sent, summary.last);
        let reason = reason.as_str();
        if summary.reason == DisconnectReason::Client && kind == "counter" {
            tracing::info!(
                stream,
                kind,
                sent,
                last,
                reason,
                "client dropped the stream; ticker stopped"
            );
        } else if summary.reason == DisconnectReason::Client {
            // A subscriber has no ticker: its cursor and wake-up go with it.
            tracing::info!(
                stream,
                kind,
                sent,
                last,
                reason,
                "client dropped the stream; subscription freed"
            );
        } else {
            tracing::info!(stream, kind, sent, last, reason, "stream ended");
        }
    }
}

impl Drop for StreamPermit {
    fn drop(&mut self) {
        self.finish(Summary {
            reason: DisconnectReason::Client,
            last: 0,
            sent: 0,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_permit_counts_in_once_and_out_once() {
        let metrics = Arc::new(Metrics::new());
        let admission = Admission::new(2, Arc::clone(&metrics));
        let mut a = admission.try_open("test", None).unwrap();
        let b = admission.try_open("test", None).unwrap();
        assert!(admission.try_open("test", None).is_none(), "the cap holds");
        assert_eq!(admission.active(), 2);
        a.finish(Summary {
            reason: DisconnectReason::Complete,
            last: 3,
            sent: 3,
        });
        a.finish(Summary {
            reason: DisconnectReason::Fault,
            last: 3,
            sent: 3,
        });
        drop(a);
        assert_eq!(admission.active(), 1, "finish and drop count out once");
        drop(b);
        assert_eq!(admission.active(), 0);
        let text = metrics.render();
        assert!(
            text.contains("sse_disconnects_total{reason=\"complete\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("sse_disconnects_total{reason=\"client\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("sse_disconnects_total{reason=\"fault\"} 0"),
            "{text}"
        );
    }
}
