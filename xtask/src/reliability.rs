//! `cargo xtask reliability`: the churn, flood, stall, shutdown and hostile-input tests,
//! run larger against a release build, and `docs/reliability.md` written from what they
//! measured. Loopback only; it stops by itself within a few minutes.
//!
//! The tests (`server/tests/load.rs`, `hardening.rs`, `reconnect.rs`) append one JSON
//! line per scenario, a [`bench::reliability::Line`]; it is read here into the same type,
//! so a renamed, missing or extra figure stops the task with the field's name instead of
//! printing "?".

use crate::util::{cargo, machine, project_root, run, step};
use ::bench::reliability::{Churn, Flood, HostileInput, Line, ReconnectSpread, Shutdown, Stall};
use anyhow::Context as _;
use std::fmt::Write as _;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// How many times the tests' own load to run (1 is what `cargo xtask test` runs).
    #[arg(long, default_value_t = 5)]
    scale: usize,
}

/// Every scenario's figures, one of each.
#[derive(Debug, Clone, PartialEq)]
struct Figures {
    churn: Churn,
    flood: Flood,
    stall: Stall,
    shutdown: Shutdown,
    hostile_input: HostileInput,
    reconnect_spread: ReconnectSpread,
}

impl Figures {
    /// Reads the tests' JSON lines; the last line of a scenario wins.
    fn parse(text: &str) -> anyhow::Result<Figures> {
        let (mut churn, mut flood, mut stall, mut shutdown, mut hostile, mut reconnect) =
            (None, None, None, None, None, None);
        for (n, line) in text
            .lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty())
        {
            let line: Line = serde_json::from_str(line)
                .with_context(|| format!("line {} of the tests' figures", n + 1))?;
            match line {
                Line::Churn(f) => churn = Some(f),
                Line::Flood(f) => flood = Some(f),
                Line::Stall(f) => stall = Some(f),
                Line::Shutdown(f) => shutdown = Some(f),
                Line::HostileInput(f) => hostile = Some(f),
                Line::ReconnectSpread(f) => reconnect = Some(f),
            }
        }
        let missing = |name: &str| format!("no figures for {name}: did its test run?");
        Ok(Figures {
            churn: churn.with_context(|| missing("churn"))?,
            flood: flood.with_context(|| missing("flood"))?,
            stall: stall.with_context(|| missing("stall"))?,
            shutdown: shutdown.with_context(|| missing("shutdown"))?,
            hostile_input: hostile.with_context(|| missing("hostile_input"))?,
            reconnect_spread: reconnect.with_context(|| missing("reconnect_spread"))?,
        })
    }
}

pub fn run_reliability(args: Args) -> anyhow::Result<()> {
    let root = project_root();
    let report = root.join("target/reliability.jsonl");
    let _ = std::fs::remove_file(&report);
    step(format!(
        "running the load and hardening tests at {}x against a release build",
        args.scale
    ));
    let started = std::time::Instant::now();
    run(cargo()
        .args(["test", "--release", "-p", "server"])
        .args([
            "--test",
            "load",
            "--test",
            "hardening",
            "--test",
            "reconnect",
            "--",
            "--test-threads=1",
        ])
        .env("SSE_COUNTER_LOAD_SCALE", args.scale.to_string())
        .env("SSE_COUNTER_RELIABILITY_REPORT", &report))?;
    let took = started.elapsed();
    let lines = std::fs::read_to_string(&report).context("the tests wrote no figures")?;
    let figures = Figures::parse(&lines)?;
    let md = render(&figures, args.scale, took)?;
    let out = root.join("docs/reliability.md");
    std::fs::create_dir_all(out.parent().context("docs/ has a parent")?)?;
    std::fs::write(&out, md)?;
    step(format!("wrote {}", out.display()));
    Ok(())
}

fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

