//! The load itself: opens streams against a loopback target at a set rate (or against
//! several, the instances of one deployment, stream `i` on target `i % targets`), reads
//! each with a conforming SSE parser, and counts what arrives.
//!
//! Each stream is one task. Over HTTP/1.1 (`http://`, or `https://` with TLS) it owns
//! one bare hyper HTTP/1 client connection: no pool and no per-request machinery beyond
//! what a browser's EventSource does. Over HTTP/2 (`https://` with `--http2`) the
//! streams share a few connections of the `h2` crate, stream `i` on connection
//! `i % connections`, each connection made by the first stream that needs it and driven
//! by a task of its own; every stream releases its flow-control window as it reads, as
//! a browser does. Every stream, whatever carries it, goes through the same SSE parsing
//! and accounting. The client runs on
//! the same machine as the server it measures and competes with it for the cores, so
//! every cycle it spends shows up in the server's latency and time to headers (the
//! spread over repeats in `docs/benchmarks.md` shows how much).

use crate::report::{StreamKind, Transport, WorkerResult};
use anyhow::{bail, Context as _};
use bytes::Bytes;
use eventsource_stream::Eventsource as _;
use futures_util::{Stream, StreamExt as _};
use http_body_util::{BodyDataStream, Empty};
use hyper_util::rt::TokioIo;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::OnceCell;
use tokio::task::JoinSet;
use tokio::time::Instant;

/// What `{i}` in a URL is held as once parsed (a URI may not hold `{` or `}`).
const INDEX_HOLE: &str = "%7Bi%7D";

/// A URL on this machine's loopback; anything else is refused. `{i}` in its path or
/// query is the stream's channel index (see [`Target::path_for`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub url: String,
    pub addr: SocketAddr,
    /// `https://`: TLS on every connection.
    pub tls: bool,
    /// The host alone: the name TLS asks for.
    pub hostname: String,
    /// The `Host` header (HTTP/2's `:authority`).
    pub host: String,
    pub path_and_query: String,
}

impl Target {
    pub fn parse(url: &str) -> anyhow::Result<Target> {
        let uri: http::Uri = url
            .replace("{i}", INDEX_HOLE)
            .parse()
            .with_context(|| format!("{url:?} is not a URL"))?;
        let tls = match uri.scheme_str() {
            Some("http") => false,
            Some("https") => true,
            _ => bail!("only http:// and https:// URLs are supported, not {url:?}"),
        };
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
        let port = uri.port_u16().unwrap_or(if tls { 443 } else { 80 });
        Ok(Target {
            url: url.to_owned(),
            addr: SocketAddr::new(IpAddr::V4(ip), port),
            tls,
            hostname: host.to_owned(),
            host: format!("{host}:{port}"),
            path_and_query: uri
                .path_and_query()
                .map_or_else(|| "/".to_owned(), |p| p.as_str().to_owned()),
        })
    }

    /// The path and query for stream `index` of the run: `{i}` replaced by
    /// `index % channels` (by `index` itself when `channels` is 0).
    pub fn path_for(&self, index: u64, channels: u64) -> std::borrow::Cow<'_, str> {
        if !self.path_and_query.contains(INDEX_HOLE) {
            return self.path_and_query.as_str().into();
        }
        let i = if channels == 0 {
            index
        } else {
            index % channels
        };
        self.path_and_query
            .replace(INDEX_HOLE, &i.to_string())
            .into()
    }
}

