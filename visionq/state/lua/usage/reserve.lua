-- KEYS[1] = the tenant's tokens in the period (jobs, via jobs/transition), read only
-- KEYS[2] = the tokens held for calls in flight in the period (usage)
-- ARGV[1] = now (Unix seconds)
-- ARGV[2] = the quota, in tokens
-- ARGV[3] = the job id
-- ARGV[4] = the tokens to hold for its call
-- ARGV[5] = until when the hold lasts, should its worker die (Unix seconds)
-- ARGV[6] = seconds the held set is kept (past the period's end)
--
-- Holds room in the tenant's quota for one paid call, or refuses (returns 0) when what
-- was used, what calls in flight hold and this call would pass the quota. The finish
-- adds what the call used to KEYS[1]; the worker then lets go of its hold. A member is
-- `job id|tokens`, scored by its expiry.
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', ARGV[1])
local held = 0
for _, member in ipairs(redis.call('ZRANGE', KEYS[2], 0, -1)) do
  local job, tokens = string.match(member, '^(.*)|(%d+)$')
  if job ~= ARGV[3] then held = held + tonumber(tokens) end
end
local used = tonumber(redis.call('GET', KEYS[1]) or '0')
if used + held + tonumber(ARGV[4]) > tonumber(ARGV[2]) then return 0 end
redis.call('ZADD', KEYS[2], ARGV[5], ARGV[3] .. '|' .. ARGV[4])
redis.call('EXPIRE', KEYS[2], ARGV[6])
return 1
