//! `pool`: offload's piscina. A fixed set of threads fed by a queue admitted by deadline: a
//! request predicted to miss its deadline answers 503 at once, with the predicted time as
//! `Retry-After`. A request is split into chunks only while threads would otherwise idle
//! (`--split N` forces N). A deadline that passes while a chunk waits drops it unrun, and a
//! client that goes away cancels its chunks.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{About, Done, ExecError, finish, run_chunk};
use crate::pool::{Budget, Pool};
use crate::pool_metrics::PoolMetrics;
use crate::work::{Classes, Work};

/// What `pool` declares of itself (see [`About`]).
pub(super) const ABOUT: About = About {
    name: "pool",
    helper: None,
    routes: false,
    on_runtime: false,
    in_flood: true,
    in_mix: true,
    advice: "Threads and a queue with bounds, deadlines and cancellation: CPU work answered within the request.",
};

/// Runs work on a shared [`Pool`].
#[derive(Debug)]
pub struct PoolStrategy {
    pool: Arc<Pool>,
    /// Each kind's class in the pool's model.
    classes: Classes,
    split: Split,
    metrics: PoolMetrics,
}

/// How a request's work is split into chunks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Split {
    /// Into as many chunks as there are idle threads, at most this many: low latency when
    /// the pool is light, no splitting overhead when it is saturated.
    Adaptive(usize),
    /// Always into this many chunks (`--split N`).
    Fixed(usize),
}

/// Gives the pool's model the startup calibration ([`Work::probe_costs`]) as priors, so a
/// burst that arrives before any request has finished is judged by a rough time per unit
/// instead of being admitted blind. A pool with more threads than cores runs each slower by
/// that ratio, and the prior says so.
pub fn calibrate_priors(pool: &Pool, limits: &crate::work::Limits, cores: usize) {
    let slowdown = (pool.threads() as f64 / cores.max(1) as f64).max(1.0);
    for (kind, secs_per_unit) in Work::probe_costs(limits) {
        pool.model()
            .prior(kind.class(pool.model()), secs_per_unit * slowdown);
    }
}

impl PoolStrategy {
    pub fn new(pool: Arc<Pool>, split: Split) -> PoolStrategy {
        let metrics = PoolMetrics::new(pool.clone());
        PoolStrategy {
            classes: Classes::of(pool.model()),
            pool,
            split,
            metrics,
        }
    }

    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    /// Registers the pool's metrics (`offload_pool_*`).
    pub fn register(&self, registry: &mut crate::metrics::Registry) {
        self.metrics.register(registry);
    }

    /// Sets the pool's series from its state, before a scrape.
    pub fn refresh_metrics(&self) {
        self.metrics.refresh();
    }

    /// # Errors
    /// [`ExecError::Late`] when it is predicted to miss its deadline;
    /// [`ExecError::Overloaded`] when the queue is at its cap; [`ExecError::Expired`] past the
    /// deadline; [`ExecError::Panicked`] when a chunk panicked.
    pub async fn run(&self, work: Work, deadline: Instant) -> Result<Done, ExecError> {
        self.run_judged(work, deadline, None)
            .await
            .map(|(done, _)| done)
    }

    /// Runs `work` only if it is predicted to finish within `budget` (`auto`); returns its
    /// result and the predicted time to finish.
    ///
    /// # Errors
    /// As [`PoolStrategy::run`]; [`ExecError::Late`] when it would not fit the budget.
    pub async fn run_within(
        &self,
        work: Work,
        budget: Budget,
        deadline: Instant,
    ) -> Result<(Done, Duration), ExecError> {
        self.run_judged(work, deadline, Some(budget)).await
    }

    async fn run_judged(
        &self,
        work: Work,
        deadline: Instant,
        budget: Option<Budget>,
    ) -> Result<(Done, Duration), ExecError> {
        let handed_off = Instant::now();
        let chunked = |k: usize| {
            work.chunks(k)
                .into_iter()
                .map(|c| {
                    (c.units(), move |stop: &dyn Fn() -> bool| {
                        run_chunk(&c, stop)
                    })
                })
                .collect()
        };
        let (max, split): (usize, Box<dyn FnOnce(usize) -> Vec<_>>) = match self.split {
            Split::Adaptive(max) => (max, Box::new(chunked)),
            Split::Fixed(k) => (1, Box::new(move |_| chunked(k))),
        };
        let (handles, predicted) = match budget {
            None => (
                self.pool
                    .submit_work(deadline, work.cost(&self.classes), max, split)?,
                Duration::ZERO,
            ),
            Some(b) => {
                self.pool
                    .submit_work_within(b, deadline, work.cost(&self.classes), max, split)?
            }
        };
        let mut outcomes = Vec::with_capacity(handles.len());
        // If this future is dropped (client gone, deadline), the remaining handles drop with
        // it and their chunks are skipped or stopped.
        for h in handles {
            outcomes.push(h.await?);
        }
        Ok((finish(handed_off, &outcomes)?, predicted))
    }
}
