//! Shared helpers of the integration tests: a server on `127.0.0.1:0`, its metrics, an
//! SSE client (reqwest + eventsource-stream) and a raw TCP client for exact bytes.
//!
//! Every network await in here sits inside [`within`], so a hang fails the test with a
//! message saying what hung instead of blocking the suite.

// Each test binary compiles this module and uses only part of it.
#![allow(dead_code)]

use eventsource_stream::{Event, EventStreamError, Eventsource as _};
use futures_util::{Stream, StreamExt as _};
use reqwest::header::HeaderMap;
use reqwest::StatusCode;
use server::Config;
use shared::{End, Tick};
use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// How long any single network step may take before the test fails. Generous: it only
/// catches hangs, it never measures speed.
pub const TIMEOUT: Duration = Duration::from_secs(5);

/// Awaits `fut`, failing the test with `what` if it takes longer than [`TIMEOUT`].
pub async fn within<F: Future>(what: &str, fut: F) -> F::Output {
    within_for(TIMEOUT, what, fut).await
}

/// [`within`] with a chosen limit.
pub async fn within_for<F: Future>(limit: Duration, what: &str, fut: F) -> F::Output {
    match tokio::time::timeout(limit, fut).await {
        Ok(out) => out,
        Err(_) => panic!("timed out after {limit:?}: {what}"),
    }
}

/// A [`Config`] for tests: no page directory, everything else as the defaults.
pub fn config() -> Config {
    Config {
        static_dir: std::env::temp_dir().join("sse-counter-tests-no-such-dir"),
        ..Config::default()
    }
}

/// A server running [`server::run`] in a task of the test's runtime.
pub struct TestServer {
    pub addr: SocketAddr,
    /// `http://127.0.0.1:PORT`, no trailing slash.
    pub base: String,
    /// Resolves the shutdown future given to `run`. Dropping it shuts the server down too.
    pub shutdown: Option<oneshot::Sender<()>>,
    pub handle: JoinHandle<std::io::Result<()>>,
    pub client: reqwest::Client,
}

/// Binds `127.0.0.1:0` and spawns `server::run` on it with `config`.
pub async fn spawn(config: Config) -> TestServer {
    let listener = within("binding 127.0.0.1:0", TcpListener::bind("127.0.0.1:0"))
        .await
        .expect("bind 127.0.0.1:0");
    let addr = listener.local_addr().expect("local_addr");
    let (tx, rx) = oneshot::channel::<()>();
    let shutdown = async move {
        // A dropped sender shuts down as well, so a forgotten server does not linger.
        let _ = rx.await;
    };
    let handle = tokio::spawn(server::run(listener, config, shutdown));
    TestServer {
        addr,
        base: format!("http://{addr}"),
        shutdown: Some(tx),
        handle,
        client: client(),
    }
}

/// A reqwest client that ignores proxy settings of the environment.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("build reqwest client")
}

impl TestServer {
    /// The absolute URL of `path_and_query`, which starts with `/`.
    pub fn url(&self, path_and_query: &str) -> String {
        format!("{}{path_and_query}", self.base)
    }

    /// The value a same-origin page sends as `Origin`, and the `Host` reqwest sends.
    pub fn origin(&self) -> String {
        self.base.clone()
    }

