//! The embedded backend: one SQLite file (WAL) shared by the gateway and worker processes of a
//! host. rusqlite is synchronous, so each handle owns one connection on a dedicated thread and
//! async callers send it closures; every write is one short `BEGIN IMMEDIATE` transaction.

use std::path::Path;
use std::sync::{Arc, mpsc};
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, params};
use tokio::sync::oneshot;

use super::latency::{self, Latency, MAX_LABELS, OTHER};
use super::types::{lease_token, now_ms};
use super::{
    Cancel, Claimed, Completion, Counts, Cursor, EnqueueError, JobError, JobId, JobPage, JobQueue,
    JobStatus, JobView, ListFilter, MAX_PAGE, MAX_PRIORITY, NewJob, PRIORITY_STEP, QueueError,
    QueueOptions, Retry, WorkerId, backoff,
};

/// How long a writer waits for another process's transaction: long enough that workers never die
/// on "database is locked" under load (5 s was seen to be too short with 5 processes).
const BUSY_TIMEOUT: Duration = Duration::from_secs(30);
/// Prepared statements a connection keeps: more than the store has (each `prepare_cached`).
const STATEMENT_CACHE: usize = 64;

/// The schema; `qmeta.depth` counts unfinished jobs so that the backlog cap costs O(1) per enqueue
/// (a `count(*)` per insert cut enqueue rates several-fold), and `qmeta.done` / `qmeta.failed`
/// count finished jobs not yet pruned, so that counting them does not read every row.
/// `latency` is the enqueue-to-done histogram (see [`latency`]): jobs and the longest time per
/// label and bucket; `latency_labels` the labels it keeps, at most [`MAX_LABELS`].
const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS jobs (
    seq          INTEGER PRIMARY KEY, -- the rowid: FIFO order among jobs due in the same ms
    id           TEXT NOT NULL UNIQUE,
    status       TEXT NOT NULL,
    payload      TEXT NOT NULL,
    attempts     INTEGER NOT NULL DEFAULT 0,
    max_attempts INTEGER NOT NULL,
    stalls       INTEGER NOT NULL DEFAULT 0,
    max_stalls   INTEGER NOT NULL DEFAULT 10,
    result       TEXT,
    error        TEXT,
    enqueued_at  INTEGER NOT NULL,
    started_at   INTEGER,
    finished_at  INTEGER,
    run_at       INTEGER NOT NULL,
    lease        TEXT,
    lease_until  INTEGER,
    worker       TEXT,
    label        TEXT
);
CREATE INDEX IF NOT EXISTS jobs_lease ON jobs (lease_until) WHERE status = 'running';
CREATE INDEX IF NOT EXISTS jobs_ended ON jobs (status, finished_at) WHERE finished_at IS NOT NULL;
DROP INDEX IF EXISTS jobs_finished;
CREATE TABLE IF NOT EXISTS qmeta (id INTEGER PRIMARY KEY CHECK (id = 0), depth INTEGER NOT NULL,
    stalls INTEGER NOT NULL DEFAULT 0, done INTEGER NOT NULL DEFAULT 0,
    failed INTEGER NOT NULL DEFAULT 0);
