//! The one history and fan-out of every channel, the shared counter's included.
//!
//! Every event the server delivers has a place in one order, its *seq* (1, 2, ...),
//! given by the store: the embedded store is this hub ([`Hub::publish`],
//! [`Hub::increment`]); with Redis one reader per instance feeds the hub the events of
//! every instance in the store's order ([`Hub::accept`]) and replaces its history when
//! it (re)connects ([`Hub::reseed`]). An event's id on `/api/events` is
//! `<epoch>-<seq>`; the epoch names the store's data, so an id from data that was lost
//! is always recognised.
//!
//! The history is the last `--history` events across all channels, within
//! `--history-bytes`, oldest out first. Each event is encoded once when it arrives (the
//! counter's changes twice: as a channel event and as `/api/shared`'s value), and
//! every subscriber sends the same `Bytes`. Per channel the hub keeps the seqs of its
//! events in the history and one [`Signal`], so a subscriber is woken only by its own
//! channels, and finds its next event with a binary search per channel. A channel with
//! no subscribers holds nothing but its events: when the last one leaves the history
//! the channel is forgotten, and what it lost is remembered in a fixed table of
//! buckets (so a late resume on it is still told `history_exceeded`, never given a
//! silent gap; a bucket shared with another channel can only make that conservative).

use crate::metrics::Metrics;
use crate::sse::{frame, Signal};
use bytes::Bytes;
use serde_json::value::RawValue;
use shared::channels::{self, ChannelEvent, ChannelReset, CounterData, EventId, Resume};
use shared::{events, Reset, ResetReason};
use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasher as _, RandomState};
use std::ops::Deref;
use std::sync::{Arc, RwLock};

/// Buckets of the lost-events table of forgotten channels.
const BUCKETS: usize = 4096;
/// What one event costs the history besides its frames (entry, index, name share).
const ENTRY_OVERHEAD: usize = 64;

/// One event as the store ordered it, before it is encoded.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Stored {
    pub seq: u64,
    pub channel: String,
    /// The SSE `event:` field, when the publisher gave one.
    pub ty: Option<String>,
    /// The published JSON value, as text (valid JSON: checked before it was stored).
    pub data: String,
    /// The publisher's `sub`, for events published with a token.
    pub from: Option<String>,
    pub sent_at_us: u64,
    /// For the counter: its value after this change.
    pub value: Option<u64>,
}

struct Entry {
    seq: u64,
    channel: Arc<str>,
    /// The `/api/events` frame.
    frame: Bytes,
    /// For the counter: the value and its `/api/shared` frame.
    counter: Option<(u64, Bytes)>,
    size: usize,
}

/// A channel as its subscribers hold it: its name and the signal of its events.
pub struct Topic {
    pub name: Arc<str>,
    pub signal: Signal,
}

impl Topic {
    fn new(name: Arc<str>) -> Arc<Topic> {
        Arc::new(Topic {
            name,
            signal: Signal::new(),
        })
    }
}

impl AsRef<str> for Topic {
    fn as_ref(&self) -> &str {
        &self.name
    }
}

struct Channel {
    name: Arc<str>,
    /// The seqs of this channel's events in the history, ascending.
    seqs: VecDeque<u64>,
    /// The newest seq of this channel that left the history (0: none).
    evicted: u64,
    /// Its signal is woken on each of its events.
    topic: Arc<Topic>,
    /// Streams subscribed now.
    subscribers: usize,
}

struct Inner {
    epoch: String,
    /// Goes up when the store lost data this copy had.
    generation: u64,
    /// The newest seq (0: none yet).
    latest: u64,
    /// The events `latest + 1 - ring.len() ..= latest`.
    ring: VecDeque<Entry>,
    bytes: usize,
    capacity: usize,
    max_bytes: usize,
    channels: HashMap<Arc<str>, Channel>,
    /// The newest evicted seq of the forgotten channels hashed to each bucket.
    buckets: Box<[u64]>,
    hasher: RandomState,
    /// The counter now, and the frame of that value (sent first on `/api/shared`,
    /// kept even when its event left the history).
    value: u64,
    value_frame: Bytes,
}

/// Where a new subscriber of `/api/events` starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Start {
    /// A `reset` to send first, if any.
    pub first: Option<Bytes>,
    /// The seq the subscriber has: it continues after it.
    pub cursor: u64,
    /// Per listed channel: losses before this seq were reported by the reset (empty
    /// without one: all zero).
    pub floors: Vec<u64>,
    /// Events after `cursor` on the listed channels now in the history (for the log).
    pub replay: u64,
    pub generation: u64,
}

