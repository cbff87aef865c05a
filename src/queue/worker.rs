//! The worker loop: claims up to `concurrency` jobs, renews each lease while its job runs, stores
//! the outcome, runs the reaper and the pruner, and drains gracefully on shutdown. A backend error
//! is logged and retried after a pause: the loop never dies on one.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio::task::JoinSet;
use tokio::time::{Instant, MissedTickBehavior};

use super::{Claimed, Completion, JobError, JobQueue, WorkerId};

/// A boxed, sendable future, as returned by an [`Executor`].
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// Runs one job: payload (JSON text) in, result (JSON text) or [`JobError`] out. CPU-heavy work
/// must leave the runtime's threads (a pool, `spawn_blocking`); the loop only awaits the future.
pub type Executor = Arc<dyn Fn(String) -> BoxFuture<Result<String, JobError>> + Send + Sync>;

/// Lease per job: a job whose worker stops heartbeating for this long runs again elsewhere.
pub const DEFAULT_LEASE: Duration = Duration::from_secs(30);
/// Heartbeat every lease / 3: two heartbeats can be late or lost before the lease lapses.
pub const DEFAULT_HEARTBEAT: Duration = Duration::from_secs(10);
/// First idle poll delay (SQLite): short, so a job enqueued just after a miss starts quickly.
pub const DEFAULT_POLL_MIN: Duration = Duration::from_millis(5);
/// Longest idle poll delay (SQLite): bounds pickup latency at ~100 ms while costing an idle
/// worker ~10 queries/s.
pub const DEFAULT_POLL_MAX: Duration = Duration::from_millis(100);
/// Longest blocking read (Redis): short enough to notice shutdown and due retries promptly.
pub const DEFAULT_BLOCK: Duration = Duration::from_secs(1);
/// Reaper period: stalled jobs are found within a second of their lease lapsing.
pub const DEFAULT_REAP_EVERY: Duration = Duration::from_secs(1);
/// Pruner period: deleting finished jobs is housekeeping, a minute late costs nothing.
pub const DEFAULT_PRUNE_EVERY: Duration = Duration::from_secs(60);
/// Shutdown waits this long for jobs in hand, then gives the rest back (below the usual 30 s
/// between SIGTERM and SIGKILL).
pub const DEFAULT_GRACE: Duration = Duration::from_secs(10);
/// How long giving jobs back may take at the end of shutdown.
const RELEASE_TIMEOUT: Duration = Duration::from_secs(5);

/// How a worker runs. `Default` gives the documented constants and one job per core.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// Jobs run at once.
    pub concurrency: usize,
    /// Lease per job.
    pub lease: Duration,
    /// Lease renewal period; keep it well below `lease`.
    pub heartbeat: Duration,
    /// First idle poll delay (SQLite), doubled up to `poll_max`.
    pub poll_min: Duration,
    /// Longest idle poll delay (SQLite).
    pub poll_max: Duration,
    /// Longest blocking read (Redis).
    pub block: Duration,
    /// Reaper period.
    pub reap_every: Duration,
    /// Pruner period.
    pub prune_every: Duration,
    /// How long shutdown waits for jobs in hand.
    pub grace: Duration,
    /// This worker's name.
    pub worker_id: WorkerId,
}

impl Default for WorkerConfig {
    fn default() -> WorkerConfig {
        WorkerConfig {
            concurrency: std::thread::available_parallelism().map_or(1, |n| n.get()),
            lease: DEFAULT_LEASE,
            heartbeat: DEFAULT_HEARTBEAT,
            poll_min: DEFAULT_POLL_MIN,
            poll_max: DEFAULT_POLL_MAX,
            block: DEFAULT_BLOCK,
            reap_every: DEFAULT_REAP_EVERY,
            prune_every: DEFAULT_PRUNE_EVERY,
            grace: DEFAULT_GRACE,
            worker_id: WorkerId::new(),
        }
    }
}

impl WorkerConfig {
    /// Sets the lease and a heartbeat of a third of it.
    pub fn with_lease(mut self, lease: Duration) -> WorkerConfig {
        self.lease = lease;
        self.heartbeat = lease / 3;
        self
    }
}

/// What a worker did, returned when it stops.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WorkerReport {
    /// Jobs it completed with a result.
    pub done: u64,
    /// Runs that failed and were queued for a retry.
    pub retried: u64,
    /// Jobs it moved to `failed`.
    pub failed: u64,
    /// Runs whose lease was lost (refused completion or failed heartbeat).
    pub lost: u64,
    /// Jobs given back unrun at shutdown.
    pub released: u64,
}

#[derive(Debug, Default)]
struct Tally([AtomicU64; 5]);

impl Tally {
    fn add(&self, i: usize) {
        self.0[i].fetch_add(1, Ordering::Relaxed);
    }
    fn report(&self) -> WorkerReport {
        let n = |i: usize| self.0[i].load(Ordering::Relaxed);
        WorkerReport {
            done: n(0),
            retried: n(1),
            failed: n(2),
            lost: n(3),
            released: n(4),
        }
    }
}

const DONE: usize = 0;
const RETRIED: usize = 1;
const FAILED: usize = 2;
const LOST: usize = 3;
const RELEASED: usize = 4;

