// What the five servers share: their settings, the work spec (parsed as strictly as offload
// parses it, so a bad request gets the same 400), the count loop's chunks, the JSON error
// body, `/health`, and the "listening on" line offload's bench reads to find a server.

'use strict';

const os = require('node:os');
const express = require('express');

// The seed's workload: 20 million iterations (`GET /heavy` with no query).
const DEFAULT_COUNT = 20_000_000;
// offload's own bound (`--max-count`): 2e9 iterations are seconds of one core, never hours.
const DEFAULT_MAX_COUNT = 2_000_000_000;
// offload's `--max-body` default: a work spec is a few dozen bytes.
const MAX_BODY = 16 * 1024;

// A setting from `--name value`, else the environment variable, else the default.
function setting(name, env, fallback) {
  const args = process.argv.slice(2);
  const i = args.indexOf(`--${name}`);
  if (i >= 0 && i + 1 < args.length) return args[i + 1];
  if (process.env[env] !== undefined && process.env[env] !== '') return process.env[env];
  return fallback;
}

// A whole-number setting of at least `min`; a bad one stops the server before it listens.
function intSetting(name, env, fallback, min = 1) {
  const raw = String(setting(name, env, fallback));
  const v = Number(raw);
  if (!/^\d+$/.test(raw) || !Number.isSafeInteger(v) || v < min) {
    console.error(`--${name} (${env}) must be a whole number of at least ${min}: got ${JSON.stringify(raw)}`);
    process.exit(2);
  }
  return v;
}

const settings = {
  bind: setting('bind', 'OFFLOAD_BIND', '127.0.0.1'),
  port: intSetting('port', 'OFFLOAD_PORT', 3000, 0),
  maxCount: intSetting('max-count', 'OFFLOAD_MAX_COUNT', DEFAULT_MAX_COUNT),
  cores: os.availableParallelism(),
};

// A client's mistake or a refusal, answered as `{"error": {"code", "message"}}`.
class ApiError extends Error {
  constructor(status, code, message, retryAfter) {
    super(message);
    this.status = status;
    this.code = code;
    this.retryAfter = retryAfter;
  }
}

const bad = (code, message) => new ApiError(400, code, message);
// Echoes at most 64 characters of client input back, as offload does.
const echo = (s) => JSON.stringify(String(s).slice(0, 64));

// The work as `{work: 'count', n}`, from its two optional fields.
function assemble(work, n) {
  if (work === undefined && n === undefined) return { work: 'count', n: DEFAULT_COUNT };
  if (work !== undefined && n === undefined) throw bad('missing_n', '`n` is required when `work` is given');
  if (work !== undefined && work !== 'count') {
    if (work === 'primes' || work === 'hash') {
      throw bad('unsupported_work', `work ${echo(work)} is offload's only: the seed's Node servers run count`);
    }
    throw bad('unknown_work', `unknown work ${echo(work)}: expected count`);
  }
  if (n === 0) throw bad('invalid_n', '`n` must be a whole number from 1 up: got 0');
  if (n > settings.maxCount) {
    throw bad('n_too_large', `\`n\` = ${n} is over the limit for count: at most ${settings.maxCount}`);
  }
  return { work: 'count', n };
}

// Strict decimal: digits only, no sign, no spaces, no exponent.
function parseN(text) {
  const v = Number(text);
  if (!/^\d+$/.test(text)) throw bad('invalid_n', `\`n\` must be a whole number from 1 up: got ${echo(text)}`);
  if (!Number.isSafeInteger(v)) throw bad('invalid_n', `\`n\` must be a whole number from 1 up: got ${echo(text)}, too large`);
  return v;
}

// `work=...&n=...` from the raw query string (Express's parsed `req.query` would merge
// repeated keys into arrays; offload rejects them).
function workFromQuery(url) {
  const at = url.indexOf('?');
  const params = new URLSearchParams(at < 0 ? '' : url.slice(at + 1));
  let work;
  let n;
  for (const [key, value] of params) {
    if (key === 'work') {
      if (work !== undefined) throw bad('duplicate_field', 'field "work" given more than once');
      work = value;
    } else if (key === 'n') {
      if (n !== undefined) throw bad('duplicate_field', 'field "n" given more than once');
      n = parseN(value);
    } else {
      throw bad('unknown_field', `unknown field ${echo(key)}: expected \`work\` and \`n\``);
    }
  }
  return assemble(work, n);
}

// `{"work": "count", "n": N}` from a parsed JSON body.
function workFromJson(body) {
  if (body === null || typeof body !== 'object' || Array.isArray(body)) {
    throw bad('malformed_json', 'the body must be a JSON object');
  }
  let work;
  let n;
  for (const [key, value] of Object.entries(body)) {
    if (key === 'work') {
      if (typeof value !== 'string') throw bad('invalid_work', '`work` must be a string');
      work = value;
    } else if (key === 'n') {
      if (typeof value !== 'number') throw bad('invalid_n', `\`n\` must be a whole number from 1 up: got ${value === null ? 'null' : typeof value}, not a number`);
      if (!Number.isSafeInteger(value) || value < 0) throw bad('invalid_n', `\`n\` must be a whole number from 1 up: got ${value}`);
      n = value;
    } else {
      throw bad('unknown_field', `unknown field ${echo(key)}: expected \`work\` and \`n\``);
    }
  }
  return assemble(work, n);
}

