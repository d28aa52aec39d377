//! The server's configuration: one struct, its defaults (which the binary's flags show
//! as theirs) and its validation, so every caller of [`crate::run`] gets the same checks.

use std::path::PathBuf;
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
}

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
    /// How many recent changes of the shared counter are kept for replay.
    pub history: usize,
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

    // Several instances behind a load balancer.
    /// Where the shared counter is kept: in Redis at this URL, shared by every instance
    /// that names it, or in this process (`None`, the default).
    pub redis_url: Option<crate::store::RedisUrl>,
    /// Peers trusted to name the client in `X-Forwarded-For` (the load balancer): the
    /// per-client limit on increments then counts the address they name, not theirs.
    pub trusted_proxies: Vec<std::net::IpAddr>,
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
            publish_rate: defaults::PUBLISH_RATE as u32,
            shutdown_retry_spread: Duration::from_millis(defaults::SHUTDOWN_RETRY_SPREAD_MS),
            tls: None,
            h2_max_streams: defaults::H2_MAX_STREAMS,
            redis_url: None,
            trusted_proxies: Vec::new(),
        }
    }
}

/// Where the certificate and key come from.
#[derive(Clone)]
pub enum TlsSource {
    /// PEM files: a certificate chain and its private key.
    Files { cert: PathBuf, key: PathBuf },
    /// PEM text already in memory (a certificate made by [`self_signed`]).
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
        let rate = shared::limits::PUBLISH_RATE;
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
