-- KEYS[1] = the batches due a look (batches)
-- ARGV[1] = now (Unix seconds)
-- ARGV[2] = when to look again (Unix seconds)
-- ARGV[3] = how many at most
-- ARGV[4] = keys.BATCH_PREFIX
-- ARGV[5] = keys.BATCH_LOCK_SUFFIX
--
-- Batches due a look whose lock nobody holds (its holder died, or a wake-up message was
-- lost): each is looked at again later and returned, for the sweeper to queue its task. A
-- held or a gone one is only moved on or dropped.
local out = {}
for _, id in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, ARGV[3])) do
  if redis.call('EXISTS', ARGV[4] .. id) == 0 then
    redis.call('ZREM', KEYS[1], id)
  else
    redis.call('ZADD', KEYS[1], ARGV[2], id)
    if redis.call('EXISTS', ARGV[4] .. id .. ARGV[5]) == 0 then table.insert(out, id) end
  end
end
return out
