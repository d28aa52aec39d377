//! Operations routes: Prometheus metrics and the health check.

use super::{at, only, with_state};
use crate::state::AppState;
use http::{header, HeaderValue, Method, StatusCode};
use std::sync::Arc;
use warp::reply::Response;
use warp::{Filter, Reply};

/// GET /metrics: Prometheus text exposition.
pub fn metrics(
    state: Arc<AppState>,
) -> impl Filter<Extract = (Response,), Error = warp::Rejection> + Clone {
    at(shared::paths::METRICS)
        .and(only("GET", &[Method::GET]))
        .and(with_state(state))
        .map(|state: Arc<AppState>| {
            let mut res = state.metrics.render().into_response();
            let headers = res.headers_mut();
            headers.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            );
            headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            res
        })
}

/// GET /metrics on the main listener, unless `--metrics-addr` moved it elsewhere.
pub fn metrics_if_on_main(
    state: Arc<AppState>,
) -> impl Filter<Extract = (Response,), Error = warp::Rejection> + Clone {
    let on_main = state.config.metrics_on_main;
    warp::any()
        .and_then(move || async move {
            if on_main {
                Ok(())
            } else {
                Err(warp::reject::not_found())
            }
        })
        .untuple_one()
        .and(metrics(state))
}

/// GET /healthz: 200 `{"status":"ok",...}` while serving, 503 once shutdown began.
/// `shared` says whether the shared counter's store answers (`ok`, `unavailable`): an
/// instance without Redis still serves everything else, so it stays 200. With Redis,
/// `redis` says which primary the instance follows (`primary`, `host:port`, `null`
/// before the first connection), since when (`since_unix_ms`) and how often it
/// changed (`failovers`).
pub fn healthz(
    state: Arc<AppState>,
) -> impl Filter<Extract = (Response,), Error = warp::Rejection> + Clone {
    at(shared::paths::HEALTHZ)
        .and(only("GET", &[Method::GET]))
        .and(with_state(state))
        .map(|state: Arc<AppState>| {
            let (status, word) = if state.shutdown.is_set() {
                (StatusCode::SERVICE_UNAVAILABLE, "shutting_down")
            } else {
                (StatusCode::OK, "ok")
            };
            let primary = state.store.primary();
            let redis = state.store.is_redis().then(|| {
                serde_json::json!({
                    "primary": primary.as_ref().map(|p| p.addr.clone()),
                    "since_unix_ms": primary.as_ref().and_then(|p| {
                        p.since
                            .duration_since(std::time::UNIX_EPOCH)
                            .ok()
                            .map(|d| d.as_millis() as u64)
                    }),
                    "failovers": primary.as_ref().map_or(0, |p| p.failovers),
                })
            });
            let body = serde_json::json!({
                "status": word,
                "active_streams": state.admission.active(),
                "max_streams": state.admission.max(),
                "shared": state.store.health().as_str(),
                "redis": redis,
            });
            let mut res =
                warp::reply::with_status(warp::reply::json(&body), status).into_response();
            res.headers_mut()
                .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            res
        })
}
