//! The load itself: opens streams against one loopback target at a set rate, reads
//! each with a conforming SSE parser, and counts what arrives.
//!
//! Each stream is one task owning one bare hyper HTTP/1 client connection: no pool and
//! no per-request machinery beyond what a browser's EventSource does. The client runs on
//! the same machine as the server it measures and competes with it for the cores, so
//! every cycle it spends shows up in the server's latency and time to headers (the
//! spread over repeats in `docs/benchmarks.md` shows how much).

use crate::report::{StreamKind, WorkerResult};
use anyhow::{bail, Context as _};
use bytes::Bytes;
use eventsource_stream::Eventsource as _;
use futures_util::StreamExt as _;
use http_body_util::{BodyDataStream, Empty};
use hyper_util::rt::TokioIo;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::net::TcpSocket;
use tokio::task::JoinSet;
use tokio::time::Instant;

/// A URL on this machine's loopback; anything else is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub url: String,
    pub addr: SocketAddr,
    /// The `Host` header.
    pub host: String,
    pub path_and_query: String,
}

impl Target {
    pub fn parse(url: &str) -> anyhow::Result<Target> {
        let uri: http::Uri = url
            .parse()
            .with_context(|| format!("{url:?} is not a URL"))?;
        if uri.scheme_str() != Some("http") {
            bail!("only http:// URLs are supported, not {url:?}");
        }
        let host = uri.host().context("the URL has no host")?;
        let ip = if host == "localhost" {
            Ipv4Addr::LOCALHOST
        } else {
            host.parse::<Ipv4Addr>().map_err(|_| {
                anyhow::anyhow!("the target must be an IPv4 loopback address (127.x.y.z) or localhost, not {host:?}")
            })?
        };
        if !ip.is_loopback() {
            bail!("refusing {ip}: load is only ever sent to loopback (127.0.0.0/8)");
        }
        let port = uri.port_u16().unwrap_or(80);
        Ok(Target {
            url: url.to_owned(),
            addr: SocketAddr::new(IpAddr::V4(ip), port),
            host: format!("{host}:{port}"),
            path_and_query: uri
                .path_and_query()
                .map_or_else(|| "/".to_owned(), |p| p.as_str().to_owned()),
        })
    }
}

/// How one load process opens its share of the streams.
#[derive(Debug, Clone)]
pub struct LoadConfig {
    pub target: Target,
    pub kind: StreamKind,
    pub streams: u64,
    /// Streams opened per second; 0 opens them all at once.
    pub ramp_per_sec: f64,
    /// This process opens streams `first_index`, `first_index + index_step`, ... of the
    /// whole run, so processes spread over the source addresses the same way.
    pub first_index: u64,
    pub index_step: u64,
    /// Client sockets are bound to 127.0.0.1 up to 127.0.0.`source_ips`, round-robin,
    /// so the run is not limited by one address's ephemeral ports (about 28,000).
    pub source_ips: u8,
    /// Limit for the TCP connect and, separately, for the response headers.
    pub connect_timeout: Duration,
}

/// The steady window, in wall-clock microseconds since the UNIX epoch, so several
/// processes agree on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub start_us: u64,
    pub end_us: u64,
}

impl Window {
    /// A window that starts `after` from now and lasts `length`.
    pub fn from_now(after: Duration, length: Duration) -> Window {
        let start_us = unix_us() + after.as_micros() as u64;
        Window {
            start_us,
            end_us: start_us + length.as_micros() as u64,
        }
    }

    pub fn secs(&self) -> f64 {
        self.end_us.saturating_sub(self.start_us) as f64 / 1e6
    }

    /// How long from now until `unix_us`, zero if past.
    pub fn until(unix: u64) -> Duration {
        Duration::from_micros(unix.saturating_sub(unix_us()))
    }
}

