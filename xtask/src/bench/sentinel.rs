//! The `sentinel` scenario (issue 22): what Redis Sentinel with acknowledged writes
//! costs, and how long a failover leaves publishing down. On the topology of `cargo
//! xtask cluster --sentinel` (a primary, 2 replicas, 3 Sentinels from `deploy/`; two
//! instances, no nginx), each case a fresh one:
//!
//! - publish-to-delivery latency of `/api/shared` at 10 increments a second, and
//!   increments a second as fast as they are answered, each with `--redis-min-replicas
//!   0` (the primary having it is enough) and `1` (a replica acknowledged it: `WAIT`);
//! - then, on one more topology, [`FAILOVERS`] times in a row: `kill -9` of the primary,
//!   and the time until an increment is answered `200` again, with `--redis-min-replicas
//!   1`; the killed node comes back as a replica of the new primary before the next.
//!
//! Its target (publishing answers again within 15 s of the kill, the promise)
//! joins the report's targets table.

use super::figures::{
    fmt, median, signed, status, thousands, Figure, Row, CPU, LATENCY_P50_MS, LATENCY_P99_MS,
    TAKEN_PER_SEC,
};
use super::load;
use super::peers::{post_status, ready};
use super::scenarios::{Load, Scenario};
use super::sides::{self, Side};
use crate::cluster::{Cluster, Options};
use ::bench::report::Report;
use anyhow::Context as _;
use std::fmt::Write as _;
use std::path::Path;
use std::time::{Duration, Instant};

/// The name `--only` selects it by.
pub const NAME: &str = "sentinel";

/// Failovers measured in a run.
pub const FAILOVERS: usize = 3;
/// What issue 22 promises: publishing answers `200` again this soon after `kill -9` of
/// the primary.
const RECOVERY_LIMIT: Duration = Duration::from_secs(15);
/// How long a failover is waited for before the run is taken as failed.
const GIVE_UP: Duration = Duration::from_secs(60);
/// Between two increments that were not answered `200` while the primary is gone: the
/// resolution of the failover time. Each is answered at once (`503`) or within
/// `--redis-wait-ms`; a client with no pause would only take the CPU that the
/// Sentinels and Redis need to fail over on a machine of few cores.
const RETRY_EVERY: Duration = Duration::from_millis(5);

/// Flags of every instance, as the `cluster` scenario gives its own: room for every
/// stream, no practical publish limit, one serving thread each.
const INSTANCE_ARGS: [&str; 6] = [
    "--max-streams",
    "20000",
    "--publish-rate",
    "1000000",
    "--threads",
    "1",
];

/// The load of the cases, and the failovers.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// The latency cases: all the subscribers (split over the instances), one increment
    /// every `interval_ms`, ramp, warm-up, window, client processes.
    pub subscribers: Scenario,
    /// The throughput cases (no subscribers): warm-up and window.
    pub flood: Scenario,
    /// Instances following the Sentinels' primary.
    pub instances: usize,
    /// Connections the throughput cases send increments over, each the next as soon as
    /// the last is answered, all to the first instance.
    pub flood_connections: u32,
    /// `kill -9`s of the primary measured.
    pub failovers: usize,
}

impl Plan {
    pub fn title(&self) -> String {
        format!(
            "Redis Sentinel: `--redis-min-replicas 1` against 0 ({} instances × {} \
             subscribers at {} increments/s, and increments as fast as answered), and {} \
             failovers",
            self.instances,
            thousands(self.per_instance()),
            self.subscribers.rate(),
            self.failovers
        )
    }

    fn per_instance(&self) -> u64 {
        self.subscribers.streams / self.instances as u64
    }
}

