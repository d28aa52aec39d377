//! A stream of `/api/events`: the events of the listed channels, in the store's order.
//!
//! A [`ChannelSubscriber`] is a cursor (a seq) into the [`Hub`]'s one history, with the
//! listed channels: it takes the next event of any of them when its connection can take
//! one, and is registered with their signals only, so it is woken by its own channels'
//! events and no others. Nothing is queued per subscriber; one that falls out of the
//! history is cut off (`lagged`). What a listed channel costs a subscriber is its
//! topic's `Arc`, its [`Key`] in the topic's signal and that signal's slot for it: the
//! one [`Waiter`] is shared by all of them.
// Bench: `cargo xtask bench --only channels`, memory per stream of 32 channels.

use crate::metrics::DisconnectReason;
use crate::sse::{frame, Due, Key, StreamKind, Waiter};
use crate::streams::hub::{Hub, Next, Start, Topic};
use crate::streams::shared::heartbeat_frame;
use bytes::Bytes;
use shared::channels::{ChannelEnd, EventId};
use shared::{events, EndReason};
use std::sync::Arc;
use std::task::Context;
use tokio::time::Instant;

/// One stream of `/api/events`.
pub struct ChannelSubscriber {
    hub: Arc<Hub>,
    /// The listed channels, as the hub shares them.
    topics: Box<[Arc<Topic>]>,
    /// Per channel: the losses before this seq were told by a `reset`; empty when none
    /// were (most streams: a channel costs no floor then).
    floors: Vec<u64>,
    cursor: u64,
    generation: u64,
    /// The frame [`StreamKind::poll_due`] found, and the seq it moves the cursor to.
    due: Option<(Bytes, u64)>,
    /// The seq of the last event sent (0: none).
    last_sent: u64,
    /// Woken by every listed channel's signal.
    waiter: Arc<Waiter>,
    /// Its place in each topic's signal, registered before the history is first read.
    keys: Box<[Key]>,
}

impl ChannelSubscriber {
    /// Subscribes to `names` (joined to the hub until dropped) from `start`.
    pub fn new<N: AsRef<str>>(hub: Arc<Hub>, names: &[N], start: Start) -> Self {
        let topics = hub.join(names);
        hub.metrics()
            .channel_subscriptions
            .increment(topics.len() as f64);
        let mut floors = start.floors;
        if floors.iter().all(|&f| f == 0) {
            floors = Vec::new();
        }
        // On the runtime of the stream's connection (the route runs there).
        let waiter = Arc::new(Waiter::new());
        let keys = topics.iter().map(|t| t.signal.register(&waiter)).collect();
        ChannelSubscriber {
            due: start.first.map(|f| (f, start.cursor)),
            cursor: start.cursor,
            floors,
            generation: start.generation,
            last_sent: 0,
            waiter,
            keys,
            topics,
            hub,
        }
    }

    /// The id of the last event sent, for `end`.
    fn last_text(&self) -> Option<String> {
        (self.last_sent > 0).then(|| {
            EventId {
                epoch: self.hub.position().0,
                seq: self.last_sent,
            }
            .to_string()
        })
    }
}

impl StreamKind for ChannelSubscriber {
    fn poll_due(&mut self, _now: Instant, cx: &mut Context<'_>) -> Due {
        if self.due.is_some() {
            return Due::Ready;
        }
        // Before the history is read: an event after the read wakes this task.
        self.waiter.register(cx.waker());
        match self
            .hub
            .next(&self.topics, &self.floors, self.cursor, self.generation)
        {
            Next::Event { seq, frame, .. } => {
                self.due = Some((frame, seq));
                Due::Ready
            }
            Next::Reset {
                frame,
                cursor,
                generation,
                ..
            } => {
                self.generation = generation;
                self.floors = Vec::new();
                self.due = Some((frame, cursor));
                Due::Ready
            }
            Next::Lagged => Due::Abort(DisconnectReason::Lagged),
            Next::Nothing => Due::Wait,
        }
    }

    fn next_frame(&mut self, _now: Instant) -> Bytes {
        match self.due.take() {
            Some((frame, seq)) => {
                self.cursor = seq;
                self.last_sent = seq;
                frame
            }
            None => heartbeat_frame(),
        }
    }

