-- ARGV[3] reaper consumer, ARGV[4] min idle ms, ARGV[5] retention ms. Takes stalled entries
-- with XAUTOCLAIM; the job hash's lease_until decides. Returns how many jobs were moved.
local now = now_ms()
local moved = 0
local r = redis.call('XAUTOCLAIM', stream, group, ARGV[3], ARGV[4], '0-0', 'COUNT', 100)
for _, e in ipairs(r[2]) do
  local entry = e[1]
  local id = e[2] and e[2][2]
  if id then
    local key = jobp .. id
    local h = redis.call('HMGET', key, 'status', 'lease_until', 'attempts', 'max_attempts')
    if h[1] == 'running' then
      -- A lease still current (longer than min idle) is left alone: its holder's next
      -- heartbeat takes the entry back.
      if tonumber(h[2]) < now then
        moved = moved + 1
        local attempts, max = tonumber(h[3]), tonumber(h[4])
        local err = 'lease expired (worker died or hung) on attempt ' .. attempts .. ' of ' .. max
        if attempts >= max then
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
