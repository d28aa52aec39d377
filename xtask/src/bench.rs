//! `cargo xtask bench`: runs every benchmark scenario against sse-counter, the seed's
//! Express handler and the naive warp server, alternating them, measures the bare
//! loopback write, and writes `docs/benchmarks.md` with a chart, `docs/benchmarks.svg`.
//! Loopback only; every run is bounded by sse-bench's own limits.

use crate::util::{cargo, display, has, machine, output, project_root, run, step};
use anyhow::{bail, Context as _};
use serde_json::Value;
use std::fmt::Write as _;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The express version the seed names; package-lock.json pins it.
const EXPRESS_VERSION: &str = "4.17.1";
/// Ticks asked of every stream: far more than any run lasts, so none ends early.
const COUNT: u64 = 1_000_000;
/// The most streams one server process can hold under a 20,000 open-files limit,
/// leaving room for its listener, logs and runtime.
const MAX_HELD: u64 = 19_900;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Small runs that finish in about two minutes: fewer streams, shorter windows,
    /// one repeat. The targets at full size are then marked as not measured.
    #[arg(long)]
    quick: bool,
    /// Runs of each scenario per server, alternating ours, Express, naive warp
    /// (default 3, or 1 with --quick).
    #[arg(long)]
    repeats: Option<usize>,
}

/// One load shape, run against every server.
#[derive(Debug, Clone)]
struct Scenario {
    name: &'static str,
    streams: u64,
    interval_ms: u64,
    /// Streams opened per second; 0 opens them all at once.
    ramp: f64,
    warmup: f64,
    window: f64,
    procs: u32,
}

impl Scenario {
    fn title(&self) -> String {
        let rate = 1000.0 / self.interval_ms as f64;
        let how = if self.ramp > 0.0 {
            format!("opened at {}/s", self.ramp)
        } else {
            "opened all at once".to_owned()
        };
        format!(
            "{}: {} streams at {rate} Hz, {how}",
            self.name,
            thousands(self.streams)
        )
    }
}

fn scenarios(quick: bool) -> Vec<Scenario> {
    let s = |name, streams, interval_ms, ramp, warmup, window, procs| Scenario {
        name,
        streams,
        interval_ms,
        ramp,
        warmup,
        window,
        procs,
    };
    if quick {
        vec![
            s("10 Hz", 300, 100, 1000.0, 1.0, 4.0, 1),
            s("1 Hz", 2_000, 1000, 2000.0, 2.0, 5.0, 2),
            s("most held", 5_000, 1000, 2500.0, 2.0, 5.0, 2),
            s("burst", 2_000, 1000, 0.0, 1.0, 3.0, 2),
        ]
    } else {
        vec![
            s("10 Hz", 1_000, 100, 1000.0, 2.0, 15.0, 1),
            s("1 Hz", 10_000, 1000, 2000.0, 3.0, 15.0, 2),
            s("most held", MAX_HELD, 1000, 2000.0, 3.0, 15.0, 2),
            s("burst", 10_000, 1000, 0.0, 2.0, 5.0, 2),
        ]
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Peer {
    Ours,
    Express,
    Naive,
}

const PEERS: [Peer; 3] = [Peer::Ours, Peer::Express, Peer::Naive];

impl Peer {
    fn label(self) -> &'static str {
        match self {
            Peer::Ours => "sse-counter",
            Peer::Express => "Express (seed)",
            Peer::Naive => "naive warp",
        }
    }

    fn slug(self) -> &'static str {
        match self {
            Peer::Ours => "ours",
            Peer::Express => "express",
            Peer::Naive => "warp-naive",
        }
    }
}

/// Everything measured: `runs[scenario][peer]` holds one report per repeat (`Null` for a
/// run that failed), `floors` the bare-write cost of each floor run in µs.
struct Results {
    runs: Vec<[Vec<Value>; 3]>,
    floors: Vec<f64>,
    failures: Vec<String>,
}

