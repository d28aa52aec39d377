//! The one way to run the load generator for a scenario: [`sse_bench`] gives it the
//! scenario's load, [`run_sse_bench`] runs it and reads its typed report. Every kind of
//! run (each peer in `mod.rs`, the `http2` and `cluster` sides) adds only what its load
//! needs to the command.

use super::scenarios::Scenario;
use crate::util::display;
use ::bench::report::Report;
use anyhow::Context as _;
use std::path::Path;
use std::process::{Command, Stdio};

/// sse-bench with the scenario's load on `urls`: its streams (within the open-files
/// limit), ramp, warm-up, window, client processes and its own time bound. The caller
/// adds what its kind of load needs.
pub fn sse_bench(root: &Path, sc: &Scenario, urls: &[String], nofile: u64) -> Command {
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
pub fn run_sse_bench(root: &Path, cmd: &mut Command, logs: &Path) -> anyhow::Result<Report> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::tests::report_with;

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
