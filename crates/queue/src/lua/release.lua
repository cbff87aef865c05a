-- ARGV[3] token, ARGV[4] entry, ARGV[5] id. Gives the job back unrun; the attempt is not counted.
local key = jobp .. ARGV[5]
local h = redis.call('HMGET', key, 'status', 'lease')
if h[1] ~= 'running' or h[2] ~= ARGV[3] then return 0 end
redis.call('HSET', key, 'status', 'queued')
redis.call('HINCRBY', key, 'attempts', -1)
redis.call('HDEL', key, 'lease', 'lease_until')
requeue(ARGV[5], ARGV[4])
return 1
