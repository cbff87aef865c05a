//! `queue`: the work is stored as a durable job and the request answers `202 Accepted` at
//! once with the job's id; separate `offload worker` processes run it and store the result,
//! readable at `GET /jobs/{id}`. Accepted is not done: the gateway's rate of 202s says
//! nothing about how fast jobs finish.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::queue::{EnqueueError, JobId, JobQueue, NewJob, Queue};
use crate::work::Work;

use super::{ExecError, RETRY_AFTER_SECS};

/// After the store says the backlog is full, requests are refused without asking it again for
/// this long. Under a flood the gateway would otherwise try one store write per refused request
/// (tens of thousands a second), and on SQLite each try takes the file's one write lock that
/// the workers need to claim and complete. Workers free a few dozen places in that time at
/// most; the cap itself stays exact, since only the store decides what is accepted.
const FULL_HOLD: Duration = Duration::from_millis(10);

/// Enqueues work on a [`Queue`].
#[derive(Debug, Clone)]
pub struct QueueStrategy {
    queue: Queue,
    /// Until when (µs since `epoch`) the backlog is taken to be full.
    full_until_us: Arc<AtomicU64>,
    epoch: Instant,
}

impl QueueStrategy {
    pub fn new(queue: Queue) -> QueueStrategy {
        QueueStrategy {
            queue,
            full_until_us: Arc::new(AtomicU64::new(0)),
            epoch: Instant::now(),
        }
    }

    fn now_us(&self) -> u64 {
        self.epoch.elapsed().as_micros() as u64
    }

    pub fn queue(&self) -> &Queue {
        &self.queue
    }

    /// Stores `work` as a job; returns its id.
    ///
    /// # Errors
    /// [`ExecError::Overloaded`] when the backlog is full; [`ExecError::Unavailable`] when the
    /// queue's store fails (Redis down, disk full).
    pub async fn enqueue(&self, work: Work) -> Result<JobId, ExecError> {
        let full = ExecError::Overloaded {
            retry_after_secs: RETRY_AFTER_SECS,
        };
        if self.now_us() < self.full_until_us.load(Ordering::Relaxed) {
            return Err(full);
        }
        self.queue
            .enqueue(NewJob::new(work.to_json().to_string()))
            .await
            .map_err(|e| match e {
                EnqueueError::Full(_) => {
                    let hold = FULL_HOLD.as_micros() as u64;
                    self.full_until_us
                        .store(self.now_us() + hold, Ordering::Relaxed);
                    full
                }
                EnqueueError::Queue(e) => ExecError::Unavailable(e.to_string()),
            })
    }

    /// Writes `offload_jobs{state="..."}` gauges.
    pub async fn render_metrics(&self, out: &mut String) {
        use crate::metrics::{header, sample};
        let counts = self.queue.counts().await;
        header(
            out,
            "offload_queue_up",
            "gauge",
            "1 when the queue's store answers.",
        );
        sample(out, "offload_queue_up", "", u8::from(counts.is_ok()));
        let c = match counts {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "could not count jobs");
                return;
            }
        };
        header(
            out,
            "offload_jobs",
            "gauge",
            "Jobs in the queue by state (finished ones until their retention ends).",
        );
        for (state, v) in [
            ("queued", c.queued),
            ("running", c.running),
            ("done", c.done),
            ("failed", c.failed),
        ] {
            sample(out, "offload_jobs", &format!("state=\"{state}\""), v);
        }
        header(
            out,
            "offload_job_stalls_total",
            "counter",
            "Runs lost with their worker (lease expired): requeued without spending an attempt.",
        );
        sample(out, "offload_job_stalls_total", "", c.stalls);
    }
}
