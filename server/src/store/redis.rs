//! Channels and the shared counter in Redis, for several instances behind a load
//! balancer.
//!
//! # In Redis
//!
//! Four keys, with one hash tag so that they share a slot (the script touches all):
//!
//! - `{sse-counter}:log`: a Redis Stream of every event of every channel, the
//!   counter's changes included, trimmed to about `--history` entries. The event with
//!   seq `s` is the entry `s-0`, with the fields `c` (the channel), `t` (when the
//!   instance that took it published it, µs since the epoch: latency is
//!   publish-to-delivery), `e` (the epoch), and either `v` (the counter's value) or `d`
//!   (the published JSON) with `y` (its type) and `f` (the publisher) when given;
//! - `{sse-counter}:seq`: the last seq;
//! - `{sse-counter}:value`: the counter;
//! - `{sse-counter}:epoch`: a random id given to the data when the first event is
//!   written into an empty store. Data that is lost (flushed, or never persisted
//!   before a restart) comes back under another epoch, or none.
//!
//! A publish or an increment is one Lua script ([`PUBLISH`]): it takes the next seq
//! (and, for the counter, the next value), appends the event to the log and stores
//! them. Redis runs scripts one at a time, so two instances publishing at once get two
//! seqs, and the log holds them in order. The answer is `200` only after the script
//! returned, that is once the event is in the log (and, with `appendfsync always`, on
//! disk), with the id every subscriber will get it with: `<epoch>-<seq>`.
//!
//! # In each instance
//!
//! One reader task ([`RedisStore::start`]) on a connection of its own blocks on the log
//! (`XREAD BLOCK`) from the last seq it delivered and hands each event to the
//! instance's [`Hub`], which fans it out to the local subscribers of its channel: one
//! Redis read per event (or batch of events) per instance, however many channels and
//! subscribers. Publishes go through a second, multiplexed connection.
//!
//! When the reader connects, and again whenever it finds the epoch changed, it reads
//! the epoch, the counter and the last `--history` entries in one transaction
//! (`MULTI`, `GET`, `GET`, `XREVRANGE ... COUNT history`, `EXEC`) and decides with
//! [`classify`]:
//!
//! - the same data as before: the events after the last one delivered are delivered
//!   (after a Redis restart with persistence, or a lost connection: no gap, no repeat);
//! - a first read: the hub is seeded with those entries, so a freshly started instance
//!   can replay `Last-Event-ID` at once;
//! - the data was lost: the hub is reseeded under the new epoch and its generation goes
//!   up, and every subscriber gets `reset` (reason `ahead`).
//!
//! A client id ahead of this instance's copy is checked against Redis
//! ([`RedisStore::has_reached`], [`RedisStore::has_reached_seq`]): a client that came
//! from an instance whose reader was a little ahead waits for the copy to catch up
//! instead of being told to reset.
//!
//! While Redis is away the reader retries with a growing delay, `/healthz` says
//! `"shared":"unavailable"`, publishes, increments and new streams of `/api/shared` and
//! `/api/events` answer `503` (see [`crate::store::Store::ready`]), and open streams
//! stay open with their heartbeats. The log says so once per change of state.
//!
//! # Sentinel, replicas and `WAIT`
//!
//! With `--redis-sentinel` the reader asks the Sentinels for the primary each time it
//! connects (redis-rs's [`SentinelClient`], which also checks that the server it names
//! says `ROLE` master), so after a failover the next attempt finds the promoted
//! replica. Nothing else changes: the promoted replica holds the same log under the
//! same epoch, so [`classify`] says [`Reading::Continue`] and subscribers go on with no
//! gap or repeat; if it lacks events the hub already delivered (a replica that was
//! behind), the log's top is below the hub's latest, which is [`Reading::Lost`]:
//! every subscriber gets `reset` (`ahead`), never a silent rewind. Other instances may
//! have found it first and published on it, so that its seqs reach as far as the hub's
//! but hold other events: the reader keeps the `fingerprint` of the newest event it
//! delivered and reads the log's entry at that seq whenever it syncs (and when the log
//! is idle); another event there (`diverged`) is [`Reading::Lost`] too. A publish refused
//! with `READONLY` (a primary demoted while this instance still wrote to it) makes the
//! reader ask the Sentinels again at once.
//!
//! With `--redis-min-replicas N` (above 0) a publish sends `WAIT N ms` right after the
//! script on the same connection, and answers `200` only if `N` replicas acknowledged
//! it within `--redis-wait-ms`. Otherwise it answers `503`; the event is in the
//! primary's log all the same. The reader, too, hands events it read to the hub only
//! once `N` replicas have them (`RedisStore::replicated_so_far`): an event whose
//! publish was answered `503` reaches subscribers once they do, and none that
//! subscribers saw is missing from a promoted replica that has acknowledged its
//! writes. (What the reader reads when it connects, the new primary's log, is sent as
//! it is.)