// Splits n units into at most k near-equal chunks (fewer when n < k), as offload's
// `Work::chunks` does: `[start, len]` pairs.
function chunks(n, k) {
  const parts = Math.max(1, Math.min(k, n));
  const base = Math.floor(n / parts);
  const extra = n % parts;
  const out = [];
  let start = 0;
  for (let i = 0; i < parts; i++) {
    const len = base + (i < extra ? 1 : 0);
    out.push([start, len]);
    start += len;
  }
  return out;
}

// Wall-clock milliseconds with sub-millisecond resolution, comparable across threads.
const nowMs = () => performance.timeOrigin + performance.now();
const us = (ms) => Math.max(0, Math.round(ms * 1000));

// The `200` answer of `/heavy`, field for field offload's `HeavyAnswer`.
function answer(strategy, work, result, handedOffMs, firstStartMs, lastEndMs) {
  return {
    strategy,
    work: work.work,
    n: work.n,
    result,
    wait_us: us(firstStartMs - handedOffMs),
    run_us: us(lastEndMs - firstStartMs),
  };
}

// An Express app with `/health`, JSON bodies bounded at MAX_BODY, `GET /heavy` and
// `POST /heavy` calling `run(work)` (which answers with a status and a body), and every
// error as offload's JSON error body.
function app(strategy, run, extra) {
  const a = express();
  a.disable('x-powered-by');
  a.disable('etag');
  a.get('/health', (_req, res) => res.json({ status: 'ok', strategy }));
  const heavy = (work, res, next) => {
    Promise.resolve()
      .then(() => run(work))
      .then(({ status, body, headers }) => {
        if (headers) res.set(headers);
        res.status(status).json(body);
      })
      .catch(next);
  };
  a.get('/heavy', (req, res, next) => {
    let work;
    try {
      work = workFromQuery(req.originalUrl);
    } catch (e) {
      return next(e);
    }
    heavy(work, res, next);
  });
  a.post(
    '/heavy',
    (req, _res, next) => (req.is('application/json') ? next() : next(new ApiError(415, 'unsupported_media_type', 'content-type must be application/json'))),
    express.json({ limit: MAX_BODY, strict: false }),
    (req, res, next) => {
      let work;
      try {
        work = workFromJson(req.body);
      } catch (e) {
        return next(e);
      }
      heavy(work, res, next);
    },
  );
  if (extra) extra(a);
  a.use((req, _res, next) => next(new ApiError(404, 'not_found', `no route for ${req.path.slice(0, 128)}`)));
  // Express's error handler shape: four arguments.
  a.use((err, _req, res, _next) => {
    let e = err;
    if (!(e instanceof ApiError)) {
      if (e.type === 'entity.too.large') e = new ApiError(413, 'body_too_large', `the request body is over the limit of ${MAX_BODY} bytes`);
      else if (e.type === 'entity.parse.failed') e = bad('malformed_json', `malformed JSON: ${e.message}`);
      else if (e.status >= 400 && e.status < 500) e = new ApiError(e.status, 'bad_body', `the request body could not be read: ${e.message}`);
      else {
        console.error(`${strategy}: request failed: ${e.stack || e}`);
        e = new ApiError(500, 'internal', 'the work failed on the server');
      }
    }
    if (e.status === 503) res.set('Retry-After', String(e.retryAfter ?? 1));
    res.status(e.status).json({ error: { code: e.code, message: e.message } });
  });
  return a;
}

// Listens, then prints the line offload's bench waits for:
// `offload node: listening on http://ADDR (strategy NAME)`.
function listen(a, strategy, onClose) {
  const server = a.listen(settings.port, settings.bind, () => {
    const { address, port } = server.address();
    const host = address.includes(':') ? `[${address}]` : address;
    console.log(`offload node: listening on http://${host}:${port} (strategy ${strategy})`);
  });
  // Keep-alive longer than any client's idle gap in a run (Node's default is 5 s).
  server.keepAliveTimeout = 65_000;
  server.on('error', (e) => {
    console.error(`${strategy}: cannot listen on ${settings.bind}:${settings.port}: ${e.message}`);
    process.exit(1);
  });
  // SIGTERM: stop taking connections and leave; work in hand (threads included) ends with
  // the process, as the seed's servers did.
  const stop = () => {
    server.close();
    server.closeAllConnections();
    Promise.resolve(onClose && onClose()).finally(() => process.exit(0));
  };
  process.once('SIGTERM', stop);
  process.once('SIGINT', stop);
  return server;
}

module.exports = {
  ApiError,
  answer,
  app,
  chunks,
  intSetting,
  listen,
  nowMs,
  setting,
  settings,
  workFromJson,
  workFromQuery,
};
