//! What a run of `cargo xtask bench` measured ([`Results`]) and how it went ([`Meta`]):
//! what the page, the chart and the targets are made from.

use super::channels;
use super::cluster;
use super::figures::median;
use super::http2;
use super::peers::{PeerId, PEERS};
use super::sentinel;
use ::bench::report::{Floor, Report};
use std::time::Duration;

/// Everything measured.
pub struct Results {
    /// `runs[scenario][peer]`, peers in `PEERS` order: one report per repeat, `None` for
    /// a run that failed. Read through [`Results::runs`].
    pub runs: Vec<Vec<Vec<Option<Report>>>>,
    /// Every floor run.
    pub floors: Vec<Floor>,
    pub failures: Vec<String>,
    /// Peers a scenario did not run against, and why: `(scenario, peer, why)`.
    pub not_run: Vec<(usize, PeerId, String)>,
    /// The `http2` scenario, when it ran.
    pub http2: Option<http2::Outcome>,
    /// The `cluster` scenario, when it ran.
    pub cluster: Option<cluster::Outcome>,
    /// The `channels` scenario, when it ran.
    pub channels: Option<channels::Outcome>,
    /// The `sentinel` scenario, when it ran.
    pub sentinel: Option<sentinel::Outcome>,
}

impl Results {
    pub fn new(scenarios: usize) -> Results {
        Results {
            runs: (0..scenarios)
                .map(|_| PEERS.iter().map(|_| Vec::new()).collect())
                .collect(),
            floors: Vec::new(),
            failures: Vec::new(),
            not_run: Vec::new(),
            http2: None,
            cluster: None,
            channels: None,
            sentinel: None,
        }
    }

    /// Records that `scenario` did not run against a peer, once per reason.
    pub fn not_run(&mut self, scenario: usize, id: PeerId, why: String) {
        if !self
            .not_run
            .iter()
            .any(|n| *n == (scenario, id, why.clone()))
        {
            self.not_run.push((scenario, id, why));
        }
    }

    /// Why `scenario` did not run against a peer, if it did not.
    pub fn why_not_run(&self, scenario: usize, id: PeerId) -> Option<&str> {
        self.not_run
            .iter()
            .find(|(si, i, _)| *si == scenario && *i == id)
            .map(|(_, _, why)| why.as_str())
    }

    fn peer_column(id: PeerId) -> usize {
        PEERS
            .iter()
            .position(|p| p.id == id)
            .expect("every peer id has a row in PEERS")
    }

    /// One peer's reports in one scenario, one per repeat.
    pub fn runs(&self, scenario: usize, id: PeerId) -> &[Option<Report>] {
        &self.runs[scenario][Self::peer_column(id)]
    }

    /// The median of the floor runs: µs of CPU per write.
    pub fn floor_us(&self) -> Option<f64> {
        median(self.floors.iter().map(|f| f.cpu_us_per_write).collect())
    }

    pub fn push(&mut self, scenario: usize, id: PeerId, report: Option<Report>) {
        self.runs[scenario][Self::peer_column(id)].push(report);
    }
}

/// How the run went, for the report's machine section.
pub struct Meta {
    pub command: String,
    pub repeats: usize,
    pub quick: bool,
    pub took: Duration,
    pub load: (String, String),
    pub server_tree: String,
}
