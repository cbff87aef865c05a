//! The job queue layer: one trait ([`JobQueue`]), an embedded SQLite backend, a Redis Streams
//! backend and a Postgres backend (each behind the cargo feature of its name; `sqlite` is the
//! default), selected by URL with [`open`], typed jobs ([`Job`], [`Handlers`]) and the worker
//! loop ([`worker::run`]). No HTTP here: the backends store a payload and a result as opaque
//! JSON text, and typed jobs are a name and a serde value inside it.
//!
//! # Guarantees, and how each backend keeps them
//! - **At-least-once.** A claim takes a job under a lease (SQLite and Postgres: `lease_until` on
//!   the row; Redis: the stream entry stays in the group's pending list). A worker that dies stops
//!   heartbeating; the reaper finds the expired lease and queues the job again.
//!   Postgres: leases and due times use the server's clock, so hosts with skewed clocks agree.
//! - **One result.** Each claim stores a random lease token with the job; heartbeat, complete and
//!   release check it (SQL `WHERE lease = ?`, a Lua compare), so a worker whose lease was taken
//!   over is refused and cannot overwrite the new holder's result or status. Postgres: claims
//!   lock the rows they take (`FOR UPDATE SKIP LOCKED`), so concurrent claims never share a job.
//! - **Retries, then failed.** An error with attempts left sets `queued` with the error and a due
//!   time `now + backoff` (exponential, equal jitter; SQLite and Postgres `run_at`, Redis retry
//!   zset promoted by the claim script); attempts spent, or a non-retryable [`JobError`], set
//!   `failed`.
//! - **Stalls are not failures.** A job whose lease lapsed (its worker died or hung) goes back to
//!   the queue without spending an error attempt: it counts a *stall* instead, with its own limit
//!   (`max_stalls`), so a storm of worker kills fails nothing while a job that kills every worker
//!   that runs it still ends `failed` ("lost with its worker n times"). Postgres: one reap
//!   statement moves the rows and bumps the queue's stall counter.
//! - **Batches.** Workers claim up to `max` jobs in one transaction, statement or script call and
//!   complete many in one (Postgres: one statement over `unnest`ed arrays), so a core never waits
//!   for a store round trip per job.
//! - **Bounded backlog.** SQLite: a counter row bumped in the enqueue transaction; Redis:
//!   `XLEN + ZCARD retry` checked in the enqueue script; Postgres: the queue's meta row, bumped
//!   (only below the cap) in the enqueue statement. Past `max_backlog`: [`EnqueueError::Full`].
//! - **Cancel.** [`JobQueue::cancel`] ends a queued or running job as `cancelled` in one
//!   transaction or script call, and clears its lease: a claim never takes it again, and the
//!   worker running it finds its lease gone at the next heartbeat, stops the run (its stop
//!   check turns true) and has its outcome refused. Redis: the job's stream entry is acked and
//!   deleted, and a pending retry leaves the retry zset.
//! - **Time limits.** A job type may have one ([`Handlers::timeout`]): the executor tells a run
//!   over it to stop and answers [`TIMED_OUT`], an error retried like any other, so no backend
//!   does anything of its own. A run that ignores its stop keeps its thread and counts as stuck
//!   ([`Handlers::stuck`]) until it returns; its result is discarded.
//! - **Submit once.** A job's key ([`NewJob::key()`]) names one job while that job is within its
//!   retention. SQLite: a unique index on the key, checked in the enqueue transaction;
//!   Postgres: a unique index on (queue, key), the insert skipping a key taken meanwhile (then
//!   the statement runs again to read the holder); Redis: a key string set inside the enqueue
//!   script, expiring with the job's hash.
//! - **Deadlines.** A job past its deadline ([`NewJob::expires_at`]) is never claimed (SQLite and
//!   Redis end it `expired` in the claim, Postgres passes over it), the reaper ends the queued
//!   ones `expired`, a run that fails at or past its deadline ends the job `expired`, and the
//!   worker stops a run at its job's deadline.
//! - **Lists.** [`JobQueue::list`] reads one range of an index per page (status and time).
//! - **Retention.** Finished jobs read as unknown after `retention`; SQLite and Postgres rows are
//!   deleted by [`JobQueue::prune`], Redis hashes expire by TTL (prune trims the indexes).
//! - **Reads that cost little.** [`JobQueue::counts`] and [`JobQueue::latency`] read a bounded
//!   number of rows however many jobs are stored: finished jobs are counted by counters bumped
//!   as they finish and lowered by prune (SQLite, Postgres; Redis: `ZCOUNT`), unfinished ones
//!   on the status index (at most the backlog cap), and enqueue-to-done times are a histogram
//!   updated in the transaction or script that marks a job done ([`latency`]).
//! - **Names match only themselves.** A queue's name is a [`QueueName`] (`[A-Za-z0-9_-]{1,64}`),
//!   so no user string reaches a Redis key pattern; in SQL it is always a bound parameter.
//! - **Prompt pickup.** An idle claim waits for new work rather than polling: Redis a blocking
//!   read, SQLite a file-change wake-up, Postgres a `NOTIFY` sent by the enqueue statement.
//! - **Reconnects.** Redis: the connection manager; Postgres: a lost connection is replaced on
//!   the next call (which is retried once), and the `LISTEN` connection listens again.
//!
//! # Use
//! The README (run as this crate's doctest) shows a job type of one's own enqueued, run by a
//! worker in the same process and read back typed; `examples/custom_job.rs` is the same as a
//! program, with a worker-only mode.
//!
//! # Testing a backend
//! With the cargo feature `testing`, the module `testing` holds the promises above as tests, and
//! the macro `conformance_tests!` runs them all on a backend in one line.
#![warn(missing_docs)]

