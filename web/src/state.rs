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
    /// the browser gave up by itself (see [`State::browser_gave_up`]).
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

    /// Applies the page's own query string (`location.search`) to the form, so that a
    /// link opens with its settings: `count`, `interval_ms` (or `interval`, the input's
    /// name), `drop_after`, `close_on_error=0|1`. Returns whether it also asks to connect
    /// at once (`autoconnect=1`), which is what demos and headless screenshots use, since
    /// they cannot click: `/?count=3&interval_ms=200&autoconnect=1`.
    ///
    /// Values are taken as they are; Connect validates them like typed input.
    pub fn apply_query(&mut self, query: &str) -> bool {
        let mut autoconnect = false;
        for pair in query.trim_start_matches('?').split('&') {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let on = !matches!(v, "0" | "false" | "off");
            match k {
                "count" => self.count = v.to_owned(),
                "interval_ms" | "interval" => self.interval_ms = v.to_owned(),
                "drop_after" => self.drop_after = v.to_owned(),
                "close_on_error" => self.close_on_error = on,
                "autoconnect" => autoconnect = on,
                _ => {}
            }
        }
        autoconnect
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
    /// The answer to [`Effect::AskWhy`] for connection number `serial`: its status and
    /// body, or `None` when the server could not be reached at all.
    Why {
        serial: u64,
        answer: Option<(u16, String)>,
    },
}

/// What the glue must do after an update.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// Close and drop the current EventSource, if any.
    CloseSource,
    /// Open a new EventSource on this URL.
    OpenSource(String),
    /// `fetch` this URL and send back what the server answers as [`Msg::Why`]: an
    /// EventSource reports only "error", never the status or the body.
    AskWhy { url: String, serial: u64 },
}