pub fn run_bench(args: Args) -> anyhow::Result<()> {
    let root = project_root();
    let repeats = args
        .repeats
        .unwrap_or(if args.quick { 1 } else { 3 })
        .max(1);
    let command = format!(
        "cargo xtask bench{}{}",
        if args.quick { " --quick" } else { "" },
        args.repeats
            .map(|r| format!(" --repeats {r}"))
            .unwrap_or_default()
    );
    express_installed()?;
    step("building the servers and the load generator (release)");
    run(cargo().args(["build", "--release", "-p", "server", "-p", "bench"]))?;
    let nofile = raise_nofile_limit()?;
    let logs = root.join("target/bench");
    std::fs::create_dir_all(&logs)?;
    let plan = scenarios(args.quick);
    let load_before = loadavg();
    let started = Instant::now();
    let mut results = Results {
        runs: plan.iter().map(|_| Default::default()).collect(),
        floors: Vec::new(),
        failures: Vec::new(),
    };
    for (si, sc) in plan.iter().enumerate() {
        step(sc.title());
        for rep in 0..repeats {
            // The floor too is measured next to every round, so its median sees the
            // same machine as the servers' do.
            match floor(&root) {
                Ok(f) => results.floors.push(f),
                Err(e) => results.failures.push(format!("floor: {e:#}")),
            }
            for (pi, peer) in PEERS.into_iter().enumerate() {
                let log = logs.join(format!("{}-{}-{}.log", slug(sc.name), peer.slug(), rep + 1));
                let report = match run_one(&root, sc, peer, &log, nofile) {
                    Ok(r) => r,
                    Err(e) => {
                        let msg = format!(
                            "{} against {}, run {}: {e:#}",
                            sc.name,
                            peer.label(),
                            rep + 1
                        );
                        step(format!("run failed: {msg}"));
                        results.failures.push(msg);
                        Value::Null
                    }
                };
                results.runs[si][pi].push(report);
            }
        }
    }
    let took = started.elapsed();
    let meta = Meta {
        command,
        repeats,
        quick: args.quick,
        took,
        load: (load_before, loadavg()),
        server_tree: server_tree(),
    };
    let raw = serde_json::json!({
        "scenarios": plan.iter().map(|s| s.title()).collect::<Vec<_>>(),
        "runs": results.runs.iter().map(|r| r.to_vec()).collect::<Vec<_>>(),
        "floors": results.floors,
    });
    std::fs::write(
        logs.join("results.json"),
        serde_json::to_string_pretty(&raw)?,
    )?;
    let docs = root.join("docs");
    std::fs::create_dir_all(&docs)?;
    chart(&plan, &results, &docs.join("benchmarks.svg"))?;
    let md = render(&plan, &results, &meta)?;
    std::fs::write(docs.join("benchmarks.md"), md)?;
    step(format!(
        "wrote docs/benchmarks.md and docs/benchmarks.svg in {:.0} s (raw figures and server logs in target/bench/)",
        took.as_secs_f64()
    ));
    Ok(())
}

fn slug(name: &str) -> String {
    name.replace(' ', "-")
}

/// Installs the Express peer's locked dependencies unless they are already there.
fn express_installed() -> anyhow::Result<()> {
    if !has("node") || !has("npm") {
        bail!("node and npm are needed for the Express peer: install them (e.g. `apt-get install nodejs npm`), then run again");
    }
    let dir = project_root().join("bench/peers/express");
    let installed = std::fs::read_to_string(dir.join("node_modules/express/package.json"))
        .ok()
        .and_then(|t| serde_json::from_str::<Value>(&t).ok())
        .and_then(|v| v["version"].as_str().map(str::to_owned));
    if installed.as_deref() == Some(EXPRESS_VERSION) {
        return Ok(());
    }
    step(format!(
        "installing the Express peer's dependencies (express {EXPRESS_VERSION}, from package-lock.json)"
    ));
    let status = Command::new("npm")
        .args(["ci", "--no-audit", "--no-fund"])
        .current_dir(&dir)
        .status()
        .context("cannot run npm")?;
    anyhow::ensure!(status.success(), "`npm ci` in bench/peers/express failed");
    Ok(())
}

/// Raises this process's open-files soft limit to the hard limit, which the servers and
/// sse-bench inherit (the server binary does not raise its own).
fn raise_nofile_limit() -> anyhow::Result<u64> {
    let (_, hard) = rlimit::Resource::NOFILE.get()?;
    let soft = rlimit::increase_nofile_limit(hard)?;
    if soft < MAX_HELD + 100 {
        step(format!(
            "the open-files limit is {soft}: the `most held` scenario will open fewer than {MAX_HELD} streams"
        ));
    }
    Ok(soft)
}

