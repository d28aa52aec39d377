//! What the routes share, as parts: the configuration, the metrics, admission of
//! streams, the shutdown signal and what every stream body is made with. Each part
//! lives in its own module; this only holds them together.

use crate::config::Config;
use crate::metrics::Metrics;
use crate::ratelimit::PublishLimiter;
use crate::sse::{Admission, BodyParts, Shutdown};
use crate::store::Store;
use crate::streams::shared::Hub;
use std::sync::Arc;

pub struct AppState {
    pub config: Config,
    pub metrics: Arc<Metrics>,
    pub admission: Arc<Admission>,
    pub shutdown: Arc<Shutdown>,
    pub body: BodyParts,
    /// The shared counter's history and subscribers.
    pub hub: Arc<Hub>,
    /// Where the shared counter's changes are made: this process, or Redis.
    pub store: Store,
    /// The per-address limit on increments of the shared counter.
    pub limiter: PublishLimiter,
}

impl AppState {
    pub fn new(config: Config) -> Arc<Self> {
        let metrics = Arc::new(Metrics::new());
        let shutdown = Shutdown::new();
        let hub = Hub::new(config.history, Arc::clone(&metrics));
        Arc::new(AppState {
            admission: Admission::new(config.max_streams, Arc::clone(&metrics)),
            body: BodyParts::new(&config, Arc::clone(&shutdown)),
            store: Store::new(
                config.redis_url.as_ref(),
                Arc::clone(&hub),
                config.history,
                Arc::clone(&metrics),
                Arc::clone(&shutdown),
            ),
            shutdown,
            hub,
            limiter: PublishLimiter::new(config.publish_rate),
            metrics,
            config,
        })
    }

    /// The `Retry-After` of a refused stream: the reconnection delay, in whole seconds.
    pub fn retry_after_secs(&self) -> u64 {
        self.config.retry_ms.div_ceil(1000).max(1)
    }
}
