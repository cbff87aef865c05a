// A Worker thread's whole life in node:worker: count one chunk, post the result, exit.

'use strict';

const { parentPort, workerData } = require('node:worker_threads');
const { count } = require('./count');

const started = performance.timeOrigin + performance.now();
const result = count(workerData.len);
parentPort.postMessage({ result, started, ended: performance.timeOrigin + performance.now() });
