//! `cargo xtask test`: what CI runs. Installs what is missing, then checks formatting,
//! lints and the API docs' links, builds the page (so a broken wasm build fails), and
//! runs every test, the real-browser tests (each in Chromium and in Firefox) and those
//! of several instances behind nginx included. `--quick` leaves out the browsers, the
//! load tests and the doc tests, and says so. Either way it ends with how long each part
//! took, also when one failed.

use crate::setup;
use crate::util::{cargo, project_root, run, step};
use anyhow::Context as _;
use std::process::Command;
use std::time::{Duration, Instant};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The inner loop: no page build, no browser tests (`--test browser`), no load
    /// tests (`--test load`), no doc tests; everything else as in a full run. The last
    /// line names what was left out.
    #[arg(long)]
    quick: bool,
    /// Extra arguments for `cargo test` (e.g. a test name filter).
    #[arg(trailing_var_arg = true)]
    cargo_test_args: Vec<String>,
}

/// The test targets `--quick` leaves out: the real-browser tests (which need the page
/// built and Chromium) and the load tests (thousands of streams, minutes).
pub const SLOW_TESTS: [&str; 2] = ["browser", "load"];

pub fn run_tests(args: Args) -> anyhow::Result<()> {
    let mut parts = Parts::default();
    let outcome = run_parts(&args, &mut parts);
    eprint!("{}", parts.summary(outcome.is_ok()));
    outcome?;
    if args.quick {
        step(format!(
            "quick checks passed; not run: {}, the doc tests (run `cargo xtask test` for them)",
            SLOW_TESTS.map(|t| format!("--test {t}")).join(", ")
        ));
    } else {
        step("all checks passed");
    }
    Ok(())
}

fn run_parts(args: &Args, parts: &mut Parts) -> anyhow::Result<()> {
    parts.time("installing what is missing", || {
        setup::page_tools()?;
        if !args.quick {
            setup::browser()?;
        }
        // The tests of several instances start a real redis-server and nginx.
        setup::cluster_tools()
    })?;
    parts.time("checking formatting", || {
        run(cargo().args(["fmt", "--all", "--", "--check"]))
    })?;
    parts.time("linting (native and wasm)", || {
        run(cargo().args([
            "clippy",
            "--workspace",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ]))?;
        run(cargo().args([
            "clippy",
            "-p",
            "web",
            "--target",
            "wasm32-unknown-unknown",
            "--",
            "-D",
            "warnings",
        ]))
    })?;
    parts.time("checking the API docs (broken links)", || {
        run(cargo()
            .args(["doc", "--workspace", "--no-deps"])
            .env("RUSTDOCFLAGS", "-D warnings"))
    })?;
    if args.quick {
        let targets = quick_test_targets()?;
        // The doc tests are left out too: `cargo test --doc` cannot share one run with
        // the targets named here, and a run of its own rebuilt some 40 dependencies
        // (3m45s on the 2-core machine) for a workspace that has no doc test yet.
        parts.time(
            "running the tests (no browser, no load, no doc tests)",
            || {
                run(cargo_test()
                    .args(["--workspace", "--lib", "--bins"])
                    .args(targets.iter().flat_map(|t| ["--test", t.as_str()]))
                    .args(&args.cargo_test_args))
            },
        )?;
    } else {
        parts.time("building the page", setup::build_page)?;
        parts.time("running every test", || {
            run(cargo_test().arg("--workspace").args(&args.cargo_test_args))
        })?;
    }
    Ok(())
}

/// `cargo test` with the built page where the tests look for it.
fn cargo_test() -> Command {
    let mut cmd = cargo();
    cmd.arg("test")
        .env("SSE_COUNTER_DIST", project_root().join("web/dist"));
    cmd
}

/// Every integration-test target of the workspace but [`SLOW_TESTS`], from
/// `cargo metadata`, so a new test file is in the quick run without a change here.
fn quick_test_targets() -> anyhow::Result<Vec<String>> {
    let out = cargo()
        .args(["metadata", "--no-deps", "--format-version", "1"])
        .current_dir(project_root())
        .output()
        .context("cannot run cargo metadata")?;
    anyhow::ensure!(
        out.status.success(),
        "cargo metadata failed ({})",
        out.status
    );
    let metadata: Metadata =
        serde_json::from_slice(&out.stdout).context("cargo metadata's JSON")?;
    without_slow(test_targets(&metadata))
}

