//! The `/jobs` routes over a queue, for any service: [`JobRoutes`]. `offload serve` mounts
//! them as they are, and [`Offload::routes`](crate::Offload::routes) is them at the path its
//! 202s point to.
//!
//! - `GET {path}/{id}`: a stored job's status, attempts, times, and its result (as JSON) or
//!   error. With `Prefer: wait=N` it long-polls: it answers as soon as the job is done or
//!   failed, or after N seconds (at most [`MAX_LONG_POLL`]) with its state then.
//! - `DELETE {path}/{id}`: cancels a queued or running job ([`JobQueue::cancel`]): 200 with the
//!   job, now `cancelled`; 409 `job_finished` for a job already done, failed or cancelled.
//! - `POST {path}/{id}/retry`: queues a failed or cancelled job again with fresh attempts
//!   ([`JobQueue::retry`]): 202 with the job and its `Location`; 409 `job_not_retryable` for
//!   a job queued, running or done.
//! - `GET {path}`: the jobs by state and, with `?latency=N` (any N ≥ 1), enqueue-to-done times
//!   ([`JobsSummary`]).
//! - `GET {path}?status=S&limit=N&after=CURSOR`: a page of the jobs with status `S` (`queued`,
//!   `running`, `done`, `failed`, `cancelled` or `expired`), newest first, at most `N` (default
//!   100, at most 1,000), each with its error, attempts and times, and the cursor of the next
//!   page ([`JobList`], [`JobQueue::list`]).
//!
//! Anyone who reaches the routes may cancel and retry unless [`JobRoutes::changes`] says
//! otherwise: with [`JobRoutes::admin_token`], a change needs `Authorization: Bearer TOKEN`,
//! and without it (or with a wrong one) answers 401 `unauthorized` before the store is called.
//! Reading is always open.
//!
//! Every store call is bounded in time, and while the store is out of reach the routes answer
//! 503 `queue_unavailable` at once ([`Reach`]).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use offload_queue::{
    Cancel, Counts, Cursor, Histogram, JobId, JobQueue, JobStatus, JobView, ListFilter, MAX_PAGE,
    Queue, Reach, Retry,
};
use serde::{Deserialize, Serialize};

use crate::admin::{AdminToken, Changes, Guard};
use crate::prefer::set_preference_applied;
use crate::{Error, Prefer};

/// The longest long-poll: `Prefer: wait` above it is cut to it (a held connection costs a
/// little, and proxies commonly close idle ones after a minute).
pub const MAX_LONG_POLL: Duration = Duration::from_secs(60);

/// Long-polls that may wait at once; past it `GET /jobs/{id}` answers with the state now, so
/// the store is never polled by an unbounded crowd (`wait` is a preference).
pub const MAX_LONG_POLLS: usize = 1_024;

/// A long-poll reads the job again after this, then twice as long each time up to
/// [`POLL_MAX`]: a job that ends is answered within about 50 ms, and a thousand long-polls cost
/// the store at most 20,000 reads a second.
const POLL_FIRST: Duration = Duration::from_millis(5);
const POLL_MAX: Duration = Duration::from_millis(50);

/// The `/jobs` routes over one queue. Cheap to clone; clones share the long-poll places and
/// whether the store is reachable.
///
/// ```
/// use axum::Router;
/// use offload_axum::JobRoutes;
/// use offload_queue::QueueOptions;
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// # let dir = tempfile::tempdir().unwrap();
/// # let url = format!("sqlite://{}", dir.path().join("jobs.db").display());
/// let queue = offload_queue::open(&url, QueueOptions::default()).await.unwrap();
/// // GET /jobs and GET /jobs/{id}, beside a service's own routes.
/// let app: Router = Router::new().merge(JobRoutes::new(queue).router());
/// # });
/// ```
#[derive(Debug, Clone)]
pub struct JobRoutes {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    queue: Queue,
    reach: Reach,
    /// Before `/{id}`: empty, or starts with `/` and does not end with one.
    path: String,
    long_polls: Arc<tokio::sync::Semaphore>,
    /// Who may cancel and retry, and the wrong tokens seen.
    guard: Guard,
}

