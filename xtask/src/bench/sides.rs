//! The one way to run and to keep a scenario of sse-counter compared with itself in
//! other set-ups: its sides (`http2`: the transports; `cluster`: the embedded store and
//! Redis), run in turn in every repeat by [`repeat`], each a fresh server; what they
//! measured, [`Outcome`], read by side and figure; and the "spread over the repeats"
//! lines under its table.

use super::figures::{med, spread, Figure};
use ::bench::report::Report;
use std::fmt::Write as _;

/// One column of a scenario's table: what differs between its runs.
pub trait Side: Copy + Eq + std::fmt::Debug + 'static {
    /// Every side, in the order each round runs them (and the table's columns).
    const ALL: &'static [Self];
    /// In log names (`http2-h2-1.log`).
    fn slug(self) -> &'static str;
    /// In the page and in failures (`HTTP/2 (TLS)`, `the redis store`).
    fn label(self) -> &'static str;
}

/// What a scenario measured: its plan, and one report per repeat and side (`None` for a
/// run that failed).
#[derive(Debug)]
pub struct Outcome<P, S> {
    pub plan: P,
    /// `runs[column(side)]`, one per repeat.
    runs: Vec<Vec<Option<Report>>>,
    sides: std::marker::PhantomData<S>,
}

impl<P, S: Side> Outcome<P, S> {
    /// An outcome of `runs`, one list per side in [`Side::ALL`] order.
    pub fn new(plan: P, runs: Vec<Vec<Option<Report>>>) -> Self {
        assert_eq!(runs.len(), S::ALL.len(), "one list of runs per side");
        Outcome {
            plan,
            runs,
            sides: std::marker::PhantomData,
        }
    }

    pub fn runs(&self, side: S) -> &[Option<Report>] {
        &self.runs[column(side)]
    }

    /// The median of `figure` over the side's repeats.
    pub fn med(&self, side: S, figure: Figure) -> Option<f64> {
        med(self.runs(side), figure)
    }

    /// Every side's runs, in column order, for the raw results.
    pub fn all_runs(&self) -> &[Vec<Option<Report>>] {
        &self.runs
    }

    /// The most repeats any side has.
    pub fn repeats(&self) -> usize {
        self.runs.iter().map(Vec::len).max().unwrap_or(0)
    }

    /// What went wrong in the runs, a line each: a publisher's requests not taken
    /// (`what` names them: "increments"), `reset` events, the first errors the clients
    /// saw.
    pub fn notes(&self, what: &str) -> Vec<String> {
        let mut notes = Vec::new();
        for &side in S::ALL {
            for (rep, r) in self.runs(side).iter().enumerate() {
                let Some(r) = r else { continue };
                let run = format!("{}, run {}", side.label(), rep + 1);
                if let Some(p) = r.publish.as_ref().filter(|p| p.ok < p.sent) {
                    let errors = if p.errors.is_empty() {
                        String::new()
                    } else {
                        format!(": {}", p.errors.join("; "))
                    };
                    notes.push(format!(
                        "{run}: {} of {} {what} taken ({} refused, {} lost{errors}).",
                        p.ok, p.sent, p.refused, p.failed
                    ));
                }
                if r.resets > 0 {
                    notes.push(format!("{run}: {} reset events.", r.resets));
                }
                for e in r.errors.iter().take(4) {
                    notes.push(format!("{run}: `{e}`"));
                }
            }
        }
        notes
    }

    /// "Spread over the repeats (min–max)", one line per side with `figures` (each
    /// `(name, figure)`), when there was more than one repeat.
    pub fn spread_lines(&self, md: &mut String, figures: &[(&str, Figure)]) -> std::fmt::Result {
        if self.repeats() <= 1 {
            return Ok(());
        }
        writeln!(md, "\nSpread over the repeats (min–max):\n")?;
        for side in S::ALL {
            let parts: Vec<String> = figures
                .iter()
                .map(|(name, f)| format!("{name} {} {}", spread(self.runs(*side), *f, 2), f.unit))
                .collect();
            writeln!(md, "- {}: {}", side.label(), parts.join(", "))?;
        }
        Ok(())
    }
}

