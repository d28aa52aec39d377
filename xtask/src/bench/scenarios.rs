//! The load shapes `cargo xtask bench` runs against every peer, full size and `--quick`.

use super::figures::thousands;

/// The most streams one server process can hold under a 20,000 open-files limit (what
/// the project's machines give a process), leaving room for its listener, logs and
/// runtime: the size of the `most held` target.
pub const MAX_HELD: u64 = 19_900;
/// Ticks asked of every stream: far more than any run lasts, so none ends early.
pub const COUNT: u64 = 1_000_000;

/// What the streams of a scenario are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Load {
    /// Each stream its own counter, ticking every `interval_ms`.
    Counter,
    /// Every stream subscribed to one shared counter that changes every `interval_ms`.
    Fanout,
}

/// One load shape, run against every server that serves it.
#[derive(Debug, Clone, PartialEq)]
pub struct Scenario {
    pub name: &'static str,
    pub load: Load,
    pub streams: u64,
    /// Between two ticks of a stream, or two changes of the shared counter.
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
        match self.load {
            Load::Counter => format!(
                "{}: {} streams at {rate} Hz, {how}",
                self.name,
                thousands(self.streams)
            ),
            Load::Fanout => format!(
                "{}: {} subscribers to one shared counter at {rate} events/s, {how}",
                self.name,
                thousands(self.streams)
            ),
        }
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

    /// Events per second each stream should get.
    pub fn rate(&self) -> f64 {
        1000.0 / self.interval_ms as f64
    }
}

/// A scenario with the fields most share.
const fn counter(name: &'static str, streams: u64, interval_ms: u64, ramp: f64) -> Scenario {
    Scenario {
        name,
        load: Load::Counter,
        streams,
        interval_ms,
        ramp,
        warmup: 3.0,
        window: 15.0,
        procs: 2,
    }
}

/// The scenarios at full size, in the order they run: the small sizes first (what a
/// small deployment costs at rest, and the sizes people run), then the large ones.
const FULL: [Scenario; 7] = [
    Scenario {
        warmup: 2.0,
        procs: 1,
        ..counter("small", 100, 1000, 100.0)
    },
    Scenario {
        warmup: 2.0,
        procs: 1,
        ..counter("10 Hz", 1_000, 100, 1000.0)
    },
    counter("5k 1 Hz", 5_000, 1000, 2000.0),
    counter("1 Hz", 10_000, 1000, 2000.0),
    counter("most held", MAX_HELD, 1000, 2000.0),
    Scenario {
        warmup: 2.0,
        window: 5.0,
        ..counter("burst", 10_000, 1000, 0.0)
    },
    Scenario {
        load: Load::Fanout,
        ..counter("fan-out", 10_000, 100, 2000.0)
    },
];

/// The same scenarios smaller, for `--quick`.
const QUICK: [Scenario; 7] = [
    Scenario {
        warmup: 1.0,
        window: 4.0,
        procs: 1,
        ..counter("small", 30, 1000, 100.0)
    },
    Scenario {
        warmup: 1.0,
        window: 4.0,
        procs: 1,
        ..counter("10 Hz", 300, 100, 1000.0)
    },
    Scenario {
        warmup: 1.0,
        window: 4.0,
        procs: 1,
        ..counter("5k 1 Hz", 1_000, 1000, 2000.0)
    },
    Scenario {
        warmup: 2.0,
        window: 5.0,
        ..counter("1 Hz", 2_000, 1000, 2000.0)
    },
    Scenario {
        warmup: 2.0,
        window: 5.0,
        ..counter("most held", 5_000, 1000, 2500.0)
    },
    Scenario {
        warmup: 1.0,
        window: 3.0,
        ..counter("burst", 2_000, 1000, 0.0)
    },
    Scenario {
        load: Load::Fanout,
        warmup: 2.0,
        window: 5.0,
        ..counter("fan-out", 2_000, 100, 2000.0)
    },
];

pub fn scenarios(quick: bool) -> Vec<Scenario> {
    if quick { QUICK } else { FULL }.to_vec()
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
        assert!(full
            .iter()
            .any(|s| s.load == Load::Fanout && s.streams == 10_000 && s.rate() == 10.0));
        for (streams, rate) in [(100, 1.0), (1_000, 10.0), (5_000, 1.0), (10_000, 1.0)] {
            assert!(
                full.iter()
                    .any(|s| s.steady() && s.streams == streams && s.rate() == rate),
                "{streams} streams at {rate} Hz"
            );
        }
        let small: Vec<u64> = full.iter().map(|s| s.streams).take(3).collect();
        assert_eq!(small, [100, 1_000, 5_000], "the small sizes come first");
    }

    #[test]
    fn quick_and_full_runs_have_the_same_scenarios() {
        let names = |q| scenarios(q).iter().map(|s| s.name).collect::<Vec<_>>();
        assert_eq!(names(true), names(false));
    }
}