/// The README's code, compiled and run with the crate's doctests so that it stays true.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;

#[cfg(not(any(feature = "sqlite", feature = "redis", feature = "postgres")))]
compile_error!("offload-queue needs a backend: enable its feature sqlite, redis or postgres");

pub mod backlog;
pub mod eta;
mod job;
pub mod latency;
pub mod line;
pub mod log;
pub mod metrics;
#[cfg(feature = "postgres")]
mod postgres;
pub mod reach;
#[cfg(feature = "redis")]
mod redis;
#[cfg(feature = "sqlite")]
mod sqlite;
#[cfg(feature = "testing")]
pub mod testing;
mod timeout;
mod trace;
mod types;
#[cfg(feature = "sqlite")]
mod wake;
pub mod worker;

use std::future::Future;
use std::time::Duration;

pub use self::backlog::Backlog;
pub use self::eta::{Eta, Prediction};
pub use self::job::{Handlers, Job, JobContext, JobRun, Run};
pub use self::latency::{Histogram, Latency};
pub use self::line::{Line, LineError, LineStats};
pub use self::log::events;
pub use self::metrics::WorkerMetrics;
pub use self::reach::Reach;
pub use self::timeout::{STOP_GRACE, TIMED_OUT};
pub use self::trace::TraceParent;

#[cfg(feature = "postgres")]
pub use self::postgres::PostgresQueue;
#[cfg(feature = "redis")]
pub use self::redis::RedisQueue;
#[cfg(feature = "sqlite")]
pub use self::sqlite::SqliteQueue;
pub use self::types::{
    Cancel, Claimed, Completion, Counts, Cursor, CursorError, IdError, JobError, JobId, JobKey,
    JobPage, JobStatus, JobView, KeyError, ListFilter, MAX_KEY_LEN, MAX_LABEL_LEN, MAX_NAME_LEN,
    MAX_PAGE, MAX_PRIORITY, NameError, NewJob, PRIORITY_STEP, QueueName, Retry, WorkerId, backoff,
};

/// Jobs accepted but not finished, past which enqueue answers [`EnqueueError::Full`]: enough to
/// absorb a burst of a few seconds at thousands of jobs/s, small enough to drain in minutes.
pub const DEFAULT_MAX_BACKLOG: u64 = 10_000;
/// Runs per job: one try and two retries, as BullMQ users commonly configure.
pub const DEFAULT_MAX_ATTEMPTS: u32 = 3;
/// Times a job may be lost with its worker (lease lapsed) before it fails. A stall says nothing
/// about the job, so the limit only has to stop a job that kills every worker running it: ten
/// workers killed in a row by one job is a clear verdict, while a kill storm that takes one job
/// down with its worker ten times running (each time within one lease of the last) is not a
/// storm a deployment survives anyway.
pub const DEFAULT_MAX_STALLS: u32 = 10;
/// How long finished jobs stay readable: long enough for a client polling every few seconds.
pub const DEFAULT_RETENTION: Duration = Duration::from_secs(3600);
/// First retry delay; doubled per attempt.
pub const DEFAULT_RETRY_BASE: Duration = Duration::from_millis(500);
/// Longest retry delay, so a job with many attempts still finishes within minutes.
pub const DEFAULT_RETRY_MAX: Duration = Duration::from_secs(60);
/// The queue's name when none is given: the Redis key prefix (inside the `{}` hash tag) or the
/// Postgres `queue` column.
pub const DEFAULT_QUEUE_NAME: &str = "offload";

