//! One stream per browser, however many tabs: the protocol between the tabs of one
//! origin that lets a single tab, the leader, hold the page's long-lived stream and share
//! what it receives with the others.
//!
//! - The leader is whichever tab holds the Web Lock [`LOCK_NAME`]; only a tab that needs
//!   a channel asks for it, and it gives it back when it needs none (the browser also
//!   frees it when the tab closes or navigates away). The next tab in the lock's queue
//!   takes over.
//! - Tabs talk over the `BroadcastChannel` [`CHANNEL_NAME`] in [`Wire`] messages: what
//!   each needs ([`Wire::Need`]), and from the leader its stream's state and every event.
//! - One group for every panel: the shared counter ([`SHARED_COUNTER`]) and the chat's
//!   channels. The leader's stream is opened for the union of what the tabs need:
//!   `/api/shared` while only the counter is needed, `/api/events` (the counter as the
//!   channel `counter`) as soon as another channel is. [`Delivery`] says which panel an
//!   event is for.
//! - A new stream resumes after the last id: the last counter value on `/api/shared`
//!   (its ids are values), the last channel id on `/api/events`. `/api/events` sends no
//!   current value, so a stream of it that no channel id of a stream with the counter
//!   covers is followed, once open, by a one-shot `/api/shared` ([`Effect::Snapshot`])
//!   for the value. Going from `/api/shared` to `/api/events` keeps the old stream until
//!   it has delivered that value ([`Effect::EndHandover`]): make before break, so no
//!   change is lost between the two.
//! - Every tab applies an event once: channel ids already applied are dropped, and a
//!   counter change only when its value is past the last one applied (each carries the
//!   absolute value); a `reset` starts a new run.
//!
//! Pure: the glue turns [`Effect`]s into `BroadcastChannel`, `navigator.locks` and
//! `EventSource` calls, and what they report into [`Msg`]s.

use serde::{Deserialize, Serialize};
use shared::channels::{ChannelEnd, ChannelEvent, ChannelReset};
use shared::{End, EndReason, Reset, SharedValue};
use std::collections::{BTreeMap, BTreeSet, VecDeque};

/// The Web Lock whose holder is the leader.
pub const LOCK_NAME: &str = "sse-counter-stream";
/// The `BroadcastChannel` the tabs talk on.
pub const CHANNEL_NAME: &str = "sse-counter-tabs";
/// The shared counter as a channel of the page's stream: its name on `/api/events`.
pub const SHARED_COUNTER: &str = shared::channels::COUNTER;
/// How many recent ids a tab remembers to drop a repeat; a new leader's replay covers
/// only what was relayed between its last id and its new stream, a handful of events.
const REMEMBERED_IDS: usize = 256;

/// A set of channels; ordered, so that equal sets compare and serialise equal.
pub type Channels = BTreeSet<String>;

/// What this tab is to the page's stream, as the `shared-role` badge says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Needs nothing: takes no part.
    Idle,
    /// Needs something and gets it from the leader (its lock request waits).
    Follower,
    /// Holds the lock and the stream.
    Leader,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Idle => "idle",
            Role::Follower => "follower",
            Role::Leader => "leader",
        }
    }
}

/// One event of the leader's stream, as relayed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Relayed {
    /// The SSE event type (`message` for unnamed events).
    pub name: String,
    /// The event's own id; `None` for an event without one (a heartbeat, `end`).
    pub id: Option<String>,
    pub data: String,
    /// Whether the stream it came from carries the counter: its id then marks where the
    /// counter is too, so a stream resumed after it needs no snapshot.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub counter: bool,
}

/// A message between tabs, sent as JSON over the `BroadcastChannel`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "t", rename_all = "snake_case")]
pub enum Wire {
    /// A tab has started: every tab that needs something says so again.
    Hello { tab: String },
    /// What a tab needs now; empty when it needs nothing any more.
    Need { tab: String, channels: Channels },
    /// A tab is going away (it closes or navigates).
    Bye { tab: String },
    /// The leader's stream is open.
    Opened,
    /// The leader's stream failed; the leader is getting it back.
    Failed,
    /// An event of the leader's stream.
    Event(Relayed),
    /// The leader's answer to a tab that needs something: whether its stream is open,
    /// and the last counter change it applied (the shared counter's current value).
    Snapshot { open: bool, last: Option<Relayed> },
}

/// What the glue reports.
#[derive(Debug, Clone, PartialEq)]
pub enum Msg {
    /// The page has started (after the channel is listened to).
    Start,
    /// What this tab's panels need now.
    Need(Channels),
    /// `navigator.locks` granted the lock.
    LockGranted,
    /// Another tab's message.
    Peer(Wire),
    /// This tab's own stream (the leader's): `open`.
    SourceOpened,
    /// This tab's own stream: an event, with the source's `lastEventId`.
    SourceEvent {
        name: String,
        id: String,
        data: String,
    },
    /// This tab's own stream: `error`, whether the browser gave up (CLOSED), and a
    /// random number in `0..1` for the panels' reconnect policy.
    SourceError { closed: bool, jitter: f64 },
    /// An event of the `/api/shared` stream kept during a handover.
    HandoverEvent {
        name: String,
        id: String,
        data: String,
    },
    /// An event of the one-shot `/api/shared` of [`Effect::Snapshot`].
    SnapshotEvent { name: String, data: String },
    /// The one-shot `/api/shared` failed.
    SnapshotError,
    /// The panel wants a new stream after the last id (its reconnect policy).
    Reopen,
    /// The tab is going away (`pagehide`).
    Leaving,
}

/// What this tab's panels hear, as if from a stream of their own.
#[derive(Debug, Clone, PartialEq)]
pub enum Delivery {
    /// For every panel.
    Opened,
    /// For every panel, with the random number for its reconnect policy.
    Error { closed: bool, jitter: f64 },
    /// For the shared counter panel, as `/api/shared` would send it (`id` the value).
    Counter {
        name: String,
        id: String,
        data: String,
    },
    /// For the chat, as `/api/events` sends it.
    Chat {
        name: String,
        id: String,
        data: String,
    },
}

/// What the glue must do.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    /// Post this to the other tabs.
    Post(Wire),
    /// Ask `navigator.locks` for [`LOCK_NAME`]; the grant comes as [`Msg::LockGranted`].
    RequestLock,
    /// Give the lock back.
    ReleaseLock,
    /// Replace this tab's stream with one for `channels`, resuming after `last_id`
    /// ([`stream_url`]). With `handover`, the old stream is kept (its events come as
    /// [`Msg::HandoverEvent`]) until [`Effect::EndHandover`]; else it is closed.
    Open {
        channels: Channels,
        last_id: Option<String>,
        handover: bool,
    },
    /// Open a one-shot `/api/shared` for the current value; its events come as
    /// [`Msg::SnapshotEvent`] until [`Effect::EndHandover`].
    Snapshot,
    /// Close the handover's old stream and the snapshot, if any.
    EndHandover,
    /// Close this tab's stream (and the handover's, and the snapshot).
    Close,
    /// Hand this to the tab's panels.
    Deliver(Delivery),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lock {
    None,
    Requested,
    Held,
}

