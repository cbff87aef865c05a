// node:piscina: a piscina pool of one thread per core, kept alive; each request is split into
// one task per thread, as the seed's second server did (eight `run()`s a request on eight
// threads). The seed left piscina's queue unbounded; here it holds at most --max-queue tasks
// (offload's own --max-queue default, 65,536) and past that a request gets 503 at once.

'use strict';

const path = require('node:path');
const { Piscina } = require('piscina');
const { ApiError, answer, app, chunks, intSetting, listen, nowMs, settings } = require('./common');

const STRATEGY = 'node:piscina';
const threads = intSetting('threads', 'OFFLOAD_THREADS', settings.cores);
const maxQueue = intSetting('max-queue', 'OFFLOAD_MAX_QUEUE', 65_536);
// The threads' niceness added to the process's (piscina's niceIncrement, through @napi-rs/nice):
// 0, piscina's default, unless the bench runs the pair at a lower priority.
const niceIncrement = intSetting('nice-increment', 'OFFLOAD_NICE_INCREMENT', 0, 0);

const pool = new Piscina({
  filename: path.join(__dirname, 'count-task.js'),
  minThreads: threads,
  maxThreads: threads,
  maxQueue,
  niceIncrement,
  // Threads = cores for the whole run: none exits when idle and none is started per request.
  idleTimeout: Infinity,
});

listen(
  app(STRATEGY, async (work) => {
    const handedOff = nowMs();
    const tasks = chunks(work.n, threads);
    // A request's tasks go in whole or not at all, so a refusal leaves no chunk behind.
    if (pool.queueSize + tasks.length > maxQueue) {
      throw new ApiError(503, 'overloaded', 'no capacity for more work now', 1);
    }
    const parts = await Promise.all(tasks.map(([, len]) => pool.run({ len })));
    const result = parts.reduce((a, p) => a + p.result, 0);
    const first = Math.min(...parts.map((p) => p.started));
    const last = Math.max(...parts.map((p) => p.ended));
    return { status: 200, body: answer(STRATEGY, work, result, handedOff, first, last) };
  }),
  STRATEGY,
);
