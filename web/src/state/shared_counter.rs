//! The shared counter panel: one counter for every page, its stream of changes that a
//! page joins and leaves, and a `+1` button.
//!
//! The stream is meant to reconnect and catch up, so unlike the per-client counter the
//! panel lets the browser reconnect after an error, and where the browser will not, it
//! reconnects by itself ([`reconnect`] has the delays): after a
//! refusal, after `end`, and after a silence longer than two heartbeats. An open stream
//! that drops without `end` the page reopens by itself too, soon and spread
//! ([`reconnect::after_drop`]), rather than after the browser's fixed `retry`; only the
//! first reopen after an open stream is quick, the browser retries after that. Timers are
//! effects: the glue sets one, and sends [`Msg::Timer`] with its generation when it
//! fires, so a timer that a later change made stale is ignored.

use super::form::{is_on, query_pairs};
use super::log::{Log, LogKind, Stream};
use super::reconnect::{self, Config};
use super::refusal::{Answer, Inquiry, Refusal};
use shared::{End, Incremented, Reset, ResetReason, SharedParams, SharedValue};

/// The panel's connection, as shown in the `shared-state` badge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Conn {
    /// Not joined yet.
    Idle,
    /// The first `new EventSource(...)` after Join, not open yet.
    Connecting,
    Open,
    /// Joined, and on the way back to `open`; [`Retry`] says how.
    Reconnecting(Retry),
    /// Left, or refused for good.
    Closed,
}

/// How the panel is getting its stream back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    /// The stream failed and the browser is connecting again by itself, with
    /// `Last-Event-ID` (readyState CONNECTING).
    Browser,
    /// The browser gave up (readyState CLOSED); the page is asking the server why.
    Asking,
    /// No stream; the page opens a new one, resuming after the last id, at `at_ms`.
    Waiting { at_ms: u64, cause: Cause },
    /// The open stream dropped without `end`; the page reopens it, resuming after the
    /// last id, at `at_ms`. A follower's panel hears the leader's reopen in this state,
    /// so it counts as holding a source.
    Dropped { at_ms: u64 },
    /// The page opened a new stream, resuming after the last id; not open yet.
    Opening,
}

/// Why the page is waiting to reconnect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cause {
    /// The server refused the stream and said it might not later (`429`, `5xx`), or
    /// could not be reached.
    Refused,
}

impl Conn {
    /// The exact text of the `shared-state` element.
    pub fn as_str(self) -> &'static str {
        match self {
            Conn::Idle => "idle",
            Conn::Connecting => "connecting",
            Conn::Open => "open",
            Conn::Reconnecting(_) => "reconnecting",
            Conn::Closed => "closed",
        }
    }

    /// Whether an EventSource exists (and so events may still arrive).
    pub fn has_source(self) -> bool {
        matches!(
            self,
            Conn::Connecting
                | Conn::Open
                | Conn::Reconnecting(Retry::Browser)
                | Conn::Reconnecting(Retry::Dropped { .. })
                | Conn::Reconnecting(Retry::Opening)
        )
    }

    /// Whether the page is joined: it holds a stream or is getting one back.
    pub fn is_joined(self) -> bool {
        matches!(self, Conn::Connecting | Conn::Open | Conn::Reconnecting(_))
    }

    /// Whether the page watches the stream for silence: a source is there and the
    /// browser is not retrying it (then the browser is in charge). While it waits to
    /// reopen a dropped stream, its timer is for the reopen.
    fn is_watched(self) -> bool {
        self.has_source() && self != Conn::Reconnecting(Retry::Browser)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Msg {
    /// The Join button, or `?shared=1`.
    Join,
    /// The Leave button.
    Leave,
    /// The `+1` button.
    Increment,
    /// The answer to [`Effect::PostIncrement`], or `None` when none came.
    Incremented { answer: Option<Answer> },
    /// `new EventSource(url)` threw; the text says why.
    OpenFailed { error: String },
    /// The EventSource's `open` event.
    Opened,
    /// An unnamed event (a change): its `lastEventId` and `data`.
    Value { id: String, data: String },
    /// A `reset` event: its `lastEventId` and `data`.
    Reset { id: String, data: String },
    /// A `heartbeat` event's data.
    Heartbeat { data: String },
    /// The stream showed that it is alive with an event for another panel (the chat's,
    /// on the stream the tabs share): the server sends heartbeats only while it is idle.
    Alive,
    /// An `end` event's data.
    End { data: String },
    /// The EventSource's `error` event; `closed` is whether its readyState is CLOSED,
    /// meaning the browser itself will not reconnect; `jitter` is a random number in
    /// `0..1` for the wait before a quick reopen.
    Error { closed: bool, jitter: f64 },
    /// The answer to [`Effect::AskWhy`] for connection number `serial`, and a random
    /// number in `0..1` for the jitter of the wait that may follow.
    Why {
        serial: u64,
        answer: Option<Answer>,
        jitter: f64,
    },
    /// The timer set by [`Effect::SetTimer`] with this generation fired.
    Timer { generation: u64 },
}

impl Msg {
    /// The message for an event of the panel's stream: its type (`message` for
    /// unnamed events), `lastEventId` and data.
    pub fn from_event(name: &str, id: String, data: String) -> Msg {
        match name {
            shared::events::RESET => Msg::Reset { id, data },
            shared::events::HEARTBEAT => Msg::Heartbeat { data },
            shared::events::END => Msg::End { data },
            _ => Msg::Value { id, data },
        }
    }
}

/// What the glue must do for the panel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// Close and drop the panel's EventSource, if any.
    CloseSource,
    /// Open the panel's EventSource on this URL; if that throws, send
    /// [`Msg::OpenFailed`].
    OpenSource(String),
    /// `fetch` this URL and send back what the server answers as [`Msg::Why`].
    AskWhy { url: String, serial: u64 },
    /// `POST` to [`shared::paths::SHARED_INCREMENT`] and send back the answer as
    /// [`Msg::Incremented`].
    PostIncrement,
    /// Replace the panel's timer with one that sends [`Msg::Timer`] with `generation`
    /// after `ms`.
    SetTimer { generation: u64, ms: u64 },
    /// Cancel the panel's timer, if any.
    ClearTimer,
}

