-- KEYS[1] = the webhook outbox (outbox)
-- ARGV[1] = the job id
-- ARGV[2] = the token its task presents
-- ARGV[3] = the new lease end
--
-- 1 when the token still holds, and the entry then gets a fresh lease; else 0.
local score = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not score or tonumber(score) ~= tonumber(ARGV[2]) then return 0 end
redis.call('ZADD', KEYS[1], ARGV[3], ARGV[1])
return 1
