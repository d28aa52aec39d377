//! The `sse-counter` binary: the `listening on` line, SIGTERM ending open streams with
//! exit status 0, the `SSE_COUNTER_*` environment fallbacks, and bad flags refused.

mod support;

use reqwest::StatusCode;
use shared::EndReason;
use support::binary::launch;
use support::{Endpoint as _, Finish};

#[tokio::test]
async fn sigterm_ends_open_streams_and_exits_zero() {
    let mut bin = launch().start().await;
    let mut idle = bin.sse("/api/counter?count=5&interval_ms=60000", &[]).await;
    let mut ticking = bin
        .sse("/api/counter?count=100000&interval_ms=20", &[])
        .await;
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

    let status = bin.exit().await;
    assert_eq!(
        status.code(),
        Some(0),
        "exit status; stderr:\n{}",
        bin.log()
    );
}

#[tokio::test]
async fn environment_variables_are_fallbacks_for_flags() {
    // No spread: the `end` below comes without a new `retry:` before it.
    let mut bin = launch()
        .env("SSE_COUNTER_RETRY_MS", "1234")
        .env("SSE_COUNTER_SHUTDOWN_RETRY_SPREAD_MS", "0")
        .start()
        .await;
    let mut conn = bin.raw().await;
    conn.get("/api/counter?count=1&interval_ms=60000", &[])
        .await;
    assert_eq!(conn.head().await.status, 200);
    assert_eq!(conn.frame().await, Ok("retry: 1234\n\n".to_owned()));
    bin.sigterm();
    assert_eq!(
        conn.frame().await,
        Ok("event: end\ndata: {\"reason\":\"shutdown\",\"last\":0}\n\n".to_owned())
    );
    let status = bin.exit().await;
    assert!(status.success(), "{status}; stderr:\n{}", bin.log());

    // A flag wins over its variable.
    let mut bin = launch()
        .env("SSE_COUNTER_RETRY_MS", "1234")
        .args(["--retry-ms", "99"])
        .start()
        .await;
    let mut conn = bin.raw().await;
    conn.get("/api/counter?count=1&interval_ms=60000", &[])
        .await;
    assert_eq!(conn.head().await.status, 200);
    assert_eq!(conn.frame().await, Ok("retry: 99\n\n".to_owned()));
    bin.sigterm();
    let status = bin.exit().await;
    assert!(status.success(), "{status}; stderr:\n{}", bin.log());
}

/// Runs the binary to its end; it must fail, and say so on stderr with each of `says`.
async fn assert_refused(args: &[&str], says: &[&str]) {
    let out = launch().args(args).output().await;
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
    let out = launch().env("SSE_COUNTER_RETRY_MS", "soon").output().await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "stderr:\n{stderr}");
    assert!(stderr.contains("soon"), "{stderr}");
}
