//! SSE frame encoding, exact to the HTML standard's `text/event-stream` format. Every
//! byte the server writes on a stream comes from here.

use bytes::{BufMut as _, Bytes, BytesMut};
use serde::Serialize;

/// A field value that cannot be written on one line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("the {0} field may not contain CR, LF or NUL")]
    LineBreak(&'static str),
    #[error("the payload cannot be written as JSON: {0}")]
    Json(String),
}

/// The `retry:` field alone: the client's reconnection delay, in milliseconds.
pub fn retry(ms: u64) -> Bytes {
    let mut out = BytesMut::with_capacity(24);
    field(&mut out, "retry", itoa::Buffer::new().format(ms));
    out.put_u8(b'\n');
    out.freeze()
}

/// A comment line, ignored by clients; used as keep-alive.
pub fn comment(text: &str) -> Result<Bytes, FrameError> {
    if text.contains(['\r', '\n']) {
        return Err(FrameError::LineBreak("comment"));
    }
    let mut out = BytesMut::with_capacity(text.len() + 4);
    out.put_slice(b": ");
    out.put_slice(text.as_bytes());
    out.put_slice(b"\n\n");
    Ok(out.freeze())
}

/// One event. `data` may hold any text: it is split on every line ending the standard
/// knows (CRLF, LF, CR) into `data:` lines, which a conforming parser joins back with
/// LF. A CR inside `data` is therefore read back as LF: the standard has no way to
/// carry a bare CR, so callers that need one must escape it (JSON does).
pub fn event(event: Option<&str>, id: Option<&str>, data: &str) -> Result<Bytes, FrameError> {
    let mut out = BytesMut::with_capacity(data.len() + 32);
    head(&mut out, event, id)?;
    let mut rest = data;
    loop {
        match rest.find(['\r', '\n']) {
            Some(at) => {
                field(&mut out, "data", &rest[..at]);
                let skip = if rest[at..].starts_with("\r\n") { 2 } else { 1 };
                rest = &rest[at + skip..];
            }
            None => {
                field(&mut out, "data", rest);
                break;
            }
        }
    }
    out.put_u8(b'\n');
    Ok(out.freeze())
}

/// An event whose data is `payload` as JSON, with a numeric id if given.
///
/// The fast path of [`event`] for every event the server sends: JSON escapes every
/// control character, so its text is one line and is written straight into the frame
/// (one allocation). `json_equals_event` below proves the bytes are [`event`]'s.
/// `event_name` is a contract constant or a publisher's type (validated by
/// `shared::channels::valid_type`); one holding a line break is refused all the same.
pub fn json<T: Serialize>(
    event_name: Option<&str>,
    id: Option<u64>,
    payload: &T,
) -> Result<Bytes, FrameError> {
    let mut digits = itoa::Buffer::new();
    json_id(event_name, id.map(|id| digits.format(id)), payload)
}

/// [`json`] with a textual id (the channels' `<epoch>-<seq>`).
pub fn json_id<T: Serialize>(
    event_name: Option<&str>,
    id: Option<&str>,
    payload: &T,
) -> Result<Bytes, FrameError> {
    let mut out = BytesMut::with_capacity(96);
    head(&mut out, event_name, id)?;
    out.put_slice(b"data: ");
    serde_json::to_writer((&mut out).writer(), payload)
        .map_err(|err| FrameError::Json(err.to_string()))?;
    out.put_slice(b"\n\n");
    Ok(out.freeze())
}

/// An unnamed event with a numeric id whose data is a JSON object of whole numbers,
/// `{"<name>":<n>,...}` in the order given: the bytes of [`json`] for such a payload
/// (`numbers_equal_json` below), written without serde in one allocation of exactly
/// its size. `names` are the contract's field names, plain identifiers that JSON
/// writes as they are (checked by the same test for every name the server uses).
// Bench: `cargo xtask bench` 1 Hz, CPU per event (callgrind: a tenth fewer instructions
// than serde for the counter's tick).
pub fn numbers<const N: usize>(id: u64, fields: [(&'static str, u64); N]) -> Bytes {
    let mut id_digits = itoa::Buffer::new();
    let id = id_digits.format(id).as_bytes();
    let mut digits = [(); N].map(|()| itoa::Buffer::new());
    let mut values: [&[u8]; N] = [&[]; N];
    for (i, (buf, (_, n))) in digits.iter_mut().zip(fields).enumerate() {
        values[i] = buf.format(n).as_bytes();
    }
    let len = 4
        + id.len()
        + 7
        + 2
        + 2
        + fields
            .iter()
            .zip(values)
            .map(|((name, _), v)| name.len() + v.len() + 4)
            .sum::<usize>();
    let mut out = Vec::with_capacity(len);
    out.extend_from_slice(b"id: ");
    out.extend_from_slice(id);
    out.extend_from_slice(b"\ndata: {");
    for (i, ((name, _), v)) in fields.iter().zip(values).enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.push(b'"');
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b"\":");
        out.extend_from_slice(v);
    }
    out.extend_from_slice(b"}\n\n");
    Bytes::from(out)
}

