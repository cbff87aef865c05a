//! The [`Auto`] extractor and its one decision: run a job in the pool if its predicted finish
//! fits the client's budget, else store it as a durable job; when the queue is full, the pool
//! takes it under plain deadline admission; only when neither can, 503.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{FromRef, FromRequestParts, OriginalUri};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use offload_pool::admission::Cost;
use offload_pool::{Budget, StopCheck, SubmitError, TaskError};
use offload_queue::{
    EnqueueError, Job, JobContext, JobError, JobId, JobQueue, JobStatus, LineError, NewJob,
    Prediction,
};
use serde::{Deserialize, Serialize};

use crate::decide::{self, Decision, PoolTry, StoreRefusal, decide};
use crate::jobs::JobBody;
use crate::prefer::set_preference_applied;
use crate::{Error, Offload, Prefer, Submit};

/// `auto` for one request: the service's [`Offload`], the request's [`Prefer`]ences, and
/// where the router is nested. Extract it in a handler, then [`Auto::run`] the job.
///
/// It comes from the router's state: any state that gives an [`Offload`] through
/// [`FromRef`], such as `Router::with_state(offload)` or your own state with an
/// `impl FromRef<AppState> for Offload`. A router whose state gives none does not compile.
/// A malformed `Prefer`, `Idempotency-Key` or `Job-Deadline` is refused before the handler
/// runs (400 `invalid_prefer`, `invalid_idempotency_key`, `invalid_deadline`).
#[derive(Debug, Clone)]
pub struct Auto {
    offload: Offload,
    prefer: Prefer,
    /// The request's `Idempotency-Key` and `Job-Deadline`.
    submit: Submit,
    /// The path the handler's router is nested under (`/api`, `/t/acme`), or empty: the
    /// `Location` of a 202 starts with it, as [`Offload::routes`] merged beside the handler
    /// answers there.
    nested: String,
}

impl<S> FromRequestParts<S> for Auto
where
    Offload: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Auto, Error> {
        let prefer = Prefer::parse(parts.headers.get_all("prefer").iter().map(|v| v.as_bytes()))?;
        let submit = Submit::from_headers(&parts.headers)?;
        let nested = match parts.extensions.get::<OriginalUri>() {
            Some(OriginalUri(original)) => nested_under(original.path(), parts.uri.path()),
            None => "",
        };
        Ok(Auto {
            offload: Offload::from_ref(state),
            prefer,
            submit,
            nested: nested.to_owned(),
        })
    }
}

/// The prefix a nested router stripped: the request's path as it arrived (`original`) less
/// the path the nested router saw (`seen`). axum's `nest("/api", ...)` turns `/api/x` into
/// `/x`, and `/api` itself into `/`; a prefix is never kept with a trailing `/`.
fn nested_under<'a>(original: &'a str, seen: &str) -> &'a str {
    let prefix = match seen {
        "/" => original,
        _ => original.strip_suffix(seen).unwrap_or(""),
    };
    prefix.trim_end_matches('/')
}

/// The body of a 202: where to ask for the job's outcome, and why it was not run at once.
/// Deserialize it to read the answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AcceptedBody {
    /// The stored job's id.
    pub id: String,
    /// Where the job is: `queued`, or, for a request that repeats an `Idempotency-Key`, where
    /// the job stored under it is.
    pub status: JobStatus,
    /// Where the job's state and result are served (`GET`, long-poll with `Prefer: wait=N`):
    /// the path the handler is nested under, then [`Offload::jobs_path`], then the id. Also the
    /// `Location` header.
    pub status_url: String,
    /// The predicted time from this answer until the job is done, its wait in the queue
    /// included, in microseconds: the unfinished jobs (this one among them) over the rate the
    /// queue's workers finish jobs ([`Eta`](offload_queue::Eta)). `null` until that rate has
    /// been measured (the workers have had a backlog for a second).
    #[serde(default)]
    pub done_in_us: Option<u64>,
    /// Unfinished jobs (queued or running) ahead of it when it was stored, as far as this
    /// process knows (read four times a second, plus what it stored since). Read as 0 from a
    /// body without it (another server's 202).
    #[serde(default)]
    pub jobs_ahead: u64,
    /// Why it was stored: its predicted finish had it run in the pool (the work admitted ahead
    /// over the threads, plus its own run), which did not fit the budget, in microseconds.
    /// Absent when the pool was not asked: a request that repeats an `Idempotency-Key`, or a
    /// service that only stores jobs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pool_finish_us: Option<u64>,
}