impl JobRoutes {
    /// The routes over `queue`, at `/jobs`, with their own [`Reach`] (calls bounded by
    /// [`offload_queue::reach::DEFAULT_STORE_WAIT`]) and [`MAX_LONG_POLLS`] long-poll places.
    pub fn new(queue: Queue) -> JobRoutes {
        JobRoutes {
            inner: Arc::new(Inner {
                reach: Reach::new(queue.clone()),
                queue,
                path: crate::DEFAULT_JOBS_PATH.to_owned(),
                long_polls: Arc::new(tokio::sync::Semaphore::new(MAX_LONG_POLLS)),
                guard: Guard::default(),
            }),
        }
    }

    /// Makes the store's calls through `reach`: share one with the code that enqueues, so
    /// that a failure seen by either makes both refuse at once until the store answers.
    #[must_use]
    pub fn reach(self, reach: Reach) -> JobRoutes {
        self.with(|i| i.reach = reach)
    }

    /// Serves the jobs at `{path}/{id}` and their summary at `path`. A plain path: a missing
    /// leading `/` is added and a trailing one dropped; `/` alone serves `/{id}` (and the
    /// summary at `/`). A path axum cannot route (one with `{` or `}`) panics in
    /// [`JobRoutes::router`], as in `Router::route`.
    #[must_use]
    pub fn path(self, path: &str) -> JobRoutes {
        let path = match path.trim_matches('/') {
            "" => String::new(),
            path => format!("/{path}"),
        };
        self.with(|i| i.path = path)
    }

    /// Says who may cancel and retry jobs through the routes ([`Changes::Open`] by default).
    /// A refused change answers 401 `unauthorized` with `WWW-Authenticate: Bearer`, and the
    /// store is not called.
    #[must_use]
    pub fn changes(self, changes: Changes) -> JobRoutes {
        self.with(|i| i.guard.changes = changes)
    }

    /// Cancel and retry need `Authorization: Bearer TOKEN` with `token`
    /// ([`Changes::Token`]); a wrong token is counted ([`JobRoutes::wrong_tokens`]) and logged,
    /// at most a line a second.
    #[must_use]
    pub fn admin_token(self, token: AdminToken) -> JobRoutes {
        self.changes(Changes::Token(token))
    }

    /// Who may cancel and retry.
    pub fn changes_allowed(&self) -> &Changes {
        &self.inner.guard.changes
    }

    /// Changes refused for a wrong token since the routes were made (shared by clones).
    pub fn wrong_tokens(&self) -> u64 {
        self.inner
            .guard
            .wrong
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The path before `/{id}`: empty, or starts with `/` and does not end with one.
    pub fn path_prefix(&self) -> &str {
        &self.inner.path
    }

    /// The queue.
    pub fn queue(&self) -> &Queue {
        &self.inner.queue
    }

    fn with(self, set: impl FnOnce(&mut Inner)) -> JobRoutes {
        let mut inner = Arc::try_unwrap(self.inner).unwrap_or_else(|shared| Inner {
            queue: shared.queue.clone(),
            reach: shared.reach.clone(),
            path: shared.path.clone(),
            long_polls: shared.long_polls.clone(),
            guard: shared.guard.clone(),
        });
        set(&mut inner);
        JobRoutes {
            inner: Arc::new(inner),
        }
    }

    /// The routes, to merge into any router (they carry their own state): `GET {path}/{id}`
    /// answers 200 with the job as a [`JobBody`], 400 for a malformed id, 404 for an unknown
    /// one, and long-polls with `Prefer: wait=N`; `GET {path}` answers a [`JobsSummary`].
    ///
    /// # Panics
    /// If the path is not one axum can route.
    pub fn router<S: Clone + Send + Sync + 'static>(&self) -> Router<S> {
        let path = &self.inner.path;
        let summary = if path.is_empty() { "/" } else { path };
        Router::new()
            .route(summary, get(summary_route))
            .route(&format!("{path}/{{id}}"), get(job).delete(cancel))
            .route(&format!("{path}/{{id}}/retry"), post(retry))
            .with_state(self.clone())
    }

    /// A job's view, within the store's wait.
    ///
    /// # Errors
    /// [`Error::JobNotFound`], or [`Error::Unavailable`] when the store fails or is out of
    /// reach.
    pub async fn get(&self, id: &JobId) -> Result<JobView, Error> {
        let i = &self.inner;
        match i.reach.call("a job's status", i.queue.get(id)).await {
            Ok(Some(v)) => Ok(v),
            Ok(None) => Err(Error::JobNotFound(id.to_string())),
            Err(e) => Err(Error::Unavailable(e.to_string())),
        }
    }
}

