//! The shared live counter: one sequence of changes that every subscriber reads.
//!
//! [`Hub`] keeps the last `--history` changes, each encoded once as its SSE frame.
//! A [`Subscriber`] is a cursor into that history: it takes the next frame when its
//! connection can take one, so there is no per-subscriber queue that could grow. One
//! that falls further behind than the history is cut off (reason `lagged`) and gets
//! `reset` when it comes back. Publishing never waits for any subscriber.
//!
//! The hub is each instance's local copy. With the embedded store it is also the store
//! ([`Hub::increment`]); with Redis (`crate::store::redis`) one reader per instance
//! feeds it the changes every instance made, in order ([`Hub::accept`]), and replaces
//! it when it (re)connects ([`Hub::reseed`]). If the store lost its data, the copy's
//! *generation* goes up and every subscriber is told to `reset` (reason `ahead`).

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
    /// Goes up when the store lost its data: a subscriber of an older generation is
    /// sent `reset` (reason `ahead`) with the current value, then continues live.
    generation: u64,
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

    /// Makes `value` the current value. One that does not follow the current value
    /// leaves a gap the history cannot fill, so the history restarts at it: subscribers
    /// behind it are cut off as lagged, as if they had fallen out of the history.
    fn push(&mut self, value: u64, sent_at_us: u64) {
        let frame = value_frame(value, sent_at_us);
        if value != self.current + 1 {
            self.frames.clear();
        }
        if self.frames.len() == self.capacity {
            self.frames.pop_front();
        }
        self.frames.push_back(frame.clone());
        self.current = value;
        self.current_frame = frame;
    }

    fn start(&self, last_event_id: Option<u64>) -> Start {
        let current = self.current;
        let reset = |reason| Start {
            first: Some(reset_frame(current, reason)),
            cursor: current,
            replay: 0,
            generation: self.generation,
        };
        match last_event_id {
            None => Start {
                first: Some(self.current_frame.clone()),
                cursor: current,
                replay: 0,
                generation: self.generation,
            },
            Some(k) if k > current => reset(ResetReason::Ahead),
            Some(k) if k + 1 < self.oldest() => reset(ResetReason::HistoryExceeded),
            Some(k) => Start {
                first: None,
                cursor: k,
                replay: current - k,
                generation: self.generation,
            },
        }
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
    /// The hub's generation the subscriber starts in.
    pub generation: u64,
}

/// What a subscriber at `cursor` gets next.
enum Next {
    Frame(Bytes),
    /// The store lost its data: a `reset` to this value, in this generation.
    Reset(Bytes, u64, u64),
    Nothing,
    Lagged,
}