/// The panel's state.
#[derive(Debug, Clone, PartialEq)]
pub struct SharedCounter {
    pub conn: Conn,
    /// The counter as last heard, from the stream or from a `+1`'s answer.
    pub value: Option<u64>,
    /// The last `id` received (a change's or a reset's), which a reconnect resumes after.
    pub last_id: Option<u64>,
    /// Changes received since Join.
    pub events: u64,
    /// Heartbeats received since Join.
    pub heartbeats: u64,
    /// Opens after an error since Join.
    pub reconnects: u64,
    /// Why the stream is not open, when the server said.
    pub error: Option<String>,
    /// Why the last `+1` failed; cleared by the next one that works.
    pub increment_error: Option<String>,
    config: Config,
    /// When to ask why the current connection failed, and which answer is about it.
    inquiry: Inquiry,
    /// Refusals since the stream was last open: each doubles the next wait.
    refusals: u32,
    /// The generation of the one timer that counts; every new timer, and every change
    /// that makes the pending one pointless, moves it on.
    timer: u64,
    /// When the current stream last showed that it is alive (open, or any event).
    last_seen_ms: u64,
    /// The time of the latest update, for the seconds left before a reconnect.
    now_ms: u64,
}

impl Default for SharedCounter {
    fn default() -> Self {
        SharedCounter::new(Config::default())
    }
}

/// Whether the page's query asks to join the shared counter at once (`?shared=1`).
pub fn join_requested(query: &str) -> bool {
    query_pairs(query).any(|(k, v)| k == "shared" && is_on(v))
}

impl SharedCounter {
    pub fn new(config: Config) -> SharedCounter {
        SharedCounter {
            conn: Conn::Idle,
            value: None,
            last_id: None,
            events: 0,
            heartbeats: 0,
            reconnects: 0,
            error: None,
            increment_error: None,
            config,
            inquiry: Inquiry::default(),
            refusals: 0,
            timer: 0,
            last_seen_ms: 0,
            now_ms: 0,
        }
    }

    /// Whole seconds until the page reconnects by itself, while it waits to.
    pub fn seconds_left(&self) -> Option<u64> {
        match self.conn {
            Conn::Reconnecting(Retry::Waiting { at_ms, .. }) => {
                Some(at_ms.saturating_sub(self.now_ms).div_ceil(1000))
            }
            _ => None,
        }
    }