use crate::access::Revocations;
pub use crate::config::RedisUrl;
use crate::config::{RedisTarget, SentinelAddr};
use crate::metrics::Metrics;
use crate::sse::Shutdown;
use crate::store::{Health, StoreError};
use crate::streams::hub::{Hub, Stored};
use redis::aio::MultiplexedConnection;
use redis::sentinel::{SentinelClient, SentinelServerType};
use redis::streams::{StreamId, StreamRangeReply, StreamReadReply};
use redis::{AsyncConnectionConfig, Client, ConnectionAddr, ErrorKind, RedisError};
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

/// The keys of the store, all with one hash tag (see the module docs).
pub mod keys {
    pub const LOG: &str = "{sse-counter}:log";
    pub const SEQ: &str = "{sse-counter}:seq";
    pub const VALUE: &str = "{sse-counter}:value";
    pub const EPOCH: &str = "{sse-counter}:epoch";
    /// The pub/sub channel revocations go out on, `<until> <sid>`.
    pub const REVOKE: &str = "{sse-counter}:revoke";
    /// The revoked sessions, a sorted set of sids scored by the time (s) until which
    /// they are refused: read by every instance when its subscription to [`REVOKE`]
    /// (re)starts, so none misses a revocation published while it was not listening
    /// (down, reconnecting, or not started yet). Past entries are trimmed at each
    /// revocation.
    pub const REVOKED: &str = "{sse-counter}:revoked";
    /// A counter each reader increments before its `WAIT`, which waits for a write of
    /// the reader's own (see `RedisStore::replicated_so_far`).
    pub const FENCE: &str = "{sse-counter}:fence";
}
use keys::{EPOCH, FENCE, LOG, SEQ, VALUE};

/// One publish, atomically. `KEYS`: seq, log, epoch, value. `ARGV`: the publication
/// time (µs), the history to trim the log to, the epoch to give an empty store, the
/// channel, `1` for a counter increment (else `0`), the data, the type and the
/// publisher (empty: none). Returns the seq, the counter's value (0 for a channel
/// event) and the epoch.
///
/// The next seq follows the larger of the seq key and the log's last entry, so the
/// entry id can never be refused as too small, and the log entry is written before
/// anything else: a script that fails has written nothing. `%d` keeps integers out of
/// Lua's exponent notation.
pub const PUBLISH: &str = r"
local seq = tonumber(redis.call('GET', KEYS[1]) or '0')
local top = redis.call('XREVRANGE', KEYS[2], '+', '-', 'COUNT', 1)[1]
if top then
  local last = tonumber(string.match(top[1], '^%d+'))
  if last > seq then seq = last end
end
seq = seq + 1
local epoch = redis.call('GET', KEYS[3])
local fresh = not epoch
if fresh then epoch = ARGV[3] end
local s = string.format('%d', seq)
local value = 0
local fields = {'c', ARGV[4], 't', ARGV[1], 'e', epoch}
if ARGV[5] == '1' then
  value = tonumber(redis.call('GET', KEYS[4]) or '0') + 1
  table.insert(fields, 'v')
  table.insert(fields, string.format('%d', value))
else
  table.insert(fields, 'd')
  table.insert(fields, ARGV[6])
  if ARGV[7] ~= '' then
    table.insert(fields, 'y')
    table.insert(fields, ARGV[7])
  end
  if ARGV[8] ~= '' then
    table.insert(fields, 'f')
    table.insert(fields, ARGV[8])
  end
end
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[2], s .. '-0', unpack(fields))
redis.call('SET', KEYS[1], s)
if ARGV[5] == '1' then redis.call('SET', KEYS[4], string.format('%d', value)) end
if fresh then redis.call('SET', KEYS[3], epoch) end
return {seq, value, epoch}
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
/// The longest wait with Sentinel: while the old primary is down and not yet replaced
/// every attempt fails at once, and a longer wait would add itself to the failover.
const BACKOFF_MAX_SENTINEL: Duration = Duration::from_millis(500);
/// How long asking the Sentinels for the primary may take (they are asked in turn,
/// each with the client's own connection timeout).
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(5);

/// Where the reader is, for `/healthz` and for logging each change of state once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
enum State {
    /// Not connected yet since the start.
    Starting = 0,
    Up = 1,
    Down = 2,
}

/// The primary an instance follows, for `/healthz`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Primary {
    /// `host:port` (never a password).
    pub addr: String,
    /// When this instance began to follow it.
    pub since: SystemTime,
    /// How often the primary changed since the start.
    pub failovers: u64,
}

/// Where the reader finds the server it reads and writes.
enum Source {
    Fixed(Client),
    Sentinel(Box<SentinelClient>),
}

