//! Typed jobs: a job type is a serde value with a name ([`Job`]); [`NewJob::of`] stores one,
//! [`Handlers`] maps each name to the function that runs it, and [`JobView::output`] reads a
//! result back as the type's [`Job::Output`]. A type also says what its run time grows with
//! ([`Job::units`]) and may give a first guess of the time per unit ([`Job::SECS_PER_UNIT`]),
//! for code that predicts run times (offload-axum's `auto`); [`Handlers::on_run`] hears each
//! finished run with its units and time. A type may have a time limit
//! ([`Handlers::timeout`], [`Handlers::default_timeout`]): a run over it is told to stop and
//! fails as `timed_out`, retried like any error.
//!
//! A stored job is JSON text, `{"job": NAME, "payload": ...}`: the queue's backends never look
//! inside, so any backend carries any job type, and a worker that meets a name it has no handler
//! for fails that job at once (no retry) rather than guess.
//!
//! ```
//! use offload_queue::{Handlers, Job, JobError, NewJob};
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Serialize, Deserialize)]
//! struct Fib { n: u32 }
//!
//! impl Job for Fib {
//!     const NAME: &'static str = "fib";
//!     type Output = u64;
//! }
//!
//! fn fib(n: u32) -> u64 { if n < 2 { n as u64 } else { fib(n - 1) + fib(n - 2) } }
//!
//! let handlers = Handlers::new().on(|job: Fib| {
//!     if job.n > 60 { return Err(JobError::fatal("n > 60 would not finish")); }
//!     Ok(fib(job.n))
//! });
//! let stored = NewJob::of(&Fib { n: 20 }).unwrap();
//! // What a worker does with a claimed job's payload:
//! assert_eq!(handlers.run(&stored.payload).unwrap(), "6765");
//! ```

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::worker::{BoxFuture, Executor};
use crate::{JobError, JobView, NewJob};

/// A kind of job: a serde value with a stable name. The name is stored with each job and picks
/// its handler in the worker, so renaming a type's `NAME` orphans the jobs already stored.
pub trait Job: Serialize + DeserializeOwned + Send + 'static {
    /// The job's name, unique among the types one queue carries (at most
    /// [`MAX_LABEL_LEN`](crate::MAX_LABEL_LEN) bytes are kept as its latency label).
    const NAME: &'static str;
    /// What a run returns, stored as the job's result (JSON).
    type Output: Serialize + DeserializeOwned + Send + 'static;

    /// A first guess of the seconds one unit of this job takes on one thread ([`Job::units`]),
    /// for code that predicts run times before any has run (offload-axum's `auto` gives it to
    /// its pool's cost model, which replaces it with the first measured run). `None` (the
    /// default): no guess, and such code must not assume the job is cheap. A value that is
    /// not a positive, finite number counts as `None`.
    const SECS_PER_UNIT: Option<f64> = None;

    /// The size of this job, in whatever its run time grows in proportion to (items, bytes,
    /// iterations): a prediction of its run is its units times the measured time per unit.
    /// The default, 1, suits a type whose jobs all take about as long. Override it when jobs
    /// of a type differ in size; count so that the run time is proportional to the units (a
    /// fixed overhead counted as one unit makes small jobs look expensive).
    fn units(&self) -> u64 {
        1
    }
}

/// The stored form of a typed job.
#[derive(Serialize)]
struct Envelope<'a, T> {
    job: &'a str,
    payload: &'a T,
}

/// The stored form read back, the payload left as text for its handler to parse.
#[derive(serde::Deserialize)]
struct RawEnvelope<'a> {
    #[serde(borrow)]
    job: std::borrow::Cow<'a, str>,
    #[serde(borrow)]
    payload: &'a serde_json::value::RawValue,
}

impl NewJob {
    /// A job of type `J`, labelled with its name (its enqueue-to-done time is counted under it).
    ///
    /// # Errors
    /// If `job` cannot be written as JSON (a map with non-string keys, say).
    pub fn of<J: Job>(job: &J) -> Result<NewJob, serde_json::Error> {
        let payload = serde_json::to_string(&Envelope {
            job: J::NAME,
            payload: job,
        })?;
        Ok(NewJob::new(payload).label(J::NAME))
    }
}

