//! The leaf of `cargo xtask bench`'s page: the figures its tables read from a report
//! ([`Figure`], [`ROWS`]), medians and spreads over the repeats, how numbers are
//! written, and a target's verdict ([`Row`], [`status`]). It imports nothing of the
//! task's other modules, which all use it.

use ::bench::report::Report;

/// `min–max` of `figure` over the runs that have it, for the "spread over the repeats"
/// lines under every table.
pub fn spread(runs: &[Option<Report>], figure: Figure, decimals: usize) -> String {
    let xs: Vec<f64> = runs.iter().flatten().filter_map(figure.get).collect();
    let lo = xs.iter().copied().reduce(f64::min);
    let hi = xs.iter().copied().reduce(f64::max);
    format!("{}–{}", fmt(lo, decimals), fmt(hi, decimals))
}

/// One figure read from a report: a row of every scenario's table.
#[derive(Debug, Clone, Copy)]
pub struct Figure {
    pub label: &'static str,
    /// The unit after a number, as the targets table writes it.
    pub unit: &'static str,
    pub get: fn(&Report) -> Option<f64>,
    pub decimals: usize,
    /// Whether an ours/peer ratio means something for this figure.
    pub ratio: bool,
}

pub const CPU: Figure = Figure {
    label: "server CPU per event (µs)",
    unit: "µs",
    get: |r| r.server?.cpu_us_per_event,
    decimals: 2,
    ratio: true,
};
pub const MEM_KIB: Figure = Figure {
    label: "server memory per stream (KiB)",
    unit: "KiB",
    get: |r| r.server?.rss_per_stream_bytes.map(|b| b / 1024.0),
    decimals: 2,
    ratio: true,
};
pub const HEADERS_P99_MS: Figure = Figure {
    label: "time to headers p99 (ms)",
    unit: "ms",
    get: |r| ms(r.time_to_headers_us.p99),
    decimals: 2,
    ratio: true,
};
pub const FIRST_EVENT_P99_MS: Figure = Figure {
    label: "time to first event p99 (ms)",
    unit: "ms",
    get: |r| ms(r.time_to_first_event_us.p99),
    decimals: 1,
    ratio: true,
};
pub const LATENCY_P50_MS: Figure = Figure {
    label: "delivery latency p50 (ms)",
    unit: "ms",
    get: |r| ms(r.latency_us.p50),
    decimals: 3,
    ratio: true,
};
pub const LATENCY_P99_MS: Figure = Figure {
    label: "delivery latency p99 (ms)",
    unit: "ms",
    get: |r| ms(r.latency_us.p99),
    decimals: 3,
    ratio: true,
};

pub const FAILED: Figure = Figure {
    label: "failed",
    unit: "",
    get: |r| Some(r.failed_total as f64),
    decimals: 0,
    ratio: false,
};
pub const EVENTS_PER_SEC: Figure = Figure {
    label: "events/s in window",
    unit: "",
    get: |r| Some(r.events_per_sec),
    decimals: 0,
    ratio: false,
};
pub const GAPS: Figure = Figure {
    label: "gaps",
    unit: "",
    get: |r| Some(r.gaps as f64),
    decimals: 0,
    ratio: false,
};
pub const REPEATS: Figure = Figure {
    label: "repeats",
    unit: "",
    get: |r| Some(r.repeats as f64),
    decimals: 0,
    ratio: false,
};

/// Requests the server answered with a 2xx in the window, per second (increments,
/// publishes).
pub const TAKEN_PER_SEC: Figure = Figure {
    label: "requests taken per second",
    unit: "requests/s",
    get: |r| {
        let p = r.publish.as_ref()?;
        (r.window_secs > 0.0).then(|| p.ok_in_window as f64 / r.window_secs)
    },
    decimals: 0,
    ratio: true,
};

