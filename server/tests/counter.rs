//! `GET /api/counter`: the stream contract over real sockets — headers and their flush,
//! the exact bytes, tick timing, resume and 204, keep-alive, fault injection, the stream
//! cap and the clean-up after clients drop.

mod support;

use futures_util::future::join_all;
use reqwest::StatusCode;
use server::Config;
use shared::{EndReason, Tick};
use std::time::{Duration, Instant};
use support::{
    assert_plausible_times, config, now_us, spawn, within, within_for, BodyEnd, Endpoint as _,
    Finish,
};

/// Headers and the `retry:` line are flushed at once: with a one-minute interval they
/// can only arrive within the timeout if the server sends them before the first tick.
#[tokio::test]
async fn headers_and_retry_are_flushed_before_the_first_tick() {
    let server = spawn(Config {
        retry_ms: 2500,
        ..config()
    })
    .await;
    let mut conn = server.raw().await;
    conn.get("/api/counter?count=5&interval_ms=60000", &[])
        .await;
    let head = conn.head().await;
    assert_eq!(head.status, 200, "{}", head.raw);
    assert_eq!(head.header("content-type"), Some("text/event-stream"));
    assert_eq!(head.header("cache-control"), Some("no-cache, no-transform"));
    assert_eq!(head.header("x-accel-buffering"), Some("no"));
    assert_eq!(head.header("transfer-encoding"), Some("chunked"));
    assert_eq!(head.header("content-length"), None);
    assert_eq!(conn.frame().await, Ok("retry: 2500\n\n".to_owned()));

    // The same through reqwest: `send` resolves on the head, the first bytes are `retry`.
    let res = server.get("/api/counter?count=5&interval_ms=60000").await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(
        res.headers()["content-type"],
        "text/event-stream",
        "exactly, no charset"
    );
    assert_eq!(res.headers()["cache-control"], "no-cache, no-transform");
    assert_eq!(res.headers()["x-accel-buffering"], "no");
    let mut body = res.bytes_stream();
    let first = within("the first bytes of the body", {
        use futures_util::StreamExt as _;
        body.next()
    })
    .await
    .expect("a first chunk")
    .expect("no error");
    assert_eq!(&first[..], b"retry: 2500\n\n");
}

/// The whole body for `count=3`, byte for byte, ending with the terminating chunk.
#[tokio::test]
async fn count_3_sends_exactly_retry_three_ticks_and_end() {
    let server = spawn(config()).await;
    let since = now_us();
    let mut conn = server.raw().await;
    conn.get("/api/counter?count=3&interval_ms=20", &[]).await;
    let head = conn.head().await;
    assert_eq!(head.status, 200);
    let (body, end) = conn.chunked_body().await;
    assert_eq!(
        end,
        BodyEnd::Terminated,
        "the response ends with the 0-size chunk"
    );
    let body = String::from_utf8(body).expect("UTF-8 body");

    let mut rest = body
        .strip_prefix("retry: 3000\n\n")
        .unwrap_or_else(|| panic!("starts with retry: {body:?}"));
    let mut times = Vec::new();
    for n in 1..=3u64 {
        let prefix = format!("id: {n}\ndata: {{\"num\":{n},\"sent_at_us\":");
        rest = rest
            .strip_prefix(&prefix)
            .unwrap_or_else(|| panic!("tick {n} expected at {rest:?}"));
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        assert!(digits > 0, "sent_at_us of tick {n} in {rest:?}");
        times.push(rest[..digits].parse::<u64>().expect("sent_at_us"));
        rest = rest[digits..]
            .strip_prefix("}\n\n")
            .unwrap_or_else(|| panic!("tick {n} closes with }}\\n\\n: {rest:?}"));
    }
    assert_eq!(
        rest, "event: end\ndata: {\"reason\":\"complete\",\"last\":3}\n\n",
        "then `end`, then nothing"
    );
    assert_plausible_times(&times, since);
}

