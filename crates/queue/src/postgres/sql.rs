//! The Postgres backend's schema and statements. Every operation is ONE statement (CTEs chain
//! its steps), so it is atomic without an explicit transaction and one pipelined connection can
//! carry many callers' operations at once. Times come from the server's clock, so workers on
//! many hosts agree on leases and due times. `$1` is always the queue's name: names and every
//! other value go as bound parameters, never into the SQL text.

use crate::latency;

/// Now on the server, in unix ms. `clock_timestamp()`, not `now()`: the latter is the start of
/// the transaction, which for these one-statement transactions is the same but says less.
macro_rules! now_ms {
    () => {
        "(extract(epoch from clock_timestamp()) * 1000)::bigint"
    };
}

/// The channel `NOTIFY` wakes idle workers on; the payload is the queue's name.
pub(super) const CHANNEL: &str = "offload_jobs";

/// Key of the advisory lock that serialises schema creation: concurrent `CREATE TABLE IF NOT
/// EXISTS` in several processes starting together can fail on a duplicate catalog row. An
/// arbitrary constant, unlikely to collide with another application's: "offload" in ASCII
/// (0x6f66666c6f6164), written in decimal since Postgres 15 has no hex literals.
const SCHEMA_LOCK: &str = "31356312506818916";

/// The schema, run as one simple-query string, which Postgres runs as one implicit
/// transaction, so the advisory transaction lock is held until all of it is in place.
pub(super) fn schema() -> String {
    format!(
        "SELECT pg_advisory_xact_lock({SCHEMA_LOCK});
CREATE TABLE IF NOT EXISTS offload_jobs (
    seq          BIGSERIAL PRIMARY KEY, -- FIFO order among jobs due in the same ms
    queue        TEXT NOT NULL,
    id           TEXT NOT NULL UNIQUE,
    status       TEXT NOT NULL,
    payload      TEXT NOT NULL,
    attempts     INTEGER NOT NULL DEFAULT 0,
    max_attempts INTEGER NOT NULL,
    stalls       INTEGER NOT NULL DEFAULT 0,
    max_stalls   INTEGER NOT NULL DEFAULT 10,
    result       TEXT,
    error        TEXT,
    enqueued_at  BIGINT NOT NULL,
    started_at   BIGINT,
    finished_at  BIGINT,
    run_at       BIGINT NOT NULL,
    lease        TEXT,
    lease_until  BIGINT,
    worker       TEXT,
    label        TEXT
);
CREATE INDEX IF NOT EXISTS offload_jobs_lease ON offload_jobs (queue, lease_until)
    WHERE status = 'running';
-- Finished jobs by status and finish time: prune, counts and lists of failed (and other
-- finished) jobs read ranges of it.
CREATE INDEX IF NOT EXISTS offload_jobs_ended ON offload_jobs (queue, status, finished_at, seq)
    WHERE finished_at IS NOT NULL;
-- depth: unfinished jobs, so the backlog cap costs O(1) per enqueue; stalls: a counter; done
-- and failed: finished jobs not yet pruned, so counting them reads no job rows; labels: the
-- job labels the latency histogram keeps (at most MAX_LABELS).
CREATE TABLE IF NOT EXISTS offload_queues (
    queue  TEXT PRIMARY KEY,
    depth  BIGINT NOT NULL DEFAULT 0,
    stalls BIGINT NOT NULL DEFAULT 0,
    done   BIGINT NOT NULL DEFAULT 0,
    failed BIGINT NOT NULL DEFAULT 0,
    labels TEXT[] NOT NULL DEFAULT '{{}}'
);
-- The enqueue-to-done histogram: jobs done and the longest time, per label and bucket.
CREATE TABLE IF NOT EXISTS offload_latency (
    queue  TEXT NOT NULL,
    label  TEXT NOT NULL,
    bucket INTEGER NOT NULL,
    n      BIGINT NOT NULL,
    max_ms BIGINT NOT NULL,
    PRIMARY KEY (queue, label, bucket)
);
-- last_batch: how many of the latest batched enqueue's jobs got a place (see ENQUEUE_BATCH).
-- Added only where missing: ALTER TABLE takes the table's strongest lock even when it would
-- change nothing, which would stall (or deadlock with) the enqueues of running processes.
DO $$ BEGIN
    IF NOT EXISTS (SELECT 1 FROM information_schema.columns
                   WHERE table_schema = current_schema() AND table_name = 'offload_queues'
                     AND column_name = 'last_batch') THEN
        ALTER TABLE offload_queues ADD COLUMN last_batch BIGINT NOT NULL DEFAULT 0;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM information_schema.columns
                   WHERE table_schema = current_schema() AND table_name = 'offload_jobs'
                     AND column_name = 'label') THEN
        ALTER TABLE offload_jobs ADD COLUMN label TEXT;
    END IF;
    -- The finished counters start from the rows there are.
    IF NOT EXISTS (SELECT 1 FROM information_schema.columns
                   WHERE table_schema = current_schema() AND table_name = 'offload_queues'
                     AND column_name = 'labels') THEN
        ALTER TABLE offload_queues ADD COLUMN done BIGINT NOT NULL DEFAULT 0,
            ADD COLUMN failed BIGINT NOT NULL DEFAULT 0,
            ADD COLUMN labels TEXT[] NOT NULL DEFAULT '{{}}';
        UPDATE offload_queues q SET
            done = (SELECT count(*) FROM offload_jobs j WHERE j.queue = q.queue AND j.status = 'done'),
            failed = (SELECT count(*) FROM offload_jobs j WHERE j.queue = q.queue AND j.status = 'failed');
    END IF;
    IF NOT EXISTS (SELECT 1 FROM information_schema.columns
                   WHERE table_schema = current_schema() AND table_name = 'offload_queues'
                     AND column_name = 'cancelled') THEN
        ALTER TABLE offload_queues ADD COLUMN cancelled BIGINT NOT NULL DEFAULT 0;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM information_schema.columns
                   WHERE table_schema = current_schema() AND table_name = 'offload_queues'
                     AND column_name = 'expired') THEN
        ALTER TABLE offload_queues ADD COLUMN expired BIGINT NOT NULL DEFAULT 0;
        ALTER TABLE offload_jobs ADD COLUMN IF NOT EXISTS key TEXT,
            ADD COLUMN IF NOT EXISTS expires_at BIGINT;
    END IF;
