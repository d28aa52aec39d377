//! The Prometheus metrics of one server instance, and [`DisconnectReason`], the label
//! that says how a stream ended.
//!
//! Each server owns its recorder instead of installing a global one, so several servers
//! in one process (the integration tests) keep separate counts.

use metrics::{Counter, Gauge, Unit};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

/// Why a stream ended, as counted in `sse_disconnects_total{reason}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DisconnectReason {
    /// Every event and the `end` event were sent.
    Complete,
    /// The server was shutting down and sent `end` with reason `shutdown`.
    Shutdown,
    /// The client went away before the end.
    Client,
    /// `drop_after` aborted the connection.
    Fault,
    /// The client accepted no bytes for the stall timeout.
    Stalled,
    /// A shared-stream subscriber fell further behind than the history holds.
    Lagged,
}

impl DisconnectReason {
    pub const ALL: [DisconnectReason; 6] = [
        DisconnectReason::Complete,
        DisconnectReason::Shutdown,
        DisconnectReason::Client,
        DisconnectReason::Fault,
        DisconnectReason::Stalled,
        DisconnectReason::Lagged,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            DisconnectReason::Complete => "complete",
            DisconnectReason::Shutdown => "shutdown",
            DisconnectReason::Client => "client",
            DisconnectReason::Fault => "fault",
            DisconnectReason::Stalled => "stalled",
            DisconnectReason::Lagged => "lagged",
        }
    }
}

/// Why an increment of the shared counter was refused, as counted in
/// `sse_shared_publish_rejected_total{reason}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PublishRejection {
    /// Over `--publish-rate` for the client's address.
    Rate,
    /// An `Origin` that is neither this server nor allowed.
    Origin,
    /// A request body (an increment carries none).
    Body,
    /// The store (Redis) could not be reached.
    Store,
}

impl PublishRejection {
    pub const ALL: [PublishRejection; 4] = [
        PublishRejection::Rate,
        PublishRejection::Origin,
        PublishRejection::Body,
        PublishRejection::Store,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            PublishRejection::Rate => "rate",
            PublishRejection::Origin => "origin",
            PublishRejection::Body => "body",
            PublishRejection::Store => "store",
        }
    }
}

pub struct Metrics {
    handle: PrometheusHandle,
    pub active_streams: Gauge,
    pub streams_total: Counter,
    pub events_sent: Counter,
    /// One counter per [`DisconnectReason`], in the order of `DisconnectReason::ALL`.
    disconnects: Vec<Counter>,
    pub shared_subscribers: Gauge,
    pub shared_value: Gauge,
    pub shared_published: Counter,
    /// 1 while the shared counter's store answers (always, for the embedded one).
    pub shared_store_up: Gauge,
    /// One counter per [`PublishRejection`], in the order of `PublishRejection::ALL`.
    publish_rejected: Vec<Counter>,
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
                "SSE events written (ticks, shared values, resets and end events)"
            );
            metrics::describe_counter!(
                "sse_disconnects_total",
                Unit::Count,
                "SSE streams closed, by reason"
            );
            metrics::describe_gauge!(
                "sse_shared_subscribers",
                Unit::Count,
                "subscribers of the shared counter now"
            );
            metrics::describe_gauge!(
                "sse_shared_value",
                Unit::Count,
                "the shared counter's current value"
            );
            metrics::describe_counter!(
                "sse_shared_published_total",
                Unit::Count,
                "changes of the shared counter published by this instance"
            );
            metrics::describe_gauge!(
                "sse_shared_store_up",
                Unit::Count,
                "1 while the shared counter's store (Redis, or this process) answers"
            );
            metrics::describe_counter!(
                "sse_shared_publish_rejected_total",
                Unit::Count,
                "increments of the shared counter refused, by reason"
            );
            // Every series exists, at zero, before the first event.
            let gauge = |name: &'static str| {
                let g = metrics::gauge!(name);
                g.set(0.0);
                g
            };
            let counter = |name: &'static str| {
                let c = metrics::counter!(name);
                c.absolute(0);
                c
            };
            let disconnects = DisconnectReason::ALL
                .iter()
                .map(|reason| {
                    let c = metrics::counter!("sse_disconnects_total", "reason" => reason.as_str());
                    c.absolute(0);
                    c
                })
                .collect();
            let publish_rejected = PublishRejection::ALL
                .iter()
                .map(|reason| {
                    let c = metrics::counter!(
                        "sse_shared_publish_rejected_total",
                        "reason" => reason.as_str()
                    );
                    c.absolute(0);
                    c
                })
                .collect();
            Metrics {
                handle,
                active_streams: gauge("sse_active_streams"),
                streams_total: counter("sse_streams_total"),
                events_sent: counter("sse_events_sent_total"),
                disconnects,
                shared_subscribers: gauge("sse_shared_subscribers"),
                shared_value: gauge("sse_shared_value"),
                shared_published: counter("sse_shared_published_total"),
                shared_store_up: gauge("sse_shared_store_up"),
                publish_rejected,
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

    pub fn publish_rejected(&self, reason: PublishRejection) -> &Counter {
        let index = PublishRejection::ALL
            .iter()
            .position(|r| *r == reason)
            .expect("ALL lists every reason");
        &self.publish_rejected[index]
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
