//! The pool's counters and histograms, and the snapshot [`PoolStats`] read from them.

use std::time::Duration;

use crate::metrics::{Counter, Family, FloatGauge, Gauge, Histogram, Outcome, Work, latency};

/// The pool's metrics: what it records, and the gauges set from its state at each scrape.
#[derive(Debug)]
pub(super) struct Counters {
    /// Tasks by outcome; the eight counters below are its series.
    pub tasks: Family<Outcome, Counter>,
    pub submitted: Counter,
    pub rejected: Counter,
    pub late: Counter,
    pub started: Counter,
    pub completed: Counter,
    pub expired: Counter,
    pub cancelled: Counter,
    pub panicked: Counter,
    /// For the utilisation; not a metric of its own.
    pub busy_us: Counter,
    pub wait: Histogram,
    pub run: Histogram,
    pub depth: Gauge,
    pub predicted_wait: FloatGauge,
    pub secs_per_unit: Family<Work, FloatGauge>,
    pub utilisation: FloatGauge,
}

impl Default for Counters {
    fn default() -> Self {
        let tasks = Family::default();
        let c = |outcome| tasks.get_or_create_owned(&Outcome { outcome });
        Counters {
            submitted: c("submitted"),
            rejected: c("rejected"),
            late: c("late"),
            started: c("started"),
            completed: c("completed"),
            expired: c("expired"),
            cancelled: c("cancelled"),
            panicked: c("panicked"),
            tasks,
            busy_us: Counter::default(),
            wait: latency(),
            run: latency(),
            depth: Gauge::default(),
            predicted_wait: FloatGauge::default(),
            secs_per_unit: Family::default(),
            utilisation: FloatGauge::default(),
        }
    }
}

/// A point-in-time view of a pool, for `/metrics` and tests.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PoolStats {
    pub threads: usize,
    pub max_queue: usize,
    /// Requests waiting now.
    pub queue_depth: usize,
    /// Tasks accepted into the queue.
    pub submitted: u64,
    /// Submissions refused because the queue was at its cap.
    pub rejected: u64,
    /// Requests refused because they were predicted to miss their deadline.
    pub late: u64,
    /// Tasks that began running (expired and cancelled ones never do).
    pub started: u64,
    /// Tasks that returned (including those that stopped early on their stop check).
    pub completed: u64,
    /// Tasks dropped unrun because their deadline passed while they waited.
    pub expired: u64,
    /// Tasks dropped unrun because their caller had gone.
    pub cancelled: u64,
    /// Tasks that panicked.
    pub panicked: u64,
    /// Busy thread time over available thread time since the pool started, 0..=1.
    pub utilisation: f64,
}

impl Counters {
    pub(super) fn snapshot(
        &self,
        depth: usize,
        threads: usize,
        max_queue: usize,
        up: Duration,
    ) -> PoolStats {
        let avail = up.as_micros() as f64 * threads as f64;
        PoolStats {
            threads,
            max_queue,
            queue_depth: depth,
            submitted: self.submitted.get(),
            rejected: self.rejected.get(),
            late: self.late.get(),
            started: self.started.get(),
            completed: self.completed.get(),
            expired: self.expired.get(),
            cancelled: self.cancelled.get(),
            panicked: self.panicked.get(),
            utilisation: if avail > 0.0 {
                (self.busy_us.get() as f64 / avail).min(1.0)
            } else {
                0.0
            },
        }
    }
}
