//! The channels' contract: `POST /api/publish` and `GET /api/events`, their names,
//! payloads, ids and limits.
//!
//! A channel name is 1..=[`limits::CHANNEL_NAME_BYTES`] bytes: one or more segments of
//! `[A-Za-z0-9_.~-]` joined by `/`. The channel [`COUNTER`] is the shared counter; only
//! the server publishes on it.

use crate::{ErrorBody, ParamError, ResetReason};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use std::fmt;

/// The shared counter, as a channel.
pub const COUNTER: &str = crate::channel::COUNTER_CHANNEL;

pub use crate::channel::valid_channel;

/// The cookie a browser's token travels in (`HttpOnly`: the page never reads it).
pub const TOKEN_COOKIE: &str = "sse_token";

/// Query parameters that would put a credential in a URL: always refused.
pub const CREDENTIAL_PARAMS: [&str; 3] = ["token", "access_token", "authorization"];

/// The body of `POST /api/revoke`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RevokeRequest {
    pub sid: String,
}

/// The answer to `POST /api/revoke`: streams ended on this instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Revoked {
    pub ended: u64,
}

/// The body of `POST /api/session` (the demo sign-in).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SessionRequest {
    pub name: String,
}

/// Who is signed in, and until when (seconds since the UNIX epoch).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Session {
    pub name: String,
    pub expires_at: u64,
}

/// Whether `name` may sign in: `[a-z0-9_-]{1,32}`.
pub fn valid_user_name(name: &str) -> bool {
    (1..=32).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

/// `?last_event_id=earliest`: replay the whole history of the listed channels.
pub const EARLIEST: &str = "earliest";

/// The contract's limits and defaults for channels.
pub mod limits {
    use std::ops::RangeInclusive;

    /// The longest channel name, in bytes.
    pub const CHANNEL_NAME_BYTES: usize = crate::channel::MAX_CHANNEL_BYTES;
    /// The longest event type, in bytes.
    pub const TYPE_BYTES: usize = 64;
    /// The longest event id, in bytes (a longer `Last-Event-ID` is not CORS-safelisted).
    pub const EVENT_ID_BYTES: usize = 64;
    /// `--max-channels-per-stream`.
    pub const DEFAULT_MAX_CHANNELS_PER_STREAM: u64 = 32;
    pub const MAX_CHANNELS_PER_STREAM: RangeInclusive<u64> = 1..=1024;
    /// `--max-event-bytes`: the largest publish body.
    pub const DEFAULT_MAX_EVENT_BYTES: u64 = 65_536;
    pub const MAX_EVENT_BYTES: RangeInclusive<u64> = 64..=16 * 1024 * 1024;
    /// `--channel-publish-rate`: publishes per second per publisher (bursts of twice).
    pub const DEFAULT_CHANNEL_PUBLISH_RATE: u64 = 1000;
    /// `--history-bytes`: the history's bound in bytes of encoded events.
    pub const DEFAULT_HISTORY_BYTES: u64 = 64 * 1024 * 1024;
    pub const HISTORY_BYTES: RangeInclusive<u64> = 1024..=16 * 1024 * 1024 * 1024;
}

/// Event types a publisher may not use: the server's own events.
pub const RESERVED_TYPES: [&str; 3] = [
    crate::events::END,
    crate::events::RESET,
    crate::events::HEARTBEAT,
];

/// Why a channel name, a type or an id is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("a channel name is 1 to 128 bytes of segments of A-Z a-z 0-9 _ . ~ - joined by /")]
    Channel,
    #[error("an event type is 1 to 64 bytes of a-z 0-9 _ . - and not end, reset or heartbeat")]
    Type,
    #[error("not an event id of this server")]
    EventId,
}

/// Whether `ty` may be given as a publish's `type`.
pub fn valid_type(ty: &str) -> bool {
    !ty.is_empty()
        && ty.len() <= limits::TYPE_BYTES
        && ty.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'_' | b'.' | b'-')
        })
        && !RESERVED_TYPES.contains(&ty)
}

/// The body of `POST /api/publish`. `data` is any JSON value, kept as its text.
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PublishRequest {
    pub channel: String,
    pub data: Box<RawValue>,
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub ty: Option<String>,
}

impl PublishRequest {
    /// Checks the channel and type (the JSON itself was checked by parsing it).
    pub fn validate(&self) -> Result<(), NameError> {
        if !valid_channel(&self.channel) {
            return Err(NameError::Channel);
        }
        if let Some(ty) = &self.ty {
            if !valid_type(ty) {
                return Err(NameError::Type);
            }
        }
        Ok(())
    }
}

/// The answer to `POST /api/publish`: the id every subscriber gets the event with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Published {
    pub id: String,
}

