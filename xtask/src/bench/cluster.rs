//! The `cluster` scenario (issue 12): what sharing the counter through Redis costs.
//! Two instances on one Redis with 5,000 subscribers each, next to one instance on the
//! embedded store with all 10,000, both driven at 10 increments a second by sse-bench.
//! The subscribers connect straight to the instances, not through nginx, so the
//! difference between the two is what Redis adds: its round trip before the `200`, and
//! each instance's reader copying the change into its hub. Its target (Redis adds at
//! most 2 ms to publish-to-delivery latency, p50 and p99) joins the report's targets
//! table; the table also gives the servers' extra CPU per delivered event and Redis's
//! own CPU per increment.
//!
//! At that size two cores running both the servers and the load tool are saturated: the
//! subscribers take fewer events a second than are sent, and the latency on both sides
//! is the load tool's backlog (100 ms and more), whose change from one run to the next
//! (tens of ms, either way) hides what Redis adds. So the same two sides also run at
//! [`LIGHT_PER_INSTANCE`] subscribers an instance, where nothing queues and the
//! difference is Redis's: its round trips, its fsync and the extra thread wake-ups.

use super::figures::{
    fmt, signed, status, thousands, Figure, Row, CPU, LATENCY_P50_MS, LATENCY_P99_MS,
};
use super::load;
use super::peers::{self, ready};
use super::scenarios::{Load, Scenario};
use super::sides::{self, Side};
use crate::cluster::{Cluster, Options};
use ::bench::report::Report;
use std::fmt::Write as _;
use std::path::Path;

/// The name `--only` selects it by.
pub const NAME: &str = "cluster";

/// How much Redis may add to publish-to-delivery latency, at p50 and at p99, in ms.
const ADDED_MS: f64 = 2.0;
/// The size the target is stated at: instances, and subscribers on each.
const TARGET_INSTANCES: usize = 2;
const TARGET_PER_INSTANCE: u64 = 5_000;
/// Subscribers on each instance in the light runs: few enough that no queue forms.
const LIGHT_PER_INSTANCE: u64 = 50;

/// Flags of every instance on Redis, as `cargo xtask bench` gives the one on the
/// embedded store (`PEERS`' sse-counter, with its fan-out flags): room for every
/// stream, and a publish limit per address above the rate sse-bench drives. One
/// serving thread each, as one would deploy two instances on a two-core machine: the
/// two instances together have the threads the one on the embedded store has
/// (one per CPU), rather than twice as many competing for the same cores.
const INSTANCE_ARGS: [&str; 6] = [
    "--max-streams",
    "20000",
    "--publish-rate",
    "100",
    "--threads",
    "1",
];

/// The load, the same on both sides.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// All the subscribers (`streams`), the increments (one per `interval_ms`), the
    /// ramp, warm-up, window and client processes.
    pub scenario: Scenario,
    /// Instances sharing the counter through Redis, the subscribers split evenly.
    pub instances: usize,
}

impl Plan {
    pub fn title(&self) -> String {
        format!(
            "Redis: {} instances × {} subscribers at {} increments/s, next to one instance on \
             the embedded store with {}",
            self.instances,
            thousands(self.per_instance()),
            self.scenario.rate(),
            thousands(self.scenario.streams)
        )
    }

    fn per_instance(&self) -> u64 {
        self.scenario.streams / self.instances as u64
    }

    /// The same load at [`LIGHT_PER_INSTANCE`] subscribers an instance, one client
    /// process.
    fn light(&self) -> Plan {
        Plan {
            scenario: Scenario {
                streams: LIGHT_PER_INSTANCE * self.instances as u64,
                ramp: 1000.0,
                procs: 1,
                ..self.scenario.clone()
            },
            instances: self.instances,
        }
    }
}

/// 2 × 5,000 at full size, 2 × 500 with `--quick`.
pub fn plan(quick: bool) -> Plan {
    let scenario = Scenario {
        name: NAME,
        load: Load::Fanout,
        streams: TARGET_INSTANCES as u64 * TARGET_PER_INSTANCE,
        interval_ms: 100,
        ramp: 2000.0,
        warmup: 3.0,
        window: 15.0,
        // 10,000 client sockets in two processes, as in `fan-out`.
        procs: 2,
    };
    let scenario = if quick {
        Scenario {
            streams: 1_000,
            ramp: 1000.0,
            warmup: 2.0,
            window: 5.0,
            procs: 1,
            ..scenario
        }
    } else {
        scenario
    };
    Plan {
        scenario,
        instances: TARGET_INSTANCES,
    }
}

