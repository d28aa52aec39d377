//! Where the shared counter's changes are made and ordered: the seam between the routes
//! and the store behind the [`Hub`].
//!
//! - [`Store::Embedded`] (the default): the hub in this process is the store. An
//!   increment is [`Hub::increment`]; nothing outlives the process.
//! - [`Store::Redis`] (`--redis-url`): Redis holds the value and an ordered log of the
//!   changes, shared by every instance. An increment is one atomic step in Redis, and
//!   each instance's reader copies the log into its hub, so subscribers of any
//!   instance see every change once, in order. See [`redis`].
//!
//! The routes only ask the questions below; neither the wire nor the hub's subscribers
//! know which store answers.

pub mod redis;

use crate::metrics::Metrics;
use crate::sse::Shutdown;
use crate::streams::shared::Hub;
use std::sync::Arc;

pub use self::redis::{RedisStore, RedisUrl};

/// The store of the shared counter; see the module docs.
pub enum Store {
    Embedded(Arc<Hub>),
    Redis(Arc<RedisStore>),
}

/// Why the store could not do what was asked. The log has the detail; a client only
/// learns that the store is unavailable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    #[error("the shared counter's store is unavailable")]
    Unavailable,
}

/// What `/healthz` says of the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    Ok,
    Unavailable,
}

impl Health {
    pub const fn as_str(self) -> &'static str {
        match self {
            Health::Ok => "ok",
            Health::Unavailable => "unavailable",
        }
    }
}

impl Store {
    /// The embedded store, or the Redis one when `url` is given; the Redis store's
    /// reader runs until `shutdown` begins.
    pub fn new(
        url: Option<&RedisUrl>,
        hub: Arc<Hub>,
        history: usize,
        metrics: Arc<Metrics>,
        shutdown: Arc<Shutdown>,
    ) -> Store {
        match url {
            None => {
                metrics.shared_store_up.set(1.0);
                Store::Embedded(hub)
            }
            Some(url) => Store::Redis(RedisStore::start(url, hub, history, metrics, shutdown)),
        }
    }

    /// Adds one to the counter: the new value once the change is stored, ordered and
    /// on its way to every subscriber (with Redis: in the log, which every instance's
    /// reader delivers).
    pub async fn increment(&self) -> Result<u64, StoreError> {
        match self {
            Store::Embedded(hub) => Ok(hub.increment()),
            Store::Redis(redis) => redis.increment().await,
        }
    }

    /// Whether the store can be reached now.
    pub fn health(&self) -> Health {
        match self {
            Store::Embedded(_) => Health::Ok,
            Store::Redis(redis) => redis.health(),
        }
    }

    /// Whether this instance's hub holds the store's history, so that it can answer a
    /// subscriber. With Redis that is once the reader has read the store once: before
    /// that the instance does not know the value. Afterwards it stays true through an
    /// outage (the copy is behind at worst, and catches up without a gap).
    pub fn ready(&self) -> bool {
        match self {
            Store::Embedded(_) => true,
            Store::Redis(redis) => redis.synced(),
        }
    }

    /// Whether the store has reached `value`, asked when a client's last id is ahead of
    /// this instance's copy. With Redis that happens when a client moves from another
    /// instance whose reader was ahead of this one's; it then waits for the copy to
    /// catch up instead of being told to reset. The embedded store is the copy, so a
    /// client ahead of it is ahead of the store.
    pub async fn has_reached(&self, value: u64) -> bool {
        match self {
            Store::Embedded(_) => false,
            Store::Redis(redis) => redis.has_reached(value).await,
        }
    }
}