    pub fn update(&mut self, msg: Msg, now_ms: u64, log: &mut Log) -> Vec<Effect> {
        self.now_ms = now_ms;
        let mut log = |kind: LogKind, id: &str, data: &str| {
            log.push(now_ms, Stream::Shared, kind, id, data);
        };
        match msg {
            Msg::Join => {
                if self.conn.is_joined() {
                    return Vec::new();
                }
                // A Join starts afresh: the server sends the current value first.
                *self = SharedCounter {
                    value: self.value,
                    increment_error: self.increment_error.take(),
                    inquiry: std::mem::take(&mut self.inquiry),
                    timer: self.timer,
                    ..SharedCounter::new(self.config)
                };
                let url = SharedParams::default().to_url();
                log(LogKind::Connect, "", &url);
                self.open(Conn::Connecting, url, now_ms)
            }
            Msg::Leave => {
                if !self.conn.is_joined() {
                    return Vec::new();
                }
                self.conn = Conn::Closed;
                self.error = None;
                log(
                    LogKind::Close,
                    "",
                    "left: the page holds no connection for the shared counter",
                );
                vec![Effect::CloseSource, self.clear_timer()]
            }
            Msg::Increment => vec![Effect::PostIncrement],
            Msg::Incremented { answer } => {
                match incremented(answer.as_ref()) {
                    Ok(value) => {
                        // The stream may already be past this value; never go back.
                        self.value = Some(self.value.map_or(value, |v| v.max(value)));
                        self.increment_error = None;
                        log(LogKind::Increment, "", &format!("+1 made it {value}"));
                    }
                    Err(message) => {
                        log(LogKind::Refused, "", &message);
                        self.increment_error = Some(message);
                    }
                }
                Vec::new()
            }
            Msg::OpenFailed { error } => {
                if !self.conn.has_source() {
                    return Vec::new();
                }
                let message = format!("cannot open EventSource: {error}");
                self.conn = Conn::Closed;
                log(LogKind::Error, "", &message);
                self.error = Some(message);
                vec![Effect::CloseSource, self.clear_timer()]
            }
            Msg::Opened => {
                if !self.conn.has_source() {
                    return Vec::new();
                }
                let was_unwatched = matches!(
                    self.conn,
                    Conn::Reconnecting(Retry::Browser | Retry::Dropped { .. })
                );
                if matches!(self.conn, Conn::Reconnecting(_)) {
                    self.reconnects += 1;
                }
                self.conn = Conn::Open;
                self.inquiry.opened();
                self.refusals = 0;
                self.error = None;
                self.last_seen_ms = now_ms;
                let detail = match self.last_id {
                    None => String::new(),
                    Some(id) => format!("resumed after Last-Event-ID {id}"),
                };
                log(LogKind::Open, "", &detail);
                // The page stopped watching while the browser retried, or while it waited
                // to reopen; it watches again.
                if was_unwatched {
                    vec![self.watch()]
                } else {
                    Vec::new()
                }
            }
            Msg::Value { id, data } => {
                if !self.conn.has_source() {
                    return Vec::new();
                }
                self.last_seen_ms = now_ms;
                match serde_json::from_str::<SharedValue>(&data) {
                    Ok(change) => {
                        self.value = Some(change.value);
                        self.last_id = Some(id.parse().unwrap_or(change.value));
                        self.events += 1;
                        log(LogKind::Message, &id, &data);
                    }
                    Err(e) => log(LogKind::Malformed, &id, &format!("{data} ({e})")),
                }
                Vec::new()
            }
            Msg::Reset { id, data } => {
                if !self.conn.has_source() {
                    return Vec::new();
                }
                self.last_seen_ms = now_ms;
                match serde_json::from_str::<Reset>(&data) {
                    Ok(reset) => {
                        self.value = Some(reset.value);
                        self.last_id = Some(id.parse().unwrap_or(reset.value));
                        let why = match reset.reason {
                            ResetReason::HistoryExceeded => {
                                "the changes since the page's last id have left the \
                                 server's history"
                            }
                            ResetReason::Ahead => {
                                "the page's last id is ahead of the server (its store was \
                                 lost)"
                            }
                        };
                        log(
                            LogKind::Reset,
                            &id,
                            &format!("{data}: {why}; the value is replaced"),
                        );
                    }
                    Err(e) => log(LogKind::Malformed, &id, &format!("reset: {data} ({e})")),
                }
                Vec::new()
            }
            Msg::Heartbeat { data } => {
                if !self.conn.has_source() {
                    return Vec::new();
                }
                self.last_seen_ms = now_ms;
                // Heartbeats only say that the stream is alive; they are counted, not
                // logged, so an idle panel does not push everything else out of the log.
                if let Err(e) = serde_json::from_str::<shared::Heartbeat>(&data) {
                    log(LogKind::Malformed, "", &format!("heartbeat: {data} ({e})"));
                }
                self.heartbeats += 1;
                Vec::new()
            }
            Msg::Alive => {
                if self.conn.has_source() {
                    self.last_seen_ms = now_ms;
                }
                Vec::new()
            }
            Msg::End { data } => {
                if !self.conn.has_source() {
                    return Vec::new();
                }
                match serde_json::from_str::<End>(&data) {
                    Ok(_) => log(LogKind::End, "", &data),
                    Err(e) => log(LogKind::Malformed, "", &format!("end: {data} ({e})")),
                }
                // Just before `end` the server sent a `retry:` drawn from its spread, so
                // that a restart does not bring every client back at once. The page
                // cannot read that field, but the browser honours it and resumes with
                // Last-Event-ID by itself: the page leaves this reconnect to it. Should
                // the server refuse it (still shutting down, or full), the browser gives
                // up and the refusal policy takes over.
                self.conn = Conn::Reconnecting(Retry::Browser);
                log(
                    LogKind::Retry,
                    "",
                    "the browser reconnects after the server's retry, with Last-Event-ID",
                );
                vec![self.clear_timer()]
            }
            Msg::Error { closed, jitter } => {
                if !self.conn.has_source() {
                    return Vec::new();
                }
                if let Conn::Reconnecting(Retry::Dropped { .. }) = self.conn {
                    // The dropped stream's own retry (a leader's source lives until its
                    // reopen): the page reopens anyway.
                    return Vec::new();
                }
                if !closed && self.conn == Conn::Open {
                    // The stream was open and dropped without `end`: a crash, a cut. The
                    // browser would wait the server's `retry` (3 s by default, never less
                    // than about 500 ms in Firefox), every page the same; the page
                    // reopens sooner, spread. Only this first reopen is quick: should it
                    // fail too, the browser's retry and the refusal policy take over.
                    let wait = reconnect::after_drop(self.config.retry_ms, jitter);
                    self.conn = Conn::Reconnecting(Retry::Dropped {
                        at_ms: now_ms + wait,
                    });
                    log(
                        LogKind::Error,
                        "",
                        &format!("the stream dropped; {}", self.retry_line(wait)),
                    );
                    return vec![Effect::CloseSource, self.set_timer(wait)];
                }
                let mut effects = Vec::new();
                if closed {
                    // The browser never retries an HTTP error status; the page decides,
                    // once it knows what the server said.
                    self.conn = Conn::Reconnecting(Retry::Asking);
                    log(
                        LogKind::Error,
                        "",
                        "the browser gave up by itself; asking the server why",
                    );
                    effects.push(Effect::CloseSource);
                } else {
                    self.conn = Conn::Reconnecting(Retry::Browser);
                    log(
                        LogKind::Error,
                        "",
                        "the browser reconnects by itself with Last-Event-ID",
                    );
                }
                // While the browser retries, it is in charge: no silence watch.
                effects.push(self.clear_timer());
                if let Some(serial) = self.inquiry.ask(closed) {
                    effects.push(Effect::AskWhy {
                        url: self.resume_url(),
                        serial,
                    });
                }
                effects
            }
            Msg::Why {
                serial,
                answer,
                jitter,
            } => {
                // Only while the stream is down: an answer that comes after it opened,
                // or after Leave, has nothing left to explain.
                if !self.inquiry.is_current(serial) || !matches!(self.conn, Conn::Reconnecting(_)) {
                    return Vec::new();
                }
                let refusal = Refusal::from_answer(answer.as_ref());
                let message = stream_message(&refusal);
                if let Some(message) = &message {
                    log(LogKind::Refused, "", message);
                }
                self.error = message;
                if self.conn != Conn::Reconnecting(Retry::Asking) {
                    // The browser is still retrying by itself: the answer only explains.
                    return Vec::new();
                }
                if !is_worth_retrying(&refusal) {
                    self.conn = Conn::Closed;
                    return Vec::new();
                }
                let retry_after_ms = match refusal {
                    Refusal::Status {
                        retry_after_s: Some(s),
                        ..
                    } => Some(s.saturating_mul(1000)),
                    _ => None,
                };
                let wait = reconnect::after_refusal(
                    retry_after_ms,
                    self.config.retry_ms,
                    self.refusals,
                    jitter,
                );
                self.refusals = self.refusals.saturating_add(1);
                let effects = self.wait(wait, Cause::Refused, now_ms);
                log(LogKind::Retry, "", &self.retry_line(wait));
                effects
            }
            Msg::Timer { generation } => {
                if generation != self.timer {
                    return Vec::new();
                }
                self.timer_fired(now_ms, &mut log)
            }
        }
    }

