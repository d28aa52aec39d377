//! The `sse-counter` binary as the tests run it: one way to start it ([`launch`]), its
//! `listening on <scheme>://HOST:PORT` line, its log, signals, exit and memory.

use super::http::{client, Endpoint};
use super::{no_page_dir, poll_until, within_for, TIMEOUT};
use std::ffi::{OsStr, OsString};
use std::net::SocketAddr;
use std::process::{ExitStatus, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt as _, AsyncRead, BufReader};
use tokio::process::{Child, Command};
use tokio::task::JoinHandle;

/// The binary Cargo built for these tests.
pub const BIN: &str = env!("CARGO_BIN_EXE_sse-counter");

/// How long the binary may take to print its `listening on` line: a process start on a
/// machine the tests themselves keep busy, not a measurement.
pub const START_LIMIT: Duration = Duration::from_secs(30);

/// How long the binary may take to exit once it has been told to.
pub const EXIT_LIMIT: Duration = Duration::from_secs(10);

/// The address the binary listens on unless a test passes `--addr`.
const ADDR: &str = "127.0.0.1:0";

/// How the binary is run: arguments and environment. Build one with [`launch`].
#[derive(Debug, Clone, Default)]
pub struct Launch {
    args: Vec<OsString>,
    envs: Vec<(OsString, OsString)>,
}

/// The binary with a clean environment (so no `SSE_COUNTER_*` of the caller leaks in),
/// on `127.0.0.1:0` and with a page directory that does not exist, unless the test
/// passes `--addr` or `--static-dir` itself.
pub fn launch() -> Launch {
    Launch::default()
}

impl Launch {
    pub fn arg(mut self, arg: impl AsRef<OsStr>) -> Launch {
        self.args.push(arg.as_ref().to_owned());
        self
    }

    pub fn args<A: AsRef<OsStr>>(mut self, args: impl IntoIterator<Item = A>) -> Launch {
        self.args
            .extend(args.into_iter().map(|a| a.as_ref().to_owned()));
        self
    }

    pub fn env(mut self, key: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> Launch {
        self.envs
            .push((key.as_ref().to_owned(), value.as_ref().to_owned()));
        self
    }

    /// Whether the test passed `flag` (as `--flag value` or `--flag=value`).
    fn has(&self, flag: &str) -> bool {
        self.args.iter().any(|a| {
            let a = a.to_string_lossy();
            a == flag
                || a.strip_prefix(flag)
                    .is_some_and(|rest| rest.starts_with('='))
        })
    }

    fn command(&self) -> Command {
        let mut cmd = Command::new(BIN);
        cmd.env_clear().envs(self.envs.iter().cloned());
        if !self.has("--addr") {
            cmd.args(["--addr", ADDR]);
        }
        if !self.has("--static-dir") {
            cmd.arg("--static-dir").arg(no_page_dir());
        }
        cmd.args(&self.args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        cmd
    }

    /// Starts the binary and waits for its `listening on` line.
    pub async fn start(self) -> Binary {
        let mut child = self
            .command()
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {BIN}: {e}"));
        let log = Arc::new(Mutex::new(String::new()));
        let stderr = child.stderr.take().expect("piped stderr");
        let log_drained = tokio::spawn(drain(stderr, Some(Arc::clone(&log))));
        let mut stdout = BufReader::new(child.stdout.take().expect("piped stdout"));
        let mut line = Vec::new();
        let n = within_for(
            START_LIMIT,
            "the `listening on` line of sse-counter",
            stdout.read_until(b'\n', &mut line),
        )
        .await
        .expect("read the stdout of sse-counter");
        if n == 0 {
            let status = within_for(EXIT_LIMIT, "sse-counter to exit", child.wait()).await;
            let _ = within_for(
                EXIT_LIMIT,
                "the stderr of sse-counter to close",
                log_drained,
            )
            .await;
            panic!(
                "sse-counter exited ({status:?}) without a `listening on` line; stderr:\n{}",
                log.lock().expect("log lock")
            );
        }
        // Nothing more is expected on stdout; keep the pipe open and empty all the same.
        tokio::spawn(drain(stdout.into_inner(), None));
        let line = String::from_utf8_lossy(&line);
        let (scheme, addr) = parse_listening(&line);
        if !self.has("--addr") {
            assert_eq!(addr.ip().to_string(), "127.0.0.1", "{line:?}");
        }
        assert_ne!(addr.port(), 0, "the real port, not 0: {line:?}");
        Binary {
            child,
            addr,
            base: format!("{scheme}://{addr}"),
            client: client(),
            log,
            log_drained: Some(log_drained),
            limit: TIMEOUT,
        }
    }

    /// Runs the binary to its end, for arguments it must refuse.
    pub async fn output(self) -> Output {
        within_for(
            EXIT_LIMIT,
            "sse-counter to exit by itself",
            self.command().output(),
        )
        .await
        .expect("run sse-counter")
    }
}

/// The scheme and the address of a `listening on <scheme>://HOST:PORT` line.
pub fn parse_listening(line: &str) -> (&str, SocketAddr) {
    let url = line
        .trim_end()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("first stdout line: {line:?}"));
    let (scheme, authority) = url
        .split_once("://")
        .unwrap_or_else(|| panic!("no scheme in {line:?}"));
    let addr = authority
        .parse()
        .unwrap_or_else(|e| panic!("an address in {line:?}: {e}"));
    (scheme, addr)
}

/// Reads `pipe` to its end, appending its lines to `log` if one is given.
async fn drain(pipe: impl AsyncRead + Unpin, log: Option<Arc<Mutex<String>>>) {
    let mut pipe = BufReader::new(pipe);
    let mut line = Vec::new();
    while let Ok(n) = pipe.read_until(b'\n', &mut line).await {
        if n == 0 {
            break;
        }
        if let Some(log) = &log {
            log.lock()
                .expect("log lock")
                .push_str(&String::from_utf8_lossy(&line));
        }
        line.clear();
    }
}

/// A running `sse-counter`, SIGKILLed if it is dropped before it exits. Its stderr is
/// kept as [`Binary::log`], and printed if the test fails.
pub struct Binary {
    child: Child,
    pub addr: SocketAddr,
    /// `scheme://HOST:PORT` as the binary printed it, no trailing slash.
    pub base: String,
    pub client: reqwest::Client,
    log: Arc<Mutex<String>>,
    /// Ends when the binary's stderr closes: after that, the log is complete.
    log_drained: Option<JoinHandle<()>>,
    /// See [`Endpoint::limit`].
    limit: Duration,
}

impl Binary {
    /// The same binary, with requests through `client` (one that trusts its
    /// certificate, say).
    pub fn with_client(mut self, client: reqwest::Client) -> Binary {
        self.client = client;
        self
    }