    fn last_id(&self) -> u64 {
        self.last_sent
    }

    fn keep_alive(&mut self) -> Option<Bytes> {
        Some(heartbeat_frame())
    }

    fn end_frame(&self, reason: EndReason) -> Option<Bytes> {
        let end = ChannelEnd {
            reason,
            last: self.last_text(),
        };
        Some(frame::json(Some(events::END), None, &end).expect("`end` is a valid event name"))
    }
}

impl Drop for ChannelSubscriber {
    fn drop(&mut self) {
        for (topic, &key) in self.topics.iter().zip(self.keys.iter()) {
            topic.signal.unregister(&self.waiter, key);
        }
        self.hub.leave(&self.topics);
        self.hub
            .metrics()
            .channel_subscriptions
            .decrement(self.topics.len() as f64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::Metrics;
    use serde_json::value::RawValue;
    use shared::channels::Resume;
    use std::sync::atomic::{AtomicBool, Ordering};

    struct Flag(AtomicBool);

    impl futures_util::task::ArcWake for Flag {
        fn wake_by_ref(this: &Arc<Self>) {
            this.0.store(true, Ordering::Release);
        }
    }

    /// Everything due, polled with a waker that sets `flag` (cleared first).
    fn drain(sub: &mut ChannelSubscriber, flag: &Arc<Flag>) -> Result<Vec<Bytes>, Due> {
        flag.0.store(false, Ordering::Release);
        let waker = futures_util::task::waker(Arc::clone(flag));
        let mut cx = Context::from_waker(&waker);
        let mut out = Vec::new();
        loop {
            match sub.poll_due(Instant::now(), &mut cx) {
                Due::Ready => out.push(sub.next_frame(Instant::now())),
                Due::Wait => return Ok(out),
                other => return Err(other),
            }
        }
    }

    fn woken(flag: &Flag) -> bool {
        flag.0.load(Ordering::Acquire)
    }

    #[tokio::test]
    async fn a_subscriber_is_woken_by_its_own_channels_only() {
        let hub = Hub::new(100, usize::MAX, Arc::new(Metrics::new()));
        let names: Vec<Arc<str>> = vec![Arc::from("a"), Arc::from("b")];
        let start = hub.start(&names, &Resume::Live);
        let mut sub = ChannelSubscriber::new(Arc::clone(&hub), &names, start);
        let flag = Arc::new(Flag(AtomicBool::new(false)));
        assert!(drain(&mut sub, &flag).unwrap().is_empty());
        let one = RawValue::from_string("1".into()).unwrap();
        hub.publish("c", None, &one, None);
        assert!(!woken(&flag), "another channel's event wakes nobody here");
        hub.publish("b", Some("m"), &one, Some("ann"));
        assert!(woken(&flag), "its own channel's event wakes it");
        let frames = drain(&mut sub, &flag).unwrap();
        assert_eq!(frames.len(), 1);
        let text = std::str::from_utf8(&frames[0]).unwrap();
        assert!(
            text.contains("\nevent: m\n") || text.starts_with("event: m\n"),
            "{text}"
        );
        assert!(text.contains("\"from\":\"ann\""), "{text}");
        hub.publish("a", None, &one, None);
        assert!(
            woken(&flag),
            "and so does its other channel's, waiting anew"
        );
        assert_eq!(drain(&mut sub, &flag).unwrap().len(), 1);
        let end = sub.end_frame(EndReason::Shutdown).unwrap();
        let (epoch, _) = hub.position();
        assert_eq!(
            std::str::from_utf8(&end).unwrap(),
            format!("event: end\ndata: {{\"reason\":\"shutdown\",\"last\":\"{epoch}-3\"}}\n\n")
        );
        // Once dropped, it is no longer registered with its channels' signals.
        let waiter = Arc::clone(&sub.waiter);
        drop(sub);
        let after = Arc::new(Flag(AtomicBool::new(false)));
        waiter.register(&futures_util::task::waker(Arc::clone(&after)));
        hub.publish("b", None, &one, None);
        assert!(!woken(&after), "a dropped subscriber's waiter is not woken");
    }
}
