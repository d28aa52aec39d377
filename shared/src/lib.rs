//! The wire contract between the sse-counter server and its page: route paths, SSE event
//! names, the payloads of each event, the limits on the stream's parameters and their
//! validation, and the JSON error body.
//!
//! Both sides depend on this crate, so a renamed field or a changed limit fails to
//! compile (or fails a golden test below) instead of drifting silently.

pub mod channels;

use serde::{Deserialize, Serialize};
use std::fmt;

pub mod channel;
pub use channel::{valid_channel, ChannelError, ChannelName, Pattern, COUNTER_CHANNEL};

/// Route paths served by the server.
pub mod paths {
    /// The counter stream: `GET /api/counter?count=10&interval_ms=1000`.
    pub const COUNTER: &str = "/api/counter";
    /// Everything under this prefix is API: unknown paths there answer JSON, not the page.
    pub const API_PREFIX: &str = "/api/";
    /// Prometheus text exposition.
    pub const METRICS: &str = "/metrics";
    /// Liveness and readiness.
    pub const HEALTHZ: &str = "/healthz";
    /// The shared live counter: one stream of changes for every subscriber.
    pub const SHARED: &str = "/api/shared";
    /// `POST` adds one to the shared counter.
    pub const SHARED_INCREMENT: &str = "/api/shared/increment";
    /// `POST`: publish one event on a channel.
    pub const PUBLISH: &str = "/api/publish";
    /// `GET`: one stream of the listed channels.
    pub const EVENTS: &str = "/api/events";
    /// `POST`: end every stream of a session and refuse its token.
    pub const REVOKE: &str = "/api/revoke";
    /// The demo sign-in (`--demo-login`): `POST` signs in, `GET` says who, `DELETE`
    /// signs out.
    pub const SESSION: &str = "/api/session";
    /// `POST`: a fresh cookie for the same session.
    pub const SESSION_REFRESH: &str = "/api/session/refresh";
    /// The page.
    pub const INDEX: &str = "/";
    /// Every route the server answers, for tests that prove each one is served.
    pub const ALL: [&str; 11] = [
        COUNTER,
        SHARED,
        SHARED_INCREMENT,
        PUBLISH,
        EVENTS,
        REVOKE,
        SESSION,
        SESSION_REFRESH,
        METRICS,
        HEALTHZ,
        INDEX,
    ];
}

/// Names used on the SSE wire.
pub mod events {
    /// The event that says the stream is finished: the client should close, not reconnect.
    ///
    /// Ticks carry no `event:` field, so they dispatch as `message` and reach a plain
    /// `onmessage` handler, as in the Express answer this project starts from.
    pub const END: &str = "end";
    /// The comment sent on idle streams so that proxies keep them open.
    pub const KEEP_ALIVE_COMMENT: &str = "keep-alive";
    /// The request header a browser sends when it reconnects.
    pub const LAST_EVENT_ID_HEADER: &str = "last-event-id";
    /// On the shared stream: the client's last id cannot be continued from; its data is
    /// a [`crate::Reset`] and the client replaces its value with it.
    pub const RESET: &str = "reset";
    /// On the shared stream: sent while idle instead of a comment, so that a page can
    /// tell a quiet stream from a dead one. Carries no `id`.
    pub const HEARTBEAT: &str = "heartbeat";
}

/// Query parameter names of [`paths::COUNTER`].
pub mod params {
    pub const COUNT: &str = "count";
    pub const INTERVAL_MS: &str = "interval_ms";
    pub const LAST_EVENT_ID: &str = "last_event_id";
    pub const DROP_AFTER: &str = "drop_after";
    /// `/api/events`: one listed channel (repeated for more).
    pub const CHANNEL: &str = "channel";
    /// Every parameter the stream understands; anything else is refused.
    pub const ALL: [&str; 4] = [COUNT, INTERVAL_MS, LAST_EVENT_ID, DROP_AFTER];
    /// Every parameter [`paths::SHARED`](crate::paths::SHARED) understands.
    pub const SHARED_ALL: [&str; 1] = [LAST_EVENT_ID];
}