/// 2 × 5,000 subscribers at full size (the `cluster` scenario's), 2 × 500 with
/// `--quick`; 3 failovers in both.
pub fn plan(quick: bool) -> Plan {
    let subscribers = Scenario {
        name: NAME,
        load: Load::Fanout,
        streams: 10_000,
        interval_ms: 100,
        ramp: 2000.0,
        warmup: 3.0,
        window: 15.0,
        procs: 2,
    };
    let flood = Scenario {
        streams: 0,
        ramp: 0.0,
        warmup: 2.0,
        window: 10.0,
        procs: 1,
        ..subscribers.clone()
    };
    let (subscribers, flood) = if quick {
        (
            Scenario {
                streams: 1_000,
                ramp: 1000.0,
                warmup: 2.0,
                window: 5.0,
                procs: 1,
                ..subscribers
            },
            Scenario {
                warmup: 1.0,
                window: 3.0,
                ..flood
            },
        )
    } else {
        (subscribers, flood)
    };
    Plan {
        subscribers,
        flood,
        instances: 2,
        flood_connections: 4,
        failovers: FAILOVERS,
    }
}

/// One case: a load with a `--redis-min-replicas`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Case {
    /// Subscribers, 10 increments a second; the primary's answer is enough.
    Latency0,
    /// The same; a replica must acknowledge each increment.
    Latency1,
    /// Increments as fast as answered, no subscribers; the primary's answer is enough.
    Flood0,
    /// The same; a replica must acknowledge each increment.
    Flood1,
}

impl Side for Case {
    const ALL: &'static [Case] = &[Case::Latency0, Case::Latency1, Case::Flood0, Case::Flood1];

    fn slug(self) -> &'static str {
        match self {
            Case::Latency0 => "latency-0",
            Case::Latency1 => "latency-1",
            Case::Flood0 => "flood-0",
            Case::Flood1 => "flood-1",
        }
    }

    fn label(self) -> &'static str {
        match self {
            Case::Latency0 => "subscribers, --redis-min-replicas 0",
            Case::Latency1 => "subscribers, --redis-min-replicas 1",
            Case::Flood0 => "increments, --redis-min-replicas 0",
            Case::Flood1 => "increments, --redis-min-replicas 1",
        }
    }
}

impl Case {
    fn min_replicas(self) -> u8 {
        match self {
            Case::Latency0 | Case::Flood0 => 0,
            Case::Latency1 | Case::Flood1 => 1,
        }
    }

    fn flood(self) -> bool {
        matches!(self, Case::Flood0 | Case::Flood1)
    }

    /// The case with the same load and the other `--redis-min-replicas`.
    fn with_min_replicas(self, n: u8) -> Case {
        match (self.flood(), n) {
            (false, 0) => Case::Latency0,
            (false, _) => Case::Latency1,
            (true, 0) => Case::Flood0,
            (true, _) => Case::Flood1,
        }
    }
}

/// One `kill -9` of the primary and what followed.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Failover {
    /// The killed primary's port.
    pub killed: u16,
    /// The port of the replica the Sentinels promoted.
    pub promoted: u16,
    /// From the kill to the first increment answered `200`.
    pub to_first_200_ms: f64,
    /// Increments not answered `200` meanwhile (`503`s, and requests that failed).
    pub refused: u64,
}

/// What the scenario measured.
#[derive(Debug)]
pub struct Outcome {
    /// The latency and throughput cases, by case.
    pub cases: sides::Outcome<Plan, Case>,
    /// Every failover that was measured, in order.
    pub failovers: Vec<Failover>,
}

impl Outcome {
    pub fn plan(&self) -> &Plan {
        &self.cases.plan
    }

    /// `1`'s median of `figure` minus `0`'s, on `case`'s load.
    fn added(&self, case: Case, figure: Figure) -> Option<f64> {
        let one = self.cases.med(case.with_min_replicas(1), figure)?;
        let zero = self.cases.med(case.with_min_replicas(0), figure)?;
        Some(one - zero)
    }

    /// The median and the longest of the failover times, in ms.
    pub fn failover_ms(&self) -> (Option<f64>, Option<f64>) {
        let times: Vec<f64> = self.failovers.iter().map(|f| f.to_first_200_ms).collect();
        let max = times.iter().copied().reduce(f64::max);
        (median(times), max)
    }
}

