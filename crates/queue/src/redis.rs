//! The scale-out backend: Redis Streams with one consumer group. The stream carries job ids; one
//! hash per job holds status, payload and result; every state change is one Lua script (in
//! `lua/`), so a job's hash and its stream entry never disagree. Needs Redis 6.2+ (XAUTOCLAIM).
//!
//! Keys, all under the `{name}` hash tag (one cluster slot; `name` from [`QueueOptions::name`]):
//! - `{name}:stream`: entries `id=<job id>`, waiting or in flight; consumer group `workers`.
//!   Acked entries are deleted, so `XLEN` + `ZCARD retry` is the backlog.
//! - `{name}:job:<id>`: hash `status payload attempts max_attempts result error enqueued_at
//!   started_at finished_at lease lease_until worker entry`; `PEXPIRE` retention once finished.
//!   `entry` is the job's stream entry while it has one, so a cancel deletes it.
//! - `{name}:retry`: zset of job ids by due time (ms); promoted to the stream by the claim script.
//! - `{name}:done`, `{name}:failed`, `{name}:cancelled`, `{name}:expired`: zsets of job ids by
//!   finish time, for counts and pruning.
//! - `{name}:deadlines`: zset of unfinished jobs that have a deadline, by deadline: the reaper
//!   expires the queued ones among those due.
//! - `{name}:key:<key>`: the id of the job stored under an idempotency key; expires with the
//!   job's hash.
//! - `{name}:dlq`: stream of failed jobs (`id`, `error`), trimmed to ~10,000 and to the retention.
//! - `{name}:stalls`: how many runs were ever lost with their worker (a counter for metrics).
//! - `{name}:latency`: the enqueue-to-done histogram (see [`super::latency`]), one hash:
//!   `<bucket>:<label>` jobs in that bucket, `max:<label>` the longest time.
//! - `{name}:labels`: the labels the histogram keeps (at most [`super::latency::MAX_LABELS`]).
//!
//! `name` is a [`super::QueueName`], so it holds no glob or hash-tag character: `{name}*`
//! matches this queue's keys and no other queue's.
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig, MultiplexedConnection};
use redis::{AsyncConnectionConfig, Client, Script, streams::StreamReadReply};

use super::latency::{self, Latency};
use super::types::lease_token;
use super::{
    Cancel, Claimed, Completion, Counts, Cursor, EnqueueError, JobError, JobId, JobPage, JobQueue,
    JobStatus, JobView, ListFilter, MAX_PAGE, MAX_PRIORITY, NewJob, QueueError, QueueOptions,
    Retry, WorkerId, backoff,
};

/// The consumer group every worker reads through.
const GROUP: &str = "workers";
/// The consumer name the reaper claims stalled entries under.
const REAPER: &str = "reaper";
/// Reply timeout for ordinary commands: generous, since a busy 2-core host can stall a few
/// hundred ms, and the library default (500 ms) turned load spikes into errors.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(10);
/// Reaper's minimum idle time before any lease has been granted by this handle.
const DEFAULT_MIN_IDLE: Duration = Duration::from_secs(30);
/// Most jobs one claim takes: keeps the script's run (which blocks Redis) to a few milliseconds.
const MAX_CLAIM: usize = 256;
/// Longest a blocking read waits beyond its `wait`, before its reply is deemed lost.
const BLOCK_SLACK: Duration = Duration::from_secs(5);

/// Creates the stream and the consumer group unless they exist.
async fn create_group(conn: &mut ConnectionManager, stream: &str) -> Result<(), QueueError> {
    let created: Result<(), redis::RedisError> = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(stream)
        .arg(GROUP)
        .arg("0")
        .arg("MKSTREAM")
        .query_async(conn)
        .await;
    match created {
        Err(e) if e.code() != Some("BUSYGROUP") => Err(e.into()),
        _ => Ok(()),
    }
}

/// The group is gone (Redis restarted without persistence, or the keys were deleted).
fn no_group(e: &redis::RedisError) -> bool {
    e.code() == Some("NOGROUP") || e.to_string().contains("NOGROUP")
}

/// The shared preamble and one body per operation.
struct Scripts {
    enqueue: Script,
    claim: Script,
    heartbeat: Script,
    complete: Script,
    release: Script,
    reap: Script,
    counts: Script,
    prune: Script,
    cancel: Script,
    retry: Script,
    list: Script,
}

