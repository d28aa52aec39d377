//! All routes, joined in one place.

pub mod assets;
pub mod cors;
pub mod counter;
pub mod ops;

use crate::error::{self, ApiError};
use crate::state::AppState;
use std::convert::Infallible;
use std::sync::Arc;
use warp::reply::Response;
use warp::Filter;

/// Every route of the server, with errors already turned into JSON answers.
pub fn routes(
    state: Arc<AppState>,
) -> impl Filter<Extract = (Response,), Error = Infallible> + Clone {
    counter::route(Arc::clone(&state))
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

/// Answers what must not reach the routes at all: a path and query over
/// [`crate::MAX_URI_BYTES`] gets 414.
pub fn gate<B>(req: &http::Request<B>) -> Option<Response> {
    let len = req.uri().path_and_query().map_or(0, |pq| pq.as_str().len());
    (len > crate::MAX_URI_BYTES).then(|| {
        error::json_error(
            http::StatusCode::URI_TOO_LONG,
            &shared::ErrorBody::new(format!(
                "the path and query may not exceed {} bytes",
                crate::MAX_URI_BYTES
            )),
        )
    })
}

/// Anything else under `/api/`: a JSON 404, never the page.
fn api_not_found() -> impl Filter<Extract = (Response,), Error = warp::Rejection> + Clone {
    warp::path("api")
        .and_then(|| async { Err::<Response, _>(warp::reject::custom(ApiError::NotFound)) })
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
