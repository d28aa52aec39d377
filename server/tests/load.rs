//! The real binary under load: shutdown with thousands of open streams, a second signal,
//! and churn (thousands of streams opened and dropped in random ways) that must leave no
//! stream open and the resident memory back where it was.

mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::binary::{launch, Binary};
use support::raw::{contains, event_ids, Dial, RawConn};
use support::report::{record, scale};
use support::{within_for, Endpoint as _};
use tokio::sync::Semaphore;

/// How long any one wait may take: these tests hold thousands of connections on a
/// machine that other test binaries keep busy too.
const WAIT: Duration = Duration::from_secs(120);

/// How the clients of these tests connect: each step within [`WAIT`].
const DIAL: Dial = Dial {
    limit: WAIT,
    recv_buffer: None,
};

/// The binary with `args`, logging only warnings (thousands of streams would fill its
/// log with lines no test reads), waits on it bounded by [`WAIT`].
async fn start(args: &[&str]) -> Binary {
    launch()
        .args(args)
        .env("SSE_COUNTER_LOG", "warn")
        .start()
        .await
        .with_limit(WAIT)
}

/// Opens a stream and returns the connection once the `retry:` line arrived.
async fn open_stream(addr: SocketAddr, query: &str, last_event_id: Option<u64>) -> RawConn {
    let mut conn = RawConn::dial(addr, DIAL).await;
    let resume = last_event_id.map(|id| id.to_string());
    let extra: Vec<(&str, &[u8])> = resume
        .iter()
        .map(|id| ("Last-Event-ID", id.as_bytes()))
        .collect();
    conn.get(&format!("/api/counter?{query}"), &extra).await;
    conn.read_until("the retry line", |got| contains(got, b"retry: "))
        .await;
    conn
}

