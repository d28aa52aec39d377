//! The server's configuration: one struct, its defaults (which the binary's flags show
//! as theirs) and its validation, so every caller of [`crate::run`] gets the same checks.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// The default of each setting. The binary's flags use these as their defaults, so a
/// default is written once.
pub mod defaults {
    pub const ADDR: &str = "127.0.0.1:3000";
    pub const STATIC_DIR: &str = "web/dist";
    pub const RETRY_MS: u64 = 3000;
    pub const KEEP_ALIVE_SECS: u64 = 15;
    pub const MAX_STREAMS: u64 = 10_000;
    pub const SHUTDOWN_GRACE_SECS: u64 = 5;
    pub const HEADER_READ_TIMEOUT_SECS: u64 = 10;
    pub const STALL_TIMEOUT_SECS: u64 = 30;
    /// See [`super::Config::send_buffer`].
    pub const SEND_BUFFER_BYTES: usize = 128 * 1024;
    pub const HISTORY: u64 = shared::limits::DEFAULT_HISTORY;
    pub const PUBLISH_RATE: u64 = shared::limits::DEFAULT_PUBLISH_RATE;
    pub const SHUTDOWN_RETRY_SPREAD_MS: u64 = 10_000;
    pub const H2_MAX_STREAMS: u32 = 100;
    /// See [`super::Config::streams_per_thread`].
    pub const STREAMS_PER_THREAD: u64 = 5_000;
    pub const HISTORY_BYTES: u64 = shared::channels::limits::DEFAULT_HISTORY_BYTES;
    pub const MAX_CHANNELS_PER_STREAM: u64 =
        shared::channels::limits::DEFAULT_MAX_CHANNELS_PER_STREAM;
    pub const MAX_EVENT_BYTES: u64 = shared::channels::limits::DEFAULT_MAX_EVENT_BYTES;
    pub const CHANNEL_PUBLISH_RATE: u64 = shared::channels::limits::DEFAULT_CHANNEL_PUBLISH_RATE;
    pub const DEMO_SESSION_TTL_SECS: u64 = 900;
    /// See [`super::Config::redis_wait`].
    pub const REDIS_WAIT_MS: u64 = 1000;
}

/// Request line and headers together may not exceed this (hyper answers 431; for
/// HTTP/2 it is the header list limit). It also caps hyper's write buffer per
/// connection.
pub const MAX_HEADER_BYTES: usize = 16 * 1024;
/// A longer path and query gets 414 (`routes::gate`).
pub const MAX_URI_BYTES: usize = 8 * 1024;
/// More request headers than this get 431.
pub const MAX_HEADERS: usize = 64;

