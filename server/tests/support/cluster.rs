//! Several instances that share the counter through Redis, behind nginx, as the tests
//! run them: a real `redis-server` and `nginx` (the Debian packages) configured from
//! `deploy/`, each on a free loopback port with a temp dir of its own and stopped when
//! dropped, whatever the outcome; instances of the `sse-counter` binary pointed at
//! them; and [`Resuming`], an SSE client that reconnects through nginx the way a
//! browser's `EventSource` does.

use super::binary::{launch, Binary, START_LIMIT};
use super::raw::RawConn;
use super::{poll_until, within, within_for, TempDir, TIMEOUT};
use bench::deploy;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, ServerName};
use shared::{Reset, SharedValue};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpSocket, TcpStream};
use tokio::process::{Child, Command};
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

/// The key the server keeps the counter in, for looking at it in Redis.
pub use server::store::redis::keys::VALUE as VALUE_KEY;

/// Attempts at a free port: one the OS just gave can be taken by someone else before
/// the program binds it.
const PORT_ATTEMPTS: usize = 5;

/// A loopback port that nothing listens on at this moment.
pub fn free_port() -> u16 {
    deploy::free_port().expect("a free loopback port")
}

/// Where `program` is ([`deploy::find_program`]); the message names the Debian package
/// if it is nowhere.
fn require(program: &str, package: &str) -> PathBuf {
    deploy::find_program(program).unwrap_or_else(|| {
        panic!("{program} is not installed: `apt-get install {package}` (cargo xtask test installs it)")
    })
}

/// Sends `signal` to `pid` with `kill`; false if there is no such process any more.
fn signal(pid: u32, signal: &str) -> bool {
    std::process::Command::new("kill")
        .args([&format!("-{signal}"), &pid.to_string()])
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// A `redis-server` with `deploy/redis.conf`, on a free port, its data in a temp dir.
pub struct Redis {
    child: Option<Child>,
    pub port: u16,
    dir: TempDir,
    program: PathBuf,
}

impl Redis {
    pub async fn start() -> Redis {
        Redis::start_on(None).await
    }

    /// Starts Redis on `port`, or on a free one.
    pub async fn start_on(port: Option<u16>) -> Redis {
        let mut redis = Redis {
            child: None,
            port: 0,
            dir: TempDir::new("redis"),
            program: require("redis-server", "redis-server"),
        };
        if let Some(port) = port {
            redis.port = port;
            match redis.spawn().await {
                Ok(()) => return redis,
                Err(log) => panic!("redis-server did not start on port {port}:\n{log}"),
            }
        }
        let mut last = String::new();
        for _ in 0..PORT_ATTEMPTS {
            redis.port = free_port();
            match redis.spawn().await {
                Ok(()) => return redis,
                Err(log) => last = log,
            }
        }
        panic!("redis-server did not start:\n{last}");
    }

    /// `redis://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("redis.log")
    }

    /// Starts `redis-server` on `self.port` and waits until it answers `PING`;
    /// `Err(log)` if it exited instead.
    async fn spawn(&mut self) -> Result<(), String> {
        let child = Command::from(
            deploy::redis_command(&self.program, self.port, self.dir.path(), &self.log_path())
                .expect("copy deploy/redis.conf into the temp dir"),
        )
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("start redis-server");
        self.child = Some(child);
        let url = self.url();
        let log = self.log_path();
        let child = self.child.as_mut().expect("just set");
        poll_until(START_LIMIT, "redis-server to answer PING", async || {
            if let Ok(Some(status)) = child.try_wait() {
                let log = std::fs::read_to_string(&log).unwrap_or_default();
                return Ok(Err(format!("exited with {status}:\n{log}")));
            }
            ping(&url).await.map(Ok)
        })
        .await
    }

    /// A connection of the test's own, for looking at or breaking the data.
    pub async fn conn(&self) -> redis::aio::MultiplexedConnection {
        let client = redis::Client::open(self.url()).expect("redis URL");
        within(
            "connecting to redis",
            client.get_multiplexed_async_connection(),
        )
        .await
        .expect("connect to redis")
    }

    /// The counter as Redis holds it.
    pub async fn value(&self) -> u64 {
        let mut conn = self.conn().await;
        let get = redis::cmd("GET").arg(VALUE_KEY).clone();
        within("GET the value", get.query_async::<Option<u64>>(&mut conn))
            .await
            .expect("GET the value")
            .unwrap_or(0)
    }

    /// `FLUSHALL`: the data is lost, Redis stays up.
    pub async fn flush(&self) {
        let mut conn = self.conn().await;
        let flush = redis::cmd("FLUSHALL").clone();
        within("FLUSHALL", flush.query_async::<()>(&mut conn))
            .await
            .expect("FLUSHALL");
    }

    /// `kill -9`: gone at once, as in a crash. What it answered is on disk
    /// (`appendfsync always`).
    pub async fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.start_kill();
            within("redis-server to die", child.wait())
                .await
                .expect("wait for redis-server");
        }
    }

    /// Starts it again on the same port, from the same directory.
    pub async fn restart(&mut self) {
        self.kill().await;
        self.start_again().await;
    }

    /// Starts it again after [`Redis::kill`], on the same port, from the same directory.
    pub async fn start_again(&mut self) {
        if let Err(log) = self.spawn().await {
            panic!("redis-server did not restart on port {}:\n{log}", self.port);
        }
    }
}

