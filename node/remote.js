// node:remote: an Express gateway that forwards each request to `offload compute` (the Rust
// service: axum + rayon), as the seed's third server did with `fetch`. The gateway adds no
// admission of its own: what the compute service refuses (503, with its Retry-After) is
// passed on, and a service that cannot be reached is a 502 (offload's `remote` queues and
// balances instead).

'use strict';

const { ApiError, answer, app, intSetting, listen, nowMs, setting } = require('./common');

const STRATEGY = 'node:remote';
const compute = setting('compute', 'OFFLOAD_COMPUTE', 'http://127.0.0.1:3001').replace(/\/+$/, '');
// offload's gateway --timeout default: a request waits this long for the compute service.
const timeoutMs = intSetting('timeout-ms', 'OFFLOAD_TIMEOUT_MS', 30_000);

listen(
  app(STRATEGY, async (work) => {
    const handedOff = nowMs();
    let res;
    try {
      res = await fetch(`${compute}/compute`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ work: work.work, n: work.n }),
        signal: AbortSignal.timeout(timeoutMs),
      });
    } catch (e) {
      if (e.name === 'TimeoutError') throw new ApiError(504, 'deadline_exceeded', 'the deadline passed before the work finished');
      console.error(`${STRATEGY}: compute service unreachable: ${e.cause?.message || e.message}`);
      throw new ApiError(502, 'bad_gateway', 'the compute service could not be reached or failed');
    }
    const text = await res.text();
    let body;
    try {
      body = JSON.parse(text);
    } catch {
      throw new ApiError(502, 'bad_gateway', 'the compute service could not be reached or failed');
    }
    if (res.status !== 200) {
      // Its own error body and status (503 with Retry-After when full), passed on as is.
      const e = body && body.error ? body.error : { code: 'bad_gateway', message: 'the compute service failed' };
      throw new ApiError(res.status, e.code, e.message, res.headers.get('retry-after') ?? undefined);
    }
    const ran = nowMs();
    // The compute service's own wait and run, as it measured them; the gateway's hop is the
    // rest of the client's latency.
    const a = answer(STRATEGY, work, body.result, handedOff, handedOff, ran);
    a.wait_us = body.wait_us;
    a.run_us = body.run_us;
    return { status: 200, body: a };
  }),
  STRATEGY,
);
