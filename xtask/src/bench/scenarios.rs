//! The load shapes `cargo xtask bench` runs against every peer, full size and `--quick`.

use super::report::thousands;

/// The most streams one server process can hold under a 20,000 open-files limit (what
/// the project's machines give a process), leaving room for its listener, logs and
/// runtime: the size of the `most held` target.
pub const MAX_HELD: u64 = 19_900;
/// Ticks asked of every stream: far more than any run lasts, so none ends early.
pub const COUNT: u64 = 1_000_000;

/// One load shape, run against every server.
#[derive(Debug, Clone, PartialEq)]
pub struct Scenario {
    pub name: &'static str,
    pub streams: u64,
    pub interval_ms: u64,
    /// Streams opened per second; 0 opens them all at once.
    pub ramp: f64,
    /// Seconds between the last stream opened and the steady window.
    pub warmup: f64,
    /// Seconds of the steady window the figures come from.
    pub window: f64,
    /// sse-bench processes sharing the streams (one holds at most its open-files limit).
    pub procs: u32,
}

impl Scenario {
    pub fn title(&self) -> String {
        let rate = 1000.0 / self.interval_ms as f64;
        let how = if self.ramp > 0.0 {
            format!("opened at {}/s", self.ramp)
        } else {
            "opened all at once".to_owned()
        };
        format!(
            "{}: {} streams at {rate} Hz, {how}",
            self.name,
            thousands(self.streams)
        )
    }

    /// Whether streams open at a steady rate (not in a burst), so the window sees the
    /// server in its steady state.
    pub fn steady(&self) -> bool {
        self.ramp > 0.0
    }

    /// The scenario's name as a file name.
    pub fn slug(&self) -> String {
        self.name.replace(' ', "-")
    }
}

/// The scenarios, in the order they run: `(name, streams, interval_ms, ramp, warmup,
/// window, procs)` at full size, then the same names smaller for `--quick`.
const FULL: [(&str, u64, u64, f64, f64, f64, u32); 4] = [
    ("10 Hz", 1_000, 100, 1000.0, 2.0, 15.0, 1),
    ("1 Hz", 10_000, 1000, 2000.0, 3.0, 15.0, 2),
    ("most held", MAX_HELD, 1000, 2000.0, 3.0, 15.0, 2),
    ("burst", 10_000, 1000, 0.0, 2.0, 5.0, 2),
];
const QUICK: [(&str, u64, u64, f64, f64, f64, u32); 4] = [
    ("10 Hz", 300, 100, 1000.0, 1.0, 4.0, 1),
    ("1 Hz", 2_000, 1000, 2000.0, 2.0, 5.0, 2),
    ("most held", 5_000, 1000, 2500.0, 2.0, 5.0, 2),
    ("burst", 2_000, 1000, 0.0, 1.0, 3.0, 2),
];

pub fn scenarios(quick: bool) -> Vec<Scenario> {
    let table = if quick { &QUICK } else { &FULL };
    table
        .iter()
        .map(
            |&(name, streams, interval_ms, ramp, warmup, window, procs)| Scenario {
                name,
                streams,
                interval_ms,
                ramp,
                warmup,
                window,
                procs,
            },
        )
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quick_runs_are_small_and_full_runs_reach_the_targets_sizes() {
        let quick: u64 = scenarios(true).iter().map(|s| s.streams).max().unwrap();
        assert!(quick <= 5_000);
        let full = scenarios(false);
        assert!(full
            .iter()
            .any(|s| s.streams == MAX_HELD && s.interval_ms == 1000));
        assert!(full.iter().any(|s| !s.steady() && s.streams == 10_000));
    }

    #[test]
    fn quick_and_full_runs_have_the_same_scenarios() {
        let names = |q| scenarios(q).iter().map(|s| s.name).collect::<Vec<_>>();
        assert_eq!(names(true), names(false));
    }
}
