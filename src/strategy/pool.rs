//! `pool`: offload's piscina. Each request's work is split into chunks that run on a fixed
//! set of threads fed by a bounded queue; a full queue answers 503 at once, a deadline that
//! passes while a chunk waits drops it unrun, and a client that goes away cancels its chunks.

use std::sync::Arc;
use std::time::Instant;

use super::{Done, ExecError, finish, run_chunk};
use crate::pool::{Pool, SubmitError, TaskError};
use crate::work::Work;

/// Runs work on a shared [`Pool`].
#[derive(Debug)]
pub struct PoolStrategy {
    pool: Arc<Pool>,
    /// Chunks per request.
    split: usize,
}

impl PoolStrategy {
    pub fn new(pool: Arc<Pool>, split: usize) -> PoolStrategy {
        PoolStrategy {
            pool,
            split: split.max(1),
        }
    }

    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    /// # Errors
    /// [`ExecError::Overloaded`] when the queue is full; [`ExecError::Expired`] past the
    /// deadline; [`ExecError::Panicked`] when a chunk panicked.
    pub async fn run(&self, work: Work, deadline: Instant) -> Result<Done, ExecError> {
        let handed_off = Instant::now();
        let tasks = work
            .chunks(self.split)
            .into_iter()
            .map(|c| move |stop: &dyn Fn() -> bool| run_chunk(&c, stop))
            .collect();
        let handles = self
            .pool
            .submit_all(Some(deadline), tasks)
            .map_err(|e| match e {
                SubmitError::Full(_) => ExecError::Overloaded {
                    retry_after_secs: super::RETRY_AFTER_SECS,
                },
                SubmitError::ShuttingDown => ExecError::ShuttingDown,
            })?;
        let mut outcomes = Vec::with_capacity(handles.len());
        // If this future is dropped (client gone, deadline), the remaining handles drop with
        // it and their chunks are skipped or stopped.
        for h in handles {
            outcomes.push(h.await.map_err(|e| match e {
                TaskError::Expired | TaskError::Stopped => ExecError::Expired,
                TaskError::Panicked(msg) => ExecError::Panicked(msg),
            })?);
        }
        finish(handed_off, &outcomes)
    }
}
