//! `auto` for an axum service where you write the handlers: each CPU-heavy job runs in a
//! bounded pool ([`offload_pool`]) when it is predicted to answer within the client's wait,
//! and is otherwise stored as a durable job ([`offload_queue`]) answered 202 with its
//! `Location`, which the ready `GET /jobs/{id}` route serves (with long-poll).
//!
//! - **The decision.** A job's predicted finish in the pool is the work admitted ahead of it
//!   over the threads, plus its own predicted run, from the pool's cost model (learnt from
//!   the runs themselves). If it fits the budget (the request's `Prefer: wait=N`, else
//!   [`Offload::wait`]; never past the deadline), it runs in the pool with its type's handler from your
//!   [`Handlers`] and answers 200 with the output as JSON. If not, it is enqueued
//!   ([`NewJob::of`](offload_queue::NewJob::of)) and answers 202 + `Location: /jobs/{id}` +
//!   an [`AcceptedBody`]. A job is never run in both places.
//! - **One call.** A job type says what its run time grows with ([`Job::units`]) and may give
//!   a first guess of the time per unit ([`Job::SECS_PER_UNIT`]), applied by
//!   [`Offload::new`]; a handler calls [`Auto::run`] with the job alone.
//! - **Types the pool cannot predict yet** (no run measured, no prior) are stored, never run
//!   in the pool on faith: a huge first request must not take a pool thread for minutes. A
//!   worker in the same process made with [`Offload::executor`] teaches the model from each
//!   stored job it runs, so the next jobs of that type are predicted; with workers elsewhere,
//!   give the type a `SECS_PER_UNIT`.
//! - **Overload.** A full queue sends the work to the pool under plain deadline admission (a
//!   late 200 beats a 503); when the pool cannot take it by the deadline either, the request
//!   waits in the queue's [`Line`] for room, in arrival order, and is answered 202 once stored.
//!   Only a request whose wait runs out, or that finds the line at its cap, gets a 503, with a
//!   predicted `Retry-After` and a JSON error body, held to a refusal schedule ([`pace`]) so
//!   that clients that resend at once cannot spin on refusals.
//! - **`Prefer`.** `wait=N` sets the budget (and the long-poll of `GET /jobs/{id}`);
//!   `respond-async` keeps in the pool only work that would start at once. What was honoured
//!   is named in `Preference-Applied`.
//!
//! ```no_run
//! use std::{sync::Arc, time::Duration};
//! use axum::{Json, Router, response::Response, routing::post};
//! use offload_axum::{Auto, Offload};
//! use offload_pool::{Pool, PoolConfig};
//! use offload_queue::worker::{self, WorkerConfig};
//! use offload_queue::{Handlers, Job, QueueOptions};
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Serialize, Deserialize)]
//! struct Blur { radius: u64 }
//! impl Job for Blur {
//!     const NAME: &'static str = "blur";
//!     type Output = u64;
//!     const SECS_PER_UNIT: Option<f64> = Some(1e-6); // a first guess, until one has run
//!     fn units(&self) -> u64 { self.radius * self.radius } // what the run time grows with
//! }
//!
//! async fn blur(auto: Auto, Json(b): Json<Blur>) -> Response {
//!     auto.run(b).await // 200 with the output, 202 with a Location, or 503
//! }
//!
//! # async fn app() -> Result<Router, Box<dyn std::error::Error>> {
//! let handlers = Handlers::new().on(|b: Blur| Ok(b.radius * 2));
//! let pool = Arc::new(Pool::new(PoolConfig::default())?);
//! let queue = offload_queue::open("sqlite://jobs.db", QueueOptions::default()).await?;
//! let offload = Offload::new(pool, queue.clone(), handlers).wait(Duration::from_millis(500));
//! // The stored jobs' worker, in this process: its runs teach the pool's model.
//! let shutdown = std::future::pending(); // Ctrl-C, SIGTERM
//! tokio::spawn(worker::run(queue, offload.executor(), WorkerConfig::default(), shutdown));
//! let app = Router::new()
//!     .route("/blur", post(blur))
//!     .merge(offload.routes()) // GET /jobs/{id}
//!     .with_state(offload); // handlers extract `Auto` from it
//! # Ok(app) }
//! ```
//!
//! - **State.** [`Auto`] is taken from the router's state: `with_state(offload)`, or your own
//!   state with an `impl FromRef<AppState> for Offload` (or `#[derive(FromRef)]`, with axum's
//!   `macros` feature). A router whose state gives no [`Offload`] does not compile.
//! - **Nesting.** Merge [`Offload::routes`] beside the handlers and nest them together:
//!   under `Router::new().nest("/api", app)`, a 202's `Location` is `/api/jobs/{id}`, which
//!   those routes answer; a nest with parameters (`/t/{tenant}`) works alike. The jobs' path is
//!   [`Offload::jobs_path`].
//! - **Errors.** Every error is JSON `{"error": {"code", "message"}}` ([`ErrorBody`]);
//!   [`error_response`] answers a service's own bad requests in the same shape.
//!
//! Run a worker for the stored jobs in the same process with
//! [`offload_queue::worker::run`] and [`Offload::executor`] (see `examples/auto.rs`), or
//! elsewhere on the same queue with `handlers.executor()`.
//!
//! # Layout
//! - [`Offload`] (`lib.rs`): the pool, the queue, the handlers and the settings; the
//!   executor of a worker in the same process.
//! - [`Auto`] (`auto.rs`): the extractor and the decision.
//! - [`JobRoutes`] (`jobs.rs`): the `/jobs` routes over any queue, which `offload serve`
//!   mounts too; who may change jobs through them ([`Changes`], [`AdminToken`]: `admin.rs`).
//! - [`PaceRefusals`] (`pace.rs`): 503s held to a schedule, for any router.
//! - [`Prefer`] (`prefer.rs`): RFC 7240 parsing.
//! - [`Error`] (`error.rs`): every error answer, as JSON ([`ErrorBody`], [`error_response`]).

