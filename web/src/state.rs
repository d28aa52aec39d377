//! The page's state machine: every input (a click, an EventSource event) is a [`Msg`];
//! [`State::update`] changes the state and says what the glue must do ([`Effect`]).
//! No web-sys here, so every transition is unit-tested natively (`cargo test -p web`).

use shared::{limits, params, parse_number, CounterParams, End, EndReason, ErrorBody, Tick};
use std::collections::VecDeque;

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
    /// the browser gave up by itself (an HTTP error: it never retries those).
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

/// What the form holds, as typed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Form {
    pub count: String,
    pub interval_ms: String,
    /// Empty means no simulated drop.
    pub drop_after: String,
    pub close_on_error: bool,
}

impl Form {
    /// The stream's parameters, validated with the server's own rules.
    pub fn params(&self) -> Result<CounterParams, String> {
        let count = parse_number(params::COUNT, self.count.trim(), limits::COUNT)
            .map_err(|e| e.to_string())?;
        let interval_ms = parse_number(
            params::INTERVAL_MS,
            self.interval_ms.trim(),
            limits::INTERVAL_MS,
        )
        .map_err(|e| e.to_string())?;
        let drop_after = match self.drop_after.trim() {
            "" => None,
            v => Some(
                parse_number(params::DROP_AFTER, v, limits::DROP_AFTER)
                    .map_err(|e| e.to_string())?,
            ),
        };
        Ok(CounterParams {
            count,
            interval_ms,
            last_event_id: None,
            drop_after,
        })
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Msg {
    /// The Connect button, with the form as it is.
    Connect(Form),
    /// The Close button.
    Close,
    /// The EventSource's `open` event.
    Opened,
    /// A `message` event (a tick): its `lastEventId` and `data`.
    Message { id: String, data: String },
    /// The `end` event's data.
    End { data: String },
    /// The EventSource's `error` event; `closed` is whether its readyState is CLOSED,
    /// meaning the browser itself will not reconnect.
    Error { closed: bool },
    /// The body of the answer that refused the stream, fetched after an error.
    Refused { status: u16, body: String },
}

/// What the glue must do after an update.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// Close and drop the current EventSource, if any.
    CloseSource,
    /// Open a new EventSource on this URL.
    OpenSource(String),
    /// Fetch this URL to learn why the server refused the stream.
    FetchRefusal(String),
}

/// One line of the event log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogEntry {
    /// Milliseconds since the page loaded.
    pub at_ms: u64,
    pub kind: &'static str,
    pub id: String,
    pub data: String,
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
    close_on_error: bool,
    /// The URL of the current stream, to fetch the refusal from.
    url: Option<String>,
    /// Whether the current source has ever been open (an error before that is a refusal).
    was_open: bool,
    pub log: VecDeque<LogEntry>,
}

/// The log keeps this many entries; older ones scroll away.
pub const LOG_LIMIT: usize = 200;

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
            close_on_error: true,
            url: None,
            was_open: false,
            log: VecDeque::new(),
        }
    }
}

