//! The per-client counter route: checks the request, then hands a
//! [`crate::streams::counter::Counter`] to the SSE core.

use crate::conn::ConnInfo;
use crate::error::ApiError;
use crate::sse::SseBody;
use crate::state::AppState;
use crate::streams::counter::{Counter, CounterPlan};
use http::{HeaderMap, StatusCode};
use shared::{events, parse_last_event_id, CounterParams, ParamError};
use std::sync::Arc;
use std::time::Duration;
use warp::reply::Response;
use warp::{Filter, Reply};

/// GET /api/counter?count=10&interval_ms=1000 (OPTIONS answers CORS preflight)
pub fn route(
    state: Arc<AppState>,
) -> impl Filter<Extract = (Response,), Error = warp::Rejection> + Clone {
    super::stream_filter(shared::paths::COUNTER, state, open)
}

fn open(
    headers: &HeaderMap,
    query: &[(String, String)],
    conn: Option<Arc<ConnInfo>>,
    state: &AppState,
) -> Result<Response, ApiError> {
    if state.shutdown.is_set() {
        return Err(ApiError::ShuttingDown {
            retry_after_secs: state.retry_after_secs(),
        });
    }
    let params = CounterParams::from_pairs(query.iter().map(|(k, v)| (k.as_str(), v.as_str())))?;
    if params.drop_after.is_some() && !state.config.allow_fault_injection {
        return Err(ParamError::FaultInjectionDisabled {
            param: shared::params::DROP_AFTER.to_owned(),
        }
        .into());
    }
    // The header is what a browser sends on reconnect; it wins over the query.
    let last_event_id = last_event_id_header(headers)?.or(params.last_event_id);
    let resume_after = last_event_id.unwrap_or(0);
    if resume_after >= params.count {
        // 204 tells an EventSource to stop reconnecting for good.
        return Ok(StatusCode::NO_CONTENT.into_response());
    }
    let permit = state
        .admission
        .try_open("counter", conn)
        .ok_or(ApiError::TooManyStreams {
            retry_after_secs: state.retry_after_secs(),
        })?;
    tracing::info!(
        stream = permit.id,
        count = params.count,
        interval_ms = params.interval_ms,
        resume_after,
        drop_after = params.drop_after,
        "stream opened"
    );
    let counter = Counter::new(CounterPlan {
        first: resume_after + 1,
        count: params.count,
        interval: Duration::from_millis(params.interval_ms),
    });
    Ok(SseBody::new(counter, state.body.clone(), permit, params.drop_after).into_response())
}

/// The `Last-Event-ID` header, if any. An empty value means no id, as in the standard.
pub(super) fn last_event_id_header(headers: &HeaderMap) -> Result<Option<u64>, ParamError> {
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