/// Everything the server needs to know; built from the CLI by the binary.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where the trunk-built page lives.
    pub static_dir: PathBuf,
    /// The `retry:` value sent first on every stream: the browser's reconnection delay.
    pub retry_ms: u64,
    /// How long a stream may be idle before a keep-alive is sent.
    pub keep_alive: Duration,
    /// Streams open at once; past it, 503 with `Retry-After`.
    pub max_streams: usize,
    /// Origins allowed to read the API cross-origin (`*` for any), as
    /// [`Config::validate`] normalised them.
    pub cors_origins: Vec<String>,
    /// Whether `drop_after` is honoured.
    pub allow_fault_injection: bool,
    /// How long shutdown waits for connections to close once every stream has ended.
    pub shutdown_grace: Duration,
    /// How long a client may take to send its request headers (slowloris guard).
    pub header_read_timeout: Duration,
    /// How long a client may accept no bytes before its connection is closed.
    pub stall_timeout: Duration,
    /// The kernel send buffer of each connection (`None`: the OS tunes it). A fixed,
    /// modest size bounds what a client that stops reading can pin in the kernel, and
    /// lets the stall timeout start soon: Linux's autotuning lets it grow to megabytes,
    /// minutes of ticks (the stall tests in `tests/hardening.rs` show the difference).
    pub send_buffer: Option<usize>,
    /// Whether `/metrics` is served on the main listener (off when it has its own).
    pub metrics_on_main: bool,
    /// How many recent events (every channel, the shared counter's changes included)
    /// are kept for replay.
    pub history: usize,
    /// The history's bound in bytes of encoded events.
    pub history_bytes: usize,
    /// Channels one `/api/events` stream may list.
    pub max_channels_per_stream: usize,
    /// The largest `POST /api/publish` body; past it, 413 unread.
    pub max_event_bytes: u64,
    /// Publishes on channels allowed per second per publisher (the token's `sub`, else
    /// the address); bursts of twice as many.
    pub channel_publish_rate: u32,
    /// Increments of the shared counter allowed per second per client address; bursts
    /// of twice as many.
    pub publish_rate: u32,
    /// On shutdown each stream gets, before its `end`, a `retry:` drawn uniformly from
    /// `retry_ms` to `retry_ms` + this, so that clients come back spread over that
    /// window instead of all at once. Zero sends no new `retry:`.
    pub shutdown_retry_spread: Duration,
    /// TLS, with HTTP/2 and HTTP/1.1 offered by ALPN; `None` serves plain HTTP/1.1.
    pub tls: Option<TlsSource>,
    /// HTTP/2 streams open at once on one connection; past it a client waits.
    pub h2_max_streams: u32,
    /// Open streams per serving thread before the next one takes connections too: the
    /// first runtime serves alone until this many streams are open, the second joins
    /// it then, the third at twice as many, and so on (`crate::run_threads`). One
    /// runtime wakes each grid cell's streams together and never waits for another
    /// thread to be scheduled; more share the CPUs once there is load to share.
    /// Bench: `cargo xtask bench` 10 Hz, CPU per event and time to headers p99.
    pub streams_per_thread: usize,

    // Several instances behind a load balancer.
    /// Where channels and the shared counter are kept: in Redis (one server at a URL, or
    /// the primary that Sentinels name), shared by every instance that names it, or in
    /// this process (`None`, the default).
    pub redis: Option<RedisTarget>,
    /// Replicas that must acknowledge a publish (Redis `WAIT`) before it answers `200`;
    /// 0 answers once the primary has it. See [`RedisTarget::default_min_replicas`].
    pub redis_min_replicas: u32,
    /// How long a publish waits for those replicas before it answers `503`.
    pub redis_wait: Duration,
    /// Peers trusted to name the client in `X-Forwarded-For` (the load balancer): the
    /// per-client limit on increments then counts the address they name, not theirs.
    pub trusted_proxies: Vec<std::net::IpAddr>,

    // Who may publish and subscribe.
    /// The key bearer tokens are checked with (`--jwt-secret-file` or
    /// `--jwt-public-key-file`), and the `aud`/`iss` they must carry. `None`: no token
    /// is accepted.
    pub auth: Option<Arc<crate::auth::Verifier>>,
    /// Channels anyone may subscribe to without a token (`counter` always is).
    pub public_channels: Vec<shared::Pattern>,
    /// Whether the demo sign-in (`/api/session`) is served.
    pub demo_login: bool,
    /// The life of a demo session's token and cookie.
    pub demo_session_ttl: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            static_dir: PathBuf::from(defaults::STATIC_DIR),
            retry_ms: defaults::RETRY_MS,
            keep_alive: Duration::from_secs(defaults::KEEP_ALIVE_SECS),
            max_streams: defaults::MAX_STREAMS as usize,
            cors_origins: Vec::new(),
            allow_fault_injection: false,
            shutdown_grace: Duration::from_secs(defaults::SHUTDOWN_GRACE_SECS),
            header_read_timeout: Duration::from_secs(defaults::HEADER_READ_TIMEOUT_SECS),
            stall_timeout: Duration::from_secs(defaults::STALL_TIMEOUT_SECS),
            send_buffer: Some(defaults::SEND_BUFFER_BYTES),
            metrics_on_main: true,
            history: defaults::HISTORY as usize,
            history_bytes: defaults::HISTORY_BYTES as usize,
            max_channels_per_stream: defaults::MAX_CHANNELS_PER_STREAM as usize,
            max_event_bytes: defaults::MAX_EVENT_BYTES,
            channel_publish_rate: defaults::CHANNEL_PUBLISH_RATE as u32,
            publish_rate: defaults::PUBLISH_RATE as u32,
            shutdown_retry_spread: Duration::from_millis(defaults::SHUTDOWN_RETRY_SPREAD_MS),
            tls: None,
            h2_max_streams: defaults::H2_MAX_STREAMS,
            streams_per_thread: defaults::STREAMS_PER_THREAD as usize,
            redis: None,
            redis_min_replicas: 0,
            redis_wait: Duration::from_millis(defaults::REDIS_WAIT_MS),
            trusted_proxies: Vec::new(),
            auth: None,
            public_channels: Vec::new(),
            demo_login: false,
            demo_session_ttl: Duration::from_secs(defaults::DEMO_SESSION_TTL_SECS),
        }
    }
}

