//! The real binary under load: shutdown with thousands of open streams, a second signal,
//! and churn (thousands of streams opened and dropped in random ways) that must leave no
//! stream open and the resident memory back where it was.

mod prom;
mod report;

use report::{record, scale};
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tokio::time::{timeout, Instant};

const WAIT: Duration = Duration::from_secs(120);

/// The server binary, SIGKILLed if a test fails before it exits.
struct Binary {
    child: Child,
    addr: SocketAddr,
}

impl Binary {
    fn start(args: &[&str]) -> Binary {
        let mut child = Command::new(env!("CARGO_BIN_EXE_sse-counter"))
            .args(["--addr", "127.0.0.1:0"])
            .args(args)
            .env("SSE_COUNTER_LOG", "warn")
            .stdout(Stdio::piped())
            .spawn()
            .expect("start sse-counter");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let addr = line
            .trim()
            .strip_prefix("listening on http://")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
            .parse()
            .unwrap();
        Binary { child, addr }
    }

    fn signal(&self, name: &str) {
        let ok = Command::new("kill")
            .args([&format!("-{name}"), &self.child.id().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -{name} failed");
    }

    /// Waits for the process to exit and returns its exit code.
    async fn exit_code(&mut self, within: Duration) -> Option<i32> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code();
            }
            assert!(
                Instant::now() < deadline,
                "the server did not exit within {within:?}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Resident memory in KiB, from /proc.
    fn rss_kib(&self) -> u64 {
        self.proc_status_kib("VmRSS:")
    }

    /// The most resident memory the process has had, in KiB.
    fn peak_rss_kib(&self) -> u64 {
        self.proc_status_kib("VmHWM:")
    }

    fn proc_status_kib(&self, field: &str) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix(field))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or_else(|| panic!("{field} in /proc/PID/status"))
    }

    async fn metric(&self, name: &str) -> f64 {
        prom::value(&get(self.addr, "/metrics").await, name)
    }

    async fn wait_metric(&self, name: &str, want: f64) {
        prom::wait_for(name, want, WAIT, async || self.metric(name).await).await;
    }
}