END $$;
DO $$ BEGIN
    IF NOT EXISTS (SELECT 1 FROM information_schema.columns
                   WHERE table_schema = current_schema() AND table_name = 'offload_jobs'
                     AND column_name = 'rank') THEN
        ALTER TABLE offload_jobs ADD COLUMN priority INTEGER NOT NULL DEFAULT 0,
            -- The claim order: the due time, pushed back by priority (PRIORITY_STEP, 1,000 ms).
            ADD COLUMN rank BIGINT GENERATED ALWAYS AS (run_at + priority * 1000) STORED;
    END IF;
END $$;
-- The W3C traceparent of what stored the job.
ALTER TABLE offload_jobs ADD COLUMN IF NOT EXISTS trace TEXT;
-- Claims (and lists of queued and running jobs) read the queue's due jobs in claim order.
CREATE INDEX IF NOT EXISTS offload_jobs_rank ON offload_jobs (queue, status, rank, seq);
DROP INDEX IF EXISTS offload_jobs_due;
-- One job per key and queue: what makes a keyed enqueue atomic across processes.
CREATE UNIQUE INDEX IF NOT EXISTS offload_jobs_key ON offload_jobs (queue, key)
    WHERE key IS NOT NULL;
-- The queued jobs that have a deadline, so the sweep that expires them reads only those.
CREATE INDEX IF NOT EXISTS offload_jobs_expiring ON offload_jobs (queue, expires_at)
    WHERE status = 'queued' AND expires_at IS NOT NULL;
-- Replaced by offload_jobs_ended.
DROP INDEX IF EXISTS offload_jobs_finished;"
    )
}

