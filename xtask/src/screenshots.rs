//! `cargo xtask screenshots`: pictures of the page in each state, taken by the
//! real-browser tests in headless Chromium and written to `docs/screenshots/`.

use crate::setup;
use crate::util::{cargo, project_root, run, step};

pub fn run_screenshots() -> anyhow::Result<()> {
    setup::page_tools()?;
    setup::browser()?;
    setup::build_page()?;
    let dir = project_root().join("docs/screenshots");
    step(format!("taking screenshots into {}", dir.display()));
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
        .env("SSE_COUNTER_SCREENSHOTS", &dir))?;
    Ok(())
}
