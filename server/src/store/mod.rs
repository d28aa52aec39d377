//! Where events (the channels' and the shared counter's changes) are made and
//! ordered: the seam between the routes and the store behind the [`Hub`].
//!
//! - [`Store::Embedded`] (the default): the hub in this process is the store. A
//!   publish is [`Hub::publish`], an increment [`Hub::increment`]; nothing outlives the
//!   process (a restart is a new epoch).
//! - [`Store::Redis`] (`--redis-url`, or `--redis-sentinel`): Redis holds the counter and one ordered log of
//!   every event, shared by every instance. A publish is one atomic step in Redis, and
//!   each instance's reader copies the log into its hub, so subscribers of any
//!   instance see every event once, in order. See [`redis`].
//!
//! The routes only ask the questions below; neither the wire nor the hub's subscribers
//! know which store answers.

pub mod redis;

use crate::config::Config;
use crate::metrics::Metrics;
use crate::sse::Shutdown;
use crate::streams::hub::Hub;
use serde_json::value::RawValue;
use shared::channels::EventId;
use std::sync::Arc;

pub use self::redis::{Primary, RedisStore};
pub use crate::config::{RedisTarget, RedisUrl};

/// The store of the shared counter; see the module docs.
pub enum Store {
    Embedded(Arc<Hub>),
    Redis(Arc<RedisStore>),
}

/// Why the store could not do what was asked. The log has the detail; a client only
/// learns that the store is unavailable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    #[error("the store is unavailable")]
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
    /// The embedded store, or the Redis one when `config.redis` names one; the Redis
    /// store's reader runs until `shutdown` begins.
    pub fn new(
        config: &Config,
        hub: Arc<Hub>,
        metrics: Arc<Metrics>,
        shutdown: Arc<Shutdown>,
        revocations: Arc<crate::access::Revocations>,
    ) -> Store {
        match &config.redis {
            None => {
                metrics.shared_store_up.set(1.0);
                Store::Embedded(hub)
            }
            Some(target) => Store::Redis(RedisStore::start(
                target,
                config.redis_min_replicas,
                config.redis_wait,
                hub,
                config.history,
                metrics,
                shutdown,
                revocations,
            )),
        }
    }

    /// The Redis primary this instance follows (or last followed); `None` for the
    /// embedded store, or before the first connection.
    pub fn primary(&self) -> Option<Primary> {
        match self {
            Store::Embedded(_) => None,
            Store::Redis(redis) => redis.primary(),
        }
    }

    /// Whether the store is in Redis.
    pub fn is_redis(&self) -> bool {
        matches!(self, Store::Redis(_))
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

    /// Publishes `data` on `channel`: the id every subscriber gets it with, once it is
    /// stored, ordered and on its way to every subscriber of `channel`.
    pub async fn publish(
        &self,
        channel: &str,
        ty: Option<&str>,
        data: &RawValue,
        from: Option<&str>,
    ) -> Result<EventId, StoreError> {
        match self {
            Store::Embedded(hub) => Ok(hub.publish(channel, ty, data, from)),
            Store::Redis(redis) => redis.publish(channel, ty, data.get(), from).await,
        }
    }

    /// Whether the store's order has reached `seq` (an `/api/events` id ahead of this
    /// instance's copy); see [`Store::has_reached`].
    pub async fn has_reached_seq(&self, seq: u64) -> bool {
        match self {
            Store::Embedded(_) => false,
            Store::Redis(redis) => redis.has_reached_seq(seq).await,
        }
    }

    /// Tells every instance that `sid` is revoked until `until_secs` (this one has been
    /// told already). The embedded store has no other instance.
    pub async fn revoke(&self, sid: &str, until_secs: u64) -> Result<(), StoreError> {
        match self {
            Store::Embedded(_) => Ok(()),
            Store::Redis(redis) => redis.revoke(sid, until_secs).await,
        }
    }

    /// Whether the store can be reached now.
    pub fn health(&self) -> Health {
        match self {
            Store::Embedded(_) => Health::Ok,
            Store::Redis(redis) => redis.health(),
        }
    }

    /// Whether a new subscriber of the store's events (`/api/shared`, `/api/events`) can
    /// be served now. With Redis that is while the reader is connected to the primary
    /// and has brought the hub up to date: before the first read the instance does not
    /// know the value, and while no primary is known (Redis away, or a failover not
    /// yet found) its copy may hold events the next primary lacks, which a new
    /// subscriber would then have to be told to reset. Streams already open are not
    /// asked: they wait with their heartbeats and continue (or reset) when the reader
    /// is back.
    pub fn ready(&self) -> bool {
        match self {
            Store::Embedded(_) => true,
            Store::Redis(redis) => redis.health() == Health::Ok,
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
