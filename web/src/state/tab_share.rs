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
//! - The leader's stream is opened for the union of what the tabs need, after the last
//!   id that this tab saw: a new leader resumes where the tabs are, and a change of the
//!   union reopens the stream from there. Channels and ids are opaque strings.
//! - Every tab applies an event once: ids already applied are dropped (the leader's new
//!   stream may replay what the old leader relayed after the new one's last id), and a
//!   `reset` starts a new run of ids.
//!
//! Pure: the glue turns [`Effect`]s into `BroadcastChannel`, `navigator.locks` and
//! `EventSource` calls, and what they report into [`Msg`]s.

use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, VecDeque};

/// The Web Lock whose holder is the leader.
pub const LOCK_NAME: &str = "sse-counter-stream";
/// The `BroadcastChannel` the tabs talk on.
pub const CHANNEL_NAME: &str = "sse-counter-tabs";
/// The shared counter as a channel of the page's stream.
pub const SHARED_COUNTER: &str = "shared-counter";
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
    /// and its last event with an id (the shared counter's current value).
    Snapshot { open: bool, last: Option<Relayed> },
}

/// What the glue reports.
#[derive(Debug, Clone, PartialEq, Eq)]
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
    /// This tab's own stream: `error`, and whether the browser gave up (CLOSED).
    SourceError { closed: bool },
    /// The panel wants a new stream after the last id (its reconnect policy).
    Reopen,
    /// The tab is going away (`pagehide`).
    Leaving,
}

/// What this tab's panels hear, as if from a stream of their own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivery {
    Opened,
    Event {
        name: String,
        id: String,
        data: String,
    },
    Error {
        closed: bool,
    },
}