INSERT OR IGNORE INTO qmeta (id, depth) VALUES (0, 0);
CREATE TABLE IF NOT EXISTS latency (label TEXT NOT NULL, bucket INTEGER NOT NULL,
    n INTEGER NOT NULL, max_ms INTEGER NOT NULL, PRIMARY KEY (label, bucket)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS latency_labels (label TEXT PRIMARY KEY) WITHOUT ROWID;
";

/// Columns added since the first release: a file made by an older offload gets them on open,
/// followed by the statement that fills them in, if any.
const ADDED_COLUMNS: [(&str, &str, &str, &str); 13] = [
    ("jobs", "stalls", "INTEGER NOT NULL DEFAULT 0", ""),
    ("jobs", "max_stalls", "INTEGER NOT NULL DEFAULT 10", ""),
    ("qmeta", "stalls", "INTEGER NOT NULL DEFAULT 0", ""),
    ("jobs", "label", "TEXT", ""),
    (
        "qmeta",
        "done",
        "INTEGER NOT NULL DEFAULT 0",
        "UPDATE qmeta SET done = (SELECT count(*) FROM jobs WHERE status = 'done')",
    ),
    (
        "qmeta",
        "failed",
        "INTEGER NOT NULL DEFAULT 0",
        "UPDATE qmeta SET failed = (SELECT count(*) FROM jobs WHERE status = 'failed')",
    ),
    ("qmeta", "cancelled", "INTEGER NOT NULL DEFAULT 0", ""),
    ("qmeta", "expired", "INTEGER NOT NULL DEFAULT 0", ""),
    ("jobs", "key", "TEXT", ""),
    ("jobs", "expires_at", "INTEGER", ""),
    ("jobs", "priority", "INTEGER NOT NULL DEFAULT 0", ""),
    // The claim order: the due time, pushed back by priority (see `PRIORITY_STEP`). Computed,
    // so every statement that sets `run_at` keeps it right; indexed in `jobs_rank`.
    (
        "jobs",
        "rank",
        "INTEGER GENERATED ALWAYS AS (run_at + priority * 1000) VIRTUAL",
        "",
    ),
    // The W3C traceparent of what stored the job.
    ("jobs", "trace", "TEXT", ""),
];

/// Indexes on added columns, made once the columns are there. `jobs_key`: one job per key,
/// which is what makes a keyed enqueue atomic even against another process. `jobs_expiring`:
/// the queued jobs that have a deadline, so the sweep that expires them reads only those.
const ADDED_INDEXES: &str = "
CREATE INDEX IF NOT EXISTS jobs_rank ON jobs (status, rank);
-- Replaced by jobs_rank (files made before it had both).
DROP INDEX IF EXISTS jobs_due;
CREATE UNIQUE INDEX IF NOT EXISTS jobs_key ON jobs (key) WHERE key IS NOT NULL;
CREATE INDEX IF NOT EXISTS jobs_expiring ON jobs (expires_at)
    WHERE status = 'queued' AND expires_at IS NOT NULL;
";

/// Most queued jobs one sweep expires: the sweep runs with every claim, which stays short.
const MAX_EXPIRE: i64 = 1000;

/// The error an expired job carries.
const EXPIRED: &str = "expired: its deadline passed before it finished";

const VIEW_COLUMNS: &str = "id, status, attempts, max_attempts, result, error, enqueued_at, \
                            started_at, finished_at, stalls, max_stalls, expires_at, priority, label";

/// The greatest handicap in the claim order: [`MAX_PRIORITY`] × [`PRIORITY_STEP`], in ms (the
/// `rank` column's expression writes the step, 1,000 ms, as a literal).
const MAX_HANDICAP_MS: i64 = MAX_PRIORITY as i64 * PRIORITY_STEP.as_millis() as i64;

/// Work for the connection thread. It runs at once and returns the reply, which the thread sends
/// only after the group commit holding the work has committed (or failed: the reply says so).
type Task = Box<dyn FnOnce(&mut Connection) -> Reply + Send>;
type Reply = Box<dyn FnOnce(Result<(), String>) + Send>;

/// Most jobs one claim takes: a batch a few milliseconds long even for tiny jobs, and a
/// bounded `RETURNING` set.
const MAX_CLAIM: usize = 256;

/// Without a file-change wake-up (not Linux, or inotify refused), idle claims look again this
/// often: the old poll's ceiling.
const FALLBACK_POLL: Duration = Duration::from_millis(100);

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
    /// Ticks on every write to the file by any process: an idle claim waits on it.
    wake: Option<super::wake::FileWake>,
}