    /// `GET path` with reqwest; the response head only.
    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.get_with(path, &[]).await
    }

    /// `GET path` with extra headers; the response head only.
    pub async fn get_with(&self, path: &str, headers: &[(&str, &str)]) -> reqwest::Response {
        let mut req = self.client.get(self.url(path));
        for (name, value) in headers {
            req = req.header(*name, *value);
        }
        within(&format!("response head of GET {path}"), req.send())
            .await
            .unwrap_or_else(|e| panic!("GET {path}: {e}"))
    }

    /// Sends a request and reads its whole (finite) body.
    pub async fn send(&self, req: reqwest::RequestBuilder, what: &str) -> Reply {
        let res = within(&format!("response head of {what}"), req.send())
            .await
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        Reply::read(res, what).await
    }

    /// `GET path` and its whole (finite) body.
    pub async fn fetch(&self, path: &str) -> Reply {
        self.send(self.client.get(self.url(path)), &format!("GET {path}"))
            .await
    }

    /// Opens an SSE stream with reqwest and parses it with eventsource-stream.
    pub async fn sse(&self, path: &str, headers: &[(&str, &str)]) -> Sse {
        Sse::new(self.get_with(path, headers).await)
    }

    /// A raw TCP connection to the server.
    pub async fn raw(&self) -> RawConn {
        RawConn::connect(self.addr).await
    }

    /// `/metrics`, parsed.
    pub async fn metrics(&self) -> Metrics {
        let reply = self.fetch("/metrics").await;
        assert_eq!(
            reply.status,
            StatusCode::OK,
            "GET /metrics: {}",
            reply.text()
        );
        Metrics::parse(&reply.text())
    }

    /// One sample of `/metrics`, e.g. `sse_disconnects_total{reason="client"}`.
    pub async fn metric(&self, key: &str) -> f64 {
        self.metrics().await.get(key)
    }

    /// Polls `/metrics` until `key` equals `value`; fails after [`TIMEOUT`]. Waiting for
    /// a condition the server reaches on its own (a dropped client noticed), not a sleep
    /// standing in for an event the test could await.
    pub async fn wait_for_metric(&self, key: &str, value: f64) {
        let what = format!("waiting for {key} == {value}");
        let mut last = f64::NAN;
        let reached = tokio::time::timeout(TIMEOUT, async {
            loop {
                last = self.metric(key).await;
                if last == value {
                    return;
                }
                // Yield to the server between polls.
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await;
        assert!(
            reached.is_ok(),
            "timed out after {TIMEOUT:?}: {what} (last seen {last})"
        );
    }

    /// Resolves the shutdown future and waits for `run` to return, within `limit`.
    pub async fn stop_within(&mut self, limit: Duration) -> std::io::Result<()> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        within_for(
            limit,
            "server::run to return after shutdown",
            &mut self.handle,
        )
        .await
        .expect("the server task panicked")
    }
}

/// A finished response: status, headers and the whole body.
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
}

impl Reply {
    pub async fn read(res: reqwest::Response, what: &str) -> Reply {
        let status = res.status();
        let headers = res.headers().clone();
        let body = within(&format!("body of {what}"), res.bytes())
            .await
            .unwrap_or_else(|e| panic!("body of {what}: {e}"))
            .to_vec();
        Reply {
            status,
            headers,
            body,
        }
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(name)
            .map(|v| v.to_str().expect("ascii header"))
    }

    /// The body as the JSON error shape, checking the content type on the way.
    pub fn error_body(&self) -> shared::ErrorBody {
        assert_eq!(
            self.header("content-type"),
            Some("application/json"),
            "error answers are JSON: {}",
            self.text()
        );
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("error body {:?} is not an ErrorBody: {e}", self.text()))
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("body {:?} is not JSON: {e}", self.text()))
    }
}

/// The samples of a Prometheus text exposition, keyed by name and labels as written.
#[derive(Debug)]
pub struct Metrics {
    pub samples: HashMap<String, f64>,
    pub text: String,
}

impl Metrics {
    pub fn parse(text: &str) -> Metrics {
        let samples = text
            .lines()
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .map(|l| {
                let (key, value) = l.rsplit_once(' ').expect("`name value` sample line");
                let value = value
                    .parse()
                    .unwrap_or_else(|e| panic!("sample {l:?}: {e}"));
                (key.to_owned(), value)
            })
            .collect();
        Metrics {
            samples,
            text: text.to_owned(),
        }
    }

    pub fn get(&self, key: &str) -> f64 {
        *self
            .samples
            .get(key)
            .unwrap_or_else(|| panic!("no sample {key} in:\n{}", self.text))
    }
}

/// The boxed event stream of an [`Sse`] client.
type Events = Pin<Box<dyn Stream<Item = Result<Event, EventStreamError<reqwest::Error>>> + Send>>;

