//! Runs the real `sse-bench` binary against servers on 127.0.0.1:0: the `warp-naive`
//! peer (a clean stream, one process and several) and a scripted server whose ticks
//! skip and repeat numbers. Only counts are asserted, never speed.

use futures_util::StreamExt as _;
use serde_json::Value;
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt as _, BufReader};
use tokio::process::{Child, Command};
use tokio::time::timeout;
use warp::Filter as _;

/// Starts the warp-naive peer and returns it with its base URL.
async fn start_warp_naive() -> (Child, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_warp-naive"))
        .args(["--addr", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("warp-naive starts");
    let stdout = child.stdout.take().unwrap();
    let line = timeout(
        Duration::from_secs(10),
        BufReader::new(stdout).lines().next_line(),
    )
    .await
    .expect("warp-naive did not print its address in time")
    .unwrap()
    .expect("warp-naive printed nothing");
    let base = line
        .strip_prefix("listening on ")
        .expect("a `listening on` line")
        .to_owned();
    (child, base)
}

/// Runs sse-bench with `args` and returns its JSON report.
async fn sse_bench(args: &[&str]) -> Value {
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
    serde_json::from_slice(&out.stdout).expect("sse-bench prints JSON")
}

fn clean_run(report: &Value, streams: u64) {
    assert_eq!(report["established"], streams, "{report:#}");
    assert_eq!(report["open_at_window_end"], streams, "{report:#}");
    assert_eq!(report["failed_total"], 0, "{report:#}");
    assert_eq!(report["gaps"], 0, "{report:#}");
    assert_eq!(report["repeats"], 0, "{report:#}");
    assert!(
        report["events_in_window"].as_u64().unwrap() > 0,
        "{report:#}"
    );
    assert_eq!(report["time_to_headers_us"]["count"], streams, "{report:#}");
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
    let server_figures = &report["server"];
    assert!(
        server_figures["cpu_us_window"].as_f64().is_some(),
        "{report:#}"
    );
    assert!(server_figures["rss_steady_kib"].as_u64().unwrap() > 0);
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
    assert_eq!(report["procs"], 2);
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
    assert_eq!(report["established"], 3, "{report:#}");
    assert_eq!(report["gaps"], 3, "{report:#}");
    assert_eq!(report["repeats"], 3, "{report:#}");
    assert_eq!(report["failed_total"], 0, "{report:#}");
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
