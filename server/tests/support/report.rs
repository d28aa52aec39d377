//! Figures the tests measure, collected by `cargo xtask reliability`: each line is a
//! [`bench::reliability::Line`], the type the xtask reads back.
//!
//! Alone the tests run small and fast; the xtask sets `SSE_COUNTER_LOAD_SCALE` to run
//! them larger and `SSE_COUNTER_RELIABILITY_REPORT` to a file they append JSON lines to.

pub use bench::reliability::Line;

/// How much to multiply the load by.
pub fn scale() -> usize {
    std::env::var("SSE_COUNTER_LOAD_SCALE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1)
}

/// Appends one scenario's figures to the report file, when one is named.
pub fn record(line: Line) {
    let Some(path) = std::env::var_os("SSE_COUNTER_RELIABILITY_REPORT") else {
        return;
    };
    use std::io::Write as _;
    let json = serde_json::to_string(&line).expect("the figures serialise");
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .expect("open the reliability report");
    writeln!(file, "{json}").expect("write the reliability report");
}
