// node:worker: each request starts its own Worker threads, one per core, splits the count
// across them and joins them, as the seed's first server did (eight Workers a request on its
// eight cores). Nothing bounds the total: at -c 100 that is hundreds of threads at once
// (offload's `spawn`). A Worker that cannot start answers 503, as `spawn` does.

'use strict';

const path = require('node:path');
const { Worker } = require('node:worker_threads');
const { ApiError, answer, app, chunks, intSetting, listen, nowMs, settings } = require('./common');

const STRATEGY = 'node:worker';
const THREAD = path.join(__dirname, 'count-thread.js');
// Workers per request: one per core by default, as offload's spawn splits.
const threads = intSetting('threads', 'OFFLOAD_THREADS', settings.cores);

function runChunk(len) {
  return new Promise((resolve, reject) => {
    let w;
    try {
      w = new Worker(THREAD, { workerData: { len } });
    } catch (e) {
      reject(e);
      return;
    }
    let got;
    w.once('message', (m) => {
      got = m;
    });
    w.once('error', reject);
    w.once('exit', (code) => (got ? resolve(got) : reject(new Error(`the worker exited with ${code} before answering`))));
  });
}

listen(
  app(STRATEGY, async (work) => {
    const handedOff = nowMs();
    let parts;
    try {
      parts = await Promise.all(chunks(work.n, threads).map(([, len]) => runChunk(len)));
    } catch (e) {
      throw new ApiError(503, 'no_thread', `no worker thread could be started for the work; retry later (${e.message})`, 1);
    }
    const result = parts.reduce((a, p) => a + p.result, 0);
    const first = Math.min(...parts.map((p) => p.started));
    const last = Math.max(...parts.map((p) => p.ended));
    return { status: 200, body: answer(STRATEGY, work, result, handedOff, first, last) };
  }),
  STRATEGY,
);
