//! The worker loop: claims jobs in batches (as many as it has room for: `concurrency` running plus
//! some claimed ahead, so a core that finishes a job finds the next one already in hand; how many
//! ahead follows the measured run time, about [`PREFETCH_WORK`] of work per thread, so tiny jobs
//! come hundreds to a claim and long ones one per thread),
//! renews each lease while its job runs, stores outcomes in batches (one completer; while one
//! batch is being stored the next gathers), runs the reaper and the pruner, and drains gracefully
//! on shutdown. A backend error is logged and retried after a pause: the loop never dies on one.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot, watch};
use tokio::task::JoinSet;
use tokio::time::{Instant, MissedTickBehavior};

use super::{Claimed, Completion, JobError, JobQueue, QueueError, WorkerId};
use crate::metrics::{Ended, Op, Renewal, TypeSeries, WorkerMetrics};

/// A boxed, sendable future, as returned by an [`Executor`].
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// Runs one job: payload (JSON text) in, result (JSON text) or [`JobError`] out. CPU-heavy work
/// must leave the runtime's threads (a pool, `spawn_blocking`); the loop only awaits the future.
pub type Executor = Arc<dyn Fn(String) -> BoxFuture<Result<String, JobError>> + Send + Sync>;

/// Lease per job: a job whose worker stops heartbeating for this long runs again elsewhere.
pub const DEFAULT_LEASE: Duration = Duration::from_secs(30);
/// Heartbeat every second (at most a third of the lease, so two can be late or lost before it
/// lapses): a run whose job was cancelled finds out at its next heartbeat, and is told to stop
/// ([`JobContext::stopped`](crate::JobContext::stopped)). A heartbeat is one small write per
/// running job a second, and only jobs that run longer than a second ever send one.
pub const DEFAULT_HEARTBEAT: Duration = Duration::from_secs(1);
/// Pause after a claim that found nothing without waiting (a backend that cannot wait), doubled
/// up to `poll_max`: keeps an idle loop from spinning.
pub const DEFAULT_POLL_MIN: Duration = Duration::from_millis(5);
/// Longest such pause, and the pause after a backend error.
pub const DEFAULT_POLL_MAX: Duration = Duration::from_millis(100);
/// Longest an idle claim waits for a job to arrive (Redis blocking read, Postgres `LISTEN`,
/// SQLite file wake-up): short enough to notice shutdown and due retries promptly.
pub const DEFAULT_BLOCK: Duration = Duration::from_secs(1);
/// Work claimed ahead per thread, by the measured mean run time: enough that a store round trip
/// (a fraction of a millisecond here, a few on a network) never leaves a thread idle, and that
/// each claim, refilling half of it, takes several jobs of a few milliseconds (a claim is a
/// store write: one per job cost 2% of a 2-core machine at 400 jobs/s); small enough that a
/// worker does not hoard jobs that idle workers elsewhere could run (a twentieth of a second
/// of its own threads' time).
pub const PREFETCH_WORK: Duration = Duration::from_millis(50);
/// Most jobs claimed ahead per thread, whatever the run time.
pub const PREFETCH_MAX_PER_THREAD: usize = 256;
/// Longest the completer waits for more outcomes to join a batch, under load (jobs waiting
/// in hand): a small part of a job's enqueue-to-done time when jobs wait anyway, enough for
/// jobs of a few milliseconds to share a store write (one write per job cost about 1% of a
/// 2-core machine at 400 jobs/s) and for tiny jobs to fill batches of dozens. The permits of
/// outcomes waiting to be stored are a fifth of [`PREFETCH_WORK`], so no thread runs dry.
const COMPLETE_LINGER: Duration = Duration::from_millis(10);
/// Most outcomes stored in one call: one transaction stays short while a batch still spreads a
/// round trip over hundreds of tiny jobs.
const MAX_COMPLETE: usize = 256;
/// Reaper period: stalled jobs are found within a second of their lease lapsing.
pub const DEFAULT_REAP_EVERY: Duration = Duration::from_secs(1);
/// Pruner period: deleting finished jobs is housekeeping, a minute late costs nothing.
pub const DEFAULT_PRUNE_EVERY: Duration = Duration::from_secs(60);
/// Shutdown waits this long for jobs in hand, then gives the rest back (below the usual 30 s
/// between SIGTERM and SIGKILL).
pub const DEFAULT_GRACE: Duration = Duration::from_secs(10);
/// How long giving jobs back may take at the end of shutdown.
const RELEASE_TIMEOUT: Duration = Duration::from_secs(5);