/// Where a new subscriber of `/api/shared` starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CounterStart {
    /// The first frame (the current value, or a `reset`), if any.
    pub first: Option<Bytes>,
    /// The seq it continues after.
    pub cursor: u64,
    /// The value it has after `first`; changes up to it are skipped.
    pub value: u64,
    /// Changes replayed from the history (for the log).
    pub replay: u64,
    pub generation: u64,
}

/// What a subscriber gets next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Next {
    /// The frame of the event `seq` (`value` for the counter).
    Event {
        seq: u64,
        frame: Bytes,
        value: u64,
    },
    /// The store lost data: the frame of the reset, and where to go on from.
    Reset {
        frame: Bytes,
        cursor: u64,
        value: u64,
        generation: u64,
    },
    Nothing,
    /// An event after the cursor left the history before it was sent.
    Lagged,
}

/// The history and subscribers of every channel; see the module docs.
pub struct Hub {
    inner: RwLock<Inner>,
    metrics: Arc<Metrics>,
    /// The counter's topic, which never goes (the channel is always known).
    counter: Arc<Topic>,
}

impl Hub {
    /// An empty hub of at most `history` events and `max_bytes`, under a new random
    /// epoch (the embedded store's data lives as long as the process).
    pub fn new(history: usize, max_bytes: usize, metrics: Arc<Metrics>) -> Arc<Hub> {
        let name: Arc<str> = Arc::from(channels::COUNTER);
        let counter = Topic::new(Arc::clone(&name));
        let mut map = HashMap::new();
        map.insert(
            Arc::clone(&name),
            Channel {
                name,
                seqs: VecDeque::new(),
                evicted: 0,
                topic: Arc::clone(&counter),
                subscribers: 0,
            },
        );
        Arc::new(Hub {
            inner: RwLock::new(Inner {
                epoch: new_epoch(),
                generation: 0,
                latest: 0,
                ring: VecDeque::new(),
                bytes: 0,
                capacity: history.max(1),
                max_bytes: max_bytes.max(1),
                channels: map,
                buckets: vec![0; BUCKETS].into_boxed_slice(),
                hasher: RandomState::new(),
                value: 0,
                value_frame: value_frame(0, crate::unix_micros()),
            }),
            metrics,
            counter,
        })
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// The counter's current value.
    pub fn current(&self) -> u64 {
        self.read().value
    }

    /// The newest seq and the epoch.
    pub fn position(&self) -> (String, u64) {
        let inner = self.read();
        (inner.epoch.clone(), inner.latest)
    }

    /// Publishes `data` on `channel` (the embedded store): when this returns, every
    /// subscriber of `channel` connected now will get it with the id returned (or be
    /// cut off as lagged). The caller validated the channel, type and JSON.
    pub fn publish(
        &self,
        channel: &str,
        ty: Option<&str>,
        data: &RawValue,
        from: Option<&str>,
    ) -> EventId {
        let mut inner = self.write();
        let seq = inner.latest + 1;
        let stored = Stored {
            seq,
            channel: channel.to_owned(),
            ty: ty.map(str::to_owned),
            data: data.get().to_owned(),
            from: from.map(str::to_owned),
            sent_at_us: crate::unix_micros(),
            value: None,
        };
        let topic = inner.push(&stored);
        let id = EventId {
            epoch: inner.epoch.clone(),
            seq,
        };
        self.gauges(&inner);
        drop(inner);
        topic.signal.notify_waiters();
        id
    }

    /// Adds one to the counter (the embedded store): the new value, once every
    /// subscriber of the counter connected now will get it.
    pub fn increment(&self) -> u64 {
        let mut inner = self.write();
        let value = inner.value + 1;
        let stored = counter_event(inner.latest + 1, value, crate::unix_micros());
        inner.push(&stored);
        self.gauges(&inner);
        drop(inner);
        self.counter.signal.notify_waiters();
        self.metrics.shared_published.increment(1);
        self.metrics.shared_value.set(value as f64);
        value
    }

    /// Takes `event` from the store, in the store's order. One at or before the newest
    /// is here already (read again after a reconnect) and is ignored; one past the
    /// next leaves a gap the history cannot fill, so the history restarts at it and
    /// subscribers behind are cut off as lagged. Returns whether it was taken.
    pub fn accept(&self, event: &Stored) -> bool {
        let mut inner = self.write();
        if event.seq <= inner.latest {
            return false;
        }
        let topic = inner.push(event);
        let value = inner.value;
        self.gauges(&inner);
        drop(inner);
        topic.signal.notify_waiters();
        if event.value.is_some() {
            self.metrics.shared_value.set(value as f64);
        }
        true
    }

    /// Replaces the history with the store's `events` (ascending seqs) under `epoch`,
    /// with `value` the counter now. Only the run of consecutive seqs at the end is
    /// kept. With `lost`, the store lost data this copy had: the generation goes up
    /// and every subscriber is sent `reset` (reason `ahead`).
    pub fn reseed(&self, epoch: &str, events: &[Stored], value: u64, lost: bool) {
        let mut inner = self.write();
        inner.clear();
        if lost || inner.epoch != epoch {
            // Another data's seqs: what the old one lost says nothing of them.
            inner.buckets.iter_mut().for_each(|b| *b = 0);
            inner.channels.values_mut().for_each(|c| c.evicted = 0);
        }
        inner.epoch = epoch.to_owned();
        let run = events
            .windows(2)
            .rposition(|w| w[1].seq != w[0].seq + 1)
            .map_or(0, |at| at + 1);
        let tail = &events[run..];
        inner.latest = tail
            .first()
            .map_or(events.last().map_or(0, |e| e.seq), |e| e.seq - 1);
        // The counter's run starts afresh: its value before the first change kept.
        let first_value = tail.iter().find_map(|e| e.value);
        inner.value = first_value.map_or(value, |v| v.saturating_sub(1));
        inner.value_frame = value_frame(inner.value, crate::unix_micros());
        for event in tail {
            inner.push(event);
        }
        inner.value = inner.value.max(value);
        if lost {
            inner.generation += 1;
        }
        let topics: Vec<Arc<Topic>> = inner
            .channels
            .values()
            .map(|c| Arc::clone(&c.topic))
            .collect();
        let value = inner.value;
        self.gauges(&inner);
        drop(inner);
        for topic in topics {
            topic.signal.notify_waiters();
        }
        self.metrics.shared_value.set(value as f64);
    }

    /// Registers a subscriber of `channels` (each counted until [`Hub::leave`]), and
    /// returns the topic of each: its name (shared by every subscriber) and signal.
    pub fn join<N: AsRef<str>>(&self, names: &[N]) -> Box<[Arc<Topic>]> {
        let mut inner = self.write();
        names
            .iter()
            .map(|name| {
                let channel = inner.channel_mut(name.as_ref());
                channel.subscribers += 1;
                Arc::clone(&channel.topic)
            })
            .collect()
    }

    /// Unregisters a subscriber of `channels`; a channel left with no subscribers and
    /// no events is forgotten.
    pub fn leave<N: Deref<Target: AsRef<str>>>(&self, names: &[N]) {
        let mut inner = self.write();
        for name in names {
            let name: &str = (**name).as_ref();
            if let Some(channel) = inner.channels.get_mut(name) {
                channel.subscribers = channel.subscribers.saturating_sub(1);
                if channel.subscribers == 0 && channel.seqs.is_empty() {
                    inner.forget(name);
                }
            }
        }
    }

    /// The topic of the counter.
    pub fn counter_topic(&self) -> Arc<Topic> {
        Arc::clone(&self.counter)
    }

    /// Where a new subscriber of `names` starts from `resume` (see the module docs).
    pub fn start<N: AsRef<str>>(&self, names: &[N], resume: &Resume) -> Start {
        let inner = self.read();
        let all = || {
            names
                .iter()
                .map(|n| n.as_ref().to_owned())
                .collect::<Vec<_>>()
        };
        let oldest = inner.latest - inner.ring.len() as u64;
        let (cursor, reset) = match resume {
            Resume::Live => (inner.latest, None),
            Resume::Earliest => (oldest, None),
            Resume::After(id) if id.epoch != inner.epoch => {
                // Another epoch's id: everything this store holds is new to it.
                (oldest, Some((ResetReason::Ahead, all(), oldest)))
            }
            Resume::After(id) if id.seq > inner.latest => (
                inner.latest,
                Some((ResetReason::Ahead, all(), inner.latest)),
            ),
            Resume::After(id) => {
                let lost: Vec<String> = names
                    .iter()
                    .filter(|n| inner.evicted(n.as_ref()) > id.seq)
                    .map(|n| n.as_ref().to_owned())
                    .collect();
                let reset =
                    (!lost.is_empty()).then_some((ResetReason::HistoryExceeded, lost, id.seq));
                (id.seq, reset)
            }
        };
        // Without a reset every floor is zero: none are kept.
        let floors = match reset {
            Some(_) => names.iter().map(|n| inner.evicted(n.as_ref())).collect(),
            None => Vec::new(),
        };
        let first = reset.map(|(reason, channels, at)| {
            let id = EventId {
                epoch: inner.epoch.clone(),
                seq: at,
            }
            .to_string();
            frame::json_id(
                Some(events::RESET),
                Some(&id),
                &ChannelReset { reason, channels },
            )
            .expect("`reset` and an id of ours are valid fields")
        });
        let replay = names
            .iter()
            .filter_map(|n| inner.channels.get(n.as_ref()))
            .map(|c| (c.seqs.len() - c.seqs.partition_point(|&s| s <= cursor)) as u64)
            .sum();
        Start {
            first,
            cursor,
            floors,
            replay,
            generation: inner.generation,
        }
    }

    /// Like [`Hub::start`] after `seq`, for a client whose id the store is known to hold
    /// although this copy has not caught up with it yet: it waits for what follows.
    pub fn start_after<N: AsRef<str>>(&self, _names: &[N], seq: u64) -> Start {
        let inner = self.read();
        Start {
            first: None,
            cursor: seq,
            floors: Vec::new(),
            replay: 0,
            generation: inner.generation,
        }
    }

    /// The next event of `names` after `cursor` (see [`Next`]); `floors` per name, or
    /// empty for all zero.
    pub fn next<N: Deref<Target: AsRef<str>>>(
        &self,
        names: &[N],
        floors: &[u64],
        cursor: u64,
        generation: u64,
    ) -> Next {
        let inner = self.read();
        if generation != inner.generation {
            let oldest = inner.latest - inner.ring.len() as u64;
            let id = EventId {
                epoch: inner.epoch.clone(),
                seq: oldest,
            }
            .to_string();
            let reset = ChannelReset {
                reason: ResetReason::Ahead,
                channels: names.iter().map(|n| (**n).as_ref().to_owned()).collect(),
            };
            return Next::Reset {
                frame: frame::json_id(Some(events::RESET), Some(&id), &reset)
                    .expect("`reset` and an id of ours are valid fields"),
                cursor: oldest,
                value: inner.value,
                generation: inner.generation,
            };
        }
        let mut best: Option<u64> = None;
        for (i, name) in names.iter().enumerate() {
            let floor = floors.get(i).copied().unwrap_or(0);
            let Some(channel) = inner.channels.get((**name).as_ref()) else {
                continue;
            };
            if channel.evicted > cursor.max(floor) {
                return Next::Lagged;
            }
            let at = channel.seqs.partition_point(|&s| s <= cursor);
            if let Some(&seq) = channel.seqs.get(at) {
                best = Some(best.map_or(seq, |b| b.min(seq)));
            }
        }
        match best {
            None => Next::Nothing,
            Some(seq) => {
                let entry = inner.entry(seq);
                Next::Event {
                    seq,
                    frame: entry.frame.clone(),
                    value: entry.counter.as_ref().map_or(0, |c| c.0),
                }
            }
        }
    }

    /// Where a new subscriber of `/api/shared` whose last value is `last` starts: the
    /// current value (none), a replay, or a `reset` when that is gone or ahead.
    pub fn counter_start(&self, last: Option<u64>) -> CounterStart {
        let inner = self.read();
        let value = inner.value;
        let reset = |reason| CounterStart {
            first: Some(reset_frame(value, reason)),
            cursor: inner.latest,
            value,
            replay: 0,
            generation: inner.generation,
        };
        let Some(k) = last else {
            return CounterStart {
                first: Some(inner.value_frame.clone()),
                cursor: inner.latest,
                value,
                replay: 0,
                generation: inner.generation,
            };
        };
        if k > value {
            return reset(ResetReason::Ahead);
        }
        if k == value {
            return CounterStart {
                first: None,
                cursor: inner.latest,
                value,
                replay: 0,
                generation: inner.generation,
            };
        }
        // The change to k + 1 must still be here, and nothing of the counter after k
        // gone.
        let counter = &inner.channels[channels::COUNTER];
        let found = counter.seqs.iter().position(|&s| {
            inner
                .entry(s)
                .counter
                .as_ref()
                .is_some_and(|c| c.0 == k + 1)
        });
        match found {
            Some(at) if counter.evicted < counter.seqs[at] => CounterStart {
                first: None,
                cursor: counter.seqs[at] - 1,
                value: k,
                replay: value - k,
                generation: inner.generation,
            },
            _ => reset(ResetReason::HistoryExceeded),
        }
    }

    /// Like [`Hub::counter_start`] for a client whose value `k` the store holds although
    /// this copy has not reached it: it waits for the change after `k`.
    pub fn counter_start_after(&self, k: u64) -> CounterStart {
        let inner = self.read();
        if k <= inner.value {
            drop(inner);
            return self.counter_start(Some(k));
        }
        CounterStart {
            first: None,
            cursor: inner.latest,
            value: k,
            replay: 0,
            generation: inner.generation,
        }
    }

    /// The next change of the counter after `cursor` whose value is past `value`.
    pub fn counter_next(&self, cursor: u64, value: u64, generation: u64) -> Next {
        let inner = self.read();
        if generation != inner.generation {
            return Next::Reset {
                frame: reset_frame(inner.value, ResetReason::Ahead),
                cursor: inner.latest,
                value: inner.value,
                generation: inner.generation,
            };
        }
        let counter = &inner.channels[channels::COUNTER];
        if counter.evicted > cursor {
            return Next::Lagged;
        }
        let mut at = counter.seqs.partition_point(|&s| s <= cursor);
        while let Some(&seq) = counter.seqs.get(at) {
            let entry = inner.entry(seq);
            let (v, frame) = entry
                .counter
                .as_ref()
                .expect("the counter's events have values");
            if *v > value {
                if *v != value + 1 {
                    // A value this subscriber never got: the history restarted past it.
                    return Next::Lagged;
                }
                return Next::Event {
                    seq,
                    frame: frame.clone(),
                    value: *v,
                };
            }
            at += 1;
        }
        Next::Nothing
    }

    fn gauges(&self, inner: &Inner) {
        self.metrics.history_events.set(inner.ring.len() as f64);
        self.metrics.history_bytes.set(inner.bytes as f64);
    }

    // A panic while holding the lock cannot leave the history half-changed in a way
    // that breaks the next reader (each change keeps the ring and index in step), so a
    // poisoned lock is still safe to use.
    fn read(&self) -> std::sync::RwLockReadGuard<'_, Inner> {
        self.inner.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Inner> {
        self.inner.write().unwrap_or_else(|e| e.into_inner())
    }
}

impl Inner {
    fn bucket(&self, name: &str) -> usize {
        (self.hasher.hash_one(name) as usize) % BUCKETS
    }

