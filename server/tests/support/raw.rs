//! A raw HTTP/1.1 client, for exact bytes, header timing, requests that reqwest would
//! normalise or refuse to send, and clients that misbehave (stop reading, hang up at
//! odd moments). It assumes a byte stream and nothing more: [`RawConn::dial`] opens
//! plain TCP, and [`RawConn::over`] takes any other stream (a TLS one, say).

use super::{within_for, TIMEOUT};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use tokio::net::{TcpSocket, TcpStream};

/// How a [`RawConn`] connects.
#[derive(Debug, Clone, Copy)]
pub struct Dial {
    /// How long any one step on the connection may take: connecting, a write, a read.
    pub limit: Duration,
    /// `SO_RCVBUF` of the client's socket, set before connecting (`None`: the OS
    /// default). A small one makes a client that stops reading push back at once.
    pub recv_buffer: Option<u32>,
}

impl Default for Dial {
    fn default() -> Self {
        Dial {
            limit: TIMEOUT,
            recv_buffer: None,
        }
    }
}

/// The receive buffer of a client that stops reading: small, so that the server's
/// socket fills within moments instead of after megabytes of ticks.
pub const STALLED_RECV_BUFFER: u32 = 4096;

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

/// A whole answer read by [`RawConn::exchange`], as lossy text, framing included.
#[derive(Debug)]
pub struct Answer {
    pub text: String,
}

impl Answer {
    /// The first line, e.g. `HTTP/1.1 200 OK`.
    pub fn status_line(&self) -> &str {
        self.text.split_once("\r\n").map_or(&self.text, |(l, _)| l)
    }

    /// Everything after the status line: the headers, then the body.
    pub fn rest(&self) -> &str {
        self.text.split_once("\r\n").map_or("", |(_, r)| r)
    }
}

/// A plain HTTP/1.1 client over one connection.
pub struct RawConn<S = TcpStream> {
    stream: S,
    /// The `Host` that [`RawConn::get`] sends.
    host: String,
    /// How long any one step may take.
    limit: Duration,
    /// Bytes read from the socket and not yet parsed.
    buf: Vec<u8>,
    /// Body bytes decoded from chunks and not yet handed out as SSE frames.
    body: Vec<u8>,
    /// Set once the terminating chunk or the end of the connection has been seen.
    end: Option<BodyEnd>,
}

impl RawConn<TcpStream> {
    /// A plain TCP connection to `addr`, with default [`Dial`] settings.
    pub async fn connect(addr: SocketAddr) -> RawConn {
        RawConn::dial(addr, Dial::default()).await
    }

    /// A plain TCP connection to `addr`.
    pub async fn dial(addr: SocketAddr, dial: Dial) -> RawConn {
        let connect = async {
            match dial.recv_buffer {
                None => TcpStream::connect(addr).await,
                Some(size) => {
                    let socket = if addr.is_ipv4() {
                        TcpSocket::new_v4()?
                    } else {
                        TcpSocket::new_v6()?
                    };
                    socket.set_recv_buffer_size(size)?;
                    socket.connect(addr).await
                }
            }
        };
        let stream = within_for(dial.limit, &format!("connecting to {addr}"), connect)
            .await
            .unwrap_or_else(|e| panic!("connect to {addr}: {e}"));
        RawConn::over(stream, addr.to_string(), dial.limit)
    }
}

impl RawConn<TcpStream> {
    /// What the kernel holds of this connection, in payload bytes: received by this
    /// client and not read, and sent by the server and not yet acknowledged (queued in
    /// its socket). From `/proc/net/tcp`: a socket-level fact, not a guess from time.
    pub fn queued(&self) -> Queued {
        let ours = self.stream.local_addr().expect("the client's address");
        let theirs = self.stream.peer_addr().expect("the server's address");
        let unread = tcp_queues(ours, theirs)
            .unwrap_or_else(|| panic!("no socket {ours} -> {theirs} in /proc/net/tcp"))
            .1;
        let unacked = tcp_queues(theirs, ours)
            .unwrap_or_else(|| panic!("no socket {theirs} -> {ours} in /proc/net/tcp"))
            .0;
        Queued { unread, unacked }
    }
}

/// Payload bytes the kernel holds for one connection: see [`RawConn::queued`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Queued {
    /// In the client's receive queue.
    pub unread: u64,
    /// In the server's send queue.
    pub unacked: u64,
}

impl Queued {
    pub fn total(self) -> u64 {
        self.unread + self.unacked
    }
}

/// `(tx_queue, rx_queue)` of the TCP socket from `local` to `remote`, from
/// `/proc/net/tcp` (or `tcp6`), or `None` if there is none.
fn tcp_queues(local: SocketAddr, remote: SocketAddr) -> Option<(u64, u64)> {
    let table = if local.is_ipv4() {
        "/proc/net/tcp"
    } else {
        "/proc/net/tcp6"
    };
    let text = std::fs::read_to_string(table).unwrap_or_else(|e| panic!("{table}: {e}"));
    text.lines().skip(1).find_map(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 5 || !proc_addr_is(f[1], local) || !proc_addr_is(f[2], remote) {
            return None;
        }
        let (tx, rx) = f[4].split_once(':')?;
        Some((
            u64::from_str_radix(tx, 16).ok()?,
            u64::from_str_radix(rx, 16).ok()?,
        ))
    })
}