/// The rows of every scenario's table, in order.
pub const ROWS: [Figure; 16] = [
    CPU,
    MEM_KIB,
    Figure {
        label: "established",
        unit: "",
        get: |r| Some(r.established as f64),
        decimals: 0,
        ratio: false,
    },
    FAILED,
    EVENTS_PER_SEC,
    Figure {
        label: "events/s expected",
        unit: "",
        get: |r| r.expected_events_per_sec,
        decimals: 0,
        ratio: false,
    },
    GAPS,
    REPEATS,
    Figure {
        label: "time to headers p50 (ms)",
        unit: "ms",
        get: |r| ms(r.time_to_headers_us.p50),
        decimals: 2,
        ratio: true,
    },
    HEADERS_P99_MS,
    FIRST_EVENT_P99_MS,
    LATENCY_P50_MS,
    LATENCY_P99_MS,
    Figure {
        label: "delivery latency max (ms)",
        unit: "ms",
        get: |r| ms(r.latency_us.max),
        decimals: 1,
        ratio: false,
    },
    Figure {
        label: "server cores busy",
        unit: "",
        get: |r| Some(r.server?.cpu_cores),
        decimals: 2,
        ratio: false,
    },
    Figure {
        label: "server RSS steady (MiB)",
        unit: "MiB",
        get: |r| Some(r.server?.rss_steady_kib as f64 / 1024.0),
        decimals: 1,
        ratio: false,
    },
];

/// Microseconds from a report as milliseconds.
fn ms(us: Option<u64>) -> Option<f64> {
    us.map(|us| us as f64 / 1000.0)
}

pub fn median(mut xs: Vec<f64>) -> Option<f64> {
    xs.retain(|x| x.is_finite());
    if xs.is_empty() {
        return None;
    }
    xs.sort_by(f64::total_cmp);
    let n = xs.len();
    Some(if n % 2 == 1 {
        xs[n / 2]
    } else {
        (xs[n / 2 - 1] + xs[n / 2]) / 2.0
    })
}

/// The median over the repeats of one figure, skipping runs that failed.
pub fn med(runs: &[Option<Report>], figure: Figure) -> Option<f64> {
    median(runs.iter().flatten().filter_map(figure.get).collect())
}

pub fn fmt(x: Option<f64>, decimals: usize) -> String {
    x.map_or_else(|| "n/a".into(), |x| format!("{x:.decimals$}"))
}

pub fn thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

pub fn ratio(ours: Option<f64>, peer: Option<f64>) -> String {
    match (ours, peer) {
        (Some(a), Some(b)) if b > 0.0 && a / b < 0.1 => format!("{:.3}×", a / b),
        (Some(a), Some(b)) if b > 0.0 => format!("{:.2}×", a / b),
        _ => "n/a".into(),
    }
}

/// `+1.23` or `-0.40`, or `n/a`.
pub fn signed(x: Option<f64>, decimals: usize) -> String {
    x.map_or_else(|| "n/a".into(), |x| format!("{x:+.decimals$}"))
}

/// One row of the report's targets table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    pub target: String,
    pub measured: String,
    pub status: String,
}

/// Whether a target is met, not met (with the gap), or was not measured at its size.
pub fn status(met: Option<bool>, gap: String, measured_at_size: bool) -> String {
    match (met, measured_at_size) {
        (None, _) => "not measured (a run failed)".into(),
        (Some(true), true) => "**met**".into(),
        (Some(false), true) => format!("**not met**: {gap}"),
        (Some(true), false) => "met at the size --quick runs; not measured at full size".into(),
        (Some(false), false) => {
            format!("not met at the size --quick runs ({gap}); not measured at full size")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::tests::report_with;

    #[test]
    fn medians_skip_missing_runs() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(vec![4.0, 1.0]), Some(2.5));
        assert_eq!(median(vec![]), None);
        let runs = [
            Some(report_with(|r| {
                r.server.as_mut().unwrap().cpu_us_per_event = Some(5.0)
            })),
            None,
            Some(report_with(|r| {
                r.server.as_mut().unwrap().cpu_us_per_event = Some(7.0)
            })),
        ];
        assert_eq!(med(&runs, CPU), Some(6.0));
    }

    #[test]
    fn numbers_read_well() {
        assert_eq!(thousands(19_900), "19,900");
        assert_eq!(thousands(300), "300");
        assert_eq!(thousands(1_000_000), "1,000,000");
        assert_eq!(ratio(Some(1.0), Some(4.0)), "0.25×");
        assert_eq!(ratio(Some(1.0), None), "n/a");
    }
}