/// Limits on the parameters, shared so the page refuses what the server would refuse.
pub mod limits {
    use std::ops::RangeInclusive;

    pub const COUNT: RangeInclusive<u64> = 1..=1_000_000;
    pub const DEFAULT_COUNT: u64 = 10;
    pub const INTERVAL_MS: RangeInclusive<u64> = 1..=3_600_000;
    pub const DEFAULT_INTERVAL_MS: u64 = 1000;
    /// `drop_after` counts ticks on one connection, so it is bounded like `count`.
    pub const DROP_AFTER: RangeInclusive<u64> = 1..=1_000_000;
    /// Any event id the server can have sent fits in a `u64`; longer input is refused
    /// before it is parsed.
    pub const MAX_NUMBER_LEN: usize = 20;
    /// `--history`: how many recent changes of the shared counter are kept for replay.
    pub const HISTORY: RangeInclusive<u64> = 1..=1_000_000;
    pub const DEFAULT_HISTORY: u64 = 100_000;
    /// `--publish-rate`: increments per second per client address (bursts of twice it).
    pub const PUBLISH_RATE: RangeInclusive<u64> = 1..=1_000_000;
    pub const DEFAULT_PUBLISH_RATE: u64 = 10;
    /// An increment carries no body; one larger than this is refused (413) unread.
    pub const MAX_INCREMENT_BODY: u64 = 1024;
}

/// The payload of one tick: an unnamed SSE event with `id: num`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tick {
    /// 1, 2, ... count.
    pub num: u64,
    /// Server wall clock when the tick was written, in microseconds since the UNIX epoch.
    pub sent_at_us: u64,
}

/// Why the server ended a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EndReason {
    /// Every tick up to `count` was sent.
    Complete,
    /// The server is shutting down.
    Shutdown,
    /// The token the stream was opened with expired (`/api/events`).
    Expired,
    /// The session the stream was opened with was revoked (`/api/events`).
    Revoked,
}

impl EndReason {
    pub const fn as_str(self) -> &'static str {
        match self {
            EndReason::Complete => "complete",
            EndReason::Shutdown => "shutdown",
            EndReason::Expired => "expired",
            EndReason::Revoked => "revoked",
        }
    }
}

impl fmt::Display for EndReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The payload of the [`events::END`] event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct End {
    pub reason: EndReason,
    /// The last `num` the client has been sent (0 if none).
    pub last: u64,
}

/// One change of the shared counter: an unnamed SSE event with `id: value`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SharedValue {
    /// The counter after this change (it only goes up, by one).
    pub value: u64,
    /// When the change was published, in microseconds since the UNIX epoch.
    pub sent_at_us: u64,
}

/// Why a shared stream could not continue from the client's last id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ResetReason {
    /// Changes after the client's id have left the history.
    HistoryExceeded,
    /// The client's id is ahead of the current value (the store was lost).
    Ahead,
}

impl ResetReason {
    pub const fn as_str(self) -> &'static str {
        match self {
            ResetReason::HistoryExceeded => "history_exceeded",
            ResetReason::Ahead => "ahead",
        }
    }
}

/// The payload of the [`events::RESET`] event, sent with `id: value`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reset {
    /// The current value: the client replaces its own with it.
    pub value: u64,
    pub reason: ResetReason,
}

/// The payload of the [`events::HEARTBEAT`] event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Heartbeat {
    /// Server wall clock, in microseconds since the UNIX epoch.
    pub at_us: u64,
}

/// The answer to `POST /api/shared/increment`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Incremented {
    /// The counter after this increment.
    pub value: u64,
}

/// Why a `503` was answered, in its body's `reason`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UnavailableReason {
    /// `--max-streams` are open.
    Capacity,
    /// The shared counter's store cannot be reached.
    StoreUnavailable,
    /// The server is shutting down.
    ShuttingDown,
}