/// Whether the schema is there as this version needs it; if so, opening a connection changes
/// nothing (DDL takes table locks that running processes' statements would queue behind).
pub(super) const SCHEMA_READY: &str = "SELECT EXISTS (SELECT 1 FROM information_schema.columns \
     WHERE table_schema = current_schema() AND table_name = 'offload_queues' \
     AND column_name = 'last_batch') \
     AND EXISTS (SELECT 1 FROM information_schema.columns \
     WHERE table_schema = current_schema() AND table_name = 'offload_queues' \
     AND column_name = 'labels') \
     AND EXISTS (SELECT 1 FROM information_schema.columns \
     WHERE table_schema = current_schema() AND table_name = 'offload_jobs' \
     AND column_name = 'label') \
     AND EXISTS (SELECT 1 FROM information_schema.columns \
     WHERE table_schema = current_schema() AND table_name = 'offload_queues' \
     AND column_name = 'cancelled') \
     AND EXISTS (SELECT 1 FROM information_schema.columns \
     WHERE table_schema = current_schema() AND table_name = 'offload_queues' \
     AND column_name = 'expired') \
     AND EXISTS (SELECT 1 FROM information_schema.columns \
     WHERE table_schema = current_schema() AND table_name = 'offload_jobs' \
     AND column_name = 'trace') \
     AND to_regclass('offload_jobs_key') IS NOT NULL \
     AND to_regclass('offload_jobs_rank') IS NOT NULL \
     AND to_regclass('offload_jobs_expiring') IS NOT NULL \
     AND to_regclass('offload_jobs_ended') IS NOT NULL \
     AND to_regclass('offload_jobs_finished') IS NULL \
     AND to_regclass('offload_latency') IS NOT NULL";

/// Creates this queue's meta row unless it exists.
pub(super) const ADD_QUEUE: &str =
    "INSERT INTO offload_queues (queue) VALUES ($1) ON CONFLICT (queue) DO NOTHING";

/// `$2` id, `$3` payload, `$4` max attempts, `$5` max stalls, `$6` cap, `$7` label (or NULL),
/// `$8` deadline (or NULL), `$9` due time (or NULL: now), `$10` priority, `$11` trace context (or NULL). Takes a place in the
/// backlog (an upsert, so a deleted meta row comes back), stores the job only if it got one, and
/// notifies idle workers. Answers whether it stored the job and the depth before it.
pub(super) const ENQUEUE: &str = concat!(
    "WITH t AS (SELECT ",
    now_ms!(),
    " AS now),
room AS (
    INSERT INTO offload_queues AS m (queue, depth) SELECT $1, 1 WHERE $6::bigint > 0
    ON CONFLICT (queue) DO UPDATE SET depth = m.depth + 1 WHERE m.depth < $6::bigint
    RETURNING depth),
job AS (
    INSERT INTO offload_jobs (queue, id, status, payload, max_attempts, max_stalls,
                              enqueued_at, run_at, label, expires_at, priority, trace)
    SELECT $1, $2, 'queued', $3, $4, $5, t.now, greatest(t.now, $9::bigint), $7::text,
           $8::bigint, $10::int, $11::text FROM t
    WHERE EXISTS (SELECT 1 FROM room)
    RETURNING queue),
note AS (SELECT pg_notify('offload_jobs', queue) FROM job)
SELECT EXISTS (SELECT 1 FROM job), (SELECT count(*) FROM note),
       coalesce((SELECT depth FROM offload_queues WHERE queue = $1), 0)"
);

/// `$2` ids, `$3` payloads, `$4` max attempts, `$7` labels, `$8` deadlines, `$9` due times,
/// `$10` priorities, `$11` trace contexts (arrays, one entry per job, in order; a label,
/// deadline, due time or trace context may be NULL), `$5` max stalls, `$6` cap. Takes as many places as the cap leaves for the batch (the first `k` jobs,
/// in order) under one lock of the meta row, stores those `k` jobs and notifies once. The SET
/// expressions see the row as it was, so `last_batch` returns `k` itself. Answers `k` and the
/// depth after. One statement for many jobs: the meta row is locked, and the commit flushed,
/// once per batch instead of once per job.
pub(super) const ENQUEUE_BATCH: &str = concat!(
    "WITH t AS (SELECT ",
    now_ms!(),
    " AS now),
n AS (SELECT cardinality($2::text[])::bigint AS n),
room AS (
    INSERT INTO offload_queues AS m (queue, depth, last_batch)
    SELECT $1, least(n.n, $6::bigint), least(n.n, $6::bigint) FROM n
    ON CONFLICT (queue) DO UPDATE
        SET depth = m.depth + least(excluded.last_batch, greatest(0, $6::bigint - m.depth)),
            last_batch = least(excluded.last_batch, greatest(0, $6::bigint - m.depth))
    RETURNING depth, last_batch),
job AS (
    INSERT INTO offload_jobs (queue, id, status, payload, max_attempts, max_stalls,
                              enqueued_at, run_at, label, expires_at, priority, trace)
    SELECT $1, x.id, 'queued', x.payload, x.max_attempts, $5, t.now, greatest(t.now, x.run_at),
           x.label, x.expires_at, x.priority, x.trace
    FROM t, unnest($2::text[], $3::text[], $4::int[], $7::text[], $8::bigint[], $9::bigint[],
                   $10::int[], $11::text[])
        WITH ORDINALITY AS x(id, payload, max_attempts, label, expires_at, run_at, priority,
                             trace, ord)
    WHERE x.ord <= (SELECT last_batch FROM room)
    RETURNING queue),
note AS (SELECT pg_notify('offload_jobs', $1) WHERE EXISTS (SELECT 1 FROM job))
SELECT (SELECT last_batch FROM room), (SELECT depth FROM room), (SELECT count(*) FROM note)"
);