/// Whether Redis at `url` answers `PING`.
async fn ping(url: &str) -> Result<(), String> {
    let client = redis::Client::open(url).map_err(|e| e.to_string())?;
    let mut conn = tokio::time::timeout(TIMEOUT, client.get_multiplexed_async_connection())
        .await
        .map_err(|_| "connect timed out".to_owned())?
        .map_err(|e| e.to_string())?;
    let ping = redis::cmd("PING").clone();
    tokio::time::timeout(TIMEOUT, ping.query_async::<String>(&mut conn))
        .await
        .map_err(|_| "PING timed out".to_owned())?
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// An `sse-counter` with its shared counter in `redis_url`, heartbeats every second
/// (so idle streams show life well within the test timeouts), a short `retry`, no
/// practical rate limit, and `extra` flags (later flags win).
pub async fn instance(redis_url: &str, extra: &[&str]) -> Binary {
    let defaults = [
        ("--keep-alive-secs", "1"),
        ("--retry-ms", "200"),
        ("--publish-rate", "1000000"),
        ("--shutdown-grace-secs", "1"),
    ];
    let mut launch = launch().args(["--redis-url", redis_url]).args(extra);
    for (flag, value) in defaults {
        if !extra.contains(&flag) {
            launch = launch.args([flag, value]);
        }
    }
    launch.start().await
}

/// nginx with `deploy/nginx.conf`, on a free port, with a self-signed certificate for
/// localhost and 127.0.0.1, in front of `instances`.
pub struct Nginx {
    child: Option<Child>,
    pub addr: SocketAddr,
    /// The certificate clients must trust (PEM).
    pub cert: String,
    dir: TempDir,
}

impl Nginx {
    /// nginx in front of `instances`, serving no page (the tests that use this look at
    /// the API only).
    pub async fn start(instances: &[SocketAddr]) -> Nginx {
        Nginx::serving(instances, &super::no_page_dir()).await
    }

    /// nginx in front of `instances`, serving the built page in `page_dir` as the
    /// deployment does (the browser tests).
    pub async fn serving(instances: &[SocketAddr], page_dir: &Path) -> Nginx {
        let program = require("nginx", "nginx");
        let dir = TempDir::new("nginx");
        let (source, _) = server::serve::tls::self_signed().expect("a self-signed certificate");
        let server::serve::TlsSource::Pem { cert, key } = source else {
            unreachable!("self_signed gives PEM text")
        };
        std::fs::write(dir.path().join("cert.pem"), &cert).expect("write cert.pem");
        std::fs::write(dir.path().join("key.pem"), &key).expect("write key.pem");
        let mut last = String::new();
        for _ in 0..PORT_ATTEMPTS {
            let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
            let (cert_file, key_file) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
            let nginx = deploy::Nginx {
                listen: addr,
                instances,
                cert: &cert_file,
                key: &key_file,
                static_dir: page_dir,
                run_dir: dir.path(),
            };
            let conf = dir.path().join("nginx.conf");
            let text = nginx.render().unwrap_or_else(|e| panic!("{e:#}"));
            std::fs::write(&conf, text).expect("write nginx.conf");
            let mut child = Command::from(nginx.command(&program, &conf))
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .expect("start nginx");
            match accepting(&mut child, addr, &dir.path().join("error.log")).await {
                Ok(()) => {
                    return Nginx {
                        child: Some(child),
                        addr,
                        cert,
                        dir,
                    }
                }
                Err(log) => last = log,
            }
        }
        panic!("nginx did not start:\n{last}");
    }

    /// What nginx logged (warnings and errors).
    pub fn error_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("error.log")).unwrap_or_default()
    }

    /// A TLS connection to nginx offering `alpn`, from `from` (a loopback address: the
    /// client address nginx sees and passes on in `X-Forwarded-For`).
    pub async fn tls_from(&self, from: IpAddr, alpn: &[&[u8]]) -> TlsStream<TcpStream> {
        tls_connect_from(self.addr, &self.cert, from, alpn).await
    }

    /// An HTTP/1.1 client over TLS to nginx, from 127.0.0.1.
    pub async fn https1(&self) -> RawConn<TlsStream<TcpStream>> {
        self.https1_from([127, 0, 0, 1].into()).await
    }

    /// An HTTP/1.1 client over TLS to nginx, from `from`.
    pub async fn https1_from(&self, from: IpAddr) -> RawConn<TlsStream<TcpStream>> {
        let tls = self.tls_from(from, &[b"http/1.1"]).await;
        RawConn::over(tls, format!("localhost:{}", self.addr.port()), BUSY_LIMIT)
    }

    /// `POST /api/shared/increment` through nginx on a fresh connection: the status and
    /// the value when it is 200.
    pub async fn increment(&self) -> (u16, Option<u64>) {
        let mut conn = self.https1().await;
        post_increment(&mut conn, &[]).await
    }
}

