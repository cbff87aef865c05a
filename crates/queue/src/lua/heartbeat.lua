-- ARGV[3] consumer, ARGV[4] token, ARGV[5] lease ms, ARGV[6] entry, ARGV[7] id. 1: extended.
local key = jobp .. ARGV[7]
local h = redis.call('HMGET', key, 'status', 'lease')
if h[1] ~= 'running' or h[2] ~= ARGV[4] then return 0 end
redis.call('HSET', key, 'lease_until', now_ms() + tonumber(ARGV[5]))
-- Resets the entry's idle time without raising its delivery count.
redis.call('XCLAIM', stream, group, ARGV[3], 0, ARGV[6], 'JUSTID')
return 1
