// node:bullmq's worker process: a BullMQ Worker that runs each job's count loop on its event
// loop, one job at a time (BullMQ's docs: CPU-bound jobs scale with processes, not with
// `concurrency`), and stores the same result offload's worker stores.

'use strict';

const { Worker } = require('bullmq');
const { count } = require('./count');
const { MAX_STALLS, connection, queueName, stallsKey } = require('./jobs');

const redis = connection(true);
const worker = new Worker(
  queueName,
  async (job) => {
    const { work, n } = job.data;
    if (work !== 'count' || !Number.isSafeInteger(n) || n < 1) {
      throw new Error(`not a count job: ${JSON.stringify(job.data).slice(0, 128)}`);
    }
    const start = performance.now();
    const result = count(n);
    return { work, n, result, run_us: Math.round((performance.now() - start) * 1000) };
  },
  { connection: redis, concurrency: 1, maxStalledCount: MAX_STALLS },
);
worker.on('stalled', () => {
  redis.incr(stallsKey).catch(() => {});
});
worker.on('error', (e) => console.error(`node:bullmq worker: ${e.message}`));
worker.waitUntilReady().then(
  () => console.log(`offload node: worker ${process.pid} running on queue ${queueName}`),
  (e) => {
    console.error(`node:bullmq worker: cannot reach Redis: ${e.message}`);
    process.exit(1);
  },
);

// SIGTERM: finish the job in hand, then leave.
const stop = () => worker.close().finally(() => process.exit(0));
process.once('SIGTERM', stop);
process.once('SIGINT', stop);