/// The leader's stream.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Stream {
    channels: Channels,
    open: bool,
    /// The `lastEventId` the source last reported: an event that reports the same has
    /// no id of its own (the browser keeps the last one).
    source_id: String,
    /// Whether it is `/api/events` with the counter, which sends no current value.
    events_with_counter: bool,
    /// Whether a snapshot of the counter is to be taken once it opens.
    snapshot_due: bool,
}

impl Stream {
    fn is_shared(&self) -> bool {
        is_shared_only(&self.channels)
    }
}

/// The old `/api/shared` stream kept while the new `/api/events` one catches up.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
struct Handover {
    /// The snapshot's value, once it came: the old stream is closed once it delivered
    /// that far (everything before the new stream's start is then applied).
    target: Option<u64>,
    /// The new stream's counter changes meanwhile, applied when the old stream goes.
    pending: Vec<Relayed>,
}

/// What an event is, for whom.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Class {
    /// A counter change, its absolute value, its `sent_at_us`.
    Value(u64, u64),
    /// `/api/shared`'s `reset`: the counter's value replaced.
    CounterReset(u64),
    /// `/api/shared`'s `end`.
    CounterEnd,
    /// A chat event; `lost_counter` for a channel `reset` that lists the counter.
    Chat { lost_counter: bool },
    /// `/api/events`' `end`: for the chat, and for the counter unless it is about the
    /// token (`expired`, `revoked`: the protocol reopens for what is still needed).
    ChannelEnd(EndReason),
    /// A heartbeat: for every panel.
    Heartbeat,
}

fn classify(event: &Relayed) -> Class {
    match event.name.as_str() {
        shared::events::HEARTBEAT => Class::Heartbeat,
        shared::events::END => match serde_json::from_str::<ChannelEnd>(&event.data) {
            Ok(end) if serde_json::from_str::<End>(&event.data).is_err() => {
                Class::ChannelEnd(end.reason)
            }
            _ => Class::CounterEnd,
        },
        shared::events::RESET => match serde_json::from_str::<Reset>(&event.data) {
            Ok(reset) => Class::CounterReset(reset.value),
            Err(_) => Class::Chat {
                lost_counter: serde_json::from_str::<ChannelReset>(&event.data)
                    .is_ok_and(|r| r.channels.iter().any(|c| c == SHARED_COUNTER)),
            },
        },
        _ => {
            if let Ok(e) = serde_json::from_str::<ChannelEvent<'_>>(&event.data) {
                if e.channel != SHARED_COUNTER {
                    return Class::Chat {
                        lost_counter: false,
                    };
                }
                return match serde_json::from_str::<CounterData>(e.data.get()) {
                    Ok(d) => Class::Value(d.value, e.sent_at_us),
                    Err(_) => Class::Chat {
                        lost_counter: false,
                    },
                };
            }
            match serde_json::from_str::<SharedValue>(&event.data) {
                Ok(v) => Class::Value(v.value, v.sent_at_us),
                // Malformed: the panel of the stream it came from logs it.
                Err(_) if event.id.as_deref().is_some_and(is_channel_id) => Class::Chat {
                    lost_counter: false,
                },
                Err(_) => Class::Value(MALFORMED, 0),
            }
        }
    }
}

/// The value of a counter change that does not parse, which the panel logs.
const MALFORMED: u64 = u64::MAX;

/// The `data` of the channel `counter`'s events.
#[derive(Deserialize)]
struct CounterData {
    value: u64,
}

/// Whether `channels` is the shared counter alone, which `/api/shared` streams.
fn is_shared_only(channels: &Channels) -> bool {
    channels.len() == 1 && channels.contains(SHARED_COUNTER)
}

/// Whether `id` is a channel id (`<epoch>-<seq>`), not a value of `/api/shared`.
fn is_channel_id(id: &str) -> bool {
    id.contains('-')
}

/// One tab's side of the protocol.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TabShare {
    me: String,
    /// What each tab needs, this one included; tabs that need nothing are left out.
    needs: BTreeMap<String, Channels>,
    lock: Lock,
    /// The leader's stream, while this tab leads and needs something.
    stream: Option<Stream>,
    /// The old stream of a handover, while this tab leads.
    handover: Option<Handover>,
    /// Whether a snapshot was asked for and has not answered yet.
    snapshot_open: bool,
    /// The last channel id applied, which a new `/api/events` resumes after.
    last_id: Option<String>,
    /// Whether the stream that sent [`TabShare::last_id`] carried the counter.
    covered: bool,
    /// The last counter value applied, which a new `/api/shared` resumes after.
    counter: Option<u64>,
    /// Channel ids applied lately, newest last, to drop repeats.
    recent: VecDeque<String>,
    /// The last counter change applied, for a [`Wire::Snapshot`].
    last_event: Option<Relayed>,
    /// Whether this tab's panels were last told that the stream is open (by the leader,
    /// or by this tab's own stream when it leads).
    leader_open: bool,
}

impl TabShare {
    /// The protocol for the tab called `me` (unique among the tabs: a random id).
    pub fn new(me: impl Into<String>) -> TabShare {
        TabShare {
            me: me.into(),
            needs: BTreeMap::new(),
            lock: Lock::None,
            stream: None,
            handover: None,
            snapshot_open: false,
            last_id: None,
            covered: false,
            counter: None,
            recent: VecDeque::new(),
            last_event: None,
            leader_open: false,
        }
    }

    pub fn role(&self) -> Role {
        match (self.mine().is_empty(), self.lock) {
            (true, _) => Role::Idle,
            (false, Lock::Held) => Role::Leader,
            (false, _) => Role::Follower,
        }
    }

    /// What every tab needs together.
    pub fn union(&self) -> Channels {
        self.needs.values().flatten().cloned().collect()
    }

    fn mine(&self) -> Channels {
        self.needs.get(&self.me).cloned().unwrap_or_default()
    }