impl Scripts {
    fn new() -> Scripts {
        let common = format!(
            "{}{}",
            latency::lua_bucket(),
            include_str!("lua/common.lua")
        );
        let s = |body: &str| Script::new(&format!("{common}\n{body}"));
        Scripts {
            enqueue: s(include_str!("lua/enqueue.lua")),
            claim: s(include_str!("lua/claim.lua")),
            heartbeat: s(include_str!("lua/heartbeat.lua")),
            complete: s(include_str!("lua/complete.lua")),
            release: s(include_str!("lua/release.lua")),
            reap: s(include_str!("lua/reap.lua")),
            counts: s(include_str!("lua/counts.lua")),
            prune: s(include_str!("lua/prune.lua")),
            cancel: s(include_str!("lua/cancel.lua")),
            retry: s(include_str!("lua/retry.lua")),
            list: s(include_str!("lua/list.lua")),
        }
    }
}

/// A handle on a Redis queue. Clones share one multiplexed connection.
#[derive(Clone)]
pub struct RedisQueue {
    inner: Arc<Inner>,
}

struct Inner {
    client: Client,
    conn: ConnectionManager,
    /// Connections for blocking reads, which would stall every other command on the
    /// multiplexed connection.
    blocking: Mutex<Vec<MultiplexedConnection>>,
    scripts: Scripts,
    /// `{name}:stream`, `{name}:retry`, `{name}:done`, `{name}:failed`, `{name}:dlq`,
    /// `{name}:stalls`, `{name}:latency`, `{name}:labels`, `{name}:cancelled`,
    /// `{name}:expired`, `{name}:deadlines`.
    keys: [String; 11],
    /// `{name}:job:`
    job_prefix: String,
    options: QueueOptions,
    /// The shortest lease this handle has granted, in ms: the reaper's XAUTOCLAIM min idle.
    min_lease_ms: AtomicU64,
}

impl std::fmt::Debug for RedisQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisQueue")
            .field("stream", &self.inner.keys[0])
            .finish()
    }
}

impl RedisQueue {
    /// Connects to `url` and creates the stream and consumer group if needed.
    ///
    /// # Errors
    /// If Redis cannot be reached.
    pub async fn open(url: &str, options: QueueOptions) -> Result<RedisQueue, QueueError> {
        let client = Client::open(url)?;
        let config = ConnectionManagerConfig::new().set_response_timeout(Some(RESPONSE_TIMEOUT));
        let mut conn = client.get_connection_manager_with_config(config).await?;
        let tag = format!("{{{}}}", options.name);
        let keys = [
            "stream",
            "retry",
            "done",
            "failed",
            "dlq",
            "stalls",
            "latency",
            "labels",
            "cancelled",
            "expired",
            "deadlines",
        ]
        .map(|k| format!("{tag}:{k}"));
        create_group(&mut conn, &keys[0]).await?;
        Ok(RedisQueue {
            inner: Arc::new(Inner {
                client,
                conn,
                blocking: Mutex::new(Vec::new()),
                scripts: Scripts::new(),
                job_prefix: format!("{tag}:job:"),
                keys,
                options,
                min_lease_ms: AtomicU64::new(u64::MAX),
            }),
        })
    }

    /// Runs `script` with the standard KEYS and first two ARGV, then `args`.
    async fn run<T: redis::FromRedisValue>(
        &self,
        script: &Script,
        args: &[&str],
    ) -> Result<T, QueueError> {
        let mut call = script.prepare_invoke();
        for key in &self.inner.keys {
            call.key(key);
        }
        call.arg(&self.inner.job_prefix).arg(GROUP);
        for arg in args {
            call.arg(*arg);
        }
        let mut conn = self.inner.conn.clone();
        match call.invoke_async(&mut conn).await {
            Err(e) if no_group(&e) => {
                create_group(&mut conn, &self.inner.keys[0]).await?;
                Ok(call.invoke_async(&mut conn).await?)
            }
            other => Ok(other?),
        }
    }

