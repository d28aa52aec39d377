//! Runs the real `sse-bench` binary against servers on 127.0.0.1:0: the `warp-naive`
//! peer and the yardstick (clean streams, one process and several), a scripted server
//! whose ticks skip and repeat numbers, and a scripted shared counter that sse-bench
//! drives itself. Only counts are asserted, never speed.

use bench::report::{Report, StreamKind};
use futures_util::StreamExt as _;
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
    let mut child = Command::new(program)
        .args(args)
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
    assert!(server_figures.cpu_us_window >= 0.0, "{report:#?}");
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

#[tokio::test]
async fn skipped_and_repeated_numbers_are_counted() {
    // Every stream sends 1, 2, 4, 4, 5, then stays open: one gap (3), one repeat.
    let route = warp::any().map(|| {
        let frames = [1, 2, 4, 4, 5].map(|n| {
            Ok::<_, std::io::Error>(format!(
                "id: {n}\ndata: {{\"num\":{n},\"sent_at_us\":1}}\n\n"
            ))
        });
        warp::reply::stream(
            futures_util::stream::iter(frames).chain(futures_util::stream::pending()),
        )
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(warp::serve(route).incoming(listener).run());
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

/// A shared counter in the shape of sse-counter's: `GET /api/shared` streams every
/// change (and a heartbeat after each), `POST /api/shared/increment` makes one.
async fn start_scripted_shared_counter() -> std::net::SocketAddr {
    let (tx, _) = tokio::sync::broadcast::channel::<String>(1024);
    let value = Arc::new(AtomicU64::new(100));
    let subscribe = {
        let tx = tx.clone();
        warp::path!("api" / "shared").and(warp::get()).map(move || {
            let frames = futures_util::stream::unfold(tx.subscribe(), |mut rx| async move {
                let frame = rx.recv().await.ok()?;
                Some((Ok::<_, std::io::Error>(frame), rx))
            });
            warp::reply::stream(frames)
        })
    };
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
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_bench_drives_a_shared_counter_and_checks_every_subscriber() {
    let addr = start_scripted_shared_counter().await;
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
