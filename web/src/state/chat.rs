//! The "Channels" panel: a small chat on the server's channels, signed in with the demo
//! sign-in (`--demo-login`), whose token lives in the `HttpOnly` cookie `sse_token` that
//! the browser sends with the stream and the publishes (the page never sees it).
//!
//! - Signing in joins [`LOBBY`] and the user's own channel `users/<name>`, where direct
//!   messages arrive; more rooms can be joined. What the panel needs is a set of
//!   channels ([`Effect::Need`]); the page opens one stream for it, or shares one with
//!   the other tabs (`tab_share`), the one that carries the shared counter too.
//! - Before the token's `exp` the panel refreshes the session (a new cookie, the same
//!   session); the stream opened with the old token ends with `end` `expired`, and the
//!   panel reopens it after the last id, with the new cookie. `end` `revoked` (signed
//!   out in another tab) signs the panel out, and nothing reconnects.
//! - Messages are kept as text and shown as text: markup in a message is never parsed.
//!   Each message is shown once, whatever repeats a resume or a new leader brings.
//!
//! Pure: the glue turns [`Effect`]s into requests, timers and streams, and their answers
//! into [`Msg`]s.

use super::refusal::Answer;
use super::tab_share::Channels;
use shared::channels::{ChannelEnd, ChannelEvent, ChannelReset, PublishRequest, Session};
use shared::{EndReason, ErrorBody};
use std::collections::VecDeque;

/// The room every user joins at sign-in.
pub const LOBBY: &str = "rooms/lobby";
/// The type of a chat message on its channel.
pub const MESSAGE_TYPE: &str = "message";
/// How many messages the panel keeps (and shows); older ones are dropped.
pub const MESSAGES_KEPT: usize = 200;
/// Rooms are channels under this prefix (the demo's tokens grant `rooms/*`).
const ROOM_PREFIX: &str = "rooms/";
/// Each user's own channel is under this prefix.
const USER_PREFIX: &str = "users/";
/// The panel refreshes the session this long before the token's `exp` at most, and a
/// third of what is left at least...
const REFRESH_LEAD_MAX_MS: u64 = 60_000;
/// ...but never less than this before it.
const REFRESH_LEAD_MIN_MS: u64 = 1_000;

/// The panel's state, as the `chat-state` badge says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChatConn {
    /// Nobody is signed in: no stream.
    SignedOut,
    /// Signed in; the stream is being opened.
    Connecting,
    Open,
    /// The stream failed or ended (a network loss, `expired`, a shutdown) and is coming
    /// back after the last id.
    Reconnecting,
    /// The server refused the stream and the browser gave up; nothing reconnects.
    Closed,
}

impl ChatConn {
    pub fn as_str(self) -> &'static str {
        match self {
            ChatConn::SignedOut => "signed-out",
            ChatConn::Connecting => "connecting",
            ChatConn::Open => "open",
            ChatConn::Reconnecting => "reconnecting",
            ChatConn::Closed => "closed",
        }
    }
}

/// One message as shown.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatMessage {
    /// The event id: unique across channels.
    pub id: String,
    pub channel: String,
    /// The publisher's `sub`, as the server put it in the event.
    pub from: String,
    /// The message's text, or the event's JSON when it is not a chat message.
    pub text: String,
    /// Counts up across the panel's life: the view adds only messages it has not shown.
    pub seq: u64,
}

/// Why the session is asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// At start: who is signed in already (a cookie from before).
    Check,
    /// The sign-in button.
    SignIn,
    /// The timer before `exp`.
    Refresh,
    /// The stream ended with `expired`: refresh (if the timer has not), then reopen.
    Expired,
    /// The browser gave up on the stream: is the session still there?
    Refused,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Msg {
    /// The page has started.
    Start,
    /// The sign-in button, with the name typed.
    SignIn { name: String },
    /// The sign-out button.
    SignOut,
    /// The answer to a session request (`None`: no answer at all), at the browser's
    /// wall-clock time (`Date.now()`), which `expires_at` is compared with.
    Session {
        purpose: Purpose,
        answer: Option<Answer>,
        now_unix_ms: u64,
        /// A random number in `0..1`, for the jitter of a retry.
        jitter: f64,
    },
    /// The retry timer of this generation fired.
    RetryDue { generation: u64 },
    /// The answer to `DELETE /api/session`.
    SignedOut { answer: Option<Answer> },
    /// The join button, with the room typed (`games` or `rooms/games`).
    Join { room: String },
    /// One of the joined rooms, picked as the one to write to.
    Pick { room: String },
    /// The send button: the text, and a user name for a direct message (empty for the
    /// current room).
    Send { text: String, to: String },
    /// The answer to a publish.
    Sent {
        channel: String,
        answer: Option<Answer>,
    },
    /// The refresh timer of this generation fired.
    RefreshDue { generation: u64 },
    /// The stream (this tab's, or the leader's) opened.
    Opened,
    /// An event of the stream: its type, id and data.
    Event {
        name: String,
        id: String,
        data: String,
    },
    /// The stream's `error`; `closed`: the browser gave up.
    Error { closed: bool },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// `GET /api/session`; the answer comes back as [`Msg::Session`].
    GetSession(Purpose),
    /// `POST /api/session` with this body.
    PostSession {
        body: String,
    },
    /// `POST /api/session/refresh`.
    RefreshSession(Purpose),
    /// `DELETE /api/session`.
    DeleteSession,
    /// `POST /api/publish` with this body, to `channel`.
    Publish {
        channel: String,
        body: String,
    },
    /// The panel needs a stream of these channels now (none: no stream).
    Need(Channels),
    /// The stream ended for a reason that a new one (after the last id) mends.
    Reopen,
    /// Call back with [`Msg::RefreshDue`] in `ms`, replacing any timer.
    SetTimer {
        generation: u64,
        ms: u64,
    },
    ClearTimer,
    /// Call back with [`Msg::RetryDue`] in `ms`, replacing any retry timer.
    SetRetryTimer {
        generation: u64,
        ms: u64,
    },
}

