//! The one error type of the HTTP API: every failure becomes a JSON body
//! `{"error": {"code": "...", "message": "..."}}` with the right status. The vocabulary is
//! offload-axum's ([`offload_axum::Error`]): what a service embedding the crates answers
//! (a bad `Prefer`, a bad or unknown job id, overload, a store out of reach, shutdown, a missed
//! deadline, a server failure) the gateway answers with the same codes and bodies, and it adds
//! only its own cases (a bad work spec, body and query limits, a compute host that failed, no
//! thread, a request predicted to miss its deadline). Client mistakes (4xx) say what was
//! wrong; server failures (5xx) say little and are logged, at most once a second per kind
//! ([`crate::logs`]).

use std::time::Duration;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::strategy::{ExecError, RETRY_AFTER_SECS};
use crate::work::SpecError;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error(transparent)]
    Spec(#[from] SpecError),
    #[error("content-type must be application/json")]
    UnsupportedMediaType,
    #[error("the request body is over the limit of {0} bytes")]
    BodyTooLarge(usize),
    #[error("the request body could not be read: {0}")]
    BadBody(String),
    #[error("the query string is over the limit of {0} bytes")]
    UriTooLong(usize),
    #[error("no route for {0}")]
    NotFound(String),
    #[error("method {0} is not allowed here")]
    MethodNotAllowed(String),
    /// What offload-axum answers as well, in its words.
    #[error(transparent)]
    Api(#[from] offload_axum::Error),
    /// A request predicted to miss its deadline (503 `would_miss_deadline`).
    #[error("{}", ExecError::Late(*.0))]
    Late(crate::admission::Late),
    /// The compute service failed or could not be reached (502 `bad_gateway`).
    #[error("the compute service failed: {0}")]
    BadGateway(String),
    /// No thread could be started for the work (503 `no_thread`).
    #[error("no thread could be started: {0}")]
    NoThread(std::io::Error),
}

impl From<ExecError> for ApiError {
    /// The crate's error where it has one for the failure.
    fn from(e: ExecError) -> ApiError {
        use offload_axum::Error as E;
        ApiError::Api(match e {
            ExecError::Overloaded { retry_after_secs } => E::Busy {
                retry_after: Duration::from_secs(retry_after_secs),
            },
            ExecError::Unavailable(why) => E::Unavailable(why),
            ExecError::ShuttingDown => E::ShuttingDown,
            ExecError::Expired => E::Expired,
            ExecError::Panicked(why) => E::Internal(why),
            ExecError::Late(late) => return ApiError::Late(late),
            ExecError::BadGateway(why) => return ApiError::BadGateway(why),
            ExecError::NoThread(e) => return ApiError::NoThread(e),
            ExecError::KeyReused(id) => E::KeyReused(id),
        })
    }
}

impl ApiError {
    fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            ApiError::Spec(e) => (StatusCode::BAD_REQUEST, e.code()),
            ApiError::UnsupportedMediaType => {
                (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type")
            }
            ApiError::BodyTooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "body_too_large"),
            ApiError::BadBody(_) => (StatusCode::BAD_REQUEST, "bad_body"),
            ApiError::UriTooLong(_) => (StatusCode::URI_TOO_LONG, "query_too_long"),
            ApiError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            ApiError::MethodNotAllowed(_) => (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"),
            ApiError::Api(e) => e.status_and_code(),
            ApiError::Late(_) => (StatusCode::SERVICE_UNAVAILABLE, "would_miss_deadline"),
            ApiError::BadGateway(_) => (StatusCode::BAD_GATEWAY, "bad_gateway"),
            ApiError::NoThread(_) => (StatusCode::SERVICE_UNAVAILABLE, "no_thread"),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        use offload_axum::Error as E;
        let message = match &self {
            ApiError::Api(e @ E::Internal(_)) => {
                crate::throttled!("work_panicked", error, error = %e, "request failed");
                return e.to_response();
            }
            ApiError::Api(e @ E::Unavailable(_)) => {
                crate::throttled!("queue_unavailable", error, error = %e, "request failed");
                return e.to_response();
            }
            ApiError::Api(e) => return e.to_response(),
            ApiError::BadGateway(_) => {
                crate::throttled!("bad_gateway", warn, error = %self, "request failed");
                "the compute service could not be reached or failed".to_string()
            }
            ApiError::NoThread(_) => {
                crate::throttled!("no_thread", error, error = %self, "request failed");
                "no thread could be started for the work; retry later".to_string()
            }
            other => other.to_string(),
        };
        let (status, code) = self.status_and_code();
        let mut resp = offload_axum::error_response(status, code, message);
        if status == StatusCode::SERVICE_UNAVAILABLE {
            let secs = match &self {
                ApiError::Late(late) => Some(crate::admission::retry_after_secs(late.retry_after)),
                _ => None,
            };
            resp.headers_mut().insert(
                header::RETRY_AFTER,
                HeaderValue::from(secs.unwrap_or(RETRY_AFTER_SECS)),
            );
        }
        resp
    }
}
