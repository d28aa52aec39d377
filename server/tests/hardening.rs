//! What a hostile or broken network throws at the server: stalled readers, slowloris,
//! oversized requests, a corpus of malformed requests, and the metrics moved off the main
//! address. Real sockets on 127.0.0.1:0.

mod support;

use server::Config;
use std::time::{Duration, Instant};
use support::inproc::spawn_with_metrics_listener;
use support::raw::{contains, event_ids};
use support::report;
use support::{config, spawn, within_for, Endpoint as _, TempDir};

/// How long any one wait on these servers may take: longer than the default, as some
/// tests wait out the server's own timeouts while other test binaries load the machine.
const WAIT: Duration = Duration::from_secs(20);

#[tokio::test]
async fn a_client_that_stops_reading_is_closed_as_stalled_and_slows_no_one() {
    let config = Config {
        stall_timeout: Duration::from_secs(1),
        send_buffer: Some(8 * 1024),
        ..config()
    };
    let server = spawn(config).await.with_limit(WAIT);
    let stalled = server
        .stalled_client("/api/counter?count=1000000&interval_ms=1")
        .await;
    server.wait_for_metric("sse_active_streams", 1.0).await;

    // Meanwhile a reader on another connection gets every tick, in order.
    let mut reader = server.raw().await;
    reader
        .get("/api/counter?count=30&interval_ms=10", &[])
        .await;
    within_for(
        WAIT,
        "a reader was held up by the stalled client",
        reader.read_until("the reader's `end` event", |got| {
            contains(got, b"event: end")
        }),
    )
    .await;
    let ids = event_ids(&String::from_utf8_lossy(reader.received()));
    assert_eq!(ids, (1..=30).collect::<Vec<_>>());

    server
        .wait_for_metric("sse_disconnects_total{reason=\"stalled\"}", 1.0)
        .await;
    server.wait_for_metric("sse_active_streams", 0.0).await;
    assert_eq!(
        server
            .metric("sse_disconnects_total{reason=\"client\"}")
            .await,
        0.0
    );
    report::record(report::Line::Stall(bench::reliability::Stall {
        stalled_clients: 1,
        closed_as_stalled: 1,
        stall_timeout_secs: 1,
        other_client_ticks: ids.len() as u64,
        other_client_gaps_or_repeats: 0,
    }));
    drop(stalled);
    server.stop().await;
}

#[tokio::test]
async fn slowloris_is_cut_off_by_the_header_read_timeout() {
    let config = Config {
        header_read_timeout: Duration::from_secs(1),
        ..config()
    };
    let server = spawn(config).await.with_limit(WAIT);
    let mut conn = server.raw().await;
    conn.send(b"GET /api/counter HTTP/1.1\r\nHost: t\r\nX-Slow: ")
        .await;
    let started = Instant::now();
    // The server must hang up by itself (cleanly or not); the test only waits for that.
    within_for(
        WAIT,
        "a half-sent request held its connection",
        conn.closed(),
    )
    .await;
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "cut before the timeout"
    );
    server.stop().await;
}

