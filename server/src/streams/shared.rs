//! The shared live counter: one sequence of changes that every subscriber reads.
//!
//! [`Hub`] keeps the last `--history` changes, each encoded once as its SSE frame.
//! A [`Subscriber`] is a cursor into that history: it takes the next frame when its
//! connection can take one, so there is no per-subscriber queue that could grow. One
//! that falls further behind than the history is cut off (reason `lagged`) and gets
//! `reset` when it comes back. Publishing never waits for any subscriber.

use crate::metrics::{DisconnectReason, Metrics};
use crate::sse::{frame, Due, Signal, StreamKind};
use bytes::Bytes;
use shared::{events, Heartbeat, Reset, ResetReason, SharedValue};
use std::collections::VecDeque;
use std::future::Future as _;
use std::pin::Pin;
use std::sync::{Arc, RwLock};
use std::task::Context;
use tokio::sync::futures::OwnedNotified;
use tokio::time::Instant;

/// The recent history of the shared counter, and the wake-up of its subscribers.
pub struct Hub {
    ring: RwLock<Ring>,
    /// Woken (all waiters) on every change.
    notify: Signal,
    metrics: Arc<Metrics>,
}

struct Ring {
    /// The counter now.
    current: u64,
    /// The frame of the current value, sent first to a subscriber without a last id.
    current_frame: Bytes,
    /// The frames of the values `oldest()..=current`, at most `capacity` of them.
    frames: VecDeque<Bytes>,
    capacity: usize,
}

impl Ring {
    /// The oldest value whose frame is kept (`current + 1` when none is).
    fn oldest(&self) -> u64 {
        self.current + 1 - self.frames.len() as u64
    }
}

/// Where a new subscriber starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Start {
    /// The first frame to send, if any (the current value, or a `reset`).
    pub first: Option<Bytes>,
    /// The value the subscriber has after `first`: it continues after it.
    pub cursor: u64,
    /// How many changes after `cursor` are replayed from the history (for the log).
    pub replay: u64,
}

/// What a subscriber at `cursor` gets next.
enum Next {
    Frame(Bytes),
    Nothing,
    Lagged,
}

impl Hub {
    pub fn new(history: usize, metrics: Arc<Metrics>) -> Arc<Self> {
        let current_frame = value_frame(0, crate::unix_micros());
        Arc::new(Hub {
            ring: RwLock::new(Ring {
                current: 0,
                current_frame,
                frames: VecDeque::with_capacity(history.min(4096)),
                capacity: history.max(1),
            }),
            notify: Signal::new(),
            metrics,
        })
    }

    pub fn current(&self) -> u64 {
        self.read().current
    }

    /// Adds one, encodes the change once and wakes every subscriber. When this
    /// returns, every subscriber connected now will get the change (or be cut off as
    /// lagged and told to reset): that is what "published" means.
    pub fn increment(&self) -> u64 {
        let value = {
            let mut ring = self.write();
            let value = ring.current + 1;
            let frame = value_frame(value, crate::unix_micros());
            if ring.frames.len() == ring.capacity {
                ring.frames.pop_front();
            }
            ring.frames.push_back(frame.clone());
            ring.current = value;
            ring.current_frame = frame;
            value
        };
        self.notify.notify_waiters();
        self.metrics.shared_published.increment(1);
        self.metrics.shared_value.set(value as f64);
        value
    }

    /// Where a subscriber whose last id is `last_event_id` starts: the current value
    /// (no id), a replay of what it missed, or a `reset` when that is gone or it is
    /// ahead of the counter.
    pub fn start(&self, last_event_id: Option<u64>) -> Start {
        let ring = self.read();
        let current = ring.current;
        let reset = |reason| Start {
            first: Some(reset_frame(current, reason)),
            cursor: current,
            replay: 0,
        };
        match last_event_id {
            None => Start {
                first: Some(ring.current_frame.clone()),
                cursor: current,
                replay: 0,
            },
            Some(k) if k > current => reset(ResetReason::Ahead),
            Some(k) if k + 1 < ring.oldest() => reset(ResetReason::HistoryExceeded),
            Some(k) => Start {
                first: None,
                cursor: k,
                replay: current - k,
            },
        }
    }

    fn next_after(&self, cursor: u64) -> Next {
        let ring = self.read();
        if cursor >= ring.current {
            Next::Nothing
        } else if cursor + 1 < ring.oldest() {
            Next::Lagged
        } else {
            let at = (cursor + 1 - ring.oldest()) as usize;
            Next::Frame(ring.frames[at].clone())
        }
    }

    // A panic while holding the lock cannot leave the ring half-changed (each change is
    // made in one step), so a poisoned lock is still safe to use.
    fn read(&self) -> std::sync::RwLockReadGuard<'_, Ring> {
        self.ring.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Ring> {
        self.ring.write().unwrap_or_else(|e| e.into_inner())
    }
}

fn value_frame(value: u64, sent_at_us: u64) -> Bytes {
    frame::json(None, Some(value), &SharedValue { value, sent_at_us })
        .expect("a value has no event name to refuse")
}

fn reset_frame(value: u64, reason: ResetReason) -> Bytes {
    frame::json(Some(events::RESET), Some(value), &Reset { value, reason })
        .expect("`reset` is a valid event name")
}

/// One subscriber of the shared counter: a cursor into the [`Hub`]'s history.
pub struct Subscriber {
    hub: Arc<Hub>,
    /// The value this subscriber has: it gets the change after it next.
    cursor: u64,
    /// The frame [`StreamKind::poll_due`] found, sent by [`StreamKind::next_frame`].
    due: Option<(Bytes, u64)>,
    /// The last id sent, for `end` and the log.
    last_sent: u64,
    /// Registered before the history is read, so no change between the read and the
    /// wait is missed.
    notified: Option<Pin<Box<OwnedNotified>>>,
}

