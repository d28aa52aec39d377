//! The `sse-counter` binary: maps flags to a [`Config`], sets up tracing, binds and
//! serves. Defaults and validation live in the library ([`server::config`]).

use anyhow::Context as _;
use clap::Parser;
use server::config::defaults;
use server::serve::{TlsError, TlsSource};
use server::store::RedisUrl;
use server::Config;
use std::io::IsTerminal as _;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;
use tracing_subscriber::EnvFilter;

/// Streams counters over Server-Sent Events and serves the page that shows them.
#[derive(Debug, Parser)]
#[command(name = "sse-counter", version)]
struct Cli {
    /// Address to listen on (port 0 picks a free port).
    #[arg(long, env = "SSE_COUNTER_ADDR", default_value = defaults::ADDR)]
    addr: SocketAddr,
    /// Directory of the trunk-built page.
    #[arg(long, env = "SSE_COUNTER_STATIC_DIR", default_value = defaults::STATIC_DIR)]
    static_dir: PathBuf,
    /// Reconnection delay sent to clients in the `retry:` field, in milliseconds.
    #[arg(long, env = "SSE_COUNTER_RETRY_MS", default_value_t = defaults::RETRY_MS)]
    retry_ms: u64,
    /// Seconds of idleness before a keep-alive is sent.
    #[arg(long, env = "SSE_COUNTER_KEEP_ALIVE_SECS", default_value_t = defaults::KEEP_ALIVE_SECS,
          value_parser = clap::value_parser!(u64).range(1..=86_400))]
    keep_alive_secs: u64,
    /// Streams open at once before new ones get 503.
    #[arg(long, env = "SSE_COUNTER_MAX_STREAMS", default_value_t = defaults::MAX_STREAMS,
          value_parser = clap::value_parser!(u64).range(1..))]
    max_streams: u64,
    /// Origin allowed to use the API cross-origin (repeatable; `*` for any). Default: none.
    #[arg(
        long = "cors-origin",
        env = "SSE_COUNTER_CORS_ORIGIN",
        value_delimiter = ','
    )]
    cors_origins: Vec<String>,
    /// Honour `drop_after` (abort a connection after N ticks) for demos and tests.
    #[arg(long, env = "SSE_COUNTER_ALLOW_FAULT_INJECTION")]
    allow_fault_injection: bool,
    /// Seconds to wait for connections to close on shutdown.
    #[arg(long, env = "SSE_COUNTER_SHUTDOWN_GRACE_SECS", default_value_t = defaults::SHUTDOWN_GRACE_SECS)]
    shutdown_grace_secs: u64,
    /// Seconds a client may accept no bytes before its stream is closed as stalled.
    #[arg(long, env = "SSE_COUNTER_STALL_TIMEOUT_SECS", default_value_t = defaults::STALL_TIMEOUT_SECS,
          value_parser = clap::value_parser!(u64).range(1..=86_400))]
    stall_timeout_secs: u64,
    /// Seconds a client may take to send its request headers (slowloris guard).
    #[arg(long, env = "SSE_COUNTER_HEADER_READ_TIMEOUT_SECS", default_value_t = defaults::HEADER_READ_TIMEOUT_SECS,
          value_parser = clap::value_parser!(u64).range(1..=3_600))]
    header_read_timeout_secs: u64,
    /// Kernel send buffer per connection, in bytes (0: let the OS tune it).
    #[arg(long, env = "SSE_COUNTER_SEND_BUFFER_BYTES", default_value_t = defaults::SEND_BUFFER_BYTES)]
    send_buffer_bytes: usize,
    /// Recent changes of the shared counter kept for replay after a reconnect.
    #[arg(long, env = "SSE_COUNTER_HISTORY", default_value_t = defaults::HISTORY,
          value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    history: u64,
    /// Increments of the shared counter allowed per second per client address (bursts
    /// of twice as many); past it, 429 with `Retry-After`.
    #[arg(long, env = "SSE_COUNTER_PUBLISH_RATE", default_value_t = defaults::PUBLISH_RATE,
          value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    publish_rate: u64,
    /// On shutdown, each stream's `retry:` is drawn from --retry-ms to --retry-ms plus
    /// this, so clients come back spread out (0: no spread).
    #[arg(long, env = "SSE_COUNTER_SHUTDOWN_RETRY_SPREAD_MS",
          default_value_t = defaults::SHUTDOWN_RETRY_SPREAD_MS)]
    shutdown_retry_spread_ms: u64,
    /// TLS certificate chain (PEM); with --tls-key, serves HTTPS with HTTP/2 and
    /// HTTP/1.1 offered by ALPN.
    #[arg(long, env = "SSE_COUNTER_TLS_CERT", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// TLS private key (PEM) of --tls-cert.
    #[arg(long, env = "SSE_COUNTER_TLS_KEY", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Serve HTTPS with a certificate for localhost, 127.0.0.1 and ::1 made at start
    /// (development only: browsers warn about it).
    #[arg(long, env = "SSE_COUNTER_TLS_SELF_SIGNED", conflicts_with_all = ["tls_cert", "tls_key"])]
    tls_self_signed: bool,
    /// HTTP/2 streams open at once per connection; past it a client waits.
    #[arg(long, env = "SSE_COUNTER_H2_MAX_STREAMS", default_value_t = defaults::H2_MAX_STREAMS,
          value_parser = clap::value_parser!(u32).range(1..))]
    h2_max_streams: u32,
    /// Serve `/metrics` on this address instead of the main one (e.g. 127.0.0.1:9090).
    #[arg(long, env = "SSE_COUNTER_METRICS_ADDR")]
    metrics_addr: Option<SocketAddr>,
    /// Threads serving connections, each with a listener of its own on the address
    /// (SO_REUSEPORT: another process of the same user could bind it too). Default:
    /// one per CPU.
    #[arg(long, env = "SSE_COUNTER_THREADS", value_parser = clap::value_parser!(u16).range(1..=1024))]
    threads: Option<u16>,

    // Several instances behind a load balancer.
    /// Keep the shared counter in Redis (e.g. redis://127.0.0.1:6379), shared by every
    /// instance given the same URL. Default: in this process.
    #[arg(long, env = "SSE_COUNTER_REDIS_URL", value_parser = RedisUrl::parse)]
    redis_url: Option<RedisUrl>,
    /// Address of a proxy allowed to name the client in X-Forwarded-For, for the
    /// per-client limit on increments (repeatable). Default: none, the peer counts.
    #[arg(
        long = "trusted-proxy",
        env = "SSE_COUNTER_TRUSTED_PROXY",
        value_delimiter = ','
    )]
    trusted_proxies: Vec<IpAddr>,
}

