//! The shared live counter over real sockets: fan-out to many subscribers, replay by
//! `Last-Event-ID` (header or query), `reset`, the lagged cut-off, every refusal of the
//! increment, heartbeats and shutdown.

mod support;

use eventsource_stream::Event;
use reqwest::StatusCode;
use server::Config;
use shared::{events, EndReason, Reset, ResetReason, SharedValue};
use std::collections::BTreeSet;
use std::time::Duration;
use support::{config, spawn, within, within_for, Endpoint as _, Finish, Sse, TestServer};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpSocket;

const SHARED: &str = shared::paths::SHARED;
const INCREMENT: &str = shared::paths::SHARED_INCREMENT;

/// A config whose rate limit never gets in the way.
fn fast() -> Config {
    Config {
        publish_rate: 1_000_000,
        ..config()
    }
}

/// `POST /api/shared/increment`, answered 200: the new value.
async fn increment(server: &TestServer) -> u64 {
    let reply = server
        .send(server.client.post(server.url(INCREMENT)), "POST increment")
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    let inc: shared::Incremented = serde_json::from_str(&reply.text()).expect("increment JSON");
    inc.value
}

/// The next event, which must be a value: checks that its id is its value.
async fn value(sse: &mut Sse) -> u64 {
    let event = sse.next().await.expect("a value, not the end of the body");
    as_value(&event)
}

fn as_value(event: &Event) -> u64 {
    assert_eq!(event.event, "message", "an unnamed event: {event:?}");
    let v: SharedValue = serde_json::from_str(&event.data)
        .unwrap_or_else(|e| panic!("value data {:?}: {e}", event.data));
    assert_eq!(event.id, v.value.to_string(), "id is the value");
    v.value
}

async fn reset(sse: &mut Sse) -> Reset {
    let event = sse.next().await.expect("a reset, not the end of the body");
    assert_eq!(event.event, events::RESET, "{event:?}");
    let r: Reset = serde_json::from_str(&event.data).expect("reset data");
    assert_eq!(
        event.id,
        r.value.to_string(),
        "a reset's id is the current value"
    );
    r
}

#[tokio::test]
async fn the_stream_has_the_counters_headers_and_starts_with_the_current_value() {
    let server = spawn(fast()).await;
    let mut sse = server.sse(SHARED, &[]).await;
    assert_eq!(sse.status, StatusCode::OK);
    assert_eq!(sse.header("content-type"), Some("text/event-stream"));
    assert_eq!(sse.header("cache-control"), Some("no-cache, no-transform"));
    assert_eq!(sse.header("x-accel-buffering"), Some("no"));
    assert_eq!(value(&mut sse).await, 0, "0 when nothing has happened yet");
    assert_eq!(increment(&server).await, 1);
    assert_eq!(value(&mut sse).await, 1);
    let mut late = server.sse(SHARED, &[]).await;
    assert_eq!(
        value(&mut late).await,
        1,
        "a later subscriber starts at the current value"
    );
    assert_eq!(server.metric("sse_shared_subscribers").await, 2.0);
    assert_eq!(server.metric("sse_shared_value").await, 1.0);
    assert_eq!(server.metric("sse_active_streams").await, 2.0);
}

#[tokio::test]
async fn fifty_subscribers_see_two_hundred_increments_from_four_publishers_once_in_order() {
    let server = std::sync::Arc::new(spawn(fast()).await);
    let mut readers = Vec::new();
    for _ in 0..50 {
        let mut sse = server.sse(SHARED, &[]).await;
        assert_eq!(value(&mut sse).await, 0);
        readers.push(tokio::spawn(async move {
            let mut seen = Vec::new();
            while seen.last() != Some(&200) {
                seen.push(value(&mut sse).await);
            }
            seen
        }));
    }
    let publishers: Vec<_> = (0..4)
        .map(|_| {
            let server = std::sync::Arc::clone(&server);
            tokio::spawn(async move {
                let mut got = Vec::new();
                for _ in 0..50 {
                    got.push(increment(&server).await);
                }
                got
            })
        })
        .collect();
    let mut answered = BTreeSet::new();
    for p in publishers {
        for v in within("a publisher", p).await.expect("publisher task") {
            assert!(answered.insert(v), "value {v} answered twice");
        }
    }
    assert_eq!(
        answered,
        (1..=200).collect(),
        "each increment its own value"
    );
    for r in readers {
        let seen = within_for(Duration::from_secs(20), "a subscriber", r)
            .await
            .expect("subscriber task");
        assert_eq!(
            seen,
            (1..=200).collect::<Vec<_>>(),
            "every value once, in order"
        );
    }
    assert_eq!(server.metric("sse_shared_published_total").await, 200.0);
    assert_eq!(server.metric("sse_shared_value").await, 200.0);
}

