//! The `sse-counter` binary: maps flags to a [`Config`], sets up tracing, binds and
//! serves. Defaults and validation live in the library ([`server::config`]).

use anyhow::Context as _;
use clap::Parser;
use server::auth::{Claims, Grants, Rules, Verifier};
use server::config::defaults;
use server::config::{RedisTarget, RedisUrl, SentinelAddr};
use server::serve::{TlsError, TlsSource};
use server::Config;
use shared::Pattern;
use std::io::IsTerminal as _;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tracing_subscriber::EnvFilter;

/// Streams counters over Server-Sent Events and serves the page that shows them.
///
/// With no command it serves; the flags below are the server's.
#[derive(Debug, Parser)]
#[command(name = "sse-counter", version, args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
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
    /// Recent events kept for replay after a reconnect, every channel together (the
    /// shared counter's changes included).
    #[arg(long, env = "SSE_COUNTER_HISTORY", default_value_t = defaults::HISTORY,
          value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    history: u64,
    /// Bytes of encoded events the history may hold; the oldest go first past it.
    #[arg(long, env = "SSE_COUNTER_HISTORY_BYTES", default_value_t = defaults::HISTORY_BYTES,
          value_parser = clap::value_parser!(u64).range(1024..=17_179_869_184))]
    history_bytes: u64,
    /// Channels one /api/events stream may list.
    #[arg(long, env = "SSE_COUNTER_MAX_CHANNELS_PER_STREAM",
          default_value_t = defaults::MAX_CHANNELS_PER_STREAM,
          value_parser = clap::value_parser!(u64).range(1..=1024))]
    max_channels_per_stream: u64,
    /// The largest POST /api/publish body, in bytes; past it, 413 unread.
    #[arg(long, env = "SSE_COUNTER_MAX_EVENT_BYTES", default_value_t = defaults::MAX_EVENT_BYTES,
          value_parser = clap::value_parser!(u64).range(64..=16_777_216))]
    max_event_bytes: u64,
    /// Channel publishes allowed per second per publisher (the token's sub, else the
    /// address; bursts of twice as many); past it, 429 with Retry-After.
    #[arg(long, env = "SSE_COUNTER_CHANNEL_PUBLISH_RATE",
          default_value_t = defaults::CHANNEL_PUBLISH_RATE,
          value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    channel_publish_rate: u64,
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
    /// Threads serving connections, each a runtime of its own that takes connections
    /// from the one listener when it is free. Default: one per CPU.
    #[arg(long, env = "SSE_COUNTER_THREADS", value_parser = clap::value_parser!(u16).range(1..=1024))]
    threads: Option<u16>,
    /// Open streams per serving thread before the next thread takes connections too
    /// (the second joins at this many, the third at twice as many, ...).
    #[arg(long, env = "SSE_COUNTER_STREAMS_PER_THREAD", default_value_t = defaults::STREAMS_PER_THREAD,
          value_parser = clap::value_parser!(u64).range(1..))]
    streams_per_thread: u64,

    // Several instances behind a load balancer.
    /// Keep channels and the shared counter in Redis (e.g. redis://127.0.0.1:6379),
    /// shared by every instance given the same URL. Default: in this process.
    #[arg(long, env = "SSE_COUNTER_REDIS_URL", value_parser = RedisUrl::parse)]
    redis_url: Option<RedisUrl>,
    /// A Redis Sentinel to ask for the primary, instead of --redis-url (repeatable, or
    /// comma-separated); with --redis-master-name. After a failover each instance finds
    /// the new primary by itself.
    #[arg(
        long = "redis-sentinel",
        env = "SSE_COUNTER_REDIS_SENTINEL",
        value_name = "HOST:PORT",
        value_delimiter = ',',
        value_parser = SentinelAddr::parse,
        conflicts_with = "redis_url",
        requires = "redis_master_name"
    )]
    redis_sentinels: Vec<SentinelAddr>,
    /// The name the Sentinels monitor the primary under (their `sentinel monitor NAME`).
    #[arg(
        long,
        env = "SSE_COUNTER_REDIS_MASTER_NAME",
        value_name = "NAME",
        requires = "redis_sentinels"
    )]
    redis_master_name: Option<String>,
    /// Replicas that must acknowledge a publish or an increment (Redis WAIT) before it
    /// answers 200; if they do not within --redis-wait-ms, 503. Default: 1 with
    /// --redis-sentinel, else 0 (the primary having it is enough).
    #[arg(long, env = "SSE_COUNTER_REDIS_MIN_REPLICAS", value_name = "N",
          value_parser = clap::value_parser!(u32).range(0..=100))]
    redis_min_replicas: Option<u32>,
    /// How long a publish waits for --redis-min-replicas replicas, in milliseconds.
    #[arg(long, env = "SSE_COUNTER_REDIS_WAIT_MS", default_value_t = defaults::REDIS_WAIT_MS,
          value_parser = clap::value_parser!(u64).range(1..=60_000))]
    redis_wait_ms: u64,
    /// Address of a proxy allowed to name the client in X-Forwarded-For, for the
    /// per-client limit on increments (repeatable). Default: none, the peer counts.
    #[arg(
        long = "trusted-proxy",
        env = "SSE_COUNTER_TRUSTED_PROXY",
        value_delimiter = ','
    )]
    trusted_proxies: Vec<IpAddr>,

    // Who may publish and subscribe.
    /// HS256 secret that bearer tokens are checked with: at least 32 bytes (a trailing
    /// newline is not part of it), e.g. from `openssl rand -hex 32`. Default: no
    /// tokens, so publishing to channels is off.
    #[arg(
        long,
        env = "SSE_COUNTER_JWT_SECRET_FILE",
        value_name = "PATH",
        conflicts_with = "jwt_public_key_file"
    )]
    jwt_secret_file: Option<PathBuf>,
    /// PEM public key that bearer tokens are checked with: Ed25519 (EdDSA), P-256
    /// (ES256) or RSA (RS256), by the key's type.
    #[arg(long, env = "SSE_COUNTER_JWT_PUBLIC_KEY_FILE", value_name = "PATH")]
    jwt_public_key_file: Option<PathBuf>,
    /// Tokens must carry this `aud` (and one naming an audience is refused without it).
    #[arg(long, env = "SSE_COUNTER_JWT_AUDIENCE")]
    jwt_audience: Option<String>,
    /// Tokens must carry this `iss`.
    #[arg(long, env = "SSE_COUNTER_JWT_ISSUER")]
    jwt_issuer: Option<String>,
    /// A channel pattern anyone may subscribe to without a token (repeatable; `counter`
    /// always is). Default: none, every other channel needs a token granting it.
    #[arg(long = "public-channel", env = "SSE_COUNTER_PUBLIC_CHANNEL", value_delimiter = ',',
          value_parser = |p: &str| shared::Pattern::new(p).map_err(|e| e.to_string()))]
    public_channels: Vec<shared::Pattern>,
    /// The demo sign-in (`/api/session`): a name in, an HttpOnly cookie out. Makes a
    /// signing secret at start when no --jwt-secret-file is given. For demos only.
    #[arg(long, env = "SSE_COUNTER_DEMO_LOGIN")]
    demo_login: bool,
    /// The life of a demo session's token (and cookie), in seconds.
    #[arg(long, env = "SSE_COUNTER_DEMO_SESSION_TTL_SECS", default_value_t = defaults::DEMO_SESSION_TTL_SECS,
          value_parser = clap::value_parser!(u64).range(1..=86_400))]
    demo_session_ttl_secs: u64,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Prints a token signed with the HS256 secret (for backends, scripts and curl),
    /// and nothing else on stdout.
    Token(TokenArgs),
}