impl AcceptedBody {
    /// The body for job `id`, stored and now `status`, served at `status_url`: its time to done
    /// and the jobs ahead from `backlog` (the queue's [`Eta`](offload_queue::Eta), read once the
    /// job is stored, so that it counts among the unfinished), and the pool's predicted finish
    /// that sent it to the queue, if the pool was asked.
    pub fn new(
        id: &JobId,
        status: JobStatus,
        status_url: String,
        backlog: Prediction,
        pool_finish: Option<Duration>,
    ) -> AcceptedBody {
        let us = |d: Duration| d.as_micros().try_into().unwrap_or(u64::MAX);
        AcceptedBody {
            id: id.to_string(),
            status,
            status_url,
            done_in_us: backlog.done_in(0).map(us),
            jobs_ahead: backlog.unfinished.saturating_sub(1),
            pool_finish_us: pool_finish.map(us),
        }
    }
}

impl Auto {
    /// The request's preferences.
    pub fn prefer(&self) -> Prefer {
        self.prefer
    }

    /// The request's budget: its `Prefer: wait`, else the [`Offload::wait`] default, never
    /// past the deadline. The client knows how long it will wait; as in `offload serve`.
    pub fn budget(&self) -> Duration {
        self.prefer
            .wait
            .unwrap_or(self.offload.inner.wait)
            .min(self.offload.inner.deadline)
    }

    /// Runs `job` where it answers best:
    /// - in the pool, with its type's handler, when its predicted finish (the work admitted
    ///   ahead over the threads, plus its own run: its [`Job::units`] times its type's
    ///   measured time per unit) fits [`Auto::budget`] (and, with `Prefer: respond-async`, it
    ///   would start at once): 200 with the output as JSON;
    /// - else stored as a job ([`NewJob::of`]): 202, `Location: /jobs/{id}` (under the path
    ///   the router is nested at, and [`Offload::jobs_path`]) and an [`AcceptedBody`];
    /// - when the queue is full (or its store fails), in the pool under plain deadline
    ///   admission, as a late 200 beats a 503;
    /// - when the pool cannot take it by the deadline either and the queue is full, it waits
    ///   in the queue's [`Line`](offload_queue::Line) for room, in arrival order, until
    ///   shortly before the deadline: 202 once stored;
    /// - only when neither takes it, 503 with a predicted `Retry-After`, held to the
    ///   [`Offload`]'s refusal schedule ([`Offload::pacer`]) so that a client that resends at
    ///   once cannot spin on refusals.
    ///
    /// The decision is made before the job starts anywhere: a job is never run in both
    /// places. `Preference-Applied` names what was honoured.
    ///
    /// With an `Idempotency-Key`, the job is always stored (waiting in the line when the queue
    /// is full), since only a stored job can be found again by its key: the first request
    /// stores it and gets 202; one that repeats the key with the same job gets the same job,
    /// 202 with the same `Location` while it is unfinished, or 200 with its [`JobBody`] once
    /// done; one that repeats it with another job gets 422 `idempotency_key_reused`. A
    /// `Job-Deadline` is the stored job's deadline ([`NewJob::expires_at`]).
    ///
    /// A job whose type the pool cannot predict yet (no run measured, no
    /// [`Job::SECS_PER_UNIT`]) is never run in the pool on faith, however small: it is stored
    /// (its 202's `pool_finish_us` is then the wait ahead alone), and when the queue is full it
    /// waits in the line. Its first run in a worker made with [`Offload::executor`] teaches
    /// the model; with workers elsewhere, give the type a `SECS_PER_UNIT`.
    pub async fn run<J: Job>(self, job: J) -> Response {
        let pacer = Arc::clone(&self.offload.inner.pacer);
        match self.route(job).await {
            Ok(resp) => resp,
            Err(e) => {
                let resp = e.into_response();
                // A refusal waits for its slot, so a client that resends at once cannot spin.
                if resp.status() == StatusCode::SERVICE_UNAVAILABLE {
                    crate::pace::hold(&pacer).await;
                }
                resp
            }
        }
    }

