//! `POST /api/publish`: an application publishes one JSON event on a channel.
//!
//! The checks, in order, each answering with the JSON error body: CORS and CSRF (an
//! `Origin` that is neither this server nor allowed: 403), the method (405), the
//! content type (415), a declared length over `--max-event-bytes` (413, read no
//! further), the credential (401; 403 when publishing is off), the body (413 past the
//! limit while reading, 400 for anything that is not a publish), the grant (403), the
//! rate (429), shutdown and the store (503).

use super::{at, with_state};
use crate::auth::Claims;
use crate::conn::ConnInfo;
use crate::error::ApiError;
use crate::metrics::ChannelRejection;
use crate::ratelimit::{client_addr, Publisher};
use crate::state::AppState;
use bytes::{Buf, BufMut as _, BytesMut};
use futures_util::{Stream, StreamExt as _};
use http::{header, HeaderMap, HeaderValue, Method};
use shared::channels::{PublishRequest, Published, COUNTER};
use std::sync::Arc;
use warp::reply::Response;
use warp::{Filter, Reply};

/// POST /api/publish (OPTIONS answers CORS preflight)
pub fn route(
    state: Arc<AppState>,
) -> impl Filter<Extract = (Response,), Error = warp::Rejection> + Clone {
    at(shared::paths::PUBLISH)
        .and(warp::method())
        .and(warp::header::headers_cloned())
        .and(warp::query::<Vec<(String, String)>>())
        .and(warp::ext::optional::<Arc<ConnInfo>>())
        .and(warp::body::stream())
        .and(with_state(state))
        .then(
            |method: Method,
             headers: HeaderMap,
             query: Vec<(String, String)>,
             conn: Option<Arc<ConnInfo>>,
             body,
             state| async move {
                if let Err(err) = super::credential::refuse_in_query(
                    query.iter().map(|(k, v)| (k.as_str(), v.as_str())),
                ) {
                    return err.into_response();
                }
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
    let reject = |reason: ChannelRejection| metrics.channel_rejected(reason).increment(1);
    let handle = async {
        if !is_json(&headers) {
            reject(ChannelRejection::Body);
            return Err(ApiError::UnsupportedMediaType);
        }
        let max = state.config.max_event_bytes;
        if declared_length(&headers).is_some_and(|len| len > max) {
            reject(ChannelRejection::Body);
            return Err(ApiError::EventTooLarge { max });
        }
        let claims = authenticate(&state, &headers).inspect_err(|err| {
            reject(match err {
                ApiError::Forbidden(_) => ChannelRejection::Forbidden,
                _ => ChannelRejection::Auth,
            })
        })?;
        let bytes = read_body(body, max)
            .await
            .inspect_err(|_| reject(ChannelRejection::Body))?;
        let request: PublishRequest = serde_json::from_slice(&bytes).map_err(|err| {
            reject(ChannelRejection::Body);
            ApiError::BadBody(format!("not a publish: {err}"))
        })?;
        request.validate().map_err(|err| {
            reject(ChannelRejection::Body);
            ApiError::BadBody(err.to_string())
        })?;
        if request.channel == COUNTER {
            reject(ChannelRejection::Forbidden);
            return Err(ApiError::Forbidden(
                "only the server publishes on the channel counter: POST /api/shared/increment"
                    .to_owned(),
            ));
        }
        if !claims.sse.may_publish(&request.channel) {
            reject(ChannelRejection::Forbidden);
            return Err(ApiError::Forbidden(format!(
                "the token does not grant publishing on {}",
                request.channel
            )));
        }
        let publisher = match &claims.sub {
            Some(sub) => Publisher::Sub(sub.clone()),
            None => Publisher::Addr(client_addr(
                conn.and_then(|c| c.peer),
                &headers,
                &state.config.trusted_proxies,
            )),
        };
        if let Err(wait) = state.channel_limiter.check(publisher) {
            reject(ChannelRejection::Rate);
            return Err(ApiError::PublishRateLimited {
                retry_after_secs: wait.as_secs_f64().ceil().max(1.0) as u64,
            });
        }
        if state.shutdown.is_set() {
            return Err(ApiError::ShuttingDown {
                retry_after_secs: state.retry_after_secs(),
            });
        }
        let id = state
            .store
            .publish(
                &request.channel,
                request.ty.as_deref(),
                &request.data,
                claims.sub.as_deref(),
            )
            .await
            .map_err(|_| {
                reject(ChannelRejection::Store);
                ApiError::StoreUnavailable {
                    retry_after_secs: state.retry_after_secs(),
                }
            })?;
        metrics.channel_published.increment(1);
        let mut res = warp::reply::json(&Published { id: id.to_string() }).into_response();
        res.headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        Ok(res)
    };
    let allow = "POST, OPTIONS";
    let refused = || reject(ChannelRejection::Forbidden);
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

/// `application/json`, with or without parameters (`; charset=utf-8`).
fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|t| t.trim().eq_ignore_ascii_case("application/json"))
}

fn declared_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
}

/// The claims of the request's token (bearer, or the cookie of a signed-in page):
/// 401 without one or with an invalid one, 403 when no key is configured (publishing
/// is off).
fn authenticate(state: &AppState, headers: &HeaderMap) -> Result<Claims, ApiError> {
    if state.config.auth.is_none() {
        return Err(ApiError::Forbidden(
            "publishing is off: the server has no --jwt-secret-file or --jwt-public-key-file"
                .to_owned(),
        ));
    }
    super::credential::required(state, headers)
}

/// The token of `Authorization: Bearer <token>`, if that is what the header holds.
pub(crate) fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

/// The body, up to `max` bytes: past it 413, and nothing more is read.
async fn read_body<S, B>(mut body: S, max: u64) -> Result<bytes::Bytes, ApiError>
where
    S: Stream<Item = Result<B, warp::Error>> + Unpin,
    B: Buf,
{
    let mut out = BytesMut::new();
    while let Some(chunk) = body.next().await {
        let mut chunk =
            chunk.map_err(|_| ApiError::BadBody("the body could not be read".into()))?;
        if (out.len() + chunk.remaining()) as u64 > max {
            return Err(ApiError::EventTooLarge { max });
        }
        while chunk.has_remaining() {
            let part = chunk.chunk();
            out.put_slice(part);
            let n = part.len();
            chunk.advance(n);
        }
    }
    Ok(out.freeze())
}