/// Runs a worker until `shutdown` completes, then stops claiming, waits up to `config.grace` for
/// the jobs in hand and gives back those still running.
pub async fn run<Q: JobQueue + Clone>(
    queue: Q,
    executor: Executor,
    config: WorkerConfig,
    shutdown: impl Future<Output = ()>,
) -> WorkerReport {
    let tally = Arc::new(Tally::default());
    let permits = Arc::new(Semaphore::new(config.concurrency.max(1)));
    let (abandon_tx, abandon_rx) = watch::channel(false);
    let chores = tokio::spawn(chores(queue.clone(), config.clone()));
    let mut jobs = JoinSet::new();
    let mut shutdown = std::pin::pin!(shutdown);
    let mut shut = false;
    let mut idle = config.poll_min;

    while !shut {
        let permit = tokio::select! {
            biased;
            () = &mut shutdown, if !shut => { shut = true; continue; }
            p = Arc::clone(&permits).acquire_owned() => p.expect("semaphore never closed"),
        };
        while jobs.try_join_next().is_some() {}
        let started = Instant::now();
        let mut claim = std::pin::pin!(queue.claim(&config.worker_id, config.lease, config.block));
        // A claim in progress is finished, not dropped: a Redis entry read but never started
        // would wait for the reaper.
        let got = loop {
            tokio::select! {
                r = &mut claim => break r,
                () = &mut shutdown, if !shut => shut = true,
            }
        };
        let pause = match got {
            Ok(Some(job)) => {
                idle = config.poll_min;
                if shut {
                    let _ = queue.release(&job).await;
                    tally.add(RELEASED);
                    break;
                }
                let task = Job {
                    queue: queue.clone(),
                    job,
                    executor: Arc::clone(&executor),
                    config: config.clone(),
                    tally: Arc::clone(&tally),
                    abandon: abandon_rx.clone(),
                };
                jobs.spawn(task.run(permit));
                continue;
            }
            Ok(None) => {
                let pause = idle.saturating_sub(started.elapsed());
                idle = (idle * 2).min(config.poll_max);
                pause
            }
            Err(e) => {
                tracing::warn!(error = %e, "claim failed; retrying");
                config.poll_max
            }
        };
        if !pause.is_zero() && !shut {
            tokio::select! {
                () = tokio::time::sleep(pause) => {}
                () = &mut shutdown, if !shut => shut = true,
            }
        }
    }

    chores.abort();
    let drain = async { while jobs.join_next().await.is_some() {} };
    if tokio::time::timeout(config.grace, drain).await.is_err() {
        tracing::info!(left = jobs.len(), "grace period over; giving jobs back");
        let _ = abandon_tx.send(true);
        let drain = async { while jobs.join_next().await.is_some() {} };
        if tokio::time::timeout(RELEASE_TIMEOUT, drain).await.is_err() {
            jobs.abort_all();
        }
    }
    tally.report()
}

/// One claimed job and what it needs to run.
struct Job<Q> {
    queue: Q,
    job: Claimed,
    executor: Executor,
    config: WorkerConfig,
    tally: Arc<Tally>,
    abandon: watch::Receiver<bool>,
}

impl<Q: JobQueue + Clone> Job<Q> {
    async fn run(mut self, _permit: OwnedSemaphorePermit) {
        let job = &self.job;
        // Its own task, so that a panic in the work becomes an error, not a dead worker.
        let mut work = tokio::spawn((self.executor)(job.payload.clone()));
        let every = self.config.heartbeat.max(Duration::from_millis(1));
        let mut beat = tokio::time::interval_at(Instant::now() + every, every);
        beat.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let outcome = loop {
            tokio::select! {
                r = &mut work => break r.unwrap_or_else(|e| {
                    Err(JobError::retry(format!("the job's task failed: {e}")))
                }),
                _ = beat.tick() => match self.queue.heartbeat(job, self.config.lease).await {
                    Ok(true) => {}
                    Ok(false) => {
                        tracing::warn!(id = %job.id, "lease lost; abandoning the run");
                        work.abort();
                        self.tally.add(LOST);
                        return;
                    }
                    Err(e) => tracing::warn!(id = %job.id, error = %e, "heartbeat failed"),
                },
                Ok(()) = self.abandon.changed() => {
                    work.abort();
                    match self.queue.release(job).await {
                        Ok(true) => self.tally.add(RELEASED),
                        Ok(false) => self.tally.add(LOST),
                        Err(e) => tracing::warn!(id = %job.id, error = %e, "release failed"),
                    }
                    return;
                }
            }
        };
        match self.queue.complete(job, outcome).await {
            Ok(Completion::Done) => self.tally.add(DONE),
            Ok(Completion::Retrying) => self.tally.add(RETRIED),
            Ok(Completion::Failed) => self.tally.add(FAILED),
            Ok(Completion::Refused) => {
                tracing::warn!(id = %job.id, "lease lost before completion; outcome dropped");
                self.tally.add(LOST);
            }
            // The lease will lapse and the job run again: at-least-once.
            Err(e) => tracing::warn!(id = %job.id, error = %e, "complete failed"),
        }
    }
}

/// Reaper and pruner, until aborted.
async fn chores<Q: JobQueue>(queue: Q, config: WorkerConfig) {
    let mut reap = tokio::time::interval(config.reap_every.max(Duration::from_millis(1)));
    let mut prune = tokio::time::interval(config.prune_every.max(Duration::from_millis(1)));
    reap.set_missed_tick_behavior(MissedTickBehavior::Delay);
    prune.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = reap.tick() => match queue.reap().await {
                Ok(0) => {}
                Ok(n) => tracing::info!(jobs = n, "reaped stalled jobs"),
                Err(e) => tracing::warn!(error = %e, "reap failed"),
            },
            _ = prune.tick() => if let Err(e) = queue.prune().await {
                tracing::warn!(error = %e, "prune failed");
            },
        }
    }
}
