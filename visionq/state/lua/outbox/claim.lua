-- KEYS[1] = the webhook outbox (outbox)
-- ARGV[1] = now (Unix seconds)
-- ARGV[2] = the claim's lease end, which is also its token
-- ARGV[3] = how many at most
--
-- Claims the due deliveries by pushing their score a lease into the future.
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, ARGV[3])
for _, id in ipairs(ids) do redis.call('ZADD', KEYS[1], ARGV[2], id) end
return ids
