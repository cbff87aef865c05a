-- ARGV[3] retention ms. Job hashes expire by TTL; this trims the indexes and the dead letters.
local cutoff = now_ms() - tonumber(ARGV[3])
local n = redis.call('ZREMRANGEBYSCORE', done_z, '-inf', '(' .. cutoff)
  + redis.call('ZREMRANGEBYSCORE', failed_z, '-inf', '(' .. cutoff)
redis.call('XTRIM', dlq, 'MINID', cutoff)
return n
