//! Reconnects that survive failures: streams are never compressed or transformed,
//! every 503 says why, and a restart brings clients back spread over a window (the
//! `retry:` each stream gets before its shutdown `end`), not in one stampede.

mod support;

use bench::reliability::ReconnectSpread;
use reqwest::StatusCode;
use server::Config;
use shared::UnavailableReason;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use support::binary::launch;
use support::raw::RawConn;
use support::report::{record, scale, Line};
use support::{config, spawn, within_for, Endpoint as _};

#[tokio::test]
async fn event_streams_are_never_compressed_or_transformed() {
    let server = spawn(config()).await;
    for path in ["/api/counter?count=1&interval_ms=1", "/api/shared"] {
        for accept in [None, Some("gzip"), Some("gzip, deflate, br")] {
            let mut raw = server.raw().await;
            let extra: Vec<(&str, &[u8])> = accept
                .map(|a| vec![("Accept-Encoding", a.as_bytes())])
                .unwrap_or_default();
            raw.get(path, &extra).await;
            let head = raw.head().await;
            assert_eq!(head.status, 200, "{path} {accept:?}");
            assert_eq!(
                head.header("cache-control"),
                Some("no-cache, no-transform"),
                "{path} {accept:?}"
            );
            assert_eq!(head.header("content-encoding"), None, "{path} {accept:?}");
            assert_eq!(head.header("content-type"), Some("text/event-stream"));
            let first = raw.frame().await.expect("the first frame, plain text");
            assert!(first.starts_with("retry: "), "{first:?}");
        }
    }
}

#[tokio::test]
async fn every_503_says_which_limit_or_state_it_is() {
    // Capacity, on both streams.
    let server = spawn(Config {
        max_streams: 1,
        ..config()
    })
    .await;
    let _held = server.get("/api/counter?count=100&interval_ms=60000").await;
    for path in ["/api/counter", "/api/shared"] {
        let reply = server.fetch(path).await;
        assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE, "{path}");
        assert!(reply.header("retry-after").is_some(), "{path}");
        assert_eq!(
            reply.error_body().reason,
            Some(UnavailableReason::Capacity),
            "{path}"
        );
    }

    // Shutting down: see `routes::tests` (only a request racing the shutdown can get
    // it over a socket, so it is tested on the routes directly).
}

/// What one simulated browser saw across a restart.
struct Comeback {
    /// The `retry:` the server sent just before `end`.
    retry_before_end: Option<u64>,
    /// How long after the shutdown began the client had its stream back.
    back_after: Duration,
}

/// An EventSource, as the standard has it: it keeps the last `retry:` and, when the
/// stream ends, waits that long and connects again (again after a failure).
async fn eventsource(
    addr: SocketAddr,
    started: tokio::sync::watch::Receiver<Option<Instant>>,
) -> Comeback {
    let mut conn = RawConn::connect(addr).await;
    conn.get("/api/shared", &[]).await;
    assert_eq!(conn.head().await.status, 200);
    let mut retry = None;
    let mut last_id = String::from("0");
    while let Ok(frame) = conn.frame().await {
        if let Some(r) = frame.strip_prefix("retry: ") {
            retry = Some(r.trim().parse::<u64>().expect("retry is a number"));
        }
        if let Some(id) = frame.lines().find_map(|l| l.strip_prefix("id: ")) {
            last_id = id.to_owned();
        }
    }
    let retry_before_end = retry;
    let shutdown_at = started
        .borrow()
        .expect("the shutdown began before streams ended");
    let wait = Duration::from_millis(retry.expect("a retry field"));
    loop {
        // The client's own reconnection delay, as a browser waits it.
        tokio::time::sleep(wait).await;
        let Ok(tcp) = tokio::net::TcpStream::connect(addr).await else {
            continue;
        };
        let mut conn = RawConn::over(tcp, addr.to_string(), Duration::from_secs(30));
        conn.get("/api/shared", &[("Last-Event-ID", last_id.as_bytes())])
            .await;
        if conn.head().await.status == 200 {
            return Comeback {
                retry_before_end,
                back_after: shutdown_at.elapsed(),
            };
        }
    }
}

