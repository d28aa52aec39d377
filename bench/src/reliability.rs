//! The figures of `cargo xtask reliability`: what the load and hardening tests of the
//! server (`server/tests/load.rs`, `hardening.rs`, `reconnect.rs`) measure, one type per
//! scenario. The tests write a [`Line`] per scenario as JSON, the xtask reads the same
//! type back, so a renamed, missing or extra figure is an error naming it on either
//! side, never a "?" in `docs/reliability.md`.

use serde::{Deserialize, Serialize};

/// One line of the tests' figures: `{"scenario": NAME, "figures": {...}}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(
    tag = "scenario",
    content = "figures",
    rename_all = "snake_case",
    deny_unknown_fields
)]
pub enum Line {
    Churn(Churn),
    Flood(Flood),
    Stall(Stall),
    Shutdown(Shutdown),
    HostileInput(HostileInput),
    ReconnectSpread(ReconnectSpread),
}

impl Line {
    /// The scenario's name, as the line's `scenario` field says it.
    pub fn scenario(&self) -> &'static str {
        match self {
            Line::Churn(_) => "churn",
            Line::Flood(_) => "flood",
            Line::Stall(_) => "stall",
            Line::Shutdown(_) => "shutdown",
            Line::HostileInput(_) => "hostile_input",
            Line::ReconnectSpread(_) => "reconnect_spread",
        }
    }
}

/// `churn_leaves_nothing_open_and_memory_where_it_was` in `server/tests/load.rs`:
/// rounds of streams opened and left in four ways, at most `peak_streams` open at once
/// in every round, and the server's resident memory after each.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Churn {
    /// Streams opened in all, the warm-up round included.
    pub streams: u64,
    pub abort_before_first_tick: u64,
    pub abort_mid_stream: u64,
    pub finish: u64,
    pub resume_and_finish: u64,
    /// The most streams open at once, in every round alike (reached once before the
    /// warm-up round, so no later round can need more memory for it).
    pub peak_streams: u64,
    pub active_after: u64,
    pub permits_freed: u64,
    pub rss_start_kib: u64,
    /// After the warm-up round, then after each measured round.
    pub rss_after_rounds_kib: Vec<u64>,
    /// The least-squares slope of the measured rounds' figures: what a leak grows by.
    pub rss_slope_kib_per_round: f64,
    pub peak_rss_kib: u64,
}

/// `a_flood_past_max_streams_gets_503_while_open_streams_stay_on_time`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Flood {
    pub max_streams: u64,
    pub admitted_unbroken: u64,
    pub flood_requests: u64,
    pub refused_503: u64,
    pub lost: u64,
    pub peak_rss_kib: u64,
}

/// `a_client_that_stops_reading_is_closed_as_stalled_and_slows_no_one` in
/// `server/tests/hardening.rs`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Stall {
    pub stalled_clients: u64,
    pub closed_as_stalled: u64,
    pub stall_timeout_secs: u64,
    pub other_client_ticks: u64,
    pub other_client_gaps_or_repeats: u64,
}

/// `sigterm_with_2000_open_streams_ends_every_one_and_exits_zero` in
/// `server/tests/load.rs`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Shutdown {
    pub open_streams: u64,
    pub ended_with_shutdown: u64,
    pub lost: u64,
    pub exit_code: i64,
    pub exit_ms: u64,
    pub grace_secs: u64,
    pub peak_rss_kib: u64,
}

/// `a_corpus_of_hostile_requests_gets_clear_answers` in `server/tests/hardening.rs`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostileInput {
    pub requests: u64,
    pub answered_as_expected: u64,
    pub server_errors: u64,
}

/// `a_restart_brings_clients_back_spread_out_not_in_a_stampede` in
/// `server/tests/reconnect.rs`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReconnectSpread {
    pub clients: u64,
    pub retry_ms: u64,
    pub spread_ms: u64,
    pub bucket_ms: u64,
    pub spread_histogram: Vec<u64>,
    pub spread_peak_per_sec: f64,
    pub stampede_histogram: Vec<u64>,
    pub stampede_peak_per_sec: f64,
    pub distinct_retries: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_is_tagged_by_its_scenario_and_reads_back() {
        let line = Line::HostileInput(HostileInput {
            requests: 3,
            answered_as_expected: 3,
            server_errors: 0,
        });
        let json = serde_json::to_string(&line).unwrap();
        assert_eq!(
            json,
            r#"{"scenario":"hostile_input","figures":{"requests":3,"answered_as_expected":3,"server_errors":0}}"#
        );
        assert!(json.contains(line.scenario()));
        assert_eq!(serde_json::from_str::<Line>(&json).unwrap(), line);
    }

    #[test]
    fn an_extra_figure_is_an_error_naming_it() {
        let json = r#"{"scenario":"hostile_input","figures":{"requests":3,"answered_as_expected":3,"server_errors":0,"slow":1}}"#;
        let err = serde_json::from_str::<Line>(json).unwrap_err().to_string();
        assert!(err.contains("unknown field `slow`"), "{err}");
    }
}