/// Whether `field` (`0100007F:0BB8`: the address as the kernel stores it, in hex, and
/// the port) is `addr`. IPv4 only; an IPv6 address never matches.
fn proc_addr_is(field: &str, addr: SocketAddr) -> bool {
    let Some((ip, port)) = field.split_once(':') else {
        return false;
    };
    let std::net::IpAddr::V4(v4) = addr.ip() else {
        return false;
    };
    // The kernel prints the address's 32 bits as a native-endian number.
    let ip_ok = u32::from_str_radix(ip, 16).is_ok_and(|n| n.to_ne_bytes() == v4.octets());
    ip_ok && u16::from_str_radix(port, 16) == Ok(addr.port())
}

impl<S: AsyncRead + AsyncWrite + Unpin> RawConn<S> {
    /// A client over `stream`, already connected to `host`.
    pub fn over(stream: S, host: String, limit: Duration) -> RawConn<S> {
        RawConn {
            stream,
            host,
            limit,
            buf: Vec::new(),
            body: Vec::new(),
            end: None,
        }
    }

    /// Writes `bytes` as they are.
    pub async fn send(&mut self, bytes: &[u8]) {
        within_for(
            self.limit,
            "writing the request",
            self.stream.write_all(bytes),
        )
        .await
        .expect("write request");
    }

    /// Sends `GET target HTTP/1.1` with `Host` and the given extra header lines (raw
    /// bytes, so a test can send what is not valid UTF-8).
    pub async fn get(&mut self, target: &str, extra: &[(&str, &[u8])]) {
        let host = self.host.clone();
        self.request("GET", target, &host, extra).await;
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

    /// Reads more bytes into [`RawConn::received`]: `Ok(0)` at the end of the
    /// connection. `what` names what the test waits for, should the read hang.
    pub async fn read_more(&mut self, what: &str) -> std::io::Result<usize> {
        let mut chunk = [0u8; 8192];
        let n = within_for(self.limit, what, self.stream.read(&mut chunk)).await?;
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(n)
    }

    /// The bytes read and not yet parsed by [`RawConn::head`] and the body readers: the
    /// whole transcript, framing included, if only raw reads were made.
    pub fn received(&self) -> &[u8] {
        &self.buf
    }

    /// Reads until `done` holds for [`RawConn::received`]; the connection must stay open
    /// until then.
    pub async fn read_until(&mut self, what: &str, done: impl Fn(&[u8]) -> bool) {
        while !done(&self.buf) {
            let n = self
                .read_more(what)
                .await
                .unwrap_or_else(|e| panic!("read while waiting for {what}: {e}"));
            assert!(
                n > 0,
                "connection closed while waiting for {what}: {}",
                String::from_utf8_lossy(&self.buf)
            );
        }
    }

    /// Reads until the server closes the connection (or it fails) and returns every
    /// byte received and not yet parsed.
    pub async fn read_to_close(&mut self, what: &str) -> Vec<u8> {
        while let Ok(n) = self.read_more(what).await {
            if n == 0 {
                break;
            }
        }
        std::mem::take(&mut self.buf)
    }

    /// Writes `request` as it is and reads the answer: up to the end of a
    /// `Content-Length` body, after a 204 head, or else up to the end of the connection
    /// (which may end in a reset). For answers to requests that may be malformed.
    pub async fn exchange(&mut self, request: &[u8]) -> Answer {
        self.send(request).await;
        let what = format!(
            "a complete answer to {:?}",
            String::from_utf8_lossy(request)
        );
        loop {
            match self.read_more(&what).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
            if let Some(at) = find(&self.buf, b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&self.buf[..at]);
                let len = head.lines().find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length: ")
                        .map(|v| v.trim().parse::<usize>().expect("content-length"))
                });
                let body = self.buf.len() - at - 4;
                if len.is_some_and(|n| body >= n) || head.starts_with("HTTP/1.1 204") {
                    break;
                }
            }
        }
        Answer {
            text: String::from_utf8_lossy(&std::mem::take(&mut self.buf)).into_owned(),
        }
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
                .read_more("the response head")
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
            match self.read_more("the next chunk of the body").await {
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
                let n = self
                    .read_more("the response body")
                    .await
                    .expect("read body");
                assert!(n > 0, "connection closed inside the body");
            }
            return self.buf.drain(..len).collect();
        }
        while self
            .read_more("the response body")
            .await
            .expect("read body")
            > 0
        {}
        std::mem::take(&mut self.buf)
    }

    /// Waits for the server to close the connection; true if it did so cleanly.
    pub async fn closed(&mut self) -> bool {
        loop {
            match self.read_more("the server to close the connection").await {
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

/// The ids of the `id:` lines in `text`, in order: what a raw reader of an event stream
/// received. Only whole lines count, as a read may end in the middle of one.
pub fn event_ids(text: &str) -> Vec<u64> {
    let whole = &text[..text.rfind('\n').map_or(0, |at| at + 1)];
    whole
        .lines()
        .filter_map(|l| l.strip_prefix("id: "))
        .map(|v| v.parse().unwrap_or_else(|e| panic!("event id {v:?}: {e}")))
        .collect()
}

/// Whether `haystack` contains `needle`.
pub fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    find(haystack, needle).is_some()
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}