impl Source {
    fn new(target: &RedisTarget) -> Result<Source, RedisError> {
        Ok(match target {
            RedisTarget::Url(url) => Source::Fixed(Client::open(url.0.clone())?),
            RedisTarget::Sentinel {
                sentinels,
                master_name,
            } => Source::Sentinel(Box::new(SentinelClient::build(
                sentinels
                    .iter()
                    .map(|SentinelAddr { host, port }| ConnectionAddr::Tcp(host.clone(), *port))
                    .collect(),
                master_name.clone(),
                None,
                SentinelServerType::Master,
            )?)),
        })
    }

    /// A client of the primary: the fixed one, or the one the Sentinels name now.
    async fn primary(&mut self) -> Result<Client, RedisError> {
        match self {
            Source::Fixed(client) => Ok(client.clone()),
            Source::Sentinel(sentinel) => {
                match tokio::time::timeout(LOOKUP_TIMEOUT, sentinel.async_get_client()).await {
                    Ok(found) => found,
                    Err(_) => Err(RedisError::from((
                        ErrorKind::Io,
                        "asking the Sentinels for the primary timed out",
                    ))),
                }
            }
        }
    }
}

/// The Redis store of one instance; see the module docs.
pub struct RedisStore {
    /// Where it is, for the log (never the password): the URL's address, or the
    /// Sentinels and the master's name.
    addr: String,
    /// Replicas that must acknowledge a publish (`WAIT`), and for how long it waits.
    min_replicas: u32,
    wait: Duration,
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
    /// Where revocations from every instance are applied.
    revocations: Arc<Revocations>,
    /// The primary followed now, or last (`None` before the first connection).
    primary: Mutex<Option<Primary>>,
    /// Woken by a publish that the server refused with `READONLY`: the primary was
    /// demoted, and the reader asks the Sentinels again.
    demoted: tokio::sync::Notify,
    /// Whether the last publish found too few replicas, so that the log says so once
    /// per change.
    short_of_replicas: AtomicBool,
}

