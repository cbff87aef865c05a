//! `rayon`: the compute service's way to run work: rayon's global pool runs each request's
//! work in parallel, behind an admission limit (`--max-inflight`), so that past the limit a
//! request is refused at once (503) instead of piling up without bound. The seed's service
//! wrapped rayon in spawn_blocking with no limit at all.
//!
//! Requests run in arrival order: at most one request per rayon thread is on rayon at once,
//! and the rest wait their turn in a FIFO (tokio's semaphore is fair). Handing rayon all
//! admitted requests at once lets its work stealing finish them in any order: at `-c 100`
//! that put p99 at 8x p50.

use std::sync::Arc;
use std::time::Instant;

use tokio::sync::{Semaphore, oneshot};

use super::{Cancel, Done, ExecError, RETRY_AFTER_SECS, finish, stop_check};
use crate::work::Work;

/// Runs work on rayon, at most `max_inflight` requests at a time.
#[derive(Debug)]
pub struct Rayon {
    permits: Arc<Semaphore>,
    max_inflight: usize,
    /// Turns on rayon, one per thread, taken in arrival order.
    turns: Arc<Semaphore>,
    threads: usize,
}

impl Rayon {
    /// `threads`: rayon's threads; `max_inflight`: requests admitted (running or waiting
    /// their turn).
    pub fn new(threads: usize, max_inflight: usize) -> Rayon {
        let max_inflight = max_inflight.max(1);
        let threads = threads.max(1);
        Rayon {
            permits: Arc::new(Semaphore::new(max_inflight)),
            max_inflight,
            turns: Arc::new(Semaphore::new(threads)),
            threads,
        }
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

    /// # Errors
    /// [`ExecError::Overloaded`] past the admission limit; [`ExecError::Expired`] past the
    /// deadline; [`ExecError::Panicked`] when the work panicked.
    pub async fn run(&self, work: Work, deadline: Instant) -> Result<Done, ExecError> {
        let permit =
            self.permits
                .clone()
                .try_acquire_owned()
                .map_err(|_| ExecError::Overloaded {
                    retry_after_secs: RETRY_AFTER_SECS,
                })?;
        let handed_off = Instant::now();
        let turn = self
            .turns
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| ExecError::ShuttingDown)?;
        let cancel = Cancel::default();
        let _guard = cancel.guard();
        let stop = stop_check(cancel.clone(), deadline);
        let (tx, rx) = oneshot::channel();
        rayon::spawn(move || {
            // The permit is held until the work really ends, even if the caller left: the
            // limit bounds CPU work, not waiting callers. It is given back before the answer
            // goes out, so a client that sends its next request at once finds it free.
            let start = Instant::now();
            let r = work.run_parallel(&stop);
            let end = Instant::now();
            drop(turn);
            drop(permit);
            let _ = tx.send((r, start, end));
        });
        let outcome = rx
            .await
            .map_err(|_| ExecError::Panicked("a rayon task died".into()))?;
        finish(handed_off, &[outcome])
    }
}