    /// The newest seq of `name` that left the history.
    fn evicted(&self, name: &str) -> u64 {
        match self.channels.get(name) {
            Some(c) => c.evicted,
            None => self.buckets[self.bucket(name)],
        }
    }

    fn channel_mut(&mut self, name: &str) -> &mut Channel {
        if !self.channels.contains_key(name) {
            let evicted = self.buckets[self.bucket(name)];
            let name: Arc<str> = Arc::from(name);
            let topic = Topic::new(Arc::clone(&name));
            self.channels.insert(
                Arc::clone(&name),
                Channel {
                    name,
                    seqs: VecDeque::new(),
                    evicted,
                    topic,
                    subscribers: 0,
                },
            );
        }
        self.channels.get_mut(name).expect("inserted above")
    }

    /// Forgets a channel with no subscribers and no events, remembering what it lost.
    fn forget(&mut self, name: &str) {
        if name == channels::COUNTER {
            return;
        }
        if let Some(channel) = self.channels.remove(name) {
            let b = self.bucket(&channel.name);
            self.buckets[b] = self.buckets[b].max(channel.evicted);
        }
    }

    fn entry(&self, seq: u64) -> &Entry {
        let oldest = self.latest + 1 - self.ring.len() as u64;
        &self.ring[(seq - oldest) as usize]
    }

