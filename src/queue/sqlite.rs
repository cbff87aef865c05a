//! The embedded backend: one SQLite file (WAL) shared by the gateway and worker processes of a
//! host. rusqlite is synchronous, so each handle owns one connection on a dedicated thread and
//! async callers send it closures; every write is one short `BEGIN IMMEDIATE` transaction.

use std::path::Path;
use std::sync::{Arc, mpsc};
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use tokio::sync::oneshot;

use super::types::{lease_token, now_ms};
use super::{
    Claimed, Completion, Counts, EnqueueError, JobError, JobId, JobQueue, JobStatus, JobView,
    NewJob, QueueError, QueueOptions, WorkerId, backoff,
};

/// How long a writer waits for another process's transaction: long enough that workers never die
/// on "database is locked" under load (5 s was seen to be too short with 5 processes).
const BUSY_TIMEOUT: Duration = Duration::from_secs(30);

/// The schema; `qmeta.depth` counts unfinished jobs so that the backlog cap costs O(1) per enqueue
/// (a `count(*)` per insert cut enqueue rates several-fold).
const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS jobs (
    seq          INTEGER PRIMARY KEY, -- the rowid: FIFO order among jobs due in the same ms
    id           TEXT NOT NULL UNIQUE,
    status       TEXT NOT NULL,
    payload      TEXT NOT NULL,
    attempts     INTEGER NOT NULL DEFAULT 0,
    max_attempts INTEGER NOT NULL,
    result       TEXT,
    error        TEXT,
    enqueued_at  INTEGER NOT NULL,
    started_at   INTEGER,
    finished_at  INTEGER,
    run_at       INTEGER NOT NULL,
    lease        TEXT,
    lease_until  INTEGER,
    worker       TEXT
);
CREATE INDEX IF NOT EXISTS jobs_due ON jobs (status, run_at);
CREATE INDEX IF NOT EXISTS jobs_lease ON jobs (lease_until) WHERE status = 'running';
CREATE INDEX IF NOT EXISTS jobs_finished ON jobs (finished_at) WHERE finished_at IS NOT NULL;
CREATE TABLE IF NOT EXISTS qmeta (id INTEGER PRIMARY KEY CHECK (id = 0), depth INTEGER NOT NULL);
INSERT OR IGNORE INTO qmeta (id, depth) VALUES (0, 0);
";

const VIEW_COLUMNS: &str = "id, status, attempts, max_attempts, result, error, enqueued_at, \
                            started_at, finished_at";

/// Work for the connection thread. It runs at once and returns the reply, which the thread sends
/// only after the group commit holding the work has committed (or failed: the reply says so).
type Task = Box<dyn FnOnce(&mut Connection) -> Reply + Send>;
type Reply = Box<dyn FnOnce(Result<(), String>) + Send>;

/// Most tasks committed together: under concurrent enqueue one commit then serves many jobs,
/// while a group still holds the write lock for only a few milliseconds.
const GROUP_COMMIT: usize = 64;

/// A handle on a SQLite queue file. Clones share one connection thread.
#[derive(Debug, Clone)]
pub struct SqliteQueue {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    tasks: mpsc::Sender<Task>,
    options: QueueOptions,
}

impl SqliteQueue {
    /// Opens (creating if needed) the queue file at `path` and its connection thread.
    ///
    /// # Errors
    /// If the file cannot be opened or the schema cannot be created.
    pub async fn open(path: &Path, options: QueueOptions) -> Result<SqliteQueue, QueueError> {
        let (tasks, inbox) = mpsc::channel::<Task>();
        let (ready_tx, ready_rx) = oneshot::channel();
        let path = path.to_owned();
        let full_sync = options.sqlite_full_sync;
        std::thread::Builder::new()
            .name("offload-sqlite".to_owned())
            .spawn(move || {
                let mut conn = match connect(&path, full_sync) {
                    Ok(conn) => conn,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                let _ = ready_tx.send(Ok(()));
                // Ends when every handle (and so every sender) is dropped.
                while let Ok(first) = inbox.recv() {
                    let mut group = vec![first];
                    group.extend(inbox.try_iter().take(GROUP_COMMIT - 1));
                    run_group(&mut conn, group);
                }
            })
            .map_err(|e| QueueError::Corrupt(format!("cannot start the sqlite thread: {e}")))?;
        ready_rx.await.map_err(|_| QueueError::Closed)??;
        Ok(SqliteQueue {
            inner: Arc::new(Inner { tasks, options }),
        })
    }

    /// Runs `f` on the connection thread.
    async fn call<T, F>(&self, f: F) -> Result<T, QueueError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection, &QueueOptions) -> Result<T, rusqlite::Error> + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let inner = Arc::clone(&self.inner);
        let task: Task = Box::new(move |conn| {
            let out = f(conn, &inner.options);
            Box::new(move |committed: Result<(), String>| {
                let out = match (out, committed) {
                    (Ok(_), Err(e)) => Err(QueueError::Commit(e)),
                    (out, _) => out.map_err(QueueError::from),
                };
                let _ = tx.send(out);
            })
        });
        self.inner
            .tasks
            .send(task)
            .map_err(|_| QueueError::Closed)?;
        rx.await.map_err(|_| QueueError::Closed)?
    }
}

