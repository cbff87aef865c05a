-- ARGV[3] retention ms. Job hashes expire by TTL; this trims the indexes and the dead letters,
-- and deletes consumers (one per worker ever started) that hold nothing and were idle longer
-- than the retention: a consumer with pending entries is never deleted, or they would be lost.
local retention = tonumber(ARGV[3])
local cutoff = now_ms() - retention
local n = redis.call('ZREMRANGEBYSCORE', done_z, '-inf', '(' .. cutoff)
  + redis.call('ZREMRANGEBYSCORE', failed_z, '-inf', '(' .. cutoff)
  + redis.call('ZREMRANGEBYSCORE', cancelled_z, '-inf', '(' .. cutoff)
  + redis.call('ZREMRANGEBYSCORE', expired_z, '-inf', '(' .. cutoff)
redis.call('XTRIM', dlq, 'MINID', cutoff)
for _, c in ipairs(redis.call('XINFO', 'CONSUMERS', stream, group)) do
  local info = {}
  for i = 1, #c, 2 do info[c[i]] = c[i + 1] end
  if info['pending'] == 0 and info['idle'] > retention then
    redis.call('XGROUP', 'DELCONSUMER', stream, group, info['name'])
  end
end
return n