fn render(f: &Figures, scale: usize, took: std::time::Duration) -> anyhow::Result<String> {
    let mut md = String::new();
    writeln!(md, "# Reliability report\n")?;
    writeln!(
        md,
        "Written by `cargo xtask reliability --scale {scale}` (release build, loopback only, {:.0} s). \
         Every scenario is a test in `server/tests/load.rs`, `server/tests/hardening.rs` or `server/tests/reconnect.rs`; \
         `cargo xtask test` runs the same tests at scale 1. Nothing may be lost: each row \
         is also an assertion of the test that measured it.\n",
        took.as_secs_f64()
    )?;
    writeln!(md, "Machine: {}\n", machine())?;

    let s = &f.churn;
    writeln!(md, "## Churn: streams opened and dropped in random order\n")?;
    writeln!(md, "| streams | abort before first tick | abort mid-stream | finish | resume and finish | still open after | permits freed |")?;
    writeln!(md, "|---|---|---|---|---|---|---|")?;
    writeln!(
        md,
        "| {} | {} | {} | {} | {} | {} | {} |\n",
        s.streams,
        s.abort_before_first_tick,
        s.abort_mid_stream,
        s.finish,
        s.resume_and_finish,
        s.active_after,
        s.permits_freed
    )?;
    let rounds: Vec<String> = s.rss_after_rounds_kib.iter().map(|k| mib(*k)).collect();
    writeln!(
        md,
        "At most {} streams open at once in every round (reached once before the first). \
         Resident memory: {} at start; after the warm-up round and each equal round after \
         it: {}; a slope of {:+.0} KiB per round; peak {}.\n",
        s.peak_streams,
        mib(s.rss_start_kib),
        rounds.join(", "),
        s.rss_slope_kib_per_round,
        mib(s.peak_rss_kib)
    )?;

    let s = &f.flood;
    writeln!(md, "## Flood past `--max-streams`\n")?;
    writeln!(md, "| cap | admitted streams ticking unbroken through the flood | flood requests | answered 503 + Retry-After | lost | peak memory |")?;
    writeln!(md, "|---|---|---|---|---|---|")?;
    writeln!(
        md,
        "| {} | {} | {} | {} | {} | {} |\n",
        s.max_streams,
        s.admitted_unbroken,
        s.flood_requests,
        s.refused_503,
        s.lost,
        mib(s.peak_rss_kib)
    )?;

    let s = &f.stall;
    writeln!(md, "## A client that stops reading\n")?;
    writeln!(
        md,
        "{} stalled client (receive window 4 KiB, server send buffer 8 KiB, 1 kHz ticks), {} \
         closed as `sse_disconnects_total{{reason=\"stalled\"}}` after the {} s stall timeout; \
         meanwhile another client received all {} of its ticks with {} gaps or repeats.\n",
        s.stalled_clients,
        s.closed_as_stalled,
        s.stall_timeout_secs,
        s.other_client_ticks,
        s.other_client_gaps_or_repeats
    )?;

    let s = &f.shutdown;
    writeln!(md, "## SIGTERM under load\n")?;
    writeln!(md, "| open streams | ended with `end` reason shutdown | lost | exit code | exit after signal | grace | peak memory |")?;
    writeln!(md, "|---|---|---|---|---|---|---|")?;
    writeln!(
        md,
        "| {} | {} | {} | {} | {} ms | {} s | {} |\n",
        s.open_streams,
        s.ended_with_shutdown,
        s.lost,
        s.exit_code,
        s.exit_ms,
        s.grace_secs,
        mib(s.peak_rss_kib)
    )?;
    writeln!(md, "A second signal during the grace period exits at once (code 130): `a_second_signal_exits_at_once`.\n")?;

    let s = &f.hostile_input;
    writeln!(md, "## Hostile input\n")?;
    writeln!(
        md,
        "{} of {} hostile requests (NUL bytes, invalid UTF-8, huge and signed numbers, repeated \
         parameters and headers, path traversal in several encodings, bad request lines) \
         answered as expected, {} with a 5xx. Oversized headers get 431, long URLs 414, and a \
         slowloris client is cut by the header read timeout. Property tests cover the query and \
         `Last-Event-ID` parsers and the event encoder.\n",
        s.answered_as_expected, s.requests, s.server_errors
    )?;
    let s = &f.reconnect_spread;
    writeln!(
        md,
        "## A restart: clients come back spread out, not in a stampede\n"
    )?;
    writeln!(
        md,
        "{} simulated browsers (each keeps the last `retry:` and reconnects that long after \
         its stream ends, as EventSource does) on `/api/shared`; SIGTERM, then the server is \
         started again on the same port. `--retry-ms {}`. With `--shutdown-retry-spread-ms {}` \
         each stream got its own `retry:` before `end` ({} distinct values); with `0`, all got \
         the same. When they came back, after the signal, in buckets of {} ms:\n",
        s.clients, s.retry_ms, s.spread_ms, s.distinct_retries, s.bucket_ms
    )?;
    writeln!(md, "```text")?;
    let widest = s
        .spread_histogram
        .iter()
        .chain(&s.stampede_histogram)
        .max()
        .copied()
        .unwrap_or(1)
        .max(1);
    for (name, hist) in [
        (format!("spread {} ms", s.spread_ms), &s.spread_histogram),
        ("spread 0 (stampede)".to_owned(), &s.stampede_histogram),
    ] {
        writeln!(md, "{name}")?;
        for (i, n) in hist.iter().enumerate() {
            let bar = "#".repeat((n * 50).div_ceil(widest) as usize);
            writeln!(md, "{:>6} ms | {bar} {n}", i as u64 * s.bucket_ms)?;
        }
    }
    writeln!(md, "```\n")?;
    writeln!(
        md,
        "Peak reconnects per second: **{:.0}** with the spread, **{:.0}** without it.\n",
        s.spread_peak_per_sec, s.stampede_peak_per_sec
    )?;
    Ok(md)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One line per scenario, as `server/tests/support/report.rs` writes them.
    const LINES: &str = r#"{"scenario":"shutdown","figures":{"open_streams":2000,"ended_with_shutdown":2000,"lost":0,"exit_code":0,"exit_ms":312,"grace_secs":10,"peak_rss_kib":40960}}
{"scenario":"churn","figures":{"streams":3000,"abort_before_first_tick":750,"abort_mid_stream":750,"finish":750,"resume_and_finish":750,"peak_streams":250,"active_after":0,"permits_freed":3000,"rss_start_kib":9000,"rss_after_rounds_kib":[12000,12100,12050],"rss_slope_kib_per_round":-50.0,"peak_rss_kib":20000}}
{"scenario":"flood","figures":{"max_streams":300,"admitted_unbroken":300,"flood_requests":1000,"refused_503":1000,"lost":0,"peak_rss_kib":15000}}
{"scenario":"stall","figures":{"stalled_clients":1,"closed_as_stalled":1,"stall_timeout_secs":1,"other_client_ticks":1500,"other_client_gaps_or_repeats":0}}
{"scenario":"hostile_input","figures":{"requests":40,"answered_as_expected":40,"server_errors":0}}
{"scenario":"reconnect_spread","figures":{"clients":1000,"retry_ms":500,"spread_ms":3000,"bucket_ms":250,"spread_histogram":[0,0,80,90],"spread_peak_per_sec":360.0,"stampede_histogram":[0,0,1000],"stampede_peak_per_sec":4000.0,"distinct_retries":950}}
"#;

    #[test]
    fn the_tests_figures_read_into_their_types() {
        let f = Figures::parse(LINES).unwrap();
        assert_eq!(f.churn.permits_freed, 3000);
        assert_eq!(f.shutdown.exit_ms, 312);
        assert_eq!(f.hostile_input.answered_as_expected, 40);
        let md = render(&f, 1, std::time::Duration::from_secs(1)).unwrap();
        assert!(
            md.contains("| 300 | 300 | 1000 | 1000 | 0 | 14.6 MiB |"),
            "{md}"
        );
    }

    #[test]
    fn a_renamed_figure_is_an_error_naming_it() {
        let renamed = LINES.replace("\"refused_503\"", "\"refused\"");
        let err = format!("{:#}", Figures::parse(&renamed).unwrap_err());
        // The producer's type denies what it does not know: the new name is named, and
        // the one expected with it.
        assert!(err.contains("unknown field `refused`"), "{err}");
        assert!(err.contains("`refused_503`"), "{err}");
        assert!(err.contains("line 3"), "{err}");
    }

    #[test]
    fn a_scenario_that_wrote_nothing_is_an_error() {
        let without_stall: String = LINES
            .lines()
            .filter(|l| !l.contains("\"stall\""))
            .map(|l| format!("{l}\n"))
            .collect();
        let err = format!("{:#}", Figures::parse(&without_stall).unwrap_err());
        assert!(err.contains("no figures for stall"), "{err}");
    }
}