/// What `GET /jobs/{id}` answers: the queue's view of a job, with its result as JSON (not as a
/// string holding JSON). Times are unix milliseconds. Deserialize it to read the answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobBody {
    /// The job's id.
    pub id: String,
    /// Where the job is.
    pub status: JobStatus,
    /// Runs started, not counting those lost with their worker.
    pub attempts: u32,
    /// Runs allowed before the job fails.
    pub max_attempts: u32,
    /// Runs lost with their worker (the lease lapsed).
    pub stalls: u32,
    /// Stalls allowed before the job fails.
    pub max_stalls: u32,
    /// The handler's output once done.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<serde_json::Value>,
    /// The error once failed, or the last error while a retry is pending.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// When the job was accepted.
    pub enqueued_at: u64,
    /// When its latest run started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<u64>,
    /// When it reached `done`, `failed`, `cancelled` or `expired`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<u64>,
    /// Its deadline (`Job-Deadline`), if it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<u64>,
    /// Its priority (`Job-Priority`), 0 (most urgent, left out) to 9.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub priority: u8,
    /// What the job is: its type's name, or for offload's own work the work and its size
    /// (`count:2000000`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
}

fn is_zero(p: &u8) -> bool {
    *p == 0
}

impl From<JobView> for JobBody {
    fn from(v: JobView) -> JobBody {
        // The stored result is the handler's JSON text: handed out as JSON, not as a string.
        let result = v
            .result
            .map(|text| serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text)));
        JobBody {
            id: v.id.to_string(),
            status: v.status,
            attempts: v.attempts,
            max_attempts: v.max_attempts,
            stalls: v.stalls,
            max_stalls: v.max_stalls,
            result,
            error: v.error,
            enqueued_at: v.enqueued_at,
            started_at: v.started_at,
            finished_at: v.finished_at,
            expires_at: v.expires_at,
            priority: v.priority,
            label: v.label,
        }
    }
}

/// Jobs a list page holds when the request names no `limit`.
pub const DEFAULT_PAGE: usize = 100;

/// What `GET /jobs?status=...` answers: a page of jobs, newest first, and where the next one
/// starts. Deserialize it to read the answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobList {
    /// The jobs, newest first.
    pub jobs: Vec<JobBody>,
    /// Pass it as `after` for the next page; `null` when this page reached the oldest.
    pub next: Option<String>,
}

/// What `GET /jobs` answers: the queue's jobs by state and, when asked for (`?latency=N`, any
/// N ≥ 1), enqueue-to-done times.
///
/// The times are read from a histogram the store updates as each job is done (see
/// [`offload_queue::latency`]), so a call costs the same however many jobs are stored. They
/// cover every job done since the queue was created (a Prometheus-style cumulative histogram:
/// not trimmed by the retention), to about 2 % (exact below 23 ms; `max` exact). N no longer
/// picks a number of recent jobs; it is kept so that existing callers work, and `latency=0`
/// (or none) leaves the times out.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobsSummary {
    /// Jobs by state.
    pub counts: Counts,
    /// With `?latency=N`: enqueue-to-done times of every job done.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enqueue_to_done_ms: Option<Spread>,
    /// With `?latency=N`: the same times by the label of each job (offload's own jobs are
    /// labelled with their work, `count:2000000`). At most
    /// [`offload_queue::latency::MAX_LABELS`] labels are kept per queue; jobs of any label
    /// after those count under `other`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub by_work: BTreeMap<String, Spread>,
}

/// Percentiles of a set of durations, in milliseconds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Spread {
    /// How many durations.
    pub count: u64,
    /// The median.
    pub p50: f64,
    /// The 90th percentile.
    pub p90: f64,
    /// The 99th percentile.
    pub p99: f64,
    /// The longest.
    pub max: f64,
}

impl Spread {
    /// The spread of `v` (nearest rank); `None` when it is empty.
    pub fn of(mut v: Vec<f64>) -> Option<Spread> {
        if v.is_empty() {
            return None;
        }
        v.sort_by(f64::total_cmp);
        let n = v.len();
        let at = |p: f64| v[((p * n as f64).ceil() as usize).clamp(1, n) - 1];
        Some(Spread {
            count: n as u64,
            p50: at(0.5),
            p90: at(0.9),
            p99: at(0.99),
            max: v[n - 1],
        })
    }

