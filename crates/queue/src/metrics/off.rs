//! [`WorkerMetrics`] without the `metrics` feature: the same calls, counting nothing, so that
//! the worker is written once and a build without `prometheus-client` pays for none of it.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use super::{Ended, Op, Renewal};

/// A worker's metrics: with the cargo feature `metrics`, its series on a `prometheus-client`
/// registry. Without it (this build) it counts nothing.
#[derive(Debug, Clone, Default)]
pub struct WorkerMetrics {
    gauge: Gauge,
}

/// A gauge that keeps nothing.
#[derive(Debug, Clone, Default)]
pub(crate) struct Gauge;

impl Gauge {
    pub(crate) fn inc(&self) {}
    pub(crate) fn dec(&self) {}
    pub(crate) fn inc_by(&self, _: i64) {}
    pub(crate) fn dec_by(&self, _: i64) {}
}

/// One job type's series: none.
#[derive(Debug)]
pub(crate) struct TypeSeries;

impl WorkerMetrics {
    /// Metrics that count nothing (enable the cargo feature `metrics` for the real ones).
    pub fn new() -> WorkerMetrics {
        WorkerMetrics::default()
    }

    pub(crate) fn series(&self, _name: &str) -> Arc<TypeSeries> {
        Arc::new(TypeSeries)
    }
    pub(crate) fn threads(&self) -> &Gauge {
        &self.gauge
    }
    pub(crate) fn in_hand(&self) -> &Gauge {
        &self.gauge
    }
    pub(crate) fn claimed_batch(&self, _: usize) {}
    pub(crate) fn completed_batch(&self, _: usize) {}
    pub(crate) fn renewal(&self, _: Renewal) {}
    pub(crate) fn reaped(&self, _: u64) {}
    pub(crate) fn store_error(&self, _: Op) {}
    pub(crate) fn meter(&self, _: &TypeSeries) -> Arc<RunMeter> {
        Arc::new(RunMeter::default())
    }
}

impl TypeSeries {
    pub(crate) fn claimed(&self) {}
    pub(crate) fn ended(&self, _: Ended) {}
    pub(crate) fn timed_out(&self) {}
}

/// One run's meter: it only remembers whether the executor took it.
#[derive(Debug, Default)]
pub(crate) struct RunMeter {
    on_thread: AtomicBool,
    gauge: Gauge,
}

/// A run on its thread: nothing to count.
#[derive(Debug)]
pub(crate) struct OnThread;

impl RunMeter {
    pub(crate) fn take(&self) {
        self.on_thread.store(true, Ordering::Relaxed);
    }
    pub(crate) fn on_thread(self: &Arc<Self>) -> OnThread {
        OnThread
    }
    pub(crate) fn timed_on_thread(&self) -> bool {
        self.on_thread.load(Ordering::Relaxed)
    }
    pub(crate) fn record(&self, _: Duration) {}
    pub(crate) fn stuck(&self) -> &Gauge {
        &self.gauge
    }
    pub(crate) fn busy(&self) -> &Gauge {
        &self.gauge
    }
}
