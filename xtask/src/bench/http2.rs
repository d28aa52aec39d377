//! The `http2` scenario (issue 11): sse-counter alone, the same streams carried three
//! ways, each by a fresh server: plain HTTP/1.1, HTTPS HTTP/1.1 (one TLS connection
//! per stream), and HTTP/2 over TLS (the streams multiplexed over a few connections).
//! HTTPS HTTP/1.1 separates what TLS costs from what HTTP/2 costs. Its two targets,
//! memory per HTTP/2 stream and CPU per event next to HTTP/1.1's, join the report's
//! targets table.

use super::figures::{
    fmt, ratio, status, thousands, Figure, Row, CPU, LATENCY_P99_MS, MEM_KIB, ROWS,
};
use super::load;
use super::peers;
use super::scenarios::{Load, Scenario, COUNT};
use super::sides::{self, Side};
use ::bench::report::{Report, Transport};
use std::fmt::Write as _;
use std::path::Path;

/// The name `--only` selects it by.
pub const NAME: &str = "http2";

/// The transports, in the order each round runs them (and the table's columns).
pub const TRANSPORTS: [Transport; 3] = [Transport::Http1, Transport::Https1, Transport::Http2];

/// HTTP/2 streams the server allows per connection in this scenario: above the
/// streams any connection carries here (500 at full size), far above the default 100.
const H2_MAX_STREAMS: &str = "1000";

/// What the server's memory per HTTP/2 stream must stay within, in KiB.
const MEM_LIMIT_KIB: f64 = 4.0;
/// HTTP/2's CPU per event at most this times HTTP/1.1's.
const CPU_TIMES: f64 = 1.2;
/// The size the targets are stated at; `--quick` runs fewer.
const TARGET_STREAMS: u64 = 10_000;

/// The load: per-client counters, and the HTTP/2 connections they share.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// The streams, rate, ramp, warm-up, window and client processes, the same for
    /// every transport.
    pub scenario: Scenario,
    /// HTTP/2 connections the streams are spread over.
    pub connections: u64,
}

impl Plan {
    pub fn title(&self) -> String {
        format!(
            "HTTP/2: {} streams at {} Hz over {} connections, next to HTTP/1.1 and HTTPS HTTP/1.1",
            thousands(self.scenario.streams),
            self.scenario.rate(),
            self.connections
        )
    }
}

/// 10,000 streams at 1 Hz over 20 connections, or 1,000 over 4 with `--quick`.
pub fn plan(quick: bool) -> Plan {
    let scenario = Scenario {
        name: NAME,
        load: Load::Counter,
        streams: 10_000,
        interval_ms: 1000,
        ramp: 2000.0,
        warmup: 3.0,
        window: 15.0,
        // One process holds 10,000 HTTP/1.1 sockets only just; two, as in `1 Hz`.
        procs: 2,
    };
    if quick {
        Plan {
            scenario: Scenario {
                streams: 1_000,
                ramp: 1000.0,
                warmup: 2.0,
                window: 5.0,
                procs: 1,
                ..scenario
            },
            connections: 4,
        }
    } else {
        Plan {
            scenario,
            connections: 20,
        }
    }
}

impl Side for Transport {
    const ALL: &'static [Transport] = &TRANSPORTS;

    fn slug(self) -> &'static str {
        match self {
            Transport::Http1 => "http1",
            Transport::Https1 => "https1",
            Transport::Http2 => "h2",
        }
    }

    fn label(self) -> &'static str {
        Transport::label(self)
    }
}

/// What the scenario measured, by transport.
pub type Outcome = sides::Outcome<Plan, Transport>;

/// Runs the plan `repeats` times, the transports in turn, each against a fresh
/// sse-counter.
pub fn run(
    root: &Path,
    plan: Plan,
    repeats: usize,
    logs: &Path,
    nofile: u64,
    failures: &mut Vec<String>,
) -> Outcome {
    sides::repeat(
        NAME,
        plan,
        repeats,
        failures,
        |plan, transport: Transport, rep| {
            let log = logs.join(format!("{NAME}-{}-{rep}.log", transport.slug()));
            run_one(root, plan, transport, &log, nofile)
        },
    )
}

/// sse-counter with the arguments of `cargo xtask bench`, and TLS where `transport`
/// needs it.
fn ours_args(transport: Transport) -> &'static [&'static str] {
    match transport {
        Transport::Http1 => &[],
        Transport::Https1 | Transport::Http2 => {
            &["--tls-self-signed", "--h2-max-streams", H2_MAX_STREAMS]
        }
    }
}