#[tokio::test]
async fn a_reconnect_replays_what_it_missed_by_header_or_query_header_first() {
    let server = spawn(fast()).await;
    for _ in 0..5 {
        increment(&server).await;
    }
    let mut by_header = server.sse(SHARED, &[("Last-Event-ID", "2")]).await;
    let mut by_query = server.sse(&format!("{SHARED}?last_event_id=3"), &[]).await;
    let mut both = server
        .sse(
            &format!("{SHARED}?last_event_id=1"),
            &[("Last-Event-ID", "4")],
        )
        .await;
    let mut current = server.sse(SHARED, &[("Last-Event-ID", "5")]).await;
    for v in 3..=5 {
        assert_eq!(value(&mut by_header).await, v);
    }
    for v in 4..=5 {
        assert_eq!(value(&mut by_query).await, v);
    }
    assert_eq!(value(&mut both).await, 5, "the header wins over the query");
    increment(&server).await;
    for sse in [&mut by_header, &mut by_query, &mut both] {
        assert_eq!(value(sse).await, 6, "then live");
    }
    assert_eq!(
        value(&mut current).await,
        6,
        "an id equal to the current value replays nothing"
    );
}

#[tokio::test]
async fn reset_when_the_history_no_longer_holds_the_gap_or_the_client_is_ahead() {
    let server = spawn(Config {
        history: 3,
        ..fast()
    })
    .await;
    for _ in 0..6 {
        increment(&server).await;
    }
    // History holds 4, 5, 6: after 3 is the oldest that can be continued.
    let mut ok = server.sse(SHARED, &[("Last-Event-ID", "3")]).await;
    for v in 4..=6 {
        assert_eq!(value(&mut ok).await, v);
    }
    let mut old = server.sse(SHARED, &[("Last-Event-ID", "2")]).await;
    assert_eq!(
        reset(&mut old).await,
        Reset {
            value: 6,
            reason: ResetReason::HistoryExceeded
        }
    );
    let mut ahead = server.sse(&format!("{SHARED}?last_event_id=99"), &[]).await;
    assert_eq!(
        reset(&mut ahead).await,
        Reset {
            value: 6,
            reason: ResetReason::Ahead
        }
    );
    increment(&server).await;
    for sse in [&mut ok, &mut old, &mut ahead] {
        assert_eq!(value(sse).await, 7, "live after the reset, no gap");
    }
}

