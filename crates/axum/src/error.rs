//! The one error type of `auto`'s answers: every failure becomes a JSON body
//! `{"error": {"code": "...", "message": "..."}}` with the right status, and a 503 carries a
//! `Retry-After` (predicted by the pool where it can be). Client mistakes (4xx) say what was
//! wrong; server failures (5xx) say little to the client and are logged. The body's types and
//! [`error_response`] are public, so a service answers its own bad requests in the same shape.

use std::time::Duration;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use offload_pool::admission::retry_after_secs;
use offload_queue::log::Site;
use serde::{Deserialize, Serialize};

use crate::admin::Denied;

/// Why `auto` or the jobs route answered with an error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A `Prefer` header `auto` cannot act on as asked (400 `invalid_prefer`).
    #[error("Prefer: {0}")]
    BadPrefer(String),
    /// An `Idempotency-Key` that is empty, too long or not printable ASCII (400
    /// `invalid_idempotency_key`).
    #[error("Idempotency-Key: {0}")]
    BadKey(String),
    /// A `Job-Deadline` that is not a positive number of seconds in range (400
    /// `invalid_deadline`).
    #[error("{0}")]
    BadDeadline(String),
    /// A `Job-Delay` or `Job-Priority` out of its range (400 `invalid_schedule`).
    #[error("{0}")]
    BadSchedule(String),
    /// The request's `Idempotency-Key` names a job stored for other work: nothing was stored
    /// (422 `idempotency_key_reused`).
    #[error("the Idempotency-Key is already used by job {0} for other work")]
    KeyReused(String),
    /// Not a job id: 32 hex characters are expected (400 `invalid_job_id`).
    #[error("{0:?} is not a job id: expected 32 hex characters")]
    BadJobId(String),
    /// A change (cancel, retry) without the admin token the routes need, or with a wrong one:
    /// nothing was changed (401 `unauthorized`, with `WWW-Authenticate: Bearer`).
    #[error("{}", .0.message())]
    Unauthorized(Denied),
    /// A query string the route cannot act on: an unknown parameter or a value out of its
    /// range (400 `invalid_query`).
    #[error("{0}")]
    BadQuery(String),
    /// No such job: never stored, or finished and past the queue's retention (404
    /// `job_not_found`).
    #[error("no job {0} (unknown, or finished and past its retention)")]
    JobNotFound(String),
    /// The job has already finished (done, failed, cancelled or expired), so it cannot be
    /// cancelled (409 `job_finished`).
    #[error("job {id} is already {status}: only a queued or running job can be cancelled")]
    JobFinished {
        /// The job's id.
        id: String,
        /// Its status: `done`, `failed`, `cancelled` or `expired`.
        status: &'static str,
    },
    /// Only a failed, cancelled or expired job can be retried (409 `job_not_retryable`).
    #[error("job {id} is {status}: only a failed, cancelled or expired job can be retried")]
    JobNotRetryable {
        /// The job's id.
        id: String,
        /// Its status: `queued`, `running` or `done`.
        status: &'static str,
    },
    /// The job's handler refused it with a non-retryable error, when it ran in the pool
    /// (422 `job_failed`, with the handler's message).
    #[error("the job failed: {0}")]
    JobFailed(String),
    /// Neither the pool (by the deadline) nor the queue (its backlog is full) can take the
    /// work; one like it should fit after `retry_after` (503 `overloaded`).
    #[error("busy: neither the pool nor the queue can take this work now")]
    Busy {
        /// When work like it is predicted to fit again.
        retry_after: Duration,
    },
    /// The queue's store failed, and the pool could not take the work either (503
    /// `queue_unavailable`).
    #[error("the job queue is unavailable: {0}")]
    Unavailable(String),
    /// The pool is shutting down (503 `shutting_down`).
    #[error("the service is shutting down")]
    ShuttingDown,
    /// The work ran in the pool but did not finish by its deadline (504 `deadline_exceeded`).
    #[error("the work did not finish by its deadline")]
    Expired,
    /// A server-side failure: a handler that panicked or asked for a retry in the pool, a job
    /// type with no handler, or a job that is not JSON (500 `internal`; the detail is logged,
    /// not sent).
    #[error("internal error: {0}")]
    Internal(String),
}

/// The JSON body of every error answer: `{"error": {"code": "...", "message": "..."}}`.
/// Deserialize it to read an error; [`error_response`] answers one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// What went wrong.
    pub error: ErrorDetail,
}

/// The `error` of an [`ErrorBody`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorDetail {
    /// A stable, machine-readable name for the error, in `snake_case` (`invalid_prefer`,
    /// `job_not_found`, `overloaded`, ...): what a client matches on.
    pub code: String,
    /// What a person reads: for a 4xx, what was wrong with the request.
    pub message: String,
}

/// An error answer in offload's shape, for a service's own failures (a body it cannot parse,
/// a value out of range): `status` with the JSON [`ErrorBody`] of `code` and `message`. The
/// same shape as every [`Error`], so a client reads one kind of error body from the whole
/// service.
///
/// ```
/// use axum::http::StatusCode;
/// let resp = offload_axum::error_response(StatusCode::BAD_REQUEST, "invalid_size", "width > 0");
/// assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
/// ```
pub fn error_response(status: StatusCode, code: &str, message: impl Into<String>) -> Response {
    let error = ErrorDetail {
        code: code.to_owned(),
        message: message.into(),
    };
    (status, axum::Json(ErrorBody { error })).into_response()
}

