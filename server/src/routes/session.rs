//! `POST /api/revoke`, and the demo sign-in (`--demo-login`): `POST /api/session`,
//! `POST /api/session/refresh`, `GET /api/session`, `DELETE /api/session`.
//!
//! A signed-in browser holds its token in the cookie `sse_token`: `HttpOnly` (no script
//! reads it), `SameSite=Strict`, `Path=/api/`, `Secure` over HTTPS, `Max-Age` the token's
//! life. Every write here passes the CSRF check of the increment (an `Origin` that is
//! neither this server's nor a `--cors-origin` is `403`).

use super::{at, credential, with_state};
use crate::auth::{Claims, Grants};
use crate::error::ApiError;
use crate::state::AppState;
use bytes::Buf;
use futures_util::{Stream, StreamExt as _};
use http::{header, HeaderMap, HeaderValue, Method};
use shared::channels::{
    valid_user_name, RevokeRequest, Revoked, Session, SessionRequest, TOKEN_COOKIE,
};
use shared::Pattern;
use std::sync::Arc;
use warp::reply::Response;
use warp::{Filter, Reply};

/// The largest body these routes read.
const MAX_BODY: u64 = 1024;

/// How long a session revoked by `POST /api/revoke` stays refused when no token of it
/// was seen here, so that its tokens' `exp` is unknown: longer than any demo session,
/// and bounded. An instance that saw one keeps the revocation until that token's `exp`
/// (and the leeway) if that is later (`access::Revocations::revoke`).
const REVOKED_FOR_SECS: u64 = 24 * 3600;

type Query = Vec<(String, String)>;

