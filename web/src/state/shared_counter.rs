//! The shared counter panel: one counter for every page, its stream of changes that a
//! page joins and leaves, and a `+1` button. The stream is meant to reconnect and catch
//! up, so unlike the per-client counter the panel lets the browser reconnect.

use super::form::{is_on, query_pairs};
use super::log::{Log, LogKind, Stream};
use super::refusal::{Answer, Inquiry, Refusal};
use shared::{Incremented, Reset, ResetReason, SharedParams, SharedValue};

/// The panel's connection, as shown in the `shared-state` badge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Conn {
    /// Not joined yet.
    Idle,
    /// `new EventSource(...)` made, not open yet.
    Connecting,
    Open,
    /// The stream failed and the browser is connecting again with `Last-Event-ID`.
    Reconnecting,
    /// Left, or refused for good.
    Closed,
}

impl Conn {
    /// The exact text of the `shared-state` element.
    pub fn as_str(self) -> &'static str {
        match self {
            Conn::Idle => "idle",
            Conn::Connecting => "connecting",
            Conn::Open => "open",
            Conn::Reconnecting => "reconnecting",
            Conn::Closed => "closed",
        }
    }

    /// Whether an EventSource exists (and so events may still arrive).
    pub fn is_live(self) -> bool {
        matches!(self, Conn::Connecting | Conn::Open | Conn::Reconnecting)
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
    /// An `end` event's data.
    End { data: String },
    /// The EventSource's `error` event; `closed` is whether its readyState is CLOSED,
    /// meaning the browser itself will not reconnect.
    Error { closed: bool },
    /// The answer to [`Effect::AskWhy`] for connection number `serial`.
    Why { serial: u64, answer: Option<Answer> },
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
    /// When to ask why the current connection failed, and which answer is about it.
    inquiry: Inquiry,
}

impl Default for SharedCounter {
    fn default() -> Self {
        SharedCounter {
            conn: Conn::Idle,
            value: None,
            last_id: None,
            events: 0,
            heartbeats: 0,
            reconnects: 0,
            error: None,
            increment_error: None,
            inquiry: Inquiry::default(),
        }
    }
}

/// Whether the page's query asks to join the shared counter at once (`?shared=1`).
pub fn join_requested(query: &str) -> bool {
    query_pairs(query).any(|(k, v)| k == "shared" && is_on(v))
}

impl SharedCounter {
    pub fn update(&mut self, msg: Msg, now_ms: u64, log: &mut Log) -> Vec<Effect> {
        let mut log = |kind: LogKind, id: &str, data: &str| {
            log.push(now_ms, Stream::Shared, kind, id, data);
        };
        match msg {
            Msg::Join => {
                if self.conn.is_live() {
                    return Vec::new();
                }
                let mut inquiry = std::mem::take(&mut self.inquiry);
                inquiry.start();
                // A Join starts afresh: the server sends the current value first.
                *self = SharedCounter {
                    conn: Conn::Connecting,
                    value: self.value,
                    increment_error: self.increment_error.take(),
                    inquiry,
                    ..SharedCounter::default()
                };
                let url = SharedParams::default().to_url();
                log(LogKind::Connect, "", &url);
                vec![Effect::CloseSource, Effect::OpenSource(url)]
            }
            Msg::Leave => {
                if !self.conn.is_live() {
                    return Vec::new();
                }
                self.conn = Conn::Closed;
                self.error = None;
                log(
                    LogKind::Close,
                    "",
                    "left: the page holds no connection for the shared counter",
                );
                vec![Effect::CloseSource]
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
                if !self.conn.is_live() {
                    return Vec::new();
                }
                let message = format!("cannot open EventSource: {error}");
                self.conn = Conn::Closed;
                log(LogKind::Error, "", &message);
                self.error = Some(message);
                vec![Effect::CloseSource]
            }
            Msg::Opened => {
                if !self.conn.is_live() {
                    return Vec::new();
                }
                if self.conn == Conn::Reconnecting {
                    self.reconnects += 1;
                }
                self.conn = Conn::Open;
                self.inquiry.opened();
                self.error = None;
                let detail = match self.last_id {
                    None => String::new(),
                    Some(id) => format!("resumed after Last-Event-ID {id}"),
                };
                log(LogKind::Open, "", &detail);
                Vec::new()
            }
            Msg::Value { id, data } => {
                if !self.conn.is_live() {
                    return Vec::new();
                }
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
                if !self.conn.is_live() {
                    return Vec::new();
                }
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
                if !self.conn.is_live() {
                    return Vec::new();
                }
                // Heartbeats only say that the stream is alive; they are counted, not
                // logged, so an idle panel does not push everything else out of the log.
                if let Err(e) = serde_json::from_str::<shared::Heartbeat>(&data) {
                    log(LogKind::Malformed, "", &format!("heartbeat: {data} ({e})"));
                }
                self.heartbeats += 1;
                Vec::new()
            }
            Msg::End { data } => {
                if !self.conn.is_live() {
                    return Vec::new();
                }
                // The browser sees the end of the response as an error and reconnects
                // with Last-Event-ID, which is what the shared stream wants.
                log(LogKind::End, "", &data);
                Vec::new()
            }
            Msg::Error { closed } => {
                if !self.conn.is_live() {
                    return Vec::new();
                }
                let mut effects = Vec::new();
                if closed {
                    // The browser never retries an HTTP error status, so nothing will
                    // reconnect.
                    self.conn = Conn::Closed;
                    log(
                        LogKind::Error,
                        "",
                        "the browser gave up by itself: no reconnect",
                    );
                    effects.push(Effect::CloseSource);
                } else {
                    self.conn = Conn::Reconnecting;
                    log(
                        LogKind::Error,
                        "",
                        "the browser reconnects by itself with Last-Event-ID",
                    );
                }
                if let Some(serial) = self.inquiry.ask(closed) {
                    effects.push(Effect::AskWhy {
                        url: self.resume_url(),
                        serial,
                    });
                }
                effects
            }
            Msg::Why { serial, answer } => {
                if !self.inquiry.is_current(serial) || self.conn == Conn::Idle {
                    return Vec::new();
                }
                let refusal = Refusal::from_answer(answer.as_ref());
                if let Some(message) = stream_message(&refusal) {
                    log(LogKind::Refused, "", &message);
                    self.error = Some(message);
                }
                Vec::new()
            }
        }
    }

