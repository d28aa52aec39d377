//! An SSE client for tests: reqwest for HTTP (any client, so any scheme and protocol it
//! speaks), eventsource-stream for the event-stream format, and typed readers for the
//! events of the counter stream.

use super::{within_for, TIMEOUT};
use eventsource_stream::{Event, EventStreamError, Eventsource as _};
use futures_util::{Stream, StreamExt as _};
use reqwest::header::HeaderMap;
use reqwest::StatusCode;
use serde::de::DeserializeOwned;
use shared::{End, Tick};
use std::pin::Pin;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The boxed event stream of an [`Sse`] client.
type Events = Pin<Box<dyn Stream<Item = Result<Event, EventStreamError<reqwest::Error>>> + Send>>;

/// An SSE client: the response head, then the events one by one.
pub struct Sse {
    pub status: StatusCode,
    pub headers: HeaderMap,
    events: Events,
    /// How long the next event may take to arrive.
    limit: Duration,
}

/// How an SSE stream ended, as seen by the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Finish {
    /// The body ended cleanly.
    Closed,
    /// The body failed (the connection was aborted).
    Error(String),
}

impl Sse {
    /// Reads the events of `res`, whose head has arrived.
    pub fn new(res: reqwest::Response) -> Sse {
        Sse {
            status: res.status(),
            headers: res.headers().clone(),
            events: Box::pin(res.bytes_stream().eventsource()),
            limit: TIMEOUT,
        }
    }

    /// `GET url` with `client` and extra headers, once the response head has arrived.
    pub async fn connect(client: &reqwest::Client, url: &str, headers: &[(&str, &str)]) -> Sse {
        let mut req = client.get(url);
        for (name, value) in headers {
            req = req.header(*name, *value);
        }
        let res = within_for(TIMEOUT, &format!("response head of GET {url}"), req.send())
            .await
            .unwrap_or_else(|e| panic!("GET {url}: {e}"));
        Sse::new(res)
    }

    /// The same client, waiting up to `limit` for each event.
    pub fn with_limit(mut self, limit: Duration) -> Sse {
        self.limit = limit;
        self
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(name)
            .map(|v| v.to_str().expect("ascii header"))
    }

    /// The next event, `Err(Finish)` when the body ended instead.
    pub async fn next(&mut self) -> Result<Event, Finish> {
        match within_for(self.limit, "the next SSE event", self.events.next()).await {
            Some(Ok(event)) => Ok(event),
            Some(Err(e)) => Err(Finish::Error(e.to_string())),
            None => Err(Finish::Closed),
        }
    }

    /// The next event whose type is not one of `skip` (e.g. `["heartbeat"]`).
    pub async fn next_except(&mut self, skip: &[&str]) -> Result<Event, Finish> {
        loop {
            let event = self.next().await?;
            if !skip.contains(&event.event.as_str()) {
                return Ok(event);
            }
        }
    }

    /// The next event, which must be of type `name` (`message` for an unnamed one).
    pub async fn expect(&mut self, name: &str) -> Event {
        let event = self
            .next()
            .await
            .unwrap_or_else(|finish| panic!("an `{name}` event, not the end ({finish:?})"));
        assert_eq!(event.event, name, "the next event: {event:?}");
        event
    }

    /// The next event, which must be a tick: its id and payload.
    pub async fn tick(&mut self) -> Tick {
        let event = self.next().await.expect("a tick, not the end of the body");
        as_tick(&event)
    }

    /// Reads ticks up to the `end` event: the ticks, the end payload, and how the body
    /// ended after it.
    pub async fn until_end(&mut self) -> (Vec<Tick>, End, Finish) {
        let mut ticks = Vec::new();
        loop {
            let event = self.next().await.unwrap_or_else(|finish| {
                panic!("the body ended ({finish:?}) before `end`, after {ticks:?}")
            });
            if event.event == shared::events::END {
                let end: End = data(&event);
                let finish = self.next().await.expect_err("nothing after `end`");
                return (ticks, end, finish);
            }
            ticks.push(as_tick(&event));
        }
    }

    /// Reads ticks until the body ends without an `end` event.
    pub async fn until_finish(&mut self) -> (Vec<Tick>, Finish) {
        let mut ticks = Vec::new();
        loop {
            match self.next().await {
                Ok(event) => {
                    assert_ne!(
                        event.event,
                        shared::events::END,
                        "unexpected `end` after {ticks:?}"
                    );
                    ticks.push(as_tick(&event));
                }
                Err(finish) => return (ticks, finish),
            }
        }
    }
}

/// The JSON payload of `event` as `T`.
pub fn data<T: DeserializeOwned>(event: &Event) -> T {
    serde_json::from_str(&event.data).unwrap_or_else(|e| {
        panic!(
            "data of the `{}` event {:?} is not a {}: {e}",
            event.event,
            event.data,
            std::any::type_name::<T>()
        )
    })
}

/// Checks that `event` is an unnamed tick whose id is its `num`, and returns it.
pub fn as_tick(event: &Event) -> Tick {
    assert_eq!(
        event.event, "message",
        "ticks are unnamed events: {event:?}"
    );
    let tick: Tick = data(event);
    assert_eq!(event.id, tick.num.to_string(), "id is num: {event:?}");
    tick
}

/// The test's wall clock in microseconds since the UNIX epoch.
pub fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_micros() as u64
}

/// Checks `sent_at_us` values: within a few seconds of `[since_us, now]` and never
/// decreasing.
pub fn assert_plausible_times(times: &[u64], since_us: u64) {
    let slack = 5_000_000;
    let until = now_us();
    for t in times {
        assert!(
            *t + slack >= since_us && *t <= until + slack,
            "sent_at_us {t} is not within a few seconds of the test's clock [{since_us}, {until}]"
        );
    }
    assert!(
        times.windows(2).all(|w| w[0] <= w[1]),
        "sent_at_us decreases: {times:?}"
    );
}