/// Runs the cases `repeats` times in turn, each on a fresh topology, then the
/// failovers on one more.
pub fn run(
    root: &Path,
    plan: Plan,
    repeats: usize,
    logs: &Path,
    nofile: u64,
    failures: &mut Vec<String>,
) -> Outcome {
    let cases = sides::repeat(NAME, plan, repeats, failures, |plan, case: Case, rep| {
        run_case(root, plan, case, logs, rep, nofile)
    });
    let mut failovers = Vec::new();
    if let Err(e) = fail_over(root, cases.plan.failovers, logs, &mut failovers) {
        let msg = format!(
            "{NAME}: failover {} of {}: {e:#}",
            failovers.len() + 1,
            cases.plan.failovers
        );
        crate::util::step(format!("run failed: {msg}"));
        failures.push(msg);
    }
    Outcome { cases, failovers }
}

/// The Sentinel topology with `instances` instances at `--redis-min-replicas n`, its
/// files in `run_dir`.
fn topology(
    root: &Path,
    instances: usize,
    min_replicas: u8,
    run_dir: std::path::PathBuf,
) -> anyhow::Result<Cluster> {
    let mut args: Vec<String> = INSTANCE_ARGS.map(str::to_owned).to_vec();
    args.extend(["--redis-min-replicas".to_owned(), min_replicas.to_string()]);
    let cluster = Cluster::start(&Options {
        sentinel: true,
        ..Options::bench(root, instances, run_dir, args)
    })?;
    for addr in &cluster.instances {
        ready(&format!("http://{addr}"))?;
    }
    Ok(cluster)
}

fn run_case(
    root: &Path,
    plan: &Plan,
    case: Case,
    logs: &Path,
    rep: usize,
    nofile: u64,
) -> anyhow::Result<Report> {
    let run_dir = logs.join(format!("{NAME}-{}-{rep}", case.slug()));
    let cluster = topology(root, plan.instances, case.min_replicas(), run_dir.clone())?;
    let shared_path = shared::paths::SHARED;
    let urls: Vec<String> = cluster
        .instances
        .iter()
        .map(|a| format!("http://{a}{shared_path}"))
        .collect();
    let sc = if case.flood() {
        &plan.flood
    } else {
        &plan.subscribers
    };
    let mut cmd = load::sse_bench(root, sc, &urls, nofile);
    cmd.args(["--kind", "shared"]);
    if case.flood() {
        cmd.args(["--publish-flood", &plan.flood_connections.to_string()]);
    } else {
        cmd.args(["--publish-rate", &sc.rate().to_string()]);
    }
    for pid in &cluster.instance_pids {
        cmd.args(["--server-pid", &pid.to_string()]);
    }
    cmd.args(["--store-pid", &cluster.redis_pid.to_string()]);
    let report = load::run_sse_bench(root, &mut cmd, &run_dir)?;
    eprintln!(
        "  {}: {} established, {} gaps, {} repeats, {} resets, latency p50 {} ms p99 {} ms, \
         {} increments/s taken",
        case.label(),
        report.established,
        report.gaps,
        report.repeats,
        report.resets,
        fmt((LATENCY_P50_MS.get)(&report), 3),
        fmt((LATENCY_P99_MS.get)(&report), 3),
        fmt((TAKEN_PER_SEC.get)(&report), 0),
    );
    drop(cluster);
    Ok(report)
}

/// `failovers` times: waits until the Sentinels agree on a primary with both replicas
/// and an increment is answered `200`, `kill -9`s the primary, increments until one is
/// answered `200` again, and restarts the killed node as a replica. Each measured
/// failover is pushed to `done` as it ends.
fn fail_over(
    root: &Path,
    failovers: usize,
    logs: &Path,
    done: &mut Vec<Failover>,
) -> anyhow::Result<()> {
    let run_dir = logs.join(format!("{NAME}-failover"));
    let mut cluster = topology(root, 2, 1, run_dir)?;
    let base = format!("http://{}", cluster.instances[0]);
    let increment = shared::paths::SHARED_INCREMENT;
    for _ in 0..failovers {
        let primary = cluster.wait_settled(GIVE_UP)?;
        let (answered, _) = until_200(&base, increment, GIVE_UP)
            .context("an increment before the kill was not answered 200")?;
        anyhow::ensure!(
            answered.is_some(),
            "no increment answered 200 before the kill"
        );
        cluster.kill_redis(primary)?;
        let killed = Instant::now();
        let (answered, refused) = until_200(&base, increment, GIVE_UP)?;
        let Some(at) = answered else {
            anyhow::bail!("no increment answered 200 within {GIVE_UP:?} of the kill");
        };
        let to_first_200 = at.duration_since(killed);
        let promoted = cluster.wait_primary_other_than(primary, GIVE_UP)?;
        eprintln!(
            "  failover: primary on {primary} killed, {promoted} promoted, the first 200 after \
             {:.0} ms ({refused} increments refused meanwhile)",
            to_first_200.as_secs_f64() * 1000.0
        );
        done.push(Failover {
            killed: primary,
            promoted,
            to_first_200_ms: to_first_200.as_secs_f64() * 1000.0,
            refused,
        });
        cluster.restart_redis(primary, promoted)?;
    }
    Ok(())
}

