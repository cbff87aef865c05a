-- ARGV[3] consumer, ARGV[4] lease token, ARGV[5] lease ms, ARGV[6] entry already read by a
-- blocking XREADGROUP ('' = read here). Returns {entry, id, payload, attempt, max_attempts}, or
-- {'', ms until the next retry is due (-1: none)}.
local now = now_ms()
-- Promote due retries; a bounded batch keeps the script short and below Lua's unpack limit.
local due = redis.call('ZRANGEBYSCORE', retry, '-inf', now, 'LIMIT', 0, 100)
for _, id in ipairs(due) do
  redis.call('ZREM', retry, id)
  redis.call('XADD', stream, '*', 'id', id)
end

local function start(entry)
  local e = redis.call('XRANGE', stream, entry, entry)
  local pending = redis.call('XPENDING', stream, group, entry, entry, 1)
  -- Taken back by the reaper since it was read: nothing to start.
  if #pending == 0 then return nil end
  if #e == 0 then -- deleted while pending: only the PEL slot is left
    redis.call('XACK', stream, group, entry)
    return nil
  end
  local id = e[1][2][2]
  local key = jobp .. id
  if redis.call('HGET', key, 'status') ~= 'queued' then
    drop(entry) -- a left-over entry for a job that finished, expired or runs elsewhere
    return nil
  end
  local attempt = redis.call('HINCRBY', key, 'attempts', 1)
  redis.call('HSET', key, 'status', 'running', 'lease', ARGV[4],
    'lease_until', now + tonumber(ARGV[5]), 'started_at', now, 'worker', ARGV[3])
  -- Heartbeats and the reaper use the entry's idle time; take it over for this consumer.
  redis.call('XCLAIM', stream, group, ARGV[3], 0, entry, 'JUSTID')
  local h = redis.call('HMGET', key, 'payload', 'max_attempts')
  return {entry, id, h[1], tostring(attempt), h[2]}
end

if ARGV[6] ~= '' then
  local got = start(ARGV[6])
  if got then return got end
else
  -- A few tries: left-over entries are dropped and the next one read.
  for _ = 1, 8 do
    local r = redis.call('XREADGROUP', 'GROUP', group, ARGV[3], 'COUNT', 1, 'STREAMS', stream, '>')
    if not r then break end
    local got = start(r[1][2][1][1])
    if got then return got end
  end
end
local nxt = redis.call('ZRANGE', retry, 0, 0, 'WITHSCORES')
if nxt[2] then return {'', tostring(math.max(tonumber(nxt[2]) - now, 0))} end
return {'', '-1'}