/// How one load process opens its share of the streams.
#[derive(Debug, Clone)]
pub struct LoadConfig {
    /// Where the streams go: stream `i` of the run to `targets[i % targets.len()]`. All
    /// share one scheme; several are only spoken to over HTTP/1.1 (see
    /// [`LoadConfig::transport_for`]).
    pub targets: Vec<Target>,
    pub kind: StreamKind,
    /// HTTP/1.1 or HTTPS HTTP/1.1 as the target's scheme says, or HTTP/2 (over TLS).
    pub transport: Transport,
    /// HTTP/2 connections this process opens and spreads its streams over; unused
    /// over HTTP/1.1, where each stream has its own.
    pub connections: u64,
    /// Each HTTP/2 stream's initial receive window, in bytes.
    pub h2_stream_window: u32,
    pub streams: u64,
    /// What `{i}` in a target's URL counts modulo: stream `i` of the run asks for
    /// channel index `i % channels` (0: the stream's index itself).
    pub channels: u64,
    /// Streams opened per second; 0 opens them all at once.
    pub ramp_per_sec: f64,
    /// This process opens streams `first_index`, `first_index + index_step`, ... of the
    /// whole run (and HTTP/2 connections numbered the same way), so processes spread
    /// over the source addresses the same way.
    pub first_index: u64,
    pub index_step: u64,
    /// Client sockets are bound to 127.0.0.1 up to 127.0.0.`source_ips`, round-robin,
    /// so the run is not limited by one address's ephemeral ports (about 28,000).
    pub source_ips: u8,
    /// Limit for the TCP connect (with the TLS and HTTP/2 handshakes where there are
    /// some) and, separately, for the response headers.
    pub connect_timeout: Duration,
}

impl LoadConfig {
    /// The transport the targets' scheme gives, HTTP/2 when asked (which needs TLS and
    /// one target: its streams share a few connections to one server).
    pub fn transport_for(targets: &[Target], http2: bool) -> anyhow::Result<Transport> {
        let Some(target) = targets.first() else {
            bail!("no target");
        };
        if targets.iter().any(|t| t.tls != target.tls) {
            bail!("the targets must all be http:// or all https://");
        }
        if http2 && targets.len() > 1 {
            bail!("HTTP/2 is spoken to one target only: give one URL with --http2");
        }
        Ok(match (target.tls, http2) {
            (false, false) => Transport::Http1,
            (true, false) => Transport::Https1,
            (true, true) => Transport::Http2,
            (false, true) => {
                bail!("HTTP/2 is only spoken over TLS here (as browsers do): use an https:// URL")
            }
        })
    }
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
    /// The tasks driving the HTTP/2 connections, ended with the streams.
    drivers: Mutex<JoinSet<()>>,
}

impl Shared {
    fn result(&self) -> std::sync::MutexGuard<'_, WorkerResult> {
        self.result.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn drivers(&self) -> std::sync::MutexGuard<'_, JoinSet<()>> {
        self.drivers.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// How this process reaches the server: its TLS client, and its HTTP/2 connections,
/// each made once by the first stream that needs it (a failure is kept, so the other
/// streams of that connection fail with it rather than each trying again).
struct Dialer {
    tls: Option<crate::tls::Client>,
    h2: Vec<OnceCell<Result<h2::client::SendRequest<Bytes>, Failure>>>,
}

impl Dialer {
    fn new(cfg: &LoadConfig) -> anyhow::Result<Dialer> {
        let alpn: &[u8] = match cfg.transport {
            Transport::Http1 => b"",
            Transport::Https1 => b"http/1.1",
            Transport::Http2 => b"h2",
        };
        let tls = match cfg.transport {
            Transport::Http1 => None,
            Transport::Https1 | Transport::Http2 => {
                // Every target is on this machine, under one name.
                Some(crate::tls::Client::new(&cfg.targets[0].hostname, alpn)?)
            }
        };
        let connections = match cfg.transport {
            Transport::Http2 => cfg.connections.max(1),
            Transport::Http1 | Transport::Https1 => 0,
        };
        Ok(Dialer {
            tls,
            h2: (0..connections).map(|_| OnceCell::new()).collect(),
        })
    }
}

/// A load process's streams, opened and running.
pub struct Load {
    shared: Arc<Shared>,
    tasks: JoinSet<()>,
}

impl Load {
    /// Opens the streams at the configured rate and returns when each one is open or has
    /// failed, or when `settle_limit` has passed since the first connect. Fails only if
    /// TLS cannot be set up.
    pub async fn open(cfg: LoadConfig, settle_limit: Duration) -> anyhow::Result<Load> {
        let dialer = Arc::new(Dialer::new(&cfg)?);
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
            drivers: Mutex::new(JoinSet::new()),
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
            tasks.spawn(stream(
                Arc::clone(&cfg),
                Arc::clone(&dialer),
                Arc::clone(&shared),
                i,
            ));
        }
        let deadline = start + settle_limit;
        while shared.settled.load(Ordering::Relaxed) < cfg.streams && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        shared.result().setup_secs = start.elapsed().as_secs_f64();
        Ok(Load { shared, tasks })
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
        let mut drivers = std::mem::take(&mut *self.shared.drivers());
        drivers.shutdown().await;
        let mut r = self.shared.result().clone();
        r.open_at_window_end = open;
        r
    }
}