#[derive(Debug, clap::Args)]
struct TokenArgs {
    /// The server's HS256 secret (see the server's --jwt-secret-file).
    #[arg(long, env = "SSE_COUNTER_JWT_SECRET_FILE", value_name = "PATH")]
    jwt_secret_file: PathBuf,
    /// A channel, or a prefix ending in `*`, the token may publish to (repeatable).
    #[arg(long = "publish", value_name = "PATTERN")]
    publish: Vec<Pattern>,
    /// A channel, or a prefix ending in `*`, the token may subscribe to (repeatable).
    #[arg(long = "subscribe", value_name = "PATTERN")]
    subscribe: Vec<Pattern>,
    /// The token may revoke sessions.
    #[arg(long)]
    revoke: bool,
    /// The `sub` claim: who holds the token.
    #[arg(long, value_name = "NAME")]
    sub: Option<String>,
    /// The `sid` claim: the session, which can be revoked.
    #[arg(long, value_name = "ID")]
    sid: Option<String>,
    /// Seconds until the token expires (at most a year).
    #[arg(long, default_value_t = 3600, value_parser = clap::value_parser!(u64).range(1..=31_536_000))]
    ttl_secs: u64,
    /// The `aud` claim (the server's --jwt-audience).
    #[arg(long, env = "SSE_COUNTER_JWT_AUDIENCE")]
    audience: Option<String>,
    /// The `iss` claim (the server's --jwt-issuer).
    #[arg(long, env = "SSE_COUNTER_JWT_ISSUER")]
    issuer: Option<String>,
}

