// Node's own limit for offload's bench: the count loop alone (no server, no HTTP) on one
// worker thread per core, all at once, for a fixed window, counting whole runs only, as
// offload calibrates its Rust loop. Prints one JSON line:
// {"threads", "window_s", "readings_per_s": [...], "readings_runs": [...]}.
// Usage: node calibrate.js N THREADS READINGS WINDOW_MS

'use strict';

const { Worker, isMainThread, parentPort, workerData } = require('node:worker_threads');
const { count } = require('./count');

if (isMainThread) {
  const [n, threads, readings, windowMs] = process.argv.slice(2, 6).map(Number);
  if (![n, threads, readings, windowMs].every((v) => Number.isSafeInteger(v) && v > 0)) {
    console.error('usage: node calibrate.js N THREADS READINGS WINDOW_MS (whole numbers from 1)');
    process.exit(2);
  }
  (async () => {
    const out = { threads, window_s: windowMs / 1000, readings_per_s: [], readings_runs: [] };
    for (let r = 0; r < readings; r++) {
      // The threads start together: each waits on a shared flag the main thread raises once
      // all are up. A thread that is done keeps its core busy until all are done, so the
      // others are timed under the same contention to their end.
      const flags = new Int32Array(new SharedArrayBuffer(8));
      const workers = [];
      const results = [];
      for (let i = 0; i < threads; i++) {
        const w = new Worker(__filename, { workerData: { n, windowMs, flags, threads } });
        workers.push(w);
        results.push(new Promise((resolve, reject) => {
          w.once('message', resolve);
          w.once('error', reject);
        }));
      }
      await Promise.all(workers.map((w) => new Promise((resolve) => w.once('online', resolve))));
      Atomics.store(flags, 0, 1);
      Atomics.notify(flags, 0);
      const got = await Promise.all(results);
      await Promise.all(workers.map((w) => w.terminate()));
      out.readings_runs.push(got.reduce((a, g) => a + g.runs, 0));
      out.readings_per_s.push(got.reduce((a, g) => a + g.perS, 0));
    }
    console.log(JSON.stringify(out));
  })().catch((e) => {
    console.error(`calibrate: ${e.message}`);
    process.exit(1);
  });
} else {
  const { n, windowMs, flags, threads } = workerData;
  Atomics.wait(flags, 0, 0);
  const start = performance.now();
  let runs = 0;
  let end;
  let sink = 0;
  for (;;) {
    sink += count(n);
    runs++;
    end = performance.now();
    if (end - start >= windowMs) break;
  }
  const perS = runs / Math.max((end - start) / 1000, 1e-9);
  // Done: say so, then keep the core busy until every thread is.
  Atomics.add(flags, 1, 1);
  parentPort.postMessage({ runs, perS, sink: sink > 0 });
  while (Atomics.load(flags, 1) < threads) sink += count(Math.min(n, 1 << 20));
}