/// Waits until `child` (nginx) accepts connections on `addr`; `Err(its error log)` if
/// it exited instead (a port taken after all, a bad configuration).
async fn accepting(child: &mut Child, addr: SocketAddr, log: &Path) -> Result<(), String> {
    poll_until(START_LIMIT, "nginx to accept connections", async || {
        if let Ok(Some(status)) = child.try_wait() {
            let log = std::fs::read_to_string(log).unwrap_or_default();
            return Ok(Err(format!("exited with {status}:\n{log}")));
        }
        TcpStream::connect(addr).await.map(|_| Ok(()))
    })
    .await
}

/// A TLS connection to `addr` that trusts `cert_pem` for `localhost`, offering `alpn`,
/// made from the local address `from`.
pub async fn tls_connect_from(
    addr: SocketAddr,
    cert_pem: &str,
    from: IpAddr,
    alpn: &[&[u8]],
) -> TlsStream<TcpStream> {
    let mut roots = rustls::RootCertStore::empty();
    let cert = CertificateDer::from_pem_slice(cert_pem.as_bytes()).expect("certificate PEM");
    roots.add(cert).expect("add the certificate");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let socket = TcpSocket::new_v4().expect("socket");
    socket
        .bind(SocketAddr::new(from, 0))
        .expect("bind the client");
    let tcp = within_busy(&format!("connecting to {addr}"), socket.connect(addr))
        .await
        .unwrap_or_else(|e| panic!("connect to {addr}: {e}"));
    let name = ServerName::try_from("localhost").expect("a server name");
    within_busy(
        "the TLS handshake",
        TlsConnector::from(Arc::new(config)).connect(name, tcp),
    )
    .await
    .expect("TLS handshake")
}