/// `$2` id, `$3` payload, `$4` max attempts, `$5` max stalls, `$6` cap, `$7` label, `$8`
/// deadline, `$9` key, `$10` retention in ms, `$11` due time, `$12` priority, `$13` trace context. Stores a keyed job unless a job holds its key.
/// The queue's row is locked before the check of the cap, so the cap holds; the insert skips a
/// key taken meanwhile (`ON CONFLICT DO NOTHING` sees rows committed after this statement's
/// snapshot, which its reads do not), and the depth is raised only for a job stored. Answers
/// whether it stored the job; the job holding the key in this snapshot (id, payload, and
/// whether it is past its retention); and the depth (-1: no queue row). The caller settles
/// what this statement cannot see by running it again (see `PostgresQueue::enqueue_keyed`).
pub(super) const ENQUEUE_KEYED: &str = concat!(
    "WITH t AS (SELECT ",
    now_ms!(),
    " AS now),
old AS (SELECT id, payload, (finished_at IS NOT NULL AND finished_at < t.now - $10::bigint)
            AS stale
        FROM offload_jobs, t WHERE queue = $1 AND key = $9),
meta AS (SELECT depth FROM offload_queues
         WHERE queue = $1 AND NOT EXISTS (SELECT 1 FROM old) FOR UPDATE),
job AS (
    INSERT INTO offload_jobs (queue, id, status, payload, max_attempts, max_stalls,
                              enqueued_at, run_at, label, expires_at, key, priority, trace)
    SELECT $1, $2, 'queued', $3, $4, $5, t.now, greatest(t.now, $11::bigint), $7::text,
           $8::bigint, $9, $12::int, $13::text FROM t
    WHERE (SELECT depth FROM meta) < $6::bigint
    ON CONFLICT (queue, key) WHERE key IS NOT NULL DO NOTHING
    RETURNING queue),
m AS (UPDATE offload_queues SET depth = depth + 1
      WHERE queue = $1 AND EXISTS (SELECT 1 FROM job)),
note AS (SELECT pg_notify('offload_jobs', queue) FROM job)
SELECT EXISTS (SELECT 1 FROM job), (SELECT id FROM old), (SELECT payload FROM old),
       coalesce((SELECT stale FROM old), false), coalesce((SELECT depth FROM meta), -1),
       (SELECT count(*) FROM note)"
);

/// `$2` key, `$3` retention in ms. A job past its retention (not yet pruned) gives up its key.
pub(super) const UNKEY: &str = concat!(
    "UPDATE offload_jobs SET key = NULL WHERE queue = $1 AND key = $2 \
     AND finished_at < ",
    now_ms!(),
    " - $3::bigint"
);

/// Ends the queued jobs whose deadline has passed as `expired` (a bounded batch; rows being
/// claimed are skipped, the claim itself passes them over), takes them out of the backlog and
/// counts them. Answers how many.
pub(super) const EXPIRE: &str = concat!(
    "WITH t AS (SELECT ",
    now_ms!(),
    " AS now),
due AS MATERIALIZED (
    SELECT seq FROM offload_jobs
    WHERE queue = $1 AND status = 'queued' AND expires_at <= (SELECT now FROM t)
    LIMIT 1000 FOR UPDATE SKIP LOCKED),
x AS (
    UPDATE offload_jobs j SET status = 'expired', finished_at = t.now,
        error = 'expired: its deadline passed before it finished'
    FROM t WHERE j.seq IN (SELECT seq FROM due)
    RETURNING 1),
m AS (
    UPDATE offload_queues SET depth = greatest(depth - (SELECT count(*) FROM x), 0),
        expired = expired + (SELECT count(*) FROM x)
    WHERE queue = $1 AND EXISTS (SELECT 1 FROM x))
SELECT count(*) FROM x"
);

