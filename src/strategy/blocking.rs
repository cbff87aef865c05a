//! `blocking`: `tokio::task::spawn_blocking` with tokio's defaults, what most Rust code does
//! first. The work runs whole on one blocking thread; tokio starts up to 512 of them and
//! queues the rest without bound, so under load every request shares the cores and all
//! of them slow down together.

use std::time::Instant;

use super::{About, Cancel, Done, ExecError, finish, run_chunk, stop_check};
use crate::work::Work;

/// What `blocking` declares of itself (see [`About`]).
pub(super) const ABOUT: About = About {
    name: "blocking",
    helper: None,
    routes: false,
    on_runtime: true,
    in_flood: false,
    in_mix: false,
    advice: "tokio's blocking pool, its queue unbounded: for occasional blocking calls, not a steady load of CPU work.",
};

/// Hands each request's work to tokio's blocking thread pool.
#[derive(Debug, Default)]
pub struct Blocking;

impl Blocking {
    /// # Errors
    /// [`ExecError::Expired`] past the deadline; [`ExecError::Panicked`] if the work panicked.
    pub async fn run(&self, work: Work, deadline: Instant) -> Result<Done, ExecError> {
        let handed_off = Instant::now();
        let cancel = Cancel::default();
        let _guard = cancel.guard();
        let stop = stop_check(cancel.clone(), deadline);
        let chunk = work.chunks(1).remove(0);
        let outcome = tokio::task::spawn_blocking(move || run_chunk(&chunk, &stop))
            .await
            .map_err(|e| ExecError::Panicked(e.to_string()))?;
        finish(handed_off, &[outcome])
    }
}
