//! The shared-server backend: one Postgres database for workers on many hosts, with exactly the
//! SQLite backend's rows and rules. Each operation is one statement (`sql.rs`), sent over one
//! pipelined connection shared by every task of the process (`link.rs`); idle claims wait for a
//! `NOTIFY` on a dedicated `LISTEN` connection. The client is tokio-postgres: few dependencies,
//! no macros, and it exposes notifications.

mod link;
mod sql;

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;
use tokio_postgres::error::SqlState;
use tokio_postgres::{Config, Row};

use self::link::{Link, QUERY_TIMEOUT, Shared, is_lost};
use super::latency::Latency;
use super::types::lease_token;
use super::{
    Cancel, Claimed, Completion, Counts, Cursor, EnqueueError, JobError, JobId, JobPage, JobQueue,
    JobStatus, JobView, ListFilter, MAX_PAGE, MAX_PRIORITY, NewJob, QueueError, QueueOptions,
    Retry, WorkerId, backoff,
};

/// Most jobs one claim takes: a batch a few milliseconds long even for tiny jobs, and a bounded
/// `RETURNING` set (as for SQLite).
const MAX_CLAIM: usize = 256;
/// If the `LISTEN` task is gone (it only ends with the handle), idle claims look again this
/// often: the old poll's ceiling.
const FALLBACK_POLL: Duration = Duration::from_millis(100);
/// Shortest wait for a job that is due but was not claimed: it is locked by a claim in flight
/// elsewhere, which will commit within a round trip, so looking again at once would spin.
const LOCKED_PAUSE: Duration = Duration::from_millis(1);

/// Most jobs one enqueue statement stores: concurrent enqueues wait for the statement in
/// flight and then go together, so a burst of requests costs a few statements, not one each.
const MAX_ENQUEUE_BATCH: usize = 256;

/// One enqueue waiting for the batcher.
struct Pending {
    id: JobId,
    job: NewJob,
    reply: oneshot::Sender<Result<JobId, EnqueueError>>,
}

/// A handle on a Postgres queue. Clones share one connection and one `LISTEN` connection.
#[derive(Clone)]
pub struct PostgresQueue {
    inner: Arc<Inner>,
}

struct Inner {
    shared: Shared,
    options: QueueOptions,
    /// Bumped on every `NOTIFY` for this queue (and after the `LISTEN` connection comes back).
    wake: watch::Receiver<u64>,
    listener: tokio::task::JoinHandle<()>,
    /// Enqueues go through one batching task (see [`MAX_ENQUEUE_BATCH`]).
    enqueues: mpsc::Sender<Pending>,
    batcher: tokio::task::JoinHandle<()>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.listener.abort();
        self.batcher.abort();
    }
}

impl std::fmt::Debug for PostgresQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresQueue")
            .field("queue", &self.inner.options.name)
            .finish()
    }
}

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

impl PostgresQueue {
    /// Connects to `url` (`postgres://USER@HOST:PORT/DB`), creates the schema and this queue's
    /// row if needed, and starts listening for new jobs.
    ///
    /// # Errors
    /// If the URL is malformed, or Postgres cannot be reached within 5 s or refuses us.
    pub async fn open(url: &str, options: QueueOptions) -> Result<PostgresQueue, QueueError> {
        let mut config: Config = url.parse()?;
        config.connect_timeout(link::CONNECT_TIMEOUT);
        if config.get_application_name().is_none() {
            config.application_name("offload");
        }
        let first = Link::open(&config, options.name.as_str()).await?;
        let (tx, wake) = watch::channel(0u64);
        let listener = link::listen(config.clone(), options.name.to_string(), tx).await?;
        let (enqueues, inbox) = mpsc::channel(MAX_ENQUEUE_BATCH * 4);
        let inner = Arc::new_cyclic(|weak: &Weak<Inner>| Inner {
            shared: Shared::new(config, options.name.to_string(), first),
            options,
            wake,
            listener,
            enqueues,
            batcher: tokio::spawn(batch_enqueues(weak.clone(), inbox)),
        });
        Ok(PostgresQueue { inner })
    }

