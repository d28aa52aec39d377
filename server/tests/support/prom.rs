//! The server's Prometheus text exposition in tests: parsed samples, one value, and
//! waiting for a value the server reaches on its own.

use super::http::send_within;
use super::poll_until;
use reqwest::StatusCode;
use std::collections::HashMap;
use std::time::Duration;

/// The samples of a Prometheus text exposition, keyed by name and labels as written.
#[derive(Debug)]
pub struct Metrics {
    pub samples: HashMap<String, f64>,
    pub text: String,
}

impl Metrics {
    pub fn parse(text: &str) -> Metrics {
        let samples = text
            .lines()
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .map(|l| {
                let (key, value) = l.rsplit_once(' ').expect("`name value` sample line");
                let value = value
                    .parse()
                    .unwrap_or_else(|e| panic!("sample {l:?}: {e}"));
                (key.to_owned(), value)
            })
            .collect();
        Metrics {
            samples,
            text: text.to_owned(),
        }
    }

    /// The sample `key`, a name with its labels as written, e.g. `a{reason="x"}`.
    pub fn get(&self, key: &str) -> f64 {
        *self
            .samples
            .get(key)
            .unwrap_or_else(|| panic!("no sample {key} in:\n{}", self.text))
    }
}

/// Where a server's `/metrics` answers, the client to read it with, and how long a read
/// or a wait may take.
#[derive(Clone)]
pub struct Scrape {
    client: reqwest::Client,
    url: String,
    limit: Duration,
}

impl Scrape {
    pub fn new(client: reqwest::Client, url: String, limit: Duration) -> Scrape {
        Scrape { client, url, limit }
    }

    /// The whole exposition, parsed; it must answer 200.
    pub async fn metrics(&self) -> Metrics {
        let reply = send_within(self.limit, self.client.get(&self.url), "GET /metrics").await;
        assert_eq!(
            reply.status,
            StatusCode::OK,
            "GET /metrics: {}",
            reply.text()
        );
        Metrics::parse(&reply.text())
    }

    /// One sample, e.g. `sse_disconnects_total{reason="client"}`.
    pub async fn metric(&self, key: &str) -> f64 {
        self.metrics().await.get(key)
    }

    /// Polls until `key` equals `value`; fails after the limit with the last value seen.
    pub async fn wait_for(&self, key: &str, value: f64) {
        poll_until(
            self.limit,
            &format!("waiting for {key} == {value}"),
            async || {
                let got = self.metric(key).await;
                if got == value {
                    Ok(())
                } else {
                    Err(got)
                }
            },
        )
        .await
    }
}
