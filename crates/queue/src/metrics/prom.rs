//! [`WorkerMetrics`] on `prometheus-client`: the series, their registration, and the meter of
//! one run.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use super::{Ended, Op, Renewal};

pub(crate) use prometheus_client::metrics::gauge::Gauge;

/// Most job types with series of their own; later types count as `other`.
pub const MAX_JOB_TYPES: usize = 64;

/// Upper bounds of the run-time buckets, in seconds: 50 µs to a minute, about 2.5x apart (the
/// gateway's latency buckets, so the two read alike).
pub const RUN_BUCKETS: [f64; 18] = [
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
    2.5, 5.0, 10.0, 60.0,
];

/// Upper bounds of the batch-size buckets: 0 (a claim that found nothing) and powers of two
/// up to the largest batch the worker makes.
pub const BATCH_BUCKETS: [f64; 11] = [
    0.0, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0,
];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct JobLabel {
    job: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EndedLabel {
    job: String,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabel {
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OpLabel {
    op: &'static str,
}

fn run_histogram() -> Histogram {
    Histogram::new(RUN_BUCKETS)
}

/// A worker's metrics. Cheap to clone; clones share the series. Several workers may share one:
/// their figures add up.
#[derive(Clone)]
pub struct WorkerMetrics {
    inner: Arc<Inner>,
}

struct Inner {
    claimed: Family<JobLabel, Counter>,
    ended: Family<EndedLabel, Counter>,
    timed_out: Family<JobLabel, Counter>,
    run_seconds: Family<JobLabel, Histogram, fn() -> Histogram>,
    threads: Gauge,
    busy: Gauge,
    stuck: Gauge,
    in_hand: Gauge,
    claim_batch: Histogram,
    complete_batch: Histogram,
    renewals: [Counter; 3],
    renewal_family: Family<ResultLabel, Counter>,
    reaped: Counter,
    store_errors: Family<OpLabel, Counter>,
    errors: [Counter; 7],
    /// Each type's series, found by name.
    types: RwLock<HashMap<String, Arc<TypeSeries>>>,
}

/// One job type's series, found once per claimed job.
#[derive(Debug)]
pub(crate) struct TypeSeries {
    claimed: Counter,
    ended: [Counter; 7],
    timed_out: Counter,
    run: Histogram,
}

impl fmt::Debug for WorkerMetrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let types = self.inner.types.read().map_or(0, |t| t.len());
        f.debug_struct("WorkerMetrics")
            .field("job_types", &types)
            .field("busy", &self.inner.busy.get())
            .field("in_hand", &self.inner.in_hand.get())
            .finish()
    }
}

impl Default for WorkerMetrics {
    fn default() -> Self {
        WorkerMetrics::new()
    }
}

impl WorkerMetrics {
    /// Empty metrics, not yet registered anywhere.
    pub fn new() -> WorkerMetrics {
        let renewal_family = Family::<ResultLabel, Counter>::default();
        let renewals = ["renewed", "refused", "failed"]
            .map(|result| renewal_family.get_or_create_owned(&ResultLabel { result }));
        let store_errors = Family::<OpLabel, Counter>::default();
        let errors =
            Op::ALL.map(|op| store_errors.get_or_create_owned(&OpLabel { op: op.as_str() }));
        WorkerMetrics {
            inner: Arc::new(Inner {
                claimed: Family::default(),
                ended: Family::default(),
                timed_out: Family::default(),
                run_seconds: Family::new_with_constructor(run_histogram),
                threads: Gauge::default(),
                busy: Gauge::default(),
                stuck: Gauge::default(),
                in_hand: Gauge::default(),
                claim_batch: Histogram::new(BATCH_BUCKETS),
                complete_batch: Histogram::new(BATCH_BUCKETS),
                renewals,
                renewal_family,
                reaped: Counter::default(),
                store_errors,
                errors,
                types: RwLock::new(HashMap::new()),
            }),
        }
    }

    /// Registers every series on `registry`, under `offload_worker_`. Call it once per
    /// registry.
    pub fn register(&self, registry: &mut Registry) {
        let i = &self.inner;
        let r = registry.sub_registry_with_prefix("offload_worker");
        r.register(
            "jobs_claimed",
            "Jobs claimed, by job type",
            i.claimed.clone(),
        );
        r.register(
            "jobs_ended",
            "Claimed jobs by how they left this worker: done, retried (a failed run with attempts left), failed, expired, cancelled, lost (lease gone or outcome not stored: it runs again) or released (given back unrun at shutdown)",
            i.ended.clone(),
        );
        r.register(
            "runs_timed_out",
            "Runs stopped at their job type's time limit (each also counts as retried or failed)",
            i.timed_out.clone(),
        );
        r.register(
            "run_seconds",
            "Run time of each job on its thread, by job type",
            i.run_seconds.clone(),
        );
        r.register("threads", "Threads that run jobs", i.threads.clone());
        r.register("threads_busy", "Threads running a job now", i.busy.clone());
        r.register(
            "threads_stuck",
            "Threads still running a job past its time limit after being told to stop: they are lost to the worker until the handler returns",
            i.stuck.clone(),
        );
        r.register(
            "jobs_in_hand",
            "Jobs claimed and not yet stored: running, waiting for a thread, or their outcome on its way to the store",
            i.in_hand.clone(),
        );
        r.register(
            "claim_batch_size",
            "Jobs taken by each claim (0: the claim found none)",
            i.claim_batch.clone(),
        );
        r.register(
            "complete_batch_size",
            "Outcomes stored by each completion call",
            i.complete_batch.clone(),
        );
        r.register(
            "lease_renewals",
            "Lease renewals of running jobs: renewed, refused (the job was cancelled or its lease had lapsed) or failed (the store did not answer)",
            i.renewal_family.clone(),
        );
        r.register(
            "stalled_jobs_requeued",
            "Jobs whose lease had lapsed (their worker died or stalled) that this worker's reaper queued again",
            i.reaped.clone(),
        );
        r.register(
            "store_errors",
            "Store calls that failed, by call",
            i.store_errors.clone(),
        );
    }

    /// The series of job type `name`: its own, or `other` once [`MAX_JOB_TYPES`] have theirs.
    pub(crate) fn series(&self, name: &str) -> Arc<TypeSeries> {
        let i = &self.inner;
        if let Some(s) = i.types.read().expect("not poisoned").get(name) {
            return Arc::clone(s);
        }
        let mut types = i.types.write().expect("not poisoned");
        let name = if types.len() >= MAX_JOB_TYPES && !types.contains_key(name) {
            "other"
        } else {
            name
        };
        if let Some(s) = types.get(name) {
            return Arc::clone(s);
        }
        let job = || JobLabel {
            job: name.to_owned(),
        };
        let series = Arc::new(TypeSeries {
            claimed: i.claimed.get_or_create_owned(&job()),
            ended: Ended::ALL.map(|e| {
                i.ended.get_or_create_owned(&EndedLabel {
                    job: name.to_owned(),
                    outcome: e.as_str(),
                })
            }),
            timed_out: i.timed_out.get_or_create_owned(&job()),
            run: i.run_seconds.get_or_create_owned(&job()),
        });
        types.insert(name.to_owned(), Arc::clone(&series));
        series
    }

    pub(crate) fn threads(&self) -> &Gauge {
        &self.inner.threads
    }

    pub(crate) fn in_hand(&self) -> &Gauge {
        &self.inner.in_hand
    }

    pub(crate) fn claimed_batch(&self, n: usize) {
        self.inner.claim_batch.observe(n as f64);
    }

    pub(crate) fn completed_batch(&self, n: usize) {
        self.inner.complete_batch.observe(n as f64);
    }

    pub(crate) fn renewal(&self, r: Renewal) {
        self.inner.renewals[r as usize].inc();
    }

    pub(crate) fn reaped(&self, n: u64) {
        self.inner.reaped.inc_by(n);
    }

    pub(crate) fn store_error(&self, op: Op) {
        self.inner.errors[op as usize].inc();
    }

    /// A meter for one run of a job of `series`' type.
    pub(crate) fn meter(&self, series: &TypeSeries) -> Arc<RunMeter> {
        Arc::new(RunMeter {
            run: series.run.clone(),
            busy: self.inner.busy.clone(),
            stuck: self.inner.stuck.clone(),
            on_thread: AtomicBool::new(false),
        })
    }
}

impl TypeSeries {
    pub(crate) fn claimed(&self) {
        self.claimed.inc();
    }

    pub(crate) fn ended(&self, how: Ended) {
        self.ended[how as usize].inc();
    }

    pub(crate) fn timed_out(&self) {
        self.timed_out.inc();
    }
}

/// One run's meter: the worker makes it and lends it to the executor's call through a
/// task-local ([`METER`](super::METER)), so that [`Handlers`](crate::Handlers)' executor times
/// the run on its thread and counts the thread busy, and marks its thread stuck past its time limit.
/// Another executor never takes it: the worker then times the run from the outside.
#[derive(Debug)]
pub(crate) struct RunMeter {
    run: Histogram,
    busy: Gauge,
    stuck: Gauge,
    /// The executor took the meter: the run is timed on its thread.
    on_thread: AtomicBool,
}

impl RunMeter {
    /// Marks the meter taken by the executor, which then times the run on its thread.
    pub(crate) fn take(&self) {
        self.on_thread.store(true, Ordering::Relaxed);
    }

    /// Counts the thread busy until the guard drops, then records the run's time.
    pub(crate) fn on_thread(self: &Arc<Self>) -> OnThread {
        self.busy.inc();
        OnThread {
            meter: Arc::clone(self),
            began: Instant::now(),
        }
    }

    /// Whether the executor timed the run on its thread.
    pub(crate) fn timed_on_thread(&self) -> bool {
        self.on_thread.load(Ordering::Relaxed)
    }

    /// Records a run the executor did not time: `took` from the outside.
    pub(crate) fn record(&self, took: Duration) {
        self.run.observe(took.as_secs_f64());
    }

    /// The gauge of stuck threads.
    pub(crate) fn stuck(&self) -> &Gauge {
        &self.stuck
    }

    /// The gauge of busy threads.
    pub(crate) fn busy(&self) -> &Gauge {
        &self.busy
    }
}

/// A run on its thread: see [`RunMeter::on_thread`].
#[derive(Debug)]
pub(crate) struct OnThread {
    meter: Arc<RunMeter>,
    began: Instant,
}

impl Drop for OnThread {
    fn drop(&mut self) {
        self.meter.busy.dec();
        self.meter.record(self.began.elapsed());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn types_past_the_cap_count_as_other() {
        let m = WorkerMetrics::new();
        for i in 0..MAX_JOB_TYPES + 10 {
            m.series(&format!("t{i}")).claimed();
        }
        m.series("t0").claimed();
        let mut registry = Registry::default();
        m.register(&mut registry);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        assert!(
            text.contains("offload_worker_jobs_claimed_total{job=\"t0\"} 2"),
            "{text}"
        );
        assert!(
            text.contains("offload_worker_jobs_claimed_total{job=\"other\"} 10"),
            "{text}"
        );
        assert!(!text.contains(&format!("job=\"t{MAX_JOB_TYPES}\"")));
        assert_eq!(m.inner.types.read().unwrap().len(), MAX_JOB_TYPES + 1);
    }
}
