-- ARGV[3] id, ARGV[4] payload, ARGV[5] max attempts, ARGV[6] backlog cap, ARGV[7] max stalls,
-- ARGV[8] label ('' for none).
-- Returns {1, depth} when stored, {0, depth} when full. Never bounded with MAXLEN: trimming
-- would silently drop jobs that have not run.
local n = backlog()
if n >= tonumber(ARGV[6]) then return {0, n} end
redis.call('HSET', jobp .. ARGV[3], 'status', 'queued', 'payload', ARGV[4], 'attempts', 0,
  'max_attempts', ARGV[5], 'stalls', 0, 'max_stalls', ARGV[7], 'enqueued_at', now_ms())
if ARGV[8] ~= '' then redis.call('HSET', jobp .. ARGV[3], 'label', ARGV[8]) end
add(ARGV[3])
return {1, n + 1}