/// A raw subscriber that reads nothing: with a tiny receive window its side fills at
/// once, so the server's history moves past it.
async fn stalled_subscriber(server: &TestServer) -> tokio::net::TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut s = within("connecting", socket.connect(server.addr))
        .await
        .unwrap();
    s.write_all(b"GET /api/shared HTTP/1.1\r\nHost: t\r\n\r\n")
        .await
        .unwrap();
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_that_falls_out_of_the_history_is_cut_off_as_lagged_and_slows_no_one() {
    // The slow side's buffers (4 KiB each way and hyper's 16 KiB) hold a few hundred
    // frames; a history of 500 leaves the fast reader room to keep up.
    let server = std::sync::Arc::new(
        spawn(Config {
            history: 500,
            send_buffer: Some(4096),
            stall_timeout: Duration::from_secs(60),
            ..fast()
        })
        .await,
    );
    let mut slow = stalled_subscriber(&server).await;
    let mut fast_reader = server.sse(SHARED, &[]).await;
    assert_eq!(value(&mut fast_reader).await, 0);
    server.wait_for_metric("sse_shared_subscribers", 2.0).await;
    // ~60 bytes a frame: 3,000 changes are far more than the slow side's buffers.
    let n = 3000u64;
    let publishers: Vec<_> = (0..4)
        .map(|_| {
            let server = std::sync::Arc::clone(&server);
            tokio::spawn(async move {
                for _ in 0..n / 4 {
                    increment(&server).await;
                }
            })
        })
        .collect();
    for v in 1..=n {
        assert_eq!(
            value(&mut fast_reader).await,
            v,
            "the fast reader gets everything"
        );
    }
    for p in publishers {
        within("a publisher", p).await.unwrap();
    }
    // Now the slow one reads: what was buffered for it, in order, then the cut.
    let mut got = Vec::new();
    within_for(Duration::from_secs(10), "the slow reader's cut", async {
        let mut buf = [0u8; 8192];
        loop {
            match slow.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(k) => got.extend_from_slice(&buf[..k]),
            }
        }
    })
    .await;
    let text = String::from_utf8_lossy(&got);
    let ids: Vec<u64> = text
        .lines()
        .filter_map(|l| l.strip_prefix("id: "))
        .map(|v| v.parse().unwrap())
        .collect();
    assert!(
        !ids.is_empty() && ids.len() < n as usize,
        "{} ids",
        ids.len()
    );
    assert_eq!(
        ids,
        (0..ids.len() as u64).collect::<Vec<_>>(),
        "no gap before the cut"
    );
    assert!(
        !text.contains("event: end"),
        "a lagged reader gets no `end`"
    );
    assert!(!text.ends_with("0\r\n\r\n"), "the body is cut, not ended");
    server
        .wait_for_metric("sse_disconnects_total{reason=\"lagged\"}", 1.0)
        .await;
    server.wait_for_metric("sse_shared_subscribers", 1.0).await;
    // It comes back with its last id and is told to reset.
    let last = ids.last().unwrap().to_string();
    let mut back = server.sse(SHARED, &[("Last-Event-ID", &last)]).await;
    assert_eq!(
        reset(&mut back).await,
        Reset {
            value: n,
            reason: ResetReason::HistoryExceeded
        }
    );
}