/// The same stream through an SSE parser: unnamed events with ids 1..=count, then `end`.
#[tokio::test]
async fn parser_sees_unnamed_ticks_then_end() {
    let server = spawn(config()).await;
    let since = now_us();
    let mut sse = server.sse("/api/counter?count=5&interval_ms=20", &[]).await;
    assert_eq!(sse.status, StatusCode::OK);
    let (ticks, end, finish) = sse.until_end().await;
    let nums: Vec<u64> = ticks.iter().map(|t| t.num).collect();
    assert_eq!(nums, [1, 2, 3, 4, 5]);
    assert_eq!((end.reason, end.last), (EndReason::Complete, 5));
    assert_eq!(finish, Finish::Closed, "the body ends cleanly after `end`");
    let times: Vec<u64> = ticks.iter().map(|t| t.sent_at_us).collect();
    assert_plausible_times(&times, since);
}

/// The defaults apply when no parameter is given: `count` 10 and a 1 s interval; the
/// first tick proves the stream runs (it cannot come before one second).
#[tokio::test]
async fn defaults_stream_from_one() {
    let server = spawn(config()).await;
    let sent = Instant::now();
    let mut sse = server.sse("/api/counter", &[]).await;
    assert_eq!(sse.status, StatusCode::OK);
    let first = sse.tick().await;
    assert_eq!(first.num, 1);
    assert!(
        sent.elapsed() >= Duration::from_millis(1000),
        "the default interval is one second, the first tick came after {:?}",
        sent.elapsed()
    );
}

/// The first tick comes one interval after the request, not at once (as `setInterval`).
/// Only lower bounds: they cannot be flaky.
#[tokio::test]
async fn first_tick_comes_after_one_interval() {
    let server = spawn(config()).await;
    let mut conn = server.raw().await;
    let sent = Instant::now();
    conn.get("/api/counter?count=2&interval_ms=300", &[]).await;
    assert_eq!(conn.head().await.status, 200);
    assert_eq!(conn.frame().await, Ok("retry: 3000\n\n".to_owned()));
    let first = conn.frame().await.expect("tick 1");
    let at_first = sent.elapsed();
    assert!(first.starts_with("id: 1\n"), "{first:?}");
    assert!(
        at_first >= Duration::from_millis(300),
        "tick 1 came {at_first:?} after the request, before one interval"
    );
    let second = conn.frame().await.expect("tick 2");
    assert!(second.starts_with("id: 2\n"), "{second:?}");
    assert!(
        sent.elapsed() >= Duration::from_millis(600),
        "tick 2 came {:?} after the request, before two intervals",
        sent.elapsed()
    );
}

fn nums(ticks: &[Tick]) -> Vec<u64> {
    ticks.iter().map(|t| t.num).collect()
}

#[tokio::test]
async fn resume_by_last_event_id_header() {
    let server = spawn(config()).await;
    let mut sse = server
        .sse(
            "/api/counter?count=5&interval_ms=20",
            &[("Last-Event-ID", "2")],
        )
        .await;
    assert_eq!(sse.status, StatusCode::OK);
    let (ticks, end, _) = sse.until_end().await;
    assert_eq!(nums(&ticks), [3, 4, 5]);
    assert_eq!(end.last, 5);
}

#[tokio::test]
async fn resume_by_last_event_id_query() {
    let server = spawn(config()).await;
    let mut sse = server
        .sse("/api/counter?count=5&interval_ms=20&last_event_id=3", &[])
        .await;
    assert_eq!(sse.status, StatusCode::OK);
    let (ticks, end, _) = sse.until_end().await;
    assert_eq!(nums(&ticks), [4, 5]);
    assert_eq!((end.reason, end.last), (EndReason::Complete, 5));
}

/// What a browser sends on reconnect wins over the URL it was first given.
#[tokio::test]
async fn header_wins_over_query() {
    let server = spawn(config()).await;
    let mut sse = server
        .sse(
            "/api/counter?count=5&interval_ms=20&last_event_id=3",
            &[("Last-Event-ID", "1")],
        )
        .await;
    let (ticks, _, _) = sse.until_end().await;
    assert_eq!(nums(&ticks), [2, 3, 4, 5]);
    // And the other way round: a later header than the query is honoured too.
    let mut sse = server
        .sse(
            "/api/counter?count=5&interval_ms=20&last_event_id=1",
            &[("Last-Event-ID", "4")],
        )
        .await;
    let (ticks, _, _) = sse.until_end().await;
    assert_eq!(nums(&ticks), [5]);
}

