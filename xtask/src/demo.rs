//! `cargo xtask demo`: installs what is missing, builds the page, starts the server
//! serving it with fault injection allowed, and prints the URL to open.

use crate::setup;
use crate::util::{cargo, project_root, run, step};
use anyhow::Context as _;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Address for the server.
    #[arg(long, default_value = "127.0.0.1:3000")]
    addr: String,
}

pub fn run_demo(args: Args) -> anyhow::Result<()> {
    setup::page_tools()?;
    setup::build_page()?;
    step("building the server (release)");
    run(cargo().args(["build", "--release", "-p", "server"]))?;
    let root = project_root();
    let mut child = Command::new(root.join("target/release/sse-counter"))
        .args(["--addr", &args.addr, "--allow-fault-injection"])
        .arg("--static-dir")
        .arg(root.join("web/dist"))
        .stdout(Stdio::piped())
        .spawn()
        .context("cannot start the server")?;
    let stdout = child.stdout.take().context("no stdout from the server")?;
    let mut lines = BufReader::new(stdout).lines();
    if let Some(line) = lines.next().transpose()? {
        let url = line
            .strip_prefix("listening on ")
            .unwrap_or(&line)
            .to_owned();
        println!();
        println!("  sse-counter is up: open {url}/ in a browser");
        println!("  the raw stream:    curl -N '{url}/api/counter?count=5&interval_ms=500'");
        println!("  stop it with Ctrl-C (the open streams get `event: end`, reason shutdown)");
        println!();
    }
    let status = child.wait()?;
    anyhow::ensure!(status.success(), "the server exited with {status}");
    Ok(())
}