    /// The same binary, with waits on it bounded by `limit` instead of [`TIMEOUT`].
    pub fn with_limit(mut self, limit: Duration) -> Binary {
        self.limit = limit;
        self
    }

    pub fn pid(&self) -> u32 {
        self.child.id().expect("sse-counter is still running")
    }

    /// Sends the signal `name` (`TERM`, `INT`, ...) with `kill`.
    pub fn signal(&self, name: &str) {
        let pid = self.pid();
        let status = std::process::Command::new("kill")
            .args([&format!("-{name}"), &pid.to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{name} {pid}");
    }

    pub fn sigterm(&self) {
        self.signal("TERM");
    }

    /// Waits for the binary to exit, within [`EXIT_LIMIT`]; after it, [`Binary::log`]
    /// holds all it wrote.
    pub async fn exit(&mut self) -> ExitStatus {
        let status = within_for(EXIT_LIMIT, "sse-counter to exit", self.child.wait())
            .await
            .expect("wait for sse-counter");
        if let Some(drained) = self.log_drained.take() {
            within_for(EXIT_LIMIT, "the stderr of sse-counter to close", drained)
                .await
                .expect("the stderr reader panicked");
        }
        status
    }

    /// Whether the binary has exited, without waiting.
    pub fn has_exited(&mut self) -> bool {
        self.child
            .try_wait()
            .expect("the status of sse-counter")
            .is_some()
    }

    /// What the binary wrote to stderr so far (its tracing log).
    pub fn log(&self) -> String {
        self.log.lock().expect("log lock").clone()
    }

    /// Waits until the log contains `needle`, within [`Endpoint::limit`].
    pub async fn wait_for_log(&self, needle: &str) {
        poll_until(
            self.limit,
            &format!("{needle:?} in the log of sse-counter"),
            async || {
                let log = self.log();
                if log.contains(needle) {
                    Ok(())
                } else {
                    Err(log)
                }
            },
        )
        .await
    }

    /// How many sockets the process has open (its listeners included), from
    /// `/proc/PID/fd`: a connection counts until the server has closed it.
    pub fn open_sockets(&self) -> usize {
        let dir = format!("/proc/{}/fd", self.pid());
        std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{dir}: {e}"))
            .filter_map(|fd| std::fs::read_link(fd.ok()?.path()).ok())
            .filter(|target| target.to_string_lossy().starts_with("socket:"))
            .count()
    }

    /// Resident memory in KiB, from /proc.
    pub fn rss_kib(&self) -> u64 {
        self.proc_status_kib("VmRSS:")
    }

    /// The most resident memory the process has had, in KiB.
    pub fn peak_rss_kib(&self) -> u64 {
        self.proc_status_kib("VmHWM:")
    }

    fn proc_status_kib(&self, field: &str) -> u64 {
        let path = format!("/proc/{}/status", self.pid());
        let status = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        status
            .lines()
            .find_map(|l| l.strip_prefix(field))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or_else(|| panic!("{field} in {path}"))
    }
}

impl Endpoint for Binary {
    fn addr(&self) -> SocketAddr {
        self.addr
    }

    fn base(&self) -> &str {
        &self.base
    }

    fn client(&self) -> &reqwest::Client {
        &self.client
    }

    fn limit(&self) -> Duration {
        self.limit
    }
}

impl Drop for Binary {
    fn drop(&mut self) {
        if std::thread::panicking() {
            if let Ok(log) = self.log.lock() {
                eprintln!("--- sse-counter stderr ---\n{log}");
            }
        }
    }
}