    /// The stream's URL, resuming after the last id received.
    fn resume_url(&self) -> String {
        SharedParams {
            last_event_id: self.last_id,
        }
        .to_url()
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
    let mut message = format!("The +1 was refused {}", refusal.status_text());
    if let Some(s) = answer.retry_after_s() {
        message.push_str(&format!("; the server suggests trying again in {s} s"));
    }
    Err(message)
}

/// The sentence for a refused shared stream, or `None` when it was not refused.
fn stream_message(refusal: &Refusal) -> Option<String> {
    let message = match refusal {
        Refusal::Unreachable => {
            "Cannot reach the server: is it running? (`cargo run -p server`)".to_owned()
        }
        Refusal::NoContent => "The server answered 204 No Content to the shared stream".into(),
        Refusal::Passed => return None,
        Refusal::Status { .. } => {
            format!(
                "The server refused the shared stream {}",
                refusal.status_text()
            )
        }
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

    fn answer(status: u16, retry_after: Option<&str>, body: &str) -> Option<Answer> {
        Some(Answer {
            status,
            retry_after: retry_after.map(str::to_owned),
            body: body.to_owned(),
        })
    }

    /// A panel, its log, and the effects of each step.
    struct Panel {
        s: SharedCounter,
        log: Log,
        now: u64,
    }

    impl Panel {
        fn new() -> Panel {
            Panel {
                s: SharedCounter::default(),
                log: Log::default(),
                now: 0,
            }
        }

        fn joined() -> Panel {
            let mut p = Panel::new();
            p.send(Msg::Join);
            p.send(Msg::Opened);
            p
        }

        fn send(&mut self, msg: Msg) -> Vec<Effect> {
            self.now += 1;
            self.s.update(msg, self.now, &mut self.log)
        }

        fn last_log(&self) -> (LogKind, String) {
            let e = self.log.last().expect("a log line");
            assert_eq!(e.stream, Stream::Shared);
            (e.kind, e.data.clone())
        }
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
                Effect::OpenSource("/api/shared".into())
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
        p.send(Msg::Heartbeat {
            data: r#"{"at_us":5}"#.into(),
        });
        assert_eq!((p.s.heartbeats, p.log.len()), (1, lines));
        assert_eq!(p.s.conn, Conn::Open);
    }

    #[test]
    fn the_browser_reconnects_and_the_panel_says_so() {
        let mut p = Panel::joined();
        p.send(value(3));
        assert!(p.send(Msg::Error { closed: false }).is_empty());
        assert_eq!(p.s.conn.as_str(), "reconnecting");
        p.send(Msg::Opened);
        assert_eq!((p.s.conn, p.s.reconnects), (Conn::Open, 1));
        assert!(p.last_log().1.contains("Last-Event-ID 3"));
    }

    #[test]
    fn a_refused_stream_asks_why_resuming_after_the_last_id() {
        let mut p = Panel::joined();
        p.send(value(5));
        let fx = p.send(Msg::Error { closed: true });
        assert_eq!(
            fx,
            vec![
                Effect::CloseSource,
                Effect::AskWhy {
                    url: "/api/shared?last_event_id=5".into(),
                    serial: 1
                }
            ]
        );
        p.send(Msg::Why {
            serial: 1,
            answer: answer(
                503,
                Some("2"),
                r#"{"error":"too many open streams","reason":"capacity"}"#,
            ),
        });
        assert_eq!(
            p.s.error.as_deref(),
            Some(
                "The server refused the shared stream (HTTP 503, capacity): too many open streams"
            )
        );
    }

    #[test]
    fn leave_closes_and_ignores_what_comes_after() {
        let mut p = Panel::joined();
        p.send(value(1));
        assert_eq!(p.send(Msg::Leave), vec![Effect::CloseSource]);
        assert_eq!(p.s.conn.as_str(), "closed");
        p.send(value(2));
        assert_eq!(p.s.value, Some(1));
        assert!(p.send(Msg::Leave).is_empty());
        // Join again starts afresh, without a last id.
        let fx = p.send(Msg::Join);
        assert_eq!(fx[1], Effect::OpenSource("/api/shared".into()));
        assert_eq!((p.s.conn, p.s.last_id), (Conn::Connecting, None));
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
                "The +1 was refused (HTTP 429): too many increments; the server suggests \
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