/// What the glue must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// Post this to the other tabs.
    Post(Wire),
    /// Ask `navigator.locks` for [`LOCK_NAME`]; the grant comes as [`Msg::LockGranted`].
    RequestLock,
    /// Give the lock back.
    ReleaseLock,
    /// Replace this tab's stream with one for `channels`, resuming after `last_id`.
    Open {
        channels: Channels,
        last_id: Option<String>,
    },
    /// Close this tab's stream.
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
    /// The last id applied, which a new stream resumes after.
    last_id: Option<String>,
    /// Ids applied lately, newest last, to drop repeats.
    recent: VecDeque<String>,
    /// The last event with an id applied, for a [`Wire::Snapshot`].
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
            last_id: None,
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
                // A tab that took over from another was told already.
                let mut effects = vec![Effect::Post(Wire::Opened)];
                effects.extend(self.leader_opened());
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
                };
                match self.apply(event.clone()) {
                    Some(delivery) => {
                        vec![Effect::Post(Wire::Event(event)), Effect::Deliver(delivery)]
                    }
                    None => Vec::new(),
                }
            }
            Msg::SourceError { closed } => {
                let Some(stream) = &mut self.stream else {
                    return Vec::new();
                };
                stream.open = false;
                self.leader_open = false;
                vec![
                    Effect::Post(Wire::Failed),
                    Effect::Deliver(Delivery::Error { closed }),
                ]
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
        }
        match (self.lock, channels.is_empty()) {
            (Lock::Held, true) => {
                // The next tab in the lock's queue takes over, from the last id it saw.
                self.lock = Lock::None;
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
                vec![Effect::Deliver(Delivery::Error { closed: false })]
            }
            Wire::Snapshot { open, last } if following => {
                let mut effects = if open {
                    self.leader_opened()
                } else {
                    Vec::new()
                };
                if let Some(delivery) = last.and_then(|e| self.apply(e)) {
                    effects.push(Effect::Deliver(delivery));
                }
                effects
            }
            // A leader applies what the previous leader relayed too: it may come after
            // the lock did, and it is then repeated by the new stream (and dropped).
            Wire::Event(event) if following || leading => {
                self.apply(event).map(Effect::Deliver).into_iter().collect()
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

    /// As the leader: a new stream for the union, after the last id.
    fn open(&mut self) -> Vec<Effect> {
        let channels = self.union();
        self.stream = Some(Stream {
            channels: channels.clone(),
            open: false,
            source_id: String::new(),
        });
        vec![
            Effect::Close,
            Effect::Open {
                channels,
                last_id: self.last_id.clone(),
            },
        ]
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
    fn apply(&mut self, event: Relayed) -> Option<Delivery> {
        if let Some(id) = &event.id {
            if event.name == shared::events::RESET {
                // A reset starts a new run of ids, which may repeat old ones.
                self.recent.clear();
            } else if self.recent.contains(id) {
                return None;
            }
            if self.recent.len() == REMEMBERED_IDS {
                self.recent.pop_front();
            }
            self.recent.push_back(id.clone());
            self.last_id = Some(id.clone());
            self.last_event = Some(event.clone());
        }
        Some(Delivery::Event {
            id: event
                .id
                .or_else(|| self.last_id.clone())
                .unwrap_or_default(),
            name: event.name,
            data: event.data,
        })
    }

    /// Forgets what was applied: a new join starts afresh.
    fn forget(&mut self) {
        self.last_id = None;
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
/// alone is `/api/shared`; a set of channels is `/api/events?channel=..`, one
/// `channel` a name, with `last_event_id` to resume.
pub fn stream_url(channels: &Channels, last_id: Option<&str>) -> String {
    if channels.len() == 1 && channels.contains(SHARED_COUNTER) {
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
    if let Some(id) = last_id {
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
            data: format!(r#"{{"value":{v}}}"#),
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
                    Effect::Open { channels, last_id } => {
                        self.tabs[i].opened.push((channels, last_id));
                        self.tabs[i].streaming = true;
                    }
                    Effect::Close => self.tabs[i].streaming = false,
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
                    Delivery::Event { name, id, .. } if name != "heartbeat" => Some(id.clone()),
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
        b.send(0, Msg::SourceError { closed: false });
        b.settle();
        for i in 0..10 {
            assert_eq!(
                b.tabs[i].heard.last(),
                Some(&Delivery::Error { closed: false }),
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

    #[test]
    fn a_change_of_the_union_reopens_the_stream_from_the_last_id_once() {
        let (mut b, a, c) = two_joined();
        b.send(
            a,
            Msg::SourceEvent {
                name: "message".into(),
                id: "e-41".into(),
                data: "x".into(),
            },
        );
        b.settle();
        // Tab c joins the room "ops": the leader reopens for the union, after e-41.
        b.send(c, Msg::Need(set(&[SHARED_COUNTER, "ops"])));
        b.settle();
        let want = set(&[SHARED_COUNTER, "ops"]);
        assert_eq!(
            b.tabs[a].opened,
            [(counter(), None), (want.clone(), Some("e-41".into()))]
        );
        assert_eq!(
            stream_url(&want, Some("e-41")),
            "/api/events?channel=ops&channel=shared-counter&last_event_id=e-41"
        );
        // The same need again reopens nothing; the room left again does.
        b.send(c, Msg::Need(want));
        b.settle();
        assert_eq!(b.tabs[a].opened.len(), 2);
        b.send(a, Msg::SourceOpened);
        b.send(
            a,
            Msg::SourceEvent {
                name: "message".into(),
                id: "e-42".into(),
                data: "y".into(),
            },
        );
        b.settle();
        assert_eq!(
            b.values(c),
            ["e-41", "e-42"],
            "no gap, no repeat across the reopen"
        );
        b.send(c, Msg::Need(counter()));
        b.settle();
        assert_eq!(
            b.tabs[a].opened.last(),
            Some(&(counter(), Some("e-42".into())))
        );
        assert_eq!(b.streams(), 1);
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
                |d| matches!(d, Delivery::Event { name, id, .. } if name == "heartbeat" && id == "2"),
            );
            assert_eq!(beats.count(), 2, "tab {i}");
        }
        assert_eq!(b.tabs[c].share.last_id.as_deref(), Some("1"));
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
        assert_eq!(
            json,
            r#"{"t":"need","tab":"t1","channels":["shared-counter"]}"#
        );
        assert_eq!(serde_json::from_str::<Wire>(&json).unwrap(), need);
    }
}
