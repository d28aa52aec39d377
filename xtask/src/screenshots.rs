//! `cargo xtask screenshots`: pictures of the page in each state, taken by the
//! real-browser tests in headless Chromium and written to `docs/screenshots/`: the
//! walkthrough's states of the per-client counter, two tabs on the shared counter, ten
//! tabs over HTTP/1.1 and over HTTPS (the README's "Why the 7th tab hangs"), and ten
//! tabs sharing one stream over HTTP/1.1 (the README's "One stream per browser"), and
//! two people chatting in two browsers and a tab signed out by another (the README's
//! chat walkthrough).

use crate::setup;
use crate::util::{cargo, project_root, run, step};
use std::time::SystemTime;

/// Every picture the README shows; each must be written by the run.
const PICTURES: [&str; 14] = [
    "idle",
    "finished",
    "closed-on-error",
    "reconnecting",
    "resumed-finished",
    "open",
    "closed-by-user",
    "shutdown-finished",
    "shared-two-tabs",
    "tabs-http1",
    "tabs-https",
    "tabs-shared-http1",
    "chat-two-people",
    "chat-signed-out",
];

pub fn run_screenshots() -> anyhow::Result<()> {
    setup::page_tools()?;
    setup::browser()?;
    // The run is the whole browser suite, whose cluster scenario starts Redis and nginx.
    setup::cluster_tools()?;
    setup::build_page()?;
    let dir = project_root().join("docs/screenshots");
    step(format!("taking screenshots into {}", dir.display()));
    let started = SystemTime::now();
    // One scenario at a time, so that no page is slowed by another while it is taken.
    run(cargo()
        .args([
            "test",
            "-p",
            "server",
            "--test",
            "browser",
            "--",
            "--test-threads=1",
        ])
        .env("SSE_COUNTER_DIST", project_root().join("web/dist"))
        // The pictures are Chromium's; the Firefox runs would take none.
        .env("SSE_COUNTER_BROWSERS", "chromium")
        .env("SSE_COUNTER_SCREENSHOTS", &dir))?;
    let stale: Vec<&str> = PICTURES
        .into_iter()
        .filter(|name| {
            let written = std::fs::metadata(dir.join(format!("{name}.png")))
                .and_then(|m| m.modified())
                .is_ok_and(|at| at >= started);
            !written
        })
        .collect();
    anyhow::ensure!(
        stale.is_empty(),
        "no new screenshot for {stale:?}: a browser test that took it was renamed or stopped \
         taking it"
    );
    Ok(())
}