    async fn route<J: Job>(self, job: J) -> Result<Response, Error> {
        let inner = &self.offload.inner;
        let stored = NewJob::of(&job)
            .map_err(|e| Error::Internal(format!("job {:?} is not JSON: {e}", J::NAME)))?;
        let stored = self.submit.apply(stored);
        let now = Instant::now();
        // A run in the pool is told to stop when this request ends unfinished: its client
        // went away (the future is dropped) or the pool gave the run up at its deadline.
        let cx = JobContext::new();
        let _stop = StopOnDrop(cx.clone());
        let places = Places {
            offload: &self.offload,
            cost: Cost::new(self.offload.class::<J>(), job.units()),
            deadline: now + inner.deadline,
            stored,
            cx,
        };
        if self.submit.key.is_some() {
            use decide::Places as _;
            // Boxed: this rare path's states would otherwise grow the future of every request.
            return Box::pin(async {
                let id = match places.store_now().await {
                    Ok(id) => id,
                    Err(refused) => places.store_last(refused, Duration::ZERO).await?,
                };
                self.keyed(&id).await
            })
            .await;
        }
        let budget = Budget {
            end: now + self.budget(),
            start_now: self.prefer.respond_async,
        };
        match decide(&places, budget).await? {
            Decision::Ran {
                ran, over_budget, ..
            } => {
                let applied = (!over_budget)
                    .then(|| Prefer::applied(self.prefer.wait, false))
                    .flatten();
                answer(ran, applied)
            }
            Decision::Stored { stored, predicted } => {
                Ok(self.accepted(&stored, Some(predicted), JobStatus::Queued))
            }
        }
    }

    /// The answer to a keyed request: the job stored under the key, as it is now. Done: 200
    /// with its [`JobBody`] and `Content-Location`; otherwise 202 with its status.
    async fn keyed(&self, id: &JobId) -> Result<Response, Error> {
        let view = self.offload.inner.jobs.get(id).await?;
        if view.status != JobStatus::Done {
            return Ok(self.accepted(id, None, view.status));
        }
        let jobs = self.offload.inner.jobs.path_prefix();
        let url = format!("{}{jobs}/{}", self.nested, id.as_str());
        let mut resp = axum::Json(JobBody::from(view)).into_response();
        if let Ok(v) = HeaderValue::from_str(&url) {
            resp.headers_mut().insert(header::CONTENT_LOCATION, v);
        }
        Ok(resp)
    }

    /// 202 with the job's `Location`.
    fn accepted(&self, id: &JobId, predicted: Option<Duration>, status: JobStatus) -> Response {
        let jobs = self.offload.inner.jobs.path_prefix();
        let url = format!("{}{jobs}/{}", self.nested, id.as_str());
        let location = HeaderValue::from_str(&url);
        // The job is stored, so the clock counts it among the unfinished.
        let backlog = self.offload.inner.eta.predict();
        let body = AcceptedBody::new(id, status, url, backlog, predicted);
        let mut resp = (StatusCode::ACCEPTED, axum::Json(body)).into_response();
        if let Ok(v) = location {
            resp.headers_mut().insert(header::LOCATION, v);
        }
        set_preference_applied(
            &mut resp,
            Prefer::applied(self.prefer.wait, self.prefer.respond_async),
        );
        resp
    }
}

