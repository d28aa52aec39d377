//! Every error answer of the server: one type, one `recover`, one JSON body shape.

use http::{header, HeaderValue, StatusCode};
use shared::{ErrorBody, ParamError, UnavailableReason};
use std::convert::Infallible;
use warp::reply::Response;
use warp::{Rejection, Reply};

/// An error the routes answer with; each variant knows its status and body.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ApiError {
    #[error(transparent)]
    Param(#[from] ParamError),
    #[error("not found")]
    NotFound,
    #[error("method not allowed")]
    MethodNotAllowed { allow: &'static str },
    #[error("too many open streams, try again later")]
    TooManyStreams { retry_after_secs: u64 },
    #[error("the server is shutting down")]
    ShuttingDown { retry_after_secs: u64 },
    #[error("the store is unavailable, try again later")]
    StoreUnavailable { retry_after_secs: u64 },
    #[error("too many publishes from this publisher, try again in {retry_after_secs} s")]
    PublishRateLimited { retry_after_secs: u64 },
    /// 401 with `WWW-Authenticate: Bearer` (and `error="invalid_token"` when a token
    /// was sent).
    #[error("{error}")]
    Unauthorized { error: String, invalid_token: bool },
    #[error("{0}")]
    Forbidden(String),
    /// A subscription refused for `channel`: 401 (no or a bad token) or 403.
    #[error("{error}")]
    ChannelRefused {
        channel: String,
        error: String,
        unauthorized: bool,
        invalid_token: bool,
    },
    #[error("{0}")]
    BadBody(String),
    #[error("the body must be application/json")]
    UnsupportedMediaType,
    #[error("too many increments from this address, try again in {retry_after_secs} s")]
    RateLimited { retry_after_secs: u64 },
    #[error("this request takes no body")]
    BodyNotAllowed,
    #[error("the request body may not exceed {max} bytes (and this one takes none)")]
    BodyTooLarge { max: u64 },
    #[error("a publish body may not exceed {max} bytes (--max-event-bytes)")]
    EventTooLarge { max: u64 },
    #[error("origin not allowed")]
    OriginRefused,
    #[error("the page has not been built: run `cargo xtask demo`, or `trunk build --release` and point --static-dir at web/dist")]
    PageNotBuilt,
}

impl warp::reject::Reject for ApiError {}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::Param(_) | ApiError::BodyNotAllowed | ApiError::BadBody(_) => {
                StatusCode::BAD_REQUEST
            }
            ApiError::Unauthorized { .. } => StatusCode::UNAUTHORIZED,
            ApiError::ChannelRefused { unauthorized, .. } => {
                if *unauthorized {
                    StatusCode::UNAUTHORIZED
                } else {
                    StatusCode::FORBIDDEN
                }
            }
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::PublishRateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::BodyTooLarge { .. } | ApiError::EventTooLarge { .. } => {
                StatusCode::PAYLOAD_TOO_LARGE
            }
            ApiError::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::NotFound | ApiError::PageNotBuilt => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::TooManyStreams { .. }
            | ApiError::ShuttingDown { .. }
            | ApiError::StoreUnavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::OriginRefused => StatusCode::FORBIDDEN,
        }
    }

    fn body(&self) -> ErrorBody {
        match self {
            ApiError::Param(err) => ErrorBody::from(err),
            ApiError::TooManyStreams { .. } => {
                ErrorBody::unavailable(self.to_string(), UnavailableReason::Capacity)
            }
            ApiError::ShuttingDown { .. } => {
                ErrorBody::unavailable(self.to_string(), UnavailableReason::ShuttingDown)
            }
            ApiError::StoreUnavailable { .. } => {
                ErrorBody::unavailable(self.to_string(), UnavailableReason::StoreUnavailable)
            }
            ApiError::ChannelRefused { channel, .. } => ErrorBody {
                param: Some(shared::params::CHANNEL.to_owned()),
                value: Some(channel.chars().take(ErrorBody::MAX_VALUE_LEN).collect()),
                ..ErrorBody::new(self.to_string())
            },
            other => ErrorBody::new(other.to_string()),
        }
    }
}

impl Reply for ApiError {
    fn into_response(self) -> Response {
        let mut res = json_error(self.status(), &self.body());
        let headers = res.headers_mut();
        match self {
            ApiError::MethodNotAllowed { allow } => {
                headers.insert(header::ALLOW, HeaderValue::from_static(allow));
            }
            ApiError::TooManyStreams { retry_after_secs }
            | ApiError::ShuttingDown { retry_after_secs }
            | ApiError::StoreUnavailable { retry_after_secs }
            | ApiError::RateLimited { retry_after_secs }
            | ApiError::PublishRateLimited { retry_after_secs } => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from(retry_after_secs));
            }
            ApiError::ChannelRefused {
                unauthorized: true,
                invalid_token,
                ..
            }
            | ApiError::Unauthorized { invalid_token, .. } => {
                headers.insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static(if invalid_token {
                        "Bearer error=\"invalid_token\""
                    } else {
                        "Bearer"
                    }),
                );
            }
            _ => {}
        }
        res
    }
}

/// A JSON error response; errors are never cached.
pub fn json_error(status: StatusCode, body: &ErrorBody) -> Response {
    let mut res = warp::reply::with_status(warp::reply::json(body), status).into_response();
    res.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    res
}

/// Turns every rejection into a JSON error. A 5xx body says nothing of the cause; the
/// log has it.
pub async fn recover(err: Rejection) -> Result<Response, Infallible> {
    if let Some(api) = err.find::<ApiError>() {
        return Ok(api.clone().into_response());
    }
    if err.is_not_found() {
        return Ok(ApiError::NotFound.into_response());
    }
    if err.find::<warp::reject::MethodNotAllowed>().is_some() {
        return Ok(ApiError::MethodNotAllowed { allow: "GET" }.into_response());
    }
    if err.find::<warp::reject::PayloadTooLarge>().is_some() {
        return Ok(json_error(
            StatusCode::PAYLOAD_TOO_LARGE,
            &ErrorBody::new("request body too large"),
        ));
    }
    if err.find::<warp::reject::InvalidQuery>().is_some() {
        return Ok(json_error(
            StatusCode::BAD_REQUEST,
            &ErrorBody::new("the query string is not valid"),
        ));
    }
    if let Some(e) = err.find::<warp::reject::InvalidHeader>() {
        return Ok(json_error(
            StatusCode::BAD_REQUEST,
            &ErrorBody::new(e.to_string()),
        ));
    }
    tracing::error!(rejection = ?err, "unhandled rejection");
    Ok(json_error(
        StatusCode::INTERNAL_SERVER_ERROR,
        &ErrorBody::new("internal server error"),
    ))
}