/// An empty `Last-Event-ID` is "no id" (as the standard says): no resume, and the query,
/// if any, applies as if the header were absent.
#[tokio::test]
async fn empty_last_event_id_header_means_no_resume() {
    let server = spawn(config()).await;
    let mut conn = server.raw().await;
    conn.get(
        "/api/counter?count=2&interval_ms=20",
        &[("Last-Event-ID", b"")],
    )
    .await;
    assert_eq!(conn.head().await.status, 200);
    assert_eq!(conn.frame().await, Ok("retry: 3000\n\n".to_owned()));
    let first = conn.frame().await.expect("tick 1");
    assert!(first.starts_with("id: 1\n"), "{first:?}");

    let mut sse = server
        .sse(
            "/api/counter?count=3&interval_ms=20&last_event_id=1",
            &[("Last-Event-ID", "")],
        )
        .await;
    let (ticks, _, _) = sse.until_end().await;
    assert_eq!(nums(&ticks), [2, 3]);
}

/// Resuming at or past the end answers 204 with no body: an EventSource stops for good.
#[tokio::test]
async fn resume_at_or_past_the_end_is_204() {
    let server = spawn(config()).await;
    for (path, header) in [
        ("/api/counter?count=5&interval_ms=20", Some("5")),
        ("/api/counter?count=5&interval_ms=20", Some("6")),
        (
            "/api/counter?count=5&interval_ms=20",
            Some("18446744073709551615"),
        ),
        ("/api/counter?count=5&interval_ms=20&last_event_id=5", None),
        ("/api/counter?count=1&last_event_id=99", None),
        // The header wins, here towards the end.
        (
            "/api/counter?count=5&interval_ms=20&last_event_id=1",
            Some("5"),
        ),
    ] {
        let mut req = server.client.get(server.url(path));
        if let Some(id) = header {
            req = req.header("Last-Event-ID", id);
        }
        let reply = server.send(req, &format!("{path} {header:?}")).await;
        assert_eq!(reply.status, StatusCode::NO_CONTENT, "{path} {header:?}");
        assert!(
            reply.body.is_empty(),
            "{path} {header:?}: {:?}",
            reply.text()
        );
        assert_eq!(reply.header("content-type"), None, "no event stream");
    }
    // No stream was opened for any of them.
    let metrics = server.metrics().await;
    assert_eq!(metrics.get("sse_streams_total"), 0.0);
}

/// One before the end still streams the last tick.
#[tokio::test]
async fn resume_one_before_the_end_sends_the_last_tick() {
    let server = spawn(config()).await;
    let mut sse = server
        .sse(
            "/api/counter?count=5&interval_ms=20",
            &[("Last-Event-ID", "4")],
        )
        .await;
    assert_eq!(sse.status, StatusCode::OK);
    let (ticks, end, _) = sse.until_end().await;
    assert_eq!(nums(&ticks), [5]);
    assert_eq!(end.last, 5);
}

/// An idle stream gets `: keep-alive` comments, and they do not disturb the parser.
#[tokio::test]
async fn idle_streams_get_keep_alive_comments() {
    let server = spawn(Config {
        keep_alive: Duration::from_secs(1),
        ..config()
    })
    .await;
    let mut conn = server.raw().await;
    conn.get("/api/counter?count=5&interval_ms=60000", &[])
        .await;
    assert_eq!(conn.head().await.status, 200);
    assert_eq!(conn.frame().await, Ok("retry: 3000\n\n".to_owned()));
    assert_eq!(conn.frame().await, Ok(": keep-alive\n\n".to_owned()));
    assert_eq!(
        conn.frame().await,
        Ok(": keep-alive\n\n".to_owned()),
        "and again while still idle"
    );
}

