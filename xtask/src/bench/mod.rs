//! `cargo xtask bench`: runs every benchmark scenario against sse-counter and its peers,
//! alternating them, measures the bare loopback write, and writes `docs/benchmarks.md`
//! with a chart, `docs/benchmarks.svg`. Loopback only; every run is bounded by
//! sse-bench's own limits.
//!
//! `scenarios` holds the load shapes, `peers` the servers and how each starts,
//! `targets` what sse-counter is held to, `report` the page made from the typed
//! reports that sse-bench and the floor print, `chart` the picture; `http2` is the
//! scenario of sse-counter alone over HTTP/1.1, HTTPS and HTTP/2, and `cluster` that of
//! instances sharing the counter through Redis next to one on the embedded store, each
//! with its targets.
//!
//! `--only NAME` runs some of the scenarios and writes its page to `target/bench/`,
//! leaving `docs/benchmarks.md` to full runs.

mod chart;
mod cluster;
mod http2;
mod peers;
mod report;
mod scenarios;
mod targets;

use crate::util::{cargo, display, output, project_root, run, step};
use ::bench::report::{Floor, Report};
use anyhow::Context as _;
use peers::{Fanout, Peer, PeerId, PEERS};
use report::{fmt, CPU, HEADERS_P99_MS, MEM_KIB};
use scenarios::{Load, Scenario, MAX_HELD};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Small runs that finish in about two minutes: fewer streams, shorter windows,
    /// one repeat. The targets at full size are then marked as not measured.
    #[arg(long)]
    quick: bool,
    /// Runs of each scenario per server, alternating the servers (default 3, or 1 with
    /// --quick).
    #[arg(long)]
    repeats: Option<usize>,
    /// Run only these scenarios (repeat the flag or separate with commas: `10 Hz`,
    /// `1 Hz`, `most held`, `burst`, `fan-out`, `http2`, `cluster`), and write the page
    /// to target/bench/benchmarks.md instead of docs/, which only a full run writes.
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
}

/// Everything measured.
pub struct Results {
    /// `runs[scenario][peer]`, peers in `PEERS` order: one report per repeat, `None` for
    /// a run that failed. Read through [`Results::runs`].
    runs: Vec<Vec<Vec<Option<Report>>>>,
    /// Every floor run.
    pub floors: Vec<Floor>,
    pub failures: Vec<String>,
    /// Peers a scenario did not run against, and why: `(scenario, peer, why)`.
    not_run: Vec<(usize, PeerId, String)>,
    /// The `http2` scenario, when it ran.
    pub http2: Option<http2::Outcome>,
    /// The `cluster` scenario, when it ran.
    pub cluster: Option<cluster::Outcome>,
}

impl Results {
    pub fn new(scenarios: usize) -> Results {
        Results {
            runs: (0..scenarios)
                .map(|_| PEERS.iter().map(|_| Vec::new()).collect())
                .collect(),
            floors: Vec::new(),
            failures: Vec::new(),
            not_run: Vec::new(),
            http2: None,
            cluster: None,
        }
    }

    /// Records that `scenario` did not run against a peer, once per reason.
    pub fn not_run(&mut self, scenario: usize, id: PeerId, why: String) {
        if !self
            .not_run
            .iter()
            .any(|n| *n == (scenario, id, why.clone()))
        {
            self.not_run.push((scenario, id, why));
        }
    }

    /// Why `scenario` did not run against a peer, if it did not.
    pub fn why_not_run(&self, scenario: usize, id: PeerId) -> Option<&str> {
        self.not_run
            .iter()
            .find(|(si, i, _)| *si == scenario && *i == id)
            .map(|(_, _, why)| why.as_str())
    }

    fn column(id: PeerId) -> usize {
        PEERS
            .iter()
            .position(|p| p.id == id)
            .expect("every peer id has a row in PEERS")
    }