/// The columns of a [`super::super::JobView`], in the order `view` reads them.
macro_rules! view_columns {
    () => {
        "id, status, attempts, max_attempts, result, error, enqueued_at, started_at, \
         finished_at, stalls, max_stalls, expires_at, priority, label"
    };
}

/// `$2` id, `$3` retention in ms.
pub(super) const GET: &str = concat!(
    "SELECT ",
    view_columns!(),
    " FROM offload_jobs WHERE queue = $1 AND id = $2 \
     AND (finished_at IS NULL OR finished_at >= ",
    now_ms!(),
    " - $3)"
);

/// `$2` max, `$3` lease token, `$4` lease in ms, `$5` worker. `SKIP LOCKED`: concurrent claims
/// pass over each other's rows instead of queueing behind them; a row claimed and committed by
/// another claim after this one's snapshot is re-checked (status no longer `queued`) and left.
pub(super) const CLAIM: &str = concat!(
    "WITH t AS (SELECT ",
    now_ms!(),
    " AS now),
due AS MATERIALIZED (
    SELECT seq FROM offload_jobs
    WHERE queue = $1 AND status = 'queued' AND run_at <= (SELECT now FROM t)
        AND (expires_at IS NULL OR expires_at > (SELECT now FROM t))
    ORDER BY rank, seq LIMIT $2 FOR UPDATE SKIP LOCKED)
UPDATE offload_jobs j SET status = 'running', attempts = j.attempts + 1, lease = $3,
    lease_until = t.now + $4::bigint, started_at = t.now, worker = $5
FROM t WHERE j.seq IN (SELECT seq FROM due)
RETURNING j.id, j.payload, j.attempts, j.max_attempts, j.rank, j.seq, j.expires_at, j.trace"
);

/// Milliseconds until the next queued job is due (negative: due now), or NULL if none. The
/// earliest due time is within the greatest handicap (9 × 1,000 ms) of the first rank, so one
/// range of `offload_jobs_rank` holds it.
pub(super) const NEXT_DUE: &str = concat!(
    "SELECT min(run_at) - ",
    now_ms!(),
    " FROM offload_jobs WHERE queue = $1 AND status = 'queued' AND rank <= \
     (SELECT min(rank) FROM offload_jobs WHERE queue = $1 AND status = 'queued') + 9000"
);

/// `$2` id, `$3` token, `$4` lease in ms.
pub(super) const HEARTBEAT: &str = concat!(
    "UPDATE offload_jobs SET lease_until = ",
    now_ms!(),
    " + $4::bigint WHERE queue = $1 AND id = $2 AND lease = $3 AND status = 'running'"
);

