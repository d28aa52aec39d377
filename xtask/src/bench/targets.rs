//! The targets sse-counter is held to, as one table, and the report's verdict on each.

use super::figures::{
    fmt, med, ratio, status, thousands, Figure, Row, CPU, FIRST_EVENT_P99_MS, HEADERS_P99_MS,
    LATENCY_P99_MS, MEM_KIB,
};
use super::peers::{PeerId, PEERS};
use super::results::Results;
use super::scenarios::{Scenario, MAX_HELD};
use std::fmt::Write as _;

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
    /// sse-counter's figure in `scenario` at most `times` the `peer`'s, counted as
    /// measured only when the scenario ran at least `size` streams (`--quick` runs
    /// fewer). With `floor_line`, a second line gives it as a multiple of the bare
    /// loopback write.
    TimesPeer {
        scenario: &'static str,
        figure: Figure,
        peer: PeerId,
        times: f64,
        size: u64,
        floor_line: bool,
    },
    /// sse-counter's figure in `scenario` at most `limit`, with `context`'s figure
    /// beside it for scale.
    AtMost {
        scenario: &'static str,
        figure: Figure,
        limit: f64,
        /// How the figure reads after its number: "KiB per stream", "ms".
        unit: &'static str,
        decimals: usize,
        size: u64,
        context: Option<PeerId>,
    },
    /// Every stream of `scenario` held through the window: none failed, no gaps, no
    /// repeats, and a latency p99 at most `latency_p99_ms`.
    HeldClean {
        scenario: &'static str,
        latency_p99_ms: f64,
        size: u64,
    },
}

/// sse-counter's CPU per event in `scenario` at most `times` the `peer`'s.
const fn cpu(
    text: &'static str,
    scenario: &'static str,
    peer: PeerId,
    times: f64,
    size: u64,
) -> Target {
    Target {
        text,
        check: Check::TimesPeer {
            scenario,
            figure: CPU,
            peer,
            times,
            size,
            floor_line: matches!(peer, PeerId::Yardstick),
        },
    }
}

/// sse-counter's `figure` (a time to headers or to the first event) in `scenario` at
/// most twice the yardstick's.
const fn twice_yardstick(
    text: &'static str,
    scenario: &'static str,
    figure: Figure,
    size: u64,
) -> Target {
    Target {
        text,
        check: Check::TimesPeer {
            scenario,
            figure,
            peer: PeerId::Yardstick,
            times: 2.0,
            size,
            floor_line: false,
        },
    }
}

