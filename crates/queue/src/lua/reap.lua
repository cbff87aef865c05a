-- ARGV[3] reaper consumer, ARGV[4] min idle ms, ARGV[5] retention ms, ARGV[6] max stalls for
-- jobs stored before stalls were counted. Takes stalled entries
-- with XAUTOCLAIM; the job hash's lease_until decides. Returns how many jobs were moved.
local now = now_ms()
local moved = 0
-- Jobs past their deadline: a queued one ends expired (its entry, read or not, dropped); a
-- running one is left to its worker, which stops it and stores it expired (or, if the worker
-- died, the claim that finds it queued again does). A bounded batch keeps the script short.
for _, id in ipairs(redis.call('ZRANGEBYSCORE', deadlines_z, '-inf', now, 'LIMIT', 0, 100)) do
  local key = jobp .. id
  local h = redis.call('HMGET', key, 'status', 'entry')
  redis.call('ZREM', deadlines_z, id)
  if h[1] == 'queued' then
    redis.call('HDEL', key, 'entry')
    finish(key, id, 'expired', EXPIRED, now, ARGV[5], h[2] or '')
  end
end
local r = redis.call('XAUTOCLAIM', stream, group, ARGV[3], ARGV[4], '0-0', 'COUNT', 100)
for _, e in ipairs(r[2]) do
  local entry = e[1]
  local id = e[2] and e[2][2]
  if id then
    local key = jobp .. id
    local h = redis.call('HMGET', key, 'status', 'lease_until', 'stalls', 'max_stalls')
    if h[1] == 'running' then
      -- A lease still current (longer than min idle) is left alone: its holder's next
      -- heartbeat takes the entry back.
      if tonumber(h[2]) < now then
        moved = moved + 1
        -- A stall, not a failure: the attempt is given back and the stall counted apart.
        local stalls = redis.call('HINCRBY', key, 'stalls', 1)
        redis.call('HINCRBY', key, 'attempts', -1)
        redis.call('INCR', stalls_k)
        local max = tonumber(h[4]) or tonumber(ARGV[6])
        local err = 'lost with its worker (lease expired) ' .. stalls .. ' time(s) of ' .. max
          .. ' allowed'
        if stalls >= max then
          finish(key, id, 'failed', err, now, ARGV[5], entry)
        else
          redis.call('HSET', key, 'status', 'queued', 'error', err)
          redis.call('HDEL', key, 'lease', 'lease_until')
          requeue(id, entry)
        end
      end
    elseif h[1] == 'queued' then
      -- Read by a worker that died before starting it: deliver it again.
      moved = moved + 1
      requeue(id, entry)
    else
      drop(entry) -- finished or expired: a left-over entry
    end
  end
end
return moved
