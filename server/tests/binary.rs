//! The `sse-counter` binary: the `listening on` line, SIGTERM ending open streams with
//! exit status 0, the `SSE_COUNTER_*` environment fallbacks, bad flags refused, the JWT
//! keys checked at start and the `token` command.

mod support;

use reqwest::StatusCode;
use server::auth::{Rules, Verifier};
use shared::EndReason;
use support::binary::{launch, BIN, EXIT_LIMIT};
use support::{within_for, Endpoint as _, Finish, TempDir};

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

/// A file of `contents` in `dir`.
fn write(dir: &TempDir, name: &str, contents: &[u8]) -> std::path::PathBuf {
    let path = dir.path().join(name);
    std::fs::write(&path, contents).expect("write a key file");
    path
}

/// The RSA public key of `tests/data` (test-only).
fn rsa_public_key() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/test-only-rsa-public.pem")
}

#[tokio::test]
async fn jwt_keys_are_checked_before_the_server_starts() {
    let dir = TempDir::new("jwt-keys");
    let short = write(&dir, "short", b"0123456789abcdef0123456789abcde\n");
    let short = short.to_str().unwrap();
    let out = launch().args(["--jwt-secret-file", short]).output().await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "stderr:\n{stderr}");
    assert!(out.stdout.is_empty(), "no `listening on`");
    for word in ["--jwt-secret-file", short, "31 bytes", "at least 32"] {
        assert!(stderr.contains(word), "{word:?} in stderr:\n{stderr}");
    }
    // The same through the environment.
    let out = launch()
        .env("SSE_COUNTER_JWT_SECRET_FILE", short)
        .output()
        .await;
    assert_eq!(out.status.code(), Some(2));

    let missing = dir.path().join("missing.pem");
    let missing = missing.to_str().unwrap();
    assert_refused(
        &["--jwt-public-key-file", missing],
        &["--jwt-public-key-file", missing],
    )
    .await;
    let private = write(
        &dir,
        "private.pem",
        include_bytes!("data/test-only-rsa-private.pem"),
    );
    assert_refused(
        &["--jwt-public-key-file", private.to_str().unwrap()],
        &["private key"],
    )
    .await;
    let secret = write(&dir, "secret", &[b'k'; 32]);
    let public = rsa_public_key();
    assert_refused(
        &[
            "--jwt-secret-file",
            secret.to_str().unwrap(),
            "--jwt-public-key-file",
            public.to_str().unwrap(),
        ],
        &["cannot be used with"],
    )
    .await;
    assert_refused(&["--jwt-audience", "sse"], &["--jwt-secret-file"]).await;

    // Good keys: the server starts and says which algorithm it checks.
    for (flag, path, algorithm) in [
        ("--jwt-secret-file", secret.as_path(), "HS256"),
        ("--jwt-public-key-file", public.as_path(), "RS256"),
    ] {
        let mut bin = launch().arg(flag).arg(path).start().await;
        bin.wait_for_log(algorithm).await;
        bin.sigterm();
        let status = bin.exit().await;
        assert!(status.success(), "{status}; stderr:\n{}", bin.log());
    }
}

#[tokio::test]
async fn the_token_command_prints_a_token_the_server_accepts() {
    let dir = TempDir::new("jwt-token");
    let secret = write(&dir, "secret", b"0123456789abcdef0123456789abcdef\n");
    let mut cmd = tokio::process::Command::new(BIN);
    cmd.env_clear()
        .arg("token")
        .arg("--jwt-secret-file")
        .arg(&secret)
        .args(["--publish", "rooms/*", "--publish", "news"])
        .args(["--subscribe", "users/ada", "--revoke"])
        .args(["--sub", "ada", "--sid", "s-1", "--ttl-secs", "120"])
        .args(["--audience", "sse", "--issuer", "me"]);
    let out = within_for(EXIT_LIMIT, "sse-counter token", cmd.output())
        .await
        .expect("run sse-counter token");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{}; stderr:\n{stderr}", out.status);
    let stdout = String::from_utf8(out.stdout).expect("utf-8");
    let token = stdout
        .strip_suffix('\n')
        .expect("one line, ending in a newline");
    assert!(!token.contains(['\n', ' ']), "only the token: {stdout:?}");

    let rules = Rules {
        audience: Some("sse".into()),
        issuer: Some("me".into()),
    };
    let claims = Verifier::from_secret_file(&secret, rules)
        .expect("the secret")
        .verify(token)
        .expect("the token verifies with the same secret");
    assert_eq!(claims.sub.as_deref(), Some("ada"));
    assert_eq!(claims.sid.as_deref(), Some("s-1"));
    assert_eq!(claims.exp - claims.iat.expect("iat"), 120);
    assert!(claims.sse.may_publish("rooms/a/b") && claims.sse.may_publish("news"));
    assert!(!claims.sse.may_publish("users/ada"));
    assert!(claims.sse.may_subscribe("users/ada") && !claims.sse.may_subscribe("rooms/a"));
    assert!(claims.sse.revoke);

    // Another secret does not accept it; a bad pattern or a short secret is refused.
    let other = Verifier::from_secret(&[b'x'; 32], Rules::default()).unwrap();
    assert!(other.verify(token).is_err());
    for (args, says) in [
        (vec!["--publish", "a*b"], "--publish"),
        (vec!["--ttl-secs", "0"], "--ttl-secs"),
    ] {
        let out = tokio::process::Command::new(BIN)
            .env_clear()
            .arg("token")
            .arg("--jwt-secret-file")
            .arg(&secret)
            .args(&args)
            .output()
            .await
            .expect("run sse-counter token");
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(out.stdout.is_empty(), "{args:?}");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains(says),
            "{args:?}"
        );
    }
    let short = write(&dir, "short", b"short");
    let out = tokio::process::Command::new(BIN)
        .env_clear()
        .arg("token")
        .arg("--jwt-secret-file")
        .arg(&short)
        .output()
        .await
        .expect("run sse-counter token");
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stdout.is_empty());
    assert!(String::from_utf8_lossy(&out.stderr).contains("at least 32"));
}

/// The descriptor table is sized for `--max-streams` connections before the first is
/// accepted: grown later, in a process of several threads, each doubling made an
/// `accept` wait for an RCU grace period (docs/performance.md, time to headers).
#[tokio::test]
async fn the_descriptor_table_holds_max_streams_from_the_start() {
    let mut bin = launch()
        .args(["--max-streams", "3000", "--threads", "2"])
        .start()
        .await;
    let status = std::fs::read_to_string(format!("/proc/{}/status", bin.pid()))
        .expect("read the server's /proc status");
    let size: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("FDSize:"))
        .and_then(|v| v.trim().parse().ok())
        .expect("FDSize in /proc/PID/status");
    // Capped by the open-files limit the test runs under.
    let limit = std::fs::read_to_string(format!("/proc/{}/limits", bin.pid()))
        .expect("read the server's /proc limits")
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(3)?.parse::<u64>().ok())
        .expect("the open-files limit");
    assert!(
        size >= (3000 + 1024).min(limit),
        "FDSize {size} (open-files limit {limit})"
    );
    bin.sigterm();
    let status = bin.exit().await;
    assert!(status.success(), "{status}; stderr:\n{}", bin.log());
}