    /// Deletes every key of this queue, its latency histogram's too (tests and benchmarks
    /// isolate themselves by name). The job hashes are found with `SCAN MATCH {name}:job:*`:
    /// the name is a [`super::QueueName`], and glob characters are escaped besides, so the
    /// pattern matches this queue's keys only.
    ///
    /// # Errors
    /// If Redis fails.
    pub async fn destroy(&self) -> Result<(), QueueError> {
        let mut conn = self.inner.conn.clone();
        for prefix in [self.inner.job_prefix.clone(), self.key_prefix()] {
            self.delete_matching(&mut conn, &format!("{}*", glob_escape(&prefix)))
                .await?;
        }
        redis::cmd("DEL")
            .arg(&self.inner.keys[..])
            .query_async::<()>(&mut conn)
            .await?;
        Ok(())
    }

    /// `{name}:key:`, the idempotency keys' prefix.
    fn key_prefix(&self) -> String {
        let job = &self.inner.job_prefix;
        format!("{}key:", &job[..job.len() - "job:".len()])
    }

    /// Deletes the keys that match `pattern`.
    async fn delete_matching(
        &self,
        conn: &mut ConnectionManager,
        pattern: &str,
    ) -> Result<(), QueueError> {
        let mut cursor: u64 = 0;
        loop {
            let (next, found): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(pattern)
                .arg("COUNT")
                .arg(1000)
                .query_async(conn)
                .await?;
            if !found.is_empty() {
                redis::cmd("DEL")
                    .arg(&found)
                    .query_async::<()>(conn)
                    .await?;
            }
            if next == 0 {
                return Ok(());
            }
            cursor = next;
        }
    }

    /// Waits up to `wait` on a dedicated connection for new entries; up to `max` of their ids.
    async fn read_blocking(
        &self,
        worker: &WorkerId,
        max: usize,
        wait: Duration,
    ) -> Result<Vec<String>, QueueError> {
        let pooled = self.inner.blocking.lock().expect("pool lock").pop();
        let mut conn = match pooled {
            Some(conn) => conn,
            None => {
                let config = AsyncConnectionConfig::new()
                    .set_response_timeout(Some(wait + BLOCK_SLACK))
                    .set_connection_timeout(Some(RESPONSE_TIMEOUT));
                self.inner
                    .client
                    .get_multiplexed_async_connection_with_config(&config)
                    .await?
            }
        };
        let reply: Result<Option<StreamReadReply>, _> = redis::cmd("XREADGROUP")
            .arg("GROUP")
            .arg(GROUP)
            .arg(worker.as_str())
            .arg("COUNT")
            .arg(max)
            .arg("BLOCK")
            .arg(wait.as_millis().max(1) as u64)
            .arg("STREAMS")
            .arg(&self.inner.keys[0])
            .arg(">")
            .query_async(&mut conn)
            .await;
        let reply = match reply {
            Err(e) if no_group(&e) => {
                create_group(&mut self.inner.conn.clone(), &self.inner.keys[0]).await?;
                None
            }
            other => other?,
        };
        self.inner.blocking.lock().expect("pool lock").push(conn);
        Ok(reply
            .and_then(|r| r.keys.into_iter().next())
            .map(|k| k.ids.into_iter().map(|e| e.id).collect())
            .unwrap_or_default())
    }