/// The panel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chat {
    pub conn: ChatConn,
    /// Who is signed in.
    pub user: Option<String>,
    /// When the current token expires (browser wall-clock ms).
    pub expires_at_ms: Option<u64>,
    /// The rooms joined, in the order joined.
    pub rooms: Vec<String>,
    /// The room the message box writes to.
    pub current: Option<String>,
    /// The messages, oldest first, at most [`MESSAGES_KEPT`].
    pub messages: VecDeque<ChatMessage>,
    /// Why the last thing failed, for the person.
    pub error: Option<String>,
    /// What just happened (a direct message sent, history lost).
    pub notice: Option<String>,
    /// A sign-in or sign-out on its way: the buttons wait.
    pub busy: bool,
    /// How many messages this tab has sent: the view empties the message box when it
    /// grows.
    pub sent: u64,
    /// Ids seen lately, to show each message once (a resume may repeat a few).
    recent: VecDeque<String>,
    next_seq: u64,
    timer_generation: u64,
    /// Which retry timer is current, and how many retries in a row have not opened.
    retry_generation: u64,
    retries: u32,
}

impl Default for Chat {
    fn default() -> Self {
        Chat {
            conn: ChatConn::SignedOut,
            user: None,
            expires_at_ms: None,
            rooms: Vec::new(),
            current: None,
            messages: VecDeque::new(),
            error: None,
            notice: None,
            busy: false,
            sent: 0,
            recent: VecDeque::new(),
            next_seq: 1,
            timer_generation: 0,
            retry_generation: 0,
            retries: 0,
        }
    }
}

/// A room's channel for what was typed: `games` and `rooms/games` are both
/// `rooms/games`. Anything else typed is put under `rooms/` too, so a room is never
/// another user's channel.
pub fn room_channel(typed: &str) -> Option<String> {
    let typed = typed.trim();
    let name = typed.strip_prefix(ROOM_PREFIX).unwrap_or(typed);
    let channel = format!("{ROOM_PREFIX}{name}");
    (!name.is_empty() && shared::channel::valid_channel(&channel)).then_some(channel)
}

/// The channel of `user`'s direct messages.
pub fn user_channel(user: &str) -> String {
    format!("{USER_PREFIX}{user}")
}

/// The error sentence of an answer: the server's JSON `error`, else the status.
fn answer_error(what: &str, answer: Option<&Answer>) -> String {
    match answer {
        None => format!("{what}: the server did not answer"),
        Some(a) => match serde_json::from_str::<ErrorBody>(&a.body) {
            Ok(body) => format!("{what}: {} ({})", body.error, a.status),
            Err(_) => format!("{what}: HTTP {}", a.status),
        },
    }
}

impl Chat {
    /// The channels the panel's stream carries now.
    pub fn channels(&self) -> Channels {
        let Some(user) = &self.user else {
            return Channels::new();
        };
        let mut channels: Channels = self.rooms.iter().cloned().collect();
        channels.insert(user_channel(user));
        channels
    }

    /// The `data-channel` label of the room the message box writes to.
    pub fn current_room(&self) -> Option<&str> {
        self.current.as_deref()
    }