    pub fn update(&mut self, msg: Msg) -> Vec<Effect> {
        match msg {
            Msg::Start => vec![Effect::Post(Wire::Hello {
                tab: self.me.clone(),
            })],
            Msg::Need(channels) => self.need(channels),
            Msg::LockGranted => {
                if self.mine().is_empty() {
                    // Asked for while needed, granted after it no longer was.
                    self.lock = Lock::None;
                    return vec![Effect::ReleaseLock];
                }
                self.lock = Lock::Held;
                self.open()
            }
            Msg::Peer(wire) => self.peer(wire),
            Msg::SourceOpened => {
                let Some(stream) = &mut self.stream else {
                    return Vec::new();
                };
                stream.open = true;
                let snapshot = std::mem::take(&mut stream.snapshot_due);
                // A tab that took over from another was told already.
                let mut effects = vec![Effect::Post(Wire::Opened)];
                effects.extend(self.leader_opened());
                if snapshot {
                    // The new stream's place is fixed now: a value read after it covers
                    // every change before it.
                    self.snapshot_open = true;
                    effects.push(Effect::Snapshot);
                }
                effects
            }
            Msg::SourceEvent { name, id, data } => {
                let Some(stream) = &mut self.stream else {
                    return Vec::new();
                };
                let own_id = (!id.is_empty() && id != stream.source_id).then(|| id.clone());
                stream.source_id = id;
                let event = Relayed {
                    name,
                    id: own_id,
                    data,
                    counter: stream.events_with_counter,
                };
                let class = classify(&event);
                if let (Some(h), Class::Value(..)) = (&mut self.handover, &class) {
                    // The old stream delivers the counter until the handover ends.
                    h.pending.push(event);
                    return Vec::new();
                }
                let mut effects = self.relay(event);
                match class {
                    // The stream lived as long as its token; the cookie was refreshed
                    // before its `exp`: the counter goes on in a new stream at once.
                    Class::ChannelEnd(EndReason::Expired) => effects.extend(self.open()),
                    // The session is gone for every tab of the browser (one cookie):
                    // what is still needed is the counter.
                    Class::ChannelEnd(EndReason::Revoked) => {
                        for channels in self.needs.values_mut() {
                            channels.retain(|c| c == SHARED_COUNTER);
                        }
                        self.needs.retain(|_, c| !c.is_empty());
                        if self.role() == Role::Leader {
                            effects.extend(self.reconcile());
                        }
                    }
                    _ => {}
                }
                effects
            }
            Msg::SourceError { closed, jitter } => {
                let Some(stream) = &mut self.stream else {
                    return Vec::new();
                };
                stream.open = false;
                self.leader_open = false;
                vec![
                    Effect::Post(Wire::Failed),
                    Effect::Deliver(Delivery::Error { closed, jitter }),
                ]
            }
            Msg::HandoverEvent { name, id, data } => {
                if self.handover.is_none() {
                    return Vec::new();
                }
                let event = Relayed {
                    name,
                    id: Some(id).filter(|id| !id.is_empty()),
                    data,
                    counter: false,
                };
                let mut effects = match classify(&event) {
                    Class::Value(..) | Class::CounterReset(_) => self.relay(event),
                    _ => Vec::new(),
                };
                effects.extend(self.end_handover_if_done());
                effects
            }
            Msg::SnapshotEvent { name, data } => {
                if !std::mem::take(&mut self.snapshot_open) {
                    return Vec::new();
                }
                let event = Relayed {
                    name,
                    id: None,
                    data,
                    counter: false,
                };
                let value = match classify(&event) {
                    Class::Value(v, _) | Class::CounterReset(v) => v,
                    _ => return Vec::new(),
                };
                match &mut self.handover {
                    Some(h) => {
                        h.target = Some(value);
                        self.end_handover_if_done()
                    }
                    None => {
                        let event = Relayed {
                            id: Some(value.to_string()),
                            ..event
                        };
                        let mut effects = vec![Effect::EndHandover];
                        effects.extend(self.relay(event));
                        effects
                    }
                }
            }
            Msg::SnapshotError => {
                self.snapshot_open = false;
                self.end_handover()
            }
            Msg::Reopen => match self.role() {
                Role::Leader => {
                    self.leader_open = false;
                    self.open()
                }
                // The panel lost track of the leader's stream: ask the leader again.
                Role::Follower => {
                    self.leader_open = false;
                    vec![Effect::Post(Wire::Need {
                        tab: self.me.clone(),
                        channels: self.mine(),
                    })]
                }
                Role::Idle => Vec::new(),
            },
            Msg::Leaving => {
                // Closed first: a stream that the unloading page's browser sees fail
                // would be reopened by it (and tell the others it failed) on the way out.
                let mut effects = Vec::new();
                self.handover = None;
                self.snapshot_open = false;
                if self.stream.take().is_some() {
                    effects.push(Effect::Close);
                }
                effects.push(Effect::Post(Wire::Bye {
                    tab: self.me.clone(),
                }));
                effects
            }
        }
    }

    /// As the leader: applies an event of its own and passes it on if it was new.
    fn relay(&mut self, event: Relayed) -> Vec<Effect> {
        let deliveries = self.apply(event.clone());
        if deliveries.is_empty() {
            return Vec::new();
        }
        let mut effects = vec![Effect::Post(Wire::Event(event))];
        effects.extend(deliveries.into_iter().map(Effect::Deliver));
        effects
    }

    /// Ends the handover once the old stream delivered as far as the snapshot.
    fn end_handover_if_done(&mut self) -> Vec<Effect> {
        match &self.handover {
            Some(Handover {
                target: Some(t), ..
            }) if self.counter.is_some_and(|c| c >= *t) => self.end_handover(),
            _ => Vec::new(),
        }
    }

    /// Closes the old stream and the snapshot; the new stream's changes held meanwhile
    /// are applied now (those the old one delivered are dropped as repeats).
    fn end_handover(&mut self) -> Vec<Effect> {
        let mut effects = vec![Effect::EndHandover];
        if let Some(h) = self.handover.take() {
            for event in h.pending {
                effects.extend(self.relay(event));
            }
        }
        effects
    }

    /// This tab's panels now need `channels`.
    fn need(&mut self, channels: Channels) -> Vec<Effect> {
        let before = self.mine();
        if channels == before {
            return Vec::new();
        }
        if channels.is_empty() {
            self.needs.remove(&self.me);
        } else {
            self.needs.insert(self.me.clone(), channels.clone());
        }
        let mut effects = vec![Effect::Post(Wire::Need {
            tab: self.me.clone(),
            channels: channels.clone(),
        })];
        if before.is_empty() {
            // Joining starts afresh: the stream (or the leader's snapshot) says where
            // things are now.
            self.forget();
        } else if !channels.is_subset(&before) {
            // A panel that needs the stream now is told when it is open.
            self.leader_open = false;
        }
        match (self.lock, channels.is_empty()) {
            (Lock::Held, true) => {
                // The next tab in the lock's queue takes over, from the last id it saw.
                self.lock = Lock::None;
                self.handover = None;
                self.snapshot_open = false;
                if self.stream.take().is_some() {
                    effects.push(Effect::Close);
                }
                effects.push(Effect::ReleaseLock);
            }
            (Lock::Held, false) => effects.extend(self.reconcile()),
            (Lock::None, false) => {
                self.lock = Lock::Requested;
                effects.push(Effect::RequestLock);
            }
            // A request that is granted after the need is gone is given back then.
            (Lock::Requested, _) | (Lock::None, true) => {}
        }
        effects
    }

