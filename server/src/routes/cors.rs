//! CORS for the API: headers only for the configured origins; other cross-origin
//! requests are refused with 403, so no stream is held for a page that may not read it.

use crate::config::Config;
use crate::error::ApiError;
use http::{header, HeaderMap, HeaderValue, StatusCode};
use warp::reply::Response;
use warp::Reply;

/// What CORS makes of one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cors {
    /// No `Origin`, or the server's own: nothing to add.
    SameOrigin,
    /// A configured origin: echo it (or `*` when any origin is configured).
    Allowed(HeaderValue),
}

/// Checks the request's `Origin` against `--cors-origin`.
pub fn check(config: &Config, headers: &HeaderMap) -> Result<Cors, ApiError> {
    let Some(origin) = headers.get(header::ORIGIN) else {
        return Ok(Cors::SameOrigin);
    };
    let Ok(origin_str) = origin.to_str() else {
        return Err(ApiError::OriginRefused);
    };
    if config.cors_origins.iter().any(|o| o == "*") {
        return Ok(Cors::Allowed(HeaderValue::from_static("*")));
    }
    if config
        .cors_origins
        .iter()
        .any(|o| o.eq_ignore_ascii_case(origin_str))
    {
        return Ok(Cors::Allowed(origin.clone()));
    }
    if is_same_origin(origin_str, headers) {
        return Ok(Cors::SameOrigin);
    }
    Err(ApiError::OriginRefused)
}

/// An `Origin` of `http(s)://<Host>`: a page of this very server.
fn is_same_origin(origin: &str, headers: &HeaderMap) -> bool {
    let Some(host) = headers.get(header::HOST).and_then(|h| h.to_str().ok()) else {
        return false;
    };
    let rest = origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"));
    rest.is_some_and(|r| r.eq_ignore_ascii_case(host))
}

/// Adds the response headers an allowed cross-origin request needs.
pub fn apply(cors: &Cors, res: &mut Response) {
    if let Cors::Allowed(origin) = cors {
        let headers = res.headers_mut();
        headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
        headers.append(header::VARY, HeaderValue::from_static("Origin"));
        // A named origin may send its cookies (`withCredentials`); `*` stays
        // credential-free, as the standard requires.
        if origin.as_bytes() != b"*" {
            headers.insert(
                header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
                HeaderValue::from_static("true"),
            );
        }
    }
}

/// The answer to a preflight `OPTIONS` request from an allowed origin, for a stream.
pub fn preflight(cors: &Cors) -> Response {
    preflight_for(cors, "GET")
}

/// The answer to a preflight `OPTIONS` request from an allowed origin, for `methods`.
pub fn preflight_for(cors: &Cors, methods: &'static str) -> Response {
    let mut res = StatusCode::NO_CONTENT.into_response();
    apply(cors, &mut res);
    let headers = res.headers_mut();
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static(methods),
    );
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static("last-event-id, cache-control, content-type, authorization"),
    );
    headers.insert(
        header::ACCESS_CONTROL_MAX_AGE,
        HeaderValue::from_static("600"),
    );
    res
}