/// A request in the line leaves it this long before its deadline, so that its 503 is sent
/// before the deadline passes.
const LINE_MARGIN: Duration = Duration::from_millis(5);

/// One request's pool and queue, as [`decide`] tries them.
struct Places<'a> {
    offload: &'a Offload,
    cost: Cost,
    deadline: Instant,
    stored: NewJob,
    /// The stop check a pool run's handler is given ([`Handlers::on_with`]).
    ///
    /// [`Handlers::on_with`]: offload_queue::Handlers::on_with
    cx: JobContext,
}

/// Tells its context to stop when dropped: held by the request's future, so a handler running
/// in the pool for a request that ended (or was dropped) is told to stop, as a worker tells a
/// cancelled job's.
struct StopOnDrop(JobContext);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.stop();
    }
}

/// A run in the pool: the handler's outcome, or why the pool did not finish it.
type Ran = Result<Result<String, JobError>, TaskError>;

impl Places<'_> {
    /// The job's run as the pool's split: one chunk of all its units. A job type with no
    /// handler fails here, before it is offered anywhere (it would fail in the worker too).
    fn split(&self) -> Result<impl FnOnce(usize) -> Vec<(u64, Task)>, Error> {
        let run = self
            .offload
            .inner
            .handlers
            .prepare_with(&self.stored.payload, self.cx.clone())
            .map_err(|e| Error::Internal(e.message))?;
        let task: Task = Box::new(move |_: StopCheck<'_>| run());
        let units = self.cost.units;
        Ok(move |_| vec![(units, task)])
    }

    /// Whether the pool can predict the job's run: its class has a measured run or a prior.
    /// One it cannot is predicted to cost nothing, so it would run however big it is.
    fn predicted(&self) -> bool {
        let pool = &self.offload.inner.pool;
        let known = pool.model().secs_per_unit(self.cost.class).is_some();
        if !known {
            tracing::debug!(
                class = ?self.cost.class,
                "offload-axum: a job type with no measured run and no prior: not run in the pool"
            );
        }
        known
    }
}