impl SqliteQueue {
    /// Opens (creating if needed) the queue file at `path` and its connection thread.
    ///
    /// # Errors
    /// If the file cannot be opened or the schema cannot be created.
    pub async fn open(path: &Path, options: QueueOptions) -> Result<SqliteQueue, QueueError> {
        let (tasks, inbox) = mpsc::channel::<Task>();
        let (ready_tx, ready_rx) = oneshot::channel();
        let db_path = path;
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
            .map_err(|e| QueueError::Thread(e.to_string()))?;
        ready_rx.await.map_err(|_| QueueError::Closed)??;
        let wake = match super::wake::FileWake::watch(&wal_path(db_path)) {
            Ok(w) => Some(w),
            Err(e) => {
                tracing::warn!(error = %e, "no file-change wake-up; idle workers poll every 100 ms");
                None
            }
        };
        Ok(SqliteQueue {
            inner: Arc::new(Inner {
                tasks,
                options,
                wake,
            }),
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
    if group.len() == 1 || exec(conn, "BEGIN IMMEDIATE").is_err() {
        for task in group {
            task(conn)(Ok(()));
        }
        return;
    }
    let replies: Vec<Reply> = group.into_iter().map(|task| task(conn)).collect();
    let committed = exec(conn, "COMMIT").map_err(|e| e.to_string());
    if committed.is_err() {
        let _ = exec(conn, "ROLLBACK");
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
    // One plan per statement, whatever its bound values: without it the bundled SQLite (built
    // with STAT4) marks a statement whose range bounds a bound parameter (`run_at <= ?`,
    // `expires_at <= ?`) as expired whenever the value changes, and prepares it again on the
    // next step: the claim and the expiry sweep were re-prepared about once per 16 jobs, a
    // tenth of the worker's instructions per job (callgrind, 2026-12-08). The plans are fixed
    // by the indexes anyway (`INDEXED BY` where it matters).
    conn.set_db_config(
        rusqlite::config::DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG,
        true,
    )?;
    // Every statement the store runs stays prepared: there are about 36, past rusqlite's
    // default of 16, so the worker's loop evicted and prepared some of them again each round.
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
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
    write(&mut conn, |c| {
        c.execute_batch(SCHEMA)?;
        for (table, column, decl, fill) in ADDED_COLUMNS {
            let present: bool = c.query_row(
                // `xinfo`: generated columns too.
                &format!("SELECT count(*) > 0 FROM pragma_table_xinfo('{table}') WHERE name = ?1"),
                [column],
                |r| r.get(0),
            )?;
            if !present {
                c.execute_batch(&format!("ALTER TABLE {table} ADD COLUMN {column} {decl}"))?;
                c.execute_batch(fill)?;
            }
        }
        c.execute_batch(ADDED_INDEXES)?;
        Ok(())
    })?;
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
        exec(conn, "BEGIN IMMEDIATE")?;
        let out = f(conn).and_then(|out| exec(conn, "COMMIT").map(|()| out));
        if out.is_err() && !conn.is_autocommit() {
            let _ = exec(conn, "ROLLBACK");
        }
        return out;
    }
    exec(conn, "SAVEPOINT unit")?;
    match f(conn) {
        Ok(out) => {
            exec(conn, "RELEASE unit")?;
            Ok(out)
        }
        Err(e) => {
            let _ = exec(conn, "ROLLBACK TO unit");
            let _ = exec(conn, "RELEASE unit");
            Err(e)
        }
    }
}

/// Runs one statement that returns no rows, prepared once per connection: the transaction
/// and savepoint statements run around every job stored or finished, and `execute_batch`
/// would parse them each time (a small saving: callgrind put most of `execute_batch`'s
/// instructions in the schema at start-up).
fn exec(conn: &Connection, sql: &str) -> Result<(), rusqlite::Error> {
    conn.prepare_cached(sql)?.execute([])?;
    Ok(())
}

/// Runs `f`'s reads on one snapshot: a deferred (read) transaction of its own, or the group
/// commit's transaction if one is open. Several statements answered together then agree (a job
/// is never both running and done in one reading).
fn read<T>(
    conn: &mut Connection,
    f: impl FnOnce(&Connection) -> Result<T, rusqlite::Error>,
) -> Result<T, rusqlite::Error> {
    if conn.is_autocommit() {
        let tx = conn.transaction()?;
        let out = f(&tx)?;
        tx.commit()?;
        return Ok(out);
    }
    f(conn)
}

/// The WAL file beside the database: in WAL mode every commit by any process writes it.
fn wal_path(db: &Path) -> std::path::PathBuf {
    let mut name = db.as_os_str().to_owned();
    name.push("-wal");
    name.into()
}

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

fn now() -> i64 {
    now_ms() as i64
}

/// The latest enqueue time this process has stored, in ms.
static LAST_ENQUEUE_MS: std::sync::atomic::AtomicI64 = std::sync::atomic::AtomicI64::new(0);

/// An enqueue time that never goes back within this process: jobs are claimed by `run_at`,
/// then in the order stored, so a wall clock stepped back (NTP, a VM's clock) between two
/// enqueues would otherwise let the later job be claimed first.
fn enqueue_time() -> i64 {
    let t = now();
    LAST_ENQUEUE_MS
        .fetch_max(t, std::sync::atomic::Ordering::Relaxed)
        .max(t)
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
        stalls: row.get(9)?,
        max_stalls: row.get(10)?,
        expires_at: row.get::<_, Option<i64>>(11)?.map(|t| t.max(0) as u64),
        priority: row.get(12)?,
        label: row.get(13)?,
    })
}

/// Ends the queued jobs whose deadline has passed (at most [`MAX_EXPIRE`]) as `expired`,
/// before any claim can take them; answers how many.
fn expire_due(tx: &Connection, t: i64) -> Result<u64, rusqlite::Error> {
    let n = tx
        .prepare_cached(
            // Named: without statistics the planner may pick the status index and read every
            // queued job, on every claim.
            "UPDATE jobs SET status = 'expired', error = ?2, finished_at = ?1 \
             WHERE seq IN (SELECT seq FROM jobs INDEXED BY jobs_expiring \
                           WHERE status = 'queued' AND expires_at IS NOT NULL \
                           AND expires_at <= ?1 LIMIT ?3)",
        )?
        .execute(params![t, EXPIRED, MAX_EXPIRE])? as u64;
    if n > 0 {
        tx.prepare_cached(
            "UPDATE qmeta SET depth = max(depth - ?1, 0), expired = expired + ?1 WHERE id = 0",
        )?
        .execute([n as i64])?;
    }
    Ok(n)
}

/// What a keyed enqueue found under its key.
enum Keyed {
    /// No job within its retention holds the key: store the new job.
    Free,
    /// The job stored under the key, with the same payload: answer its id.
    Same(JobId),
    /// A job with a different payload holds the key.
    Other(JobId),
}

/// Looks up `key` for an enqueue of `payload`. A job past its retention that still holds the
/// key (not yet pruned) gives it up.
fn keyed(tx: &Connection, key: &str, payload: &str, cutoff: i64) -> Result<Keyed, rusqlite::Error> {
    let held: Option<(String, String, Option<i64>)> = tx
        .prepare_cached("SELECT id, payload, finished_at FROM jobs WHERE key = ?1")?
        .query_row([key], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .optional()?;
    let Some((id, stored, finished_at)) = held else {
        return Ok(Keyed::Free);
    };
    if finished_at.is_some_and(|f| f < cutoff) {
        tx.prepare_cached("UPDATE jobs SET key = NULL WHERE key = ?1")?
            .execute([key])?;
        return Ok(Keyed::Free);
    }
    let id = JobId::parse(&id).map_err(|_| {
        rusqlite::Error::FromSqlConversionFailure(
            0,
            rusqlite::types::Type::Text,
            format!("bad id {id:?}").into(),
        )
    })?;
    Ok(if stored == payload {
        Keyed::Same(id)
    } else {
        Keyed::Other(id)
    })
}

/// Marks unfinished jobs finished, `done` of them done and `failed` failed: the backlog counter
/// goes down, the finished counters up.
fn finished(tx: &Connection, done: u64, failed: u64) -> Result<(), rusqlite::Error> {
    if done + failed > 0 {
        tx.prepare_cached(
            "UPDATE qmeta SET depth = max(depth - ?1 - ?2, 0), done = done + ?1, \
             failed = failed + ?2 WHERE id = 0",
        )?
        .execute([done as i64, failed as i64])?;
    }
    Ok(())
}

/// What a batch of completions adds to the queue's counts and its histogram, written once for
/// the batch ([`Tally::write`]) rather than once per job: a worker's batch holds the jobs that
/// ended while the previous one was being written.
#[derive(Debug, Default)]
struct Tally {
    done: u64,
    failed: u64,
    /// Each job done: its label and its enqueue-to-done time, ms.
    latencies: Vec<(Option<String>, i64)>,
}

impl Tally {
    /// Counts the jobs ended and adds their times to the histogram: one update of `qmeta`,
    /// and one of `latency` per label and bucket.
    fn write(self, tx: &Connection) -> Result<(), rusqlite::Error> {
        finished(tx, self.done, self.failed)?;
        let mut cells: std::collections::BTreeMap<(String, u32), (i64, i64)> =
            std::collections::BTreeMap::new();
        for (label, ms) in self.latencies {
            let label = match label.as_deref() {
                None | Some("") => "",
                Some(label) => kept_label(tx, label)?,
            };
            let cell = cells
                .entry((label.to_owned(), latency::bucket(ms)))
                .or_insert((0, 0));
            *cell = (cell.0 + 1, cell.1.max(ms.max(0)));
        }
        for ((label, bucket), (n, max_ms)) in cells {
            record_latency(tx, &label, bucket, n, max_ms)?;
        }
        Ok(())
    }
}

/// Counts `n` jobs done in the histogram's `bucket` under `label`, the longest `max_ms`.
fn record_latency(
    tx: &Connection,
    label: &str,
    bucket: u32,
    n: i64,
    max_ms: i64,
) -> Result<(), rusqlite::Error> {
    tx.prepare_cached(
        "INSERT INTO latency (label, bucket, n, max_ms) VALUES (?1, ?2, ?3, ?4) \
         ON CONFLICT (label, bucket) DO UPDATE SET n = n + excluded.n, \
         max_ms = max(max_ms, excluded.max_ms)",
    )?
    .execute(params![label, bucket, n, max_ms])?;
    Ok(())
}

/// `label` if the histogram keeps it (or has room for it: then it is kept from now on),
/// otherwise [`OTHER`].
fn kept_label<'a>(tx: &Connection, label: &'a str) -> Result<&'a str, rusqlite::Error> {
    let known: bool = tx
        .prepare_cached("SELECT EXISTS (SELECT 1 FROM latency_labels WHERE label = ?1)")?
        .query_row([label], |r| r.get(0))?;
    if known {
        return Ok(label);
    }
    let kept: i64 = tx
        .prepare_cached("SELECT count(*) FROM latency_labels")?
        .query_row([], |r| r.get(0))?;
    if kept >= MAX_LABELS as i64 {
        return Ok(OTHER);
    }
    tx.prepare_cached("INSERT INTO latency_labels (label) VALUES (?1)")?
        .execute([label])?;
    Ok(label)
}

