-- ARGV[3] retention ms. Returns {queued, running, done, failed, stalls ever, cancelled,
-- expired}.
local cutoff = now_ms() - tonumber(ARGV[3])
local pending = redis.call('XPENDING', stream, group)[1]
local queued = redis.call('XLEN', stream) - pending + redis.call('ZCARD', retry)
return {queued, pending, redis.call('ZCOUNT', done_z, cutoff, '+inf'),
  redis.call('ZCOUNT', failed_z, cutoff, '+inf'), tonumber(redis.call('GET', stalls_k) or '0'),
  redis.call('ZCOUNT', cancelled_z, cutoff, '+inf'), redis.call('ZCOUNT', expired_z, cutoff, '+inf')}