/// One line of the event log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogEntry {
    /// 1, 2, ... over the page's life, so the view can add only the new lines.
    pub seq: u64,
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
    /// In [`Conn::ClosedOnError`]: true when the browser closed the EventSource by
    /// itself (an HTTP error or a 204 answer: it never retries those), false when the
    /// page did because close-on-error is on.
    pub browser_gave_up: bool,
    close_on_error: bool,
    /// Counts Connect clicks, so a late answer to [`Effect::AskWhy`] about an earlier
    /// connection is not shown against the current one.
    serial: u64,
    /// The current stream's parameters, to ask the server why it was refused.
    params: Option<CounterParams>,
    /// Whether the current source has ever been open (an error before that is a refusal).
    was_open: bool,
    /// Asked once per connection: a browser retrying a dead server every `retry` delay
    /// should not make the page fetch as often.
    asked_why: bool,
    pub log: VecDeque<LogEntry>,
    /// The `seq` of the last log entry.
    log_seq: u64,
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
            browser_gave_up: false,
            close_on_error: true,
            serial: 0,
            params: None,
            was_open: false,
            asked_why: false,
            log: VecDeque::new(),
            log_seq: 0,
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
                        serial: self.serial + 1,
                        params: Some(params),
                        log: std::mem::take(&mut self.log),
                        log_seq: self.log_seq,
                        ..State::default()
                    };
                    self.log(now_ms, "connect", "", &url);
                    // A second Connect closes the open source before opening the new one.
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
                // A reconnect is an `open` after an error.
                if self.conn == Conn::Reconnecting {
                    self.reconnects += 1;
                }
                self.conn = Conn::Open;
                self.was_open = true;
                // Whatever went wrong before (say, the server was not up yet) is over.
                self.error = None;
                let detail = match self.last_event_id.as_str() {
                    "" => String::new(),
                    id => format!("resumed after Last-Event-ID {id}"),
                };
                self.log(now_ms, "open", "", &detail);
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
                let mut effects = Vec::new();
                if self.close_on_error {
                    self.conn = Conn::ClosedOnError;
                    self.log(
                        now_ms,
                        "error",
                        "",
                        "closed by the page, so the browser does not reconnect",
                    );
                    effects.push(Effect::CloseSource);
                } else if closed {
                    // The browser gave up by itself: it does that on an HTTP error status,
                    // a wrong content type or a 204, and never retries. Nothing will
                    // reconnect, so "reconnecting" would be a lie, and "open" or
                    // "finished" are wrong too; the connection is closed because of an
                    // error, which is what `closed-on-error` says. The detail line and the
                    // log say that the browser closed it, not the page.
                    self.conn = Conn::ClosedOnError;
                    self.browser_gave_up = true;
                    self.log(
                        now_ms,
                        "error",
                        "",
                        "the browser gave up by itself: no reconnect",
                    );
                    effects.push(Effect::CloseSource);
                } else {
                    self.conn = Conn::Reconnecting;
                    self.log(
                        now_ms,
                        "error",
                        "",
                        "the browser reconnects by itself with Last-Event-ID",
                    );
                }
                // An error before the stream ever opened, or one the browser gave up on,
                // is a refusal (bad parameters, fault injection off, too many streams,
                // server down): ask the server for the reason it gives.
                if (!self.was_open || closed) && !self.asked_why {
                    if let Some(mut params) = self.params {
                        self.asked_why = true;
                        // Ask as the browser did: a resume sends the last id it saw.
                        params.last_event_id = self.last_event_id.parse().ok();
                        effects.push(Effect::AskWhy {
                            url: params.to_url(),
                            serial: self.serial,
                        });
                    }
                }
                effects
            }
            Msg::Why { serial, answer } => {
                if serial != self.serial {
                    return Vec::new();
                }
                let message = match answer {
                    None => {
                        "Cannot reach the server: is it running? (`cargo run -p server`)".to_owned()
                    }
                    Some((204, _)) => format!(
                        "The server answered 204 No Content to the resume after id {}: the \
                         stream has nothing left, and a 204 stops the browser for good",
                        self.last_event_id
                    ),
                    // The stream opens fine now: whatever it was has passed.
                    Some((status, _)) if (200..300).contains(&status) => return Vec::new(),
                    Some((status, body)) => match serde_json::from_str::<ErrorBody>(&body) {
                        Ok(e) if e.param.as_deref() == Some(params::DROP_AFTER) => format!(
                            "This server does not allow fault injection, so it refused \
                             drop_after (HTTP {status}). Start it with \
                             --allow-fault-injection to simulate a network drop"
                        ),
                        Ok(e) => {
                            format!("The server refused the stream (HTTP {status}): {}", e.error)
                        }
                        Err(_) => format!("The server refused the stream (HTTP {status})"),
                    },
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
        self.log_seq += 1;
        self.log.push_back(LogEntry {
            seq: self.log_seq,
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
                answer: Some((400, r#"{"error":"drop_after (fault injection) is not enabled on this server","param":"drop_after"}"#.into())),
            },
            2,
        );
        let error = s.error.as_deref().unwrap();
        assert!(error.contains("--allow-fault-injection"), "{error}");
        assert_eq!(s.log.back().unwrap().kind, "refused");
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
                answer: Some((status, body.to_owned())),
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
                answer: Some((400, r#"{"error":"old"}"#.into())),
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
        assert!(s.log.back().unwrap().data.contains("the browser gave up"));
        s.update(
            Msg::Why {
                serial: 1,
                answer: Some((204, String::new())),
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
            s.log.back().unwrap().id,
            (LOG_LIMIT as u64 + 50).to_string()
        );
    }

    #[test]
    fn log_entries_are_numbered_across_connections() {
        let mut s = connected(true);
        s.update(Msg::Connect(form("3", "", true)), 2);
        let seqs: Vec<u64> = s.log.iter().map(|e| e.seq).collect();
        assert_eq!(seqs, [1, 2, 3]);
        let kinds: Vec<&str> = s.log.iter().map(|e| e.kind).collect();
        assert_eq!(kinds, ["connect", "open", "connect"]);
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
    fn the_query_fills_the_form_and_may_ask_to_connect() {
        let mut f = form("10", "", true);
        assert!(!f.apply_query(""));
        assert_eq!(f, form("10", "", true));
        let auto = f.apply_query("?count=3&interval=200&drop_after=2&close_on_error=0&x=1");
        assert!(!auto);
        assert_eq!(
            (
                f.count.as_str(),
                f.interval_ms.as_str(),
                f.drop_after.as_str()
            ),
            ("3", "200", "2")
        );
        assert!(!f.close_on_error);
        assert!(f.apply_query("?interval_ms=50&close_on_error=1&autoconnect=1"));
        assert_eq!((f.interval_ms.as_str(), f.close_on_error), ("50", true));
        assert!(f.apply_query("?autoconnect"));
        assert!(!f.apply_query("?autoconnect=0"));
    }
}
