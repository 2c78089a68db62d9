-- KEYS[1] = the models with jobs waiting (pacing), read only
-- ARGV[1] = keys.PACE_PREFIX
-- ARGV[2] = keys.PACE_TENANTS
-- ARGV[3] = keys.PACE_QUEUE
-- ARGV[4] = keys.PACE_BATCH_TENANTS
-- ARGV[5] = keys.PACE_BATCH_QUEUE
--
-- Per model: the jobs waiting in its queues, due now or later. Writes nothing.
local out = {}
for _, model in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  local prefix = ARGV[1] .. model
  local waiting = 0
  for _, tenant in ipairs(redis.call('ZRANGE', prefix .. ARGV[2], 0, -1)) do
    waiting = waiting + redis.call('ZCARD', prefix .. ARGV[3] .. tenant)
  end
  for _, tenant in ipairs(redis.call('ZRANGE', prefix .. ARGV[4], 0, -1)) do
    waiting = waiting + redis.call('ZCARD', prefix .. ARGV[5] .. tenant)
  end
  table.insert(out, model)
  table.insert(out, waiting)
end
return out
