-- ARGV[3] status, ARGV[4] most jobs, ARGV[5] cursor time ('' = from the newest), ARGV[6]
-- cursor tie-break, ARGV[7] retention ms. A page of job ids, newest first. Finished jobs: their
-- set by finish time (members of one ms newest id first). Queued jobs: those waiting for a
-- retry by due time (tie-break: the job id), then the stream's entries, newest first
-- (tie-break: the entry id, which holds a '-'); running jobs: the stream's entries whose job
-- runs. Returns {last time, last tie-break, 1 if the page is full, id...}.
local status, limit = ARGV[3], tonumber(ARGV[4])
local ct, ctie = tonumber(ARGV[5]), ARGV[6]
local out = {}
local last_t, last_tie = '', ''
local function take(id, t, tie)
  out[#out + 1] = id
  last_t, last_tie = t, tie
end
local function full() return #out >= limit end

-- Members of zset `z` below the cursor, newest first, down to score `floor`.
local function by_score(z, floor)
  local max = '+inf'
  if ct then
    local same = redis.call('ZRANGEBYSCORE', z, ct, ct)
    for i = #same, 1, -1 do
      if full() then return end
      if same[i] < ctie then take(same[i], ct, same[i]) end
    end
    max = '(' .. ct
  end
  if full() then return end
  local r = redis.call('ZREVRANGEBYSCORE', z, max, floor, 'WITHSCORES', 'LIMIT', 0, limit - #out)
  for i = 1, #r, 2 do take(r[i], tonumber(r[i + 1]), r[i]) end
end

-- Stream entries below the cursor whose job has `want` as its status, newest first.
local function by_entry(want)
  local from = '+'
  if ctie and string.find(ctie, '-', 1, true) then from = '(' .. ctie end
  while not full() do
    local r = redis.call('XREVRANGE', stream, from, '-', 'COUNT', 100)
    if #r == 0 then return end
    for _, e in ipairs(r) do
      local id = e[2][2]
      if redis.call('HGET', jobp .. id, 'status') == want then
        take(id, tonumber(string.match(e[1], '^(%d+)')), e[1])
        if full() then return end
      end
    end
    from = '(' .. r[#r][1]
  end
end

local finished = {done = done_z, failed = failed_z, cancelled = cancelled_z, expired = expired_z}
if finished[status] then
  by_score(finished[status], now_ms() - tonumber(ARGV[7]))
elseif status == 'queued' then
  -- A cursor in the stream has passed the jobs waiting for a retry.
  if not (ctie and string.find(ctie, '-', 1, true)) then by_score(retry, '-inf') end
  if not full() then
    ct, ctie = nil, (ctie and string.find(ctie, '-', 1, true)) and ctie or nil
    by_entry('queued')
  end
else
  by_entry('running')
end
return {tostring(last_t), last_tie, full() and 1 or 0, unpack(out)}
