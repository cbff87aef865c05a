//! The one error type of the HTTP API: every failure becomes a JSON body
//! `{"error": {"code": "...", "message": "..."}}` with the right status. Client mistakes
//! (4xx) say what was wrong; server failures (5xx) say little and are logged, at most once a
//! second per kind ([`crate::logs`]).

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
    #[error("{0:?} is not a job id: expected 32 hex characters")]
    BadJobId(String),
    #[error("no job {0} (unknown, or finished and past its retention)")]
    JobNotFound(String),
    #[error("{0}")]
    BadQuery(String),
    #[error("method {0} is not allowed here")]
    MethodNotAllowed(String),
    /// A `Prefer` header that cannot be acted on as asked (parsed by offload-axum, as a
    /// user's service parses it).
    #[error("{0}")]
    Prefer(String),
    #[error(transparent)]
    Exec(#[from] ExecError),
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
            ApiError::BadJobId(_) => (StatusCode::BAD_REQUEST, "invalid_job_id"),
            ApiError::BadQuery(_) => (StatusCode::BAD_REQUEST, "invalid_query"),
            ApiError::Prefer(_) => (StatusCode::BAD_REQUEST, "invalid_prefer"),
            ApiError::JobNotFound(_) => (StatusCode::NOT_FOUND, "job_not_found"),
            ApiError::MethodNotAllowed(_) => (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"),
            ApiError::Exec(e) => match e {
                ExecError::Overloaded { .. } => (StatusCode::SERVICE_UNAVAILABLE, "overloaded"),
                ExecError::Late(_) => (StatusCode::SERVICE_UNAVAILABLE, "would_miss_deadline"),
                ExecError::BadGateway(_) => (StatusCode::BAD_GATEWAY, "bad_gateway"),
                ExecError::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "queue_unavailable"),
                ExecError::NoThread(_) => (StatusCode::SERVICE_UNAVAILABLE, "no_thread"),
                ExecError::ShuttingDown => (StatusCode::SERVICE_UNAVAILABLE, "shutting_down"),
                ExecError::Expired => (StatusCode::GATEWAY_TIMEOUT, "deadline_exceeded"),
                ExecError::Panicked(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
            },
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = self.status_and_code();
        let message = match &self {
            ApiError::Exec(ExecError::Panicked(_)) => {
                crate::throttled!("work_panicked", error, error = %self, "request failed");
                "the work failed on the server".to_string()
            }
            ApiError::Exec(ExecError::BadGateway(_)) => {
                crate::throttled!("bad_gateway", warn, error = %self, "request failed");
                "the compute service could not be reached or failed".to_string()
            }
            ApiError::Exec(ExecError::Unavailable(_)) => {
                crate::throttled!("queue_unavailable", error, error = %self, "request failed");
                "the job queue is unavailable; retry later".to_string()
            }
            ApiError::Exec(ExecError::NoThread(_)) => {
                crate::throttled!("no_thread", error, error = %self, "request failed");
                "no thread could be started for the work; retry later".to_string()
            }
            other => other.to_string(),
        };
        let mut resp = (
            status,
            axum::Json(crate::api::ErrorBody {
                error: crate::api::ErrorDetail {
                    code: code.to_owned(),
                    message,
                },
            }),
        )
            .into_response();
        if status == StatusCode::SERVICE_UNAVAILABLE {
            let secs = match &self {
                ApiError::Exec(e) => e.retry_after_secs(),
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
