//! What the routes share, as parts: the configuration, the metrics, admission of
//! streams, the shutdown signal and what every stream body is made with. Each part
//! lives in its own module; this only holds them together.

use crate::config::Config;
use crate::metrics::Metrics;
use crate::sse::{Admission, BodyParts, Shutdown};
use std::sync::Arc;

pub struct AppState {
    pub config: Config,
    pub metrics: Arc<Metrics>,
    pub admission: Arc<Admission>,
    pub shutdown: Arc<Shutdown>,
    pub body: BodyParts,
}

impl AppState {
    pub fn new(config: Config) -> Arc<Self> {
        let metrics = Arc::new(Metrics::new());
        let shutdown = Shutdown::new();
        Arc::new(AppState {
            admission: Admission::new(config.max_streams, Arc::clone(&metrics)),
            body: BodyParts::new(config.retry_ms, config.keep_alive, Arc::clone(&shutdown)),
            shutdown,
            metrics,
            config,
        })
    }

    /// The `Retry-After` of a refused stream: the reconnection delay, in whole seconds.
    pub fn retry_after_secs(&self) -> u64 {
        self.config.retry_ms.div_ceil(1000).max(1)
    }
}