    /// Stores one job with its own statement.
    async fn enqueue_one(&self, id: JobId, job: &NewJob) -> Result<JobId, EnqueueError> {
        let opts = &self.inner.options;
        let (name, id_text, payload) = (&opts.name.as_str(), id.as_str(), &job.payload);
        let (label, trace) = (job.label.as_deref(), job.trace.as_ref().map(|t| t.as_str()));
        let expires_at = deadline(job);
        let (run_at, priority) = (due(job), i32::from(job.priority.min(MAX_PRIORITY)));
        let max_attempts =
            i32::try_from(job.max_attempts.unwrap_or(opts.max_attempts).max(1)).unwrap_or(i32::MAX);
        let max_stalls = i32::try_from(opts.max_stalls.max(1)).unwrap_or(i32::MAX);
        let cap = i64::try_from(opts.max_backlog).unwrap_or(i64::MAX);
        let (stored, depth) = self
            .call(|l| async move {
                let params: [&(dyn tokio_postgres::types::ToSql + Sync); 11] = [
                    name,
                    &id_text,
                    payload,
                    &max_attempts,
                    &max_stalls,
                    &cap,
                    &label,
                    &expires_at,
                    &run_at,
                    &priority,
                    &trace,
                ];
                match l.client.query_one(&l.enqueue, &params).await {
                    Ok(row) => Ok((row.try_get::<_, bool>(0)?, row.try_get::<_, i64>(2)?)),
                    // Only a retry after a lost reply can meet its own id: the first try stored it.
                    Err(e) if e.code() == Some(&SqlState::UNIQUE_VIOLATION) => Ok((true, 0)),
                    Err(e) => Err(e),
                }
            })
            .await?;
        if stored {
            Ok(id)
        } else {
            Err(EnqueueError::Full(depth.max(0) as u64))
        }
    }

    /// Stores as many of `jobs` as the cap allows (the first ones) in one statement; answers
    /// how many it stored and the depth after.
    async fn enqueue_many(&self, jobs: &[Pending]) -> Result<(usize, u64), QueueError> {
        let opts = &self.inner.options;
        let ids: Vec<&str> = jobs.iter().map(|p| p.id.as_str()).collect();
        let payloads: Vec<&str> = jobs.iter().map(|p| p.job.payload.as_str()).collect();
        let attempts: Vec<i32> = jobs
            .iter()
            .map(|p| {
                i32::try_from(p.job.max_attempts.unwrap_or(opts.max_attempts).max(1))
                    .unwrap_or(i32::MAX)
            })
            .collect();
        let labels: Vec<Option<&str>> = jobs.iter().map(|p| p.job.label.as_deref()).collect();
        let traces: Vec<Option<&str>> = jobs
            .iter()
            .map(|p| p.job.trace.as_ref().map(|t| t.as_str()))
            .collect();
        let deadlines: Vec<Option<i64>> = jobs.iter().map(|p| deadline(&p.job)).collect();
        let run_ats: Vec<Option<i64>> = jobs.iter().map(|p| due(&p.job)).collect();
        let priorities: Vec<i32> = jobs
            .iter()
            .map(|p| i32::from(p.job.priority.min(MAX_PRIORITY)))
            .collect();
        let max_stalls = i32::try_from(opts.max_stalls.max(1)).unwrap_or(i32::MAX);
        let cap = i64::try_from(opts.max_backlog).unwrap_or(i64::MAX);
        let (ids, payloads, attempts, labels, deadlines) =
            (&ids, &payloads, &attempts, &labels, &deadlines);
        let (run_ats, priorities, traces) = (&run_ats, &priorities, &traces);
        let name = &opts.name.as_str();
        let (k, depth) = self
            .call(|l| async move {
                let params: [&(dyn tokio_postgres::types::ToSql + Sync); 11] = [
                    name,
                    ids,
                    payloads,
                    attempts,
                    &max_stalls,
                    &cap,
                    labels,
                    deadlines,
                    run_ats,
                    priorities,
                    traces,
                ];
                let row = l.client.query_one(&l.enqueue_batch, &params).await?;
                Ok((row.try_get::<_, i64>(0)?, row.try_get::<_, i64>(1)?))
            })
            .await?;
        Ok((usize::try_from(k.max(0)).unwrap_or(0), depth.max(0) as u64))
    }