impl State {
    pub fn update(&mut self, msg: Msg, now_ms: u64) -> Vec<Effect> {
        match msg {
            Msg::Connect(form) => match form.params() {
                Ok(params) => {
                    let url = params.to_url();
                    *self = State {
                        conn: Conn::Connecting,
                        close_on_error: form.close_on_error,
                        url: Some(url.clone()),
                        log: std::mem::take(&mut self.log),
                        ..State::default()
                    };
                    self.log(now_ms, "connect", "", &url);
                    vec![Effect::CloseSource, Effect::OpenSource(url)]
                }
                Err(e) => {
                    self.error = Some(e);
                    Vec::new()
                }
            },
            Msg::Close => {
                if !self.conn.is_live() {
                    return Vec::new();
                }
                self.conn = Conn::ClosedByUser;
                self.log(now_ms, "close", "", "closed by the page: no reconnect");
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
                self.was_open = true;
                self.log(now_ms, "open", "", "");
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
                        self.last_event_id = id.clone();
                        self.log(now_ms, "message", &id, &data);
                    }
                    Err(e) => self.log(now_ms, "malformed", &id, &format!("{data} ({e})")),
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
                        self.log(now_ms, "end", "", &data);
                    }
                    Err(e) => self.log(now_ms, "malformed", "", &format!("end: {data} ({e})")),
                }
                // The server said it is done: close before the browser sees the stream
                // end as an error and reconnects.
                self.conn = Conn::Finished;
                vec![Effect::CloseSource]
            }
            Msg::Error { closed } => {
                if !self.conn.is_live() {
                    return Vec::new();
                }
                let refused = !self.was_open || closed;
                let mut effects = Vec::new();
                if self.close_on_error || closed {
                    self.conn = Conn::ClosedOnError;
                    let why = if closed && !self.close_on_error {
                        "error: the browser gave up by itself"
                    } else {
                        "error: closed by the page, so the browser does not reconnect"
                    };
                    self.log(now_ms, "error", "", why);
                    effects.push(Effect::CloseSource);
                } else {
                    self.conn = Conn::Reconnecting;
                    self.log(
                        now_ms,
                        "error",
                        "",
                        "error: the browser reconnects by itself with Last-Event-ID",
                    );
                }
                if refused {
                    if let Some(url) = &self.url {
                        effects.push(Effect::FetchRefusal(url.clone()));
                    }
                }
                effects
            }
            Msg::Refused { status, body } => {
                // A stream that opens fine is no refusal: nothing to say.
                if (200..300).contains(&status) {
                    return Vec::new();
                }
                let message = match serde_json::from_str::<ErrorBody>(&body) {
                    Ok(e) if e.param.as_deref() == Some(params::DROP_AFTER) => format!(
                        "This server does not allow fault injection: start it with \
                         --allow-fault-injection to simulate a network drop ({status})"
                    ),
                    Ok(e) => format!("The server refused the stream: {} ({status})", e.error),
                    Err(_) => format!("The server refused the stream ({status})"),
                };
                self.log(now_ms, "refused", "", &message);
                self.error = Some(message);
                Vec::new()
            }
        }
    }

    fn log(&mut self, at_ms: u64, kind: &'static str, id: &str, data: &str) {
        if self.log.len() == LOG_LIMIT {
            self.log.pop_front();
        }
        self.log.push_back(LogEntry {
            at_ms,
            kind,
            id: id.to_owned(),
            data: data.to_owned(),
        });
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
        assert_eq!(s.log.back().unwrap().kind, "malformed");
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
        assert!(s.log.back().unwrap().data.contains("shutdown"));
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
                Effect::FetchRefusal("/api/counter?count=3&interval_ms=100&drop_after=2".into())
            ]
        );
        assert_eq!(s.conn, Conn::ClosedOnError);
        s.update(
            Msg::Refused {
                status: 400,
                body: r#"{"error":"drop_after (fault injection) is not enabled on this server","param":"drop_after"}"#.into(),
            },
            2,
        );
        assert!(s
            .error
            .as_deref()
            .unwrap()
            .contains("--allow-fault-injection"));
    }

    #[test]
    fn the_browser_giving_up_is_closed_on_error_even_without_close_on_error() {
        let mut s = connected(false);
        let fx = s.update(Msg::Error { closed: true }, 2);
        assert!(fx.contains(&Effect::CloseSource));
        assert_eq!(s.conn, Conn::ClosedOnError);
    }

    #[test]
    fn a_refusal_that_was_not_one_says_nothing() {
        let mut s = connected(true);
        s.update(
            Msg::Refused {
                status: 200,
                body: String::new(),
            },
            2,
        );
        assert_eq!(s.error, None);
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
            s.log.back().unwrap().id,
            (LOG_LIMIT as u64 + 50).to_string()
        );
    }
}