/// An SSE client: reqwest for HTTP, eventsource-stream for the event-stream format.
pub struct Sse {
    pub status: StatusCode,
    pub headers: HeaderMap,
    events: Events,
}

/// How an SSE stream ended, as seen by the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Finish {
    /// The body ended cleanly.
    Closed,
    /// The body failed (the connection was aborted).
    Error(String),
}

impl Sse {
    pub fn new(res: reqwest::Response) -> Sse {
        Sse {
            status: res.status(),
            headers: res.headers().clone(),
            events: Box::pin(res.bytes_stream().eventsource()),
        }
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(name)
            .map(|v| v.to_str().expect("ascii header"))
    }

    /// The next event, `Err(Finish)` when the body ended instead.
    pub async fn next(&mut self) -> Result<Event, Finish> {
        match within("the next SSE event", self.events.next()).await {
            Some(Ok(event)) => Ok(event),
            Some(Err(e)) => Err(Finish::Error(e.to_string())),
            None => Err(Finish::Closed),
        }
    }

    /// The next event, which must be a tick: its id and payload.
    pub async fn tick(&mut self) -> Tick {
        let event = self.next().await.expect("a tick, not the end of the body");
        as_tick(&event)
    }

    /// Reads ticks up to the `end` event: the ticks, the end payload, and how the body
    /// ended after it.
    pub async fn until_end(&mut self) -> (Vec<Tick>, End, Finish) {
        let mut ticks = Vec::new();
        loop {
            let event = self.next().await.unwrap_or_else(|finish| {
                panic!("the body ended ({finish:?}) before `end`, after {ticks:?}")
            });
            if event.event == shared::events::END {
                let end: End = serde_json::from_str(&event.data)
                    .unwrap_or_else(|e| panic!("end data {:?}: {e}", event.data));
                let finish = self.next().await.expect_err("nothing after `end`");
                return (ticks, end, finish);
            }
            ticks.push(as_tick(&event));
        }
    }

    /// Reads ticks until the body ends without an `end` event.
    pub async fn until_finish(&mut self) -> (Vec<Tick>, Finish) {
        let mut ticks = Vec::new();
        loop {
            match self.next().await {
                Ok(event) => {
                    assert_ne!(
                        event.event,
                        shared::events::END,
                        "unexpected `end` after {ticks:?}"
                    );
                    ticks.push(as_tick(&event));
                }
                Err(finish) => return (ticks, finish),
            }
        }
    }
}

/// Checks that `event` is an unnamed tick whose id is its `num`, and returns it.
pub fn as_tick(event: &Event) -> Tick {
    assert_eq!(
        event.event, "message",
        "ticks are unnamed events: {event:?}"
    );
    let tick: Tick = serde_json::from_str(&event.data)
        .unwrap_or_else(|e| panic!("tick data {:?}: {e}", event.data));
    assert_eq!(event.id, tick.num.to_string(), "id is num: {event:?}");
    tick
}

/// The test's wall clock in microseconds since the UNIX epoch.
pub fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_micros() as u64
}

/// Checks `sent_at_us` values: within a few seconds of `[since_us, now]` and never
/// decreasing.
pub fn assert_plausible_times(times: &[u64], since_us: u64) {
    let slack = 5_000_000;
    let until = now_us();
    for t in times {
        assert!(
            *t + slack >= since_us && *t <= until + slack,
            "sent_at_us {t} is not within a few seconds of the test's clock [{since_us}, {until}]"
        );
    }
    assert!(
        times.windows(2).all(|w| w[0] <= w[1]),
        "sent_at_us decreases: {times:?}"
    );
}

/// A response head read by [`RawConn`].
#[derive(Debug)]
pub struct Head {
    pub status: u16,
    /// Names lowercased, values as sent (lossy UTF-8).
    pub headers: Vec<(String, String)>,
    pub raw: String,
}

impl Head {
    pub fn header<'a>(&'a self, name: &'a str) -> Option<&'a str> {
        let mut all = self.all(name);
        let first = all.next();
        assert!(
            all.next().is_none(),
            "{name} given more than once in\n{}",
            self.raw
        );
        first
    }

