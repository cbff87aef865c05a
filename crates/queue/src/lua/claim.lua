-- ARGV[3] consumer, ARGV[4] lease token, ARGV[5] lease ms, ARGV[6] entries already read by a
-- blocking XREADGROUP, comma-separated ('' = read here), ARGV[7] most jobs to take, ARGV[8]
-- retention ms. Returns {entry, id, payload, attempt, max_attempts, deadline ('' for none),
-- trace context ('' for none)} for each job taken, one after another, or {'', ms until the next retry is due (-1: none)} when
-- none was. A job past its deadline is not started: it ends expired.
local now = now_ms()
local want = tonumber(ARGV[7])
-- Promote due retries; a bounded batch keeps the script short and below Lua's unpack limit.
local due = redis.call('ZRANGEBYSCORE', retry, '-inf', now, 'LIMIT', 0, 100)
for _, id in ipairs(due) do
  redis.call('ZREM', retry, id)
  add(id)
end
-- Nothing waits on the stream: jobs due now whose priority still holds them back are taken
-- too, in claim order, rather than leave a worker idle (a bounded look: every job due now is
-- within the greatest handicap of now).
if redis.call('XLEN', stream) - redis.call('XPENDING', stream, group)[1] == 0 then
  local held = redis.call('ZRANGEBYSCORE', retry, '(' .. now, now + MAX_HANDICAP, 'LIMIT', 0, 100)
  local promoted = 0
  for _, id in ipairs(held) do
    if promoted >= want then break end
    if tonumber(redis.call('HGET', jobp .. id, 'run_at') or '0') <= now then
      redis.call('ZREM', retry, id)
      add(id)
      promoted = promoted + 1
    end
  end
end

local out = {}
local function start(entry)
  local e = redis.call('XRANGE', stream, entry, entry)
  local pending = redis.call('XPENDING', stream, group, entry, entry, 1)
  -- Taken back by the reaper since it was read: nothing to start.
  if #pending == 0 then return end
  if #e == 0 then -- deleted while pending: only the PEL slot is left
    redis.call('XACK', stream, group, entry)
    return
  end
  local id = e[1][2][2]
  local key = jobp .. id
  local s = redis.call('HMGET', key, 'status', 'expires_at')
  if s[1] ~= 'queued' then
    drop(entry) -- a left-over entry for a job that finished, expired or runs elsewhere
    return
  end
  if s[2] and tonumber(s[2]) <= now then
    finish(key, id, 'expired', EXPIRED, now, ARGV[8], entry)
    return
  end
  local attempt = redis.call('HINCRBY', key, 'attempts', 1)
  redis.call('HSET', key, 'status', 'running', 'lease', ARGV[4],
    'lease_until', now + tonumber(ARGV[5]), 'started_at', now, 'worker', ARGV[3])
  -- Heartbeats and the reaper use the entry's idle time; take it over for this consumer.
  redis.call('XCLAIM', stream, group, ARGV[3], 0, entry, 'JUSTID')
  local h = redis.call('HMGET', key, 'payload', 'max_attempts', 'trace')
  for _, v in ipairs({entry, id, h[1], tostring(attempt), h[2], s[2] or '', h[3] or ''}) do
    out[#out + 1] = v
  end
end

if ARGV[6] ~= '' then
  for entry in string.gmatch(ARGV[6], '[^,]+') do start(entry) end
end
-- Left-over entries are dropped and more read; a bounded number of reads keeps it short.
for _ = 1, 8 do
  local taken = #out / 7
  if taken >= want then break end
  local r = redis.call('XREADGROUP', 'GROUP', group, ARGV[3], 'COUNT', want - taken,
    'STREAMS', stream, '>')
  if not r then break end
  for _, e in ipairs(r[1][2]) do start(e[1]) end
end
if #out > 0 then return out end
local nxt = redis.call('ZRANGE', retry, 0, 0, 'WITHSCORES')
if nxt[2] then return {'', tostring(math.max(tonumber(nxt[2]) - now, 0))} end
return {'', '-1'}
