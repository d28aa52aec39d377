//! The publisher: `POST`s to the shared counter's increment path, or to `/api/publish`
//! with a bearer token and a numbered JSON body per channel, over kept-alive HTTP/1
//! connections (HTTPS for an `https://` target), until a set time. Paced, it sends at a
//! fixed rate over one connection per server, taking several servers (the instances of
//! one deployment) in turn; flooding, each of its connections sends the next request as
//! soon as the last is answered, which measures how many the server takes a second.
//!
//! It runs in sse-bench's parent process next to the subscribers it feeds; its figures
//! say whether the server took every request, so a rate limit or a missing route
//! shows in the report instead of as a mysteriously quiet stream.

use crate::load::{unix_us, Target, Window};
use crate::report::PublishFigures;
use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use serde::{Deserialize, Serialize};
use std::cell::RefCell;
use std::time::Duration;
use tokio::time::Instant;

/// Longest wait for a connection or an answer before the request counts as failed.
const TIMEOUT: Duration = Duration::from_secs(2);

/// The `data` sse-bench publishes on a channel: the channel's own count, from 1, which
/// every subscriber checks for gaps and repeats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Numbered {
    pub n: u64,
}

/// What each request carries.
#[derive(Debug, Clone)]
pub enum Body {
    /// An empty `POST` (the shared counter's increment).
    Empty,
    /// `POST /api/publish`: `{"channel": <name>, "data": {"n": k}}` with
    /// `Authorization: Bearer <token>`; request `i` goes to channel `i % channels`,
    /// named by `channel` with `{i}` replaced by that index.
    Channel {
        token: String,
        channel: String,
        channels: u64,
    },
}

impl Body {
    /// The name of channel `index`.
    pub fn channel_name(template: &str, index: u64) -> String {
        template.replace("{i}", &index.to_string())
    }
}

/// How requests are sent.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Pace {
    /// This many a second, in all.
    Rate(f64),
    /// This many connections (to the first server), each as fast as it is answered.
    Flood(u32),
}

/// Where, what and how fast to publish.
#[derive(Debug, Clone)]
pub struct PublishConfig {
    /// The servers (their addresses and `Host`s), request i going to server
    /// i mod their number (paced; a flood goes to the first); the path is `path`.
    pub targets: Vec<Target>,
    /// The path, e.g. `/api/shared/increment` or `/api/publish`.
    pub path: String,
    pub body: Body,
    pub pace: Pace,
}

/// The next `n` of each channel, shared by the connections of a flood (all on this
/// one task, so a `RefCell` is enough).
struct Counts {
    next: RefCell<u64>,
    per_channel: RefCell<Vec<u64>>,
}

impl Counts {
    fn new(body: &Body) -> Counts {
        let channels = match body {
            Body::Empty => 0,
            Body::Channel { channels, .. } => *channels as usize,
        };
        Counts {
            next: RefCell::new(0),
            per_channel: RefCell::new(vec![0; channels]),
        }
    }

    /// The next request's body and headers.
    fn request(
        &self,
        cfg: &PublishConfig,
        target: &Target,
    ) -> anyhow::Result<http::Request<Full<Bytes>>> {
        let i = {
            let mut next = self.next.borrow_mut();
            *next += 1;
            *next - 1
        };
        let builder =
            http::Request::post(cfg.path.as_str()).header(http::header::HOST, target.host.as_str());
        Ok(match &cfg.body {
            Body::Empty => builder
                .header(http::header::CONTENT_LENGTH, "0")
                .body(Full::new(Bytes::new()))?,
            Body::Channel {
                token,
                channel,
                channels,
            } => {
                let c = i % channels.max(&1);
                let n = {
                    let mut per = self.per_channel.borrow_mut();
                    per[c as usize] += 1;
                    per[c as usize]
                };
                let body = serde_json::json!({
                    "channel": Body::channel_name(channel, c),
                    "data": Numbered { n },
                });
                builder
                    .header(http::header::CONTENT_TYPE, "application/json")
                    .header(http::header::AUTHORIZATION, format!("Bearer {token}"))
                    .body(Full::new(Bytes::from(serde_json::to_vec(&body)?)))?
            }
        })
    }
}

/// Publishes from now until the wall clock passes the end of `window`, and returns
/// what happened (counting apart the requests sent within it).
pub async fn publish(cfg: &PublishConfig, window: Window) -> PublishFigures {
    let figures = RefCell::new(PublishFigures {
        rate: match cfg.pace {
            Pace::Rate(r) => r,
            Pace::Flood(_) => 0.0,
        },
        flood_connections: match cfg.pace {
            Pace::Rate(_) => 0,
            Pace::Flood(k) => k,
        },
        path: cfg.path.clone(),
        ..PublishFigures::default()
    });
    if cfg.targets.is_empty() {
        return figures.into_inner();
    }
    let counts = Counts::new(&cfg.body);
    match cfg.pace {
        Pace::Rate(rate) if rate > 0.0 && rate.is_finite() => {
            paced(cfg, rate, window, &counts, &figures).await;
        }
        Pace::Rate(_) => {}
        Pace::Flood(k) => {
            let connections = (0..k.max(1)).map(|_| flood(cfg, window, &counts, &figures));
            futures_util::future::join_all(connections).await;
        }
    }
    figures.into_inner()
}