    /// One peer's reports in one scenario, one per repeat.
    pub fn runs(&self, scenario: usize, id: PeerId) -> &[Option<Report>] {
        &self.runs[scenario][Self::column(id)]
    }

    /// The median of the floor runs: µs of CPU per write.
    pub fn floor_us(&self) -> Option<f64> {
        report::median(self.floors.iter().map(|f| f.cpu_us_per_write).collect())
    }

    pub fn push(&mut self, scenario: usize, id: PeerId, report: Option<Report>) {
        self.runs[scenario][Self::column(id)].push(report);
    }
}

/// How the run went, for the report's machine section.
pub struct Meta {
    pub command: String,
    pub repeats: usize,
    pub quick: bool,
    pub took: Duration,
    pub load: (String, String),
    pub server_tree: String,
}

pub fn run_bench(args: Args) -> anyhow::Result<()> {
    let root = project_root();
    let repeats = args
        .repeats
        .unwrap_or(if args.quick { 1 } else { 3 })
        .max(1);
    let command = format!(
        "cargo xtask bench{}{}{}",
        if args.quick { " --quick" } else { "" },
        args.repeats
            .map(|r| format!(" --repeats {r}"))
            .unwrap_or_default(),
        if args.only.is_empty() {
            String::new()
        } else {
            format!(" --only '{}'", args.only.join(","))
        }
    );
    let Selection {
        scenarios: plan,
        http2: http2_plan,
        cluster: cluster_plan,
    } = select(args.quick, &args.only)?;
    // Express runs in every scenario but `http2` and `cluster`.
    if !plan.is_empty() {
        peers::express_installed()?;
    }
    if cluster_plan.is_some() {
        crate::setup::cluster_tools()?;
    }
    step("building the servers and the load generator (release)");
    run(cargo().args(["build", "--release", "-p", "server", "-p", "bench"]))?;
    let nofile = raise_nofile_limit()?;
    let logs = root.join("target/bench");
    std::fs::create_dir_all(&logs)?;
    let load_before = loadavg();
    let started = Instant::now();
    let mut results = Results::new(plan.len());
    for (si, sc) in plan.iter().enumerate() {
        step(sc.title());
        for rep in 0..repeats {
            // The floor too is measured next to every round, so its median sees the
            // same machine as the servers' do.
            match floor(&root) {
                Ok(f) => results.floors.push(f),
                Err(e) => results.failures.push(format!("floor: {e:#}")),
            }
            for peer in &PEERS {
                if sc.load == Load::Fanout && peer.fanout.is_none() {
                    results.not_run(si, peer.id, "it has no shared counter".into());
                    continue;
                }
                let log = logs.join(format!("{}-{}-{}.log", sc.slug(), peer.slug, rep + 1));
                let report = match run_one(&root, sc, peer, &log, nofile) {
                    Ok(Run::Measured(r)) => Some(*r),
                    Ok(Run::NotAvailable(why)) => {
                        step(format!("{} against {}: {why}", sc.name, peer.label));
                        results.not_run(si, peer.id, why);
                        continue;
                    }
                    Err(e) => {
                        let msg =
                            format!("{} against {}, run {}: {e:#}", sc.name, peer.label, rep + 1);
                        step(format!("run failed: {msg}"));
                        results.failures.push(msg);
                        None
                    }
                };
                results.push(si, peer.id, report);
            }
        }
    }
    if let Some(h2) = http2_plan {
        step(h2.title());
        results.http2 = Some(http2::run(
            &root,
            h2,
            repeats,
            &logs,
            nofile,
            &mut results.failures,
        ));
    }
    if let Some(cl) = cluster_plan {
        step(cl.title());
        results.cluster = Some(cluster::run(
            &root,
            cl,
            repeats,
            &logs,
            nofile,
            &mut results.failures,
        ));
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
        "peers": PEERS.iter().map(|p| p.label).collect::<Vec<_>>(),
        "runs": results.runs,
        "floors": results.floors,
        "not_run": results.not_run.iter().map(|(si, id, why)| {
            serde_json::json!({"scenario": si, "peer": format!("{id:?}"), "why": why})
        }).collect::<Vec<_>>(),
        "http2": results.http2.as_ref().map(|o| serde_json::json!({
            "scenario": o.plan.title(),
            "transports": http2::TRANSPORTS,
            "runs": o.runs,
        })),
        "cluster": results.cluster.as_ref().map(|o| serde_json::json!({
            "scenario": o.plan.title(),
            "sides": ["embedded", "redis"],
            "runs": o.runs,
        })),
    });
    std::fs::write(
        logs.join("results.json"),
        serde_json::to_string_pretty(&raw)?,
    )?;
    // A partial run's page would replace the full one with less: it goes next to
    // the logs.
    let (out, out_name) = if args.only.is_empty() {
        (root.join("docs"), "docs")
    } else {
        (logs.clone(), "target/bench")
    };
    std::fs::create_dir_all(&out)?;
    // The chart is of the steady scenarios against every peer (`http2` has its table).
    let chart = plan.iter().any(Scenario::steady);
    if chart {
        chart::chart(&plan, &results, &out.join("benchmarks.svg"))?;
    }
    let md = report::render(&plan, &results, &meta)?;
    std::fs::write(out.join("benchmarks.md"), md)?;
    step(format!(
        "wrote {out_name}/benchmarks.md{} in {:.0} s (raw figures and server logs in target/bench/)",
        if chart {
            format!(" and {out_name}/benchmarks.svg")
        } else {
            String::new()
        },
        took.as_secs_f64()
    ));
    Ok(())
}