/// Runs a group of tasks in one transaction (each in its own savepoint), then replies.
fn run_group(conn: &mut Connection, group: Vec<Task>) {
    if group.len() == 1 || conn.execute_batch("BEGIN IMMEDIATE").is_err() {
        for task in group {
            task(conn)(Ok(()));
        }
        return;
    }
    let replies: Vec<Reply> = group.into_iter().map(|task| task(conn)).collect();
    let committed = conn.execute_batch("COMMIT").map_err(|e| e.to_string());
    if committed.is_err() {
        let _ = conn.execute_batch("ROLLBACK");
    }
    for reply in replies {
        reply(committed.clone());
    }
}

/// Opens the file, retrying while another process is creating it: switching a new file to
/// WAL can answer SQLITE_BUSY at once, without the busy handler (seen when a gateway and a
/// worker start together on a fresh file).
fn connect(path: &Path, full_sync: bool) -> Result<Connection, QueueError> {
    let end = std::time::Instant::now() + BUSY_TIMEOUT;
    loop {
        match connect_once(path, full_sync) {
            Err(QueueError::Sqlite(rusqlite::Error::SqliteFailure(e, _)))
                if matches!(
                    e.code,
                    rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked
                ) && std::time::Instant::now() < end =>
            {
                std::thread::sleep(Duration::from_millis(20));
            }
            other => return other,
        }
    }
}

fn connect_once(path: &Path, full_sync: bool) -> Result<Connection, QueueError> {
    let mut conn = Connection::open(path)?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    let mode: String = conn.query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(QueueError::Corrupt(format!(
            "{path:?} cannot use WAL (journal mode {mode})"
        )));
    }
    conn.pragma_update(
        None,
        "synchronous",
        if full_sync { "FULL" } else { "NORMAL" },
    )?;
    write(&mut conn, |c| c.execute_batch(SCHEMA))?;
    Ok(conn)
}

/// Runs `f` as one unit of work: its own `BEGIN IMMEDIATE` transaction, or a savepoint inside
/// the group commit the connection thread has open. `IMMEDIATE` takes the write lock up front,
/// so the busy timeout applies (a deferred transaction that reads then writes can fail at once
/// with `SQLITE_BUSY`).
fn write<T>(
    conn: &mut Connection,
    f: impl FnOnce(&Connection) -> Result<T, rusqlite::Error>,
) -> Result<T, rusqlite::Error> {
    if conn.is_autocommit() {
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let out = f(&tx)?;
        tx.commit()?;
        return Ok(out);
    }
    conn.execute_batch("SAVEPOINT unit")?;
    match f(conn) {
        Ok(out) => {
            conn.execute_batch("RELEASE unit")?;
            Ok(out)
        }
        Err(e) => {
            let _ = conn.execute_batch("ROLLBACK TO unit; RELEASE unit");
            Err(e)
        }
    }
}

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

fn now() -> i64 {
    now_ms() as i64
}

fn view(row: &rusqlite::Row<'_>) -> Result<JobView, rusqlite::Error> {
    let id: String = row.get(0)?;
    let status: String = row.get(1)?;
    let bad = |what: String| {
        rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, what.into())
    };
    Ok(JobView {
        id: JobId::parse(&id).map_err(|_| bad(format!("bad id {id:?}")))?,
        status: JobStatus::from_name(&status).ok_or_else(|| bad(format!("bad status {status}")))?,
        attempts: row.get(2)?,
        max_attempts: row.get(3)?,
        result: row.get(4)?,
        error: row.get(5)?,
        enqueued_at: row.get::<_, i64>(6)? as u64,
        started_at: row.get::<_, Option<i64>>(7)?.map(|t| t as u64),
        finished_at: row.get::<_, Option<i64>>(8)?.map(|t| t as u64),
    })
}

/// Marks one unfinished job finished: the backlog counter goes down by one.
fn finished(tx: &Connection, n: u64) -> Result<(), rusqlite::Error> {
    if n > 0 {
        tx.prepare_cached("UPDATE qmeta SET depth = max(depth - ?1, 0) WHERE id = 0")?
            .execute([n as i64])?;
    }
    Ok(())
}