    /// Stores a keyed job, or answers the job that holds its key. One statement
    /// ([`sql::ENQUEUE_KEYED`]) decides on its snapshot; what it cannot see (a job with the key
    /// committed after the snapshot, a key held past its retention, a missing queue row) is
    /// settled, and the statement run again on a fresh snapshot.
    async fn enqueue_keyed(&self, id: JobId, job: &NewJob) -> Result<JobId, EnqueueError> {
        /// Each rerun follows a commit that changed what this one saw; more in a row means a
        /// store in a state this code does not expect.
        const TRIES: usize = 5;
        let opts = &self.inner.options;
        let key = job.key.as_ref().map_or("", |k| k.as_str());
        let (name, id_text, payload) = (&opts.name.as_str(), id.as_str(), &job.payload);
        let (label, expires_at) = (job.label.as_deref(), deadline(job));
        let trace = job.trace.as_ref().map(|t| t.as_str());
        let (run_at, priority) = (due(job), i32::from(job.priority.min(MAX_PRIORITY)));
        let max_attempts =
            i32::try_from(job.max_attempts.unwrap_or(opts.max_attempts).max(1)).unwrap_or(i32::MAX);
        let max_stalls = i32::try_from(opts.max_stalls.max(1)).unwrap_or(i32::MAX);
        let cap = i64::try_from(opts.max_backlog).unwrap_or(i64::MAX);
        let retention = ms(opts.retention);
        for _ in 0..TRIES {
            let row = self
                .call(|l| async move {
                    let params: [&(dyn tokio_postgres::types::ToSql + Sync); 13] = [
                        name,
                        &id_text,
                        payload,
                        &max_attempts,
                        &max_stalls,
                        &cap,
                        &label,
                        &expires_at,
                        &key,
                        &retention,
                        &run_at,
                        &priority,
                        &trace,
                    ];
                    l.client.query_one(sql::ENQUEUE_KEYED, &params).await
                })
                .await?;
            let read = |row: &Row| -> Result<_, tokio_postgres::Error> {
                Ok((
                    row.try_get::<_, bool>(0)?,
                    row.try_get::<_, Option<String>>(1)?,
                    row.try_get::<_, Option<String>>(2)?,
                    row.try_get::<_, bool>(3)?,
                    row.try_get::<_, i64>(4)?,
                ))
            };
            let (stored, held, held_payload, stale, depth) =
                read(&row).map_err(QueueError::from)?;
            if stored {
                return Ok(id);
            }
            match held {
                Some(_) if stale => {
                    self.call(|l| async move {
                        l.client
                            .execute(sql::UNKEY, &[name, &key, &retention])
                            .await
                    })
                    .await?;
                }
                Some(held) => {
                    let held =
                        JobId::parse(&held).map_err(|_| corrupt(format!("bad id {held:?}")))?;
                    return if held_payload.as_deref() == Some(payload.as_str()) {
                        Ok(held)
                    } else {
                        Err(EnqueueError::KeyReused(held))
                    };
                }
                None if depth < 0 => {
                    self.call(|l| async move { l.client.execute(sql::ADD_QUEUE, &[name]).await })
                        .await?;
                }
                None if depth >= cap => return Err(EnqueueError::Full(depth as u64)),
                // A job with the key was committed after this statement's snapshot.
                None => {}
            }
        }
        Err(QueueError::Corrupt(format!("a keyed enqueue did not settle in {TRIES} tries")).into())
    }

    /// Deletes this queue's jobs and its meta row (tests and benchmarks isolate themselves by
    /// name).
    ///
    /// # Errors
    /// If Postgres fails.
    pub async fn destroy(&self) -> Result<(), QueueError> {
        let name = &self.inner.options.name.as_str();
        self.call(|l| async move { l.client.execute(sql::DESTROY, &[name]).await })
            .await?;
        Ok(())
    }

    /// Runs `f` on the shared link within [`QUERY_TIMEOUT`]; if the connection turns out to be
    /// lost, reconnects once and runs it again.
    ///
    /// Boxed: a statement's future (tokio-postgres's) is about 6.7 KB, and every future that
    /// awaits a store call, up to each request's in the gateway, would otherwise carry that
    /// size and be copied with it, whichever backend the queue is.
    async fn call<T, F, Fut>(&self, f: F) -> Result<T, QueueError>
    where
        F: Fn(Arc<Link>) -> Fut,
        Fut: Future<Output = Result<T, tokio_postgres::Error>>,
    {
        Box::pin(self.call_here(f)).await
    }

