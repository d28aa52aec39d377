//! The page's state machine: every input (a click, an EventSource event, an answer from
//! the server) is a [`Msg`]; [`State::update`] changes the state and says what the glue
//! must do ([`Effect`]). No web-sys here, so every transition is unit-tested natively
//! (`cargo test -p web`).
//!
//! By concern: [`form`] reads the settings, [`refusal`] works out why a stream was
//! refused, [`log`] keeps the event log, [`shared_counter`] runs the shared counter
//! panel and [`reconnect`] times its reconnections, [`tab_share`] lets the tabs of one
//! browser share one stream, [`chat`] runs the "Channels" panel (whose channels ride on
//! that same shared stream, with the counter); this module runs the per-client
//! counter's connection and joins them.

pub mod chat;
pub mod form;
pub mod log;
pub mod reconnect;
pub mod refusal;
pub mod shared_counter;
pub mod tab_share;

pub use form::Form;
pub use log::{Log, LogKind, Stream, LOG_LIMIT};
pub use refusal::Answer;

use chat::Chat;
use refusal::{Inquiry, Refusal};
use shared::{CounterParams, End, EndReason, Tick};
use shared_counter::SharedCounter;
use std::collections::VecDeque;
use tab_share::TabShare;

/// The connection's state, as shown in the `state` badge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Conn {
    /// No connection yet.
    Idle,
    /// `new EventSource(...)` made, not open yet.
    Connecting,
    Open,
    /// An error with close-on-error off: the browser reconnects by itself.
    Reconnecting,
    /// The server sent `end`; the page closed the source.
    Finished,
    /// An error with close-on-error on (the page closed the source), or one after which
    /// the browser gave up by itself (see [`State::browser_gave_up`]), or a source that
    /// could not be made at all.
    ClosedOnError,
    /// The Close button.
    ClosedByUser,
}

impl Conn {
    /// The exact text of the `state` element.
    pub fn as_str(self) -> &'static str {
        match self {
            Conn::Idle => "idle",
            Conn::Connecting => "connecting",
            Conn::Open => "open",
            Conn::Reconnecting => "reconnecting",
            Conn::Finished => "finished",
            Conn::ClosedOnError => "closed-on-error",
            Conn::ClosedByUser => "closed-by-user",
        }
    }

    /// Whether an EventSource exists (and so events may still arrive).
    pub fn is_live(self) -> bool {
        matches!(self, Conn::Connecting | Conn::Open | Conn::Reconnecting)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Msg {
    /// The Connect button, with the form as it is.
    Connect(Form),
    /// The Close button.
    Close,
    /// `new EventSource(url)` threw, so there is no source; the text says why.
    OpenFailed { error: String },
    /// The EventSource's `open` event.
    Opened,
    /// A `message` event (a tick): its `lastEventId` and `data`.
    Message { id: String, data: String },
    /// The `end` event's data.
    End { data: String },
    /// The EventSource's `error` event; `closed` is whether its readyState is CLOSED,
    /// meaning the browser itself will not reconnect.
    Error { closed: bool },
    /// The answer to [`Effect::AskWhy`] for connection number `serial`, or `None` when
    /// the server could not be reached at all.
    Why { serial: u64, answer: Option<Answer> },
    /// An input for the shared counter panel.
    Shared(shared_counter::Msg),
    /// What the tab-sharing glue reports: another tab, the lock, the leader's stream
    /// (the shared counter's and the chat's, one for both).
    Tabs(tab_share::Msg),
    /// An input for the "Channels" panel (its own stream's events included, when it
    /// holds one).
    Chat(chat::Msg),
}

/// What the glue must do after an update.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// Close and drop the current EventSource, if any.
    CloseSource,
    /// Open a new EventSource on this URL; if that throws, send [`Msg::OpenFailed`].
    OpenSource(String),
    /// `fetch` this URL and send back what the server answers as [`Msg::Why`]: an
    /// EventSource reports only "error", never the status or the body.
    AskWhy { url: String, serial: u64 },
    /// Something to do for the shared counter panel.
    Shared(shared_counter::Effect),
    /// Something to do to share the page's stream with the other tabs.
    Tabs(TabsEffect),
    /// A request or timer of the "Channels" panel.
    Chat(chat::Effect),
    /// The chat's own stream, while the tab does not share (`OpenSource`,
    /// `CloseSource`).
    ChatOwn(TabsEffect),
}

/// What the glue does for [`tab_share`]; the panel's own stream effects are replaced by
/// these while the tabs share one stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TabsEffect {
    /// Post to the other tabs.
    Post(tab_share::Wire),
    RequestLock,
    ReleaseLock,
    /// Open the leader's stream on this URL (replacing any); its events come back as
    /// [`tab_share::Msg::SourceEvent`] and the like.
    OpenSource(String),
    /// The same, keeping the old stream until [`TabsEffect::EndHandover`] (its events
    /// come back as [`tab_share::Msg::HandoverEvent`]).
    HandOver(String),
    /// Open a one-shot stream on this URL (`/api/shared`) for the current value; its
    /// events come back as [`tab_share::Msg::SnapshotEvent`].
    Snapshot(String),
    /// Close the old stream of a handover and the snapshot.
    EndHandover,
    /// Close every stream of the group.
    CloseSource,
}

/// A tab-sharing effect as the glue does it, or what the group's panel must hear.
fn glue_effect(effect: tab_share::Effect) -> Result<TabsEffect, tab_share::Delivery> {
    use tab_share::Effect as E;
    Ok(match effect {
        E::Deliver(delivery) => return Err(delivery),
        E::Post(wire) => TabsEffect::Post(wire),
        E::RequestLock => TabsEffect::RequestLock,
        E::ReleaseLock => TabsEffect::ReleaseLock,
        E::Open {
            channels,
            last_id,
            handover,
        } => {
            let url = tab_share::stream_url(&channels, last_id.as_deref());
            if handover {
                TabsEffect::HandOver(url)
            } else {
                TabsEffect::OpenSource(url)
            }
        }
        E::Snapshot => TabsEffect::Snapshot(shared::SharedParams::default().to_url()),
        E::EndHandover => TabsEffect::EndHandover,
        E::Close => TabsEffect::CloseSource,
    })
}