/// A server under test, its stdout and stderr going to a log file.
struct Server {
    child: Child,
    base: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(root: &Path, peer: Peer, sc: &Scenario, log: &Path) -> anyhow::Result<Server> {
    let release = root.join("target/release");
    let mut cmd = match peer {
        Peer::Ours => {
            let mut c = Command::new(release.join("sse-counter"));
            c.args(["--addr", "127.0.0.1:0", "--max-streams", "20000"])
                // No page is served in a benchmark; the server only warns about it.
                .args(["--static-dir", "/nonexistent"]);
            c
        }
        Peer::Express => {
            let mut c = Command::new("node");
            c.arg(root.join("bench/peers/express/server.js"))
                .env("PORT", "0")
                .env("INTERVAL_MS", sc.interval_ms.to_string())
                .env("COUNT", COUNT.to_string());
            c
        }
        Peer::Naive => {
            let mut c = Command::new(release.join("warp-naive"));
            c.args(["--addr", "127.0.0.1:0"]);
            c
        }
    };
    let err_log = std::fs::File::create(log)?;
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::from(err_log))
        .spawn()
        .with_context(|| format!("cannot start {}", display(&cmd)))?;
    let stdout = child.stdout.take().context("no stdout")?;
    let (tx, rx) = std::sync::mpsc::channel();
    let out_log = log.with_extension("stdout.log");
    // Reads the `listening on` line, then keeps draining: a server blocks once a pipe
    // nobody reads is full (Express logs every closed stream).
    std::thread::spawn(move || {
        let mut lines = BufReader::new(stdout).lines();
        let first = lines.next().and_then(Result::ok);
        let _ = tx.send(first);
        if let Ok(mut f) = std::fs::File::create(out_log) {
            for line in lines.map_while(Result::ok) {
                let _ = std::io::Write::write_all(&mut f, format!("{line}\n").as_bytes());
            }
        }
    });
    // From here the server is killed on every way out.
    let mut server = Server {
        child,
        base: String::new(),
    };
    let line = rx
        .recv_timeout(Duration::from_secs(30))
        .ok()
        .flatten()
        .with_context(|| {
            format!(
                "{} did not say where it listens (see {})",
                peer.label(),
                log.display()
            )
        })?;
    server.base = line
        .strip_prefix("listening on ")
        .with_context(|| format!("{} printed {line:?}", peer.label()))?
        .to_owned();
    Ok(server)
}

fn run_one(
    root: &Path,
    sc: &Scenario,
    peer: Peer,
    log: &Path,
    nofile: u64,
) -> anyhow::Result<Value> {
    let server = start(root, peer, sc, log)?;
    let url = match peer {
        Peer::Express => format!("{}/streaming", server.base),
        _ => format!(
            "{}/api/counter?count={COUNT}&interval_ms={}",
            server.base, sc.interval_ms
        ),
    };
    let streams = sc.streams.min(nofile.saturating_sub(100));
    let ramp_secs = if sc.ramp > 0.0 {
        streams as f64 / sc.ramp
    } else {
        0.0
    };
    // sse-bench's own bound: its ramp, two 10 s timeouts, warm-up, window, and slack.
    let duration = (ramp_secs + 21.0 + sc.warmup + sc.window + 10.0).ceil() as u64;
    let pid = server.child.id().to_string();
    let mut cmd = Command::new(root.join("target/release/sse-bench"));
    cmd.arg(&url)
        .args(["--streams", &streams.to_string()])
        .args(["--ramp", &sc.ramp.to_string()])
        .args(["--warmup", &sc.warmup.to_string()])
        .args(["--window", &sc.window.to_string()])
        .args(["--procs", &sc.procs.to_string()])
        .args(["--interval-ms", &sc.interval_ms.to_string()])
        .args(["--duration", &duration.to_string()])
        .args(["--server-pid", &pid])
        .arg("--json");
    eprintln!("$ {}", display(&cmd));
    let out = cmd
        .stderr(Stdio::inherit())
        .output()
        .context("cannot run sse-bench")?;
    anyhow::ensure!(
        out.status.success(),
        "sse-bench exited with {} (the server's log: {})",
        out.status,
        log.strip_prefix(root).unwrap_or(log).display()
    );
    let report: Value = serde_json::from_slice(&out.stdout).context("sse-bench's JSON")?;
    eprintln!(
        "  {}: {} established, {} failed, {:.0} events/s, {} µs CPU/event, {} KiB/stream, headers p99 {} ms",
        peer.label(),
        report["established"],
        report["failed_total"],
        report["events_per_sec"].as_f64().unwrap_or(0.0),
        fmt(cpu(&report), 2),
        fmt(mem_kib(&report), 2),
        fmt(headers_p99_ms(&report), 1),
    );
    drop(server);
    Ok(report)
}

/// The floor: CPU µs of one tick-sized write to a loopback socket.
fn floor(root: &Path) -> anyhow::Result<f64> {
    let text = output(
        Command::new(root.join("target/release/floor"))
            .args(["--pairs", "1000", "--writes", "100000", "--json"]),
    )
    .context("the floor program failed")?;
    let v: Value = serde_json::from_str(&text)?;
    v["cpu_us_per_write"]
        .as_f64()
        .context("no cpu_us_per_write from floor")
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

/// The commit the server was built from, and whether server/ had local changes.
fn server_tree() -> String {
    let commit = output(Command::new("git").args(["rev-parse", "--short", "HEAD"]))
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|| "unknown".into());
    let dirty =
        output(Command::new("git").args(["status", "--porcelain", "--", "server", "shared"]))
            .is_some_and(|s| !s.trim().is_empty());
    if dirty {
        format!("{commit} with uncommitted changes in server/ or shared/")
    } else {
        commit
    }
}

