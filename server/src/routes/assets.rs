//! The page: the trunk-built files of `--static-dir`, with cache and security headers.

use crate::config::Config;
use crate::error::ApiError;
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
                || rejection.find::<warp::reject::MethodNotAllowed>().is_some()
            {
                Err(rejection)
            } else {
                Err(warp::reject::custom(ApiError::NotFound))
            }
        })
        .and(super::only("GET, HEAD", &[Method::GET, Method::HEAD]))
        .and_then(|file: File| async move {
            let cache = cache_control(file.path());
            let csp = if file.path().extension().is_some_and(|e| e == "html") {
                // Small, and read once per page load: hashing it here keeps the policy
                // exact for whatever build is on disk, with no restart after a rebuild.
                let html = tokio::fs::read(file.path()).await.unwrap_or_default();
                Some(content_security_policy(&String::from_utf8_lossy(&html)))
            } else {
                None
            };
            let mut res = file.into_response();
            let headers = res.headers_mut();
            headers.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
            security_headers(headers);
            if let Some(csp) = csp.and_then(|c| HeaderValue::try_from(c).ok()) {
                headers.insert(header::CONTENT_SECURITY_POLICY, csp);
            }
            Ok::<_, warp::Rejection>(res)
        });
    // `/` without a built page: say how to build it rather than a bare 404.
    let not_built = super::at(shared::paths::INDEX)
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

/// True for trunk's content-hashed names: a `-` then the hash's hex digits before the
/// suffix. The hash is a u64 written without leading zeros, so 16 digits or, when it
/// starts with zeros, fewer (the unit test below has a 15-digit one); 10 or more keeps
/// short words out.
fn is_hashed(name: &str) -> bool {
    let stem = name.split('.').next().unwrap_or("");
    let stem = stem.strip_suffix("_bg").unwrap_or(stem);
    match stem.rsplit_once('-') {
        Some((_, hash)) => {
            (10..=16).contains(&hash.len()) && hash.bytes().all(|b| b.is_ascii_hexdigit())
        }
        None => false,
    }
}

/// The page's Content-Security-Policy: its own origin only, WebAssembly compilation
/// (`'wasm-unsafe-eval'`), and the exact inline scripts and styles the page has (trunk
/// writes an inline module that loads the wasm), by hash. Nothing else runs.
pub fn content_security_policy(html: &str) -> String {
    let scripts = inline_hashes(html, "script");
    let styles = inline_hashes(html, "style");
    format!(
        "default-src 'none'; script-src 'self' 'wasm-unsafe-eval'{scripts}; \
         style-src 'self'{styles}; connect-src 'self'; img-src 'self' data:; \
         font-src 'self'; manifest-src 'self'; base-uri 'none'; form-action 'none'; \
         frame-ancestors 'none'"
    )
}

/// ` 'sha256-…'` for the content of every inline `<tag>` (one without `src`).
fn inline_hashes(html: &str, tag: &str) -> String {
    use base64::Engine as _;
    use sha2::Digest as _;
    let lower = html.to_ascii_lowercase();
    let (open, close) = (format!("<{tag}"), format!("</{tag}>"));
    let mut out = String::new();
    let mut at = 0;
    while let Some(start) = lower[at..].find(&open).map(|i| at + i) {
        let Some(tag_end) = lower[start..].find('>').map(|i| start + i + 1) else {
            break;
        };
        let Some(end) = lower[tag_end..].find(&close).map(|i| tag_end + i) else {
            break;
        };
        if !lower[start..tag_end].contains(" src=") {
            let digest = sha2::Sha256::digest(&html.as_bytes()[tag_end..end]);
            let b64 = base64::engine::general_purpose::STANDARD.encode(digest);
            out.push_str(&format!(" 'sha256-{b64}'"));
        }
        at = end + close.len();
    }
    out
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
        assert!(
            is_hashed("web-a3683c037a122ae.js"),
            "15 digits: a leading zero dropped"
        );
        assert!(!is_hashed("index.html"));
        assert!(!is_hashed("web-123.js"));
        assert!(!is_hashed("my-style.css"));
    }

    #[test]
    fn csp_names_each_inline_script_by_hash_and_nothing_else() {
        let html = r#"<html><head><script type="module">import init from '/a.js';</script>
            <script src="/x.js"></script><STYLE>p{}</STYLE></head></html>"#;
        let csp = content_security_policy(html);
        // sha256 of the inline module's text, base64.
        use base64::Engine as _;
        use sha2::Digest as _;
        let want = base64::engine::general_purpose::STANDARD
            .encode(sha2::Sha256::digest(b"import init from '/a.js';"));
        assert!(
            csp.contains(&format!(
                "script-src 'self' 'wasm-unsafe-eval' 'sha256-{want}';"
            )),
            "{csp}"
        );
        assert_eq!(csp.matches("'sha256-").count(), 2, "{csp}");
        assert!(csp.starts_with("default-src 'none';"));
        assert!(!csp.contains("unsafe-inline"));
    }
}