#![warn(missing_docs)]

pub mod admin;
mod auto;
pub mod decide;
mod error;
pub mod jobs;
mod limits;
pub mod pace;
mod prefer;
pub mod submit;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use offload_pool::Pool;
use offload_pool::admission::Class;
use offload_pool::pace::Pacer;
use offload_queue::worker::Executor;
use offload_queue::{Eta, Handlers, Job, Line, Queue};

pub use admin::{AdminToken, Changes};
pub use auto::{AcceptedBody, Auto};
pub use error::{Error, ErrorBody, ErrorDetail, error_response};
pub use jobs::{
    DEFAULT_PAGE, JobBody, JobList, JobRoutes, JobsSummary, MAX_LONG_POLL, MAX_LONG_POLLS, Spread,
};
pub use limits::raise_open_files;
pub use pace::PaceRefusals;
pub use prefer::{MAX_WAIT_SECS, Prefer, set_preference_applied};
pub use submit::Submit;

/// The budget when the client states none: a quarter second, as `offload serve
/// --auto-wait`, so a job either answers about as fast as a page or is stored.
pub const DEFAULT_WAIT: Duration = Duration::from_millis(250);

/// The longest predicted time to done the queue takes on by default ([`Offload::max_queue_wait`]):
/// five minutes, as long as a client that took a 202 can be expected to come back for; past it
/// the queue counts as full and requests wait in its line, then get a 503.
pub const DEFAULT_MAX_QUEUE_WAIT: Duration = offload_queue::line::DEFAULT_TIME_CAP;

/// How long work in the pool may run, budget or not: a job too big for the budget is stored,
/// so this bounds only the work the pool takes when the queue is full.
pub const DEFAULT_DEADLINE: Duration = Duration::from_secs(30);

/// Where [`Offload::routes`] serves the jobs, and so where a 202's `Location` points (under
/// the path the router is nested at): `/jobs/{id}`, as `offload serve` answers.
pub const DEFAULT_JOBS_PATH: &str = "/jobs";

/// `auto` for a service: the pool, the queue, the handlers of each job type, and the
/// settings. Cheap to clone (one `Arc`). Handlers extract [`Auto`] from it as the router's
/// state (`with_state(offload)`), or from a state of your own that gives it through
/// [`FromRef`](axum::extract::FromRef).
#[derive(Debug, Clone)]
pub struct Offload {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    pool: Arc<Pool>,
    queue: Queue,
    /// Requests waiting for room while the queue is full, in arrival order.
    line: Line,
    /// The backlog's clock: when a job stored now would be done.
    eta: Eta,
    max_queue_wait: Duration,
    /// The schedule its 503s are held to.
    pacer: Arc<Pacer>,
    handlers: Handlers,
    /// Cost-model class of each job type, by name.
    classes: HashMap<&'static str, Class>,
    wait: Duration,
    deadline: Duration,
    /// The `/jobs` routes, at the path its 202s point to.
    jobs: JobRoutes,
}