    fn peer(&mut self, wire: Wire) -> Vec<Effect> {
        let leading = self.role() == Role::Leader;
        let following = self.role() == Role::Follower;
        match wire {
            Wire::Hello { .. } => {
                let mine = self.mine();
                if mine.is_empty() {
                    return Vec::new();
                }
                vec![Effect::Post(Wire::Need {
                    tab: self.me.clone(),
                    channels: mine,
                })]
            }
            Wire::Need { tab, channels } => {
                if tab == self.me {
                    return Vec::new();
                }
                let wants = !channels.is_empty();
                if wants {
                    self.needs.insert(tab, channels);
                } else {
                    self.needs.remove(&tab);
                }
                if !leading {
                    return Vec::new();
                }
                let mut effects = Vec::new();
                if wants {
                    let open = self.stream.as_ref().is_some_and(|s| s.open);
                    effects.push(Effect::Post(Wire::Snapshot {
                        open,
                        last: self.last_event.clone(),
                    }));
                }
                effects.extend(self.reconcile());
                effects
            }
            Wire::Bye { tab } => {
                if self.needs.remove(&tab).is_some() && leading {
                    return self.reconcile();
                }
                Vec::new()
            }
            Wire::Opened if following => self.leader_opened(),
            Wire::Failed if following => {
                self.leader_open = false;
                // A follower's panel only waits for the leader's reopen: its jitter
                // times nothing that reaches the server.
                vec![Effect::Deliver(Delivery::Error {
                    closed: false,
                    jitter: 0.0,
                })]
            }
            Wire::Snapshot { open, last } if following => {
                let mut effects = if open {
                    self.leader_opened()
                } else {
                    Vec::new()
                };
                if let Some(event) = last {
                    effects.extend(self.apply(event).into_iter().map(Effect::Deliver));
                }
                effects
            }
            // A leader applies what the previous leader relayed too: it may come after
            // the lock did, and it is then repeated by the new stream (and dropped).
            Wire::Event(event) if following || leading => {
                self.apply(event).into_iter().map(Effect::Deliver).collect()
            }
            Wire::Opened | Wire::Failed | Wire::Snapshot { .. } | Wire::Event(_) => Vec::new(),
        }
    }

    fn leader_opened(&mut self) -> Vec<Effect> {
        if std::mem::replace(&mut self.leader_open, true) {
            return Vec::new();
        }
        vec![Effect::Deliver(Delivery::Opened)]
    }

    /// As the leader: a new stream for the union, after the last id that fits its URL.
    fn open(&mut self) -> Vec<Effect> {
        // A handover or snapshot cut short: what the new stream held is applied, and the
        // next stream takes a snapshot of its own (its last id may not cover the value).
        let cut_short = self.handover.is_some()
            || self.snapshot_open
            || self.stream.as_ref().is_some_and(|s| s.snapshot_due);
        self.snapshot_open = false;
        let mut effects = Vec::new();
        if let Some(h) = self.handover.take() {
            for event in h.pending {
                effects.extend(self.relay(event));
            }
        }
        let channels = self.union();
        let shared_only = is_shared_only(&channels);
        let with_counter = !shared_only && channels.contains(SHARED_COUNTER);
        let last_id = if shared_only {
            // `/api/shared`'s ids are the values; a later `/api/events` starts live
            // again (a new sign-in does not replay what came while signed out).
            self.last_id = None;
            self.covered = false;
            self.counter.map(|v| v.to_string())
        } else {
            self.last_id.clone()
        };
        let snapshot_due = with_counter && (cut_short || !(last_id.is_some() && self.covered));
        // Make before break: the old `/api/shared` delivers until the new stream has
        // caught up with it.
        let handover = snapshot_due
            && self.counter.is_some()
            && self
                .stream
                .as_ref()
                .is_some_and(|s| s.open && s.is_shared());
        self.handover = handover.then(Handover::default);
        self.stream = Some(Stream {
            channels: channels.clone(),
            open: false,
            source_id: String::new(),
            events_with_counter: with_counter,
            snapshot_due,
        });
        let open = Effect::Open {
            channels,
            last_id,
            handover,
        };
        if !handover {
            effects.push(Effect::Close);
        }
        effects.push(open);
        effects
    }

    /// As the leader: reopens the stream if the union is no longer what it was opened
    /// for.
    fn reconcile(&mut self) -> Vec<Effect> {
        match &self.stream {
            Some(s) if s.channels == self.union() => Vec::new(),
            _ => self.open(),
        }
    }

    /// Applies an event unless it is a repeat; what the panels hear of it.
    fn apply(&mut self, event: Relayed) -> Vec<Delivery> {
        let class = classify(&event);
        let reset = matches!(class, Class::CounterReset(_))
            || event.name == shared::events::RESET && event.id.is_some();
        if let Some(id) = event.id.as_ref().filter(|id| is_channel_id(id)) {
            if reset {
                // A reset starts a new run of ids, which may repeat old ones.
                self.recent.clear();
            } else if self.recent.contains(id) {
                return Vec::new();
            }
            if self.recent.len() == REMEMBERED_IDS {
                self.recent.pop_front();
            }
            self.recent.push_back(id.clone());
            self.last_id = Some(id.clone());
            self.covered = event.counter;
        }
        let chat_id = event.id.clone().or_else(|| self.last_id.clone());
        let counter_id = |v: Option<u64>| v.map(|v| v.to_string()).unwrap_or_default();
        let chat = |id: Option<String>| Delivery::Chat {
            name: event.name.clone(),
            id: id.unwrap_or_default(),
            data: event.data.clone(),
        };
        match class {
            Class::Value(value, sent_at_us) => {
                if value != MALFORMED && self.counter.is_some_and(|c| value <= c) {
                    return Vec::new();
                }
                let data = if value == MALFORMED {
                    event.data.clone()
                } else {
                    self.counter = Some(value);
                    serde_json::json!({ "value": value, "sent_at_us": sent_at_us }).to_string()
                };
                let relayed = Relayed {
                    name: "message".to_owned(),
                    id: Some(value.to_string()),
                    data,
                    counter: false,
                };
                self.last_event = Some(relayed.clone());
                vec![Delivery::Counter {
                    name: relayed.name,
                    id: value.to_string(),
                    data: relayed.data,
                }]
            }
            Class::CounterReset(value) => {
                self.counter = Some(value);
                vec![Delivery::Counter {
                    name: event.name.clone(),
                    id: value.to_string(),
                    data: event.data.clone(),
                }]
            }
            Class::CounterEnd => vec![Delivery::Counter {
                name: event.name.clone(),
                id: counter_id(self.counter),
                data: event.data.clone(),
            }],
            Class::Chat { lost_counter } => {
                if lost_counter {
                    // The value is not known until the next change, which is applied.
                    self.counter = None;
                }
                vec![chat(chat_id)]
            }
            Class::ChannelEnd(reason) => {
                let mut out = vec![chat(chat_id)];
                if !matches!(reason, EndReason::Expired | EndReason::Revoked) {
                    let end = End {
                        reason,
                        last: self.counter.unwrap_or(0),
                    };
                    out.push(Delivery::Counter {
                        name: event.name.clone(),
                        id: counter_id(self.counter),
                        data: serde_json::to_string(&end).unwrap_or_default(),
                    });
                }
                out
            }
            Class::Heartbeat => vec![
                Delivery::Counter {
                    name: event.name.clone(),
                    id: counter_id(self.counter),
                    data: event.data.clone(),
                },
                chat(chat_id),
            ],
        }
    }