/// Where the shared counter lives in a run, and at which size: the sides of this
/// scenario.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Store {
    /// One instance, the counter in its own process.
    Embedded,
    /// The plan's instances, the counter in one Redis.
    Redis,
    /// [`Store::Embedded`] at [`LIGHT_PER_INSTANCE`] subscribers an instance.
    EmbeddedLight,
    /// [`Store::Redis`] at [`LIGHT_PER_INSTANCE`] subscribers an instance.
    RedisLight,
}

impl Store {
    fn is_light(self) -> bool {
        matches!(self, Store::EmbeddedLight | Store::RedisLight)
    }
}

impl Side for Store {
    const ALL: &'static [Store] = &[
        Store::Embedded,
        Store::Redis,
        Store::EmbeddedLight,
        Store::RedisLight,
    ];

    fn slug(self) -> &'static str {
        match self {
            Store::Embedded => "embedded",
            Store::Redis => "redis",
            Store::EmbeddedLight => "embedded-light",
            Store::RedisLight => "redis-light",
        }
    }

    fn label(self) -> &'static str {
        match self {
            Store::Embedded => "embedded store",
            Store::Redis => "Redis store",
            Store::EmbeddedLight => "embedded store, light",
            Store::RedisLight => "Redis store, light",
        }
    }
}

/// What the scenario measured, by store.
pub type Outcome = sides::Outcome<Plan, Store>;

impl Outcome {
    /// Redis's figure minus the embedded store's, from the medians.
    fn added(&self, figure: Figure) -> Option<f64> {
        Some(self.med(Store::Redis, figure)? - self.med(Store::Embedded, figure)?)
    }

    /// The same in the light runs.
    fn added_light(&self, figure: Figure) -> Option<f64> {
        Some(self.med(Store::RedisLight, figure)? - self.med(Store::EmbeddedLight, figure)?)
    }
}

/// Runs the plan `repeats` times, the stores in turn, each on fresh servers (and a
/// fresh Redis).
pub fn run(
    root: &Path,
    plan: Plan,
    repeats: usize,
    logs: &Path,
    nofile: u64,
    failures: &mut Vec<String>,
) -> Outcome {
    sides::repeat(NAME, plan, repeats, failures, |plan, store: Store, rep| {
        run_one(root, plan, store, logs, rep, nofile)
    })
}

fn run_one(
    root: &Path,
    plan: &Plan,
    store: Store,
    logs: &Path,
    rep: usize,
    nofile: u64,
) -> anyhow::Result<Report> {
    let shared_path = shared::paths::SHARED;
    let light;
    let plan = if store.is_light() {
        light = plan.light();
        &light
    } else {
        plan
    };
    let slug = store.slug();
    match store {
        Store::Embedded | Store::EmbeddedLight => {
            let ours = peers::ours();
            let log = logs.join(format!("{NAME}-{slug}-{rep}.log"));
            let server = ours.start(root, &plan.scenario, &log)?;
            let url = format!("{}{shared_path}", server.base);
            ready(&server.base)?;
            let pid = server.child.id();
            let report = sse_bench(root, plan, &[url], &[pid], None, &log, nofile);
            drop(server);
            report
        }
        Store::Redis | Store::RedisLight => {
            let run_dir = logs.join(format!("{NAME}-{slug}-{rep}"));
            let options = Options::bench(
                root,
                plan.instances,
                run_dir.clone(),
                INSTANCE_ARGS.map(str::to_owned).to_vec(),
            );
            let cluster = Cluster::start(&options)?;
            let bases: Vec<String> = cluster
                .instances
                .iter()
                .map(|a| format!("http://{a}"))
                .collect();
            for base in &bases {
                ready(base)?;
            }
            let urls: Vec<String> = bases.iter().map(|b| format!("{b}{shared_path}")).collect();
            let report = sse_bench(
                root,
                plan,
                &urls,
                &cluster.instance_pids,
                Some(cluster.redis_pid),
                &run_dir,
                nofile,
            );
            drop(cluster);
            report
        }
    }
}