impl JobView {
    /// The result as `J`'s output: `None` until the job is done.
    ///
    /// # Errors
    /// If the stored result is not a `J::Output` (the job was of another type).
    pub fn output<J: Job>(&self) -> Option<Result<J::Output, serde_json::Error>> {
        self.result.as_deref().map(serde_json::from_str)
    }
}

/// One job type's handler, type-erased: payload text in, result text and the job's units out.
type Erased = Arc<dyn Fn(&str, &JobContext) -> Result<(String, u64), JobError> + Send + Sync>;

/// What a handler registered with [`Handlers::on_with`] is told about its run: whether it
/// should stop. Long work checks [`JobContext::stopped`] every few milliseconds and returns
/// early (any error: the error a stopped run returns is not what is stored).
///
/// A run is told to stop when the worker no longer holds its job: the job was cancelled
/// ([`JobQueue::cancel`](crate::JobQueue::cancel)), its lease was lost, or the worker shut
/// down past its grace; and when it has run for its type's time limit
/// ([`Handlers::timeout`]). The worker finds a cancel at its next heartbeat
/// ([`worker::DEFAULT_HEARTBEAT`](crate::worker::DEFAULT_HEARTBEAT)).
#[derive(Debug, Clone, Default)]
pub struct JobContext {
    stop: Arc<AtomicBool>,
}

impl JobContext {
    /// A context whose run is never told to stop, until [`JobContext::stop`].
    pub fn new() -> JobContext {
        JobContext::default()
    }

    /// Whether the run should stop now.
    pub fn stopped(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    /// Tells the run to stop.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Tells its context to stop when dropped: an executor's future holds one, so a run whose
/// future the worker drops (lease lost, job cancelled) is told to stop on its thread.
struct StopOnDrop(JobContext);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.stop();
    }
}

/// What [`Handlers`] keeps of one job type.
#[derive(Clone)]
pub(crate) struct Entry {
    run: Erased,
    /// The type's [`Job::SECS_PER_UNIT`], when it is a usable guess.
    secs_per_unit: Option<f64>,
    /// The type's own time limit ([`Handlers::timeout`]).
    timeout: Option<Duration>,
    /// What its runs took, and its prior, for predictions ([`Handlers::predict`]).
    pub(crate) cost: Arc<crate::backlog::Cost>,
}

/// Told of each run that succeeded ([`Handlers::on_run`]).
type OnRun = Arc<dyn Fn(&JobRun) + Send + Sync>;

/// One run of a job that succeeded, as [`Handlers::on_run`] hears of it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct JobRun {
    /// The job type's [`Job::NAME`].
    pub job: &'static str,
    /// The job's [`Job::units`].
    pub units: u64,
    /// How long the run took on its thread: reading the payload, the handler, and writing
    /// the result.
    pub took: Duration,
}

/// The functions that run each job type, by name. Cheap to clone; share one between a
/// [`worker`](crate::worker) and any code that runs the same jobs in-process.
#[derive(Clone, Default)]
pub struct Handlers {
    pub(crate) by_name: HashMap<&'static str, Entry>,
    on_run: Option<OnRun>,
    /// The type registered last, which [`Handlers::timeout`] applies to.
    pub(crate) last: Option<&'static str>,
    /// The time limit of types without their own ([`Handlers::default_timeout`]).
    default_timeout: Option<Duration>,
    /// Runs past their time limit still on their thread, shared by every clone.
    stuck: Arc<AtomicUsize>,
}

impl fmt::Debug for Handlers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut names: Vec<_> = self.by_name.keys().collect();
        names.sort();
        f.debug_struct("Handlers")
            .field("jobs", &names)
            .field("on_run", &self.on_run.is_some())
            .field("default_timeout", &self.default_timeout)
            .field("stuck", &self.stuck())
            .finish()
    }
}

impl Handlers {
    /// No handlers yet.
    pub fn new() -> Handlers {
        Handlers::default()
    }