#[tokio::test]
async fn oversized_requests_get_clear_answers() {
    let server = spawn(config()).await.with_limit(WAIT);
    let long_query = "a".repeat(server::MAX_URI_BYTES + 10);
    let answer = server
        .exchange(format!("GET /api/counter?x={long_query} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes())
        .await;
    let (status, body) = (answer.status_line(), answer.rest());
    assert!(status.starts_with("HTTP/1.1 414"), "{status}");
    assert!(body.contains(r#"{"error":"#), "{body}");

    let big = "b".repeat(server::MAX_HEADER_BYTES + 10);
    let answer = server
        .exchange(format!("GET /healthz HTTP/1.1\r\nHost: t\r\nX-Big: {big}\r\n\r\n").as_bytes())
        .await;
    let status = answer.status_line();
    assert!(status.starts_with("HTTP/1.1 431"), "{status}");

    let many: String = (0..server::MAX_HEADERS + 5)
        .map(|i| format!("X-H{i}: v\r\n"))
        .collect();
    let answer = server
        .exchange(format!("GET /healthz HTTP/1.1\r\nHost: t\r\n{many}\r\n").as_bytes())
        .await;
    let status = answer.status_line();
    assert!(status.starts_with("HTTP/1.1 431"), "{status}");
    server.stop().await;
}

/// Every hostile request gets a definite, non-5xx answer, and none reaches a file
/// outside the page's directory.
#[tokio::test]
async fn a_corpus_of_hostile_requests_gets_clear_answers() {
    let dir = TempDir::new("corpus");
    std::fs::write(
        dir.path().join("index.html"),
        "<!doctype html><title>t</title>",
    )
    .unwrap();
    let config = Config {
        static_dir: dir.path().to_owned(),
        ..config()
    };
    let server = spawn(config).await.with_limit(WAIT);
    let q = |target: &str| format!("GET {target} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (q("/api/counter?count=%00").into(), "400"),
        (q("/api/counter?count=1%00").into(), "400"),
        (q("/api/counter?count=%FF%FE").into(), "400"),
        (q("/api/counter?count=99999999999999999999999999999").into(), "400"),
        (q("/api/counter?count=1&count=2").into(), "400"),
        (q("/api/counter?count=-1").into(), "400"),
        (q("/api/counter?count=1e3").into(), "400"),
        (q("/api/counter?interval_ms=0x10").into(), "400"),
        (q("/api/counter?count=%31%30&interval_ms=abc").into(), "400"),
        (q("/api/counter?%63ount=0").into(), "400"),
        (q("/api/counter?=5").into(), "400"),
        (q("/api/counter?count").into(), "400"),
        (q("/api/counter?drop_after=1").into(), "400"),
        (q("/api/counter?last_event_id=-5").into(), "400"),
        (
            b"GET /api/counter HTTP/1.1\r\nHost: t\r\nLast-Event-ID: \xff\xfe\r\nConnection: close\r\n\r\n".to_vec(),
            "400",
        ),
        (
            b"GET /api/counter HTTP/1.1\r\nHost: t\r\nLast-Event-ID: 1\r\nLast-Event-ID: 2\r\nConnection: close\r\n\r\n".to_vec(),
            "400",
        ),
        (q("/api/counter?count=5&last_event_id=5").into(), "204"),
        (q("/api/counter?count=5&last_event_id=18446744073709551615").into(), "204"),
        (q("/../Cargo.toml").into(), "404"),
        (q("/%2e%2e/Cargo.toml").into(), "404"),
        (q("/%2E%2E%2FCargo.toml").into(), "404"),
        (q("/..%2fCargo.toml").into(), "404"),
        (q("/..%5cCargo.toml").into(), "404"),
        (q("/%2e%2e%2f%2e%2e%2fetc%2fpasswd").into(), "404"),
        (q("/index.html%00.js").into(), "404"),
        (q("/api/../Cargo.toml").into(), "404"),
        (q("/api/%2e%2e/counter").into(), "404"),
        (q("/api/unknown").into(), "404"),
        (b"DELETE /api/counter HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n".to_vec(), "405"),
        (b"POST /healthz HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".to_vec(), "405"),
        (b"GET /api/counter\x00 HTTP/1.1\r\nHost: t\r\n\r\n".to_vec(), "400"),
        (b"GARBAGE\r\n\r\n".to_vec(), "400"),
        (b"GET / HTTP/1.1\r\nHost: t\r\nBad Header\r\n\r\n".to_vec(), "400"),
    ];
    let tried = cases.len();
    for (raw, want) in cases {
        let answer = server.exchange(&raw).await;
        let (status, body) = (answer.status_line(), answer.rest());
        let shown = String::from_utf8_lossy(&raw).into_owned();
        assert!(
            status.starts_with(&format!("HTTP/1.1 {want}")),
            "{shown:?}: want {want}, got {status:?} {body}"
        );
        assert!(!body.contains("[package]"), "{shown:?} served Cargo.toml");
        assert!(!body.contains("root:"), "{shown:?} served /etc/passwd");
        if want == "400" && body.contains("application/json") {
            assert!(body.contains(r#"{"error":"#), "{shown:?}: {body}");
        }
    }
    // After all that, the server still streams.
    let answer = server
        .exchange(b"GET /api/counter?count=1&interval_ms=1 HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        .await;
    let (status, body) = (answer.status_line(), answer.rest());
    assert!(status.starts_with("HTTP/1.1 200"), "{status}");
    assert!(body.contains("event: end"), "{body}");
    report::record(report::Line::HostileInput(
        bench::reliability::HostileInput {
            requests: tried as u64,
            answered_as_expected: tried as u64,
            server_errors: 0,
        },
    ));
    server.stop().await;
}

#[tokio::test]
async fn metrics_can_move_to_their_own_address() {
    let server = spawn_with_metrics_listener(config()).await.with_limit(WAIT);
    let answer = server
        .exchange(b"GET /metrics HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        .await;
    let status = answer.status_line();
    assert!(status.starts_with("HTTP/1.1 404"), "{status}");
    assert_eq!(server.metric("sse_active_streams").await, 0.0);
    server.stop().await;
}