/// `POST /api/shared/increment` on `conn` with `Connection: close` and `extra` headers:
/// the status, and the value when it is 200.
pub async fn post_increment<S>(conn: &mut RawConn<S>, extra: &[(&str, &[u8])]) -> (u16, Option<u64>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let mut headers = vec![("Content-Length", &b"0"[..]), ("Connection", b"close")];
    headers.extend_from_slice(extra);
    let host = "localhost".to_owned();
    conn.request("POST", shared::paths::SHARED_INCREMENT, &host, &headers)
        .await;
    let head = conn.head().await;
    let body = conn.body(&head).await;
    let value = (head.status == 200).then(|| {
        serde_json::from_slice::<shared::Incremented>(&body)
            .unwrap_or_else(|e| panic!("increment answer {body:?}: {e}"))
            .value
    });
    (head.status, value)
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // SIGTERM, not SIGKILL: the master stops its workers, which a killed master
        // would leave running.
        if let Some(mut child) = self.child.take() {
            if let Some(pid) = child.id() {
                signal(pid, "TERM");
                for _ in 0..100 {
                    if !matches!(child.try_wait(), Ok(None)) {
                        return;
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
            let _ = child.start_kill();
        }
    }
}

/// An event of the shared stream, as a page sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SharedEvent {
    Value(SharedValue),
    Reset(Reset),
}

/// One event of a stream read through nginx: its name, id (the last one seen) and data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawEvent {
    pub name: String,
    pub id: Option<String>,
    pub data: String,
}

/// A subscriber of the shared counter through nginx that reconnects the way a
/// browser's `EventSource` does: when the stream breaks it waits the last `retry:` it
/// was sent and connects again with `Last-Event-ID`. Like the page, it also tries again
/// after a refusal, where a browser would give up.
pub struct Resuming {
    nginx: SocketAddr,
    cert: String,
    /// The stream's path and query.
    path: String,
    conn: Option<RawConn<TlsStream<TcpStream>>>,
    /// The last id received: what a reconnect sends.
    pub last_id: Option<String>,
    retry: Duration,
    /// Connections after the first.
    pub reconnects: u32,
}

impl Resuming {
    /// A subscriber of `/api/shared`.
    pub fn new(nginx: &Nginx, last_id: Option<u64>) -> Resuming {
        Resuming::on(
            nginx,
            shared::paths::SHARED,
            last_id.map(|id| id.to_string()),
        )
    }

    /// A subscriber of the stream at `path` (and query).
    pub fn on(nginx: &Nginx, path: &str, last_id: Option<String>) -> Resuming {
        Resuming {
            nginx: nginx.addr,
            cert: nginx.cert.clone(),
            path: path.to_owned(),
            conn: None,
            last_id,
            retry: Duration::from_millis(200),
            reconnects: 0,
        }
    }

    /// Connects, unless connected; a refusal waits `retry` and tries again.
    pub async fn connect(&mut self) {
        while self.conn.is_none() {
            let tls = tls_connect_from(
                self.nginx,
                &self.cert,
                [127, 0, 0, 1].into(),
                &[b"http/1.1"],
            )
            .await;
            let host = format!("localhost:{}", self.nginx.port());
            let mut conn = RawConn::over(tls, host, BUSY_LIMIT);
            let mut headers: Vec<(&str, &[u8])> = vec![("Accept", b"text/event-stream")];
            if let Some(id) = &self.last_id {
                headers.push(("Last-Event-ID", id.as_bytes()));
            }
            conn.get(&self.path, &headers).await;
            let head = conn.head().await;
            if head.status == 200 {
                self.conn = Some(conn);
            } else {
                tokio::time::sleep(self.retry).await;
                self.reconnects += 1;
            }
        }
    }