    /// The current timer fired.
    fn timer_fired(
        &mut self,
        now_ms: u64,
        log: &mut impl FnMut(LogKind, &str, &str),
    ) -> Vec<Effect> {
        match self.conn {
            Conn::Reconnecting(Retry::Waiting { at_ms, .. }) => {
                if now_ms < at_ms {
                    return vec![self.tick_until(at_ms, now_ms)];
                }
                // The refusal, if any, shows until this stream opens.
                let url = self.resume_url();
                log(LogKind::Connect, "", &url);
                self.open(Conn::Reconnecting(Retry::Opening), url, now_ms)
            }
            Conn::Reconnecting(Retry::Dropped { at_ms }) => {
                if now_ms < at_ms {
                    return vec![self.set_timer(at_ms - now_ms)];
                }
                let url = self.resume_url();
                log(LogKind::Connect, "", &url);
                self.open(Conn::Reconnecting(Retry::Opening), url, now_ms)
            }
            conn if conn.is_watched() => {
                let limit = self.config.silence_limit_ms();
                let silent_ms = now_ms.saturating_sub(self.last_seen_ms);
                if silent_ms < limit {
                    return vec![self.set_timer(limit - silent_ms)];
                }
                // Comments never reach a page, so a stream that a proxy cut without a
                // word looks quiet for ever; heartbeats are events, and none came.
                log(
                    LogKind::Missed,
                    "",
                    &format!(
                        "nothing for {} ms, {} heartbeat periods: the stream counts as dead",
                        silent_ms,
                        reconnect::MISSED_HEARTBEATS
                    ),
                );
                let url = self.resume_url();
                log(LogKind::Connect, "", &url);
                self.open(Conn::Reconnecting(Retry::Opening), url, now_ms)
            }
            _ => Vec::new(),
        }
    }

    /// Opens a new stream on `url` (closing any other) and watches it for silence.
    fn open(&mut self, conn: Conn, url: String, now_ms: u64) -> Vec<Effect> {
        self.conn = conn;
        self.inquiry.start();
        self.last_seen_ms = now_ms;
        vec![Effect::CloseSource, Effect::OpenSource(url), self.watch()]
    }

    /// Waits `wait_ms` before reconnecting, with a timer for each second shown.
    fn wait(&mut self, wait_ms: u64, cause: Cause, now_ms: u64) -> Vec<Effect> {
        let at_ms = now_ms + wait_ms;
        self.conn = Conn::Reconnecting(Retry::Waiting { at_ms, cause });
        vec![self.tick_until(at_ms, now_ms)]
    }

    /// A timer for when the seconds left change, or the wait is over.
    fn tick_until(&mut self, at_ms: u64, now_ms: u64) -> Effect {
        let left = at_ms.saturating_sub(now_ms).max(1);
        self.set_timer(left - (left - 1) / 1000 * 1000)
    }

    /// The silence watch: a timer for when the stream would have been silent too long.
    fn watch(&mut self) -> Effect {
        self.set_timer(self.config.silence_limit_ms())
    }

    fn set_timer(&mut self, ms: u64) -> Effect {
        self.timer += 1;
        Effect::SetTimer {
            generation: self.timer,
            ms,
        }
    }

    fn clear_timer(&mut self) -> Effect {
        self.timer += 1;
        Effect::ClearTimer
    }

    /// The log line for a wait before reconnecting.
    fn retry_line(&self, wait_ms: u64) -> String {
        let after = match self.last_id {
            Some(id) => format!(" after id {id}"),
            None => String::new(),
        };
        format!(
            "the page reconnects{after} in {:.1} s",
            wait_ms as f64 / 1000.0
        )
    }

    /// The stream's URL, resuming after the last id received. A new EventSource sends no
    /// `Last-Event-ID` of its own, so the query carries it.
    fn resume_url(&self) -> String {
        SharedParams {
            last_event_id: self.last_id,
        }
        .to_url()
    }
}

/// Whether a refusal may pass: too many requests, a server error or unavailable (capacity,
/// store, shutdown), no answer at all, or a stream that opens now. A `4xx` (the origin,
/// the parameters) and a `204` would answer the same again.
fn is_worth_retrying(refusal: &Refusal) -> bool {
    match refusal {
        Refusal::Unreachable | Refusal::Passed => true,
        Refusal::NoContent => false,
        Refusal::Status { status, .. } => *status == 429 || *status >= 500,
    }
}

