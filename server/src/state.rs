//! What the routes share, as parts: the configuration, the metrics, admission of
//! streams, the shutdown signal and what every stream body is made with. Each part
//! lives in its own module; this only holds them together.

use crate::access::Revocations;
use crate::config::Config;
use crate::metrics::Metrics;
use crate::ratelimit::{PublishLimiter, Publisher};
use crate::sse::{Admission, BodyParts, Shutdown};
use crate::store::Store;
use crate::streams::hub::Hub;
use std::sync::Arc;

pub struct AppState {
    pub config: Config,
    pub metrics: Arc<Metrics>,
    pub admission: Arc<Admission>,
    pub shutdown: Arc<Shutdown>,
    pub body: BodyParts,
    /// The history and subscribers of every channel, the shared counter's included.
    pub hub: Arc<Hub>,
    /// Where events are made and ordered: this process, or Redis.
    pub store: Store,
    /// The per-address limit on increments of the shared counter.
    pub limiter: PublishLimiter,
    /// The per-publisher limit on channel publishes.
    pub channel_limiter: PublishLimiter<Publisher>,
    /// Sessions' open streams and the revoked sessions.
    pub revocations: Arc<Revocations>,
}

impl AppState {
    pub fn new(config: Config) -> Arc<Self> {
        let metrics = Arc::new(Metrics::new());
        let shutdown = Shutdown::new();
        let hub = Hub::new(config.history, config.history_bytes, Arc::clone(&metrics));
        let revocations = Revocations::new();
        Arc::new(AppState {
            admission: Admission::new(config.max_streams, Arc::clone(&metrics)),
            body: BodyParts::new(&config, Arc::clone(&shutdown)),
            store: Store::new(
                &config,
                Arc::clone(&hub),
                Arc::clone(&metrics),
                Arc::clone(&shutdown),
                Arc::clone(&revocations),
            ),
            shutdown,
            hub,
            limiter: PublishLimiter::new(config.publish_rate),
            channel_limiter: PublishLimiter::new(config.channel_publish_rate),
            revocations,
            metrics,
            config,
        })
    }

    /// The `Retry-After` of a refused stream: the reconnection delay, in whole seconds.
    pub fn retry_after_secs(&self) -> u64 {
        self.config.retry_ms.div_ceil(1000).max(1)
    }
}