impl JobQueue for SqliteQueue {
    async fn enqueue(&self, job: NewJob) -> Result<JobId, EnqueueError> {
        let out = self
            .call(move |conn, opts| {
                write(conn, |tx| {
                    let cap = i64::try_from(opts.max_backlog).unwrap_or(i64::MAX);
                    let room = tx
                        .prepare_cached(
                            "UPDATE qmeta SET depth = depth + 1 WHERE id = 0 AND depth < ?1",
                        )?
                        .execute([cap])?;
                    if room == 0 {
                        let depth: i64 =
                            tx.query_row("SELECT depth FROM qmeta WHERE id = 0", [], |r| r.get(0))?;
                        return Ok(Err(depth as u64));
                    }
                    let id = JobId::random();
                    let t = now();
                    tx.prepare_cached(
                        "INSERT INTO jobs (id, status, payload, max_attempts, enqueued_at, run_at) \
                         VALUES (?1, 'queued', ?2, ?3, ?4, ?4)",
                    )?
                    .execute(params![
                        id.as_str(),
                        job.payload,
                        job.max_attempts.unwrap_or(opts.max_attempts).max(1),
                        t
                    ])?;
                    Ok(Ok(id))
                })
            })
            .await?;
        out.map_err(EnqueueError::Full)
    }

    async fn get(&self, id: &JobId) -> Result<Option<JobView>, QueueError> {
        let id = id.clone();
        self.call(move |conn, opts| {
            let cutoff = now() - ms(opts.retention);
            conn.prepare_cached(&format!(
                "SELECT {VIEW_COLUMNS} FROM jobs WHERE id = ?1 \
                 AND (finished_at IS NULL OR finished_at >= ?2)"
            ))?
            .query_row(params![id.as_str(), cutoff], view)
            .optional()
        })
        .await
    }

