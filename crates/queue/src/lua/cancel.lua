-- ARGV[3] id, ARGV[4] retention ms. Ends a queued (or retry-waiting) or running job as
-- 'cancelled': its stream entry acked and deleted (pending or not), out of the retry zset, its
-- lease cleared (the running worker's next heartbeat is refused), indexed by finish time and
-- expiring after the retention. Returns {status before ('' for no such job), 1 if cancelled}.
local id = ARGV[3]
local key = jobp .. id
local h = redis.call('HMGET', key, 'status', 'entry')
local status = h[1]
if not status then return {'', 0} end
if status ~= 'queued' and status ~= 'running' then return {status, 0} end
local now = now_ms()
redis.call('HSET', key, 'status', 'cancelled', 'finished_at', now)
redis.call('HDEL', key, 'lease', 'lease_until', 'entry')
redis.call('ZREM', retry, id)
if h[2] then drop(h[2]) end
redis.call('ZADD', cancelled_z, now, id)
settle(key, id, ARGV[4])
redis.call('PEXPIRE', key, tonumber(ARGV[4]))
return {status, 1}