/// A job's status, `None` for an unknown id or one finished before `cutoff` (past its
/// retention), as [`JobQueue::get`] would answer it.
fn status_now(
    tx: &Connection,
    id: &JobId,
    cutoff: i64,
) -> Result<Option<JobStatus>, rusqlite::Error> {
    let status: Option<String> = tx
        .prepare_cached(
            "SELECT status FROM jobs WHERE id = ?1 \
             AND (finished_at IS NULL OR finished_at >= ?2)",
        )?
        .query_row(params![id.as_str(), cutoff], |r| r.get(0))
        .optional()?;
    Ok(status.as_deref().and_then(JobStatus::from_name))
}

/// Claims up to `max` due jobs in one unit of work, under one lease token (a token names one
/// claim; each row also carries its id, so `(id, token)` names one holder of one job). Also
/// answers, when nothing was due, how long until the next retry falls due.
fn claim_due(
    conn: &mut Connection,
    worker: &str,
    lease: Duration,
    max: usize,
) -> Result<(Vec<Claimed>, Option<Duration>), rusqlite::Error> {
    let token = lease_token();
    let t = now();
    write(conn, |tx| {
        expire_due(tx, t)?;
        let jobs = tx
            .prepare_cached(
                "UPDATE jobs SET status = 'running', attempts = attempts + 1, lease = ?1, \
                 lease_until = ?2, started_at = ?3, worker = ?4 \
                 WHERE seq IN (SELECT seq FROM jobs WHERE status = 'queued' AND run_at <= ?3 \
                               ORDER BY rank, seq LIMIT ?5) \
                 RETURNING id, payload, attempts, max_attempts, rank, seq, expires_at, trace",
            )?
            .query_map(params![token, t + ms(lease), t, worker, max as i64], |r| {
                Ok((
                    (
                        r.get::<_, String>(0)?,
                        r.get::<_, String>(1)?,
                        r.get(2)?,
                        r.get(3)?,
                    ),
                    (r.get::<_, i64>(4)?, r.get::<_, i64>(5)?),
                    r.get::<_, Option<i64>>(6)?,
                    r.get::<_, Option<String>>(7)?,
                ))
            })?
            .collect::<Result<Vec<_>, _>>()?;
        let mut jobs: Vec<_> = jobs
            .into_iter()
            .filter_map(
                |((id, payload, attempt, max_attempts), order, expires_at, trace)| {
                    let job = Claimed {
                        id: JobId::parse(&id).ok()?,
                        payload,
                        attempt,
                        max_attempts,
                        expires_at: expires_at.map(|e| e.max(0) as u64),
                        trace: trace.as_deref().and_then(crate::TraceParent::parse),
                        token: token.clone(),
                        row: order.1,
                        entry: String::new(),
                        consumer: String::new(),
                    };
                    Some((order, job))
                },
            )
            .collect();
        // RETURNING gives no order; hand the jobs out oldest first.
        jobs.sort_by_key(|(order, _)| *order);
        let next_due = if jobs.is_empty() {
            // The earliest due time is within the greatest handicap of the first rank.
            tx.prepare_cached(
                "SELECT min(run_at) FROM jobs WHERE status = 'queued' \
                 AND rank <= (SELECT min(rank) FROM jobs WHERE status = 'queued') + ?1",
            )?
            .query_row([MAX_HANDICAP_MS], |r| r.get::<_, Option<i64>>(0))?
            .map(|due| Duration::from_millis((due - t).max(0) as u64))
        } else {
            None
        };
        Ok((jobs.into_iter().map(|(_, job)| job).collect(), next_due))
    })
}

