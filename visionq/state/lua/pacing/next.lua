-- KEYS[1] = the model's rotation of tenants (pacing)
-- KEYS[2] = the model's counter of turns served (pacing)
-- KEYS[3] = since when each waiting job has been ready (pacing)
-- KEYS[4] = the model's waiting tickets (pacing)
-- ARGV[1] = now (Unix seconds)
-- ARGV[2] = the prefix of the model's tenant queues (keys.pace(model, keys.PACE_QUEUE))
-- ARGV[3] = how many tenants to look through
-- ARGV[4] = the ticket
--
-- The due head of the tenant served longest ago, and since when it has been ready; the
-- ticket that took it no longer waits (the job's lease covers it from here).
local tenants = redis.call('ZRANGE', KEYS[1], 0, tonumber(ARGV[3]) - 1)
for _, tenant in ipairs(tenants) do
  local queue = ARGV[2] .. tenant
  local head = redis.call('ZRANGEBYSCORE', queue, '-inf', ARGV[1], 'LIMIT', 0, 1)
  if #head == 1 then
    redis.call('ZREM', queue, head[1])
    redis.call('ZREM', KEYS[4], ARGV[4])
    if redis.call('EXISTS', queue) == 0 then
      redis.call('ZREM', KEYS[1], tenant)
    else
      redis.call('ZADD', KEYS[1], redis.call('INCR', KEYS[2]), tenant)
    end
    local since = redis.call('HGET', KEYS[3], head[1]) or ARGV[1]
    redis.call('HDEL', KEYS[3], head[1])
    return {head[1], since}
  elseif redis.call('EXISTS', queue) == 0 then
    redis.call('ZREM', KEYS[1], tenant)
  end
end
return nil
