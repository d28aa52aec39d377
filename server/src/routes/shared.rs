//! The shared counter's routes: its stream, and the increment that publishes a change.

use super::counter::last_event_id_header;
use super::{at, cors, with_state};
use crate::conn::ConnInfo;
use crate::error::ApiError;
use crate::metrics::PublishRejection;
use crate::ratelimit::client_addr;
use crate::sse::SseBody;
use crate::state::AppState;
use crate::streams::shared::Subscriber;
use bytes::Buf;
use futures_util::{Stream, StreamExt as _};
use http::{header, HeaderMap, HeaderValue, Method};
use shared::{Incremented, SharedParams};
use std::sync::Arc;
use warp::reply::Response;
use warp::{Filter, Reply};

/// GET /api/shared (`Last-Event-ID` or `?last_event_id=` to catch up; OPTIONS answers
/// CORS preflight)
pub fn stream(
    state: Arc<AppState>,
) -> impl Filter<Extract = (Response,), Error = warp::Rejection> + Clone {
    at(shared::paths::SHARED)
        .and(warp::method())
        .and(warp::header::headers_cloned())
        .and(warp::query::<Vec<(String, String)>>())
        .and(warp::ext::optional::<Arc<ConnInfo>>())
        .and(with_state(state))
        .then(
            |method: Method,
             headers: HeaderMap,
             query: Vec<(String, String)>,
             conn: Option<Arc<ConnInfo>>,
             state: Arc<AppState>| async move {
                let reached = store_reached(&method, &headers, &query, &state).await;
                super::stream_route(method, &headers, &state, |state| {
                    subscribe(&headers, &query, conn, state, reached)
                })
            },
        )
}

/// For a client whose last id is ahead of this instance's copy of the counter: whether
/// the store has reached it (see [`crate::store::Store::has_reached`]). `None` for every
/// other request, which [`subscribe`] answers alone (a bad id included).
async fn store_reached(
    method: &Method,
    headers: &HeaderMap,
    query: &[(String, String)],
    state: &AppState,
) -> Option<u64> {
    if method != Method::GET || !state.store.ready() {
        return None;
    }
    let params =
        SharedParams::from_pairs(query.iter().map(|(k, v)| (k.as_str(), v.as_str()))).ok()?;
    let k = last_event_id_header(headers)
        .ok()?
        .or(params.last_event_id)?;
    (k > state.hub.current() && state.store.has_reached(k).await).then_some(k)
}

fn subscribe(
    headers: &HeaderMap,
    query: &[(String, String)],
    conn: Option<Arc<ConnInfo>>,
    state: &AppState,
    reached: Option<u64>,
) -> Result<Response, ApiError> {
    if state.shutdown.is_set() {
        return Err(ApiError::ShuttingDown {
            retry_after_secs: state.retry_after_secs(),
        });
    }
    let params = SharedParams::from_pairs(query.iter().map(|(k, v)| (k.as_str(), v.as_str())))?;
    // The header is what a browser sends on reconnect; it wins over the query.
    let last_event_id = last_event_id_header(headers)?.or(params.last_event_id);
    // Until the store has been read once, this instance does not know the value.
    if !state.store.ready() {
        return Err(ApiError::StoreUnavailable {
            retry_after_secs: state.retry_after_secs(),
        });
    }
    let permit = state
        .admission
        .try_open("shared", conn)
        .ok_or(ApiError::TooManyStreams {
            retry_after_secs: state.retry_after_secs(),
        })?;
    let start = match reached {
        Some(k) if last_event_id == Some(k) => state.hub.start_after(k),
        _ => state.hub.start(last_event_id),
    };
    tracing::info!(
        stream = permit.id,
        last_event_id,
        from = start.cursor,
        replay = start.replay,
        "shared stream opened"
    );
    let subscriber = Subscriber::new(Arc::clone(&state.hub), start);
    Ok(SseBody::new(subscriber, state.body.clone(), permit, None).into_response())
}

