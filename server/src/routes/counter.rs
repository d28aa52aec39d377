//! The per-client counter route: checks the request, then hands a
//! [`crate::streams::counter::Counter`] to the SSE core.

use super::StreamRequest;
use crate::error::ApiError;
use crate::sse::SseBody;
use crate::state::AppState;
use crate::streams::counter::{Counter, CounterPlan};
use http::{HeaderMap, StatusCode};
use shared::{parse_last_event_id, CounterParams, ParamError};
use std::sync::Arc;
use std::time::Duration;
use warp::reply::Response;
use warp::{Filter, Reply};

/// GET /api/counter?count=10&interval_ms=1000 (OPTIONS answers CORS preflight)
pub fn route(
    state: Arc<AppState>,
) -> impl Filter<Extract = (Response,), Error = warp::Rejection> + Clone {
    super::stream_filter(shared::paths::COUNTER, state, |req, state| async move {
        open(&req, &state)
    })
}

fn open(req: &StreamRequest, state: &AppState) -> Result<Response, ApiError> {
    let params = CounterParams::from_pairs(req.pairs())?;
    if params.drop_after.is_some() && !state.config.allow_fault_injection {
        return Err(ParamError::FaultInjectionDisabled {
            param: shared::params::DROP_AFTER.to_owned(),
        }
        .into());
    }
    // The header is what a browser sends on reconnect; it wins over the query.
    let last_event_id = last_event_id_header(&req.headers)?.or(params.last_event_id);
    let resume_after = last_event_id.unwrap_or(0);
    if resume_after >= params.count {
        // 204 tells an EventSource to stop reconnecting for good.
        return Ok(StatusCode::NO_CONTENT.into_response());
    }
    let permit = super::admit(state, "counter", req.conn.clone())?;
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

/// The `Last-Event-ID` header as a number, if any. An empty value means no id, as in
/// the standard.
pub(super) fn last_event_id_header(headers: &HeaderMap) -> Result<Option<u64>, ParamError> {
    match super::last_event_id_text(headers) {
        Ok(Some(text)) => parse_last_event_id("Last-Event-ID", text),
        Ok(None) => Ok(None),
        Err(ParamError::Malformed { param, value, .. }) => Err(ParamError::Invalid {
            param,
            value,
            min: 0,
            max: u64::MAX,
        }),
        Err(err) => Err(err),
    }
}