pub fn unix_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// What every stream task shares.
struct Shared {
    window_start: AtomicU64,
    window_end: AtomicU64,
    /// Set when the run stops: errors after it are the stop's, not the server's.
    stopping: AtomicBool,
    /// Streams that are open or have failed: the ramp is over when all have.
    settled: AtomicU64,
    open: AtomicU64,
    /// A std mutex: held for a few counter updates, never across an await.
    result: Mutex<WorkerResult>,
}

impl Shared {
    fn result(&self) -> std::sync::MutexGuard<'_, WorkerResult> {
        self.result.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A load process's streams, opened and running.
pub struct Load {
    shared: Arc<Shared>,
    tasks: JoinSet<()>,
}

impl Load {
    /// Opens the streams at the configured rate and returns when each one is open or has
    /// failed, or when `settle_limit` has passed since the first connect.
    pub async fn open(cfg: LoadConfig, settle_limit: Duration) -> Load {
        let shared = Arc::new(Shared {
            window_start: AtomicU64::new(u64::MAX),
            window_end: AtomicU64::new(u64::MAX),
            stopping: AtomicBool::new(false),
            settled: AtomicU64::new(0),
            open: AtomicU64::new(0),
            result: Mutex::new(WorkerResult {
                streams: cfg.streams,
                ..WorkerResult::default()
            }),
        });
        let cfg = Arc::new(cfg);
        let mut tasks = JoinSet::new();
        let start = Instant::now();
        for i in 0..cfg.streams {
            if cfg.ramp_per_sec > 0.0 {
                tokio::time::sleep_until(
                    start + Duration::from_secs_f64(i as f64 / cfg.ramp_per_sec),
                )
                .await;
            }
            let index = cfg.first_index + i * cfg.index_step;
            tasks.spawn(stream(Arc::clone(&cfg), Arc::clone(&shared), index));
        }
        let deadline = start + settle_limit;
        while shared.settled.load(Ordering::Relaxed) < cfg.streams && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        shared.result().setup_secs = start.elapsed().as_secs_f64();
        Load { shared, tasks }
    }

    pub fn established(&self) -> u64 {
        self.shared.result().established
    }