/// The arguments that make sse-bench use `transport` over an `https://` URL.
fn bench_args(plan: &Plan, transport: Transport) -> Vec<String> {
    match transport {
        Transport::Http1 | Transport::Https1 => Vec::new(),
        Transport::Http2 => vec![
            "--http2".into(),
            "--connections".into(),
            plan.connections.to_string(),
        ],
    }
}

fn run_one(
    root: &Path,
    plan: &Plan,
    transport: Transport,
    log: &Path,
    nofile: u64,
) -> anyhow::Result<Report> {
    let ours = peers::ours();
    let sc = &plan.scenario;
    let server = ours.start_with(root, sc, log, ours_args(transport))?;
    let expected_scheme = match transport {
        Transport::Http1 => "http://",
        Transport::Https1 | Transport::Http2 => "https://",
    };
    anyhow::ensure!(
        server.base.starts_with(expected_scheme),
        "sse-counter listens on {} where {} was expected",
        server.base,
        expected_scheme
    );
    let url = format!(
        "{}{}?count={COUNT}&interval_ms={}",
        server.base, ours.counter_path, sc.interval_ms
    );
    let mut cmd = load::sse_bench(root, sc, &[url], nofile);
    cmd.args(bench_args(plan, transport))
        .args(["--interval-ms", &sc.interval_ms.to_string()])
        .args(["--server-pid", &server.child.id().to_string()]);
    let report = load::run_sse_bench(root, &mut cmd, log)?;
    anyhow::ensure!(
        report.transport == transport,
        "sse-bench reports {} where {} was asked",
        report.transport.label(),
        transport.label()
    );
    eprintln!(
        "  {}: {} established over {} connections, {} failed, {:.0} events/s, {} µs CPU/event, {} KiB/stream",
        transport.label(),
        report.established,
        report.connections,
        report.failed_total,
        report.events_per_sec,
        fmt((CPU.get)(&report), 2),
        fmt((MEM_KIB.get)(&report), 2),
    );
    drop(server);
    Ok(report)
}

/// The scenario's rows in the report's targets table.
pub fn target_rows(outcome: &Outcome) -> Vec<Row> {
    let plan = &outcome.plan;
    let at_size = plan.scenario.streams >= TARGET_STREAMS;
    let h1 = outcome.med(Transport::Http1, MEM_KIB);
    let tls1 = outcome.med(Transport::Https1, MEM_KIB);
    let h2 = outcome.med(Transport::Http2, MEM_KIB);
    let memory = Row {
        target: format!(
            "HTTP/2, {} streams over 20 connections at 1 Hz: server memory ≤ {MEM_LIMIT_KIB} KiB \
             resident per stream (connection buffers shared)",
            thousands(TARGET_STREAMS)
        ),
        measured: format!(
            "{} KiB per stream at {} streams over {} connections; HTTP/1.1: {} KiB, HTTPS \
             HTTP/1.1: {} KiB",
            fmt(h2, 2),
            thousands(plan.scenario.streams),
            plan.connections,
            fmt(h1, 2),
            fmt(tls1, 2)
        ),
        status: status(
            h2.map(|v| v <= MEM_LIMIT_KIB),
            h2.map(|v| format!("{v:.2} KiB per stream, {:.2} KiB over", v - MEM_LIMIT_KIB))
                .unwrap_or_default(),
            at_size,
        ),
    };
    let h1 = outcome.med(Transport::Http1, CPU);
    let tls1 = outcome.med(Transport::Https1, CPU);
    let h2 = outcome.med(Transport::Http2, CPU);
    let mut measured = match (h2, h1) {
        (Some(v), Some(p)) => format!(
            "{v:.2} µs = {} HTTP/1.1's {p:.2} µs",
            ratio(Some(v), Some(p))
        ),
        (Some(v), None) => format!("{v:.2} µs; HTTP/1.1's: n/a"),
        _ => "n/a".into(),
    };
    if let Some(t) = tls1 {
        write!(
            measured,
            "<br>HTTPS HTTP/1.1: {t:.2} µs = {} HTTP/1.1's (what TLS alone costs)",
            ratio(Some(t), h1)
        )
        .expect("writing to a String");
    }
    let cpu = Row {
        target: format!(
            "HTTP/2, {} streams at 1 Hz: server CPU per event ≤ {CPU_TIMES}× HTTP/1.1's at the same load",
            thousands(TARGET_STREAMS)
        ),
        measured,
        status: status(
            h2.zip(h1).map(|(v, p)| v <= CPU_TIMES * p),
            h2.zip(h1)
                .map(|(v, p)| {
                    format!(
                        "{} HTTP/1.1's, {:.2} µs above {CPU_TIMES}×",
                        ratio(Some(v), Some(p)),
                        v - CPU_TIMES * p
                    )
                })
                .unwrap_or_default(),
            at_size,
        ),
    };
    vec![memory, cpu]
}

