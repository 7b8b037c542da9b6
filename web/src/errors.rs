//! Every refusal as a JSON body `{"error": "..."}` with the right status.

use std::convert::Infallible;

use serde::Serialize;
use warp::http::StatusCode;
use warp::reject::{
    InvalidQuery, LengthRequired, MethodNotAllowed, PayloadTooLarge, Reject, UnsupportedMediaType,
};
use warp::{Rejection, Reply};

/// A request refused by one of our handlers, with the status and the reason to show.
#[derive(Debug)]
pub struct ApiError {
    /// The HTTP status.
    pub status: StatusCode,
    /// What was wrong, for the client.
    pub message: String,
}

impl Reject for ApiError {}

/// Rejects with `status` and `message`.
pub fn refuse(status: StatusCode, message: impl Into<String>) -> Rejection {
    warp::reject::custom(ApiError {
        status,
        message: message.into(),
    })
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: &'a str,
}

/// A JSON error reply.
pub fn error_reply(status: StatusCode, message: &str) -> warp::reply::Response {
    warp::reply::with_status(warp::reply::json(&ErrorBody { error: message }), status)
        .into_response()
}

/// Turns every rejection (ours and warp's) into a JSON error reply.
pub async fn recover(rejection: Rejection) -> Result<warp::reply::Response, Infallible> {
    let (status, message) = if let Some(error) = rejection.find::<ApiError>() {
        (error.status, error.message.clone())
    } else if rejection
        .find::<warp::filters::cors::CorsForbidden>()
        .is_some()
    {
        (
            StatusCode::FORBIDDEN,
            "this origin may not call the API (see --cors-origin)".to_string(),
        )
    } else if rejection.is_not_found() {
        (StatusCode::NOT_FOUND, "no such route".to_string())
    } else if rejection.find::<PayloadTooLarge>().is_some() {
        (
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "the body is larger than the limit of {} bytes",
                crate::predict::MAX_BODY_BYTES
            ),
        )
    } else if rejection.find::<LengthRequired>().is_some() {
        (
            StatusCode::LENGTH_REQUIRED,
            "a Content-Length header is required".to_string(),
        )
    } else if rejection.find::<UnsupportedMediaType>().is_some() {
        (
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "the body must be application/json".to_string(),
        )
    } else if rejection.find::<MethodNotAllowed>().is_some() {
        (
            StatusCode::METHOD_NOT_ALLOWED,
            "method not allowed on this route".to_string(),
        )
    } else if rejection.find::<InvalidQuery>().is_some() {
        (
            StatusCode::BAD_REQUEST,
            "the query string does not decode".to_string(),
        )
    } else {
        tracing::warn!(?rejection, "unhandled rejection");
        (
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal error".to_string(),
        )
    };
    Ok(error_reply(status, &message))
}
