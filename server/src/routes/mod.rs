//! All routes, joined in one place.

pub mod assets;
pub mod cors;
pub mod counter;
pub mod ops;
pub mod shared;

use crate::conn::ConnInfo;
use crate::error::{self, ApiError};
use crate::state::AppState;
use std::convert::Infallible;
use std::sync::Arc;
use warp::reply::Response;
use warp::{Filter, Reply};

/// Every route of the server, with errors already turned into JSON answers.
pub fn routes(
    state: Arc<AppState>,
) -> impl Filter<Extract = (Response,), Error = Infallible> + Clone {
    counter::route(Arc::clone(&state))
        .or(shared::stream(Arc::clone(&state)))
        .unify()
        .or(shared::increment(Arc::clone(&state)))
        .unify()
        .or(ops::metrics_if_on_main(Arc::clone(&state)))
        .unify()
        .or(ops::healthz(Arc::clone(&state)))
        .unify()
        .or(api_not_found())
        .unify()
        .or(assets::route(&state.config))
        .unify()
        .recover(error::recover)
        .unify()
}

/// `GET path` of a stream: its request parts in, its answer out. Once the path matched,
/// every answer comes from here (a rejection would fall through to the `/api/` 404).
fn stream_filter<F>(
    path: &'static str,
    state: Arc<AppState>,
    open: F,
) -> impl Filter<Extract = (Response,), Error = warp::Rejection> + Clone
where
    F: Fn(
            &http::HeaderMap,
            &[(String, String)],
            Option<Arc<ConnInfo>>,
            &AppState,
        ) -> Result<Response, ApiError>
        + Clone
        + Send
        + Sync
        + 'static,
{
    at(path)
        .and(warp::method())
        .and(warp::header::headers_cloned())
        .and(warp::query::<Vec<(String, String)>>())
        .and(warp::ext::optional::<Arc<ConnInfo>>())
        .and(with_state(state))
        .map(
            move |method: http::Method,
                  headers: http::HeaderMap,
                  query: Vec<(String, String)>,
                  conn: Option<Arc<ConnInfo>>,
                  state: Arc<AppState>| {
                stream_route(method, &headers, &state, |state| {
                    open(&headers, &query, conn, state)
                })
            },
        )
}

/// What every stream route does around opening its stream: CORS (checked first, and
/// applied to errors too, so an allowed page can read why it was refused), the
/// preflight, and 405 for methods other than GET.
fn stream_route(
    method: http::Method,
    headers: &http::HeaderMap,
    state: &AppState,
    open: impl FnOnce(&AppState) -> Result<Response, ApiError>,
) -> Response {
    use warp::Reply as _;
    let cors = match cors::check(&state.config, headers) {
        Ok(cors) => cors,
        Err(err) => return err.into_response(),
    };
    if method == http::Method::OPTIONS {
        return cors::preflight(&cors);
    }
    if method != http::Method::GET {
        return ApiError::MethodNotAllowed {
            allow: "GET, OPTIONS",
        }
        .into_response();
    }
    let mut res = open(state).unwrap_or_else(Reply::into_response);
    cors::apply(&cors, &mut res);
    res
}

/// Answers what must not reach the routes at all: a path and query over
/// [`crate::MAX_URI_BYTES`] gets 414.
pub fn gate<B>(req: &http::Request<B>) -> Option<Response> {
    let len = req.uri().path_and_query().map_or(0, |pq| pq.as_str().len());
    (len > crate::MAX_URI_BYTES).then(|| {
        error::json_error(
            http::StatusCode::URI_TOO_LONG,
            &::shared::ErrorBody::new(format!(
                "the path and query may not exceed {} bytes",
                crate::MAX_URI_BYTES
            )),
        )
    })
}

/// Anything else under `/api/`: a JSON 404, never the page.
fn api_not_found() -> impl Filter<Extract = (Response,), Error = warp::Rejection> + Clone {
    warp::path::full()
        .and_then(|full: warp::path::FullPath| async move {
            let api = ::shared::paths::API_PREFIX;
            if full.as_str().starts_with(api) || full.as_str() == api.trim_end_matches('/') {
                Ok(())
            } else {
                Err(warp::reject::not_found())
            }
        })
        .untuple_one()
        .and_then(|| async { Err::<Response, _>(warp::reject::custom(ApiError::NotFound)) })
}

/// Matches the request path `path` exactly (a trailing `/` too), from the contract's
/// constants in `shared::paths`, and consumes it.
fn at(path: &'static str) -> impl Filter<Extract = (), Error = warp::Rejection> + Clone {
    warp::path::full()
        .and_then(move |full: warp::path::FullPath| async move {
            let p = full.as_str();
            if p == path || p.strip_suffix('/') == Some(path) {
                Ok(())
            } else {
                Err(warp::reject::not_found())
            }
        })
        .untuple_one()
}

/// Passes a clone of the shared state into a handler.
fn with_state(
    state: Arc<AppState>,
) -> impl Filter<Extract = (Arc<AppState>,), Error = Infallible> + Clone {
    warp::any().map(move || Arc::clone(&state))
}

/// Answers 405 for every method but the ones given.
fn only(
    allow: &'static str,
    methods: &'static [http::Method],
) -> impl Filter<Extract = (), Error = warp::Rejection> + Clone {
    warp::method()
        .and_then(move |m: http::Method| async move {
            if methods.contains(&m) {
                Ok(())
            } else {
                Err(warp::reject::custom(ApiError::MethodNotAllowed { allow }))
            }
        })
        .untuple_one()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    #[tokio::test]
    async fn every_stream_route_answers_503_shutting_down_once_shutdown_began() {
        let state = AppState::new(Config::default());
        state.shutdown.begin();
        let filter = routes(Arc::clone(&state));
        for (method, path) in [
            ("GET", ::shared::paths::COUNTER),
            ("GET", ::shared::paths::SHARED),
            ("POST", ::shared::paths::SHARED_INCREMENT),
        ] {
            let res = warp::test::request()
                .method(method)
                .path(path)
                .reply(&filter)
                .await;
            assert_eq!(res.status(), 503, "{path}");
            assert!(res.headers().contains_key("retry-after"), "{path}");
            let body: ::shared::ErrorBody = serde_json::from_slice(res.body()).unwrap();
            assert_eq!(
                body.reason,
                Some(::shared::UnavailableReason::ShuttingDown),
                "{path}"
            );
        }
    }
}
