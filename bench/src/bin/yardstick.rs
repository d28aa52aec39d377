//! `yardstick`: the least an SSE server can do on the machine it runs on, as a peer for
//! the benchmarks. **It is a yardstick, not a product**: it has no routing beyond two
//! paths, parses nothing but the request line, has no limits, no keep-alive, no
//! graceful shutdown and no error answers beyond a bare 404. Do not serve anything
//! with it.
//!
//! One thread, one epoll (mio). Each connection's request is read up to the blank line;
//! the response head follows at once.
//!
//! - `GET /api/counter?count=N&interval_ms=M`: the stream ticks on its own schedule, one
//!   interval after it opened, with sse-counter's payload (`id: n`,
//!   `data: {"num":n,"sent_at_us":t}`), then ends with sse-counter's `end` event.
//! - `GET /api/shared`: broadcast. Every `--broadcast-interval-ms` while any stream is
//!   open, one frame (`id: v`, `data: {"value":v,"sent_at_us":t}`) is encoded once and
//!   written to every open stream. With `--groups G`, the streams are dealt round-robin
//!   into G groups as they open, each with its own value, and each broadcast goes to
//!   the next group in turn: G channels of one event each, as sse-counter's
//!   many-channels benchmark publishes them, with none of a publish's own work.
//!
//! Each event is one `write(2)` of one HTTP/1.1 chunk, as hyper sends it. What a
//! server must do per event beyond that (its own wake-up, the reader's wake-up, the
//! chunk framing) is in the yardstick's figures too, which is the point: the bare
//! loopback write (`floor`) leaves those out.
//!
//! Prints `listening on http://ADDR` on stdout, like the other peers.

use clap::Parser;
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::io::{self, Read as _, Write as _};
use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The least SSE server: one thread, one epoll, one write per event.
#[derive(Debug, Parser)]
#[command(name = "yardstick", version)]
struct Cli {
    /// Where to listen; port 0 picks a free port.
    #[arg(long, default_value = "127.0.0.1:3000")]
    addr: SocketAddr,
    /// The broadcast's interval on `/api/shared`, in ms.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..))]
    broadcast_interval_ms: u64,
    /// How many groups the broadcast's streams are dealt into; each broadcast goes to
    /// one group, the next in turn.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    groups: u64,
}

const LISTENER: Token = Token(usize::MAX);
/// The listen backlog sse-counter uses, so a burst of connects meets the same queue.
const BACKLOG: i32 = 4096;
/// A request head longer than this is dropped.
const MAX_REQUEST: usize = 8 * 1024;
/// A broadcast reader that has this much unwritten is cut off rather than buffered for.
const MAX_PENDING: usize = 64 * 1024;

const HEAD_200: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n\
cache-control: no-cache\r\ntransfer-encoding: chunked\r\n\r\n";
const HEAD_404: &[u8] = b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nconnection: close\r\n\r\n";
/// The chunk that ends a chunked body.
const LAST_CHUNK: &[u8] = b"0\r\n\r\n";

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    bench::raise_nofile_limit()?;
    let listener = listen(cli.addr)?;
    println!("listening on http://{}", listener.local_addr()?);
    Server::new(
        listener,
        Duration::from_millis(cli.broadcast_interval_ms),
        cli.groups as usize,
    )?
    .run()
}

/// Binds with sse-counter's backlog: mio's own `bind` uses a smaller one.
fn listen(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        None,
    )?;
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())?;
    socket.listen(BACKLOG)?;
    socket.set_nonblocking(true)?;
    Ok(TcpListener::from_std(socket.into()))
}

/// What a connection is doing.
enum State {
    /// Reading the request head.
    Request(Vec<u8>),
    /// A per-client counter: tick `next` of `count` is due one `interval` after the last.
    Counter {
        next: u64,
        count: u64,
        interval: Duration,
    },
    /// Subscribed to the broadcast, at `groups[group].subscribers[at]`.
    Shared { group: usize, at: usize },
    /// The answer is complete: close once it is written.
    Closing,
}