/// `Retry-After` when nothing better is known (a store outage, a shutdown): one second.
const RETRY_AFTER_DEFAULT: Duration = Duration::from_secs(1);

impl Error {
    /// The status and the stable `code` of the JSON body.
    pub fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            Error::BadPrefer(_) => (StatusCode::BAD_REQUEST, "invalid_prefer"),
            Error::BadKey(_) => (StatusCode::BAD_REQUEST, "invalid_idempotency_key"),
            Error::BadDeadline(_) => (StatusCode::BAD_REQUEST, "invalid_deadline"),
            Error::BadSchedule(_) => (StatusCode::BAD_REQUEST, "invalid_schedule"),
            Error::KeyReused(_) => (StatusCode::UNPROCESSABLE_ENTITY, "idempotency_key_reused"),
            Error::BadJobId(_) => (StatusCode::BAD_REQUEST, "invalid_job_id"),
            Error::BadQuery(_) => (StatusCode::BAD_REQUEST, "invalid_query"),
            Error::Unauthorized(_) => (StatusCode::UNAUTHORIZED, "unauthorized"),
            Error::JobNotFound(_) => (StatusCode::NOT_FOUND, "job_not_found"),
            Error::JobFinished { .. } => (StatusCode::CONFLICT, "job_finished"),
            Error::JobNotRetryable { .. } => (StatusCode::CONFLICT, "job_not_retryable"),
            Error::JobFailed(_) => (StatusCode::UNPROCESSABLE_ENTITY, "job_failed"),
            Error::Busy { .. } => (StatusCode::SERVICE_UNAVAILABLE, "overloaded"),
            Error::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "queue_unavailable"),
            Error::ShuttingDown => (StatusCode::SERVICE_UNAVAILABLE, "shutting_down"),
            Error::Expired => (StatusCode::GATEWAY_TIMEOUT, "deadline_exceeded"),
            Error::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        }
    }

    /// Whole seconds for the `Retry-After` of a 503, rounded up, from 1 to 3,600; `None` for
    /// other errors.
    pub fn retry_after_secs(&self) -> Option<u64> {
        match self {
            Error::Busy { retry_after } => Some(retry_after_secs(*retry_after)),
            Error::Unavailable(_) | Error::ShuttingDown => {
                Some(retry_after_secs(RETRY_AFTER_DEFAULT))
            }
            _ => None,
        }
    }
}

impl Error {
    /// The answer, without the log line that [`IntoResponse`] writes for a server failure:
    /// for a service that logs (and counts) its failures its own way, then answers in this
    /// shape. A server failure's detail is not sent; a 503 carries `Retry-After`.
    pub fn to_response(&self) -> Response {
        let (status, code) = self.status_and_code();
        let message = match self {
            Error::Internal(_) => "the work failed on the server".to_owned(),
            Error::Unavailable(_) => "the job queue is unavailable; retry later".to_owned(),
            other => other.to_string(),
        };
        let mut resp = error_response(status, code, message);
        if let Some(secs) = self.retry_after_secs() {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        if let Error::Unauthorized(denied) = self {
            // RFC 6750: a token that was sent and is wrong is `invalid_token`.
            let challenge = match denied {
                Denied::Wrong => r#"Bearer error="invalid_token""#,
                _ => "Bearer",
            };
            resp.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static(challenge),
            );
        }
        resp
    }
}

impl IntoResponse for Error {
    /// The answer; a server failure's detail is logged, at most once a second per kind (a
    /// store that is down fails every request).
    fn into_response(self) -> Response {
        match &self {
            Error::Internal(_) => {
                static SITE: Site = Site::new("work_panicked");
                if let Some(held_back) = SITE.admit() {
                    tracing::error!(error = %self, held_back, "offload-axum: request failed");
                }
            }
            Error::Unavailable(_) => {
                static SITE: Site = Site::new("queue_unavailable");
                if let Some(held_back) = SITE.admit() {
                    tracing::error!(error = %self, held_back, "offload-axum: request failed");
                }
            }
            _ => {}
        }
        self.to_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_503_carries_the_predicted_retry_after_rounded_up() {
        let busy = Error::Busy {
            retry_after: Duration::from_millis(1_500),
        };
        assert_eq!(busy.retry_after_secs(), Some(2));
        let resp = busy.into_response();
        assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(resp.headers()[header::RETRY_AFTER], "2");
        let now = Error::Busy {
            retry_after: Duration::ZERO,
        };
        assert_eq!(now.retry_after_secs(), Some(1), "never Retry-After: 0");
        let far = Error::Busy {
            retry_after: Duration::from_secs(86_400),
        };
        assert_eq!(far.retry_after_secs(), Some(3_600), "capped at an hour");
        assert_eq!(Error::Unavailable("x".into()).retry_after_secs(), Some(1));
        let not_found = Error::JobNotFound("ab".into()).into_response();
        assert_eq!(not_found.status(), StatusCode::NOT_FOUND);
        assert!(not_found.headers().get(header::RETRY_AFTER).is_none());
    }
}
