-- KEYS[1] = the model's slots for calls in flight (pacing)
-- ARGV[1] = now (Unix seconds)
-- ARGV[2] = the slot's expiry
-- ARGV[3] = how many slots there are
-- ARGV[4] = the slot id
--
-- Takes a slot when one is free, after dropping those whose holder stopped renewing.
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[3]) then return 0 end
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[4])
return 1
