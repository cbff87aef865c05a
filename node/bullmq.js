// node:bullmq: an Express gateway that stores each request as a BullMQ job in Redis and
// answers 202 at once, with `Location: /jobs/{id}`; `node bullmq-worker.js` processes run the
// jobs. `/jobs/{id}` and `/jobs` (`?latency=N`) answer in offload's shapes, so offload's
// bench follows this queue as it follows its own. The seed's fourth server answered 202 the
// same way, with no bound on its backlog; here past --max-backlog jobs waiting or running a
// request gets 503 at once.

'use strict';

const crypto = require('node:crypto');
const { Queue } = require('bullmq');
const { ApiError, app, intSetting, listen } = require('./common');
const { ATTEMPTS, JOB_OPTIONS, MAX_STALLS, RETAIN, connection, queueName, stallsKey } = require('./jobs');

const STRATEGY = 'node:bullmq';
// offload's --max-backlog default.
const maxBacklog = intSetting('max-backlog', 'OFFLOAD_MAX_BACKLOG', 10_000);
// The most finished jobs `GET /jobs?latency=N` reads back (offload's gateway reads a histogram
// instead, whatever N; the bench asks for 100,000, so both cover a run's jobs).
const MAX_LATENCY_SAMPLE = 100_000;
const WAITING = ['waiting', 'delayed', 'prioritized', 'paused', 'waiting-children'];

// How often the gateway reads the backlog for its cap: a read per request would cost every
// 202 a Redis round trip that the seed's gateway did not make.
const REFRESH_MS = 50;

const redis = connection(false);
const queue = new Queue(queueName, { connection: redis });
// The cap is checked against the backlog read at most REFRESH_MS ago, plus the jobs this
// gateway added since that read began and those being added now. A job finished since only
// makes the check stricter, so one gateway never overshoots the cap (several could, by what
// each added within REFRESH_MS).
let backlog = 0;
let added = 0;
let addedBeforeRead = 0;
let adding = 0;
let reading = false;

async function refresh() {
  if (reading) return;
  reading = true;
  const before = added;
  try {
    const c = await counts();
    backlog = c.queued + c.running;
    addedBeforeRead = before;
  } catch (e) {
    console.error(`${STRATEGY}: reading the backlog: ${e.message}`);
  } finally {
    reading = false;
  }
}

// 128 random bits as 32 hex characters, like offload's job ids (BullMQ refuses custom ids
// that read as integers, so an all-digit one is drawn again).
function jobId() {
  for (;;) {
    const id = crypto.randomBytes(16).toString('hex');
    if (!/^\d+$/.test(id)) return id;
  }
}

const unavailable = (e) => {
  console.error(`${STRATEGY}: redis: ${e.message}`);
  return new ApiError(503, 'queue_unavailable', 'the job queue is unavailable; retry later', 1);
};

async function counts() {
  const [c, stalls] = await Promise.all([queue.getJobCounts(...WAITING, 'active', 'completed', 'failed'), redis.get(stallsKey)]);
  return {
    queued: WAITING.reduce((a, s) => a + (c[s] || 0), 0),
    running: c.active || 0,
    done: c.completed || 0,
    failed: c.failed || 0,
    stalls: Number(stalls || 0),
  };
}

async function enqueue(work) {
  if (backlog + (added - addedBeforeRead) + adding >= maxBacklog) {
    throw new ApiError(503, 'overloaded', 'no capacity for more work now', 1);
  }
  const id = jobId();
  adding++;
  try {
    await queue.add('count', { work: work.work, n: work.n }, { ...JOB_OPTIONS, jobId: id });
    added++;
  } catch (e) {
    throw unavailable(e);
  } finally {
    adding--;
  }
  const url = `/jobs/${id}`;
  return {
    status: 202,
    headers: { Location: url },
    body: { id, status: 'queued', status_url: url, work: work.work, n: work.n },
  };
}

const STATUS = { active: 'running', completed: 'done', failed: 'failed' };

// The `/jobs/{id}` view, field for field offload's `Job`.
function view(job, state) {
  const v = {
    id: job.id,
    status: STATUS[state] || 'queued',
    attempts: job.attemptsStarted ?? job.attemptsMade,
    max_attempts: job.opts.attempts ?? ATTEMPTS,
    stalls: job.stalledCounter ?? 0,
    max_stalls: MAX_STALLS,
    enqueued_at: job.timestamp,
  };
  if (state === 'completed') v.result = job.returnvalue;
  if (state === 'failed') v.error = job.failedReason;
  if (job.processedOn) v.started_at = job.processedOn;
  if (job.finishedOn) v.finished_at = job.finishedOn;
  return v;
}

// Percentiles as offload's `Spread::of`: sorted, p at ceil(p * n), 1-based.
function spread(values) {
  if (values.length === 0) return undefined;
  values.sort((a, b) => a - b);
  const n = values.length;
  const at = (p) => values[Math.min(Math.max(Math.ceil(p * n), 1), n) - 1];
  return { count: n, p50: at(0.5), p90: at(0.9), p99: at(0.99), max: values[n - 1] };
}

function routes(a) {
  a.get('/jobs', async (req, res, next) => {
    try {
      let latency = 0;
      const at = req.originalUrl.indexOf('?');
      for (const [k, v] of new URLSearchParams(at < 0 ? '' : req.originalUrl.slice(at + 1))) {
        if (k !== 'latency') throw new ApiError(400, 'invalid_query', `unknown parameter ${JSON.stringify(k.slice(0, 64))} (expected \`latency\`)`);
        if (!/^\d+$/.test(v)) throw new ApiError(400, 'invalid_query', `\`latency\` must be a whole number of jobs: got ${JSON.stringify(v.slice(0, 64))}`);
        latency = Math.min(Number(v), MAX_LATENCY_SAMPLE);
      }
      let body;
      try {
        body = { counts: await counts() };
        if (latency > 0) {
          // The most recently finished first; BullMQ keeps at most RETAIN of them.
          const done = await queue.getCompleted(0, Math.min(latency, RETAIN) - 1);
          const s = spread(done.filter((j) => j && j.finishedOn).map((j) => j.finishedOn - j.timestamp));
          if (s) body.enqueue_to_done_ms = s;
        }
      } catch (e) {
        throw e instanceof ApiError ? e : unavailable(e);
      }
      res.json(body);
    } catch (e) {
      next(e);
    }
  });
  a.get('/jobs/:id', async (req, res, next) => {
    try {
      const id = req.params.id;
      if (!/^[0-9a-f]{32}$/.test(id)) {
        throw new ApiError(400, 'invalid_job_id', `${JSON.stringify(id.slice(0, 64))} is not a job id: expected 32 hex characters`);
      }
      let job;
      let state;
      try {
        // The state first, then the job: a job read before it completed and a state read
        // after would say `completed` with no return value.
        state = await queue.getJobState(id);
        job = state === 'unknown' ? undefined : await queue.getJob(id);
      } catch (e) {
        throw unavailable(e);
      }
      if (!job || state === 'unknown') {
        throw new ApiError(404, 'job_not_found', `no job ${id} (unknown, or finished and past its retention)`);
      }
      res.json(view(job, state));
    } catch (e) {
      next(e);
    }
  });
}

queue
  .waitUntilReady()
  .then(refresh)
  .then(
    () => {
      setInterval(refresh, REFRESH_MS).unref();
      listen(app(STRATEGY, enqueue, routes), STRATEGY, () => queue.close());
    },
    (e) => {
      console.error(`${STRATEGY}: cannot reach Redis: ${e.message}`);
      process.exit(1);
    },
  );