    /// Runs jobs of type `J` with `handler`. The handler is plain (blocking) code: the
    /// executor decides which thread runs it ([`Handlers::executor`] uses tokio's blocking
    /// threads; offload's worker uses its bounded pool). A later handler for the same name
    /// replaces the earlier one (and drops its time limit). The type's [`Job::SECS_PER_UNIT`]
    /// is kept with it ([`Handlers::secs_per_unit`]). A [`Handlers::timeout`] right after sets
    /// this type's time limit.
    #[must_use]
    pub fn on<J, F>(self, handler: F) -> Handlers
    where
        J: Job,
        F: Fn(J) -> Result<J::Output, JobError> + Send + Sync + 'static,
    {
        self.on_with(move |job: J, _: &JobContext| handler(job))
    }

    /// As [`Handlers::on`], for a handler that is told whether to stop ([`JobContext`]):
    /// long work should check [`JobContext::stopped`] every few milliseconds, so that a
    /// cancelled job frees its thread.
    ///
    /// ```
    /// use offload_queue::{Handlers, Job, JobContext, JobError};
    /// # #[derive(serde::Serialize, serde::Deserialize)] struct Count { n: u64 }
    /// # impl Job for Count { const NAME: &'static str = "count"; type Output = u64; }
    /// let handlers = Handlers::new().on_with(|job: Count, cx: &JobContext| {
    ///     let mut total = 0u64;
    ///     for i in 0..job.n {
    ///         if i % 1_000_000 == 0 && cx.stopped() {
    ///             return Err(JobError::retry("stopped"));
    ///         }
    ///         total += i & 1;
    ///     }
    ///     Ok(total)
    /// });
    /// # assert_eq!(handlers.run(r#"{"job":"count","payload":{"n":10}}"#).unwrap(), "5");
    /// ```
    #[must_use]
    pub fn on_with<J, F>(mut self, handler: F) -> Handlers
    where
        J: Job,
        F: Fn(J, &JobContext) -> Result<J::Output, JobError> + Send + Sync + 'static,
    {
        let run: Erased = Arc::new(move |payload: &str, cx: &JobContext| {
            let job: J = serde_json::from_str(payload)
                .map_err(|e| JobError::fatal(format!("bad payload for job {:?}: {e}", J::NAME)))?;
            let units = job.units();
            let output = handler(job, cx)?;
            let json = serde_json::to_string(&output).map_err(|e| {
                JobError::fatal(format!("cannot write the result of job {:?}: {e}", J::NAME))
            })?;
            Ok((json, units))
        });
        let secs_per_unit = J::SECS_PER_UNIT.filter(|s| s.is_finite() && *s > 0.0);
        let entry = Entry {
            run,
            secs_per_unit,
            timeout: None,
            cost: Arc::new(crate::backlog::Cost::with_prior(secs_per_unit)),
        };
        self.by_name.insert(J::NAME, entry);
        self.last = Some(J::NAME);
        self
    }

    /// Limits the run time of the job type registered last (by [`Handlers::on`] or
    /// [`Handlers::on_with`]) to `limit`; called before any type is registered, it sets
    /// [`Handlers::default_timeout`]. No type has a limit unless one is set.
    ///
    /// A run over its limit is told to stop ([`JobContext::stopped`]) and fails with an error
    /// that starts with [`TIMED_OUT`](crate::TIMED_OUT) (`timed_out after 30s`), retried with
    /// backoff like any retryable error until the job's attempts are spent. The limit counts
    /// the run on its thread, not its wait for one. A thread cannot be killed: a handler that
    /// has not returned [`STOP_GRACE`](crate::STOP_GRACE) after it was told to stop keeps its
    /// thread, and counts as stuck ([`Handlers::stuck`], and a warning logged) until it
    /// returns; its result is discarded. Limits hold for runs of an executor
    /// ([`Handlers::executor`], [`Handlers::executor_on`]), not of [`Handlers::run`], which has
    /// no one to watch the clock.
    ///
    /// ```
    /// use std::time::Duration;
    /// use offload_queue::{Handlers, Job, JobContext};
    /// # #[derive(serde::Serialize, serde::Deserialize)] struct Resize;
    /// # impl Job for Resize { const NAME: &'static str = "resize"; type Output = (); }
    /// # #[derive(serde::Serialize, serde::Deserialize)] struct Mail;
    /// # impl Job for Mail { const NAME: &'static str = "mail"; type Output = (); }
    /// let handlers = Handlers::new()
    ///     .on_with(|_: Resize, _: &JobContext| Ok(()))
    ///     .timeout(Duration::from_secs(30)) // resize: 30 s
    ///     .on(|_: Mail| Ok(()))             // mail: the default
    ///     .default_timeout(Duration::from_secs(300));
    /// assert_eq!(handlers.timeout_of("resize"), Some(Duration::from_secs(30)));
    /// assert_eq!(handlers.timeout_of("mail"), Some(Duration::from_secs(300)));
    /// ```
    #[must_use]
    pub fn timeout(mut self, limit: Duration) -> Handlers {
        match self.last.and_then(|name| self.by_name.get_mut(name)) {
            Some(entry) => entry.timeout = Some(limit),
            None => self.default_timeout = Some(limit),
        }
        self
    }

