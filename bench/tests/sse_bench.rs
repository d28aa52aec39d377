//! Runs the real `sse-bench` binary against servers on 127.0.0.1:0: the `warp-naive`
//! peer and the yardstick (clean streams, one process and several), a scripted server
//! whose ticks skip and repeat numbers, scripted shared counters that sse-bench drives
//! itself (one, or two sharing the streams and the increments), and sse-counter itself
//! over HTTPS, with HTTP/1.1 and with HTTP/2.
//! Only counts are asserted, never speed.

use bench::report::{Report, StreamKind, Transport};
use futures_util::StreamExt as _;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt as _, BufReader};
use tokio::process::{Child, Command};
use tokio::time::timeout;
use warp::Filter as _;

/// Starts a peer binary (`program`, with `args`) and returns it with its base URL.
async fn start_peer(program: &str, args: &[&str]) -> (Child, String) {
    start(Command::new(program).args(args)).await
}

/// Starts a server and returns it with the base URL of its `listening on` line.
async fn start(cmd: &mut Command) -> (Child, String) {
    let mut child = cmd
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("the peer starts");
    let stdout = child.stdout.take().unwrap();
    let line = timeout(
        Duration::from_secs(10),
        BufReader::new(stdout).lines().next_line(),
    )
    .await
    .expect("the peer did not print its address in time")
    .unwrap()
    .expect("the peer printed nothing");
    let base = line
        .strip_prefix("listening on ")
        .expect("a `listening on` line")
        .to_owned();
    (child, base)
}

/// The `sse-counter` binary next to this test's own build (target/<profile>/).
///
/// The server is not a dependency of bench (that would build it into every bench
/// binary), so `env!("CARGO_BIN_EXE_...")` cannot name it: `cargo build -p server` is
/// run here, into this test's target directory and profile, which is a no-op when
/// `cargo test --workspace` (as `cargo xtask test` runs it) has just built it, and
/// otherwise builds it, or rebuilds it after a change to the server.
async fn sse_counter_binary() -> PathBuf {
    static BUILT: tokio::sync::OnceCell<PathBuf> = tokio::sync::OnceCell::const_new();
    BUILT
        .get_or_init(|| async {
            let exe = std::env::current_exe().expect("the test knows where it is");
            // target/<profile>/deps/<this test>
            let profile_dir = exe
                .parent()
                .and_then(Path::parent)
                .expect("the test runs from target/<profile>/deps")
                .to_owned();
            let target_dir = profile_dir.parent().expect("a target directory");
            let profile = profile_dir
                .file_name()
                .and_then(|p| p.to_str())
                .expect("a profile directory");
            let profile = if profile == "debug" { "dev" } else { profile };
            let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
            let status = timeout(
                Duration::from_secs(900),
                Command::new(cargo)
                    .args(["build", "--quiet", "-p", "server", "--bin", "sse-counter"])
                    .args(["--profile", profile])
                    .arg("--target-dir")
                    .arg(target_dir)
                    .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
                    .kill_on_drop(true)
                    .status(),
            )
            .await
            .expect("building sse-counter did not finish in time")
            .expect("cargo runs");
            assert!(status.success(), "cargo build -p server failed");
            let bin = profile_dir.join("sse-counter");
            assert!(bin.is_file(), "no {} after the build", bin.display());
            bin
        })
        .await
        .clone()
}

/// sse-counter over TLS with a certificate made at start, as `cargo xtask bench` runs
/// it: HTTP/2 (up to 1,000 streams a connection) and HTTP/1.1 by ALPN.
async fn start_sse_counter_tls() -> (Child, String) {
    let bin = sse_counter_binary().await;
    let (child, base) = start(
        Command::new(bin)
            .args(["--addr", "127.0.0.1:0", "--tls-self-signed"])
            .args(["--h2-max-streams", "1000", "--static-dir", "/nonexistent"])
            .env("SSE_COUNTER_LOG", "error"),
    )
    .await;
    assert!(base.starts_with("https://"), "{base}");
    (child, base)
}

async fn start_warp_naive() -> (Child, String) {
    start_peer(env!("CARGO_BIN_EXE_warp-naive"), &["--addr", "127.0.0.1:0"]).await
}

async fn start_yardstick() -> (Child, String) {
    start_peer(
        env!("CARGO_BIN_EXE_yardstick"),
        &["--addr", "127.0.0.1:0", "--broadcast-interval-ms", "50"],
    )
    .await
}

