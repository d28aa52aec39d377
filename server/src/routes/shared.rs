//! The shared counter's routes: its stream, and the increment that publishes a change.

use super::counter::last_event_id_header;
use super::{at, with_state, StreamRequest};
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
    super::stream_filter(shared::paths::SHARED, state, subscribe)
}

async fn subscribe(req: StreamRequest, state: Arc<AppState>) -> Result<Response, ApiError> {
    let params = SharedParams::from_pairs(req.pairs())?;
    // The header is what a browser sends on reconnect; it wins over the query.
    let last_event_id = last_event_id_header(&req.headers)?.or(params.last_event_id);
    // While the store is unavailable (never read yet, or no primary known now) this
    // instance does not know the value for sure: 503, and the client comes back after
    // `Retry-After` (see `Store::ready`).
    if !state.store.ready() {
        return Err(ApiError::StoreUnavailable {
            retry_after_secs: state.retry_after_secs(),
        });
    }
    // A client whose last id is ahead of this instance's copy: whether the store has
    // reached it (see `Store::has_reached`).
    let reached = match last_event_id {
        Some(k) if k > state.hub.current() => state.store.has_reached(k).await,
        _ => false,
    };
    let permit = super::admit(&state, "shared", req.conn)?;
    let start = match last_event_id {
        Some(k) if reached => state.hub.counter_start_after(k),
        _ => state.hub.counter_start(last_event_id),
    };
    tracing::info!(
        stream = permit.id,
        last_event_id,
        from = start.value,
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
                publish(method, headers, conn, body, state).await
            },
        )
}

async fn publish<S, B>(
    method: Method,
    headers: HeaderMap,
    conn: Option<Arc<ConnInfo>>,
    body: S,
    state: Arc<AppState>,
) -> Response
where
    S: Stream<Item = Result<B, warp::Error>> + Unpin,
    B: Buf,
{
    let metrics = &state.metrics;
    // CSRF: a page of another origin may not make this server count.
    let refused = || {
        metrics
            .publish_rejected(PublishRejection::Origin)
            .increment(1)
    };
    let handle = async {
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
    };
    let allow = "POST, OPTIONS";
    super::write_route(
        &method,
        &headers,
        &state,
        allow,
        &[Method::POST],
        refused,
        handle,
    )
    .await
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
