-- KEYS[1] = the job's hash (jobs; its lease fields are leases')
-- KEYS[2] = the lease index (leases)
-- ARGV[1] = when the sweeper should look at the job next
-- ARGV[2] = the job id
-- ARGV[3] = an attempt counter to take one back from, or ""
--
-- Hands the job on: anyone may take it now. Writes `lease_until`, the attempt counter
-- and the lease index.
if not redis.call('HGET', KEYS[1], 'status') then return 0 end
redis.call('HSET', KEYS[1], 'lease_until', 0)
redis.call('ZADD', KEYS[2], 'XX', ARGV[1], ARGV[2])
if ARGV[3] ~= '' then redis.call('HINCRBY', KEYS[1], ARGV[3], -1) end
return 1