/// Reads until the server closes and returns everything received, framing included.
async fn read_to_close(mut conn: RawConn) -> String {
    let got = conn.read_to_close("the server to close the stream").await;
    String::from_utf8_lossy(&got).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_with_2000_open_streams_ends_every_one_and_exits_zero() {
    let streams = 2000 * scale();
    let max = (streams + 100).to_string();
    let mut server = start(&["--max-streams", &max, "--shutdown-grace-secs", "10"]).await;
    let addr = server.addr;
    let gate = Arc::new(Semaphore::new(200));
    let mut opened = Vec::with_capacity(streams);
    for _ in 0..streams {
        let gate = Arc::clone(&gate);
        opened.push(tokio::spawn(async move {
            let permit = gate.acquire_owned().await.unwrap();
            let conn = open_stream(addr, "count=1000000&interval_ms=250", None).await;
            drop(permit);
            conn
        }));
    }
    let mut readers = Vec::with_capacity(streams);
    for task in opened {
        let conn = within_for(WAIT, "opening streams", task).await.unwrap();
        readers.push(tokio::spawn(read_to_close(conn)));
    }
    server
        .wait_for_metric("sse_active_streams", streams as f64)
        .await;
    let peak_open = server.peak_rss_kib();
    let signalled = Instant::now();
    server.sigterm();
    let mut ended = 0;
    for reader in readers {
        let text = within_for(WAIT, "a stream to close", reader).await.unwrap();
        let end = text
            .split("event: end\ndata: ")
            .nth(1)
            .unwrap_or_else(|| panic!("no end event in {text:?}"));
        assert!(end.starts_with(r#"{"reason":"shutdown","last":"#), "{end}");
        assert!(
            text.ends_with("0\r\n\r\n"),
            "the body did not end cleanly: {text:?}"
        );
        ended += 1;
    }
    assert_eq!(ended, streams);
    assert_eq!(server.exit().await.code(), Some(0));
    record(
        "shutdown",
        serde_json::json!({
            "open_streams": streams,
            "ended_with_shutdown": ended,
            "lost": streams - ended,
            "exit_code": 0,
            "exit_ms": signalled.elapsed().as_millis() as u64,
            "grace_secs": 10,
            "peak_rss_kib": peak_open,
        }),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_signal_exits_at_once() {
    // A client that never reads keeps its stream (and so the graceful shutdown) waiting:
    // the stall timeout and the grace period are both far away.
    let mut server = start(&[
        "--shutdown-grace-secs",
        "120",
        "--stall-timeout-secs",
        "120",
        "--send-buffer-bytes",
        "4096",
    ])
    .await;
    let stuck = server
        .stalled_client("/api/counter?count=1000000&interval_ms=1")
        .await;
    server.wait_for_metric("sse_active_streams", 1.0).await;
    // Let the buffers fill: the stream stops being polled once they are, and then the
    // count of events sent stays put from one look to the next.
    within_for(WAIT, "the stalled stream to fill its buffers", async {
        let mut last = 0.0;
        loop {
            tokio::time::sleep(Duration::from_millis(300)).await;
            let sent = server.metric("sse_events_sent_total").await;
            if sent == last && sent > 0.0 {
                break;
            }
            last = sent;
        }
    })
    .await;
    server.sigterm();
    // The first signal does not end the process: the stuck stream holds it in its grace.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!server.has_exited(), "exited on the first signal");
    server.sigterm();
    assert_eq!(server.exit().await.code(), Some(130));
    drop(stuck);
}

/// A tiny deterministic generator, so a failing order can be replayed.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// One churn client: opens a stream and leaves it in one of four ways.
async fn churn_one(addr: SocketAddr, kind: u64) {
    match kind % 4 {
        // Abort before the first tick.
        0 => {
            let conn = open_stream(addr, "count=100&interval_ms=1000", None).await;
            drop(conn);
        }
        // Abort mid-stream, after a few ticks.
        1 => {
            let mut conn = open_stream(addr, "count=1000&interval_ms=2", None).await;
            conn.read_until("three ticks", |got| {
                String::from_utf8_lossy(got).matches("id: ").count() >= 3
            })
            .await;
            drop(conn);
        }
        // Finish normally.
        2 => {
            let conn = open_stream(addr, "count=3&interval_ms=2", None).await;
            let text = read_through_end(conn).await;
            assert!(text.contains(r#"{"reason":"complete","last":3}"#), "{text}");
        }
        // Resume near the end, and finish.
        _ => {
            let conn = open_stream(addr, "count=10&interval_ms=2", Some(8)).await;
            let text = read_through_end(conn).await;
            assert!(
                text.contains("id: 9\n") && text.contains("id: 10\n"),
                "{text}"
            );
            assert!(!text.contains("id: 8\n"), "{text}");
        }
    }
}

/// Reads until the `end` event's frame and the body's last chunk arrived, and returns
/// everything received.
async fn read_through_end(mut conn: RawConn) -> String {
    conn.read_until("the end event and the last chunk", |got| {
        let text = String::from_utf8_lossy(got);
        text.contains("event: end") && text.ends_with("0\r\n\r\n")
    })
    .await;
    String::from_utf8_lossy(conn.received()).into_owned()
}

async fn churn(addr: SocketAddr, rounds: usize, seed: u64) -> [usize; 4] {
    let mut kinds = [0usize; 4];
    let gate = Arc::new(Semaphore::new(300));
    let mut rng = XorShift(seed);
    let mut tasks = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        let kind = rng.next();
        kinds[(kind % 4) as usize] += 1;
        let gate = Arc::clone(&gate);
        tasks.push(tokio::spawn(async move {
            let _permit = gate.acquire_owned().await.unwrap();
            churn_one(addr, kind).await;
        }));
    }
    for t in tasks {
        within_for(WAIT, "a churn client", t).await.unwrap();
    }
    kinds
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn churn_leaves_nothing_open_and_memory_where_it_was() {
    // Three equal rounds: the first warms the allocator and the runtime up to their
    // working size, the other two must then hold memory level. A leak grows with every
    // round; allocator growth levels off.
    let round = 2000 * scale();
    let server = start(&["--max-streams", "5000"]).await;
    let start = server.rss_kib();
    let first = churn(server.addr, round, 0x5EED).await;
    server.wait_for_metric("sse_active_streams", 0.0).await;
    let warm = server.rss_kib();
    let mut kinds = churn(server.addr, round, 0xC0FFEE).await;
    server.wait_for_metric("sse_active_streams", 0.0).await;
    let middle = server.rss_kib();
    let more = churn(server.addr, round, 0xFACADE).await;
    server.wait_for_metric("sse_active_streams", 0.0).await;
    let after = server.rss_kib();
    for (k, (a, b)) in kinds.iter_mut().zip(first.into_iter().zip(more)) {
        *k += a + b;
    }
    let total = (3 * round) as f64;
    assert_eq!(server.metric("sse_streams_total").await, total);
    // Each stream's permit is freed exactly once, whatever way it ended.
    let mut ended = 0.0;
    for reason in ["complete", "client", "fault", "stalled", "shutdown"] {
        ended += server
            .metric(&format!("sse_disconnects_total{{reason=\"{reason}\"}}"))
            .await;
    }
    assert_eq!(ended, total);
    let margin = middle / 20 + 1024;
    assert!(
        after <= middle + margin,
        "resident memory kept growing: {warm} KiB after the warm-up round, {middle} KiB \
         after the second, {after} KiB after the third"
    );
    record(
        "churn",
        serde_json::json!({
            "streams": 3 * round,
            "abort_before_first_tick": kinds[0],
            "abort_mid_stream": kinds[1],
            "finish": kinds[2],
            "resume_and_finish": kinds[3],
            "active_after": 0,
            "permits_freed": ended as u64,
            "rss_start_kib": start,
            "rss_warm_kib": warm,
            "rss_middle_kib": middle,
            "rss_after_kib": after,
            "peak_rss_kib": server.peak_rss_kib(),
        }),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_past_max_streams_gets_503_while_open_streams_stay_on_time() {
    let (cap, flood) = (300 * scale(), 1000 * scale());
    let server = start(&["--max-streams", &cap.to_string()]).await;
    let addr = server.addr;
    // The streams inside the cap tick every 50 ms for as long as the flood lasts.
    let (flood_done, flood_over) = tokio::sync::watch::channel(false);
    let mut open = Vec::with_capacity(cap);
    for _ in 0..cap {
        let conn = within_for(
            WAIT,
            "opening a stream inside the cap",
            open_stream(addr, "count=1000000&interval_ms=50", None),
        )
        .await;
        open.push(tokio::spawn(read_past(conn, flood_over.clone(), 10)));
    }
    server
        .wait_for_metric("sse_active_streams", cap as f64)
        .await;
    let mut refused = Vec::with_capacity(flood);
    let gate = Arc::new(Semaphore::new(200));
    for _ in 0..flood {
        let gate = Arc::clone(&gate);
        refused.push(tokio::spawn(async move {
            let _permit = gate.acquire_owned().await.unwrap();
            let mut conn = RawConn::dial(addr, DIAL).await;
            let request =
                b"GET /api/counter?count=5 HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n";
            conn.exchange(request).await.text
        }));
    }
    let mut got_503 = 0;
    for r in refused {
        let answer = within_for(WAIT, "a refused request", r).await.unwrap();
        assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
        assert!(
            answer.to_ascii_lowercase().contains("retry-after: "),
            "{answer}"
        );
        assert!(answer.contains(r#"{"error":"#), "{answer}");
        got_503 += 1;
    }
    flood_done.send(true).unwrap();
    let mut on_time = 0;
    for stream in open {
        let ids = within_for(WAIT, "an admitted stream stalled", stream)
            .await
            .unwrap();
        assert!(
            ids.iter().copied().eq(1..=ids.len() as u64),
            "gap or repeat under the flood: {ids:?}"
        );
        on_time += 1;
    }
    record(
        "flood",
        serde_json::json!({
            "max_streams": cap,
            "admitted_unbroken": on_time,
            "flood_requests": flood,
            "refused_503": got_503,
            "lost": cap - on_time,
            "peak_rss_kib": server.peak_rss_kib(),
        }),
    );
}

/// Reads a stream until `more` ticks have arrived after `over` turned true, and returns
/// every id received.
async fn read_past(
    mut conn: RawConn,
    mut over: tokio::sync::watch::Receiver<bool>,
    more: usize,
) -> Vec<u64> {
    let mut ids_at_end = None;
    loop {
        let ids = event_ids(&String::from_utf8_lossy(conn.received()));
        if *over.borrow_and_update() && ids_at_end.is_none() {
            ids_at_end = Some(ids.len());
        }
        if ids_at_end.is_some_and(|n| ids.len() >= n + more) {
            return ids;
        }
        tokio::select! {
            n = conn.read_more("the next tick of an admitted stream") => {
                let n = n.unwrap();
                assert!(n > 0, "an admitted stream closed");
            }
            _ = over.changed(), if ids_at_end.is_none() => {}
        }
    }
}