/// `tests` without [`SLOW_TESTS`]; an error if one of those is not among them, since
/// the quick run would then leave out nothing it says it leaves out.
fn without_slow(tests: Vec<String>) -> anyhow::Result<Vec<String>> {
    for slow in SLOW_TESTS {
        anyhow::ensure!(
            tests.iter().any(|t| t == slow),
            "no test target named {slow:?}: `--quick` would leave out nothing (update SLOW_TESTS)"
        );
    }
    Ok(tests
        .into_iter()
        .filter(|t| !SLOW_TESTS.contains(&t.as_str()))
        .collect())
}

/// What `cargo metadata` says that this task reads.
#[derive(Debug, serde::Deserialize)]
struct Metadata {
    packages: Vec<Package>,
}

#[derive(Debug, serde::Deserialize)]
struct Package {
    targets: Vec<Target>,
}

#[derive(Debug, serde::Deserialize)]
struct Target {
    name: String,
    kind: Vec<String>,
}

/// The names of the integration-test targets, sorted, each once.
fn test_targets(metadata: &Metadata) -> Vec<String> {
    let mut names: Vec<String> = metadata
        .packages
        .iter()
        .flat_map(|p| &p.targets)
        .filter(|t| t.kind.iter().any(|k| k == "test"))
        .map(|t| t.name.clone())
        .collect();
    names.sort();
    names.dedup();
    names
}

/// The parts of a run and how long each took.
#[derive(Debug, Default)]
struct Parts(Vec<(&'static str, Duration, bool)>);

impl Parts {
    /// Runs `part`, announcing it and recording how long it took and whether it passed.
    fn time<T>(
        &mut self,
        name: &'static str,
        part: impl FnOnce() -> anyhow::Result<T>,
    ) -> anyhow::Result<T> {
        step(name);
        let started = Instant::now();
        let result = part();
        self.0.push((name, started.elapsed(), result.is_ok()));
        result
    }

    /// One line per part that ran, the failed one marked, and the total.
    fn summary(&self, passed: bool) -> String {
        let width = self.0.iter().map(|(n, ..)| n.len()).max().unwrap_or(0);
        let mut out = String::from("\nxtask test: how long each part took\n");
        for (name, took, ok) in &self.0 {
            out.push_str(&format!(
                "  {name:<width$}  {:>7.1} s{}\n",
                took.as_secs_f64(),
                if *ok { "" } else { "  FAILED" }
            ));
        }
        let total: Duration = self.0.iter().map(|(_, took, _)| *took).sum();
        out.push_str(&format!(
            "  {:<width$}  {:>7.1} s{}\n",
            "total",
            total.as_secs_f64(),
            if passed {
                ""
            } else {
                "  (stopped at the failure)"
            }
        ));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_summary_names_every_part_and_marks_the_failed_one() {
        let mut parts = Parts::default();
        parts.time("first", || Ok(())).unwrap();
        let err = parts
            .time("second", || -> anyhow::Result<()> { anyhow::bail!("no") })
            .unwrap_err();
        assert_eq!(err.to_string(), "no");
        let summary = parts.summary(false);
        let lines: Vec<&str> = summary.lines().collect();
        assert!(
            lines[2].starts_with("  first ") && lines[2].ends_with(" s"),
            "{summary}"
        );
        assert!(
            lines[3].starts_with("  second") && lines[3].ends_with("FAILED"),
            "{summary}"
        );
        assert!(
            lines[4].starts_with("  total ") && lines[4].contains("stopped"),
            "{summary}"
        );
    }

    #[test]
    fn quick_leaves_out_exactly_the_browser_and_load_tests() {
        let metadata: Metadata = serde_json::from_value(serde_json::json!({"packages": [
            {"targets": [
                {"name": "server", "kind": ["lib"]},
                {"name": "load", "kind": ["test"]},
                {"name": "browser", "kind": ["test"]},
                {"name": "http2", "kind": ["test"]},
            ]},
            {"targets": [{"name": "sse_bench", "kind": ["test"]}]},
        ]}))
        .unwrap();
        assert_eq!(
            test_targets(&metadata),
            ["browser", "http2", "load", "sse_bench"]
        );
        assert_eq!(
            without_slow(test_targets(&metadata)).unwrap(),
            ["http2", "sse_bench"]
        );
        let err = without_slow(vec!["http2".into(), "load".into()]).unwrap_err();
        assert!(err.to_string().contains("\"browser\""), "{err}");
    }

    #[test]
    fn the_workspace_has_the_slow_tests_quick_leaves_out() {
        let targets = quick_test_targets().unwrap();
        assert!(targets.iter().any(|t| t == "http2"), "{targets:?}");
        assert!(
            !targets.iter().any(|t| SLOW_TESTS.contains(&t.as_str())),
            "{targets:?}"
        );
    }
}