/// The scenario's section of the report: one column per transport, then HTTP/2 as a
/// multiple of each HTTP/1.1.
pub fn section(md: &mut String, outcome: &Outcome) -> anyhow::Result<()> {
    let plan = &outcome.plan;
    let sc = &plan.scenario;
    writeln!(md, "## {}\n", plan.title())?;
    writeln!(
        md,
        "sse-counter alone, a fresh server per run: plain, then with `--tls-self-signed \
         --h2-max-streams {H2_MAX_STREAMS}` for HTTPS HTTP/1.1 (one TLS connection per stream, \
         ALPN `http/1.1`) and for HTTP/2 (`sse-bench --http2 --connections {}`: stream i on \
         connection i mod {}, ALPN `h2`). {} client process{}, opened at {}/s, {} s warm-up, \
         {} s steady window.\n",
        plan.connections,
        plan.connections,
        sc.procs,
        if sc.procs == 1 { "" } else { "es" },
        sc.ramp,
        sc.warmup,
        sc.window
    )?;
    let mut head = String::from("|");
    let mut rule = String::from("| ---");
    for t in TRANSPORTS {
        write!(head, " | {}", t.label())?;
        rule.push_str(" | ---:");
    }
    head.push_str(" | HTTP/2 / HTTP/1.1 | HTTP/2 / HTTPS HTTP/1.1");
    rule.push_str(" | ---: | ---:");
    writeln!(md, "{head} |")?;
    writeln!(md, "{rule} |")?;
    let connections = Figure {
        label: "connections",
        unit: "",
        get: |r| Some(r.connections as f64),
        decimals: 0,
        ratio: false,
    };
    for row in std::iter::once(connections).chain(ROWS) {
        let mut line = format!("| {}", row.label);
        for t in TRANSPORTS {
            write!(line, " | {}", fmt(outcome.med(t, row), row.decimals))?;
        }
        for base in [Transport::Http1, Transport::Https1] {
            let cell = if row.ratio {
                ratio(outcome.med(Transport::Http2, row), outcome.med(base, row))
            } else {
                String::new()
            };
            write!(line, " | {cell}")?;
        }
        writeln!(md, "{line} |")?;
    }
    if let (Some(h1), Some(tls1), Some(h2)) = (
        outcome.med(Transport::Http1, CPU),
        outcome.med(Transport::Https1, CPU),
        outcome.med(Transport::Http2, CPU),
    ) {
        writeln!(
            md,
            "\nCPU per event: HTTPS HTTP/1.1 is {} plain HTTP/1.1's (TLS), HTTP/2 {} HTTPS \
             HTTP/1.1's (multiplexing over TLS), {} plain HTTP/1.1's in all.",
            ratio(Some(tls1), Some(h1)),
            ratio(Some(h2), Some(tls1)),
            ratio(Some(h2), Some(h1))
        )?;
    }
    outcome.spread_lines(
        md,
        &[
            ("CPU per event", CPU),
            ("memory per stream", MEM_KIB),
            ("latency p99", LATENCY_P99_MS),
        ],
    )?;
    let errors: Vec<String> = TRANSPORTS
        .iter()
        .flat_map(|t| {
            outcome
                .runs(*t)
                .iter()
                .flatten()
                .flat_map(move |r| r.errors.iter().map(move |e| format!("{}: {e}", t.label())))
        })
        .collect();
    if !errors.is_empty() {
        writeln!(md, "\nErrors the clients saw (first few per run):\n")?;
        for e in errors.iter().take(12) {
            writeln!(md, "- `{e}`")?;
        }
    }
    writeln!(
        md,
        "\nMemory per stream is the server's VmRSS in the middle of the window minus before \
         the first connect, over the streams open, so an HTTP/2 stream's figure includes its \
         share of its connection's buffers and TLS state.\n"
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::tests::report_with;

    fn outcome(quick: bool, cpu: [f64; 3], kib: [f64; 3]) -> Outcome {
        let run = |i: usize| {
            vec![Some(report_with(|r| {
                let s = r.server.as_mut().unwrap();
                s.cpu_us_per_event = Some(cpu[i]);
                s.rss_per_stream_bytes = Some(kib[i] * 1024.0);
                r.transport = TRANSPORTS[i];
                r.connections = if i == 2 { 20 } else { r.established };
            }))]
        };
        Outcome::new(plan(quick), vec![run(0), run(1), run(2)])
    }

    #[test]
    fn the_full_plan_is_the_targets_size_and_fits_the_servers_stream_limit() {
        let full = plan(false);
        assert_eq!(full.scenario.streams, TARGET_STREAMS);
        assert_eq!(full.connections, 20);
        let per_connection = full.scenario.streams.div_ceil(full.connections);
        assert!(per_connection <= H2_MAX_STREAMS.parse().unwrap());
        let quick = plan(true);
        assert_eq!((quick.scenario.streams, quick.connections), (1_000, 4));
        assert!(quick.scenario.streams.div_ceil(quick.connections) <= 1000);
    }

    #[test]
    fn targets_compare_http2_with_plain_http1_and_name_tls_apart() {
        let rows = target_rows(&outcome(false, [10.0, 11.0, 13.0], [3.0, 20.0, 2.5]));
        assert_eq!(
            rows[0].measured,
            "2.50 KiB per stream at 10,000 streams over 20 connections; HTTP/1.1: 3.00 KiB, \
             HTTPS HTTP/1.1: 20.00 KiB"
        );
        assert_eq!(rows[0].status, "**met**");
        assert_eq!(
            rows[1].measured,
            "13.00 µs = 1.30× HTTP/1.1's 10.00 µs<br>HTTPS HTTP/1.1: 11.00 µs = 1.10× \
             HTTP/1.1's (what TLS alone costs)"
        );
        assert_eq!(
            rows[1].status,
            "**not met**: 1.30× HTTP/1.1's, 1.00 µs above 1.2×"
        );
    }

    #[test]
    fn a_quick_run_is_not_the_targets_size() {
        let rows = target_rows(&outcome(true, [10.0, 11.0, 11.0], [3.0, 5.0, 5.0]));
        assert_eq!(
            rows[0].status,
            "not met at the size --quick runs (5.00 KiB per stream, 1.00 KiB over); not measured at full size"
        );
        assert_eq!(
            rows[1].status,
            "met at the size --quick runs; not measured at full size"
        );
    }

    #[test]
    fn the_section_has_a_column_per_transport_and_http2_as_a_multiple() {
        let mut md = String::new();
        section(&mut md, &outcome(true, [10.0, 11.0, 12.0], [3.0, 5.0, 2.0])).unwrap();
        assert!(md.contains(
            "| | HTTP/1.1 | HTTPS HTTP/1.1 | HTTP/2 (TLS) | HTTP/2 / HTTP/1.1 | HTTP/2 / HTTPS HTTP/1.1 |"
        ));
        assert!(
            md.contains("| server CPU per event (µs) | 10.00 | 11.00 | 12.00 | 1.20× | 1.09× |")
        );
        assert!(
            md.contains("| connections | 19900 | 19900 | 20 |  |  |"),
            "{md}"
        );
        assert!(md.contains("HTTPS HTTP/1.1 is 1.10× plain HTTP/1.1's (TLS)"));
    }

    #[test]
    fn a_run_of_only_this_scenario_gives_a_page_with_its_targets_and_table() {
        let mut res = crate::bench::results::Results::new(0);
        res.http2 = Some(outcome(true, [10.0, 11.0, 12.0], [3.0, 5.0, 2.0]));
        let meta = crate::bench::tests::quick_meta("cargo xtask bench --quick --only 'http2'");
        let md = crate::bench::page::render(&[], &res, &meta).unwrap();
        let targets: Vec<&str> = md
            .lines()
            .filter(|l| l.starts_with("| HTTP/2, 10,000 streams"))
            .collect();
        assert_eq!(targets.len(), 2, "{md}");
        assert!(md.contains(&format!("## {}", plan(true).title())));
        assert!(
            !md.contains("benchmarks.svg"),
            "no chart without a steady scenario"
        );
    }

    #[test]
    fn the_server_gets_tls_and_sse_bench_http2_only_where_the_transport_needs_them() {
        assert!(ours_args(Transport::Http1).is_empty());
        assert!(ours_args(Transport::Https1).contains(&"--tls-self-signed"));
        let p = plan(true);
        assert!(bench_args(&p, Transport::Https1).is_empty());
        assert_eq!(
            bench_args(&p, Transport::Http2),
            ["--http2", "--connections", "4"]
        );
    }
}