/// The number of CPUs this process may use: the worker's default concurrency.
pub fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// How a worker runs. `Default` gives the documented constants and one job per core.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// Jobs run at once.
    pub concurrency: usize,
    /// Most jobs claimed ahead of those running, waiting their turn under their own lease; the
    /// loop claims ahead about [`PREFETCH_WORK`] of work per thread, at least one per thread.
    pub prefetch: usize,
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
    /// Where the worker counts what it does ([`WorkerMetrics`]); `None`: nowhere but its
    /// [`WorkerReport`].
    pub metrics: Option<WorkerMetrics>,
}

impl Default for WorkerConfig {
    fn default() -> WorkerConfig {
        WorkerConfig {
            concurrency: cores(),
            prefetch: cores() * PREFETCH_MAX_PER_THREAD,
            lease: DEFAULT_LEASE,
            heartbeat: DEFAULT_HEARTBEAT,
            poll_min: DEFAULT_POLL_MIN,
            poll_max: DEFAULT_POLL_MAX,
            block: DEFAULT_BLOCK,
            reap_every: DEFAULT_REAP_EVERY,
            prune_every: DEFAULT_PRUNE_EVERY,
            grace: DEFAULT_GRACE,
            worker_id: WorkerId::new(),
            metrics: None,
        }
    }
}

impl WorkerConfig {
    /// Sets how many jobs run at once (at least one).
    #[must_use]
    pub fn with_concurrency(mut self, concurrency: usize) -> WorkerConfig {
        self.concurrency = concurrency.max(1);
        self
    }

    /// Counts what the worker does in `metrics` (register them on a registry to serve them).
    #[must_use]
    pub fn with_metrics(mut self, metrics: WorkerMetrics) -> WorkerConfig {
        self.metrics = Some(metrics);
        self
    }

