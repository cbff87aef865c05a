//! Typed jobs: a job type is a serde value with a name ([`Job`]); [`NewJob::of`] stores one,
//! [`Handlers`] maps each name to the function that runs it, and [`JobView::output`] reads a
//! result back as the type's [`Job::Output`].
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

/// One job type's handler, type-erased: payload text in, result text out.
type Erased = Arc<dyn Fn(&str) -> Result<String, JobError> + Send + Sync>;

/// The functions that run each job type, by name. Cheap to clone; share one between a
/// [`worker`](crate::worker) and any code that runs the same jobs in-process.
#[derive(Clone, Default)]
pub struct Handlers {
    by_name: HashMap<&'static str, Erased>,
}

impl fmt::Debug for Handlers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut names: Vec<_> = self.by_name.keys().collect();
        names.sort();
        f.debug_struct("Handlers").field("jobs", &names).finish()
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
    /// replaces the earlier one.
    #[must_use]
    pub fn on<J, F>(mut self, handler: F) -> Handlers
    where
        J: Job,
        F: Fn(J) -> Result<J::Output, JobError> + Send + Sync + 'static,
    {
        let erased: Erased = Arc::new(move |payload: &str| {
            let job: J = serde_json::from_str(payload)
                .map_err(|e| JobError::fatal(format!("bad payload for job {:?}: {e}", J::NAME)))?;
            let output = handler(job)?;
            serde_json::to_string(&output).map_err(|e| {
                JobError::fatal(format!("cannot write the result of job {:?}: {e}", J::NAME))
            })
        });
        self.by_name.insert(J::NAME, erased);
        self
    }

    /// The names that have a handler, sorted.
    pub fn names(&self) -> Vec<&'static str> {
        let mut names: Vec<_> = self.by_name.keys().copied().collect();
        names.sort_unstable();
        names
    }

    /// Finds the handler for a stored job and returns the run, ready to be called on whatever
    /// thread should do the work.
    ///
    /// # Errors
    /// A non-retryable [`JobError`] if the payload is not a typed job or names a job type with
    /// no handler here.
    pub fn prepare(
        &self,
        stored: &str,
    ) -> Result<impl FnOnce() -> Result<String, JobError> + Send + 'static, JobError> {
        let envelope: RawEnvelope<'_> = serde_json::from_str(stored)
            .map_err(|e| JobError::fatal(format!("not a typed job: {e}")))?;
        let handler = self.by_name.get(envelope.job.as_ref()).ok_or_else(|| {
            JobError::fatal(format!(
                "no handler for job {:?} (this worker runs {:?})",
                envelope.job,
                self.names()
            ))
        })?;
        let (handler, payload) = (handler.clone(), envelope.payload.get().to_owned());
        Ok(move || handler(&payload))
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
    /// its choosing (a bounded pool, say) and resolves to its result.
    pub fn executor_on<S>(self, spawn: S) -> Executor
    where
        S: Fn(Run) -> BoxFuture<Result<String, JobError>> + Send + Sync + 'static,
    {
        Arc::new(move |payload: String| match self.prepare(&payload) {
            Ok(run) => spawn(Box::new(run)),
            Err(e) => Box::pin(std::future::ready(Err(e))),
        })
    }
}

/// A prepared run of one job, for [`Handlers::executor_on`]: call it on the thread that should
/// do the work.
pub type Run = Box<dyn FnOnce() -> Result<String, JobError> + Send + 'static>;

#[cfg(test)]
mod tests {
    use serde::{Deserialize, Serialize};

    use super::*;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Square {
        x: i64,
    }
    impl Job for Square {
        const NAME: &'static str = "square";
        type Output = i64;
    }

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Greet(String);
    impl Job for Greet {
        const NAME: &'static str = "greet";
        type Output = String;
    }

    fn handlers() -> Handlers {
        Handlers::new()
            .on(|s: Square| Ok(s.x * s.x))
            .on(|g: Greet| {
                if g.0.is_empty() {
                    Err(JobError::fatal("nobody to greet"))
                } else {
                    Ok(format!("hello, {}", g.0))
                }
            })
    }

    #[test]
    fn each_job_reaches_its_own_handler_and_its_output_reads_back_typed() {
        let h = handlers();
        assert_eq!(h.names(), ["greet", "square"]);
        let sq = NewJob::of(&Square { x: -7 }).unwrap();
        assert_eq!(sq.label.as_deref(), Some("square"));
        assert_eq!(sq.payload, r#"{"job":"square","payload":{"x":-7}}"#);
        assert_eq!(h.run(&sq.payload).unwrap(), "49");
        let greet = NewJob::of(&Greet("ann".into())).unwrap();
        let result = h.run(&greet.payload).unwrap();
        let view = JobView {
            id: crate::JobId::random(),
            status: crate::JobStatus::Done,
            attempts: 1,
            max_attempts: 3,
            stalls: 0,
            max_stalls: 10,
            result: Some(result),
            error: None,
            enqueued_at: 0,
            started_at: Some(1),
            finished_at: Some(2),
        };
        assert_eq!(view.output::<Greet>().unwrap().unwrap(), "hello, ann");
        assert!(
            view.output::<Square>().unwrap().is_err(),
            "a string is not an i64"
        );
    }

    #[test]
    fn unknown_names_bad_payloads_and_handler_errors_fail_without_retry() {
        let h = handlers();
        let err = h.run(r#"{"job":"resize","payload":{}}"#).unwrap_err();
        assert!(
            !err.retry && err.message.contains("no handler for job \"resize\""),
            "{err}"
        );
        let err = h
            .run(r#"{"job":"square","payload":{"x":"seven"}}"#)
            .unwrap_err();
        assert!(
            !err.retry && err.message.contains("bad payload for job \"square\""),
            "{err}"
        );
        let err = h.run(r#"{"work":"count","n":5}"#).unwrap_err();
        assert!(
            !err.retry && err.message.contains("not a typed job"),
            "{err}"
        );
        let err = h
            .run(&NewJob::of(&Greet(String::new())).unwrap().payload)
            .unwrap_err();
        assert_eq!(err, JobError::fatal("nobody to greet"));
    }

    #[tokio::test]
    async fn the_executor_runs_jobs_off_the_runtime_threads() {
        let test_thread = std::thread::current().id();
        let h = Handlers::new().on(move |s: Square| {
            assert_ne!(
                std::thread::current().id(),
                test_thread,
                "ran on the runtime's thread"
            );
            Ok(s.x + 1)
        });
        let exec = h.executor();
        let out = exec(NewJob::of(&Square { x: 41 }).unwrap().payload).await;
        assert_eq!(out.unwrap(), "42");
        let out = exec("not json".to_owned()).await;
        assert!(!out.unwrap_err().retry);
    }
}
