//! The shared counter in Redis, for several instances behind a load balancer.
//!
//! # In Redis
//!
//! Three keys, with one hash tag so that they share a slot (the script touches all
//! three):
//!
//! - `{sse-counter}:shared:value`: the counter;
//! - `{sse-counter}:shared:log`: a Redis Stream of the changes, trimmed to about
//!   `--history` entries. The change to value `v` is the entry with id `v-0` and the
//!   fields `v` (the value), `t` (when the instance that made it published it, µs since
//!   the epoch: latency is publish-to-delivery) and `e` (the epoch);
//! - `{sse-counter}:shared:epoch`: a random id given to the data when the first change
//!   is written into an empty store. Data that is lost (flushed, or never persisted
//!   before a restart) comes back under another epoch, or none.
//!
//! An increment is one Lua script ([`INCREMENT`]): it reads the value, appends the
//! next one to the log and stores it. Redis runs scripts one at a time, so two
//! instances incrementing at once get two values, and the log holds them in order.
//! The answer is `200` only after the script returned, that is once the change is in
//! the log (and, with `appendfsync always`, on disk).
//!
//! # In each instance
//!
//! One reader task ([`RedisStore::start`]) on a connection of its own blocks on the log
//! (`XREAD BLOCK`) from the last value it delivered and hands each change to the
//! instance's [`Hub`], which fans it out to the local subscribers: one Redis read per
//! change (or batch of changes) per instance, never one per subscriber. Increments go
//! through a second, multiplexed connection.
//!
//! When the reader connects, and again whenever it finds the epoch changed, it reads
//! the epoch and the last `--history` entries in one transaction (`MULTI`, `GET`,
//! `XREVRANGE ... COUNT history`, `EXEC`) and decides with [`classify`]:
//!
//! - the same data as before: the changes after the last one delivered are delivered
//!   (after a Redis restart with persistence, or a lost connection: no gap, no repeat);
//! - a first read: the hub is seeded with those entries, so a freshly started instance
//!   can replay `Last-Event-ID` at once;
//! - the data was lost: the hub is reseeded and its generation goes up, and every
//!   subscriber gets `reset` (reason `ahead`) with the new value.
//!
//! Replay for `Last-Event-ID: k` is then the hub's, and the hub holds a copy of the
//! log's tail: values `k+1..` are the entries after `k-0` (`XRANGE log (k-0 +`). A `k`
//! ahead of the copy is checked against Redis ([`RedisStore::has_reached`]): a client
//! that came from an instance whose reader was a little ahead waits for the copy to
//! catch up instead of being told to reset.
//!
//! While Redis is away the reader retries with a growing delay, `/healthz` says
//! `"shared":"unavailable"`, increments answer `503`, and open streams stay open with
//! their heartbeats. The log says so once per change of state.

use crate::metrics::Metrics;
use crate::sse::Shutdown;
use crate::store::{Health, StoreError};
use crate::streams::shared::Hub;
use redis::aio::MultiplexedConnection;
use redis::streams::{StreamId, StreamRangeReply, StreamReadReply};
use redis::{AsyncConnectionConfig, Client, ConnectionInfo, IntoConnectionInfo as _, RedisError};
use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const VALUE: &str = "{sse-counter}:shared:value";
const LOG: &str = "{sse-counter}:shared:log";
const EPOCH: &str = "{sse-counter}:shared:epoch";

/// One increment, atomically. `KEYS`: value, log, epoch. `ARGV`: the publication time
/// (µs), the history to trim the log to, and the epoch to give an empty store.
///
/// The next value follows the larger of the value and the log's last entry, so the
/// entry id can never be refused as too small, and the log entry is written before
/// anything else: a script that fails has written nothing. `%d` keeps integers out of
/// Lua's exponent notation.
pub const INCREMENT: &str = r"
local value = tonumber(redis.call('GET', KEYS[1]) or '0')
local top = redis.call('XREVRANGE', KEYS[2], '+', '-', 'COUNT', 1)[1]
if top then
  local last = tonumber(string.match(top[1], '^%d+'))
  if last > value then value = last end