/// The page's whole state.
#[derive(Debug, Clone, PartialEq)]
pub struct State {
    pub conn: Conn,
    /// The last `num` received.
    pub counter: Option<u64>,
    pub events: u64,
    pub reconnects: u64,
    pub last_event_id: String,
    /// Why the last stream finished, from its `end` event.
    pub end_reason: Option<EndReason>,
    /// A message for the person: bad input, or why the server refused.
    pub error: Option<String>,
    /// In [`Conn::ClosedOnError`]: true when the browser closed the EventSource by
    /// itself (an HTTP error or a 204 answer: it never retries those), false when the
    /// page did because close-on-error is on.
    pub browser_gave_up: bool,
    close_on_error: bool,
    /// The current stream's parameters, to ask the server why it was refused.
    params: Option<CounterParams>,
    /// When to ask why the current connection failed, and which answer is about it.
    inquiry: Inquiry,
    /// The shared counter panel, which has a life of its own: Connect leaves it alone.
    pub shared: SharedCounter,
    /// How the page's stream (the shared counter's and the chat's, one for both) is
    /// shared with the other tabs; `None` when this tab holds its own streams
    /// (`?share=0`, or a browser without Web Locks or `BroadcastChannel`).
    pub tabs: Option<TabShare>,
    /// The "Channels" panel.
    pub chat: Chat,
    /// The channels the chat needs, which the tab needs beside the counter's.
    chat_needs: tab_share::Channels,
    /// The channels of the chat's own stream, while it holds one (no sharing).
    chat_own: Option<tab_share::Channels>,
    /// The last id the chat's own stream delivered, which its next one resumes after.
    chat_last_id: Option<String>,
    pub log: Log,
}

impl Default for State {
    fn default() -> Self {
        State {
            conn: Conn::Idle,
            counter: None,
            events: 0,
            reconnects: 0,
            last_event_id: String::new(),
            end_reason: None,
            error: None,
            browser_gave_up: false,
            close_on_error: true,
            params: None,
            inquiry: Inquiry::default(),
            shared: SharedCounter::default(),
            tabs: None,
            chat: Chat::default(),
            chat_needs: tab_share::Channels::new(),
            chat_own: None,
            chat_last_id: None,
            log: Log::default(),
        }
    }
}

impl State {
    /// A page whose shared counter panel assumes `config` of the server.
    pub fn new(config: reconnect::Config) -> State {
        State {
            shared: SharedCounter::new(config),
            ..State::default()
        }
    }

    /// This page, its panel's stream shared with the other tabs as `tab`.
    pub fn sharing(self, tab: impl Into<String>) -> State {
        State {
            tabs: Some(TabShare::new(tab)),
            ..self
        }
    }