/// Increments at `base` until one is answered `200` (when it was answered), within
/// `limit`, trying again every [`RETRY_EVERY`]; with the count of those that were not.
fn until_200(base: &str, path: &str, limit: Duration) -> anyhow::Result<(Option<Instant>, u64)> {
    let deadline = Instant::now() + limit;
    let mut refused = 0;
    while Instant::now() < deadline {
        if post_status(base, path) == Ok(200) {
            return Ok((Some(Instant::now()), refused));
        }
        refused += 1;
        std::thread::sleep(RETRY_EVERY);
    }
    Ok((None, refused))
}

/// The scenario's row in the report's targets table.
pub fn target_rows(outcome: &Outcome) -> Vec<Row> {
    let (med, max) = outcome.failover_ms();
    let n = outcome.failovers.len();
    let limit_ms = RECOVERY_LIMIT.as_secs_f64() * 1000.0;
    let all = n >= outcome.plan().failovers;
    let met = max.filter(|_| all).map(|max| max <= limit_ms);
    let gap = max.map_or_else(String::new, |max| {
        format!(
            "{:.1} s, {:.1} s over",
            max / 1000.0,
            (max - limit_ms) / 1000.0
        )
    });
    vec![Row {
        target: format!(
            "Redis Sentinel, `kill -9` of the primary: increments answered `200` again within \
             {} s (`--redis-min-replicas 1`, {} failovers)",
            RECOVERY_LIMIT.as_secs(),
            outcome.plan().failovers
        ),
        measured: format!(
            "median {} s, max {} s over {n} failover{}",
            fmt(med.map(|ms| ms / 1000.0), 2),
            fmt(max.map(|ms| ms / 1000.0), 2),
            if n == 1 { "" } else { "s" }
        ),
        // A failover is the same at any size: only whether all of them ran counts.
        status: status(met, gap, true),
    }]
}