    /// The spread of a histogram's times; `None` when it holds none. Percentiles are read
    /// from their buckets (see [`offload_queue::latency`]), `max` is exact.
    pub fn of_histogram(h: &Histogram) -> Option<Spread> {
        Some(Spread {
            count: h.count(),
            p50: h.quantile(0.5)?,
            p90: h.quantile(0.9)?,
            p99: h.quantile(0.99)?,
            max: h.max_ms() as f64,
        })
    }
}

/// One page of a list, within the store's wait.
async fn list(routes: &JobRoutes, filter: ListFilter) -> Result<Response, Error> {
    let (queue, reach) = (&routes.inner.queue, &routes.inner.reach);
    let page = reach
        .call("a page of jobs", queue.list(filter))
        .await
        .map_err(|e| Error::Unavailable(e.to_string()))?;
    Ok(axum::Json(JobList {
        jobs: page.jobs.into_iter().map(JobBody::from).collect(),
        next: page.next.map(|c| c.to_string()),
    })
    .into_response())
}

fn finished(v: &JobView) -> bool {
    v.status.is_finished()
}

/// At most this much of a client's text is echoed in an error message.
fn shown(s: &str) -> String {
    s.chars().take(64).collect()
}

/// The job id that ends `path`: the last segment rather than a `Path` parameter, because a
/// nest with parameters of its own (`/t/{tenant}`) adds them to the route's, under names these
/// handlers cannot know.
fn job_id(path: &str) -> Result<JobId, Error> {
    let id = path.rsplit('/').next().unwrap_or_default();
    JobId::parse(id).map_err(|_| Error::BadJobId(shown(id)))
}

/// `GET {path}/{id}`, with long-poll.
async fn job(
    State(routes): State<JobRoutes>,
    headers: HeaderMap,
    uri: Uri,
) -> Result<Response, Error> {
    let prefer = Prefer::parse(headers.get_all("prefer").iter().map(|v| v.as_bytes()))?;
    let id = job_id(uri.path())?;
    let mut view = routes.get(&id).await?;
    let mut applied = None;
    if let Some(wait) = prefer.wait.map(|w| w.min(MAX_LONG_POLL))
        && !finished(&view)
        && let Ok(_permit) = routes.inner.long_polls.clone().try_acquire_owned()
    {
        applied = Prefer::applied(Some(wait), false);
        let end = tokio::time::Instant::now() + wait;
        let mut pause = POLL_FIRST;
        while !finished(&view) {
            let now = tokio::time::Instant::now();
            if now >= end {
                break;
            }
            tokio::time::sleep_until((now + pause).min(end)).await;
            pause = (pause * 2).min(POLL_MAX);
            view = routes.get(&id).await?;
        }
    }
    let mut resp = axum::Json(JobBody::from(view)).into_response();
    set_preference_applied(&mut resp, applied);
    Ok(resp)
}

/// `DELETE {path}/{id}`: cancels a queued or running job and answers it (200, `cancelled`);
/// a job already finished is a 409 `job_finished`, an unknown one a 404; a change the routes
/// do not allow, a 401.
async fn cancel(
    State(routes): State<JobRoutes>,
    headers: HeaderMap,
    uri: Uri,
) -> Result<Response, Error> {
    routes.inner.guard.check(&headers)?;
    let id = job_id(uri.path())?;
    let i = &routes.inner;
    let done = i.reach.call("a cancel", i.queue.cancel(&id)).await;
    match done.map_err(|e| Error::Unavailable(e.to_string()))? {
        Cancel::Cancelled { .. } => {
            let view = routes.get(&id).await?;
            Ok(axum::Json(JobBody::from(view)).into_response())
        }
        Cancel::Finished(status) => Err(Error::JobFinished {
            id: id.to_string(),
            status: status.as_str(),
        }),
        Cancel::NotFound => Err(Error::JobNotFound(id.to_string())),
    }
}

