//! `cargo xtask`: the project's chores in Rust, one module per task: `demo` brings the
//! page up, `test` runs every check CI runs (`--quick` for the inner loop), `bench`
//! writes docs/benchmarks.md, `reliability` docs/reliability.md, `screenshots`
//! docs/screenshots/, `cluster` starts Redis, instances and nginx, and `setup`
//! installs the tools; each installs what it is missing first.

mod bench;
mod cluster;
mod demo;
mod reliability;
mod screenshots;
mod setup;
mod test;
mod util;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "cargo xtask", about = "sse-counter chores")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Debug, Subcommand)]
enum Task {
    /// Install what is missing, build the page, start the server and print its URL.
    Demo(demo::Args),
    /// Install what is missing, then run fmt, clippy, the page build and every test
    /// (real-browser tests included).
    Test(test::Args),
    /// Run the churn, flood, stall, shutdown and hostile-input tests larger, against a
    /// release build, and write docs/reliability.md from their figures.
    Reliability(reliability::Args),
    /// Take screenshots of the page in each state (headless Chromium) into
    /// docs/screenshots/.
    Screenshots,
    /// Benchmark sse-counter against the yardstick (the least an SSE server can do), the
    /// seed's Express handler, naive warp and the bare-write floor, and instances
    /// sharing the counter through Redis against one on the embedded store; write
    /// docs/benchmarks.md (loopback only).
    Bench(bench::Args),
    /// Install Redis and nginx if missing, then start Redis (with --sentinel: a primary,
    /// 2 replicas and 3 Sentinels), N instances sharing the counter through it and nginx
    /// in front (HTTPS, HTTP/2) on loopback; print the URL; stop them all on Ctrl-C.
    Cluster(cluster::Args),
    /// Install the tools the project needs, and nothing else.
    Setup {
        /// Also install Chromium and ChromeDriver for the browser tests.
        #[arg(long)]
        browser: bool,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.task {
        Task::Demo(args) => demo::run_demo(args),
        Task::Test(args) => test::run_tests(args),
        Task::Reliability(args) => reliability::run_reliability(args),
        Task::Screenshots => screenshots::run_screenshots(),
        Task::Bench(args) => bench::run_bench(args),
        Task::Cluster(args) => cluster::run_cluster(args),
        Task::Setup { browser } => {
            setup::page_tools()?;
            if browser {
                setup::browser()?;
            }
            Ok(())
        }
    }
}