    async fn claim(
        &self,
        worker: &WorkerId,
        lease: Duration,
        _wait: Duration,
    ) -> Result<Option<Claimed>, QueueError> {
        let worker = worker.as_str().to_owned();
        self.call(move |conn, _| {
            let token = lease_token();
            let t = now();
            write(conn, |tx| {
                let claimed = tx
                    .prepare_cached(
                        "UPDATE jobs SET status = 'running', attempts = attempts + 1, lease = ?1, \
                         lease_until = ?2, started_at = ?3, worker = ?4 \
                         WHERE id = (SELECT id FROM jobs WHERE status = 'queued' AND run_at <= ?3 \
                                     ORDER BY run_at, seq LIMIT 1) \
                         RETURNING id, payload, attempts, max_attempts",
                    )?
                    .query_row(params![token, t + ms(lease), t, worker], |r| {
                        Ok((r.get::<_, String>(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
                    })
                    .optional()?;
                Ok(claimed.and_then(|(id, payload, attempt, max_attempts)| {
                    Some(Claimed {
                        id: JobId::parse(&id).ok()?,
                        payload,
                        attempt,
                        max_attempts,
                        token,
                        entry: String::new(),
                        consumer: String::new(),
                    })
                }))
            })
        })
        .await
    }

    async fn heartbeat(&self, job: &Claimed, lease: Duration) -> Result<bool, QueueError> {
        let (id, token) = (job.id.clone(), job.token.clone());
        self.call(move |conn, _| {
            write(conn, |tx| {
                let n = tx
                    .prepare_cached(
                        "UPDATE jobs SET lease_until = ?1 \
                         WHERE id = ?2 AND lease = ?3 AND status = 'running'",
                    )?
                    .execute(params![now() + ms(lease), id.as_str(), token])?;
                Ok(n == 1)
            })
        })
        .await
    }

    async fn complete(
        &self,
        job: &Claimed,
        outcome: Result<String, JobError>,
    ) -> Result<Completion, QueueError> {
        let (id, token) = (job.id.clone(), job.token.clone());
        self.call(move |conn, opts| {
            let t = now();
            write(conn, |tx| {
                let held: Option<(u32, u32)> = tx
                    .prepare_cached(
                        "SELECT attempts, max_attempts FROM jobs \
                         WHERE id = ?1 AND lease = ?2 AND status = 'running'",
                    )?
                    .query_row(params![id.as_str(), token], |r| Ok((r.get(0)?, r.get(1)?)))
                    .optional()?;
                let Some((attempts, max_attempts)) = held else {
                    return Ok(Completion::Refused);
                };
                let done = match outcome {
                    Ok(result) => {
                        tx.prepare_cached(
                            "UPDATE jobs SET status = 'done', result = ?1, error = NULL, \
                             finished_at = ?2, lease = NULL, lease_until = NULL WHERE id = ?3",
                        )?
                        .execute(params![result, t, id.as_str()])?;
                        finished(tx, 1)?;
                        Completion::Done
                    }
                    Err(e) if e.retry && attempts < max_attempts => {
                        let delay = backoff(attempts, opts.retry_base, opts.retry_max);
                        tx.prepare_cached(
                            "UPDATE jobs SET status = 'queued', error = ?1, run_at = ?2, \
                             lease = NULL, lease_until = NULL WHERE id = ?3",
                        )?
                        .execute(params![
                            e.message,
                            t + ms(delay),
                            id.as_str()
                        ])?;
                        Completion::Retrying
                    }
                    Err(e) => {
                        tx.prepare_cached(
                            "UPDATE jobs SET status = 'failed', error = ?1, finished_at = ?2, \
                             lease = NULL, lease_until = NULL WHERE id = ?3",
                        )?
                        .execute(params![e.message, t, id.as_str()])?;
                        finished(tx, 1)?;
                        Completion::Failed
                    }
                };
                Ok(done)
            })
        })
        .await
    }

    async fn release(&self, job: &Claimed) -> Result<bool, QueueError> {
        let (id, token) = (job.id.clone(), job.token.clone());
        self.call(move |conn, _| {
            write(conn, |tx| {
                let n = tx
                    .prepare_cached(
                        "UPDATE jobs SET status = 'queued', attempts = max(attempts - 1, 0), \
                         run_at = ?1, lease = NULL, lease_until = NULL \
                         WHERE id = ?2 AND lease = ?3 AND status = 'running'",
                    )?
                    .execute(params![now(), id.as_str(), token])?;
                Ok(n == 1)
            })
        })
        .await
    }

    async fn reap(&self) -> Result<u64, QueueError> {
        /// Expired leases go back to `queued`, or to `failed` once attempts are spent.
        const REAP: &str = "UPDATE jobs SET \
            status = CASE WHEN attempts >= max_attempts THEN 'failed' ELSE 'queued' END, \
            error = 'lease expired (worker died or hung) on attempt ' || attempts \
                    || ' of ' || max_attempts, \
            finished_at = CASE WHEN attempts >= max_attempts THEN ?1 END, \
            run_at = ?1, lease = NULL, lease_until = NULL \
            WHERE status = 'running' AND lease_until < ?1 \
            RETURNING status";
        self.call(move |conn, _| {
            let t = now();
            write(conn, |tx| {
                let statuses = tx
                    .prepare_cached(REAP)?
                    .query_map([t], |r| r.get::<_, String>(0))?
                    .collect::<Result<Vec<_>, _>>()?;
                let failed = statuses.iter().filter(|s| *s == "failed").count() as u64;
                finished(tx, failed)?;
                Ok(statuses.len() as u64)
            })
        })
        .await
    }

    async fn prune(&self) -> Result<u64, QueueError> {
        self.call(move |conn, opts| {
            write(conn, |tx| {
                let n = tx
                    .prepare_cached(
                        "DELETE FROM jobs WHERE finished_at IS NOT NULL AND finished_at < ?1 \
                         AND status IN ('done', 'failed')",
                    )?
                    .execute([now() - ms(opts.retention)])?;
                Ok(n as u64)
            })
        })
        .await
    }

    async fn counts(&self) -> Result<Counts, QueueError> {
        self.call(move |conn, opts| {
            let mut counts = Counts::default();
            let mut stmt = conn.prepare_cached(
                "SELECT status, count(*) FROM jobs \
                 WHERE finished_at IS NULL OR finished_at >= ?1 GROUP BY status",
            )?;
            let rows = stmt.query_map([now() - ms(opts.retention)], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)? as u64))
            })?;
            for row in rows {
                let (status, n) = row?;
                match JobStatus::from_name(&status) {
                    Some(JobStatus::Queued) => counts.queued = n,
                    Some(JobStatus::Running) => counts.running = n,
                    Some(JobStatus::Done) => counts.done = n,
                    Some(JobStatus::Failed) => counts.failed = n,
                    None => {}
                }
            }
            Ok(counts)
        })
        .await
    }

    async fn recent_done(&self, limit: usize) -> Result<Vec<JobView>, QueueError> {
        self.call(move |conn, _| {
            conn.prepare_cached(&format!(
                "SELECT {VIEW_COLUMNS} FROM jobs WHERE status = 'done' ORDER BY finished_at DESC LIMIT ?1"
            ))?
            .query_map([limit as i64], view)?
            .collect::<Result<Vec<_>, _>>()
        })
        .await
    }
}