    /// Sets the lease, and a heartbeat of a third of it or [`DEFAULT_HEARTBEAT`], whichever
    /// is shorter.
    pub fn with_lease(mut self, lease: Duration) -> WorkerConfig {
        self.lease = lease;
        self.heartbeat = (lease / 3).min(DEFAULT_HEARTBEAT);
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
    /// Jobs whose run failed or was stopped at their deadline, now `expired`.
    pub expired: u64,
    /// Jobs cancelled while this worker held them (their runs were told to stop).
    pub cancelled: u64,
    /// Runs stopped at their job type's time limit (each also counts as retried or failed).
    pub timed_out: u64,
    /// Runs whose job it lost: the lease lapsed (a refused completion or heartbeat), or the
    /// outcome or a give-back could not be stored. The job runs again, here or elsewhere.
    pub lost: u64,
    /// Jobs given back unrun at shutdown.
    pub released: u64,
    /// Claim calls made (each took a batch of one or more jobs, or found none).
    pub claims: u64,
    /// Completion calls made (each stored a batch of outcomes).
    pub completions: u64,
}

/// The live counters behind a [`WorkerReport`].
#[derive(Debug, Default)]
struct Tally {
    done: AtomicU64,
    retried: AtomicU64,
    failed: AtomicU64,
    expired: AtomicU64,
    cancelled: AtomicU64,
    timed_out: AtomicU64,
    lost: AtomicU64,
    released: AtomicU64,
    claims: AtomicU64,
    completions: AtomicU64,
}

impl Tally {
    fn add(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
    /// Counts how a job left the worker's hands, here and in its type's series.
    fn ended(&self, series: Option<&TypeSeries>, how: Ended) {
        Tally::add(match how {
            Ended::Done => &self.done,
            Ended::Retried => &self.retried,
            Ended::Failed => &self.failed,
            Ended::Expired => &self.expired,
            Ended::Cancelled => &self.cancelled,
            Ended::Lost => &self.lost,
            Ended::Released => &self.released,
        });
        if let Some(s) = series {
            s.ended(how);
        }
    }
    fn report(&self) -> WorkerReport {
        let n = |c: &AtomicU64| c.load(Ordering::Relaxed);
        WorkerReport {
            done: n(&self.done),
            retried: n(&self.retried),
            failed: n(&self.failed),
            expired: n(&self.expired),
            cancelled: n(&self.cancelled),
            timed_out: n(&self.timed_out),
            lost: n(&self.lost),
            released: n(&self.released),
            claims: n(&self.claims),
            completions: n(&self.completions),
        }
    }
}

/// One outcome on its way to the completer, and where to send what the store made of it.
type Outcome = (
    Claimed,
    Result<String, JobError>,
    oneshot::Sender<Result<Completion, String>>,
);

/// Runs a worker until `shutdown` completes, then stops claiming, waits up to `config.grace` for
/// the jobs in hand and gives back those still running.
pub async fn run<Q: JobQueue + Clone>(
    queue: Q,
    executor: Executor,
    config: WorkerConfig,
    shutdown: impl Future<Output = ()>,
) -> WorkerReport {
    let tally = Arc::new(Tally::default());
    let threads = config.concurrency.max(1);
    let metrics = config.metrics.clone();
    if let Some(m) = &metrics {
        m.threads().inc_by(threads as i64);
    }
    let room = threads + config.prefetch;
    let permits = Arc::new(Semaphore::new(room));
    // Two per thread: one running and one already handed to the executor, so a thread that
    // finishes finds its next job waiting in the pool instead of waiting for this loop's
    // runtime to hand one over (a few wake-ups, comparable to a tiny job's run).
    let slots = Arc::new(Semaphore::new(2 * threads));
    let pace = Arc::new(Pace::default());
    let (abandon_tx, abandon_rx) = watch::channel(false);
    let chores = tokio::spawn(chores(queue.clone(), config.clone()));
    // Every job sends one outcome and holds its permit until it is stored, so `room` bounds it.
    let (outcomes, inbox) = mpsc::channel::<Outcome>(room);
    let completer = tokio::spawn(completer(
        queue.clone(),
        inbox,
        Arc::clone(&tally),
        Arc::clone(&permits),
        room - threads,
        metrics.clone(),
    ));
    let mut jobs = JoinSet::new();
    let mut shutdown = std::pin::pin!(shutdown);
    let mut shut = false;
    let mut idle = config.poll_min;

    while !shut {
        // Claim in batches: wait until the jobs in hand fall to the low mark (the running ones
        // plus half the work wanted ahead), then refill to the full mark in one call. Claiming
        // whenever one permit frees would take the jobs one or two at a time.
        let full = pace.ahead(threads, config.prefetch).min(room);
        let low = threads.min(full - 1) + (full - threads.min(full - 1)) / 2;
        let mut held = tokio::select! {
            biased;
            () = &mut shutdown, if !shut => { shut = true; continue; }
            p = Arc::clone(&permits).acquire_many_owned((room - low) as u32) => {
                p.expect("semaphore never closed")
            }
        };
        let in_hand = room - permits.available_permits() - held.num_permits();
        let want = full.saturating_sub(in_hand).clamp(1, held.num_permits());
        if let Some(extra) = held.split(held.num_permits() - want) {
            drop(extra);
        }
        while jobs.try_join_next().is_some() {}
        let started = Instant::now();
        let mut claim =
            std::pin::pin!(queue.claim_batch(&config.worker_id, config.lease, want, config.block));
        Tally::add(&tally.claims);
        // A claim in progress is finished, not dropped: a Redis entry read but never started
        // would wait for the reaper.
        let got = loop {
            tokio::select! {
                r = &mut claim => break r,
                () = &mut shutdown, if !shut => shut = true,
            }
        };
        if let (Some(m), Ok(batch)) = (&metrics, &got) {
            m.claimed_batch(batch.len());
        }
        let pause = match got {
            Ok(batch) if !batch.is_empty() => {
                idle = config.poll_min;
                for job in batch {
                    let series = metrics
                        .as_ref()
                        .map(|m| m.series(crate::metrics::job_type(&job.payload)));
                    if let Some(s) = &series {
                        s.claimed();
                    }
                    if shut {
                        let how = match queue.release(&job).await {
                            Ok(true) => Ended::Released,
                            _ => Ended::Lost,
                        };
                        tally.ended(series.as_deref(), how);
                        continue;
                    }
                    let span = run_span(&job);
                    let task = Job {
                        queue: queue.clone(),
                        job,
                        executor: Arc::clone(&executor),
                        config: config.clone(),
                        tally: Arc::clone(&tally),
                        abandon: abandon_rx.clone(),
                        outcomes: outcomes.clone(),
                        slots: Arc::clone(&slots),
                        pace: Arc::clone(&pace),
                        span,
                        series,
                    };
                    let permit = held.split(1).expect("a permit per job claimed");
                    if task.span.is_disabled() {
                        jobs.spawn(task.run(permit));
                    } else {
                        let span = task.span.clone();
                        jobs.spawn(tracing::Instrument::instrument(task.run(permit), span));
                    }
                }
                Duration::ZERO
            }
            Ok(_) => {
                // The backend waited up to `block` already; only a claim that came back at once
                // (a retry falling due, or shutdown) earns a pause, so an idle loop cannot spin.
                if started.elapsed() >= config.block {
                    idle = config.poll_min;
                    Duration::ZERO
                } else {
                    let pause = idle.saturating_sub(started.elapsed());
                    idle = (idle * 2).min(config.poll_max);
                    pause
                }
            }
            Err(e) => {
                store_error(metrics.as_ref(), Op::Claim);
                crate::log::throttled!("worker_claim_failed", warn, error = %e, "claim failed; retrying");
                config.poll_max
            }
        };
        drop(held);
        if !pause.is_zero() && !shut {
            tokio::select! {
                () = tokio::time::sleep(pause) => {}
                () = &mut shutdown, if !shut => shut = true,
            }
        }
    }

    chores.abort();
    drop(outcomes);
    let drain = async { while jobs.join_next().await.is_some() {} };
    if tokio::time::timeout(config.grace, drain).await.is_err() {
        tracing::info!(left = jobs.len(), "grace period over; giving jobs back");
        let _ = abandon_tx.send(true);
        let drain = async { while jobs.join_next().await.is_some() {} };
        if tokio::time::timeout(RELEASE_TIMEOUT, drain).await.is_err() {
            jobs.abort_all();
        }
    }
    // Every sender is gone once the jobs are: the completer stores what is left and ends.
    let _ = tokio::time::timeout(RELEASE_TIMEOUT, completer).await;
    if let Some(m) = &metrics {
        m.threads().dec_by(threads as i64);
    }
    tally.report()
}

/// Counts a failed store call, if the worker has metrics.
fn store_error(metrics: Option<&WorkerMetrics>, op: Op) {
    if let Some(m) = metrics {
        m.store_error(op);
    }
}

/// Stores outcomes in batches: takes one, then every other that is already waiting (up to
/// [`MAX_COMPLETE`]), and stores them in one call. Under load (more jobs in hand than threads,
/// judged by the free `permits` falling below `busy_below`) it lingers up to
/// [`COMPLETE_LINGER`] for more first: a local store answers faster than tiny jobs finish, so
/// without it every batch would hold one or two outcomes.
async fn completer<Q: JobQueue>(
    queue: Q,
    mut inbox: mpsc::Receiver<Outcome>,
    tally: Arc<Tally>,
    permits: Arc<Semaphore>,
    busy_below: usize,
    metrics: Option<WorkerMetrics>,
) {
    let mut batch: Vec<Outcome> = Vec::with_capacity(MAX_COMPLETE);
    while inbox.recv_many(&mut batch, MAX_COMPLETE).await > 0 {
        if batch.len() < MAX_COMPLETE && permits.available_permits() < busy_below {
            let until = Instant::now() + COMPLETE_LINGER;
            while batch.len() < MAX_COMPLETE {
                let room = MAX_COMPLETE - batch.len();
                match tokio::time::timeout_at(until, inbox.recv_many(&mut batch, room)).await {
                    Ok(n) if n > 0 => {}
                    _ => break,
                }
            }
        }
        let (outcomes, replies): (Vec<_>, Vec<_>) = batch
            .drain(..)
            .map(|(job, outcome, reply)| ((job, outcome), reply))
            .unzip();
        Tally::add(&tally.completions);
        if let Some(m) = &metrics {
            m.completed_batch(outcomes.len());
        }
        match queue.complete_batch(outcomes).await {
            Ok(done) => {
                for (reply, c) in replies.into_iter().zip(done) {
                    let _ = reply.send(Ok(c));
                }
            }
            Err(e) => {
                store_error(metrics.as_ref(), Op::Complete);
                let e: QueueError = e;
                let message = e.to_string();
                for reply in replies {
                    let _ = reply.send(Err(message.clone()));
                }
            }
        }
    }
}

/// One claimed job and what it needs to run.
struct Job<Q> {
    queue: Q,
    job: Claimed,
    executor: Executor,
    config: WorkerConfig,
    tally: Arc<Tally>,
    abandon: watch::Receiver<bool>,
    outcomes: mpsc::Sender<Outcome>,
    /// One per thread: a claimed job waits here, under its lease, until a thread is free.
    slots: Arc<Semaphore>,
    pace: Arc<Pace>,
    /// The job type's series, when the worker has metrics.
    series: Option<Arc<TypeSeries>>,
    /// The run's span (disabled unless a layer takes TRACE spans of this crate).
    span: tracing::Span,
}

/// The span of a job's run, from its claim until its outcome is stored: `job.run`, at the
/// TRACE level, continuing the trace of what stored the job (its `traceparent`), so that an
/// exporting layer makes it the request's child across the 202. Its `job.outcome` is how the
/// job left the worker.
fn run_span(job: &Claimed) -> tracing::Span {
    tracing::trace_span!(
        target: "offload_queue::run",
        "job.run",
        otel.kind = "consumer",
        job.id = %job.id,
        job.type = crate::metrics::job_type(&job.payload),
        job.attempt = job.attempt,
        traceparent = job.trace.as_ref().map_or("", |t| t.as_str()),
        job.outcome = tracing::field::Empty,
    )
}

/// The mean run time of this worker's jobs (an exponentially weighted mean, in ns; 0 until the
/// first job ends), from which the loop sizes its claims.
#[derive(Debug, Default)]
struct Pace {
    mean_ns: AtomicU64,
}

impl Pace {
    /// Weight of the newest run: the mean follows a change of work within a few dozen jobs.
    const WEIGHT: f64 = 1.0 / 16.0;