/// What a run measures: the scenarios against every peer, and the scenarios of
/// sse-counter alone that have tables of their own.
#[derive(Debug, PartialEq)]
struct Selection {
    scenarios: Vec<Scenario>,
    http2: Option<http2::Plan>,
    cluster: Option<cluster::Plan>,
}

/// The scenarios to run: every one, or those `--only` names.
fn select(quick: bool, only: &[String]) -> anyhow::Result<Selection> {
    let all = scenarios::scenarios(quick);
    if only.is_empty() {
        return Ok(Selection {
            scenarios: all,
            http2: Some(http2::plan(quick)),
            cluster: Some(cluster::plan(quick)),
        });
    }
    let known: Vec<&str> = all
        .iter()
        .map(|s| s.name)
        .chain([http2::NAME, cluster::NAME])
        .collect();
    for name in only {
        anyhow::ensure!(
            known.contains(&name.as_str()),
            "--only {name:?}: no such scenario (there are: {})",
            known.join(", ")
        );
    }
    let wanted = |name: &str| only.iter().any(|o| o == name);
    Ok(Selection {
        scenarios: all.into_iter().filter(|s| wanted(s.name)).collect(),
        http2: wanted(http2::NAME).then(|| http2::plan(quick)),
        cluster: wanted(cluster::NAME).then(|| cluster::plan(quick)),
    })
}

/// Raises this process's open-files soft limit to the hard limit, which the servers and
/// sse-bench inherit (the server binary does not raise its own).
fn raise_nofile_limit() -> anyhow::Result<u64> {
    let soft = ::bench::raise_nofile_limit()?;
    if soft < MAX_HELD + 100 {
        step(format!(
            "the open-files limit is {soft}: the `most held` scenario will open fewer than {MAX_HELD} streams"
        ));
    }
    Ok(soft)
}

/// What one run of a scenario against a peer gave.
enum Run {
    /// Boxed: a report is large next to the other variant.
    Measured(Box<Report>),
    /// The peer does not serve the scenario's route (yet): why, for the report.
    NotAvailable(String),
}

