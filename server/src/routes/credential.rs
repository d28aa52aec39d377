//! Where a route finds a token, and what a valid one is: `Authorization: Bearer`
//! (backends, non-browser clients), else the cookie `sse_token` (browsers, whose
//! `EventSource` cannot send headers). Never the URL: a query parameter named like a
//! credential is refused (`400`), so no token is ever written to an access log or a
//! browser's history.

use crate::auth::Claims;
use crate::error::ApiError;
use crate::state::AppState;
use http::{header, HeaderMap};
use shared::channels::{CREDENTIAL_PARAMS, TOKEN_COOKIE};
use shared::ParamError;

/// A token the request carries, and where.
pub struct Presented {
    pub token: String,
    pub from_cookie: bool,
}

/// `400` for a credential in the query (`token`, `access_token`, `authorization`).
pub fn refuse_in_query<'a>(
    pairs: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> Result<(), ApiError> {
    for (key, _) in pairs {
        if CREDENTIAL_PARAMS
            .iter()
            .any(|p| p.eq_ignore_ascii_case(key))
        {
            return Err(ParamError::Malformed {
                param: key.to_owned(),
                value: String::new(),
                what: "absent: a credential never travels in a URL, where logs and history \
                       keep it; send Authorization: Bearer, or the sse_token cookie",
            }
            .into());
        }
    }
    Ok(())
}

/// The request's token: the bearer token, else the `sse_token` cookie.
pub fn presented(headers: &HeaderMap) -> Option<Presented> {
    if let Some(token) = super::publish::bearer(headers) {
        return Some(Presented {
            token: token.to_owned(),
            from_cookie: false,
        });
    }
    cookie_token(headers).map(|token| Presented {
        token,
        from_cookie: true,
    })
}

/// The value of the `sse_token` cookie, parsed by the `cookie` crate.
pub fn cookie_token(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| cookie::Cookie::split_parse(v.to_owned()))
        .filter_map(Result::ok)
        .find(|c| c.name() == TOKEN_COOKIE)
        .map(|c| c.value().to_owned())
        .filter(|v| !v.is_empty())
}

/// The claims of `token`: `401` (`invalid_token`) when it is not valid, has expired or
/// belongs to a revoked session; `403` when no key is configured.
pub fn verify(state: &AppState, token: &str) -> Result<Claims, ApiError> {
    let Some(verifier) = state.config.auth.as_ref() else {
        return Err(ApiError::Forbidden(
            "tokens are off: the server has no --jwt-secret-file or --jwt-public-key-file"
                .to_owned(),
        ));
    };
    let claims = verifier
        .verify(token)
        .map_err(|err| ApiError::Unauthorized {
            error: format!("the token is not valid: {err}"),
            invalid_token: true,
        })?;
    if let Some(sid) = &claims.sid {
        // Accepted until the leeway after `exp`: a revocation refuses it that long.
        let accepted_until = claims.exp.saturating_add(crate::auth::LEEWAY_SECS);
        if state.revocations.presented(sid, accepted_until, now_secs()) {
            return Err(ApiError::Unauthorized {
                error: "the token's session was revoked".to_owned(),
                invalid_token: true,
            });
        }
    }
    Ok(claims)
}

/// The claims of the request's token (bearer or cookie): `401` without one.
pub fn required(state: &AppState, headers: &HeaderMap) -> Result<Claims, ApiError> {
    let presented = presented(headers).ok_or_else(|| ApiError::Unauthorized {
        error: "a token is required: Authorization: Bearer <token>, or the sse_token cookie"
            .to_owned(),
        invalid_token: false,
    })?;
    verify(state, &presented.token)
}

/// The wall clock in whole seconds since the UNIX epoch.
pub fn now_secs() -> u64 {
    crate::unix_micros() / 1_000_000
}