/// POST /api/shared/increment (empty body; OPTIONS answers CORS preflight)
pub fn increment(
    state: Arc<AppState>,
) -> impl Filter<Extract = (Response,), Error = warp::Rejection> + Clone {
    at(shared::paths::SHARED_INCREMENT)
        .and(warp::method())
        .and(warp::header::headers_cloned())
        .and(warp::ext::optional::<Arc<ConnInfo>>())
        .and(warp::body::stream())
        .and(with_state(state))
        .then(
            |method: Method, headers: HeaderMap, conn: Option<Arc<ConnInfo>>, body, state| async move {
                publish(method, headers, conn, body, state)
                    .await
                    .unwrap_or_else(Reply::into_response)
            },
        )
}

async fn publish<S, B>(
    method: Method,
    headers: HeaderMap,
    conn: Option<Arc<ConnInfo>>,
    body: S,
    state: Arc<AppState>,
) -> Result<Response, ApiError>
where
    S: Stream<Item = Result<B, warp::Error>> + Unpin,
    B: Buf,
{
    let metrics = &state.metrics;
    // CSRF: a page of another origin may not make this server count.
    let cors = cors::check(&state.config, &headers).inspect_err(|_| {
        metrics
            .publish_rejected(PublishRejection::Origin)
            .increment(1);
    })?;
    if method == Method::OPTIONS {
        return Ok(cors::preflight_for(&cors, "POST"));
    }
    if method != Method::POST {
        return Err(ApiError::MethodNotAllowed {
            allow: "POST, OPTIONS",
        });
    }
    let mut res = async {
        if let Err(err) = empty_body(&headers, body).await {
            metrics
                .publish_rejected(PublishRejection::Body)
                .increment(1);
            return Err(err);
        }
        if state.shutdown.is_set() {
            return Err(ApiError::ShuttingDown {
                retry_after_secs: state.retry_after_secs(),
            });
        }
        let peer = conn.and_then(|c| c.peer);
        let addr = client_addr(peer, &headers, &state.config.trusted_proxies);
        if let Err(wait) = state.limiter.check(addr) {
            metrics
                .publish_rejected(PublishRejection::Rate)
                .increment(1);
            return Err(ApiError::RateLimited {
                retry_after_secs: wait.as_secs_f64().ceil().max(1.0) as u64,
            });
        }
        let value = state.store.increment().await.map_err(|_| {
            metrics
                .publish_rejected(PublishRejection::Store)
                .increment(1);
            ApiError::StoreUnavailable {
                retry_after_secs: state.retry_after_secs(),
            }
        })?;
        let mut res = warp::reply::json(&Incremented { value }).into_response();
        res.headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        Ok(res)
    }
    .await
    .unwrap_or_else(Reply::into_response);
    cors::apply(&cors, &mut res);
    Ok(res)
}

/// An increment carries no body: a declared length over the limit is refused unread
/// (413), any other body with 400; a chunked one is read only up to the limit.
async fn empty_body<S, B>(headers: &HeaderMap, mut body: S) -> Result<(), ApiError>
where
    S: Stream<Item = Result<B, warp::Error>> + Unpin,
    B: Buf,
{
    let max = shared::limits::MAX_INCREMENT_BODY;
    if let Some(len) = headers.get(header::CONTENT_LENGTH) {
        let len: u64 = len
            .to_str()
            .ok()
            .and_then(|l| l.parse().ok())
            .ok_or(ApiError::BodyNotAllowed)?;
        return match len {
            0 => Ok(()),
            n if n > max => Err(ApiError::BodyTooLarge { max }),
            _ => Err(ApiError::BodyNotAllowed),
        };
    }
    let mut seen = 0u64;
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|_| ApiError::BodyNotAllowed)?;
        seen += chunk.remaining() as u64;
        if seen > max {
            return Err(ApiError::BodyTooLarge { max });
        }
    }
    if seen > 0 {
        return Err(ApiError::BodyNotAllowed);
    }
    Ok(())
}