#[derive(Debug, Clone)]
enum Failure {
    Connect(String),
    Status(String),
    Timeout(String),
    Reset(String),
    Closed,
    Protocol(String),
}

/// Stream `local` of this process from connect to close; figures go into `shared` as
/// they come, because the task is aborted when the run stops.
async fn stream(cfg: Arc<LoadConfig>, dialer: Arc<Dialer>, shared: Arc<Shared>, local: u64) {
    let t0 = Instant::now();
    let established = AtomicBool::new(false);
    let outcome = match cfg.transport {
        Transport::Http2 => h2_stream(&cfg, &dialer, &shared, local, t0, &established).await,
        Transport::Http1 | Transport::Https1 => {
            let index = cfg.first_index + local * cfg.index_step;
            http1_stream(&cfg, &dialer, &shared, index, t0, &established).await
        }
    };
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

/// The target of stream (or HTTP/2 connection) `index` of the run.
fn target_of(cfg: &LoadConfig, index: u64) -> &Target {
    &cfg.targets[(index % cfg.targets.len() as u64) as usize]
}

/// A TCP connection to its target from the source address of `index` (a stream's
/// over HTTP/1.1, a connection's over HTTP/2).
async fn connect_tcp(cfg: &LoadConfig, index: u64) -> Result<TcpStream, Failure> {
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
    let addr = target_of(cfg, index).addr;
    let tcp = tokio::time::timeout(cfg.connect_timeout, socket.connect(addr))
        .await
        .map_err(|_| Failure::Timeout("TCP connect".into()))?
        .map_err(|e| Failure::Connect(e.to_string()))?;
    tcp.set_nodelay(true)
        .map_err(|e| Failure::Connect(e.to_string()))?;
    Ok(tcp)
}

/// The TLS handshake on `tcp`, within the connect timeout.
async fn tls_handshake(
    cfg: &LoadConfig,
    tls: &crate::tls::Client,
    tcp: TcpStream,
) -> Result<tokio_rustls::client::TlsStream<TcpStream>, Failure> {
    tokio::time::timeout(cfg.connect_timeout, tls.handshake(tcp))
        .await
        .map_err(|_| Failure::Timeout("TLS handshake".into()))?
        .map_err(|e| Failure::Connect(format!("TLS: {e}")))
}

/// Counts a stream as established once its response headers said 200.
fn established_now(shared: &Shared, established: &AtomicBool, t0: Instant) {
    let headers_us = t0.elapsed().as_micros() as u64;
    {
        let mut r = shared.result();
        r.established += 1;
        r.time_to_headers.record(headers_us);
    }
    shared.open.fetch_add(1, Ordering::Relaxed);
    shared.settled.fetch_add(1, Ordering::Relaxed);
    established.store(true, Ordering::Relaxed);
}

/// One stream on a connection of its own: plain, or TLS with ALPN `http/1.1`.
async fn http1_stream(
    cfg: &LoadConfig,
    dialer: &Dialer,
    shared: &Shared,
    index: u64,
    t0: Instant,
    established: &AtomicBool,
) -> Result<(), Failure> {
    let tcp = connect_tcp(cfg, index).await?;
    let target = target_of(cfg, index);
    match &dialer.tls {
        None => http1_on(cfg, target, index, shared, tcp, t0, established).await,
        Some(tls) => {
            let io = tls_handshake(cfg, tls, tcp).await?;
            http1_on(cfg, target, index, shared, io, t0, established).await
        }
    }
}

/// The request of stream `index` and its response on a fresh HTTP/1.1 connection over
/// `io` to `target`.
async fn http1_on<I>(
    cfg: &LoadConfig,
    target: &Target,
    index: u64,
    shared: &Shared,
    io: I,
    t0: Instant,
    established: &AtomicBool,
) -> Result<(), Failure>
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .map_err(|e| Failure::Connect(e.to_string()))?;
    shared.result().connections += 1;
    let mut conn = std::pin::pin!(conn);
    let request = http::Request::get(target.path_for(index, cfg.channels).as_ref())
        .header(http::header::HOST, target.host.as_str())
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
        established_now(shared, established, t0);
        read_events(
            shared,
            cfg.kind,
            BodyDataStream::new(response.into_body()),
            t0,
        )
        .await
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

/// Stream `local` of this process over HTTP/2, on connection `local % connections`.
async fn h2_stream(
    cfg: &LoadConfig,
    dialer: &Dialer,
    shared: &Shared,
    local: u64,
    t0: Instant,
    established: &AtomicBool,
) -> Result<(), Failure> {
    let slot = (local % dialer.h2.len() as u64) as usize;
    let sender = dialer.h2[slot]
        .get_or_init(|| h2_connect(cfg, dialer, shared, slot as u64))
        .await
        .clone()?;
    // One target over HTTP/2 (`LoadConfig::transport_for`).
    let target = &cfg.targets[0];
    let index = cfg.first_index + local * cfg.index_step;
    let path = target.path_for(index, cfg.channels);
    let request = http::Request::get(format!("https://{}{path}", target.host))
        .header(http::header::ACCEPT, "text/event-stream")
        .body(())
        .map_err(|e| Failure::Connect(e.to_string()))?;
    let response = tokio::time::timeout(cfg.connect_timeout, async {
        let mut sender = sender
            .ready()
            .await
            .map_err(|e| Failure::Reset(e.to_string()))?;
        let (response, _) = sender
            .send_request(request, true)
            .map_err(|e| Failure::Reset(e.to_string()))?;
        response.await.map_err(|e| Failure::Reset(e.to_string()))
    })
    .await
    .map_err(|_| {
        // A stream past the server's SETTINGS_MAX_CONCURRENT_STREAMS waits here.
        Failure::Timeout(
            "response headers (over HTTP/2: more streams per connection than the server allows?)"
                .into(),
        )
    })??;
    if response.status() != http::StatusCode::OK {
        return Err(Failure::Status(response.status().to_string()));
    }
    established_now(shared, established, t0);
    let body = futures_util::stream::unfold(response.into_body(), |mut body| async move {
        let data = body.data().await?;
        if let Ok(bytes) = &data {
            // Read, so the server may send as much again on this stream (and on the
            // connection, whose window this also refills).
            let _ = body.flow_control().release_capacity(bytes.len());
        }
        Some((data, body))
    });
    read_events(shared, cfg.kind, body, t0).await
}

/// Connection `slot` of this process: TCP from its source address, TLS with ALPN
/// `h2`, the HTTP/2 handshake, and a task that drives it.
async fn h2_connect(
    cfg: &LoadConfig,
    dialer: &Dialer,
    shared: &Shared,
    slot: u64,
) -> Result<h2::client::SendRequest<Bytes>, Failure> {
    let tls = dialer
        .tls
        .as_ref()
        .ok_or_else(|| Failure::Connect("HTTP/2 without TLS".into()))?;
    let tcp = connect_tcp(cfg, cfg.first_index + slot * cfg.index_step).await?;
    let io = tls_handshake(cfg, tls, tcp).await?;
    if io.get_ref().1.alpn_protocol() != Some(b"h2") {
        return Err(Failure::Protocol(
            "the server did not choose h2 by ALPN".into(),
        ));
    }
    let handshake = h2::client::Builder::new()
        .initial_window_size(cfg.h2_stream_window)
        // As browsers do, the connection's window is larger than a stream's, so the
        // hundreds of streams sharing it never wait on one another's reads.
        .initial_connection_window_size(cfg.h2_stream_window.max(1 << 20))
        .handshake::<_, Bytes>(io);
    let (sender, connection) = tokio::time::timeout(cfg.connect_timeout, handshake)
        .await
        .map_err(|_| Failure::Timeout("HTTP/2 handshake".into()))?
        .map_err(|e| Failure::Connect(format!("HTTP/2 handshake: {e}")))?;
    // A connection that fails shows in each of its streams, which get the error.
    shared.drivers().spawn(async move {
        let _ = connection.await;
    });
    shared.result().connections += 1;
    Ok(sender)
}

/// What one event says: the number to check and when it was sent, or a reset.
enum Seen {
    Number {
        num: u64,
        sent_at_us: u64,
    },
    /// An event of a channel stream: its id's epoch and seq, its channel and `n`.
    Channel {
        epoch: String,
        seq: u64,
        channel: String,
        n: u64,
        sent_at_us: u64,
    },
    Reset {
        value: u64,
    },
    /// A channel stream's `reset`: the channels whose counts start again.
    ChannelReset {
        channels: Vec<String>,
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
        (StreamKind::Shared | StreamKind::Channels, shared::events::HEARTBEAT) => Seen::Skip,
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
        (StreamKind::Channels, shared::events::RESET) => {
            let reset: shared::channels::ChannelReset =
                serde_json::from_str(&event.data).map_err(|e| bad("reset", e))?;
            Seen::ChannelReset {
                channels: reset.channels,
            }
        }
        (StreamKind::Channels, _) => {
            let id = shared::channels::EventId::parse(&event.id).map_err(|_| {
                Failure::Protocol(format!(
                    "an event id that is not <epoch>-<seq>: {:?}",
                    event.id
                ))
            })?;
            let ev: shared::channels::ChannelEvent<'_> =
                serde_json::from_str(&event.data).map_err(|e| bad("channel event", e))?;
            let n = if ev.channel == shared::channels::COUNTER {
                serde_json::from_str::<shared::channels::CounterData>(ev.data.get())
                    .map_err(|e| bad("counter", e))?
                    .value
            } else {
                serde_json::from_str::<crate::publish::Numbered>(ev.data.get())
                    .map_err(|e| bad("numbered (sse-bench's own publishes)", e))?
                    .n
            };
            Seen::Channel {
                epoch: id.epoch,
                seq: id.seq,
                channel: ev.channel.into_owned(),
                n,
                sent_at_us: ev.sent_at_us,
            }
        }
    })
}