fn run_one(
    root: &Path,
    sc: &Scenario,
    peer: &Peer,
    log: &Path,
    nofile: u64,
) -> anyhow::Result<Run> {
    let server = peer.start(root, sc, log)?;
    // What sse-bench asks for, and how it knows the rate to expect.
    let (url, load_args) = match (sc.load, &peer.fanout) {
        (Load::Counter, _) => (
            peer.counter_url(&server.base, sc),
            vec!["--interval-ms".to_owned(), sc.interval_ms.to_string()],
        ),
        (Load::Fanout, Some(fanout)) => {
            let path = fanout.path();
            if let Err(why) = peers::probe(&server.base, path) {
                return Ok(Run::NotAvailable(format!("not available: {why}")));
            }
            let rate_args = match fanout {
                Fanout::Driven { .. } => vec!["--publish-rate".to_owned(), sc.rate().to_string()],
                Fanout::SelfTimed { .. } => {
                    vec!["--interval-ms".to_owned(), sc.interval_ms.to_string()]
                }
            };
            let mut args = vec!["--kind".to_owned(), "shared".to_owned()];
            args.extend(rate_args);
            (format!("{}{path}", server.base), args)
        }
        (Load::Fanout, None) => {
            return Ok(Run::NotAvailable("it has no shared counter".into()));
        }
    };
    let mut cmd = sse_bench(root, sc, &[url], nofile);
    cmd.args(&load_args)
        .args(["--server-pid", &server.child.id().to_string()]);
    let report = run_sse_bench(root, &mut cmd, log)?;
    eprintln!(
        "  {}: {} established, {} failed, {:.0} events/s, {} µs CPU/event, {} KiB/stream, headers p99 {} ms",
        peer.label,
        report.established,
        report.failed_total,
        report.events_per_sec,
        fmt((CPU.get)(&report), 2),
        fmt((MEM_KIB.get)(&report), 2),
        fmt((HEADERS_P99_MS.get)(&report), 1),
    );
    drop(server);
    Ok(Run::Measured(Box::new(report)))
}

/// sse-bench with the scenario's load on `urls`: its streams (within the open-files
/// limit), ramp, warm-up, window, client processes and its own time bound. The caller
/// adds what its kind of load needs.
fn sse_bench(root: &Path, sc: &Scenario, urls: &[String], nofile: u64) -> Command {
    // Each client process holds its share, each server at most all of them: both
    // within the open-files limit.
    let streams = sc.streams.min(nofile.saturating_sub(100));
    let ramp_secs = if sc.ramp > 0.0 {
        streams as f64 / sc.ramp
    } else {
        0.0
    };
    // sse-bench's own bound: its ramp, two 10 s timeouts, warm-up, window, and slack.
    let duration = (ramp_secs + 21.0 + sc.warmup + sc.window + 10.0).ceil() as u64;
    let mut cmd = Command::new(root.join("target/release/sse-bench"));
    cmd.args(urls)
        .args(["--streams", &streams.to_string()])
        .args(["--ramp", &sc.ramp.to_string()])
        .args(["--warmup", &sc.warmup.to_string()])
        .args(["--window", &sc.window.to_string()])
        .args(["--procs", &sc.procs.to_string()])
        .args(["--duration", &duration.to_string()]);
    cmd
}

/// Runs `cmd` (from [`sse_bench`]) with `--json` and reads its report; a failure names
/// `logs`, where the servers' logs are.
fn run_sse_bench(root: &Path, cmd: &mut Command, logs: &Path) -> anyhow::Result<Report> {
    cmd.arg("--json");
    eprintln!("$ {}", display(cmd));
    let out = cmd
        .stderr(Stdio::inherit())
        .output()
        .context("cannot run sse-bench")?;
    anyhow::ensure!(
        out.status.success(),
        "sse-bench exited with {} (the servers' logs: {})",
        out.status,
        logs.strip_prefix(root).unwrap_or(logs).display()
    );
    read_report(&out.stdout)
}

/// sse-bench's `--json` output as the type it was written from.
fn read_report(json: &[u8]) -> anyhow::Result<Report> {
    serde_json::from_slice(json)
        .context("sse-bench's JSON is not the report this xtask was built with")
}