/// Runs sse-bench with `args` and returns its report, read as the type it printed.
async fn sse_bench(args: &[&str]) -> Report {
    let out = timeout(
        Duration::from_secs(60),
        Command::new(env!("CARGO_BIN_EXE_sse-bench"))
            .args(args)
            .arg("--json")
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("sse-bench did not finish in time")
    .expect("sse-bench starts");
    assert!(
        out.status.success(),
        "sse-bench failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("sse-bench prints its report as JSON")
}

fn clean_run(report: &Report, streams: u64) {
    assert_eq!(report.established, streams, "{report:#?}");
    assert_eq!(report.open_at_window_end, streams, "{report:#?}");
    assert_eq!(report.failed_total, 0, "{report:#?}");
    assert_eq!(report.gaps, 0, "{report:#?}");
    assert_eq!(report.repeats, 0, "{report:#?}");
    assert_eq!(report.resets, 0, "{report:#?}");
    assert!(report.events_in_window > 0, "{report:#?}");
    assert_eq!(report.latency_us.count, report.events_in_window);
    assert_eq!(report.time_to_headers_us.count, streams, "{report:#?}");
}

#[tokio::test]
async fn twenty_streams_from_warp_naive_arrive_whole() {
    let (server, base) = start_warp_naive().await;
    let pid = server.id().unwrap().to_string();
    let url = format!("{base}/api/counter?count=1000&interval_ms=50");
    let report = sse_bench(&[
        &url,
        "--streams",
        "20",
        "--ramp",
        "200",
        "--warmup",
        "0.2",
        "--window",
        "1.5",
        "--server-pid",
        &pid,
    ])
    .await;
    clean_run(&report, 20);
    let server_figures = report.server.expect("server figures with --server-pid");
    assert_eq!(
        (server_figures.pid, server_figures.processes),
        (server.id().unwrap(), 1)
    );
    // Writing every tick of the window costs the server CPU time, no more than its
    // cores can give in the window, and the figure per event is that time over them.
    let cpu = server_figures.cpu_us_window;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    assert!(
        cpu > 0.0,
        "no server CPU for {} events: {report:#?}",
        report.events_in_window
    );
    assert!(
        cpu <= report.window_secs * 1e6 * cores,
        "more CPU than {cores} cores have in the window: {report:#?}"
    );
    // Within a rounding: serde_json's default float parsing may be one ULP off.
    let per_event = cpu / report.events_in_window as f64;
    let reported = server_figures.cpu_us_per_event.expect("CPU per event");
    assert!(
        (reported - per_event).abs() <= per_event * 1e-9,
        "{reported} µs per event reported, {per_event} from the figures: {report:#?}"
    );
    assert!(server_figures.rss_steady_kib > 0);
}

#[tokio::test]
async fn worker_processes_share_the_streams_and_their_figures_merge() {
    let (_server, base) = start_warp_naive().await;
    let url = format!("{base}/api/counter?count=1000&interval_ms=50");
    let report = sse_bench(&[
        &url,
        "--streams",
        "21",
        "--procs",
        "2",
        "--source-ips",
        "3",
        "--warmup",
        "0.2",
        "--window",
        "1",
    ])
    .await;
    clean_run(&report, 21);
    assert_eq!(report.procs, 2);
}

/// A server in this process that sends every stream `frames`, then holds it open.
async fn serve_script(frames: Vec<String>) -> std::net::SocketAddr {
    let route = warp::any().map(move || {
        let frames = frames.clone().into_iter().map(Ok::<_, std::io::Error>);
        warp::reply::stream(
            futures_util::stream::iter(frames).chain(futures_util::stream::pending()),
        )
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(warp::serve(route).incoming(listener).run());
    addr
}

#[tokio::test]
async fn skipped_and_repeated_numbers_are_counted() {
    // Every stream sends 1, 2, 4, 4, 5, then stays open: one gap (3), one repeat.
    let addr = serve_script(
        [1, 2, 4, 4, 5]
            .map(|n| format!("id: {n}\ndata: {{\"num\":{n},\"sent_at_us\":1}}\n\n"))
            .to_vec(),
    )
    .await;
    let report = sse_bench(&[
        &format!("http://{addr}/"),
        "--streams",
        "3",
        "--warmup",
        "0",
        "--window",
        "0.5",
    ])
    .await;
    assert_eq!(report.established, 3, "{report:#?}");
    assert_eq!(report.gaps, 3, "{report:#?}");
    assert_eq!(report.repeats, 3, "{report:#?}");
    assert_eq!(report.failed_total, 0, "{report:#?}");
}

#[tokio::test]
async fn twenty_streams_from_the_yardstick_arrive_whole() {
    let (server, base) = start_yardstick().await;
    let pid = server.id().unwrap().to_string();
    let url = format!("{base}/api/counter?count=1000&interval_ms=50");
    let report = sse_bench(&[
        &url,
        "--streams",
        "20",
        "--ramp",
        "200",
        "--warmup",
        "0.2",
        "--window",
        "1.5",
        "--server-pid",
        &pid,
    ])
    .await;
    clean_run(&report, 20);
    assert_eq!(report.kind, StreamKind::Counter);
    assert!(report.server.is_some());
}

#[tokio::test]
async fn a_yardstick_stream_ends_with_its_count() {
    let (_server, base) = start_yardstick().await;
    let url = format!("{base}/api/counter?count=3&interval_ms=20");
    let report = sse_bench(&[&url, "--streams", "4", "--warmup", "0.3", "--window", "0.3"]).await;
    assert_eq!(report.ended, 4, "{report:#?}");
    assert_eq!((report.failed_total, report.gaps), (0, 0), "{report:#?}");
}

#[tokio::test]
async fn twenty_subscribers_of_the_yardsticks_broadcast_see_every_value_in_two_processes() {
    let (_server, base) = start_yardstick().await;
    let url = format!("{base}/api/shared");
    let report = sse_bench(&[
        &url,
        "--streams",
        "20",
        "--procs",
        "2",
        "--interval-ms",
        "50",
        "--warmup",
        "0.2",
        "--window",
        "1",
    ])
    .await;
    clean_run(&report, 20);
    assert_eq!(report.kind, StreamKind::Shared);
    assert_eq!(report.expected_events_per_sec, Some(400.0));
    assert_eq!(report.publish, None);
}

/// `--groups 4`: the 20 subscribers dealt into 4 groups of 5, each broadcast to one
/// group in turn, so a subscriber hears every 4th broadcast with its group's own
/// values, none skipped: 100 deliveries a second where one group would give 400.
#[tokio::test]
async fn the_yardsticks_groups_each_get_every_fourth_broadcast_with_values_of_their_own() {
    let (_server, base) = start_peer(
        env!("CARGO_BIN_EXE_yardstick"),
        &[
            "--addr",
            "127.0.0.1:0",
            "--broadcast-interval-ms",
            "10",
            "--groups",
            "4",
        ],
    )
    .await;
    let url = format!("{base}/api/shared");
    let report = sse_bench(&[
        &url,
        "--streams",
        "20",
        "--interval-ms",
        "40",
        "--warmup",
        "0.3",
        "--window",
        "1",
    ])
    .await;
    clean_run(&report, 20);
    assert_eq!(report.expected_events_per_sec, Some(500.0));
    // Every group is broadcast to: every stream got events.
    assert_eq!(report.time_to_first_event_us.count, 20, "{report:#?}");
    // Each group's ids go up by one (no gaps above): had every group heard every
    // broadcast, 20 streams would get about 2,000 a second, not about 500.
    assert!(
        report.events_per_sec < 1_000.0,
        "every group heard every broadcast: {report:#?}"
    );
}

/// A scripted shared counter, running in this test's process.
struct ScriptedCounter {
    addr: std::net::SocketAddr,
    /// Streams it was asked for.
    subscribed: Arc<AtomicU64>,
    /// Its value, from 100.
    value: Arc<AtomicU64>,
}

/// A shared counter in the shape of sse-counter's: `GET /api/shared` streams every
/// change (and a heartbeat after each), `POST /api/shared/increment` makes one.
async fn start_scripted_shared_counter() -> ScriptedCounter {
    let (tx, _) = tokio::sync::broadcast::channel::<String>(1024);
    let value = Arc::new(AtomicU64::new(100));
    let subscribed = Arc::new(AtomicU64::new(0));
    let subscribe = {
        let tx = tx.clone();
        let subscribed = Arc::clone(&subscribed);
        warp::path!("api" / "shared").and(warp::get()).map(move || {
            subscribed.fetch_add(1, Ordering::SeqCst);
            let frames = futures_util::stream::unfold(tx.subscribe(), |mut rx| async move {
                let frame = rx.recv().await.ok()?;
                Some((Ok::<_, std::io::Error>(frame), rx))
            });
            warp::reply::stream(frames)
        })
    };
    let counted = Arc::clone(&value);
    let increment = warp::path!("api" / "shared" / "increment")
        .and(warp::post())
        .map(move || {
            let v = value.fetch_add(1, Ordering::SeqCst) + 1;
            let _ = tx.send(format!(
                "id: {v}\ndata: {{\"value\":{v},\"sent_at_us\":{}}}\n\n\
                 event: heartbeat\ndata: {{\"at_us\":1}}\n\n",
                bench::load::unix_us()
            ));
            warp::reply::json(&shared::Incremented { value: v })
        });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(
        warp::serve(subscribe.or(increment))
            .incoming(listener)
            .run(),
    );
    ScriptedCounter {
        addr,
        subscribed,
        value: counted,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_bench_drives_a_shared_counter_and_checks_every_subscriber() {
    let addr = start_scripted_shared_counter().await.addr;
    let report = sse_bench(&[
        &format!("http://{addr}/api/shared"),
        "--streams",
        "5",
        "--publish-rate",
        "40",
        "--warmup",
        "0.3",
        "--window",
        "1",
    ])
    .await;
    clean_run(&report, 5);
    assert_eq!(report.kind, StreamKind::Shared);
    let publish = report.publish.clone().expect("publisher figures");
    assert!(publish.sent > 0, "{report:#?}");
    assert_eq!(publish.ok, publish.sent, "{report:#?}");
    assert_eq!((publish.refused, publish.failed), (0, 0), "{report:#?}");
    assert_eq!(report.expected_events_per_sec, Some(200.0));
}

/// Two servers (the instances of one deployment, as `cargo xtask bench --only cluster`
/// runs it): the streams alternate between them, across both worker processes, and so
/// do the increments; the servers' costs are summed and the store's reported apart.
/// Here each scripted counter keeps its own value, so each stream sees every change of
/// its own server's, and only its server's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_urls_share_the_streams_and_the_increments() {
    let a = start_scripted_shared_counter().await;
    let b = start_scripted_shared_counter().await;
    // The servers run in this process; it stands in for both and for the store.
    let me = std::process::id().to_string();
    let report = sse_bench(&[
        &format!("http://{}/api/shared", a.addr),
        &format!("http://{}/api/shared", b.addr),
        "--streams",
        "6",
        "--procs",
        "2",
        "--publish-rate",
        "40",
        "--warmup",
        "0.3",
        "--window",
        "1",
        "--server-pid",
        &me,
        "--server-pid",
        &me,
        "--store-pid",
        &me,
    ])
    .await;
    clean_run(&report, 6);
    assert_eq!(a.subscribed.load(Ordering::SeqCst), 3);
    assert_eq!(b.subscribed.load(Ordering::SeqCst), 3);
    let publish = report.publish.clone().expect("publisher figures");
    assert_eq!(publish.ok, publish.sent, "{report:#?}");
    assert!(publish.ok_in_window > 0 && publish.ok_in_window < publish.ok);
    let made = |c: &ScriptedCounter| c.value.load(Ordering::SeqCst) - 100;
    assert_eq!(made(&a) + made(&b), publish.ok);
    assert!(made(&a).abs_diff(made(&b)) <= 1, "taken in turn");
    let server = report.server.expect("server figures");
    assert_eq!((server.pid.to_string(), server.processes), (me.clone(), 2));
    let store = report.store.expect("store figures");
    assert_eq!(store.pid.to_string(), me);
    assert!(store.cpu_us_per_increment.is_some(), "{store:?}");
}

#[tokio::test]
async fn increments_a_server_does_not_take_are_counted_as_refused() {
    let (_server, base) = start_yardstick().await;
    let report = sse_bench(&[
        &format!("{base}/api/shared"),
        "--streams",
        "2",
        "--publish-rate",
        "20",
        "--warmup",
        "0",
        "--window",
        "0.5",
    ])
    .await;
    let publish = report.publish.expect("publisher figures");
    assert!(publish.sent > 0);
    assert_eq!(publish.refused, publish.sent, "{publish:?}");
    assert_eq!(publish.errors, ["status: 404 Not Found"]);
}

#[tokio::test]
async fn targets_off_loopback_are_refused() {
    let out = timeout(
        Duration::from_secs(10),
        Command::new(env!("CARGO_BIN_EXE_sse-bench"))
            .arg("http://192.168.1.1:3000/api/counter")
            .output(),
    )
    .await
    .expect("sse-bench did not answer in time")
    .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("loopback"));
}

#[tokio::test]
async fn twenty_http2_streams_over_two_connections_of_sse_counter_arrive_whole() {
    let (server, base) = start_sse_counter_tls().await;
    let pid = server.id().unwrap().to_string();
    let url = format!("{base}/api/counter?count=1000&interval_ms=50");
    let report = sse_bench(&[
        &url,
        "--http2",
        "--connections",
        "2",
        "--streams",
        "20",
        "--ramp",
        "200",
        "--warmup",
        "0.2",
        "--window",
        "1.5",
        "--server-pid",
        &pid,
    ])
    .await;
    clean_run(&report, 20);
    assert_eq!(report.transport, Transport::Http2);
    assert_eq!(report.connections, 2, "{report:#?}");
    assert_eq!(report.time_to_first_event_us.count, 20, "{report:#?}");
    assert!(report.server.is_some());
}

#[tokio::test]
async fn http2_streams_in_two_processes_share_their_connections() {
    let (_server, base) = start_sse_counter_tls().await;
    let url = format!("{base}/api/counter?count=1000&interval_ms=50");
    let report = sse_bench(&[
        &url,
        "--http2",
        "--connections",
        "3",
        "--streams",
        "21",
        "--procs",
        "2",
        "--warmup",
        "0.2",
        "--window",
        "1",
    ])
    .await;
    clean_run(&report, 21);
    assert_eq!(report.connections, 3, "{report:#?}");
}

#[tokio::test]
async fn http2_streams_give_their_window_back_as_they_read() {
    // A 1 KiB window holds about 17 ticks: a stream that did not give back what it
    // read would stall well before the window ends, and lose its ticks to it.
    let (_server, base) = start_sse_counter_tls().await;
    let url = format!("{base}/api/counter?count=1000&interval_ms=20");
    let report = sse_bench(&[
        &url,
        "--http2",
        "--connections",
        "1",
        "--h2-stream-window",
        "1024",
        "--streams",
        "2",
        "--warmup",
        "0.5",
        "--window",
        "1.5",
    ])
    .await;
    clean_run(&report, 2);
    assert!(
        report.events_in_window >= 2 * 40,
        "{} events in 1.5 s at 50/s on each of 2 streams: {report:#?}",
        report.events_in_window
    );
}

#[tokio::test]
async fn https_http1_streams_of_sse_counter_arrive_whole_one_connection_each() {
    let (_server, base) = start_sse_counter_tls().await;
    let url = format!("{base}/api/counter?count=1000&interval_ms=50");
    let report = sse_bench(&[&url, "--streams", "4", "--warmup", "0.2", "--window", "1"]).await;
    clean_run(&report, 4);
    assert_eq!(report.transport, Transport::Https1);
    assert_eq!(report.connections, 4, "{report:#?}");
}

#[tokio::test]
async fn http2_is_refused_without_tls() {
    let out = timeout(
        Duration::from_secs(10),
        Command::new(env!("CARGO_BIN_EXE_sse-bench"))
            .args(["http://127.0.0.1:1/api/counter", "--http2"])
            .output(),
    )
    .await
    .expect("sse-bench did not answer in time")
    .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("https://"));
}

#[tokio::test]
async fn a_channel_stream_counts_each_channels_skipped_and_repeated_numbers() {
    // Two channels interleaved, ids rising but not consecutive: `a` skips n 2 (one
    // gap), the event of id 9 comes twice (one repeat), `b` is whole.
    let frames = [(3, "a", 1), (5, "b", 1), (7, "a", 3), (8, "b", 2), (9, "b", 3), (9, "b", 3)]
        .map(|(seq, channel, n)| {
            format!(
                "id: e1-{seq}\ndata: {{\"channel\":\"{channel}\",\"data\":{{\"n\":{n}}},\"sent_at_us\":1}}\n\n"
            )
        });
    let addr = serve_script(frames.to_vec()).await;
    let report = sse_bench(&[
        &format!("http://{addr}/api/events?channel=a&channel=b"),
        "--streams",
        "2",
        "--warmup",
        "0",
        "--window",
        "0.5",
    ])
    .await;
    assert_eq!(report.kind, StreamKind::Channels, "{report:#?}");
    assert_eq!(report.established, 2, "{report:#?}");
    assert_eq!((report.gaps, report.repeats), (2, 2), "{report:#?}");
    assert_eq!(report.failed_total, 0, "{report:#?}");
}

/// A fresh HS256 secret for sse-counter and a token that may publish everywhere,
/// minted by `sse-counter token`, as files in a directory of this test's own.
async fn secret_and_token(name: &str) -> (PathBuf, PathBuf) {
    let dir = std::env::temp_dir().join(format!("sse-bench-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let secret = dir.join("jwt-secret");
    std::fs::write(&secret, "0123456789abcdef0123456789abcdef-test-only").unwrap();
    let out = timeout(
        Duration::from_secs(30),
        Command::new(sse_counter_binary().await)
            .args(["token", "--publish", "*", "--ttl-secs", "600"])
            .arg("--jwt-secret-file")
            .arg(&secret)
            .output(),
    )
    .await
    .expect("sse-counter token did not finish in time")
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let token = dir.join("token");
    std::fs::write(&token, &out.stdout).unwrap();
    (secret, token)
}

async fn start_sse_counter_with_secret(secret: &Path) -> (Child, String) {
    start(
        Command::new(sse_counter_binary().await)
            .args(["--addr", "127.0.0.1:0", "--static-dir", "/nonexistent"])
            .args([
                "--channel-publish-rate",
                "1000000",
                "--publish-rate",
                "1000000",
            ])
            .arg("--jwt-secret-file")
            .arg(secret)
            // Subscribed without a token: the channels are public.
            .args(["--public-channel", "*"])
            .env("SSE_COUNTER_LOG", "error"),
    )
    .await
}

#[tokio::test]
async fn streams_spread_over_channels_of_sse_counter_get_every_publish_of_theirs() {
    let (secret, token) = secret_and_token("channels").await;
    let (server, base) = start_sse_counter_with_secret(&secret).await;
    let pid = server.id().unwrap().to_string();
    let report = sse_bench(&[
        &format!("{base}/api/events?channel=bench/{{i}}"),
        "--channels",
        "3",
        "--streams",
        "6",
        "--procs",
        "2",
        "--publish-rate",
        "60",
        "--publish-path",
        "/api/publish",
        "--publish-token-file",
        token.to_str().unwrap(),
        "--warmup",
        "0.3",
        "--window",
        "1",
        "--server-pid",
        &pid,
    ])
    .await;
    clean_run(&report, 6);
    assert_eq!(report.kind, StreamKind::Channels);
    let publish = report.publish.clone().expect("publisher figures");
    assert_eq!(publish.ok, publish.sent, "{report:#?}");
    assert_eq!(publish.path, "/api/publish");
    // Each stream gets its channel's third of the publishes: 20 a second.
    assert_eq!(report.expected_events_per_sec, Some(6.0 * 20.0));
    // Each publish in the window reaches the two streams of its channel.
    let lo = 2 * publish.ok_in_window.saturating_sub(6);
    assert!(
        report.events_in_window >= lo && report.events_in_window <= 2 * publish.ok_in_window + 6,
        "{report:#?}"
    );
}

#[tokio::test]
async fn a_publish_flood_without_subscribers_counts_what_the_server_took() {
    let (secret, token) = secret_and_token("flood").await;
    let (_server, base) = start_sse_counter_with_secret(&secret).await;
    for path in ["/api/publish", "/api/shared/increment"] {
        let report = sse_bench(&[
            &format!("{base}/api/events?channel=bench/0"),
            "--streams",
            "0",
            "--publish-flood",
            "2",
            "--publish-path",
            path,
            "--publish-token-file",
            token.to_str().unwrap(),
            "--warmup",
            "0.2",
            "--window",
            "0.5",
        ])
        .await;
        let publish = report.publish.clone().expect("publisher figures");
        assert_eq!(publish.flood_connections, 2);
        assert!(publish.ok_in_window > 0, "{report:#?}");
        assert_eq!((publish.refused, publish.failed), (0, 0), "{report:#?}");
        assert_eq!(report.established, 0);
    }
}