    pub fn update(&mut self, msg: Msg) -> Vec<Effect> {
        match msg {
            Msg::Start => vec![Effect::GetSession(Purpose::Check)],
            Msg::SignIn { name } => {
                let name = name.trim().to_owned();
                if !shared::channels::valid_user_name(&name) {
                    self.error =
                        Some("a name is 1 to 32 of a-z, 0-9, _ and - (lowercase)".to_owned());
                    return Vec::new();
                }
                if self.busy {
                    return Vec::new();
                }
                self.busy = true;
                self.error = None;
                let body = serde_json::json!({ "name": name }).to_string();
                vec![Effect::PostSession { body }]
            }
            Msg::SignOut => {
                if self.user.is_none() || self.busy {
                    return Vec::new();
                }
                self.busy = true;
                vec![Effect::DeleteSession]
            }
            Msg::SignedOut { answer } => {
                self.busy = false;
                match answer {
                    // 204, or 401 when the session was gone already: signed out either way.
                    Some(a) if a.status < 300 || a.status == 401 => {
                        self.signed_out(None);
                        vec![Effect::ClearTimer, Effect::Need(Channels::new())]
                    }
                    other => {
                        self.error = Some(answer_error("could not sign out", other.as_ref()));
                        Vec::new()
                    }
                }
            }
            Msg::Session {
                purpose,
                answer,
                now_unix_ms,
                jitter,
            } => self.session(purpose, answer, now_unix_ms, jitter),
            Msg::RetryDue { generation } => {
                if generation != self.retry_generation || self.user.is_none() {
                    return Vec::new();
                }
                vec![Effect::Reopen]
            }
            Msg::Join { room } => {
                if self.user.is_none() {
                    self.error = Some("sign in to join a room".to_owned());
                    return Vec::new();
                }
                let Some(channel) = room_channel(&room) else {
                    self.error = Some(format!(
                        "{:?} is not a room name: letters, digits, _ . ~ - and /, at most 128 bytes",
                        room.trim()
                    ));
                    return Vec::new();
                };
                self.error = None;
                self.current = Some(channel.clone());
                if self.rooms.contains(&channel) {
                    return Vec::new();
                }
                self.rooms.push(channel);
                vec![Effect::Need(self.channels())]
            }
            Msg::Pick { room } => {
                if self.rooms.contains(&room) {
                    self.current = Some(room);
                }
                Vec::new()
            }
            Msg::Send { text, to } => self.send(text, to),
            Msg::Sent { channel, answer } => {
                match answer {
                    Some(a) if a.status < 300 => {
                        self.error = None;
                        self.sent += 1;
                        self.notice = channel.strip_prefix(USER_PREFIX).map(|to| {
                            format!("sent to {to} (a direct message shows only for them)")
                        });
                    }
                    other => {
                        self.error = Some(answer_error("not sent", other.as_ref()));
                    }
                }
                Vec::new()
            }
            Msg::RefreshDue { generation } => {
                if generation != self.timer_generation || self.user.is_none() {
                    return Vec::new();
                }
                vec![Effect::RefreshSession(Purpose::Refresh)]
            }
            Msg::Opened => {
                if self.user.is_none() {
                    return Vec::new();
                }
                self.conn = ChatConn::Open;
                self.error = None;
                self.retries = 0;
                Vec::new()
            }
            Msg::Event { name, id, data } => self.event(&name, id, &data),
            Msg::Error { closed } => {
                if self.user.is_none() {
                    return Vec::new();
                }
                if !closed {
                    // The browser reconnects by itself, with Last-Event-ID.
                    if self.conn != ChatConn::Closed {
                        self.conn = ChatConn::Reconnecting;
                    }
                    return Vec::new();
                }
                // The browser gave up (a 401 after the cookie went, a 503, a proxy's
                // 502), and never retries: is the session still there? If so, the page
                // retries itself.
                self.conn = ChatConn::Closed;
                vec![Effect::GetSession(Purpose::Refused)]
            }
        }
    }

    fn session(
        &mut self,
        purpose: Purpose,
        answer: Option<Answer>,
        now_unix_ms: u64,
        jitter: f64,
    ) -> Vec<Effect> {
        if purpose == Purpose::SignIn {
            self.busy = false;
        }
        let session = answer
            .as_ref()
            .filter(|a| a.status == 200)
            .and_then(|a| serde_json::from_str::<Session>(&a.body).ok());
        let Some(session) = session else {
            let unauthorized = answer.as_ref().is_some_and(|a| a.status == 401);
            let off = answer.as_ref().is_some_and(|a| a.status == 404);
            return match purpose {
                Purpose::Check if unauthorized => Vec::new(),
                Purpose::Check if off => {
                    self.notice = Some(
                        "this server has no sign-in of its own (start it with --demo-login to try the chat)"
                            .to_owned(),
                    );
                    Vec::new()
                }
                Purpose::SignIn => {
                    self.error = Some(answer_error("could not sign in", answer.as_ref()));
                    Vec::new()
                }
                // The session is gone (expired, revoked, cleared) or cannot be had: the
                // panel is signed out, with a word on why.
                _ if unauthorized || self.user.is_none() => {
                    if self.user.is_some() {
                        self.signed_out(Some("the session ended: sign in again".to_owned()));
                    }
                    vec![Effect::ClearTimer, Effect::Need(Channels::new())]
                }
                // No answer (the server or the path to it is down): retry later.
                Purpose::Refused => self.retry(jitter),
                _ => {
                    self.error = Some(answer_error("the session", answer.as_ref()));
                    Vec::new()
                }
            };
        };
        let mut effects = Vec::new();
        let same_user = self.user.as_deref() == Some(session.name.as_str());
        if !same_user {
            // A new user: a new panel.
            let seq = self.next_seq;
            let generation = self.timer_generation;
            let retry_generation = self.retry_generation + 1;
            *self = Chat {
                next_seq: seq,
                timer_generation: generation,
                retry_generation,
                ..Chat::default()
            };
            self.user = Some(session.name.clone());
            self.rooms = vec![LOBBY.to_owned()];
            self.current = Some(LOBBY.to_owned());
            self.conn = ChatConn::Connecting;
            effects.push(Effect::Need(self.channels()));
        } else if purpose == Purpose::Refused {
            // Still signed in: the stream was refused for another reason (too many
            // streams, a shutdown, a proxy's error): retry after a while.
            effects.extend(self.retry(jitter));
        }
        let expires_at_ms = session.expires_at.saturating_mul(1000);
        self.expires_at_ms = Some(expires_at_ms);
        self.timer_generation += 1;
        effects.push(Effect::SetTimer {
            generation: self.timer_generation,
            ms: refresh_in_ms(expires_at_ms, now_unix_ms),
        });
        if same_user && purpose == Purpose::Expired {
            self.conn = ChatConn::Reconnecting;
            effects.push(Effect::Reopen);
        }
        effects
    }