    /// Runs the claim script for up to `max` jobs, starting with `entries` if a blocking read
    /// got some. `Err(next)`: none taken, and when the next retry is due, if any.
    async fn start(
        &self,
        worker: &WorkerId,
        lease: Duration,
        max: usize,
        entries: &[String],
    ) -> Result<Result<Vec<Claimed>, Option<Duration>>, QueueError> {
        let token = lease_token();
        let lease_ms = lease.as_millis().to_string();
        let entries = entries.join(",");
        let max = max.to_string();
        let retention = self.inner.options.retention.as_millis().to_string();
        let got: Vec<String> = self
            .run(
                &self.inner.scripts.claim,
                &[
                    worker.as_str(),
                    token.as_str(),
                    &lease_ms,
                    &entries,
                    &max,
                    &retention,
                ],
            )
            .await?;
        if let [_, next] = got.as_slice() {
            return Ok(Err(next.parse::<u64>().ok().map(Duration::from_millis)));
        }
        if !got.len().is_multiple_of(7) {
            return Err(QueueError::Corrupt(format!("claim replied {got:?}")));
        }
        got.chunks_exact(7)
            .map(|c| {
                Ok(Claimed {
                    id: JobId::parse(&c[1])
                        .map_err(|_| QueueError::Corrupt(format!("bad id {:?}", c[1])))?,
                    payload: c[2].clone(),
                    attempt: c[3].parse().unwrap_or(1),
                    max_attempts: c[4].parse().unwrap_or(1),
                    expires_at: c[5].parse().ok(),
                    trace: crate::TraceParent::parse(&c[6]),
                    token: token.clone(),
                    row: 0,
                    entry: c[0].clone(),
                    consumer: worker.as_str().to_owned(),
                })
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Ok)
    }

    /// A job's view from its hash (empty: no such job).
    fn view(
        &self,
        id: &JobId,
        mut h: HashMap<String, String>,
    ) -> Result<Option<JobView>, QueueError> {
        if h.is_empty() {
            return Ok(None);
        }
        let status = h.get("status").and_then(|s| JobStatus::from_name(s));
        let status = status.ok_or_else(|| QueueError::Corrupt(format!("job {id}: no status")))?;
        Ok(Some(JobView {
            id: id.clone(),
            status,
            attempts: number(&mut h, "attempts").unwrap_or(0),
            max_attempts: number(&mut h, "max_attempts").unwrap_or(0),
            stalls: number(&mut h, "stalls").unwrap_or(0),
            max_stalls: number(&mut h, "max_stalls").unwrap_or(self.inner.options.max_stalls),
            enqueued_at: number(&mut h, "enqueued_at").unwrap_or(0),
            started_at: number(&mut h, "started_at"),
            finished_at: number(&mut h, "finished_at"),
            expires_at: number(&mut h, "expires_at"),
            priority: number(&mut h, "priority").unwrap_or(0),
            result: field(&mut h, "result"),
            error: field(&mut h, "error"),
            label: field(&mut h, "label"),
        }))
    }
}

/// `s` with Redis glob characters (`* ? [ ] \`) escaped, so that a pattern built on it
/// matches `s` literally.
fn glob_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

fn field(h: &mut HashMap<String, String>, name: &str) -> Option<String> {
    h.remove(name)
}

fn number<T: std::str::FromStr>(h: &mut HashMap<String, String>, name: &str) -> Option<T> {
    h.get(name).and_then(|v| v.parse().ok())
}

impl JobQueue for RedisQueue {
    async fn enqueue(&self, job: NewJob) -> Result<JobId, EnqueueError> {
        let id = JobId::random();
        let opts = &self.inner.options;
        let max = job
            .max_attempts
            .unwrap_or(opts.max_attempts)
            .max(1)
            .to_string();
        let cap = opts.max_backlog.to_string();
        let max_stalls = opts.max_stalls.max(1).to_string();
        let label = job.label.as_deref().unwrap_or("");
        let key = job.key.as_ref().map_or("", |k| k.as_str());
        let deadline = job.expires_at.map(|e| e.to_string()).unwrap_or_default();
        let run_at = job.run_at.map(|r| r.to_string()).unwrap_or_default();
        let priority = job.priority.min(MAX_PRIORITY).to_string();
        let trace = job.trace.as_ref().map_or("", |t| t.as_str());
        let (stored, other): (u8, String) = self
            .run(
                &self.inner.scripts.enqueue,
                &[
                    id.as_str(),
                    &job.payload,
                    &max,
                    &cap,
                    &max_stalls,
                    label,
                    key,
                    &deadline,
                    &run_at,
                    &priority,
                    trace,
                ],
            )
            .await?;
        let held =
            || JobId::parse(&other).map_err(|_| QueueError::Corrupt(format!("bad id {other:?}")));
        match stored {
            1 => Ok(id),
            2 => Ok(held()?),
            3 => Err(EnqueueError::KeyReused(held()?)),
            _ => Err(EnqueueError::Full(other.parse().unwrap_or(0))),
        }
    }

    async fn get(&self, id: &JobId) -> Result<Option<JobView>, QueueError> {
        let mut conn = self.inner.conn.clone();
        let key = format!("{}{}", self.inner.job_prefix, id);
        let h: HashMap<String, String> = redis::cmd("HGETALL")
            .arg(&key)
            .query_async(&mut conn)
            .await?;
        self.view(id, h)
    }

