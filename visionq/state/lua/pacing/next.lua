-- KEYS[1] = the model's rotation of tenants (pacing)
-- KEYS[2] = the model's counter of turns served (pacing)
-- KEYS[3] = since when each waiting job has been ready (pacing)
-- KEYS[4] = the model's waiting tickets (pacing)
-- KEYS[5] = the model's rotation of tenants' batch lines (pacing)
-- ARGV[1] = now (Unix seconds)
-- ARGV[2] = the prefix of the model's tenant queues (keys.pace(model, keys.PACE_QUEUE))
-- ARGV[3] = how many tenants to look through
-- ARGV[4] = the ticket
-- ARGV[5] = the prefix of the model's tenants' batch queues
--
-- The due head of the tenant served longest ago, since when it has been ready and its
-- lane; the
-- ticket that took it no longer waits (the job's lease covers it from here). Interactive
-- jobs first: a batch line is taken only when no interactive job is due, and batch lines
-- too take turns by tenant, so two tenants' batches share what is left evenly.
local function head_of(rotation, prefix, lane)
  local tenants = redis.call('ZRANGE', rotation, 0, tonumber(ARGV[3]) - 1)
  for _, tenant in ipairs(tenants) do
    local queue = prefix .. tenant
    local head = redis.call('ZRANGEBYSCORE', queue, '-inf', ARGV[1], 'LIMIT', 0, 1)
    if #head == 1 then
      redis.call('ZREM', queue, head[1])
      redis.call('ZREM', KEYS[4], ARGV[4])
      if redis.call('EXISTS', queue) == 0 then
        redis.call('ZREM', rotation, tenant)
      else
        redis.call('ZADD', rotation, redis.call('INCR', KEYS[2]), tenant)
      end
      local since = redis.call('HGET', KEYS[3], head[1]) or ARGV[1]
      redis.call('HDEL', KEYS[3], head[1])
      return {head[1], since, lane}
    elseif redis.call('EXISTS', queue) == 0 then
      redis.call('ZREM', rotation, tenant)
    end
  end
  return nil
end
return head_of(KEYS[1], ARGV[2], 'interactive') or head_of(KEYS[5], ARGV[5], 'batch')
