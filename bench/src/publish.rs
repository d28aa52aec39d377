//! The publisher: drives the shared counter by `POST`ing to its increment path at a
//! fixed rate, over one kept-alive HTTP/1 connection (HTTPS for an `https://` target),
//! until a set time.
//!
//! It runs in sse-bench's parent process next to the subscribers it feeds; its figures
//! say whether the server took every increment, so a rate limit or a missing route
//! shows in the report instead of as a mysteriously quiet stream.

use crate::load::{unix_us, Target};
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
    /// The server (its address and `Host`); the path is `path`.
    pub target: Target,
    /// The increment path, e.g. `/api/shared/increment`.
    pub path: String,
    /// Increments per second.
    pub rate: f64,
}

/// Publishes at `cfg.rate` from now until the wall clock passes `until_us` (µs since
/// the UNIX epoch), and returns what happened.
pub async fn publish(cfg: &PublishConfig, until_us: u64) -> PublishFigures {
    let mut figures = PublishFigures {
        rate: cfg.rate,
        ..PublishFigures::default()
    };
    if cfg.rate <= 0.0 || !cfg.rate.is_finite() {
        return figures;
    }
    let start = Instant::now();
    let mut sender: Option<SendRequest<Empty<Bytes>>> = None;
    for i in 0u64.. {
        tokio::time::sleep_until(start + Duration::from_secs_f64(i as f64 / cfg.rate)).await;
        if unix_us() >= until_us {
            break;
        }
        figures.sent += 1;
        if sender.as_ref().is_none_or(|s| s.is_closed()) {
            sender = match tokio::time::timeout(TIMEOUT, connect(&cfg.target)).await {
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
        match tokio::time::timeout(TIMEOUT, increment(s, cfg)).await {
            Ok(Ok(status)) if status.is_success() => figures.ok += 1,
            Ok(Ok(status)) => {
                figures.refused += 1;
                figures.note_error(&format!("status: {status}"));
            }
            Ok(Err(e)) => {
                figures.failed += 1;
                figures.note_error(&format!("request: {e}"));
                sender = None;
            }
            Err(_) => {
                figures.failed += 1;
                figures.note_error("request: timed out");
                sender = None;
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

/// One `POST` with an empty body; its answer is read whole, so the connection can
/// carry the next.
async fn increment(
    sender: &mut SendRequest<Empty<Bytes>>,
    cfg: &PublishConfig,
) -> anyhow::Result<http::StatusCode> {
    sender.ready().await?;
    let request = http::Request::post(cfg.path.as_str())
        .header(http::header::HOST, cfg.target.host.as_str())
        .header(http::header::CONTENT_LENGTH, "0")
        .body(Empty::<Bytes>::new())?;
    let response = sender.send_request(request).await?;
    let status = response.status();
    response.into_body().collect().await?;
    Ok(status)
}
