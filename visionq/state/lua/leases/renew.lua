-- KEYS[1] = the job's hash (jobs; its lease fields are leases')
-- KEYS[2] = the lease index (leases)
-- ARGV[1] = the lease's new end
-- ARGV[2] = the job id
--
-- Only a held lease is renewed: a late renewal must not take back a job its stage has
-- just handed on. Writes `lease_until` and the lease index.
if tonumber(redis.call('HGET', KEYS[1], 'lease_until') or '0') == 0 then return 0 end
redis.call('HSET', KEYS[1], 'lease_until', ARGV[1])
redis.call('ZADD', KEYS[2], 'XX', ARGV[1], ARGV[2])
return 1