impl RedisStore {
    /// Makes the store and spawns its reader, which runs until `shutdown` begins.
    /// `min_replicas` and `wait` are `--redis-min-replicas` and `--redis-wait-ms`.
    // Each is a part `AppState` made for it; a struct of them would only be unpacked here.
    #[allow(clippy::too_many_arguments)]
    pub fn start(
        target: &RedisTarget,
        min_replicas: u32,
        wait: Duration,
        hub: Arc<Hub>,
        history: usize,
        metrics: Arc<Metrics>,
        shutdown: Arc<Shutdown>,
        revocations: Arc<Revocations>,
    ) -> Arc<RedisStore> {
        let addr = match target {
            RedisTarget::Url(url) => url.to_string(),
            RedisTarget::Sentinel {
                sentinels,
                master_name,
            } => {
                let list: Vec<String> = sentinels.iter().map(ToString::to_string).collect();
                format!(
                    "master {master_name:?} of the Sentinels {}",
                    list.join(", ")
                )
            }
        };
        // Cannot fail for a parsed URL or Sentinel list; if it did, the reader says so
        // and the store stays unavailable.
        let source = Source::new(target);
        let revocations_source = Source::new(target).ok();
        let store = Arc::new(RedisStore {
            addr,
            min_replicas,
            wait,
            hub,
            history,
            script: redis::Script::new(PUBLISH),
            conn: Mutex::new(None),
            state: AtomicU8::new(State::Starting as u8),
            synced: AtomicBool::new(false),
            revocations,
            primary: Mutex::new(None),
            demoted: tokio::sync::Notify::new(),
            short_of_replicas: AtomicBool::new(false),
            metrics,
        });
        store.metrics.shared_store_up.set(0.0);
        tracing::info!(
            redis = %store.addr,
            min_replicas,
            "channels and the shared counter are kept in Redis"
        );
        let source = match source {
            Ok(source) => source,
            Err(err) => {
                tracing::error!(%err, "cannot use the Redis settings: the shared counter stays unavailable");
                return store;
            }
        };
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
                    Ok(runtime) => {
                        if let Some(revocations_source) = revocations_source {
                            runtime.spawn(
                                Arc::clone(&reader)
                                    .revocations_until(revocations_source, Arc::clone(&shutdown)),
                            );
                        }
                        runtime.block_on(reader.read_until(source, shutdown))
                    }
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

    /// The primary this instance follows (or last followed), for `/healthz`.
    pub fn primary(&self) -> Option<Primary> {
        self.primary
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Adds one to the counter ([`PUBLISH`]): the new value.
    pub async fn increment(&self) -> Result<u64, StoreError> {
        let (_, value, _) = self
            .run(shared::channels::COUNTER, true, "", None, None)
            .await?;
        self.metrics.shared_published.increment(1);
        Ok(value)
    }

    /// Publishes `data` on `channel` ([`PUBLISH`]): the id it is delivered with.
    pub async fn publish(
        &self,
        channel: &str,
        ty: Option<&str>,
        data: &str,
        from: Option<&str>,
    ) -> Result<shared::channels::EventId, StoreError> {
        let (seq, _, epoch) = self.run(channel, false, data, ty, from).await?;
        Ok(shared::channels::EventId { epoch, seq })
    }

    async fn run(
        &self,
        channel: &str,
        counter: bool,
        data: &str,
        ty: Option<&str>,
        from: Option<&str>,
    ) -> Result<(u64, u64, String), StoreError> {
        let mut conn = self.connection()?;
        let mut invocation = self.script.key(SEQ);
        invocation
            .key(LOG)
            .key(EPOCH)
            .key(VALUE)
            .arg(crate::unix_micros())
            .arg(self.history)
            .arg(crate::streams::hub::new_epoch())
            .arg(channel)
            .arg(if counter { "1" } else { "0" })
            .arg(data)
            .arg(ty.unwrap_or(""))
            .arg(from.unwrap_or(""));
        let call = invocation.invoke_async::<(u64, u64, String)>(&mut conn);
        let published = self.answer("publish", call).await?;
        if self.min_replicas > 0 {
            self.replicated(&mut conn).await?;
        }
        Ok(published)
    }

    /// Waits, on the connection the script ran on, until `min_replicas` replicas have
    /// what it wrote (`WAIT`), for at most `wait`.
    async fn replicated(&self, conn: &mut MultiplexedConnection) -> Result<(), StoreError> {
        let wait = redis::cmd("WAIT")
            .arg(self.min_replicas)
            .arg(self.wait.as_millis() as u64)
            .clone();
        let call = wait.query_async::<u32>(conn);
        let acked = self
            .answer_within(self.wait + RESPONSE_TIMEOUT, "waiting for replicas", call)
            .await?;
        let short = acked < self.min_replicas;
        if self.short_of_replicas.swap(short, Ordering::AcqRel) != short {
            if short {
                tracing::warn!(
                    acked,
                    wanted = self.min_replicas,
                    "redis: too few replicas acknowledged a publish in time: publishes answer \
                     503 until they do"
                );
            } else {
                tracing::info!("redis: replicas acknowledge publishes again");
            }
        }
        if short {
            Err(StoreError::Unavailable)
        } else {
            Ok(())
        }
    }

    /// Tells every instance's reader that `sid` is revoked until `until_secs`: kept in
    /// [`keys::REVOKED`] (for an instance that is not listening now) and published on
    /// [`keys::REVOKE`], in one transaction.
    pub async fn revoke(&self, sid: &str, until_secs: u64) -> Result<(), StoreError> {
        let mut conn = self.connection()?;
        let now = crate::unix_micros() / 1_000_000;
        let revoke = redis::pipe()
            .atomic()
            .cmd("ZADD")
            .arg(keys::REVOKED)
            .arg("GT")
            .arg(until_secs)
            .arg(sid)
            .ignore()
            .cmd("ZREMRANGEBYSCORE")
            .arg(keys::REVOKED)
            .arg("-inf")
            .arg(format!("({now}"))
            .ignore()
            .cmd("PUBLISH")
            .arg(keys::REVOKE)
            .arg(format!("{until_secs} {sid}"))
            .ignore()
            .clone();
        let call = revoke.query_async::<()>(&mut conn);
        self.answer("publishing a revocation", call).await
    }

    /// Applies every revocation kept in [`keys::REVOKED`] that still holds; how many.
    async fn apply_kept_revocations(&self, client: &Client) -> Result<usize, String> {
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(Some(RESPONSE_TIMEOUT));
        let mut conn = client
            .get_multiplexed_async_connection_with_config(&config)
            .await
            .map_err(|e| e.to_string())?;
        let now = crate::unix_micros() / 1_000_000;
        let kept: Vec<(String, u64)> = redis::cmd("ZRANGEBYSCORE")
            .arg(keys::REVOKED)
            .arg(now)
            .arg("+inf")
            .arg("WITHSCORES")
            .query_async(&mut conn)
            .await
            .map_err(|e| e.to_string())?;
        for (sid, until) in &kept {
            self.revocations.revoke(sid, *until, now);
        }
        Ok(kept.len())
    }

    /// Applies the revocations every instance publishes, until `shutdown`: one pub/sub
    /// connection, reconnected with the reader's backoff.
    async fn revocations_until(self: Arc<Self>, mut source: Source, shutdown: Arc<Shutdown>) {
        use futures_util::StreamExt as _;
        let stop = shutdown.notified();
        tokio::pin!(stop);
        stop.as_mut().enable();
        if shutdown.is_set() {
            return;
        }
        let mut backoff = BACKOFF_MIN;
        loop {
            let session = async {
                let client = source.primary().await.map_err(|e| e.to_string())?;
                let mut pubsub = tokio::time::timeout(CONNECT_TIMEOUT, client.get_async_pubsub())
                    .await
                    .map_err(|_| "connecting timed out".to_owned())?
                    .map_err(|e| e.to_string())?;
                pubsub
                    .subscribe(keys::REVOKE)
                    .await
                    .map_err(|e| e.to_string())?;
                // Subscribed first, then the kept ones read: a revocation made in
                // between is in both, and applying one twice changes nothing.
                let kept = self.apply_kept_revocations(&client).await?;
                tracing::debug!(kept, "redis: kept revocations applied");
                backoff = BACKOFF_MIN;
                let mut messages = pubsub.into_on_message();
                while let Some(msg) = messages.next().await {
                    let Ok(text) = msg.get_payload::<String>() else {
                        continue;
                    };
                    let Some((until, sid)) = text.split_once(' ') else {
                        continue;
                    };
                    let Ok(until) = until.parse::<u64>() else {
                        continue;
                    };
                    let now = crate::unix_micros() / 1_000_000;
                    let ended = self.revocations.revoke(sid, until, now);
                    tracing::debug!(ended, "a revocation from redis applied");
                }
                Err::<(), String>("the subscription ended".to_owned())
            };
            let err = tokio::select! {
                err = session => err,
                () = &mut stop => return,
            };
            tracing::debug!(?err, "redis: revocations' subscription lost; reconnecting");
            let wait = backoff.mul_f64(0.8 + fastrand::f64() * 0.4);
            backoff = (backoff * 2).min(BACKOFF_MAX);
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                () = &mut stop => return,
            }
        }
    }

    /// Whether the store's last seq is at `seq` or past it; `false` when Redis cannot
    /// say (the client is then told to reset, as with the embedded store).
    pub async fn has_reached_seq(&self, seq: u64) -> bool {
        let Ok(mut conn) = self.connection() else {
            return false;
        };
        let get = redis::cmd("GET").arg(SEQ).clone();
        let call = get.query_async::<Option<u64>>(&mut conn);
        matches!(self.answer("reading the seq", call).await, Ok(Some(s)) if s >= seq)
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
        self.answer_within(RESPONSE_TIMEOUT, what, call).await
    }

    async fn answer_within<T>(
        &self,
        limit: Duration,
        what: &str,
        call: impl Future<Output = Result<T, RedisError>>,
    ) -> Result<T, StoreError> {
        match tokio::time::timeout(limit, call).await {
            Ok(Ok(answer)) => Ok(answer),
            Ok(Err(err)) => {
                if err.code() == Some("READONLY") {
                    // The server is a replica now: the reader finds the new primary.
                    self.demoted.notify_one();
                }
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

    /// Connected to the primary at `primary`, and the hub is up to date.
    fn set_up(&self, conn: MultiplexedConnection, primary: String) {
        *self.conn.lock().unwrap_or_else(|e| e.into_inner()) = Some(conn);
        self.synced.store(true, Ordering::Release);
        self.follow(primary);
        self.metrics.shared_store_up.set(1.0);
        let was = self.state.swap(State::Up as u8, Ordering::AcqRel);
        if was == State::Down as u8 {
            tracing::info!(redis = %self.addr, "redis is back: the shared counter is available again");
        } else if was == State::Starting as u8 {
            tracing::info!(redis = %self.addr, value = self.hub.current(), "connected to redis");
        }
    }

    /// Notes the primary followed now; another one than before is a failover.
    fn follow(&self, addr: String) {
        let mut primary = self.primary.lock().unwrap_or_else(|e| e.into_inner());
        let failovers = match primary.as_ref() {
            Some(p) if p.addr == addr => return,
            Some(p) => {
                tracing::warn!(from = %p.addr, to = %addr, "redis: following a new primary");
                self.metrics.store_failovers.increment(1);
                p.failovers + 1
            }
            None => {
                tracing::info!(primary = %addr, "redis: following the primary");
                0
            }
        };
        let since = SystemTime::now();
        self.metrics.store_primary_since.set(
            since
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64()),
        );
        *primary = Some(Primary {
            addr,
            since,
            failovers,
        });
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
                "redis is unavailable: publishes, increments and new streams answer 503 and \
                 open streams wait, until it is back (retrying with backoff)"
            );
        }
    }

    /// The reader: connects, reads, and reconnects with backoff, until `shutdown`.
    async fn read_until(self: Arc<Self>, source: Source, shutdown: Arc<Shutdown>) {
        let stop = shutdown.notified();
        tokio::pin!(stop);
        stop.as_mut().enable();
        if shutdown.is_set() {
            return;
        }
        let backoff_max = match source {
            Source::Fixed(_) => BACKOFF_MAX,
            Source::Sentinel(_) => BACKOFF_MAX_SENTINEL,
        };
        let mut reader = Reader {
            source,
            epoch: None,
            delivered: None,
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
            reader.backoff = (reader.backoff * 2).min(backoff_max);
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
        let client = reader.source.primary().await?;
        let primary = client.get_connection_info().addr().to_string();
        let config = AsyncConnectionConfig::new().set_connection_timeout(Some(CONNECT_TIMEOUT));
        // A publish's `WAIT` may take `wait` before it answers.
        let commands = client
            .get_multiplexed_async_connection_with_config(
                &config
                    .clone()
                    .set_response_timeout(Some(RESPONSE_TIMEOUT + self.wait)),
            )
            .await?;
        // Its own connection: a blocking read holds the connection it is sent on.
        let mut log = client
            .get_multiplexed_async_connection_with_config(
                &config.set_response_timeout(Some(BLOCK.max(self.wait) + RESPONSE_TIMEOUT)),
            )
            .await?;
        let mut last = self.sync(&mut log, reader).await?;
        self.set_up(commands, primary);
        reader.backoff = BACKOFF_MIN;
        loop {
            let read = redis::cmd("XREAD")
                .arg("COUNT")
                .arg(READ_COUNT)
                .arg("BLOCK")
                .arg(BLOCK.as_millis() as u64)
                .arg("STREAMS")
                .arg(LOG)
                .arg(format!("{last}-0"))
                .clone();
            let reply: Option<StreamReadReply> = tokio::select! {
                reply = read.query_async(&mut log) => reply?,
                () = self.demoted.notified() => {
                    return Err(RedisError::from((
                        ErrorKind::Client,
                        "the primary was demoted to a replica",
                    )))
                }
            };
            let entries: Vec<StreamId> = reply
                .into_iter()
                .flat_map(|r| r.keys)
                .flat_map(|k| k.ids)
                .collect();
            if entries.is_empty() {
                // Nothing new for a while: make sure the data is still the same, and that
                // the log still holds the newest event delivered where it was (a server
                // demoted to a replica takes its new primary's history).
                let at = reader.delivered.map_or(0, |(seq, _)| seq);
                let (epoch, top, mine): (Option<String>, StreamRangeReply, StreamRangeReply) =
                    redis::pipe()
                        .atomic()
                        .cmd("GET")
                        .arg(EPOCH)
                        .cmd("XREVRANGE")
                        .arg(LOG)
                        .arg("+")
                        .arg("-")
                        .arg("COUNT")
                        .arg(1)
                        .cmd("XRANGE")
                        .arg(LOG)
                        .arg(format!("{at}-0"))
                        .arg(format!("{at}-0"))
                        .query_async(&mut log)
                        .await?;
                let top = top.ids.first().and_then(event).map_or(0, |(e, _)| e.seq);
                if epoch != reader.epoch
                    || top < self.hub.position().1
                    || diverged(reader.delivered, &mine)
                {
                    last = self.sync(&mut log, reader).await?;
                }
                continue;
            }
            if self.min_replicas > 0 {
                self.replicated_so_far(&mut log).await?;
            }
            for entry in &entries {
                let Some((e, epoch)) = event(entry) else {
                    tracing::warn!(id = %entry.id, "redis: a log entry that is not an event; skipped");
                    continue;
                };
                if Some(&epoch) != reader.epoch.as_ref() {
                    if reader.epoch.is_none() && self.hub.position().1 == 0 {
                        // The store was empty when last read; this is its first data.
                        self.hub.reseed(&epoch, &[], 0, false);
                        reader.epoch = Some(epoch);
                    } else {
                        last = self.sync(&mut log, reader).await?;
                        break;
                    }
                }
                let latest = self.hub.position().1;
                if e.seq > latest + 1 {
                    tracing::warn!(
                        from = latest,
                        to = e.seq,
                        "redis: the log no longer holds the events in between; subscribers \
                         behind are cut off and reset"
                    );
                }
                if self.hub.accept(&e) {
                    reader.delivered = Some((e.seq, fingerprint(&e)));
                }
                last = last.max(e.seq);
            }
        }
    }

    /// Returns once `min_replicas` replicas have everything the primary wrote before
    /// now, the events just read included: an `INCR` of the reader's own, then `WAIT`
    /// for it (the replication stream is in order), again until enough replicas
    /// acknowledge. So subscribers are sent only events a failover keeps, and a
    /// promoted replica never lacks one they saw; an event whose publish was answered
    /// `503` is sent once the replicas have it.
    async fn replicated_so_far(&self, log: &mut MultiplexedConnection) -> Result<(), RedisError> {
        loop {
            let (_, acked): (u64, u32) = redis::pipe()
                .cmd("INCR")
                .arg(FENCE)
                .cmd("WAIT")
                .arg(self.min_replicas)
                .arg(self.wait.as_millis() as u64)
                .query_async(log)
                .await?;
            if acked >= self.min_replicas {
                return Ok(());
            }
            tracing::debug!(
                acked,
                "redis: events read wait until enough replicas have them"
            );
        }
    }

    /// Brings the hub up to date with the log (see the module docs and [`classify`]):
    /// the seq to read on from.
    async fn sync(
        &self,
        log: &mut MultiplexedConnection,
        reader: &mut Reader,
    ) -> Result<u64, RedisError> {
        // The newest event delivered, as this log holds it at its seq (if it does).
        let at = reader.delivered.map_or(0, |(seq, _)| seq);
        let (epoch, value, range, mine): (
            Option<String>,
            Option<u64>,
            StreamRangeReply,
            StreamRangeReply,
        ) = redis::pipe()
            .atomic()
            .cmd("GET")
            .arg(EPOCH)
            .cmd("GET")
            .arg(VALUE)
            .cmd("XREVRANGE")
            .arg(LOG)
            .arg("+")
            .arg("-")
            .arg("COUNT")
            .arg(self.history)
            .cmd("XRANGE")
            .arg(LOG)
            .arg(format!("{at}-0"))
            .arg(format!("{at}-0"))
            .query_async(log)
            .await?;
        let events: Vec<Stored> = range
            .ids
            .iter()
            .rev()
            .filter_map(event)
            .map(|(e, _)| e)
            .collect();
        let top = events.last().map_or(0, |e| e.seq);
        let current = self.hub.position().1;
        // An empty store has no epoch yet: the hub's ids say so until the first event.
        let named = epoch.clone().unwrap_or_else(|| "0".to_owned());
        let diverged = diverged(reader.delivered, &mine);
        if diverged {
            tracing::warn!(
                seq = at,
                "redis: the log holds another event than the one delivered at this seq (a \
                 promoted replica lacked events, and others were written in their place)"
            );
        }
        match classify(
            self.synced(),
            reader.epoch.as_deref(),
            current,
            epoch.as_deref(),
            top,
            diverged,
        ) {
            Reading::Continue => {
                if events.first().is_some_and(|e| e.seq > current + 1) {
                    tracing::warn!(
                        from = current,
                        to = top,
                        "redis: the log no longer holds every event since the last read; \
                         subscribers behind are cut off and reset"
                    );
                }
                if reader.epoch.is_none() && current == 0 {
                    self.hub.reseed(&named, &[], 0, false);
                }
                for e in &events {
                    self.hub.accept(e);
                }
            }
            Reading::Seed => self.hub.reseed(&named, &events, value.unwrap_or(0), false),
            Reading::Lost => {
                tracing::warn!(
                    had = current,
                    now = top,
                    "redis lost the channels' data (flushed, restarted without it, or a \
                     promoted replica that lacked events subscribers were sent): every \
                     subscriber is told to reset"
                );
                self.hub.reseed(&named, &events, value.unwrap_or(0), true);
            }
        }
        reader.epoch = epoch;
        let latest = self.hub.position().1;
        reader.delivered = events
            .last()
            .filter(|e| e.seq == latest)
            .map(|e| (e.seq, fingerprint(e)));
        Ok(latest)
    }
}

/// What the reader keeps between connections.
struct Reader {
    /// Where it connects.
    source: Source,
    /// The epoch of the data the hub holds (`None`: the store was empty).
    epoch: Option<String>,
    /// The seq and `fingerprint` of the newest event handed to the hub (`None`: none
    /// known). Seqs alone cannot tell two histories apart: a promoted replica that
    /// lacked events subscribers were sent may, by the time this reader finds it, hold
    /// other events under the same seqs (published by other instances meanwhile).
    delivered: Option<(u64, u64)>,
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
/// from the store before, `known` the epoch it was filled from and `current` its latest
/// seq; `epoch` and `top` are what Redis holds now, and `diverged` whether its log holds
/// another event at `current` than the one delivered (see `diverged`).
pub fn classify(
    synced: bool,
    known: Option<&str>,
    current: u64,
    epoch: Option<&str>,
    top: u64,
    diverged: bool,
) -> Reading {
    if !synced {
        Reading::Seed
    } else if known == epoch && top >= current && !diverged {
        Reading::Continue
    } else if known.is_none() && current == 0 {
        // The store was empty and is now filling: everything in it is new.
        Reading::Continue
    } else {
        Reading::Lost
    }
}

/// Whether the log's entry at the seq of the newest event `delivered` (`at`, the
/// answer to `XRANGE log <seq>-0 <seq>-0`) is another event than that one: then the
/// log's history is not the one subscribers were sent, even if its seqs go as far. No
/// entry there says nothing (the log was trimmed past it, or it is behind, which
/// [`classify`] sees from its top).
fn diverged(delivered: Option<(u64, u64)>, at: &StreamRangeReply) -> bool {
    let Some((seq, print)) = delivered else {
        return false;
    };
    match at.ids.first().and_then(event) {
        Some((e, _)) if e.seq == seq => fingerprint(&e) != print,
        _ => false,
    }
}

/// A hash of everything an event is (seq, channel, data, type, publisher, publication
/// time, value): two events written at the same seq by different primaries differ in
/// practice at least in their publication time, taken to the microsecond by the
/// instance that published each (only two publishes of the same data on the same
/// channel in the same microsecond would look alike).
fn fingerprint(e: &Stored) -> u64 {
    use std::hash::{Hash as _, Hasher as _};
    let mut hasher = std::hash::DefaultHasher::new();
    e.hash(&mut hasher);
    hasher.finish()
}

/// The event a log entry holds, and its epoch, if it is one (the id says the seq).
fn event(entry: &StreamId) -> Option<(Stored, String)> {
    let seq = entry.id.strip_suffix("-0")?.parse().ok()?;
    let value: Option<u64> = entry.get("v");
    let data: Option<String> = entry.get("d");
    if value.is_none() && data.is_none() {
        return None;
    }
    Some((
        Stored {
            seq,
            channel: entry.get("c")?,
            ty: entry.get("y"),
            data: data.unwrap_or_default(),
            from: entry.get("f"),
            sent_at_us: entry.get("t")?,
            value,
        },
        entry.get("e")?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_a_read_of_the_store_means() {
        use Reading::*;
        let e = Some("e1");
        // A fresh instance takes whatever there is.
        assert_eq!(classify(false, None, 0, e, 7, false), Seed);
        assert_eq!(classify(false, None, 0, None, 0, false), Seed);
        // The same data, as far or further: deliver what is new.
        assert_eq!(classify(true, e, 5, e, 5, false), Continue);
        assert_eq!(classify(true, e, 5, e, 9, false), Continue);
        // An empty store that filled up since.
        assert_eq!(classify(true, None, 0, e, 3, false), Continue);
        assert_eq!(classify(true, None, 0, None, 0, false), Continue);
        // Lost: flushed (no epoch), another epoch, or behind the copy.
        assert_eq!(classify(true, e, 5, None, 0, false), Lost);
        assert_eq!(classify(true, e, 5, Some("e2"), 9, false), Lost);
        assert_eq!(classify(true, e, 5, e, 4, false), Lost);
    }

    #[test]
    fn a_promoted_replica_is_the_same_data_unless_it_lacks_what_was_delivered() {
        use Reading::*;
        let e = Some("e1");
        // Sentinel promoted a replica that has everything delivered, or more (events
        // written on the old primary after the reader's last read): no reset.
        assert_eq!(classify(true, e, 40, e, 40, false), Continue);
        assert_eq!(classify(true, e, 40, e, 43, false), Continue);
        // One that lacks events subscribers already got (possible when publishes do
        // not wait for a replica): every subscriber resets, never a silent rewind.
        assert_eq!(classify(true, e, 40, e, 38, false), Lost);
        // One that lacked them, and on which other instances published since, so that
        // its seqs reach as far but hold other events: the same.
        assert_eq!(classify(true, e, 40, e, 43, true), Lost);
    }

    fn stored(seq: u64, data: &str, sent_at_us: u64) -> Stored {
        Stored {
            seq,
            channel: "rooms/a".into(),
            ty: None,
            data: data.into(),
            from: None,
            sent_at_us,
            value: None,
        }
    }

    /// The answer of `XRANGE` for `e`, as Redis gives it.
    fn entry(e: &Stored) -> StreamRangeReply {
        let map = [
            ("c", e.channel.clone()),
            ("t", e.sent_at_us.to_string()),
            ("e", "e1".to_owned()),
            ("d", e.data.clone()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), redis::Value::BulkString(v.into_bytes())))
        .collect();
        StreamRangeReply {
            ids: vec![StreamId {
                id: format!("{}-0", e.seq),
                map,
                ..StreamId::default()
            }],
        }
    }

    #[test]
    fn another_event_at_the_seq_delivered_last_is_a_divergent_history() {
        let mine = stored(7, r#"{"n":1}"#, 1_000);
        let delivered = Some((7, fingerprint(&mine)));
        assert!(!diverged(delivered, &entry(&mine)), "the same event");
        // Another publisher's event under the same seq: other data, or only another time.
        assert!(diverged(delivered, &entry(&stored(7, r#"{"n":2}"#, 1_000))));
        assert!(diverged(delivered, &entry(&stored(7, r#"{"n":1}"#, 1_001))));
        // Nothing there (trimmed, or a log behind: `classify` sees that), or nothing
        // delivered yet: no verdict.
        let none = StreamRangeReply { ids: vec![] };
        assert!(!diverged(delivered, &none));
        assert!(!diverged(None, &entry(&mine)));
    }

    #[test]
    fn a_url_shows_its_address_but_not_its_password() {
        use crate::config::RedisUrl;
        let url = RedisUrl::parse("redis://:s3cret@127.0.0.1:6380/2").unwrap();
        assert_eq!(format!("{url:?}"), "RedisUrl(127.0.0.1:6380)");
        assert_eq!(url.to_string(), "127.0.0.1:6380");
        assert!(RedisUrl::parse("http://example.com").is_err());
    }
}