/// One sse-bench run: the plan's subscribers spread over `urls` (stream i on URL
/// i mod K), the increments over their servers in turn, the costs of `server_pids`
/// summed, and the store's when there is one. `logs`: where the servers' logs are.
fn sse_bench(
    root: &Path,
    plan: &Plan,
    urls: &[String],
    server_pids: &[u32],
    store_pid: Option<u32>,
    logs: &Path,
    nofile: u64,
) -> anyhow::Result<Report> {
    let sc = &plan.scenario;
    let mut cmd = load::sse_bench(root, sc, urls, nofile);
    cmd.args(["--kind", "shared"])
        .args(["--publish-rate", &sc.rate().to_string()]);
    for pid in server_pids {
        cmd.args(["--server-pid", &pid.to_string()]);
    }
    if let Some(pid) = store_pid {
        cmd.args(["--store-pid", &pid.to_string()]);
    }
    let report = load::run_sse_bench(root, &mut cmd, logs)?;
    let publish = report.publish.clone().unwrap_or_default();
    eprintln!(
        "  {} server{}: {} established, {} failed, {:.0} events/s, {} gaps, latency p50 {} ms \
         p99 {} ms, {} µs server CPU/event{}; {} of {} increments taken",
        server_pids.len(),
        if server_pids.len() == 1 { "" } else { "s" },
        report.established,
        report.failed_total,
        report.events_per_sec,
        report.gaps,
        fmt((LATENCY_P50_MS.get)(&report), 3),
        fmt((LATENCY_P99_MS.get)(&report), 3),
        fmt((CPU.get)(&report), 2),
        report
            .store
            .map(|s| format!(
                ", Redis {} µs CPU/increment",
                fmt(s.cpu_us_per_increment, 1)
            ))
            .unwrap_or_default(),
        publish.ok,
        publish.sent,
    );
    Ok(report)
}

const REDIS_CPU_PER_INCREMENT: Figure = Figure {
    label: "Redis CPU per increment (µs)",
    unit: "µs",
    get: |r| r.store?.cpu_us_per_increment,
    decimals: 1,
    ratio: false,
};

/// The scenario's row in the report's targets table.
pub fn target_rows(outcome: &Outcome) -> Vec<Row> {
    let plan = &outcome.plan;
    let at_size = plan.instances >= TARGET_INSTANCES && plan.per_instance() >= TARGET_PER_INSTANCE;
    let (p50, p99) = (outcome.added(LATENCY_P50_MS), outcome.added(LATENCY_P99_MS));
    let at = |figure: Figure, side: Store| fmt(outcome.med(side, figure), 2);
    let measured = format!(
        "{}: p50 {} ms ({} ms embedded, {} ms on Redis), p99 {} ms ({} ms, {} ms); \
         {} × {} subscribers",
        "added by Redis",
        signed(p50, 2),
        at(LATENCY_P50_MS, Store::Embedded),
        at(LATENCY_P50_MS, Store::Redis),
        signed(p99, 2),
        at(LATENCY_P99_MS, Store::Embedded),
        at(LATENCY_P99_MS, Store::Redis),
        plan.instances,
        thousands(plan.per_instance()),
    );
    let met = p50.zip(p99).map(|(a, b)| a <= ADDED_MS && b <= ADDED_MS);
    let gap = [("p50", p50), ("p99", p99)]
        .into_iter()
        .filter_map(|(name, v)| {
            let v = v?;
            (v > ADDED_MS).then(|| format!("{name} +{v:.2} ms, {:.2} ms over", v - ADDED_MS))
        })
        .collect::<Vec<_>>()
        .join("; ");
    vec![
        Row {
            target: format!(
                "shared counter on Redis, {TARGET_INSTANCES} instances × {} subscribers at 10 \
             increments/s: publish-to-delivery latency at most {ADDED_MS} ms above one instance \
             on the embedded store, p50 and p99",
                thousands(TARGET_PER_INSTANCE)
            ),
            measured,
            status: status(met, gap, at_size),
        },
        light_row(outcome),
    ]
}

/// What Redis adds where nothing queues: the light runs' row, reported beside the target.
fn light_row(outcome: &Outcome) -> Row {
    let light = outcome.plan.light();
    let at = |figure: Figure, side: Store| fmt(outcome.med(side, figure), 2);
    Row {
        target: format!(
            "the same at {} × {} subscribers, where the load tool keeps up: what Redis adds to \
             publish-to-delivery latency, p50 and p99",
            light.instances,
            light.per_instance()
        ),
        measured: format!(
            "p50 {} ms ({} ms embedded, {} ms on Redis), p99 {} ms ({} ms, {} ms)",
            signed(outcome.added_light(LATENCY_P50_MS), 2),
            at(LATENCY_P50_MS, Store::EmbeddedLight),
            at(LATENCY_P50_MS, Store::RedisLight),
            signed(outcome.added_light(LATENCY_P99_MS), 2),
            at(LATENCY_P99_MS, Store::EmbeddedLight),
            at(LATENCY_P99_MS, Store::RedisLight),
        ),
        status: "reported (no target)".to_owned(),
    }
}