impl Cli {
    /// The TLS source the flags name: files, a certificate made now (its SHA-256
    /// fingerprint printed), or none.
    fn tls(&self) -> Result<Option<TlsSource>, TlsError> {
        if self.tls_self_signed {
            let (source, fingerprint) = server::serve::tls::self_signed()?;
            tracing::warn!(
                "serving a self-signed certificate for localhost, 127.0.0.1 and ::1: for \
                 development only (browsers warn about it)"
            );
            eprintln!("self-signed certificate, SHA-256 fingerprint {fingerprint}");
            return Ok(Some(source));
        }
        Ok(match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => Some(TlsSource::Files {
                cert: cert.clone(),
                key: key.clone(),
            }),
            _ => None,
        })
    }

    fn config(&self, tls: Option<TlsSource>) -> Config {
        Config {
            static_dir: self.static_dir.clone(),
            retry_ms: self.retry_ms,
            keep_alive: Duration::from_secs(self.keep_alive_secs),
            max_streams: usize::try_from(self.max_streams).unwrap_or(usize::MAX),
            cors_origins: self.cors_origins.clone(),
            allow_fault_injection: self.allow_fault_injection,
            shutdown_grace: Duration::from_secs(self.shutdown_grace_secs),
            stall_timeout: Duration::from_secs(self.stall_timeout_secs),
            send_buffer: (self.send_buffer_bytes > 0).then_some(self.send_buffer_bytes),
            header_read_timeout: Duration::from_secs(self.header_read_timeout_secs),
            metrics_on_main: self.metrics_addr.is_none(),
            history: usize::try_from(self.history).unwrap_or(usize::MAX),
            publish_rate: u32::try_from(self.publish_rate).unwrap_or(u32::MAX),
            shutdown_retry_spread: Duration::from_millis(self.shutdown_retry_spread_ms),
            tls,
            h2_max_streams: self.h2_max_streams,
            redis_url: self.redis_url.clone(),
            trusted_proxies: self.trusted_proxies.clone(),
        }
    }
}

