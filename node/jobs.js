// What the BullMQ gateway and its workers share: the Redis connection, the queue's name, the
// job options (retries, retention), and the key where workers count stalls.

'use strict';

const IORedis = require('ioredis');
const { setting } = require('./common');

const redisUrl = setting('redis', 'REDIS_URL', 'redis://127.0.0.1:6379');
const queueName = setting('queue-name', 'OFFLOAD_QUEUE_NAME', 'offload-node');
// Finished jobs kept for `/jobs/{id}` and `/jobs?latency=N`: as many as the bench asks
// `/jobs?latency=N` for, and a bound on Redis's memory (BullMQ keeps them all when unset).
const RETAIN = 100_000;
// Runs and stalls a job gets: offload's worker defaults are 3 attempts; BullMQ fails a job
// that stalled more than `maxStalledCount` times (its default: 1).
const ATTEMPTS = 3;
const MAX_STALLS = 1;

const JOB_OPTIONS = {
  attempts: ATTEMPTS,
  backoff: { type: 'exponential', delay: 1000 },
  removeOnComplete: { count: RETAIN },
  removeOnFail: { count: RETAIN },
};

// BullMQ's workers must retry Redis commands forever (its docs: maxRetriesPerRequest null);
// the gateway fails a request fast instead.
function connection(worker) {
  return new IORedis(redisUrl, worker ? { maxRetriesPerRequest: null } : { maxRetriesPerRequest: 1 });
}

// A counter of runs lost with their worker: BullMQ reports a stall as an event, not a state.
const stallsKey = `bull:${queueName}:offload-stalls`;

module.exports = { ATTEMPTS, JOB_OPTIONS, MAX_STALLS, RETAIN, connection, queueName, stallsKey };
