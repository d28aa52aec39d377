//! The Prometheus metrics of one server instance.
//!
//! Each server owns its recorder instead of installing a global one, so several servers
//! in one process (the integration tests) keep separate counts.

use crate::state::DisconnectReason;
use metrics::{Counter, Gauge, Unit};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

pub struct Metrics {
    handle: PrometheusHandle,
    pub active_streams: Gauge,
    pub streams_total: Counter,
    pub events_sent: Counter,
    /// One counter per [`DisconnectReason`], in the order of `DisconnectReason::ALL`.
    disconnects: Vec<Counter>,
}

impl Metrics {
    pub fn new() -> Self {
        let recorder = PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        metrics::with_local_recorder(&recorder, || {
            metrics::describe_gauge!("sse_active_streams", Unit::Count, "SSE streams open now");
            metrics::describe_counter!(
                "sse_streams_total",
                Unit::Count,
                "SSE streams opened since start"
            );
            metrics::describe_counter!(
                "sse_events_sent_total",
                Unit::Count,
                "SSE events written (ticks and end events)"
            );
            metrics::describe_counter!(
                "sse_disconnects_total",
                Unit::Count,
                "SSE streams closed, by reason"
            );
            let active_streams = metrics::gauge!("sse_active_streams");
            // Set to zero so the series exists before the first stream opens.
            active_streams.set(0.0);
            let streams_total = metrics::counter!("sse_streams_total");
            streams_total.absolute(0);
            let events_sent = metrics::counter!("sse_events_sent_total");
            events_sent.absolute(0);
            let disconnects = DisconnectReason::ALL
                .iter()
                .map(|reason| {
                    let c = metrics::counter!("sse_disconnects_total", "reason" => reason.as_str());
                    c.absolute(0);
                    c
                })
                .collect();
            Metrics {
                handle,
                active_streams,
                streams_total,
                events_sent,
                disconnects,
            }
        })
    }

    pub fn disconnect(&self, reason: DisconnectReason) -> &Counter {
        let index = DisconnectReason::ALL
            .iter()
            .position(|r| *r == reason)
            .expect("ALL lists every reason");
        &self.disconnects[index]
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        self.handle.render()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