    /// Appends `event` (a seq past `latest`), evicting what no longer fits; returns the
    /// topic of its channel.
    fn push(&mut self, event: &Stored) -> Arc<Topic> {
        if event.seq != self.latest + 1 {
            self.clear();
        }
        let entry_counter = event.value.map(|v| {
            if v != self.value + 1 {
                // The counter's run restarts: nothing before it can be replayed.
                let counter = self
                    .channels
                    .get_mut(channels::COUNTER)
                    .expect("always known");
                if let Some(&last) = counter.seqs.back() {
                    counter.evicted = counter.evicted.max(last);
                }
                counter.seqs.clear();
            }
            let f = value_frame(v, event.sent_at_us);
            self.value = v;
            self.value_frame = f.clone();
            (v, f)
        });
        let frame = encode(&self.epoch, event);
        let channel = self.channel_mut(&event.channel);
        channel.seqs.push_back(event.seq);
        let topic = Arc::clone(&channel.topic);
        let name = Arc::clone(&channel.name);
        let size = frame.len() + entry_counter.as_ref().map_or(0, |c| c.1.len()) + ENTRY_OVERHEAD;
        self.ring.push_back(Entry {
            seq: event.seq,
            channel: name,
            frame,
            counter: entry_counter,
            size,
        });
        self.bytes += size;
        self.latest = event.seq;
        while self.ring.len() > 1
            && (self.ring.len() > self.capacity || self.bytes > self.max_bytes)
        {
            self.evict_oldest();
        }
        topic
    }