/// Settings shared by the backends.
#[derive(Debug, Clone)]
pub struct QueueOptions {
    /// Unfinished jobs allowed (queued, running or waiting for a retry).
    pub max_backlog: u64,
    /// Attempts for jobs that do not set their own.
    pub max_attempts: u32,
    /// Times a job may be lost with its worker before it fails.
    pub max_stalls: u32,
    /// How long finished jobs stay readable.
    pub retention: Duration,
    /// First retry delay.
    pub retry_base: Duration,
    /// Cap on the retry delay.
    pub retry_max: Duration,
    /// Redis: key prefix and hash tag; Postgres: the rows' `queue` column. Several queues (or
    /// tests) share one server. Checked ([`QueueName`]), so it matches only itself.
    pub name: QueueName,
    /// SQLite: `synchronous=FULL` (survives power loss) instead of `NORMAL` (survives a crash).
    pub sqlite_full_sync: bool,
}

impl Default for QueueOptions {
    fn default() -> QueueOptions {
        QueueOptions {
            max_backlog: DEFAULT_MAX_BACKLOG,
            max_attempts: DEFAULT_MAX_ATTEMPTS,
            max_stalls: DEFAULT_MAX_STALLS,
            retention: DEFAULT_RETENTION,
            retry_base: DEFAULT_RETRY_BASE,
            retry_max: DEFAULT_RETRY_MAX,
            name: QueueName::default(),
            sqlite_full_sync: false,
        }
    }
}

