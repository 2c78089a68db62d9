-- KEYS[1] = the model's rotation of tenants (pacing)
-- KEYS[2] = the model's waiting tickets (pacing)
-- KEYS[3] = the model's rotation of tenants' batch lines (pacing)
-- ARGV[1] = the ticket
-- ARGV[2] = its registration's expiry
--
-- A ticket registers only when there may be a job for it: one that finds none ends at
-- once (0).
if redis.call('EXISTS', KEYS[1]) == 0 and redis.call('EXISTS', KEYS[3]) == 0 then return 0 end
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[1])
return 1