    /// Limits the run time of every job type without a limit of its own
    /// ([`Handlers::timeout`]) to `limit`.
    #[must_use]
    pub fn default_timeout(mut self, limit: Duration) -> Handlers {
        self.default_timeout = Some(limit);
        self
    }

    /// The time limit of job type `name`: its own, else the default; `None` if it has no
    /// handler here or no limit.
    pub fn timeout_of(&self, name: &str) -> Option<Duration> {
        self.by_name.get(name)?.timeout.or(self.default_timeout)
    }

    /// Runs past their time limit that ignored their stop check and are still on their thread
    /// now, counted over every executor made from these handlers or their clones: each holds
    /// a thread that runs nothing else until it returns.
    pub fn stuck(&self) -> usize {
        self.stuck.load(Ordering::Acquire)
    }

    /// Calls `observe` after each run of any type that succeeds, on the thread that ran it,
    /// with the job's type, units and run time: to learn how long a unit of each type takes
    /// (offload-axum's `Offload::executor` teaches its pool's cost model so). Failed runs are
    /// not told: one that stops early says nothing of its units. Each call adds an `observe`;
    /// all are told, in the order they were added.
    #[must_use]
    pub fn on_run<F>(mut self, observe: F) -> Handlers
    where
        F: Fn(&JobRun) + Send + Sync + 'static,
    {
        self.on_run = Some(match self.on_run.take() {
            None => Arc::new(observe),
            Some(earlier) => Arc::new(move |run: &JobRun| {
                earlier(run);
                observe(run);
            }),
        });
        self
    }

    /// The first guess of the seconds per unit of job type `name` ([`Job::SECS_PER_UNIT`]),
    /// if its type gives a usable one and has a handler here.
    pub fn secs_per_unit(&self, name: &str) -> Option<f64> {
        self.by_name.get(name)?.secs_per_unit
    }

