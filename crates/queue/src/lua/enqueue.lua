-- ARGV[3] id, ARGV[4] payload, ARGV[5] max attempts, ARGV[6] backlog cap, ARGV[7] max stalls,
-- ARGV[8] label ('' for none), ARGV[9] idempotency key ('' for none), ARGV[10] deadline in unix
-- ms ('' for none), ARGV[11] due time in unix ms ('' for now), ARGV[12] priority (0 to 9),
-- ARGV[13] trace context ('' for none).
-- Returns {1, depth} when stored, {0, depth} when full, {2, id} when a job with the same
-- payload holds the key (nothing stored), {3, id} when one with another payload does. Never
-- bounded with MAXLEN: trimming would silently drop jobs that have not run.
local kk = ''
if ARGV[9] ~= '' then
  kk = keyp .. ARGV[9]
  local held = redis.call('GET', kk)
  if held then
    local payload = redis.call('HGET', jobp .. held, 'payload')
    -- A key whose job has expired with its retention is free.
    if payload == ARGV[4] then return {2, held} end
    if payload then return {3, held} end
  end
end
local n = backlog()
if n >= tonumber(ARGV[6]) then return {0, n} end
local key = jobp .. ARGV[3]
local now = now_ms()
redis.call('HSET', key, 'status', 'queued', 'payload', ARGV[4], 'attempts', 0,
  'max_attempts', ARGV[5], 'stalls', 0, 'max_stalls', ARGV[7], 'enqueued_at', now)
if ARGV[12] ~= '0' then redis.call('HSET', key, 'priority', ARGV[12]) end
if ARGV[8] ~= '' then redis.call('HSET', key, 'label', ARGV[8]) end
if ARGV[13] ~= '' then redis.call('HSET', key, 'trace', ARGV[13]) end
if kk ~= '' then
  redis.call('HSET', key, 'key', ARGV[9])
  redis.call('SET', kk, ARGV[3])
end
if ARGV[10] ~= '' then
  redis.call('HSET', key, 'expires_at', ARGV[10])
  redis.call('ZADD', deadlines_z, ARGV[10], ARGV[3])
end
queue_at(ARGV[3], math.max(tonumber(ARGV[11]) or now, now), now)
return {1, n + 1}
