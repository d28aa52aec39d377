//! The shared live counter's stream, `/api/shared`: the channel `counter` of the
//! [`Hub`], sent as values (`id: <value>`) with the current value first.
//!
//! A [`Subscriber`] is a cursor into the hub's one history: it takes the next change
//! when its connection can take one, so there is no per-subscriber queue that could
//! grow. One that falls further behind than the history is cut off (reason `lagged`)
//! and gets `reset` when it comes back. Publishing never waits for any subscriber. If
//! the store lost its data, every subscriber is told to `reset` (reason `ahead`).

use crate::metrics::DisconnectReason;
use crate::sse::{frame, Due, Key, StreamKind, Waiter};
use crate::streams::hub::{CounterStart, Hub, Next, Topic};
use bytes::Bytes;
use shared::{events, Heartbeat};
use std::sync::Arc;
use std::task::Context;
use tokio::time::Instant;

/// One subscriber of the shared counter: a cursor into the [`Hub`]'s history.
pub struct Subscriber {
    hub: Arc<Hub>,
    /// The channel `counter`, whose signal wakes it.
    topic: Arc<Topic>,
    /// The seq it has read to.
    cursor: u64,
    /// The value it has: it gets the change after it next.
    value: u64,
    /// The hub's generation its values belong to.
    generation: u64,
    /// The frame [`StreamKind::poll_due`] found, with its seq and value.
    due: Option<(Bytes, u64, u64)>,
    /// The last id sent, for `end` and the log.
    last_sent: u64,
    /// Woken by the counter's signal; registered before the history is read, so no
    /// change between the read and the wait is missed.
    waiter: Arc<Waiter>,
    /// Its place in the signal.
    key: Key,
}

impl Subscriber {
    pub fn new(hub: Arc<Hub>, start: CounterStart) -> Self {
        hub.metrics().shared_subscribers.increment(1.0);
        let topic = hub.counter_topic();
        // On the runtime of the stream's connection (the route runs there).
        let waiter = Arc::new(Waiter::new());
        let key = topic.signal.register(&waiter);
        Subscriber {
            topic,
            due: start.first.map(|f| (f, start.cursor, start.value)),
            cursor: start.cursor,
            value: start.value,
            generation: start.generation,
            last_sent: 0,
            hub,
            waiter,
            key,
        }
    }
}

impl StreamKind for Subscriber {
    fn poll_due(&mut self, _now: Instant, cx: &mut Context<'_>) -> Due {
        if self.due.is_some() {
            return Due::Ready;
        }
        self.waiter.register(cx.waker());
        match self
            .hub
            .counter_next(self.cursor, self.value, self.generation)
        {
            Next::Event { seq, frame, value } => {
                self.due = Some((frame, seq, value));
                Due::Ready
            }
            Next::Reset {
                frame,
                cursor,
                value,
                generation,
            } => {
                self.generation = generation;
                self.due = Some((frame, cursor, value));
                Due::Ready
            }
            Next::Lagged => Due::Abort(DisconnectReason::Lagged),
            Next::Nothing => Due::Wait,
        }
    }

