//! `spawn`: every request starts its own OS threads, one per chunk (default: one per core),
//! splits the work across them and joins them, like a Node service that creates
//! `new Worker()`s per request. Nothing bounds the total: at `-c 100` on 2 cores that is
//! 200 threads fighting for 2 cores. A thread that cannot be started answers 503.

use std::time::Instant;

use tokio::sync::oneshot;

use super::{About, Cancel, Done, ExecError, finish, run_chunk, stop_check};
use crate::work::Work;

/// What `spawn` declares of itself (see [`About`]).
pub(super) const ABOUT: About = About {
    name: "spawn",
    helper: None,
    routes: false,
    on_runtime: false,
    in_flood: false,
    in_mix: false,
    advice: "A thread per request and nothing to bound them: for rare, short bursts only.",
};

/// Starts fresh threads per request.
#[derive(Debug)]
pub struct Spawn {
    /// Threads (and chunks) per request.
    pub split: usize,
}

impl Spawn {
    /// # Errors
    /// [`ExecError::NoThread`] when the OS refuses a thread; [`ExecError::Expired`] past the
    /// deadline; [`ExecError::Panicked`] when a thread died.
    pub async fn run(&self, work: Work, deadline: Instant) -> Result<Done, ExecError> {
        let handed_off = Instant::now();
        let cancel = Cancel::default();
        let _guard = cancel.guard();
        let mut replies = Vec::with_capacity(self.split);
        for chunk in work.chunks(self.split) {
            let (tx, rx) = oneshot::channel();
            let stop = stop_check(cancel.clone(), deadline);
            std::thread::Builder::new()
                .name("offload-spawn".into())
                .spawn(move || {
                    let _ = tx.send(run_chunk(&chunk, &stop));
                })
                // The guard stops the threads already started.
                .map_err(ExecError::NoThread)?;
            replies.push(rx);
        }
        let mut outcomes = Vec::with_capacity(replies.len());
        for rx in replies {
            // A sender dropped without a reply means the thread panicked.
            outcomes.push(
                rx.await
                    .map_err(|_| ExecError::Panicked("a spawned thread died".into()))?,
            );
        }
        finish(handed_off, &outcomes)
    }
}
