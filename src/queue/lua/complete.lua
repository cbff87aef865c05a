-- ARGV[3] token, ARGV[4] entry, ARGV[5] id, ARGV[6] 'ok' | 'retry' | 'fatal', ARGV[7] result or
-- error, ARGV[8] retry delay ms, ARGV[9] retention ms. Only the current lease holder may write.
local key = jobp .. ARGV[5]
local h = redis.call('HMGET', key, 'status', 'lease', 'attempts', 'max_attempts')
if h[1] ~= 'running' or h[2] ~= ARGV[3] then return 'refused' end
local now = now_ms()
if ARGV[6] == 'ok' then
  finish(key, ARGV[5], 'done', ARGV[7], now, ARGV[9], ARGV[4])
  return 'done'
end
if ARGV[6] == 'retry' and tonumber(h[3]) < tonumber(h[4]) then
  redis.call('HSET', key, 'status', 'queued', 'error', ARGV[7])
  redis.call('HDEL', key, 'lease', 'lease_until')
  redis.call('ZADD', retry, now + tonumber(ARGV[8]), ARGV[5])
  drop(ARGV[4])
  return 'retrying'
end
finish(key, ARGV[5], 'failed', ARGV[7], now, ARGV[9], ARGV[4])
return 'failed'