/// Stores one run's outcome, if `job` still holds its lease.
fn complete_one(
    tx: &Connection,
    opts: &QueueOptions,
    t: i64,
    job: &Claimed,
    outcome: Result<String, JobError>,
    tally: &mut Tally,
) -> Result<Completion, rusqlite::Error> {
    // Found by its row, not its id: the rowid is the table's own key, and the id would cost
    // a search of its index first (the lease's token still names the job exactly).
    let id = job.row;
    /// Attempts, max attempts, enqueue time, label and deadline of a job still held.
    type Held = (u32, u32, i64, Option<String>, Option<i64>);
    let held: Option<Held> = tx
        .prepare_cached(
            "SELECT attempts, max_attempts, enqueued_at, label, expires_at FROM jobs \
             WHERE seq = ?1 AND lease = ?2 AND status = 'running'",
        )?
        .query_row(params![id, job.token], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
        })
        .optional()?;
    let Some((attempts, max_attempts, enqueued_at, label, expires_at)) = held else {
        return Ok(Completion::Refused);
    };
    Ok(match outcome {
        // A run that failed at or past its deadline (stopped there, or too late to retry)
        // ends the job as expired.
        Err(e) if expires_at.is_some_and(|d| t >= d) => {
            tx.prepare_cached(
                "UPDATE jobs SET status = 'expired', error = ?1, finished_at = ?2, \
                 lease = NULL, lease_until = NULL WHERE seq = ?3",
            )?
            .execute(params![
                format!("{EXPIRED} (last run: {})", e.message),
                t,
                id
            ])?;
            tx.prepare_cached(
                "UPDATE qmeta SET depth = max(depth - 1, 0), expired = expired + 1 WHERE id = 0",
            )?
            .execute([])?;
            Completion::Expired
        }
        Ok(result) => {
            tx.prepare_cached(
                "UPDATE jobs SET status = 'done', result = ?1, error = NULL, \
                 finished_at = ?2, lease = NULL, lease_until = NULL WHERE seq = ?3",
            )?
            .execute(params![result, t, id])?;
            tally.done += 1;
            tally.latencies.push((label, t - enqueued_at));
            Completion::Done
        }
        Err(e) if e.retry && attempts < max_attempts => {
            let delay = backoff(attempts, opts.retry_base, opts.retry_max);
            tx.prepare_cached(
                "UPDATE jobs SET status = 'queued', error = ?1, run_at = ?2, \
                 lease = NULL, lease_until = NULL WHERE seq = ?3",
            )?
            .execute(params![e.message, t + ms(delay), id])?;
            Completion::Retrying
        }
        Err(e) => {
            tx.prepare_cached(
                "UPDATE jobs SET status = 'failed', error = ?1, finished_at = ?2, \
                 lease = NULL, lease_until = NULL WHERE seq = ?3",
            )?
            .execute(params![e.message, t, id])?;
            tally.failed += 1;
            Completion::Failed
        }
    })
}

impl JobQueue for SqliteQueue {
    async fn enqueue(&self, job: NewJob) -> Result<JobId, EnqueueError> {
        let (mut ids, refused) = self.enqueue_prefix(vec![job]).await;
        match (ids.pop(), refused) {
            (Some(id), None) => Ok(id),
            (_, Some(e)) => Err(e),
            (None, None) => unreachable!("one job is either stored or refused"),
        }
    }

