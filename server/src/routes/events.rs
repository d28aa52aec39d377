//! `GET /api/events?channel=a&channel=b`: one stream of the listed channels.

use super::{credential, StreamRequest};
use crate::access::Access;
use crate::error::ApiError;
use crate::sse::SseBody;
use crate::state::AppState;
use crate::streams::channels::ChannelSubscriber;
use shared::channels::COUNTER;
use shared::channels::{EventsParams, Resume};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use warp::reply::Response;
use warp::Filter;

/// GET /api/events (`Last-Event-ID` or `?last_event_id=` to resume, `earliest` for the
/// whole history; OPTIONS answers CORS preflight)
pub fn route(
    state: Arc<AppState>,
) -> impl Filter<Extract = (Response,), Error = warp::Rejection> + Clone {
    super::stream_filter(shared::paths::EVENTS, state, subscribe)
}

async fn subscribe(req: StreamRequest, state: Arc<AppState>) -> Result<Response, ApiError> {
    credential::refuse_in_query(req.pairs())?;
    let params = EventsParams::from_pairs(req.pairs(), state.config.max_channels_per_stream)?;
    let access = authorize(&req, &state, &params.channels)?;
    // The header is what a browser sends on reconnect; it wins over the query.
    let resume = match super::last_event_id_text(&req.headers)? {
        Some(text) => Resume::parse("Last-Event-ID", text)?,
        None => params.resume.unwrap_or(Resume::Live),
    };
    // Every channel's events, the counter's included, come from the store: 503 while
    // it is unavailable (see `Store::ready`).
    if !state.store.ready() {
        return Err(ApiError::StoreUnavailable {
            retry_after_secs: state.retry_after_secs(),
        });
    }
    // An id ahead of this instance's copy, which the store may have reached (the
    // client came from an instance whose reader was ahead): it waits for the copy.
    let (epoch, latest) = state.hub.position();
    let reached = match &resume {
        Resume::After(id) if id.epoch == epoch && id.seq > latest => {
            state.store.has_reached_seq(id.seq).await.then_some(id.seq)
        }
        _ => None,
    };
    let permit = super::admit(&state, "events", req.conn)?;
    // The hub's own copy of each name is what the subscriber keeps.
    let names = &params.channels;
    let start = match reached {
        Some(seq) => state.hub.start_after(names, seq),
        None => state.hub.start(names, &resume),
    };
    tracing::info!(
        stream = permit.id,
        channels = names.len(),
        resume = ?resume,
        from = start.cursor,
        replay = start.replay,
        reset = start.first.is_some(),
        "events stream opened"
    );
    let subscriber = ChannelSubscriber::new(Arc::clone(&state.hub), names, start);
    let body = SseBody::new(subscriber, state.body.clone(), permit, None);
    Ok(match access {
        Some(access) => body.with_access(access),
        None => body,
    }
    .into_response())
}

/// Whether the request may subscribe to every one of `channels`: `counter` and the
/// `--public-channel` patterns need nothing; any other needs a valid token (bearer or
/// cookie) granting it: `401` without one or with an invalid one, `403` when it does
/// not grant it, naming the channel. A stream opened with a token is limited by it.
fn authorize(
    req: &StreamRequest,
    state: &AppState,
    channels: &[String],
) -> Result<Option<Access>, ApiError> {
    let public =
        |c: &str| c == COUNTER || state.config.public_channels.iter().any(|p| p.matches(c));
    let Some(private) = channels.iter().find(|c| !public(c)) else {
        return Ok(None);
    };
    let refused = |error: String, unauthorized, invalid_token| ApiError::ChannelRefused {
        channel: private.clone(),
        error,
        unauthorized,
        invalid_token,
    };
    let Some(presented) = credential::presented(&req.headers) else {
        return Err(refused(
            format!("the channel {private} is not public: a token granting it is needed"),
            true,
            false,
        ));
    };
    let claims = credential::verify(state, &presented.token).map_err(|err| match err {
        ApiError::Unauthorized { error, .. } => refused(error, true, true),
        other => refused(other.to_string(), false, false),
    })?;
    // The leeway is for accepting a token; the stream ends at `exp` itself, measured to
    // the microsecond: a deadline taken from whole seconds would run up to 1 s past it.
    let Some(left) = until_exp(claims.exp, SystemTime::now()) else {
        // Within the verifier's leeway, but a stream must not outlive it.
        return Err(refused("the token has expired".to_owned(), true, true));
    };
    if let Some(denied) = channels
        .iter()
        .find(|c| !public(c) && !claims.sse.may_subscribe(c))
    {
        return Err(ApiError::ChannelRefused {
            channel: denied.clone(),
            error: format!("the token does not grant subscribing to {denied}"),
            unauthorized: false,
            invalid_token: false,
        });
    }
    let until = tokio::time::Instant::now() + left;
    let cancel = claims
        .sid
        .as_deref()
        .map(|sid| state.revocations.watch(sid));
    Ok(Some(Access { until, cancel }))
}

/// How long from `now` until `exp` (UNIX seconds), to the clock's precision; `None` when
/// `exp` has come.
fn until_exp(exp: u64, now: SystemTime) -> Option<Duration> {
    let now = now.duration_since(UNIX_EPOCH).ok()?;
    Duration::from_secs(exp)
        .checked_sub(now)
        .filter(|left| !left.is_zero())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_streams_time_left_counts_the_part_of_a_second_gone() {
        let at = |secs: u64, ms: u64| UNIX_EPOCH + Duration::from_millis(secs * 1000 + ms);
        assert_eq!(until_exp(100, at(98, 0)), Some(Duration::from_secs(2)));
        assert_eq!(
            until_exp(100, at(99, 900)),
            Some(Duration::from_millis(100)),
            "not the whole second that 99 rounded down would give"
        );
        assert_eq!(until_exp(100, at(100, 0)), None, "exp has come");
        assert_eq!(until_exp(100, at(100, 1)), None);
        assert_eq!(until_exp(100, at(104, 0)), None, "leeway is for accepting");
    }
}