    fn next_frame(&mut self, _now: Instant) -> Bytes {
        match self.due.take() {
            Some((frame, seq, value)) => {
                self.cursor = seq;
                self.value = value;
                self.last_sent = value;
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
        self.topic.signal.unregister(&self.waiter, self.key);
        self.hub.metrics().shared_subscribers.decrement(1.0);
    }
}

/// The `heartbeat` event every subscribed stream sends while idle.
pub fn heartbeat_frame() -> Bytes {
    let beat = Heartbeat {
        at_us: crate::unix_micros(),
    };
    frame::json(Some(events::HEARTBEAT), None, &beat).expect("`heartbeat` is a valid event name")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::Metrics;
    use crate::streams::hub::counter_event;
    use futures_util::task::noop_waker_ref;

    fn hub(history: usize) -> Arc<Hub> {
        Hub::new(history, usize::MAX, Arc::new(Metrics::new()))
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

    fn ids(sub: &mut Subscriber) -> Vec<u64> {
        drain(sub).unwrap().iter().map(id_of).collect()
    }

    #[test]
    fn a_new_subscriber_gets_the_current_value_then_every_change() {
        let hub = hub(10);
        let mut sub = Subscriber::new(Arc::clone(&hub), hub.counter_start(None));
        let first = drain(&mut sub).unwrap();
        assert_eq!(first.len(), 1);
        assert!(
            first[0].starts_with(b"id: 0\ndata: {\"value\":0,"),
            "{first:?}"
        );
        for _ in 0..3 {
            hub.increment();
        }
        hub.publish(
            "other",
            None,
            &serde_json::value::RawValue::from_string("1".into()).unwrap(),
            None,
        );
        assert_eq!(ids(&mut sub), [1, 2, 3]);
        assert_eq!(sub.last_id(), 3);
    }

    #[test]
    fn replay_reset_and_lag() {
        let hub = hub(3);
        for _ in 0..5 {
            hub.increment();
        }
        let mut sub = Subscriber::new(Arc::clone(&hub), hub.counter_start(Some(2)));
        assert_eq!(ids(&mut sub), [3, 4, 5]);
        assert_eq!(
            hub.counter_start(Some(5)).replay,
            0,
            "up to date: nothing to replay"
        );
        for (k, reason) in [(1, "history_exceeded"), (9, "ahead")] {
            let s = hub.counter_start(Some(k));
            let text = String::from_utf8(s.first.unwrap().to_vec()).unwrap();
            assert_eq!(
                text,
                format!("event: reset\nid: 5\ndata: {{\"value\":5,\"reason\":\"{reason}\"}}\n\n")
            );
            assert_eq!(s.value, 5);
        }
        // A subscriber at 5 that reads nothing while 4 more changes come is cut off.
        let mut slow = Subscriber::new(Arc::clone(&hub), hub.counter_start(Some(5)));
        for _ in 0..4 {
            hub.increment();
        }
        assert_eq!(
            drain(&mut slow).unwrap_err(),
            Due::Abort(DisconnectReason::Lagged)
        );
    }

    #[test]
    fn changes_from_the_store_are_taken_in_order_and_a_gap_cuts_off_those_behind() {
        let hub = hub(10);
        let mut live = Subscriber::new(Arc::clone(&hub), hub.counter_start(None));
        assert_eq!(ids(&mut live), [0]);
        assert!(hub.accept(&counter_event(1, 1, 11)));
        assert!(hub.accept(&counter_event(2, 2, 12)));
        assert!(
            !hub.accept(&counter_event(2, 2, 12)),
            "an event read twice is taken once"
        );
        let frames = drain(&mut live).unwrap();
        assert_eq!(frames.iter().map(id_of).collect::<Vec<_>>(), [1, 2]);
        assert!(
            frames[1].ends_with(b"{\"value\":2,\"sent_at_us\":12}\n\n"),
            "the publisher's time is kept: {frames:?}"
        );
        // Seqs 3 and 4 never came (the log was trimmed past them while this copy was away).
        let mut behind = Subscriber::new(Arc::clone(&hub), hub.counter_start(Some(1)));
        assert!(hub.accept(&counter_event(5, 5, 15)));
        assert_eq!(
            drain(&mut live).unwrap_err(),
            Due::Abort(DisconnectReason::Lagged)
        );
        assert_eq!(
            drain(&mut behind).unwrap_err(),
            Due::Abort(DisconnectReason::Lagged)
        );
        let s = hub.counter_start(Some(2));
        assert_eq!(s.value, 5, "a reset to the current value");
        assert!(s.first.is_some());
    }

    #[test]
    fn a_store_that_lost_its_data_resets_every_subscriber_then_they_go_on() {
        let hub = hub(10);
        let seeded = [
            counter_event(7, 7, 70),
            counter_event(8, 8, 80),
            counter_event(9, 9, 90),
        ];
        hub.reseed("e1", &seeded, 9, false);
        assert_eq!(hub.current(), 9);
        let mut a = Subscriber::new(Arc::clone(&hub), hub.counter_start(Some(6)));
        assert_eq!(ids(&mut a), [7, 8, 9], "a seeded copy replays at once");
        let mut b = Subscriber::new(Arc::clone(&hub), hub.counter_start(None));
        assert_eq!(ids(&mut b), [9]);
        assert!(hub.accept(&counter_event(10, 10, 100)));
        assert_eq!(ids(&mut a), [10]);
        // Lost: the store starts again from 2.
        hub.reseed(
            "e2",
            &[counter_event(1, 1, 1), counter_event(2, 2, 2)],
            2,
            true,
        );
        for sub in [&mut a, &mut b] {
            let frames = drain(sub).unwrap();
            let text = String::from_utf8(frames[0].to_vec()).unwrap();
            assert_eq!(
                text,
                "event: reset\nid: 2\ndata: {\"value\":2,\"reason\":\"ahead\"}\n\n"
            );
            assert_eq!(frames.len(), 1, "then nothing until the next change");
        }
        hub.accept(&counter_event(3, 3, 3));
        assert_eq!(ids(&mut a), [3]);
        assert_eq!(ids(&mut b), [3]);
        // An empty store: the counter is 0.
        hub.reseed("e3", &[], 0, true);
        assert_eq!(hub.current(), 0);
        assert_eq!(ids(&mut a), [0]);
    }

    #[test]
    fn a_client_ahead_of_this_copy_but_not_of_the_store_waits_for_it() {
        let hub = hub(10);
        hub.accept(&counter_event(1, 1, 1));
        let mut sub = Subscriber::new(Arc::clone(&hub), hub.counter_start_after(3));
        assert_eq!(
            ids(&mut sub),
            Vec::<u64>::new(),
            "nothing yet, and no reset"
        );
        hub.accept(&counter_event(2, 2, 2));
        hub.accept(&counter_event(3, 3, 3));
        assert_eq!(ids(&mut sub), Vec::<u64>::new(), "3 it has already");
        hub.accept(&counter_event(4, 4, 4));
        assert_eq!(ids(&mut sub), [4]);
        assert_eq!(hub.counter_start_after(2).replay, 2);
    }
}
