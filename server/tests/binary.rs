//! The `sse-counter` binary: the `listening on` line, SIGTERM ending open streams with
//! exit status 0, the `SSE_COUNTER_*` environment fallbacks, and bad flags refused.

mod support;

use reqwest::StatusCode;
use shared::EndReason;
use std::net::SocketAddr;
use std::process::Stdio;
use std::time::Duration;
use support::{within, within_for, Finish, RawConn, Sse};
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, BufReader};
use tokio::process::{Child, Command};

const BIN: &str = env!("CARGO_BIN_EXE_sse-counter");

/// The binary with a clean environment (so no `SSE_COUNTER_*` of the caller leaks in)
/// and a page directory that does not exist.
fn command() -> Command {
    let mut cmd = Command::new(BIN);
    cmd.env_clear()
        .arg("--static-dir")
        .arg(std::env::temp_dir().join("sse-counter-tests-no-such-dir"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    cmd
}

/// A running binary and the address it printed.
struct Running {
    child: Child,
    addr: SocketAddr,
}

async fn start(mut cmd: Command) -> Running {
    let mut child = cmd.arg("--addr").arg("127.0.0.1:0").spawn().expect("spawn");
    let stdout = child.stdout.take().expect("stdout");
    let mut line = String::new();
    within(
        "the `listening on` line",
        BufReader::new(stdout).read_line(&mut line),
    )
    .await
    .expect("read stdout");
    let addr = line
        .trim_end()
        .strip_prefix("listening on http://")
        .unwrap_or_else(|| panic!("first stdout line: {line:?}"));
    let addr: SocketAddr = addr.parse().expect("an address");
    assert_eq!(addr.ip().to_string(), "127.0.0.1");
    assert_ne!(addr.port(), 0, "the real port, not 0");
    Running { child, addr }
}

impl Running {
    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn sigterm(&self) {
        let pid = self.child.id().expect("still running");
        let status = std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -TERM {pid}");
    }

    /// Waits for the exit, returning the status and what it wrote to stderr.
    async fn exit(mut self) -> (std::process::ExitStatus, String) {
        let status = within_for(
            Duration::from_secs(10),
            "the binary to exit",
            self.child.wait(),
        )
        .await
        .expect("wait");
        let mut stderr = String::new();
        if let Some(mut pipe) = self.child.stderr.take() {
            within("reading stderr", pipe.read_to_string(&mut stderr))
                .await
                .expect("read stderr");
        }
        (status, stderr)
    }
}

#[tokio::test]
async fn sigterm_ends_open_streams_and_exits_zero() {
    let bin = start(command()).await;
    let client = support::client();
    let open = |path: &str| {
        let req = client.get(bin.url(path));
        async move { Sse::new(within("a stream of the binary", req.send()).await.unwrap()) }
    };
    let mut idle = open("/api/counter?count=5&interval_ms=60000").await;
    let mut ticking = open("/api/counter?count=100000&interval_ms=20").await;
    assert_eq!(
        (idle.status, ticking.status),
        (StatusCode::OK, StatusCode::OK)
    );
    assert_eq!(ticking.tick().await.num, 1);

    bin.sigterm();

    let (_, end, finish) = idle.until_end().await;
    assert_eq!((end.reason, end.last), (EndReason::Shutdown, 0));
    assert_eq!(finish, Finish::Closed);
    let (ticks, end, finish) = ticking.until_end().await;
    assert_eq!(end.reason, EndReason::Shutdown);
    assert_eq!(end.last, ticks.last().map_or(1, |t| t.num));
    assert_eq!(finish, Finish::Closed);

    let (status, stderr) = bin.exit().await;
    assert_eq!(status.code(), Some(0), "exit status; stderr:\n{stderr}");
}

#[tokio::test]
async fn environment_variables_are_fallbacks_for_flags() {
    let mut cmd = command();
    cmd.env("SSE_COUNTER_RETRY_MS", "1234");
    // No spread: the `end` below comes without a new `retry:` before it.
    cmd.env("SSE_COUNTER_SHUTDOWN_RETRY_SPREAD_MS", "0");
    let bin = start(cmd).await;
    let mut conn = RawConn::connect(bin.addr).await;
    conn.get("/api/counter?count=1&interval_ms=60000", &[])
        .await;
    assert_eq!(conn.head().await.status, 200);
    assert_eq!(conn.frame().await, Ok("retry: 1234\n\n".to_owned()));
    bin.sigterm();
    assert_eq!(
        conn.frame().await,
        Ok("event: end\ndata: {\"reason\":\"shutdown\",\"last\":0}\n\n".to_owned())
    );
    let (status, stderr) = bin.exit().await;
    assert!(status.success(), "{status}; stderr:\n{stderr}");

    // A flag wins over its variable.
    let mut cmd = command();
    cmd.env("SSE_COUNTER_RETRY_MS", "1234")
        .args(["--retry-ms", "99"]);
    let bin = start(cmd).await;
    let mut conn = RawConn::connect(bin.addr).await;
    conn.get("/api/counter?count=1&interval_ms=60000", &[])
        .await;
    assert_eq!(conn.head().await.status, 200);
    assert_eq!(conn.frame().await, Ok("retry: 99\n\n".to_owned()));
    bin.sigterm();
    let (status, stderr) = bin.exit().await;
    assert!(status.success(), "{status}; stderr:\n{stderr}");
}

/// Runs the binary to its end; it must fail, and say so on stderr with each of `says`.
async fn assert_refused(args: &[&str], says: &[&str]) {
    let mut cmd = command();
    cmd.args(args);
    let out = within_for(
        Duration::from_secs(10),
        "the binary to exit on a bad flag",
        cmd.output(),
    )
    .await
    .expect("run the binary");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "{args:?} was accepted; stderr:\n{stderr}"
    );
    assert!(
        out.stdout.is_empty(),
        "{args:?}: nothing on stdout, no `listening on`"
    );
    for word in says {
        assert!(
            stderr.contains(word),
            "{args:?}: {word:?} in stderr:\n{stderr}"
        );
    }
}

#[tokio::test]
async fn bad_flags_exit_non_zero_with_a_clear_message() {
    assert_refused(
        &["--retry-ms", "abc"],
        &["--retry-ms", "invalid value 'abc'"],
    )
    .await;
    assert_refused(&["--max-streams", "0"], &["--max-streams", "0"]).await;
    assert_refused(&["--keep-alive-secs", "0"], &["--keep-alive-secs", "0"]).await;
    assert_refused(&["--addr", "nowhere"], &["--addr", "nowhere"]).await;
    assert_refused(&["--no-such-flag"], &["--no-such-flag"]).await;
    assert_refused(
        &["--cors-origin", "app.example"],
        &["app.example", "origin"],
    )
    .await;

    // An address already taken: refused with the address in the message.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().unwrap().to_string();
    assert_refused(&["--addr", &addr], &["cannot listen on", &addr]).await;

    // The same checks apply to the environment variables.
    let mut cmd = command();
    cmd.env("SSE_COUNTER_RETRY_MS", "soon");
    let out = within_for(Duration::from_secs(10), "the binary to exit", cmd.output())
        .await
        .expect("run the binary");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "stderr:\n{stderr}");
    assert!(stderr.contains("soon"), "{stderr}");
}