    /// The next value or reset of `/api/shared`, reconnecting as often as it takes,
    /// within [`BUSY_LIMIT`] in all (heartbeats and reconnects could go on for ever).
    pub async fn next(&mut self) -> SharedEvent {
        within_busy("the next value through nginx", async {
            loop {
                let event = self.event().await;
                let data = &event.data;
                match event.name.as_str() {
                    "message" => {
                        return SharedEvent::Value(serde_json::from_str(data).expect("a value"))
                    }
                    "reset" => {
                        return SharedEvent::Reset(serde_json::from_str(data).expect("a reset"))
                    }
                    _ => {}
                }
            }
        })
        .await
    }

    /// The next event with data other than a heartbeat, reconnecting as
    /// [`Resuming::next`] does, within [`BUSY_LIMIT`] in all.
    pub async fn next_raw(&mut self) -> RawEvent {
        within_busy("the next event through nginx", async {
            loop {
                let event = self.event().await;
                if event.name != shared::events::HEARTBEAT {
                    return event;
                }
            }
        })
        .await
    }

    /// The next event with data, reconnecting as often as it takes.
    async fn event(&mut self) -> RawEvent {
        {
            loop {
                self.connect().await;
                let conn = self.conn.as_mut().expect("connected");
                match conn.frame().await {
                    Ok(frame) => {
                        if let Some(event) = self.parse(&frame) {
                            return event;
                        }
                    }
                    Err(_) => {
                        // The browser's wait before it reconnects (the stream's `retry:`).
                        self.conn = None;
                        self.reconnects += 1;
                        tokio::time::sleep(self.retry).await;
                    }
                }
            }
        }
    }

    /// The frame's event, noting its `retry` and `id` as a browser does.
    fn parse(&mut self, frame: &str) -> Option<RawEvent> {
        let (mut name, mut data, mut id) = ("message", None, None);
        for line in frame.lines() {
            if let Some(ms) = line.strip_prefix("retry: ") {
                self.retry = Duration::from_millis(ms.parse().expect("retry ms"));
            } else if let Some(v) = line.strip_prefix("id: ") {
                id = Some(v.to_owned());
            } else if let Some(v) = line.strip_prefix("event: ") {
                name = v;
            } else if let Some(v) = line.strip_prefix("data: ") {
                data = Some(v);
            }
        }
        if id.is_some() {
            self.last_id = id;
        }
        Some(RawEvent {
            name: name.to_owned(),
            id: self.last_id.clone(),
            data: data?.to_owned(),
        })
    }
}

/// The value of `event`, failing on a reset: where no data is lost, none may come.
pub fn value(event: &SharedEvent) -> u64 {
    match event {
        SharedEvent::Value(v) => v.value,
        SharedEvent::Reset(r) => panic!("a reset where none may come: {r:?}"),
    }
}

/// The limit for waits in tests that load the machine (hundreds of streams over TLS).
pub const BUSY_LIMIT: Duration = Duration::from_secs(30);

/// [`within_for`] with [`BUSY_LIMIT`].
pub async fn within_busy<F: std::future::Future>(what: &str, fut: F) -> F::Output {
    within_for(BUSY_LIMIT, what, fut).await
}

/// A file holding an HS256 secret, for `--jwt-secret-file`; removed on drop.
pub struct SecretFile {
    _dir: TempDir,
    /// Its path, as the flag takes it.
    pub file: String,
}

impl SecretFile {
    pub fn new(secret: &[u8]) -> SecretFile {
        let dir = TempDir::new("secret");
        let path = dir.path().join("secret");
        std::fs::write(&path, secret).expect("write the secret");
        SecretFile {
            file: path.to_str().expect("a UTF-8 temp path").to_owned(),
            _dir: dir,
        }
    }
}

/// A token signed with `secret` that may publish on every channel, for ten minutes.
pub fn publisher_token(secret: &[u8]) -> String {
    super::tokens::sign(secret, &super::tokens::claims("backend", 600, &["*"], &[]))
}