/// A backend failed.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    /// The URL names no supported backend.
    #[error(
        "unsupported queue URL {0:?}: expected sqlite://PATH, redis://HOST:PORT or \
         postgres://USER@HOST:PORT/DB"
    )]
    BadUrl(String),
    /// The URL names a backend this build leaves out: enable the cargo feature of that name.
    #[error("this build has no {0} backend: enable offload-queue's cargo feature \"{0}\"")]
    NotBuilt(&'static str),
    /// SQLite answered with an error.
    #[cfg(feature = "sqlite")]
    #[error("sqlite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// Redis answered with an error or could not be reached.
    #[cfg(feature = "redis")]
    #[error("redis: {0}")]
    Redis(#[from] ::redis::RedisError),
    /// Postgres answered with an error, could not be reached, or the URL is malformed.
    /// (Not a `#[source]`: the message already carries the cause, which a chain would repeat.)
    #[cfg(feature = "postgres")]
    #[error("postgres: {}", postgres_detail(.0))]
    Postgres(tokio_postgres::Error),
    /// The store did not answer in time (what was waited for, and for how long).
    #[error("{0} took longer than {1:?}")]
    Timeout(&'static str, Duration),
    /// A SQLite group commit failed, so the operation's writes were rolled back.
    #[error("sqlite commit failed: {0}")]
    Commit(String),
    /// A thread the backend needs could not be started.
    #[error("cannot start the queue's thread: {0}")]
    Thread(String),
    /// The SQLite thread is gone (it panicked or the queue was dropped).
    #[error("the sqlite thread has stopped")]
    Closed,
    /// The store failed for a request ahead in line (a caller's own queueing in front of the
    /// store, such as offload's gateway line), so this one was not tried.
    #[error("the store failed for a request ahead in line: {0}")]
    Unreachable(String),
    /// The store failed or went unanswered a moment ago and has not answered since: refused
    /// at once, without asking it ([`Reach`]).
    #[error("the queue's store is out of reach (checking it in the background)")]
    Down,
    /// Stored data did not have the expected shape.
    #[error("corrupt job record: {0}")]
    Corrupt(String),
}

#[cfg(feature = "postgres")]
/// A Postgres error with its cause: tokio-postgres shows only "db error" or "error connecting
/// to server", and keeps the server's message (or the I/O error) as the source.
fn postgres_detail(e: &tokio_postgres::Error) -> String {
    match std::error::Error::source(e) {
        Some(cause) => format!("{e}: {cause}"),
        None => e.to_string(),
    }
}

#[cfg(feature = "postgres")]
impl From<tokio_postgres::Error> for QueueError {
    fn from(e: tokio_postgres::Error) -> QueueError {
        QueueError::Postgres(e)
    }
}

/// Enqueue failed.
#[derive(Debug, thiserror::Error)]
pub enum EnqueueError {
    /// The backlog is at `max_backlog`: try again later (HTTP 503 + Retry-After).
    #[error("the queue is full ({0} unfinished jobs)")]
    Full(u64),
    /// The job's key names a job with a different payload (HTTP 422): nothing was stored.
    #[error("the idempotency key is already used by job {0} with a different payload")]
    KeyReused(JobId),
    /// The backend failed.
    #[error(transparent)]
    Queue(#[from] QueueError),
}

/// The queue operations. Implemented by each backend and by [`Queue`], which dispatches.
pub trait JobQueue: Send + Sync + 'static {
    /// Stores a job and returns its id at once. A job with a key ([`NewJob::key()`]) whose key
    /// names a job within its retention with the same payload is not stored again: its id is
    /// returned. Atomic: of many concurrent enqueues under one key, one stores the job.
    ///
    /// # Errors
    /// [`EnqueueError::Full`] past `max_backlog`; [`EnqueueError::KeyReused`] for a key taken
    /// by a different payload; [`EnqueueError::Queue`] if the backend fails.
    fn enqueue(&self, job: NewJob) -> impl Future<Output = Result<JobId, EnqueueError>> + Send;

    /// Stores `jobs` in their order until one does not get in, and stops there: the jobs stored
    /// are always a prefix of `jobs`, so a later job never takes a place that an earlier one of
    /// the same call was refused. Returns their ids and, when not every job was stored, why the
    /// next one was not ([`EnqueueError::Full`] or the backend's failure).
    ///
    /// The default stores one job after the other; SQLite stores the whole prefix in one
    /// transaction.
    fn enqueue_prefix(
        &self,
        jobs: Vec<NewJob>,
    ) -> impl Future<Output = (Vec<JobId>, Option<EnqueueError>)> + Send {
        async move {
            let mut ids = Vec::with_capacity(jobs.len());
            for job in jobs {
                match self.enqueue(job).await {
                    Ok(id) => ids.push(id),
                    Err(e) => return (ids, Some(e)),
                }
            }
            (ids, None)
        }
    }

    /// Status, attempts, result or error and times; `None` for an unknown or expired id.
    ///
    /// # Errors
    /// If the backend fails.
    fn get(&self, id: &JobId) -> impl Future<Output = Result<Option<JobView>, QueueError>> + Send;

    /// Takes up to `max` due jobs (at least one is asked for) under a lease of `lease` each, in
    /// one transaction or script call, oldest first. When none is due it waits up to `wait` for
    /// one to arrive (Redis: a blocking read; Postgres: `LISTEN`; SQLite: a file-change wake-up),
    /// then answers with what it found, possibly nothing.
    ///
    /// # Errors
    /// If the backend fails.
    fn claim_batch(
        &self,
        worker: &WorkerId,
        lease: Duration,
        max: usize,
        wait: Duration,
    ) -> impl Future<Output = Result<Vec<Claimed>, QueueError>> + Send;

    /// Takes the next due job: [`JobQueue::claim_batch`] with `max` 1.
    ///
    /// # Errors
    /// If the backend fails.
    fn claim(
        &self,
        worker: &WorkerId,
        lease: Duration,
        wait: Duration,
    ) -> impl Future<Output = Result<Option<Claimed>, QueueError>> + Send {
        async move {
            let got = self.claim_batch(worker, lease, 1, wait).await?;
            Ok(got.into_iter().next())
        }
    }

    /// Extends the lease by `lease` from now. `false`: the lease was lost, stop the work.
    ///
    /// # Errors
    /// If the backend fails.
    fn heartbeat(
        &self,
        job: &Claimed,
        lease: Duration,
    ) -> impl Future<Output = Result<bool, QueueError>> + Send;

    /// Stores the outcomes of several runs in one transaction or script call, each as
    /// [`JobQueue::complete`] would; one [`Completion`] per outcome, in order.
    ///
    /// # Errors
    /// If the backend fails; then none of them is stored.
    fn complete_batch(
        &self,
        outcomes: Vec<(Claimed, Result<String, JobError>)>,
    ) -> impl Future<Output = Result<Vec<Completion>, QueueError>> + Send;

    /// Stores a run's outcome: the result (`done`), or the error followed by a retry after a
    /// backoff or, with attempts spent or a non-retryable error, `failed`.
    ///
    /// # Errors
    /// If the backend fails.
    fn complete(
        &self,
        job: &Claimed,
        outcome: Result<String, JobError>,
    ) -> impl Future<Output = Result<Completion, QueueError>> + Send {
        let batch = vec![(job.clone(), outcome)];
        async move {
            let done = self.complete_batch(batch).await?;
            done.into_iter()
                .next()
                .ok_or_else(|| QueueError::Corrupt("complete answered nothing".to_owned()))
        }
    }

    /// Gives a job back unrun (graceful shutdown): queued at once, the attempt not counted.
    /// `false` if the lease was already lost.
    ///
    /// # Errors
    /// If the backend fails.
    fn release(&self, job: &Claimed) -> impl Future<Output = Result<bool, QueueError>> + Send;

    /// Takes back jobs whose lease expired: queued again with one more stall and the attempt
    /// not counted, or `failed` once their stalls reach `max_stalls` (a job that kills its
    /// worker every time ends here). Returns how many it moved.
    ///
    /// # Errors
    /// If the backend fails.
    fn reap(&self) -> impl Future<Output = Result<u64, QueueError>> + Send;

    /// Cancels a job that has not finished: a `queued` job (or one waiting for a retry) becomes
    /// `cancelled` at once and never runs; a `running` one becomes `cancelled` and loses its
    /// lease, so its worker's next heartbeat stops the run and its outcome is refused. A job
    /// that has finished is left as it is ([`Cancel::Finished`]).
    ///
    /// # Errors
    /// If the backend fails.
    fn cancel(&self, id: &JobId) -> impl Future<Output = Result<Cancel, QueueError>> + Send;

    /// Queues a `failed` or `cancelled` job again, with fresh attempts and stalls, due at once,
    /// if the backlog has room (it takes a place as an enqueue does). Any other status is left
    /// as it is ([`Retry::NotRetryable`]).
    ///
    /// # Errors
    /// If the backend fails.
    fn retry(&self, id: &JobId) -> impl Future<Output = Result<Retry, QueueError>> + Send;

    /// A page of the jobs with one status, newest first (finished jobs by when they finished,
    /// queued and running ones by when they last became due), after a cursor. Each page is one
    /// read on an index (SQLite and Postgres: the status with the time; Redis: the finished
    /// sets, or the stream for unfinished jobs), so it costs the same however many jobs are
    /// stored; unfinished jobs are at most the backlog cap. Finished jobs past their retention
    /// are left out.
    ///
    /// # Errors
    /// If the backend fails.
    fn list(&self, filter: ListFilter) -> impl Future<Output = Result<JobPage, QueueError>> + Send;

    /// Deletes finished jobs older than the retention period; returns how many.
    ///
    /// # Errors
    /// If the backend fails.
    fn prune(&self) -> impl Future<Output = Result<u64, QueueError>> + Send;

    /// Jobs by state.
    ///
    /// # Errors
    /// If the backend fails.
    fn counts(&self) -> impl Future<Output = Result<Counts, QueueError>> + Send;

    /// Enqueue-to-done times of every job done since the queue was created, by label (see
    /// [`latency`]): a bounded read (at most [`latency::MAX_LABELS`] + 2 labels of at most
    /// [`latency::TOP_BUCKET`] + 1 buckets), whatever the number of jobs stored.
    ///
    /// # Errors
    /// If the backend fails.
    fn latency(&self) -> impl Future<Output = Result<Latency, QueueError>> + Send;
}

/// A queue on any backend: cheap to clone, `Send + Sync`, usable as axum state.
#[derive(Debug, Clone)]
pub enum Queue {
    /// Embedded: a SQLite file shared by the processes of one host.
    #[cfg(feature = "sqlite")]
    Sqlite(SqliteQueue),
    /// Scale-out: Redis Streams, shared by workers on many hosts.
    #[cfg(feature = "redis")]
    Redis(RedisQueue),
    /// Scale-out: one Postgres database, shared by workers on many hosts.
    #[cfg(feature = "postgres")]
    Postgres(PostgresQueue),
}

/// Opens the queue named by `url`: `sqlite://PATH` (`sqlite:PATH` also works; a relative path is
/// relative to the working directory), `redis://HOST:PORT[/DB]` or
/// `postgres://USER[:PASSWORD]@HOST[:PORT]/DB` (`postgresql://` also works).
///
/// ```
/// use offload_queue::{QueueError, QueueOptions, open};
///
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// let dir = tempfile::tempdir().unwrap();
/// let url = format!("sqlite://{}", dir.path().join("jobs.db").display());
/// assert!(open(&url, QueueOptions::default()).await.is_ok());
/// let err = open("mysql://db/jobs", QueueOptions::default()).await.unwrap_err();
/// assert!(matches!(err, QueueError::BadUrl(_)));
/// # });
/// ```
///
/// # Errors
/// [`QueueError::BadUrl`] for another scheme; [`QueueError::NotBuilt`] for a backend whose
/// cargo feature this build leaves out; the backend's error if it cannot be opened.
pub async fn open(url: &str, options: QueueOptions) -> Result<Queue, QueueError> {
    if let Some(path) = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
    {
        if path.is_empty() {
            return Err(QueueError::BadUrl(url.to_owned()));
        }
        #[cfg(feature = "sqlite")]
        return Ok(Queue::Sqlite(
            SqliteQueue::open(path.as_ref(), options).await?,
        ));
        #[cfg(not(feature = "sqlite"))]
        return Err(QueueError::NotBuilt("sqlite"));
    }
    if url.starts_with("redis://") || url.starts_with("rediss://") {
        #[cfg(feature = "redis")]
        return Ok(Queue::Redis(RedisQueue::open(url, options).await?));
        #[cfg(not(feature = "redis"))]
        return Err(QueueError::NotBuilt("redis"));
    }
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        #[cfg(feature = "postgres")]
        return Ok(Queue::Postgres(PostgresQueue::open(url, options).await?));
        #[cfg(not(feature = "postgres"))]
        return Err(QueueError::NotBuilt("postgres"));
    }
    Err(QueueError::BadUrl(url.to_owned()))
}

macro_rules! dispatch {
    ($self:ident, $q:ident => $e:expr) => {
        match $self {
            #[cfg(feature = "sqlite")]
            Queue::Sqlite($q) => $e,
            #[cfg(feature = "redis")]
            Queue::Redis($q) => $e,
            #[cfg(feature = "postgres")]
            Queue::Postgres($q) => $e,
        }
    };
}

impl JobQueue for Queue {
    async fn enqueue(&self, job: NewJob) -> Result<JobId, EnqueueError> {
        dispatch!(self, q => q.enqueue(job).await)
    }
    async fn enqueue_prefix(&self, jobs: Vec<NewJob>) -> (Vec<JobId>, Option<EnqueueError>) {
        dispatch!(self, q => q.enqueue_prefix(jobs).await)
    }
    async fn get(&self, id: &JobId) -> Result<Option<JobView>, QueueError> {
        dispatch!(self, q => q.get(id).await)
    }
    async fn claim_batch(
        &self,
        worker: &WorkerId,
        lease: Duration,
        max: usize,
        wait: Duration,
    ) -> Result<Vec<Claimed>, QueueError> {
        dispatch!(self, q => q.claim_batch(worker, lease, max, wait).await)
    }
    async fn heartbeat(&self, job: &Claimed, lease: Duration) -> Result<bool, QueueError> {
        dispatch!(self, q => q.heartbeat(job, lease).await)
    }
    async fn complete_batch(
        &self,
        outcomes: Vec<(Claimed, Result<String, JobError>)>,
    ) -> Result<Vec<Completion>, QueueError> {
        dispatch!(self, q => q.complete_batch(outcomes).await)
    }
    async fn release(&self, job: &Claimed) -> Result<bool, QueueError> {
        dispatch!(self, q => q.release(job).await)
    }
    async fn reap(&self) -> Result<u64, QueueError> {
        dispatch!(self, q => q.reap().await)
    }
    async fn cancel(&self, id: &JobId) -> Result<Cancel, QueueError> {
        dispatch!(self, q => q.cancel(id).await)
    }
    async fn retry(&self, id: &JobId) -> Result<Retry, QueueError> {
        dispatch!(self, q => q.retry(id).await)
    }
    async fn list(&self, filter: ListFilter) -> Result<JobPage, QueueError> {
        dispatch!(self, q => q.list(filter).await)
    }
    async fn prune(&self) -> Result<u64, QueueError> {
        dispatch!(self, q => q.prune().await)
    }
    async fn counts(&self) -> Result<Counts, QueueError> {
        dispatch!(self, q => q.counts().await)
    }
    async fn latency(&self) -> Result<Latency, QueueError> {
        dispatch!(self, q => q.latency().await)
    }
}