end
value = value + 1
local epoch = redis.call('GET', KEYS[3])
local fresh = not epoch
if fresh then epoch = ARGV[3] end
local v = string.format('%d', value)
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[2], v .. '-0', 'v', v, 't', ARGV[1], 'e', epoch)
redis.call('SET', KEYS[1], v)
if fresh then redis.call('SET', KEYS[3], epoch) end
return value
";

/// How long the reader blocks on the log before it checks that the data is still the
/// same (the only way to notice a flush while nothing new arrives).
const BLOCK: Duration = Duration::from_millis(1000);
/// Changes taken from the log per read.
const READ_COUNT: usize = 1000;
/// How long connecting may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a command may wait for its answer (the reader's blocking read: this more
/// than [`BLOCK`]).
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(2);
/// The reader's first and longest wait between attempts to reconnect.
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(2);

/// A Redis URL (`redis://[:password@]host:port[/db]`, `unix:///path`), parsed. Its
/// `Debug` shows the address only, never a password.
#[derive(Clone)]
pub struct RedisUrl(ConnectionInfo);

impl RedisUrl {
    pub fn parse(url: &str) -> Result<RedisUrl, String> {
        url.into_connection_info()
            .map(RedisUrl)
            .map_err(|err| format!("not a Redis URL ({err})"))
    }
}

impl fmt::Debug for RedisUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RedisUrl({})", self.0.addr())
    }
}

impl fmt::Display for RedisUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self.0.addr(), f)
    }
}

/// Where the reader is, for `/healthz` and for logging each change of state once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
enum State {
    /// Not connected yet since the start.
    Starting = 0,
    Up = 1,
    Down = 2,
}

/// The Redis store of one instance; see the module docs.
pub struct RedisStore {
    client: Client,
    /// Where it is, for the log (never the password).
    addr: String,
    hub: Arc<Hub>,
    history: usize,
    metrics: Arc<Metrics>,
    script: redis::Script,
    /// The connection increments use while Redis is up; `None` while it is away. The
    /// lock is held only to clone or replace it, never across an await.
    conn: Mutex<Option<MultiplexedConnection>>,
    state: AtomicU8,
    /// Set once the hub holds the store's history (see [`crate::store::Store::ready`]).
    synced: AtomicBool,
}