/// A Redis URL (`redis://[:password@]host:port[/db]`, `unix:///path`), parsed. Its
/// `Debug` and `Display` show the address only, never a password.
#[derive(Clone)]
pub struct RedisUrl(pub redis::ConnectionInfo);

impl RedisUrl {
    pub fn parse(url: &str) -> Result<RedisUrl, String> {
        use redis::IntoConnectionInfo as _;
        url.into_connection_info()
            .map(RedisUrl)
            .map_err(|err| format!("not a Redis URL ({err})"))
    }
}

impl std::fmt::Debug for RedisUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RedisUrl({})", self.0.addr())
    }
}

impl std::fmt::Display for RedisUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(self.0.addr(), f)
    }
}

/// Where the Redis store is.
#[derive(Debug, Clone)]
pub enum RedisTarget {
    /// One server (`--redis-url`).
    Url(RedisUrl),
    /// The primary that these Sentinels name (`--redis-sentinel`, `--redis-master-name`),
    /// asked again after every lost connection, so a failover is followed.
    Sentinel {
        sentinels: Vec<SentinelAddr>,
        master_name: String,
    },
}

impl RedisTarget {
    /// Replicas a publish waits for unless `--redis-min-replicas` says otherwise: with
    /// Sentinel one, so that an acknowledged event survives the primary's death; with a
    /// single server none (there may be no replica).
    pub const fn default_min_replicas(&self) -> u32 {
        match self {
            RedisTarget::Url(_) => 0,
            RedisTarget::Sentinel { .. } => 1,
        }
    }
}

/// The address of a Redis Sentinel, `HOST:PORT` (an IPv6 host in brackets).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SentinelAddr {
    pub host: String,
    pub port: u16,
}

impl SentinelAddr {
    pub fn parse(addr: &str) -> Result<SentinelAddr, String> {
        let bad = || format!("{addr:?} is not a Sentinel address like 127.0.0.1:26379");
        let (host, port) = addr.trim().rsplit_once(':').ok_or_else(bad)?;
        let host = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host);
        let port: u16 = port.parse().map_err(|_| bad())?;
        if host.is_empty() || port == 0 || host.contains(['/', '@', ' ', '[', ']']) {
            return Err(bad());
        }
        Ok(SentinelAddr {
            host: host.to_owned(),
            port,
        })
    }
}

impl std::fmt::Display for SentinelAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// Where the certificate and key come from.
#[derive(Clone)]
pub enum TlsSource {
    /// PEM files: a certificate chain and its private key.
    Files { cert: PathBuf, key: PathBuf },
    /// PEM text already in memory (a certificate made by [`crate::serve::tls::self_signed`]).
    Pem { cert: String, key: String },
}

impl std::fmt::Debug for TlsSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TlsSource::Files { cert, key } => f
                .debug_struct("Files")
                .field("cert", cert)
                .field("key", key)
                .finish(),
            // Never print a private key.
            TlsSource::Pem { .. } => f.write_str("Pem { .. }"),
        }
    }
}

