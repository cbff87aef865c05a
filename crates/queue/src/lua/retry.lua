-- ARGV[3] id, ARGV[4] backlog cap. Queues a failed, cancelled or expired job again: fresh
-- attempts and stalls, no deadline, its hash's (and key's) expiry removed, out of the finished
-- indexes, a new stream entry. Only if the backlog has room. Returns {status before ('' for no
-- such job), 1 if queued, backlog}.
local id = ARGV[3]
local key = jobp .. id
local status = redis.call('HGET', key, 'status')
if not status then return {'', 0, 0} end
local n = backlog()
if status ~= 'failed' and status ~= 'cancelled' and status ~= 'expired' then
  return {status, 0, n}
end
if n >= tonumber(ARGV[4]) then return {status, 0, n} end
redis.call('PERSIST', key)
local k = redis.call('HGET', key, 'key')
if k then redis.call('PERSIST', keyp .. k) end
redis.call('HSET', key, 'status', 'queued', 'attempts', 0, 'stalls', 0)
redis.call('HDEL', key, 'finished_at', 'lease', 'lease_until', 'expires_at')
redis.call('ZREM', failed_z, id)
redis.call('ZREM', cancelled_z, id)
redis.call('ZREM', expired_z, id)
queue_at(id, now_ms(), now_ms())
return {status, 1, n + 1}
