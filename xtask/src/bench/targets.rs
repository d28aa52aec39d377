//! The targets sse-counter is held to, as one table, and the report's verdict on each.

use super::peers::PeerId;
use super::report::{fmt, med, thousands, Figure, CPU, HEADERS_P99_MS, MEM_KIB};
use super::scenarios::{Scenario, MAX_HELD};
use super::Results;

/// One promise about sse-counter's figures.
#[derive(Debug)]
pub struct Target {
    /// The promise, as the report's first column states it.
    pub text: &'static str,
    pub check: Check,
}

/// How a target is measured.
#[derive(Debug)]
pub enum Check {
    /// sse-counter's figure, in the steady scenario where it is highest, at most
    /// `times` the bare-write floor.
    TimesFloor { figure: Figure, times: f64 },
    /// sse-counter's figure in `scenario` at most `limit`, counted as measured only when
    /// the scenario ran at least `size` streams (`--quick` runs fewer).
    AtMost {
        scenario: &'static str,
        figure: Figure,
        limit: f64,
        /// How the figure reads after its number: "KiB per stream", "ms".
        unit: &'static str,
        decimals: usize,
        size: u64,
    },
    /// Every stream of `scenario` held through the window: none failed, no gaps, no
    /// repeats, and a latency p99 at most `latency_p99_ms`.
    HeldClean {
        scenario: &'static str,
        latency_p99_ms: f64,
        size: u64,
    },
}

pub const TARGETS: [Target; 4] = [
    Target {
        text: "server CPU per delivered event ≤ 1.3× the bare-write floor",
        check: Check::TimesFloor {
            figure: CPU,
            times: 1.3,
        },
    },
    Target {
        text: "resident memory ≤ 4 KiB per open stream at 10,000 streams",
        check: Check::AtMost {
            scenario: "1 Hz",
            figure: MEM_KIB,
            limit: 4.0,
            unit: "KiB per stream",
            decimals: 2,
            size: 10_000,
        },
    },
    Target {
        text: "19,900 streams held at 1 Hz: zero failures, no gaps, no repeats, latency p99 ≤ 1 ms",
        check: Check::HeldClean {
            scenario: "most held",
            latency_p99_ms: 1.0,
            size: MAX_HELD,
        },
    },
    Target {
        text: "10,000 streams opened in a burst, time to headers p99 ≤ 50 ms",
        check: Check::AtMost {
            scenario: "burst",
            figure: HEADERS_P99_MS,
            limit: 50.0,
            unit: "ms",
            decimals: 1,
            size: 10_000,
        },
    },
];

/// One row of the report's targets table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    pub target: String,
    pub measured: String,
    pub status: String,
}

/// The targets table's rows; a target whose scenario is not in the plan is left out.
pub fn rows(plan: &[Scenario], res: &Results) -> Vec<Row> {
    TARGETS
        .iter()
        .filter_map(|t| {
            let (measured, status) = verdict(&t.check, plan, res)?;
            Some(Row {
                target: t.text.to_owned(),
                measured,
                status,
            })
        })
        .collect()
}

fn verdict(check: &Check, plan: &[Scenario], res: &Results) -> Option<(String, String)> {
    let by_name = |name: &str| plan.iter().position(|s| s.name == name);
    let ours = |si: usize| res.runs(si, PeerId::Ours);
    Some(match *check {
        Check::TimesFloor { figure, times } => {
            let floor = res.floor_us();
            let worst = (0..plan.len())
                .filter(|&i| plan[i].steady())
                .filter_map(|i| med(ours(i), figure).map(|c| (i, c)))
                .max_by(|a, b| a.1.total_cmp(&b.1));
            let measured = match (worst, floor) {
                (Some((i, c)), Some(f)) => format!(
                    "{c:.2} µs per event = {:.2}× the floor ({f:.2} µs), worst of the steady scenarios ({})",
                    c / f,
                    plan[i].name
                ),
                _ => "n/a".into(),
            };
            let met = worst.zip(floor).map(|((_, c), f)| c <= times * f);
            let gap = worst
                .zip(floor)
                .map(|((_, c), f)| {
                    format!(
                        "{:.2}× the floor, {:.2} µs above {times}×",
                        c / f,
                        c - times * f
                    )
                })
                .unwrap_or_default();
            (measured, status(met, gap, true))
        }
        Check::AtMost {
            scenario,
            figure,
            limit,
            unit,
            decimals,
            size,
        } => {
            let i = by_name(scenario)?;
            let v = med(ours(i), figure);
            let gap = v
                .map(|v| format!("{v:.decimals$} {unit}, {:.decimals$} over", v - limit))
                .unwrap_or_default();
            (
                format!(
                    "{} {unit} at {} streams",
                    fmt(v, decimals),
                    thousands(plan[i].streams)
                ),
                status(v.map(|v| v <= limit), gap, plan[i].streams >= size),
            )
        }
        Check::HeldClean {
            scenario,
            latency_p99_ms,
            size,
        } => {
            let i = by_name(scenario)?;
            held_clean(&plan[i], ours(i), latency_p99_ms, size)
        }
    })
}

