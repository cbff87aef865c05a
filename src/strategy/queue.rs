//! `queue`: the work is stored as a durable job and the request answers `202 Accepted` with
//! the job's id; separate `offload worker` processes run it and store the result, readable at
//! `GET /jobs/{id}`. Accepted is not done: the gateway's rate of 202s says nothing about how
//! fast jobs finish.
//!
//! While the backlog is at its cap, a request waits in the [`Line`] for room, in arrival
//! order, up to its own wait (the deadline, or `Prefer: wait=N`), and only then answers 503
//! with a `Retry-After` from the line's drain rate. So a closed loop of clients is paced to
//! the rate at which workers finish jobs, instead of spinning on refusals that take the CPU
//! from the work.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::metrics::Registry;
use crate::queue::{
    Eta, Handlers, JobId, JobQueue, JobView, Line, LineError, LineMetrics, Prediction, Queue,
    QueueError, Reach, StoreMetrics,
};
use crate::work::Work;

use super::{About, ExecError, Helper};
use offload_axum::Submit;

/// What `queue` declares of itself (see [`About`]).
pub(super) const ABOUT: About = About {
    name: "queue",
    helper: Some(Helper::Worker),
    routes: false,
    on_runtime: false,
    in_flood: true,
    in_mix: true,
    advice: "When clients can take a 202 and come back for the result, or the work must outlive a restart.",
};

/// Longest the gateway waits for the store on a client's behalf (an enqueue, a job's status,
/// the counts and times on `/jobs`, the counts on `/metrics`); past it, and after any failure,
/// the store counts as out of reach and requests are refused at once until a background check
/// finds it again ([`Reach`]). An enqueue that timed out may still be stored.
const STORE_WAIT: Duration = offload_queue::reach::DEFAULT_STORE_WAIT;
/// A request in the line leaves it this long before its deadline, so that its 503 (with a
/// `Retry-After`) is sent before the gateway's deadline turns it into a 504.
const LINE_MARGIN: Duration = Duration::from_millis(5);

/// Enqueues work on a [`Queue`]; while the backlog is full, requests wait in a [`Line`].
#[derive(Debug, Clone)]
pub struct QueueStrategy {
    queue: Queue,
    line: Line,
    line_metrics: Arc<LineMetrics>,
    /// The backlog's clock: when a job stored now will be done.
    eta: Eta,
    /// The store's calls, bounded by [`STORE_WAIT`]; refused at once while it is out of reach.
    reach: Reach,
    metrics: StoreMetrics,
    /// Predicts each stored job's run time for the backlog in seconds: offload's work with
    /// its startup calibration as priors.
    predict: Handlers,
}

impl QueueStrategy {
    /// Enqueues on `queue`; at most `max_waiting` requests wait for room in a full backlog.
    pub fn new(queue: Queue, max_waiting: usize, predict: Handlers) -> QueueStrategy {
        // The clock says when a stored job will be done (in each 202); the gateway's backlog is
        // capped by count (`--max-backlog`), and in time only when asked ([`Self::max_wait`]).
        let eta = Eta::new(queue.clone());
        let line = Line::new(queue.clone(), max_waiting, STORE_WAIT);
        QueueStrategy {
            eta,
            line_metrics: Arc::new(LineMetrics::new(line.clone())),
            line,
            reach: Reach::new(queue.clone()).with_wait(STORE_WAIT),
            queue,
            metrics: StoreMetrics::default(),
            predict,
        }
    }

    /// Caps the backlog in predicted time to done as well as in jobs (`--queue-max-wait`):
    /// past `max_wait`, requests wait in the line as they do behind the count. `None` keeps the
    /// count alone.
    #[must_use]
    pub fn max_wait(self, max_wait: Option<Duration>) -> QueueStrategy {
        let Some(max_wait) = max_wait else {
            return self;
        };
        let line = Line::new(self.queue.clone(), self.line.max_waiting(), STORE_WAIT)
            .with_time_cap(self.eta.clone(), max_wait);
        QueueStrategy {
            line_metrics: Arc::new(LineMetrics::new(line.clone())),
            line,
            ..self
        }
    }

    pub fn queue(&self) -> &Queue {
        &self.queue
    }

    /// The store's calls on a client's behalf: shared with the `/jobs` routes, so that they
    /// refuse at once too while the store is out of reach.
    pub fn reach(&self) -> &Reach {
        &self.reach
    }

