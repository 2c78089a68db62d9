-- KEYS[1] = a tenant's index of ids at score 0, ordered by id (jobs, files or batches)
-- ARGV[1] = the prefix of their records' keys (keys.JOB_PREFIX, FILE_PREFIX, BATCH_PREFIX)
-- ARGV[2] = how many ids to look at, at most
--
-- Drops ids whose record has expired from the index's oldest end, up to the first that is
-- still there (records expire about in the order they were made); how many it dropped.
local removed = 0
for _, id in ipairs(redis.call('ZRANGE', KEYS[1], 0, tonumber(ARGV[2]) - 1)) do
  if redis.call('EXISTS', ARGV[1] .. id) == 1 then break end
  redis.call('ZREM', KEYS[1], id)
  removed = removed + 1
end
return removed