    /// A new stream after a wait that doubles while retries fail, as the shared
    /// counter's panel waits after a refusal (`reconnect::after_refusal`).
    fn retry(&mut self, jitter: f64) -> Vec<Effect> {
        self.conn = ChatConn::Reconnecting;
        let ms = super::reconnect::after_refusal(
            None,
            super::reconnect::MIN_BACKOFF_MS,
            self.retries,
            jitter,
        );
        self.retries = self.retries.saturating_add(1);
        self.retry_generation += 1;
        vec![Effect::SetRetryTimer {
            generation: self.retry_generation,
            ms,
        }]
    }

    fn send(&mut self, text: String, to: String) -> Vec<Effect> {
        if self.user.is_none() {
            self.error = Some("sign in to send".to_owned());
            return Vec::new();
        }
        if text.trim().is_empty() {
            self.error = Some("type a message first".to_owned());
            return Vec::new();
        }
        let to = to.trim();
        let channel = if to.is_empty() {
            match &self.current {
                Some(room) => room.clone(),
                None => {
                    self.error = Some("join a room first".to_owned());
                    return Vec::new();
                }
            }
        } else if shared::channels::valid_user_name(to) {
            user_channel(to)
        } else {
            self.error = Some(format!("{to:?} is not a user name"));
            return Vec::new();
        };
        let data = serde_json::json!({ "text": text });
        let Ok(data) = serde_json::value::to_raw_value(&data) else {
            return Vec::new();
        };
        let request = PublishRequest {
            channel: channel.clone(),
            data,
            ty: Some(MESSAGE_TYPE.to_owned()),
        };
        let Ok(body) = serde_json::to_string(&request) else {
            return Vec::new();
        };
        self.notice = None;
        vec![Effect::Publish { channel, body }]
    }

    fn event(&mut self, name: &str, id: String, data: &str) -> Vec<Effect> {
        if self.user.is_none() {
            return Vec::new();
        }
        match name {
            MESSAGE_TYPE => {
                if id.is_empty() || self.recent.contains(&id) {
                    return Vec::new();
                }
                self.remember(id.clone());
                let Ok(event) = serde_json::from_str::<ChannelEvent<'_>>(data) else {
                    self.notice = Some(format!("an event that is not a channel event: {data}"));
                    return Vec::new();
                };
                // The stream the tabs share carries every tab's rooms: this tab shows
                // its own.
                if !self.channels().contains(event.channel.as_ref()) {
                    return Vec::new();
                }
                let text = serde_json::from_str::<serde_json::Value>(event.data.get())
                    .ok()
                    .and_then(|v| v.get("text").and_then(|t| t.as_str()).map(str::to_owned))
                    .unwrap_or_else(|| event.data.get().to_owned());
                self.messages.push_back(ChatMessage {
                    id,
                    channel: event.channel.into_owned(),
                    from: event.from.map(|f| f.into_owned()).unwrap_or_default(),
                    text,
                    seq: self.next_seq,
                });
                self.next_seq += 1;
                while self.messages.len() > MESSAGES_KEPT {
                    self.messages.pop_front();
                }
                Vec::new()
            }
            shared::events::RESET => {
                // A new run of ids: the old ones may come again, as new events.
                self.recent.clear();
                self.notice = Some(match serde_json::from_str::<ChannelReset>(data) {
                    Ok(reset) => format!(
                        "the server could not replay everything ({}): some messages of {} are missing",
                        reset.reason.as_str(),
                        reset.channels.join(", ")
                    ),
                    Err(_) => format!("the server could not replay everything: {data}"),
                });
                Vec::new()
            }
            shared::events::END => match serde_json::from_str::<ChannelEnd>(data) {
                Ok(end) if end.reason == EndReason::Revoked => {
                    self.signed_out(Some(
                        "signed out (in another tab, or the session was revoked)".to_owned(),
                    ));
                    vec![Effect::ClearTimer, Effect::Need(Channels::new())]
                }
                Ok(end) if end.reason == EndReason::Expired => {
                    // The stream lived as long as its token; the session goes on with a
                    // fresh cookie (made now unless the timer made it already).
                    self.conn = ChatConn::Reconnecting;
                    vec![Effect::RefreshSession(Purpose::Expired)]
                }
                // A shutdown or another end: the browser comes back after `retry` with
                // Last-Event-ID, by itself.
                _ => {
                    self.conn = ChatConn::Reconnecting;
                    Vec::new()
                }
            },
            _ => Vec::new(),
        }
    }

    fn remember(&mut self, id: String) {
        if self.recent.len() == MESSAGES_KEPT {
            self.recent.pop_front();
        }
        self.recent.push_back(id);
    }

    fn signed_out(&mut self, notice: Option<String>) {
        let seq = self.next_seq;
        let generation = self.timer_generation + 1;
        let retry_generation = self.retry_generation + 1;
        *self = Chat {
            next_seq: seq,
            timer_generation: generation,
            retry_generation,
            notice,
            ..Chat::default()
        };
    }
}