/// Keep-alives between ticks leave the ticks and the end as they were.
#[tokio::test]
async fn keep_alive_between_ticks_keeps_the_sequence() {
    let server = spawn(Config {
        keep_alive: Duration::from_millis(50),
        ..config()
    })
    .await;
    let mut conn = server.raw().await;
    conn.get("/api/counter?count=2&interval_ms=200", &[]).await;
    assert_eq!(conn.head().await.status, 200);
    let mut frames = Vec::new();
    loop {
        match conn.frame().await {
            Ok(frame) => frames.push(frame),
            Err(end) => {
                assert_eq!(end, BodyEnd::Terminated);
                break;
            }
        }
    }
    let keep_alives = frames.iter().filter(|f| *f == ": keep-alive\n\n").count();
    assert!(keep_alives >= 1, "keep-alives in a 200 ms gap: {frames:?}");
    let others: Vec<&str> = frames
        .iter()
        .filter(|f| *f != ": keep-alive\n\n")
        .map(|f| {
            f.split_once("\ndata: {\"num\":")
                .map_or(f.as_str(), |(id, _)| id)
        })
        .collect();
    assert_eq!(
        others,
        [
            "retry: 3000\n\n",
            "id: 1",
            "id: 2",
            "event: end\ndata: {\"reason\":\"complete\",\"last\":2}\n\n"
        ]
    );

    let mut sse = server
        .sse("/api/counter?count=2&interval_ms=200", &[])
        .await;
    let (ticks, end, finish) = sse.until_end().await;
    assert_eq!(nums(&ticks), [1, 2]);
    assert_eq!((end.last, finish), (2, Finish::Closed));
}

/// Frequent ticks leave no room for keep-alives.
#[tokio::test]
async fn busy_streams_get_no_keep_alive() {
    let server = spawn(Config {
        keep_alive: Duration::from_millis(500),
        ..config()
    })
    .await;
    let mut conn = server.raw().await;
    conn.get("/api/counter?count=10&interval_ms=20", &[]).await;
    assert_eq!(conn.head().await.status, 200);
    let (body, end) = conn.chunked_body().await;
    assert_eq!(end, BodyEnd::Terminated);
    let body = String::from_utf8(body).expect("UTF-8");
    assert!(!body.contains("keep-alive"), "{body:?}");
}

/// `drop_after=2` aborts after two ticks, with no `end` and no terminating chunk; a
/// resumed connection drops again two ticks later; each abort counts as a fault.
#[tokio::test]
async fn drop_after_aborts_each_connection() {
    let server = spawn(Config {
        allow_fault_injection: true,
        ..config()
    })
    .await;
    let path = "/api/counter?count=10&interval_ms=20&drop_after=2";

    let mut sse = server.sse(path, &[]).await;
    assert_eq!(sse.status, StatusCode::OK);
    let (ticks, finish) = sse.until_finish().await;
    assert_eq!(nums(&ticks), [1, 2]);
    assert!(
        matches!(finish, Finish::Error(_)),
        "the body fails, it does not end cleanly: {finish:?}"
    );
    server
        .wait_for_metric("sse_disconnects_total{reason=\"fault\"}", 1.0)
        .await;

    let mut sse = server.sse(path, &[("Last-Event-ID", "2")]).await;
    let (ticks, finish) = sse.until_finish().await;
    assert_eq!(nums(&ticks), [3, 4]);
    assert!(matches!(finish, Finish::Error(_)), "{finish:?}");

    // The raw bytes: two ticks, then the connection ends without `0\r\n\r\n`.
    let mut conn = server.raw().await;
    conn.get(path, &[("Last-Event-ID", b"4")]).await;
    assert_eq!(conn.head().await.status, 200);
    assert_eq!(conn.frame().await, Ok("retry: 3000\n\n".to_owned()));
    assert!(conn.frame().await.expect("tick 5").starts_with("id: 5\n"));
    assert!(conn.frame().await.expect("tick 6").starts_with("id: 6\n"));
    match conn.frame().await {
        Err(BodyEnd::Aborted(_)) => {}
        other => panic!("expected an aborted body after tick 6, got {other:?}"),
    }

    server
        .wait_for_metric("sse_disconnects_total{reason=\"fault\"}", 3.0)
        .await;
    server.wait_for_metric("sse_active_streams", 0.0).await;
    let metrics = server.metrics().await;
    assert_eq!(
        metrics.get("sse_disconnects_total{reason=\"complete\"}"),
        0.0
    );
    assert_eq!(metrics.get("sse_disconnects_total{reason=\"client\"}"), 0.0);
}

