//! `cargo xtask demo`: installs what is missing, builds the page, starts the server
//! serving it with fault injection allowed, and prints the URL to open. With `--https`
//! the server makes a self-signed certificate and serves HTTPS (HTTP/2 by ALPN), and the
//! demo explains the browser's warning about that certificate.

use crate::setup;
use crate::util::{cargo, project_root, run, step};
use anyhow::Context as _;
use std::io::{BufRead, BufReader, Write as _};
use std::process::{ChildStderr, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Address for the server.
    #[arg(long, default_value = "127.0.0.1:3000")]
    addr: String,
    /// Serve HTTPS (HTTP/2 and HTTP/1.1 by ALPN) with a self-signed certificate made at
    /// start; the browser warns about it, and the demo says why.
    #[arg(long)]
    https: bool,
}

/// The start of the line the server prints on stderr with `--tls-self-signed`.
const FINGERPRINT_LINE: &str = "self-signed certificate, SHA-256 fingerprint";

pub fn run_demo(args: Args) -> anyhow::Result<()> {
    setup::page_tools()?;
    setup::build_page()?;
    step("building the server (release)");
    run(cargo().args(["build", "--release", "-p", "server"]))?;
    let root = project_root();
    let mut server = Command::new(root.join("target/release/sse-counter"));
    server
        .args([
            "--addr",
            &args.addr,
            "--allow-fault-injection",
            "--demo-login",
        ])
        .arg("--static-dir")
        .arg(root.join("web/dist"))
        .stdout(Stdio::piped());
    if args.https {
        // Its stderr is read for the fingerprint line, and passed on as it comes.
        server.arg("--tls-self-signed").stderr(Stdio::piped());
    }
    let mut child = server.spawn().context("cannot start the server")?;
    let fingerprint = child.stderr.take().map(pass_on_stderr);
    let stdout = child.stdout.take().context("no stdout from the server")?;
    let mut lines = BufReader::new(stdout).lines();
    if let Some(line) = lines.next().transpose()? {
        let url = line
            .strip_prefix("listening on ")
            .unwrap_or(&line)
            .to_owned();
        println!();
        println!("  sse-counter is up: open {url}/ in a browser");
        if let Some(fingerprint) = fingerprint {
            // The server prints the line before it listens; the wait only covers the
            // thread that reads it.
            let line = fingerprint
                .recv_timeout(Duration::from_secs(5))
                .unwrap_or_else(|_| format!("{FINGERPRINT_LINE}: (not printed)"));
            print_certificate_warning(&url, &line);
        } else {
            println!("  the raw stream:    curl -N '{url}/api/counter?count=5&interval_ms=500'");
        }
        println!(
            "  the chat:          sign in under Channels, in two browsers (or a private window) to talk"
        );
        println!("  stop it with Ctrl-C (the open streams get `event: end`, reason shutdown)");
        println!();
    }
    let status = child.wait()?;
    anyhow::ensure!(status.success(), "the server exited with {status}");
    Ok(())
}

/// Copies the server's stderr (its log) to ours on a thread, and sends back the
/// fingerprint line when it passes.
fn pass_on_stderr(stderr: ChildStderr) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if line.starts_with(FINGERPRINT_LINE) {
                // The demo may have stopped waiting; the line is printed below anyway.
                let _ = tx.send(line.clone());
            }
            let _ = writeln!(std::io::stderr(), "{line}");
        }
    });
    rx
}

/// What the browser will say about the certificate, and what to do about it.
fn print_certificate_warning(url: &str, fingerprint_line: &str) {
    println!(
        "
  The certificate was made by the server a moment ago, for localhost, 127.0.0.1 and
  ::1, and no authority the browser trusts signed it. So the browser warns before the
  page loads (Chromium: \"Your connection is not private\", NET::ERR_CERT_AUTHORITY_INVALID;
  Firefox: \"Warning: Potential Security Risk Ahead\"). That is expected for this demo:
  the connection is encrypted, the browser just cannot tell who made the certificate.

  Check that it is this server's: the browser shows the certificate's SHA-256
  fingerprint (Chromium: click \"Not secure\" in the address bar, then the
  certificate), and the server printed

    {fingerprint_line}

  If they match, choose \"Advanced\" > \"Proceed to 127.0.0.1 (unsafe)\" (Firefox:
  \"Advanced\" > \"Accept the Risk and Continue\"). The exception lasts until the server
  restarts, which makes a new certificate. Never accept such a warning for a site you
  did not start yourself.

  Why HTTPS: browsers speak HTTP/2 only over TLS, and over HTTP/2 every stream of the
  page shares one connection, so ten tabs stream at once; over plain HTTP/1.1 a browser
  opens at most six connections per origin, and the seventh tab waits.

  the raw stream:    curl -k -N '{url}/api/counter?count=5&interval_ms=500'
                     (-k: curl would refuse the certificate too)"
    );
}
