//! What the store says at each scrape, the same on the gateway's `/metrics` and the worker's:
//! jobs by state, the store's stall count, and the backlog in seconds of work
//! ([`offload_queue::Backlog`]), the figure to autoscale workers on.

use super::{Backlog, Counts, Handlers, JobQueue, Queue, QueueError, Reach};
use crate::metrics::{Counter, Family, FloatGauge, Gauge, Registry, State};

/// The series, set from the store before each scrape ([`StoreMetrics::refresh`]).
#[derive(Debug, Clone, Default)]
pub struct StoreMetrics {
    up: Gauge,
    jobs: Family<State, Gauge>,
    /// The store keeps the count; this mirrors it.
    stalls: Counter,
    backlog: FloatGauge,
    unpredicted: Gauge,
}

impl StoreMetrics {
    /// Registers `offload_queue_up`, `offload_jobs`, `offload_job_stalls_total`,
    /// `offload_queue_backlog_seconds` and `offload_queue_backlog_unpredicted_jobs`.
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "offload_queue_up",
            "1 when the queue's store answers",
            self.up.clone(),
        );
        registry.register(
            "offload_jobs",
            "Jobs in the queue by state (finished ones until their retention ends)",
            self.jobs.clone(),
        );
        registry.register(
            "offload_job_stalls",
            "Runs lost with their worker (lease expired): requeued without spending an attempt",
            self.stalls.clone(),
        );
        registry.register(
            "offload_queue_backlog_seconds",
            "The queued jobs' predicted run time on one thread, summed: divided by the threads that drain the queue, how long it takes to empty. Past 1,000 queued jobs, scaled from the 1,000 newest",
            self.backlog.clone(),
        );
        registry.register(
            "offload_queue_backlog_unpredicted_jobs",
            "Queued jobs of a type with neither a run nor a prior to predict them from: not in offload_queue_backlog_seconds",
            self.unpredicted.clone(),
        );
    }

    /// Reads the counts and the backlog from `queue` through `reach` (each call bounded in
    /// time, refused at once while the store is out of reach), predicting jobs with
    /// `predict`, and sets the series. While the store is out of reach the jobs have no
    /// series, rather than stale ones; the error is answered for the caller to log.
    ///
    /// # Errors
    /// The store's, or its [`Reach`]'s.
    pub async fn refresh(
        &self,
        reach: &Reach,
        queue: &Queue,
        predict: &Handlers,
    ) -> Result<Counts, QueueError> {
        let read = async {
            let counts = reach.call("counting jobs", queue.counts()).await?;
            let backlog = Backlog::read(queue, counts.queued, |label| predict.predict(label));
            let backlog = reach.call("reading the backlog", backlog).await?;
            Ok::<_, QueueError>((counts, backlog))
        };
        let (c, backlog) = match read.await {
            Ok(read) => read,
            Err(e) => {
                self.up.set(0);
                self.jobs.clear();
                return Err(e);
            }
        };
        self.up.set(1);
        for (state, v) in [
            ("queued", c.queued),
            ("running", c.running),
            ("done", c.done),
            ("failed", c.failed),
            ("cancelled", c.cancelled),
            ("expired", c.expired),
        ] {
            self.jobs.get_or_create(&State { state }).set(v as i64);
        }
        // A counter cannot be set; the store's total only grows, so storing it keeps the
        // counter's promise.
        self.stalls
            .inner()
            .store(c.stalls, std::sync::atomic::Ordering::Relaxed);
        self.backlog.set(backlog.seconds);
        self.unpredicted.set(backlog.unpredicted as i64);
        Ok(c)
    }

    /// The backlog in seconds at the last refresh.
    pub fn backlog_seconds(&self) -> f64 {
        self.backlog.get()
    }
}
