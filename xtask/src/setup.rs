//! Installs what the project needs and is missing, saying what and why; skips what is
//! already there, so a second run installs nothing.

use crate::util::{cargo, find_program, has, output, project_root, run, step};
use anyhow::{bail, Context as _};
use std::process::Command;

/// trunk 0.22 needs a newer rustc than this project's toolchain; 0.21.14 builds with it.
pub const TRUNK_VERSION: &str = "0.21.14";

/// The WebDriver server for Firefox. Debian packages none, so it comes from crates.io,
/// as trunk does; 0.37 drives the Firefox ESR that Debian ships (153).
pub const GECKODRIVER_VERSION: &str = "0.37.1";

/// Everything `trunk build --release` needs.
pub fn page_tools() -> anyhow::Result<()> {
    wasm_target()?;
    trunk()?;
    wasm_bindgen()?;
    // No binaryen: Debian's wasm-opt 108 breaks wasm-bindgen 0.2.130 output, so the page
    // is built with `data-wasm-opt="0"` and sized by rustc (see the root Cargo.toml).
    Ok(())
}

/// Chromium and ChromeDriver, Firefox and geckodriver for the real-browser tests (every
/// one runs in both engines) and the screenshots.
pub fn browser() -> anyhow::Result<()> {
    apt(
        &[
            ("chromium", "chromium"),
            ("chromedriver", "chromium-driver"),
            ("firefox-esr", "firefox-esr"),
        ],
        "the browser tests drive a real headless Chromium and Firefox",
    )?;
    geckodriver()
}

fn geckodriver() -> anyhow::Result<()> {
    cargo_install(
        "geckodriver",
        GECKODRIVER_VERSION,
        "drives Firefox in the browser tests; ~2 minutes once",
    )
}

/// `cargo install --locked` of the crate `program` at `version`, unless
/// `program --version` says that version already.
fn cargo_install(program: &str, version: &str, why: &str) -> anyhow::Result<()> {
    let have = output(Command::new(program).arg("--version")).unwrap_or_default();
    if have.split_whitespace().any(|w| w == version) {
        return Ok(());
    }
    step(format!("installing {program} {version} ({why})"));
    run(cargo().args(["install", program, "--version", version, "--locked"]))
}

/// Redis and nginx, for running several instances (`cargo xtask cluster`) and for the
/// tests that do; openssl makes the cluster's self-signed certificate.
pub fn cluster_tools() -> anyhow::Result<()> {
    apt(
        &[
            ("redis-server", "redis-server"),
            ("redis-sentinel", "redis-sentinel"),
            ("nginx", "nginx"),
            ("openssl", "openssl"),
        ],
        "several instances share the counter through Redis (or Sentinel), behind nginx",
    )
}

fn wasm_target() -> anyhow::Result<()> {
    let installed = output(Command::new("rustup").args(["target", "list", "--installed"]))
        .context("rustup is needed to add the wasm32-unknown-unknown target")?;
    if installed
        .lines()
        .any(|l| l.trim() == "wasm32-unknown-unknown")
    {
        return Ok(());
    }
    step("adding the wasm32-unknown-unknown target (the page is Rust compiled to WebAssembly)");
    run(Command::new("rustup").args(["target", "add", "wasm32-unknown-unknown"]))
}

fn trunk() -> anyhow::Result<()> {
    cargo_install(
        "trunk",
        TRUNK_VERSION,
        "builds the page; compiling it takes ~9 minutes once",
    )
}

/// trunk uses the `wasm-bindgen` on PATH only if its version equals the crate's in
/// Cargo.lock; otherwise it tries to download one, which fails on a machine that reaches
/// only the package registries (as the project's machines and CI do).
fn wasm_bindgen() -> anyhow::Result<()> {
    let want = locked_version("wasm-bindgen")?;
    let have = output(Command::new("wasm-bindgen").arg("--version")).unwrap_or_default();
    if have.split_whitespace().any(|w| w == want) {
        return Ok(());
    }
    step(format!(
        "installing wasm-bindgen-cli {want} (must equal the wasm-bindgen crate in Cargo.lock; ~5 minutes once)"
    ));
    // Not `--locked`: the CLI's lock file names a dependency version that the package
    // registry the project's machines use does not serve, and the unlocked build works.
    run(cargo().args(["install", "wasm-bindgen-cli", "--version", &want]))
}

/// The version of `package` recorded in Cargo.lock.
pub fn locked_version(package: &str) -> anyhow::Result<String> {
    let lock = std::fs::read_to_string(project_root().join("Cargo.lock"))
        .context("cannot read Cargo.lock")?;
    let mut lines = lock.lines();
    while let Some(line) = lines.next() {
        if line == format!("name = \"{package}\"") {
            if let Some(v) = lines.next().and_then(|l| l.strip_prefix("version = \"")) {
                return Ok(v.trim_end_matches('"').to_owned());
            }
        }
    }
    bail!("{package} is not in Cargo.lock")
}

/// Installs Debian packages whose programs are missing.
fn apt(programs: &[(&str, &str)], why: &str) -> anyhow::Result<()> {
    let missing: Vec<&str> = programs
        .iter()
        .filter(|(program, _)| !has(program) && find_program(program).is_none())
        .map(|(_, package)| *package)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let list = missing.join(" ");
    step(format!("installing Debian packages {list} ({why})"));
    let root = output(Command::new("id").arg("-u")).is_some_and(|u| u.trim() == "0");
    if !root {
        bail!(
            "{list} missing and this is not root: run `sudo apt-get install -y {list}`, then again"
        );
    }
    run(Command::new("apt-get").arg("update"))?;
    run(Command::new("apt-get")
        .args(["install", "-y", "--no-install-recommends"])
        .args(&missing)
        .env("DEBIAN_FRONTEND", "noninteractive"))
}

/// Builds the page into web/dist in release mode (what the server serves).
pub fn build_page() -> anyhow::Result<()> {
    step("building the page (trunk build --release)");
    run(Command::new("trunk").args(["build", "--release"]))
}