#[tokio::test]
async fn increments_are_refused_with_the_right_status_and_counted() {
    let server = spawn(Config {
        publish_rate: 1,
        ..config()
    })
    .await;
    let post = || server.client.post(server.url(INCREMENT));

    // CSRF: a foreign origin is refused; no origin or our own is fine.
    let reply = server
        .send(post().header("Origin", "http://evil.example"), "foreign")
        .await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
    let reply = server
        .send(post().header("Origin", server.origin()), "own origin")
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());

    // A body, even a small one, is refused; a large one with 413.
    let reply = server.send(post().body("x"), "small body").await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert!(reply.error_body().error.contains("no body"));
    let reply = server
        .send(post().body(vec![b'x'; 2048]), "large body")
        .await;
    assert_eq!(reply.status, StatusCode::PAYLOAD_TOO_LARGE);

    // Rate: bursts of 2 at 1 per second; the first went above.
    let reply = server.send(post(), "second").await;
    assert_eq!(reply.status, StatusCode::OK);
    let reply = server.send(post(), "third").await;
    assert_eq!(reply.status, StatusCode::TOO_MANY_REQUESTS);
    let retry_after: u64 = reply
        .header("retry-after")
        .expect("Retry-After")
        .parse()
        .expect("whole seconds");
    assert!((1..=2).contains(&retry_after), "{retry_after}");

    // Other methods.
    let reply = server.fetch(INCREMENT).await;
    assert_eq!(reply.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(reply.header("allow"), Some("POST, OPTIONS"));
    let reply = server
        .send(server.client.post(server.url(SHARED)), "POST the stream")
        .await;
    assert_eq!(reply.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(reply.header("allow"), Some("GET, OPTIONS"));

    for (reason, n) in [("origin", 1.0), ("body", 2.0), ("rate", 1.0)] {
        let key = format!("sse_shared_publish_rejected_total{{reason=\"{reason}\"}}");
        assert_eq!(server.metric(&key).await, n, "{key}");
    }
    assert_eq!(server.metric("sse_shared_published_total").await, 2.0);
}

#[tokio::test]
async fn a_huge_declared_body_is_refused_without_being_read() {
    let server = spawn(fast()).await;
    let mut raw = server.raw().await;
    let host = server.addr.to_string();
    raw.request(
        "POST",
        INCREMENT,
        &host,
        &[("Content-Length", b"100000000")],
    )
    .await;
    // Not one body byte is sent, yet the answer comes.
    let head = raw.head().await;
    assert_eq!(head.status, 413);
}

#[tokio::test]
async fn bad_stream_requests_answer_400() {
    let server = spawn(fast()).await;
    for (path, headers, param) in [
        (format!("{SHARED}?last_event_id=x"), vec![], "last_event_id"),
        (format!("{SHARED}?count=3"), vec![], "count"),
        (
            SHARED.to_owned(),
            vec![("Last-Event-ID", "-1")],
            "Last-Event-ID",
        ),
    ] {
        let mut req = server.client.get(server.url(&path));
        for (name, value) in &headers {
            req = req.header(*name, *value);
        }
        let reply = server.send(req, &path).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{path} {headers:?}");
        assert_eq!(reply.error_body().param.as_deref(), Some(param));
    }
}

#[tokio::test]
async fn subscribers_count_against_max_streams() {
    let server = spawn(Config {
        max_streams: 1,
        ..fast()
    })
    .await;
    let mut first = server.sse(SHARED, &[]).await;
    assert_eq!(value(&mut first).await, 0);
    let reply = server.fetch(SHARED).await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(reply.header("retry-after").is_some());
    assert_eq!(
        reply.error_body().reason,
        Some(shared::UnavailableReason::Capacity)
    );
}

#[tokio::test]
async fn an_idle_subscriber_gets_heartbeats_without_an_id() {
    let server = spawn(Config {
        keep_alive: Duration::from_millis(200),
        ..fast()
    })
    .await;
    increment(&server).await;
    let mut raw = server.raw().await;
    raw.get(SHARED, &[]).await;
    assert_eq!(raw.head().await.status, 200);
    assert!(raw.frame().await.unwrap().starts_with("retry: "));
    assert!(raw.frame().await.unwrap().starts_with("id: 1\n"));
    for _ in 0..2 {
        let beat = raw.frame().await.expect("a heartbeat");
        let rest = beat
            .strip_prefix("event: heartbeat\ndata: {\"at_us\":")
            .unwrap_or_else(|| panic!("a heartbeat event, got {beat:?}"));
        assert!(!beat.contains("id:"), "no id: {beat:?}");
        let at: u64 = rest.trim_end_matches("}\n\n").parse().expect("at_us");
        assert!(at > 1_600_000_000_000_000, "{at}");
    }
}

#[tokio::test]
async fn shutdown_ends_every_subscriber_with_end() {
    let mut server = spawn(fast()).await;
    let mut a = server.sse(SHARED, &[]).await;
    assert_eq!(value(&mut a).await, 0);
    increment(&server).await;
    increment(&server).await;
    let mut b = server.sse(SHARED, &[("Last-Event-ID", "1")]).await;
    assert_eq!(value(&mut b).await, 2);
    server.stop_within(Duration::from_secs(5)).await.unwrap();
    for sse in [&mut a, &mut b] {
        let mut last = None;
        let end = loop {
            let event = sse.next().await.expect("events up to `end`");
            if event.event == events::END {
                break event;
            }
            last = Some(as_value(&event));
        };
        let end: shared::End = serde_json::from_str(&end.data).unwrap();
        assert_eq!(end.reason, EndReason::Shutdown);
        assert_eq!(end.last, last.unwrap_or(2).max(2));
        assert_eq!(sse.next().await.unwrap_err(), Finish::Closed);
    }
}