struct Meta {
    command: String,
    repeats: usize,
    quick: bool,
    took: Duration,
    load: (String, String),
    server_tree: String,
}

// ---- reading the reports ----

fn num(v: &Value) -> Option<f64> {
    v.as_f64()
}

fn cpu(r: &Value) -> Option<f64> {
    num(&r["server"]["cpu_us_per_event"])
}

fn mem_kib(r: &Value) -> Option<f64> {
    num(&r["server"]["rss_per_stream_bytes"]).map(|b| b / 1024.0)
}

fn ms(r: &Value, hist: &str, at: &str) -> Option<f64> {
    num(&r[hist][at]).map(|us| us / 1000.0)
}

fn headers_p99_ms(r: &Value) -> Option<f64> {
    ms(r, "time_to_headers_us", "p99")
}

fn median(mut xs: Vec<f64>) -> Option<f64> {
    xs.retain(|x| x.is_finite());
    if xs.is_empty() {
        return None;
    }
    xs.sort_by(f64::total_cmp);
    let n = xs.len();
    Some(if n % 2 == 1 {
        xs[n / 2]
    } else {
        (xs[n / 2 - 1] + xs[n / 2]) / 2.0
    })
}

/// The median over a peer's repeats of one figure.
fn med(reports: &[Value], f: impl Fn(&Value) -> Option<f64>) -> Option<f64> {
    median(
        reports
            .iter()
            .filter(|r| !r.is_null())
            .filter_map(f)
            .collect(),
    )
}

fn fmt(x: Option<f64>, decimals: usize) -> String {
    x.map_or_else(|| "n/a".into(), |x| format!("{x:.decimals$}"))
}

fn thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn ratio(ours: Option<f64>, peer: Option<f64>) -> String {
    match (ours, peer) {
        (Some(a), Some(b)) if b > 0.0 && a / b < 0.1 => format!("{:.3}×", a / b),
        (Some(a), Some(b)) if b > 0.0 => format!("{:.2}×", a / b),
        _ => "n/a".into(),
    }
}

/// Reads one figure from a report.
type Getter = fn(&Value) -> Option<f64>;

/// One row of a scenario's table.
struct Row {
    label: &'static str,
    get: Getter,
    decimals: usize,
    /// Whether an ours/peer ratio means something for this figure.
    ratio: bool,
}

fn rows() -> Vec<Row> {
    let r = |label, get, decimals, ratio| Row {
        label,
        get,
        decimals,
        ratio,
    };
    vec![
        r("server CPU per event (µs)", cpu, 2, true),
        r("server memory per stream (KiB)", mem_kib, 2, true),
        r("established", |v| num(&v["established"]), 0, false),
        r("failed", |v| num(&v["failed_total"]), 0, false),
        r(
            "events/s in window",
            |v| num(&v["events_per_sec"]),
            0,
            false,
        ),
        r(
            "events/s expected",
            |v| num(&v["expected_events_per_sec"]),
            0,
            false,
        ),
        r("gaps", |v| num(&v["gaps"]), 0, false),
        r("repeats", |v| num(&v["repeats"]), 0, false),
        r(
            "time to headers p50 (ms)",
            |v| ms(v, "time_to_headers_us", "p50"),
            2,
            true,
        ),
        r("time to headers p99 (ms)", headers_p99_ms, 2, true),
        r(
            "time to first event p99 (ms)",
            |v| ms(v, "time_to_first_event_us", "p99"),
            1,
            false,
        ),
        r(
            "delivery latency p50 (ms)",
            |v| ms(v, "latency_us", "p50"),
            3,
            true,
        ),
        r(
            "delivery latency p99 (ms)",
            |v| ms(v, "latency_us", "p99"),
            3,
            true,
        ),
        r(
            "delivery latency max (ms)",
            |v| ms(v, "latency_us", "max"),
            1,
            false,
        ),
        r(
            "server cores busy",
            |v| num(&v["server"]["cpu_cores"]),
            2,
            false,
        ),
        r(
            "server RSS steady (MiB)",
            |v| num(&v["server"]["rss_steady_kib"]).map(|k| k / 1024.0),
            1,
            false,
        ),
    ]
}

/// Whether a target is met, not met (with the gap), or was not measured at its size.
fn status(met: Option<bool>, gap: String, measured_at_size: bool) -> String {
    match (met, measured_at_size) {
        (None, _) => "not measured (a run failed)".into(),
        (Some(true), true) => "**met**".into(),
        (Some(false), true) => format!("**not met**: {gap}"),
        (Some(true), false) => "met at the size --quick runs; not measured at full size".into(),
        (Some(false), false) => {
            format!("not met at the size --quick runs ({gap}); not measured at full size")
        }
    }
}

