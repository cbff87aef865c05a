//! `GET /heavy` and `POST /heavy`: parse the work spec (never running bad specs), hand the
//! work to the strategy, answer with its result and where the time went.

use std::time::Instant;

use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::{ApiError, AppState};
use crate::api::{Accepted, HeavyAnswer, Job, JobStatus, JobsSummary, Spread};
use crate::queue::{JobId, JobQueue};
use crate::strategy::{ExecError, Outcome, Strategy};
use crate::work::Work;

pub(super) async fn get(
    State(app): State<AppState>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let query = query.unwrap_or_default();
    if query.len() > app.config.max_query {
        return Err(ApiError::UriTooLong(app.config.max_query));
    }
    let work = Work::from_query(&query, &app.config.limits)?;
    execute(&app, work).await
}

pub(crate) async fn post(
    State(app): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    if !is_json(&headers) {
        return Err(ApiError::UnsupportedMediaType);
    }
    let limit = app.config.max_body;
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(ApiError::BodyTooLarge(limit));
    }
    let bytes = axum::body::to_bytes(body, limit).await.map_err(|e| {
        // to_bytes fails with a length-limit error when a chunked body runs over.
        if std::error::Error::source(&e).is_some_and(|s| s.is::<http_body_util::LengthLimitError>())
        {
            ApiError::BodyTooLarge(limit)
        } else {
            ApiError::BadBody(e.to_string())
        }
    })?;
    let work = Work::from_json(&bytes, &app.config.limits)?;
    execute(&app, work).await
}

/// `application/json`, with or without parameters such as `charset=utf-8`.
fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json"))
}

async fn execute(app: &AppState, work: Work) -> Result<Response, ApiError> {
    let deadline = Instant::now() + app.config.timeout;
    let _in_flight = app.metrics.in_flight();
    // The timeout stops waiting at the deadline; dropping the strategy's future cancels
    // its queued chunks and tells running ones to stop.
    let outcome =
        match tokio::time::timeout_at(deadline.into(), app.strategy.run(work, deadline)).await {
            Ok(r) => r?,
            Err(_) => return Err(ExecError::Expired.into()),
        };
    Ok(match outcome {
        Outcome::Done(done) => axum::Json(HeavyAnswer {
            strategy: app.strategy.name().as_str().to_owned(),
            work: work.kind().name().to_owned(),
            n: work.n(),
            result: done.result,
            wait_us: done.wait.as_micros() as u64,
            run_us: done.run.as_micros() as u64,
        })
        .into_response(),
        Outcome::Accepted(id) => {
            let url = format!("/jobs/{}", id.as_str());
            let body = Accepted {
                id: id.to_string(),
                status: JobStatus::Queued,
                status_url: url.clone(),
                work: work.kind().name().to_owned(),
                n: work.n(),
            };
            (
                StatusCode::ACCEPTED,
                [(header::LOCATION, url)],
                axum::Json(body),
            )
                .into_response()
        }
    })
}

/// `GET /jobs/{id}`: a job's status, attempts, times, and its result or error.
pub(super) async fn job(
    State(app): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let Strategy::Queue(q) = &*app.strategy else {
        return Err(ApiError::NotFound(format!(
            "/jobs/{}: this gateway runs the {} strategy, which has no jobs",
            truncate(&id),
            app.strategy.name().as_str()
        )));
    };
    let id = JobId::parse(&id).map_err(|_| ApiError::BadJobId(truncate(&id)))?;
    let view = q
        .queue()
        .get(&id)
        .await
        .map_err(|e| ApiError::Exec(ExecError::Unavailable(e.to_string())))?;
    let Some(view) = view else {
        return Err(ApiError::JobNotFound(id.as_str().to_string()));
    };
    Ok(axum::Json(Job::from(view)).into_response())
}

/// Most finished jobs `GET /jobs?latency=N` reads: a bounded query even when asked for more.
const MAX_LATENCY_SAMPLE: usize = 100_000;

/// `GET /jobs`: jobs by state; with `?latency=N`, also enqueue-to-done times over the N most
/// recently finished jobs. The bench follows a queue run with it.
pub(super) async fn jobs(
    State(app): State<AppState>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let Strategy::Queue(q) = &*app.strategy else {
        return Err(ApiError::NotFound(format!(
            "/jobs: this gateway runs the {} strategy, which has no jobs",
            app.strategy.name().as_str()
        )));
    };
    let query = query.unwrap_or_default();
    let mut latency = 0usize;
    for (k, v) in form_urlencoded::parse(query.as_bytes()) {
        match (k.as_ref(), v.parse::<usize>()) {
            ("latency", Ok(n)) => latency = n.min(MAX_LATENCY_SAMPLE),
            ("latency", Err(_)) => {
                return Err(ApiError::BadQuery(format!(
                    "`latency` must be a whole number of jobs: got {:?}",
                    truncate(&v)
                )));
            }
            (other, _) => {
                return Err(ApiError::BadQuery(format!(
                    "unknown parameter {:?} (expected `latency`)",
                    truncate(other)
                )));
            }
        }
    }
    let unavailable =
        |e: crate::queue::QueueError| ApiError::Exec(ExecError::Unavailable(e.to_string()));
    let counts = q.queue().counts().await.map_err(unavailable)?;
    let enqueue_to_done_ms = if latency > 0 {
        let done = q.queue().recent_done(latency).await.map_err(unavailable)?;
        Spread::of(
            done.iter()
                .filter_map(|j| Some(j.finished_at?.saturating_sub(j.enqueued_at) as f64))
                .collect(),
        )
    } else {
        None
    };
    Ok(axum::Json(JobsSummary {
        counts,
        enqueue_to_done_ms,
    })
    .into_response())
}

fn truncate(s: &str) -> String {
    s.chars().take(64).collect()
}