/// A job's run on a pool thread.
type Task = Box<dyn FnOnce(StopCheck<'_>) -> Result<String, JobError> + Send>;

impl decide::Places for Places<'_> {
    type Ran = Ran;
    type Stored = JobId;
    type Error = Error;

    async fn pool_within(&self, budget: Budget) -> Result<PoolTry<Ran>, Error> {
        let pool = &self.offload.inner.pool;
        let split = self.split()?;
        if !self.predicted() {
            return Ok(PoolTry::Late(pool.predicted_wait()));
        }
        match pool.submit_work_within(budget, self.deadline, self.cost, 1, split) {
            Ok((mut handles, predicted)) => Ok(PoolTry::Ran(handles.remove(0).await, predicted)),
            Err(SubmitError::Late(late)) => Ok(PoolTry::Late(late.finish)),
            // The pool's hard cap: the queue has its own.
            Err(SubmitError::Full { retry_after, .. }) => Ok(PoolTry::Late(retry_after)),
            Err(SubmitError::ShuttingDown) => Err(Error::ShuttingDown),
        }
    }

    async fn store_now(&self) -> Result<JobId, StoreRefusal<Error>> {
        let inner = &self.offload.inner;
        // Requests wait in the line while it is busy: a new one must not pass them. Nor is a
        // job stored that would be done only past the queue's time cap.
        let over_cap = || {
            inner
                .eta
                .predict()
                .done_in(1)
                .is_some_and(|d| d > inner.max_queue_wait)
        };
        if inner.line.is_busy() || over_cap() {
            return Err(StoreRefusal::Full);
        }
        match inner.queue.enqueue(self.stored.clone()).await {
            Ok(id) => {
                inner.eta.stored(1);
                Ok(id)
            }
            Err(EnqueueError::Full(n)) => {
                tracing::debug!(backlog = n, "offload-axum: queue full, the pool takes it");
                Err(StoreRefusal::Full)
            }
            Err(EnqueueError::Queue(e)) => {
                Err(StoreRefusal::Down(Error::Unavailable(e.to_string())))
            }
            Err(EnqueueError::KeyReused(id)) => {
                Err(StoreRefusal::Failed(Error::KeyReused(id.to_string())))
            }
        }
    }

    async fn pool_by_deadline(&self) -> Result<Result<Ran, Duration>, Error> {
        let pool = &self.offload.inner.pool;
        let split = self.split()?;
        if !self.predicted() {
            return Ok(Err(pool.predicted_wait()));
        }
        match pool.submit_work(self.deadline, self.cost, 1, split) {
            Ok(mut handles) => Ok(Ok(handles.remove(0).await)),
            Err(SubmitError::Late(late)) => Ok(Err(late.retry_after)),
            Err(SubmitError::Full { retry_after, .. }) => Ok(Err(retry_after)),
            Err(SubmitError::ShuttingDown) => Err(Error::ShuttingDown),
        }
    }

    /// A store that is down answers so; a full one puts the request in the line, in arrival
    /// order, until shortly before its deadline: backpressure, not a refusal the client would
    /// send straight back.
    async fn store_last(
        &self,
        refused: StoreRefusal<Error>,
        _pool_retry_after: Duration,
    ) -> Result<JobId, Error> {
        match refused {
            StoreRefusal::Down(e) | StoreRefusal::Failed(e) => Err(e),
            StoreRefusal::Full => {
                let until = self
                    .deadline
                    .checked_sub(LINE_MARGIN)
                    .unwrap_or(self.deadline);
                let line = &self.offload.inner.line;
                match line.enqueue(self.stored.clone(), until).await {
                    Ok(id) => Ok(id),
                    Err(
                        LineError::Full { retry_after } | LineError::WaitRanOut { retry_after },
                    ) => Err(Error::Busy { retry_after }),
                    Err(LineError::Store(e)) => Err(Error::Unavailable(e.to_string())),
                    Err(LineError::KeyReused(id)) => Err(Error::KeyReused(id.to_string())),
                }
            }
        }
    }
}

/// A pool run's outcome as an answer: the handler's JSON output with 200, or the error.
fn answer(
    out: Result<Result<String, JobError>, TaskError>,
    applied: Option<String>,
) -> Result<Response, Error> {
    let json = match out {
        Ok(Ok(json)) => json,
        Ok(Err(e)) if e.retry => return Err(Error::Internal(format!("the job failed: {e}"))),
        Ok(Err(e)) => return Err(Error::JobFailed(e.message)),
        Err(TaskError::Expired) => return Err(Error::Expired),
        Err(TaskError::Panicked(m)) => return Err(Error::Internal(format!("panicked: {m}"))),
        Err(TaskError::Stopped) => return Err(Error::ShuttingDown),
    };
    // The handler's output is already JSON text: sent as it is, not parsed again.
    let mut resp = (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        json,
    )
        .into_response();
    set_preference_applied(&mut resp, applied);
    Ok(resp)
}

#[cfg(test)]
mod tests {
    use super::nested_under;

    #[test]
    fn the_nested_prefix_is_what_the_nest_stripped() {
        assert_eq!(nested_under("/collatz", "/collatz"), "", "not nested");
        assert_eq!(nested_under("/api/collatz", "/collatz"), "/api");
        assert_eq!(nested_under("/t/acme/v1/x", "/x"), "/t/acme/v1");
        // A route at the nest's own path: axum hands it `/`.
        assert_eq!(nested_under("/api", "/"), "/api");
        assert_eq!(nested_under("/api/", "/"), "/api");
        assert_eq!(nested_under("/", "/"), "");
        // Paths that do not line up (a middleware rewrote one): not nested, as far as known.
        assert_eq!(nested_under("/a/b", "/c"), "");
    }
}