    pub fn all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.headers
            .iter()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn is_chunked(&self) -> bool {
        self.all("transfer-encoding")
            .any(|v| v.eq_ignore_ascii_case("chunked"))
    }
}

/// How a chunked body ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BodyEnd {
    /// The terminating `0\r\n\r\n` chunk arrived.
    Terminated,
    /// The connection closed or failed before it; the text says how.
    Aborted(String),
}

/// A plain HTTP/1.1 client over one TCP connection, for exact bytes, header timing and
/// requests that reqwest would normalise or refuse to send.
pub struct RawConn {
    stream: TcpStream,
    /// Bytes read from the socket and not yet parsed.
    buf: Vec<u8>,
    /// Body bytes decoded from chunks and not yet handed out as SSE frames.
    body: Vec<u8>,
    /// Set once the terminating chunk or the end of the connection has been seen.
    end: Option<BodyEnd>,
}

impl RawConn {
    pub async fn connect(addr: SocketAddr) -> RawConn {
        let stream = within(&format!("connecting to {addr}"), TcpStream::connect(addr))
            .await
            .unwrap_or_else(|e| panic!("connect to {addr}: {e}"));
        RawConn {
            stream,
            buf: Vec::new(),
            body: Vec::new(),
            end: None,
        }
    }

    /// Writes `bytes` as they are.
    pub async fn send(&mut self, bytes: &[u8]) {
        within("writing the request", self.stream.write_all(bytes))
            .await
            .expect("write request");
    }

    /// Sends `GET target HTTP/1.1` with `Host` and the given extra header lines (raw
    /// bytes, so a test can send what is not valid UTF-8).
    pub async fn get(&mut self, target: &str, extra: &[(&str, &[u8])]) {
        let host = self.stream.peer_addr().expect("peer_addr");
        self.request("GET", target, &host.to_string(), extra).await;
    }

    pub async fn request(
        &mut self,
        method: &str,
        target: &str,
        host: &str,
        extra: &[(&str, &[u8])],
    ) {
        let mut req = format!("{method} {target} HTTP/1.1\r\nHost: {host}\r\n").into_bytes();
        for (name, value) in extra {
            req.extend_from_slice(name.as_bytes());
            req.extend_from_slice(b": ");
            req.extend_from_slice(value);
            req.extend_from_slice(b"\r\n");
        }
        req.extend_from_slice(b"\r\n");
        self.send(&req).await;
    }

    /// Reads more bytes into `buf`: `Ok(0)` at the end of the connection.
    async fn fill(&mut self, what: &str) -> std::io::Result<usize> {
        let mut chunk = [0u8; 8192];
        let n = within(what, self.stream.read(&mut chunk)).await?;
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(n)
    }

    /// Reads the status line and headers.
    pub async fn head(&mut self) -> Head {
        loop {
            if let Some(at) = find(&self.buf, b"\r\n\r\n") {
                let raw = String::from_utf8_lossy(&self.buf[..at]).into_owned();
                self.buf.drain(..at + 4);
                let mut lines = raw.split("\r\n");
                let status_line = lines.next().expect("status line");
                let status = status_line
                    .split(' ')
                    .nth(1)
                    .and_then(|s| s.parse().ok())
                    .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
                let headers = lines
                    .map(|l| {
                        let (n, v) = l.split_once(':').expect("header line");
                        (n.to_ascii_lowercase(), v.trim().to_owned())
                    })
                    .collect();
                return Head {
                    status,
                    headers,
                    raw,
                };
            }
            let n = self
                .fill("the response head")
                .await
                .expect("read the response head");
            assert!(
                n > 0,
                "connection closed before the response head: {:?}",
                self.buf
            );
        }
    }