/// `$2..$6`: arrays of id, token, kind (`ok`, `retry`, `fail`), result or error text, retry
/// delay in ms, one element per outcome. Only rows whose lease still matches change; answers
/// their ids and new statuses. Finished jobs leave the backlog and join the finished counters;
/// a retry notifies idle workers so they learn its due time.
///
/// Jobs done are counted in the latency histogram (see [`crate::latency`]), under
/// their label if the queue keeps it, else `other`. The labels kept are on the queue's row,
/// which the statement updates (and so locks) before it touches the histogram: a label is
/// taken by one completion at a time, so no more than `MAX_LABELS` are ever kept, and
/// completions take the histogram's rows one at a time, in label and bucket order, so they
/// never deadlock.
pub(super) fn complete() -> String {
    let bucket = latency::sql_bucket("u.ms");
    format!(
        "WITH t AS (SELECT {now} AS now),
o AS (SELECT * FROM unnest($2::text[], $3::text[], $4::text[], $5::text[], $6::bigint[])
      AS o(id, token, kind, value, delay)),
o2 AS (SELECT o.*, j.seq,
             CASE WHEN o.kind = 'ok' THEN 'done'
                  WHEN j.expires_at <= t.now THEN 'expired'
                  WHEN o.kind = 'retry' AND j.attempts < j.max_attempts THEN 'queued'
                  ELSE 'failed' END AS next
      FROM o, t, offload_jobs j
      WHERE j.queue = $1 AND j.id = o.id),
upd AS (
    UPDATE offload_jobs j SET
        status = o.next,
        result = CASE WHEN o.next = 'done' THEN o.value ELSE j.result END,
        error = CASE WHEN o.next = 'done' THEN NULL
                     WHEN o.next = 'expired'
                     THEN 'expired: its deadline passed before it finished (last run: '
                          || o.value || ')'
                     ELSE o.value END,
        finished_at = CASE WHEN o.next = 'queued' THEN j.finished_at ELSE t.now END,
        run_at = CASE WHEN o.next = 'queued' THEN t.now + o.delay ELSE j.run_at END,
        lease = NULL, lease_until = NULL
    FROM o2 o, t
    WHERE j.seq = o.seq AND j.lease = o.token AND j.status = 'running'
    RETURNING j.id, j.status, coalesce(j.label, '') AS label, t.now - j.enqueued_at AS ms),
fresh AS (SELECT DISTINCT label FROM upd WHERE status = 'done' AND label <> ''),
fin AS (
    UPDATE offload_queues m SET
        depth = greatest(m.depth - (SELECT count(*) FROM upd WHERE status <> 'queued'), 0),
        done = m.done + (SELECT count(*) FROM upd WHERE status = 'done'),
        failed = m.failed + (SELECT count(*) FROM upd WHERE status = 'failed'),
        expired = m.expired + (SELECT count(*) FROM upd WHERE status = 'expired'),
        labels = m.labels || ARRAY(
            SELECT f.label FROM fresh f WHERE NOT f.label = ANY(m.labels) ORDER BY f.label
            LIMIT greatest({max_labels} - cardinality(m.labels), 0))
    WHERE m.queue = $1 AND EXISTS (SELECT 1 FROM upd WHERE status <> 'queued')
    RETURNING m.labels),
lat AS (
    INSERT INTO offload_latency AS l (queue, label, bucket, n, max_ms)
    SELECT $1, k.label, k.bucket, count(*), max(k.ms)
    FROM (SELECT CASE WHEN u.label = ''
                        OR u.label = ANY(coalesce((SELECT labels FROM fin), ARRAY[]::text[]))
                      THEN u.label ELSE '{other}' END AS label,
                 {bucket} AS bucket, greatest(u.ms, 0) AS ms
          FROM upd u WHERE u.status = 'done') k
    GROUP BY k.label, k.bucket ORDER BY k.label, k.bucket
    ON CONFLICT (queue, label, bucket) DO UPDATE
        SET n = l.n + excluded.n, max_ms = greatest(l.max_ms, excluded.max_ms)),
note AS (SELECT pg_notify('offload_jobs', $1) FROM upd WHERE status = 'queued' LIMIT 1)
SELECT id, status, (SELECT count(*) FROM note) FROM upd",
        now = now_ms!(),
        max_labels = latency::MAX_LABELS,
        other = latency::OTHER,
    )
}

/// `$2` id, `$3` token. Back to `queued` at once, the attempt given back; wakes idle workers.
pub(super) const RELEASE: &str = concat!(
    "WITH r AS (
    UPDATE offload_jobs SET status = 'queued', attempts = greatest(attempts - 1, 0),
        run_at = ",
    now_ms!(),
    ", lease = NULL, lease_until = NULL
    WHERE queue = $1 AND id = $2 AND lease = $3 AND status = 'running'
    RETURNING queue)
SELECT pg_notify('offload_jobs', queue) FROM r"
);