/// At `rate` a second, request i to server i mod K, one connection each.
async fn paced(
    cfg: &PublishConfig,
    rate: f64,
    window: Window,
    counts: &Counts,
    figures: &RefCell<PublishFigures>,
) {
    let start = Instant::now();
    let mut senders: Vec<Option<SendRequest<Full<Bytes>>>> =
        cfg.targets.iter().map(|_| None).collect();
    for i in 0u64.. {
        tokio::time::sleep_until(start + Duration::from_secs_f64(i as f64 / rate)).await;
        let sent_at = unix_us();
        if sent_at >= window.end_us {
            break;
        }
        let which = (i % cfg.targets.len() as u64) as usize;
        one(
            cfg,
            &cfg.targets[which],
            &mut senders[which],
            sent_at >= window.start_us,
            counts,
            figures,
        )
        .await;
    }
}

/// One connection to the first server, each request sent when the last is answered.
async fn flood(
    cfg: &PublishConfig,
    window: Window,
    counts: &Counts,
    figures: &RefCell<PublishFigures>,
) {
    let mut sender = None;
    loop {
        let sent_at = unix_us();
        if sent_at >= window.end_us {
            break;
        }
        let in_window = sent_at >= window.start_us;
        if !one(
            cfg,
            &cfg.targets[0],
            &mut sender,
            in_window,
            counts,
            figures,
        )
        .await
        {
            // A failed connection is not retried in a tight loop.
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// One request on `sender` (connected first if need be), its answer counted in
/// `figures`; whether it was taken.
async fn one(
    cfg: &PublishConfig,
    target: &Target,
    sender: &mut Option<SendRequest<Full<Bytes>>>,
    in_window: bool,
    counts: &Counts,
    figures: &RefCell<PublishFigures>,
) -> bool {
    figures.borrow_mut().sent += 1;
    let fail = |e: &str| {
        let mut f = figures.borrow_mut();
        f.failed += 1;
        f.note_error(e);
        false
    };
    if sender.as_ref().is_none_or(|s| s.is_closed()) {
        *sender = match tokio::time::timeout(TIMEOUT, connect(target)).await {
            Ok(Ok(s)) => Some(s),
            Ok(Err(e)) => return fail(&format!("connect: {e}")),
            Err(_) => return fail("connect: timed out"),
        };
    }
    let Some(s) = sender.as_mut() else {
        return false;
    };
    let request = match counts.request(cfg, target) {
        Ok(r) => r,
        Err(e) => return fail(&format!("request: {e}")),
    };
    match tokio::time::timeout(TIMEOUT, send(s, request)).await {
        Ok(Ok(status)) if status.is_success() => {
            let mut f = figures.borrow_mut();
            f.ok += 1;
            f.ok_in_window += u64::from(in_window);
            true
        }
        Ok(Ok(status)) => {
            let mut f = figures.borrow_mut();
            f.refused += 1;
            f.note_error(&format!("status: {status}"));
            false
        }
        Ok(Err(e)) => {
            *sender = None;
            fail(&format!("request: {e}"))
        }
        Err(_) => {
            *sender = None;
            fail("request: timed out")
        }
    }
}

/// One HTTP/1 connection to the server (over TLS for an `https://` target, whatever
/// carries the streams), driven by a task of its own.
async fn connect(target: &Target) -> anyhow::Result<SendRequest<Full<Bytes>>> {
    let tcp = tokio::net::TcpStream::connect(target.addr).await?;
    tcp.set_nodelay(true)?;
    if target.tls {
        let tls = crate::tls::Client::new(&target.hostname, b"http/1.1")?;
        let io = tls.handshake(tcp).await?;
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io)).await?;
        tokio::spawn(conn);
        return Ok(sender);
    }
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await?;
    tokio::spawn(conn);
    Ok(sender)
}

/// One request; its answer is read whole, so the connection can carry the next.
async fn send(
    sender: &mut SendRequest<Full<Bytes>>,
    request: http::Request<Full<Bytes>>,
) -> anyhow::Result<http::StatusCode> {
    sender.ready().await?;
    let response = sender.send_request(request).await?;
    let status = response.status();
    response.into_body().collect().await?;
    Ok(status)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_channel_is_numbered_from_one_in_turn() {
        let target = Target::parse("http://127.0.0.1:1/api/events").unwrap();
        let cfg = PublishConfig {
            targets: vec![target.clone()],
            path: shared::paths::PUBLISH.into(),
            body: Body::Channel {
                token: "t".into(),
                channel: "bench/{i}".into(),
                channels: 2,
            },
            pace: Pace::Flood(1),
        };
        let counts = Counts::new(&cfg.body);
        let bodies: Vec<(String, String)> = (0..4)
            .map(|_| {
                let r = counts.request(&cfg, &target).unwrap();
                let auth = r.headers()[http::header::AUTHORIZATION]
                    .to_str()
                    .unwrap()
                    .to_owned();
                let body = r.into_body();
                let bytes = futures_util::FutureExt::now_or_never(body.collect())
                    .unwrap()
                    .unwrap()
                    .to_bytes();
                (auth, String::from_utf8(bytes.to_vec()).unwrap())
            })
            .collect();
        assert!(bodies.iter().all(|(auth, _)| auth == "Bearer t"));
        let bodies: Vec<&str> = bodies.iter().map(|(_, b)| b.as_str()).collect();
        assert_eq!(
            bodies,
            [
                r#"{"channel":"bench/0","data":{"n":1}}"#,
                r#"{"channel":"bench/1","data":{"n":1}}"#,
                r#"{"channel":"bench/0","data":{"n":2}}"#,
                r#"{"channel":"bench/1","data":{"n":2}}"#,
            ]
        );
        // The contract's own type reads it back.
        let req: shared::channels::PublishRequest = serde_json::from_str(bodies[3]).unwrap();
        assert_eq!(
            (req.channel.as_str(), req.data.get()),
            ("bench/1", r#"{"n":2}"#)
        );
    }
}