    /// Counts ticks received within `window`, then closes every stream a moment after
    /// the window ends (so a server sampled at the window's end is not yet handling
    /// the closes), and returns the figures.
    pub async fn measure(mut self, window: Window) -> WorkerResult {
        self.shared
            .window_end
            .store(window.end_us, Ordering::Relaxed);
        self.shared
            .window_start
            .store(window.start_us, Ordering::Relaxed);
        tokio::time::sleep(Window::until(window.end_us)).await;
        let open = self.shared.open.load(Ordering::Relaxed);
        tokio::time::sleep(Duration::from_millis(300)).await;
        self.shared.stopping.store(true, Ordering::Relaxed);
        self.tasks.shutdown().await;
        let mut r = self.shared.result().clone();
        r.open_at_window_end = open;
        r
    }
}

enum Failure {
    Connect(String),
    Status(String),
    Timeout(String),
    Reset(String),
    Closed,
    Protocol(String),
}

/// One stream from connect to close; figures go into `shared` as they come, because
/// the task is aborted when the run stops.
async fn stream(cfg: Arc<LoadConfig>, shared: Arc<Shared>, index: u64) {
    let t0 = Instant::now();
    let established = AtomicBool::new(false);
    let outcome = run_stream(&cfg, &shared, index, t0, &established).await;
    if !established.load(Ordering::Relaxed) {
        shared.settled.fetch_add(1, Ordering::Relaxed);
    } else {
        shared.open.fetch_sub(1, Ordering::Relaxed);
    }
    if shared.stopping.load(Ordering::Relaxed) {
        return;
    }
    let mut r = shared.result();
    match outcome {
        Ok(()) => r.ended += 1,
        Err(Failure::Connect(e)) => {
            r.failed.connect += 1;
            r.note_error(&format!("connect: {e}"));
        }
        Err(Failure::Status(e)) => {
            r.failed.status += 1;
            r.note_error(&format!("status: {e}"));
        }
        Err(Failure::Timeout(e)) => {
            r.failed.timeout += 1;
            r.note_error(&format!("timeout: {e}"));
        }
        Err(Failure::Reset(e)) => {
            r.failed.reset += 1;
            r.note_error(&format!("reset: {e}"));
        }
        Err(Failure::Closed) => r.failed.closed += 1,
        Err(Failure::Protocol(e)) => {
            r.failed.protocol += 1;
            r.note_error(&format!("protocol: {e}"));
        }
    }
}

async fn run_stream(
    cfg: &LoadConfig,
    shared: &Shared,
    index: u64,
    t0: Instant,
    established: &AtomicBool,
) -> Result<(), Failure> {
    let source = Ipv4Addr::new(
        127,
        0,
        0,
        1 + (index % u64::from(cfg.source_ips.max(1))) as u8,
    );
    let socket = TcpSocket::new_v4().map_err(|e| Failure::Connect(e.to_string()))?;
    socket
        .bind(SocketAddr::new(IpAddr::V4(source), 0))
        .map_err(|e| Failure::Connect(format!("bind {source}: {e}")))?;
    let tcp = tokio::time::timeout(cfg.connect_timeout, socket.connect(cfg.target.addr))
        .await
        .map_err(|_| Failure::Timeout("TCP connect".into()))?
        .map_err(|e| Failure::Connect(e.to_string()))?;
    tcp.set_nodelay(true)
        .map_err(|e| Failure::Connect(e.to_string()))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .map_err(|e| Failure::Connect(e.to_string()))?;
    let mut conn = std::pin::pin!(conn);
    let request = http::Request::get(cfg.target.path_and_query.as_str())
        .header(http::header::HOST, cfg.target.host.as_str())
        .header(http::header::ACCEPT, "text/event-stream")
        .body(Empty::<Bytes>::new())
        .map_err(|e| Failure::Connect(e.to_string()))?;
    let work = async {
        let response = tokio::time::timeout(cfg.connect_timeout, sender.send_request(request))
            .await
            .map_err(|_| Failure::Timeout("response headers".into()))?
            .map_err(|e| Failure::Reset(e.to_string()))?;
        if response.status() != http::StatusCode::OK {
            return Err(Failure::Status(response.status().to_string()));
        }
        let headers_us = t0.elapsed().as_micros() as u64;
        {
            let mut r = shared.result();
            r.established += 1;
            r.time_to_headers.record(headers_us);
        }
        shared.open.fetch_add(1, Ordering::Relaxed);
        shared.settled.fetch_add(1, Ordering::Relaxed);
        established.store(true, Ordering::Relaxed);
        read_events(shared, cfg.kind, response.into_body(), t0).await
    };
    let mut work = std::pin::pin!(work);
    // The connection is driven in this same task (not spawned): one task per stream.
    // It may finish before the last body bytes are read, so reading goes on after it.
    let mut conn_done = false;
    loop {
        tokio::select! {
            biased;
            out = &mut work => return out,
            res = &mut conn, if !conn_done => {
                conn_done = true;
                if let Err(e) = res {
                    if !established.load(Ordering::Relaxed) {
                        return Err(Failure::Reset(e.to_string()));
                    }
                }
            }
        }
    }
}

/// What one event says: the number to check and when it was sent, or a reset.
enum Seen {
    Number {
        num: u64,
        sent_at_us: u64,
    },
    Reset {
        value: u64,
    },
    /// Not a count: a heartbeat.
    Skip,
}

/// Reads one event of a stream of `kind` (its `end` is handled by the caller).
fn seen(kind: StreamKind, event: &eventsource_stream::Event) -> Result<Seen, Failure> {
    let bad = |what: &str, e: serde_json::Error| {
        Failure::Protocol(format!("{what} data {:?}: {e}", event.data))
    };
    Ok(match (kind, event.event.as_str()) {
        (StreamKind::Counter, _) => {
            let tick: shared::Tick =
                serde_json::from_str(&event.data).map_err(|e| bad("tick", e))?;
            Seen::Number {
                num: tick.num,
                sent_at_us: tick.sent_at_us,
            }
        }
        (StreamKind::Shared, shared::events::HEARTBEAT) => Seen::Skip,
        (StreamKind::Shared, shared::events::RESET) => {
            let reset: shared::Reset =
                serde_json::from_str(&event.data).map_err(|e| bad("reset", e))?;
            Seen::Reset { value: reset.value }
        }
        (StreamKind::Shared, _) => {
            let change: shared::SharedValue =
                serde_json::from_str(&event.data).map_err(|e| bad("shared value", e))?;
            Seen::Number {
                num: change.value,
                sent_at_us: change.sent_at_us,
            }
        }
    })
}

async fn read_events(
    shared: &Shared,
    kind: StreamKind,
    body: hyper::body::Incoming,
    t0: Instant,
) -> Result<(), Failure> {
    let mut events = BodyDataStream::new(body).eventsource();
    let mut seq = match kind {
        StreamKind::Counter => crate::stats::SeqCheck::new(),
        StreamKind::Shared => crate::stats::SeqCheck::from_first(),
    };
    let mut first = true;
    while let Some(event) = events.next().await {
        let event = event.map_err(|e| match e {
            eventsource_stream::EventStreamError::Transport(e) => Failure::Reset(e.to_string()),
            other => Failure::Protocol(other.to_string()),
        })?;
        if event.event == shared::events::END {
            return Ok(());
        }
        let (num, sent_at_us) = match seen(kind, &event)? {
            Seen::Number { num, sent_at_us } => (num, sent_at_us),
            Seen::Reset { value } => {
                seq.restart_at(value);
                shared.result().resets += 1;
                continue;
            }
            Seen::Skip => continue,
        };
        let now = unix_us();
        let (gaps, repeats) = (seq.gaps, seq.repeats);
        seq.observe(num);
        let in_window = now >= shared.window_start.load(Ordering::Relaxed)
            && now < shared.window_end.load(Ordering::Relaxed);
        let mut r = shared.result();
        r.events_total += 1;
        r.gaps += seq.gaps - gaps;
        r.repeats += seq.repeats - repeats;
        if first {
            first = false;
            r.time_to_first_event
                .record(t0.elapsed().as_micros() as u64);
        }
        if in_window {
            r.events_in_window += 1;
            r.latency.record(now.saturating_sub(sent_at_us));
        }
    }
    Err(Failure::Closed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_urls_are_accepted() {
        let t = Target::parse("http://127.0.0.1:3000/api/counter?count=5&interval_ms=10").unwrap();
        assert_eq!(t.addr, "127.0.0.1:3000".parse().unwrap());
        assert_eq!(t.path_and_query, "/api/counter?count=5&interval_ms=10");
        assert_eq!(t.host, "127.0.0.1:3000");
        let t = Target::parse("http://localhost:8080").unwrap();
        assert_eq!((t.addr.port(), t.path_and_query.as_str()), (8080, "/"));
        assert!(Target::parse("http://127.9.8.7/").is_ok());
    }

    #[test]
    fn anything_off_the_machine_is_refused() {
        for url in [
            "http://10.0.0.1:3000/",
            "http://192.168.1.2/",
            "http://8.8.8.8/",
            "http://example.com/",
            "https://127.0.0.1/",
            "http://[::1]:3000/",
            "not a url",
        ] {
            assert!(Target::parse(url).is_err(), "{url} accepted");
        }
    }

    #[test]
    fn windows_are_measured_in_wall_clock_microseconds() {
        let w = Window::from_now(Duration::from_secs(1), Duration::from_millis(2500));
        assert_eq!(w.secs(), 2.5);
        assert!(w.start_us > unix_us());
        assert_eq!(Window::until(0), Duration::ZERO);
    }
}