    async fn enqueue_prefix(&self, jobs: Vec<NewJob>) -> (Vec<JobId>, Option<EnqueueError>) {
        let out = self
            .call(move |conn, opts| {
                write(conn, |tx| {
                    let cap = i64::try_from(opts.max_backlog).unwrap_or(i64::MAX);
                    let cutoff = now() - ms(opts.retention);
                    let mut ids = Vec::with_capacity(jobs.len());
                    for job in jobs {
                        if let Some(key) = &job.key {
                            match keyed(tx, key.as_str(), &job.payload, cutoff)? {
                                Keyed::Free => {}
                                Keyed::Same(id) => {
                                    ids.push(id);
                                    continue;
                                }
                                Keyed::Other(id) => {
                                    return Ok((ids, Some(EnqueueError::KeyReused(id))));
                                }
                            }
                        }
                        let room = tx
                            .prepare_cached(
                                "UPDATE qmeta SET depth = depth + 1 WHERE id = 0 AND depth < ?1",
                            )?
                            .execute([cap])?;
                        if room == 0 {
                            let depth: i64 =
                                tx.query_row("SELECT depth FROM qmeta WHERE id = 0", [], |r| {
                                    r.get(0)
                                })?;
                            return Ok((ids, Some(EnqueueError::Full(depth as u64))));
                        }
                        let id = JobId::random();
                        let t = enqueue_time();
                        tx.prepare_cached(
                            "INSERT INTO jobs (id, status, payload, max_attempts, max_stalls, \
                             enqueued_at, run_at, label, key, expires_at, priority, trace) \
                             VALUES (?1, 'queued', ?2, ?3, ?4, ?5, max(?5, ?9), ?6, ?7, ?8, \
                             ?10, ?11)",
                        )?
                        .execute(params![
                            id.as_str(),
                            job.payload,
                            job.max_attempts.unwrap_or(opts.max_attempts).max(1),
                            opts.max_stalls.max(1),
                            t,
                            job.label,
                            job.key.as_ref().map(|k| k.as_str()),
                            job.expires_at.map(|e| i64::try_from(e).unwrap_or(i64::MAX)),
                            job.run_at
                                .map_or(0, |r| i64::try_from(r).unwrap_or(i64::MAX)),
                            job.priority.min(MAX_PRIORITY),
                            job.trace.as_ref().map(|t| t.as_str()),
                        ])?;
                        ids.push(id);
                    }
                    Ok((ids, None))
                })
            })
            .await;
        match out {
            Ok((ids, refused)) => (ids, refused),
            Err(e) => (Vec::new(), Some(EnqueueError::Queue(e))),
        }
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

    async fn claim_batch(
        &self,
        worker: &WorkerId,
        lease: Duration,
        max: usize,
        wait: Duration,
    ) -> Result<Vec<Claimed>, QueueError> {
        let max = max.clamp(1, MAX_CLAIM);
        // The wake-up is subscribed to only when a look finds nothing, and then the next look
        // comes after the subscription, so a job stored between a look and the wait still
        // wakes us; a worker that finds jobs (under load, every claim) never watches the file.
        let mut woken = None;
        let end = tokio::time::Instant::now() + wait;
        loop {
            let worker = worker.as_str().to_owned();
            let (jobs, next_due) = self
                .call(move |conn, _| claim_due(conn, &worker, lease, max))
                .await?;
            let now = tokio::time::Instant::now();
            if !jobs.is_empty() || now >= end {
                return Ok(jobs);
            }
            if woken.is_none()
                && let Some(wake) = &self.inner.wake
            {
                match wake.subscribe() {
                    Ok(sub) => {
                        woken = Some(sub);
                        continue;
                    }
                    Err(e) => crate::log::throttled!(
                        "sqlite_wake_failed",
                        warn,
                        error = %e,
                        "cannot watch the queue's folder; this wait polls"
                    ),
                }
            }
            // Wait for a write to the file (another process stored something), the next retry
            // falling due, or the end of `wait`; without a wake-up, a short poll stands in.
            let until = next_due.map_or(end, |d| (now + d).min(end));
            match woken.as_mut() {
                Some(sub) => {
                    let _ = tokio::time::timeout_at(until, sub.changed()).await;
                }
                None => tokio::time::sleep_until(until.min(now + FALLBACK_POLL)).await,
            }
        }
    }

    async fn heartbeat(&self, job: &Claimed, lease: Duration) -> Result<bool, QueueError> {
        let (row, token) = (job.row, job.token.clone());
        self.call(move |conn, _| {
            write(conn, |tx| {
                let n = tx
                    .prepare_cached(
                        "UPDATE jobs SET lease_until = ?1 \
                         WHERE seq = ?2 AND lease = ?3 AND status = 'running'",
                    )?
                    .execute(params![now() + ms(lease), row, token])?;
                Ok(n == 1)
            })
        })
        .await
    }

    async fn complete_batch(
        &self,
        outcomes: Vec<(Claimed, Result<String, JobError>)>,
    ) -> Result<Vec<Completion>, QueueError> {
        self.call(move |conn, opts| {
            let t = now();
            write(conn, |tx| {
                let mut tally = Tally::default();
                let completions = outcomes
                    .into_iter()
                    .map(|(job, outcome)| complete_one(tx, opts, t, &job, outcome, &mut tally))
                    .collect::<Result<Vec<_>, _>>()?;
                tally.write(tx)?;
                Ok(completions)
            })
        })
        .await
    }

    async fn release(&self, job: &Claimed) -> Result<bool, QueueError> {
        let (row, token) = (job.row, job.token.clone());
        self.call(move |conn, _| {
            write(conn, |tx| {
                let n = tx
                    .prepare_cached(
                        "UPDATE jobs SET status = 'queued', attempts = max(attempts - 1, 0), \
                         run_at = ?1, lease = NULL, lease_until = NULL \
                         WHERE seq = ?2 AND lease = ?3 AND status = 'running'",
                    )?
                    .execute(params![now(), row, token])?;
                Ok(n == 1)
            })
        })
        .await
    }

    async fn reap(&self) -> Result<u64, QueueError> {
        /// Expired leases go back to `queued` with one more stall and the attempt given back,
        /// or to `failed` once the stalls reach the job's limit.
        const REAP: &str = "UPDATE jobs SET \
            stalls = stalls + 1, attempts = max(attempts - 1, 0), \
            status = CASE WHEN stalls + 1 >= max_stalls THEN 'failed' ELSE 'queued' END, \
            error = 'lost with its worker (lease expired) ' || (stalls + 1) || ' time(s) of ' \
                    || max_stalls || ' allowed', \
            finished_at = CASE WHEN stalls + 1 >= max_stalls THEN ?1 END, \
            run_at = ?1, lease = NULL, lease_until = NULL \
            WHERE status = 'running' AND lease_until < ?1 \
            RETURNING status";
        self.call(move |conn, _| {
            let t = now();
            write(conn, |tx| {
                expire_due(tx, t)?;
                let statuses = tx
                    .prepare_cached(REAP)?
                    .query_map([t], |r| r.get::<_, String>(0))?
                    .collect::<Result<Vec<_>, _>>()?;
                let failed = statuses.iter().filter(|s| *s == "failed").count() as u64;
                finished(tx, 0, failed)?;
                if !statuses.is_empty() {
                    tx.prepare_cached("UPDATE qmeta SET stalls = stalls + ?1 WHERE id = 0")?
                        .execute([statuses.len() as i64])?;
                }
                Ok(statuses.len() as u64)
            })
        })
        .await
    }

    async fn cancel(&self, id: &JobId) -> Result<Cancel, QueueError> {
        let id = id.clone();
        self.call(move |conn, opts| {
            let t = now();
            write(conn, |tx| {
                let Some(was) = status_now(tx, &id, t - ms(opts.retention))? else {
                    return Ok(Cancel::NotFound);
                };
                if was.is_finished() {
                    return Ok(Cancel::Finished(was));
                }
                tx.prepare_cached(
                    "UPDATE jobs SET status = 'cancelled', finished_at = ?1, lease = NULL, \
                     lease_until = NULL WHERE id = ?2",
                )?
                .execute(params![t, id.as_str()])?;
                tx.prepare_cached(
                    "UPDATE qmeta SET depth = max(depth - 1, 0), cancelled = cancelled + 1 \
                     WHERE id = 0",
                )?
                .execute([])?;
                Ok(Cancel::Cancelled { was })
            })
        })
        .await
    }

    async fn retry(&self, id: &JobId) -> Result<Retry, QueueError> {
        let id = id.clone();
        self.call(move |conn, opts| {
            let t = now();
            write(conn, |tx| {
                let Some(was) = status_now(tx, &id, t - ms(opts.retention))? else {
                    return Ok(Retry::NotFound);
                };
                if !matches!(
                    was,
                    JobStatus::Failed | JobStatus::Cancelled | JobStatus::Expired
                ) {
                    return Ok(Retry::NotRetryable(was));
                }
                let cap = i64::try_from(opts.max_backlog).unwrap_or(i64::MAX);
                let room = tx
                    .prepare_cached(
                        "UPDATE qmeta SET depth = depth + 1, \
                         failed = max(failed - (?2 = 'failed'), 0), \
                         cancelled = max(cancelled - (?2 = 'cancelled'), 0), \
                         expired = max(expired - (?2 = 'expired'), 0) \
                         WHERE id = 0 AND depth < ?1",
                    )?
                    .execute(params![cap, was.as_str()])?;
                if room == 0 {
                    let depth: i64 =
                        tx.query_row("SELECT depth FROM qmeta WHERE id = 0", [], |r| r.get(0))?;
                    return Ok(Retry::Full(depth as u64));
                }
                tx.prepare_cached(
                    "UPDATE jobs SET status = 'queued', attempts = 0, stalls = 0, \
                     finished_at = NULL, expires_at = NULL, run_at = ?1, lease = NULL, \
                     lease_until = NULL WHERE id = ?2",
                )?
                .execute(params![enqueue_time(), id.as_str()])?;
                Ok(Retry::Queued { was })
            })
        })
        .await
    }

    async fn list(&self, filter: ListFilter) -> Result<JobPage, QueueError> {
        let limit = filter.limit.clamp(1, MAX_PAGE);
        let (t, seq) = filter.keyset();
        let status = filter.status;
        self.call(move |conn, opts| {
            // Finished jobs on (status, finished_at), within the retention; unfinished ones on
            // (status, run_at). The rowid ends every index, so `seq` breaks ties in it.
            let finished = status.is_finished();
            let sql = if finished {
                format!(
                    "SELECT {VIEW_COLUMNS}, finished_at, seq FROM jobs WHERE status = ?1 \
                     AND finished_at IS NOT NULL AND finished_at >= ?5 \
                     AND (finished_at, seq) < (?2, ?3) \
                     ORDER BY finished_at DESC, seq DESC LIMIT ?4"
                )
            } else {
                format!(
                    "SELECT {VIEW_COLUMNS}, rank, seq FROM jobs WHERE status = ?1 \
                     AND (rank, seq) < (?2, ?3) \
                     ORDER BY rank DESC, seq DESC LIMIT ?4"
                )
            };
            fn row(r: &rusqlite::Row<'_>) -> Result<(JobView, i64, i64), rusqlite::Error> {
                Ok((view(r)?, r.get(14)?, r.get(15)?))
            }
            let mut stmt = conn.prepare_cached(&sql)?;
            let (status, limit_sql) = (status.as_str(), limit as i64);
            let rows = if finished {
                let cutoff = now() - ms(opts.retention);
                stmt.query_map(params![status, t, seq, limit_sql, cutoff], row)?
                    .collect::<Result<Vec<_>, _>>()?
            } else {
                stmt.query_map(params![status, t, seq, limit_sql], row)?
                    .collect::<Result<Vec<_>, _>>()?
            };
            let next = (rows.len() == limit).then(|| {
                let (_, t, seq) = &rows[rows.len() - 1];
                Cursor {
                    t: (*t).max(0) as u64,
                    tie: seq.to_string(),
                }
            });
            Ok(JobPage {
                jobs: rows.into_iter().map(|(v, _, _)| v).collect(),
                next,
            })
        })
        .await
    }

    async fn prune(&self) -> Result<u64, QueueError> {
        self.call(move |conn, opts| {
            write(conn, |tx| {
                let gone = tx
                    .prepare_cached(
                        "DELETE FROM jobs WHERE status IN ('done', 'failed', 'cancelled', 'expired') \
                         AND finished_at IS NOT NULL AND finished_at < ?1 RETURNING status",
                    )?
                    .query_map([now() - ms(opts.retention)], |r| r.get::<_, String>(0))?
                    .collect::<Result<Vec<_>, _>>()?;
                let of = |status: &str| gone.iter().filter(|s| *s == status).count() as i64;
                if !gone.is_empty() {
                    tx.prepare_cached(
                        "UPDATE qmeta SET done = max(done - ?1, 0), failed = max(failed - ?2, 0), \
                         cancelled = max(cancelled - ?3, 0), expired = max(expired - ?4, 0) \
                         WHERE id = 0",
                    )?
                    .execute([
                        of("done"),
                        of("failed"),
                        of("cancelled"),
                        of("expired"),
                    ])?;
                }
                Ok(gone.len() as u64)
            })
        })
        .await
    }

    /// Unfinished jobs are counted by the status index (at most the backlog cap); finished
    /// ones from the counters, less those past the retention that no prune has deleted yet
    /// (read from the finish-time index: a prune's interval's worth at most while workers run).
    async fn counts(&self) -> Result<Counts, QueueError> {
        self.call(move |conn, opts| {
            read(conn, |conn| {
                let mut counts = Counts::default();
                let rows = conn
                    .prepare_cached(
                        "SELECT status, count(*) FROM jobs WHERE status IN ('queued', 'running') \
                     GROUP BY status",
                    )?
                    .query_map([], |r| {
                        Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)? as u64))
                    })?
                    .collect::<Result<Vec<_>, _>>()?;
                for (status, n) in rows {
                    match JobStatus::from_name(&status) {
                        Some(JobStatus::Queued) => counts.queued = n,
                        Some(JobStatus::Running) => counts.running = n,
                        _ => {}
                    }
                }
                let kept: [i64; 5] = conn
                    .prepare_cached(
                        "SELECT done, failed, cancelled, expired, stalls FROM qmeta WHERE id = 0",
                    )?
                    .query_row([], |r| {
                        Ok([r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?])
                    })?;
                // Finished jobs past the retention that no prune has deleted yet.
                let stale: [i64; 4] = conn
                    .prepare_cached(
                        "SELECT count(*) FILTER (WHERE status = 'done'), \
                            count(*) FILTER (WHERE status = 'failed'), \
                            count(*) FILTER (WHERE status = 'cancelled'), \
                            count(*) FILTER (WHERE status = 'expired') \
                     FROM jobs WHERE status IN ('done', 'failed', 'cancelled', 'expired') \
                     AND finished_at IS NOT NULL AND finished_at < ?1",
                    )?
                    .query_row([now() - ms(opts.retention)], |r| {
                        Ok([r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?])
                    })?;
                let live = |i: usize| (kept[i] - stale[i]).max(0) as u64;
                counts.done = live(0);
                counts.failed = live(1);
                counts.cancelled = live(2);
                counts.expired = live(3);
                let stalls = kept[4];
                counts.stalls = stalls.max(0) as u64;
                Ok(counts)
            })
        })
        .await
    }

    async fn latency(&self) -> Result<Latency, QueueError> {
        self.call(move |conn, _| {
            let mut latency = Latency::default();
            let mut stmt = conn.prepare_cached("SELECT label, bucket, n, max_ms FROM latency")?;
            let rows = stmt.query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, i64>(2)?,
                    r.get::<_, i64>(3)?,
                ))
            })?;
            for row in rows {
                let (label, b, n, max_ms) = row?;
                latency.add(
                    &label,
                    b.max(0) as u32,
                    n.max(0) as u64,
                    max_ms.max(0) as u64,
                );
            }
            Ok(latency)
        })
        .await
    }
}
