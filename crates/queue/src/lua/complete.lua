-- ARGV[3] retention ms, then for each outcome six values: token, entry, id, 'ok' | 'retry' |
-- 'fatal', result or error, retry delay ms. Only the current lease holder may write. Returns
-- one of 'done', 'retrying', 'failed', 'expired', 'refused' per outcome, in order: a run that
-- failed at or past its job's deadline ends the job expired.
local now = now_ms()
local retention = ARGV[3]
local out = {}
for i = 4, #ARGV, 6 do
  local token, entry, id, kind, value, delay =
    ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3], ARGV[i + 4], ARGV[i + 5]
  local key = jobp .. id
  local h = redis.call('HMGET', key, 'status', 'lease', 'attempts', 'max_attempts',
    'enqueued_at', 'label', 'expires_at')
  if h[1] ~= 'running' or h[2] ~= token then
    out[#out + 1] = 'refused'
  elseif kind == 'ok' then
    finish(key, id, 'done', value, now, retention, entry)
    record_latency(h[6] or '', now - (tonumber(h[5]) or now))
    out[#out + 1] = 'done'
  elseif h[7] and tonumber(h[7]) <= now then
    finish(key, id, 'expired', EXPIRED .. ' (last run: ' .. value .. ')', now, retention, entry)
    out[#out + 1] = 'expired'
  elseif kind == 'retry' and tonumber(h[3]) < tonumber(h[4]) then
    redis.call('HSET', key, 'status', 'queued', 'error', value)
    redis.call('HDEL', key, 'lease', 'lease_until', 'entry')
    drop(entry)
    queue_at(id, now + tonumber(delay), now)
    out[#out + 1] = 'retrying'
  else
    finish(key, id, 'failed', value, now, retention, entry)
    out[#out + 1] = 'failed'
  end
end
return out