/// Where `side` is in [`Side::ALL`].
pub fn column<S: Side>(side: S) -> usize {
    S::ALL
        .iter()
        .position(|s| *s == side)
        .expect("every side is in Side::ALL")
}

/// Runs `plan` `repeats` times, the sides in turn within each repeat (so that each side
/// sees the machine as the others do), with `run_one(plan, side, repeat)` (repeats
/// count from 1). A run that fails is recorded in `failures`, named by `name`, and kept
/// as `None`.
pub fn repeat<P, S: Side>(
    name: &str,
    plan: P,
    repeats: usize,
    failures: &mut Vec<String>,
    mut run_one: impl FnMut(&P, S, usize) -> anyhow::Result<Report>,
) -> Outcome<P, S> {
    let mut runs: Vec<Vec<Option<Report>>> = S::ALL.iter().map(|_| Vec::new()).collect();
    for rep in 1..=repeats {
        for side in S::ALL {
            let report = match run_one(&plan, *side, rep) {
                Ok(r) => Some(r),
                Err(e) => {
                    let msg = format!("{name} over {}, run {rep}: {e:#}", side.label());
                    crate::util::step(format!("run failed: {msg}"));
                    failures.push(msg);
                    None
                }
            };
            runs[column(*side)].push(report);
        }
    }
    Outcome::new(plan, runs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::figures::CPU;
    use crate::bench::tests::report_with;

    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum Two {
        A,
        B,
    }

    impl Side for Two {
        const ALL: &'static [Two] = &[Two::A, Two::B];
        fn slug(self) -> &'static str {
            match self {
                Two::A => "a",
                Two::B => "b",
            }
        }
        fn label(self) -> &'static str {
            self.slug()
        }
    }

    #[test]
    fn repeats_alternate_the_sides_and_keep_failures_as_none() {
        let mut order = Vec::new();
        let mut failures = Vec::new();
        let outcome = repeat("two", (), 2, &mut failures, |_, side: Two, rep| {
            order.push((side, rep));
            anyhow::ensure!(!(side == Two::B && rep == 2), "broken");
            Ok(report_with(|r| {
                r.server.as_mut().unwrap().cpu_us_per_event = Some(rep as f64)
            }))
        });
        assert_eq!(order, [(Two::A, 1), (Two::B, 1), (Two::A, 2), (Two::B, 2)]);
        assert_eq!(failures, ["two over b, run 2: broken"]);
        assert_eq!(outcome.runs(Two::B).len(), 2);
        assert!(outcome.runs(Two::B)[1].is_none());
        assert_eq!(outcome.med(Two::A, CPU), Some(1.5));
        let mut md = String::new();
        outcome.spread_lines(&mut md, &[("CPU", CPU)]).unwrap();
        assert!(md.contains("- a: CPU 1.00–2.00 µs\n"), "{md}");
        assert!(md.contains("- b: CPU 1.00–1.00 µs\n"), "{md}");
    }

    #[test]
    fn notes_name_the_side_and_run_of_what_went_wrong() {
        let outcome = repeat("two", (), 1, &mut Vec::new(), |_, side: Two, _| {
            Ok(report_with(|r| {
                if side == Two::B {
                    r.resets = 2;
                    r.errors = vec!["closed".into()];
                    r.publish = Some(::bench::report::PublishFigures {
                        sent: 10,
                        ok: 9,
                        refused: 1,
                        errors: vec!["status: 429".into()],
                        ..Default::default()
                    });
                }
            }))
        });
        assert_eq!(
            outcome.notes("increments"),
            [
                "b, run 1: 9 of 10 increments taken (1 refused, 0 lost: status: 429).",
                "b, run 1: 2 reset events.",
                "b, run 1: `closed`",
            ]
        );
    }
}