    /// Stores `work` as a job and returns its id. While the backlog is full the request waits
    /// for room in arrival order, until shortly before `deadline`.
    ///
    /// # Errors
    /// [`ExecError::Overloaded`] when the backlog stayed full for the whole wait, or the line
    /// ahead is predicted to take longer than that (its `Retry-After` is the line's predicted
    /// drain time); [`ExecError::Unavailable`] when the queue's store fails (Redis down, disk
    /// full) or is out of reach.
    pub async fn enqueue(
        &self,
        work: Work,
        deadline: Instant,
        submit: &Submit,
    ) -> Result<JobId, ExecError> {
        self.reach.check().map_err(|e| self.failed(e))?;
        let until = deadline.checked_sub(LINE_MARGIN).unwrap_or(deadline);
        // The work names the job in the latency histogram's `by_work`.
        let job = submit.apply(crate::queue::builtin::new_job(&work));
        // The store call (with any wait in the line for room), as a span when spans are
        // exported (crate::otel).
        let span = tracing::trace_span!(
            target: "offload::queue",
            "queue.enqueue",
            job.id = tracing::field::Empty,
        );
        let stored = self.line.enqueue(job, until);
        let stored = if span.is_disabled() {
            stored.await
        } else {
            Box::pin(tracing::Instrument::instrument(stored, span.clone())).await
        };
        let id = stored.map_err(|e| self.refused(e))?;
        span.record("job.id", id.as_str());
        self.eta.stored(1);
        Ok(id)
    }

    /// The backlog now, for a 202: unfinished jobs and the workers' finish rate.
    pub fn backlog(&self) -> Prediction {
        self.eta.predict()
    }

    /// Stores `work` only if there is room now: no wait in the line.
    ///
    /// # Errors
    /// As [`QueueStrategy::enqueue`], at once.
    pub async fn try_enqueue(&self, work: Work, submit: &Submit) -> Result<JobId, ExecError> {
        self.enqueue(work, Instant::now(), submit).await
    }

    /// A job's view, within the store's wait; `None` for an unknown id.
    ///
    /// # Errors
    /// [`ExecError::Unavailable`] when the store fails or is out of reach.
    pub async fn job(&self, id: &JobId) -> Result<Option<JobView>, ExecError> {
        let span =
            tracing::trace_span!(target: "offload::queue", "queue.get", job.id = id.as_str());
        let read = self.bounded("a job's status", self.queue.get(id));
        if span.is_disabled() {
            read.await
        } else {
            Box::pin(tracing::Instrument::instrument(read, span)).await
        }
    }

    fn refused(&self, e: LineError) -> ExecError {
        match e {
            LineError::Full { retry_after } | LineError::WaitRanOut { retry_after } => {
                ExecError::Overloaded {
                    retry_after_secs: crate::admission::retry_after_secs(retry_after),
                }
            }
            LineError::Store(e) => self.failed(e),
            LineError::KeyReused(id) => ExecError::KeyReused(id.to_string()),
        }
    }

    /// `op` on the store within [`STORE_WAIT`], or at once an error while it is out of reach.
    async fn bounded<T>(
        &self,
        what: &'static str,
        op: impl Future<Output = Result<T, QueueError>>,
    ) -> Result<T, ExecError> {
        self.reach
            .call(what, op)
            .await
            .map_err(ExecError::unavailable)
    }

    /// Marks the store out of reach after `e` (the line's enqueue is not made through
    /// [`Reach::call`]).
    fn failed(&self, e: QueueError) -> ExecError {
        self.reach.failed(&e);
        ExecError::unavailable(e)
    }

    /// Registers the line's metrics and the store's ([`StoreMetrics::register`]).
    pub fn register(&self, registry: &mut Registry) {
        self.line_metrics.register(registry);
        self.metrics.register(registry);
    }

    /// Asks the store for the jobs by state and the backlog, and sets the line's gauges,
    /// before a scrape.
    pub async fn refresh_metrics(&self) {
        self.line_metrics.refresh();
        let read = self
            .metrics
            .refresh(&self.reach, &self.queue, &self.predict);
        if let Err(e) = read.await {
            crate::throttled!("queue_count_failed", warn, error = %e, "could not count jobs");
        }
    }

    /// What predicts each stored job's run time, for the backlog in seconds.
    pub fn predictor(&self) -> &Handlers {
        &self.predict
    }

    /// The backlog in seconds of work at the last refresh of the metrics.
    pub fn backlog_seconds(&self) -> f64 {
        self.metrics.backlog_seconds()
    }
}
