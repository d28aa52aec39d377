//! `warp-naive`: the straightforward warp SSE counter a user would write first, as a
//! peer for the benchmarks: one `tokio::time::interval` per stream through
//! `warp::sse::reply` with `warp::sse::keep_alive()`. It serves
//! `GET /api/counter?count=N&interval_ms=M` with the same ticks as sse-counter
//! (`id: n`, data `{"num":n,"sent_at_us":...}`) and prints `listening on http://ADDR`.

use futures_util::StreamExt as _;
use serde::Deserialize;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio_stream::wrappers::IntervalStream;
use warp::sse::Event;
use warp::Filter;

#[derive(Debug, Deserialize)]
struct Query {
    #[serde(default = "default_count")]
    count: u64,
    #[serde(default = "default_interval_ms")]
    interval_ms: u64,
}

fn default_count() -> u64 {
    10
}

fn default_interval_ms() -> u64 {
    1000
}

fn tick(num: u64) -> Result<Event, Infallible> {
    let sent_at_us = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64);
    let data = shared::Tick { num, sent_at_us };
    Ok(Event::default()
        .id(num.to_string())
        .json_data(data)
        .expect("a Tick always serializes"))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let addr: SocketAddr = std::env::args()
        .skip_while(|a| a != "--addr")
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:3000".into())
        .parse()?;
    // GET /api/counter?count=10&interval_ms=1000
    let counter = warp::path!("api" / "counter")
        .and(warp::get())
        .and(warp::query::<Query>())
        .map(|q: Query| {
            let period = Duration::from_millis(q.interval_ms.max(1));
            let interval = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
            let ticks = IntervalStream::new(interval)
                .zip(futures_util::stream::iter(1..=q.count))
                .map(|(_, num)| tick(num));
            warp::sse::reply(warp::sse::keep_alive().stream(ticks))
        });
    let listener = tokio::net::TcpListener::bind(addr).await?;
    println!("listening on http://{}", listener.local_addr()?);
    warp::serve(counter).incoming(listener).run().await;
    Ok(())
}