fn render(plan: &[Scenario], res: &Results, meta: &Meta) -> anyhow::Result<String> {
    let floor = median(res.floors.clone());
    let ours = |si: usize| &res.runs[si][0][..];
    let mut md = String::new();
    writeln!(md, "# Benchmarks\n")?;
    writeln!(
        md,
        "sse-counter against what a user would otherwise run, on the same machine in the same run: \
         the seed's Express handler ([`bench/peers/express/`](../bench/peers/express/server.js)), the \
         straightforward warp server ([`bench/src/bin/warp-naive.rs`](../bench/src/bin/warp-naive.rs)), \
         and the floor: the CPU cost of one tick-sized `write` to a loopback TCP socket \
         ([`bench/src/bin/floor.rs`](../bench/src/bin/floor.rs)). The load comes from \
         [`sse-bench`](../bench/src/bin/sse-bench.rs) on the same machine. Written by the command \
         below; every figure is the median of the repeats.\n"
    )?;
    writeln!(md, "```\n{}\n```\n", meta.command)?;
    writeln!(md, "## Machine\n")?;
    let version = |prog: &str, arg: &str| {
        output(Command::new(prog).arg(arg))
            .map_or_else(|| "unknown".into(), |s| s.trim().to_owned())
    };
    writeln!(md, "- {}", machine())?;
    writeln!(
        md,
        "- {}; node {} (the seed names node 10.16.3; express {EXPRESS_VERSION} as pinned)",
        version("rustc", "--version"),
        version("node", "--version")
    )?;
    writeln!(
        md,
        "- server built from {} (release profile)",
        meta.server_tree
    )?;
    writeln!(
        md,
        "- load average {} before, {} after; the run took {:.0} s with {} repeat{} per scenario and server",
        meta.load.0,
        meta.load.1,
        meta.took.as_secs_f64(),
        meta.repeats,
        if meta.repeats == 1 { "" } else { "s" }
    )?;
    let busy = |load: &str| {
        load.split_whitespace()
            .next()
            .and_then(|l| l.parse::<f64>().ok())
            .is_some_and(|l| l > 1.0)
    };
    if busy(&meta.load.0) || busy(&meta.load.1) {
        writeln!(
            md,
            "- **the machine was busy with other work during the run** (load average above 1 on \
             {} cores): the figures are noisy, latency and time to headers most of all; see the \
             spread over the repeats under each table.",
            std::thread::available_parallelism().map_or(0, |n| n.get())
        )?;
    }
    if meta.quick {
        writeln!(
            md,
            "- **--quick**: smaller scenarios and one repeat, to check the harness; the targets at full \
             size need `cargo xtask bench`."
        )?;
    }
    writeln!(md)?;

    // The targets.
    writeln!(md, "## Targets\n")?;
    writeln!(md, "| target | sse-counter measured | status |")?;
    writeln!(md, "| --- | --- | --- |")?;
    let steady: Vec<usize> = (0..plan.len()).filter(|&i| plan[i].ramp > 0.0).collect();
    let worst = steady
        .iter()
        .filter_map(|&i| med(ours(i), cpu).map(|c| (i, c)))
        .max_by(|a, b| a.1.total_cmp(&b.1));
    {
        let measured = match (worst, floor) {
            (Some((i, c)), Some(f)) => format!(
                "{c:.2} µs per event = {:.2}× the floor ({f:.2} µs), worst of the steady scenarios ({})",
                c / f,
                plan[i].name
            ),
            _ => "n/a".into(),
        };
        let met = worst.zip(floor).map(|((_, c), f)| c <= 1.3 * f);
        let gap = worst
            .zip(floor)
            .map(|((_, c), f)| format!("{:.2}× the floor, {:.2} µs above 1.3×", c / f, c - 1.3 * f))
            .unwrap_or_default();
        writeln!(
            md,
            "| server CPU per delivered event ≤ 1.3× the bare-write floor | {measured} | {} |",
            status(met, gap, true)
        )?;
    }
    let by_name = |name: &str| plan.iter().position(|s| s.name == name);
    if let Some(i) = by_name("1 Hz") {
        let m = med(ours(i), mem_kib);
        let at_size = plan[i].streams >= 10_000;
        let gap = m
            .map(|k| format!("{k:.2} KiB, {:.2} KiB over", k - 4.0))
            .unwrap_or_default();
        writeln!(
            md,
            "| resident memory ≤ 4 KiB per open stream at 10,000 streams | {} KiB per stream at {} streams | {} |",
            fmt(m, 2),
            thousands(plan[i].streams),
            status(m.map(|k| k <= 4.0), gap, at_size)
        )?;
    }
    if let Some(i) = by_name("most held") {
        let runs: Vec<&Value> = ours(i).iter().filter(|r| !r.is_null()).collect();
        let sc = &plan[i];
        let held = med(ours(i), |v| num(&v["open_at_window_end"]));
        let failed: f64 = runs.iter().filter_map(|r| num(&r["failed_total"])).sum();
        let gaps: f64 = runs.iter().filter_map(|r| num(&r["gaps"])).sum();
        let repeats: f64 = runs.iter().filter_map(|r| num(&r["repeats"])).sum();
        let p99 = med(ours(i), |v| ms(v, "latency_us", "p99"));
        let mut problems = Vec::new();
        if held.is_some_and(|h| h < sc.streams as f64) {
            problems.push(format!(
                "held {} of {}",
                fmt(held, 0),
                thousands(sc.streams)
            ));
        }
        if failed > 0.0 {
            problems.push(format!("{failed} failed"));
        }
        if gaps + repeats > 0.0 {
            problems.push(format!("{gaps} gaps, {repeats} repeats"));
        }
        if p99.is_some_and(|p| p > 1.0) {
            problems.push(format!("latency p99 {} ms", fmt(p99, 2)));
        }
        let met = (!runs.is_empty() && held.is_some()).then_some(problems.is_empty());
        // The status goes by the median; a run above the limit is still named.
        let p99s: Vec<f64> = runs
            .iter()
            .filter_map(|r| ms(r, "latency_us", "p99"))
            .collect();
        let p99_range = if p99s.len() > 1 {
            let lo = p99s.iter().copied().fold(f64::INFINITY, f64::min);
            let hi = p99s.iter().copied().fold(0.0, f64::max);
            format!(" (median; runs {lo:.3}–{hi:.3} ms)")
        } else {
            String::new()
        };
        let slow = p99s.iter().filter(|&&p| p > 1.0).count();
        let slow_note = if slow > 0 && met == Some(true) {
            format!(
                " in the median; {slow} of {} runs had latency p99 above 1 ms",
                p99s.len()
            )
        } else {
            String::new()
        };
        writeln!(
            md,
            "| 19,900 streams held at 1 Hz: zero failures, no gaps, no repeats, latency p99 ≤ 1 ms | {} held of {}, {failed} failed, {gaps} gaps, {repeats} repeats, latency p99 {} ms{} | {}{} |",
            held.map_or_else(|| "n/a".into(), |h| thousands(h as u64)),
            thousands(sc.streams),
            fmt(p99, 3),
            p99_range,
            status(met, problems.join(", "), sc.streams >= MAX_HELD),
            slow_note
        )?;
    }
    if let Some(i) = by_name("burst") {
        let p99 = med(ours(i), headers_p99_ms);
        let gap = p99
            .map(|p| format!("p99 {p:.1} ms, {:.1} ms over", p - 50.0))
            .unwrap_or_default();
        writeln!(
            md,
            "| {} streams opened in a burst, time to headers p99 ≤ 50 ms | p99 {} ms at {} streams | {} |",
            thousands(10_000),
            fmt(p99, 1),
            thousands(plan[i].streams),
            status(p99.map(|p| p <= 50.0), gap, plan[i].streams >= 10_000)
        )?;
    }
    writeln!(md)?;
    writeln!(
        md,
        "![Server CPU per delivered event and resident memory per open stream](benchmarks.svg)\n"
    )?;

    // One table per scenario.
    for (si, sc) in plan.iter().enumerate() {
        writeln!(md, "## {}\n", sc.title())?;
        writeln!(
            md,
            "{} client process{}, {} s warm-up, {} s steady window.\n",
            sc.procs,
            if sc.procs == 1 { "" } else { "es" },
            sc.warmup,
            sc.window
        )?;
        writeln!(md, "| | sse-counter | Express (seed) | naive warp | floor | ours / Express | ours / naive |")?;
        writeln!(md, "| --- | ---: | ---: | ---: | ---: | ---: | ---: |")?;
        for row in rows() {
            let vals: Vec<Option<f64>> = (0..3).map(|pi| med(&res.runs[si][pi], row.get)).collect();
            let floor_cell = if row.label.starts_with("server CPU per event") {
                fmt(floor, 2)
            } else {
                String::new()
            };
            let (r1, r2) = if row.ratio {
                (ratio(vals[0], vals[1]), ratio(vals[0], vals[2]))
            } else {
                (String::new(), String::new())
            };
            writeln!(
                md,
                "| {} | {} | {} | {} | {floor_cell} | {r1} | {r2} |",
                row.label,
                fmt(vals[0], row.decimals),
                fmt(vals[1], row.decimals),
                fmt(vals[2], row.decimals),
            )?;
        }
        if let (Some(c), Some(f)) = (med(ours(si), cpu), floor) {
            writeln!(
                md,
                "\nsse-counter's CPU per event is {:.2}× the bare-write floor.",
                c / f
            )?;
        }
        if res.runs[si][0].len() > 1 {
            writeln!(md, "\nSpread over the repeats (min–max):\n")?;
            for (pi, peer) in PEERS.into_iter().enumerate() {
                let runs = &res.runs[si][pi];
                let spread = |get: Getter, decimals: usize| {
                    let xs: Vec<f64> = runs
                        .iter()
                        .filter(|r| !r.is_null())
                        .filter_map(get)
                        .collect();
                    let lo = xs.iter().copied().reduce(f64::min);
                    let hi = xs.iter().copied().reduce(f64::max);
                    format!("{}–{}", fmt(lo, decimals), fmt(hi, decimals))
                };
                writeln!(
                    md,
                    "- {}: CPU per event {} µs, memory per stream {} KiB, latency p99 {} ms, time to headers p99 {} ms",
                    peer.label(),
                    spread(cpu, 1),
                    spread(mem_kib, 1),
                    spread(|v| ms(v, "latency_us", "p99"), 1),
                    spread(headers_p99_ms, 1),
                )?;
            }
        }
        let errors: Vec<String> = (0..3)
            .flat_map(|pi| {
                res.runs[si][pi].iter().flat_map(move |r| {
                    r["errors"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(|e| e.as_str())
                        .map(move |e| format!("{}: {e}", PEERS[pi].label()))
                })
            })
            .collect();
        if !errors.is_empty() {
            writeln!(md, "\nErrors the clients saw (first few per run):\n")?;
            for e in errors.iter().take(12) {
                writeln!(md, "- `{e}`")?;
            }
        }
        writeln!(md)?;
    }
    if !res.failures.is_empty() {
        writeln!(md, "## Runs that failed\n")?;
        for f in &res.failures {
            writeln!(md, "- {f}")?;
        }
        writeln!(md)?;
    }
    writeln!(md, "## How it is measured\n")?;
    writeln!(
        md,
        "- Each run starts a fresh server process, waits for its `listening on` line, and runs \
         `sse-bench` with `--server-pid`. Servers run in the order sse-counter, Express, naive warp, \
         repeated, so drift in the machine's load falls on all three alike. The floor runs before \
         each round.\n\
         - sse-bench opens the streams at the ramp rate over source addresses 127.0.0.1–127.0.0.16 \
         (one client process, or two, each with its share), waits until every stream is open or \
         failed, waits the warm-up, then counts ticks for the window. It parses every stream with a \
         conforming SSE parser (eventsource-stream) and checks each stream's `num` for gaps and \
         repeats.\n\
         - **CPU per event**: the server's CPU time over the window (summed from \
         `/proc/PID/task/*/schedstat`, cross-checked with utime+stime of `/proc/PID/stat`) divided by \
         the ticks the clients received in the window. **Memory per stream**: VmRSS in the middle of \
         the window minus VmRSS before the first connect, divided by the streams open. \
         **Latency**: the client's wall clock at parse time minus the tick's `sent_at_us`; the client \
         and the server share the machine's two cores, so it includes the client's own scheduling.\n\
         - **Floor**: one thread writes a {}-byte tick frame round-robin to 1,000 connected loopback \
         sockets (Nagle off) while a tokio runtime on another thread reads them; the writer's CPU \
         (schedstat) divided by the writes.\n\
         - Express runs the seed's handler as it is, one `setInterval` per client and a \
         `console.log` per closed stream, so its events/s falls below the expected rate as timers \
         drift. Its first connections also pay V8's warm-up.\n\
         - The load generator, the servers and whatever else runs on the machine share its cores: \
         latency and time to headers are the first figures to suffer when something else runs, \
         CPU per event and memory per stream the least.\n\
         - Server logs and the raw JSON of every run are in `target/bench/`.",
        63
    )?;
    Ok(md)
}

/// Draws CPU per event and memory per stream for the steady scenarios as grouped bars
/// (SVG: no fonts or system libraries needed to draw it).
fn chart(plan: &[Scenario], res: &Results, path: &Path) -> anyhow::Result<()> {
    use plotters::prelude::*;
    let colors = [
        RGBColor(31, 119, 180),
        RGBColor(214, 39, 40),
        RGBColor(44, 160, 44),
    ];
    let steady: Vec<usize> = (0..plan.len()).filter(|&i| plan[i].ramp > 0.0).collect();
    let floor = median(res.floors.clone());
    let root = SVGBackend::new(path, (1000, 420)).into_drawing_area();
    root.fill(&WHITE)?;
    let panels = root.split_evenly((1, 2));
    let figures: [(&str, Getter); 2] = [
        ("Server CPU per delivered event (µs)", cpu),
        ("Resident memory per open stream (KiB)", mem_kib),
    ];
    for (panel, (title, get)) in panels.iter().zip(figures) {
        let values: Vec<[Option<f64>; 3]> = steady
            .iter()
            .map(|&si| [0, 1, 2].map(|pi| med(&res.runs[si][pi], get)))
            .collect();
        let mut top = values
            .iter()
            .flatten()
            .flatten()
            .copied()
            .fold(0.0f64, f64::max);
        if title.contains("CPU") {
            top = top.max(floor.unwrap_or(0.0));
        }
        // Headroom above the tallest bar keeps the legend clear of the bars.
        let top = if top > 0.0 { top * 1.5 } else { 1.0 };
        let names: Vec<String> = steady
            .iter()
            .map(|&si| format!("{} ({})", plan[si].name, thousands(plan[si].streams)))
            .collect();
        let groups = steady.len() as f64;
        let mut chart = ChartBuilder::on(panel)
            .caption(title, ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(30)
            .y_label_area_size(48)
            .build_cartesian_2d(-0.5f64..groups - 0.5, 0f64..top)?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .light_line_style(WHITE)
            .x_labels(steady.len() + 1)
            .x_label_formatter(&|x| {
                let i = x.round();
                if (x - i).abs() < 1e-6 && i >= 0.0 {
                    names.get(i as usize).cloned().unwrap_or_default()
                } else {
                    String::new()
                }
            })
            .draw()?;
        for (pi, peer) in PEERS.into_iter().enumerate() {
            let color = colors[pi];
            let bars = values.iter().enumerate().filter_map(move |(g, v)| {
                let y = v[pi]?;
                let x0 = g as f64 - 0.36 + pi as f64 * 0.24;
                Some(Rectangle::new([(x0, 0.0), (x0 + 0.22, y)], color.filled()))
            });
            chart
                .draw_series(bars)?
                .label(peer.label())
                .legend(move |(x, y)| {
                    Rectangle::new([(x, y - 5), (x + 10, y + 5)], color.filled())
                });
        }
        if let (Some(f), true) = (floor, title.contains("CPU")) {
            chart
                .draw_series(std::iter::once(PathElement::new(
                    vec![(-0.5, f), (groups - 0.5, f)],
                    BLACK.stroke_width(2),
                )))?
                .label(format!("bare loopback write ({f:.1} µs)"))
                .legend(|(x, y)| {
                    PathElement::new(vec![(x, y), (x + 10, y)], BLACK.stroke_width(2))
                });
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()?;
    }
    root.present()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians_skip_missing_runs() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(vec![4.0, 1.0]), Some(2.5));
        assert_eq!(median(vec![]), None);
        let runs = [
            serde_json::json!({"server": {"cpu_us_per_event": 5.0}}),
            Value::Null,
            serde_json::json!({"server": {"cpu_us_per_event": 7.0}}),
        ];
        assert_eq!(med(&runs, cpu), Some(6.0));
    }

    #[test]
    fn the_held_target_goes_by_the_median_and_names_slow_runs() {
        let plan = scenarios(false);
        let held = plan.iter().position(|s| s.name == "most held").unwrap();
        let run = |p99: u64| {
            serde_json::json!({
                "open_at_window_end": 19_900, "failed_total": 0, "gaps": 0, "repeats": 0,
                "latency_us": {"p99": p99},
            })
        };
        let mut runs: Vec<[Vec<Value>; 3]> = plan.iter().map(|_| Default::default()).collect();
        runs[held][0] = vec![run(7807), run(775), run(639)];
        let res = Results {
            runs,
            floors: vec![9.0],
            failures: Vec::new(),
        };
        let meta = Meta {
            command: "cargo xtask bench".into(),
            repeats: 3,
            quick: false,
            took: Duration::from_secs(1),
            load: ("0.1".into(), "0.1".into()),
            server_tree: "abc".into(),
        };
        let md = render(&plan, &res, &meta).unwrap();
        assert!(md.contains(
            "| 19,900 held of 19,900, 0 failed, 0 gaps, 0 repeats, latency p99 0.775 ms \
             (median; runs 0.639–7.807 ms) | **met** in the median; 1 of 3 runs had latency p99 \
             above 1 ms |"
        ));
    }

    #[test]
    fn numbers_read_well() {
        assert_eq!(thousands(19_900), "19,900");
        assert_eq!(thousands(300), "300");
        assert_eq!(thousands(1_000_000), "1,000,000");
        assert_eq!(ratio(Some(1.0), Some(4.0)), "0.25×");
        assert_eq!(ratio(Some(1.0), None), "n/a");
    }

    #[test]
    fn quick_runs_are_small_and_full_runs_reach_the_targets_sizes() {
        let quick: u64 = scenarios(true).iter().map(|s| s.streams).max().unwrap();
        assert!(quick <= 5_000);
        let full = scenarios(false);
        assert!(full
            .iter()
            .any(|s| s.streams == MAX_HELD && s.interval_ms == 1000));
        assert!(full.iter().any(|s| s.ramp == 0.0 && s.streams == 10_000));
    }
}
