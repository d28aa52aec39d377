//! `cargo xtask bench`: runs every benchmark scenario against sse-counter and its peers,
//! alternating them, measures the bare loopback write, and writes `docs/benchmarks.md`
//! with a chart, `docs/benchmarks.svg`. Loopback only; every run is bounded by
//! sse-bench's own limits.
//!
//! The modules, each using only those listed before it (a test below holds them to it):
//!
//! - `figures`: the leaf: what a table reads from a report, medians, spreads, number
//!   formats, a target's verdict;
//! - `scenarios`: the load shapes; `peers`: the servers and how each starts; `load`:
//!   the one sse-bench command line for a scenario, run and read back typed;
//! - `sides`: the one way to run a scenario of sse-counter alone in several set-ups
//!   (repeats alternating the sides) and to keep and spread its figures; `http2` (the
//!   transports), `cluster` (the embedded store and Redis), `channels` (channels
//!   against the shared counter, publishing, Redis) and `sentinel` (acknowledged
//!   writes under Sentinel, failovers) are its users, each with its targets and its
//!   section of the page;
//! - `results`: everything a run measured; `targets`: what sse-counter is held to;
//!   `chart`: the picture; `page`: docs/benchmarks.md, the top, used by nothing else.
//!
//! `--only NAME` runs some of the scenarios and writes its page to `target/bench/`,
//! leaving `docs/benchmarks.md` to full runs.

mod channels;
mod chart;
mod cluster;
mod figures;
mod http2;
mod load;
mod page;
mod peers;
mod results;
mod scenarios;
mod sentinel;
mod sides;
mod targets;