    /// Forgets what was applied: a new join starts afresh.
    fn forget(&mut self) {
        self.last_id = None;
        self.covered = false;
        self.counter = None;
        self.recent.clear();
        self.last_event = None;
        self.leader_open = false;
    }
}

/// Whether the page's query lets this tab share the panel's stream: yes, unless
/// `?share=0` asks for a connection of its own.
pub fn share_requested(query: &str) -> bool {
    super::form::query_pairs(query).all(|(k, v)| k != "share" || super::form::is_on(v))
}

/// The URL of the stream for `channels`, resuming after `last_id`. The shared counter
/// alone is `/api/shared` (`last_id` a value); a set of channels is
/// `/api/events?channel=..`, one `channel` a name (the counter's is `counter`), with
/// `last_event_id` to resume (a channel id).
pub fn stream_url(channels: &Channels, last_id: Option<&str>) -> String {
    if is_shared_only(channels) {
        return shared::SharedParams {
            last_event_id: last_id.and_then(|id| id.parse().ok()),
        }
        .to_url();
    }
    let mut url = String::from("/api/events?");
    let mut pairs: Vec<String> = channels
        .iter()
        .map(|c| format!("channel={}", encode(c)))
        .collect();
    if let Some(id) = last_id.filter(|id| is_channel_id(id)) {
        pairs.push(format!("last_event_id={}", encode(id)));
    }
    url.push_str(&pairs.join("&"));
    url
}