/// The JSON body of every error answer: `{"error": "...", "param": "..."}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// A lowercase sentence for people.
    pub error: String,
    /// The query parameter or header at fault, when there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub param: Option<String>,
    /// The offending value as received, cut to [`ErrorBody::MAX_VALUE_LEN`] characters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// On a `503`: which limit or failure it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<UnavailableReason>,
}

impl ErrorBody {
    pub const MAX_VALUE_LEN: usize = 64;

    pub fn new(error: impl Into<String>) -> Self {
        ErrorBody {
            error: error.into(),
            param: None,
            value: None,
            reason: None,
        }
    }

    /// A `503` body naming its reason.
    pub fn unavailable(error: impl Into<String>, reason: UnavailableReason) -> Self {
        ErrorBody {
            reason: Some(reason),
            ..ErrorBody::new(error)
        }
    }
}

impl From<&ParamError> for ErrorBody {
    fn from(err: &ParamError) -> Self {
        let value = err
            .value()
            .map(|v| v.chars().take(Self::MAX_VALUE_LEN).collect());
        ErrorBody {
            error: err.to_string(),
            param: Some(err.param().to_owned()),
            value,
            reason: None,
        }
    }
}

/// A parameter the server (or the page, before it connects) refuses.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParamError {
    #[error("{param} must be a whole number from {min} to {max}")]
    Invalid {
        param: String,
        value: String,
        min: u64,
        max: u64,
    },
    #[error("{param} is given more than once")]
    Repeated { param: String },
    #[error("unknown parameter {param}")]
    Unknown { param: String },
    #[error("{param} (fault injection) is not enabled on this server")]
    FaultInjectionDisabled { param: String },
    #[error("{param} must be {what}")]
    Malformed {
        param: String,
        value: String,
        what: &'static str,
    },
    #[error("at most {max} {param} parameters are allowed")]
    TooMany { param: String, max: u64 },
    #[error("{param} is required")]
    Missing { param: String },
}

impl ParamError {
    /// The name of the parameter or header at fault.
    pub fn param(&self) -> &str {
        match self {
            ParamError::Invalid { param, .. }
            | ParamError::Repeated { param }
            | ParamError::Unknown { param }
            | ParamError::FaultInjectionDisabled { param }
            | ParamError::Malformed { param, .. }
            | ParamError::TooMany { param, .. }
            | ParamError::Missing { param } => param,
        }
    }

    fn value(&self) -> Option<&str> {
        match self {
            ParamError::Invalid { value, .. } | ParamError::Malformed { value, .. } => Some(value),
            _ => None,
        }
    }
}

/// Parses a whole number within `range`: ASCII digits only (no sign, no spaces, no
/// exponent), so `+5`, ` 5` and `5.0` are refused the same way on both sides.
pub fn parse_number(
    param: &str,
    value: &str,
    range: std::ops::RangeInclusive<u64>,
) -> Result<u64, ParamError> {
    let invalid = || ParamError::Invalid {
        param: param.to_owned(),
        value: value.to_owned(),
        min: *range.start(),
        max: *range.end(),
    };
    if value.is_empty()
        || value.len() > limits::MAX_NUMBER_LEN
        || !value.bytes().all(|b| b.is_ascii_digit())
    {
        return Err(invalid());
    }
    let n: u64 = value.parse().map_err(|_| invalid())?;
    if range.contains(&n) {
        Ok(n)
    } else {
        Err(invalid())
    }
}

/// Parses a `Last-Event-ID` value. An empty value means "no id", as the standard says
/// (a browser sends no header then), so it resumes nothing.
pub fn parse_last_event_id(param: &str, value: &str) -> Result<Option<u64>, ParamError> {
    if value.is_empty() {
        return Ok(None);
    }
    parse_number(param, value, 0..=u64::MAX).map(Some)
}

