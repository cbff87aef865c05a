//! `queue`: the work is stored as a durable job and the request answers `202 Accepted` at
//! once with the job's id; separate `offload worker` processes run it and store the result,
//! readable at `GET /jobs/{id}`. Accepted is not done: the gateway's rate of 202s says
//! nothing about how fast jobs finish.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::queue::{EnqueueError, JobId, JobQueue, JobView, NewJob, Queue, QueueError};
use crate::work::Work;

use super::{ExecError, RETRY_AFTER_SECS};

/// After the store says the backlog is full, requests are refused without asking it again for
/// this long. Under a flood the gateway would otherwise try one store write per refused request
/// (tens of thousands a second), and on SQLite each try takes the file's one write lock that
/// the workers need to claim and complete. Workers free a few dozen places in that time at
/// most; the cap itself stays exact, since only the store decides what is accepted.
const FULL_HOLD: Duration = Duration::from_millis(10);
/// Longest the gateway waits for the store on a client's behalf (an enqueue, a job's status,
/// the counts on `/metrics`). Each is one round trip touching a few rows, so one unanswered
/// after this long means the store is out of reach: a network partition is silence, not a
/// refused connection, and the store clients' own timeouts (10 s Redis, 30 s Postgres) are
/// for workers, which can afford to wait. An enqueue that timed out may still be stored.
const STORE_WAIT: Duration = Duration::from_secs(2);
/// While the store is out of reach the gateway refuses at once (503 `queue_unavailable`)
/// and checks the store this often in the background; the first answer lets requests
/// through again. Clients wait for no timeout but the first.
const STORE_CHECK: Duration = Duration::from_millis(500);

/// Enqueues work on a [`Queue`].
#[derive(Debug, Clone)]
pub struct QueueStrategy {
    queue: Queue,
    /// Until when (µs since `epoch`) the backlog is taken to be full.
    full_until_us: Arc<AtomicU64>,
    epoch: Instant,
    /// The store failed or did not answer within [`STORE_WAIT`]; a check runs until it does.
    down: Arc<AtomicBool>,
}

impl QueueStrategy {
    pub fn new(queue: Queue) -> QueueStrategy {
        QueueStrategy {
            queue,
            full_until_us: Arc::new(AtomicU64::new(0)),
            epoch: Instant::now(),
            down: Arc::new(AtomicBool::new(false)),
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
        self.reachable()?;
        let job = NewJob::new(work.to_json().to_string());
        match tokio::time::timeout(STORE_WAIT, self.queue.enqueue(job)).await {
            Ok(Ok(id)) => Ok(id),
            Ok(Err(EnqueueError::Full(_))) => {
                let hold = FULL_HOLD.as_micros() as u64;
                self.full_until_us
                    .store(self.now_us() + hold, Ordering::Relaxed);
                Err(full)
            }
            Ok(Err(EnqueueError::Queue(e))) => Err(self.failed(e)),
            Err(_) => Err(self.failed(QueueError::Timeout("an enqueue", STORE_WAIT))),
        }
    }

    /// A job's view, `None` for an unknown id.
    ///
    /// # Errors
    /// [`ExecError::Unavailable`] when the store fails or is out of reach.
    pub async fn get(&self, id: &JobId) -> Result<Option<JobView>, ExecError> {
        self.bounded("a job's status", self.queue.get(id)).await
    }

    /// `op` on the store within [`STORE_WAIT`], or at once an error while it is out of reach.
    async fn bounded<T>(
        &self,
        what: &'static str,
        op: impl Future<Output = Result<T, QueueError>>,
    ) -> Result<T, ExecError> {
        self.reachable()?;
        match tokio::time::timeout(STORE_WAIT, op).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(self.failed(e)),
            Err(_) => Err(self.failed(QueueError::Timeout(what, STORE_WAIT))),
        }
    }

    fn reachable(&self) -> Result<(), ExecError> {
        if self.down.load(Ordering::Acquire) {
            return Err(ExecError::Unavailable(
                "the queue's store is out of reach (checking it in the background)".into(),
            ));
        }
        Ok(())
    }

    /// Marks the store down after `e` and starts the background check, unless one runs.
    fn failed(&self, e: QueueError) -> ExecError {
        if !self.down.swap(true, Ordering::AcqRel) {
            tracing::warn!(error = %e, "the queue's store failed; refusing until it answers");
            let (queue, down) = (self.queue.clone(), Arc::clone(&self.down));
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(STORE_CHECK).await;
                    if let Ok(Ok(_)) = tokio::time::timeout(STORE_WAIT, queue.counts()).await {
                        down.store(false, Ordering::Release);
                        tracing::info!("the queue's store answers again");
                        return;
                    }
                }
            });
        }
        ExecError::Unavailable(e.to_string())
    }

    /// Writes `offload_jobs{state="..."}` gauges.
    pub async fn render_metrics(&self, out: &mut String) {
        use crate::metrics::{header, sample};
        let counts = self.bounded("counting jobs", self.queue.counts()).await;
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