impl TokenArgs {
    /// The token these flags describe, signed.
    fn token(&self) -> anyhow::Result<String> {
        let rules = Rules {
            audience: self.audience.clone(),
            issuer: self.issuer.clone(),
        };
        let verifier = Verifier::from_secret_file(&self.jwt_secret_file, rules)
            .map_err(|e| anyhow::anyhow!("--jwt-secret-file: {e}"))?;
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .context("the clock is before 1970")?
            .as_secs();
        let claims = Claims {
            sub: self.sub.clone(),
            exp: now + self.ttl_secs,
            nbf: None,
            iat: Some(now),
            sid: self.sid.clone(),
            aud: self.audience.clone(),
            iss: self.issuer.clone(),
            sse: Grants {
                publish: self.publish.clone(),
                subscribe: self.subscribe.clone(),
                revoke: self.revoke,
            },
        };
        Ok(verifier.sign(&claims)?)
    }
}

impl Cli {
    /// The verifier of bearer tokens the flags name, its key read and checked now.
    fn auth(&self) -> anyhow::Result<Option<Arc<Verifier>>> {
        let rules = Rules {
            audience: self.jwt_audience.clone(),
            issuer: self.jwt_issuer.clone(),
        };
        let verifier = match (&self.jwt_secret_file, &self.jwt_public_key_file) {
            (Some(path), _) => Verifier::from_secret_file(path, rules)
                .map_err(|e| anyhow::anyhow!("--jwt-secret-file: {e}"))?,
            (None, Some(path)) => Verifier::from_public_key_file(path, rules)
                .map_err(|e| anyhow::anyhow!("--jwt-public-key-file: {e}"))?,
            (None, None) if self.demo_login && rules != Rules::default() => {
                // A secret of this run only, with the audience and issuer asked for
                // (without them, `Config::validate` makes the same).
                let secret = server::auth::random_secret();
                Verifier::from_secret(&secret, rules).map_err(|e| anyhow::anyhow!("{e}"))?
            }
            (None, None) if rules == Rules::default() => return Ok(None),
            (None, None) => anyhow::bail!(
                "--jwt-audience and --jwt-issuer need --jwt-secret-file or --jwt-public-key-file"
            ),
        };
        if self.demo_login && verifier.algorithm() != "HS256" {
            anyhow::bail!(
                "--demo-login signs its own tokens: give --jwt-secret-file, or no key at all"
            );
        }
        Ok(Some(Arc::new(verifier)))
    }

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

    /// Where the flags keep the store: one Redis server, the primary of Sentinels, or
    /// none (clap has refused both at once, and either half of the Sentinel pair).
    fn redis(&self) -> Option<RedisTarget> {
        match (&self.redis_url, &self.redis_master_name) {
            (Some(url), _) => Some(RedisTarget::Url(url.clone())),
            (None, Some(name)) if !self.redis_sentinels.is_empty() => Some(RedisTarget::Sentinel {
                sentinels: self.redis_sentinels.clone(),
                master_name: name.clone(),
            }),
            _ => None,
        }
    }

    fn config(&self, tls: Option<TlsSource>, auth: Option<Arc<Verifier>>) -> Config {
        let redis = self.redis();
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
            history_bytes: usize::try_from(self.history_bytes).unwrap_or(usize::MAX),
            max_channels_per_stream: usize::try_from(self.max_channels_per_stream)
                .unwrap_or(usize::MAX),
            max_event_bytes: self.max_event_bytes,
            channel_publish_rate: u32::try_from(self.channel_publish_rate).unwrap_or(u32::MAX),
            shutdown_retry_spread: Duration::from_millis(self.shutdown_retry_spread_ms),
            tls,
            h2_max_streams: self.h2_max_streams,
            streams_per_thread: usize::try_from(self.streams_per_thread).unwrap_or(usize::MAX),
            redis_min_replicas: self
                .redis_min_replicas
                .unwrap_or_else(|| redis.as_ref().map_or(0, RedisTarget::default_min_replicas)),
            redis,
            redis_wait: Duration::from_millis(self.redis_wait_ms),
            trusted_proxies: self.trusted_proxies.clone(),
            auth,
            public_channels: self.public_channels.clone(),
            demo_login: self.demo_login,
            demo_session_ttl: Duration::from_secs(self.demo_session_ttl_secs),
        }
    }
}