impl Drop for Binary {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

async fn get(addr: SocketAddr, path: &str) -> String {
    timeout(WAIT, async {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(
            format!("GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await
        .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        out
    })
    .await
    .unwrap_or_else(|_| panic!("GET {path} hung"))
}

/// Opens a stream and returns the connection once the `retry:` line arrived.
async fn open_stream(
    addr: SocketAddr,
    query: &str,
    last_event_id: Option<u64>,
) -> (TcpStream, Vec<u8>) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let resume = last_event_id
        .map(|id| format!("Last-Event-ID: {id}\r\n"))
        .unwrap_or_default();
    s.write_all(format!("GET /api/counter?{query} HTTP/1.1\r\nHost: t\r\n{resume}\r\n").as_bytes())
        .await
        .unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 2048];
    while !String::from_utf8_lossy(&got).contains("retry: ") {
        let n = s.read(&mut buf).await.unwrap();
        assert!(
            n > 0,
            "closed before the retry line: {}",
            String::from_utf8_lossy(&got)
        );
        got.extend_from_slice(&buf[..n]);
    }
    (s, got)
}

/// Reads until the server closes and returns everything received.
async fn read_to_close(mut s: TcpStream, mut got: Vec<u8>) -> String {
    let mut buf = [0u8; 2048];
    loop {
        match s.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    }
    String::from_utf8_lossy(&got).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_with_2000_open_streams_ends_every_one_and_exits_zero() {
    let streams = 2000 * scale();
    let max = (streams + 100).to_string();
    let mut server = Binary::start(&["--max-streams", &max, "--shutdown-grace-secs", "10"]);
    let addr = server.addr;
    let gate = Arc::new(Semaphore::new(200));
    let mut opened = Vec::with_capacity(streams);
    for _ in 0..streams {
        let gate = Arc::clone(&gate);
        opened.push(tokio::spawn(async move {
            let permit = gate.acquire_owned().await.unwrap();
            let (s, got) = open_stream(addr, "count=1000000&interval_ms=250", None).await;
            drop(permit);
            (s, got)
        }));
    }
    let mut readers = Vec::with_capacity(streams);
    for task in opened {
        let (s, got) = timeout(WAIT, task)
            .await
            .expect("opening streams hung")
            .unwrap();
        readers.push(tokio::spawn(read_to_close(s, got)));
    }
    server
        .wait_metric("sse_active_streams", streams as f64)
        .await;
    let peak_open = server.peak_rss_kib();
    let signalled = Instant::now();
    server.signal("TERM");
    let mut ended = 0;
    for reader in readers {
        let text = timeout(WAIT, reader)
            .await
            .expect("a stream never closed")
            .unwrap();
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
    assert_eq!(server.exit_code(Duration::from_secs(10)).await, Some(0));
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
    let mut server = Binary::start(&[
        "--shutdown-grace-secs",
        "120",
        "--stall-timeout-secs",
        "120",
        "--send-buffer-bytes",
        "4096",
    ]);
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut stuck = socket.connect(server.addr).await.unwrap();
    stuck
        .write_all(b"GET /api/counter?count=1000000&interval_ms=1 HTTP/1.1\r\nHost: t\r\n\r\n")
        .await
        .unwrap();
    server.wait_metric("sse_active_streams", 1.0).await;
    // Let the buffers fill: the stream stops being polled once they are.
    let mut last = 0.0;
    let deadline = Instant::now() + WAIT;
    loop {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let sent = server.metric("sse_events_sent_total").await;
        if sent == last && sent > 0.0 {
            break;
        }
        last = sent;
        assert!(
            Instant::now() < deadline,
            "the stalled stream never filled its buffers"
        );
    }
    server.signal("TERM");
    // The first signal does not end the process: the stuck stream holds it in its grace.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        server.child.try_wait().unwrap().is_none(),
        "exited on the first signal"
    );
    server.signal("TERM");
    assert_eq!(server.exit_code(Duration::from_secs(10)).await, Some(130));
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
            let (s, _) = open_stream(addr, "count=100&interval_ms=1000", None).await;
            drop(s);
        }
        // Abort mid-stream, after a few ticks.
        1 => {
            let (mut s, mut got) = open_stream(addr, "count=1000&interval_ms=2", None).await;
            let mut buf = [0u8; 2048];
            while String::from_utf8_lossy(&got).matches("id: ").count() < 3 {
                let n = s.read(&mut buf).await.unwrap();
                assert!(n > 0);
                got.extend_from_slice(&buf[..n]);
            }
            drop(s);
        }
        // Finish normally.
        2 => {
            let (s, got) = open_stream(addr, "count=3&interval_ms=2", None).await;
            let text = read_to_close_after_end(s, got).await;
            assert!(text.contains(r#"{"reason":"complete","last":3}"#), "{text}");
        }
        // Resume near the end, and finish.
        _ => {
            let (s, got) = open_stream(addr, "count=10&interval_ms=2", Some(8)).await;
            let text = read_to_close_after_end(s, got).await;
            assert!(
                text.contains("id: 9\n") && text.contains("id: 10\n"),
                "{text}"
            );
            assert!(!text.contains("id: 8\n"), "{text}");
        }
    }
}

/// Reads until the `end` event's frame and the body's last chunk arrived.
async fn read_to_close_after_end(mut s: TcpStream, mut got: Vec<u8>) -> String {
    let mut buf = [0u8; 2048];
    loop {
        let text = String::from_utf8_lossy(&got);
        if text.contains("event: end") && text.ends_with("0\r\n\r\n") {
            return text.into_owned();
        }
        let n = s.read(&mut buf).await.unwrap();
        assert!(n > 0, "closed before the end: {text}");
        got.extend_from_slice(&buf[..n]);
    }
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
        timeout(WAIT, t)
            .await
            .expect("a churn client hung")
            .unwrap();
    }
    kinds
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn churn_leaves_nothing_open_and_memory_where_it_was() {
    // Three equal rounds: the first warms the allocator and the runtime up to their
    // working size, the other two must then hold memory level. A leak grows with every
    // round; allocator growth levels off.
    let round = 2000 * scale();
    let server = Binary::start(&["--max-streams", "5000"]);
    let start = server.rss_kib();
    let first = churn(server.addr, round, 0x5EED).await;
    server.wait_metric("sse_active_streams", 0.0).await;
    let warm = server.rss_kib();
    let mut kinds = churn(server.addr, round, 0xC0FFEE).await;
    server.wait_metric("sse_active_streams", 0.0).await;
    let middle = server.rss_kib();
    let more = churn(server.addr, round, 0xFACADE).await;
    server.wait_metric("sse_active_streams", 0.0).await;
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
            "permits_freed": ended,
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
    let server = Binary::start(&["--max-streams", &cap.to_string()]);
    let addr = server.addr;
    // The streams inside the cap tick every 50 ms for as long as the flood lasts.
    let (flood_done, flood_over) = tokio::sync::watch::channel(false);
    let mut open = Vec::with_capacity(cap);
    for _ in 0..cap {
        let (s, got) = timeout(
            WAIT,
            open_stream(addr, "count=1000000&interval_ms=50", None),
        )
        .await
        .expect("opening a stream inside the cap hung");
        open.push(tokio::spawn(read_past(s, got, flood_over.clone(), 10)));
    }
    server.wait_metric("sse_active_streams", cap as f64).await;
    let mut refused = Vec::with_capacity(flood);
    let gate = Arc::new(Semaphore::new(200));
    for _ in 0..flood {
        let gate = Arc::clone(&gate);
        refused.push(tokio::spawn(async move {
            let _permit = gate.acquire_owned().await.unwrap();
            get(addr, "/api/counter?count=5").await
        }));
    }
    let mut got_503 = 0;
    for r in refused {
        let answer = timeout(WAIT, r)
            .await
            .expect("a refused request hung")
            .unwrap();
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
        let ids = timeout(WAIT, stream)
            .await
            .expect("an admitted stream stalled")
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
    mut s: TcpStream,
    mut got: Vec<u8>,
    mut over: tokio::sync::watch::Receiver<bool>,
    more: usize,
) -> Vec<u64> {
    let mut buf = [0u8; 4096];
    let mut ids_at_end = None;
    loop {
        let ids: Vec<u64> = String::from_utf8_lossy(&got)
            .lines()
            .filter_map(|l| l.strip_prefix("id: "))
            .map(|v| v.parse().unwrap())
            .collect();
        if *over.borrow_and_update() && ids_at_end.is_none() {
            ids_at_end = Some(ids.len());
        }
        if ids_at_end.is_some_and(|n| ids.len() >= n + more) {
            return ids;
        }
        tokio::select! {
            n = s.read(&mut buf) => {
                let n = n.unwrap();
                assert!(n > 0, "an admitted stream closed");
                got.extend_from_slice(&buf[..n]);
            }
            _ = over.changed(), if ids_at_end.is_none() => {}
        }
    }
}
