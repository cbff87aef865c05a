//! `inline`: the work runs right in the async handler, on a runtime worker thread.
//!
//! This is the anti-pattern, built so it can be measured: while the work runs, that worker
//! thread serves nothing else, so every request queued behind it (even `/health`) stalls,
//! exactly as a Node.js event loop does.

use std::time::{Duration, Instant};

use super::{About, Done, ExecError};
use crate::work::{Stopped, Work};

/// What `inline` declares of itself (see [`About`]).
pub(super) const ABOUT: About = About {
    name: "inline",
    helper: None,
    routes: false,
    on_runtime: true,
    in_flood: false,
    in_mix: false,
    advice: "Never in a service: it runs the work on the runtime's threads, and is here to show the stall.",
};

/// Runs work on the calling (runtime) thread.
#[derive(Debug, Default)]
pub struct Inline;

impl Inline {
    /// Runs `work` to the end (or to `deadline`) without yielding to the runtime.
    ///
    /// # Errors
    /// [`ExecError::Expired`] when the deadline passed mid-run.
    pub fn run(&self, work: Work, deadline: Instant) -> Result<Done, ExecError> {
        let start = Instant::now();
        let result = work
            .run(&|| Instant::now() >= deadline)
            .map_err(|Stopped| ExecError::Expired)?;
        Ok(Done {
            result,
            wait: Duration::ZERO,
            run: start.elapsed(),
        })
    }
}
