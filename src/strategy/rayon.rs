//! `rayon`: the compute service's way to run work: rayon's global pool runs each request's
//! work in parallel, behind an admission limit (`--max-inflight`), so that past the limit a
//! request is refused at once (503) instead of piling up without bound. The seed's service
//! wrapped rayon in spawn_blocking with no limit at all.
//!
//! Requests run in arrival order: at most one request per rayon thread is on rayon at once,
//! and the rest wait their turn in a FIFO. The turns are plain threads (a [`Pool`]) that
//! each take the next request and block until rayon has run it: no hop through the async
//! runtime sits between one request and the next, and a blocked rayon worker never steals a
//! whole other request into its own stack (which is what running the turns on rayon itself
//! did: the first request ended last). Handing rayon all admitted requests at once lets its
//! work stealing finish them in any order: at `-c 100` that put p99 at 8x p50.

use std::sync::Arc;
use std::time::Instant;

use tokio::sync::Semaphore;

use super::{About, Cancel, Done, ExecError, finish, stop_check};
use crate::metrics::{ConstGauge, Gauge, Registry};
use crate::pool::{Pool, PoolConfig};
use crate::work::Work;

/// What `rayon` declares of itself (see [`About`]): the compute service's strategy, not a
/// gateway's choice, so the bench neither floods nor mixes it.
pub(super) const ABOUT: About = About {
    name: "rayon",
    helper: None,
    routes: false,
    on_runtime: false,
    in_flood: false,
    in_mix: false,
    advice: "The compute service's own pool, not a gateway's choice.",
};

/// Runs work on rayon, at most `max_inflight` requests at a time.
#[derive(Debug)]
pub struct Rayon {
    permits: Arc<Semaphore>,
    max_inflight: usize,
    /// Threads that each hand one request at a time to rayon, taking them in arrival order.
    turns: Pool,
    threads: usize,
    /// Seconds per unit of each kind on one idle thread, timed at startup (for `/health`).
    probe: Vec<(crate::work::Kind, f64)>,
    /// Predicted thread-time of the admitted requests not yet finished, in µs (by the probe):
    /// what a refused request's `Retry-After` is drawn from.
    outstanding_us: Arc<std::sync::atomic::AtomicU64>,
    /// [`Rayon::in_flight`] for `/metrics`, set at each scrape.
    in_flight_gauge: Gauge,
}

impl Rayon {
    /// `threads`: rayon's threads; `max_inflight`: requests admitted (running or waiting
    /// their turn).
    ///
    /// # Errors
    /// When the turn threads cannot be started.
    pub fn new(
        threads: usize,
        max_inflight: usize,
        priority: crate::pool::Priority,
        probe: Vec<(crate::work::Kind, f64)>,
    ) -> std::io::Result<Rayon> {
        let max_inflight = max_inflight.max(1);
        let threads = threads.max(1);
        let turns = Pool::new(PoolConfig {
            threads,
            // Admission is the permits'; the queue only ever holds admitted requests.
            max_queue: max_inflight,
            priority,
            name: "offload-turn".into(),
        })?;
        turns.observe(Arc::new(crate::pool_metrics::PanicLog));
        Ok(Rayon {
            permits: Arc::new(Semaphore::new(max_inflight)),
            max_inflight,
            turns,
            threads,
            probe,
            outstanding_us: Arc::default(),
            in_flight_gauge: Gauge::default(),
        })
    }

    /// Thread-time `work` should take by the startup probe, in µs (0 for an unprobed kind).
    fn predicted_us(&self, work: &Work) -> u64 {
        self.probe
            .iter()
            .find(|(k, _)| *k == work.kind())
            .map_or(0, |(_, spu)| (spu * work.n() as f64 * 1e6) as u64)
    }

    /// When a refused request should come back: once the admitted work has drained, spread
    /// over the threads (each request runs on all of them), by the startup probe.
    fn retry_after_secs(&self) -> u64 {
        let us = self
            .outstanding_us
            .load(std::sync::atomic::Ordering::Relaxed);
        crate::admission::retry_after_secs(std::time::Duration::from_micros(
            us / self.threads as u64,
        ))
    }

    /// Seconds per unit of each kind on one idle thread, timed at startup.
    pub fn probe(&self) -> &[(crate::work::Kind, f64)] {
        &self.probe
    }

    /// rayon's threads.
    pub fn threads(&self) -> usize {
        self.threads
    }

    /// Requests being worked on now.
    pub fn in_flight(&self) -> usize {
        self.max_inflight - self.permits.available_permits()
    }

    pub fn max_inflight(&self) -> usize {
        self.max_inflight
    }

    /// Registers the admission gauges (`offload_compute_*`).
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "offload_compute_in_flight",
            "Requests running on rayon now",
            self.in_flight_gauge.clone(),
        );
        registry.register(
            "offload_compute_max_in_flight",
            "Admission limit; past it, 503",
            ConstGauge::new(self.max_inflight as u64),
        );
    }

    /// Sets the in-flight gauge, before a scrape.
    pub fn refresh_metrics(&self) {
        self.in_flight_gauge.set(self.in_flight() as i64);
    }

    /// # Errors
    /// [`ExecError::Overloaded`] past the admission limit; [`ExecError::Expired`] past the
    /// deadline; [`ExecError::Panicked`] when the work panicked.
    pub async fn run(&self, work: Work, deadline: Instant) -> Result<Done, ExecError> {
        let permit =
            self.permits
                .clone()
                .try_acquire_owned()
                .map_err(|_| ExecError::Overloaded {
                    retry_after_secs: self.retry_after_secs(),
                })?;
        let predicted = self.predicted_us(&work);
        let outstanding = Arc::clone(&self.outstanding_us);
        outstanding.fetch_add(predicted, std::sync::atomic::Ordering::Relaxed);
        // Counted off when the work ends (or never starts), however the request ends.
        let settle = Settle(outstanding, predicted);
        let handed_off = Instant::now();
        let cancel = Cancel::default();
        let _guard = cancel.guard();
        let stop = stop_check(cancel.clone(), deadline);
        let handle = self.turns.submit(Some(deadline), move |_| {
            // The permit is held until the work really ends, even if the caller left: the
            // limit bounds CPU work, not waiting callers. It is given back before the
            // answer goes out, so a client that sends its next request at once finds it
            // free. A caller gone before its turn came never runs (the pool skips it).
            let start = Instant::now();
            let r = work.run_parallel(&stop);
            let end = Instant::now();
            drop(settle);
            drop(permit);
            (r, start, end)
        })?;
        let outcome = handle.await?;
        finish(handed_off, &[outcome])
    }
}

/// Takes a request's predicted time off the outstanding total when dropped.
#[derive(Debug)]
struct Settle(Arc<std::sync::atomic::AtomicU64>, u64);

impl Drop for Settle {
    fn drop(&mut self) {
        let _ = self.0.fetch_update(
            std::sync::atomic::Ordering::Relaxed,
            std::sync::atomic::Ordering::Relaxed,
            |v| Some(v.saturating_sub(self.1)),
        );
    }
}