struct Conn {
    stream: TcpStream,
    /// Counts the slot's uses, so a timer set for an earlier connection is ignored.
    generation: u64,
    state: State,
    /// Bytes the socket did not take yet. A counter skips ticks while it is not empty
    /// (its schedule moves back, as sse-counter's does); a broadcast appends to it.
    pending: Vec<u8>,
}

struct Server {
    poll: Poll,
    listener: TcpListener,
    /// Connections by token; `None` is a free slot.
    conns: Vec<Option<Conn>>,
    free: Vec<usize>,
    generations: u64,
    /// Per-client ticks due, earliest first: (when, slot, generation).
    timers: BinaryHeap<Reverse<(Instant, usize, u64)>>,
    /// The broadcast's groups of subscribed slots, each with its own value.
    groups: Vec<Group>,
    /// Subscribed slots in all groups.
    subscribed: usize,
    /// The group the next stream joins, and the one the next broadcast goes to.
    next_join: usize,
    next_send: usize,
    broadcast_interval: Duration,
    /// When the next broadcast is due; `None` while nobody listens.
    next_broadcast: Option<Instant>,
    /// Reused buffers for one event's payload and its chunk.
    payload: Vec<u8>,
    chunk: Vec<u8>,
}

/// One group of the broadcast's streams.
#[derive(Default)]
struct Group {
    subscribers: Vec<usize>,
    value: u64,
}

impl Server {
    fn new(
        mut listener: TcpListener,
        broadcast_interval: Duration,
        groups: usize,
    ) -> io::Result<Server> {
        let poll = Poll::new()?;
        poll.registry()
            .register(&mut listener, LISTENER, Interest::READABLE)?;
        Ok(Server {
            poll,
            listener,
            conns: Vec::new(),
            free: Vec::new(),
            generations: 0,
            timers: BinaryHeap::new(),
            groups: (0..groups.max(1)).map(|_| Group::default()).collect(),
            subscribed: 0,
            next_join: 0,
            next_send: 0,
            broadcast_interval,
            next_broadcast: None,
            payload: Vec::with_capacity(128),
            chunk: Vec::with_capacity(128),
        })
    }