/// The parameters of one counter stream, validated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CounterParams {
    pub count: u64,
    pub interval_ms: u64,
    /// The last id the client has seen, from the query; the header, when present, wins.
    pub last_event_id: Option<u64>,
    /// Fault injection: abort this connection after this many ticks.
    pub drop_after: Option<u64>,
}

impl Default for CounterParams {
    fn default() -> Self {
        CounterParams {
            count: limits::DEFAULT_COUNT,
            interval_ms: limits::DEFAULT_INTERVAL_MS,
            last_event_id: None,
            drop_after: None,
        }
    }
}

impl CounterParams {
    /// Validates decoded query pairs. Unknown and repeated parameters are refused, so a
    /// typo such as `cuont=5` is an error rather than a silent default.
    pub fn from_pairs<'a, I>(pairs: I) -> Result<Self, ParamError>
    where
        I: IntoIterator<Item = (&'a str, &'a str)>,
    {
        let mut out = CounterParams::default();
        let mut seen = [false; params::ALL.len()];
        for (key, value) in pairs {
            let Some(index) = params::ALL.iter().position(|p| *p == key) else {
                return Err(ParamError::Unknown {
                    param: key.chars().take(ErrorBody::MAX_VALUE_LEN).collect(),
                });
            };
            if std::mem::replace(&mut seen[index], true) {
                return Err(ParamError::Repeated {
                    param: key.to_owned(),
                });
            }
            match params::ALL[index] {
                params::COUNT => out.count = parse_number(key, value, limits::COUNT)?,
                params::INTERVAL_MS => {
                    out.interval_ms = parse_number(key, value, limits::INTERVAL_MS)?
                }
                params::LAST_EVENT_ID => out.last_event_id = parse_last_event_id(key, value)?,
                _ => out.drop_after = Some(parse_number(key, value, limits::DROP_AFTER)?),
            }
        }
        Ok(out)
    }

    /// The query string that [`CounterParams::from_pairs`] reads back as `self`.
    pub fn to_query(&self) -> String {
        let mut q = format!(
            "{}={}&{}={}",
            params::COUNT,
            self.count,
            params::INTERVAL_MS,
            self.interval_ms
        );
        if let Some(id) = self.last_event_id {
            q.push_str(&format!("&{}={id}", params::LAST_EVENT_ID));
        }
        if let Some(k) = self.drop_after {
            q.push_str(&format!("&{}={k}", params::DROP_AFTER));
        }
        q
    }

    /// The URL path and query of this stream, relative to the server's origin.
    pub fn to_url(&self) -> String {
        format!("{}?{}", paths::COUNTER, self.to_query())
    }
}

/// The parameters of one shared-counter stream, validated.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SharedParams {
    /// The last id the client has seen, from the query; the header, when present, wins.
    pub last_event_id: Option<u64>,
}

impl SharedParams {
    /// Validates decoded query pairs; unknown and repeated parameters are refused.
    pub fn from_pairs<'a, I>(pairs: I) -> Result<Self, ParamError>
    where
        I: IntoIterator<Item = (&'a str, &'a str)>,
    {
        let mut out = SharedParams::default();
        let mut seen = false;
        for (key, value) in pairs {
            if !params::SHARED_ALL.contains(&key) {
                return Err(ParamError::Unknown {
                    param: key.chars().take(ErrorBody::MAX_VALUE_LEN).collect(),
                });
            }
            if std::mem::replace(&mut seen, true) {
                return Err(ParamError::Repeated {
                    param: key.to_owned(),
                });
            }
            out.last_event_id = parse_last_event_id(key, value)?;
        }
        Ok(out)
    }