impl Hub {
    pub fn new(history: usize, metrics: Arc<Metrics>) -> Arc<Self> {
        let current_frame = value_frame(0, crate::unix_micros());
        Arc::new(Hub {
            ring: RwLock::new(Ring {
                current: 0,
                generation: 0,
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
    /// lagged and told to reset): that is what "published" means. This is the embedded
    /// store; with Redis the change comes back through [`Hub::accept`].
    pub fn increment(&self) -> u64 {
        let value = {
            let mut ring = self.write();
            let value = ring.current + 1;
            ring.push(value, crate::unix_micros());
            value
        };
        self.notify.notify_waiters();
        self.metrics.shared_published.increment(1);
        self.metrics.shared_value.set(value as f64);
        value
    }

    /// Takes the change to `value`, published at `sent_at_us` by whichever instance
    /// made it, as the store ordered it. A value at or below the current one is
    /// already here (read again after a reconnect) and is ignored; one past the next
    /// leaves a gap, which the history cannot fill (see `Ring::push`). Returns whether
    /// it was taken.
    pub fn accept(&self, value: u64, sent_at_us: u64) -> bool {
        {
            let mut ring = self.write();
            if value <= ring.current {
                return false;
            }
            ring.push(value, sent_at_us);
        }
        self.notify.notify_waiters();
        self.metrics.shared_value.set(value as f64);
        true
    }

    /// Replaces the history with the store's: `changes` are `(value, sent_at_us)` in
    /// ascending order, the last one the current value (none: the counter is 0). Only
    /// the run of consecutive values at the end is kept. With `lost`, the store lost
    /// data this copy had: the generation goes up, so every subscriber is sent `reset`
    /// (reason `ahead`) and continues from the new current value.
    pub fn reseed(&self, changes: &[(u64, u64)], lost: bool) {
        let value = {
            let mut ring = self.write();
            ring.frames.clear();
            let run = changes
                .windows(2)
                .rposition(|w| w[1].0 != w[0].0 + 1)
                .map_or(0, |at| at + 1);
            match changes.get(run) {
                Some(&(first, _)) => ring.current = first.saturating_sub(1),
                None => {
                    ring.current = 0;
                    ring.current_frame = value_frame(0, crate::unix_micros());
                }
            }
            for &(value, sent_at_us) in &changes[run..] {
                ring.push(value, sent_at_us);
            }
            if lost {
                ring.generation += 1;
            }
            ring.current
        };
        self.notify.notify_waiters();
        self.metrics.shared_value.set(value as f64);
    }

    /// Where a new subscriber whose last id is `last_event_id` starts: the current value
    /// (no id), a replay of what it missed, or a `reset` when that is gone or it is
    /// ahead of the counter.
    pub fn start(&self, last_event_id: Option<u64>) -> Start {
        self.read().start(last_event_id)
    }

    /// Like [`Hub::start`], for a subscriber whose last id `k` the store is known to
    /// hold although this copy has not caught up with it yet (it reconnected from
    /// another instance): instead of `reset`, it waits for the change after `k`.
    pub fn start_after(&self, k: u64) -> Start {
        let ring = self.read();
        if k <= ring.current {
            return ring.start(Some(k));
        }
        Start {
            first: None,
            cursor: k,
            replay: 0,
            generation: ring.generation,
        }
    }

    fn next_after(&self, cursor: u64, generation: u64) -> Next {
        let ring = self.read();
        if generation != ring.generation {
            let current = ring.current;
            Next::Reset(
                reset_frame(current, ResetReason::Ahead),
                current,
                ring.generation,
            )
        } else if cursor >= ring.current {
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
    /// The hub's generation this subscriber's values belong to.
    generation: u64,
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
            generation: start.generation,
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
            match self.hub.next_after(self.cursor, self.generation) {
                Next::Frame(frame) => {
                    self.due = Some((frame, self.cursor + 1));
                    return Due::Ready;
                }
                Next::Reset(frame, value, generation) => {
                    self.generation = generation;
                    self.due = Some((frame, value));
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

    fn ids(sub: &mut Subscriber) -> Vec<u64> {
        drain(sub).unwrap().iter().map(id_of).collect()
    }

    #[test]
    fn changes_from_the_store_are_taken_in_order_and_a_gap_cuts_off_those_behind() {
        let hub = hub(10);
        let mut live = Subscriber::new(Arc::clone(&hub), hub.start(None));
        assert_eq!(ids(&mut live), [0]);
        assert!(hub.accept(1, 11));
        assert!(hub.accept(2, 12));
        assert!(!hub.accept(2, 12), "a change read twice is taken once");
        assert!(!hub.accept(1, 11));
        let frames = drain(&mut live).unwrap();
        assert_eq!(frames.iter().map(id_of).collect::<Vec<_>>(), [1, 2]);
        assert!(
            frames[1].ends_with(b"{\"value\":2,\"sent_at_us\":12}\n\n"),
            "the publisher's time is kept: {frames:?}"
        );
        // 3 and 4 never came (the log was trimmed past them while this copy was away).
        let mut behind = Subscriber::new(Arc::clone(&hub), hub.start(Some(1)));
        assert!(hub.accept(5, 15));
        assert_eq!(
            drain(&mut live).unwrap_err(),
            Due::Abort(DisconnectReason::Lagged),
            "a subscriber at 2 cannot get 3: cut off, not silently skipped"
        );
        assert_eq!(
            drain(&mut behind).unwrap_err(),
            Due::Abort(DisconnectReason::Lagged)
        );
        let s = hub.start(Some(2));
        assert_eq!(s.cursor, 5, "a reset to the current value");
        assert!(s.first.is_some());
        assert_eq!(
            hub.start(Some(4)).replay,
            1,
            "4 is the one before the history"
        );
    }

    #[test]
    fn a_store_that_lost_its_data_resets_every_subscriber_then_they_go_on() {
        let hub = hub(10);
        hub.reseed(&[(7, 70), (8, 80), (9, 90)], false);
        assert_eq!(hub.current(), 9);
        let mut a = Subscriber::new(Arc::clone(&hub), hub.start(Some(6)));
        assert_eq!(ids(&mut a), [7, 8, 9], "a seeded copy replays at once");
        let mut b = Subscriber::new(Arc::clone(&hub), hub.start(None));
        assert_eq!(ids(&mut b), [9]);
        // Not a loss: a reseed that only catches up sends no reset.
        hub.reseed(&[(9, 90), (10, 100)], false);
        assert_eq!(ids(&mut a), [10]);
        // Lost: the store starts again from 2.
        hub.reseed(&[(1, 1), (2, 2)], true);
        for sub in [&mut a, &mut b] {
            let frames = drain(sub).unwrap();
            let text = String::from_utf8(frames[0].to_vec()).unwrap();
            assert_eq!(
                text,
                "event: reset\nid: 2\ndata: {\"value\":2,\"reason\":\"ahead\"}\n\n"
            );
            assert_eq!(frames.len(), 1, "then nothing until the next change");
        }
        hub.accept(3, 3);
        assert_eq!(ids(&mut a), [3]);
        assert_eq!(ids(&mut b), [3]);
        // An empty store: the counter is 0.
        hub.reseed(&[], true);
        assert_eq!(hub.current(), 0);
        assert_eq!(ids(&mut a), [0]);
        // A reseed keeps only the consecutive run at the end.
        hub.reseed(&[(1, 1), (4, 4), (5, 5)], false);
        assert_eq!(hub.start(Some(3)).replay, 2);
        assert!(hub.start(Some(2)).first.is_some(), "before the run: reset");
    }

    #[test]
    fn a_client_ahead_of_this_copy_but_not_of_the_store_waits_for_it() {
        let hub = hub(10);
        hub.accept(1, 1);
        let mut sub = Subscriber::new(Arc::clone(&hub), hub.start_after(3));
        assert_eq!(
            ids(&mut sub),
            Vec::<u64>::new(),
            "nothing yet, and no reset"
        );
        hub.accept(2, 2);
        hub.accept(3, 3);
        assert_eq!(ids(&mut sub), Vec::<u64>::new(), "3 it has already");
        hub.accept(4, 4);
        assert_eq!(ids(&mut sub), [4]);
        // Caught up already: an ordinary replay.
        assert_eq!(hub.start_after(2).replay, 2);
    }
}
