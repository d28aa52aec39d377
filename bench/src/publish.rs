//! The publisher: drives the shared counter by `POST`ing to its increment path at a
//! fixed rate, over one kept-alive HTTP/1 connection per server (HTTPS for an
//! `https://` target), until a set time. Given several servers (the instances of one
//! deployment) it takes them in turn.
//!
//! It runs in sse-bench's parent process next to the subscribers it feeds; its figures
//! say whether the server took every increment, so a rate limit or a missing route
//! shows in the report instead of as a mysteriously quiet stream.

use crate::load::{unix_us, Target, Window};
use crate::report::PublishFigures;
use bytes::Bytes;
use http_body_util::{BodyExt as _, Empty};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use std::time::Duration;
use tokio::time::Instant;

/// Longest wait for a connection or an answer before the increment counts as failed.
const TIMEOUT: Duration = Duration::from_secs(2);

/// Where and how fast to publish.
#[derive(Debug, Clone)]
pub struct PublishConfig {
    /// The servers (their addresses and `Host`s), increment i going to server
    /// i mod their number; the path is `path`.
    pub targets: Vec<Target>,
    /// The increment path, e.g. `/api/shared/increment`.
    pub path: String,
    /// Increments per second.
    pub rate: f64,
}

/// Publishes at `cfg.rate` from now until the wall clock passes the end of `window`,
/// and returns what happened (counting apart the increments sent within it).
pub async fn publish(cfg: &PublishConfig, window: Window) -> PublishFigures {
    let mut figures = PublishFigures {
        rate: cfg.rate,
        ..PublishFigures::default()
    };
    if cfg.rate <= 0.0 || !cfg.rate.is_finite() || cfg.targets.is_empty() {
        return figures;
    }
    let start = Instant::now();
    let mut senders: Vec<Option<SendRequest<Empty<Bytes>>>> =
        cfg.targets.iter().map(|_| None).collect();
    for i in 0u64.. {
        tokio::time::sleep_until(start + Duration::from_secs_f64(i as f64 / cfg.rate)).await;
        let sent_at = unix_us();
        if sent_at >= window.end_us {
            break;
        }
        let in_window = sent_at >= window.start_us;
        figures.sent += 1;
        let which = (i % cfg.targets.len() as u64) as usize;
        let sender = &mut senders[which];
        if sender.as_ref().is_none_or(|s| s.is_closed()) {
            *sender = match tokio::time::timeout(TIMEOUT, connect(&cfg.targets[which])).await {
                Ok(Ok(s)) => Some(s),
                Ok(Err(e)) => {
                    figures.failed += 1;
                    figures.note_error(&format!("connect: {e}"));
                    continue;
                }
                Err(_) => {
                    figures.failed += 1;
                    figures.note_error("connect: timed out");
                    continue;
                }
            };
        }
        let Some(s) = sender.as_mut() else { continue };
        match tokio::time::timeout(TIMEOUT, increment(s, &cfg.targets[which], &cfg.path)).await {
            Ok(Ok(status)) if status.is_success() => {
                figures.ok += 1;
                figures.ok_in_window += u64::from(in_window);
            }
            Ok(Ok(status)) => {
                figures.refused += 1;
                figures.note_error(&format!("status: {status}"));
            }
            Ok(Err(e)) => {
                figures.failed += 1;
                figures.note_error(&format!("request: {e}"));
                *sender = None;
            }
            Err(_) => {
                figures.failed += 1;
                figures.note_error("request: timed out");
                *sender = None;
            }
        }
    }
    figures
}

/// One HTTP/1 connection to the server (over TLS for an `https://` target, whatever
/// carries the streams), driven by a task of its own.
async fn connect(target: &Target) -> anyhow::Result<SendRequest<Empty<Bytes>>> {
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

/// One `POST` to `path` on `target` with an empty body; its answer is read whole, so
/// the connection can carry the next.
async fn increment(
    sender: &mut SendRequest<Empty<Bytes>>,
    target: &Target,
    path: &str,
) -> anyhow::Result<http::StatusCode> {
    sender.ready().await?;
    let request = http::Request::post(path)
        .header(http::header::HOST, target.host.as_str())
        .header(http::header::CONTENT_LENGTH, "0")
        .body(Empty::<Bytes>::new())?;
    let response = sender.send_request(request).await?;
    let status = response.status();
    response.into_body().collect().await?;
    Ok(status)
}
