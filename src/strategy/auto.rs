//! `auto`: run it now if it fits, queue it if it does not. Each request's finish in the pool
//! is predicted from the pool's cost model (the work admitted ahead of it, over the threads,
//! plus its own run); work predicted to answer within the client's wait budget runs in the
//! pool and answers 200 with its result, the rest is stored as a durable job and answers 202
//! with its `Location`. The budget is `Prefer: wait=N`, else `--auto-wait`; `Prefer:
//! respond-async` also asks that only work that can start at once runs in the pool.
//!
//! The model learns online: every run in the pool updates the time per unit of its kind, so
//! when the machine slows down (a busy neighbour), predictions follow within about ten runs
//! and the split between pool and queue moves with them. A job once stored is never also run
//! in the pool: the decision is made before either starts.
//!
//! The decision itself is offload-axum's [`decide`] (the one a service embedding
//! `offload_axum::Auto` makes), given this gateway's places: the pool strategy's chunked runs
//! and the queue strategy's line in front of the store.

use std::time::{Duration, Instant};

use offload_axum::decide::{self, Decision, Places as _, PoolTry, StoreRefusal, decide};

use super::{About, Done, ExecError, Helper, PoolStrategy, QueueStrategy};
use crate::metrics::{Counter, Family, Histogram, Registry, Route};
use crate::pool::Budget;
use crate::queue::JobId;
use crate::work::Work;
use offload_axum::{Prefer, Submit};

/// What `auto` declares of itself (see [`About`]).
pub(super) const ABOUT: About = About {
    name: "auto",
    helper: Some(Helper::Worker),
    routes: true,
    on_runtime: false,
    in_flood: true,
    in_mix: true,
    advice: "When clients differ in how long they can wait: what is predicted to finish within the wait answers from the pool, the rest is queued (202).",
};

/// One request's pool and queue, tried in the order offload-axum's [`decide`] gives: the
/// same decision a service embedding `offload_axum::Auto` makes, with offload's chunked pool
/// runs and the line in front of the store.
struct Places<'a> {
    auto: &'a Auto,
    work: Work,
    deadline: Instant,
    submit: &'a Submit,
}

impl decide::Places for Places<'_> {
    type Ran = Done;
    type Stored = JobId;
    type Error = ExecError;

    async fn pool_within(&self, budget: Budget) -> Result<PoolTry<Done>, ExecError> {
        let pool = &self.auto.pool;
        match pool.run_within(self.work, budget, self.deadline).await {
            Ok((done, predicted)) => Ok(PoolTry::Ran(done, predicted)),
            Err(ExecError::Late(late)) => Ok(PoolTry::Late(late.finish)),
            // The pool's hard cap: the queue has its own.
            Err(ExecError::Overloaded { .. }) => Ok(PoolTry::Late(pool.pool().predicted_wait())),
            Err(e) => Err(e),
        }
    }

    async fn store_now(&self) -> Result<JobId, StoreRefusal<ExecError>> {
        match self.auto.queue.try_enqueue(self.work, self.submit).await {
            Ok(id) => Ok(id),
            Err(ExecError::Overloaded { .. }) => Err(StoreRefusal::Full),
            Err(e @ ExecError::Unavailable(_)) => Err(StoreRefusal::Down(e)),
            Err(e) => Err(StoreRefusal::Failed(e)),
        }
    }

    async fn pool_by_deadline(&self) -> Result<Result<Done, Duration>, ExecError> {
        match self.auto.pool.run(self.work, self.deadline).await {
            Ok(done) => Ok(Ok(done)),
            // The line decides the wait below; the pool's own is not needed.
            Err(ExecError::Late(_) | ExecError::Overloaded { .. }) => Ok(Err(Duration::ZERO)),
            Err(e) => Err(e),
        }
    }

    /// A store that is down answers so; a full one puts the request in the line, in arrival
    /// order, until shortly before its deadline (issue 21: backpressure, not refusal).
    async fn store_last(
        &self,
        refused: StoreRefusal<ExecError>,
        _pool_retry_after: Duration,
    ) -> Result<JobId, ExecError> {
        match refused {
            StoreRefusal::Down(e) | StoreRefusal::Failed(e) => Err(e),
            StoreRefusal::Full => {
                self.auto
                    .queue
                    .enqueue(self.work, self.deadline, self.submit)
                    .await
            }
        }
    }
}

/// Upper bounds of the prediction-error buckets: actual time over predicted time.
const ERROR_BUCKETS: [f64; 8] = [0.25, 0.5, 0.8, 0.9, 1.1, 1.25, 2.0, 4.0];

/// The pool and the queue behind `auto`, and how it has routed.
#[derive(Debug)]
pub struct Auto {
    pool: PoolStrategy,
    queue: QueueStrategy,
    /// The wait budget when the client states none.
    wait: Duration,
    /// Requests by route; `to_pool` and `to_queue` are its series.
    routed: Family<Route, Counter>,
    to_pool: Counter,
    to_queue: Counter,
    /// Runs in the pool past the budget, because the queue was full or out of reach.
    over_budget: Counter,
    /// Runs in the pool by actual time over predicted time.
    error: Histogram,
}