    async fn list(&self, filter: ListFilter) -> Result<JobPage, QueueError> {
        let limit = filter.limit.clamp(1, MAX_PAGE);
        let (t, tie) = match &filter.after {
            Some(c) => (c.t.to_string(), c.tie.clone()),
            None => (String::new(), String::new()),
        };
        let retention = self.inner.options.retention.as_millis().to_string();
        let got: Vec<String> = self
            .run(
                &self.inner.scripts.list,
                &[
                    filter.status.as_str(),
                    &limit.to_string(),
                    &t,
                    &tie,
                    &retention,
                ],
            )
            .await?;
        let [last_t, last_tie, full, ids @ ..] = got.as_slice() else {
            return Err(QueueError::Corrupt(format!("list replied {got:?}")));
        };
        let ids = ids
            .iter()
            .map(|id| JobId::parse(id).map_err(|_| QueueError::Corrupt(format!("bad id {id:?}"))))
            .collect::<Result<Vec<_>, _>>()?;
        let mut pipe = redis::pipe();
        for id in &ids {
            pipe.cmd("HGETALL")
                .arg(format!("{}{}", self.inner.job_prefix, id));
        }
        let hashes: Vec<HashMap<String, String>> = if ids.is_empty() {
            Vec::new()
        } else {
            pipe.query_async(&mut self.inner.conn.clone()).await?
        };
        let mut jobs = Vec::with_capacity(ids.len());
        for (id, h) in ids.iter().zip(hashes) {
            // Gone since the script ran (its retention ended), or moved on: left out.
            if let Some(v) = self.view(id, h)?
                && v.status == filter.status
            {
                jobs.push(v);
            }
        }
        let next = (full == "1").then(|| Cursor {
            t: last_t.parse().unwrap_or(0),
            tie: last_tie.clone(),
        });
        Ok(JobPage { jobs, next })
    }
    async fn claim_batch(
        &self,
        worker: &WorkerId,
        lease: Duration,
        max: usize,
        wait: Duration,
    ) -> Result<Vec<Claimed>, QueueError> {
        let max = max.clamp(1, MAX_CLAIM);
        let lease_ms = u64::try_from(lease.as_millis()).unwrap_or(u64::MAX);
        self.inner
            .min_lease_ms
            .fetch_min(lease_ms, Ordering::Relaxed);
        let next_retry = match self.start(worker, lease, max, &[]).await? {
            Ok(jobs) => return Ok(jobs),
            Err(next) => next,
        };
        // Nothing ready: block for new entries, but no longer than until the next retry is due.
        let wait = next_retry.map_or(wait, |due| due.min(wait));
        if wait.is_zero() {
            return Ok(Vec::new());
        }
        let entries = self.read_blocking(worker, max, wait).await?;
        if entries.is_empty() {
            return Ok(Vec::new());
        }
        Ok(self
            .start(worker, lease, max, &entries)
            .await?
            .unwrap_or_default())
    }

    async fn heartbeat(&self, job: &Claimed, lease: Duration) -> Result<bool, QueueError> {
        let lease_ms = lease.as_millis().to_string();
        let args: [&str; 5] = [
            &job.consumer,
            &job.token,
            &lease_ms,
            &job.entry,
            job.id.as_str(),
        ];
        let n: u8 = self.run(&self.inner.scripts.heartbeat, &args).await?;
        Ok(n == 1)
    }