/// Percent-encodes everything but unreserved characters.
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(names: &[&str]) -> Channels {
        names.iter().map(|n| (*n).to_owned()).collect()
    }

    fn counter() -> Channels {
        set(&[SHARED_COUNTER])
    }

    fn value(v: u64) -> Msg {
        Msg::SourceEvent {
            name: "message".into(),
            id: v.to_string(),
            data: format!(r#"{{"value":{v},"sent_at_us":1}}"#),
        }
    }

    /// A counter change as `/api/events` sends it, with its channel id.
    fn channel_value(id: &str, v: u64) -> Msg {
        Msg::SourceEvent {
            name: "message".into(),
            id: id.into(),
            data: format!(r#"{{"channel":"counter","data":{{"value":{v}}},"sent_at_us":1}}"#),
        }
    }

    /// A chat message on `channel`, with its channel id.
    fn chat_message(id: &str, channel: &str) -> Msg {
        Msg::SourceEvent {
            name: "message".into(),
            id: id.into(),
            data: format!(r#"{{"channel":"{channel}","data":{{"text":"hi"}},"sent_at_us":1}}"#),
        }
    }

    /// Tabs of one browser: a `BroadcastChannel` that hands each post to every other
    /// live tab, in order, and a Web Lock granted in the order it was asked for.
    #[derive(Default)]
    struct Browser {
        tabs: Vec<Tab>,
        /// Posts not delivered yet: from which tab, what.
        bus: VecDeque<(usize, Wire)>,
        /// Tabs waiting for the lock, in order; the holder first.
        queue: VecDeque<usize>,
        /// Grants made and not yet reported to their tab.
        grants: VecDeque<usize>,
    }

    struct Tab {
        share: TabShare,
        alive: bool,
        /// Everything handed to the tab's panels.
        heard: Vec<Delivery>,
        /// Every stream the tab opened: channels and the id it resumed after.
        opened: Vec<(Channels, Option<String>)>,
        /// Whether the tab holds a stream now.
        streaming: bool,
        /// Whether it keeps an old stream handing over, and a snapshot open.
        handing_over: bool,
        snapshots: usize,
    }

    impl Browser {
        fn tab(&mut self) -> usize {
            let i = self.tabs.len();
            self.tabs.push(Tab {
                share: TabShare::new(format!("tab{i}")),
                alive: true,
                heard: Vec::new(),
                opened: Vec::new(),
                streaming: false,
                handing_over: false,
                snapshots: 0,
            });
            self.send(i, Msg::Start);
            i
        }

        fn send(&mut self, i: usize, msg: Msg) {
            let fx = self.tabs[i].share.update(msg);
            self.apply(i, fx);
        }

        fn apply(&mut self, i: usize, fx: Vec<Effect>) {
            for e in fx {
                match e {
                    Effect::Post(w) => self.bus.push_back((i, w)),
                    Effect::RequestLock => {
                        self.queue.push_back(i);
                        if self.queue.len() == 1 {
                            self.grants.push_back(i);
                        }
                    }
                    Effect::ReleaseLock => self.release(i),
                    Effect::Open {
                        channels,
                        last_id,
                        handover,
                    } => {
                        self.tabs[i].opened.push((channels, last_id));
                        self.tabs[i].handing_over = handover;
                        self.tabs[i].streaming = true;
                    }
                    Effect::Snapshot => self.tabs[i].snapshots += 1,
                    Effect::EndHandover => self.tabs[i].handing_over = false,
                    Effect::Close => {
                        self.tabs[i].streaming = false;
                        self.tabs[i].handing_over = false;
                    }
                    Effect::Deliver(d) => self.tabs[i].heard.push(d),
                }
            }
        }

        fn release(&mut self, i: usize) {
            let was_holder = self.queue.front() == Some(&i);
            self.queue.retain(|&t| t != i);
            if was_holder {
                if let Some(&next) = self.queue.front() {
                    self.grants.push_back(next);
                }
            }
        }

        /// The tab closes: its lock goes, its posts still in flight are delivered.
        fn close(&mut self, i: usize) {
            self.send(i, Msg::Leaving);
            self.tabs[i].alive = false;
            self.tabs[i].streaming = false;
            self.grants.retain(|&t| t != i);
            self.release(i);
        }

        /// Delivers the next post to every other live tab.
        fn deliver_one(&mut self) -> bool {
            let Some((from, w)) = self.bus.pop_front() else {
                return false;
            };
            for j in 0..self.tabs.len() {
                if j != from && self.tabs[j].alive {
                    self.send(j, Msg::Peer(w.clone()));
                }
            }
            true
        }

        fn grant_one(&mut self) -> bool {
            let Some(i) = self.grants.pop_front() else {
                return false;
            };
            self.send(i, Msg::LockGranted);
            true
        }

        /// Runs until nothing is in flight: posts first, then grants.
        fn settle(&mut self) {
            while self.deliver_one() || self.grant_one() {}
        }

        /// The values each panel was handed, in order.
        fn values(&self, i: usize) -> Vec<String> {
            self.tabs[i]
                .heard
                .iter()
                .filter_map(|d| match d {
                    Delivery::Counter { name, id, .. } | Delivery::Chat { name, id, .. }
                        if name != "heartbeat" && name != "end" =>
                    {
                        Some(id.clone())
                    }
                    _ => None,
                })
                .collect()
        }

        fn leaders(&self) -> Vec<usize> {
            (0..self.tabs.len())
                .filter(|&i| self.tabs[i].alive && self.tabs[i].share.role() == Role::Leader)
                .collect()
        }

        fn streams(&self) -> usize {
            self.tabs.iter().filter(|t| t.alive && t.streaming).count()
        }
    }

    fn ids(range: std::ops::RangeInclusive<u64>) -> Vec<String> {
        range.map(|v| v.to_string()).collect()
    }

    /// Ten tabs join; one stream; every event reaches every tab once, in order.
    fn ten_joined() -> Browser {
        let mut b = Browser::default();
        for _ in 0..10 {
            let i = b.tab();
            b.send(i, Msg::Need(counter()));
            b.settle();
        }
        b
    }

    /// Two tabs joined; the first leads, its stream open.
    fn two_joined() -> (Browser, usize, usize) {
        let mut b = Browser::default();
        let a = b.tab();
        let c = b.tab();
        b.send(a, Msg::Need(counter()));
        b.send(c, Msg::Need(counter()));
        b.settle();
        b.send(a, Msg::SourceOpened);
        (b, a, c)
    }

    #[test]
    fn the_first_tab_that_needs_the_stream_leads_and_opens_it_for_the_union() {
        let mut b = Browser::default();
        let a = b.tab();
        b.settle();
        assert_eq!(b.tabs[a].share.role(), Role::Idle);
        assert_eq!(b.streams(), 0, "a tab that needs nothing holds nothing");
        b.send(a, Msg::Need(counter()));
        assert_eq!(b.tabs[a].share.role(), Role::Follower, "until the grant");
        b.settle();
        assert_eq!(b.tabs[a].share.role(), Role::Leader);
        assert_eq!(b.tabs[a].opened, [(counter(), None)]);
        assert_eq!(stream_url(&counter(), None), "/api/shared");
    }

    #[test]
    fn ten_tabs_hold_one_stream_and_each_hears_every_change_once_in_order() {
        let mut b = ten_joined();
        assert_eq!(b.leaders(), [0]);
        assert_eq!(b.streams(), 1);
        b.send(0, Msg::SourceOpened);
        for v in 1..=30 {
            b.send(0, value(v));
        }
        b.settle();
        for i in 0..10 {
            assert_eq!(b.values(i), ids(1..=30), "tab {i}");
            assert_eq!(b.tabs[i].heard[0], Delivery::Opened, "tab {i}");
            assert_eq!(
                b.tabs[i].share.role(),
                [Role::Leader, Role::Follower][usize::from(i > 0)]
            );
        }
    }

    #[test]
    fn a_tab_that_joins_late_gets_the_state_and_the_last_value_from_the_leader() {
        let mut b = Browser::default();
        let a = b.tab();
        b.send(a, Msg::Need(counter()));
        b.settle();
        b.send(a, Msg::SourceOpened);
        b.send(a, value(7));
        b.settle();
        let late = b.tab();
        b.settle();
        b.send(late, Msg::Need(counter()));
        b.settle();
        assert_eq!(b.values(late), ["7"]);
        assert_eq!(b.tabs[late].heard[0], Delivery::Opened);
        assert_eq!(
            b.values(a),
            ["7"],
            "the snapshot repeats nothing in the leader"
        );
        assert_eq!(b.tabs[a].opened.len(), 1, "the union did not change");
    }

    #[test]
    fn when_the_leader_closes_the_next_tab_resumes_after_the_last_id_with_no_gap_or_repeat() {
        let mut b = ten_joined();
        b.send(0, Msg::SourceOpened);
        for v in 1..=10 {
            b.send(0, value(v));
        }
        b.settle();
        // The leader relays 11 and 12 and closes; the next tab is granted the lock
        // before those two posts reach it, so it resumes after 10.
        b.send(0, value(11));
        b.send(0, value(12));
        b.close(0);
        assert!(b.grant_one());
        assert_eq!(b.leaders(), [1]);
        assert_eq!(b.tabs[1].opened, [(counter(), Some("10".into()))]);
        assert_eq!(
            stream_url(&counter(), Some("10")),
            "/api/shared?last_event_id=10"
        );
        b.settle();
        // The new stream replays 11 and 12 (already relayed), then goes on.
        b.send(1, Msg::SourceOpened);
        for v in 11..=20 {
            b.send(1, value(v));
        }
        b.settle();
        assert_eq!(b.streams(), 1);
        for i in 1..10 {
            assert_eq!(b.values(i), ids(1..=20), "tab {i}");
            let opens = b.tabs[i].heard.iter().filter(|d| **d == Delivery::Opened);
            assert_eq!(opens.count(), 1, "tab {i}: the takeover is seamless");
        }
        // The leader that left is forgotten: the union is what the others need.
        assert_eq!(b.tabs[1].share.needs.len(), 9);
    }

    #[test]
    fn the_leaders_dropped_connection_shows_in_every_tab_and_resumes_there() {
        let mut b = ten_joined();
        b.send(0, Msg::SourceOpened);
        b.send(0, value(1));
        b.send(
            0,
            Msg::SourceError {
                closed: false,
                jitter: 0.5,
            },
        );
        b.settle();
        for i in 0..10 {
            // Only the leader's jitter times a reopen.
            let jitter = if i == 0 { 0.5 } else { 0.0 };
            assert_eq!(
                b.tabs[i].heard.last(),
                Some(&Delivery::Error {
                    closed: false,
                    jitter
                }),
                "tab {i}: a follower never hears that the browser gave up"
            );
        }
        // The browser reconnects the same source, with Last-Event-ID.
        b.send(0, Msg::SourceOpened);
        b.send(0, value(2));
        b.settle();
        for i in 0..10 {
            assert_eq!(b.values(i), ids(1..=2), "tab {i}");
            assert_eq!(
                b.tabs[i]
                    .heard
                    .iter()
                    .filter(|d| **d == Delivery::Opened)
                    .count(),
                2
            );
        }
        // The panel's own policy asks for a new stream: after the last id.
        b.send(0, Msg::Reopen);
        assert_eq!(
            b.tabs[0].opened.last(),
            Some(&(counter(), Some("2".into())))
        );
        assert_eq!(b.streams(), 1);
    }

    #[test]
    fn a_leader_that_goes_closes_its_stream_before_saying_bye() {
        let mut b = ten_joined();
        b.send(0, Msg::SourceOpened);
        assert_eq!(
            b.tabs[0].share.update(Msg::Leaving),
            [
                Effect::Close,
                Effect::Post(Wire::Bye { tab: "tab0".into() })
            ]
        );
        assert_eq!(
            b.tabs[1].share.update(Msg::Leaving),
            [Effect::Post(Wire::Bye { tab: "tab1".into() })],
            "a follower has no stream to close"
        );
    }

    /// Two tabs on the counter alone (`/api/shared`, values 1 to 3), then the second
    /// signs in to the chat: one group, so one stream for the union.
    fn counter_then_chat() -> (Browser, usize, usize) {
        let (mut b, a, c) = two_joined();
        for v in 1..=3 {
            b.send(a, value(v));
        }
        b.settle();
        b.send(c, Msg::Need(set(&[SHARED_COUNTER, LOBBY])));
        b.settle();
        (b, a, c)
    }

    const LOBBY: &str = "rooms/lobby";

    /// [`counter_then_chat`] with the union's stream open, its snapshot read (value 3)
    /// and the change to 4 heard with the id `e-1`.
    fn on_the_union_at_e1() -> (Browser, usize, usize) {
        let (mut b, a, c) = counter_then_chat();
        b.send(a, Msg::SourceOpened);
        b.send(
            a,
            Msg::SnapshotEvent {
                name: "message".into(),
                data: r#"{"value":3,"sent_at_us":1}"#.into(),
            },
        );
        b.send(a, channel_value("e-1", 4));
        b.settle();
        (b, a, c)
    }

    #[test]
    fn the_chat_joining_hands_the_counter_over_to_one_events_stream_with_no_gap_or_repeat() {
        let (mut b, a, c) = counter_then_chat();
        let union = set(&[SHARED_COUNTER, LOBBY]);
        assert_eq!(b.tabs[a].opened, [(counter(), None), (union.clone(), None)]);
        assert!(
            b.tabs[a].handing_over,
            "the old stream stays until the new one caught up"
        );
        assert_eq!(
            stream_url(&union, None),
            "/api/events?channel=counter&channel=rooms%2Flobby"
        );
        // The old stream goes on: 4. The new one opens: a snapshot is taken.
        b.send(
            a,
            Msg::HandoverEvent {
                name: "message".into(),
                id: "4".into(),
                data: r#"{"value":4,"sent_at_us":1}"#.into(),
            },
        );
        b.send(a, Msg::SourceOpened);
        assert_eq!(b.tabs[a].snapshots, 1);
        // The new stream is quicker than the old one: 5 and 6 come on it first (held),
        // then 5 on the old one, then the snapshot's value, 5.
        b.send(a, channel_value("e-1", 5));
        b.send(a, channel_value("e-2", 6));
        b.send(
            a,
            Msg::HandoverEvent {
                name: "message".into(),
                id: "5".into(),
                data: r#"{"value":5,"sent_at_us":1}"#.into(),
            },
        );
        assert!(b.tabs[a].handing_over);
        b.send(
            a,
            Msg::SnapshotEvent {
                name: "message".into(),
                data: r#"{"value":5,"sent_at_us":1}"#.into(),
            },
        );
        assert!(!b.tabs[a].handing_over, "the old stream is closed");
        b.send(a, chat_message("e-3", LOBBY));
        b.send(a, channel_value("e-4", 7));
        b.settle();
        for i in [a, c] {
            assert_eq!(
                b.values(i),
                ["1", "2", "3", "4", "5", "6", "e-3", "7"],
                "tab {i}"
            );
        }
        let chat: Vec<_> = b.tabs[c]
            .heard
            .iter()
            .filter(|d| matches!(d, Delivery::Chat { .. }))
            .collect();
        assert_eq!(
            chat.len(),
            1,
            "the counter's changes are the counter panel's"
        );
        assert_eq!(b.streams(), 1);
        assert_eq!(b.tabs[c].share.last_id.as_deref(), Some("e-4"));
    }

    #[test]
    fn a_handover_cut_short_by_another_reopen_loses_nothing_and_snapshots_again() {
        let (mut b, a, c) = counter_then_chat();
        b.send(a, Msg::SourceOpened);
        // The new stream's 4 is held (the old stream has not delivered it), and the union
        // changes before the snapshot answers.
        b.send(a, channel_value("e-1", 4));
        b.send(a, chat_message("e-2", LOBBY));
        b.send(c, Msg::Need(set(&[SHARED_COUNTER, LOBBY, "rooms/games"])));
        b.settle();
        assert!(
            !b.tabs[a].handing_over,
            "the old stream is closed with the reopen"
        );
        // The held 4 is applied as the old stream goes: the new one resumes after it,
        // and the lobby's e-2 that it replays is dropped.
        assert_eq!(
            b.tabs[a].opened.last().map(|(_, id)| id.clone()),
            Some(Some("e-1".into()))
        );
        // The late answer of the first snapshot is ignored; the new stream takes one.
        b.send(
            a,
            Msg::SnapshotEvent {
                name: "message".into(),
                data: r#"{"value":9,"sent_at_us":1}"#.into(),
            },
        );
        b.send(a, Msg::SourceOpened);
        assert_eq!(b.tabs[a].snapshots, 2);
        b.send(a, chat_message("e-2", LOBBY));
        b.send(a, channel_value("e-3", 5));
        b.settle();
        for i in [a, c] {
            assert_eq!(b.values(i), ["1", "2", "3", "e-2", "4", "5"], "tab {i}");
        }
    }

    #[test]
    fn a_room_joined_reopens_once_after_the_last_id_without_a_snapshot() {
        let (mut b, a, c) = on_the_union_at_e1();
        b.send(c, Msg::Need(set(&[SHARED_COUNTER, LOBBY, "rooms/games"])));
        b.settle();
        let want = set(&[SHARED_COUNTER, LOBBY, "rooms/games"]);
        assert_eq!(
            b.tabs[a].opened.last(),
            Some(&(want.clone(), Some("e-1".into())))
        );
        assert_eq!(
            stream_url(&want, Some("e-1")),
            "/api/events?channel=counter&channel=rooms%2Fgames&channel=rooms%2Flobby&last_event_id=e-1"
        );
        assert!(!b.tabs[a].handing_over);
        b.send(a, Msg::SourceOpened);
        assert_eq!(
            b.tabs[a].snapshots, 1,
            "the id covers the counter: no snapshot"
        );
        // The same need again reopens nothing.
        b.send(c, Msg::Need(want));
        b.settle();
        assert_eq!(b.tabs[a].opened.len(), 3);
        b.send(a, channel_value("e-1", 4));
        b.send(a, channel_value("e-2", 5));
        b.settle();
        for i in [a, c] {
            assert_eq!(
                b.values(i),
                ["1", "2", "3", "4", "5"],
                "tab {i}: no gap, no repeat"
            );
        }
        // Signed out: back to `/api/shared`, after the last value; a new sign-in is live.
        b.send(c, Msg::Need(counter()));
        b.settle();
        assert_eq!(
            b.tabs[a].opened.last(),
            Some(&(counter(), Some("5".into())))
        );
        b.send(c, Msg::Need(set(&[SHARED_COUNTER, LOBBY])));
        b.settle();
        assert_eq!(
            b.tabs[a].opened.last(),
            Some(&(set(&[SHARED_COUNTER, LOBBY]), None))
        );
        assert_eq!(b.streams(), 1);
    }

    #[test]
    fn a_private_channels_end_leaves_the_counter_going() {
        let (mut b, a, c) = on_the_union_at_e1();
        let opens = b.tabs[a].opened.len();
        // `expired`: the cookie was refreshed before `exp`; the union reopens at once.
        let end = |reason: &str, last: &str| Msg::SourceEvent {
            name: "end".into(),
            id: last.into(),
            data: format!(r#"{{"reason":"{reason}","last":"{last}"}}"#),
        };
        b.send(a, end("expired", "e-1"));
        let union = set(&[SHARED_COUNTER, LOBBY]);
        assert_eq!(b.tabs[a].opened.len(), opens + 1);
        assert_eq!(b.tabs[a].opened.last(), Some(&(union, Some("e-1".into()))));
        b.send(a, Msg::SourceOpened);
        b.send(a, channel_value("e-2", 5));
        // `revoked`: no tab has the chat any more (one cookie); the counter goes on alone.
        b.send(a, end("revoked", "e-2"));
        assert_eq!(
            b.tabs[a].opened.last(),
            Some(&(counter(), Some("5".into())))
        );
        b.settle();
        for i in [a, c] {
            assert_eq!(b.values(i), ["1", "2", "3", "4", "5"], "tab {i}");
            let ends = b.tabs[i]
                .heard
                .iter()
                .filter(|d| matches!(d, Delivery::Chat { name, .. } if name == "end"));
            assert_eq!(ends.count(), 2, "tab {i}: the chat hears each end");
            assert!(
                !b.tabs[i]
                    .heard
                    .iter()
                    .any(|d| matches!(d, Delivery::Counter { name, .. } if name == "end")),
                "tab {i}: the counter panel hears no end of the token's"
            );
        }
        assert_eq!(b.streams(), 1);
    }

    #[test]
    fn a_new_leader_resumes_the_union_after_the_last_id_the_tabs_saw() {
        let (mut b, a, c) = on_the_union_at_e1();
        b.close(a);
        b.settle();
        assert_eq!(b.leaders(), [c]);
        assert_eq!(
            b.tabs[c].opened,
            [(set(&[SHARED_COUNTER, LOBBY]), Some("e-1".into()))]
        );
        b.send(c, Msg::SourceOpened);
        assert_eq!(b.tabs[c].snapshots, 0, "e-1 came with the counter");
        b.send(c, channel_value("e-1", 4));
        b.send(c, channel_value("e-2", 5));
        assert_eq!(b.values(c), ["1", "2", "3", "4", "5"]);
    }

    #[test]
    fn leaving_gives_the_lock_to_the_next_tab_and_a_late_grant_is_given_back() {
        let (mut b, a, c) = two_joined();
        b.send(a, value(3));
        b.settle();
        b.send(a, Msg::Need(Channels::new()));
        assert!(!b.tabs[a].streaming);
        b.settle();
        assert_eq!(b.leaders(), [c]);
        assert_eq!(b.tabs[c].opened, [(counter(), Some("3".into()))]);
        assert_eq!(b.tabs[c].share.union(), counter(), "a's need is gone");
        // a joins and leaves again before its turn: when granted, it gives the lock back.
        b.send(a, Msg::Need(counter()));
        b.send(a, Msg::Need(Channels::new()));
        b.send(c, Msg::Need(Channels::new()));
        b.settle();
        assert!(b.leaders().is_empty());
        assert!(b.queue.is_empty(), "nobody holds or waits for the lock");
        assert_eq!(b.streams(), 0);
    }

    #[test]
    fn heartbeats_pass_and_a_reset_starts_a_new_run_of_ids() {
        let (mut b, a, c) = two_joined();
        b.send(a, value(1));
        b.send(a, value(2));
        // A heartbeat has no id: the source reports its last one again.
        for _ in 0..2 {
            b.send(
                a,
                Msg::SourceEvent {
                    name: "heartbeat".into(),
                    id: "2".into(),
                    data: "{}".into(),
                },
            );
        }
        // The server lost its store: a reset to 0, then 1 and 2 again.
        b.send(
            a,
            Msg::SourceEvent {
                name: "reset".into(),
                id: "0".into(),
                data: r#"{"value":0,"reason":"ahead"}"#.into(),
            },
        );
        b.send(a, value(1));
        b.settle();
        for i in [a, c] {
            assert_eq!(b.values(i), ["1", "2", "0", "1"], "tab {i}");
            let beats = b.tabs[i].heard.iter().filter(
                |d| matches!(d, Delivery::Counter { name, id, .. } if name == "heartbeat" && id == "2"),
            );
            assert_eq!(beats.count(), 2, "tab {i}");
        }
        assert_eq!(b.tabs[c].share.counter, Some(1));
    }

    #[test]
    fn a_follower_that_lost_track_asks_the_leader_again() {
        let (mut b, a, c) = two_joined();
        b.settle();
        b.send(c, Msg::Reopen);
        b.settle();
        let opens = b.tabs[c].heard.iter().filter(|d| **d == Delivery::Opened);
        assert_eq!(opens.count(), 2, "told again that the stream is open");
        assert_eq!(
            b.tabs[a].opened.len(),
            1,
            "the leader's stream is left alone"
        );
    }

    #[test]
    fn wire_messages_are_json_that_round_trips() {
        let w = Wire::Event(Relayed {
            name: "message".into(),
            id: Some("5".into()),
            data: r#"{"value":5}"#.into(),
            counter: false,
        });
        let json = serde_json::to_string(&w).unwrap();
        assert_eq!(
            json,
            r#"{"t":"event","name":"message","id":"5","data":"{\"value\":5}"}"#
        );
        assert_eq!(serde_json::from_str::<Wire>(&json).unwrap(), w);
        let need = Wire::Need {
            tab: "t1".into(),
            channels: counter(),
        };
        let json = serde_json::to_string(&need).unwrap();
        assert_eq!(json, r#"{"t":"need","tab":"t1","channels":["counter"]}"#);
        assert_eq!(serde_json::from_str::<Wire>(&json).unwrap(), need);
    }
}