    fn run(mut self) -> anyhow::Result<()> {
        let mut events = Events::with_capacity(1024);
        loop {
            let now = Instant::now();
            let due = [
                self.timers.peek().map(|Reverse((at, _, _))| *at),
                self.next_broadcast,
            ]
            .into_iter()
            .flatten()
            .min();
            // epoll waits in whole milliseconds (rounded up), so ticks due within the
            // same millisecond are written in one wake-up.
            let timeout = due.map(|at| at.saturating_duration_since(now));
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e.into());
            }
            for event in events.iter() {
                match event.token() {
                    LISTENER => self.accept(),
                    Token(slot) => {
                        if event.is_readable() || event.is_read_closed() || event.is_error() {
                            self.readable(slot);
                        }
                        if event.is_writable() {
                            self.flush(slot);
                        }
                    }
                }
            }
            self.fire_timers();
        }
    }

    fn accept(&mut self) {
        loop {
            match self.listener.accept() {
                Ok((mut stream, _)) => {
                    // hyper writes each event at once; so does this.
                    let _ = stream.set_nodelay(true);
                    let slot = self.free.pop().unwrap_or_else(|| {
                        self.conns.push(None);
                        self.conns.len() - 1
                    });
                    if self
                        .poll
                        .registry()
                        .register(&mut stream, Token(slot), Interest::READABLE)
                        .is_err()
                    {
                        self.free.push(slot);
                        continue;
                    }
                    self.generations += 1;
                    self.conns[slot] = Some(Conn {
                        stream,
                        generation: self.generations,
                        state: State::Request(Vec::new()),
                        pending: Vec::new(),
                    });
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                // Out of files, for instance: the rest wait in the backlog until the
                // next connection wakes the listener.
                Err(e) => {
                    eprintln!("yardstick: accept: {e}");
                    return;
                }
            }
        }
    }

    /// Reads what the client sent: the request head first, then only end of file.
    fn readable(&mut self, slot: usize) {
        let mut buf = [0u8; 4096];
        loop {
            let Some(conn) = self.conns.get_mut(slot).and_then(Option::as_mut) else {
                return;
            };
            match conn.stream.read(&mut buf) {
                Ok(0) => return self.close(slot),
                Ok(n) => {
                    if let State::Request(head) = &mut conn.state {
                        head.extend_from_slice(&buf[..n]);
                        if head.windows(4).any(|w| w == b"\r\n\r\n") {
                            let head = std::mem::take(head);
                            self.answer(slot, &head);
                        } else if head.len() > MAX_REQUEST {
                            return self.close(slot);
                        }
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return self.close(slot),
            }
        }
    }

    /// Answers a complete request head: the path picks the stream, nothing else is read.
    fn answer(&mut self, slot: usize, head: &[u8]) {
        let line = head.split(|&b| b == b'\r').next().unwrap_or_default();
        let target = std::str::from_utf8(line)
            .ok()
            .and_then(|l| l.strip_prefix("GET "))
            .and_then(|l| l.split(' ').next())
            .unwrap_or("");
        let (path, query) = target.split_once('?').unwrap_or((target, ""));
        let now = Instant::now();
        let state = match path {
            "/api/counter" => {
                let param = |name: &str, default: u64| {
                    query
                        .split('&')
                        .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('=')?.parse().ok())
                        .unwrap_or(default)
                };
                let interval = Duration::from_millis(param("interval_ms", 1000).max(1));
                let conn = self.conns[slot].as_ref().expect("an open slot");
                self.timers
                    .push(Reverse((now + interval, slot, conn.generation)));
                State::Counter {
                    next: 1,
                    count: param("count", 10),
                    interval,
                }
            }
            "/api/shared" => {
                let group = self.next_join;
                self.next_join = (group + 1) % self.groups.len();
                let subscribers = &mut self.groups[group].subscribers;
                subscribers.push(slot);
                self.subscribed += 1;
                if self.next_broadcast.is_none() {
                    self.next_broadcast = Some(now + self.broadcast_interval);
                }
                State::Shared {
                    group,
                    at: subscribers.len() - 1,
                }
            }
            _ => State::Closing,
        };
        let head = if matches!(state, State::Closing) {
            HEAD_404
        } else {
            HEAD_200
        };
        let conn = self.conns[slot].as_mut().expect("an open slot");
        conn.state = state;
        self.send(slot, head);
        self.close_if_done(slot);
    }

    /// Writes the ticks and the broadcast that are due.
    fn fire_timers(&mut self) {
        let now = Instant::now();
        while let Some(&Reverse((at, slot, generation))) = self.timers.peek() {
            if at > now {
                break;
            }
            self.timers.pop();
            let Some(conn) = self.conns.get_mut(slot).and_then(Option::as_mut) else {
                continue;
            };
            if conn.generation != generation {
                continue;
            }
            let State::Counter {
                next,
                count,
                interval,
            } = &mut conn.state
            else {
                continue;
            };
            let (num, count, interval) = (*next, *count, *interval);
            if !conn.pending.is_empty() {
                // The reader is behind: this tick waits one more interval.
                self.timers.push(Reverse((at + interval, slot, generation)));
                continue;
            }
            *next += 1;
            self.payload.clear();
            let _ = write!(
                self.payload,
                "id: {num}\ndata: {{\"num\":{num},\"sent_at_us\":{}}}\n\n",
                unix_us()
            );
            if num >= count {
                let _ = write!(
                    self.payload,
                    "event: end\ndata: {{\"reason\":\"complete\",\"last\":{num}}}\n\n"
                );
            }
            self.encode_chunk(num >= count);
            let chunk = std::mem::take(&mut self.chunk);
            self.send(slot, &chunk);
            self.chunk = chunk;
            if num >= count {
                if let Some(conn) = self.conns[slot].as_mut() {
                    conn.state = State::Closing;
                }
                self.close_if_done(slot);
            } else {
                self.timers.push(Reverse((at + interval, slot, generation)));
            }
        }
        if let Some(at) = self.next_broadcast.filter(|&at| at <= now) {
            self.broadcast();
            self.next_broadcast = (self.subscribed > 0).then(|| {
                // A late wake-up does not make broadcasts bunch up to catch up.
                (at + self.broadcast_interval).max(now)
            });
        }
    }

    /// One frame, encoded once, written to every subscriber of the next group.
    fn broadcast(&mut self) {
        let g = self.next_send;
        self.next_send = (g + 1) % self.groups.len();
        self.groups[g].value += 1;
        let v = self.groups[g].value;
        self.payload.clear();
        let _ = write!(
            self.payload,
            "id: {v}\ndata: {{\"value\":{v},\"sent_at_us\":{}}}\n\n",
            unix_us()
        );
        self.encode_chunk(false);
        let chunk = std::mem::take(&mut self.chunk);
        let mut i = 0;
        while i < self.groups[g].subscribers.len() {
            let slot = self.groups[g].subscribers[i];
            self.send(slot, &chunk);
            // A reader that was cut off left the list: the same index holds the next.
            if self.groups[g].subscribers.get(i) == Some(&slot) {
                i += 1;
            }
        }
        self.chunk = chunk;
    }

    /// `self.payload` as one HTTP/1.1 chunk in `self.chunk`, followed by the last chunk
    /// when the body ends with it.
    fn encode_chunk(&mut self, last: bool) {
        self.chunk.clear();
        let _ = write!(self.chunk, "{:x}\r\n", self.payload.len());
        self.chunk.extend_from_slice(&self.payload);
        self.chunk.extend_from_slice(b"\r\n");
        if last {
            self.chunk.extend_from_slice(LAST_CHUNK);
        }
    }

    /// Writes `bytes` with one `write(2)`; what the socket does not take waits in
    /// `pending` for the next writable event.
    fn send(&mut self, slot: usize, bytes: &[u8]) {
        let Some(conn) = self.conns.get_mut(slot).and_then(Option::as_mut) else {
            return;
        };
        if !conn.pending.is_empty() {
            if conn.pending.len() + bytes.len() > MAX_PENDING {
                return self.close(slot);
            }
            conn.pending.extend_from_slice(bytes);
            return;
        }
        let written = loop {
            match conn.stream.write(bytes) {
                Ok(n) => break n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break 0,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return self.close(slot),
            }
        };
        if written < bytes.len() {
            conn.pending.extend_from_slice(&bytes[written..]);
            let interest = Interest::READABLE | Interest::WRITABLE;
            if self
                .poll
                .registry()
                .reregister(&mut conn.stream, Token(slot), interest)
                .is_err()
            {
                self.close(slot);
            }
        }
    }

    /// Writes what was pending once the socket can take it.
    fn flush(&mut self, slot: usize) {
        let Some(conn) = self.conns.get_mut(slot).and_then(Option::as_mut) else {
            return;
        };
        while !conn.pending.is_empty() {
            match conn.stream.write(&conn.pending) {
                Ok(n) => {
                    conn.pending.drain(..n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return self.close(slot),
            }
        }
        conn.pending = Vec::new();
        if self
            .poll
            .registry()
            .reregister(&mut conn.stream, Token(slot), Interest::READABLE)
            .is_err()
        {
            return self.close(slot);
        }
        self.close_if_done(slot);
    }

    fn close_if_done(&mut self, slot: usize) {
        if let Some(conn) = self.conns.get(slot).and_then(Option::as_ref) {
            if matches!(conn.state, State::Closing) && conn.pending.is_empty() {
                self.close(slot);
            }
        }
    }

    fn close(&mut self, slot: usize) {
        let Some(mut conn) = self.conns.get_mut(slot).and_then(Option::take) else {
            return;
        };
        let _ = self.poll.registry().deregister(&mut conn.stream);
        if let State::Shared { group, at } = conn.state {
            let subscribers = &mut self.groups[group].subscribers;
            subscribers.swap_remove(at);
            self.subscribed -= 1;
            if let Some(&moved) = subscribers.get(at) {
                if let Some(Conn {
                    state: State::Shared { at: moved_at, .. },
                    ..
                }) = self.conns[moved].as_mut()
                {
                    *moved_at = at;
                }
            }
        }
        self.free.push(slot);
    }
}

/// Wall clock in microseconds since the UNIX epoch, as sse-counter stamps `sent_at_us`.
fn unix_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}