    /// The next chunk of a chunked body: `Ok(Some(data))`, `Ok(None)` at the terminating
    /// chunk, `Err` when the connection ends or fails first.
    pub async fn chunk(&mut self) -> Result<Option<Vec<u8>>, String> {
        loop {
            if let Some(at) = find(&self.buf, b"\r\n") {
                let size_line = String::from_utf8_lossy(&self.buf[..at]).into_owned();
                let size = usize::from_str_radix(size_line.split(';').next().unwrap_or(""), 16)
                    .unwrap_or_else(|e| panic!("bad chunk size line {size_line:?}: {e}"));
                let need = at + 2 + size + 2;
                if self.buf.len() >= need {
                    assert_eq!(
                        &self.buf[need - 2..need],
                        b"\r\n",
                        "chunk not followed by CRLF"
                    );
                    let data = self.buf[at + 2..at + 2 + size].to_vec();
                    self.buf.drain(..need);
                    // The terminating chunk is `0\r\n\r\n` (no trailers are expected).
                    return Ok((size > 0).then_some(data));
                }
            }
            match self.fill("the next chunk of the body").await {
                Ok(0) => {
                    return Err(format!(
                        "connection closed mid-body, {} bytes pending",
                        self.buf.len()
                    ))
                }
                Ok(_) => {}
                Err(e) => return Err(format!("read failed: {e}")),
            }
        }
    }

    /// The rest of a chunked body and how it ended.
    pub async fn chunked_body(&mut self) -> (Vec<u8>, BodyEnd) {
        let mut body = std::mem::take(&mut self.body);
        loop {
            match self.chunk().await {
                Ok(Some(data)) => body.extend_from_slice(&data),
                Ok(None) => return (body, BodyEnd::Terminated),
                Err(e) => return (body, BodyEnd::Aborted(e)),
            }
        }
    }

    /// The next SSE frame of a chunked event stream (text up to and including the blank
    /// line), or how the body ended instead.
    pub async fn frame(&mut self) -> Result<String, BodyEnd> {
        loop {
            if let Some(at) = find(&self.body, b"\n\n") {
                let frame: Vec<u8> = self.body.drain(..at + 2).collect();
                return Ok(String::from_utf8(frame).expect("frames are UTF-8"));
            }
            if let Some(end) = &self.end {
                return Err(end.clone());
            }
            match self.chunk().await {
                Ok(Some(data)) => self.body.extend_from_slice(&data),
                Ok(None) => self.end = Some(BodyEnd::Terminated),
                Err(e) => self.end = Some(BodyEnd::Aborted(e)),
            }
        }
    }

    /// The whole body of a response with `head`: chunked, by `Content-Length`, or up to
    /// the end of the connection.
    pub async fn body(&mut self, head: &Head) -> Vec<u8> {
        if head.status == 204 || head.status == 304 {
            return Vec::new();
        }
        if head.is_chunked() {
            let (body, end) = self.chunked_body().await;
            assert_eq!(end, BodyEnd::Terminated, "body cut short: {body:?}");
            return body;
        }
        if let Some(len) = head.header("content-length") {
            let len: usize = len.parse().expect("content-length");
            while self.buf.len() < len {
                let n = self.fill("the response body").await.expect("read body");
                assert!(n > 0, "connection closed inside the body");
            }
            return self.buf.drain(..len).collect();
        }
        while self.fill("the response body").await.expect("read body") > 0 {}
        std::mem::take(&mut self.buf)
    }

    /// Waits for the server to close the connection; true if it did so cleanly.
    pub async fn closed(&mut self) -> bool {
        loop {
            match self.fill("the server to close the connection").await {
                Ok(0) => return true,
                Ok(_) => {}
                Err(_) => return false,
            }
        }
    }
}

/// One request over a fresh raw connection with `Connection: close`: head and body.
pub async fn raw_get(addr: SocketAddr, target: &str, extra: &[(&str, &[u8])]) -> (Head, Vec<u8>) {
    let mut conn = RawConn::connect(addr).await;
    let mut headers = extra.to_vec();
    headers.push(("Connection", b"close"));
    conn.get(target, &headers).await;
    let head = conn.head().await;
    let body = conn.body(&head).await;
    (head, body)
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// A directory under the system temp dir, removed on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        use std::sync::atomic::{AtomicU32, Ordering};
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir =
            std::env::temp_dir().join(format!("sse-counter-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create temp dir");
        TempDir(dir)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