/// Expired leases go back to `queued` with one more stall and the attempt given back, or to
/// `failed` once the stalls reach the job's limit. `SKIP LOCKED`: a row being completed right
/// now is left to the next reap, so reap never waits on (or deadlocks with) a completion.
pub(super) const REAP: &str = concat!(
    "WITH t AS (SELECT ",
    now_ms!(),
    " AS now),
lapsed AS MATERIALIZED (
    SELECT seq FROM offload_jobs
    WHERE queue = $1 AND status = 'running' AND lease_until < (SELECT now FROM t)
    FOR UPDATE SKIP LOCKED),
r AS (
    UPDATE offload_jobs j SET
        stalls = j.stalls + 1, attempts = greatest(j.attempts - 1, 0),
        status = CASE WHEN j.stalls + 1 >= j.max_stalls THEN 'failed' ELSE 'queued' END,
        error = 'lost with its worker (lease expired) ' || (j.stalls + 1) || ' time(s) of '
                || j.max_stalls || ' allowed',
        finished_at = CASE WHEN j.stalls + 1 >= j.max_stalls THEN t.now END,
        run_at = t.now, lease = NULL, lease_until = NULL
    FROM t WHERE j.seq IN (SELECT seq FROM lapsed)
    RETURNING j.status),
m AS (
    UPDATE offload_queues SET stalls = stalls + (SELECT count(*) FROM r),
        depth = greatest(depth - (SELECT count(*) FROM r WHERE status = 'failed'), 0),
        failed = failed + (SELECT count(*) FROM r WHERE status = 'failed')
    WHERE queue = $1 AND EXISTS (SELECT 1 FROM r)),
note AS (SELECT pg_notify('offload_jobs', $1) FROM r WHERE status = 'queued' LIMIT 1)
SELECT (SELECT count(*) FROM r), (SELECT count(*) FROM note)"
);

