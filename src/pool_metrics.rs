//! The pool's `/metrics` series (`offload_pool_*`). The pool crate counts tasks and tells an
//! [`Observer`] of each task's wait, run and panic, but knows no metrics library; this file
//! turns both into offload's `prometheus-client` series, under the names they always had.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::metrics::{
    ConstGauge, Counter, Family, FloatGauge, Gauge, Histogram, Outcome, Registry, Work, latency,
};
use crate::pool::{Observer, Pool};

/// A pool's series: the histograms it records to as tasks run, the rest set from
/// [`Pool::stats`] before each scrape.
#[derive(Debug)]
pub struct PoolMetrics {
    pool: Arc<Pool>,
    /// Tasks by outcome: counters brought up to the pool's own counts at each scrape.
    tasks: Family<Outcome, Counter>,
    depth: Gauge,
    predicted_wait: FloatGauge,
    secs_per_unit: Family<Work, FloatGauge>,
    utilisation: FloatGauge,
    wait: Histogram,
    run: Histogram,
    /// One refresh at a time: two racing scrapes would each add the same increase.
    refreshing: Mutex<()>,
}

/// Records into the histograms; logs panics through offload's throttled log (counted as
/// `offload_log_events_total{kind="pool_task_panicked"}`).
#[derive(Debug)]
struct Recorder {
    wait: Histogram,
    run: Histogram,
}

impl Observer for Recorder {
    fn waited(&self, wait: Duration) {
        self.wait.observe(wait.as_secs_f64());
    }
    fn ran(&self, run: Duration) {
        self.run.observe(run.as_secs_f64());
    }
    fn panicked(&self, message: &str) {
        log_panic(message);
    }
}

/// Logs a pool task's panic through offload's throttled log, counted in `/metrics`.
fn log_panic(message: &str) {
    crate::throttled!("pool_task_panicked", error, panic = %message, "a pool task panicked; the thread carries on");
}

/// Only logs panics, as [`PoolMetrics`] does: for the pools whose series are not shown (the
/// worker's job threads, `rayon`'s turns).
#[derive(Debug)]
pub struct PanicLog;

impl Observer for PanicLog {
    fn panicked(&self, message: &str) {
        log_panic(message);
    }
}

impl PoolMetrics {
    /// The series of `pool`, installed as its observer (a pool hears one observer: a second
    /// `PoolMetrics` of the same pool sees no task timings).
    pub fn new(pool: Arc<Pool>) -> PoolMetrics {
        let (wait, run) = (latency(), latency());
        pool.observe(Arc::new(Recorder {
            wait: wait.clone(),
            run: run.clone(),
        }));
        let tasks = Family::default();
        // Every outcome shows from the first scrape: a count of zero is an answer.
        for (outcome, _) in pool.stats().outcomes() {
            tasks.get_or_create_owned(&Outcome { outcome });
        }
        PoolMetrics {
            pool,
            tasks,
            depth: Gauge::default(),
            predicted_wait: FloatGauge::default(),
            secs_per_unit: Family::default(),
            utilisation: FloatGauge::default(),
            wait,
            run,
            refreshing: Mutex::new(()),
        }
    }

    /// Registers the pool's metrics (`offload_pool_*`).
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "offload_pool_threads",
            "Worker threads in the pool",
            ConstGauge::new(self.pool.threads() as u64),
        );
        registry.register(
            "offload_pool_queue_depth",
            "Requests waiting in the pool queue",
            self.depth.clone(),
        );
        registry.register(
            "offload_pool_queue_capacity",
            "Requests the pool queue holds before it rejects (a hard cap; the deadline decides first)",
            ConstGauge::new(self.pool.max_queue() as u64),
        );
        registry.register(
            "offload_pool_tasks",
            "Pool tasks by outcome",
            self.tasks.clone(),
        );
        registry.register(
            "offload_pool_predicted_wait_seconds",
            "Predicted wait of a request arriving now: admitted work over the threads",
            self.predicted_wait.clone(),
        );
        registry.register(
            "offload_pool_seconds_per_unit",
            "Measured time one unit of work holds a pool thread, by kind of work",
            self.secs_per_unit.clone(),
        );
        registry.register(
            "offload_pool_utilisation",
            "Busy thread time over thread time since start",
            self.utilisation.clone(),
        );
        registry.register(
            "offload_pool_wait_seconds",
            "Time tasks waited in the queue before starting",
            self.wait.clone(),
        );
        registry.register(
            "offload_pool_run_seconds",
            "Time tasks ran on a pool thread",
            self.run.clone(),
        );
    }

    /// Sets the series read from the pool's state, before a scrape.
    pub fn refresh(&self) {
        let _one = self.refreshing.lock().expect("pool metrics refresh lock");
        let s = self.pool.stats();
        for (outcome, count) in s.outcomes() {
            let c = self.tasks.get_or_create_owned(&Outcome { outcome });
            // The pool's counts only grow: add what they grew by since the last scrape.
            c.inc_by(count.saturating_sub(c.get()));
        }
        self.depth.set(s.queue_depth as i64);
        self.predicted_wait
            .set(self.pool.predicted_wait().as_secs_f64());
        self.utilisation.set(s.utilisation);
        let model = self.pool.model();
        for kind in crate::work::Kind::ALL {
            if let Some(v) = model.secs_per_unit(kind.class(model)) {
                let work = Work { work: kind.name() };
                self.secs_per_unit.get_or_create(&work).set(v);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pool::{PoolConfig, Priority};

    #[tokio::test]
    async fn the_series_keep_their_names_and_follow_the_pool() {
        let pool = Arc::new(
            Pool::new(PoolConfig {
                threads: 1,
                max_queue: 4,
                priority: Priority::SAME,
                name: "metrics-test".into(),
            })
            .unwrap(),
        );
        let metrics = PoolMetrics::new(pool.clone());
        let mut registry = Registry::default();
        metrics.register(&mut registry);
        assert_eq!(pool.submit(None, |_| 2 + 2).unwrap().await, Ok(4));
        metrics.refresh();
        let text = crate::metrics::encode(&registry);
        for line in [
            "offload_pool_threads 1\n",
            "offload_pool_queue_capacity 4\n",
            "offload_pool_tasks_total{outcome=\"submitted\"} 1\n",
            "offload_pool_tasks_total{outcome=\"completed\"} 1\n",
            "offload_pool_tasks_total{outcome=\"late\"} 0\n",
            "offload_pool_wait_seconds_count 1\n",
            "offload_pool_run_seconds_count 1\n",
        ] {
            assert!(text.contains(line), "no {line:?} in\n{text}");
        }
        // A second scrape adds nothing that did not happen.
        metrics.refresh();
        let text = crate::metrics::encode(&registry);
        assert!(text.contains("offload_pool_tasks_total{outcome=\"submitted\"} 1\n"));
    }
}