/// With fault injection allowed, a stream shorter than `drop_after` completes normally.
#[tokio::test]
async fn drop_after_beyond_the_stream_completes() {
    let server = spawn(Config {
        allow_fault_injection: true,
        ..config()
    })
    .await;
    let mut sse = server
        .sse("/api/counter?count=3&interval_ms=20&drop_after=5", &[])
        .await;
    let (ticks, end, finish) = sse.until_end().await;
    assert_eq!(nums(&ticks), [1, 2, 3]);
    assert_eq!((end.reason, finish), (EndReason::Complete, Finish::Closed));
}

/// Past `max_streams`, 503 with `Retry-After` and a JSON body; a freed place is reused.
#[tokio::test]
async fn stream_cap_answers_503_until_a_place_frees() {
    let server = spawn(Config {
        max_streams: 2,
        retry_ms: 2500,
        ..config()
    })
    .await;
    let path = "/api/counter?count=5&interval_ms=60000";
    let first = server.sse(path, &[]).await;
    let second = server.sse(path, &[]).await;
    assert_eq!(
        (first.status, second.status),
        (StatusCode::OK, StatusCode::OK)
    );

    let third = server.fetch(path).await;
    assert_eq!(third.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        third.header("retry-after"),
        Some("3"),
        "retry_ms rounded up to seconds"
    );
    let body = third.error_body();
    assert!(body.error.contains("too many"), "{body:?}");
    let health = server.fetch("/healthz").await.json();
    assert_eq!(
        health["active_streams"], 2,
        "a refused stream holds no place"
    );

    drop(first);
    server.wait_for_metric("sse_active_streams", 1.0).await;
    let again = server.sse(path, &[]).await;
    assert_eq!(again.status, StatusCode::OK, "a freed place is reused");
    assert_eq!(
        server.fetch(path).await.status,
        StatusCode::SERVICE_UNAVAILABLE
    );
    drop(second);
    drop(again);
    server.wait_for_metric("sse_active_streams", 0.0).await;
}

/// 200 clients drop: every stream is noticed and freed, and counted as a client drop.
#[tokio::test]
async fn dropped_clients_free_their_streams() {
    const CLIENTS: usize = 200;
    let server = spawn(config()).await;
    let path = "/api/counter?count=5&interval_ms=60000";
    let streams = within_for(
        Duration::from_secs(20),
        "opening 200 streams",
        join_all((0..CLIENTS).map(|_| server.sse(path, &[]))),
    )
    .await;
    assert!(streams.iter().all(|s| s.status == StatusCode::OK));
    // Each response head is sent after its stream took a place.
    let metrics = server.metrics().await;
    assert_eq!(metrics.get("sse_active_streams"), CLIENTS as f64);
    assert_eq!(metrics.get("sse_streams_total"), CLIENTS as f64);

    drop(streams);
    server.wait_for_metric("sse_active_streams", 0.0).await;
    let metrics = server.metrics().await;
    assert_eq!(
        metrics.get("sse_disconnects_total{reason=\"client\"}"),
        CLIENTS as f64
    );
    assert_eq!(metrics.get("sse_events_sent_total"), 0.0);
}

/// A client that leaves mid-stream stops its ticker: the gauge falls to 0 while the
/// stream still had ticks to send.
#[tokio::test]
async fn a_client_leaving_mid_stream_stops_the_ticker() {
    let server = spawn(config()).await;
    let mut sse = server
        .sse("/api/counter?count=1000&interval_ms=20", &[])
        .await;
    assert_eq!(sse.tick().await.num, 1);
    assert_eq!(sse.tick().await.num, 2);
    drop(sse);
    server.wait_for_metric("sse_active_streams", 0.0).await;
    let metrics = server.metrics().await;
    assert_eq!(metrics.get("sse_disconnects_total{reason=\"client\"}"), 1.0);
    let sent = metrics.get("sse_events_sent_total");
    // A whole other stream later, only its own two events were added.
    let mut other = server.sse("/api/counter?count=1&interval_ms=20", &[]).await;
    other.until_end().await;
    assert_eq!(server.metric("sse_events_sent_total").await, sent + 2.0);
}