/// How long to wait before refreshing a token that expires at `expires_at_ms`: a third
/// of what is left before it, between one second and a minute, and at least a moment.
pub fn refresh_in_ms(expires_at_ms: u64, now_ms: u64) -> u64 {
    let left = expires_at_ms.saturating_sub(now_ms);
    let lead = (left / 3).clamp(REFRESH_LEAD_MIN_MS, REFRESH_LEAD_MAX_MS);
    left.saturating_sub(lead).max(200)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(body: &str) -> Option<Answer> {
        Some(Answer {
            status: 200,
            retry_after: None,
            body: body.to_owned(),
        })
    }

    fn status(status: u16, body: &str) -> Option<Answer> {
        Some(Answer {
            status,
            retry_after: None,
            body: body.to_owned(),
        })
    }

    fn session(name: &str, expires_at: u64) -> Option<Answer> {
        ok(&format!(r#"{{"name":"{name}","expires_at":{expires_at}}}"#))
    }

    fn set(names: &[&str]) -> Channels {
        names.iter().map(|n| (*n).to_owned()).collect()
    }

    /// A chat signed in as `name` at t = 1,000 s with a token until 1,900 s.
    fn signed_in(name: &str) -> Chat {
        let mut chat = Chat::default();
        chat.update(Msg::SignIn { name: name.into() });
        chat.update(Msg::Session {
            purpose: Purpose::SignIn,
            answer: session(name, 1_900),
            now_unix_ms: 1_000_000,
            jitter: 0.0,
        });
        chat.update(Msg::Opened);
        chat
    }

    fn message(id: &str, channel: &str, from: &str, text: &str) -> Msg {
        let data = serde_json::json!({"channel": channel, "data": {"text": text}, "from": from, "sent_at_us": 1});
        Msg::Event {
            name: MESSAGE_TYPE.into(),
            id: id.into(),
            data: data.to_string(),
        }
    }

    #[test]
    fn signing_in_joins_the_lobby_and_the_users_own_channel_and_times_the_refresh() {
        let mut chat = Chat::default();
        assert_eq!(
            chat.update(Msg::Start),
            [Effect::GetSession(Purpose::Check)]
        );
        assert_eq!(
            chat.update(Msg::SignIn { name: "ann".into() }),
            [Effect::PostSession {
                body: r#"{"name":"ann"}"#.into()
            }]
        );
        assert!(chat.busy);
        let effects = chat.update(Msg::Session {
            purpose: Purpose::SignIn,
            answer: session("ann", 1_900),
            now_unix_ms: 1_000_000,
            jitter: 0.0,
        });
        assert_eq!(
            effects,
            [
                Effect::Need(set(&["rooms/lobby", "users/ann"])),
                // 900 s left: refreshed a minute before.
                Effect::SetTimer {
                    generation: 1,
                    ms: 840_000
                }
            ]
        );
        assert_eq!(chat.conn, ChatConn::Connecting);
        assert_eq!(chat.user.as_deref(), Some("ann"));
        assert_eq!(chat.current_room(), Some(LOBBY));
        chat.update(Msg::Opened);
        assert_eq!(chat.conn.as_str(), "open");
    }

    #[test]
    fn a_bad_name_is_refused_before_asking_the_server_and_a_refusal_is_shown() {
        let mut chat = Chat::default();
        assert!(chat
            .update(Msg::SignIn {
                name: "Ann!".into()
            })
            .is_empty());
        assert!(chat.error.as_deref().unwrap().contains("a-z"));
        chat.update(Msg::SignIn { name: "ann".into() });
        let effects = chat.update(Msg::Session {
            purpose: Purpose::SignIn,
            answer: status(404, r#"{"error":"the demo sign-in is off"}"#),
            now_unix_ms: 0,
            jitter: 0.0,
        });
        assert!(effects.is_empty());
        assert_eq!(
            chat.error.as_deref(),
            Some("could not sign in: the demo sign-in is off (404)")
        );
        assert_eq!(chat.conn, ChatConn::SignedOut);
        assert!(!chat.busy);
    }

    #[test]
    fn nobody_signed_in_at_start_stays_signed_out_quietly() {
        let mut chat = Chat::default();
        let effects = chat.update(Msg::Session {
            purpose: Purpose::Check,
            answer: status(401, r#"{"error":"nobody is signed in"}"#),
            now_unix_ms: 0,
            jitter: 0.0,
        });
        assert_eq!(effects, []);
        assert_eq!((chat.conn, chat.error.clone()), (ChatConn::SignedOut, None));
    }

    #[test]
    fn a_server_without_the_demo_sign_in_is_said_so() {
        let mut chat = Chat::default();
        chat.update(Msg::Session {
            purpose: Purpose::Check,
            answer: status(404, r#"{"error":"not found"}"#),
            now_unix_ms: 0,
            jitter: 0.0,
        });
        assert!(chat.notice.as_deref().unwrap().contains("--demo-login"));
        assert_eq!(chat.conn, ChatConn::SignedOut);
    }

    #[test]
    fn the_refresh_comes_a_third_of_the_life_early_between_one_second_and_a_minute() {
        assert_eq!(refresh_in_ms(3_000, 0), 2_000);
        assert_eq!(refresh_in_ms(9_000, 0), 6_000);
        assert_eq!(refresh_in_ms(900_000, 0), 840_000);
        assert_eq!(refresh_in_ms(1_500, 0), 500);
        // Past or nearly past: at once, but not in a busy loop.
        assert_eq!(refresh_in_ms(0, 5_000), 200);
    }

    #[test]
    fn the_timer_refreshes_and_a_refresh_sets_the_next_timer_without_reopening() {
        let mut chat = signed_in("ann");
        assert_eq!(chat.update(Msg::RefreshDue { generation: 0 }), []);
        assert_eq!(
            chat.update(Msg::RefreshDue { generation: 1 }),
            [Effect::RefreshSession(Purpose::Refresh)]
        );
        let effects = chat.update(Msg::Session {
            purpose: Purpose::Refresh,
            answer: session("ann", 2_800),
            now_unix_ms: 1_840_000,
            jitter: 0.0,
        });
        assert_eq!(
            effects,
            [Effect::SetTimer {
                generation: 2,
                ms: 900_000
            }]
        );
        assert_eq!(chat.conn, ChatConn::Open);
    }

    #[test]
    fn expired_refreshes_then_reopens_after_the_last_id() {
        let mut chat = signed_in("ann");
        let effects = chat.update(Msg::Event {
            name: "end".into(),
            id: String::new(),
            data: r#"{"reason":"expired","last":"e-4"}"#.into(),
        });
        assert_eq!(effects, [Effect::RefreshSession(Purpose::Expired)]);
        assert_eq!(chat.conn, ChatConn::Reconnecting);
        // The stream's end is also an error to the browser: still reconnecting.
        assert_eq!(chat.update(Msg::Error { closed: false }), []);
        let effects = chat.update(Msg::Session {
            purpose: Purpose::Expired,
            answer: session("ann", 2_800),
            now_unix_ms: 1_900_000,
            jitter: 0.0,
        });
        assert!(matches!(
            effects[..],
            [Effect::SetTimer { .. }, Effect::Reopen]
        ));
        chat.update(Msg::Opened);
        assert_eq!(chat.conn, ChatConn::Open);
    }

    #[test]
    fn expired_without_a_session_left_signs_out() {
        let mut chat = signed_in("ann");
        chat.update(Msg::Event {
            name: "end".into(),
            id: String::new(),
            data: r#"{"reason":"expired","last":null}"#.into(),
        });
        let effects = chat.update(Msg::Session {
            purpose: Purpose::Expired,
            answer: status(401, r#"{"error":"no token"}"#),
            now_unix_ms: 1_900_000,
            jitter: 0.0,
        });
        assert_eq!(effects, [Effect::ClearTimer, Effect::Need(Channels::new())]);
        assert_eq!(chat.conn, ChatConn::SignedOut);
        assert!(chat.notice.is_some());
    }

    #[test]
    fn revoked_signs_out_and_stops_the_stream_and_the_timer() {
        let mut chat = signed_in("ann");
        chat.update(message("e-1", LOBBY, "bob", "hi"));
        let effects = chat.update(Msg::Event {
            name: "end".into(),
            id: String::new(),
            data: r#"{"reason":"revoked","last":"e-1"}"#.into(),
        });
        assert_eq!(effects, [Effect::ClearTimer, Effect::Need(Channels::new())]);
        assert_eq!(chat.conn.as_str(), "signed-out");
        assert_eq!(chat.user, None);
        assert!(chat.messages.is_empty());
        // The timer of before does nothing now, nor does the browser's error.
        assert_eq!(chat.update(Msg::RefreshDue { generation: 1 }), []);
        assert_eq!(chat.update(Msg::Error { closed: false }), []);
        assert_eq!(chat.conn, ChatConn::SignedOut);
    }

    #[test]
    fn signing_out_clears_the_panel_once_the_server_answers() {
        let mut chat = signed_in("ann");
        assert_eq!(chat.update(Msg::SignOut), [Effect::DeleteSession]);
        assert_eq!(chat.user.as_deref(), Some("ann"), "until the answer");
        let effects = chat.update(Msg::SignedOut {
            answer: status(204, ""),
        });
        assert_eq!(effects, [Effect::ClearTimer, Effect::Need(Channels::new())]);
        assert_eq!(chat.conn, ChatConn::SignedOut);
    }

    #[test]
    fn messages_are_shown_once_in_order_with_sender_channel_and_text_as_text() {
        let mut chat = signed_in("ann");
        chat.update(message("e-1", LOBBY, "bob", "<script>alert(1)</script>"));
        chat.update(message("e-2", "users/ann", "bob", "psst"));
        // A resume or a new leader repeats an id: dropped.
        chat.update(message("e-1", LOBBY, "bob", "<script>alert(1)</script>"));
        let shown: Vec<_> = chat
            .messages
            .iter()
            .map(|m| {
                (
                    m.id.as_str(),
                    m.channel.as_str(),
                    m.from.as_str(),
                    m.text.as_str(),
                )
            })
            .collect();
        assert_eq!(
            shown,
            [
                ("e-1", LOBBY, "bob", "<script>alert(1)</script>"),
                ("e-2", "users/ann", "bob", "psst")
            ]
        );
        assert_eq!(chat.messages[1].seq, chat.messages[0].seq + 1);
    }

    #[test]
    fn an_event_that_is_not_a_text_message_shows_its_json() {
        let mut chat = signed_in("ann");
        chat.update(Msg::Event {
            name: MESSAGE_TYPE.into(),
            id: "e-9".into(),
            data: r#"{"channel":"rooms/lobby","data":[1,2],"sent_at_us":5}"#.into(),
        });
        assert_eq!(chat.messages[0].text, "[1,2]");
        assert_eq!(chat.messages[0].from, "");
    }

    #[test]
    fn a_room_another_tab_joined_is_not_shown_here() {
        let mut chat = signed_in("ann");
        chat.update(message("e-1", "rooms/games", "bob", "not here"));
        chat.update(message("e-2", LOBBY, "bob", "here"));
        assert_eq!(chat.messages.len(), 1);
        assert_eq!(chat.messages[0].text, "here");
    }

    #[test]
    fn only_the_newest_messages_are_kept() {
        let mut chat = signed_in("ann");
        for i in 0..MESSAGES_KEPT + 5 {
            chat.update(message(&format!("e-{i}"), LOBBY, "bob", "x"));
        }
        assert_eq!(chat.messages.len(), MESSAGES_KEPT);
        assert_eq!(chat.messages[0].id, "e-5");
    }

    #[test]
    fn a_reset_starts_a_new_run_of_ids_and_says_what_was_lost() {
        let mut chat = signed_in("ann");
        chat.update(message("a-1", LOBBY, "bob", "one"));
        chat.update(Msg::Event {
            name: "reset".into(),
            id: "b-0".into(),
            data: r#"{"reason":"ahead","channels":["rooms/lobby"]}"#.into(),
        });
        assert!(chat.notice.as_deref().unwrap().contains("rooms/lobby"));
        chat.update(message("a-1", LOBBY, "bob", "one again, a new event"));
        assert_eq!(chat.messages.len(), 2);
    }

    #[test]
    fn sending_goes_to_the_current_room_or_to_a_users_channel() {
        let mut chat = signed_in("ann");
        let effects = chat.update(Msg::Send {
            text: "hello".into(),
            to: String::new(),
        });
        assert_eq!(
            effects,
            [Effect::Publish {
                channel: LOBBY.into(),
                body: r#"{"channel":"rooms/lobby","data":{"text":"hello"},"type":"message"}"#
                    .into()
            }]
        );
        let effects = chat.update(Msg::Send {
            text: "psst".into(),
            to: " bob ".into(),
        });
        assert!(
            matches!(&effects[..], [Effect::Publish { channel, .. }] if channel == "users/bob")
        );
        chat.update(Msg::Sent {
            channel: "users/bob".into(),
            answer: ok(r#"{"id":"e-3"}"#),
        });
        assert!(chat.notice.as_deref().unwrap().contains("bob"));
        assert!(chat
            .update(Msg::Send {
                text: "x".into(),
                to: "Bob!".into()
            })
            .is_empty());
        assert!(chat.error.is_some());
        assert!(chat
            .update(Msg::Send {
                text: "  ".into(),
                to: String::new()
            })
            .is_empty());
    }

    #[test]
    fn a_refused_publish_shows_the_servers_reason() {
        let mut chat = signed_in("ann");
        chat.update(Msg::Sent {
            channel: LOBBY.into(),
            answer: status(429, r#"{"error":"too many publishes"}"#),
        });
        assert_eq!(
            chat.error.as_deref(),
            Some("not sent: too many publishes (429)")
        );
    }

    #[test]
    fn joining_a_room_adds_its_channel_and_makes_it_current() {
        let mut chat = signed_in("ann");
        assert_eq!(
            chat.update(Msg::Join {
                room: "games".into()
            }),
            [Effect::Need(set(&[
                "rooms/games",
                "rooms/lobby",
                "users/ann"
            ]))]
        );
        assert_eq!(chat.current_room(), Some("rooms/games"));
        // Joined already: made current, no new stream.
        assert_eq!(
            chat.update(Msg::Join {
                room: "rooms/lobby".into()
            }),
            []
        );
        assert_eq!(chat.current_room(), Some(LOBBY));
        chat.update(Msg::Pick {
            room: "rooms/games".into(),
        });
        assert_eq!(chat.current_room(), Some("rooms/games"));
        // Another user's channel cannot be joined as a room.
        chat.update(Msg::Join {
            room: "users/bob".into(),
        });
        assert_eq!(chat.current_room(), Some("rooms/users/bob"));
        assert!(chat.update(Msg::Join { room: "a b".into() }).is_empty());
        assert!(chat.error.is_some());
    }

    /// The browser gives up on the stream, and the session cannot be asked about.
    fn given_up_unanswered(chat: &mut Chat) -> Vec<Effect> {
        chat.update(Msg::Error { closed: true });
        chat.update(Msg::Session {
            purpose: Purpose::Refused,
            answer: None,
            now_unix_ms: 1_000_000,
            jitter: 0.0,
        })
    }

    #[test]
    fn a_network_error_reconnects_and_a_refusal_asks_whether_the_session_is_there() {
        let mut chat = signed_in("ann");
        assert_eq!(chat.update(Msg::Error { closed: false }), []);
        assert_eq!(chat.conn, ChatConn::Reconnecting);
        chat.update(Msg::Opened);
        assert_eq!(
            chat.update(Msg::Error { closed: true }),
            [Effect::GetSession(Purpose::Refused)]
        );
        assert_eq!(chat.conn, ChatConn::Closed);
        // Still there: the page retries after a second, doubling while it fails.
        let mut again = chat.clone();
        let effects = again.update(Msg::Session {
            purpose: Purpose::Refused,
            answer: session("ann", 1_900),
            now_unix_ms: 1_000_000,
            jitter: 0.0,
        });
        assert!(
            effects.contains(&Effect::SetRetryTimer {
                generation: 2,
                ms: 1_000
            }),
            "{effects:?}"
        );
        assert_eq!(again.conn, ChatConn::Reconnecting);
        assert_eq!(again.update(Msg::RetryDue { generation: 1 }), []);
        assert_eq!(
            again.update(Msg::RetryDue { generation: 2 }),
            [Effect::Reopen]
        );
        let effects = given_up_unanswered(&mut again);
        assert_eq!(
            effects,
            [Effect::SetRetryTimer {
                generation: 3,
                ms: 2_000
            }],
            "no answer at all: retried too, later"
        );
        again.update(Msg::Opened);
        let effects = given_up_unanswered(&mut again);
        assert_eq!(
            effects,
            [Effect::SetRetryTimer {
                generation: 4,
                ms: 1_000
            }],
            "an open stream starts the doubling afresh"
        );
        // Gone (the cookie was cleared by a sign-out in another tab): signed out.
        let effects = chat.update(Msg::Session {
            purpose: Purpose::Refused,
            answer: status(401, "{}"),
            now_unix_ms: 0,
            jitter: 0.0,
        });
        assert_eq!(effects, [Effect::ClearTimer, Effect::Need(Channels::new())]);
        assert_eq!(chat.conn, ChatConn::SignedOut);
    }

    #[test]
    fn a_session_of_another_user_starts_a_new_panel() {
        let mut chat = signed_in("ann");
        chat.update(message("e-1", LOBBY, "bob", "hi"));
        let effects = chat.update(Msg::Session {
            purpose: Purpose::SignIn,
            answer: session("bob", 1_900),
            now_unix_ms: 1_000_000,
            jitter: 0.0,
        });
        assert_eq!(effects[0], Effect::Need(set(&["rooms/lobby", "users/bob"])));
        assert!(chat.messages.is_empty());
    }
}