use crate::util::{cargo, output, project_root, run, step};
use ::bench::report::{Floor, Report};
use anyhow::Context as _;
use figures::{fmt, CPU, HEADERS_P99_MS, MEM_KIB};
use load::{run_sse_bench, sse_bench};
use peers::{Fanout, Peer, PEERS};
use results::{Meta, Results};
use scenarios::{Load, Scenario, MAX_HELD};
use sides::Side as _;
use std::path::Path;
use std::process::Command;
use std::time::Instant;

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
    /// `1 Hz`, `most held`, `burst`, `fan-out`, `http2`, `cluster`, `channels`, `sentinel`), and write the page
    /// to target/bench/benchmarks.md instead of docs/, which only a full run writes.
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
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
        channels: channels_plan,
        sentinel: sentinel_plan,
    } = select(args.quick, &args.only)?;
    // Express runs in every scenario but `http2` and `cluster`.
    if !plan.is_empty() {
        peers::express_installed()?;
    }
    if cluster_plan.is_some() || channels_plan.is_some() || sentinel_plan.is_some() {
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
    if let Some(ch) = channels_plan {
        step(ch.title());
        results.channels = Some(channels::run(
            &root,
            ch,
            repeats,
            &logs,
            nofile,
            &mut results.failures,
        ));
    }
    if let Some(se) = sentinel_plan {
        step(se.title());
        results.sentinel = Some(sentinel::run(
            &root,
            se,
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
            "runs": o.all_runs(),
        })),
        "cluster": results.cluster.as_ref().map(|o| serde_json::json!({
            "scenario": o.plan.title(),
            "sides": cluster::Store::ALL.iter().map(|s| s.slug()).collect::<Vec<_>>(),
            "runs": o.all_runs(),
        })),
        "channels": results.channels.as_ref().map(|o| serde_json::json!({
            "scenario": o.plan.title(),
            "cases": channels::Case::ALL.iter().map(|c| c.slug()).collect::<Vec<_>>(),
            "runs": o.all_runs(),
        })),
        "sentinel": results.sentinel.as_ref().map(|o| serde_json::json!({
            "scenario": o.plan().title(),
            "cases": sentinel::Case::ALL.iter().map(|c| c.slug()).collect::<Vec<_>>(),
            "runs": o.cases.all_runs(),
            "failovers": o.failovers,
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
    let md = page::render(&plan, &results, &meta)?;
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
    channels: Option<channels::Plan>,
    sentinel: Option<sentinel::Plan>,
}

/// The scenarios to run: every one, or those `--only` names.
fn select(quick: bool, only: &[String]) -> anyhow::Result<Selection> {
    let all = scenarios::scenarios(quick);
    if only.is_empty() {
        return Ok(Selection {
            scenarios: all,
            http2: Some(http2::plan(quick)),
            cluster: Some(cluster::plan(quick)),
            channels: Some(channels::plan(quick)),
            sentinel: Some(sentinel::plan(quick)),
        });
    }
    let known: Vec<&str> = all
        .iter()
        .map(|s| s.name)
        .chain([http2::NAME, cluster::NAME, channels::NAME, sentinel::NAME])
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
        channels: wanted(channels::NAME).then(|| channels::plan(quick)),
        sentinel: wanted(sentinel::NAME).then(|| sentinel::plan(quick)),
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
    use std::time::Duration;

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
        assert_eq!(all.channels, Some(channels::plan(true)));
        assert_eq!(all.sentinel, Some(sentinel::plan(true)));
        let se = select(true, &["sentinel".into()]).unwrap();
        assert!(se.scenarios.is_empty() && se.http2.is_none() && se.cluster.is_none());
        assert_eq!(
            (se.channels, se.sentinel),
            (None, Some(sentinel::plan(true)))
        );
        let ch = select(false, &["channels".into()]).unwrap();
        assert!(ch.scenarios.is_empty() && ch.http2.is_none() && ch.cluster.is_none());
        assert_eq!(ch.channels, Some(channels::plan(false)));
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
            err.contains("no such scenario")
                && err.contains("http2")
                && err.contains("cluster")
                && err.contains("channels")
                && err.contains("sentinel"),
            "{err}"
        );
    }

    /// The modules of this task form layers: a module uses only those below it, never
    /// the page that uses them (what `docs/architecture.md` draws). Read from the
    /// sources, test code left out.
    #[test]
    fn the_modules_import_no_circle() {
        const SOURCES: [(&str, &str); 14] = [
            ("channels", include_str!("channels.rs")),
            ("chart", include_str!("chart.rs")),
            ("cluster", include_str!("cluster.rs")),
            ("figures", include_str!("figures.rs")),
            ("http2", include_str!("http2.rs")),
            ("load", include_str!("load.rs")),
            ("page", include_str!("page.rs")),
            ("peers", include_str!("peers.rs")),
            ("results", include_str!("results.rs")),
            ("scenarios", include_str!("scenarios.rs")),
            ("sentinel", include_str!("sentinel.rs")),
            ("sides", include_str!("sides.rs")),
            ("targets", include_str!("targets.rs")),
            ("mod", include_str!("mod.rs")),
        ];
        let uses = |src: &str| -> Vec<&'static str> {
            let code = src.split("#[cfg(test)]").next().unwrap_or(src);
            SOURCES
                .iter()
                .map(|(name, _)| *name)
                .filter(|name| code.contains(&format!("super::{name}")))
                .collect()
        };
        let graph: Vec<(&str, Vec<&str>)> = SOURCES
            .iter()
            .map(|(name, src)| (*name, uses(src)))
            .collect();
        let deps = |name: &str| &graph.iter().find(|(n, _)| *n == name).unwrap().1;
        assert!(
            deps("figures").is_empty(),
            "figures is the leaf: {:?}",
            deps("figures")
        );
        assert!(
            graph
                .iter()
                .all(|(_, d)| !d.contains(&"page") && !d.contains(&"mod")),
            "{graph:?}"
        );
        // Depth-first: a module met again on the path it is reached by is a circle.
        fn visit<'a>(
            name: &'a str,
            path: &mut Vec<&'a str>,
            deps: &dyn Fn(&str) -> &'a Vec<&'a str>,
        ) {
            assert!(
                !path.contains(&name),
                "an import circle: {path:?} -> {name}"
            );
            path.push(name);
            for d in deps(name) {
                visit(d, path, deps);
            }
            path.pop();
        }
        for (name, _) in &graph {
            visit(name, &mut Vec::new(), &deps);
        }
    }
}