/// The gap and repeat check of one stream, by what it carries.
enum Check {
    Seq(crate::stats::SeqCheck),
    Channels(crate::stats::ChannelCheck),
}

impl Check {
    fn new(kind: StreamKind) -> Check {
        match kind {
            StreamKind::Counter => Check::Seq(crate::stats::SeqCheck::new()),
            StreamKind::Shared => Check::Seq(crate::stats::SeqCheck::from_first()),
            StreamKind::Channels => Check::Channels(crate::stats::ChannelCheck::new()),
        }
    }

    fn counts(&self) -> (u64, u64) {
        match self {
            Check::Seq(s) => (s.gaps, s.repeats),
            Check::Channels(c) => (c.gaps, c.repeats),
        }
    }
}

/// Reads a stream's body (its bytes as they arrive, whatever carried them) as SSE and
/// counts its events.
async fn read_events<B, E>(
    shared: &Shared,
    kind: StreamKind,
    body: B,
    t0: Instant,
) -> Result<(), Failure>
where
    B: Stream<Item = Result<Bytes, E>>,
    E: std::fmt::Display,
{
    let mut events = std::pin::pin!(body.eventsource());
    let mut check = Check::new(kind);
    let mut first = true;
    while let Some(event) = events.next().await {
        let event = event.map_err(|e| match e {
            eventsource_stream::EventStreamError::Transport(e) => Failure::Reset(e.to_string()),
            other => Failure::Protocol(other.to_string()),
        })?;
        if event.event == shared::events::END {
            return Ok(());
        }
        let (gaps, repeats) = check.counts();
        let sent_at_us = match (seen(kind, &event)?, &mut check) {
            (Seen::Number { num, sent_at_us }, Check::Seq(seq)) => {
                seq.observe(num);
                sent_at_us
            }
            (
                Seen::Channel {
                    epoch,
                    seq,
                    channel,
                    n,
                    sent_at_us,
                },
                Check::Channels(c),
            ) => {
                c.observe(&epoch, seq, &channel, n);
                sent_at_us
            }
            (Seen::Reset { value }, Check::Seq(seq)) => {
                seq.restart_at(value);
                shared.result().resets += 1;
                continue;
            }
            (Seen::ChannelReset { channels }, Check::Channels(c)) => {
                c.reset(channels.iter().map(String::as_str));
                shared.result().resets += 1;
                continue;
            }
            (Seen::Skip, _) => continue,
            // `seen` reads each kind into its own check's events.
            _ => {
                return Err(Failure::Protocol(
                    "an event of another kind of stream".into(),
                ))
            }
        };
        let now = unix_us();
        let (gaps_now, repeats_now) = check.counts();
        let in_window = now >= shared.window_start.load(Ordering::Relaxed)
            && now < shared.window_end.load(Ordering::Relaxed);
        let mut r = shared.result();
        r.events_total += 1;
        r.gaps += gaps_now - gaps;
        r.repeats += repeats_now - repeats;
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
        assert!(!t.tls);
        let t = Target::parse("http://localhost:8080").unwrap();
        assert_eq!((t.addr.port(), t.path_and_query.as_str()), (8080, "/"));
        assert!(Target::parse("http://127.9.8.7/").is_ok());
    }

    #[test]
    fn an_index_in_the_url_is_each_streams_channel() {
        let t = Target::parse("http://127.0.0.1:1/api/events?channel=bench/{i}").unwrap();
        assert_eq!(t.path_for(1234, 1000), "/api/events?channel=bench/234");
        assert_eq!(t.path_for(7, 0), "/api/events?channel=bench/7");
        let plain = Target::parse("http://127.0.0.1:1/api/events?channel=a").unwrap();
        assert_eq!(plain.path_for(5, 3), "/api/events?channel=a");
    }

    #[test]
    fn https_targets_take_tls_and_http2_only_over_it() {
        let t = Target::parse("https://localhost/api/counter").unwrap();
        assert!(t.tls);
        assert_eq!((t.addr.port(), t.hostname.as_str()), (443, "localhost"));
        assert_eq!(t.host, "localhost:443");
        let plain = Target::parse("http://127.0.0.1:1/").unwrap();
        let one = |t: &Target| vec![t.clone()];
        assert_eq!(
            LoadConfig::transport_for(&one(&plain), false).unwrap(),
            Transport::Http1
        );
        assert_eq!(
            LoadConfig::transport_for(&one(&t), false).unwrap(),
            Transport::Https1
        );
        assert_eq!(
            LoadConfig::transport_for(&one(&t), true).unwrap(),
            Transport::Http2
        );
        let err = LoadConfig::transport_for(&one(&plain), true).unwrap_err();
        assert!(err.to_string().contains("https://"), "{err}");
    }

    #[test]
    fn several_targets_share_a_scheme_and_take_http1_only() {
        let a = Target::parse("http://127.0.0.1:1/api/shared").unwrap();
        let b = Target::parse("http://127.0.0.1:2/api/shared").unwrap();
        let tls = Target::parse("https://127.0.0.1:3/api/shared").unwrap();
        assert_eq!(
            LoadConfig::transport_for(&[a.clone(), b], false).unwrap(),
            Transport::Http1
        );
        let mixed = LoadConfig::transport_for(&[a, tls.clone()], false).unwrap_err();
        assert!(mixed.to_string().contains("all be http://"), "{mixed}");
        let h2 = LoadConfig::transport_for(&[tls.clone(), tls], true).unwrap_err();
        assert!(h2.to_string().contains("one URL"), "{h2}");
        assert!(LoadConfig::transport_for(&[], false).is_err());
    }

    #[test]
    fn anything_off_the_machine_is_refused() {
        for url in [
            "http://10.0.0.1:3000/",
            "http://192.168.1.2/",
            "http://8.8.8.8/",
            "http://example.com/",
            "https://10.1.2.3/",
            "https://example.com/",
            "ftp://127.0.0.1/",
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