    /// [`PostgresQueue::call`], unboxed.
    async fn call_here<T, F, Fut>(&self, f: F) -> Result<T, QueueError>
    where
        F: Fn(Arc<Link>) -> Fut,
        Fut: Future<Output = Result<T, tokio_postgres::Error>>,
    {
        let timed = |fut: Fut| async move {
            tokio::time::timeout(QUERY_TIMEOUT, fut)
                .await
                .map_err(|_| QueueError::Timeout("a postgres statement", QUERY_TIMEOUT))
        };
        let link = self.inner.shared.link().await?;
        match timed(f(Arc::clone(&link))).await? {
            Err(e) if is_lost(&e) || link.client.is_closed() => {
                tracing::warn!(error = %e, "postgres connection lost; reconnecting");
                let link = self.inner.shared.reconnect(&link).await?;
                Ok(timed(f(link)).await??)
            }
            other => Ok(other?),
        }
    }
}

/// The batcher: takes every enqueue waiting (up to [`MAX_ENQUEUE_BATCH`]) and stores them in
/// one statement, then the next batch. A batch that fails as a whole (a lost connection whose
/// retry met its own ids, say) is stored job by job instead, so each gets its own answer.
async fn batch_enqueues(queue: Weak<Inner>, mut inbox: mpsc::Receiver<Pending>) {
    let mut batch = Vec::with_capacity(MAX_ENQUEUE_BATCH);
    while inbox.recv_many(&mut batch, MAX_ENQUEUE_BATCH).await > 0 {
        let Some(inner) = queue.upgrade() else { return };
        let q = PostgresQueue { inner };
        let jobs: Vec<Pending> = std::mem::take(&mut batch);
        if jobs.len() > 1 {
            match q.enqueue_many(&jobs).await {
                Ok((stored, depth)) => {
                    for (i, p) in jobs.into_iter().enumerate() {
                        let answer = if i < stored {
                            Ok(p.id)
                        } else {
                            Err(EnqueueError::Full(depth))
                        };
                        let _ = p.reply.send(answer);
                    }
                    continue;
                }
                Err(e) => {
                    tracing::warn!(error = %e, jobs = jobs.len(), "batched enqueue failed; storing one by one")
                }
            }
        }
        for p in jobs {
            let _ = p.reply.send(q.enqueue_one(p.id.clone(), &p.job).await);
        }
    }
}

/// A job's due time as the column takes it (`None`: now).
fn due(job: &NewJob) -> Option<i64> {
    job.run_at.map(|r| i64::try_from(r).unwrap_or(i64::MAX))
}

/// A job's deadline as the column holds it.
fn deadline(job: &NewJob) -> Option<i64> {
    job.expires_at.map(|e| i64::try_from(e).unwrap_or(i64::MAX))
}

fn corrupt(what: String) -> QueueError {
    QueueError::Corrupt(what)
}

fn view(row: &Row) -> Result<JobView, QueueError> {
    let id: String = row.try_get(0)?;
    let status: String = row.try_get(1)?;
    let count =
        |i: usize| -> Result<u32, QueueError> { Ok(row.try_get::<_, i32>(i)?.max(0) as u32) };
    let time = |i: usize| -> Result<Option<u64>, QueueError> {
        Ok(row.try_get::<_, Option<i64>>(i)?.map(|t| t.max(0) as u64))
    };
    Ok(JobView {
        id: JobId::parse(&id).map_err(|_| corrupt(format!("bad id {id:?}")))?,
        status: JobStatus::from_name(&status)
            .ok_or_else(|| corrupt(format!("bad status {status}")))?,
        attempts: count(2)?,
        max_attempts: count(3)?,
        result: row.try_get(4)?,
        error: row.try_get(5)?,
        enqueued_at: time(6)?.unwrap_or(0),
        started_at: time(7)?,
        finished_at: time(8)?,
        stalls: count(9)?,
        max_stalls: count(10)?,
        expires_at: time(11)?,
        priority: u8::try_from(row.try_get::<_, i32>(12)?.clamp(0, 255)).unwrap_or(0),
        label: row.try_get(13)?,
    })
}