    fn record(&self, ran: Duration) {
        let ns = ran.as_nanos().min(u128::from(u64::MAX)) as f64;
        let old = self.mean_ns.load(Ordering::Relaxed) as f64;
        let new = if old == 0.0 {
            ns
        } else {
            old + (ns - old) * Self::WEIGHT
        };
        self.mean_ns.store(new.max(1.0) as u64, Ordering::Relaxed);
    }

    /// Jobs to hold (running and ahead): `threads` plus [`PREFETCH_WORK`] of work per thread,
    /// at least one ahead per thread and at most `max_ahead`. Before any job has ended: one
    /// ahead per thread.
    fn ahead(&self, threads: usize, max_ahead: usize) -> usize {
        let mean = self.mean_ns.load(Ordering::Relaxed);
        let per_thread = (PREFETCH_WORK.as_nanos() as u64)
            .checked_div(mean)
            .map_or(1, |n| n.max(1) as usize);
        threads + per_thread.saturating_mul(threads).min(max_ahead)
    }
}

impl<Q: JobQueue + Clone> Job<Q> {
    async fn run(mut self, _permit: OwnedSemaphorePermit) {
        let metrics = self.config.metrics.clone();
        let _in_hand = metrics.as_ref().map(InHand::new);
        let job = &self.job;
        // Its own task, so that a panic in the work becomes an error, not a dead worker. It
        // waits for a free thread first, so its measured time is its run alone.
        let (slots, pace, executor) = (
            Arc::clone(&self.slots),
            Arc::clone(&self.pace),
            Arc::clone(&self.executor),
        );
        let meter = match (&metrics, &self.series) {
            (Some(m), Some(s)) => Some(m.meter(s)),
            _ => None,
        };
        let payload = job.payload.clone();
        let mut work = tokio::spawn(async move {
            let _slot = slots.acquire_owned().await.expect("semaphore never closed");
            let began = Instant::now();
            let out = match meter {
                None => executor(payload).await,
                Some(meter) => {
                    // Lent for the call: an executor from `Handlers` takes it and times the
                    // run on its thread; any other is timed from here.
                    let running =
                        crate::metrics::METER.sync_scope(Arc::clone(&meter), || executor(payload));
                    if meter.timed_on_thread() {
                        running.await
                    } else {
                        meter.busy().inc();
                        let out = running.await;
                        meter.busy().dec();
                        meter.record(began.elapsed());
                        out
                    }
                }
            };
            pace.record(began.elapsed());
            out
        });
        let every = self.config.heartbeat.max(Duration::from_millis(1));
        let mut beat = tokio::time::interval_at(Instant::now() + every, every);
        beat.set_missed_tick_behavior(MissedTickBehavior::Delay);
        // The job's deadline on this host's clock: the run is stopped there.
        let deadline = job.expires_at.map(|at| {
            Instant::now() + Duration::from_millis(at.saturating_sub(crate::types::now_ms()))
        });
        let past_deadline = async {
            match deadline {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        let mut past_deadline = std::pin::pin!(past_deadline);
        let outcome = loop {
            // Finished work first: a heartbeat that waited long for the store (a partition)
            // leaves the next tick due too, and picking it at random over a finished run would
            // wait for the store again and drop the result if the lease went meanwhile.
            tokio::select! {
                biased;
                r = &mut work => break r.unwrap_or_else(|e| {
                    Err(JobError::retry(format!("the job's task failed: {e}")))
                }),
                () = &mut past_deadline => {
                    // Dropping the run's future tells its handler to stop. The store ends the
                    // job expired; on a store whose clock lags this host's, it sees a
                    // retryable error, and the claim that finds the job past its deadline
                    // ends it expired then.
                    work.abort();
                    tracing::info!(id = %job.id, "deadline passed; stopping the run");
                    break Err(JobError::retry("stopped at its deadline"));
                }
                _ = beat.tick() => match self.queue.heartbeat(job, self.config.lease).await {
                    Ok(true) => self.renewal(Renewal::Renewed),
                    Ok(false) => {
                        self.renewal(Renewal::Refused);
                        // Dropping the run's future tells its handler to stop.
                        work.abort();
                        let how = self.gone().await;
                        if how == Ended::Lost {
                            tracing::warn!(id = %job.id, "lease lost; stopping the run");
                        } else {
                            tracing::info!(id = %job.id, "job cancelled; stopping the run");
                        }
                        self.end(how);
                        return;
                    }
                    Err(e) => {
                        self.renewal(Renewal::Failed);
                        store_error(metrics.as_ref(), Op::Heartbeat);
                        crate::log::throttled!("worker_heartbeat_failed", warn, id = %job.id, error = %e, "heartbeat failed");
                    }
                },
                Ok(()) = self.abandon.changed() => {
                    work.abort();
                    match self.queue.release(job).await {
                        Ok(true) => self.end(Ended::Released),
                        Ok(false) => self.end(Ended::Lost),
                        Err(e) => {
                            store_error(metrics.as_ref(), Op::Release);
                            self.end(Ended::Lost);
                            crate::log::throttled!("worker_release_failed", warn, id = %job.id, error = %e, "release failed");
                        }
                    }
                    return;
                }
            }
        };
        if let Err(e) = &outcome
            && e.message.starts_with(crate::TIMED_OUT)
        {
            Tally::add(&self.tally.timed_out);
            if let Some(s) = &self.series {
                s.timed_out();
            }
        }
        let (reply, stored) = oneshot::channel();
        if self
            .outcomes
            .send((job.clone(), outcome, reply))
            .await
            .is_err()
        {
            // The completer is gone: the lease lapses and the job runs again.
            self.end(Ended::Lost);
            return;
        }
        match stored.await {
            Ok(Ok(Completion::Done)) => self.end(Ended::Done),
            Ok(Ok(Completion::Retrying)) => self.end(Ended::Retried),
            Ok(Ok(Completion::Failed)) => self.end(Ended::Failed),
            Ok(Ok(Completion::Expired)) => self.end(Ended::Expired),
            Ok(Ok(Completion::Refused)) => {
                let how = self.gone().await;
                if how == Ended::Lost {
                    tracing::warn!(id = %job.id, "lease lost before completion; outcome dropped");
                }
                self.end(how);
            }
            // The lease will lapse and the job run again: at-least-once.
            Ok(Err(e)) => {
                self.end(Ended::Lost);
                crate::log::throttled!("worker_complete_failed", warn, id = %job.id, error = %e, "complete failed")
            }
            Err(_) => self.end(Ended::Lost),
        }
    }

    /// Why the store no longer takes this worker's word for the job: it was cancelled, or
    /// the lease went.
    async fn gone(&self) -> Ended {
        match self.queue.get(&self.job.id).await {
            Ok(Some(v)) if v.status == crate::JobStatus::Cancelled => Ended::Cancelled,
            Ok(_) => Ended::Lost,
            Err(_) => {
                store_error(self.config.metrics.as_ref(), Op::Get);
                Ended::Lost
            }
        }
    }

    fn end(&self, how: Ended) {
        self.tally.ended(self.series.as_deref(), how);
        self.span.record("job.outcome", how.as_str());
    }

    fn renewal(&self, r: Renewal) {
        if let Some(m) = &self.config.metrics {
            m.renewal(r);
        }
    }
}

/// Counts a job in hand from its claim until it leaves, however it leaves.
struct InHand(WorkerMetrics);

impl InHand {
    fn new(metrics: &WorkerMetrics) -> InHand {
        metrics.in_hand().inc();
        InHand(metrics.clone())
    }
}

impl Drop for InHand {
    fn drop(&mut self) {
        self.0.in_hand().dec();
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
                Ok(n) => {
                    if let Some(m) = &config.metrics {
                        m.reaped(n);
                    }
                    tracing::info!(jobs = n, "reaped stalled jobs");
                }
                Err(e) => {
                    store_error(config.metrics.as_ref(), Op::Reap);
                    crate::log::throttled!("worker_reap_failed", warn, error = %e, "reap failed");
                }
            },
            _ = prune.tick() => if let Err(e) = queue.prune().await {
                store_error(config.metrics.as_ref(), Op::Prune);
                crate::log::throttled!("worker_prune_failed", warn, error = %e, "prune failed");
            },
        }
    }
}