    async fn complete_batch(
        &self,
        outcomes: Vec<(Claimed, Result<String, JobError>)>,
    ) -> Result<Vec<Completion>, QueueError> {
        let opts = &self.inner.options;
        let mut args: Vec<String> = Vec::with_capacity(1 + outcomes.len() * 6);
        args.push(opts.retention.as_millis().to_string());
        for (job, outcome) in outcomes {
            let (kind, value) = match outcome {
                Ok(result) => ("ok", result),
                Err(e) => (if e.retry { "retry" } else { "fatal" }, e.message),
            };
            let delay = backoff(job.attempt, opts.retry_base, opts.retry_max);
            args.extend([
                job.token,
                job.entry,
                job.id.to_string(),
                kind.to_owned(),
                value,
                delay.as_millis().to_string(),
            ]);
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let replies: Vec<String> = self.run(&self.inner.scripts.complete, &args).await?;
        Ok(replies
            .iter()
            .map(|r| match r.as_str() {
                "done" => Completion::Done,
                "retrying" => Completion::Retrying,
                "failed" => Completion::Failed,
                "expired" => Completion::Expired,
                _ => Completion::Refused,
            })
            .collect())
    }

    async fn release(&self, job: &Claimed) -> Result<bool, QueueError> {
        let n: u8 = self
            .run(
                &self.inner.scripts.release,
                &[job.token.as_str(), &job.entry, job.id.as_str()],
            )
            .await?;
        Ok(n == 1)
    }

    async fn reap(&self) -> Result<u64, QueueError> {
        let min_idle = match self.inner.min_lease_ms.load(Ordering::Relaxed) {
            u64::MAX => DEFAULT_MIN_IDLE.as_millis() as u64,
            ms => ms,
        };
        let retention = self.inner.options.retention.as_millis().to_string();
        let max_stalls = self.inner.options.max_stalls.max(1).to_string();
        self.run(
            &self.inner.scripts.reap,
            &[REAPER, &min_idle.to_string(), &retention, &max_stalls],
        )
        .await
    }

    async fn cancel(&self, id: &JobId) -> Result<Cancel, QueueError> {
        let retention = self.inner.options.retention.as_millis().to_string();
        let (before, cancelled): (String, u8) = self
            .run(&self.inner.scripts.cancel, &[id.as_str(), &retention])
            .await?;
        let Some(was) = JobStatus::from_name(&before) else {
            return Ok(Cancel::NotFound);
        };
        Ok(match cancelled {
            1 => Cancel::Cancelled { was },
            _ => Cancel::Finished(was),
        })
    }

    async fn retry(&self, id: &JobId) -> Result<Retry, QueueError> {
        let cap = self.inner.options.max_backlog.to_string();
        let (before, queued, depth): (String, u8, u64) = self
            .run(&self.inner.scripts.retry, &[id.as_str(), &cap])
            .await?;
        let Some(was) = JobStatus::from_name(&before) else {
            return Ok(Retry::NotFound);
        };
        Ok(match (queued, was) {
            (1, _) => Retry::Queued { was },
            (_, JobStatus::Failed | JobStatus::Cancelled | JobStatus::Expired) => {
                Retry::Full(depth)
            }
            (_, other) => Retry::NotRetryable(other),
        })
    }

    async fn prune(&self) -> Result<u64, QueueError> {
        let retention = self.inner.options.retention.as_millis().to_string();
        self.run(&self.inner.scripts.prune, &[&retention]).await
    }

    async fn counts(&self) -> Result<Counts, QueueError> {
        let retention = self.inner.options.retention.as_millis().to_string();
        let [queued, running, done, failed, stalls, cancelled, expired]: [i64; 7] =
            self.run(&self.inner.scripts.counts, &[&retention]).await?;
        let n = |v: i64| v.max(0) as u64;
        Ok(Counts {
            queued: n(queued),
            running: n(running),
            done: n(done),
            failed: n(failed),
            cancelled: n(cancelled),
            expired: n(expired),
            stalls: n(stalls),
        })
    }

    async fn latency(&self) -> Result<Latency, QueueError> {
        let mut conn = self.inner.conn.clone();
        let fields: HashMap<String, u64> = redis::cmd("HGETALL")
            .arg(&self.inner.keys[6])
            .query_async(&mut conn)
            .await?;
        let mut latency = Latency::default();
        let mut longest: HashMap<&str, u64> = HashMap::new();
        for (field, &n) in &fields {
            let bad = || QueueError::Corrupt(format!("latency field {field:?}"));
            let (head, label) = field.split_once(':').ok_or_else(bad)?;
            if head == "max" {
                longest.insert(label, n);
            } else {
                latency.add(label, head.parse().map_err(|_| bad())?, n, 0);
            }
        }
        for (label, max_ms) in longest {
            latency.add(label, latency::bucket(max_ms as i64), 0, max_ms);
        }
        Ok(latency)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glob_characters_are_escaped() {
        assert_eq!(glob_escape("{a}:job:"), "{a}:job:");
        assert_eq!(glob_escape(r"a*?[b]\c"), r"a\*\?\[b\]\\c");
    }
}
