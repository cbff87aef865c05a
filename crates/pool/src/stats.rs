//! The pool's counters, the snapshot [`PoolStats`] read from them, and the [`Observer`] a
//! caller installs to record per-task timings into a metrics system of its own (the crate
//! depends on none).

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// What the pool counts: plain atomics, one add per event.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub submitted: AtomicU64,
    pub rejected: AtomicU64,
    pub late: AtomicU64,
    pub started: AtomicU64,
    pub completed: AtomicU64,
    pub expired: AtomicU64,
    pub cancelled: AtomicU64,
    pub panicked: AtomicU64,
    /// For the utilisation.
    pub busy_us: AtomicU64,
}

/// Adds one to a counter.
pub(crate) fn inc(c: &AtomicU64) {
    c.fetch_add(1, Relaxed);
}

/// Per-task events, for a caller's own metrics or logs; every method defaults to nothing.
/// Called on the pool's threads, between tasks: keep it quick and never block.
pub trait Observer: Send + Sync + 'static {
    /// A task waited `wait` in the queue before it started.
    fn waited(&self, wait: Duration) {
        let _ = wait;
    }
    /// A task ran for `run` on a pool thread (whether it returned or panicked).
    fn ran(&self, run: Duration) {
        let _ = run;
    }
    /// A task panicked with `message`; the thread carries on. Without an observer the pool
    /// logs it with `tracing` at most once a second.
    fn panicked(&self, message: &str) {
        let _ = message;
    }
}

/// A point-in-time view of a pool: what [`Pool::stats`](crate::Pool::stats) returns. The
/// counts only grow, so a metrics exporter may turn them into counters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PoolStats {
    /// Worker threads.
    pub threads: usize,
    /// The queue's hard cap, in requests.
    pub max_queue: usize,
    /// Requests waiting now.
    pub queue_depth: usize,
    /// Threads running a task now.
    pub busy: usize,
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

impl PoolStats {
    /// The counts by outcome, named as offload's `/metrics` labels them.
    pub fn outcomes(&self) -> [(&'static str, u64); 8] {
        [
            ("submitted", self.submitted),
            ("rejected", self.rejected),
            ("late", self.late),
            ("started", self.started),
            ("completed", self.completed),
            ("expired", self.expired),
            ("cancelled", self.cancelled),
            ("panicked", self.panicked),
        ]
    }
}

impl Counters {
    pub(crate) fn snapshot(
        &self,
        depth: usize,
        busy: usize,
        threads: usize,
        max_queue: usize,
        up: Duration,
    ) -> PoolStats {
        let avail = up.as_micros() as f64 * threads as f64;
        PoolStats {
            threads,
            max_queue,
            queue_depth: depth,
            busy,
            submitted: self.submitted.load(Relaxed),
            rejected: self.rejected.load(Relaxed),
            late: self.late.load(Relaxed),
            started: self.started.load(Relaxed),
            completed: self.completed.load(Relaxed),
            expired: self.expired.load(Relaxed),
            cancelled: self.cancelled.load(Relaxed),
            panicked: self.panicked.load(Relaxed),
            utilisation: if avail > 0.0 {
                (self.busy_us.load(Relaxed) as f64 / avail).min(1.0)
            } else {
                0.0
            },
        }
    }
}