/// `$2` retention in ms. Deletes finished jobs past the retention and takes them off the
/// finished counters; answers how many. The cutoff is a subquery, computed once: a volatile
/// `clock_timestamp()` in the comparison itself could not be an index condition.
pub(super) const PRUNE: &str = concat!(
    "WITH gone AS (
    DELETE FROM offload_jobs WHERE queue = $1 AND finished_at IS NOT NULL
        AND finished_at < (SELECT ",
    now_ms!(),
    " - $2::bigint) AND status IN ('done', 'failed', 'cancelled', 'expired') RETURNING status),
m AS (
    UPDATE offload_queues SET
        done = greatest(done - (SELECT count(*) FROM gone WHERE status = 'done'), 0),
        failed = greatest(failed - (SELECT count(*) FROM gone WHERE status = 'failed'), 0),
        cancelled = greatest(cancelled - (SELECT count(*) FROM gone WHERE status = 'cancelled'), 0),
        expired = greatest(expired - (SELECT count(*) FROM gone WHERE status = 'expired'), 0)
    WHERE queue = $1 AND EXISTS (SELECT 1 FROM gone))
SELECT count(*) FROM gone"
);

/// `$2` retention in ms. Rows of (name, count), summed by name: `queued` and `running` counted
/// on the status index (at most the backlog cap, and the row versions they left that vacuum
/// has not yet removed); `done`, `failed` and `stalls` from the queue's counters;
/// `stale_done`, `stale_failed` and so on, to take off, the finished jobs past the retention that
/// no prune has deleted yet, on the finish-time index (only `finished_at IS NOT NULL` rows are
/// done or failed; the cutoff is computed once, as in [`PRUNE`], so the index can use it).
pub(super) const COUNTS: &str = concat!(
    "SELECT status, count(*) FROM offload_jobs WHERE queue = $1 \
     AND status IN ('queued', 'running') GROUP BY status \
     UNION ALL SELECT 'stale_' || status, count(*) FROM offload_jobs WHERE queue = $1 \
     AND status IN ('done', 'failed', 'cancelled', 'expired') \
     AND finished_at IS NOT NULL AND finished_at < (SELECT ",
    now_ms!(),
    " - $2::bigint) GROUP BY status \
     UNION ALL SELECT 'done', done FROM offload_queues WHERE queue = $1 \
     UNION ALL SELECT 'failed', failed FROM offload_queues WHERE queue = $1 \
     UNION ALL SELECT 'cancelled', cancelled FROM offload_queues WHERE queue = $1 \
     UNION ALL SELECT 'expired', expired FROM offload_queues WHERE queue = $1 \
     UNION ALL SELECT 'stalls', stalls FROM offload_queues WHERE queue = $1"
);

/// `$2` id, `$3` retention in ms. Ends a queued or running job as `cancelled` (its lease
/// cleared, so the worker running it is refused at its next heartbeat), takes it out of the
/// backlog and counts it. Answers the status it had before (NULL: no such job) and whether it
/// was cancelled; all parts see the statement's snapshot, so the first is the status before.
/// A job that finished between the snapshot and the update is left as it is (not cancelled).
pub(super) const CANCEL: &str = concat!(
    "WITH t AS (SELECT ",
    now_ms!(),
    " AS now),
c AS (
    UPDATE offload_jobs j SET status = 'cancelled', finished_at = t.now, lease = NULL,
        lease_until = NULL
    FROM t WHERE j.queue = $1 AND j.id = $2 AND j.status IN ('queued', 'running')
    RETURNING j.queue),
m AS (
    UPDATE offload_queues SET depth = greatest(depth - 1, 0), cancelled = cancelled + 1
    WHERE queue = $1 AND EXISTS (SELECT 1 FROM c))
SELECT (SELECT status FROM offload_jobs, t WHERE queue = $1 AND id = $2
            AND (finished_at IS NULL OR finished_at >= t.now - $3::bigint)),
       EXISTS (SELECT 1 FROM c)"
);

/// `$2` id, `$3` backlog cap, `$4` retention in ms. Queues a failed or cancelled job again
/// (fresh attempts and stalls, due now) if the backlog has room, and notifies idle workers.
/// The queue's row is locked first, so the cap holds against concurrent enqueues, and a second
/// retry of the same job, waiting on that lock, finds the job queued and changes nothing.
/// Answers the status before (NULL: no such job), whether it was queued, and the depth.
pub(super) const RETRY: &str = concat!(
    "WITH t AS (SELECT ",
    now_ms!(),
    " AS now),
cur AS (SELECT status FROM offload_jobs, t WHERE queue = $1 AND id = $2
            AND (finished_at IS NULL OR finished_at >= t.now - $4::bigint)),
meta AS (SELECT depth FROM offload_queues WHERE queue = $1 FOR UPDATE),
r AS (
    UPDATE offload_jobs j SET status = 'queued', attempts = 0, stalls = 0, finished_at = NULL,
        expires_at = NULL, run_at = t.now, lease = NULL, lease_until = NULL
    FROM t WHERE j.queue = $1 AND j.id = $2 AND j.status IN ('failed', 'cancelled', 'expired')
        AND (SELECT depth FROM meta) < $3::bigint
    RETURNING j.queue),
m AS (
    UPDATE offload_queues SET depth = depth + 1,
        failed = greatest(failed - (SELECT count(*) FROM cur WHERE status = 'failed'), 0),
        cancelled = greatest(cancelled - (SELECT count(*) FROM cur WHERE status = 'cancelled'), 0),
        expired = greatest(expired - (SELECT count(*) FROM cur WHERE status = 'expired'), 0)
    WHERE queue = $1 AND EXISTS (SELECT 1 FROM r)),
note AS (SELECT pg_notify('offload_jobs', queue) FROM r)
SELECT (SELECT status FROM cur), EXISTS (SELECT 1 FROM r), coalesce((SELECT depth FROM meta), 0),
       (SELECT count(*) FROM note)"
);

/// `$2` status, `$3` and `$4` the cursor (finish time, seq), `$5` limit, `$6` retention in ms.
/// A page of finished jobs, newest first, on `offload_jobs_ended`.
pub(super) const LIST_FINISHED: &str = concat!(
    "SELECT ",
    view_columns!(),
    ", finished_at, seq FROM offload_jobs WHERE queue = $1 AND status = $2 \
     AND finished_at IS NOT NULL AND finished_at >= (SELECT ",
    now_ms!(),
    " - $6::bigint) AND (finished_at, seq) < ($3::bigint, $4::bigint) \
     ORDER BY finished_at DESC, seq DESC LIMIT $5"
);

/// `$2` status, `$3` and `$4` the cursor (due time, seq), `$5` limit. A page of queued or
/// running jobs, last in claim order first, on `offload_jobs_rank`.
pub(super) const LIST_UNFINISHED: &str = concat!(
    "SELECT ",
    view_columns!(),
    ", rank, seq FROM offload_jobs WHERE queue = $1 AND status = $2 \
     AND (rank, seq) < ($3::bigint, $4::bigint) ORDER BY rank DESC, seq DESC LIMIT $5"
);

/// The latency histogram's rows: label, bucket, jobs, longest time.
pub(super) const LATENCY: &str =
    "SELECT label, bucket, n, max_ms FROM offload_latency WHERE queue = $1";

/// Deletes every row of this queue, its histogram's too (tests and benchmarks isolate
/// themselves by name).
pub(super) const DESTROY: &str = "WITH gone AS (DELETE FROM offload_jobs WHERE queue = $1), \
     lat AS (DELETE FROM offload_latency WHERE queue = $1) \
     DELETE FROM offload_queues WHERE queue = $1";