/// The jobs a claim returned, oldest first (`RETURNING` gives no order).
fn claimed(rows: Vec<Row>, token: &str) -> Result<Vec<Claimed>, QueueError> {
    let mut jobs = rows
        .iter()
        .map(|r| {
            let id: String = r.try_get(0)?;
            let job = Claimed {
                id: JobId::parse(&id).map_err(|_| corrupt(format!("bad id {id:?}")))?,
                payload: r.try_get(1)?,
                attempt: r.try_get::<_, i32>(2)?.max(0) as u32,
                max_attempts: r.try_get::<_, i32>(3)?.max(0) as u32,
                expires_at: r.try_get::<_, Option<i64>>(6)?.map(|t| t.max(0) as u64),
                trace: r
                    .try_get::<_, Option<&str>>(7)?
                    .and_then(crate::TraceParent::parse),
                token: token.to_owned(),
                row: 0,
                entry: String::new(),
                consumer: String::new(),
            };
            Ok(((r.try_get::<_, i64>(4)?, r.try_get::<_, i64>(5)?), job))
        })
        .collect::<Result<Vec<_>, QueueError>>()?;
    jobs.sort_by_key(|(order, _)| *order);
    Ok(jobs.into_iter().map(|(_, job)| job).collect())
}

impl JobQueue for PostgresQueue {
    async fn enqueue(&self, job: NewJob) -> Result<JobId, EnqueueError> {
        let id = JobId::random();
        if job.key.is_some() {
            return self.enqueue_keyed(id, &job).await;
        }
        let (reply, answer) = oneshot::channel();
        let pending = Pending {
            id: id.clone(),
            job,
            reply,
        };
        if let Err(mpsc::error::SendError(p)) = self.inner.enqueues.send(pending).await {
            return self.enqueue_one(id, &p.job).await;
        }
        answer.await.map_err(|_| QueueError::Closed)?
    }

    async fn get(&self, id: &JobId) -> Result<Option<JobView>, QueueError> {
        let (name, id) = (&self.inner.options.name.as_str(), id.as_str());
        let retention = ms(self.inner.options.retention);
        let row = self
            .call(|l| async move { l.client.query_opt(&l.get, &[name, &id, &retention]).await })
            .await?;
        row.as_ref().map(view).transpose()
    }

    async fn claim_batch(
        &self,
        worker: &WorkerId,
        lease: Duration,
        max: usize,
        wait: Duration,
    ) -> Result<Vec<Claimed>, QueueError> {
        let name = &self.inner.options.name.as_str();
        let (worker, lease_ms) = (worker.as_str(), ms(lease));
        let max = max.clamp(1, MAX_CLAIM) as i64;
        // Subscribe before looking, so a job stored between the look and the wait still wakes us.
        let mut woken = self.inner.wake.clone();
        woken.borrow_and_update();
        let end = Instant::now() + wait;
        loop {
            // One token per claim: with the job's id, `(id, token)` names one holder of one job.
            let token = lease_token();
            let token = token.as_str();
            let rows = self
                .call(|l| async move {
                    let params: [&(dyn tokio_postgres::types::ToSql + Sync); 5] =
                        [name, &max, &token, &lease_ms, &worker];
                    l.client.query(&l.claim, &params).await
                })
                .await?;
            let jobs = claimed(rows, token)?;
            let now = Instant::now();
            if !jobs.is_empty() || now >= end {
                return Ok(jobs);
            }
            // Wait for a NOTIFY (a job stored, retried or released), the next retry falling
            // due, or the end of `wait`.
            let next_due: Option<i64> = self
                .call(|l| async move { l.client.query_one(&l.next_due, &[name]).await })
                .await?
                .try_get(0)?;
            let until = next_due.map_or(end, |d| {
                let d = Duration::from_millis(d.max(0) as u64).max(LOCKED_PAUSE);
                (now + d).min(end)
            });
            if let Ok(Err(_)) = tokio::time::timeout_at(until, woken.changed()).await {
                tokio::time::sleep_until(until.min(now + FALLBACK_POLL)).await;
            }
        }
    }

    async fn heartbeat(&self, job: &Claimed, lease: Duration) -> Result<bool, QueueError> {
        let name = &self.inner.options.name.as_str();
        let (id, token, lease_ms) = (job.id.as_str(), job.token.as_str(), ms(lease));
        let n = self
            .call(|l| async move {
                let params: [&(dyn tokio_postgres::types::ToSql + Sync); 4] =
                    [name, &id, &token, &lease_ms];
                l.client.execute(&l.heartbeat, &params).await
            })
            .await?;
        Ok(n == 1)
    }