/// Issue 13's targets (sse-counter next to the yardstick), then the held streams, then
/// issue 23's: ahead of every peer at the sizes people run, and the first answer.
pub const TARGETS: [Target; 14] = [
    Target {
        text: "per-client counter, 10,000 streams at 1 Hz: server CPU per event ≤ 1.2× the yardstick's",
        check: Check::TimesPeer {
            scenario: "1 Hz",
            figure: CPU,
            peer: PeerId::Yardstick,
            times: 1.2,
            size: 10_000,
            floor_line: true,
        },
    },
    Target {
        text: "shared counter fan-out, 10,000 subscribers at 10 events/s: server CPU per delivered event ≤ 1.2× the yardstick's in broadcast mode",
        check: Check::TimesPeer {
            scenario: "fan-out",
            figure: CPU,
            peer: PeerId::Yardstick,
            times: 1.2,
            size: 10_000,
            floor_line: true,
        },
    },
    Target {
        text: "shared counter fan-out: publish-to-delivery p99 ≤ 1.2× the yardstick's",
        check: Check::TimesPeer {
            scenario: "fan-out",
            figure: LATENCY_P99_MS,
            peer: PeerId::Yardstick,
            times: 1.2,
            size: 10_000,
            floor_line: false,
        },
    },
    Target {
        text: "10,000 connections opened as fast as the load tool can: time to headers p99 ≤ 50 ms",
        check: Check::AtMost {
            scenario: "burst",
            figure: HEADERS_P99_MS,
            limit: 50.0,
            unit: "ms",
            decimals: 1,
            size: 10_000,
            context: Some(PeerId::Yardstick),
        },
    },
    Target {
        text: "memory per HTTP/1.1 stream ≤ 8 KiB resident at 10,000 streams",
        check: Check::AtMost {
            scenario: "1 Hz",
            figure: MEM_KIB,
            limit: 8.0,
            unit: "KiB per stream",
            decimals: 2,
            size: 10_000,
            context: Some(PeerId::Yardstick),
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
    cpu(
        "per-client counter, 1,000 streams at 10 Hz: server CPU per event ≤ 1.2× the yardstick's",
        "10 Hz",
        PeerId::Yardstick,
        1.2,
        1_000,
    ),
    cpu(
        "per-client counter, 1,000 streams at 10 Hz: server CPU per event ≤ 0.8× naive warp's",
        "10 Hz",
        PeerId::Naive,
        0.8,
        1_000,
    ),
    cpu(
        "per-client counter, 5,000 streams at 1 Hz: server CPU per event ≤ 1.2× the yardstick's",
        "5k 1 Hz",
        PeerId::Yardstick,
        1.2,
        5_000,
    ),
    cpu(
        "per-client counter, 5,000 streams at 1 Hz: server CPU per event ≤ 0.8× naive warp's",
        "5k 1 Hz",
        PeerId::Naive,
        0.8,
        5_000,
    ),
    twice_yardstick(
        "1,000 streams at 10 Hz: time to headers p99 ≤ 2× the yardstick's",
        "10 Hz",
        HEADERS_P99_MS,
        1_000,
    ),
    twice_yardstick(
        "1,000 streams at 10 Hz: time to first event p99 ≤ 2× the yardstick's",
        "10 Hz",
        FIRST_EVENT_P99_MS,
        1_000,
    ),
    twice_yardstick(
        "10,000 connections at once: time to headers p99 ≤ 2× the yardstick's",
        "burst",
        HEADERS_P99_MS,
        10_000,
    ),
    twice_yardstick(
        "10,000 connections at once: time to first event p99 ≤ 2× the yardstick's",
        "burst",
        FIRST_EVENT_P99_MS,
        10_000,
    ),
];

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
    let scenario = match *check {
        Check::TimesPeer { scenario, .. }
        | Check::AtMost { scenario, .. }
        | Check::HeldClean { scenario, .. } => scenario,
    };
    let si = by_name(scenario)?;
    if let Some(why) = res.why_not_run(si, PeerId::Ours) {
        return Some(("n/a".into(), format!("not measured: sse-counter {why}")));
    }
    Some(match *check {
        Check::TimesPeer {
            figure,
            peer,
            times,
            size,
            floor_line,
            ..
        } => {
            let d = figure.decimals;
            let unit = figure.unit;
            let label = peer_label(peer);
            let (v, p) = (med(ours(si), figure), med(res.runs(si, peer), figure));
            let mut measured = match (v, p) {
                (Some(v), Some(p)) => format!(
                    "{v:.d$} {unit} = {} the {label}'s {p:.d$} {unit}",
                    ratio(Some(v), Some(p))
                ),
                (Some(v), None) => format!("{v:.d$} {unit}; the {label}'s: n/a"),
                _ => "n/a".into(),
            };
            if let (true, Some(v), Some(f)) = (floor_line, v, res.floor_us()) {
                write!(
                    measured,
                    "<br>{} the bare-write floor ({f:.2} µs)",
                    ratio(Some(v), Some(f))
                )
                .expect("writing to a String");
            }
            let met = v.zip(p).map(|(v, p)| v <= times * p);
            let gap = v
                .zip(p)
                .map(|(v, p)| {
                    format!(
                        "{} the {label}'s, {:.d$} {unit} above {times}×",
                        ratio(Some(v), Some(p)),
                        v - times * p
                    )
                })
                .unwrap_or_default();
            (measured, status(met, gap, plan[si].streams >= size))
        }
        Check::AtMost {
            figure,
            limit,
            unit,
            decimals: d,
            size,
            context,
            ..
        } => {
            let v = med(ours(si), figure);
            let gap = v
                .map(|v| {
                    // "KiB per stream" over is "KiB" over.
                    let per = unit.split(' ').next().unwrap_or(unit);
                    format!("{v:.d$} {unit}, {:.d$} {per} over", v - limit)
                })
                .unwrap_or_default();
            let beside = context
                .map(|peer| {
                    format!(
                        "; the {}'s: {} {unit}",
                        peer_label(peer),
                        fmt(med(res.runs(si, peer), figure), d)
                    )
                })
                .unwrap_or_default();
            (
                format!(
                    "{} {unit} at {} streams{beside}",
                    fmt(v, d),
                    thousands(plan[si].streams)
                ),
                status(v.map(|v| v <= limit), gap, plan[si].streams >= size),
            )
        }
        Check::HeldClean {
            latency_p99_ms,
            size,
            ..
        } => held_clean(&plan[si], ours(si), latency_p99_ms, size),
    })
}

fn peer_label(id: PeerId) -> &'static str {
    PEERS
        .iter()
        .find(|p| p.id == id)
        .map_or("peer", |p| p.label)
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
        unit: "",
        get: |r| Some(r.open_at_window_end as f64),
        decimals: 0,
        ratio: false,
    };
    let held = med(runs, held_figure);
    let failed: u64 = reports.iter().map(|r| r.failed_total).sum();
    let gaps: u64 = reports.iter().map(|r| r.gaps).sum();
    let repeats: u64 = reports.iter().map(|r| r.repeats).sum();
    let p99 = med(runs, LATENCY_P99_MS);
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
        .filter_map(|r| (LATENCY_P99_MS.get)(r))
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
    fn ours_is_a_multiple_of_the_yardstick_with_the_floor_on_a_second_line() {
        let plan = scenarios(false);
        let si = plan.iter().position(|s| s.name == "1 Hz").unwrap();
        let mut res = Results::new(plan.len());
        let cpu = |us: f64| {
            Some(report_with(|r| {
                r.server.as_mut().unwrap().cpu_us_per_event = Some(us)
            }))
        };
        res.push(si, PeerId::Ours, cpu(15.0));
        res.push(si, PeerId::Yardstick, cpu(10.0));
        res.floors.push(::bench::report::Floor {
            pairs: 1000,
            writes: 1,
            bytes_per_write: 63,
            cpu_us_per_write: 5.0,
            wall_us_per_write: 5.0,
        });
        let row = &rows(&plan, &res)[0];
        assert_eq!(
            row.measured,
            "15.00 µs = 1.50× the yardstick's 10.00 µs<br>3.00× the bare-write floor (5.00 µs)"
        );
        assert_eq!(
            row.status,
            "**not met**: 1.50× the yardstick's, 3.00 µs above 1.2×"
        );
    }

    #[test]
    fn a_limit_shows_the_yardsticks_figure_beside_ours() {
        let plan = scenarios(false);
        let si = plan.iter().position(|s| s.name == "burst").unwrap();
        let mut res = Results::new(plan.len());
        let headers = |us: u64| Some(report_with(|r| r.time_to_headers_us.p99 = Some(us)));
        res.push(si, PeerId::Ours, headers(802_800));
        res.push(si, PeerId::Yardstick, headers(40_000));
        let row = rows(&plan, &res)
            .into_iter()
            .find(|r| r.target.contains("burst") || r.target.contains("as fast as"))
            .unwrap();
        assert_eq!(
            row.measured,
            "802.8 ms at 10,000 streams; the yardstick's: 40.0 ms"
        );
        assert_eq!(row.status, "**not met**: 802.8 ms, 752.8 ms over");
    }

    #[test]
    fn a_scenario_ours_cannot_serve_yet_is_not_measured_and_says_why() {
        let plan = scenarios(false);
        let si = plan.iter().position(|s| s.name == "fan-out").unwrap();
        let mut res = Results::new(plan.len());
        res.not_run(
            si,
            PeerId::Ours,
            "not available: GET /api/shared answered \"404 Not Found\"".into(),
        );
        let fanout: Vec<Row> = rows(&plan, &res)
            .into_iter()
            .filter(|r| r.target.contains("fan-out"))
            .collect();
        assert_eq!(fanout.len(), 2);
        for row in fanout {
            assert_eq!(
                row.status,
                "not measured: sse-counter not available: GET /api/shared answered \"404 Not Found\""
            );
        }
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