fn held_clean(
    sc: &Scenario,
    runs: &[Option<::bench::report::Report>],
    limit_ms: f64,
    size: u64,
) -> (String, String) {
    let reports: Vec<_> = runs.iter().flatten().collect();
    let held_figure = Figure {
        label: "open at window end",
        get: |r| Some(r.open_at_window_end as f64),
        decimals: 0,
        ratio: false,
    };
    let held = med(runs, held_figure);
    let failed: u64 = reports.iter().map(|r| r.failed_total).sum();
    let gaps: u64 = reports.iter().map(|r| r.gaps).sum();
    let repeats: u64 = reports.iter().map(|r| r.repeats).sum();
    let p99 = med(runs, super::report::LATENCY_P99_MS);
    let mut problems = Vec::new();
    if held.is_some_and(|h| h < sc.streams as f64) {
        problems.push(format!(
            "held {} of {}",
            fmt(held, 0),
            thousands(sc.streams)
        ));
    }
    if failed > 0 {
        problems.push(format!("{failed} failed"));
    }
    if gaps + repeats > 0 {
        problems.push(format!("{gaps} gaps, {repeats} repeats"));
    }
    if p99.is_some_and(|p| p > limit_ms) {
        problems.push(format!("latency p99 {} ms", fmt(p99, 2)));
    }
    let met = (!reports.is_empty() && held.is_some()).then_some(problems.is_empty());
    // The status goes by the median; a run above the limit is still named.
    let p99s: Vec<f64> = reports
        .iter()
        .filter_map(|r| (super::report::LATENCY_P99_MS.get)(r))
        .collect();
    let p99_range = if p99s.len() > 1 {
        let lo = p99s.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = p99s.iter().copied().fold(0.0, f64::max);
        format!(" (median; runs {lo:.3}–{hi:.3} ms)")
    } else {
        String::new()
    };
    let slow = p99s.iter().filter(|&&p| p > limit_ms).count();
    let slow_note = if slow > 0 && met == Some(true) {
        format!(
            " in the median; {slow} of {} runs had latency p99 above {limit_ms} ms",
            p99s.len()
        )
    } else {
        String::new()
    };
    (
        format!(
            "{} held of {}, {failed} failed, {gaps} gaps, {repeats} repeats, latency p99 {} ms{}",
            held.map_or_else(|| "n/a".into(), |h| thousands(h as u64)),
            thousands(sc.streams),
            fmt(p99, 3),
            p99_range,
        ),
        format!(
            "{}{}",
            status(met, problems.join(", "), sc.streams >= size),
            slow_note
        ),
    )
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
    use crate::bench::scenarios::scenarios;
    use crate::bench::tests::report_with;

    #[test]
    fn every_target_names_a_scenario_that_runs() {
        let plan = scenarios(false);
        assert_eq!(rows(&plan, &Results::new(plan.len())).len(), TARGETS.len());
    }

    #[test]
    fn the_held_target_goes_by_the_median_and_names_slow_runs() {
        let plan = scenarios(false);
        let held = plan.iter().position(|s| s.name == "most held").unwrap();
        let run = |p99: u64| {
            Some(report_with(|r| {
                r.open_at_window_end = 19_900;
                r.latency_us.p99 = Some(p99);
            }))
        };
        let mut res = Results::new(plan.len());
        for p99 in [7807, 775, 639] {
            res.push(held, PeerId::Ours, run(p99));
        }
        let row = rows(&plan, &res)
            .into_iter()
            .find(|r| r.target.starts_with("19,900"))
            .unwrap();
        assert_eq!(
            row.measured,
            "19,900 held of 19,900, 0 failed, 0 gaps, 0 repeats, latency p99 0.775 ms \
             (median; runs 0.639–7.807 ms)"
        );
        assert_eq!(
            row.status,
            "**met** in the median; 1 of 3 runs had latency p99 above 1 ms"
        );
    }
}
