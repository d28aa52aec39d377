//! What a hostile or broken network throws at the server: stalled readers, slowloris,
//! oversized requests, a corpus of malformed requests, and the metrics moved off the main
//! address. Real sockets on 127.0.0.1:0.

mod prom;
mod report;

use server::Config;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::oneshot;
use tokio::time::{timeout, Instant};

const WAIT: Duration = Duration::from_secs(20);

struct Server {
    addr: SocketAddr,
    metrics_addr: Option<SocketAddr>,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Server {
    async fn start(config: Config, separate_metrics: bool) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let metrics = if separate_metrics {
            Some(TcpListener::bind("127.0.0.1:0").await.unwrap())
        } else {
            None
        };
        let metrics_addr = metrics.as_ref().map(|l| l.local_addr().unwrap());
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(server::run_with_metrics(listener, metrics, config, async {
            let _ = stopped.await;
        }));
        Server {
            addr,
            metrics_addr,
            stop: Some(stop),
            task,
        }
    }

    async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        timeout(WAIT, self.task)
            .await
            .expect("server did not stop")
            .unwrap()
            .unwrap();
    }

    /// One metric's value from `/metrics` on whichever address serves it.
    async fn metric(&self, name: &str) -> f64 {
        let addr = self.metrics_addr.unwrap_or(self.addr);
        let (status, body) = request(addr, "GET /metrics HTTP/1.1\r\nHost: t\r\n\r\n").await;
        assert!(status.starts_with("HTTP/1.1 200"), "{status}");
        prom::value(&body, name)
    }

    async fn wait_metric(&self, name: &str, want: f64) {
        prom::wait_for(name, want, WAIT, async || self.metric(name).await).await;
    }
}

/// Sends raw bytes with `Connection: close` semantics and returns the status line and
/// the rest of the response.
async fn request(addr: SocketAddr, raw: &str) -> (String, String) {
    request_bytes(addr, raw.as_bytes()).await
}

async fn request_bytes(addr: SocketAddr, raw: &[u8]) -> (String, String) {
    timeout(WAIT, async {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(raw).await.unwrap();
        let mut out = Vec::new();
        // Read until the server closes or the response is plainly complete.
        let mut buf = [0u8; 8192];
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => out.extend_from_slice(&buf[..n]),
            }
            let text = String::from_utf8_lossy(&out);
            if let Some((head, body)) = text.split_once("\r\n\r\n") {
                let len = head.lines().find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length: ")
                        .map(|v| v.trim().parse::<usize>().unwrap())
                });
                if len.is_some_and(|n| body.len() >= n) || head.starts_with("HTTP/1.1 204") {
                    break;
                }
            }
        }
        let text = String::from_utf8_lossy(&out).into_owned();
        let (status, rest) = text.split_once("\r\n").unwrap_or((&text, ""));
        (status.to_owned(), rest.to_owned())
    })
    .await
    .unwrap_or_else(|_| panic!("no complete answer to {:?}", String::from_utf8_lossy(raw)))
}

/// A client that asks for a fast stream and then never reads: with a tiny receive
/// window, the server's socket fills within moments.
async fn stalled_client(addr: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut s = socket.connect(addr).await.unwrap();
    s.write_all(b"GET /api/counter?count=1000000&interval_ms=1 HTTP/1.1\r\nHost: t\r\n\r\n")
        .await
        .unwrap();
    s
}