impl Offload {
    /// `auto` over `pool` and `queue`, running each job type with its handler in `handlers`
    /// (the same handlers a worker on `queue` should run). Budget [`DEFAULT_WAIT`], deadline
    /// [`DEFAULT_DEADLINE`], jobs at [`DEFAULT_JOBS_PATH`].
    ///
    /// Each job type is a class of the pool's cost model ([`CostModel::class`]), named as the
    /// type ([`Job::NAME`]), with its [`Job::SECS_PER_UNIT`], if any, as that class's prior (a
    /// first guess, replaced by the first measured run). Work of your own that you submit to
    /// the same pool under one of those names is taken to be that job type's; name other
    /// work otherwise. A type the model has no room for (past
    /// [`MAX_CLASSES`](offload_pool::admission::MAX_CLASSES) names in the pool) is never
    /// predicted, so it is always stored (see [`Auto::run`]), and a warning says so.
    ///
    /// [`CostModel::class`]: offload_pool::admission::CostModel::class
    pub fn new(pool: Arc<Pool>, queue: Queue, handlers: Handlers) -> Offload {
        let mut classes = HashMap::new();
        for name in handlers.names() {
            let class = pool.model().class(name).unwrap_or_else(|e| {
                tracing::warn!(
                    job = name,
                    "offload-axum: {e}: the job type is always stored"
                );
                Class::NONE
            });
            if let Some(secs) = handlers.secs_per_unit(name) {
                pool.model().prior(class, secs);
            }
            classes.insert(name, class);
        }
        let eta = Eta::new(queue.clone());
        let jobs = JobRoutes::new(queue.clone());
        Offload {
            inner: Arc::new(Inner {
                pool,
                line: Line::with_defaults(queue.clone())
                    .with_time_cap(eta.clone(), DEFAULT_MAX_QUEUE_WAIT),
                eta,
                max_queue_wait: DEFAULT_MAX_QUEUE_WAIT,
                queue,
                pacer: Arc::new(Pacer::default()),
                handlers,
                classes,
                wait: DEFAULT_WAIT,
                deadline: DEFAULT_DEADLINE,
                jobs,
            }),
        }
    }

    /// Sets the budget for requests that state no `Prefer: wait`: work predicted to finish
    /// later is stored as a job.
    #[must_use]
    pub fn wait(self, wait: Duration) -> Offload {
        self.with(|i| i.wait = wait)
    }

    /// Sets how long work in the pool may run before it is abandoned (504): the deadline of
    /// the plain admission used when the queue is full.
    #[must_use]
    pub fn deadline(self, deadline: Duration) -> Offload {
        self.with(|i| i.deadline = deadline)
    }

    /// Holds this service's 503s to `pacer`'s schedule, rather than to one of its own (the
    /// default: [`Pacer::default`]). Give the same pacer to a [`PaceRefusals`] layer on routes
    /// that refuse by themselves, so that the server has one schedule.
    #[must_use]
    pub fn pacer(self, pacer: Arc<Pacer>) -> Offload {
        self.with(|i| i.pacer = pacer)
    }

    /// Sets the longest predicted time to done that the queue may take on: past it the queue
    /// counts as full, whatever its count of jobs, and requests wait in its line for room (see
    /// [`Auto::run`]). The prediction is the backlog over the rate its workers finish jobs
    /// ([`Eta`]), so the cap means the same wait on any machine; a 202's
    /// [`AcceptedBody::done_in_us`] says what was predicted for the job.
    #[must_use]
    pub fn max_queue_wait(self, max: Duration) -> Offload {
        self.with(|i| {
            i.max_queue_wait = max;
            i.line = Line::with_defaults(i.queue.clone()).with_time_cap(i.eta.clone(), max);
        })
    }

    /// Sets where [`Offload::routes`] serves the jobs, `{path}/{id}`, and so where a 202's
    /// `Location` points (after the path the router is nested at). A plain path: a missing
    /// leading `/` is added and a trailing one dropped; `/` alone serves `/{id}`. A path axum
    /// cannot route (one with `{` or `}`) panics in [`Offload::routes`], as in `Router::route`.
    #[must_use]
    pub fn jobs_path(self, path: &str) -> Offload {
        self.with(|i| i.jobs = i.jobs.clone().path(path))
    }