/// The `event:` and `id:` lines, checked.
fn head(out: &mut BytesMut, event: Option<&str>, id: Option<&str>) -> Result<(), FrameError> {
    if let Some(event) = event {
        if event.contains(['\r', '\n']) {
            return Err(FrameError::LineBreak("event"));
        }
        field(out, "event", event);
    }
    if let Some(id) = id {
        // A NUL in `id` makes the standard's parser ignore the whole field.
        if id.contains(['\r', '\n', '\0']) {
            return Err(FrameError::LineBreak("id"));
        }
        field(out, "id", id);
    }
    Ok(())
}

fn field(out: &mut BytesMut, name: &str, value: &str) {
    out.put_slice(name.as_bytes());
    // A value that starts with a space would lose it to the parser without this one.
    out.put_slice(b": ");
    out.put_slice(value.as_bytes());
    out.put_u8(b'\n');
}

#[cfg(test)]
mod tests {
    use super::*;
    use eventsource_stream::Eventsource as _;
    use futures_util::StreamExt as _;
    use proptest::prelude::*;

    /// Parses chunks with a conforming SSE parser (eventsource-stream), as a browser
    /// would.
    fn parse(chunks: Vec<Bytes>) -> Vec<eventsource_stream::Event> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(async {
            futures_util::stream::iter(chunks.into_iter().map(Ok::<_, std::io::Error>))
                .eventsource()
                .map(|e| e.expect("the parser accepts every frame"))
                .collect()
                .await
        })
    }

    /// Cuts `bytes` in two anywhere, as TCP may.
    fn split(bytes: Bytes, at: prop::sample::Index) -> Vec<Bytes> {
        let at = at.index(bytes.len() + 1);
        vec![bytes.slice(..at), bytes.slice(at..)]
    }

    /// One of the payloads the server sends, with the event name and id it goes with.
    #[derive(Debug, Clone)]
    enum Sent {
        Tick(shared::Tick),
        End(shared::End),
        Shared(shared::SharedValue),
        Reset(shared::Reset),
        Heartbeat(shared::Heartbeat),
    }

    impl Sent {
        fn frame(&self) -> Bytes {
            use shared::events;
            match self {
                Sent::Tick(t) => json(None, Some(t.num), t),
                Sent::End(e) => json(Some(events::END), None, e),
                Sent::Shared(v) => json(None, Some(v.value), v),
                Sent::Reset(r) => json(Some(events::RESET), Some(r.value), r),
                Sent::Heartbeat(h) => json(Some(events::HEARTBEAT), None, h),
            }
            .unwrap()
        }

        /// What a parser must read back: name, id, data.
        fn expected(&self) -> (&'static str, String, String) {
            use shared::events;
            let j = |v: &dyn erased::Json| v.json();
            match self {
                Sent::Tick(t) => ("message", t.num.to_string(), j(t)),
                Sent::End(e) => (events::END, String::new(), j(e)),
                Sent::Shared(v) => ("message", v.value.to_string(), j(v)),
                Sent::Reset(r) => (events::RESET, r.value.to_string(), j(r)),
                Sent::Heartbeat(h) => (events::HEARTBEAT, String::new(), j(h)),
            }
        }
    }

    mod erased {
        pub trait Json {
            fn json(&self) -> String;
        }
        impl<T: serde::Serialize> Json for T {
            fn json(&self) -> String {
                serde_json::to_string(self).unwrap()
            }
        }
    }

    fn any_sent() -> impl Strategy<Value = Sent> {
        use shared::*;
        prop_oneof![
            (any::<u64>(), any::<u64>())
                .prop_map(|(num, sent_at_us)| Sent::Tick(Tick { num, sent_at_us })),
            (any::<bool>(), any::<u64>()).prop_map(|(shutdown, last)| Sent::End(End {
                reason: if shutdown {
                    EndReason::Shutdown
                } else {
                    EndReason::Complete
                },
                last
            })),
            (any::<u64>(), any::<u64>())
                .prop_map(|(value, sent_at_us)| Sent::Shared(SharedValue { value, sent_at_us })),
            (any::<u64>(), any::<bool>()).prop_map(|(value, ahead)| Sent::Reset(Reset {
                value,
                reason: if ahead {
                    ResetReason::Ahead
                } else {
                    ResetReason::HistoryExceeded
                }
            })),
            any::<u64>().prop_map(|at_us| Sent::Heartbeat(Heartbeat { at_us })),
        ]
    }

    proptest! {
        /// Any event, CR and LF included, reads back exactly (the standard turns every
        /// line ending into LF, so that is what "exactly" means for data).
        #[test]
        fn any_event_reads_back_exactly(
            name in "[^\r\n]{0,12}",
            id in "[^\r\n\x00]{0,12}",
            // Arbitrary text rarely holds a CR: mix in text made of line endings.
            data in prop_oneof![any::<String>(), "([a-z :]|\\r|\\n|\\r\\n){0,24}"],
            at in any::<prop::sample::Index>(),
        ) {
            let bytes = event(Some(&name), Some(&id), &data).unwrap();
            let events = parse(split(bytes, at));
            prop_assert_eq!(events.len(), 1, "one frame, one event: {:?}", events);
            let ev = events.into_iter().next().unwrap();
            let want_data = data.replace("\r\n", "\n").replace('\r', "\n");
            prop_assert_eq!(ev.data, want_data);
            prop_assert_eq!(ev.id, id);
            let want_name = if name.is_empty() { "message".to_owned() } else { name };
            prop_assert_eq!(ev.event, want_name);
        }

        /// The frames the server really sends, in any order and cut anywhere, read back
        /// as exactly the payloads that were encoded.
        #[test]
        fn what_the_server_sends_reads_back_exactly(
            sent in prop::collection::vec(any_sent(), 1..6),
            retry_ms in any::<u64>(),
            at in any::<prop::sample::Index>(),
        ) {
            let mut all = BytesMut::new();
            all.extend_from_slice(&retry(retry_ms));
            for (i, s) in sent.iter().enumerate() {
                if i % 2 == 1 {
                    all.extend_from_slice(&comment(shared::events::KEEP_ALIVE_COMMENT).unwrap());
                }
                all.extend_from_slice(&s.frame());
            }
            let events = parse(split(all.freeze(), at));
            prop_assert_eq!(events.len(), sent.len());
            let mut last_id = String::new();
            for (ev, s) in events.iter().zip(&sent) {
                let (name, id, data) = s.expected();
                // An event without `id:` keeps the last one seen, as the standard says.
                if !id.is_empty() {
                    last_id = id;
                }
                prop_assert_eq!(&ev.event, name);
                prop_assert_eq!(&ev.id, &last_id);
                prop_assert_eq!(&ev.data, &data);
                if let Some(retry) = ev.retry {
                    prop_assert_eq!(retry.as_millis(), u128::from(retry_ms));
                }
            }
        }

        /// The numbers fast path writes exactly the bytes of the JSON path (which equals
        /// the general encoder's, below), for the tick's field names.
        #[test]
        fn numbers_equal_json(num in any::<u64>(), sent_at_us in any::<u64>()) {
            let tick = shared::Tick { num, sent_at_us };
            prop_assert_eq!(
                numbers(num, [("num", num), ("sent_at_us", sent_at_us)]),
                json(None, Some(num), &tick).unwrap()
            );
        }

        /// The JSON fast path writes exactly the bytes the general encoder would.
        #[test]
        fn json_equals_event(s in any_sent()) {
            let (name, id, data) = s.expected();
            let name = (name != "message").then_some(name);
            let id = (!id.is_empty()).then_some(id.as_str());
            prop_assert_eq!(s.frame(), event(name, id, &data).unwrap());
        }
    }

    #[test]
    fn frames_are_exact() {
        assert_eq!(&retry(3000)[..], b"retry: 3000\n\n");
        assert_eq!(&comment("keep-alive").unwrap()[..], b": keep-alive\n\n");
        let tick = shared::Tick {
            num: 3,
            sent_at_us: 42,
        };
        assert_eq!(
            &json(None, Some(3), &tick).unwrap()[..],
            b"id: 3\ndata: {\"num\":3,\"sent_at_us\":42}\n\n"
        );
        let end = shared::End {
            reason: shared::EndReason::Complete,
            last: 10,
        };
        assert_eq!(
            &json(Some(shared::events::END), None, &end).unwrap()[..],
            b"event: end\ndata: {\"reason\":\"complete\",\"last\":10}\n\n"
        );
    }

    #[test]
    fn data_is_split_on_every_line_ending() {
        let f = event(Some("x"), Some("7"), "a\r\nb\rc\nd").unwrap();
        assert_eq!(
            &f[..],
            b"event: x\nid: 7\ndata: a\ndata: b\ndata: c\ndata: d\n\n"
        );
        let f = event(None, None, "").unwrap();
        assert_eq!(&f[..], b"data: \n\n");
    }

    #[test]
    fn fields_that_cannot_hold_a_line_break_are_refused() {
        assert!(event(Some("a\rb"), None, "").is_err());
        assert!(event(None, Some("1\n"), "").is_err());
        assert!(event(None, Some("1\0"), "").is_err());
        assert!(comment("a\rb").is_err());
        assert!(json(Some("a\nb"), None, &1).is_err());
        assert!(json_id(None, Some("a\rb"), &1).is_err());
    }

    #[test]
    fn a_payload_serde_cannot_write_is_a_json_error_not_a_line_break() {
        let mut bad = std::collections::HashMap::new();
        bad.insert((1, 2), 3);
        assert!(matches!(json(None, None, &bad), Err(FrameError::Json(_))));
    }

    #[test]
    fn the_contracts_event_names_are_valid_field_values() {
        use shared::events;
        for name in [events::END, events::RESET, events::HEARTBEAT] {
            assert!(event(Some(name), None, "").is_ok(), "{name}");
        }
        assert!(comment(events::KEEP_ALIVE_COMMENT).is_ok());
    }
}
