//! All routes, joined in one place.

pub mod assets;
pub mod cors;
pub mod counter;
pub mod credential;
pub mod events;
pub mod ops;
pub mod publish;
pub mod session;
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
        .or(events::route(Arc::clone(&state)))
        .unify()
        .or(publish::route(Arc::clone(&state)))
        .unify()
        .or(session::routes(Arc::clone(&state)))
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

/// What a stream route is given to open its stream.
pub struct StreamRequest {
    pub headers: http::HeaderMap,
    pub query: Vec<(String, String)>,
    pub conn: Option<Arc<ConnInfo>>,
}

impl StreamRequest {
    /// The query's pairs, for the contract's `from_pairs` parsers.
    pub fn pairs(&self) -> impl Iterator<Item = (&str, &str)> {
        self.query.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }
}

/// `GET path` of a stream, with what every stream route does around opening its
/// stream: CORS (checked first, and applied to errors too, so an allowed page can read
/// why it was refused), the preflight, 405 for methods other than GET, and 503 once
/// shutdown began. `open` validates the request, takes a permit ([`admit`]) and builds
/// the body. Once the path matched, every answer comes from here (a rejection would
/// fall through to the `/api/` 404).
fn stream_filter<F, Fut>(
    path: &'static str,
    state: Arc<AppState>,
    open: F,
) -> impl Filter<Extract = (Response,), Error = warp::Rejection> + Clone
where
    F: Fn(StreamRequest, Arc<AppState>) -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<Response, ApiError>> + Send,
{
    at(path)
        .and(warp::method())
        .and(warp::header::headers_cloned())
        .and(warp::query::<Vec<(String, String)>>())
        .and(warp::ext::optional::<Arc<ConnInfo>>())
        .and(with_state(state))
        .then(
            move |method: http::Method,
                  headers: http::HeaderMap,
                  query: Vec<(String, String)>,
                  conn: Option<Arc<ConnInfo>>,
                  state: Arc<AppState>| {
                let open = open.clone();
                async move {
                    let cors = match cors::check(&state.config, &headers) {
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
                    let res = if state.shutdown.is_set() {
                        Err(ApiError::ShuttingDown {
                            retry_after_secs: state.retry_after_secs(),
                        })
                    } else {
                        let request = StreamRequest {
                            headers,
                            query,
                            conn,
                        };
                        open(request, Arc::clone(&state)).await
                    };
                    let mut res = res.unwrap_or_else(Reply::into_response);
                    cors::apply(&cors, &mut res);
                    res
                }
            },
        )
}

/// What every write route (the increment, a publish, revoke, the session) does around
/// its own work: CORS and CSRF first (an `Origin` that is neither this server's nor a
/// `--cors-origin` is 403, and `refused` counts it), the preflight for `allow`, 405 for
/// a method not in `methods`, and CORS applied to whatever `handle` answers, errors
/// included, so an allowed page can read why it was refused.
async fn write_route(
    method: &http::Method,
    headers: &http::HeaderMap,
    state: &AppState,
    allow: &'static str,
    methods: &[http::Method],
    refused: impl FnOnce(),
    handle: impl std::future::Future<Output = Result<Response, ApiError>>,
) -> Response {
    let cors = match cors::check(&state.config, headers) {
        Ok(cors) => cors,
        Err(err) => {
            refused();
            return err.into_response();
        }
    };
    if method == http::Method::OPTIONS {
        return cors::preflight_for(&cors, allow);
    }
    let mut res = if methods.contains(method) {
        handle.await.unwrap_or_else(Reply::into_response)
    } else {
        ApiError::MethodNotAllowed { allow }.into_response()
    };
    cors::apply(&cors, &mut res);
    res
}

/// A place among `--max-streams` for a stream of `kind`, or 503 `capacity`.
fn admit(
    state: &AppState,
    kind: &'static str,
    conn: Option<Arc<ConnInfo>>,
) -> Result<crate::sse::StreamPermit, ApiError> {
    state
        .admission
        .try_open(kind, conn)
        .ok_or(ApiError::TooManyStreams {
            retry_after_secs: state.retry_after_secs(),
        })
}

/// The one `Last-Event-ID` header, as text, if any: repeated or not UTF-8 is refused.
fn last_event_id_text(headers: &http::HeaderMap) -> Result<Option<&str>, ::shared::ParamError> {
    let mut values = headers
        .get_all(::shared::events::LAST_EVENT_ID_HEADER)
        .iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    let param = "Last-Event-ID";
    if values.next().is_some() {
        return Err(::shared::ParamError::Repeated {
            param: param.to_owned(),
        });
    }
    value
        .to_str()
        .map(Some)
        .map_err(|_| ::shared::ParamError::Malformed {
            param: param.to_owned(),
            value: String::from_utf8_lossy(value.as_bytes()).into_owned(),
            what: "printable ASCII",
        })
}

/// Answers what must not reach the routes at all: a path and query over
/// [`crate::config::MAX_URI_BYTES`] gets 414.
pub fn gate<B>(req: &http::Request<B>) -> Option<Response> {
    let len = req.uri().path_and_query().map_or(0, |pq| pq.as_str().len());
    (len > crate::config::MAX_URI_BYTES).then(|| {
        error::json_error(
            http::StatusCode::URI_TOO_LONG,
            &::shared::ErrorBody::new(format!(
                "the path and query may not exceed {} bytes",
                crate::config::MAX_URI_BYTES
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
            ("GET", "/api/events?channel=a"),
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