    /// The URL path and query of this stream, relative to the server's origin.
    pub fn to_url(&self) -> String {
        match self.last_event_id {
            Some(id) => format!("{}?{}={id}", paths::SHARED, params::LAST_EVENT_ID),
            None => paths::SHARED.to_owned(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn tick_json_is_pinned() {
        let tick = Tick {
            num: 7,
            sent_at_us: 1_700_000_000_123_456,
        };
        let json = serde_json::to_string(&tick).unwrap();
        assert_eq!(json, r#"{"num":7,"sent_at_us":1700000000123456}"#);
        assert_eq!(serde_json::from_str::<Tick>(&json).unwrap(), tick);
    }

    #[test]
    fn end_json_is_pinned() {
        let end = End {
            reason: EndReason::Complete,
            last: 10,
        };
        assert_eq!(
            serde_json::to_string(&end).unwrap(),
            r#"{"reason":"complete","last":10}"#
        );
        let shutdown = End {
            reason: EndReason::Shutdown,
            last: 3,
        };
        let json = serde_json::to_string(&shutdown).unwrap();
        assert_eq!(json, r#"{"reason":"shutdown","last":3}"#);
        assert_eq!(serde_json::from_str::<End>(&json).unwrap(), shutdown);
    }

    #[test]
    fn error_json_is_pinned() {
        let err = CounterParams::from_pairs([("count", "abc")]).unwrap_err();
        let body = ErrorBody::from(&err);
        assert_eq!(
            serde_json::to_string(&body).unwrap(),
            r#"{"error":"count must be a whole number from 1 to 1000000","param":"count","value":"abc"}"#
        );
        assert_eq!(
            serde_json::to_string(&ErrorBody::new("not found")).unwrap(),
            r#"{"error":"not found"}"#
        );
    }

    #[test]
    fn shared_payloads_are_pinned() {
        let v = SharedValue {
            value: 4,
            sent_at_us: 9,
        };
        let json = serde_json::to_string(&v).unwrap();
        assert_eq!(json, r#"{"value":4,"sent_at_us":9}"#);
        assert_eq!(serde_json::from_str::<SharedValue>(&json).unwrap(), v);
        for (reason, word) in [
            (ResetReason::HistoryExceeded, "history_exceeded"),
            (ResetReason::Ahead, "ahead"),
        ] {
            let r = Reset { value: 12, reason };
            let json = serde_json::to_string(&r).unwrap();
            assert_eq!(json, format!(r#"{{"value":12,"reason":"{word}"}}"#));
            assert_eq!(reason.as_str(), word);
            assert_eq!(serde_json::from_str::<Reset>(&json).unwrap(), r);
        }
        assert_eq!(
            serde_json::to_string(&Heartbeat { at_us: 5 }).unwrap(),
            r#"{"at_us":5}"#
        );
        assert_eq!(
            serde_json::to_string(&Incremented { value: 3 }).unwrap(),
            r#"{"value":3}"#
        );
    }

    #[test]
    fn unavailable_bodies_name_their_reason() {
        for (reason, word) in [
            (UnavailableReason::Capacity, "capacity"),
            (UnavailableReason::StoreUnavailable, "store_unavailable"),
            (UnavailableReason::ShuttingDown, "shutting_down"),
        ] {
            let body = ErrorBody::unavailable("x", reason);
            let json = serde_json::to_string(&body).unwrap();
            assert_eq!(json, format!(r#"{{"error":"x","reason":"{word}"}}"#));
            assert_eq!(serde_json::from_str::<ErrorBody>(&json).unwrap(), body);
        }
    }

    #[test]
    fn shared_params_take_only_last_event_id() {
        assert_eq!(
            SharedParams::from_pairs([]).unwrap(),
            SharedParams::default()
        );
        let p = SharedParams::from_pairs([("last_event_id", "7")]).unwrap();
        assert_eq!(p.last_event_id, Some(7));
        assert_eq!(p.to_url(), "/api/shared?last_event_id=7");
        assert_eq!(SharedParams::default().to_url(), "/api/shared");
        assert_eq!(
            SharedParams::from_pairs([("count", "1")]).unwrap_err(),
            ParamError::Unknown {
                param: "count".into()
            }
        );
        assert!(matches!(
            SharedParams::from_pairs([("last_event_id", "1"), ("last_event_id", "2")]),
            Err(ParamError::Repeated { .. })
        ));
        assert_eq!(
            SharedParams::from_pairs([("last_event_id", "x")])
                .unwrap_err()
                .param(),
            "last_event_id"
        );
    }

    #[test]
    fn defaults_apply_when_nothing_is_given() {
        let p = CounterParams::from_pairs([]).unwrap();
        assert_eq!(p, CounterParams::default());
        assert_eq!((p.count, p.interval_ms), (10, 1000));
    }

    #[test]
    fn bounds_are_inclusive() {
        let ok = |k: &'static str, v: &'static str| CounterParams::from_pairs([(k, v)]);
        assert_eq!(ok("count", "1").unwrap().count, 1);
        assert_eq!(ok("count", "1000000").unwrap().count, 1_000_000);
        assert!(ok("count", "0").is_err());
        assert!(ok("count", "1000001").is_err());
        assert_eq!(ok("interval_ms", "3600000").unwrap().interval_ms, 3_600_000);
        assert!(ok("interval_ms", "0").is_err());
        assert!(ok("interval_ms", "3600001").is_err());
        assert!(ok("drop_after", "0").is_err());
        assert_eq!(ok("drop_after", "2").unwrap().drop_after, Some(2));
    }

    #[test]
    fn refuses_what_is_not_a_plain_number() {
        for bad in [
            "", "abc", "+5", "-1", " 5", "5 ", "5.0", "1e3", "0x10", "５",
        ] {
            let err = CounterParams::from_pairs([("count", bad)]).unwrap_err();
            assert_eq!(err.param(), "count", "{bad:?}");
        }
        let huge = "9".repeat(40);
        let err = CounterParams::from_pairs([("last_event_id", huge.as_str())]).unwrap_err();
        assert_eq!(err.param(), "last_event_id");
        let overflow = "18446744073709551616";
        assert!(parse_last_event_id("last-event-id", overflow).is_err());
        assert_eq!(
            parse_last_event_id("last-event-id", "18446744073709551615").unwrap(),
            Some(u64::MAX)
        );
    }

    #[test]
    fn refuses_repeated_and_unknown_parameters() {
        let err = CounterParams::from_pairs([("count", "1"), ("count", "2")]).unwrap_err();
        assert_eq!(
            err,
            ParamError::Repeated {
                param: "count".into()
            }
        );
        let err = CounterParams::from_pairs([("cuont", "1")]).unwrap_err();
        assert_eq!(err.to_string(), "unknown parameter cuont");
    }

    #[test]
    fn empty_last_event_id_means_none() {
        assert_eq!(parse_last_event_id("last-event-id", "").unwrap(), None);
        let p = CounterParams::from_pairs([("last_event_id", "")]).unwrap();
        assert_eq!(p.last_event_id, None);
    }

    proptest! {
        #[test]
        fn query_round_trips(
            count in limits::COUNT,
            interval_ms in limits::INTERVAL_MS,
            last_event_id in proptest::option::of(any::<u64>()),
            drop_after in proptest::option::of(limits::DROP_AFTER),
        ) {
            let p = CounterParams { count, interval_ms, last_event_id, drop_after };
            let q = p.to_query();
            let pairs = q.split('&').map(|kv| kv.split_once('=').unwrap());
            prop_assert_eq!(CounterParams::from_pairs(pairs).unwrap(), p);
        }

        #[test]
        fn any_value_parses_or_names_its_parameter(key in "[a-z_]{1,12}", value in any::<String>()) {
            match CounterParams::from_pairs([(key.as_str(), value.as_str())]) {
                Ok(_) => prop_assert!(params::ALL.contains(&key.as_str())),
                Err(e) => prop_assert_eq!(e.param(), key.as_str()),
            }
        }
    }
}
