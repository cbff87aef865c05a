-- Shared by every script. KEYS: stream, retry zset, done zset, failed zset, dead-letter stream,
-- stall counter, latency histogram hash, latency labels set, cancelled zset, expired zset,
-- deadlines zset (unfinished jobs that have a deadline, by deadline).
-- ARGV[1]: job hash prefix ("{name}:job:"), ARGV[2]: consumer group. All keys share the {name}
-- hash tag, so job hashes built from ARGV[1] live in the same cluster slot as KEYS.
-- Before this file: `bucket_of(ms)`, MAX_LABELS and OTHER, written from Rust's constants
-- (queue/latency.rs), so that the scripts bucket times as the other stores do.
local stream, retry, done_z, failed_z, dlq, stalls_k = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]
local latency_h, labels_s, cancelled_z = KEYS[7], KEYS[8], KEYS[9]
local expired_z, deadlines_z = KEYS[10], KEYS[11]
local jobp, group = ARGV[1], ARGV[2]
-- Idempotency keys: "{name}:key:<key>" holds the id of the job stored under it.
local keyp = string.sub(jobp, 1, #jobp - 4) .. 'key:'
-- The error an expired job carries.
local EXPIRED = 'expired: its deadline passed before it finished'
-- A job of priority p is claimed as if due p * STEP ms later (PRIORITY_STEP); 9 is the most.
local STEP, MAX_HANDICAP = 1000, 9000

-- What every end of a job shares: out of the deadlines, and its key (if any) expiring with it.
local function settle(key, id, retention_ms)
  redis.call('ZREM', deadlines_z, id)
  local k = redis.call('HGET', key, 'key')
  if k then redis.call('PEXPIRE', keyp .. k, retention_ms) end
end

local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- Unfinished jobs: stream entries (waiting or in flight) plus jobs waiting for a retry.
local function backlog()
  return redis.call('XLEN', stream) + redis.call('ZCARD', retry)
end

-- Acknowledge and delete an entry, so the stream holds only waiting and in-flight work.
local function drop(entry)
  redis.call('XACK', stream, group, entry)
  redis.call('XDEL', stream, entry)
end

-- Terminal state: stored once, expires after retention, indexed by finish time for counts/prune.
local function finish(key, id, status, value, now, retention_ms, entry)
  if status == 'done' then
    redis.call('HSET', key, 'status', 'done', 'result', value, 'finished_at', now)
    redis.call('HDEL', key, 'error', 'lease', 'lease_until')
    redis.call('ZADD', done_z, now, id)
  elseif status == 'expired' then
    redis.call('HSET', key, 'status', 'expired', 'error', value, 'finished_at', now)
    redis.call('HDEL', key, 'lease', 'lease_until')
    redis.call('ZREM', retry, id)
    redis.call('ZADD', expired_z, now, id)
  else
    redis.call('HSET', key, 'status', 'failed', 'error', value, 'finished_at', now)
    redis.call('HDEL', key, 'lease', 'lease_until')
    redis.call('ZADD', failed_z, now, id)
    -- The dead-letter stream is a record, not work: trimming it loses nothing that must run.
    redis.call('XADD', dlq, 'MAXLEN', '~', 10000, '*', 'id', id, 'error', value)
  end
  settle(key, id, retention_ms)
  redis.call('PEXPIRE', key, retention_ms)
  if entry ~= '' then drop(entry) end
end

-- Add a job to the stream, and note the entry in its hash (a cancel deletes it).
local function add(id)
  local entry = redis.call('XADD', stream, '*', 'id', id)
  redis.call('HSET', jobp .. id, 'entry', entry)
end

-- Put a job back on the stream as a fresh entry (the old one is acked and deleted).
local function requeue(id, entry)
  if entry ~= '' then drop(entry) end
  add(id)
end

-- Count a job done after `ms` in the histogram: field "<bucket>:<label>" holds the jobs of that
-- bucket and "max:<label>" the longest time. A label is kept while fewer than MAX_LABELS are;
-- after that a new one counts as OTHER. '' (no label) counts in the total only.
local function record_latency(label, ms)
  if label ~= '' and redis.call('SISMEMBER', labels_s, label) == 0 then
    if redis.call('SCARD', labels_s) < MAX_LABELS then
      redis.call('SADD', labels_s, label)
    else
      label = OTHER
    end
  end
  if ms < 0 then ms = 0 end
  redis.call('HINCRBY', latency_h, bucket_of(ms) .. ':' .. label, 1)
  local longest = tonumber(redis.call('HGET', latency_h, 'max:' .. label) or '-1')
  if ms > longest then redis.call('HSET', latency_h, 'max:' .. label, ms) end
end

-- Queue job `id` to run at `due` (unix ms) with its priority: on the stream at once when it is
-- due now and urgent, else in the retry zset by its claim order (due time plus handicap), which
-- the claim promotes.
local function queue_at(id, due, now)
  local key = jobp .. id
  local p = tonumber(redis.call('HGET', key, 'priority') or '0')
  if due <= now and p == 0 then
    add(id)
  else
    redis.call('HSET', key, 'run_at', due)
    redis.call('ZADD', retry, due + p * STEP, id)
  end
end
