//! The counter stream route.

use super::cors;
use super::with_state;
use crate::conn::ConnInfo;
use crate::error::ApiError;
use crate::state::AppState;
use crate::stream::{CounterStream, StreamPlan};
use http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use shared::{events, parse_last_event_id, CounterParams, ParamError};
use std::sync::Arc;
use std::time::Duration;
use warp::reply::Response;
use warp::{Filter, Reply};

/// GET /api/counter?count=10&interval_ms=1000 (OPTIONS answers CORS preflight)
pub fn route(
    state: Arc<AppState>,
) -> impl Filter<Extract = (Response,), Error = warp::Rejection> + Clone {
    warp::path!("api" / "counter")
        .and(warp::method())
        .and(warp::header::headers_cloned())
        .and(warp::query::<Vec<(String, String)>>())
        .and(warp::ext::optional::<Arc<ConnInfo>>())
        .and(with_state(state))
        .map(
            |method: Method,
             headers: HeaderMap,
             query: Vec<(String, String)>,
             conn: Option<Arc<ConnInfo>>,
             state| {
                // Once the path matched, every answer comes from here: a rejection would
                // fall through to the `/api/` 404.
                handle(method, &headers, &query, conn, state).unwrap_or_else(Reply::into_response)
            },
        )
}

fn handle(
    method: Method,
    headers: &HeaderMap,
    query: &[(String, String)],
    conn: Option<Arc<ConnInfo>>,
    state: Arc<AppState>,
) -> Result<Response, ApiError> {
    let cors = cors::check(&state.config, headers)?;
    if method == Method::OPTIONS {
        return Ok(cors::preflight(&cors));
    }
    if method != Method::GET {
        return Err(ApiError::MethodNotAllowed {
            allow: "GET, OPTIONS",
        });
    }
    // An allowed page must be able to read the error too, so CORS applies to both.
    let mut res = open(headers, query, conn, state).unwrap_or_else(Reply::into_response);
    cors::apply(&cors, &mut res);
    Ok(res)
}

fn open(
    headers: &HeaderMap,
    query: &[(String, String)],
    conn: Option<Arc<ConnInfo>>,
    state: Arc<AppState>,
) -> Result<Response, ApiError> {
    let retry_after_secs = state.config.retry_ms.div_ceil(1000).max(1);
    if state.is_shutting_down() {
        return Err(ApiError::ShuttingDown { retry_after_secs });
    }
    let params = CounterParams::from_pairs(query.iter().map(|(k, v)| (k.as_str(), v.as_str())))?;
    if params.drop_after.is_some() && !state.config.allow_fault_injection {
        return Err(ParamError::FaultInjectionDisabled {
            param: shared::params::DROP_AFTER.to_owned(),
        }
        .into());
    }
    // The header is what a browser sends on reconnect; it wins over the query.
    let last_event_id = match last_event_id_header(headers)? {
        Some(id) => Some(id),
        None => params.last_event_id,
    };
    let resume_after = last_event_id.unwrap_or(0);
    if resume_after >= params.count {
        // 204 tells an EventSource to stop reconnecting for good.
        return Ok(StatusCode::NO_CONTENT.into_response());
    }
    let permit = state
        .try_open_stream(conn)
        .ok_or(ApiError::TooManyStreams { retry_after_secs })?;
    tracing::info!(
        stream = permit.id,
        count = params.count,
        interval_ms = params.interval_ms,
        resume_after,
        drop_after = params.drop_after,
        "stream opened"
    );
    let plan = StreamPlan {
        first: resume_after + 1,
        count: params.count,
        interval: Duration::from_millis(params.interval_ms),
        drop_after: params.drop_after,
    };
    let mut res = warp::reply::stream(CounterStream::new(permit, plan)).into_response();
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    // Tells nginx-style proxies not to buffer the stream.
    h.insert("x-accel-buffering", HeaderValue::from_static("no"));
    Ok(res)
}

/// The `Last-Event-ID` header, if any. An empty value means no id, as in the standard.
fn last_event_id_header(headers: &HeaderMap) -> Result<Option<u64>, ParamError> {
    let mut values = headers.get_all(events::LAST_EVENT_ID_HEADER).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    let param = "Last-Event-ID";
    if values.next().is_some() {
        return Err(ParamError::Repeated {
            param: param.to_owned(),
        });
    }
    let text = value.to_str().map_err(|_| ParamError::Invalid {
        param: param.to_owned(),
        value: String::from_utf8_lossy(value.as_bytes()).into_owned(),
        min: 0,
        max: u64::MAX,
    })?;
    parse_last_event_id(param, text)
}
