-- KEYS[1] = the models with jobs waiting (pacing)
-- ARGV[1] = now (Unix seconds)
-- ARGV[2] = keys.PACE_PREFIX
-- ARGV[3] = keys.PACE_TICKETS
-- ARGV[4] = keys.PACE_TENANTS
-- ARGV[5] = keys.PACE_QUEUE
-- ARGV[6] = keys.PACE_BATCH_TENANTS
-- ARGV[7] = keys.PACE_BATCH_QUEUE
--
-- Per model with jobs waiting: due jobs, live tickets, and registrations that expired
-- (their worker died), which are removed so that each is reported once. A model with no
-- tenant left leaves the set of models.
local out = {}
for _, model in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  local prefix = ARGV[2] .. model
  local lost = redis.call('ZREMRANGEBYSCORE', prefix .. ARGV[3], '-inf', ARGV[1])
  local tenants = redis.call('ZRANGE', prefix .. ARGV[4], 0, -1)
  local lines = redis.call('ZRANGE', prefix .. ARGV[6], 0, -1)
  if #tenants == 0 and #lines == 0 then
    redis.call('SREM', KEYS[1], model)
  else
    local due = 0
    for _, tenant in ipairs(tenants) do
      due = due + redis.call('ZCOUNT', prefix .. ARGV[5] .. tenant, '-inf', ARGV[1])
    end
    for _, tenant in ipairs(lines) do
      due = due + redis.call('ZCOUNT', prefix .. ARGV[7] .. tenant, '-inf', ARGV[1])
    end
    table.insert(out, model)
    table.insert(out, due)
    table.insert(out, redis.call('ZCARD', prefix .. ARGV[3]))
    table.insert(out, lost)
  end
end
return out
