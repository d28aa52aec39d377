//! The page: the trunk-built files of `--static-dir`, with cache and security headers.

use crate::error::ApiError;
use crate::Config;
use http::{header, HeaderValue, Method};
use std::path::Path;
use warp::filters::fs::File;
use warp::reply::Response;
use warp::{Filter, Reply};

/// GET / and every file of the built page (HEAD too).
pub fn route(
    config: &Config,
) -> impl Filter<Extract = (Response,), Error = warp::Rejection> + Clone {
    let dir = config.static_dir.clone();
    let files = warp::fs::dir(dir)
        .or_else(|rejection: warp::Rejection| async move {
            // warp reports a name the OS refuses (a NUL byte, too long) with its private
            // error types, which would end as 500s: for a client it is simply not here.
            if rejection.is_not_found()
                || rejection
                    .find::<warp::reject::MethodNotAllowed>()
                    .is_some()
            {
                Err(rejection)
            } else {
                Err(warp::reject::custom(ApiError::NotFound))
            }
        })
        .and(super::only("GET, HEAD", &[Method::GET, Method::HEAD]))
        .map(|file: File| {
            let cache = cache_control(file.path());
            let mut res = file.into_response();
            let headers = res.headers_mut();
            headers.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
            security_headers(headers);
            res
        });
    // `/` without a built page: say how to build it rather than a bare 404.
    let not_built = warp::path::end()
        .and_then(|| async { Err::<Response, _>(warp::reject::custom(ApiError::PageNotBuilt)) });
    files.or(not_built).unify()
}

/// `index.html` must be revalidated on every load so that a new build is picked up; the
/// hashed files trunk writes (`name-<hash>.js`, `name-<hash>_bg.wasm`) never change.
fn cache_control(path: &Path) -> &'static str {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    if is_hashed(name) {
        "public, max-age=31536000, immutable"
    } else {
        "no-cache"
    }
}

/// True for trunk's content-hashed names: a `-` then 16 hex digits before the suffix.
fn is_hashed(name: &str) -> bool {
    let stem = name.split('.').next().unwrap_or("");
    let stem = stem.strip_suffix("_bg").unwrap_or(stem);
    match stem.rsplit_once('-') {
        Some((_, hash)) => hash.len() == 16 && hash.bytes().all(|b| b.is_ascii_hexdigit()),
        None => false,
    }
}

/// Headers every file of the page carries.
fn security_headers(headers: &mut http::HeaderMap) {
    headers.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    headers.insert("referrer-policy", HeaderValue::from_static("no-referrer"));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_hashed_names_are_cached_long() {
        assert!(is_hashed("web-1a2b3c4d5e6f7a8b.js"));
        assert!(is_hashed("web-1a2b3c4d5e6f7a8b_bg.wasm"));
        assert!(!is_hashed("index.html"));
        assert!(!is_hashed("web-123.js"));
        assert!(!is_hashed("my-style.css"));
    }
}