/// The `data` of one event on `/api/events`.
#[derive(Debug, Serialize, Deserialize)]
pub struct ChannelEvent<'a> {
    #[serde(borrow)]
    pub channel: std::borrow::Cow<'a, str>,
    #[serde(borrow)]
    pub data: &'a RawValue,
    /// The publisher's `sub`, for events published with a token.
    #[serde(default, skip_serializing_if = "Option::is_none", borrow)]
    pub from: Option<std::borrow::Cow<'a, str>>,
    pub sent_at_us: u64,
}

/// The `data` of a counter change on `/api/events?channel=counter`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CounterData {
    pub value: u64,
}

/// The payload of `reset` on `/api/events`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChannelReset {
    pub reason: ResetReason,
    /// The listed channels concerned: every one for `ahead`, those that lost events for
    /// `history_exceeded`.
    pub channels: Vec<String>,
}

/// The payload of `end` on `/api/events`: the last id sent, if any.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChannelEnd {
    pub reason: crate::EndReason,
    pub last: Option<String>,
}

/// An event id of `/api/events`: the store's epoch and the event's place in the
/// store's order, written `<epoch>-<seq>`. Clients treat it as opaque.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct EventId {
    /// 1..=32 bytes of `[a-z0-9]`.
    pub epoch: String,
    pub seq: u64,
}

impl EventId {
    /// Parses an id as this server writes it; anything else is an error.
    pub fn parse(text: &str) -> Result<EventId, NameError> {
        let (epoch, seq) = text.rsplit_once('-').ok_or(NameError::EventId)?;
        let epoch_ok = (1..=32).contains(&epoch.len())
            && epoch
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
        let seq_ok = !seq.is_empty()
            && seq.len() <= crate::limits::MAX_NUMBER_LEN
            && seq.bytes().all(|b| b.is_ascii_digit());
        if !epoch_ok || !seq_ok {
            return Err(NameError::EventId);
        }
        let seq = seq.parse().map_err(|_| NameError::EventId)?;
        Ok(EventId {
            epoch: epoch.to_owned(),
            seq,
        })
    }
}

impl fmt::Display for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.epoch, self.seq)
    }
}

/// Where a stream of `/api/events` starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resume {
    /// Live: events published after the stream opened.
    Live,
    /// The whole history of the listed channels.
    Earliest,
    /// Every event after this id.
    After(EventId),
}

impl Resume {
    /// Parses a `Last-Event-ID` header or `last_event_id` query value. Empty means
    /// live, as the standard says of an empty id.
    pub fn parse(param: &str, value: &str) -> Result<Resume, ParamError> {
        match value {
            "" => Ok(Resume::Live),
            EARLIEST => Ok(Resume::Earliest),
            id => EventId::parse(id)
                .map(Resume::After)
                .map_err(|_| ParamError::Malformed {
                    param: param.to_owned(),
                    value: id.chars().take(ErrorBody::MAX_VALUE_LEN).collect(),
                    what: "an event id this server sent, or earliest",
                }),
        }
    }
}

/// The parameters of one `/api/events` stream, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventsParams {
    /// The listed channels, in the order given, none twice.
    pub channels: Vec<String>,
    /// From the query; the header, when present, wins.
    pub resume: Option<Resume>,
}

