//! `cargo xtask reliability`: the churn, flood, stall, shutdown and hostile-input tests,
//! run larger against a release build, and `docs/reliability.md` written from what they
//! measured. Loopback only; it stops by itself within a few minutes.

use crate::util::{cargo, machine, project_root, run, step};
use anyhow::Context as _;
use serde_json::Value;
use std::fmt::Write as _;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// How many times the tests' own load to run (1 is what `cargo xtask test` runs).
    #[arg(long, default_value_t = 5)]
    scale: usize,
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
            "--",
            "--test-threads=1",
        ])
        .env("SSE_COUNTER_LOAD_SCALE", args.scale.to_string())
        .env("SSE_COUNTER_RELIABILITY_REPORT", &report))?;
    let took = started.elapsed();
    let lines = std::fs::read_to_string(&report).context("the tests wrote no figures")?;
    let scenarios: Vec<Value> = lines
        .lines()
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()
        .context("bad figures line")?;
    let md = render(&scenarios, args.scale, took)?;
    let out = root.join("docs/reliability.md");
    std::fs::create_dir_all(out.parent().unwrap())?;
    std::fs::write(&out, md)?;
    step(format!("wrote {}", out.display()));
    Ok(())
}

fn figure(s: &Value, key: &str) -> String {
    match &s["figures"][key] {
        Value::Null => "?".into(),
        Value::Number(n) => match n.as_f64() {
            Some(f) if f.fract() == 0.0 => format!("{f:.0}"),
            _ => n.to_string(),
        },
        other => other.to_string(),
    }
}

fn mib(s: &Value, key: &str) -> String {
    s["figures"][key]
        .as_f64()
        .map(|k| format!("{:.1} MiB", k / 1024.0))
        .unwrap_or_else(|| "?".into())
}

fn render(scenarios: &[Value], scale: usize, took: std::time::Duration) -> anyhow::Result<String> {
    let find = |name: &str| {
        scenarios
            .iter()
            .find(|s| s["scenario"] == name)
            .with_context(|| format!("no figures for {name}"))
    };
    let mut md = String::new();
    writeln!(md, "# Reliability report\n")?;
    writeln!(
        md,
        "Written by `cargo xtask reliability --scale {scale}` (release build, loopback only, {:.0} s). \
         Every scenario is a test in `server/tests/load.rs` or `server/tests/hardening.rs`; \
         `cargo xtask test` runs the same tests at scale 1. Nothing may be lost: each row \
         is also an assertion of the test that measured it.\n",
        took.as_secs_f64()
    )?;
    writeln!(md, "Machine: {}\n", machine())?;

    let s = find("churn")?;
    writeln!(md, "## Churn: streams opened and dropped in random order\n")?;
    writeln!(md, "| streams | abort before first tick | abort mid-stream | finish | resume and finish | still open after | permits freed |")?;
    writeln!(md, "|---|---|---|---|---|---|---|")?;
    writeln!(
        md,
        "| {} | {} | {} | {} | {} | {} | {} |\n",
        figure(s, "streams"),
        figure(s, "abort_before_first_tick"),
        figure(s, "abort_mid_stream"),
        figure(s, "finish"),
        figure(s, "resume_and_finish"),
        figure(s, "active_after"),
        figure(s, "permits_freed")
    )?;
    writeln!(
        md,
        "Resident memory, in three equal rounds: {} at start, {} after the first (warm-up), \
         {} after the second, {} after the third; peak {}.\n",
        mib(s, "rss_start_kib"),
        mib(s, "rss_warm_kib"),
        mib(s, "rss_middle_kib"),
        mib(s, "rss_after_kib"),
        mib(s, "peak_rss_kib")
    )?;

    let s = find("flood")?;
    writeln!(md, "## Flood past `--max-streams`\n")?;
    writeln!(md, "| cap | admitted streams ticking unbroken through the flood | flood requests | answered 503 + Retry-After | lost | peak memory |")?;
    writeln!(md, "|---|---|---|---|---|---|")?;
    writeln!(
        md,
        "| {} | {} | {} | {} | {} | {} |\n",
        figure(s, "max_streams"),
        figure(s, "admitted_unbroken"),
        figure(s, "flood_requests"),
        figure(s, "refused_503"),
        figure(s, "lost"),
        mib(s, "peak_rss_kib")
    )?;

    let s = find("stall")?;
    writeln!(md, "## A client that stops reading\n")?;
    writeln!(
        md,
        "{} stalled client (receive window 4 KiB, server send buffer 8 KiB, 1 kHz ticks) closed \
         as `sse_disconnects_total{{reason=\"stalled\"}}` after the {} s stall timeout; meanwhile \
         another client received all {} of its ticks with {} gaps or repeats.\n",
        figure(s, "stalled_clients"),
        figure(s, "stall_timeout_secs"),
        figure(s, "other_client_ticks"),
        figure(s, "other_client_gaps_or_repeats")
    )?;

    let s = find("shutdown")?;
    writeln!(md, "## SIGTERM under load\n")?;
    writeln!(md, "| open streams | ended with `end` reason shutdown | lost | exit code | exit after signal | grace | peak memory |")?;
    writeln!(md, "|---|---|---|---|---|---|---|")?;
    writeln!(
        md,
        "| {} | {} | {} | {} | {} ms | {} s | {} |\n",
        figure(s, "open_streams"),
        figure(s, "ended_with_shutdown"),
        figure(s, "lost"),
        figure(s, "exit_code"),
        figure(s, "exit_ms"),
        figure(s, "grace_secs"),
        mib(s, "peak_rss_kib")
    )?;
    writeln!(md, "A second signal during the grace period exits at once (code 130): `a_second_signal_exits_at_once`.\n")?;

    let s = find("hostile_input")?;
    writeln!(md, "## Hostile input\n")?;
    writeln!(
        md,
        "{} hostile requests (NUL bytes, invalid UTF-8, huge and signed numbers, repeated \
         parameters and headers, path traversal in several encodings, bad request lines) \
         answered as expected, {} with a 5xx. Oversized headers get 431, long URLs 414, and a \
         slowloris client is cut by the header read timeout. Property tests cover the query and \
         `Last-Event-ID` parsers and the event encoder.\n",
        figure(s, "answered_as_expected"),
        figure(s, "server_errors")
    )?;
    Ok(md)
}