    fn evict_oldest(&mut self) {
        let Some(entry) = self.ring.pop_front() else {
            return;
        };
        self.bytes -= entry.size;
        let forget = match self.channels.get_mut(&entry.channel) {
            Some(channel) => {
                if channel.seqs.front() == Some(&entry.seq) {
                    channel.seqs.pop_front();
                }
                channel.evicted = channel.evicted.max(entry.seq);
                channel.subscribers == 0 && channel.seqs.is_empty()
            }
            None => false,
        };
        if forget {
            self.forget(&entry.channel);
        }
    }

    /// Empties the history: everything in it counts as lost for its channel.
    fn clear(&mut self) {
        while !self.ring.is_empty() {
            self.evict_oldest();
        }
    }
}

/// A random epoch: 16 lowercase hex digits.
pub fn new_epoch() -> String {
    format!("{:016x}", fastrand::u64(..))
}

/// The `/api/events` frame of `event`.
fn encode(epoch: &str, event: &Stored) -> Bytes {
    let id = EventId {
        epoch: epoch.to_owned(),
        seq: event.seq,
    }
    .to_string();
    let counter_data;
    let data: &RawValue = match event.value {
        Some(value) => {
            counter_data = serde_json::value::to_raw_value(&CounterData { value })
                .expect("a number serializes");
            &counter_data
        }
        None => match serde_json::from_str(&event.data) {
            Ok(raw) => raw,
            Err(_) => {
                // Only valid JSON is stored; a store that hands back something else
                // gets it delivered as a string rather than breaking the stream.
                tracing::warn!(
                    seq = event.seq,
                    "an event whose data is not JSON: sent as a string"
                );
                return encode_string(&id, event);
            }
        },
    };
    let payload = ChannelEvent {
        channel: event.channel.as_str().into(),
        data,
        from: event.from.as_deref().map(Into::into),
        sent_at_us: event.sent_at_us,
    };
    frame::json_id(event.ty.as_deref(), Some(&id), &payload)
        .unwrap_or_else(|_| encode_string(&id, event))
}

fn encode_string(id: &str, event: &Stored) -> Bytes {
    let text = serde_json::value::to_raw_value(&event.data).expect("a string serializes");
    let payload = ChannelEvent {
        channel: event.channel.as_str().into(),
        data: &text,
        from: event.from.as_deref().map(Into::into),
        sent_at_us: event.sent_at_us,
    };
    frame::json_id(None, Some(id), &payload).expect("plain fields")
}

/// The counter's change to `value` as a stored event.
pub fn counter_event(seq: u64, value: u64, sent_at_us: u64) -> Stored {
    Stored {
        seq,
        channel: channels::COUNTER.to_owned(),
        ty: None,
        data: String::new(),
        from: None,
        sent_at_us,
        value: Some(value),
    }
}

fn value_frame(value: u64, sent_at_us: u64) -> Bytes {
    frame::numbers(value, [("value", value), ("sent_at_us", sent_at_us)])
}

fn reset_frame(value: u64, reason: ResetReason) -> Bytes {
    frame::json(Some(events::RESET), Some(value), &Reset { value, reason })
        .expect("`reset` is a valid event name")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hub(history: usize) -> Arc<Hub> {
        Hub::new(history, usize::MAX, Arc::new(Metrics::new()))
    }

    fn raw(json: &str) -> Box<RawValue> {
        RawValue::from_string(json.to_owned()).unwrap()
    }

    fn names(list: &[&str]) -> Vec<Arc<str>> {
        list.iter().map(|n| Arc::from(*n)).collect()
    }

    /// Every event of `names` after `cursor`, as seqs.
    fn drain(hub: &Hub, names: &[Arc<str>], start: &Start) -> Result<Vec<u64>, Next> {
        let mut cursor = start.cursor;
        let mut out = Vec::new();
        loop {
            match hub.next(names, &start.floors, cursor, start.generation) {
                Next::Event { seq, .. } => {
                    out.push(seq);
                    cursor = seq;
                }
                Next::Nothing => return Ok(out),
                other => return Err(other),
            }
        }
    }

    #[test]
    fn a_subscriber_gets_its_channels_in_the_stores_order() {
        let hub = hub(100);
        let ab = names(&["a", "b"]);
        hub.join(&ab);
        let start = hub.start(&ab, &Resume::Live);
        for ch in ["a", "c", "b", "counter", "a"] {
            if ch == "counter" {
                hub.increment();
            } else {
                hub.publish(ch, None, &raw("1"), None);
            }
        }
        assert_eq!(drain(&hub, &ab, &start).unwrap(), [1, 3, 5]);
        let frame = match hub.next(&ab, &start.floors, 0, start.generation) {
            Next::Event { frame, .. } => frame,
            other => panic!("{other:?}"),
        };
        let (epoch, _) = hub.position();
        let want = format!("id: {epoch}-1\ndata: {{\"channel\":\"a\",\"data\":1,\"sent_at_us\":");
        assert!(frame.starts_with(want.as_bytes()), "{frame:?}");
        assert!(frame.ends_with(b"}\n\n"));
    }

    #[test]
    fn resume_replays_and_resets_name_only_the_channels_that_lost_events() {
        let hub = hub(4);
        let (epoch, _) = hub.position();
        for ch in ["a", "b", "a", "b", "b", "b"] {
            hub.publish(ch, None, &raw("0"), None);
        }
        // History holds 3 (a), 4, 5, 6 (b); 1 (a) and 2 (b) are gone.
        let ab = names(&["a", "b"]);
        let after = |seq| {
            Resume::After(EventId {
                epoch: epoch.clone(),
                seq,
            })
        };
        let s = hub.start(&ab, &after(2));
        assert!(s.first.is_none(), "nothing after 2 is lost");
        assert_eq!(drain(&hub, &ab, &s).unwrap(), [3, 4, 5, 6]);
        let s = hub.start(&ab, &after(1));
        let reset = String::from_utf8(s.first.clone().unwrap().to_vec()).unwrap();
        assert_eq!(
            reset,
            format!("event: reset\nid: {epoch}-1\ndata: {{\"reason\":\"history_exceeded\",\"channels\":[\"b\"]}}\n\n")
        );
        assert_eq!(
            drain(&hub, &ab, &s).unwrap(),
            [3, 4, 5, 6],
            "then what is left"
        );
        let only_a = names(&["a"]);
        let s = hub.start(&only_a, &after(1));
        assert!(s.first.is_none(), "a lost nothing after 1");
        assert_eq!(drain(&hub, &only_a, &s).unwrap(), [3]);
        // Another epoch, or ahead: ahead, naming every channel.
        let other = Resume::After(EventId {
            epoch: "zz".into(),
            seq: 3,
        });
        let s = hub.start(&ab, &other);
        assert!(String::from_utf8(s.first.clone().unwrap().to_vec())
            .unwrap()
            .contains("\"reason\":\"ahead\",\"channels\":[\"a\",\"b\"]"));
        assert_eq!(
            drain(&hub, &ab, &s).unwrap(),
            [3, 4, 5, 6],
            "all it holds is new"
        );
        let s = hub.start(&ab, &after(99));
        assert!(s.first.is_some());
        assert_eq!(drain(&hub, &ab, &s).unwrap(), Vec::<u64>::new());
        let s = hub.start(&ab, &Resume::Earliest);
        assert_eq!(drain(&hub, &ab, &s).unwrap(), [3, 4, 5, 6]);
    }

    #[test]
    fn a_reader_that_falls_out_of_the_history_is_lagged() {
        let hub = hub(2);
        let a = names(&["a"]);
        hub.join(&a);
        let s = hub.start(&a, &Resume::Live);
        for _ in 0..3 {
            hub.publish("a", None, &raw("0"), None);
        }
        assert_eq!(drain(&hub, &a, &s), Err(Next::Lagged));
        // Other channels' events pushing it out count too.
        let s = hub.start(&a, &Resume::Live);
        hub.publish("a", None, &raw("0"), None);
        hub.publish("b", None, &raw("0"), None);
        hub.publish("b", None, &raw("0"), None);
        assert_eq!(drain(&hub, &a, &s), Err(Next::Lagged));
    }

    #[test]
    fn memory_is_bounded_by_count_and_bytes_and_unknown_channels_are_forgotten() {
        let metrics = Arc::new(Metrics::new());
        let hub = Hub::new(1000, 4096, Arc::clone(&metrics));
        for i in 0..10_000 {
            hub.publish(&format!("c{i}"), None, &raw("\"xxxxxxxxxxxxxxxx\""), None);
        }
        let inner = hub.read();
        assert!(inner.bytes <= 4096, "{}", inner.bytes);
        assert!(
            inner.channels.len() <= inner.ring.len() + 1,
            "only channels with events"
        );
        // A forgotten channel's loss is still known.
        assert!(inner.evicted("c0") >= 1);
    }

    #[test]
    fn counter_on_both_routes() {
        let hub = hub(10);
        hub.publish("a", None, &raw("0"), None);
        assert_eq!(hub.increment(), 1);
        assert_eq!(hub.increment(), 2);
        let s = hub.counter_start(Some(0));
        assert_eq!((s.first.is_none(), s.value, s.replay), (true, 0, 2));
        let mut cursor = s.cursor;
        let mut value = s.value;
        let mut got = vec![];
        while let Next::Event {
            seq,
            value: v,
            frame,
        } = hub.counter_next(cursor, value, 0)
        {
            assert!(frame.starts_with(format!("id: {v}\ndata: {{\"value\":{v},").as_bytes()));
            got.push(v);
            cursor = seq;
            value = v;
        }
        assert_eq!(got, [1, 2]);
        let s = hub.counter_start(Some(9));
        let text = String::from_utf8(s.first.unwrap().to_vec()).unwrap();
        assert_eq!(
            text,
            "event: reset\nid: 2\ndata: {\"value\":2,\"reason\":\"ahead\"}\n\n"
        );
        let counter = names(&["counter"]);
        let s = hub.start(&counter, &Resume::Earliest);
        assert_eq!(drain(&hub, &counter, &s).unwrap(), [2, 3]);
    }

    #[test]
    fn counter_history_exceeded_and_store_reseeds() {
        let hub = hub(2);
        for _ in 0..4 {
            hub.increment();
        }
        let s = hub.counter_start(Some(1));
        assert!(String::from_utf8(s.first.unwrap().to_vec())
            .unwrap()
            .contains("history_exceeded"));
        let s = hub.counter_start(Some(2));
        assert_eq!((s.first, s.replay), (None, 2));
        // The store lost its data: every subscriber is told.
        let s = hub.start(&names(&["a"]), &Resume::Live);
        let c = hub.counter_start(None);
        hub.reseed("e2", &[counter_event(1, 1, 1)], 1, true);
        assert!(matches!(
            hub.next(&names(&["a"]), &s.floors, s.cursor, s.generation),
            Next::Reset { .. }
        ));
        match hub.counter_next(c.cursor, c.value, c.generation) {
            Next::Reset { frame, value, .. } => {
                assert_eq!(value, 1);
                assert_eq!(
                    &frame[..],
                    b"event: reset\nid: 1\ndata: {\"value\":1,\"reason\":\"ahead\"}\n\n"
                );
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(hub.position(), ("e2".to_owned(), 1));
    }

    proptest::proptest! {
        /// The counter's value frame is the JSON frame of `SharedValue` (whose bytes
        /// `sse::frame`'s property tests tie to the general encoder).
        #[test]
        fn value_frames_are_the_json_frames(value in proptest::prelude::any::<u64>(), at in proptest::prelude::any::<u64>()) {
            let want = frame::json(None, Some(value), &shared::SharedValue { value, sent_at_us: at }).unwrap();
            proptest::prop_assert_eq!(value_frame(value, at), want);
        }
    }

    #[test]
    fn every_subscriber_gets_the_same_bytes() {
        let hub = hub(10);
        let a = names(&["a"]);
        hub.publish("a", None, &raw("{}"), None);
        let one = hub.next(&a, &[0], 0, 0);
        let two = hub.next(&a, &[0], 0, 0);
        match (one, two) {
            (Next::Event { frame: f1, .. }, Next::Event { frame: f2, .. }) => {
                assert_eq!(f1.as_ptr(), f2.as_ptr(), "encoded once, shared");
            }
            other => panic!("{other:?}"),
        }
    }
}