/// The scenario's section of the report: a column per side and Redis's difference.
pub fn section(md: &mut String, outcome: &Outcome) -> anyhow::Result<()> {
    let plan = &outcome.plan;
    let sc = &plan.scenario;
    writeln!(md, "## {}\n", plan.title())?;
    writeln!(
        md,
        "The shared counter in Redis, next to the same load on one instance that keeps it \
         in its own process: a fresh Redis (`deploy/redis.conf`, `appendfsync always`) and \
         fresh instances per run, started by `cluster::Cluster` without nginx. The \
         subscribers connect **straight to the instances, not through nginx**, {} on each, \
         so the difference is what Redis adds: its round trip (and fsync) before an \
         increment's `200`, and each instance's reader copying the change into its hub. \
         sse-bench `POST`s {} increments a second, to each instance in turn; latency is \
         publish to delivery (the `sent_at_us` stamped by the instance that took the \
         increment). Server figures are summed over the instances; Redis's CPU is its own \
         over the window (its housekeeping, and the kernel time of the fsync that \
         `appendfsync always` makes in its main thread, included), divided by the \
         increments taken in it. Every subscriber gets the same changes, so the latency \
         percentiles are those of about {} changes, each seen {} times: in a short window \
         the p99 is that of its slowest few. {} client process{}, \
         opened at {}/s, {} s warm-up, {} s steady window.\n",
        thousands(plan.per_instance()),
        sc.rate(),
        (sc.rate() * sc.window).round(),
        thousands(sc.streams),
        sc.procs,
        if sc.procs == 1 { "" } else { "es" },
        sc.ramp,
        sc.warmup,
        sc.window
    )?;
    let count = |label: &'static str, get: fn(&Report) -> Option<f64>| Figure {
        label,
        unit: "",
        get,
        decimals: 0,
        ratio: false,
    };
    let ms = |label: &'static str, get: fn(&Report) -> Option<f64>, decimals| Figure {
        label,
        unit: "ms",
        get,
        decimals,
        ratio: false,
    };
    // (figure, whether the difference means something)
    let rows = [
        (LATENCY_P50_MS, true),
        (LATENCY_P99_MS, true),
        (
            ms(
                "delivery latency max (ms)",
                |r| r.latency_us.max.map(|us| us as f64 / 1000.0),
                1,
            ),
            true,
        ),
        (
            Figure {
                label: "server CPU per delivered event (µs, all instances)",
                ..CPU
            },
            true,
        ),
        (
            Figure {
                label: "server cores busy (all instances)",
                unit: "",
                get: |r| Some(r.server?.cpu_cores),
                decimals: 2,
                ratio: false,
            },
            true,
        ),
        (REDIS_CPU_PER_INCREMENT, false),
        (
            Figure {
                label: "Redis CPU over the window (ms; by utime+stime)",
                unit: "ms",
                get: |r| Some(r.store?.cpu_us_window / 1000.0),
                decimals: 1,
                ratio: false,
            },
            false,
        ),
        (
            count("increments taken in the window", |r| {
                Some(r.publish.as_ref()?.ok_in_window as f64)
            }),
            false,
        ),
        (count("established", |r| Some(r.established as f64)), false),
        (count("failed", |r| Some(r.failed_total as f64)), false),
        (
            count("events/s in window", |r| Some(r.events_per_sec)),
            false,
        ),
        (
            count("events/s expected", |r| r.expected_events_per_sec),
            false,
        ),
        (count("gaps", |r| Some(r.gaps as f64)), false),
        (count("repeats", |r| Some(r.repeats as f64)), false),
        (count("resets", |r| Some(r.resets as f64)), false),
    ];
    table_rows(md, outcome, &rows, [Store::Embedded, Store::Redis])?;
    let light = plan.light();
    writeln!(
        md,
        "\nThe same at {} subscribers an instance ({} in all; one client process), where the \
         load tool keeps up and nothing queues:\n",
        light.per_instance(),
        light.scenario.streams
    )?;
    table_rows(
        md,
        outcome,
        &rows[..5],
        [Store::EmbeddedLight, Store::RedisLight],
    )?;
    let verdict = &target_rows(outcome)[0];
    writeln!(
        md,
        "\nTarget, Redis adds at most {ADDED_MS} ms at p50 and p99: {}.",
        verdict.status
    )?;
    let notes = outcome.notes("increments");
    if !notes.is_empty() {
        writeln!(md)?;
        for n in notes {
            writeln!(md, "- {n}")?;
        }
    }
    outcome.spread_lines(
        md,
        &[
            ("latency p50", LATENCY_P50_MS),
            ("p99", LATENCY_P99_MS),
            ("CPU per event", CPU),
        ],
    )?;
    writeln!(md)?;
    Ok(())
}