    /// The names that have a handler, sorted.
    pub fn names(&self) -> Vec<&'static str> {
        let mut names: Vec<_> = self.by_name.keys().copied().collect();
        names.sort_unstable();
        names
    }

    /// Finds the handler for a stored job and returns the run, ready to be called on whatever
    /// thread should do the work. A run that succeeds is told to [`Handlers::on_run`]'s
    /// `observe`, if set.
    ///
    /// # Errors
    /// A non-retryable [`JobError`] if the payload is not a typed job or names a job type with
    /// no handler here.
    pub fn prepare(
        &self,
        stored: &str,
    ) -> Result<impl FnOnce() -> Result<String, JobError> + Send + 'static, JobError> {
        self.prepare_with(stored, JobContext::new())
    }

    /// As [`Handlers::prepare`], with the context its handler is given: stop the run with
    /// [`JobContext::stop`] on a clone of `cx`.
    ///
    /// # Errors
    /// As [`Handlers::prepare`].
    pub fn prepare_with(
        &self,
        stored: &str,
        cx: JobContext,
    ) -> Result<impl FnOnce() -> Result<String, JobError> + Send + 'static, JobError> {
        self.prepare_entry(stored, cx).map(|prepared| prepared.run)
    }

    /// As [`Handlers::prepare_with`], with the job's type and its time limit.
    fn prepare_entry(
        &self,
        stored: &str,
        cx: JobContext,
    ) -> Result<Prepared<impl FnOnce() -> Result<String, JobError> + Send + 'static>, JobError>
    {
        let envelope: RawEnvelope<'_> = serde_json::from_str(stored)
            .map_err(|e| JobError::fatal(format!("not a typed job: {e}")))?;
        let (&job, entry) = self
            .by_name
            .get_key_value(envelope.job.as_ref())
            .ok_or_else(|| {
                JobError::fatal(format!(
                    "no handler for job {:?} (this worker runs {:?})",
                    envelope.job,
                    self.names()
                ))
            })?;
        let (run, payload) = (entry.run.clone(), envelope.payload.get().to_owned());
        let (on_run, cost) = (self.on_run.clone(), Arc::clone(&entry.cost));
        let limit = entry.timeout.or(self.default_timeout);
        let run = move || {
            let start = Instant::now();
            let (json, units) = run(&payload, &cx)?;
            let took = start.elapsed();
            cost.ran(units, took);
            if let Some(observe) = on_run {
                observe(&JobRun { job, units, took });
            }
            Ok(json)
        };
        Ok(Prepared { job, limit, run })
    }

    /// Runs a stored job on this thread: [`Handlers::prepare`], then the run.
    ///
    /// # Errors
    /// As [`Handlers::prepare`], or the handler's own error.
    pub fn run(&self, stored: &str) -> Result<String, JobError> {
        (self.prepare(stored)?)()
    }

    /// An [`Executor`] for [`worker::run`](crate::worker::run) that runs each job on tokio's
    /// blocking threads (the worker's `concurrency` bounds how many at once).
    pub fn executor(self) -> Executor {
        self.executor_on(|run| {
            Box::pin(async move {
                tokio::task::spawn_blocking(run)
                    .await
                    .unwrap_or_else(|e| Err(JobError::retry(format!("the job panicked: {e}"))))
            })
        })
    }

    /// An [`Executor`] that hands each prepared run to `spawn`, which runs it on a thread of
    /// its choosing (a bounded pool, say) and resolves to its result. When the worker drops
    /// the run's future (its job was cancelled or its lease lost), the handler's
    /// [`JobContext::stopped`] turns true. A run of a type with a time limit
    /// ([`Handlers::timeout`]) is also told to stop at its limit, and fails as timed out.
    pub fn executor_on<S>(self, spawn: S) -> Executor
    where
        S: Fn(Run) -> BoxFuture<Result<String, JobError>> + Send + Sync + 'static,
    {
        Arc::new(move |payload: String| {
            let cx = JobContext::new();
            let Prepared { job, limit, run } = match self.prepare_entry(&payload, cx.clone()) {
                Ok(prepared) => prepared,
                Err(e) => return Box::pin(std::future::ready(Err(e))),
            };
            // A worker with metrics lends the run's meter: the run is timed on its thread.
            let meter = crate::metrics::take_meter();
            let stuck_gauge = meter.as_ref().map(|m| m.stuck().clone());
            let run: Run = match meter {
                None => Box::new(run),
                Some(meter) => Box::new(move || {
                    let _on_thread = meter.on_thread();
                    run()
                }),
            };
            let running = match limit {
                None => spawn(run),
                Some(limit) => crate::timeout::limited(
                    run,
                    &spawn,
                    cx.clone(),
                    limit,
                    job,
                    crate::timeout::Stuck {
                        count: Arc::clone(&self.stuck),
                        gauge: stuck_gauge,
                    },
                ),
            };
            Box::pin(async move {
                let _stop = StopOnDrop(cx);
                running.await
            })
        })
    }
}

/// A stored job found and ready to run: its type, its time limit and the run.
struct Prepared<R> {
    job: &'static str,
    limit: Option<Duration>,
    run: R,
}

/// A prepared run of one job, for [`Handlers::executor_on`]: call it on the thread that should
/// do the work.
pub type Run = Box<dyn FnOnce() -> Result<String, JobError> + Send + 'static>;

#[cfg(test)]
#[path = "job_tests.rs"]
mod tests;