    /// What the `shared-role` badge says: nothing while the panel is not joined; `own`
    /// when the tab holds its own stream, else `leader` or `follower`.
    pub fn shared_role(&self) -> Option<&'static str> {
        if !self.shared.conn.is_joined() {
            return None;
        }
        Some(self.tabs.as_ref().map_or("own", |t| t.role().as_str()))
    }

    /// An input for the panel. While the tabs share a stream, its own stream effects go
    /// to [`tab_share`] instead (a new stream is the leader's to open), and what it needs
    /// follows from whether it is joined.
    fn shared_update(&mut self, msg: shared_counter::Msg, now_ms: u64) -> Vec<Effect> {
        let effects = self.shared.update(msg, now_ms, &mut self.log);
        if self.tabs.is_none() {
            return effects.into_iter().map(Effect::Shared).collect();
        }
        let mut out = Vec::new();
        let mut to_tabs = VecDeque::new();
        for effect in effects {
            match effect {
                shared_counter::Effect::OpenSource(_) => to_tabs.push_back(tab_share::Msg::Reopen),
                // The stream closes when no tab needs it, or when the leader reopens it.
                shared_counter::Effect::CloseSource => {}
                // Only the leader's stream can be asked about; a follower hears the
                // leader's policy at work.
                shared_counter::Effect::AskWhy { .. }
                    if self.tabs.as_ref().map(TabShare::role)
                        == Some(tab_share::Role::Follower) => {}
                effect => out.push(Effect::Shared(effect)),
            }
        }
        to_tabs.push_back(tab_share::Msg::Need(self.tab_needs()));
        for msg in to_tabs {
            out.extend(self.tabs_update(msg, now_ms));
        }
        out
    }

    /// What this tab needs of the shared stream: the counter while the panel is
    /// joined, and the chat's channels.
    fn tab_needs(&self) -> tab_share::Channels {
        let mut needs = self.chat_needs.clone();
        if self.shared.conn.is_joined() {
            needs.insert(tab_share::SHARED_COUNTER.to_owned());
        }
        needs
    }

    /// A tab-sharing input; what it delivers goes to the panel it is for.
    fn tabs_update(&mut self, msg: tab_share::Msg, now_ms: u64) -> Vec<Effect> {
        use tab_share::Delivery;
        let Some(tabs) = self.tabs.as_mut() else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for effect in tabs.update(msg) {
            match glue_effect(effect) {
                Ok(effect) => out.push(Effect::Tabs(effect)),
                Err(Delivery::Opened) => {
                    // A panel that is open already (the stream reopened for another
                    // panel's channels) has nothing new to hear.
                    if self.shared.conn != shared_counter::Conn::Open {
                        out.extend(self.shared_update(shared_counter::Msg::Opened, now_ms));
                    }
                    if self.chat.conn != chat::ChatConn::Open {
                        out.extend(self.chat_update(chat::Msg::Opened, now_ms));
                    }
                }
                Err(Delivery::Error { closed, jitter }) => {
                    let msg = shared_counter::Msg::Error { closed, jitter };
                    out.extend(self.shared_update(msg, now_ms));
                    out.extend(self.chat_update(chat::Msg::Error { closed }, now_ms));
                }
                Err(Delivery::Counter { name, id, data }) => {
                    let msg = shared_counter::Msg::from_event(&name, id, data);
                    out.extend(self.shared_update(msg, now_ms));
                }
                Err(Delivery::Chat { name, id, data }) => {
                    out.extend(self.shared_update(shared_counter::Msg::Alive, now_ms));
                    out.extend(self.chat_update(chat::Msg::Event { name, id, data }, now_ms));
                }
            }
        }
        out
    }

    /// An input for the chat. Its stream effects go to [`tab_share`] while the tabs share
    /// its stream, or become this tab's own stream.
    fn chat_update(&mut self, msg: chat::Msg, now_ms: u64) -> Vec<Effect> {
        if self.tabs.is_none() {
            if let chat::Msg::Event { id, .. } = &msg {
                if !id.is_empty() {
                    self.chat_last_id = Some(id.clone());
                }
            }
        }
        let mut out = Vec::new();
        for effect in self.chat.update(msg) {
            match effect {
                chat::Effect::Need(channels) => out.extend(self.chat_need(channels, now_ms)),
                chat::Effect::Reopen => out.extend(self.chat_reopen(now_ms)),
                effect => out.push(Effect::Chat(effect)),
            }
        }
        out
    }

    /// The chat needs a stream of `channels` now.
    fn chat_need(&mut self, channels: tab_share::Channels, now_ms: u64) -> Vec<Effect> {
        if self.tabs.is_some() {
            self.chat_needs = channels;
            return self.tabs_update(tab_share::Msg::Need(self.tab_needs()), now_ms);
        }
        if channels.is_empty() {
            self.chat_last_id = None;
            return match self.chat_own.take() {
                Some(_) => vec![Effect::ChatOwn(TabsEffect::CloseSource)],
                None => Vec::new(),
            };
        }
        if self.chat_own.as_ref() == Some(&channels) {
            return Vec::new();
        }
        if self.chat_own.is_none() {
            // A new sign-in starts live.
            self.chat_last_id = None;
        }
        self.chat_own = Some(channels);
        self.chat_reopen(now_ms)
    }

    /// A new stream for the chat after its last id.
    fn chat_reopen(&mut self, now_ms: u64) -> Vec<Effect> {
        if self.tabs.is_some() {
            return self.tabs_update(tab_share::Msg::Reopen, now_ms);
        }
        match &self.chat_own {
            Some(channels) => vec![
                Effect::ChatOwn(TabsEffect::CloseSource),
                Effect::ChatOwn(TabsEffect::OpenSource(tab_share::stream_url(
                    channels,
                    self.chat_last_id.as_deref(),
                ))),
            ],
            None => Vec::new(),
        }
    }

    /// What the chat's `chat-role` would say: `own`, `leader` or `follower` while
    /// signed in.
    pub fn chat_role(&self) -> Option<&'static str> {
        self.chat.user.as_ref()?;
        Some(self.tabs.as_ref().map_or("own", |t| t.role().as_str()))
    }

    pub fn update(&mut self, msg: Msg, now_ms: u64) -> Vec<Effect> {
        match msg {
            Msg::Tabs(msg) => self.tabs_update(msg, now_ms),
            Msg::Chat(msg) => self.chat_update(msg, now_ms),
            Msg::Connect(form) => self.connect(&form, now_ms),
            Msg::Close => {
                if !self.conn.is_live() {
                    return Vec::new();
                }
                self.conn = Conn::ClosedByUser;
                self.log_line(
                    now_ms,
                    LogKind::Close,
                    "",
                    "closed by the page: no reconnect",
                );
                vec![Effect::CloseSource]
            }
            Msg::OpenFailed { error } => {
                if !self.conn.is_live() {
                    return Vec::new();
                }
                let message = format!("cannot open EventSource: {error}");
                self.conn = Conn::ClosedOnError;
                self.log_line(now_ms, LogKind::Error, "", &message);
                self.error = Some(message);
                vec![Effect::CloseSource]
            }
            Msg::Opened => {
                if !self.conn.is_live() {
                    return Vec::new();
                }
                // A reconnect is an `open` after an error.
                if self.conn == Conn::Reconnecting {
                    self.reconnects += 1;
                }
                self.conn = Conn::Open;
                self.inquiry.opened();
                // Whatever went wrong before (say, the server was not up yet) is over.
                self.error = None;
                let detail = match self.last_event_id.as_str() {
                    "" => String::new(),
                    id => format!("resumed after Last-Event-ID {id}"),
                };
                self.log_line(now_ms, LogKind::Open, "", &detail);
                Vec::new()
            }
            Msg::Message { id, data } => {
                if !self.conn.is_live() {
                    return Vec::new();
                }
                match serde_json::from_str::<Tick>(&data) {
                    Ok(tick) => {
                        self.counter = Some(tick.num);
                        self.events += 1;
                        self.log_line(now_ms, LogKind::Message, &id, &data);
                        self.last_event_id = id;
                    }
                    Err(e) => {
                        self.log_line(now_ms, LogKind::Malformed, &id, &format!("{data} ({e})"))
                    }
                }
                Vec::new()
            }
            Msg::End { data } => {
                if !self.conn.is_live() {
                    return Vec::new();
                }
                match serde_json::from_str::<End>(&data) {
                    Ok(end) => {
                        self.end_reason = Some(end.reason);
                        self.log_line(now_ms, LogKind::End, "", &data);
                    }
                    Err(e) => self.log_line(
                        now_ms,
                        LogKind::Malformed,
                        "",
                        &format!("end: {data} ({e})"),
                    ),
                }
                // The server said it is done: close before the browser sees the stream
                // end as an error and reconnects.
                self.conn = Conn::Finished;
                vec![Effect::CloseSource]
            }
            Msg::Error { closed } => self.error(closed, now_ms),
            Msg::Shared(msg) => self.shared_update(msg, now_ms),
            Msg::Why { serial, answer } => {
                if !self.inquiry.is_current(serial) {
                    return Vec::new();
                }
                let refusal = Refusal::from_answer(answer.as_ref());
                if let Some(message) = refusal.counter_message(&self.last_event_id) {
                    self.log_line(now_ms, LogKind::Refused, "", &message);
                    self.error = Some(message);
                }
                Vec::new()
            }
        }
    }

    /// Adds a line about the per-client counter to the log.
    fn log_line(&mut self, now_ms: u64, kind: LogKind, id: &str, data: &str) {
        self.log.push(now_ms, Stream::Counter, kind, id, data);
    }

    fn connect(&mut self, form: &Form, now_ms: u64) -> Vec<Effect> {
        let params = match form.params() {
            Ok(params) => params,
            Err(e) => {
                // Bad input leaves an open stream alone.
                self.error = Some(e.to_string());
                return Vec::new();
            }
        };
        let url = params.to_url();
        let mut inquiry = std::mem::take(&mut self.inquiry);
        inquiry.start();
        *self = State {
            conn: Conn::Connecting,
            close_on_error: form.close_on_error,
            params: Some(params),
            inquiry,
            shared: std::mem::take(&mut self.shared),
            tabs: self.tabs.take(),
            chat: std::mem::take(&mut self.chat),
            chat_needs: std::mem::take(&mut self.chat_needs),
            chat_own: self.chat_own.take(),
            chat_last_id: self.chat_last_id.take(),
            log: std::mem::take(&mut self.log),
            ..State::default()
        };
        self.log_line(now_ms, LogKind::Connect, "", &url);
        // A second Connect closes the open source before opening the new one.
        vec![Effect::CloseSource, Effect::OpenSource(url)]
    }

    fn error(&mut self, closed: bool, now_ms: u64) -> Vec<Effect> {
        if !self.conn.is_live() {
            return Vec::new();
        }
        let mut effects = Vec::new();
        if self.close_on_error {
            self.conn = Conn::ClosedOnError;
            self.log_line(
                now_ms,
                LogKind::Error,
                "",
                "closed by the page, so the browser does not reconnect",
            );
            effects.push(Effect::CloseSource);
        } else if closed {
            // The browser gave up by itself: it does that on an HTTP error status, a
            // wrong content type or a 204, and never retries. Nothing will reconnect, so
            // "reconnecting" would be a lie, and "open" or "finished" are wrong too; the
            // connection is closed because of an error, which is what `closed-on-error`
            // says. The detail line and the log say that the browser closed it, not the
            // page.
            self.conn = Conn::ClosedOnError;
            self.browser_gave_up = true;
            self.log_line(
                now_ms,
                LogKind::Error,
                "",
                "the browser gave up by itself: no reconnect",
            );
            effects.push(Effect::CloseSource);
        } else {
            self.conn = Conn::Reconnecting;
            self.log_line(
                now_ms,
                LogKind::Error,
                "",
                "the browser reconnects by itself with Last-Event-ID",
            );
        }
        if let (Some(serial), Some(mut params)) = (self.inquiry.ask(closed), self.params) {
            // Ask as the browser did: a resume sends the last id it saw.
            params.last_event_id = self.last_event_id.parse().ok();
            effects.push(Effect::AskWhy {
                url: params.to_url(),
                serial,
            });
        }
        effects
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn form(count: &str, drop_after: &str, close_on_error: bool) -> Form {
        Form {
            count: count.into(),
            interval_ms: "100".into(),
            drop_after: drop_after.into(),
            close_on_error,
        }
    }

    fn tick(n: u64) -> Msg {
        Msg::Message {
            id: n.to_string(),
            data: format!(r#"{{"num":{n},"sent_at_us":1}}"#),
        }
    }

    fn answer(status: u16, body: &str) -> Option<Answer> {
        Some(Answer {
            status,
            retry_after: None,
            body: body.to_owned(),
        })
    }

    fn connected(close_on_error: bool) -> State {
        let mut s = State::default();
        s.update(Msg::Connect(form("5", "", close_on_error)), 0);
        s.update(Msg::Opened, 1);
        s
    }

    #[test]
    fn starts_idle() {
        let s = State::default();
        assert_eq!(s.conn.as_str(), "idle");
        assert_eq!((s.counter, s.events, s.reconnects), (None, 0, 0));
    }

    #[test]
    fn connect_opens_the_stream_with_the_shared_url() {
        let mut s = State::default();
        let fx = s.update(Msg::Connect(form("3", "2", true)), 0);
        let url = "/api/counter?count=3&interval_ms=100&drop_after=2".to_owned();
        assert_eq!(fx, vec![Effect::CloseSource, Effect::OpenSource(url)]);
        assert_eq!(s.conn, Conn::Connecting);
    }

    #[test]
    fn a_second_connect_closes_first_and_starts_afresh() {
        let mut s = connected(true);
        s.update(tick(1), 2);
        let fx = s.update(Msg::Connect(form("3", "", true)), 3);
        assert_eq!(fx[0], Effect::CloseSource);
        assert_eq!((s.conn, s.counter, s.events), (Conn::Connecting, None, 0));
        assert!(s.log.len() > 2, "the log is kept across connections");
    }

    #[test]
    fn bad_input_is_refused_before_connecting() {
        let mut s = State::default();
        for bad in [
            form("0", "", true),
            form("abc", "", true),
            form("3", "-1", true),
        ] {
            assert!(s.update(Msg::Connect(bad), 0).is_empty());
            assert_eq!(s.conn, Conn::Idle);
            assert!(s.error.is_some());
        }
        let mut f = form("3", "", true);
        f.interval_ms = "3600001".into();
        assert!(s.update(Msg::Connect(f), 0).is_empty());
        assert!(s.error.as_deref().unwrap().contains("interval_ms"));
    }

    #[test]
    fn opened_then_ticks_update_the_counter() {
        let mut s = connected(true);
        assert_eq!(s.conn, Conn::Open);
        s.update(tick(1), 2);
        s.update(tick(2), 3);
        assert_eq!((s.counter, s.events), (Some(2), 2));
        assert_eq!(s.last_event_id, "2");
    }

    #[test]
    fn malformed_data_is_logged_not_fatal() {
        let mut s = connected(true);
        s.update(
            Msg::Message {
                id: "1".into(),
                data: "not json".into(),
            },
            2,
        );
        assert_eq!((s.counter, s.events, s.conn), (None, 0, Conn::Open));
        assert_eq!(s.log.last().unwrap().kind, LogKind::Malformed);
        s.update(Msg::End { data: "{".into() }, 3);
        assert_eq!(s.conn, Conn::Finished);
    }

    #[test]
    fn end_closes_and_finishes() {
        let mut s = connected(true);
        s.update(tick(5), 2);
        let fx = s.update(
            Msg::End {
                data: r#"{"reason":"complete","last":5}"#.into(),
            },
            3,
        );
        assert_eq!(fx, vec![Effect::CloseSource]);
        assert_eq!(s.conn.as_str(), "finished");
        assert_eq!(s.end_reason, Some(EndReason::Complete));
        // The error the browser would raise as the stream ends changes nothing now.
        assert!(s.update(Msg::Error { closed: false }, 4).is_empty());
        assert_eq!(s.conn, Conn::Finished);
    }

    #[test]
    fn end_on_shutdown_says_so() {
        let mut s = connected(false);
        s.update(
            Msg::End {
                data: r#"{"reason":"shutdown","last":2}"#.into(),
            },
            3,
        );
        assert_eq!(
            (s.conn, s.end_reason),
            (Conn::Finished, Some(EndReason::Shutdown))
        );
        assert!(s.log.last().unwrap().data.contains("shutdown"));
    }

    #[test]
    fn error_with_close_on_error_closes_at_once() {
        let mut s = connected(true);
        s.update(tick(2), 2);
        let fx = s.update(Msg::Error { closed: false }, 3);
        assert_eq!(fx, vec![Effect::CloseSource]);
        assert_eq!(s.conn.as_str(), "closed-on-error");
        assert_eq!(s.counter, Some(2));
        // Nothing after that moves it.
        s.update(Msg::Opened, 4);
        s.update(tick(3), 5);
        assert_eq!(
            (s.conn, s.counter, s.reconnects),
            (Conn::ClosedOnError, Some(2), 0)
        );
    }

    #[test]
    fn error_without_close_on_error_reconnects_and_counts() {
        let mut s = connected(false);
        s.update(tick(2), 2);
        assert!(s.update(Msg::Error { closed: false }, 3).is_empty());
        assert_eq!(s.conn.as_str(), "reconnecting");
        s.update(Msg::Opened, 4);
        assert_eq!((s.conn, s.reconnects), (Conn::Open, 1));
        s.update(tick(3), 5);
        s.update(Msg::Error { closed: false }, 6);
        s.update(Msg::Opened, 7);
        assert_eq!((s.reconnects, s.counter), (2, Some(3)));
    }

    #[test]
    fn an_error_before_opening_asks_why() {
        let mut s = State::default();
        s.update(Msg::Connect(form("3", "2", true)), 0);
        let fx = s.update(Msg::Error { closed: true }, 1);
        assert_eq!(
            fx,
            vec![
                Effect::CloseSource,
                Effect::AskWhy {
                    url: "/api/counter?count=3&interval_ms=100&drop_after=2".into(),
                    serial: 1,
                }
            ]
        );
        assert_eq!(s.conn, Conn::ClosedOnError);
        assert!(
            !s.browser_gave_up,
            "close-on-error is on: the page closed it"
        );
        s.update(
            Msg::Why {
                serial: 1,
                answer: answer(
                    400,
                    r#"{"error":"drop_after (fault injection) is not enabled on this server","param":"drop_after"}"#,
                ),
            },
            2,
        );
        let error = s.error.as_deref().unwrap();
        assert!(error.contains("--allow-fault-injection"), "{error}");
        assert_eq!(s.log.last().unwrap().kind, LogKind::Refused);
    }

    /// A stream that failed before it opened (the browser gave up, or not), and the
    /// server's answer to the page asking why.
    fn refused_before_opening(closed: bool, status: u16, body: &str) -> State {
        let mut s = State::default();
        s.update(Msg::Connect(form("3", "", true)), 0);
        s.update(Msg::Error { closed }, 1);
        s.update(
            Msg::Why {
                serial: 1,
                answer: answer(status, body),
            },
            2,
        );
        s
    }

    #[test]
    fn other_refusals_show_the_servers_reason() {
        let s = refused_before_opening(true, 503, r#"{"error":"too many open streams"}"#);
        assert_eq!(
            s.error.as_deref(),
            Some("The server refused the stream (HTTP 503): too many open streams")
        );
        let s = refused_before_opening(true, 502, "<html>bad gateway</html>");
        assert_eq!(
            s.error.as_deref(),
            Some("The server refused the stream (HTTP 502)")
        );
    }

    #[test]
    fn a_refusal_says_when_the_server_suggests_trying_again() {
        let mut s = State::default();
        s.update(Msg::Connect(form("3", "", true)), 0);
        s.update(Msg::Error { closed: true }, 1);
        s.update(
            Msg::Why {
                serial: 1,
                answer: Some(Answer {
                    status: 503,
                    retry_after: Some("2".into()),
                    body: r#"{"error":"too many open streams","reason":"capacity"}"#.into(),
                }),
            },
            2,
        );
        assert_eq!(
            s.error.as_deref(),
            Some(
                "The server refused the stream (HTTP 503): too many open streams. The server \
                 suggests trying again in 2 s"
            )
        );
        // The teaching behaviour stays: the page closed it, and nothing reconnects.
        assert_eq!(s.conn, Conn::ClosedOnError);
    }

    #[test]
    fn an_unreachable_server_is_named_and_asked_about_once() {
        let mut s = State::default();
        s.update(Msg::Connect(form("3", "", false)), 0);
        let fx = s.update(Msg::Error { closed: false }, 1);
        assert!(matches!(fx.as_slice(), [Effect::AskWhy { .. }]), "{fx:?}");
        assert_eq!(s.conn, Conn::Reconnecting);
        s.update(
            Msg::Why {
                serial: 1,
                answer: None,
            },
            2,
        );
        assert!(s
            .error
            .as_deref()
            .unwrap()
            .contains("Cannot reach the server"));
        // The browser keeps retrying; the page does not keep fetching.
        assert!(s.update(Msg::Error { closed: false }, 3).is_empty());
        // The server comes up: the stream opens and the message goes away.
        s.update(Msg::Opened, 4);
        assert_eq!(
            (s.conn, s.reconnects, s.error.as_deref()),
            (Conn::Open, 1, None)
        );
    }

    #[test]
    fn a_late_answer_about_an_earlier_connection_is_ignored() {
        let mut s = State::default();
        s.update(Msg::Connect(form("3", "", true)), 0);
        s.update(Msg::Error { closed: true }, 1);
        s.update(Msg::Connect(form("4", "", true)), 2);
        s.update(
            Msg::Why {
                serial: 1,
                answer: answer(400, r#"{"error":"old"}"#),
            },
            3,
        );
        assert_eq!((s.conn, s.error.as_deref()), (Conn::Connecting, None));
    }

    #[test]
    fn the_browser_giving_up_is_closed_on_error_even_without_close_on_error() {
        let mut s = connected(false);
        s.update(tick(1), 2);
        s.update(tick(2), 3);
        let fx = s.update(Msg::Error { closed: true }, 4);
        // It asks again as the browser did: resuming after the last id it saw.
        assert_eq!(
            fx,
            vec![
                Effect::CloseSource,
                Effect::AskWhy {
                    url: "/api/counter?count=5&interval_ms=100&last_event_id=2".into(),
                    serial: 1,
                }
            ]
        );
        assert_eq!(s.conn, Conn::ClosedOnError);
        assert!(s.browser_gave_up);
        assert!(s.log.last().unwrap().data.contains("the browser gave up"));
        s.update(
            Msg::Why {
                serial: 1,
                answer: answer(204, ""),
            },
            5,
        );
        assert!(s.error.as_deref().unwrap().contains("204 No Content"));
    }

    #[test]
    fn a_refusal_that_was_not_one_says_nothing() {
        let s = refused_before_opening(false, 200, "");
        assert_eq!(s.error, None);
    }

    #[test]
    fn a_drop_after_opening_is_no_refusal() {
        let mut s = connected(false);
        s.update(tick(1), 2);
        assert!(s.update(Msg::Error { closed: false }, 3).is_empty());
    }

    #[test]
    fn close_button_closes_by_user() {
        let mut s = connected(true);
        s.update(tick(1), 2);
        assert_eq!(s.update(Msg::Close, 3), vec![Effect::CloseSource]);
        assert_eq!(s.conn.as_str(), "closed-by-user");
        s.update(tick(2), 4);
        assert_eq!(s.counter, Some(1), "no tick after close");
        // Close when nothing is open does nothing.
        let mut idle = State::default();
        assert!(idle.update(Msg::Close, 0).is_empty());
        assert_eq!(idle.conn, Conn::Idle);
    }

    #[test]
    fn the_log_is_bounded() {
        let mut s = connected(true);
        for n in 1..=(LOG_LIMIT as u64 + 50) {
            s.update(tick(n), n);
        }
        assert_eq!(s.log.len(), LOG_LIMIT);
        assert_eq!(
            s.log.last().unwrap().id,
            (LOG_LIMIT as u64 + 50).to_string()
        );
    }

    #[test]
    fn log_entries_are_numbered_across_connections() {
        let mut s = connected(true);
        s.update(Msg::Connect(form("3", "", true)), 2);
        let seqs: Vec<u64> = s.log.iter().map(|e| e.seq).collect();
        assert_eq!(seqs, [1, 2, 3]);
        let kinds: Vec<LogKind> = s.log.iter().map(|e| e.kind).collect();
        assert_eq!(kinds, [LogKind::Connect, LogKind::Open, LogKind::Connect]);
    }

    #[test]
    fn bad_input_leaves_an_open_stream_alone() {
        let mut s = connected(true);
        assert!(s.update(Msg::Connect(form("x", "", true)), 2).is_empty());
        assert_eq!(s.conn, Conn::Open);
        assert!(s.error.as_deref().unwrap().starts_with("count must be"));
        // A good Connect clears the message.
        s.update(Msg::Connect(form("3", "", true)), 3);
        assert_eq!(s.error, None);
    }

    #[test]
    fn a_source_that_cannot_be_made_is_closed_with_the_reason() {
        let mut s = State::default();
        s.update(Msg::Connect(form("3", "", false)), 0);
        let fx = s.update(
            Msg::OpenFailed {
                error: "SyntaxError".into(),
            },
            1,
        );
        assert_eq!(fx, vec![Effect::CloseSource]);
        assert_eq!(s.conn, Conn::ClosedOnError);
        assert_eq!(
            s.error.as_deref(),
            Some("cannot open EventSource: SyntaxError")
        );
        assert_eq!(s.log.last().unwrap().kind, LogKind::Error);
        // Nothing is live any more, so a second report changes nothing.
        assert!(s
            .update(
                Msg::OpenFailed {
                    error: "again".into()
                },
                2
            )
            .is_empty());
    }

    #[test]
    fn the_panel_and_the_counter_are_independent() {
        let mut s = connected(true);
        let fx = s.update(Msg::Shared(shared_counter::Msg::Join), 2);
        assert_eq!(
            fx[..2],
            [
                Effect::Shared(shared_counter::Effect::CloseSource),
                Effect::Shared(shared_counter::Effect::OpenSource("/api/shared".into())),
            ]
        );
        assert_eq!(s.conn, Conn::Open, "joining leaves the counter alone");
        s.update(Msg::Connect(form("3", "", true)), 3);
        assert_eq!(
            s.shared.conn,
            shared_counter::Conn::Connecting,
            "Connect leaves the panel alone"
        );
        let streams: Vec<Stream> = s.log.iter().map(|e| e.stream).collect();
        assert_eq!(
            streams,
            [
                Stream::Counter,
                Stream::Counter,
                Stream::Shared,
                Stream::Counter
            ]
        );
    }

    #[test]
    fn a_sharing_tab_joins_through_the_lock_and_follows_or_leads() {
        use tab_share::{Msg as T, Relayed, Wire};
        let mut s = State::default().sharing("me");
        assert_eq!(s.shared_role(), None, "not joined");
        let fx = s.update(Msg::Shared(shared_counter::Msg::Join), 1);
        assert!(
            !fx.iter().any(|e| matches!(
                e,
                Effect::Shared(shared_counter::Effect::OpenSource(_))
                    | Effect::Tabs(TabsEffect::OpenSource(_))
            )),
            "no stream before the lock: {fx:?}"
        );
        assert!(
            fx.contains(&Effect::Tabs(TabsEffect::RequestLock)),
            "{fx:?}"
        );
        assert_eq!(s.shared_role(), Some("follower"));
        // Another tab leads: its events reach this panel.
        s.update(Msg::Tabs(T::Peer(Wire::Opened)), 2);
        s.update(
            Msg::Tabs(T::Peer(Wire::Event(Relayed {
                name: "message".into(),
                id: Some("4".into()),
                data: r#"{"value":4,"sent_at_us":1}"#.into(),
                counter: false,
            }))),
            3,
        );
        assert_eq!(s.shared.conn, shared_counter::Conn::Open);
        assert_eq!((s.shared.value, s.shared.last_id), (Some(4), Some(4)));
        // The leader goes; this tab gets the lock and resumes after 4.
        let fx = s.update(Msg::Tabs(T::LockGranted), 4);
        assert!(
            fx.contains(&Effect::Tabs(TabsEffect::OpenSource(
                "/api/shared?last_event_id=4".into()
            ))),
            "{fx:?}"
        );
        assert_eq!(s.shared_role(), Some("leader"));
        // Its own stream's events are passed on to the others.
        let fx = s.update(
            Msg::Tabs(T::SourceEvent {
                name: "message".into(),
                id: "5".into(),
                data: r#"{"value":5,"sent_at_us":1}"#.into(),
            }),
            5,
        );
        assert!(
            matches!(
                fx.as_slice(),
                [Effect::Tabs(TabsEffect::Post(Wire::Event(_)))]
            ),
            "{fx:?}"
        );
        assert_eq!(s.shared.value, Some(5));
        // Leave: the stream closes and the lock goes to the next tab.
        let fx = s.update(Msg::Shared(shared_counter::Msg::Leave), 6);
        assert!(
            fx.contains(&Effect::Tabs(TabsEffect::CloseSource)),
            "{fx:?}"
        );
        assert!(
            fx.contains(&Effect::Tabs(TabsEffect::ReleaseLock)),
            "{fx:?}"
        );
        assert_eq!(s.shared_role(), None);
    }

    #[test]
    fn a_tab_that_does_not_share_holds_its_own_stream() {
        let mut s = State::default();
        let fx = s.update(Msg::Shared(shared_counter::Msg::Join), 1);
        assert!(
            fx.contains(&Effect::Shared(shared_counter::Effect::OpenSource(
                "/api/shared".into()
            )))
        );
        assert_eq!(s.shared_role(), Some("own"));
        assert!(tab_share::share_requested(""));
        assert!(tab_share::share_requested("?shared=1&share=1"));
        assert!(!tab_share::share_requested("?shared=1&share=0"));
    }

    fn chat_session(name: &str) -> Msg {
        Msg::Chat(chat::Msg::Session {
            purpose: chat::Purpose::SignIn,
            answer: answer(200, &format!(r#"{{"name":"{name}","expires_at":1900}}"#)),
            now_unix_ms: 1_000_000,
            jitter: 0.0,
        })
    }

    fn chat_streams(effects: &[Effect]) -> Vec<&TabsEffect> {
        effects
            .iter()
            .filter_map(|e| match e {
                Effect::ChatOwn(t) | Effect::Tabs(t) => Some(t),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn the_chats_own_stream_opens_for_its_channels_and_resumes_after_its_last_id() {
        let mut s = State::default();
        let fx = s.update(chat_session("ann"), 0);
        let url = "/api/events?channel=rooms%2Flobby&channel=users%2Fann".to_owned();
        assert_eq!(
            chat_streams(&fx),
            [&TabsEffect::CloseSource, &TabsEffect::OpenSource(url)]
        );
        s.update(Msg::Chat(chat::Msg::Opened), 1);
        s.update(
            Msg::Chat(chat::Msg::Event {
                name: "message".into(),
                id: "e-7".into(),
                data:
                    r#"{"channel":"rooms/lobby","data":{"text":"hi"},"from":"bob","sent_at_us":1}"#
                        .into(),
            }),
            2,
        );
        let fx = s.update(
            Msg::Chat(chat::Msg::Event {
                name: "end".into(),
                id: "e-7".into(),
                data: r#"{"reason":"expired","last":"e-7"}"#.into(),
            }),
            3,
        );
        assert_eq!(
            fx,
            [Effect::Chat(chat::Effect::RefreshSession(
                chat::Purpose::Expired
            ))]
        );
        let fx = s.update(
            Msg::Chat(chat::Msg::Session {
                purpose: chat::Purpose::Expired,
                answer: answer(200, r#"{"name":"ann","expires_at":2800}"#),
                now_unix_ms: 1_900_000,
                jitter: 0.0,
            }),
            4,
        );
        let url =
            "/api/events?channel=rooms%2Flobby&channel=users%2Fann&last_event_id=e-7".to_owned();
        assert_eq!(
            chat_streams(&fx),
            [&TabsEffect::CloseSource, &TabsEffect::OpenSource(url)]
        );
        // Joining a room reopens for the new set, after the last id too.
        let fx = s.update(
            Msg::Chat(chat::Msg::Join {
                room: "games".into(),
            }),
            5,
        );
        assert!(
            matches!(chat_streams(&fx)[..], [TabsEffect::CloseSource, TabsEffect::OpenSource(url)]
            if url.contains("channel=rooms%2Fgames") && url.ends_with("last_event_id=e-7"))
        );
    }

    #[test]
    fn a_shared_chat_stream_is_asked_of_the_tabs_and_a_connect_keeps_it() {
        let mut s = State::default().sharing("t1");
        let fx = s.update(chat_session("ann"), 0);
        assert!(matches!(
            chat_streams(&fx)[..],
            [
                TabsEffect::Post(tab_share::Wire::Need { .. }),
                TabsEffect::RequestLock
            ]
        ));
        assert_eq!(s.chat_role(), Some("follower"));
        s.update(Msg::Connect(form("3", "", true)), 1);
        assert!(s.tabs.is_some(), "Connect keeps the sharing");
        assert_eq!(s.chat.user.as_deref(), Some("ann"));
        let fx = s.update(Msg::Tabs(tab_share::Msg::LockGranted), 2);
        assert_eq!(s.chat_role(), Some("leader"));
        assert!(chat_streams(&fx)
            .iter()
            .any(|e| matches!(e, TabsEffect::OpenSource(url) if url.starts_with("/api/events?"))));
        // Signing out gives the stream and the lock back.
        let fx = s.update(
            Msg::Chat(chat::Msg::SignedOut {
                answer: answer(204, ""),
            }),
            3,
        );
        assert!(chat_streams(&fx).contains(&&TabsEffect::ReleaseLock));
        assert_eq!(s.chat_role(), None);
    }

    #[test]
    fn the_counter_and_the_chat_are_one_group_and_each_event_goes_to_its_panel() {
        use tab_share::Msg as T;
        let mut s = State::default().sharing("t1");
        s.update(Msg::Shared(shared_counter::Msg::Join), 0);
        s.update(chat_session("ann"), 1);
        let fx = s.update(Msg::Tabs(T::LockGranted), 2);
        let url = "/api/events?channel=counter&channel=rooms%2Flobby&channel=users%2Fann";
        assert!(
            fx.contains(&Effect::Tabs(TabsEffect::OpenSource(url.into()))),
            "one stream for both panels: {fx:?}"
        );
        assert_eq!(
            (s.shared_role(), s.chat_role()),
            (Some("leader"), Some("leader"))
        );
        let fx = s.update(Msg::Tabs(T::SourceOpened), 3);
        assert!(fx.contains(&Effect::Tabs(TabsEffect::Snapshot("/api/shared".into()))));
        assert_eq!(s.shared.conn, shared_counter::Conn::Open);
        assert_eq!(s.chat.conn, chat::ChatConn::Open);
        s.update(
            Msg::Tabs(T::SnapshotEvent {
                name: "message".into(),
                data: r#"{"value":7,"sent_at_us":1}"#.into(),
            }),
            4,
        );
        s.update(
            Msg::Tabs(T::SourceEvent {
                name: "message".into(),
                id: "e-1".into(),
                data: r#"{"channel":"counter","data":{"value":8},"sent_at_us":1}"#.into(),
            }),
            5,
        );
        s.update(
            Msg::Tabs(T::SourceEvent {
                name: "message".into(),
                id: "e-2".into(),
                data:
                    r#"{"channel":"rooms/lobby","data":{"text":"hi"},"from":"bob","sent_at_us":1}"#
                        .into(),
            }),
            6,
        );
        assert_eq!((s.shared.value, s.shared.last_id), (Some(8), Some(8)));
        assert_eq!(s.shared.events, 2, "the snapshot's value and the change");
        let texts: Vec<&str> = s.chat.messages.iter().map(|m| m.text.as_str()).collect();
        assert_eq!(texts, ["hi"], "the counter's change is not a chat message");
        // The union stream drops: the leader reopens it after the last id, soon.
        let fx = s.update(
            Msg::Tabs(T::SourceError {
                closed: false,
                jitter: 0.5,
            }),
            7,
        );
        let Some(&Effect::Shared(shared_counter::Effect::SetTimer { generation, ms })) = fx
            .iter()
            .find(|e| matches!(e, Effect::Shared(shared_counter::Effect::SetTimer { .. })))
        else {
            panic!("a timer for the reopen: {fx:?}");
        };
        assert_eq!(ms, 250, "half of min(retry 3 s, 0.5 s)");
        assert!(
            !fx.iter()
                .any(|e| matches!(e, Effect::Tabs(TabsEffect::OpenSource(_)))),
            "not at once: {fx:?}"
        );
        let fx = s.update(Msg::Shared(shared_counter::Msg::Timer { generation }), 507);
        let again = tab_share::stream_url(
            &["counter", "rooms/lobby", "users/ann"]
                .map(str::to_owned)
                .into_iter()
                .collect(),
            Some("e-2"),
        );
        assert!(
            fx.contains(&Effect::Tabs(TabsEffect::OpenSource(again))),
            "{fx:?}"
        );
    }

    #[test]
    fn an_own_stream_that_drops_reopens_soon_after_its_last_id() {
        let mut s = State::default();
        s.update(Msg::Shared(shared_counter::Msg::Join), 1);
        s.update(Msg::Shared(shared_counter::Msg::Opened), 2);
        s.update(
            Msg::Shared(shared_counter::Msg::Value {
                id: "6".into(),
                data: r#"{"value":6,"sent_at_us":1}"#.into(),
            }),
            3,
        );
        let fx = s.update(
            Msg::Shared(shared_counter::Msg::Error {
                closed: false,
                jitter: 0.1,
            }),
            4,
        );
        assert_eq!(fx[0], Effect::Shared(shared_counter::Effect::CloseSource));
        let Effect::Shared(shared_counter::Effect::SetTimer { generation, ms }) = fx[1] else {
            panic!("a timer for the reopen: {fx:?}");
        };
        assert_eq!(ms, 50);
        let fx = s.update(Msg::Shared(shared_counter::Msg::Timer { generation }), 104);
        assert!(
            fx.contains(&Effect::Shared(shared_counter::Effect::OpenSource(
                "/api/shared?last_event_id=6".into()
            ))),
            "{fx:?}"
        );
    }
}