impl RedisStore {
    /// Makes the store and spawns its reader, which runs until `shutdown` begins.
    pub fn start(
        url: &RedisUrl,
        hub: Arc<Hub>,
        history: usize,
        metrics: Arc<Metrics>,
        shutdown: Arc<Shutdown>,
    ) -> Arc<RedisStore> {
        let store = Arc::new(RedisStore {
            // Cannot fail: the URL was parsed into connection info already.
            client: Client::open(url.0.clone()).expect("parsed connection info"),
            addr: url.to_string(),
            hub,
            history,
            script: redis::Script::new(INCREMENT),
            conn: Mutex::new(None),
            state: AtomicU8::new(State::Starting as u8),
            synced: AtomicBool::new(false),
            metrics,
        });
        store.metrics.shared_store_up.set(0.0);
        tracing::info!(redis = %store.addr, "the shared counter is kept in Redis");
        // The reader, and the tasks of both connections it opens, run on a thread of
        // their own: on a runtime that also serves streams, each hop of a change (the
        // script's reply, the stream's read) would wait behind a whole round of
        // subscribers' writes, tens of milliseconds with thousands of them.
        // Bench: `cargo xtask bench --only cluster`, latency added by Redis.
        let reader = Arc::clone(&store);
        let spawned = std::thread::Builder::new()
            .name("sse-counter-redis".into())
            .spawn(move || {
                match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(runtime) => runtime.block_on(reader.read_until(shutdown)),
                    Err(err) => tracing::error!(
                        %err,
                        "cannot start the Redis reader's runtime: the shared counter stays unavailable"
                    ),
                }
            });
        if let Err(err) = spawned {
            tracing::error!(%err, "cannot start the Redis reader: the shared counter stays unavailable");
        }
        store
    }

    pub fn health(&self) -> Health {
        match self.state() {
            State::Up => Health::Ok,
            State::Starting | State::Down => Health::Unavailable,
        }
    }

    pub fn synced(&self) -> bool {
        self.synced.load(Ordering::Acquire)
    }

    /// Runs the increment script; see [`INCREMENT`].
    pub async fn increment(&self) -> Result<u64, StoreError> {
        let mut conn = self.connection()?;
        let new_epoch = format!("{:016x}", fastrand::u64(..));
        let mut invocation = self.script.key(VALUE);
        invocation
            .key(LOG)
            .key(EPOCH)
            .arg(crate::unix_micros())
            .arg(self.history)
            .arg(new_epoch);
        let call = invocation.invoke_async::<u64>(&mut conn);
        let value = self.answer("increment", call).await?;
        self.metrics.shared_published.increment(1);
        Ok(value)
    }

    /// Whether the store's counter is at `value` or past it; `false` when Redis cannot
    /// say (the client is then told to reset, as with the embedded store).
    pub async fn has_reached(&self, value: u64) -> bool {
        let Ok(mut conn) = self.connection() else {
            return false;
        };
        let get = redis::cmd("GET").arg(VALUE).clone();
        let call = get.query_async::<Option<u64>>(&mut conn);
        matches!(self.answer("reading the value", call).await, Ok(Some(v)) if v >= value)
    }

    fn connection(&self) -> Result<MultiplexedConnection, StoreError> {
        self.conn
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
            .ok_or(StoreError::Unavailable)
    }

    /// The answer of one command on the shared connection, within the response timeout.
    /// A failure is logged here; the reader notices a lost connection itself.
    async fn answer<T>(
        &self,
        what: &str,
        call: impl Future<Output = Result<T, RedisError>>,
    ) -> Result<T, StoreError> {
        match tokio::time::timeout(RESPONSE_TIMEOUT, call).await {
            Ok(Ok(answer)) => Ok(answer),
            Ok(Err(err)) => {
                tracing::debug!(%err, "redis: {what} failed");
                Err(StoreError::Unavailable)
            }
            Err(_) => {
                tracing::debug!("redis: {what} timed out");
                Err(StoreError::Unavailable)
            }
        }
    }

    fn state(&self) -> State {
        match self.state.load(Ordering::Acquire) {
            1 => State::Up,
            2 => State::Down,
            _ => State::Starting,
        }
    }

    fn set_up(&self, conn: MultiplexedConnection) {
        *self.conn.lock().unwrap_or_else(|e| e.into_inner()) = Some(conn);
        self.synced.store(true, Ordering::Release);
        self.metrics.shared_store_up.set(1.0);
        let was = self.state.swap(State::Up as u8, Ordering::AcqRel);
        if was == State::Down as u8 {
            tracing::info!(redis = %self.addr, "redis is back: the shared counter is available again");
        } else if was == State::Starting as u8 {
            tracing::info!(redis = %self.addr, value = self.hub.current(), "connected to redis");
        }
    }

    fn set_down(&self, err: &RedisError) {
        self.conn.lock().unwrap_or_else(|e| e.into_inner()).take();
        self.metrics.shared_store_up.set(0.0);
        let was = self.state.swap(State::Down as u8, Ordering::AcqRel);
        if was == State::Down as u8 {
            tracing::debug!(%err, redis = %self.addr, "redis still unavailable");
        } else {
            tracing::warn!(
                %err,
                redis = %self.addr,
                "redis is unavailable: increments answer 503 and open streams wait, until it \
                 is back (retrying with backoff)"
            );
        }
    }

    /// The reader: connects, reads, and reconnects with backoff, until `shutdown`.
    async fn read_until(self: Arc<Self>, shutdown: Arc<Shutdown>) {
        let stop = shutdown.notified();
        tokio::pin!(stop);
        stop.as_mut().enable();
        if shutdown.is_set() {
            return;
        }
        let mut reader = Reader {
            epoch: None,
            backoff: BACKOFF_MIN,
        };
        loop {
            let err = tokio::select! {
                err = self.session(&mut reader) => err,
                () = &mut stop => return,
            };
            self.set_down(&err);
            // A little jitter, so that instances do not all come back at once.
            let wait = reader.backoff.mul_f64(0.8 + fastrand::f64() * 0.4);
            reader.backoff = (reader.backoff * 2).min(BACKOFF_MAX);
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                () = &mut stop => return,
            }
        }
    }

    /// One connection's life: connect, bring the hub up to date, then deliver changes
    /// as they come. Returns only with the error that ended it.
    async fn session(&self, reader: &mut Reader) -> RedisError {
        match self.session_inner(reader).await {
            Err(err) => err,
        }
    }

    async fn session_inner(
        &self,
        reader: &mut Reader,
    ) -> Result<std::convert::Infallible, RedisError> {
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(Some(RESPONSE_TIMEOUT));
        let commands = self
            .client
            .get_multiplexed_async_connection_with_config(&config)
            .await?;
        // Its own connection: a blocking read holds the connection it is sent on.
        let mut log = self
            .client
            .get_multiplexed_async_connection_with_config(
                &config.set_response_timeout(Some(BLOCK + RESPONSE_TIMEOUT)),
            )
            .await?;
        let mut last = self.sync(&mut log, reader).await?;
        self.set_up(commands);
        reader.backoff = BACKOFF_MIN;
        loop {
            let reply: Option<StreamReadReply> = redis::cmd("XREAD")
                .arg("COUNT")
                .arg(READ_COUNT)
                .arg("BLOCK")
                .arg(BLOCK.as_millis() as u64)
                .arg("STREAMS")
                .arg(LOG)
                .arg(format!("{last}-0"))
                .query_async(&mut log)
                .await?;
            let entries: Vec<StreamId> = reply
                .into_iter()
                .flat_map(|r| r.keys)
                .flat_map(|k| k.ids)
                .collect();
            if entries.is_empty() {
                // Nothing new for a while: make sure the data is still the same.
                let (epoch, top): (Option<String>, StreamRangeReply) = redis::pipe()
                    .atomic()
                    .cmd("GET")
                    .arg(EPOCH)
                    .cmd("XREVRANGE")
                    .arg(LOG)
                    .arg("+")
                    .arg("-")
                    .arg("COUNT")
                    .arg(1)
                    .query_async(&mut log)
                    .await?;
                let top = top.ids.first().and_then(change).map_or(0, |c| c.value);
                if epoch != reader.epoch || top < self.hub.current() {
                    last = self.sync(&mut log, reader).await?;
                }
                continue;
            }
            for entry in &entries {
                let Some(c) = change(entry) else {
                    tracing::warn!(id = %entry.id, "redis: a log entry that is not a change; skipped");
                    continue;
                };
                if Some(&c.epoch) != reader.epoch.as_ref() {
                    if reader.epoch.is_none() && self.hub.current() == 0 {
                        // The store was empty when last read; this is its first data.
                        reader.epoch = Some(c.epoch.clone());
                    } else {
                        last = self.sync(&mut log, reader).await?;
                        break;
                    }
                }
                if c.value > self.hub.current() + 1 {
                    tracing::warn!(
                        from = self.hub.current(),
                        to = c.value,
                        "redis: the log no longer holds the changes in between; subscribers \
                         behind are cut off and reset"
                    );
                }
                self.hub.accept(c.value, c.sent_at_us);
                last = last.max(c.value);
            }
        }
    }

    /// Brings the hub up to date with the log (see the module docs and [`classify`]):
    /// the value to read on from.
    async fn sync(
        &self,
        log: &mut MultiplexedConnection,
        reader: &mut Reader,
    ) -> Result<u64, RedisError> {
        let (epoch, range): (Option<String>, StreamRangeReply) = redis::pipe()
            .atomic()
            .cmd("GET")
            .arg(EPOCH)
            .cmd("XREVRANGE")
            .arg(LOG)
            .arg("+")
            .arg("-")
            .arg("COUNT")
            .arg(self.history)
            .query_async(log)
            .await?;
        let changes: Vec<(u64, u64)> = range
            .ids
            .iter()
            .rev()
            .filter_map(change)
            .map(|c| (c.value, c.sent_at_us))
            .collect();
        let top = changes.last().map_or(0, |c| c.0);
        let current = self.hub.current();
        match classify(
            self.synced(),
            reader.epoch.as_deref(),
            current,
            epoch.as_deref(),
            top,
        ) {
            Reading::Continue => {
                if changes.first().is_some_and(|c| c.0 > current + 1) {
                    tracing::warn!(
                        from = current,
                        to = top,
                        "redis: the log no longer holds every change since the last read; \
                         subscribers behind are cut off and reset"
                    );
                }
                for &(value, sent_at_us) in &changes {
                    self.hub.accept(value, sent_at_us);
                }
            }
            Reading::Seed => self.hub.reseed(&changes, false),
            Reading::Lost => {
                tracing::warn!(
                    had = current,
                    now = top,
                    "redis lost the shared counter's data (flushed, or restarted without it): \
                     every subscriber is told to reset"
                );
                self.hub.reseed(&changes, true);
            }
        }
        reader.epoch = epoch;
        Ok(self.hub.current())
    }
}

