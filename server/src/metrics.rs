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
    /// The token the stream was opened with expired (`end` with reason `expired`).
    Expired,
    /// The stream's session was revoked (`end` with reason `revoked`).
    Revoked,
}

impl DisconnectReason {
    pub const ALL: [DisconnectReason; 8] = [
        DisconnectReason::Complete,
        DisconnectReason::Shutdown,
        DisconnectReason::Client,
        DisconnectReason::Fault,
        DisconnectReason::Stalled,
        DisconnectReason::Lagged,
        DisconnectReason::Expired,
        DisconnectReason::Revoked,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            DisconnectReason::Complete => "complete",
            DisconnectReason::Shutdown => "shutdown",
            DisconnectReason::Client => "client",
            DisconnectReason::Fault => "fault",
            DisconnectReason::Stalled => "stalled",
            DisconnectReason::Lagged => "lagged",
            DisconnectReason::Expired => "expired",
            DisconnectReason::Revoked => "revoked",
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

/// Why a publish on a channel was refused, as counted in
/// `sse_channel_publish_rejected_total{reason}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChannelRejection {
    /// No credential, or one that is not valid.
    Auth,
    /// A credential that does not grant the channel, the channel `counter`, publishing
    /// off, or an `Origin` that is not allowed.
    Forbidden,
    /// A body that is not a publish: malformed, too large, another content type.
    Body,
    /// Over `--channel-publish-rate` for the publisher.
    Rate,
    /// The store could not be reached.
    Store,
}

impl ChannelRejection {
    pub const ALL: [ChannelRejection; 5] = [
        ChannelRejection::Auth,
        ChannelRejection::Forbidden,
        ChannelRejection::Body,
        ChannelRejection::Rate,
        ChannelRejection::Store,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            ChannelRejection::Auth => "auth",
            ChannelRejection::Forbidden => "forbidden",
            ChannelRejection::Body => "body",
            ChannelRejection::Rate => "rate",
            ChannelRejection::Store => "store",
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
    /// Changes of the Redis primary followed (a Sentinel failover).
    pub store_failovers: Counter,
    /// When the primary followed now was first followed (Unix seconds; 0: none).
    pub store_primary_since: Gauge,
    /// One counter per [`PublishRejection`], in the order of `PublishRejection::ALL`.
    publish_rejected: Vec<Counter>,
    /// Events published on channels by this instance (the counter's changes excluded).
    pub channel_published: Counter,
    /// One counter per [`ChannelRejection`], in the order of `ChannelRejection::ALL`.
    channel_rejected: Vec<Counter>,
    /// Channels summed over the open `/api/events` streams.
    pub channel_subscriptions: Gauge,
    /// Events in the history (every channel, the counter's included) and their bytes.
    pub history_events: Gauge,
    pub history_bytes: Gauge,
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
                "sse_store_failovers_total",
                Unit::Count,
                "changes of the Redis primary this instance follows (Sentinel failovers)"
            );
            metrics::describe_gauge!(
                "sse_store_primary_since_seconds",
                Unit::Seconds,
                "when this instance began to follow its Redis primary (Unix time; 0: none)"
            );
            metrics::describe_counter!(
                "sse_shared_publish_rejected_total",
                Unit::Count,
                "increments of the shared counter refused, by reason"
            );
            metrics::describe_counter!(
                "sse_channel_published_total",
                Unit::Count,
                "events published on channels through this instance"
            );
            metrics::describe_counter!(
                "sse_channel_publish_rejected_total",
                Unit::Count,
                "publishes on channels refused, by reason"
            );
            metrics::describe_gauge!(
                "sse_channel_subscriptions",
                Unit::Count,
                "channels summed over the open /api/events streams"
            );
            metrics::describe_gauge!(
                "sse_history_events",
                Unit::Count,
                "events kept for replay, every channel together"
            );
            metrics::describe_gauge!(
                "sse_history_bytes",
                Unit::Bytes,
                "bytes of the events kept for replay"
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
            let channel_rejected = ChannelRejection::ALL
                .iter()
                .map(|reason| {
                    let c = metrics::counter!(
                        "sse_channel_publish_rejected_total",
                        "reason" => reason.as_str()
                    );
                    c.absolute(0);
                    c
                })
                .collect();
            Metrics {
                handle,
                channel_published: counter("sse_channel_published_total"),
                channel_rejected,
                channel_subscriptions: gauge("sse_channel_subscriptions"),
                history_events: gauge("sse_history_events"),
                history_bytes: gauge("sse_history_bytes"),
                active_streams: gauge("sse_active_streams"),
                streams_total: counter("sse_streams_total"),
                events_sent: counter("sse_events_sent_total"),
                disconnects,
                shared_subscribers: gauge("sse_shared_subscribers"),
                shared_value: gauge("sse_shared_value"),
                shared_published: counter("sse_shared_published_total"),
                shared_store_up: gauge("sse_shared_store_up"),
                store_failovers: counter("sse_store_failovers_total"),
                store_primary_since: gauge("sse_store_primary_since_seconds"),
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

    pub fn channel_rejected(&self, reason: ChannelRejection) -> &Counter {
        let index = ChannelRejection::ALL
            .iter()
            .position(|r| *r == reason)
            .expect("ALL lists every reason");
        &self.channel_rejected[index]
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