impl Subscriber {
    pub fn new(hub: Arc<Hub>, start: Start) -> Self {
        hub.metrics.shared_subscribers.increment(1.0);
        Subscriber {
            due: start.first.map(|f| (f, start.cursor)),
            cursor: start.cursor,
            last_sent: 0,
            hub,
            notified: None,
        }
    }
}

impl StreamKind for Subscriber {
    fn poll_due(&mut self, _now: Instant, cx: &mut Context<'_>) -> Due {
        if self.due.is_some() {
            return Due::Ready;
        }
        loop {
            let notified = self.notified.get_or_insert_with(|| {
                let mut n = Box::pin(self.hub.notify.notified_owned());
                n.as_mut().enable();
                n
            });
            match self.hub.next_after(self.cursor) {
                Next::Frame(frame) => {
                    self.due = Some((frame, self.cursor + 1));
                    return Due::Ready;
                }
                Next::Lagged => return Due::Abort(DisconnectReason::Lagged),
                Next::Nothing => {
                    if notified.as_mut().poll(cx).is_pending() {
                        return Due::Wait;
                    }
                    // A change came: wait anew after reading it.
                    self.notified = None;
                }
            }
        }
    }

    fn next_frame(&mut self, _now: Instant) -> Bytes {
        match self.due.take() {
            Some((frame, id)) => {
                self.cursor = id;
                self.last_sent = id;
                frame
            }
            // Only called after `poll_due` said Ready; a heartbeat is harmless if not.
            None => heartbeat_frame(),
        }
    }

    fn last_id(&self) -> u64 {
        self.last_sent
    }

    /// A named event the page can see, instead of a comment it cannot.
    fn keep_alive(&mut self) -> Option<Bytes> {
        Some(heartbeat_frame())
    }
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        self.hub.metrics.shared_subscribers.decrement(1.0);
    }
}

fn heartbeat_frame() -> Bytes {
    let beat = Heartbeat {
        at_us: crate::unix_micros(),
    };
    frame::json(Some(events::HEARTBEAT), None, &beat).expect("`heartbeat` is a valid event name")
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::task::noop_waker_ref;

    fn hub(history: usize) -> Arc<Hub> {
        Hub::new(history, Arc::new(Metrics::new()))
    }

    fn id_of(frame: &Bytes) -> u64 {
        let text = std::str::from_utf8(frame).unwrap();
        let line = text.lines().find(|l| l.starts_with("id: ")).unwrap();
        line["id: ".len()..].parse().unwrap()
    }

    /// Every frame the subscriber has now.
    fn drain(sub: &mut Subscriber) -> Result<Vec<Bytes>, Due> {
        let mut cx = Context::from_waker(noop_waker_ref());
        let mut out = Vec::new();
        loop {
            match sub.poll_due(Instant::now(), &mut cx) {
                Due::Ready => out.push(sub.next_frame(Instant::now())),
                Due::Wait => return Ok(out),
                other => return Err(other),
            }
        }
    }

    #[test]
    fn a_new_subscriber_gets_the_current_value_then_every_change() {
        let hub = hub(10);
        let mut sub = Subscriber::new(Arc::clone(&hub), hub.start(None));
        let first = drain(&mut sub).unwrap();
        assert_eq!(first.len(), 1);
        assert!(
            first[0].starts_with(b"id: 0\ndata: {\"value\":0,"),
            "{first:?}"
        );
        for _ in 0..3 {
            hub.increment();
        }
        let ids: Vec<u64> = drain(&mut sub).unwrap().iter().map(id_of).collect();
        assert_eq!(ids, [1, 2, 3]);
        assert_eq!(sub.last_id(), 3);
    }

    #[test]
    fn replay_reset_and_lag() {
        let hub = hub(3);
        for _ in 0..5 {
            hub.increment();
        }
        // History holds 3, 4, 5.
        let s = hub.start(Some(2));
        assert_eq!((s.first, s.cursor, s.replay), (None, 2, 3));
        let mut sub = Subscriber::new(Arc::clone(&hub), hub.start(Some(2)));
        let ids: Vec<u64> = drain(&mut sub).unwrap().iter().map(id_of).collect();
        assert_eq!(ids, [3, 4, 5]);
        assert_eq!(
            hub.start(Some(5)).replay,
            0,
            "up to date: nothing to replay"
        );
        for (k, reason) in [(1, "history_exceeded"), (9, "ahead")] {
            let s = hub.start(Some(k));
            let text = String::from_utf8(s.first.unwrap().to_vec()).unwrap();
            assert_eq!(
                text,
                format!("event: reset\nid: 5\ndata: {{\"value\":5,\"reason\":\"{reason}\"}}\n\n")
            );
            assert_eq!(s.cursor, 5);
        }
        // A subscriber at 5 that reads nothing while 4 more changes come is cut off.
        let mut slow = Subscriber::new(Arc::clone(&hub), hub.start(Some(5)));
        for _ in 0..4 {
            hub.increment();
        }
        assert_eq!(
            drain(&mut slow).unwrap_err(),
            Due::Abort(DisconnectReason::Lagged)
        );
    }

    #[test]
    fn every_subscriber_gets_the_same_bytes() {
        let hub = hub(10);
        let mut a = Subscriber::new(Arc::clone(&hub), hub.start(Some(0)));
        let mut b = Subscriber::new(Arc::clone(&hub), hub.start(Some(0)));
        hub.increment();
        let (fa, fb) = (drain(&mut a).unwrap(), drain(&mut b).unwrap());
        assert_eq!(fa, fb);
        assert_eq!(fa[0].as_ptr(), fb[0].as_ptr(), "encoded once, shared");
    }
}
