// node:inline: the count loop right in the Express handler, on the event loop. Nothing else
// is served while it runs: the stall the article starts from (offload's `inline`).

'use strict';

const { answer, app, listen, nowMs } = require('./common');
const { count } = require('./count');

const STRATEGY = 'node:inline';

listen(
  app(STRATEGY, (work) => {
    const start = nowMs();
    const result = count(work.n);
    return { status: 200, body: answer(STRATEGY, work, result, start, start, nowMs()) };
  }),
  STRATEGY,
);