#[tokio::test]
async fn a_client_that_stops_reading_is_closed_as_stalled_and_slows_no_one() {
    let config = Config {
        stall_timeout: Duration::from_secs(1),
        send_buffer: Some(8 * 1024),
        ..Config::default()
    };
    let server = Server::start(config, false).await;
    let stalled = stalled_client(server.addr).await;
    server.wait_metric("sse_active_streams", 1.0).await;

    // Meanwhile a reader on another connection gets every tick, in order.
    let mut reader = TcpStream::connect(server.addr).await.unwrap();
    reader
        .write_all(b"GET /api/counter?count=30&interval_ms=10 HTTP/1.1\r\nHost: t\r\n\r\n")
        .await
        .unwrap();
    let mut body = Vec::new();
    timeout(WAIT, async {
        let mut buf = [0u8; 4096];
        while !String::from_utf8_lossy(&body).contains("event: end") {
            let n = reader.read(&mut buf).await.unwrap();
            assert!(n > 0, "the reader's stream closed early");
            body.extend_from_slice(&buf[..n]);
        }
    })
    .await
    .expect("a reader was held up by the stalled client");
    let text = String::from_utf8_lossy(&body);
    let ids: Vec<u64> = text
        .lines()
        .filter_map(|l| l.strip_prefix("id: "))
        .map(|v| v.parse().unwrap())
        .collect();
    assert_eq!(ids, (1..=30).collect::<Vec<_>>());

    server
        .wait_metric("sse_disconnects_total{reason=\"stalled\"}", 1.0)
        .await;
    server.wait_metric("sse_active_streams", 0.0).await;
    assert_eq!(
        server
            .metric("sse_disconnects_total{reason=\"client\"}")
            .await,
        0.0
    );
    report::record(
        "stall",
        serde_json::json!({
            "stalled_clients": 1,
            "closed_as_stalled": 1,
            "stall_timeout_secs": 1,
            "other_client_ticks": ids.len(),
            "other_client_gaps_or_repeats": 0,
        }),
    );
    drop(stalled);
    server.stop().await;
}

#[tokio::test]
async fn slowloris_is_cut_off_by_the_header_read_timeout() {
    let config = Config {
        header_read_timeout: Duration::from_secs(1),
        ..Config::default()
    };
    let server = Server::start(config, false).await;
    let mut s = TcpStream::connect(server.addr).await.unwrap();
    s.write_all(b"GET /api/counter HTTP/1.1\r\nHost: t\r\nX-Slow: ")
        .await
        .unwrap();
    let started = Instant::now();
    let mut buf = [0u8; 1024];
    // The server must hang up by itself; the test only waits for that.
    let closed = timeout(WAIT, async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "a half-sent request held its connection");
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "cut before the timeout"
    );
    server.stop().await;
}

#[tokio::test]
async fn oversized_requests_get_clear_answers() {
    let server = Server::start(Config::default(), false).await;
    let long_query = "a".repeat(server::MAX_URI_BYTES + 10);
    let (status, body) = request(
        server.addr,
        &format!("GET /api/counter?x={long_query} HTTP/1.1\r\nHost: t\r\n\r\n"),
    )
    .await;
    assert!(status.starts_with("HTTP/1.1 414"), "{status}");
    assert!(body.contains(r#"{"error":"#), "{body}");

    let big = "b".repeat(server::MAX_HEADER_BYTES + 10);
    let (status, _) = request(
        server.addr,
        &format!("GET /healthz HTTP/1.1\r\nHost: t\r\nX-Big: {big}\r\n\r\n"),
    )
    .await;
    assert!(status.starts_with("HTTP/1.1 431"), "{status}");

    let many: String = (0..server::MAX_HEADERS + 5)
        .map(|i| format!("X-H{i}: v\r\n"))
        .collect();
    let (status, _) = request(
        server.addr,
        &format!("GET /healthz HTTP/1.1\r\nHost: t\r\n{many}\r\n"),
    )
    .await;
    assert!(status.starts_with("HTTP/1.1 431"), "{status}");
    server.stop().await;
}

/// Every hostile request gets a definite, non-5xx answer, and none reaches a file
/// outside the page's directory.
#[tokio::test]
async fn a_corpus_of_hostile_requests_gets_clear_answers() {
    let dir = std::env::temp_dir().join(format!("sse-counter-corpus-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("index.html"), "<!doctype html><title>t</title>").unwrap();
    let config = Config {
        static_dir: dir.clone(),
        ..Config::default()
    };
    let server = Server::start(config, false).await;
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
        let (status, body) = request_bytes(server.addr, &raw).await;
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
    let (status, body) = request(
        server.addr,
        "GET /api/counter?count=1&interval_ms=1 HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(status.starts_with("HTTP/1.1 200"), "{status}");
    assert!(body.contains("event: end"), "{body}");
    report::record(
        "hostile_input",
        serde_json::json!({ "requests": tried, "answered_as_expected": tried, "server_errors": 0 }),
    );
    server.stop().await;
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn metrics_can_move_to_their_own_address() {
    let server = Server::start(Config::default(), true).await;
    let (status, _) = request(
        server.addr,
        "GET /metrics HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(status.starts_with("HTTP/1.1 404"), "{status}");
    assert_eq!(server.metric("sse_active_streams").await, 0.0);
    server.stop().await;
}