/// A setting the server cannot run with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("--cors-origin {0:?} is not an origin like https://example.com")]
    CorsOrigin(String),
    #[error("{name} must be at least {min}")]
    TooSmall { name: &'static str, min: u64 },
    #[error("{name} may be at most {max}")]
    TooLarge { name: &'static str, max: u64 },
}

impl Config {
    /// Checks every setting and normalises the CORS origins (trimmed, no trailing `/`).
    pub fn validate(mut self) -> Result<Config, ConfigError> {
        self.cors_origins = self
            .cors_origins
            .iter()
            .map(|o| normalise_origin(o))
            .collect::<Result<_, _>>()?;
        let at_least = |name, value: u64, min: u64| {
            if value < min {
                Err(ConfigError::TooSmall { name, min })
            } else {
                Ok(())
            }
        };
        let at_most = |name, value: u64, max: u64| {
            if value > max {
                Err(ConfigError::TooLarge { name, max })
            } else {
                Ok(())
            }
        };
        at_least("max_streams", self.max_streams as u64, 1)?;
        at_least("h2_max_streams", u64::from(self.h2_max_streams), 1)?;
        at_least("keep_alive", self.keep_alive.as_millis() as u64, 1)?;
        at_least("stall_timeout", self.stall_timeout.as_millis() as u64, 1)?;
        at_least(
            "header_read_timeout",
            self.header_read_timeout.as_millis() as u64,
            1,
        )?;
        let history = shared::limits::HISTORY;
        at_least("history", self.history as u64, *history.start())?;
        at_most("history", self.history as u64, *history.end())?;
        let channels = shared::channels::limits::MAX_CHANNELS_PER_STREAM;
        at_least(
            "max_channels_per_stream",
            self.max_channels_per_stream as u64,
            *channels.start(),
        )?;
        at_most(
            "max_channels_per_stream",
            self.max_channels_per_stream as u64,
            *channels.end(),
        )?;
        let bytes = shared::channels::limits::MAX_EVENT_BYTES;
        at_least("max_event_bytes", self.max_event_bytes, *bytes.start())?;
        at_most("max_event_bytes", self.max_event_bytes, *bytes.end())?;
        let bytes = shared::channels::limits::HISTORY_BYTES;
        at_least("history_bytes", self.history_bytes as u64, *bytes.start())?;
        at_most("history_bytes", self.history_bytes as u64, *bytes.end())?;
        if self.demo_login && self.auth.is_none() {
            // The demo sign-in signs its own tokens: with no key given, a secret of
            // this run only (its sessions end with the process).
            let secret = crate::auth::random_secret();
            let verifier = crate::auth::Verifier::from_secret(&secret, Default::default())
                .expect("64 random hex digits are a long enough secret");
            self.auth = Some(Arc::new(verifier));
        }
        let rate = shared::limits::PUBLISH_RATE;
        at_least(
            "channel_publish_rate",
            u64::from(self.channel_publish_rate),
            *rate.start(),
        )?;
        at_most(
            "channel_publish_rate",
            u64::from(self.channel_publish_rate),
            *rate.end(),
        )?;
        at_least("redis_wait", self.redis_wait.as_millis() as u64, 1)?;
        at_least("publish_rate", u64::from(self.publish_rate), *rate.start())?;
        at_most("publish_rate", u64::from(self.publish_rate), *rate.end())?;
        Ok(self)
    }
}

/// `*`, or `http(s)://host[:port]` with nothing after it; a trailing `/` is dropped.
fn normalise_origin(origin: &str) -> Result<String, ConfigError> {
    let o = origin.trim().trim_end_matches('/');
    if o == "*" {
        return Ok(o.to_owned());
    }
    let host = o
        .strip_prefix("http://")
        .or_else(|| o.strip_prefix("https://"));
    match host {
        Some(h) if !h.is_empty() && !h.contains(['/', '?', '#', ' ']) => Ok(o.to_owned()),
        _ => Err(ConfigError::CorsOrigin(origin.to_owned())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_are_normalised_or_refused() {
        let with = |origins: &[&str]| {
            Config {
                cors_origins: origins.iter().map(|s| (*s).to_owned()).collect(),
                ..Config::default()
            }
            .validate()
        };
        assert_eq!(
            with(&[" https://a.example/ ", "*", "http://b:8080"])
                .unwrap()
                .cors_origins,
            ["https://a.example", "*", "http://b:8080"]
        );
        for bad in [
            "a.example",
            "ftp://a",
            "https://",
            "https://a/b",
            "http://a?x",
        ] {
            assert_eq!(
                with(&[bad]).unwrap_err(),
                ConfigError::CorsOrigin(bad.to_owned()),
                "{bad}"
            );
        }
    }

    #[test]
    fn sentinel_addresses_are_parsed_or_refused() {
        let a = SentinelAddr::parse("127.0.0.1:26379").unwrap();
        assert_eq!((a.host.as_str(), a.port), ("127.0.0.1", 26379));
        assert_eq!(a.to_string(), "127.0.0.1:26379");
        let a = SentinelAddr::parse("[::1]:26380").unwrap();
        assert_eq!(
            (a.host.as_str(), a.to_string()),
            ("::1", "[::1]:26380".to_owned())
        );
        assert_eq!(
            SentinelAddr::parse("sentinel-1:5000").unwrap().host,
            "sentinel-1"
        );
        for bad in [
            "",
            "host",
            ":26379",
            "host:0",
            "host:x",
            "host:70000",
            "a@b:1",
            "redis://h:1",
        ] {
            assert!(SentinelAddr::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn limits_are_checked() {
        let bad = Config {
            max_streams: 0,
            ..Config::default()
        };
        assert!(matches!(
            bad.validate(),
            Err(ConfigError::TooSmall {
                name: "max_streams",
                ..
            })
        ));
        let bad = Config {
            history: 1_000_001,
            ..Config::default()
        };
        assert!(bad.validate().is_err());
        assert!(Config::default().validate().is_ok());
    }
}