    async fn complete_batch(
        &self,
        outcomes: Vec<(Claimed, Result<String, JobError>)>,
    ) -> Result<Vec<Completion>, QueueError> {
        if outcomes.is_empty() {
            return Ok(Vec::new());
        }
        let opts = &self.inner.options;
        let n = outcomes.len();
        let (mut ids, mut tokens, mut kinds) = (
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
        );
        let (mut values, mut delays) = (Vec::with_capacity(n), Vec::with_capacity(n));
        for (job, outcome) in &outcomes {
            ids.push(job.id.as_str());
            tokens.push(job.token.as_str());
            let (kind, value, delay) = match outcome {
                Ok(result) => ("ok", result.as_str(), 0),
                // The row's attempts equal this run's number while the lease matches; the
                // statement checks again before queueing a retry.
                Err(e) if e.retry && job.attempt < job.max_attempts => {
                    let delay = backoff(job.attempt, opts.retry_base, opts.retry_max);
                    ("retry", e.message.as_str(), ms(delay))
                }
                Err(e) => ("fail", e.message.as_str(), 0),
            };
            kinds.push(kind);
            values.push(value);
            delays.push(delay);
        }
        let name = &opts.name.as_str();
        let (ids, tokens, kinds, values, delays) = (&ids, &tokens, &kinds, &values, &delays);
        let rows = self
            .call(|l| async move {
                let params: [&(dyn tokio_postgres::types::ToSql + Sync); 6] =
                    [name, ids, tokens, kinds, values, delays];
                l.client.query(&l.complete, &params).await
            })
            .await?;
        let mut stored: HashMap<String, String> = HashMap::with_capacity(rows.len());
        for row in &rows {
            stored.insert(row.try_get(0)?, row.try_get(1)?);
        }
        // One answer per outcome, in order; the same lease given twice is stored once.
        Ok(outcomes
            .iter()
            .map(|(job, _)| match stored.remove(job.id.as_str()).as_deref() {
                Some("done") => Completion::Done,
                Some("queued") => Completion::Retrying,
                Some("expired") => Completion::Expired,
                Some(_) => Completion::Failed,
                None => Completion::Refused,
            })
            .collect())
    }

    async fn release(&self, job: &Claimed) -> Result<bool, QueueError> {
        let name = &self.inner.options.name.as_str();
        let (id, token) = (job.id.as_str(), job.token.as_str());
        let rows = self
            .call(|l| async move { l.client.query(&l.release, &[name, &id, &token]).await })
            .await?;
        Ok(rows.len() == 1)
    }

    async fn reap(&self) -> Result<u64, QueueError> {
        let name = &self.inner.options.name.as_str();
        let row = self
            .call(|l| async move { l.client.query_one(&l.reap, &[name]).await })
            .await?;
        // Claims pass over queued jobs past their deadline; this marks them expired.
        self.call(|l| async move { l.client.execute(sql::EXPIRE, &[name]).await })
            .await?;
        Ok(row.try_get::<_, i64>(0)?.max(0) as u64)
    }

    async fn cancel(&self, id: &JobId) -> Result<Cancel, QueueError> {
        let (name, id_text) = (&self.inner.options.name.as_str(), id.as_str());
        let retention = ms(self.inner.options.retention);
        let row = self
            .call(|l| async move {
                l.client
                    .query_one(sql::CANCEL, &[name, &id_text, &retention])
                    .await
            })
            .await?;
        let before: Option<String> = row.try_get(0)?;
        let cancelled: bool = row.try_get(1)?;
        let Some(was) = before.as_deref().and_then(JobStatus::from_name) else {
            return Ok(Cancel::NotFound);
        };
        if cancelled {
            return Ok(Cancel::Cancelled { was });
        }
        if was.is_finished() {
            return Ok(Cancel::Finished(was));
        }
        // It finished between the statement's snapshot and its update: say how.
        Ok(match self.get(id).await? {
            Some(v) => Cancel::Finished(v.status),
            None => Cancel::NotFound,
        })
    }

