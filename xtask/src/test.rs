//! `cargo xtask test`: what CI runs. Installs what is missing, then checks formatting and
//! lints, builds the page (so a broken wasm build fails), and runs every test, the
//! real-browser tests and those of several instances behind nginx included.

use crate::setup;
use crate::util::{cargo, project_root, run, step};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Extra arguments for `cargo test` (e.g. a test name filter).
    #[arg(trailing_var_arg = true)]
    cargo_test_args: Vec<String>,
}

pub fn run_tests(args: Args) -> anyhow::Result<()> {
    setup::page_tools()?;
    setup::browser()?;
    // The tests of several instances start a real redis-server and nginx.
    setup::cluster_tools()?;
    step("checking formatting");
    run(cargo().args(["fmt", "--all", "--", "--check"]))?;
    step("linting (native and wasm)");
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
    ]))?;
    setup::build_page()?;
    step("running every test");
    run(cargo()
        .args(["test", "--workspace"])
        .args(&args.cargo_test_args)
        .env("SSE_COUNTER_DIST", project_root().join("web/dist")))?;
    step("all checks passed");
    Ok(())
}