/// Where `auto` sent a request and what it predicted.
#[derive(Debug, Clone, PartialEq)]
pub enum Routed {
    /// Ran in the pool; `predicted` is its predicted time to finish.
    Pool { done: Done, predicted: Duration },
    /// Stored as a job: its predicted finish in the pool did not fit the budget.
    Queue { id: JobId, predicted: Duration },
}

impl Routed {
    /// The strategy its answer names: the one it was sent to.
    pub fn by(&self) -> &'static str {
        match self {
            Routed::Pool { .. } => super::pool::ABOUT.name,
            Routed::Queue { .. } => super::queue::ABOUT.name,
        }
    }
}

impl Auto {
    pub fn new(pool: PoolStrategy, queue: QueueStrategy, wait: Duration) -> Auto {
        let routed = Family::default();
        let c = |route| routed.get_or_create_owned(&Route { route });
        Auto {
            pool,
            queue,
            wait,
            to_pool: c("pool"),
            to_queue: c("queue"),
            routed,
            over_budget: Counter::default(),
            error: Histogram::new(ERROR_BUCKETS),
        }
    }

    pub fn pool(&self) -> &PoolStrategy {
        &self.pool
    }

    pub fn queue(&self) -> &QueueStrategy {
        &self.queue
    }

    /// The budget for a request with these preferences: its `wait`, else `--auto-wait`.
    pub fn budget(&self, prefer: &Prefer) -> Duration {
        prefer.wait.unwrap_or(self.wait)
    }

    /// Runs `work` in the pool if it is predicted to finish within the budget (and before
    /// `deadline`), else stores it as a job. When the backlog is full (or its store is out of
    /// reach), the budget gives way: the pool takes the work under plain deadline admission,
    /// since a late 200 serves the client better than a 503. Only work the pool cannot finish
    /// by the deadline waits for room in the queue's line.
    ///
    /// # Errors
    /// A pool failure of work it took ([`ExecError::Expired`], [`ExecError::Panicked`]); when
    /// neither the pool (by the deadline) nor the queue (within the wait) takes it,
    /// [`ExecError::Overloaded`] or [`ExecError::Unavailable`].
    pub async fn run(
        &self,
        work: Work,
        deadline: Instant,
        prefer: &Prefer,
        submit: &Submit,
    ) -> Result<Routed, ExecError> {
        let places = Places {
            auto: self,
            work,
            deadline,
            submit,
        };
        // A keyed request is always stored: only a stored job can be found by its key.
        if submit.key.is_some() {
            // Boxed: this rare path's states would otherwise grow the future every request
            // moves (a copy per poll level: measured at 40k instructions a request).
            let stored = Box::pin(async {
                match places.store_now().await {
                    Ok(id) => Ok(id),
                    Err(refused) => places.store_last(refused, Duration::ZERO).await,
                }
            });
            return Ok(self.queued(stored.await?, Duration::ZERO));
        }
        let budget = Budget {
            end: (Instant::now() + self.budget(prefer)).min(deadline),
            start_now: prefer.respond_async,
        };
        match decide(&places, budget).await? {
            Decision::Ran {
                ran,
                predicted,
                over_budget,
            } => {
                if over_budget {
                    self.over_budget.inc();
                }
                Ok(self.ran(ran, predicted))
            }
            Decision::Stored { stored, predicted } => Ok(self.queued(stored, predicted)),
        }
    }

    fn ran(&self, done: Done, predicted: Duration) -> Routed {
        self.to_pool.inc();
        self.record_error(done.wait + done.run, predicted);
        Routed::Pool { done, predicted }
    }

    fn queued(&self, id: JobId, predicted: Duration) -> Routed {
        self.to_queue.inc();
        Routed::Queue { id, predicted }
    }

    fn record_error(&self, actual: Duration, predicted: Duration) {
        if predicted.is_zero() {
            return;
        }
        self.error
            .observe(actual.as_secs_f64() / predicted.as_secs_f64());
    }

    /// Registers the routing counters and the prediction-error histogram (the pool's and the
    /// queue's own metrics are registered beside them).
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "offload_auto_routed",
            "Requests auto ran in the pool (answered 200) or stored as jobs (answered 202)",
            self.routed.clone(),
        );
        registry.register(
            "offload_auto_over_budget",
            "Requests the pool ran past the wait budget (under deadline admission) because the \
             queue's backlog was full or its store out of reach",
            self.over_budget.clone(),
        );
        registry.register(
            "offload_auto_prediction_ratio",
            "Runs in the pool by actual time to finish over the predicted time (1 is exact)",
            self.error.clone(),
        );
        self.pool.register(registry);
    }
}