/// Binds `threads` listeners on `addr` (the first picks the port if `addr` has 0), with
/// `SO_REUSEPORT` when there are several, so that the kernel spreads connections over
/// them.
///
/// Each has a listen backlog of 4,096 instead of tokio's 1,024: in a burst of
/// thousands of connections a shorter queue overflows, and the dropped SYNs come back
/// only after the kernel's 1 s and 3 s retransmits (the burst scenario of
/// `cargo xtask bench` shows it in time to headers). The kernel caps the value at
/// `net.core.somaxconn`.
fn listen(addr: SocketAddr, threads: usize) -> std::io::Result<Vec<std::net::TcpListener>> {
    let mut listeners: Vec<std::net::TcpListener> = Vec::with_capacity(threads);
    for _ in 0..threads {
        let socket = socket2::Socket::new(
            socket2::Domain::for_address(addr),
            socket2::Type::STREAM,
            None,
        )?;
        // As std's and tokio's own bind do: a restarted server can take its port back
        // at once.
        socket.set_reuse_address(true)?;
        if threads > 1 {
            socket.set_reuse_port(true)?;
        }
        let at = match listeners.first() {
            Some(first) => first.local_addr()?,
            None => addr,
        };
        socket.bind(&at.into())?;
        socket.listen(4096)?;
        socket.set_nonblocking(true)?;
        listeners.push(socket.into());
    }
    Ok(listeners)
}

/// Exits 2 (as clap does for a bad flag) with `err` on stderr.
fn refuse(err: &dyn std::fmt::Display) -> ! {
    eprintln!("error: {err}");
    std::process::exit(2)
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_env("SSE_COUNTER_LOG").unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        // Colour codes only for a person at a terminal, not in files and test captures.
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    let cli = Cli::parse();
    // A setting the server cannot run with exits 2 with a message, like a bad flag.
    let tls = cli.tls().unwrap_or_else(|err| refuse(&err));
    if let Some(source) = &tls {
        // Read and check the certificate and key now, before binding.
        if let Err(err) = server::serve::tls::server_config(source) {
            refuse(&err);
        }
    }
    let scheme = if tls.is_some() { "https" } else { "http" };
    let config = cli
        .config(tls)
        .validate()
        .unwrap_or_else(|err| refuse(&err));
    if !config.static_dir.join("index.html").is_file() {
        tracing::warn!(
            dir = %config.static_dir.display(),
            "the page is not built there: `/` will say so (run `cargo xtask demo` to build it)"
        );
    }
    let threads = match cli.threads {
        Some(n) => usize::from(n),
        None => std::thread::available_parallelism().map_or(1, usize::from),
    };
    let mut listeners =
        listen(cli.addr, threads).with_context(|| format!("cannot listen on {}", cli.addr))?;
    // The first listener is served here, the others each on a thread of its own.
    let first = listeners.remove(0);
    // Current-thread runtimes: see `server::run_threads`.
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(serve(cli, config, scheme, first, listeners))
}

async fn serve(
    cli: Cli,
    config: Config,
    scheme: &str,
    first: std::net::TcpListener,
    more: Vec<std::net::TcpListener>,
) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::from_std(first)?;
    let local = listener.local_addr()?;
    let metrics_listener = match cli.metrics_addr {
        Some(addr) => Some(
            tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("cannot listen on {addr} for metrics"))?,
        ),
        None => None,
    };
    if let Some(l) = &metrics_listener {
        tracing::info!(addr = %l.local_addr()?, "metrics served on their own address");
    }
    // Listen for signals before saying where we listen: a signal sent as soon as the
    // line is read must shut down gracefully, not kill the process.
    let first_signal = server::shutdown_signal();
    // The one line on stdout: scripts and tests read the real port from it.
    println!("listening on {scheme}://{local}");
    let shutdown = async {
        first_signal.await;
        tracing::info!("signal received: shutting down (send another to exit at once)");
        tokio::spawn(async {
            server::shutdown_signal().await;
            tracing::warn!("second signal: exiting at once");
            std::process::exit(130);
        });
    };
    server::run_threads(listener, more, metrics_listener, config, shutdown).await?;
    Ok(())
}