/// When the clients came back, in buckets of `bucket`; and the peak per second.
fn histogram(back: &[Duration], bucket: Duration) -> (Vec<u64>, f64) {
    let n = back
        .iter()
        .max()
        .map_or(0, |m| (m.as_nanos() / bucket.as_nanos()) as usize + 1);
    let mut counts = vec![0u64; n];
    for b in back {
        counts[(b.as_nanos() / bucket.as_nanos()) as usize] += 1;
    }
    let peak = counts.iter().max().copied().unwrap_or(0) as f64 / bucket.as_secs_f64();
    (counts, peak)
}

/// Runs `clients` simulated browsers against the binary, restarts it on the same port,
/// and returns when each came back.
async fn restart_with(clients: usize, retry_ms: u64, spread_ms: u64) -> Vec<Comeback> {
    let args = |addr: &str| {
        vec![
            "--addr".to_owned(),
            addr.to_owned(),
            "--retry-ms".to_owned(),
            retry_ms.to_string(),
            "--shutdown-retry-spread-ms".to_owned(),
            spread_ms.to_string(),
            "--max-streams".to_owned(),
            (clients + 10).to_string(),
        ]
    };
    let mut first = launch().args(args("127.0.0.1:0")).start().await;
    let addr = first.addr;
    let (started_tx, started) = tokio::sync::watch::channel(None);
    let tasks: Vec<_> = (0..clients)
        .map(|_| tokio::spawn(eventsource(addr, started.clone())))
        .collect();
    first
        .wait_for_metric("sse_shared_subscribers", clients as f64)
        .await;
    started_tx.send_replace(Some(Instant::now()));
    first.sigterm();
    assert!(first.exit().await.success());
    let second = launch().args(args(&addr.to_string())).start().await;
    let mut back = Vec::new();
    for t in tasks {
        back.push(
            within_for(
                Duration::from_millis(retry_ms + spread_ms) * 3 + Duration::from_secs(10),
                "a client to come back",
                t,
            )
            .await
            .expect("client task"),
        );
    }
    drop(second);
    back
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_brings_clients_back_spread_out_not_in_a_stampede() {
    let clients = 1000 * scale();
    let (retry_ms, spread_ms) = (500, 3000);
    let bucket = Duration::from_millis(250);

    let spread = restart_with(clients, retry_ms, spread_ms).await;
    // Every stream got a retry within the range, and they differ.
    let retries: Vec<u64> = spread
        .iter()
        .map(|c| c.retry_before_end.expect("a retry before end"))
        .collect();
    assert!(
        retries
            .iter()
            .all(|r| (retry_ms..=retry_ms + spread_ms).contains(r)),
        "retries within {retry_ms}..={}",
        retry_ms + spread_ms
    );
    let distinct: std::collections::BTreeSet<_> = retries.iter().collect();
    // Drawn uniformly from `spread_ms + 1` values: most of them, or of the clients.
    assert!(
        distinct.len() > clients.min(spread_ms as usize + 1) / 2,
        "{} distinct of {clients}",
        distinct.len()
    );
    let spread_back: Vec<Duration> = spread.iter().map(|c| c.back_after).collect();
    let (spread_hist, spread_peak) = histogram(&spread_back, bucket);

    let stampede = restart_with(clients, retry_ms, 0).await;
    let stampede_back: Vec<Duration> = stampede.iter().map(|c| c.back_after).collect();
    let (stampede_hist, stampede_peak) = histogram(&stampede_back, bucket);

    // Spread over the window, the busiest quarter-second holds a fraction of the
    // clients; without it they all come back at once, as fast as the server accepts
    // them (with thousands, that takes more than one bucket), so its busiest bucket
    // holds several times as many.
    let busiest = |h: &[u64]| h.iter().max().copied().unwrap_or(0) as usize;
    assert!(
        busiest(&spread_hist) * 4 < clients,
        "spread: {spread_hist:?}"
    );
    assert!(
        busiest(&stampede_hist) > busiest(&spread_hist) * 3,
        "stampede: {stampede_hist:?} against spread: {spread_hist:?}"
    );
    record(Line::ReconnectSpread(ReconnectSpread {
        clients: clients as u64,
        retry_ms,
        spread_ms,
        bucket_ms: bucket.as_millis() as u64,
        spread_histogram: spread_hist,
        spread_peak_per_sec: spread_peak,
        stampede_histogram: stampede_hist,
        stampede_peak_per_sec: stampede_peak,
        distinct_retries: distinct.len() as u64,
    }));
}
