//! `inline`: the work runs right in the async handler, on a runtime worker thread.
//!
//! This is the anti-pattern, built so it can be measured: while the work runs, that worker
//! thread serves nothing else, so every request queued behind it (even `/health`) stalls,
//! exactly as a Node.js event loop does.

use std::time::{Duration, Instant};

use super::{Done, ExecError};
use crate::work::{Stopped, Work};

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