/// The floor: the CPU cost of one tick-sized write to a loopback socket.
fn floor(root: &Path) -> anyhow::Result<Floor> {
    let text = output(
        Command::new(root.join("target/release/floor"))
            .args(["--pairs", "1000", "--writes", "100000", "--json"]),
    )
    .context("the floor program failed")?;
    serde_json::from_str(&text)
        .context("the floor's JSON is not the report this xtask was built with")
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

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use ::bench::report::{ServerFigures, StreamKind, WorkerResult};

    /// The facts of a one-second `--quick` run of `command`, for rendering tests.
    pub fn quick_meta(command: &str) -> Meta {
        Meta {
            command: command.into(),
            repeats: 1,
            quick: true,
            took: Duration::from_secs(1),
            load: ("0.1".into(), "0.1".into()),
            server_tree: "abc".into(),
        }
    }

    /// A clean report of 19,900 streams with server figures, changed by `edit`.
    pub fn report_with(edit: impl FnOnce(&mut Report)) -> Report {
        let w = WorkerResult {
            streams: 19_900,
            established: 19_900,
            open_at_window_end: 19_900,
            events_in_window: 19_900,
            ..WorkerResult::default()
        };
        let server = ServerFigures {
            pid: 1,
            processes: 1,
            cpu_us_window: 1.0,
            cpu_us_per_event: Some(1.0),
            cpu_cores: 0.1,
            rss_before_kib: 1,
            rss_steady_kib: 2,
            rss_per_stream_bytes: Some(1024.0),
        };
        let mut r = Report::new(
            "http://127.0.0.1:1/",
            StreamKind::Counter,
            1,
            &w,
            1.0,
            Some(1.0),
            Some(server),
        );
        edit(&mut r);
        r
    }

    #[test]
    fn only_selects_scenarios_by_name_and_refuses_unknown_ones() {
        let all = select(true, &[]).unwrap();
        assert_eq!(all.scenarios, scenarios::scenarios(true));
        assert_eq!(all.http2, Some(http2::plan(true)));
        assert_eq!(all.cluster, Some(cluster::plan(true)));
        let h2 = select(true, &["http2".into()]).unwrap();
        assert!(h2.scenarios.is_empty());
        assert_eq!(h2.http2.map(|p| p.connections), Some(4));
        assert_eq!(h2.cluster, None);
        let cl = select(true, &["cluster".into()]).unwrap();
        assert!(cl.scenarios.is_empty());
        assert_eq!(cl.http2, None);
        assert_eq!(cl.cluster.map(|p| p.scenario.streams), Some(1_000));
        let some = select(false, &["1 Hz".into(), "burst".into()]).unwrap();
        let names: Vec<_> = some.scenarios.iter().map(|s| s.name).collect();
        assert_eq!(names, ["1 Hz", "burst"]);
        assert_eq!((some.http2, some.cluster), (None, None));
        let err = select(true, &["h2".into()]).unwrap_err().to_string();
        assert!(
            err.contains("no such scenario") && err.contains("http2") && err.contains("cluster"),
            "{err}"
        );
    }

    #[test]
    fn a_report_reads_back_typed() {
        let r = report_with(|_| {});
        let json = serde_json::to_vec(&r).unwrap();
        assert_eq!(read_report(&json).unwrap(), r);
    }

    #[test]
    fn a_renamed_field_is_an_error_not_n_a() {
        let mut v = serde_json::to_value(report_with(|_| {})).unwrap();
        let server = v["server"].as_object_mut().unwrap();
        let cpu = server.remove("cpu_us_per_event").unwrap();
        server.insert("cpu_per_event_us".into(), cpu);
        let err = read_report(&serde_json::to_vec(&v).unwrap()).unwrap_err();
        assert!(format!("{err:#}").contains("cpu_per_event_us"), "{err:#}");
    }
}