/// One table, its head and its rows: a column for each of `sides` (embedded, then
/// Redis) and Redis's difference where it means something.
fn table_rows(
    md: &mut String,
    outcome: &Outcome,
    rows: &[(Figure, bool)],
    sides: [Store; 2],
) -> anyhow::Result<()> {
    writeln!(
        md,
        "| | one instance, embedded store | {} instances on Redis | Redis − embedded |",
        outcome.plan.instances
    )?;
    writeln!(md, "| --- | ---: | ---: | ---: |")?;
    for &(row, diff) in rows {
        let mut line = format!("| {}", row.label);
        for side in sides {
            let mut cell = fmt(outcome.med(side, row), row.decimals);
            // Redis's CPU by the clock ticks beside the precise figure.
            if row.label.starts_with("Redis CPU over") && side == sides[1] {
                let ticks = Figure {
                    get: |r| Some(r.store?.cpu_us_ticks_window / 1000.0),
                    ..row
                };
                write!(cell, "; {}", fmt(outcome.med(side, ticks), 0))?;
            }
            if cell == "n/a" && side == sides[0] && !diff && row.label.starts_with("Redis") {
                cell = String::new();
            }
            write!(line, " | {cell}")?;
        }
        let added = if sides[0] == Store::Embedded {
            outcome.added(row)
        } else {
            outcome.added_light(row)
        };
        let cell = if diff {
            signed(added, row.decimals)
        } else {
            String::new()
        };
        writeln!(md, "{line} | {cell} |")?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::tests::report_with;
    use ::bench::report::{PublishFigures, StoreFigures};

    /// One run per side: latency p50 and p99 in ms, server CPU per event in µs; the
    /// light runs a tenth of the latencies.
    fn outcome(quick: bool, embedded: (f64, f64, f64), redis: (f64, f64, f64)) -> Outcome {
        let tenth = |(p50, p99, cpu): (f64, f64, f64)| (p50 / 10.0, p99 / 10.0, cpu);
        outcome_with(quick, [embedded, redis, tenth(embedded), tenth(redis)])
    }

    fn outcome_with(quick: bool, sides: [(f64, f64, f64); 4]) -> Outcome {
        let run = |(p50, p99, cpu): (f64, f64, f64), store: bool| {
            vec![Some(report_with(|r| {
                r.latency_us.p50 = Some((p50 * 1000.0) as u64);
                r.latency_us.p99 = Some((p99 * 1000.0) as u64);
                r.server.as_mut().unwrap().cpu_us_per_event = Some(cpu);
                r.publish = Some(PublishFigures {
                    rate: 10.0,
                    sent: 100,
                    ok: 100,
                    ok_in_window: 50,
                    ..PublishFigures::default()
                });
                r.store = store.then_some(StoreFigures {
                    pid: 9,
                    cpu_us_window: 5_000.0,
                    cpu_us_ticks_window: 10_000.0,
                    cpu_us_per_increment: Some(100.0),
                });
            }))]
        };
        let [embedded, redis, embedded_light, redis_light] = sides;
        Outcome::new(
            plan(quick),
            vec![
                run(embedded, false),
                run(redis, true),
                run(embedded_light, false),
                run(redis_light, true),
            ],
        )
    }

    #[test]
    fn the_full_plan_is_the_targets_size_and_quick_is_small() {
        let full = plan(false);
        assert_eq!((full.instances, full.per_instance()), (2, 5_000));
        assert_eq!(full.scenario.rate(), 10.0);
        // Each client process and each server within a 20,000 open-files limit.
        assert!(full.scenario.streams / u64::from(full.scenario.procs) < 19_900);
        let quick = plan(true);
        assert_eq!((quick.instances, quick.per_instance()), (2, 500));
        assert_eq!(quick.scenario.rate(), 10.0);
        // The light runs: the same load at 50 an instance, in both.
        for plan in [full, quick] {
            let light = plan.light();
            assert_eq!((light.instances, light.per_instance()), (2, 50));
            assert_eq!(light.scenario.rate(), 10.0);
            assert_eq!(light.scenario.window, plan.scenario.window);
        }
    }

    #[test]
    fn the_target_is_met_only_when_both_percentiles_are_within_two_ms() {
        let rows = target_rows(&outcome(false, (1.0, 5.0, 4.0), (2.5, 6.9, 5.0)));
        assert_eq!(rows[0].status, "**met**");
        assert!(
            rows[0].measured.starts_with(
                "added by Redis: p50 +1.50 ms (1.00 ms embedded, 2.50 ms on Redis), p99 +1.90 ms"
            ),
            "{}",
            rows[0].measured
        );
        let rows = target_rows(&outcome(false, (1.0, 5.0, 4.0), (2.5, 8.0, 5.0)));
        assert_eq!(rows[0].status, "**not met**: p99 +3.00 ms, 1.00 ms over");
        let rows = target_rows(&outcome(true, (1.0, 5.0, 4.0), (1.5, 5.5, 5.0)));
        assert_eq!(
            rows[0].status,
            "met at the size --quick runs; not measured at full size"
        );
        // The light runs' row is reported beside it, with no verdict of its own.
        let rows = target_rows(&outcome_with(
            false,
            [
                (100.0, 200.0, 9.0),
                (110.0, 240.0, 9.0),
                (0.4, 0.6, 9.0),
                (1.9, 3.6, 9.0),
            ],
        ));
        assert_eq!(rows.len(), 2);
        assert!(rows[0].status.starts_with("**not met**"));
        assert_eq!(
            rows[1].measured,
            "p50 +1.50 ms (0.40 ms embedded, 1.90 ms on Redis), p99 +3.00 ms (0.60 ms, 3.60 ms)"
        );
        assert_eq!(rows[1].status, "reported (no target)");
        assert!(
            rows[1].target.contains("2 × 50 subscribers"),
            "{}",
            rows[1].target
        );
    }

    #[test]
    fn the_section_gives_both_sides_the_difference_and_redis_cpu() {
        let mut md = String::new();
        section(&mut md, &outcome(true, (1.0, 5.0, 4.0), (2.5, 6.0, 5.5))).unwrap();
        assert!(md.contains(
            "| | one instance, embedded store | 2 instances on Redis | Redis − embedded |"
        ));
        assert!(
            md.contains("| delivery latency p50 (ms) | 1.000 | 2.500 | +1.500 |"),
            "{md}"
        );
        assert!(
            md.contains(
                "| server CPU per delivered event (µs, all instances) | 4.00 | 5.50 | +1.50 |"
            ),
            "{md}"
        );
        assert!(
            md.contains("| Redis CPU per increment (µs) |  | 100.0 |  |"),
            "{md}"
        );
        assert!(
            md.contains("| Redis CPU over the window (ms; by utime+stime) |  | 5.0; 10 |  |"),
            "{md}"
        );
        assert!(md.contains("straight to the instances, not through nginx"));
        // The light table: the same sides at 50 an instance, a tenth of the latencies.
        let light = md
            .split("The same at 50 subscribers an instance")
            .nth(1)
            .expect(&md);
        assert!(
            light.contains("| delivery latency p50 (ms) | 0.100 | 0.250 | +0.150 |"),
            "{md}"
        );
        assert!(!light.contains("Redis CPU per increment"), "{md}");
        assert!(md.contains(
            "\nTarget, Redis adds at most 2 ms at p50 and p99: met at the size --quick runs; \
             not measured at full size.\n"
        ));
    }

    #[test]
    fn a_run_of_only_this_scenario_gives_a_page_with_its_target_and_table() {
        let mut res = crate::bench::results::Results::new(0);
        res.cluster = Some(outcome(true, (1.0, 5.0, 4.0), (2.5, 6.0, 5.5)));
        let meta = crate::bench::tests::quick_meta("cargo xtask bench --quick --only 'cluster'");
        let md = crate::bench::page::render(&[], &res, &meta).unwrap();
        let targets: Vec<&str> = md
            .lines()
            .filter(|l| {
                l.starts_with("| shared counter on Redis") || l.starts_with("| the same at 2 × 50")
            })
            .collect();
        assert_eq!(targets.len(), 2, "{md}");
        assert!(md.contains(&format!("## {}", plan(true).title())));
    }
}