/// The scenario's section of the report: the two settings side by side, then the
/// failovers.
pub fn section(md: &mut String, outcome: &Outcome) -> anyhow::Result<()> {
    let plan = outcome.plan();
    let sc = &plan.subscribers;
    writeln!(md, "## {}\n", plan.title())?;
    writeln!(
        md,
        "The topology of `cargo xtask cluster --sentinel` without nginx: a primary and two \
         replicas (`deploy/redis.conf`, `appendfsync always`), three Sentinels \
         (`deploy/sentinel.conf`), and {} instances with `--redis-sentinel` for each; fresh \
         for every case. With `--redis-min-replicas 1` an increment is answered `200` only \
         once a replica acknowledged it (`WAIT 1`); with 0, once the primary has it. \
         Latency: {} subscribers of `/api/shared` on each instance, straight to it, \
         sse-bench `POST`ing {} increments a second to each in turn, publish to delivery as \
         in the `cluster` scenario ({} client process{}, opened at {}/s, {} s warm-up, {} s \
         window). Throughput: no subscribers, {} connections to one instance each sending \
         the next increment as soon as the last is answered ({} s warm-up, {} s window).\n",
        plan.instances,
        thousands(plan.per_instance()),
        sc.rate(),
        sc.procs,
        if sc.procs == 1 { "" } else { "es" },
        sc.ramp,
        sc.warmup,
        sc.window,
        plan.flood_connections,
        plan.flood.warmup,
        plan.flood.window,
    )?;
    writeln!(
        md,
        "| | `--redis-min-replicas 0` | `--redis-min-replicas 1` | 1 − 0 |"
    )?;
    writeln!(md, "| --- | ---: | ---: | ---: |")?;
    let count = |label: &'static str, get: fn(&Report) -> Option<f64>| Figure {
        label,
        unit: "",
        get,
        decimals: 0,
        ratio: false,
    };
    let taken = Figure {
        label: "increments taken per second (as fast as answered)",
        ..TAKEN_PER_SEC
    };
    // (the load, the figure, whether the difference means something)
    let rows = [
        (Case::Latency0, LATENCY_P50_MS, true),
        (Case::Latency0, LATENCY_P99_MS, true),
        (
            Case::Latency0,
            Figure {
                label: "server CPU per delivered event (µs, all instances)",
                ..CPU
            },
            true,
        ),
        (Case::Flood0, taken, true),
        (
            Case::Latency0,
            count("gaps, repeats and resets", |r| {
                Some((r.gaps + r.repeats + r.resets) as f64)
            }),
            false,
        ),
        (
            Case::Latency0,
            count("established", |r| Some(r.established as f64)),
            false,
        ),
        (
            Case::Latency0,
            count("failed", |r| Some(r.failed_total as f64)),
            false,
        ),
    ];
    for (case, row, diff) in rows {
        let zero = fmt(outcome.cases.med(case, row), row.decimals);
        let one = fmt(
            outcome.cases.med(case.with_min_replicas(1), row),
            row.decimals,
        );
        let d = if diff {
            signed(outcome.added(case, row), row.decimals)
        } else {
            String::new()
        };
        writeln!(md, "| {} | {zero} | {one} | {d} |", row.label)?;
    }
    let notes = outcome.cases.notes("increments");
    if !notes.is_empty() {
        writeln!(md)?;
        for n in notes {
            writeln!(md, "- {n}")?;
        }
    }
    outcome.cases.spread_lines(
        md,
        &[
            ("latency p50", LATENCY_P50_MS),
            ("p99", LATENCY_P99_MS),
            ("increments/s", TAKEN_PER_SEC),
        ],
    )?;
    writeln!(
        md,
        "\nFailovers: one more topology, with `--redis-min-replicas 1`. Each time, once the \
         Sentinels agree on a primary with both replicas up and an increment is answered \
         `200`: `kill -9` of the primary, then an increment to the first instance every {} \
         ms (each on a fresh connection) until one is answered `200`; the killed node then \
         comes back as a replica of the new primary.\n",
        RETRY_EVERY.as_millis()
    )?;
    writeln!(
        md,
        "| failover | killed | promoted | `kill -9` to the first `200` (s) | increments refused meanwhile |"
    )?;
    writeln!(md, "| ---: | ---: | ---: | ---: | ---: |")?;
    for (i, f) in outcome.failovers.iter().enumerate() {
        writeln!(
            md,
            "| {} | :{} | :{} | {:.2} | {} |",
            i + 1,
            f.killed,
            f.promoted,
            f.to_first_200_ms / 1000.0,
            f.refused
        )?;
    }
    let (med, max) = outcome.failover_ms();
    let verdict = &target_rows(outcome)[0];
    writeln!(
        md,
        "\nMedian {} s, max {} s; target, within {} s: {}.\n",
        fmt(med.map(|ms| ms / 1000.0), 2),
        fmt(max.map(|ms| ms / 1000.0), 2),
        RECOVERY_LIMIT.as_secs(),
        verdict.status
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::tests::report_with;
    use ::bench::report::PublishFigures;

    /// One run per case: latency p50 and p99 in ms on the latency cases, increments
    /// taken in a 10 s window on the throughput cases.
    fn outcome(zero: (f64, f64, u64), one: (f64, f64, u64), failover_ms: &[f64]) -> Outcome {
        let run = |(p50, p99, taken): (f64, f64, u64)| {
            vec![Some(report_with(|r| {
                r.latency_us.p50 = Some((p50 * 1000.0) as u64);
                r.latency_us.p99 = Some((p99 * 1000.0) as u64);
                r.window_secs = 10.0;
                r.publish = Some(PublishFigures {
                    sent: taken,
                    ok: taken,
                    ok_in_window: taken,
                    ..PublishFigures::default()
                });
            }))]
        };
        let cases = sides::Outcome::new(plan(true), vec![run(zero), run(one), run(zero), run(one)]);
        let failovers = failover_ms
            .iter()
            .map(|&ms| Failover {
                killed: 7001,
                promoted: 7002,
                to_first_200_ms: ms,
                refused: 100,
            })
            .collect();
        Outcome { cases, failovers }
    }

    #[test]
    fn the_plan_is_the_cluster_scenarios_size_and_three_failovers() {
        let full = plan(false);
        assert_eq!((full.instances, full.per_instance()), (2, 5_000));
        assert_eq!(full.subscribers.rate(), 10.0);
        assert_eq!(full.flood.streams, 0);
        assert_eq!(full.failovers, 3);
        let quick = plan(true);
        assert_eq!((quick.instances, quick.per_instance()), (2, 500));
        assert_eq!(quick.failovers, 3);
    }

    #[test]
    fn each_load_runs_with_both_settings() {
        for &case in Case::ALL {
            for n in [0, 1] {
                let other = case.with_min_replicas(n);
                assert_eq!((other.flood(), other.min_replicas()), (case.flood(), n));
            }
        }
    }

    #[test]
    fn the_failover_target_is_met_only_when_every_failover_is_within_15_s() {
        let rows = target_rows(&outcome(
            (1.0, 2.0, 9),
            (1.5, 3.0, 5),
            &[3_100.0, 2_900.0, 4_000.0],
        ));
        assert_eq!(rows[0].status, "**met**");
        assert_eq!(
            rows[0].measured,
            "median 3.10 s, max 4.00 s over 3 failovers"
        );
        let rows = target_rows(&outcome(
            (1.0, 2.0, 9),
            (1.5, 3.0, 5),
            &[3_100.0, 16_500.0, 4_000.0],
        ));
        assert_eq!(rows[0].status, "**not met**: 16.5 s, 1.5 s over");
        // A failover that did not come back is not a pass on the others.
        let rows = target_rows(&outcome((1.0, 2.0, 9), (1.5, 3.0, 5), &[3_100.0]));
        assert_eq!(rows[0].status, "not measured (a run failed)");
    }

    #[test]
    fn the_section_gives_both_settings_their_difference_and_the_failovers() {
        let mut md = String::new();
        let o = outcome(
            (1.0, 2.0, 9_000),
            (1.5, 3.25, 5_000),
            &[3_000.0, 2_000.0, 4_000.0],
        );
        section(&mut md, &o).unwrap();
        assert!(
            md.contains("| delivery latency p50 (ms) | 1.000 | 1.500 | +0.500 |"),
            "{md}"
        );
        assert!(
            md.contains("| delivery latency p99 (ms) | 2.000 | 3.250 | +1.250 |"),
            "{md}"
        );
        assert!(
            md.contains("| increments taken per second (as fast as answered) | 900 | 500 | -400 |"),
            "{md}"
        );
        assert!(md.contains("| 2 | :7001 | :7002 | 2.00 | 100 |"), "{md}");
        assert!(
            md.contains("\nMedian 3.00 s, max 4.00 s; target, within 15 s: **met**.\n"),
            "{md}"
        );
    }

    #[test]
    fn a_run_of_only_this_scenario_gives_a_page_with_its_target_and_section() {
        let mut res = crate::bench::results::Results::new(0);
        res.sentinel = Some(outcome(
            (1.0, 2.0, 9),
            (1.5, 3.0, 5),
            &[3_000.0, 2_000.0, 4_000.0],
        ));
        let meta = crate::bench::tests::quick_meta("cargo xtask bench --quick --only 'sentinel'");
        let md = crate::bench::page::render(&[], &res, &meta).unwrap();
        let targets: Vec<&str> = md
            .lines()
            .filter(|l| l.starts_with("| Redis Sentinel, `kill -9`"))
            .collect();
        assert_eq!(targets.len(), 1, "{md}");
        assert!(md.contains(&format!("## {}", plan(true).title())));
    }
}