/// The routes of this module.
pub fn routes(
    state: Arc<AppState>,
) -> impl Filter<Extract = (Response,), Error = warp::Rejection> + Clone {
    let common = || {
        warp::method()
            .and(warp::header::headers_cloned())
            .and(warp::query::<Query>())
            .and(warp::body::stream())
            .and(with_state(Arc::clone(&state)))
    };
    at(shared::paths::REVOKE)
        .and(common())
        .then(|m, h, q, b, s| handle(m, h, q, b, s, Route::Revoke))
        .or(at(shared::paths::SESSION_REFRESH)
            .and(common())
            .then(|m, h, q, b, s| handle(m, h, q, b, s, Route::Refresh)))
        .unify()
        .or(at(shared::paths::SESSION)
            .and(common())
            .then(|m, h, q, b, s| handle(m, h, q, b, s, Route::Session)))
        .unify()
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Route {
    Revoke,
    Refresh,
    Session,
}

async fn handle<S, B>(
    method: Method,
    headers: HeaderMap,
    query: Query,
    body: S,
    state: Arc<AppState>,
    route: Route,
) -> Response
where
    S: Stream<Item = Result<B, warp::Error>> + Unpin,
    B: Buf,
{
    let (allow, methods): (&'static str, &[Method]) = match route {
        Route::Revoke | Route::Refresh => ("POST, OPTIONS", &[Method::POST]),
        Route::Session => (
            "GET, POST, DELETE, OPTIONS",
            &[Method::GET, Method::POST, Method::DELETE],
        ),
    };
    let handle = async {
        let mut res = answer(method.clone(), &headers, &query, body, &state, route, allow).await?;
        res.headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        Ok(res)
    };
    super::write_route(&method, &headers, &state, allow, methods, || {}, handle).await
}

async fn answer<S, B>(
    method: Method,
    headers: &HeaderMap,
    query: &Query,
    body: S,
    state: &AppState,
    route: Route,
    allow: &'static str,
) -> Result<Response, ApiError>
where
    S: Stream<Item = Result<B, warp::Error>> + Unpin,
    B: Buf,
{
    credential::refuse_in_query(query.iter().map(|(k, v)| (k.as_str(), v.as_str())))?;
    if route != Route::Revoke && !state.config.demo_login {
        return Err(ApiError::NotFound);
    }
    let wrong = || Err(ApiError::MethodNotAllowed { allow });
    match (route, method) {
        (Route::Revoke, Method::POST) => {
            let claims = credential::required(state, headers)?;
            if !claims.sse.revoke {
                return Err(ApiError::Forbidden(
                    "the token does not grant revoking (\"sse\": {\"revoke\": true})".to_owned(),
                ));
            }
            let request: RevokeRequest = json_body(headers, body).await?;
            // Until the session's tokens expire: the last second one seen here is
            // accepted (its `exp` and the leeway).
            let now = credential::now_secs();
            let until = state
                .revocations
                .accepted_until(&request.sid, now)
                .unwrap_or(now + REVOKED_FOR_SECS);
            let ended = revoke(state, &request.sid, until).await?;
            Ok(warp::reply::json(&Revoked { ended }).into_response())
        }
        (Route::Session, Method::POST) => {
            let request: SessionRequest = json_body(headers, body).await?;
            if !valid_user_name(&request.name) {
                return Err(ApiError::BadBody(
                    "a name is 1 to 32 characters of a-z 0-9 _ -".to_owned(),
                ));
            }
            let sid = crate::auth::random_hex(16);
            sign_in(state, headers, &request.name, sid)
        }
        (Route::Refresh, Method::POST) => {
            let claims = credential::required(state, headers)?;
            let (Some(name), Some(sid)) = (claims.sub.clone(), claims.sid.clone()) else {
                return Err(ApiError::Forbidden("not a demo session's token".to_owned()));
            };
            sign_in(state, headers, &name, sid)
        }
        (Route::Session, Method::GET) => {
            let claims = credential::required(state, headers)?;
            Ok(warp::reply::json(&Session {
                name: claims.sub.unwrap_or_default(),
                expires_at: claims.exp,
            })
            .into_response())
        }
        (Route::Session, Method::DELETE) => {
            // Signing out: the cookie is cleared whatever it held, and a valid one's
            // session is revoked, so its other tabs' streams end too.
            let mut res = http::StatusCode::NO_CONTENT.into_response();
            if let Some(token) = credential::cookie_token(headers) {
                if let Ok(claims) = credential::verify(state, &token) {
                    if let Some(sid) = &claims.sid {
                        let until = claims.exp.saturating_add(crate::auth::LEEWAY_SECS);
                        revoke(state, sid, until).await?;
                    }
                }
            }
            set_cookie(&mut res, state, headers, String::new(), 0);
            Ok(res)
        }
        _ => wrong(),
    }
}

/// Revokes `sid` here and, through the store, on every instance: streams ended here.
async fn revoke(state: &AppState, sid: &str, until_secs: u64) -> Result<u64, ApiError> {
    let now = credential::now_secs();
    let ended = state.revocations.revoke(sid, until_secs, now);
    state
        .store
        .revoke(sid, until_secs)
        .await
        .map_err(|_| ApiError::StoreUnavailable {
            retry_after_secs: state.retry_after_secs(),
        })?;
    tracing::info!(ended, "session revoked");
    Ok(ended)
}

/// A token for `name` in session `sid`, set as the cookie: subscribe `rooms/*` and
/// `users/<name>`, publish `rooms/*` and `users/*`.
fn sign_in(
    state: &AppState,
    headers: &HeaderMap,
    name: &str,
    sid: String,
) -> Result<Response, ApiError> {
    let verifier = state
        .config
        .auth
        .as_ref()
        .ok_or_else(|| ApiError::Forbidden("the demo sign-in has no key".to_owned()))?;
    let ttl = state.config.demo_session_ttl.as_secs();
    let now = credential::now_secs();
    let pattern = |p: &str| Pattern::new(p).map_err(|e| ApiError::BadBody(e.to_string()));
    let claims = Claims {
        sub: Some(name.to_owned()),
        exp: now + ttl,
        nbf: None,
        iat: Some(now),
        sid: Some(sid),
        aud: verifier.rules().audience.clone(),
        iss: verifier.rules().issuer.clone(),
        sse: Grants {
            publish: vec![pattern("rooms/*")?, pattern("users/*")?],
            subscribe: vec![pattern("rooms/*")?, pattern(&format!("users/{name}"))?],
            revoke: false,
        },
    };
    let token = verifier
        .sign(&claims)
        .map_err(|e| ApiError::Forbidden(format!("the demo sign-in cannot sign: {e}")))?;
    let mut res = warp::reply::json(&Session {
        name: name.to_owned(),
        expires_at: claims.exp,
    })
    .into_response();
    set_cookie(&mut res, state, headers, token, ttl);
    Ok(res)
}

/// `Set-Cookie: sse_token=...; HttpOnly; SameSite=Strict; Path=/api/; Max-Age=...`,
/// `Secure` when the page is served over HTTPS (here, or by a trusted proxy that says
/// so in `X-Forwarded-Proto`).
fn set_cookie(
    res: &mut Response,
    state: &AppState,
    headers: &HeaderMap,
    token: String,
    max_age: u64,
) {
    let https = state.config.tls.is_some()
        || headers
            .get("x-forwarded-proto")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|p| p.eq_ignore_ascii_case("https"))
            && !state.config.trusted_proxies.is_empty();
    let cookie = cookie::Cookie::build((TOKEN_COOKIE, token))
        .http_only(true)
        .same_site(cookie::SameSite::Strict)
        .path(shared::paths::API_PREFIX)
        .secure(https)
        .max_age(cookie::time::Duration::seconds(max_age as i64))
        .build();
    if let Ok(value) = HeaderValue::from_str(&cookie.to_string()) {
        res.headers_mut().append(header::SET_COOKIE, value);
    }
}

/// A JSON body of at most [`MAX_BODY`] bytes.
async fn json_body<T, S, B>(headers: &HeaderMap, mut body: S) -> Result<T, ApiError>
where
    T: serde::de::DeserializeOwned,
    S: Stream<Item = Result<B, warp::Error>> + Unpin,
    B: Buf,
{
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|t| t.trim().eq_ignore_ascii_case("application/json"));
    if !is_json {
        return Err(ApiError::UnsupportedMediaType);
    }
    let mut bytes = Vec::new();
    while let Some(chunk) = body.next().await {
        let mut chunk =
            chunk.map_err(|_| ApiError::BadBody("the body could not be read".into()))?;
        if (bytes.len() + chunk.remaining()) as u64 > MAX_BODY {
            return Err(ApiError::EventTooLarge { max: MAX_BODY });
        }
        while chunk.has_remaining() {
            let part = chunk.chunk();
            bytes.extend_from_slice(part);
            let n = part.len();
            chunk.advance(n);
        }
    }
    serde_json::from_slice(&bytes)
        .map_err(|e| ApiError::BadBody(format!("not the expected JSON: {e}")))
}
