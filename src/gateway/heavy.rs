//! `GET /heavy` and `POST /heavy`: parse the work spec (never running bad specs), hand the
//! work to the strategy, answer with its result and where the time went. The `/jobs` routes
//! are offload-axum's ([`offload_axum::JobRoutes`]), mounted by [`super::app`].

use std::time::Instant;

use axum::body::Body;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::{ApiError, AppState, pace};
use offload_axum::AcceptedBody;

use crate::api::{Accepted, HeavyAnswer, JobStatus};
use crate::queue::JobId;
use crate::strategy::{ExecError, Outcome, Routed};
use crate::work::Work;
use offload_axum::{JobBody, Prefer, Submit, set_preference_applied};

pub(super) async fn get(
    State(app): State<AppState>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let query = query.unwrap_or_default();
    if query.len() > app.config.max_query {
        return Err(ApiError::UriTooLong(app.config.max_query));
    }
    let work = Work::from_query(&query, &app.config.limits)?;
    execute(
        &app,
        work,
        prefer(&headers)?,
        Submit::from_headers(&headers)?,
    )
    .await
}

/// The request's `Prefer` header(s).
fn prefer(headers: &HeaderMap) -> Result<Prefer, ApiError> {
    Ok(Prefer::parse(
        headers.get_all("prefer").iter().map(|v| v.as_bytes()),
    )?)
}

pub(crate) async fn post(
    State(app): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    if !is_json(&headers) {
        return Err(ApiError::UnsupportedMediaType);
    }
    let prefer = prefer(&headers)?;
    let submit = Submit::from_headers(&headers)?;
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
    execute(&app, work, prefer, submit).await
}

/// `application/json`, with or without parameters such as `charset=utf-8`.
fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json"))
}

async fn execute(
    app: &AppState,
    work: Work,
    prefer: Prefer,
    submit: Submit,
) -> Result<Response, ApiError> {
    let now = Instant::now();
    let mut deadline = now + app.config.timeout;
    // What the strategy makes of the preferences (`About::applied`): `auto` takes `wait` as
    // its budget and `respond-async` as a wish for 202; the queue answers async anyway; a
    // synchronous strategy answers by `wait` at the latest.
    let applied = app.strategy.about().applied(&prefer);
    if let Some(w) = applied.answer_within {
        deadline = deadline.min(now + w);
    }
    let applied = applied.header;
    let _in_flight = app.metrics.in_flight();
    // The timeout stops waiting at the deadline; dropping the strategy's future cancels
    // its queued chunks and tells running ones to stop.
    let run = app.strategy.run(work, deadline, &prefer, &submit);
    // The admission decision and the work (or the store call), as a span when spans are
    // exported (crate::otel).
    let admission = tracing::trace_span!(
        target: "offload::admission",
        "admission",
        offload.strategy = app.strategy.as_str(),
        offload.work = work.kind().name(),
        offload.n = work.n(),
        offload.outcome = tracing::field::Empty,
    );
    let ran = if admission.is_disabled() {
        tokio::time::timeout_at(deadline.into(), run).await
    } else {
        // Boxed: the traced path's state stays out of every request's future.
        Box::pin(admitted(
            admission,
            tokio::time::timeout_at(deadline.into(), run),
        ))
        .await
    };
    let outcome = match ran {
        Ok(Ok(o)) => o,
        Ok(Err(e)) => {
            if e.is_refusal() {
                pace::pace(&app.pacer).await;
            }
            return Err(e.into());
        }
        Err(_) => return Err(ExecError::Expired.into()),
    };
    let us = |d: std::time::Duration| d.as_micros() as u64;
    // The strategy the answer names: where `auto` sent the work, else the strategy itself.
    let by = outcome.answered_by(&app.strategy);
    let answer = |done: crate::strategy::Done, predicted: Option<u64>| {
        axum::Json(HeavyAnswer {
            strategy: by.to_owned(),
            work: work.kind().name().to_owned(),
            n: work.n(),
            result: done.result,
            wait_us: us(done.wait),
            run_us: us(done.run),
            predicted_us: predicted,
        })
        .into_response()
    };
    let accepted = |id: &JobId, predicted: Option<std::time::Duration>, status: JobStatus| {
        let url = format!("/jobs/{}", id.as_str());
        // The job is stored, so the clock counts it among the unfinished.
        let backlog = app
            .strategy
            .queue()
            .map(|q| q.backlog())
            .unwrap_or_default();
        let body = Accepted {
            strategy: by.to_owned(),
            job: AcceptedBody::new(id, status, url.clone(), backlog, predicted),
            work: work.kind().name().to_owned(),
            n: work.n(),
        };
        (
            StatusCode::ACCEPTED,
            [(header::LOCATION, url)],
            axum::Json(body),
        )
            .into_response()
    };
    // A keyed request answers the job stored under its key as it is now: its result once
    // done (200, with `Content-Location`), else 202 with where it is.
    let stored = match &outcome {
        Outcome::Accepted(id) | Outcome::Routed(Routed::Queue { id, .. }) => Some(id.clone()),
        _ => None,
    };
    if let (Some(id), Some(_)) = (stored, &submit.key) {
        let queue = app.strategy.queue().expect("a job was stored");
        // Boxed: a rare path, whose state would otherwise grow every request's future.
        let status = match Box::pin(queue.job(&id)).await? {
            Some(view) if view.status == JobStatus::Done => {
                let url = format!("/jobs/{}", id.as_str());
                return Ok((
                    [(header::CONTENT_LOCATION, url)],
                    axum::Json(JobBody::from(view)),
                )
                    .into_response());
            }
            Some(view) => view.status,
            // Stored a moment ago, and already past its retention: as stored.
            None => JobStatus::Queued,
        };
        let mut resp = accepted(&id, None, status);
        set_preference_applied(&mut resp, applied);
        return Ok(resp);
    }
    let mut resp = match outcome {
        Outcome::Done(done) => answer(done, None),
        Outcome::Accepted(id) => accepted(&id, None, JobStatus::Queued),
        Outcome::Routed(Routed::Pool { done, predicted }) => {
            // `respond-async` was honoured only if the answer is async.
            let applied = Prefer::applied(prefer.wait, false);
            let mut r = answer(done, Some(us(predicted)));
            set_preference_applied(&mut r, applied);
            return Ok(r);
        }
        Outcome::Routed(Routed::Queue { id, predicted }) => {
            accepted(&id, Some(predicted), JobStatus::Queued)
        }
    };
    set_preference_applied(&mut resp, applied);
    Ok(resp)
}

/// The strategy's run under its `admission` span, whose outcome it records.
async fn admitted<F>(admission: tracing::Span, run: F) -> F::Output
where
    F: Future<Output = Result<Result<Outcome, ExecError>, tokio::time::error::Elapsed>>,
{
    let out = tracing::Instrument::instrument(run, admission.clone()).await;
    let outcome = match &out {
        Ok(Ok(Outcome::Done(_) | Outcome::Routed(Routed::Pool { .. }))) => "ran",
        Ok(Ok(_)) => "stored",
        Ok(Err(e)) if e.is_refusal() => "refused",
        Ok(Err(_)) => "failed",
        Err(_) => "expired",
    };
    admission.record("offload.outcome", outcome);
    out
}