/// `POST {path}/{id}/retry`: queues a failed or cancelled job again with fresh attempts, and
/// answers 202 with the job and its `Location`; 409 `job_not_retryable` for any other status,
/// 503 `overloaded` while the backlog is full; a change the routes do not allow, a 401.
async fn retry(
    State(routes): State<JobRoutes>,
    headers: HeaderMap,
    uri: Uri,
) -> Result<Response, Error> {
    routes.inner.guard.check(&headers)?;
    let job_path = uri.path().strip_suffix("/retry").unwrap_or_default();
    let id = job_id(job_path)?;
    let i = &routes.inner;
    let done = i.reach.call("a retry", i.queue.retry(&id)).await;
    match done.map_err(|e| Error::Unavailable(e.to_string()))? {
        Retry::Queued { .. } => {
            let view = routes.get(&id).await?;
            let mut resp = (StatusCode::ACCEPTED, axum::Json(JobBody::from(view))).into_response();
            if let Ok(location) = HeaderValue::from_str(job_path) {
                resp.headers_mut().insert(header::LOCATION, location);
            }
            Ok(resp)
        }
        Retry::NotRetryable(status) => Err(Error::JobNotRetryable {
            id: id.to_string(),
            status: status.as_str(),
        }),
        Retry::Full(_) => Err(Error::Busy {
            retry_after: Duration::from_secs(1),
        }),
        Retry::NotFound => Err(Error::JobNotFound(id.to_string())),
    }
}

/// `GET {path}`: the counts, and with `?latency=N` the times. Both reads are bounded whatever
/// the number of jobs stored, and answered within the store's wait.
async fn summary_route(
    State(routes): State<JobRoutes>,
    RawQuery(query): RawQuery,
) -> Result<Response, Error> {
    let query = query.unwrap_or_default();
    let mut latency = false;
    let (mut status, mut limit, mut after) = (None, None, None);
    for (k, v) in form_urlencoded::parse(query.as_bytes()) {
        let bad = |what: &str| Error::BadQuery(format!("`{k}` {what}: got {:?}", shown(&v)));
        match k.as_ref() {
            "latency" => {
                latency = v
                    .parse::<u64>()
                    .map_err(|_| bad("must be a whole number"))?
                    > 0
            }
            "status" => {
                status = Some(JobStatus::from_name(&v).ok_or_else(|| {
                    bad("must be queued, running, done, failed, cancelled or expired")
                })?);
            }
            "limit" => {
                let n = v
                    .parse::<usize>()
                    .ok()
                    .filter(|n| (1..=MAX_PAGE).contains(n));
                limit = Some(n.ok_or_else(|| bad("must be a whole number from 1 to 1000"))?);
            }
            "after" => {
                after = Some(
                    Cursor::parse(&v).map_err(|_| bad("must be the `next` of a page before"))?,
                );
            }
            other => {
                return Err(Error::BadQuery(format!(
                    "unknown parameter {:?} (expected `latency`, or `status` with `limit` and \
                     `after`)",
                    shown(other)
                )));
            }
        }
    }
    match status {
        Some(status) if !latency => {
            let filter = ListFilter {
                status,
                limit: limit.unwrap_or(DEFAULT_PAGE),
                after,
            };
            return list(&routes, filter).await;
        }
        Some(_) => {
            return Err(Error::BadQuery(
                "`latency` belongs to the summary; a list (`status`) has no times".to_owned(),
            ));
        }
        None if limit.is_some() || after.is_some() => {
            return Err(Error::BadQuery(
                "`limit` and `after` page a list: name its `status`".to_owned(),
            ));
        }
        None => {}
    }
    let (queue, reach) = (&routes.inner.queue, &routes.inner.reach);
    let read = reach.call("the job counts and times", async {
        let counts = queue.counts().await?;
        let latency = match latency {
            true => Some(queue.latency().await?),
            false => None,
        };
        Ok((counts, latency))
    });
    let (counts, latency) = read.await.map_err(|e| Error::Unavailable(e.to_string()))?;
    let (enqueue_to_done_ms, by_work) = match &latency {
        Some(l) => (
            Spread::of_histogram(&l.total()),
            l.by_label
                .iter()
                .filter(|(label, _)| !label.is_empty())
                .filter_map(|(label, h)| Some((label.clone(), Spread::of_histogram(h)?)))
                .collect(),
        ),
        None => (None, BTreeMap::new()),
    };
    Ok(axum::Json(JobsSummary {
        counts,
        enqueue_to_done_ms,
        by_work,
    })
    .into_response())
}