    /// Says who may cancel and retry jobs through [`Offload::routes`] ([`Changes::Open`] by
    /// default; see [`JobRoutes::changes`]).
    #[must_use]
    pub fn job_changes(self, changes: Changes) -> Offload {
        self.with(|i| i.jobs = i.jobs.clone().changes(changes))
    }

    fn with(self, set: impl FnOnce(&mut Inner)) -> Offload {
        let mut inner = Arc::try_unwrap(self.inner).unwrap_or_else(|shared| Inner {
            pool: shared.pool.clone(),
            queue: shared.queue.clone(),
            line: shared.line.clone(),
            eta: shared.eta.clone(),
            max_queue_wait: shared.max_queue_wait,
            pacer: shared.pacer.clone(),
            handlers: shared.handlers.clone(),
            classes: shared.classes.clone(),
            wait: shared.wait,
            deadline: shared.deadline,
            jobs: shared.jobs.clone(),
        });
        set(&mut inner);
        Offload {
            inner: Arc::new(inner),
        }
    }

    /// The cost-model class of job type `J` (see [`Offload::new`]), to read what the pool
    /// has learnt of it (`pool.model().secs_per_unit(class)`). A type's first guess is its
    /// [`Job::SECS_PER_UNIT`]; a prior given later with `pool.model().prior(class, secs)`
    /// counts only for a type that has neither that nor a measured run.
    pub fn class<J: Job>(&self) -> Class {
        self.inner
            .classes
            .get(J::NAME)
            .copied()
            .unwrap_or(Class::NONE)
    }

    /// An [`Executor`] for a [`worker`](offload_queue::worker::run) in this process that
    /// runs the stored jobs with these handlers on tokio's blocking threads (as
    /// [`Handlers::executor`]) and teaches the pool's cost model from each run that succeeds:
    /// its type's class, its [`Job::units`] and the time it took. So a type that has never
    /// run in the pool, and had no [`Job::SECS_PER_UNIT`], is predicted once its first
    /// stored job is done here, and its later jobs run in the pool when they fit.
    pub fn executor(&self) -> Executor {
        let (pool, classes) = (self.inner.pool.clone(), self.inner.classes.clone());
        let handlers = self.inner.handlers.clone();
        handlers
            .on_run(move |run| {
                let class = classes.get(run.job).copied().unwrap_or(Class::NONE);
                pool.model().observe(class, run.units, run.took);
            })
            .executor()
    }

    /// The pool.
    pub fn pool(&self) -> &Arc<Pool> {
        &self.inner.pool
    }

    /// The queue.
    pub fn queue(&self) -> &Queue {
        &self.inner.queue
    }

    /// The queue's clock: its backlog and the rate its workers finish jobs ([`Eta::predict`]).
    pub fn eta(&self) -> &Eta {
        &self.inner.eta
    }

    /// The line in front of the queue, and its counts ([`Line::stats`]).
    pub fn waiting_line(&self) -> &Line {
        &self.inner.line
    }

    /// The schedule this service's 503s are held to, and its counts ([`Pacer::stats`]).
    pub fn refusals(&self) -> &Arc<Pacer> {
        &self.inner.pacer
    }

    /// The `/jobs` routes ([`JobRoutes`], at [`Offload::jobs_path`]), to merge into any router
    /// beside the handlers that extract [`Auto`], so that they answer where their 202s point,
    /// nested or not: `GET /jobs/{id}` answers 200 with the job as a [`JobBody`], 400 for a
    /// malformed id, 404 for an unknown one, and `Prefer: wait=N` long-polls until the job is
    /// done or failed (at most [`MAX_LONG_POLL`]); `GET /jobs` answers a [`JobsSummary`]. They
    /// carry their own state, so they merge into a router of any state.
    ///
    /// # Panics
    /// If [`Offload::jobs_path`] is not a path axum can route.
    pub fn routes<S: Clone + Send + Sync + 'static>(&self) -> Router<S> {
        self.inner.jobs.router()
    }

    /// The `/jobs` routes themselves ([`Offload::routes`] is their router), to read a job as
    /// they do ([`JobRoutes::get`]).
    pub fn job_routes(&self) -> &JobRoutes {
        &self.inner.jobs
    }
}

#[cfg(test)]
mod tests;