/// The value a `+1` made, or the sentence saying why it failed.
fn incremented(answer: Option<&Answer>) -> Result<u64, String> {
    let Some(answer) = answer else {
        return Err("Cannot reach the server: the +1 was not sent".to_owned());
    };
    if (200..300).contains(&answer.status) {
        return serde_json::from_str::<Incremented>(&answer.body)
            .map(|i| i.value)
            .map_err(|e| format!("The server's answer to the +1 is unreadable ({e})"));
    }
    let refusal = Refusal::from_answer(Some(answer));
    Err(format!(
        "The +1 was refused {}{}",
        refusal.status_text(),
        refusal.retry_after_text()
    ))
}

/// The sentence for a refused shared stream, or `None` when it was not refused.
fn stream_message(refusal: &Refusal) -> Option<String> {
    let message = match refusal {
        Refusal::Unreachable => {
            "Cannot reach the server: is it running? (`cargo run -p server`)".to_owned()
        }
        Refusal::NoContent => "The server answered 204 No Content to the shared stream".into(),
        Refusal::Passed => return None,
        Refusal::Status { .. } => format!(
            "The server refused the shared stream {}{}",
            refusal.status_text(),
            refusal.retry_after_text()
        ),
    };
    Some(message)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(v: u64) -> Msg {
        Msg::Value {
            id: v.to_string(),
            data: format!(r#"{{"value":{v},"sent_at_us":1}}"#),
        }
    }

    fn heartbeat() -> Msg {
        Msg::Heartbeat {
            data: r#"{"at_us":5}"#.into(),
        }
    }

    fn answer(status: u16, retry_after: Option<&str>, body: &str) -> Option<Answer> {
        Some(Answer {
            status,
            retry_after: retry_after.map(str::to_owned),
            body: body.to_owned(),
        })
    }

    fn capacity(retry_after: &str) -> Option<Answer> {
        answer(
            503,
            Some(retry_after),
            r#"{"error":"too many open streams","reason":"capacity"}"#,
        )
    }

    /// A panel with its log and a clock, and what the glue would do: keep the one
    /// timer the panel set.
    struct Panel {
        s: SharedCounter,
        log: Log,
        now: u64,
        /// The pending timer: its generation and when it fires.
        timer: Option<(u64, u64)>,
    }

    impl Panel {
        fn new() -> Panel {
            Panel::with(Config::default())
        }

        fn with(config: Config) -> Panel {
            Panel {
                s: SharedCounter::new(config),
                log: Log::default(),
                now: 0,
                timer: None,
            }
        }

        fn joined() -> Panel {
            let mut p = Panel::new();
            p.send(Msg::Join);
            p.send(Msg::Opened);
            p
        }

        /// Sends `msg` 1 ms after the last one.
        fn send(&mut self, msg: Msg) -> Vec<Effect> {
            self.at(self.now + 1, msg)
        }

        /// Sends `msg` at `now`, keeping the timer as the glue would.
        fn at(&mut self, now: u64, msg: Msg) -> Vec<Effect> {
            self.now = now;
            let fx = self.s.update(msg, now, &mut self.log);
            for e in &fx {
                match e {
                    Effect::SetTimer { generation, ms } => {
                        self.timer = Some((*generation, now + ms));
                    }
                    Effect::ClearTimer => self.timer = None,
                    _ => {}
                }
            }
            fx
        }

        /// Fires the pending timer at its time.
        fn fire(&mut self) -> Vec<Effect> {
            let (generation, at) = self.timer.take().expect("a timer is set");
            self.at(at, Msg::Timer { generation })
        }

        fn last_log(&self) -> (LogKind, String) {
            let e = self.log.last().expect("a log line");
            assert_eq!(e.stream, Stream::Shared);
            (e.kind, e.data.clone())
        }

        fn refused(&mut self, answer: Option<Answer>, jitter: f64) -> Vec<Effect> {
            let fx = self.send(Msg::Error {
                closed: true,
                jitter: 0.0,
            });
            let Some(Effect::AskWhy { serial, .. }) = fx.last().cloned() else {
                panic!("no AskWhy in {fx:?}")
            };
            self.send(Msg::Why {
                serial,
                answer,
                jitter,
            })
        }

        /// Why the page is waiting to reconnect, while it is.
        fn waiting_for(&self) -> Option<Cause> {
            match self.s.conn {
                Conn::Reconnecting(Retry::Waiting { cause, .. }) => Some(cause),
                _ => None,
            }
        }

        fn wait_ms(&self) -> u64 {
            match self.s.conn {
                Conn::Reconnecting(Retry::Waiting { at_ms, .. }) => at_ms - self.now,
                c => panic!("not waiting: {c:?}"),
            }
        }
    }

    fn opens(fx: &[Effect]) -> Vec<String> {
        fx.iter()
            .filter_map(|e| match e {
                Effect::OpenSource(url) => Some(url.clone()),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn starts_idle_and_joins_on_the_shared_path() {
        let mut p = Panel::new();
        assert_eq!(p.s.conn.as_str(), "idle");
        let fx = p.send(Msg::Join);
        assert_eq!(
            fx,
            vec![
                Effect::CloseSource,
                Effect::OpenSource("/api/shared".into()),
                Effect::SetTimer {
                    generation: 1,
                    ms: 30_000
                },
            ]
        );
        assert_eq!(p.s.conn.as_str(), "connecting");
        assert!(p.send(Msg::Join).is_empty(), "joined already");
        p.send(Msg::Opened);
        assert_eq!(p.s.conn.as_str(), "open");
    }

    #[test]
    fn values_and_resets_set_the_value_and_the_last_id() {
        let mut p = Panel::joined();
        p.send(value(41));
        p.send(value(42));
        assert_eq!(
            (p.s.value, p.s.last_id, p.s.events),
            (Some(42), Some(42), 2)
        );
        p.send(Msg::Reset {
            id: "7".into(),
            data: r#"{"value":7,"reason":"ahead"}"#.into(),
        });
        assert_eq!((p.s.value, p.s.last_id), (Some(7), Some(7)));
        let (kind, data) = p.last_log();
        assert_eq!(kind, LogKind::Reset);
        assert!(
            data.contains("ahead") && data.contains("replaced"),
            "{data}"
        );
        p.send(Msg::Value {
            id: "8".into(),
            data: "nope".into(),
        });
        assert_eq!(p.s.value, Some(7));
        assert_eq!(p.last_log().0, LogKind::Malformed);
    }

    #[test]
    fn heartbeats_are_counted_not_logged() {
        let mut p = Panel::joined();
        let lines = p.log.len();
        p.send(heartbeat());
        assert_eq!((p.s.heartbeats, p.log.len()), (1, lines));
        assert_eq!(p.s.conn, Conn::Open);
    }

    #[test]
    fn a_dropped_stream_reopens_after_the_last_id_within_a_second() {
        let mut p = Panel::joined();
        p.send(value(3));
        let fx = p.send(Msg::Error {
            closed: false,
            jitter: 0.25,
        });
        assert_eq!(
            fx,
            vec![
                Effect::CloseSource,
                Effect::SetTimer {
                    generation: p.s.timer,
                    ms: 125
                }
            ],
            "a quarter of min(retry 3 s, 0.5 s)"
        );
        assert_eq!(p.s.conn.as_str(), "reconnecting");
        let reopen_at = p.now + 125;
        assert_eq!(
            p.s.conn,
            Conn::Reconnecting(Retry::Dropped { at_ms: reopen_at })
        );
        assert!(
            p.last_log().1.contains("after id 3 in 0.1 s"),
            "{:?}",
            p.last_log()
        );
        let (generation, at) = p.timer.expect("the reopen");
        assert_eq!(at, reopen_at);
        let fx = p.at(at, Msg::Timer { generation });
        assert_eq!(
            fx[..2],
            [
                Effect::CloseSource,
                Effect::OpenSource("/api/shared?last_event_id=3".into())
            ]
        );
        assert_eq!(p.s.conn, Conn::Reconnecting(Retry::Opening));
        assert!(
            matches!(fx[2], Effect::SetTimer { .. }),
            "watched from the reopen on: {fx:?}"
        );
        assert!(p.send(Msg::Opened).is_empty());
        assert_eq!((p.s.conn, p.s.reconnects), (Conn::Open, 1));
        assert!(p.last_log().1.contains("Last-Event-ID 3"));
        // The next drop is quick again: the stream was open in between.
        p.send(Msg::Error {
            closed: false,
            jitter: 0.999_999,
        });
        assert_eq!(p.timer.map(|(_, at)| at - p.now), Some(499));
    }

    #[test]
    fn only_the_first_reopen_after_a_drop_is_quick() {
        let mut p = Panel::with(Config::from_query("retry_ms=200"));
        p.send(Msg::Join);
        p.send(Msg::Opened);
        p.send(Msg::Error {
            closed: false,
            jitter: 0.5,
        });
        let (generation, at) = p.timer.expect("the reopen");
        assert_eq!(
            at - p.now,
            100,
            "half of the retry, which is under a second"
        );
        // The dropped source's own retry failing changes nothing: the page reopens.
        assert!(p
            .send(Msg::Error {
                closed: false,
                jitter: 0.0
            })
            .is_empty());
        p.at(at, Msg::Timer { generation });
        assert_eq!(p.s.conn, Conn::Reconnecting(Retry::Opening));
        // The reopen fails too: the browser retries it after its `retry`.
        let fx = p.send(Msg::Error {
            closed: false,
            jitter: 0.0,
        });
        assert!(!fx.contains(&Effect::CloseSource), "{fx:?}");
        assert_eq!(p.s.conn, Conn::Reconnecting(Retry::Browser));
        assert_eq!(p.timer, None);
        assert!(p
            .send(Msg::Error {
                closed: false,
                jitter: 0.0
            })
            .iter()
            .all(|e| matches!(e, Effect::ClearTimer | Effect::AskWhy { .. })));
        assert_eq!(p.s.conn, Conn::Reconnecting(Retry::Browser));
        p.send(Msg::Opened);
        assert_eq!((p.s.conn, p.s.reconnects), (Conn::Open, 1));
    }

    #[test]
    fn a_refusal_waits_retry_after_plus_jitter_then_resumes_after_the_last_id() {
        let mut p = Panel::joined();
        p.send(value(5));
        let fx = p.send(Msg::Error {
            closed: true,
            jitter: 0.0,
        });
        assert_eq!(
            fx,
            vec![
                Effect::CloseSource,
                Effect::ClearTimer,
                Effect::AskWhy {
                    url: "/api/shared?last_event_id=5".into(),
                    serial: 1
                }
            ]
        );
        assert_eq!(p.s.conn.as_str(), "reconnecting");
        let fx = p.send(Msg::Why {
            serial: 1,
            answer: capacity("2"),
            jitter: 0.5,
        });
        assert!(matches!(fx.as_slice(), [Effect::SetTimer { .. }]), "{fx:?}");
        assert_eq!(p.wait_ms(), 2_500, "2 s and half of the jitter's half");
        assert_eq!(p.waiting_for(), Some(Cause::Refused));
        assert_eq!(
            p.s.error.as_deref(),
            Some(
                "The server refused the shared stream (HTTP 503, capacity): too many open \
                 streams. The server suggests trying again in 2 s"
            )
        );
        assert_eq!(p.last_log().0, LogKind::Retry);
        // The seconds left count down, one timer per second shown.
        assert_eq!(p.s.seconds_left(), Some(3));
        assert!(opens(&p.fire()).is_empty());
        assert_eq!(p.s.seconds_left(), Some(2));
        assert!(opens(&p.fire()).is_empty());
        assert_eq!(p.s.seconds_left(), Some(1));
        let fx = p.fire();
        assert_eq!(opens(&fx), ["/api/shared?last_event_id=5"]);
        assert_eq!(p.s.conn, Conn::Reconnecting(Retry::Opening));
        assert!(
            p.s.error.is_some(),
            "the refusal shows until the stream opens"
        );
        assert_eq!(p.s.conn.as_str(), "reconnecting");
        p.send(Msg::Opened);
        assert_eq!(
            (p.s.conn.as_str(), p.s.reconnects, p.s.error.as_deref()),
            ("open", 1, None)
        );
    }

    #[test]
    fn repeated_refusals_double_the_wait_up_to_the_cap_and_an_open_resets_it() {
        let mut p = Panel::joined();
        let mut waits = Vec::new();
        for _ in 0..8 {
            p.refused(capacity("1"), 0.0);
            waits.push(p.wait_ms());
            while opens(&p.fire()).is_empty() {}
        }
        assert_eq!(
            waits,
            [1_000, 2_000, 4_000, 8_000, 16_000, 32_000, 60_000, 60_000]
        );
        p.refused(capacity("1"), 1.0);
        assert_eq!(
            p.wait_ms(),
            90_000,
            "the cap, and jitter of up to half of it"
        );
        while opens(&p.fire()).is_empty() {}
        p.send(Msg::Opened);
        p.refused(capacity("1"), 0.0);
        assert_eq!(p.wait_ms(), 1_000, "open again: back to Retry-After");
    }

    #[test]
    fn what_will_not_pass_closes_and_what_may_is_retried() {
        for (answer, retried) in [
            (
                answer(403, None, r#"{"error":"origin not allowed"}"#),
                false,
            ),
            (answer(400, None, r#"{"error":"bad"}"#), false),
            (answer(204, None, ""), false),
            (answer(429, Some("3"), r#"{"error":"slow down"}"#), true),
            (answer(502, None, "<html>"), true),
            (answer(200, None, ""), true),
            (None, true),
        ] {
            let mut p = Panel::joined();
            p.refused(answer.clone(), 0.0);
            if retried {
                assert_eq!(p.waiting_for(), Some(Cause::Refused), "{answer:?}");
            } else {
                assert_eq!(p.s.conn.as_str(), "closed", "{answer:?}");
                assert!(p.s.error.is_some());
            }
        }
        // Without Retry-After the wait starts at the configured retry.
        let mut p = Panel::joined();
        p.refused(None, 0.0);
        assert_eq!(p.wait_ms(), Config::default().retry_ms);
        assert!(p.s.error.as_deref().unwrap().starts_with("Cannot reach"));
    }

    #[test]
    fn after_end_the_browser_reconnects_on_the_servers_retry() {
        let mut p = Panel::with(Config::from_query("heartbeat_ms=1000"));
        p.send(Msg::Join);
        p.send(Msg::Opened);
        p.send(value(9));
        let fx = p.send(Msg::End {
            data: r#"{"reason":"shutdown","last":9}"#.into(),
        });
        // No close: the stream stays the browser's to resume, and no silence watch.
        assert_eq!(fx, vec![Effect::ClearTimer]);
        assert_eq!(p.s.conn, Conn::Reconnecting(Retry::Browser));
        assert!(p.log.iter().any(|e| e.kind == LogKind::End));
        assert!(p.timer.is_none(), "nothing scheduled by the page");
        // The response ends: the browser says it reconnects, then it is back.
        let fx = p.send(Msg::Error {
            closed: false,
            jitter: 0.0,
        });
        assert!(!fx.contains(&Effect::CloseSource), "{fx:?}");
        assert_eq!(p.s.conn.as_str(), "reconnecting");
        p.send(Msg::Opened);
        assert_eq!((p.s.conn, p.s.reconnects), (Conn::Open, 1));
        assert!(p.last_log().1.contains("Last-Event-ID 9"));
    }

    #[test]
    fn two_missed_heartbeats_close_and_resume_after_the_last_id() {
        let mut p = Panel::with(Config::from_query("heartbeat_ms=1000"));
        p.send(Msg::Join);
        p.at(100, Msg::Opened);
        p.at(500, value(4));
        p.at(1_500, heartbeat());
        // The watch set at Join fires; the stream spoke since, so it waits on.
        let fx = p.fire();
        assert_eq!(
            fx,
            vec![Effect::SetTimer {
                generation: 2,
                ms: 1_499
            }]
        );
        assert_eq!(p.s.conn, Conn::Open);
        // Nothing for 2 s after the heartbeat at 1.5 s: dead.
        let fx = p.fire();
        assert_eq!(p.now, 3_500);
        assert_eq!(
            fx,
            vec![
                Effect::CloseSource,
                Effect::OpenSource("/api/shared?last_event_id=4".into()),
                Effect::SetTimer {
                    generation: 3,
                    ms: 2_000
                },
            ]
        );
        assert!(p.log.iter().any(|e| e.kind == LogKind::Missed));
        assert_eq!(p.s.conn.as_str(), "reconnecting");
        p.send(Msg::Opened);
        assert_eq!((p.s.conn.as_str(), p.s.reconnects), ("open", 1));
    }

    #[test]
    fn a_browser_retrying_is_not_watched() {
        let mut p = Panel::with(Config::from_query("heartbeat_ms=1000"));
        p.send(Msg::Join);
        // Not open yet: the browser retries by itself.
        let (generation, _) = p.timer.expect("watched while connecting");
        p.send(Msg::Error {
            closed: false,
            jitter: 0.0,
        });
        assert_eq!(p.timer, None);
        // A stale timer firing anyway changes nothing.
        assert!(p.at(10_000, Msg::Timer { generation }).is_empty());
        assert_eq!(p.s.conn, Conn::Reconnecting(Retry::Browser));
    }

    #[test]
    fn only_the_latest_timer_counts() {
        let mut p = Panel::with(Config::from_query("heartbeat_ms=1000&retry_ms=5000"));
        p.send(Msg::Join);
        p.send(Msg::Opened);
        let (watch, watch_at) = p.timer.expect("watched while open");
        p.send(Msg::Error {
            closed: true,
            jitter: 0.0,
        });
        p.send(Msg::Why {
            serial: 1,
            answer: capacity("5"),
            jitter: 0.0,
        });
        // The silence watch of the ended stream fires during the wait: ignored.
        assert!(watch_at < 5_000);
        assert!(p.at(watch_at, Msg::Timer { generation: watch }).is_empty());
        // Leave, then Join: the countdown of the old wait is ignored too.
        let (countdown, _) = p.timer.expect("a countdown");
        p.send(Msg::Leave);
        p.send(Msg::Join);
        assert!(p
            .at(
                6_000,
                Msg::Timer {
                    generation: countdown
                }
            )
            .is_empty());
        assert_eq!(p.s.conn, Conn::Connecting);
    }

    #[test]
    fn leave_stops_everything() {
        // While waiting after a refusal.
        let mut p = Panel::joined();
        p.send(value(1));
        p.refused(capacity("5"), 0.0);
        let (generation, _) = p.timer.expect("a countdown");
        assert_eq!(
            p.send(Msg::Leave),
            vec![Effect::CloseSource, Effect::ClearTimer]
        );
        assert_eq!(p.s.conn.as_str(), "closed");
        assert!(p.at(60_000, Msg::Timer { generation }).is_empty());
        assert_eq!(p.s.conn.as_str(), "closed");
        // While asking why: the answer comes too late to act.
        let mut p = Panel::joined();
        p.send(Msg::Error {
            closed: true,
            jitter: 0.0,
        });
        p.send(Msg::Leave);
        assert!(p
            .send(Msg::Why {
                serial: 1,
                answer: capacity("1"),
                jitter: 0.0
            })
            .is_empty());
        assert_eq!(p.s.conn.as_str(), "closed");
        // While open: later events change nothing.
        let mut p = Panel::joined();
        p.send(value(1));
        p.send(Msg::Leave);
        p.send(value(2));
        assert_eq!(p.s.value, Some(1));
        assert!(p.send(Msg::Leave).is_empty());
        // Join again starts afresh, without a last id.
        let fx = p.send(Msg::Join);
        assert_eq!(fx[1], Effect::OpenSource("/api/shared".into()));
        assert_eq!((p.s.conn, p.s.last_id), (Conn::Connecting, None));
    }

    #[test]
    fn a_late_answer_about_an_earlier_stream_is_ignored() {
        let mut p = Panel::joined();
        p.refused(capacity("1"), 0.0);
        while opens(&p.fire()).is_empty() {}
        // The new stream is refused too; an answer for the first comes late.
        p.send(Msg::Error {
            closed: true,
            jitter: 0.0,
        });
        assert!(p
            .send(Msg::Why {
                serial: 1,
                answer: None,
                jitter: 0.0
            })
            .is_empty());
        assert_eq!(p.s.conn, Conn::Reconnecting(Retry::Asking));
    }

    #[test]
    fn increments_show_the_value_returned_or_why_not() {
        let mut p = Panel::new();
        assert_eq!(p.send(Msg::Increment), vec![Effect::PostIncrement]);
        p.send(Msg::Incremented {
            answer: answer(200, None, r#"{"value":9}"#),
        });
        assert_eq!((p.s.value, p.s.increment_error.as_deref()), (Some(9), None));
        p.send(Msg::Incremented {
            answer: answer(429, Some("1"), r#"{"error":"too many increments"}"#),
        });
        assert_eq!(
            p.s.increment_error.as_deref(),
            Some(
                "The +1 was refused (HTTP 429): too many increments. The server suggests \
                 trying again in 1 s"
            )
        );
        p.send(Msg::Incremented {
            answer: answer(
                503,
                Some("5"),
                r#"{"error":"the shared counter is unavailable","reason":"store_unavailable"}"#,
            ),
        });
        assert!(p
            .s
            .increment_error
            .as_deref()
            .unwrap()
            .contains("(HTTP 503, store unavailable)"));
        p.send(Msg::Incremented {
            answer: answer(403, None, r#"{"error":"origin not allowed"}"#),
        });
        assert!(p.s.increment_error.as_deref().unwrap().contains("HTTP 403"));
        p.send(Msg::Incremented { answer: None });
        assert!(p
            .s
            .increment_error
            .as_deref()
            .unwrap()
            .starts_with("Cannot reach the server"));
        // A late answer never moves the value back.
        p.send(Msg::Incremented {
            answer: answer(200, None, r#"{"value":12}"#),
        });
        p.send(Msg::Incremented {
            answer: answer(200, None, r#"{"value":11}"#),
        });
        assert_eq!(
            (p.s.value, p.s.increment_error.as_deref()),
            (Some(12), None)
        );
    }

    #[test]
    fn the_query_may_ask_to_join() {
        assert!(join_requested("?shared=1"));
        assert!(join_requested("?count=3&shared"));
        assert!(!join_requested("?shared=0"));
        assert!(!join_requested(""));
    }
}