impl EventsParams {
    /// Validates decoded query pairs: 1..=`max_channels` `channel`s, none repeated, and
    /// at most one `last_event_id`; anything else is refused.
    pub fn from_pairs<'a, I>(pairs: I, max_channels: usize) -> Result<Self, ParamError>
    where
        I: IntoIterator<Item = (&'a str, &'a str)>,
    {
        let mut channels: Vec<String> = Vec::new();
        let mut resume = None;
        for (key, value) in pairs {
            match key {
                crate::params::CHANNEL => {
                    if !valid_channel(value) {
                        return Err(ParamError::Malformed {
                            param: key.to_owned(),
                            value: value.chars().take(ErrorBody::MAX_VALUE_LEN).collect(),
                            what: "a channel name: segments of A-Z a-z 0-9 _ . ~ - joined by /, at most 128 bytes",
                        });
                    }
                    if channels.iter().any(|c| c == value) {
                        return Err(ParamError::Repeated {
                            param: format!("{key}={value}"),
                        });
                    }
                    if channels.len() == max_channels {
                        return Err(ParamError::TooMany {
                            param: key.to_owned(),
                            max: max_channels as u64,
                        });
                    }
                    channels.push(value.to_owned());
                }
                crate::params::LAST_EVENT_ID => {
                    if resume.is_some() {
                        return Err(ParamError::Repeated {
                            param: key.to_owned(),
                        });
                    }
                    resume = Some(Resume::parse(key, value)?);
                }
                other => {
                    return Err(ParamError::Unknown {
                        param: other.chars().take(ErrorBody::MAX_VALUE_LEN).collect(),
                    })
                }
            }
        }
        if channels.is_empty() {
            return Err(ParamError::Missing {
                param: crate::params::CHANNEL.to_owned(),
            });
        }
        Ok(EventsParams { channels, resume })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn channel_names() {
        for ok in [
            "a",
            "counter",
            "rooms/lobby",
            "a.b~c-d_e/F9",
            &"x".repeat(128),
        ] {
            assert!(valid_channel(ok), "{ok}");
        }
        for bad in [
            "",
            "/a",
            "a/",
            "a//b",
            "a b",
            "é",
            "a?b",
            &"x".repeat(129),
            "a/*",
        ] {
            assert!(!valid_channel(bad), "{bad}");
        }
    }

    #[test]
    fn types() {
        for ok in ["message", "a.b-c_d", "x9"] {
            assert!(valid_type(ok), "{ok}");
        }
        for bad in [
            "",
            "Message",
            "end",
            "reset",
            "heartbeat",
            "a b",
            &"x".repeat(65),
        ] {
            assert!(!valid_type(bad), "{bad}");
        }
    }

    #[test]
    fn publish_bodies() {
        let ok: PublishRequest =
            serde_json::from_str(r#"{"channel":"a","data":{"x":[1,2]},"type":"m"}"#).unwrap();
        assert_eq!(ok.data.get(), r#"{"x":[1,2]}"#);
        assert!(ok.validate().is_ok());
        for bad in [
            r#"{"channel":"a"}"#,
            r#"{"data":1}"#,
            r#"{"channel":"a","data":1,"extra":2}"#,
            r#"{"channel":"a","data":1"#,
        ] {
            assert!(
                serde_json::from_str::<PublishRequest>(bad).is_err(),
                "{bad}"
            );
        }
        let bad_type: PublishRequest =
            serde_json::from_str(r#"{"channel":"a","data":1,"type":"end"}"#).unwrap();
        assert_eq!(bad_type.validate(), Err(NameError::Type));
    }

    #[test]
    fn golden_payloads() {
        let data = RawValue::from_string("{\"text\":\"hi\"}".into()).unwrap();
        let ev = ChannelEvent {
            channel: "rooms/a".into(),
            data: &data,
            from: Some("ann".into()),
            sent_at_us: 7,
        };
        assert_eq!(
            serde_json::to_string(&ev).unwrap(),
            r#"{"channel":"rooms/a","data":{"text":"hi"},"from":"ann","sent_at_us":7}"#
        );
        let reset = ChannelReset {
            reason: ResetReason::HistoryExceeded,
            channels: vec!["a".into()],
        };
        assert_eq!(
            serde_json::to_string(&reset).unwrap(),
            r#"{"reason":"history_exceeded","channels":["a"]}"#
        );
        let end = ChannelEnd {
            reason: crate::EndReason::Shutdown,
            last: Some("ab12-3".into()),
        };
        assert_eq!(
            serde_json::to_string(&end).unwrap(),
            r#"{"reason":"shutdown","last":"ab12-3"}"#
        );
    }

    #[test]
    fn params() {
        let p = EventsParams::from_pairs(
            [
                ("channel", "a"),
                ("channel", "b/c"),
                ("last_event_id", "earliest"),
            ],
            32,
        )
        .unwrap();
        assert_eq!(p.channels, ["a", "b/c"]);
        assert_eq!(p.resume, Some(Resume::Earliest));
        for bad in [
            vec![],
            vec![("channel", "a"), ("channel", "a")],
            vec![("channel", "a/")],
            vec![("channel", "a"), ("x", "1")],
            vec![("channel", "a"), ("last_event_id", "nope")],
            vec![
                ("channel", "a"),
                ("last_event_id", "ab-1"),
                ("last_event_id", "ab-1"),
            ],
        ] {
            assert!(
                EventsParams::from_pairs(bad.clone(), 32).is_err(),
                "{bad:?}"
            );
        }
        let many: Vec<String> = (0..33).map(|i| format!("c{i}")).collect();
        let pairs = many.iter().map(|c| ("channel", c.as_str()));
        assert!(EventsParams::from_pairs(pairs.clone().take(32), 32).is_ok());
        assert!(matches!(
            EventsParams::from_pairs(pairs, 32),
            Err(ParamError::TooMany { .. })
        ));
    }

    proptest! {
        #[test]
        fn ids_read_back(epoch in "[a-z0-9]{1,32}", seq in any::<u64>()) {
            let id = EventId { epoch, seq };
            let text = id.to_string();
            prop_assert!(text.len() <= limits::EVENT_ID_BYTES);
            prop_assert!(text.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'));
            prop_assert_eq!(EventId::parse(&text).unwrap(), id);
        }

        #[test]
        fn names_of_allowed_segments_are_valid(segs in prop::collection::vec("[A-Za-z0-9_.~-]{1,10}", 1..8)) {
            let name = segs.join("/");
            prop_assert_eq!(valid_channel(&name), name.len() <= 128);
        }

        #[test]
        fn anything_with_another_byte_is_not(name in ".{0,40}") {
            let allowed = !name.is_empty()
                && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"_.~-/".contains(&b));
            if !allowed {
                prop_assert!(!valid_channel(&name));
            }
        }
    }
}