/// Binds one listener on `addr` and hands each of the `threads` runtimes a handle to it
/// (the same socket, `dup`ed): every runtime's accept loop watches the one queue, and
/// whichever runtime is free when a connection arrives takes it.
///
/// Not a listener per runtime with `SO_REUSEPORT`: the kernel then hashes each
/// connection to one runtime, and when that runtime's thread is busy, or asleep on a
/// CPU that must be woken first, the connection waits for it while another runtime
/// sits idle. Bench: `cargo xtask bench` 10 Hz, time to headers p99 (docs/performance.md).
///
/// The listen backlog is 4,096 instead of tokio's 1,024: in a burst of thousands of
/// connections a shorter queue overflows, and the dropped SYNs come back only after
/// the kernel's 1 s and 3 s retransmits (the burst scenario of `cargo xtask bench`
/// shows it in time to headers). The kernel caps the value at `net.core.somaxconn`.
fn listen(addr: SocketAddr, threads: usize) -> std::io::Result<Vec<std::net::TcpListener>> {
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        None,
    )?;
    // As std's and tokio's own bind do: a restarted server can take its port back at
    // once.
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())?;
    socket.listen(4096)?;
    socket.set_nonblocking(true)?;
    let first: std::net::TcpListener = socket.into();
    let mut listeners = Vec::with_capacity(threads);
    for _ in 1..threads {
        listeners.push(first.try_clone()?);
    }
    listeners.insert(0, first);
    Ok(listeners)
}

/// Grows the process's descriptor table now, while the process has one thread, to hold
/// `max_streams` connections and some room (within the open-files limit).
///
/// The kernel grows the table by doubling as descriptors are taken, and in a process
/// of several threads each growth waits for an RCU grace period (`expand_fdtable`
/// calls `synchronize_rcu` when the table is shared) inside the `accept` that needed
/// it, during which that runtime accepts nothing (milliseconds, many on a busy
/// machine), each time the table doubles (at 128, 256, 512, ... descriptors). Done once here, no
/// `accept` waits for it. The table
/// costs 8 bytes per slot, in the kernel. Bench: `cargo xtask bench` 10 Hz, time to
/// headers p99 (docs/performance.md).
fn reserve_descriptors(any: &impl std::os::fd::AsFd, max_streams: usize) {
    let limit = rustix::process::getrlimit(rustix::process::Resource::Nofile)
        .current
        .unwrap_or(u64::MAX);
    let want = u64::try_from(max_streams)
        .unwrap_or(u64::MAX)
        .saturating_add(1024)
        .min(limit)
        .saturating_sub(1);
    let Ok(want) = i32::try_from(want) else {
        return;
    };
    // A copy at the highest slot wanted makes the table that large; closing it at once
    // leaves the table as it is (it never shrinks).
    match rustix::io::fcntl_dupfd_cloexec(any, want) {
        Ok(copy) => drop(copy),
        Err(err) => tracing::debug!(%err, want, "could not grow the descriptor table"),
    }
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
    if let Some(Command::Token(args)) = &cli.command {
        let token = args.token().unwrap_or_else(|err| refuse(&err));
        println!("{token}");
        return Ok(());
    }
    // A setting the server cannot run with exits 2 with a message, like a bad flag.
    let tls = cli.tls().unwrap_or_else(|err| refuse(&err));
    let auth = cli.auth().unwrap_or_else(|err| refuse(&err));
    if let Some(verifier) = &auth {
        tracing::info!(
            algorithm = verifier.algorithm(),
            "bearer tokens are checked with the configured key"
        );
    }
    if let Some(source) = &tls {
        // Read and check the certificate and key now, before binding.
        if let Err(err) = server::serve::tls::server_config(source) {
            refuse(&err);
        }
    }
    let scheme = if tls.is_some() { "https" } else { "http" };
    let config = cli
        .config(tls, auth)
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
    reserve_descriptors(&listeners[0], config.max_streams);
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