/// What the reader keeps between connections.
struct Reader {
    /// The epoch of the data the hub holds (`None`: the store was empty).
    epoch: Option<String>,
    /// The wait before the next attempt to reconnect.
    backoff: Duration,
}

/// What a read of the store means for the hub.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reading {
    /// The same data: deliver what is new.
    Continue,
    /// The first read of this instance: the hub takes the log's tail.
    Seed,
    /// The store lost data the hub had: reseed, and every subscriber resets.
    Lost,
}

/// Decides what a read of the store means: `synced` is whether the hub was filled
/// from the store before, `known` the epoch it was filled from and `current` its value;
/// `epoch` and `top` are what Redis holds now.
pub fn classify(
    synced: bool,
    known: Option<&str>,
    current: u64,
    epoch: Option<&str>,
    top: u64,
) -> Reading {
    if !synced {
        Reading::Seed
    } else if known == epoch && top >= current {
        Reading::Continue
    } else if known.is_none() && current == 0 {
        // The store was empty and is now filling: everything in it is new.
        Reading::Continue
    } else {
        Reading::Lost
    }
}

/// One change as the log holds it.
struct Change {
    value: u64,
    sent_at_us: u64,
    epoch: String,
}

/// The change a log entry holds, if it is one (the id says the value).
fn change(entry: &StreamId) -> Option<Change> {
    let value = entry.id.strip_suffix("-0")?.parse().ok()?;
    Some(Change {
        value,
        sent_at_us: entry.get("t")?,
        epoch: entry.get("e")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_a_read_of_the_store_means() {
        use Reading::*;
        let e = Some("e1");
        // A fresh instance takes whatever there is.
        assert_eq!(classify(false, None, 0, e, 7), Seed);
        assert_eq!(classify(false, None, 0, None, 0), Seed);
        // The same data, as far or further: deliver what is new.
        assert_eq!(classify(true, e, 5, e, 5), Continue);
        assert_eq!(classify(true, e, 5, e, 9), Continue);
        // An empty store that filled up since.
        assert_eq!(classify(true, None, 0, e, 3), Continue);
        assert_eq!(classify(true, None, 0, None, 0), Continue);
        // Lost: flushed (no epoch), another epoch, or behind the copy.
        assert_eq!(classify(true, e, 5, None, 0), Lost);
        assert_eq!(classify(true, e, 5, Some("e2"), 9), Lost);
        assert_eq!(classify(true, e, 5, e, 4), Lost);
    }

    #[test]
    fn a_url_shows_its_address_but_not_its_password() {
        let url = RedisUrl::parse("redis://:s3cret@127.0.0.1:6380/2").unwrap();
        assert_eq!(format!("{url:?}"), "RedisUrl(127.0.0.1:6380)");
        assert_eq!(url.to_string(), "127.0.0.1:6380");
        assert!(RedisUrl::parse("http://example.com").is_err());
    }
}