    async fn retry(&self, id: &JobId) -> Result<Retry, QueueError> {
        let (name, id_text) = (&self.inner.options.name.as_str(), id.as_str());
        let cap = i64::try_from(self.inner.options.max_backlog).unwrap_or(i64::MAX);
        let retention = ms(self.inner.options.retention);
        let row = self
            .call(|l| async move {
                l.client
                    .query_one(sql::RETRY, &[name, &id_text, &cap, &retention])
                    .await
            })
            .await?;
        let before: Option<String> = row.try_get(0)?;
        let queued: bool = row.try_get(1)?;
        let depth: i64 = row.try_get(2)?;
        let Some(was) = before.as_deref().and_then(JobStatus::from_name) else {
            return Ok(Retry::NotFound);
        };
        Ok(match (queued, was) {
            (true, _) => Retry::Queued { was },
            (false, JobStatus::Failed | JobStatus::Cancelled | JobStatus::Expired) => {
                match self.get(id).await? {
                    // Another retry queued it first.
                    Some(v) if !v.status.is_finished() || v.status == JobStatus::Done => {
                        Retry::NotRetryable(v.status)
                    }
                    Some(_) => Retry::Full(depth.max(0) as u64),
                    None => Retry::NotFound,
                }
            }
            (false, other) => Retry::NotRetryable(other),
        })
    }

    async fn list(&self, filter: ListFilter) -> Result<JobPage, QueueError> {
        let name = &self.inner.options.name.as_str();
        let limit = filter.limit.clamp(1, MAX_PAGE);
        let (t, seq) = filter.keyset();
        let (status, limit_sql) = (filter.status.as_str(), limit as i64);
        let retention = ms(self.inner.options.retention);
        let finished = filter.status.is_finished();
        let rows = self
            .call(|l| async move {
                if finished {
                    let params: [&(dyn tokio_postgres::types::ToSql + Sync); 6] =
                        [name, &status, &t, &seq, &limit_sql, &retention];
                    l.client.query(sql::LIST_FINISHED, &params).await
                } else {
                    let params: [&(dyn tokio_postgres::types::ToSql + Sync); 5] =
                        [name, &status, &t, &seq, &limit_sql];
                    l.client.query(sql::LIST_UNFINISHED, &params).await
                }
            })
            .await?;
        let next = match rows.last() {
            Some(last) if rows.len() == limit => Some(Cursor {
                t: last.try_get::<_, Option<i64>>(14)?.unwrap_or(0).max(0) as u64,
                tie: last.try_get::<_, i64>(15)?.to_string(),
            }),
            _ => None,
        };
        Ok(JobPage {
            jobs: rows.iter().map(view).collect::<Result<_, _>>()?,
            next,
        })
    }

    async fn prune(&self) -> Result<u64, QueueError> {
        let name = &self.inner.options.name.as_str();
        let retention = ms(self.inner.options.retention);
        let row = self
            .call(|l| async move { l.client.query_one(&l.prune, &[name, &retention]).await })
            .await?;
        Ok(row.try_get::<_, i64>(0)?.max(0) as u64)
    }

    async fn counts(&self) -> Result<Counts, QueueError> {
        let name = &self.inner.options.name.as_str();
        let retention = ms(self.inner.options.retention);
        let rows = self
            .call(|l| async move { l.client.query(&l.counts, &[name, &retention]).await })
            .await?;
        let mut by_name: HashMap<String, i64> = HashMap::new();
        for row in &rows {
            *by_name.entry(row.try_get(0)?).or_default() += row.try_get::<_, i64>(1)?;
        }
        let n = |name: &str| by_name.get(name).copied().unwrap_or(0);
        let left = |name: &str| (n(name) - n(&format!("stale_{name}"))).max(0) as u64;
        Ok(Counts {
            queued: left(JobStatus::Queued.as_str()),
            running: left(JobStatus::Running.as_str()),
            done: left(JobStatus::Done.as_str()),
            failed: left(JobStatus::Failed.as_str()),
            cancelled: left(JobStatus::Cancelled.as_str()),
            expired: left(JobStatus::Expired.as_str()),
            stalls: n("stalls").max(0) as u64,
        })
    }

    async fn latency(&self) -> Result<Latency, QueueError> {
        let name = &self.inner.options.name.as_str();
        let rows = self
            .call(|l| async move { l.client.query(&l.latency, &[name]).await })
            .await?;
        let mut latency = Latency::default();
        for row in &rows {
            let label: String = row.try_get(0)?;
            let bucket = row.try_get::<_, i32>(1)?.max(0) as u32;
            let n = row.try_get::<_, i64>(2)?.max(0) as u64;
            latency.add(&label, bucket, n, row.try_get::<_, i64>(3)?.max(0) as u64);
        }
        Ok(latency)
    }
}
